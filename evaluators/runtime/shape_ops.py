"""The shape ops a transformer's graph keeps after constant folding: the part of its shape
subgraphs that depends on the symbolic batch axis (Shape -> Gather -> Concat -> Reshape), and
the indexing ops that pick tokens (Gather, Slice, Split, Expand, Where).

They move or compare values without arithmetic on them, so they are exact on every dtype they
meet: int64 shapes, int8/uint8 codes and float32 values alike. Index arithmetic follows the
ONNX specification as onnxruntime implements it (negative indices and axes counted from the
end, Slice's out-of-range starts and ends clamped, Range's float values accumulated one step at
a time as its CPU kernel does). Every op here is listed in ``OPS``, which the op registry
(``evaluators.runtime.ops``) takes in whole.
"""

from __future__ import annotations

import math

import numpy as np
from onnx import numpy_helper

from evaluators.runtime.core_ops import Context, Op
from evaluators.runtime.node import Node
from evaluators.runtime.qgraph import UnsupportedOpError


def _optional(args: list, index: int) -> np.ndarray | None:
    return args[index] if len(args) > index and args[index] is not None else None


def _ints(values: np.ndarray | list) -> list[int]:
    return [int(v) for v in np.asarray(values).reshape(-1)]


def _shape(node: Node, args: list, ctx: Context) -> list[np.ndarray]:
    """The input's dimensions from ``start`` to ``end`` (opset 15), clamped like Slice's."""
    dims = args[0].shape
    start, end = node.attr("start", 0), node.attr("end", len(dims))
    lo, hi = (min(max(v + len(dims) if v < 0 else v, 0), len(dims)) for v in (start, end))
    return [np.array(dims[lo:hi], dtype=np.int64)]


def _gather(node: Node, args: list, ctx: Context) -> list[np.ndarray]:
    data, indices = args
    axis = node.attr("axis", 0) % max(data.ndim, 1)
    dim = data.shape[axis]
    if np.any((indices < -dim) | (indices >= dim)):
        raise UnsupportedOpError(f"node {node.name!r} (Gather): an index is outside "
                                 f"[-{dim}, {dim - 1}]")
    return [np.take(data, indices.astype(np.int64), axis=axis)]


def _slice_bounds(start: int, end: int, step: int, dim: int) -> slice:
    """ONNX Slice's clamping of one axis: negative values count from the end, then starts and
    ends are clamped to the axis (to [-1, dim - 1] going backwards, -1 meaning before 0)."""
    start, end = start + dim if start < 0 else start, end + dim if end < 0 else end
    if step > 0:
        return slice(min(max(start, 0), dim), min(max(end, 0), dim), step)
    start, end = min(max(start, 0), dim - 1), min(max(end, -1), dim - 1)
    return slice(start, None if end < 0 else end, step)


def _slice(node: Node, args: list, ctx: Context) -> list[np.ndarray]:
    """Slice: starts/ends/axes/steps as inputs from opset 10, attributes before."""
    x = args[0]
    if len(args) > 1:
        starts, ends = _ints(args[1]), _ints(args[2])
        axes, steps = _optional(args, 3), _optional(args, 4)
    else:
        starts, ends = list(node.attr("starts")), list(node.attr("ends"))
        axes, steps = node.attr("axes"), None
    axes = list(range(len(starts))) if axes is None else _ints(axes)
    steps = [1] * len(starts) if steps is None else _ints(steps)
    if 0 in steps:
        raise UnsupportedOpError(f"node {node.name!r} (Slice): a step is 0")
    index = [slice(None)] * x.ndim
    for start, end, axis, step in zip(starts, ends, axes, steps):
        index[axis % x.ndim] = _slice_bounds(start, end, step, x.shape[axis % x.ndim])
    return [x[tuple(index)]]


