"""The float surrogates of the ops between the table layers, for retraining through the table.

A surrogate is a PyTorch function of a node's inputs whose *gradient* stands in for the node's:
its value is replaced by the runner's exact one (``straight_through``), so rounding, saturation
and the runner's own float arithmetic are never differentiated, only modelled. A surrogate
reads the node, its inputs as tensors (``t``: the differentiable ones, and constants), their
exact values (``a``) and the node's exact outputs (``exact``); it returns the first output's
surrogate, or a list of them. Families:

- quantization (QuantizeLinear, DequantizeLinear, DynamicQuantizeLinear): ``x / scale + zp``
  and ``(q - zp) * scale``, the scales constants (a dynamic scale too: the range it is read
  from passes no gradient);
- the QLinear ops without a table (QLinearAdd, QLinearMul, pooling, QLinearConcat,
  QLinearSoftmax): dequantize, the float op, quantize;
- float ops (LayerNormalization, Softmax, Erf, Gelu, Div, ReduceMean, ...): torch's own;
- data movement (Reshape, Transpose, Gather, Slice, Split, Concat, Expand, Where, ...): the
  runner's op applied to the *positions* of the input elements tells where each output element
  comes from, and the surrogate gathers the input there, so every indexing rule is the
  runner's;
- ``NO_GRADIENT`` (Shape, comparisons, ConstantOfShape, Range): their outputs are shapes, masks
  or indices, constants to the gradient.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from evaluators.runtime.node import Node
from evaluators.runtime.ops import OPS

Surrogate = Callable[[Node, list, list, list], "torch.Tensor | list[torch.Tensor]"]


class _StraightThrough(torch.autograd.Function):
    """The exact value forward, the surrogate's gradient backward."""

    @staticmethod
    def forward(ctx, surrogate: torch.Tensor, exact: torch.Tensor) -> torch.Tensor:
        return exact

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad, None


def straight_through(surrogate: torch.Tensor, value: np.ndarray) -> torch.Tensor:
    """The exact value (bit for bit: no float round trip through the surrogate's) carrying the
    surrogate's gradient."""
    exact = torch.from_numpy(np.array(value, dtype=np.float32))
    return _StraightThrough.apply(surrogate.reshape(exact.shape), exact)


def const(value) -> torch.Tensor:
    """A constant input as float32 (an absent optional input as 0); copied, so a read-only
    initializer is never shared with torch."""
    return torch.from_numpy(np.array(0 if value is None else value, dtype=np.float32))


def along(values: np.ndarray, axis: int, ndim: int) -> torch.Tensor:
    """A per-channel constant shaped to broadcast along ``axis`` (a scalar stays a scalar)."""
    t = const(values)
    if t.numel() == 1:
        return t.reshape(())
    shape = [1] * ndim
    shape[axis] = -1
    return t.reshape(shape)


def _arg(args: list, i: int):
    return args[i] if len(args) > i else None


def _dequant(t: torch.Tensor, scale, zero) -> torch.Tensor:
    return (t - const(zero)) * const(scale)


def _quant(t: torch.Tensor, scale, zero, dtype) -> torch.Tensor:
    info = np.iinfo(np.asarray(zero).dtype if zero is not None else dtype)
    return torch.clamp(t / const(scale) + const(zero), info.min, info.max)


def _quantize_linear(node: Node, t: list, a: list, exact: list) -> torch.Tensor:
    x, scale, zero = t[0], a[1], _arg(a, 2)
    axis = node.attr("axis", 1) % x.dim()
    s, z = along(scale, axis, x.dim()), along(0 if zero is None else zero, axis, x.dim())
    info = np.iinfo(exact[0].dtype)
    return torch.clamp(x / s + z, info.min, info.max)


def _dequantize_linear(node: Node, t: list, a: list, exact: list) -> torch.Tensor:
    x, scale, zero = t[0], a[1], _arg(a, 2)
    axis = node.attr("axis", 1) % x.dim()
    return (x - along(0 if zero is None else zero, axis, x.dim())) * along(scale, axis, x.dim())


def _dynamic_quantize_linear(node: Node, t: list, a: list, exact: list) -> torch.Tensor:
    """The codes only: the scale and zero point (the other outputs) are constants here."""
    return t[0] / const(exact[1]) + const(exact[2])


def _pads(node: Node) -> tuple[int, int, int, int]:
    top, left, bottom, right = node.attr("pads", [0, 0, 0, 0])
    return left, right, top, bottom


