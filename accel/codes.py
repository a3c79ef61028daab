"""Elementwise ops on 8-bit codes through lookup tables, in one parallel pass.

Between the multiplying layers a quantized network applies elementwise ops whose inputs are
8-bit codes: a chain such as DequantizeLinear -> Relu -> QuantizeLinear is a map of 256 codes,
a QLinearAdd of two tensors a table of 256 x 256 code pairs. Computed with numpy (widen, offset,
fancy-index) they cost several passes and temporaries per element; here one pass reads the
codes and writes the results, in the input's memory order (a channel-last result of
``accel.cpu`` stays channel-last, so the next layer reads it without a copy).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

_CHUNK = 1 << 16  # elements per parallel task


def map_codes(code_map: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``code_map[x - min code]`` for int8/uint8 codes x and a 256-entry map (any dtype of one
    byte), shaped and laid out like x."""
    out = np.empty_like(x, dtype=code_map.dtype)
    flat = flat_bytes(x)
    if flat is None or code_map.dtype.itemsize != 1:
        out[...] = code_map[_index(x)]
        return out
    _map_kernel(np.ascontiguousarray(code_map).view(np.uint8), flat, 0x80 if x.dtype == np.int8 else 0,
                flat_bytes(out))
    return out


def map_pairs(table: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``table[a - min code, b - min code]`` for codes of one dtype and a 256 x 256 table of
    one-byte results, with numpy broadcasting; laid out like the operand of the result's shape
    (a broadcast operand is expanded into that layout first)."""
    shape = np.broadcast_shapes(a.shape, b.shape)
    if a.dtype != b.dtype or table.dtype.itemsize != 1:
        ia, ib = np.broadcast_arrays(_index(a), _index(b))
        return table[ia, ib]
    if a.shape != shape:
        a = _like(b, a) if b.shape == shape else np.ascontiguousarray(np.broadcast_to(a, shape))
    if b.shape != shape or b.strides != a.strides:  # the second operand in the first's layout
        b = _like(a, b)
    out = np.empty_like(a, dtype=table.dtype)
    fa = flat_bytes(a)
    if fa is None:
        out[...] = table[_index(a), _index(b)]
        return out
    _pairs_kernel(np.ascontiguousarray(table).view(np.uint8).reshape(-1), fa, flat_bytes(b),
                  0x80 if a.dtype == np.int8 else 0, flat_bytes(out))
    return out


def recentre(codes: np.ndarray, zero_point, signed: bool) -> tuple[np.ndarray, object]:
    """Codes and their zero point in a multiplier's domain (int8 for a signed one, uint8 for an
    unsigned one): a code of the other kind moves by 128 and so does its zero point, so
    ``code - zero_point`` (the real value over the scale) and the table index are unchanged.
    In hardware this is the operand's top bit inverted: a uint8 activation feeds a signed
    multiplier, or an int8 weight an unsigned one, exactly."""
    if (codes.dtype == np.int8) == signed:
        return codes, zero_point
    flipped = (codes.view(np.uint8) ^ np.uint8(0x80)).view(np.int8 if signed else np.uint8)
    return flipped, zero_point - 128 if signed else zero_point + 128


def _index(x: np.ndarray) -> np.ndarray:
    """The codes' table indices (``x - min code``) as uint8."""
    u = x.view(np.uint8)
    return u ^ np.uint8(0x80) if x.dtype == np.int8 else u


def _like(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """b (broadcast to a's shape) in a's memory layout."""
    copy = np.empty_like(a)
    copy[...] = b
    return copy


def flat_bytes(x: np.ndarray) -> np.ndarray | None:
    """The bytes of a one-byte array as a flat array, without a copy, when it fills its memory
    in some order (C, or any transposition of a C array, as ``accel.cpu``'s channel-last
    results are), else None."""
    filled = x.squeeze()  # an axis of length 1 has no layout, whatever its stride says
    if x.size == 0 or filled.ndim == 0:
        return x.reshape(-1).view(np.uint8)
    order = np.argsort(filled.strides)[::-1]
    if min(filled.strides) <= 0 or not filled.transpose(order).flags.c_contiguous:
        return None
    return np.lib.stride_tricks.as_strided(x.view(np.uint8), shape=(x.size,), strides=(1,))


@njit(parallel=True, cache=True)
def _map_kernel(code_map, x, flip, out):  # pragma: no cover - compiled
    for task in prange((x.size + _CHUNK - 1) // _CHUNK):
        for i in range(task * _CHUNK, min(x.size, (task + 1) * _CHUNK)):
            out[np.uint64(i)] = code_map[x[np.uint64(i)] ^ flip]


@njit(parallel=True, cache=True)
def _pairs_kernel(table, a, b, flip, out):  # pragma: no cover - compiled
    for task in prange((a.size + _CHUNK - 1) // _CHUNK):
        for i in range(task * _CHUNK, min(a.size, (task + 1) * _CHUNK)):
            k = np.uint64(i)
            out[k] = table[(np.uint64(a[k] ^ flip) << np.uint64(8)) | np.uint64(b[k] ^ flip)]
