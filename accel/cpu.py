"""Fast CPU kernels for approximate Conv/Gemm, compiled with numba, exact to accel.reference.

The product table is folded into the fixed weights once per layer and table: ``G[k, v, :]`` is
the row of products of activation code v with the weights of input position k for every output
channel, so a layer becomes a sum of gathered rows (an embedding-bag). Zero activations are
skipped exactly: the fold subtracts the row of the zero-point code and its per-output sum is
added back, so skipping changes nothing even when the table's product with 0 is not 0 (padding
and ReLU zeros are still "multiplied", as a MAC array would).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from accel.reference import conv_output_size, pad_input
from circuits.product_table import ProductTable

_INT32_MAX = np.iinfo(np.int32).max
LANES = 8  # int32 lanes of an AVX2 register


def _codes_to_index(x: np.ndarray, table: ProductTable) -> np.ndarray:
    """Table indices of int8/uint8 codes: for int8, ``x + 128`` is the byte with its top bit
    flipped."""
    u = np.ascontiguousarray(x).view(np.uint8)
    return u ^ np.uint8(0x80) if table.signed else u


def fold_weights(
    table: ProductTable, w_cols: np.ndarray, x_zero_point: int, w_zero_point: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Fold the table and zero points into weights (K, O).

    Returns ``G`` (K, 256, O'), int16 or int32 (``_fold_dtype``), with
    ``G[k, v, o] = T[v, w[k, o]] - zw[o] * code(v)`` minus its zero-point row, and ``base``
    (O',) int64: the removed rows' sum plus the exact cross terms
    ``-zx * sum_k w[k, o] + K * zx * zw[o]``. Then acc = base + sum over non-zero-point codes.
    O' pads O with zero columns to a multiple of ``LANES`` so the kernels' vectorized row
    additions have no scalar remainder. int32 arithmetic is safe here: ``_check_range``
    bounds the table well inside int32.
    """
    k, o = w_cols.shape
    zw = np.ascontiguousarray(w_zero_point, dtype=np.int64)
    idx = np.ascontiguousarray(w_cols.astype(np.intp) + table.offset)  # (K, O)
    zero_idx = x_zero_point + table.offset
    zero_row = table.values[zero_idx, idx] - zw[None, :] * x_zero_point  # (K, O)
    folded = np.empty((k, 256, o + (-o % LANES)), dtype=_fold_dtype(table, idx, zero_idx, zw))
    _fold_kernel(table.values, idx, zw, table.offset, zero_row.astype(np.int32), folded)
    base = zero_row.sum(axis=0, dtype=np.int64) \
        - x_zero_point * w_cols.astype(np.int64).sum(axis=0) + k * x_zero_point * zw
    return folded, np.pad(base, (0, folded.shape[2] - o))


def _fold_dtype(table: ProductTable, idx: np.ndarray, zero_idx: int, zw: np.ndarray) -> type:
    """int16 when every folded value fits (symmetric weights and a table whose columns in use
    vary by less than 2^15, as AppAxO tables do): half the memory traffic of int32."""
    if zw.any():
        return np.int32
    columns = np.unique(idx)
    spread = table.values[:, columns].astype(np.int64) - table.values[zero_idx, columns]
    return np.int16 if np.abs(spread).max() <= np.iinfo(np.int16).max else np.int32


@njit(parallel=True, cache=True)
def _fold_kernel(values, idx, zw, offset, zero_row, folded):  # pragma: no cover - compiled
    """One pass over G (it is large: 47 MiB in int32 for LeNet-5's first dense layer); the
    padding columns are zeroed here."""
    for kk in prange(idx.shape[0]):
        for v in range(256):
            code = v - offset
            for o in range(idx.shape[1]):
                folded[kk, v, o] = values[v, idx[kk, o]] - zw[o] * code - zero_row[kk, o]
            for o in range(idx.shape[1], folded.shape[2]):
                folded[kk, v, o] = 0


def _check_range(table: ProductTable, k: int, za: int, zb: np.ndarray) -> None:
    largest = int(np.abs(table.values.astype(np.int64)).max())
    bound = k * largest + k * 255 * (abs(za) + int(np.abs(zb).max()) + 255)
    if bound > _INT32_MAX or 2 * largest > _INT32_MAX:
        raise OverflowError(f"accumulator of {k} products may exceed the int32 range")


