"""The ops that multiply nothing through the product table, computed as onnxruntime computes them.

Exactness against onnxruntime needs its arithmetic, not the textbook formula; each function names
the behaviour it replicates (verified against onnxruntime 1.32 on x86-64 with AVX2/FMA on tensors
full of rounding ties, see tests/evaluators/runtime/test_qops.py):

- QLinearAdd (MLAS AVX2 kernel): ``y = fma(a, A/C, fma(b, B/C, zc - fma(A/C, za, B/C * zb)))``
  in float32, rounded half to even, saturated. The operand that is constant over the innermost
  broadcast span is passed second (onnxruntime swaps the inputs when the first one is).
- QLinearMul: ``y = rint(float((a - za)(b - zb)) * ((A * B) / C) + zc)``, two float32 roundings.
- QLinearGlobalAveragePool: integer sum minus ``zp * count``, requantized with the float32
  multiplier ``x_scale / (y_scale * count)``.
- QLinearAveragePool: dequantized float32 values summed row by row in window order, divided by
  the count, quantized with ``rint(y / y_scale + zp)``; a window covering the whole unpadded
  image takes the global-pool path instead.
- float AveragePool / GlobalAveragePool (MLAS): the global kernel sums four interleaved lanes
  and reduces them as ``(l0 + l2) + (l1 + l3)``; the vector kernel sums each column of the window
  first, then the column sums left to right; the generic kernel sums row by row.
- QLinearConcat: each input's codes through the table ``quantize(dequantize(code))``.
- QLinearSoftmax: the float32 table ``exp((i - 255 + shift) * x_scale)`` (computed in double,
  ``shift`` from a float32 log), float32 sums in input order, ``rint(e * floor(1 / y_scale) /
  sum)`` with the quotient in double, plus zp, saturated (onnxruntime 1.32; a float32 quotient
  or a double log differ on about 1 row in 100,000, at rounding ties).
- float Softmax (MLAS AVX-512F kernel, the one onnxruntime picks on CPUs with AVX-512):
  MLAS's own exp polynomial with FMAs, sums in 16 lanes, ``e * (1 / sum)``, the same bits on
  every CPU. On a CPU without AVX-512 MLAS sums in other lanes and flushes the exps of very
  negative inputs to 0, so onnxruntime's probabilities there differ in their last bits (within
  ``2^-21 (1 + |x - max|)`` relative, as dse's own from the exact softmax).

Since every 8-bit elementwise op has at most 256 x 256 distinct inputs, the binary ops are
evaluated once per code pair into a table and then looked up.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from accel.codes import map_pairs
from accel.fma import fma32
from accel.requant import requantize
from evaluators.runtime.node import Node
from evaluators.runtime.qgraph import UnsupportedOpError

_F32 = np.float32


# -- quantization ---------------------------------------------------------------------------------

def _along(values: np.ndarray, axis: int, ndim: int) -> np.ndarray:
    """Per-axis parameters shaped to broadcast against a tensor of rank ``ndim``."""
    values = np.asarray(values)
    if values.size == 1 or ndim == 0:
        return values.reshape(())
    shape = [1] * ndim
    shape[axis % ndim] = -1
    return values.reshape(shape)


def quantize(x: np.ndarray, scale: np.ndarray, zero_point: np.ndarray, axis: int = 1) -> np.ndarray:
    """onnxruntime's QuantizeLinear: x / scale, clamp to the code range, round half to even."""
    info = np.iinfo(zero_point.dtype)
    x = np.asarray(x, dtype=_F32)
    zp = _along(zero_point, axis, x.ndim).astype(_F32)
    y = x / _along(np.asarray(scale, dtype=_F32), axis, x.ndim)
    y = np.clip(y, _F32(info.min) - zp, _F32(info.max) - zp)
    return (np.rint(y) + zp).astype(zero_point.dtype)


def dequantize(q: np.ndarray, scale: np.ndarray, zero_point: np.ndarray | None,
               axis: int = 1) -> np.ndarray:
    """onnxruntime's DequantizeLinear: (q - zp) converted to float32, times scale."""
    q = q.astype(np.int32)
    if zero_point is not None:
        q = q - _along(zero_point, axis, q.ndim).astype(np.int32)
    return q.astype(_F32) * _along(np.asarray(scale, dtype=_F32), axis, q.ndim)


def all_codes(dtype: np.dtype) -> np.ndarray:
    """Every 8-bit code of ``dtype`` in increasing order (index = code - min)."""
    info = np.iinfo(dtype)
    return np.arange(info.min, info.max + 1).astype(dtype)