def _split(node: Node, args: list, ctx: Context) -> list[np.ndarray]:
    """Split by sizes (the ``split`` input from opset 13, the attribute before), into
    ``num_outputs`` parts of ``ceil(dim / n)`` (opset 18, the last one smaller), or equally."""
    x = args[0]
    axis = node.attr("axis", 0) % x.ndim
    dim, parts = x.shape[axis], len(node.outputs)
    sizes = _optional(args, 1)
    sizes = _ints(sizes) if sizes is not None else node.attr("split")
    if sizes is None:
        if node.attr("num_outputs") is not None:
            chunk = math.ceil(dim / node.attr("num_outputs"))
            sizes = [min(chunk, dim - k * chunk) for k in range(node.attr("num_outputs"))]
        elif dim % parts:
            raise UnsupportedOpError(f"node {node.name!r} (Split): {dim} does not split into "
                                     f"{parts} equal parts")
        else:
            sizes = [dim // parts] * parts
    if sum(sizes) != dim or len(sizes) != parts:
        raise UnsupportedOpError(f"node {node.name!r} (Split): sizes {list(sizes)} do not split "
                                 f"{dim} into {parts} outputs")
    return np.split(x, np.cumsum(sizes)[:-1], axis=axis)


def _constant_of_shape(node: Node, args: list, ctx: Context) -> list[np.ndarray]:
    value = node.attr("value")
    fill = np.zeros(1, np.float32) if value is None else numpy_helper.to_array(value)
    return [np.full(_ints(args[0]), fill.reshape(-1)[0], dtype=fill.dtype)]


def _expand(node: Node, args: list, ctx: Context) -> list[np.ndarray]:
    """Expand broadcasts both ways: the result has the broadcast of both shapes."""
    x, shape = args
    return [np.array(np.broadcast_to(x, np.broadcast_shapes(x.shape, tuple(_ints(shape)))))]


def _range(node: Node, args: list, ctx: Context) -> list[np.ndarray]:
    """onnxruntime's Range: ``ceil((limit - start) / delta)`` elements (the difference in the
    input type, the quotient in double), each the previous plus ``delta`` in the input type."""
    start, limit, delta = (np.asarray(a).reshape(()) for a in args)
    if delta == 0:
        raise UnsupportedOpError(f"node {node.name!r} (Range): delta is 0")
    count = max(math.ceil(float(limit - start) / float(delta)), 0)
    steps = np.full(count, delta, dtype=start.dtype)
    if count:
        steps[0] = start
    return [np.add.accumulate(steps, dtype=start.dtype)]


def _mod(node: Node, args: list, ctx: Context) -> list[np.ndarray]:
    """Mod: the remainder with the divisor's sign (``fmod=0``, integers only) or the
    dividend's (``fmod=1``, C's fmod)."""
    a, b = args
    if a.dtype != b.dtype:
        raise UnsupportedOpError(f"node {node.name!r} (Mod) mixes {a.dtype} and {b.dtype}")
    if node.attr("fmod", 0):
        return [np.fmod(a, b)]
    if a.dtype.kind == "f":
        raise UnsupportedOpError(f"node {node.name!r} (Mod): float inputs need fmod=1")
    return [np.mod(a, b)]


def _compare(fn) -> Op:
    def op(node: Node, args: list, ctx: Context) -> list[np.ndarray]:
        a, b = args
        if a.dtype != b.dtype:
            raise UnsupportedOpError(f"node {node.name!r} ({node.op}) mixes {a.dtype} and "
                                     f"{b.dtype}")
        return [fn(a, b)]

    return op


OPS: dict[str, Op] = {
    "Shape": _shape,
    "Gather": _gather,
    "Slice": _slice,
    "Split": _split,
    "ConstantOfShape": _constant_of_shape,
    "Expand": _expand,
    "Where": lambda node, args, ctx: [np.where(args[0], args[1], args[2])],
    "Equal": _compare(np.equal),
    "Less": _compare(np.less),
    "Greater": _compare(np.greater),
    "Not": lambda node, args, ctx: [np.logical_not(args[0])],
    "Range": _range,
    "Mod": _mod,
}

TABLE_OPS = frozenset()
"""None of these multiply through the table."""