@njit(inline="always", cache=True)
def _requantize_value(acc, multiplier, zp, lo, hi):  # pragma: no cover - compiled
    """Scalar twin of ``accel.requant.requantize`` (float32 multiply, clamp, round half even)."""
    y = np.float32(acc) * multiplier
    y = min(max(y, lo), hi)
    return np.int32(np.rint(y)) + zp


@njit(inline="always", cache=True)
def _add_row(dst, src):  # pragma: no cover - compiled
    """dst += src; a plain loop the compiler vectorizes (with a run-time overlap check)."""
    for j in range(src.shape[0]):
        dst[j] += src[j]


@njit(inline="always", cache=True)
def _copy_row(dst, src):  # pragma: no cover - compiled
    for j in range(src.shape[0]):
        dst[j] = src[j]


@njit(inline="always", cache=True)
def _max_row(dst, src):  # pragma: no cover - compiled
    for j in range(src.shape[0]):
        dst[j] = max(dst[j], src[j])


@njit(inline="always", cache=True)
def _gemm_row(a_row, folded, base, zero_idx, acc):  # pragma: no cover - compiled
    acc[:] = base
    for kk in range(a_row.shape[0]):
        v = a_row[kk]
        if v != zero_idx:
            _add_row(acc, folded[kk, v])


@njit(parallel=True, cache=True)
def _gemm_acc_kernel(a_idx, folded, base, zero_idx, out):  # pragma: no cover - compiled
    for i in prange(a_idx.shape[0]):
        acc = np.empty(folded.shape[2], dtype=np.int32)
        _gemm_row(a_idx[i], folded, base, zero_idx, acc)
        out[i] = acc[: out.shape[1]]


@njit(parallel=True, cache=True)
def _gemm_requant_kernel(a_idx, folded, base, zero_idx, mult, zp, lo, hi, out):  # pragma: no cover
    for i in prange(a_idx.shape[0]):
        acc = np.empty(folded.shape[2], dtype=np.int32)
        _gemm_row(a_idx[i], folded, base, zero_idx, acc)
        for j in range(out.shape[1]):
            out[i, j] = _requantize_value(acc[j], mult[j], zp, lo, hi)


def _prepare_gemm(a, b, table, a_zero_point, b_zero_point, bias):
    n, k = a.shape
    zb = np.broadcast_to(np.asarray(b_zero_point, dtype=np.int64), (b.shape[1],))
    _check_range(table, k, a_zero_point, zb)
    folded, base = fold_weights(table, b, a_zero_point, zb)
    if bias is not None:
        base[: len(bias)] += bias.astype(np.int64)
    return _codes_to_index(a, table), folded, base.astype(np.int32), a_zero_point + table.offset


def gemm_accumulate(
    a: np.ndarray,
    b: np.ndarray,
    table: ProductTable,
    a_zero_point: int = 0,
    b_zero_point: np.ndarray | int = 0,
) -> np.ndarray:
    """Same contract as ``accel.reference.gemm_accumulate``."""
    out = np.empty((a.shape[0], b.shape[1]), dtype=np.int32)
    _gemm_acc_kernel(*_prepare_gemm(a, b, table, a_zero_point, b_zero_point, None), out)
    return out


def qlinear_gemm(a: np.ndarray, b: np.ndarray, table: ProductTable, *, a_zero_point: int,
                 b_zero_point: np.ndarray | int, bias: np.ndarray | None, multiplier: np.ndarray,
                 y_zero_point: np.ndarray) -> np.ndarray:
    """Same contract as ``accel.reference.qlinear_gemm``, requantization fused."""
    out = np.empty((a.shape[0], b.shape[1]), dtype=y_zero_point.dtype)
    _gemm_requant_kernel(*_prepare_gemm(a, b, table, a_zero_point, b_zero_point, bias),
                         *_epilogue(multiplier, y_zero_point, b.shape[1]), out)
    return out