def code_index(x: np.ndarray) -> np.ndarray:
    """``x - min code`` as uint8 without widening: the index of each code in ``all_codes``."""
    u = np.ascontiguousarray(x).view(np.uint8)
    return u ^ np.uint8(0x80) if x.dtype == np.int8 else u


def _saturate(y: np.ndarray, dtype: np.dtype) -> np.ndarray:
    info = np.iinfo(dtype)
    return np.clip(np.rint(y), info.min, info.max).astype(dtype)


def scalar(value: np.ndarray | None, what: str, node: Node) -> float:
    """A per-tensor quantization parameter (0 when absent); per-channel ones are refused."""
    if value is None:
        return 0
    if np.asarray(value).size != 1:
        raise UnsupportedOpError(f"node {node.name!r} ({node.op}): per-channel {what} is not "
                                 "supported")
    return np.asarray(value).reshape(()).item()


def _zero_point(value: np.ndarray | None, like: np.ndarray) -> np.ndarray:
    return np.zeros((), like.dtype) if value is None else np.asarray(value).reshape(())


# -- binary quantized ops -------------------------------------------------------------------------

def _first_is_span_scalar(a_shape: tuple[int, ...], b_shape: tuple[int, ...]) -> bool:
    """Whether onnxruntime's broadcaster holds the first input constant over the innermost span
    (it then passes it to MLAS as the second, scalar operand)."""
    rank = max(len(a_shape), len(b_shape))
    a = (1,) * (rank - len(a_shape)) + tuple(a_shape)
    b = (1,) * (rank - len(b_shape)) + tuple(b_shape)
    if int(np.prod(b)) == 1:
        return False
    if int(np.prod(a)) == 1:
        return True
    for da, db in zip(reversed(a), reversed(b)):
        if max(da, db) > 1:
            return da == 1 and db != 1
    return False


def _pair_table(fn: Callable[[np.ndarray, np.ndarray], np.ndarray], dtype: np.dtype) -> np.ndarray:
    codes = all_codes(dtype).astype(_F32)
    return fn(codes[:, None], codes[None, :])


def _binary_args(node: Node, args: list) -> tuple:
    a, sa, za, b, sb, zb, sc, zc = (list(args) + [None] * 8)[:8]
    if a.dtype != b.dtype:
        raise UnsupportedOpError(f"node {node.name!r} ({node.op}) mixes {a.dtype} and {b.dtype} "
                                 "inputs")
    scales = [_F32(scalar(s, "scale", node)) for s in (sa, sb, sc)]
    zps = [_F32(scalar(z, "zero point", node)) for z in (za, zb, zc)]
    return a, b, scales, zps, _zero_point(zc, a).dtype


