"""Run a quantized ONNX graph with every Conv/Gemm/MatMul multiplication taken from a product table
(one for the whole network, or one per layer: ``evaluators.layer_tables``).

The integer layers accumulate in int32 through the kernels of ``accel`` and requantize exactly as
onnxruntime's CPU kernels do (float32 ``x_scale * w_scale / y_scale``, clamp, round half to
even, add the zero point), so with the exact table the results equal onnxruntime's. The other
quantized ops (QLinearAdd, pooling, concatenation, softmax) and the float ops between
DequantizeLinear and QuantizeLinear follow onnxruntime's own float32 arithmetic
(``evaluators.qops``). Any other op is refused with its name and node before any work.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from types import ModuleType

import numpy as np

from accel.batch import TableBatch
from accel.codes import recentre
from accel.requant import output_multiplier
from circuits.product_table import ProductTable
from evaluators import qops
from evaluators.errors import AssignmentError
from evaluators.layer_tables import Assignment, Tables, assigned_layers, batch_of, layer_table
from evaluators.qgraph import Node, QGraph, UnsupportedOpError
from evaluators.qops import dequantize, quantize

__all__ = ["OPS", "TABLE_OPS", "Context", "UnsupportedOpError", "check_layers", "check_supported",
           "dequantize", "qgemm_arguments", "qlinear_matmul_arguments", "quantize", "register_op",
           "require_layers", "run", "run_each", "table_free", "table_layers"]


def _zero_point(graph: QGraph, node: Node, index: int, like: np.ndarray) -> np.ndarray:
    if len(node.inputs) > index and node.inputs[index]:
        return graph.const(node.inputs[index])
    return np.zeros((), dtype=like.dtype)


class Context:
    """What one run needs besides the tensors: the tables, the kernels, what to capture."""

    def __init__(self, graph: QGraph, tables: Tables | None, kernels: ModuleType | None,
                 capture: set[str]):
        self.graph, self.tables, self.kernels, self.capture = graph, tables, kernels, capture
        self.captured: dict[str, np.ndarray] = {}

    def table_for(self, node: Node) -> ProductTable | TableBatch:
        """The table (a batch of them in batched mode) a table op multiplies with: a fused op
        carries the name of the layer it absorbed."""
        return layer_table(self.tables, node.name)

    def operands(self, node: Node, x: np.ndarray, x_zero_point: int, w: np.ndarray,
                 w_zero_point: np.ndarray) -> tuple[np.ndarray, int, np.ndarray, np.ndarray]:
        """Activation and weight codes with their zero points in the domain of the node's
        multiplier (``accel.codes.recentre``): S8S8, U8S8 and U8U8 layers multiply through
        signed and unsigned tables alike, the zero-point cross terms exact."""
        for name, codes in (("activations", x), ("weights", w)):
            if codes.dtype not in (np.int8, np.uint8):
                raise UnsupportedOpError(f"node {node.name!r} ({node.op}) has {codes.dtype} "
                                         f"{name}; the multipliers take int8 or uint8 codes")
        signed = self.table_for(node).signed
        x, x_zero_point = recentre(x, x_zero_point, signed)
        w, w_zero_point = recentre(w, w_zero_point, signed)
        return x, x_zero_point, w, w_zero_point


def conv_arguments(node: Node, args: list, ctx: Context) -> tuple:
    """(x, w, keyword arguments of the kernels' qlinear_conv) of a QLinearConv node."""
    g = ctx.graph
    x, x_scale, _, w, w_scale, _, y_scale, _ = args[:8]
    y_zero_point = _zero_point(g, node, 7, x)
    x, x_zero_point, w, w_zero_point = ctx.operands(
        node, x, int(qops.scalar(_zero_point(g, node, 2, x), "activation zero point", node)),
        w, _zero_point(g, node, 5, w).astype(np.int64))
    if w.ndim != 4:
        raise UnsupportedOpError(f"node {node.name!r} (QLinearConv): only 2-D convolutions are supported")
    if node.attr("auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
        raise UnsupportedOpError(f"node {node.name!r} (QLinearConv): auto_pad is not supported")
    conv = dict(
        strides=tuple(node.attr("strides", [1, 1])),
        pads=tuple(node.attr("pads", [0, 0, 0, 0])),
        dilations=tuple(node.attr("dilations", [1, 1])),
        group=int(node.attr("group", 1)),
        x_zero_point=x_zero_point,
        w_zero_point=w_zero_point,
    )
    bias = args[8] if len(args) > 8 else None
    if node.outputs[0] in ctx.capture:
        acc = ctx.kernels.conv_accumulate(x, w, ctx.table_for(node), **conv)
        ctx.captured[node.outputs[0] + ":acc"] = acc if bias is None else acc + bias.reshape(1, -1, 1, 1)
    return x, w, {**conv, "bias": bias, "y_zero_point": y_zero_point,
                  "multiplier": output_multiplier(x_scale, w_scale, y_scale)}


def _qlinear_conv(node: Node, args: list, ctx: Context) -> list[np.ndarray]:
    x, w, qconv = conv_arguments(node, args, ctx)
    return [ctx.kernels.qlinear_conv(x, w, ctx.table_for(node), **qconv)]


def _gemm_operands(node: Node, ctx: Context, a, a_zp, b, b_zp, bias, multiplier, y_zp) -> tuple:
    a, a_zp, b, b_zp = ctx.operands(node, a, int(qops.scalar(a_zp, "activation zero point", node)),
                                    b, b_zp.astype(np.int64))
    return a, b, dict(a_zero_point=a_zp, b_zero_point=b_zp), bias, multiplier, y_zp


def qgemm_arguments(node: Node, args: list, ctx: Context) -> tuple:
    """(a (..., K), b (K, O), keyword arguments of the kernels' gemm accumulators, bias,
    multiplier, output zero point) of a QGemm node."""
    g = ctx.graph
    a, a_scale, _, b, b_scale, _, c = args[:7]
    if len(node.inputs) < 8 or not node.inputs[7]:
        raise UnsupportedOpError(f"node {node.name!r} (QGemm): float output is not supported")
    if node.attr("transA", 0):
        raise UnsupportedOpError(f"node {node.name!r} (QGemm): transA is not supported")
    b = b.T if node.attr("transB", 0) else b
    mult = output_multiplier(a_scale, b_scale, args[7], float(node.attr("alpha", 1.0)))
    return _gemm_operands(node, ctx, a, _zero_point(g, node, 2, a), b, _zero_point(g, node, 5, b),
                          c, mult, _zero_point(g, node, 8, a))


def qlinear_matmul_arguments(node: Node, args: list, ctx: Context) -> tuple:
    """What ``qgemm_arguments`` gives, for a QLinearMatMul node (no bias)."""
    g = ctx.graph
    a, a_scale, _, b, b_scale, _, y_scale, _ = args
    if b.ndim != 2:
        raise UnsupportedOpError(f"node {node.name!r} (QLinearMatMul): the weight must be 2-D")
    mult = output_multiplier(a_scale, b_scale, y_scale)
    return _gemm_operands(node, ctx, a, _zero_point(g, node, 2, a), b, _zero_point(g, node, 5, b),
                          None, mult, _zero_point(g, node, 7, a))


def _gemm(node: Node, ctx: Context, a, b, gemm: dict, bias, multiplier, y_zp) -> np.ndarray:
    lead = a.shape[:-1]
    a = a.reshape(-1, a.shape[-1])
    if node.outputs[0] in ctx.capture:
        acc = ctx.kernels.gemm_accumulate(a, b, ctx.table_for(node), **gemm)
        ctx.captured[node.outputs[0] + ":acc"] = acc if bias is None else acc + bias.reshape(1, -1)
    y = ctx.kernels.qlinear_gemm(a, b, ctx.table_for(node), bias=bias, multiplier=multiplier,
                                 y_zero_point=y_zp, **gemm)
    return y.reshape(*lead, b.shape[1])


def _qgemm(node: Node, args: list, ctx: Context) -> list[np.ndarray]:
    return [_gemm(node, ctx, *qgemm_arguments(node, args, ctx))]


def _qlinear_matmul(node: Node, args: list, ctx: Context) -> list[np.ndarray]:
    return [_gemm(node, ctx, *qlinear_matmul_arguments(node, args, ctx))]


def _flatten(x: np.ndarray, node: Node) -> np.ndarray:
    axis = node.attr("axis", 1) % max(x.ndim, 1)
    return x.reshape(int(np.prod(x.shape[:axis])), -1)


def _reshape(node: Node, args: list, ctx: Context) -> list[np.ndarray]:
    x, shape = args
    shape = [x.shape[i] if s == 0 and not node.attr("allowzero", 0) else int(s)
             for i, s in enumerate(shape)]
    return [x.reshape(shape)]


def _axes(node: Node, args: list) -> list[int] | None:
    """Squeeze/Unsqueeze axes: an attribute before opset 13, the second input from 13."""
    if len(args) > 1 and args[1] is not None:
        return [int(a) for a in np.asarray(args[1]).reshape(-1)]
    axes = node.attr("axes")
    return None if axes is None else list(axes)


def _squeeze(node: Node, args: list, ctx: Context) -> list[np.ndarray]:
    axes = _axes(node, args)
    return [np.squeeze(args[0], axis=None if axes is None else tuple(axes))]


def _unsqueeze(node: Node, args: list, ctx: Context) -> list[np.ndarray]:
    x = args[0]
    rank = x.ndim + len(_axes(node, args))
    for axis in sorted(a % rank for a in _axes(node, args)):
        x = np.expand_dims(x, axis)
    return [x]


def _clip(node: Node, args: list, ctx: Context) -> list[np.ndarray]:
    x = args[0]
    lo = args[1] if len(args) > 1 and args[1] is not None else node.attr("min", -np.inf)
    hi = args[2] if len(args) > 2 and args[2] is not None else node.attr("max", np.inf)
    return [np.clip(x, lo, hi).astype(x.dtype)]


def _dequantize_op(node: Node, args: list, ctx: Context) -> list[np.ndarray]:
    zero_point = args[2] if len(args) > 2 else None
    return [dequantize(args[0], args[1], zero_point, node.attr("axis", 1))]


def _quantize_op(node: Node, args: list, ctx: Context) -> list[np.ndarray]:
    zp = args[2] if len(args) > 2 and args[2] is not None else np.zeros((), np.uint8)
    if node.attr("saturate", 1) != 1 or node.attr("block_size", 0):
        raise UnsupportedOpError(f"node {node.name!r} (QuantizeLinear): saturate/block_size "
                                 "are not supported")
    return [quantize(args[0], args[1], zp, node.attr("axis", 1))]


def _float_binary(fn: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> Callable:
    """An elementwise float32 op with numpy broadcasting: one IEEE operation per element, as
    onnxruntime computes it."""

    def op(node: Node, args: list, ctx: Context) -> list[np.ndarray]:
        a, b = args
        if a.dtype != np.float32 or b.dtype != np.float32:
            raise UnsupportedOpError(f"node {node.name!r} ({node.op}) reads {a.dtype} and "
                                     f"{b.dtype}; only float32 is supported")
        return [fn(a, b)]

    return op


Op = Callable[[Node, list, Context], list]

OPS: dict[str, Op] = {
    "QuantizeLinear": _quantize_op,
    "DequantizeLinear": _dequantize_op,
    "QLinearConv": _qlinear_conv,
    "QGemm": _qgemm,
    "QLinearMatMul": _qlinear_matmul,
    "Relu": lambda node, args, ctx: [np.maximum(args[0], np.zeros((), args[0].dtype))],
    "Clip": _clip,
    "MaxPool": lambda node, args, ctx: [qops.max_pool(args[0], node)],
    "Flatten": lambda node, args, ctx: [_flatten(args[0], node)],
    "Reshape": _reshape,
    "Transpose": lambda node, args, ctx: [np.transpose(args[0], node.attr("perm"))],
    "Squeeze": _squeeze,
    "Unsqueeze": _unsqueeze,
    "Concat": lambda node, args, ctx: [np.concatenate(args, axis=node.attr("axis"))],
    "Identity": lambda node, args, ctx: [args[0]],
    "Add": _float_binary(np.add),
    "Sub": _float_binary(np.subtract),
    "Mul": _float_binary(np.multiply),
    **qops.OPS,
}


TABLE_OPS = {"QLinearConv", "QGemm", "QLinearMatMul"}  # the ops that multiply through the table


def register_op(op: str, fn: Op, multiplies: bool = False) -> None:
    """Register an implementation for an op type (fused ops of graph transformations use this);
    ``multiplies``: the op looks products up in the table."""
    OPS[op] = fn
    if multiplies:
        TABLE_OPS.add(op)


def table_free(graph: QGraph, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """What the table-dependent part of the graph reads from the feeds and from the per-image
    tensors computed without the product table (the input's quantization, for example): computed
    once for many tables and passed to ``run`` as its feeds, their nodes are skipped. Only
    tensors with the feeds' leading (image) axis are computed, so all can be sliced and stacked
    per image."""
    check_supported(graph)
    images = next(iter(feeds.values())).shape[0]
    env: dict[str, np.ndarray | None] = {**graph.initializers, **feeds, "": None}
    ctx = Context(graph, None, None, set())
    computed: set[str] = set()
    for node in graph.nodes:
        if node.op in TABLE_OPS or not all(n in env for n in node.inputs) \
                or not any(n in feeds or n in computed for n in node.inputs):
            continue
        values = OPS[node.op](node, [env[n] for n in node.inputs], ctx)
        if any(np.ndim(v) == 0 or np.shape(v)[0] != images for v in values):
            continue
        env.update(zip(node.outputs, values))
        computed.update(node.outputs)
    read_later = {n for node in graph.nodes if not set(node.outputs) <= computed for n in node.inputs}
    wanted = read_later | set(graph.outputs)
    return {name: env[name] for name in [*feeds, *computed] if name in wanted}


FLOAT_MULTIPLYING = {"Conv", "ConvTranspose", "Gemm", "MatMul", "Einsum"}


def check_supported(graph: QGraph) -> None:
    """Refuse a graph with an op this runner cannot execute, naming the op and the node."""
    for node in graph.nodes:
        if node.op in OPS:
            continue
        if node.op in FLOAT_MULTIPLYING:
            raise UnsupportedOpError(
                f"ONNX op {node.op!r} (node {node.name!r}) multiplies float tensors, so no "
                "product table can replace its multiplier; quantize it (QOperator, or "
                "DequantizeLinear -> op -> QuantizeLinear with int8/uint8 weights and an int32 "
                "bias, which is fused into an integer op)")
        raise UnsupportedOpError(
            f"ONNX op {node.op!r} (node {node.name!r}) is not supported by the approximate "
            f"evaluator; supported ops: {', '.join(sorted(o for o in OPS if '.' not in o))}")


def table_layers(graph: QGraph) -> list[str]:
    """Names of the layers that multiply through a product table, in execution order (the
    names ``LayerTables`` are keyed by)."""
    return [node.name for node in graph.nodes if node.op in TABLE_OPS]


def require_layers(named: Iterable[str], layers: Sequence[str], where: str = "") -> None:
    """Refuse a layer name that is not one of ``layers`` (one line listing them); ``where``
    prefixes the message with the setting that named it."""
    if unknown := sorted(set(named) - set(layers)):
        raise AssignmentError(f"{where}layer {unknown[0]!r} is not a table layer of the "
                              f"network; its layers: {', '.join(layers)}")


def check_layers(graph: QGraph, tables: Tables) -> None:
    """Refuse an assignment that names a layer the graph does not multiply in (one line)."""
    require_layers(assigned_layers(tables), table_layers(graph))


def _live_nodes(graph: QGraph, feeds: dict[str, np.ndarray], wanted: set[str],
                start: int = 0) -> set[int]:
    """Indices of the nodes from ``start`` on that must run to produce ``wanted`` from
    ``feeds``: a node whose outputs are all fed in (computed once by ``table_free``) or read by
    nobody is skipped, and so are the nodes only it reads from (an input Transpose before a
    fed-in quantization)."""
    needed, live = set(wanted), set()
    for i in range(len(graph.nodes) - 1, start - 1, -1):
        node = graph.nodes[i]
        if all(name in feeds for name in node.outputs) or not needed & set(node.outputs):
            continue
        live.add(i)
        needed.update(node.inputs)
    return live


Snapshot = Callable[[int, dict[str, np.ndarray]], None]


def _read_from(graph: QGraph, live: set[int], positions: set[int]) -> dict[int, frozenset[str]]:
    """For each position, the tensors that the live nodes from there on read, and the graph's
    outputs: what a run resumed there needs."""
    later, reads = set(graph.outputs), {}
    for i in range(len(graph.nodes) - 1, -1, -1):
        if i in live:
            later.update(graph.nodes[i].inputs)
        if i in positions:
            reads[i] = frozenset(later)
    return reads


def run(
    graph: QGraph,
    feeds: dict[str, np.ndarray],
    table: Tables,
    kernels: ModuleType,
    capture: Iterable[str] = (),
    *,
    start: int = 0,
    snapshot: Snapshot | None = None,
) -> dict[str, np.ndarray]:
    """Execute the graph; returns its outputs plus the captured tensors (``name:acc`` holds the
    int32 accumulators, bias included, of a captured Conv/Gemm/MatMul output). With a
    ``TableBatch`` (or ``LayerTablesBatch``) the feeds hold each table's images in turn (see
    ``accel.batch``).

    ``start``: run the nodes from that position on only, the feeds holding every tensor they
    read (a snapshot). ``snapshot(position, tensors)`` is called before each table layer after
    ``start`` with the tensors the rest of the graph reads: resuming there with them as feeds
    gives what the whole run gives (``evaluators.prefix_cache``).
    """
    check_supported(graph)
    check_layers(graph, table)
    ctx = Context(graph, table, kernels, set(capture))
    env: dict[str, np.ndarray | None] = dict(graph.initializers)
    env.update(feeds)
    env[""] = None
    live = _live_nodes(graph, feeds, set(graph.outputs) | ctx.capture, start)
    last_use = {name: i for i, n in enumerate(graph.nodes) if i in live for name in n.inputs}
    keep = set(graph.outputs) | ctx.capture | set(graph.initializers) | {""}
    boundaries = {i for i in live if i > start and graph.nodes[i].op in TABLE_OPS} \
        if snapshot is not None else set()
    reads = _read_from(graph, live, boundaries) if boundaries else {}
    for i, node in enumerate(graph.nodes):
        if i not in live:
            continue
        if i in boundaries:
            snapshot(i, {name: env[name] for name in reads[i]
                         if name in env and name not in graph.initializers and name})
        args = [env[name] for name in node.inputs]
        for name, value in zip(node.outputs, OPS[node.op](node, args, ctx)):
            env[name] = value
        for name in node.inputs:  # free activations nobody reads any more
            if last_use[name] == i and name not in keep:
                env.pop(name, None)
    result = {name: env[name] for name in graph.outputs}
    result.update({name: env[name] for name in ctx.capture if name in env})
    result.update(ctx.captured)
    return result


def run_each(
    graph: QGraph,
    feeds: Sequence[dict[str, np.ndarray]],
    assignments: Sequence[Assignment],
    kernels: ModuleType,
    *,
    start: int = 0,
    snapshot: Snapshot | None = None,
) -> list[dict[str, np.ndarray]]:
    """The graph's outputs under each assignment, fed ``feeds[i]``, in one pass: with several
    assignments, batched mode (the feeds stacked along the image axis; ``kernels`` must take a
    batch of tables, see ``accel.batch.PerTable``). ``start`` and ``snapshot`` as in ``run``
    (the snapshot's tensors then hold each assignment's part in turn)."""
    if len(feeds) != len(assignments) or not assignments:
        raise ValueError(f"expected one feed per assignment, got {len(feeds)} feeds for "
                         f"{len(assignments)} assignments (at least one)")
    if len(assignments) == 1:
        return [run(graph, feeds[0], assignments[0], kernels, start=start, snapshot=snapshot)]
    tables = batch_of(assignments)
    stacked = {name: np.concatenate([f[name] for f in feeds]) for name in feeds[0]}
    out = run(graph, stacked, tables, kernels, start=start, snapshot=snapshot)
    parts = {name: tables.split(value) for name, value in out.items()}
    return [{name: parts[name][i] for name in out} for i in range(len(assignments))]