def _max_pool(node: Node, t: list, a: list, exact: list) -> torch.Tensor:
    x = F.pad(t[0], _pads(node), value=float("-inf"))
    return F.max_pool2d(x, node.attr("kernel_shape"), node.attr("strides", None) or 1,
                        dilation=node.attr("dilations", [1, 1]),
                        ceil_mode=bool(node.attr("ceil_mode", 0)))


def _clip(node: Node, t: list, a: list, exact: list) -> torch.Tensor:
    lo = _arg(a, 1) if _arg(a, 1) is not None else node.attr("min", -np.inf)
    hi = _arg(a, 2) if _arg(a, 2) is not None else node.attr("max", np.inf)
    return torch.clamp(t[0], float(lo), float(hi))


def _binary(fn: Callable) -> Surrogate:
    return lambda node, t, a, exact: fn(t[0], t[1])


def _unary(fn: Callable) -> Surrogate:
    return lambda node, t, a, exact: fn(t[0])


def _qlinear_binary(fn: Callable) -> Surrogate:
    """QLinearAdd/QLinearMul: A, A_scale, A_zp, B, B_scale, B_zp, C_scale, C_zp."""
    def op(node: Node, t: list, a: list, exact: list) -> torch.Tensor:
        y = fn(_dequant(t[0], a[1], _arg(a, 2)), _dequant(t[3], a[4], _arg(a, 5)))
        return _quant(y, a[6], _arg(a, 7), exact[0].dtype)
    return op


def _qlinear_global_average_pool(node: Node, t: list, a: list, exact: list) -> torch.Tensor:
    x = _dequant(t[0], a[1], a[2])
    dims = tuple(range(1, x.dim() - 1)) if node.attr("channels_last", 0) else tuple(range(2, x.dim()))
    return _quant(x.mean(dim=dims, keepdim=True), a[3], a[4], exact[0].dtype)


def _avg_pool(x: torch.Tensor, node: Node) -> torch.Tensor:
    kernel, strides = node.attr("kernel_shape"), node.attr("strides", None) or 1
    ceil = bool(node.attr("ceil_mode", 0))
    include = bool(node.attr("count_include_pad", 0))
    if not include and any(_pads(node)):
        ones = F.pad(torch.ones_like(x[:1, :1]), _pads(node))
        total = F.avg_pool2d(F.pad(x, _pads(node)), kernel, strides, ceil_mode=ceil)
        return total / F.avg_pool2d(ones, kernel, strides, ceil_mode=ceil)
    return F.avg_pool2d(F.pad(x, _pads(node)) if include else x, kernel, strides, ceil_mode=ceil)


def _qlinear_average_pool(node: Node, t: list, a: list, exact: list) -> torch.Tensor:
    return _quant(_avg_pool(_dequant(t[0], a[1], a[2]), node), a[3], a[4], exact[0].dtype)


def _qlinear_concat(node: Node, t: list, a: list, exact: list) -> torch.Tensor:
    parts = [_dequant(t[i], a[i + 1], a[i + 2]) for i in range(2, len(t), 3)]
    return _quant(torch.cat(parts, dim=node.attr("axis")), a[0], a[1], exact[0].dtype)


def _softmax(x: torch.Tensor, node: Node, opset: int) -> torch.Tensor:
    """Softmax with the opset's meaning of ``axis``: from 13 that axis, before it the rows of
    the input flattened from it."""
    axis = node.attr("axis", 1 if opset < 13 else -1) % x.dim()
    if opset >= 13:
        return torch.softmax(x, dim=axis)
    return torch.softmax(x.reshape(int(np.prod(x.shape[:axis])), -1), dim=1).reshape(x.shape)


def _qlinear_softmax(node: Node, t: list, a: list, exact: list) -> torch.Tensor:
    """X, X_scale, X_zp, Y_scale, Y_zp (com.microsoft), its opset an attribute."""
    y = _softmax(_dequant(t[0], a[1], _arg(a, 2)), node, int(node.attr("opset", 13)))
    return _quant(y, a[3], _arg(a, 4), exact[0].dtype)


def _layer_normalization(node: Node, t: list, a: list, exact: list) -> torch.Tensor:
    x = t[0]
    axis = node.attr("axis", -1) % x.dim()
    shape = tuple(x.shape[axis:])
    bias = t[2].expand(shape) if len(t) > 2 and t[2] is not None else None
    return F.layer_norm(x, shape, t[1].expand(shape), bias, float(node.attr("epsilon", 1e-5)))