def qlinear_add(node: Node, args: list, ctx) -> list[np.ndarray]:
    a, b, (sa, sb, sc), (za, zb, zc), dtype = _binary_args(node, args)
    ra, rb = sa / sc, sb / sc

    def add(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        if _first_is_span_scalar(a.shape, b.shape):  # MLAS gets (b, a): its fixed part swaps too
            fixed = zc - fma32(rb, zb, ra * za)
            return _saturate(fma32(y, rb, fma32(x, ra, fixed)), dtype)
        fixed = zc - fma32(ra, za, rb * zb)
        return _saturate(fma32(x, ra, fma32(y, rb, fixed)), dtype)

    return [map_pairs(_pair_table(add, a.dtype), a, b)]


def qlinear_mul(node: Node, args: list, ctx) -> list[np.ndarray]:
    a, b, (sa, sb, sc), (za, zb, zc), dtype = _binary_args(node, args)
    ratio = (sa * sb) / sc

    def mul(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return _saturate((x - za) * (y - zb) * ratio + zc, dtype)

    return [map_pairs(_pair_table(mul, a.dtype), a, b)]


# -- pooling --------------------------------------------------------------------------------------

def pool_output_size(size: int, kernel: int, stride: int, head: int, tail: int, dilation: int,
                     ceil_mode: bool) -> int:
    """onnxruntime's pooling output size; in ceil mode the last window must start inside the
    image or its leading padding."""
    numerator = size + head + tail - dilation * (kernel - 1) - 1
    if not ceil_mode:
        return numerator // stride + 1
    out = math.ceil(numerator / stride) + 1
    return out - 1 if (out - 1) * stride >= size + head else out


def pool_geometry(node: Node, spatial: tuple[int, int]) -> tuple:
    """(kernel, strides, dilations, pads, output size) of a 2-D pooling node."""
    if node.attr("auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
        raise UnsupportedOpError(f"node {node.name!r} ({node.op}): auto_pad "
                                 f"{node.attr('auto_pad')} is not supported")
    kernel = tuple(node.attr("kernel_shape"))
    if len(kernel) != 2:
        raise UnsupportedOpError(f"node {node.name!r} ({node.op}): only 2-D pooling is supported, "
                                 f"kernel_shape is {list(kernel)}")
    strides = tuple(node.attr("strides", [1, 1]))
    dilations = tuple(node.attr("dilations", [1, 1]))
    pads = tuple(node.attr("pads", [0, 0, 0, 0]))
    ceil_mode = bool(node.attr("ceil_mode", 0))
    out = tuple(pool_output_size(spatial[i], kernel[i], strides[i], pads[i], pads[i + 2],
                                 dilations[i], ceil_mode) for i in range(2))
    return kernel, strides, dilations, pads, out


class _Taps:
    """The kernel taps of a 2-D pooling window over an NCHW tensor: ``tap(i, j)`` is the (N, C,
    OH, OW) view of what tap (i, j) of every window reads, ``fill`` outside the image. Views of
    one padded copy, so pooling never holds all taps at once."""

    def __init__(self, x: np.ndarray, kernel, strides, dilations, pads, out, fill) -> None:
        need = [(out[a] - 1) * strides[a] + dilations[a] * (kernel[a] - 1) + 1 for a in range(2)]
        after = [max(0, need[a] - x.shape[2 + a] - pads[a]) for a in range(2)]
        self.padded = np.pad(x, ((0, 0), (0, 0), (pads[0], after[0]), (pads[1], after[1])),
                             constant_values=fill)
        self.kernel, self.strides, self.dilations, self.out = kernel, strides, dilations, out

    def tap(self, i: int, j: int) -> np.ndarray:
        r, s = i * self.dilations[0], j * self.dilations[1]
        (sh, sw), (oh, ow) = self.strides, self.out
        return self.padded[:, :, r : r + sh * (oh - 1) + 1 : sh, s : s + sw * (ow - 1) + 1 : sw]

    def row_major_sum(self) -> np.ndarray:
        """Float32 sums of each window, row by row in window order (padding adds zeros)."""
        total = self.tap(0, 0).copy()
        for i in range(self.kernel[0]):
            for j in range(self.kernel[1]):
                if i or j:
                    total += self.tap(i, j)
        return total


def _window_counts(size: int, kernel: int, stride: int, head: int, out: int) -> np.ndarray:
    """How many unpadded positions each output's window covers along one axis."""
    start = np.arange(out) * stride - head
    return np.minimum(start + kernel, size) - np.maximum(start, 0)


def max_pool(x: np.ndarray, node: Node) -> np.ndarray:
    """MaxPool on float values or integer codes (ceil_mode, pads and dilations included);
    padded positions never win."""
    if len(node.outputs) > 1 and node.outputs[1]:
        raise UnsupportedOpError(f"node {node.name!r} (MaxPool): the Indices output is not "
                                 "supported")
    kernel, strides, dilations, pads, out = pool_geometry(node, x.shape[2:])
    lowest = -np.inf if x.dtype.kind == "f" else np.iinfo(x.dtype).min
    taps = _Taps(x, kernel, strides, dilations, pads, out, lowest)
    y = taps.tap(0, 0).copy()
    for i in range(kernel[0]):
        for j in range(kernel[1]):
            np.maximum(y, taps.tap(i, j), out=y)
    return y


def _channels_first(x: np.ndarray, node: Node) -> np.ndarray:
    return np.moveaxis(x, -1, 1) if node.attr("channels_last", 0) else x


def _channels_back(y: np.ndarray, node: Node) -> np.ndarray:
    return np.moveaxis(y, 1, -1) if node.attr("channels_last", 0) else y


def _integer_mean(x: np.ndarray, x_scale: float, x_zp: float, y_scale: float,
                  y_zp: np.ndarray) -> np.ndarray:
    """MLAS QLinearGlobalAveragePool of NCHW codes: exact integer sums, one requantization."""
    count = int(np.prod(x.shape[2:]))
    sums = x.reshape(x.shape[0], x.shape[1], -1).sum(axis=2, dtype=np.int64) - int(x_zp) * count
    multiplier = _F32(x_scale) / (_F32(y_scale) * _F32(count))
    y = requantize(sums, np.array([multiplier], dtype=_F32), y_zp)
    return y.reshape(x.shape[:2] + (1,) * (x.ndim - 2))


def _unary_args(node: Node, args: list) -> tuple:
    x, xs, xz, ys, yz = (list(args) + [None] * 5)[:5]
    return (x, scalar(xs, "scale", node), scalar(xz, "zero point", node),
            scalar(ys, "scale", node), _zero_point(yz, x))


def qlinear_global_average_pool(node: Node, args: list, ctx) -> list[np.ndarray]:
    x, xs, xz, ys, yz = _unary_args(node, args)
    return [_channels_back(_integer_mean(_channels_first(x, node), xs, xz, ys, yz), node)]


def qlinear_average_pool(node: Node, args: list, ctx) -> list[np.ndarray]:
    x, xs, xz, ys, yz = _unary_args(node, args)
    x = _channels_first(x, node)
    kernel, strides, dilations, pads, out = pool_geometry(node, x.shape[2:])
    if dilations != (1, 1):
        raise UnsupportedOpError(f"node {node.name!r} (QLinearAveragePool): dilations are not "
                                 "supported")
    if kernel == tuple(x.shape[2:]) and not any(pads):
        return [_channels_back(_integer_mean(x, xs, xz, ys, yz), node)]
    values = dequantize(all_codes(x.dtype), np.array(xs), np.array(xz, dtype=x.dtype))
    total = _Taps(values[code_index(x)], kernel, strides, dilations, pads, out,
                  _F32(0)).row_major_sum()
    if node.attr("count_include_pad", 0):
        count = _F32(kernel[0] * kernel[1])
    else:
        count = np.outer(*(_window_counts(x.shape[2 + a], kernel[a], strides[a], pads[a], out[a])
                           for a in range(2))).astype(_F32)
    y = (total / count) / _F32(ys) + _F32(yz)
    return [_channels_back(_saturate(y, yz.dtype), node)]


def _global_float_mean(x: np.ndarray) -> np.ndarray:
    """MLAS global pooling kernel: four interleaved float32 lanes, reduced as
    ``(l0 + l2) + (l1 + l3)``, then the remaining elements one by one, then ``/ count``."""
    flat = x.reshape(x.shape[0], x.shape[1], -1)
    count = flat.shape[2]
    lanes = np.zeros(flat.shape[:2] + (4,), dtype=_F32)
    body = count // 4 * 4
    for start in range(0, body, 4):
        lanes += flat[:, :, start : start + 4]
    total = (lanes[..., 0] + lanes[..., 2]) + (lanes[..., 1] + lanes[..., 3])
    for k in range(body, count):
        total += flat[:, :, k]
    return (total / _F32(count)).reshape(x.shape[:2] + (1,) * (x.ndim - 2))


def global_average_pool(node: Node, args: list, ctx) -> list[np.ndarray]:
    x = args[0]
    if x.dtype != _F32:
        raise UnsupportedOpError(f"node {node.name!r} (GlobalAveragePool) reads {x.dtype}; "
                                 "only float32 is supported")
    return [_global_float_mean(x)]


def _axis_counts(size: int, kernel: int, stride: int, dilation: int, head: int, tail: int,
                 out: int) -> tuple[np.ndarray, np.ndarray]:
    """Per output along one axis: (taps inside the image, taps inside image and padding) of
    onnxruntime's generic pooling loop, whose window ends at the padded extent ``size + tail``."""
    start = np.arange(out) * stride - head
    end = np.minimum(start + kernel * dilation, size + tail)
    inside = np.array([sum(0 <= t < size for t in range(s, e, dilation)) for s, e in zip(start, end)])
    return inside, 1 + (end - start - 1) // dilation


def _mlas_average(x: np.ndarray, taps: _Taps, pads, include_pad: bool) -> np.ndarray:
    """MLAS average pooling (float AveragePool before opset 19): the global kernel for a window
    covering the unpadded image, the vector kernel when the last stride is at most 2 and the
    kernel small, else the generic one (row by row)."""
    kernel, strides, out = taps.kernel, taps.strides, taps.out
    if kernel == tuple(x.shape[2:]) and strides == (1, 1) and not any(pads):
        return _global_float_mean(x)
    rows = _window_counts(x.shape[2], kernel[0], strides[0], pads[0], out[0]).astype(_F32)
    cols = _window_counts(x.shape[3], kernel[1], strides[1], pads[1], out[1]).astype(_F32)
    if strides[1] <= 2 and max(kernel) <= 32 and x.shape[3] + pads[1] + pads[3] <= 2045:
        total = None
        for j in range(kernel[1]):  # each column of the window from its first row, then the
            column = taps.tap(0, j).copy()  # columns left to right
            for i in range(1, kernel[0]):
                column += taps.tap(i, j)
            total = column if total is None else total + column
        count = np.maximum(cols[None, :] * rows[:, None], _F32(1))
    else:
        total = taps.row_major_sum()
        count = np.outer(rows, cols).astype(_F32)
    return total / (_F32(kernel[0] * kernel[1]) if include_pad else count)


def average_pool(node: Node, args: list, ctx) -> list[np.ndarray]:
    """Float AveragePool as onnxruntime runs it: through MLAS before opset 19 (unless ceil_mode
    and count_include_pad are both set), otherwise its generic loop, which sums row by row and
    counts padding only up to the declared pads."""
    x = args[0]
    if x.dtype != _F32:
        raise UnsupportedOpError(f"node {node.name!r} (AveragePool) reads {x.dtype}; only "
                                 "float32 is supported")
    kernel, strides, dilations, pads, out = pool_geometry(node, x.shape[2:])
    include_pad = bool(node.attr("count_include_pad", 0))
    taps = _Taps(x, kernel, strides, dilations, pads, out, _F32(0))
    opset = ctx.graph.opset if ctx is not None else 17
    if opset < 19 and dilations == (1, 1) and not (include_pad and node.attr("ceil_mode", 0)):
        return [_mlas_average(x, taps, pads, include_pad)]
    total = taps.row_major_sum()
    # onnxruntime bounds the height window with pads[1] (the left pad), not pads[2]
    (rows, rows_padded), (cols, cols_padded) = (
        _axis_counts(x.shape[2], kernel[0], strides[0], dilations[0], pads[0], pads[1], out[0]),
        _axis_counts(x.shape[3], kernel[1], strides[1], dilations[1], pads[1], pads[3], out[1]))
    real = np.outer(rows, cols)
    count = np.outer(rows_padded, cols_padded) if include_pad else real
    return [np.where(real > 0, total / np.maximum(count, 1).astype(_F32), total)]


# -- concatenation and softmax --------------------------------------------------------------------

def qlinear_concat(node: Node, args: list, ctx) -> list[np.ndarray]:
    y_scale, y_zp = args[0], args[1]
    parts = []
    for x, scale, zp in zip(args[2::3], args[3::3], args[4::3]):
        zp = _zero_point(zp, x)
        if x.dtype != y_zp.dtype:
            raise UnsupportedOpError(f"node {node.name!r} (QLinearConcat) mixes {x.dtype} and "
                                     f"{y_zp.dtype} codes")
        codes = all_codes(x.dtype)
        table = quantize(dequantize(codes, np.array(scalar(scale, "scale", node)), zp),
                         np.array(scalar(y_scale, "scale", node)), y_zp.reshape(()))
        parts.append(table[code_index(x)])
    return [np.concatenate(parts, axis=node.attr("axis"))]


def _softmax_rows(x: np.ndarray, node: Node, opset: int) -> tuple[np.ndarray, Callable]:
    """(rows of the reduced axis, function putting rows back in the input's shape), with the
    opset's meaning of ``axis`` (before 13: flatten from it; from 13: that axis only)."""
    axis = node.attr("axis", 1 if opset < 13 else -1) % x.ndim
    if opset < 13:
        return x.reshape(int(np.prod(x.shape[:axis])), -1), lambda y: y.reshape(x.shape)
    moved = np.moveaxis(x, axis, -1)
    return moved.reshape(-1, x.shape[axis]), \
        lambda y: np.moveaxis(y.reshape(moved.shape), -1, axis)


def softmax_exps(x_scale: float, d: int) -> np.ndarray:
    """onnxruntime's QLinearSoftmax exp table for rows of ``d`` codes at ``x_scale``: entry
    ``255 - (row max - code)`` is the float32 ``exp((i - 255 + shift) * x_scale)`` computed in
    double, ``shift`` keeping a row's sum far below the float32 maximum. (Its int8 kernel reads
    a byte-rotated copy at byte ``127 - max + code``: the same entry.) Shared with the hls4ml
    export, whose firmware holds this very table."""
    xs = float(_F32(x_scale))
    # onnxruntime takes this log of a float: logf, i.e. the float32 log
    log_room = float(_F32(math.log(float(np.finfo(_F32).max / _F32(d)))))
    shift = max(0.0, log_room - 5.0) / xs
    return np.array([math.exp((i - 255 + shift) * xs) for i in range(256)],
                    dtype=np.float64).astype(_F32)


def softmax_numerator(y_scale: float) -> np.float32:
    """The float32 ``floor(1 / y_scale)`` QLinearSoftmax scales each exp by before dividing by
    the row's sum."""
    return _F32(math.floor(_F32(1) / _F32(y_scale)))


def qlinear_softmax(node: Node, args: list, ctx) -> list[np.ndarray]:
    x, xs, _, ys, yz = _unary_args(node, args)
    rows, back = _softmax_rows(x, node, int(node.attr("opset", 13)))
    rows = rows.astype(np.int32)
    e = softmax_exps(xs, rows.shape[1])[255 + rows - rows.max(axis=1, keepdims=True)]
    total = np.zeros(rows.shape[0], dtype=_F32)
    for k in range(rows.shape[1]):  # summed in input order
        total += e[:, k]
    # the quotient in double, as onnxruntime's kernel computes it (a float32 one would round
    # some rows onto a tie)
    q = np.rint((e.astype(np.float64) * float(softmax_numerator(ys)))
                / total.astype(np.float64)[:, None]).astype(np.int64)
    info = np.iinfo(yz.dtype)
    return [back(np.clip(q + int(yz), info.min, info.max).astype(yz.dtype))]


_EXP = dict(lower=_F32(-103.9720840454), bias=_F32(12582912.0), log2e=_F32(1.44269504088896341),
            ln2_high=_F32(-6.93145752e-1), ln2_low=_F32(-1.42860677e-6),
            poly=[_F32(float.fromhex(h)) for h in ("0x1.694000p-10", "0x1.125edcp-7",
                                                    "0x1.555b5ap-5", "0x1.555450p-3",
                                                    "0x1.fffff6p-2", "0x1.000000p+0")])


def _mlas_exp(v: np.ndarray) -> np.ndarray:
    """MLAS's exp of non-positive float32 values (its softmax kernel): range reduction by
    ``m = round(v / ln2)`` in two FMA steps, a degree-6 polynomial evaluated with FMAs,
    then ``p * 2^m``."""
    c = _EXP
    v = np.maximum(v, c["lower"])
    m = fma32(v, c["log2e"], c["bias"]) - c["bias"]
    v = fma32(m, c["ln2_high"], v)
    v = fma32(m, c["ln2_low"], v)
    p = np.full(v.shape, c["poly"][0], dtype=_F32)
    for coefficient in c["poly"][1:] + c["poly"][-1:]:
        p = fma32(p, v, coefficient)
    return np.ldexp(p, m.astype(np.int32)).astype(_F32)


def softmax(node: Node, args: list, ctx) -> list[np.ndarray]:
    """Float Softmax as MLAS computes it with its AVX-512 kernel: exp of ``x - max``, summed in
    16 lanes (element k in lane k mod 16), the lanes reduced as the kernel's horizontal adds do,
    then every exp times ``1 / sum``."""
    x = args[0]
    if x.dtype != _F32:
        raise UnsupportedOpError(f"node {node.name!r} (Softmax) reads {x.dtype}; only float32 is "
                                 "supported")
    rows, back = _softmax_rows(x, node, ctx.graph.opset if ctx is not None else 17)
    e = _mlas_exp(rows + (-rows.max(axis=1, keepdims=True)))
    lanes = np.zeros((rows.shape[0], 16), dtype=_F32)
    for start in range(0, rows.shape[1], 16):
        block = e[:, start : start + 16]
        lanes[:, : block.shape[1]] += block
    b = lanes[:, 8:] + lanes[:, :8]
    total = ((b[:, 0] + b[:, 1]) + (b[:, 2] + b[:, 3])) + ((b[:, 4] + b[:, 5]) + (b[:, 6] + b[:, 7]))
    return [back(e * (_F32(1) / total)[:, None])]


# -- this family's ops (the registry: evaluators.runtime.ops) ------------------------------------

OPS: dict[str, Callable] = {
    "QLinearAdd": qlinear_add,
    "QLinearMul": qlinear_mul,
    "QLinearGlobalAveragePool": qlinear_global_average_pool,
    "QLinearAveragePool": qlinear_average_pool,
    "QLinearConcat": qlinear_concat,
    "QLinearSoftmax": qlinear_softmax,
    "GlobalAveragePool": global_average_pool,
    "AveragePool": average_pool,
    "Softmax": softmax,
}
