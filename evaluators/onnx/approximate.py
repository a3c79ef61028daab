"""Approximate ONNX models: a QOperator int8 model whose chosen QLinearConv / QGemm /
QLinearMatMul / MatMulInteger nodes multiply through an approximate multiplier, as a file that
runs in dse's runner and in onnxruntime itself.

Each chosen node becomes ``Approx<op>`` (``ApproxQLinearConv``, ``ApproxQGemm``,
``ApproxQLinearMatMul``, ``ApproxMatMulInteger``) in the custom domain ``ai.dse.approx``; a
QLinearMatMul or MatMulInteger may multiply two activations (attention's Q x K^T, statically or
dynamically quantized). The node keeps its inputs (missing
optional ones written as ``""``) and attributes, and its multiplier: an AppAxO configuration as
the integer attribute ``INIT_Value``, any other multiplier as its 256x256 int32 product table,
an initializer read as one extra last input with its signedness as the attribute
``table_signed`` (1 or 0). Every node carries its own multiplier, so per-layer assignments
(``LayerTables``) are written as they are. Any operand scheme (S8S8, U8S8, U8U8) takes any
multiplier: the runner moves codes into the multiplier's domain (``accel.codes.recentre``). The op names carry the
``Approx`` prefix because ``QGraph.from_onnx`` reads op types without their domain.

EMGAxO mode writes what EMGAxO writes: ``ApproxQGemm`` nodes in domain ``test.customop``
with ``INIT_Value``, for QGemm nodes and AppAxO configurations only; both forms are read back.

The runner executes the custom nodes with their own table (it wins over the run's table;
the ops and the node convention are ``evaluators.runtime.approx_ops``); onnxruntime executes
them through onnxruntime-extensions Python custom ops (``session``) that call the same runner
code and ``accel.cpu`` kernels, so both give identical results.

QDQ models are not rewritten: their multiplying nodes are float Conv/Gemm/MatMul between
DequantizeLinear and QuantizeLinear, which onnxruntime fuses only when it loads the file; such a
node is refused by name (quantize the model in QOperator format).
"""

from __future__ import annotations

import functools
import itertools
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnx
from onnx import helper

from accel import cpu
from circuits import appaxo
from circuits.product_table import ProductTable
from evaluators.errors import ModelError
from evaluators.networks import ort_exactness
from evaluators.onnx.editing import Initializers, copy_model, ensure_opset
from evaluators.runtime.approx_ops import BASE_INPUTS, CONFIG_ATTR, PREFIX, SIGNED_ATTR
from evaluators.runtime.approx_runner import run
from evaluators.runtime.layer_tables import LayerTables
from evaluators.runtime.node import Node
from evaluators.runtime.qgraph import QGraph

if TYPE_CHECKING:
    import onnxruntime

__all__ = ["DSE_DOMAIN", "EMGAXO_DOMAIN", "ApproxExportError", "Carried", "Multipliers",
           "approximate_model", "for_onnxruntime", "rewritable_nodes", "session"]

DSE_DOMAIN = "ai.dse.approx"
EMGAXO_DOMAIN = "test.customop"
ORT_ATTRS = "dse_attrs"  # the node's attributes as JSON, for onnxruntime-extensions (scalars only)
_CODE_TYPES = {onnx.TensorProto.INT8: "s8", onnx.TensorProto.UINT8: "u8"}
OPTIONAL_INPUTS = {"QLinearConv": {8: "bias"}, "QGemm": {2: "zp", 5: "zp", 6: "bias", 8: "zp"},
                   "QLinearMatMul": {}, "MatMulInteger": {2: "zp", 3: "zp"}}
SECOND_OPERAND = {"QLinearConv": (3, 5), "QGemm": (3, 5), "QLinearMatMul": (3, 5),
                  "MatMulInteger": (1, 3)}  # (weight or second activation, its zero point)
ACTIVATION_OPERANDS = {"QLinearMatMul", "MatMulInteger"}  # may multiply two activations
B_INPUT = "dse_b_input"  # 1: the second operand is an activation (fed to the custom op)

Carried = int | ProductTable
"""A node's multiplier: an AppAxO configuration or a product table."""

Multipliers = Carried | LayerTables | Mapping[str, Carried]
"""One multiplier for every chosen node, a layer assignment, or node name -> multiplier."""


