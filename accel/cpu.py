"""Fast CPU kernels for approximate Conv/Gemm, compiled with numba, exact to accel.reference.

Output-stationary and sparse. The product table is folded into the layer's weights
(``accel.fold``: one row of products per input position and activation code, per block of up
to 64 output channels), so an output position is a sum of gathered rows. Per image, the
activations that are not the zero point are listed pixel by pixel (``entries``: ``(pixel *
C + c) * 256 + code``; ``starts[p]``: where pixel p's entries begin). A ReLU zero or a padded
position adds nothing after folding and is skipped exactly (its products are in the fold's
``base``). A window reads one *run* of consecutive pixels per kernel row, (pixel, count,
row_base): its rows are ``row_base + entry`` for each entry of those pixels, so a 3x3 window is
three loops. An image with few zero points lists every activation instead (fixed loop lengths,
``_skippable``), and a layer of few output channels computes neighbouring columns in one window
(``_packing``). Requantization, max pooling of the accumulators and the code map of the
following elementwise ops are fused into the same pass (pooling first is exact: requantization
with a positive multiplier and the code map are non-decreasing). Images run in parallel on
numba's threads; a Gemm is a 1x1 convolution of 1x1 images. Results are NCHW arrays stored
channel-last, and inputs are read in whatever memory order they come. A product of two
activations (``matmul_accumulate``: attention's Q x K^T) has no constant to fold into, so it
gathers every product from the table directly.

The row sums are a numba intrinsic written in LLVM IR: as a plain numba loop the accumulator
lives in memory and LLVM vectorizes the wrong loop (gathers across rows), about one int32 lane
per cycle. Here the accumulator of ``width`` int32 lanes is a handful of SSA vector values
(``<16 x i32>``: a zmm register with AVX-512, two ymm or four xmm registers elsewhere) and each
row is one widening vector load and one vector add, ``width`` fixed at compile time. It lives
in this file because numba's cache checks only the file of a cached function: a change to the
intrinsic must invalidate the kernels that inline it.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic

from accel.codes import flat_bytes
from accel.fold import WIDTHS, block_width, check_range, layer_blocks, pack_block
from accel.reference import conv_output_size
from circuits.product_table import ProductTable

_RAW, _REQUANTIZE, _MAP = 0, 1, 2  # epilogues: int32 accumulators, codes, mapped codes
_CHUNK = 16  # int32 lanes of one LLVM vector value
_U = np.uint64
_I64 = ir.IntType(64)


def _loop(builder: ir.IRBuilder, start: ir.Value, stop: ir.Value, carried: list[ir.Value], body):
    """``for i in range(start, stop)`` carrying SSA values: ``body(i, values) -> values``.
    Returns the values after the loop (phi nodes, so they stay in registers)."""
    fn = builder.function
    entry = builder.block
    cond, loop, done = (fn.append_basic_block(n) for n in ("rs.cond", "rs.body", "rs.done"))
    builder.branch(cond)
    builder.position_at_end(cond)
    i = builder.phi(_I64)
    values = [builder.phi(v.type) for v in carried]
    i.add_incoming(start, entry)
    for phi, v in zip(values, carried):
        phi.add_incoming(v, entry)
    builder.cbranch(builder.icmp_signed("<", i, stop), loop, done)
    builder.position_at_end(loop)
    updated = body(i, values)
    following = builder.add(i, ir.Constant(_I64, 1))
    i.add_incoming(following, builder.block)
    for phi, v in zip(values, updated):
        phi.add_incoming(v, builder.block)
    builder.branch(cond)
    builder.position_at_end(done)
    return values


def _row_sum(width: int):
    """The intrinsic ``row_sum(base, acc, folded, entries, starts, runs, first, last)``:
    ``acc[:width] = base[:width] + folded[runs[j, 2] + entries[e]]`` summed over every run j in
    [first, last) and every entry e of its pixels ``starts[runs[j, 0] : runs[j, 0] + runs[j, 1]]``
    (one past the last entry)."""
    chunks = width // _CHUNK

    @intrinsic
    def row_sum(typingctx, base, acc, folded, entries, starts, runs, first, last):
        arrays = (base, acc, folded, entries, starts, runs)
        if not (all(isinstance(a, types.Array) and a.layout == "C" for a in arrays)
                and folded.ndim == 2 and folded.dtype in (types.int16, types.int32)
                and base.dtype == acc.dtype == types.int32
                and entries.dtype == starts.dtype == runs.dtype == types.int64):
            return None
        sig = types.void(base, acc, folded, entries, starts, runs, first, last)

        def codegen(context, builder, signature, args):
            b_a, acc_a, g_a, e_a, s_a, r_a = (context.make_array(t)(context, builder, v)
                                              for t, v in zip(signature.args[:6], args[:6]))
            first_v, last_v = (context.cast(builder, v, t, types.int64)
                               for v, t in zip(args[6:], signature.args[6:]))
            elem = context.get_data_type(signature.args[2].dtype)
            itemsize = context.get_abi_sizeof(elem)
            vec = ir.VectorType(ir.IntType(32), _CHUNK)
            row_vec = ir.VectorType(elem, _CHUNK).as_pointer()
            base_p = builder.bitcast(b_a.data, vec.as_pointer())
            acc_p = builder.bitcast(acc_a.data, vec.as_pointer())
            start = [builder.load(builder.gep(base_p, [ir.Constant(_I64, i)]), align=4)
                     for i in range(chunks)]
            starts = s_a.data
            three = ir.Constant(_I64, 3)

            def run(j, acc):
                field = builder.gep(r_a.data, [builder.mul(j, three)])
                pixel = builder.load(field)
                count = builder.load(builder.gep(field, [ir.Constant(_I64, 1)]))
                base = builder.load(builder.gep(field, [ir.Constant(_I64, 2)]))
                lo = builder.load(builder.gep(starts, [pixel]))
                hi = builder.load(builder.gep(starts, [builder.add(pixel, count)]))
                rows = builder.gep(g_a.data, [builder.mul(base, ir.Constant(_I64, width))])

                def add_row(e, acc):
                    row = builder.mul(builder.load(builder.gep(e_a.data, [e])), ir.Constant(_I64, width))
                    src = builder.bitcast(builder.gep(rows, [row]), row_vec)
                    out = []
                    for i in range(chunks):
                        v = builder.load(builder.gep(src, [ir.Constant(_I64, i)]), align=itemsize)
                        out.append(builder.add(acc[i], builder.sext(v, vec) if itemsize < 4 else v))
                    return out

                return _loop(builder, lo, hi, acc, add_row)

            final = _loop(builder, first_v, last_v, start, run)
            for i, v in enumerate(final):
                builder.store(v, builder.gep(acc_p, [ir.Constant(_I64, i)]), align=4)
            return context.get_dummy_value()

        return sig, codegen

    return row_sum


_SUMS = {w: _row_sum(w) for w in WIDTHS}
_sum16, _sum32, _sum48, _sum64 = (_SUMS[w] for w in WIDTHS)


@njit(inline="always", cache=True)
def row_sum(base, acc, folded, entries, starts, runs, first, last):  # pragma: no cover - compiled
    """Dispatch on the block width (``folded.shape[1]``, one of ``WIDTHS``)."""
    width = folded.shape[1]
    if width == 16:
        _sum16(base, acc, folded, entries, starts, runs, first, last)
    elif width == 32:
        _sum32(base, acc, folded, entries, starts, runs, first, last)
    elif width == 48:
        _sum48(base, acc, folded, entries, starts, runs, first, last)
    else:
        _sum64(base, acc, folded, entries, starts, runs, first, last)


def _flat(x: np.ndarray) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """The bytes of NCHW int8/uint8 codes as a flat array and the strides (in elements) of its
    four axes: no copy when the tensor fills its memory in some order (NCHW, or channel-last
    as these kernels store their results), a channel-last copy otherwise."""
    flat = flat_bytes(x)
    if flat is None:
        x = np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
        flat = flat_bytes(x)
    return flat, tuple(np.int64(s) for s in x.strides)


def _skippable(pixels: int, cg: int, kw: int, width: int) -> int:
    """Zero-point activations an image needs for skipping them to pay: skipping saves their
    rows, but each run's loop then has a length the branch predictor cannot know (about 15-20
    cycles a run), while the rows it saves are cheap when few (a first layer on images, one
    input channel, an input with few zeros). Skip when the zeros a run saves (sparsity x cg x
    kw rows of width / 16 vectors) are worth about 8 vector adds."""
    return int(np.ceil(8 * 16 / (kw * width) * pixels))


@lru_cache(maxsize=256)
def _windows(h: int, w: int, kh: int, kw: int, strides: tuple[int, int], pads: tuple[int, ...],
             dilations: tuple[int, int], cg: int) -> tuple[np.ndarray, np.ndarray, int, int]:
    """The runs of every output position (row-major) and where each position's runs start.

    A run (pixel, count, base) is ``count`` consecutive in-image pixels that one kernel row
    reads (one pixel per tap with a horizontal dilation): folded row = ``base`` + an entry of
    those pixels, where entries are ``(pixel * cg + c) * 256 + code`` and rows
    ``((p * kw + q) * cg + c) * 256 + code``. Taps outside the image have no run."""
    top, left, bottom, right = pads
    oh = conv_output_size(h, kh, strides[0], top + bottom, dilations[0])
    ow = conv_output_size(w, kw, strides[1], left + right, dilations[1])
    runs: list[tuple[int, int, int]] = []
    starts = [0]
    for y in range(oh):
        for x in range(ow):
            for p in range(kh):
                row = y * strides[0] + p * dilations[0] - top
                if not 0 <= row < h:
                    continue
                col0 = x * strides[1] - left
                taps = [q for q in range(kw) if 0 <= col0 + q * dilations[1] < w]
                if taps and dilations[1] == 1:
                    pixel = row * w + col0 + taps[0]
                    runs.append((pixel, len(taps), (p * kw + taps[0] - pixel) * cg * 256))
                else:
                    for q in taps:
                        pixel = row * w + col0 + q * dilations[1]
                        runs.append((pixel, 1, (p * kw + q - pixel) * cg * 256))
            starts.append(len(runs))
    return (np.array(runs, dtype=np.int64).reshape(-1, 3), np.array(starts, dtype=np.int64),
            oh, ow)


@njit(parallel=True, cache=True)
def _layer_kernel(x, strides, h, w, flip, skippable, c0, cg, zero_idx, rows, base, runs,
                  run_start, run_w, cols, pool_h, pool_w, pack, mode, mult, zp, lo, hi, code_map,
                  code_offset, first, valid, out):  # pragma: no cover - compiled
    """One block of output channels for every image: ``out[n, :, :, first : first + valid]``
    (channel-last). ``x``: the input's code bytes, flat, element (n, c, y, x) at the dot
    product with ``strides`` (any layout); ``^ flip`` gives a code's table index. Images where
    fewer than ``skippable`` activations are the zero point list them all (``_skippable``).
    ``pack`` > 1: each window of the runs is ``pack`` neighbouring output columns, one lane
    group each (``_packing``); ``cols`` windows (or pooled columns) per output row."""
    # Unsigned indices: numba skips the negative-index wraparound of signed ones (2x here).
    n_images, width = out.shape[0], rows.shape[1]
    lanes = width // pack
    groups = 1 if pool_w == pack else pack  # pooled across the lane groups, or one column each
    win_w = pool_w if pack == 1 else 1
    sn, sc, sy, sx = strides
    results = out.reshape(n_images, -1)
    for n in prange(n_images):
        result = results[n]
        starts = np.empty(h * w + 1, np.int64)
        entries = np.empty(h * w * cg, np.int64)
        dense = skippable > h * w * cg
        for _attempt in range(2):  # the sparse layout, then the dense one if it pays better
            m, entry, pixel = _U(0), _U(0), 0
            for yy in range(h):
                for xx in range(w):  # no branch: the count moves on or not
                    starts[_U(pixel)] = m
                    at = _U(n * sn + c0 * sc + yy * sy + xx * sx)
                    for c in range(cg):
                        v = x[at + _U(c * sc)] ^ flip
                        entries[m] = entry + v
                        entry += _U(256)
                        m += _U(dense or v != zero_idx)
                    pixel += 1
            starts[_U(h * w)] = m
            if dense or h * w * cg - np.int64(m) >= skippable:
                break
            dense = True
        acc = np.empty(width, np.int32)
        best = np.empty(width, np.int32)
        for yp in range(out.shape[1]):
            for xp in range(cols):
                for a in range(pool_h):
                    for b in range(win_w):
                        pos = (yp * pool_h + a) * run_w + xp * win_w + b
                        row_sum(base, acc, rows, entries, starts, runs, run_start[pos],
                                run_start[pos + 1])
                        if a == 0 and b == 0:
                            for j in range(width):
                                best[_U(j)] = acc[_U(j)]
                        else:
                            for j in range(width):
                                best[_U(j)] = max(best[_U(j)], acc[_U(j)])
                if groups == 1 and pack > 1:  # the pool's columns are the lane groups
                    for r in range(1, pack):
                        for j in range(lanes):
                            best[_U(j)] = max(best[_U(j)], best[_U(r * lanes + j)])
                if mode != _RAW:
                    for j in range(width):  # accel.requant.requantize (vectorized: no lookups)
                        y = min(max(np.float32(best[j]) * mult[j], lo), hi)
                        best[j] = np.int32(np.rint(y)) + zp
                for r in range(groups):
                    col = xp * groups + r
                    if col >= out.shape[2]:
                        break
                    at = _U((yp * out.shape[2] + col) * out.shape[3] + first)
                    lane = _U(r * lanes)
                    if mode == _MAP:
                        for j in range(valid):
                            result[at + _U(j)] = code_map[_U(best[lane + _U(j)] + code_offset)]
                    else:
                        for j in range(valid):
                            result[at + _U(j)] = best[lane + _U(j)]


def _packing(og: int, kw: int, stride: int, dilation: int, pool: int) -> int:
    """Output columns per window: a layer of few output channels (LeNet-5's first has 6 in a
    16-lane block) computes ``pack`` neighbouring columns at once, one lane group each, from
    one run of ``kw + (pack - 1) * stride`` pixels per kernel row instead of ``pack`` runs of
    ``kw``: fewer rows when the windows overlap (stride < kw). A pool's columns must be the
    packed ones."""
    most = 16 // (1 << max(0, og - 1).bit_length())
    pack = pool if pool > 1 else most
    if pack < 2 or pack > most or dilation != 1 or stride >= kw:
        return 1
    return pack


def _layer(x: np.ndarray, w: np.ndarray, table: ProductTable, *, strides=(1, 1), pads=(0, 0, 0, 0),
           dilations=(1, 1), group: int = 1, x_zero_point: int = 0, w_zero_point=0,
           bias: np.ndarray | None = None, multiplier=None, y_zero_point: np.ndarray | None = None,
           pool: tuple[int, int] = (1, 1), code_map: np.ndarray | None = None) -> np.ndarray:
    """The one pass every public kernel is: accumulators, or codes when ``y_zero_point`` is
    given, pooled and mapped when asked. The result is NCHW, stored channel-last (a transposed
    view): the next layer reads it pixel by pixel without a copy."""
    o, cg, kh, kw = w.shape
    zw = np.broadcast_to(np.asarray(w_zero_point, dtype=np.int64), (o,))
    check_range(table, cg * kh * kw, x_zero_point, zw)
    n, _, h, wd = x.shape
    strides, pads, dilations = (tuple(int(v) for v in t) for t in (strides, pads, dilations))
    _, _, oh, ow = _windows(h, wd, kh, kw, strides, pads, dilations, cg)
    pack = _packing(o // group, kw, strides[1], dilations[1], pool[1])
    shape = (n, oh // pool[0], ow // pool[1], o)
    if pack > 1:  # windows of pack columns: kw + (pack - 1) * stride taps, pack times the stride
        cols = shape[2] if pool[1] > 1 else -(-ow // pack)
        span = kw + (pack - 1) * strides[1]
        right = max(pads[3], (cols - 1) * strides[1] * pack + span - wd - pads[1])
        runs, run_start, _, run_w = _windows(h, wd, kh, span, (strides[0], strides[1] * pack),
                                             (*pads[:3], right), dilations, cg)
    else:
        runs, run_start, _, run_w = _windows(h, wd, kh, kw, strides, pads, dilations, cg)
        cols = shape[2]
    if y_zero_point is None:
        out = np.empty(shape, dtype=np.int32)
        mode, mult, zp, lo, hi, code_offset = _RAW, np.zeros(o, np.float32), 0, 0, 0, 0
    else:
        out = np.empty(shape, dtype=(code_map if code_map is not None else y_zero_point).dtype)
        info = np.iinfo(y_zero_point.dtype)
        zp, code_offset = int(y_zero_point), -info.min
        mode = _MAP if code_map is not None else _REQUANTIZE
        mult = np.broadcast_to(np.asarray(multiplier, dtype=np.float32).reshape(-1), (o,))
        lo, hi = info.min - zp, info.max - zp
    cmap = np.ascontiguousarray(code_map if code_map is not None else np.zeros(256, np.uint8))
    target = out if out.dtype == np.int32 else out.view(np.uint8)  # codes stored as their bytes
    codes, layout = _flat(x)
    flip = 0x80 if table.signed else 0  # int8 code ^ 0x80 = code + 128, its table index
    skippable = _skippable(h * wd, cg, kw, block_width(o // group))
    for block in layer_blocks(table, np.ascontiguousarray(w), group, int(x_zero_point), zw, bias):
        if pack > 1:
            block = pack_block(block, (kh, kw, cg), strides[1], pack)
        _layer_kernel(codes, layout, h, wd, flip, skippable, block.group * cg, cg,
                      x_zero_point + table.offset, block.rows, block.base, runs, run_start, run_w,
                      cols, pool[0], pool[1], pack, mode, _lanes(mult, block, pack),
                      np.int32(zp), np.float32(lo), np.float32(hi), cmap.view(np.uint8),
                      code_offset, block.first, block.valid, target)
    return out.transpose(0, 3, 1, 2)


def _lanes(mult: np.ndarray, block, pack: int) -> np.ndarray:
    """The block's multipliers, one per lane (1 on the padding lanes), repeated per lane
    group when columns are packed."""
    lanes = np.ones((pack, block.rows.shape[1] // pack), np.float32)
    lanes[:, : block.valid] = mult[block.first : block.first + block.valid]
    return lanes.reshape(-1)


def _as_conv(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, K) x (K, O) as a 1x1 convolution of 1x1 images."""
    return (a.reshape(a.shape[0], a.shape[1], 1, 1),
            np.ascontiguousarray(b.T).reshape(b.shape[1], -1, 1, 1))


