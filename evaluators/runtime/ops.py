"""The op registry: every op the approximate runner executes, in one table.

An op type (as ``QGraph.from_onnx`` reads it: the ONNX op type without its domain, or a
``dse.*`` op a graph transformation fused) maps to its implementation
``fn(node, input values, context) -> output values``. The implementations live by family, each
module listing its own ops in an ``OPS`` table and those that multiply through the product
table in ``TABLE_OPS``; the registry is their union, built here explicitly:

- ``core_ops``: QuantizeLinear/DequantizeLinear/DynamicQuantizeLinear, the QOperator table
  layers (QLinearConv, QGemm, QLinearMatMul, of weights or of two activations), shape and
  code-preserving ops, elementwise Add/Sub/Mul (float32 or integer);
- ``qops``: the quantized ops that multiply nothing through the table (QLinearAdd, QLinearMul,
  pooling, QLinearConcat, softmax);
- ``integer_ops``: ConvInteger, MatMulInteger, Div and Cast of integer-only graphs;
- ``fused_ops``: ``dse.CodeChain`` and ``dse.QLinearConvPool`` of ``runtime.transforms``;
- ``shape_ops``: the shape and indexing ops of transformers (Shape, Gather, Slice, Split,
  Expand, Where, Range, ...) on int64 shapes, codes and float32 values;
- ``float_ops``: the float32 ops between DequantizeLinear and QuantizeLinear of quantized
  transformers (LayerNormalization, ReduceMean, Pow, Sqrt, Erf, Gelu, Tanh, Sigmoid, ...);
- ``approx_ops``: ``ApproxQLinearConv``, ``ApproxQGemm``, ``ApproxQLinearMatMul``,
  ``ApproxMatMulInteger`` of approximate ONNX files (each node carrying its own multiplier).

Importing this module gives every op; nothing registers itself by being imported elsewhere.
Adding an op is its function and its line in its family's table (a new family: its module and
its line in ``FAMILIES``). The families never share an op type.
"""

from __future__ import annotations

from types import MappingProxyType

from evaluators.runtime import (
    approx_ops,
    core_ops,
    float_ops,
    fused_ops,
    integer_ops,
    qops,
    shape_ops,
)
from evaluators.runtime.core_ops import Op

FAMILIES = MappingProxyType({
    "core": (core_ops.OPS, core_ops.TABLE_OPS),
    "quantized": (qops.OPS, frozenset()),
    "integer": (integer_ops.OPS, integer_ops.TABLE_OPS),
    "fused": (fused_ops.OPS, fused_ops.TABLE_OPS),
    "approximate": (approx_ops.OPS, approx_ops.TABLE_OPS),
    "shape": (shape_ops.OPS, shape_ops.TABLE_OPS),
    "float": (float_ops.OPS, float_ops.TABLE_OPS),
})
"""Each family of ops: its table and the ops of it that multiply through the product table."""


def _union() -> dict[str, Op]:
    ops: dict[str, Op] = {}
    for family, (table, _) in FAMILIES.items():
        if shared := sorted(set(ops) & set(table)):
            raise RuntimeError(f"op {shared[0]!r} of the {family} ops is registered twice")
        ops.update(table)
    return ops


OPS: dict[str, Op] = _union()
"""Every op the runner executes, by op type."""

TABLE_OPS: frozenset[str] = frozenset().union(*(table_ops for _, table_ops in FAMILIES.values()))
"""The ops that multiply through the product table (the layers ``LayerTables`` are keyed by)."""