class ApproxExportError(ModelError):
    """A node the approximate export cannot rewrite, or a multiplier it cannot carry."""


# --- writing ---------------------------------------------------------------------------------

def approximate_model(model: onnx.ModelProto, multipliers: Multipliers,
                      nodes: list[str] | None = None, *, emgaxo: bool = False) -> onnx.ModelProto:
    """The model with each chosen node (default: every table-multiplying node, or the ones a
    mapping names; QGemm nodes only in EMGAxO mode) replaced by its approximate custom node.
    Nodes are named as ``QGraph.from_onnx`` names them (an unnamed node is ``<op>_<index>``),
    the names ``LayerTables`` are keyed by."""
    chosen = _chosen(model, multipliers, nodes, emgaxo)
    out = copy_model(model)
    inits = Initializers(out)
    domain = EMGAXO_DOMAIN if emgaxo else DSE_DOMAIN
    for name, node in zip(_names(out), out.graph.node):
        if name in chosen:
            _rewrite(node, name, _multiplier_of(multipliers, name), inits, domain)
    ensure_opset(out, domain)
    return out


def rewritable_nodes(model: onnx.ModelProto, emgaxo: bool = False) -> list[str]:
    """The nodes ``approximate_model`` rewrites by default: every QLinearConv, QGemm,
    QLinearMatMul and MatMulInteger (every QGemm in EMGAxO mode), named as
    ``QGraph.from_onnx`` names them."""
    allowed = {"QGemm"} if emgaxo else set(BASE_INPUTS)
    return [name for name, n in zip(_names(model), model.graph.node) if n.op_type in allowed]


def _names(model: onnx.ModelProto) -> list[str]:
    """Each node's name as ``QGraph.from_onnx`` gives it."""
    return [n.name or f"{n.op_type}_{i}" for i, n in enumerate(model.graph.node)]


def _chosen(model: onnx.ModelProto, multipliers: Multipliers, nodes: list[str] | None,
            emgaxo: bool) -> set[str]:
    """The node names to rewrite, each checked to be a rewritable node of the model."""
    allowed = {"QGemm"} if emgaxo else set(BASE_INPUTS)
    by_name = dict(zip(_names(model), model.graph.node))
    if isinstance(multipliers, Mapping):
        nodes = list(multipliers) if nodes is None else nodes
        if missing := [n for n in nodes if n not in multipliers]:
            raise ApproxExportError(f"node {missing[0]!r} is chosen but given no multiplier")
    if nodes is None:
        nodes = rewritable_nodes(model, emgaxo)
        if not nodes:
            float_ops = [n for n in model.graph.node if n.op_type in ("Conv", "Gemm", "MatMul")]
            hint = f"; node {float_ops[0].name!r} is a float {float_ops[0].op_type} (a QDQ or " \
                   "float model: quantize it in QOperator format)" if float_ops else ""
            raise ApproxExportError(f"the model has no {'/'.join(sorted(allowed))} node to "
                                    f"make approximate{hint}")
    for name in nodes:
        if name not in by_name:
            raise ApproxExportError(f"node {name!r} is not in the model")
        if by_name[name].op_type not in allowed:
            why = "EMGAxO mode replaces QGemm nodes only" if emgaxo else \
                "only QOperator QLinearConv, QGemm, QLinearMatMul and MatMulInteger nodes " \
                "multiply through a table"
            raise ApproxExportError(
                f"node {name!r} ({by_name[name].op_type}) cannot be rewritten: {why}")
    return set(nodes)


def _multiplier_of(multipliers: Multipliers, name: str) -> Carried:
    if isinstance(multipliers, LayerTables):
        return multipliers.table(name)
    if isinstance(multipliers, Mapping):
        return multipliers[name]
    return multipliers