def conv_accumulate(x: np.ndarray, w: np.ndarray, table: ProductTable, *, strides=(1, 1),
                    pads=(0, 0, 0, 0), dilations=(1, 1), group: int = 1, x_zero_point: int = 0,
                    w_zero_point: np.ndarray | int = 0) -> np.ndarray:
    """Same contract as ``accel.reference.conv_accumulate``."""
    return _layer(x, w, table, strides=strides, pads=pads, dilations=dilations, group=group,
                  x_zero_point=x_zero_point, w_zero_point=w_zero_point)


def qlinear_conv(x: np.ndarray, w: np.ndarray, table: ProductTable, *, bias: np.ndarray | None,
                 multiplier: np.ndarray, y_zero_point: np.ndarray, **conv) -> np.ndarray:
    """Same contract as ``accel.reference.qlinear_conv``, requantization fused."""
    return _layer(x, w, table, bias=bias, multiplier=multiplier, y_zero_point=y_zero_point, **conv)


def qlinear_conv_pool(x: np.ndarray, w: np.ndarray, table: ProductTable, *, pool: tuple[int, int],
                      code_map: np.ndarray, bias: np.ndarray | None, multiplier: np.ndarray,
                      y_zero_point: np.ndarray, **conv) -> np.ndarray:
    """Same contract as ``accel.reference.qlinear_conv_pool``, all fused in one pass (a pool of
    (1, 1) is none: the convolution and the code map)."""
    return _layer(x, w, table, bias=bias, multiplier=multiplier, y_zero_point=y_zero_point,
                  pool=tuple(pool), code_map=code_map, **conv)


