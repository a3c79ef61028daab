"""The product table folded into a layer's fixed weights, per block of output channels.

For input position k (kernel row p, column q, channel c of the group, in that order) and
activation code v, the folded row ``G[k * 256 + v, :]`` holds ``T[v, w[k, o]] - zw[o] * code(v)``
for the block's output channels o, minus the same row for the zero-point code. A layer is then a
sum of gathered rows (``accel.cpu``), and the zero-point rows are all zero: an activation
equal to the zero point (a ReLU zero, a padded position) adds nothing and can be skipped
exactly, because the removed rows' sum and the exact cross terms
``-zx * sum_k w[k, o] + K * zx * zw[o]`` are added once, in ``base``. Padded positions are
still "multiplied" (their products with the zero-point code are in ``base``), as a MAC array
would multiply them.

Folding costs one table lookup per (k, code, output channel), so folded blocks are kept in a
small LRU cache (``FOLD_CACHE_BYTES``: ``$DSE_FOLD_CACHE_MB``, 512 MiB unless set) keyed by the
table's hash and the weights: a network scored in batches of images folds each layer once per
table (VGG-16's folds, 7.5 GiB, do not fit: it folds once per batch).
"""

from __future__ import annotations

import hashlib
import os
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from numba import njit, prange

from circuits.product_table import ProductTable

_INT32_MAX = np.iinfo(np.int32).max
WIDTHS = (16, 32, 48, 64)  # lanes of a block; 64 int32 lanes are four AVX-512 registers
FOLD_CACHE_BYTES = int(os.environ.get("DSE_FOLD_CACHE_MB", "512")) * 2**20


@dataclass(frozen=True)
class Block:
    """One folded block of group ``group``: ``rows`` (K * 256, width) int16 or int32, ``base``
    (width,) int32 (bias included), the block's first output channel ``first`` (in the whole
    layer) and its ``valid`` channels (the lanes past them are padding)."""

    group: int
    rows: np.ndarray
    base: np.ndarray
    first: int
    valid: int