def _reduce_mean(node: Node, t: list, a: list, exact: list) -> torch.Tensor:
    x = t[0]
    axes = _arg(a, 1) if _arg(a, 1) is not None else node.attr("axes")
    if axes is None or len(axes) == 0:
        if node.attr("noop_with_empty_axes", 0):
            return x
        axes = range(x.dim())
    return x.mean(dim=tuple(int(d) % x.dim() for d in axes),
                  keepdim=bool(node.attr("keepdims", 1)))


def _gelu(node: Node, t: list, a: list, exact: list) -> torch.Tensor:
    return F.gelu(t[0], approximate=node.attr("approximate", "none"))


SURROGATES: dict[str, Surrogate] = {
    "QuantizeLinear": _quantize_linear,
    "DequantizeLinear": _dequantize_linear,
    "DynamicQuantizeLinear": _dynamic_quantize_linear,
    "Cast": _unary(lambda x: x),
    "Relu": _unary(torch.relu),
    "Clip": _clip,
    "MaxPool": _max_pool,
    "Add": _binary(torch.add),
    "Sub": _binary(torch.sub),
    "Mul": _binary(torch.mul),
    "Div": _binary(torch.div),
    "Pow": _binary(torch.pow),
    "Sqrt": _unary(torch.sqrt),
    "Reciprocal": _unary(torch.reciprocal),
    "Neg": _unary(torch.neg),
    "Erf": _unary(torch.erf),
    "Tanh": _unary(torch.tanh),
    "Sigmoid": _unary(torch.sigmoid),
    "Gelu": _gelu,
    "LayerNormalization": _layer_normalization,
    "ReduceMean": _reduce_mean,
    "QLinearAdd": _qlinear_binary(torch.add),
    "QLinearMul": _qlinear_binary(torch.mul),
    "QLinearGlobalAveragePool": _qlinear_global_average_pool,
    "QLinearAveragePool": _qlinear_average_pool,
    "QLinearConcat": _qlinear_concat,
    "QLinearSoftmax": _qlinear_softmax,
    "GlobalAveragePool": _unary(lambda x: x.mean(dim=tuple(range(2, x.dim())), keepdim=True)),
    "AveragePool": lambda node, t, a, exact: _avg_pool(t[0], node),
}
"""The surrogates computed from the inputs (Softmax, which needs the graph's opset, and the
data movement ops are ``surrogate``'s own)."""

MOVEMENT: dict[str, tuple[int, ...] | None] = {
    "Reshape": (0,), "Flatten": (0,), "Squeeze": (0,), "Unsqueeze": (0,), "Transpose": (0,),
    "Identity": (0,), "Gather": (0,), "Slice": (0,), "Split": (0,), "Expand": (0,),
    "Where": (1, 2), "Concat": None,
}
"""The ops that only move values, and which of their inputs hold the values (None: all)."""

NO_GRADIENT = frozenset({"Shape", "ConstantOfShape", "Range", "Equal", "Less", "Greater", "Not",
                         "Mod"})
"""Ops whose outputs are constants to the gradient: shapes, masks, index arithmetic."""

OPS_WITH_SURROGATES = frozenset(SURROGATES) | frozenset(MOVEMENT) | NO_GRADIENT | {"Softmax"}


def _moved(node: Node, t: list, a: list) -> list[torch.Tensor]:
    """A movement op's outputs as gathers of its value inputs: the runner's op run on their
    element positions (numbered across the inputs) gives each output element's source."""
    data = range(len(a)) if MOVEMENT[node.op] is None else MOVEMENT[node.op]
    positions, sources, offset = list(a), [], 0
    for i in data:
        size = int(np.size(a[i]))
        positions[i] = np.arange(offset, offset + size, dtype=np.int64).reshape(np.shape(a[i]))
        sources.append(t[i].reshape(-1))
        offset += size
    flat = torch.cat(sources)
    return [flat[torch.from_numpy(np.ascontiguousarray(p, dtype=np.int64))]
            for p in OPS[node.op](node, positions, None)]


def surrogate(node: Node, t: list, a: list, exact: list, opset: int) -> list[torch.Tensor | None]:
    """The surrogate of each of the node's outputs (None: no gradient flows out there)."""
    if node.op in NO_GRADIENT:
        return [None] * len(exact)
    if node.op in MOVEMENT:
        return _moved(node, t, a)
    y = _softmax(t[0], node, opset) if node.op == "Softmax" else SURROGATES[node.op](node, t, a, exact)
    outputs = y if isinstance(y, list) else [y]
    return outputs + [None] * (len(exact) - len(outputs))