def gemm_accumulate(a: np.ndarray, b: np.ndarray, table: ProductTable, a_zero_point: int = 0,
                    b_zero_point: np.ndarray | int = 0) -> np.ndarray:
    """Same contract as ``accel.reference.gemm_accumulate``."""
    x, w = _as_conv(a, b)
    return _layer(x, w, table, x_zero_point=a_zero_point, w_zero_point=b_zero_point).reshape(a.shape[0], -1)


def qlinear_gemm(a: np.ndarray, b: np.ndarray, table: ProductTable, *, a_zero_point: int,
                 b_zero_point: np.ndarray | int, bias: np.ndarray | None, multiplier: np.ndarray,
                 y_zero_point: np.ndarray) -> np.ndarray:
    """Same contract as ``accel.reference.qlinear_gemm``, requantization fused."""
    x, w = _as_conv(a, b)
    return _layer(x, w, table, x_zero_point=a_zero_point, w_zero_point=b_zero_point, bias=bias,
                  multiplier=multiplier, y_zero_point=y_zero_point).reshape(a.shape[0], -1)


@njit(parallel=True, cache=True)
def _matmul_kernel(a, b, a_at, b_at, values, offset, za, zb, b_sums, out):  # pragma: no cover - compiled
    """``out[l, m] = sum_k T[a[a_at[l], m, k], b[b_at[l], k, :]]`` and the zero-point terms
    (``b_sums``: column sums of b's codes), one output row per task. Codes arrive as table
    indices (uint8, code + ``offset``); each k reads one table row (1 KB, in L1) and gathers it
    along a contiguous row of ``b``."""
    rows, m_count, n = out.shape
    k_count = a.shape[2]
    for task in prange(rows * m_count):
        r, m = task // m_count, task % m_count
        x, y, acc = a[a_at[r], m], b[b_at[r]], out[r, m]
        sums = b_sums[b_at[r]]
        for j in range(n):
            acc[j] = 0
        a_sum = 0
        for k in range(k_count):
            code = x[k]
            row, yk = values[code], y[k]
            a_sum += np.int32(code)
            for j in range(n):
                acc[j] += row[yk[j]]
        a_sum -= k_count * offset  # the sum of the codes
        for j in range(n):
            acc[j] -= zb[j] * a_sum + za * sums[j] - k_count * za * zb[j]