def _rewrite(node: onnx.NodeProto, name: str, multiplier: Carried,
             inits: Initializers, domain: str) -> None:
    """Turn ``node`` into its approximate custom node in place."""
    base, inputs = node.op_type, list(node.input)
    weight = inputs[SECOND_OPERAND[base][0]]
    if base not in ACTIVATION_OPERANDS and weight not in inits:
        raise ApproxExportError(f"node {name!r} ({base}): its weight {weight!r} is not "
                                "an initializer")
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    if base == "QGemm" and (len(inputs) < 8 or not inputs[7] or attrs.get("transA", 0)):
        raise ApproxExportError(f"node {name!r} (QGemm): float output and transA are not "
                                "supported")
    if domain == EMGAXO_DOMAIN and not isinstance(multiplier, int):
        raise ApproxExportError(f"node {name!r}: EMGAxO mode carries AppAxO configurations "
                                "only (INIT_Value), not a product table")
    if isinstance(multiplier, int):
        node.attribute.append(helper.make_attribute(CONFIG_ATTR, appaxo.check_config(multiplier)))
    else:
        node.attribute.append(helper.make_attribute(SIGNED_ATTR, int(multiplier.signed)))
        inputs += [""] * (BASE_INPUTS[base] - len(inputs))
        table_name = inits.add(f"dse_product_table_{multiplier.sha256[:16]}", multiplier.values)
        del node.input[:]
        node.input.extend([*inputs, table_name])
    node.op_type, node.domain = PREFIX + base, domain


# --- onnxruntime ------------------------------------------------------------------------------

def session(model: str | Path | onnx.ModelProto, **settings) -> onnxruntime.InferenceSession:
    """An ``onnxruntime.InferenceSession`` (CPU) for an approximate model, dse's or EMGAxO's,
    with the custom ops registered (onnxruntime-extensions Python ops in ``ai.dse.approx``),
    in onnxruntime's precision mode (``ort_exactness.session``, ``settings`` passed on)."""
    from onnxruntime_extensions import get_library_path

    _register_ort_ops()
    proto = model if isinstance(model, onnx.ModelProto) else onnx.load(str(model))
    return ort_exactness.session(for_onnxruntime(proto), custom_ops=get_library_path(),
                                 **settings)


