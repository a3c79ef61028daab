"""The runner's context and the ONNX ops it executes natively: quantization (static, and
dynamic as onnxruntime's DynamicQuantizeLinear), the QOperator layers that multiply through the
product table (QLinearConv, QGemm, QLinearMatMul, the last also of two activations), the shape
and code-preserving ops, and elementwise arithmetic.

The table layers accumulate in int32 through the kernels of ``accel`` and requantize exactly as
onnxruntime's CPU kernels do (float32 ``x_scale * w_scale / y_scale``, clamp, round half to
even, add the zero point), so with the exact table the results equal onnxruntime's. Every op
here is listed in ``OPS``, which the op registry (``evaluators.runtime.ops``) takes in whole.
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType

import numpy as np

from accel.batch import TableBatch
from accel.codes import recentre
from accel.requant import output_multiplier, requantize
from circuits.product_table import ProductTable
from evaluators.runtime import qops
from evaluators.runtime.layer_tables import LayerTablesBatch, Tables, layer_table
from evaluators.runtime.node import Node
from evaluators.runtime.qgraph import QGraph, UnsupportedOpError
from evaluators.runtime.qops import dequantize, quantize


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


def weight_layer(node: Node, ctx: Context, b: np.ndarray, index: int = 3) -> bool:
    """Whether a MatMul node multiplies by a constant 2-D weight (input ``index``): the gemm
    kernels' case, folded once per table. Anything else (two activations, as attention's
    Q x K^T, or an N-D constant) is a batched product of codes (``matmul_accumulate``)."""
    return b.ndim == 2 and node.inputs[index] in ctx.graph.initializers


def matmul_accumulate(node: Node, ctx: Context, a: np.ndarray, a_zero_point: np.ndarray,
                      b: np.ndarray, b_zero_point: np.ndarray) -> np.ndarray:
    """int32 accumulators of the numpy-style matmul of two code tensors through the table (1-D
    operands promoted and their axis dropped as numpy does), activation zero points per
    tensor, a constant's per tensor or per column."""
    if np.size(a_zero_point) != 1 or np.size(b_zero_point) not in (1, b.shape[-1]):
        raise UnsupportedOpError(f"node {node.name!r} ({node.op}): zero points must be per "
                                 "tensor (or per column for the second operand)")
    a_zp = int(np.asarray(a_zero_point).reshape(()))
    b_zp = np.asarray(b_zero_point).astype(np.int64).reshape(-1 if np.size(b_zero_point) > 1 else ())
    a, a_zp, b, b_zp = ctx.operands(node, a, a_zp, b, b_zp)
    vector_a, vector_b = a.ndim == 1, b.ndim == 1
    acc = ctx.kernels.matmul_accumulate(a[None] if vector_a else a,
                                        b[:, None] if vector_b else b, ctx.table_for(node),
                                        a_zero_point=a_zp, b_zero_point=b_zp)
    if vector_b:
        acc = acc[..., 0]
    return acc[..., 0, :] if vector_a else acc


def _activation_matmul(node: Node, args: list, ctx: Context) -> np.ndarray:
    """QLinearMatMul of two activations (or of an N-D constant): accumulate through the table,
    requantize along the columns."""
    a, a_scale, a_zp, b, b_scale, b_zp, y_scale, y_zp = args
    if np.size(a_scale) != 1 or np.size(b_scale) not in (1, b.shape[-1]):
        raise UnsupportedOpError(f"node {node.name!r} (QLinearMatMul): a_scale must be per "
                                 "tensor, b_scale per tensor or per column")
    acc = matmul_accumulate(node, ctx, a, a_zp, b, b_zp)
    if node.outputs[0] in ctx.capture:
        ctx.captured[node.outputs[0] + ":acc"] = acc
    mult = output_multiplier(np.asarray(a_scale).reshape(()), np.asarray(b_scale).reshape(-1), y_scale)
    return requantize(acc, mult, np.asarray(y_zp).reshape(()), max(acc.ndim - 1, 0))