def matmul_accumulate(a: np.ndarray, b: np.ndarray, table: ProductTable, a_zero_point: int = 0,
                      b_zero_point: np.ndarray | int = 0) -> np.ndarray:
    """Same contract as ``accel.reference.matmul_accumulate``. Folding the table into a
    constant operand does not apply to two activations, so every product is one lookup in the
    256 KB table (it stays in L2)."""
    if a.ndim < 2 or b.ndim < 2 or a.shape[-1] != b.shape[-2]:
        raise ValueError(f"cannot multiply {a.shape} by {b.shape}: expected (..., M, K) x (..., K, N)")
    lead = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    (m, k), n = a.shape[-2:], b.shape[-1]
    zb = np.broadcast_to(np.asarray(b_zero_point, dtype=np.int64), (n,))
    check_range(table, k, int(a_zero_point), zb)
    a_idx, b_idx = (np.ascontiguousarray(v.view(np.uint8) ^ np.uint8(0x80) if table.signed
                                         else v.view(np.uint8)).reshape(-1, *v.shape[-2:])
                    for v in (a, b))
    a_at, b_at = (np.broadcast_to(np.arange(v.shape[0]).reshape(s[:-2]), lead).reshape(-1)
                  for v, s in ((a_idx, a.shape), (b_idx, b.shape)))
    b_sums = b.reshape(-1, k, n).sum(axis=1, dtype=np.int32)  # (batches of b, N)
    out = np.empty((int(np.prod(lead, dtype=np.int64)), m, n), dtype=np.int32)
    _matmul_kernel(a_idx, b_idx, a_at, b_at, np.ascontiguousarray(table.values, dtype=np.int32),
                   np.int32(table.offset), np.int32(a_zero_point), zb.astype(np.int32), b_sums, out)
    return out.reshape(lead + (m, n))