def block_width(channels: int) -> int:
    """Lanes per block: the widest of ``WIDTHS`` that divides the channels rounded up to 16, so
    little is padded (84 channels: two blocks of 48; 120: two of 64; 10: one of 16)."""
    padded = -(-channels // 16) * 16
    return next(w for w in reversed(WIDTHS) if padded % w == 0)


def check_range(table: ProductTable, k: int, x_zero_point: int, w_zero_point: np.ndarray) -> None:
    """Refuse a layer whose int32 accumulator could overflow (the kernels add without checks)."""
    largest = int(np.abs(table.values.astype(np.int64)).max())
    zw = int(np.abs(w_zero_point).max()) if w_zero_point.size else 0
    bound = k * largest + k * 255 * (abs(x_zero_point) + zw + 255)
    if bound > _INT32_MAX or 2 * largest > _INT32_MAX:
        raise OverflowError(f"accumulator of {k} products may exceed the int32 range")


def layer_blocks(table: ProductTable, w: np.ndarray, group: int, x_zero_point: int,
                 w_zero_point: np.ndarray, bias: np.ndarray | None) -> Iterator[Block]:
    """The folded blocks of a convolution's weights w (O, C / group, KH, KW), group after group,
    each from the cache when this table and these weights were folded before. Folded one at a
    time, so a wide layer never holds more than one block outside the cache.
    ``w_zero_point`` is (O,)."""
    o, cg, kh, kw = w.shape
    og = o // group
    width = block_width(og)
    layer = _key(table, w, group, x_zero_point, w_zero_point, bias)
    for g in range(group):
        for first in range(0, og, width):
            key = (*layer, g, first)
            block = _CACHE.get(key)
            if block is None:
                block = _fold_block(table, w[g * og : (g + 1) * og], g, first, width, x_zero_point,
                                    w_zero_point[g * og : (g + 1) * og],
                                    None if bias is None else bias[g * og : (g + 1) * og])
                _CACHE.put(key, block, block.rows.nbytes)
            yield block


def pack_block(block: Block, kernel: tuple[int, int, int], stride: int, pack: int) -> Block:
    """A block of few output channels rearranged to compute ``pack`` neighbouring output
    columns at once (``accel.cpu``): lane group r holds the channels for column r, whose taps
    are those of column 0 shifted by ``r * stride``, over ``kw + (pack - 1) * stride`` taps per
    kernel row. A lane with no tap gets a zero row (no product: not a product with weight 0,
    which an approximate table need not make 0), so ``base`` holds only real taps."""
    kh, kw, cg = kernel
    width = block.rows.shape[1]
    lanes, span = width // pack, kw + (pack - 1) * stride
    rows = block.rows.reshape(kh, kw, cg, 256, width)
    packed = aligned_empty((kh, span, cg, 256, width), block.rows.dtype)
    packed[...] = 0
    base = np.zeros(width, np.int32)
    for r in range(pack):
        lane = slice(r * lanes, r * lanes + block.valid)
        packed[:, r * stride : r * stride + kw, :, :, lane] = rows[..., : block.valid]
        base[lane] = block.base[: block.valid]
    return Block(block.group, packed.reshape(-1, width), base, block.first, block.valid)


def _key(table, w, group, x_zero_point, w_zero_point, bias) -> tuple:
    digest = hashlib.blake2b(np.ascontiguousarray(w).tobytes(), digest_size=16)
    digest.update(np.ascontiguousarray(w_zero_point, dtype=np.int64).tobytes())
    if bias is not None:
        digest.update(np.ascontiguousarray(bias, dtype=np.int64).tobytes())
    return (table.sha256, w.shape, str(w.dtype), group, int(x_zero_point), bias is None,
            digest.hexdigest())


def _fold_block(table, w, g, first, width, x_zero_point, w_zero_point, bias) -> Block:
    """Fold output channels [first, first + width) of one group's weights w (O_g, C_g, KH, KW)."""
    og, cg, kh, kw = w.shape
    valid = min(width, og - first)
    # (O_g, C_g, KH, KW) -> (K, valid) with k = (p * KW + q) * C_g + c, the rows' order
    wk = w[first : first + valid].transpose(2, 3, 1, 0).reshape(kh * kw * cg, valid).astype(np.int64)
    zw = np.asarray(w_zero_point[first : first + valid], dtype=np.int64)
    idx = wk + table.offset
    zero_idx = x_zero_point + table.offset
    zero_row = table.values[zero_idx, idx] - zw[None, :] * x_zero_point  # (K, valid)
    base = zero_row.sum(axis=0) - x_zero_point * wk.sum(axis=0) + wk.shape[0] * x_zero_point * zw
    if bias is not None:
        base += np.asarray(bias[first : first + valid], dtype=np.int64)
    rows = aligned_empty((wk.shape[0] * 256, width), _fold_dtype(table, idx, zero_idx, zw))
    _fold_kernel(np.ascontiguousarray(table.values.T), np.ascontiguousarray(idx), zw, table.offset,
                 zero_row, rows)
    return Block(g, rows, np.pad(base, (0, width - valid)).astype(np.int32), g * og + first, valid)


def _fold_dtype(table: ProductTable, idx: np.ndarray, zero_idx: int, zw: np.ndarray) -> type:
    """int16 when every folded value fits (symmetric weights and a table whose columns in use
    vary by less than 2^15, as AppAxO tables do): half the memory traffic of int32."""
    if zw.any():
        return np.int32
    columns = np.unique(idx)
    spread = table.values[:, columns].astype(np.int64) - table.values[zero_idx, columns]
    return np.int16 if np.abs(spread).max() <= np.iinfo(np.int16).max else np.int32


def aligned_empty(shape: tuple[int, ...], dtype, align: int = 64) -> np.ndarray:
    """An uninitialized array whose data starts on a cache line, so no folded row of 32 or 64
    bytes straddles two lines."""
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    raw = np.empty(nbytes + align, dtype=np.uint8)
    start = -raw.ctypes.data % align
    return raw[start : start + nbytes].view(dtype).reshape(shape)


@njit(parallel=True, cache=True)
def _fold_kernel(columns, idx, zw, offset, zero_row, rows):  # pragma: no cover - compiled
    """rows[k * 256 + v, j] from the table's columns (``columns[w, v] = T[v, w]``: one weight's
    256 products are contiguous); lanes past the block's columns are zero. Unsigned indices
    spare numba's negative-index checks."""
    width, valid = rows.shape[1], idx.shape[1]
    for kk in prange(idx.shape[0]):
        block = rows[kk * 256 : (kk + 1) * 256]
        for j in range(valid):
            column = columns[np.uint64(idx[kk, j])]
            zero, scale = np.int32(zero_row[kk, j]), np.int32(zw[j])
            for v in range(256):
                block[np.uint64(v), np.uint64(j)] = column[np.uint64(v)] - scale * np.int32(v - offset) - zero
        for j in range(valid, width):
            for v in range(256):
                block[np.uint64(v), np.uint64(j)] = 0


class _LRU:
    """Folded layers by key, least recently used dropped first beyond a byte budget."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self._items: OrderedDict[tuple, tuple[object, int]] = OrderedDict()
        self._bytes = 0

    def get(self, key: tuple):
        item = self._items.get(key)
        if item is None:
            return None
        self._items.move_to_end(key)
        return item[0]

    def put(self, key: tuple, value, nbytes: int) -> None:
        if nbytes > self.budget:
            return
        self._items[key] = (value, nbytes)
        self._bytes += nbytes
        while self._bytes > self.budget:
            _, (_, dropped) = self._items.popitem(last=False)
            self._bytes -= dropped

    def clear(self) -> None:
        self._items.clear()
        self._bytes = 0


_CACHE = _LRU(FOLD_CACHE_BYTES)


def clear_cache() -> None:
    """Forget every folded layer (frees their memory)."""
    _CACHE.clear()