def for_onnxruntime(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model as the Python custom ops take it: every custom node in ``ai.dse.approx`` with a
    table input (AppAxO tables computed from INIT_Value), no missing inputs (zero zero points,
    an empty bias) and its attributes as one JSON string (the ops take scalar attributes only)."""
    out = copy_model(model)
    inits = Initializers(out)
    types = _tensor_types(model)
    for node in out.graph.node:
        if node.domain in (DSE_DOMAIN, EMGAXO_DOMAIN) and node.op_type.startswith(PREFIX):
            _prepare_for_ort(node, inits, types)
    ensure_opset(out, DSE_DOMAIN)
    return out


def _prepare_for_ort(node: onnx.NodeProto, inits: Initializers,
                     types: dict[str, int]) -> None:
    base = node.op_type.removeprefix(PREFIX)
    if base not in BASE_INPUTS:
        raise ModelError(f"node {node.name!r}: unknown approximate op {node.op_type!r}; expected "
                         f"one of {', '.join(PREFIX + b for b in BASE_INPUTS)}")
    second, second_zero = SECOND_OPERAND[base]
    weight = inits.get(node.input[second])
    if base not in ACTIVATION_OPERANDS and weight is None:
        raise ModelError(f"node {node.name!r} ({node.op_type}): the onnxruntime custom ops take "
                         "constant weights only")
    activations = _activation_type(node, inits, types)
    weights = _code_type(node, second, (second_zero,), inits, types)
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    config = attrs.pop(CONFIG_ATTR, None)
    if config is not None:
        attrs[SIGNED_ATTR] = 1
    if weight is None:
        attrs[B_INPUT] = 1
    n = BASE_INPUTS[base]
    inputs = list(node.input) + [""] * (n + 1 - len(node.input))
    if config is not None:
        inputs[n] = inits.add(f"dse_appaxo_{int(config)}",
                              lambda: appaxo.product_table(int(config)))
    for i, kind in OPTIONAL_INPUTS[base].items():
        if not inputs[i]:
            code = weights if i == second_zero else activations
            inputs[i] = inits.add(f"dse_empty_{kind}_{code}", lambda kind=kind, code=code: (
                np.zeros((0,), np.int32) if kind == "bias" else
                np.zeros((), helper.tensor_dtype_to_np_dtype(code))))
    del node.input[:], node.attribute[:]
    node.input.extend(inputs)
    attrs = {k: v.decode() if isinstance(v, bytes) else v for k, v in attrs.items()}
    node.attribute.append(helper.make_attribute(ORT_ATTRS, json.dumps(attrs)))
    node.op_type = f"{PREFIX}{base}_{_CODE_TYPES[activations]}{_CODE_TYPES[weights]}"
    node.domain = DSE_DOMAIN


def _tensor_types(model: onnx.ModelProto) -> dict[str, int]:
    """The element type of every tensor onnx's type inference knows (the custom nodes'
    outputs stay unknown)."""
    graph = onnx.shape_inference.infer_shapes(model).graph
    types = {v.name: v.type.tensor_type.elem_type
             for v in [*graph.input, *graph.value_info, *graph.output]}
    types.update({t.name: t.data_type for t in graph.initializer})
    return {name: t for name, t in types.items() if t}


def _code_type(node: onnx.NodeProto, index: int, zero_points: tuple[int, ...],
               inits: dict[str, onnx.TensorProto], types: dict[str, int]) -> int:
    """int8 or uint8: the type of input ``index``, or of a zero point the quantizer writes with
    its type; int8 when none is known (the QOperator default)."""
    for i in (index, *zero_points):
        if len(node.input) > i and node.input[i]:
            name = node.input[i]
            code = inits[name].data_type if name in inits else types.get(name)
            if code in _CODE_TYPES:
                return code
    return onnx.TensorProto.INT8


def _activation_type(node: onnx.NodeProto, inits: dict[str, onnx.TensorProto],
                     types: dict[str, int]) -> int:
    """int8 or uint8 activations, read from the node's activation or output zero point (the
    quantizer writes both with the activations' type) or the activations' inferred type."""
    base = node.op_type.removeprefix(PREFIX)
    zero_points = {"QGemm": (2, 8), "MatMulInteger": (2,)}.get(base, (2, 7))
    return _code_type(node, 0, zero_points, inits, types)


@functools.cache
def _register_ort_ops() -> None:
    """Register the Python custom ops with onnxruntime-extensions (once per process): each of
    the four ops for int8 and uint8 activations and weights (``<op>_<scheme>``)."""
    from onnxruntime_extensions import PyCustomOpDef, onnx_op

    f32, i32 = PyCustomOpDef.dt_float, PyCustomOpDef.dt_int32
    code = {"s8": PyCustomOpDef.dt_int8, "u8": PyCustomOpDef.dt_uint8}
    for x, w in itertools.product(code, code):
        a, b = code[x], code[w]
        types = {"QLinearConv": [a, f32, a, b, f32, b, f32, a, i32, i32],
                 "QGemm": [a, f32, a, b, f32, b, i32, f32, a, i32],
                 "QLinearMatMul": [a, f32, a, b, f32, b, f32, a, i32],
                 "MatMulInteger": [a, b, a, b, i32]}
        for base, inputs in types.items():
            onnx_op(op_type=f"{DSE_DOMAIN}::{PREFIX}{base}_{x}{w}", inputs=inputs,
                    outputs=[i32 if base == "MatMulInteger" else a],
                    attrs={ORT_ATTRS: PyCustomOpDef.dt_string})(_ort_compute(base))


def _ort_compute(base: str) -> Callable[..., np.ndarray]:
    """The body of one Python custom op: the node alone as a graph, run by dse's runner with
    the ``accel.cpu`` kernels and the table it was given."""

    def compute(*inputs: np.ndarray, **attrs: str) -> np.ndarray:
        *operands, table = inputs
        node_attrs = json.loads(attrs[ORT_ATTRS])
        signed = bool(node_attrs.pop(SIGNED_ATTR, 1))
        fed = (0, SECOND_OPERAND[base][0]) if node_attrs.pop(B_INPUT, 0) else (0,)
        names = tuple(f"in{i}" if v.size else "" for i, v in enumerate(operands))
        node = Node(base, PREFIX + base, names, ("y",), node_attrs)
        consts = {name: v for i, (name, v) in enumerate(zip(names, operands))
                  if name and i not in fed}
        graph = QGraph((node,), consts, tuple(names[i] for i in fed), ("y",))
        feeds = {names[i]: operands[i] for i in fed}
        return run(graph, feeds, ProductTable(table, signed=signed), cpu)["y"]

    compute.__name__ = f"dse_{PREFIX}{base}"
    return compute
