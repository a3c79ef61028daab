"""The plain reference kernels: approximate Conv/Gemm/MatMul accumulators (also of two
activations), obviously right, slow.

Every multiplication goes through the product table, padded positions included (a MAC array
does not know an operand is padding), so an approximate table that does not give 0 for a 0
operand changes the result at the borders too. Zero points are handled exactly around the
lookups: ``sum (x - zx)(w - zw) = sum T[x, w] - zw * sum x - zx * sum w + K * zx * zw``, where the
table replaces only the product of the raw codes. The fast kernels are tested against these.
"""

from __future__ import annotations

import numpy as np

from accel.requant import requantize
from circuits.product_table import ProductTable


def conv_output_size(size: int, kernel: int, stride: int, pad_total: int, dilation: int) -> int:
    """Spatial output size of a convolution or pooling window (floor mode)."""
    return (size + pad_total - dilation * (kernel - 1) - 1) // stride + 1


def pad_input(x: np.ndarray, pads: tuple[int, int, int, int], value: int) -> np.ndarray:
    """Pad an NCHW tensor with ``value``; pads are ONNX-ordered (top, left, bottom, right)."""
    top, left, bottom, right = pads
    if not any(pads):
        return x
    return np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)), constant_values=value)


def im2col(
    x: np.ndarray,
    kernel_shape: tuple[int, int],
    strides: tuple[int, int],
    dilations: tuple[int, int],
) -> np.ndarray:
    """Windows of an already padded NCHW tensor as (N, OH, OW, C * kh * kw), c-major like ONNX."""
    n, c, h, w = x.shape
    kh, kw = kernel_shape
    oh = conv_output_size(h, kh, strides[0], 0, dilations[0])
    ow = conv_output_size(w, kw, strides[1], 0, dilations[1])
    cols = np.empty((n, oh, ow, c, kh, kw), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            hi, wj = i * dilations[0], j * dilations[1]
            window = x[:, :, hi : hi + strides[0] * (oh - 1) + 1 : strides[0],
                       wj : wj + strides[1] * (ow - 1) + 1 : strides[1]]
            cols[:, :, :, :, i, j] = window.transpose(0, 2, 3, 1)
    return cols.reshape(n, oh, ow, c * kh * kw)


def gemm_accumulate(
    a: np.ndarray,
    b: np.ndarray,
    table: ProductTable,
    a_zero_point: int = 0,
    b_zero_point: np.ndarray | int = 0,
    chunk: int = 64,
) -> np.ndarray:
    """int32 accumulators of (a - za) @ (b - zb) with every code product taken from the table.

    a: (N, K) activation codes; b: (K, O) weight codes; b_zero_point scalar or per column (O,).
    """
    n, k = a.shape
    o = b.shape[1]
    zb = np.broadcast_to(np.asarray(b_zero_point, dtype=np.int64), (o,))
    za = int(a_zero_point)
    b_idx = b.astype(np.int64).T + table.offset  # (O, K)
    out = np.empty((n, o), dtype=np.int64)
    for start in range(0, n, chunk):
        a_blk = a[start : start + chunk].astype(np.int64)
        products = table.values[a_blk[:, None, :] + table.offset, b_idx[None, :, :]]
        out[start : start + chunk] = products.sum(axis=2, dtype=np.int64)
    out -= zb[None, :] * a.astype(np.int64).sum(axis=1, keepdims=True)
    out -= za * b.astype(np.int64).sum(axis=0)[None, :]
    out += k * za * zb[None, :]
    return _to_int32(out)


def matmul_accumulate(
    a: np.ndarray,
    b: np.ndarray,
    table: ProductTable,
    a_zero_point: int = 0,
    b_zero_point: np.ndarray | int = 0,
) -> np.ndarray:
    """int32 accumulators of the batched matrix product (a - za) @ (b - zb), every code product
    taken from the table: a (..., M, K) and b (..., K, N) broadcast over their leading axes as
    numpy's matmul does (two activations, as attention's Q x K^T, or an activation and a
    constant). a_zero_point is a scalar; b_zero_point a scalar or per column (N,)."""
    a, b = np.asarray(a), np.asarray(b)
    if a.ndim < 2 or b.ndim < 2 or a.shape[-1] != b.shape[-2]:
        raise ValueError(f"cannot multiply {a.shape} by {b.shape}: expected (..., M, K) x (..., K, N)")
    lead = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    (m, k), n = a.shape[-2:], b.shape[-1]
    a64 = np.broadcast_to(a, lead + (m, k)).reshape(-1, m, k).astype(np.int64)
    b64 = np.broadcast_to(b, lead + (k, n)).reshape(-1, k, n).astype(np.int64)
    out = np.empty((a64.shape[0], m, n), dtype=np.int64)
    for i, (x, y) in enumerate(zip(a64, b64)):
        products = table.values[x[:, :, None] + table.offset, y[None, :, :] + table.offset]
        out[i] = products.sum(axis=1, dtype=np.int64)
    zb = np.broadcast_to(np.asarray(b_zero_point, dtype=np.int64), (n,))
    za = int(a_zero_point)
    out -= zb * a64.sum(axis=2, keepdims=True)
    out -= za * b64.sum(axis=1, keepdims=True)
    out += k * za * zb
    return _to_int32(out).reshape(lead + (m, n))


def conv_accumulate(
    x: np.ndarray,
    w: np.ndarray,
    table: ProductTable,
    *,
    strides: tuple[int, int] = (1, 1),
    pads: tuple[int, int, int, int] = (0, 0, 0, 0),
    dilations: tuple[int, int] = (1, 1),
    group: int = 1,
    x_zero_point: int = 0,
    w_zero_point: np.ndarray | int = 0,
) -> np.ndarray:
    """int32 accumulators (N, O, OH, OW) of a 2-D convolution through the product table.

    x: (N, C, H, W) activation codes; w: (O, C / group, kh, kw) weight codes. Padding uses the
    activation zero point (the code of a real 0), and those positions are multiplied too.
    """
    o, cg, kh, kw = w.shape
    og = o // group
    zw = np.broadcast_to(np.asarray(w_zero_point, dtype=np.int64), (o,))
    xp = pad_input(x, pads, x_zero_point)
    outs = []
    for g in range(group):
        cols = im2col(xp[:, g * cg : (g + 1) * cg], (kh, kw), strides, dilations)
        n, oh, ow, k = cols.shape
        wg = w[g * og : (g + 1) * og].reshape(og, k).T  # (K, Og)
        acc = gemm_accumulate(cols.reshape(-1, k), wg, table, x_zero_point, zw[g * og : (g + 1) * og])
        outs.append(acc.reshape(n, oh, ow, og))
    return np.concatenate(outs, axis=3).transpose(0, 3, 1, 2).copy()


def qlinear_conv(x: np.ndarray, w: np.ndarray, table: ProductTable, *, bias: np.ndarray | None,
                 multiplier: np.ndarray, y_zero_point: np.ndarray, **conv) -> np.ndarray:
    """Quantized convolution: accumulate through the table, add the int32 bias, requantize."""
    acc = conv_accumulate(x, w, table, **conv)
    if bias is not None:
        acc = acc + bias.astype(np.int32).reshape(1, -1, 1, 1)
    return requantize(acc, multiplier, y_zero_point, 1)


def pool_max(y: np.ndarray, pool: tuple[int, int]) -> np.ndarray:
    """Non-overlapping max pooling (window = stride, no padding, floor)."""
    n, c, h, w = y.shape
    ph, pw = pool
    oh, ow = h // ph, w // pw
    return y[:, :, : oh * ph, : ow * pw].reshape(n, c, oh, ph, ow, pw).max(axis=(3, 5))


def qlinear_conv_pool(x: np.ndarray, w: np.ndarray, table: ProductTable, *, pool: tuple[int, int],
                      code_map: np.ndarray, **qconv) -> np.ndarray:
    """Quantized convolution, then max pooling, then an elementwise code map (what a ReLU
    between them becomes once folded): ``code_map[maxpool(qlinear_conv(...)) - min code]``."""
    y = pool_max(qlinear_conv(x, w, table, **qconv), pool)
    return code_map[y.astype(np.int16) - np.iinfo(y.dtype).min]


def qlinear_gemm(a: np.ndarray, b: np.ndarray, table: ProductTable, *, a_zero_point: int,
                 b_zero_point: np.ndarray | int, bias: np.ndarray | None, multiplier: np.ndarray,
                 y_zero_point: np.ndarray) -> np.ndarray:
    """Quantized (N, K) x (K, O) product: accumulate through the table, add bias, requantize."""
    acc = gemm_accumulate(a, b, table, a_zero_point, b_zero_point)
    if bias is not None:
        acc = acc + bias.astype(np.int32).reshape(1, -1)
    return requantize(acc, multiplier, y_zero_point, 1)


def _to_int32(acc: np.ndarray) -> np.ndarray:
    """Accumulators are int32 in hardware; refuse silently wrapping ones."""
    if acc.size and (acc.max() > np.iinfo(np.int32).max or acc.min() < np.iinfo(np.int32).min):
        raise OverflowError("accumulator exceeds the int32 range")
    return acc.astype(np.int32)
