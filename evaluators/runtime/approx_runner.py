"""Run a quantized ONNX graph with every Conv/Gemm/MatMul multiplication taken from a product table
(one for the whole network, or one per layer: ``evaluators.runtime.layer_tables``).

Every node runs through its op in the op registry (``evaluators.runtime.ops``). The integer
layers accumulate in int32 through the kernels of ``accel`` and requantize exactly as
onnxruntime's CPU kernels do (float32 ``x_scale * w_scale / y_scale``, clamp, round half to
even, add the zero point), so with the exact table the results equal onnxruntime's. The other
quantized ops (QLinearAdd, pooling, concatenation, softmax) and the float ops between
DequantizeLinear and QuantizeLinear follow onnxruntime's own float32 arithmetic
(``evaluators.runtime.qops``). Any other op is refused with its name and node before any work.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from types import ModuleType

import numpy as np

from evaluators.errors import AssignmentError
from evaluators.runtime.core_ops import (
    Context,
    conv_arguments,
    qgemm_arguments,
    qlinear_matmul_arguments,
)
from evaluators.runtime.layer_tables import Assignment, Tables, assigned_layers, batch_of
from evaluators.runtime.ops import OPS, TABLE_OPS
from evaluators.runtime.qgraph import QGraph, UnsupportedOpError
from evaluators.runtime.qops import dequantize, quantize

# The runner's own functions, and re-exported what callers of ops use with it: the op registry
# (``runtime.ops``), the context ops run in and their argument helpers (``runtime.core_ops``).
__all__ = ["OPS", "TABLE_OPS", "Context", "UnsupportedOpError", "check_layers", "check_supported",
           "conv_arguments", "dequantize", "qgemm_arguments", "qlinear_matmul_arguments",
           "quantize", "require_layers", "run", "run_each", "table_free", "table_layers"]


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
        # a shape is never per image, even when its length is the number of images
        if node.op in TABLE_OPS or node.op in SHAPE_OF or not all(n in env for n in node.inputs) \
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


SHAPE_OF = {"Shape", "Size"}  # ops whose outputs describe a tensor, not its images

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
    gives what the whole run gives (``evaluators.runtime.prefix_cache``).
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
