"""The ops of approximate ONNX files (``evaluators.onnx.approximate``): ``ApproxQLinearConv``,
``ApproxQGemm``, ``ApproxQLinearMatMul`` (a weight or a second activation) and
``ApproxMatMulInteger`` (dynamic quantization's products), each the plain op multiplying through
the multiplier its node carries, and the node convention both the export and the runner read.

A node carries its multiplier as an AppAxO configuration (the integer attribute
``INIT_Value``, EMGAxO's name) or as its 256x256 int32 product table: an extra last input, its
signedness in the attribute ``table_signed``. The node's own table wins over the run's table
(repeated for every assignment in batched mode). Every op here is listed in ``OPS``, which the
op registry (``evaluators.runtime.ops``) takes in whole.
"""

from __future__ import annotations

import functools

import numpy as np

from accel.batch import TableBatch
from circuits import appaxo
from circuits.product_table import ProductTable
from evaluators.errors import ModelError
from evaluators.runtime import core_ops, integer_ops
from evaluators.runtime.core_ops import Context, Op
from evaluators.runtime.layer_tables import LayerTablesBatch
from evaluators.runtime.node import Node

CONFIG_ATTR = "INIT_Value"  # EMGAxO's attribute name for the AppAxO configuration
SIGNED_ATTR = "table_signed"  # 1: the table initializer is indexed as a signed multiplier's
PREFIX = "Approx"
BASE_INPUTS = {"QLinearConv": 9, "QGemm": 9, "QLinearMatMul": 8,  # inputs before the table
               "MatMulInteger": 4}
_BASE_OPS = {**core_ops.OPS, **integer_ops.OPS}


class _OwnTableContext(Context):
    """A run's context in which one node multiplies with the table it carries."""

    def __init__(self, ctx: Context, table: ProductTable | TableBatch):
        super().__init__(ctx.graph, ctx.tables, ctx.kernels, ctx.capture)
        self.captured, self.table = ctx.captured, table

    def table_for(self, node: Node) -> ProductTable | TableBatch:
        return self.table


@functools.lru_cache(maxsize=64)
def _appaxo_table(config: int) -> ProductTable:
    return appaxo.table(config)


def _own_table(node: Node, base: str, args: list) -> ProductTable:
    """The multiplier a custom node carries (its INIT_Value or its last input)."""
    config = node.attr(CONFIG_ATTR)
    if config is not None:
        return _appaxo_table(int(config))
    if len(args) <= BASE_INPUTS[base] or args[BASE_INPUTS[base]] is None:
        raise ModelError(f"node {node.name!r} ({node.op}) carries no multiplier: neither the "
                         f"{CONFIG_ATTR} attribute nor a product table input")
    return ProductTable(args[BASE_INPUTS[base]], signed=bool(node.attr(SIGNED_ATTR, 1)))


def _runner_op(base: str) -> Op:
    """The runner's implementation of ``Approx<base>``: the plain op with the node's own table
    (repeated for every assignment in batched mode)."""

    def op(node: Node, args: list, ctx: Context) -> list[np.ndarray]:
        table = _own_table(node, base, args)
        if isinstance(ctx.tables, (TableBatch, LayerTablesBatch)):
            table = TableBatch((table,) * len(ctx.tables))
        n = BASE_INPUTS[base]
        attrs = {k: v for k, v in node.attrs.items() if k not in (CONFIG_ATTR, SIGNED_ATTR)}
        plain = Node(base, node.name, node.inputs[:n], node.outputs, attrs)
        return _BASE_OPS[base](plain, list(args[:n]), _OwnTableContext(ctx, table))

    return op


OPS: dict[str, Op] = {PREFIX + base: _runner_op(base) for base in BASE_INPUTS}

TABLE_OPS = frozenset(OPS)
"""The ops here that multiply through the table (all of them)."""