def _epilogue(multiplier: np.ndarray, zero_point: np.ndarray, channels: int) -> tuple:
    info = np.iinfo(zero_point.dtype)
    zp = int(zero_point)
    mult = np.broadcast_to(np.asarray(multiplier, dtype=np.float32).reshape(-1), (channels,))
    return (np.ascontiguousarray(mult), np.int32(zp), np.float32(info.min - zp),
            np.float32(info.max - zp))


def _tap_table(size: int, kernel: int, stride: int, dilation: int, out_size: int) -> np.ndarray:
    """taps[h, p]: the output index that padded input row h reaches through kernel tap p, or -1.
    Precomputed so the kernel needs no division."""
    taps = np.full((size, kernel), -1, dtype=np.int64)
    for h in range(size):
        for p in range(kernel):
            r = h - p * dilation
            if r >= 0 and r % stride == 0 and r // stride < out_size:
                taps[h, p] = r // stride
    return taps


@njit(inline="always", cache=True)
def _conv_image(x_img, folded, base, zero_idx, ytab, xtab, acc):  # pragma: no cover - compiled
    """Input-stationary scatter for one image into acc (OH, OW, group, O'): each activation that
    is not the zero point adds its folded rows at every output position its taps reach, so the
    branch on sparsity is taken once per activation, not once per tap. ``folded`` is laid out
    (group, channel, code, tap, O') so the rows one activation adds are contiguous."""
    c_in, hp, wp = x_img.shape
    oh, ow = acc.shape[0], acc.shape[1]
    group = folded.shape[0]
    kh, kw = ytab.shape[1], xtab.shape[1]
    cg = c_in // group
    for y in range(oh):
        for x in range(ow):
            acc[y, x] = base
    for c in range(c_in):
        g = c // cg
        for h in range(hp):
            for w in range(wp):
                v = x_img[c, h, w]
                if v == zero_idx:
                    continue
                rows = folded[g, c - g * cg, v]
                for p in range(kh):
                    y = ytab[h, p]
                    if y < 0:
                        continue
                    for q in range(kw):
                        x = xtab[w, q]
                        if x >= 0:
                            _add_row(acc[y, x, g], rows[p * kw + q])


