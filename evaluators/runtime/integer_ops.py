"""The ONNX integer ops an integer-only graph is made of (``evaluators.onnx.integer_graph``):
ConvInteger and MatMulInteger multiplying through the product table into int32 accumulators,
integer division rounding toward zero (and float32 Div, for the float ops of transformers) and
Cast, computed as onnxruntime computes them. (Integer Add, Sub and Mul are the elementwise ops
of ``evaluators.runtime.core_ops``.) Every op here is listed in ``OPS``, which the op
registry (``evaluators.runtime.ops``) takes in whole.
"""

from __future__ import annotations

import numpy as np
from onnx import helper

from evaluators.runtime.core_ops import Context, Op, matmul_accumulate, weight_layer
from evaluators.runtime.node import Node
from evaluators.runtime.qgraph import UnsupportedOpError


def _zero_point_arg(args: list, index: int) -> np.ndarray | int:
    return args[index] if len(args) > index and args[index] is not None else 0


def _conv_integer(node: Node, args: list, ctx: Context) -> list[np.ndarray]:
    if node.attr("auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
        raise UnsupportedOpError(f"node {node.name!r} (ConvInteger): auto_pad is "
                                 "not supported")
    x, x_zero_point, w, w_zero_point = ctx.operands(
        node, args[0], int(np.asarray(_zero_point_arg(args, 2))), args[1],
        np.asarray(_zero_point_arg(args, 3)).astype(np.int64))
    return [ctx.kernels.conv_accumulate(
        x, w, ctx.table_for(node), strides=tuple(node.attr("strides", [1, 1])),
        pads=tuple(node.attr("pads", [0, 0, 0, 0])), dilations=tuple(node.attr("dilations", [1, 1])),
        group=int(node.attr("group", 1)), x_zero_point=x_zero_point, w_zero_point=w_zero_point)]


def _matmul_integer(node: Node, args: list, ctx: Context) -> list[np.ndarray]:
    """MatMulInteger: a constant 2-D weight through the gemm kernels; two activations (dynamic
    quantization's attention products) or N-D operands through ``matmul_accumulate``."""
    if not weight_layer(node, ctx, args[1], index=1):
        return [matmul_accumulate(node, ctx, args[0], np.asarray(_zero_point_arg(args, 2)),
                                  args[1], np.asarray(_zero_point_arg(args, 3)))]
    a, a_zero_point, b, b_zero_point = ctx.operands(
        node, args[0], int(np.asarray(_zero_point_arg(args, 2))), args[1],
        np.asarray(_zero_point_arg(args, 3)).astype(np.int64))
    acc = ctx.kernels.gemm_accumulate(a.reshape(-1, a.shape[-1]), b, ctx.table_for(node),
                                      a_zero_point=a_zero_point, b_zero_point=b_zero_point)
    return [acc.reshape(*a.shape[:-1], b.shape[1])]


def _truncating_divide(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Integer division rounding toward zero, as onnxruntime's integer Div."""
    quotient = np.abs(a) // np.abs(b)
    return np.where((a < 0) != (b < 0), -quotient, quotient)


def _run_div(node: Node, args: list, ctx: Context) -> list[np.ndarray]:
    """Div of one integer type (rounding toward zero) or of float32 (one IEEE division per
    element, as onnxruntime divides: the float ops of quantized transformers)."""
    a, b = args
    if a.dtype == np.float32 and b.dtype == np.float32:
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            return [a / b]
    if a.dtype.kind not in "iu" or a.dtype != b.dtype:
        raise UnsupportedOpError(f"node {node.name!r} (Div) reads {a.dtype} and {b.dtype}; "
                                 "only integers of one type or float32 are supported")
    return [_truncating_divide(a, b).astype(a.dtype)]


def _run_cast(node: Node, args: list, ctx: Context) -> list[np.ndarray]:
    return [args[0].astype(helper.tensor_dtype_to_np_dtype(node.attr("to")))]


OPS: dict[str, Op] = {
    "ConvInteger": _conv_integer,
    "MatMulInteger": _matmul_integer,
    "Div": _run_div,
    "Cast": _run_cast,
}

TABLE_OPS = frozenset({"ConvInteger", "MatMulInteger"})
"""The ops here that multiply through the table."""