def qlinear_matmul_arguments(node: Node, args: list, ctx: Context) -> tuple:
    """What ``qgemm_arguments`` gives, for a QLinearMatMul node with a constant 2-D weight (no
    bias)."""
    g = ctx.graph
    a, a_scale, _, b, b_scale, _, y_scale, _ = args
    if not weight_layer(node, ctx, b):
        raise UnsupportedOpError(f"node {node.name!r} (QLinearMatMul): the weight must be a "
                                 "2-D constant")
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
    if not weight_layer(node, ctx, args[3]):
        return [_activation_matmul(node, [_input(args, i) for i in range(8)], ctx)]
    return [_gemm(node, ctx, *qlinear_matmul_arguments(node, args, ctx))]


def _input(args: list, index: int) -> np.ndarray:
    """Input ``index`` of a QLinear node, an absent zero point a zero of its tensor's type."""
    if index in (2, 5, 7) and (len(args) <= index or args[index] is None):
        return np.zeros((), dtype=args[0 if index != 5 else 3].dtype)
    return args[index]


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


def dynamic_quantization(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """onnxruntime's DynamicQuantizeLinear parameters of a float32 tensor (its
    ``GetQuantizationParameter``): the range widened to include 0, ``scale = (max - min) / 255``
    in float32 (1 for an all-zero range) and ``zero point = round_half_even(clamp(0 - min /
    scale, 0, 255))`` as uint8."""
    x = np.asarray(x, dtype=np.float32)
    lo = np.minimum(x.min(initial=np.float32(np.inf)), np.float32(0))
    hi = np.maximum(x.max(initial=np.float32(-np.inf)), np.float32(0))
    scale = np.float32(1) if hi == lo else np.float32(hi - lo) / np.float32(255)
    zero = np.clip(np.float32(0) - lo / scale, np.float32(0), np.float32(255))
    return np.asarray(scale, np.float32), np.asarray(np.rint(zero), np.uint8)


def _dynamic_quantize_op(node: Node, args: list, ctx: Context) -> list[np.ndarray]:
    """DynamicQuantizeLinear: uint8 codes, their scale and zero point, all from the tensor's
    range. In batched mode that range would mix the tables' images, so it is refused."""
    if isinstance(ctx.tables, (TableBatch, LayerTablesBatch)) and len(ctx.tables) > 1:
        raise UnsupportedOpError(f"node {node.name!r} (DynamicQuantizeLinear): its range spans "
                                 "the whole tensor, so tables cannot be scored in one batch")
    scale, zero_point = dynamic_quantization(args[0])
    return [quantize(args[0], scale, zero_point), scale, zero_point]


def _arithmetic(fn: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> Callable:
    """An elementwise op with numpy broadcasting: on float32 tensors one IEEE operation per
    element, as onnxruntime computes it; on integers of one type the same op wrapping as
    onnxruntime's integer kernels do (the integer graph's additions,
    ``evaluators.onnx.integer_graph``)."""

    def op(node: Node, args: list, ctx: Context) -> list[np.ndarray]:
        a, b = args
        if a.dtype.kind in "iu" and a.dtype == b.dtype:
            return [fn(a, b).astype(a.dtype)]
        if a.dtype != np.float32 or b.dtype != np.float32:
            raise UnsupportedOpError(f"node {node.name!r} ({node.op}) reads {a.dtype} and "
                                     f"{b.dtype}; only float32 is supported")
        return [fn(a, b)]

    return op


Op = Callable[[Node, list, Context], list]
"""An op's implementation: ``(node, input values, context) -> output values``."""

OPS: dict[str, Op] = {
    "QuantizeLinear": _quantize_op,
    "DynamicQuantizeLinear": _dynamic_quantize_op,
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
    "Add": _arithmetic(np.add),
    "Sub": _arithmetic(np.subtract),
    "Mul": _arithmetic(np.multiply),
}

TABLE_OPS = frozenset({"QLinearConv", "QGemm", "QLinearMatMul"})
"""The ops here that multiply through the table."""