@njit(parallel=True, cache=True)
def _conv_acc_kernel(xi, folded, base, zero_idx, ytab, xtab, out):  # pragma: no cover - compiled
    n, o, oh, ow = out.shape
    group, lanes = folded.shape[0], folded.shape[4]
    og = o // group
    for i in prange(n):
        acc = np.empty((oh, ow, group, lanes), dtype=np.int32)
        _conv_image(xi[i], folded, base, zero_idx, ytab, xtab, acc)
        for j in range(o):
            for y in range(oh):
                for x in range(ow):
                    out[i, j, y, x] = acc[y, x, j // og, j % og]


@njit(parallel=True, cache=True)
def _conv_requant_kernel(xi, folded, base, zero_idx, ytab, xtab, mult, zp, lo, hi, out):  # pragma: no cover
    n, o, oh, ow = out.shape
    group, lanes = folded.shape[0], folded.shape[4]
    og = o // group
    for i in prange(n):
        acc = np.empty((oh, ow, group, lanes), dtype=np.int32)
        _conv_image(xi[i], folded, base, zero_idx, ytab, xtab, acc)
        for j in range(o):
            for y in range(oh):
                for x in range(ow):
                    out[i, j, y, x] = _requantize_value(acc[y, x, j // og, j % og], mult[j], zp, lo, hi)


@njit(parallel=True, cache=True)
def _conv_pool_kernel(xi, folded, base, zero_idx, ytab, xtab, mult, zp, lo, hi, ph, pw,
                      code_map, code_offset, out):  # pragma: no cover - compiled
    """Convolution, max pooling on the int32 accumulators, requantization of the pooled values
    only, then the code map. Pooling first is exact: requantization with a positive multiplier
    and the code map are non-decreasing, and max pooling commutes with such maps."""
    n, o, oh_p, ow_p = out.shape
    group, lanes = folded.shape[0], folded.shape[4]
    og = o // group
    oh, ow = ytab.max() + 1, xtab.max() + 1
    for i in prange(n):
        acc = np.empty((oh, ow, group, lanes), dtype=np.int32)
        m = np.empty(lanes, dtype=np.int32)  # the window's maximum, every channel at once
        _conv_image(xi[i], folded, base, zero_idx, ytab, xtab, acc)
        for g in range(group):
            for y in range(oh_p):
                for x in range(ow_p):
                    _copy_row(m, acc[y * ph, x * pw, g])
                    for a in range(ph):
                        for b in range(pw):
                            _max_row(m, acc[y * ph + a, x * pw + b, g])
                    for jj in range(og):
                        j = g * og + jj
                        q = _requantize_value(m[jj], mult[j], zp, lo, hi)
                        out[i, j, y, x] = code_map[q + code_offset]


def _prepare_conv(x, w, table, strides, pads, dilations, group, x_zero_point, w_zero_point, bias):
    o, cg, kh, kw = w.shape
    og, k = o // group, cg * kh * kw
    zw = np.broadcast_to(np.asarray(w_zero_point, dtype=np.int64), (o,))
    _check_range(table, k, x_zero_point, zw)
    folded, base = zip(*(
        fold_weights(table, w[g * og : (g + 1) * og].reshape(og, k).T, x_zero_point,
                     zw[g * og : (g + 1) * og])
        for g in range(group)
    ))
    # (group, K = (channel, tap), code, O') -> (group, channel, code, tap, O'): see _conv_image
    folded = np.stack(folded).reshape(group, cg, kh * kw, 256, -1).transpose(0, 1, 3, 2, 4)
    base = np.stack(base)
    if bias is not None:
        base[:, :og] += bias.astype(np.int64).reshape(group, og)
    xp = pad_input(x, pads, x_zero_point)
    n, _, hp, wp = xp.shape
    oh = conv_output_size(hp, kh, strides[0], 0, dilations[0])
    ow = conv_output_size(wp, kw, strides[1], 0, dilations[1])
    args = (
        _codes_to_index(xp, table), np.ascontiguousarray(folded), base.astype(np.int32),
        x_zero_point + table.offset,
        _tap_table(hp, kh, strides[0], dilations[0], oh), _tap_table(wp, kw, strides[1], dilations[1], ow),
    )
    return args, (n, o, oh, ow)


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
    """Same contract as ``accel.reference.conv_accumulate``."""
    args, shape = _prepare_conv(x, w, table, strides, pads, dilations, group, x_zero_point,
                                w_zero_point, None)
    out = np.empty(shape, dtype=np.int32)
    _conv_acc_kernel(*args, out)
    return out


def qlinear_conv_pool(x: np.ndarray, w: np.ndarray, table: ProductTable, *, pool: tuple[int, int],
                      code_map: np.ndarray, bias: np.ndarray | None, multiplier: np.ndarray,
                      y_zero_point: np.ndarray, strides=(1, 1), pads=(0, 0, 0, 0),
                      dilations=(1, 1), group: int = 1, x_zero_point: int = 0,
                      w_zero_point: np.ndarray | int = 0) -> np.ndarray:
    """Same contract as ``accel.reference.qlinear_conv_pool``, all fused in one pass."""
    args, (n, o, oh, ow) = _prepare_conv(x, w, table, strides, pads, dilations, group,
                                         x_zero_point, w_zero_point, bias)
    out = np.empty((n, o, oh // pool[0], ow // pool[1]), dtype=code_map.dtype)
    _conv_pool_kernel(*args, *_epilogue(multiplier, y_zero_point, o), pool[0], pool[1],
                      np.ascontiguousarray(code_map), -np.iinfo(y_zero_point.dtype).min, out)
    return out


def qlinear_conv(x: np.ndarray, w: np.ndarray, table: ProductTable, *, bias: np.ndarray | None,
                 multiplier: np.ndarray, y_zero_point: np.ndarray, strides=(1, 1),
                 pads=(0, 0, 0, 0), dilations=(1, 1), group: int = 1, x_zero_point: int = 0,
                 w_zero_point: np.ndarray | int = 0) -> np.ndarray:
    """Same contract as ``accel.reference.qlinear_conv``, requantization fused."""
    args, shape = _prepare_conv(x, w, table, strides, pads, dilations, group, x_zero_point,
                                w_zero_point, bias)
    out = np.empty(shape, dtype=y_zero_point.dtype)
    _conv_requant_kernel(*args, *_epilogue(multiplier, y_zero_point, shape[1]), out)
    return out
