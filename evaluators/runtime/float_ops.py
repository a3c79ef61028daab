"""The float32 ops onnxruntime leaves between DequantizeLinear and QuantizeLinear in a quantized
transformer: LayerNormalization and the ops of its decomposed form (ReduceMean, Pow, Sqrt,
Reciprocal, Neg; float Div is ``integer_ops``' and Add/Sub/Mul ``core_ops``'), and the
activations (Erf, Gelu, Tanh, Sigmoid).

Each follows onnxruntime 1.32's CPU kernel on x86-64 with AVX2 and FMA (with or without
AVX-512: it runs the same kernels there), bit for bit, verified on tensors with large offsets,
constant rows, subnormals, infinities and every length of a vector kernel's tail
(tests/evaluators/runtime/test_float_ops.py):

- Neg, Sqrt, Reciprocal: one IEEE operation per element; Pow by 1, 2, 3: ``x``, ``x * x``,
  ``x * x * x`` (other exponents go through the C library's ``pow``: refused).
- LayerNormalization: MLAS's AVX2 kernel for rows of 8 or more values (the mean summed in
  double, the squared deviations in 8 float32 lanes with FMAs, ``fma((x - mean) * inv_std_dev,
  scale, bias)``), onnxruntime's scalar Welford loop for shorter rows.
- ReduceMean: Eigen's vectorized row sums over trailing axes, in-order slice sums over leading
  axes, then ``/ count``, on every x86-64 CPU. A middle block of axes (onnxruntime sums it with
  a GEMV whose order depends on the CPU) takes the float64 sum rounded once instead: within
  ``(count + 1) * 2^-24 * mean(|x|)`` of onnxruntime's there, the bound of float32 summation.
- Erf, Tanh, Sigmoid and Gelu: MLAS's FMA3 polynomials, with FMAs (``qops.fma32``) where they
  have them.

On an x86-64 CPU without AVX2 and FMA onnxruntime runs other kernels (SSE2 polynomials without
FMAs, its scalar LayerNorm loop for every row), which dse does not follow.
"""

from __future__ import annotations

import math

import numpy as np

from accel.fma import fma32
from evaluators.runtime.core_ops import Context, Op
from evaluators.runtime.node import Node
from evaluators.runtime.qgraph import UnsupportedOpError

_F32 = np.float32

def _float32(node: Node, *values: np.ndarray) -> None:
    for v in values:
        if v.dtype != _F32:
            raise UnsupportedOpError(f"node {node.name!r} ({node.op}) reads {v.dtype}; only "
                                     "float32 is supported")


def _ieee(fn) -> Op:
    """A float32 op that is one IEEE operation per element, as onnxruntime computes it."""

    def op(node: Node, args: list, ctx: Context) -> list[np.ndarray]:
        _float32(node, args[0])
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            return [fn(args[0])]

    return op


def _polynomial(coefficients: list[np.float32], x: np.ndarray) -> np.ndarray:
    """Horner's rule with one FMA per coefficient, as MLAS's FMA3 kernels evaluate."""
    p = np.full(x.shape, coefficients[0], dtype=_F32)
    for c in coefficients[1:]:
        p = fma32(p, x, c)
    return p


_ERF = dict(
    split=_F32(0.921875),
    small=[_F32(v) for v in (-5.99104969e-4, 4.99339588e-3, -2.67667342e-2, 1.12818025e-1,
                             -3.76124859e-1, 1.28379151e-1)],
    big=[_F32(v) for v in (1.72948930e-5, -3.83208680e-4, 3.88393435e-3, -2.42545605e-2,
                           1.06777847e-1, 6.34846687e-1, 1.28717512e-1)],
    lower=_F32(-88.3762626647949), log2e=_F32(1.44269504088896341), bias=_F32(12582912.0),
    ln2_high=_F32(-6.93145752e-1), ln2_low=_F32(-1.42860677e-6),
    exp=[_F32(v) for v in (1.38319808e-3, 8.37550033e-3, 4.16689515e-2, 1.66664466e-1,
                           4.99999851e-1, 1.0, 1.0)])


def mlas_erf(x: np.ndarray) -> np.ndarray:
    """MLAS's float32 erf (its FMA3 kernel): below |x| = 0.921875 an odd polynomial
    ``|x| + |x| p(x^2)``; above, ``1 - exp(-(|x| + |x| q(|x|)))`` with its own exp (range
    reduction by a rounded multiple of ln 2 in two FMA steps, a degree-6 polynomial, times
    ``2^m``); the sign put back."""
    c = _ERF
    a = np.abs(x)
    small = fma32(_polynomial(c["small"], a * a), a, a)
    big = fma32(_polynomial(c["big"], a), a, a)
    v = np.maximum(c["lower"], -big)
    m = fma32(c["log2e"], v, c["bias"]) - c["bias"]
    f = fma32(m, c["ln2_low"], fma32(m, c["ln2_high"], v))
    scale = np.ldexp(_F32(1), np.nan_to_num(m).astype(np.int32)).astype(_F32)
    y = np.where(a > c["split"], _F32(1) - _polynomial(c["exp"], f) * scale, small)
    return np.where(np.signbit(x), -y, y).astype(_F32)


def _rational(x: np.ndarray, bound: float, numerator: list, denominator: list) -> np.ndarray:
    """``v p(v^2) / q(v^2)`` of ``v = clip(x, -bound, bound)`` with FMAs (MLAS's tanh and
    logistic kernels, after Eigen)."""
    v = np.clip(x, _F32(-bound), _F32(bound))
    square = v * v
    return (_polynomial(numerator, square) * v) / _polynomial(denominator, square)


_TANH = ([_F32(v) for v in (-2.76076847742355e-16, 2.00018790482477e-13, -8.60467152213735e-11,
                            5.12229709037114e-08, 1.48572235717979e-05, 6.37261928875436e-04,
                            4.89352455891786e-03)],
         [_F32(v) for v in (1.19825839466702e-06, 1.18534705686654e-04, 2.26843463243900e-03,
                            4.89352518554385e-03)])

_LOGISTIC = ([_F32(v) for v in (4.37031012579801e-11, 1.15627324459942e-07,
                                6.08574864600143e-05, 8.51377133304701e-03,
                                2.48287947061529e-01)],
             [_F32(v) for v in (6.10247389755681e-13, 5.76102136993427e-09,
                                6.29106785017040e-06, 1.70198817374094e-03,
                                1.16817656904453e-01, 9.93151921023180e-01)])


def mlas_tanh(x: np.ndarray) -> np.ndarray:
    """MLAS's float32 tanh: a rational function of ``x`` clipped to [-9, 9]."""
    return _rational(x, 9.0, *_TANH)


def mlas_logistic(x: np.ndarray) -> np.ndarray:
    """MLAS's float32 logistic (Sigmoid): ``r(x) + 0.5`` of ``x`` clipped to [-18, 18], then
    at least 0 (its FMA3 kernel clamps only from below: near 18 the result exceeds 1 by an
    ulp, as onnxruntime's does)."""
    return np.maximum(_rational(x, 18.0, *_LOGISTIC) + _F32(0.5), _F32(0))


def _mlas(fn) -> Op:
    def op(node: Node, args: list, ctx: Context) -> list[np.ndarray]:
        _float32(node, args[0])
        with np.errstate(over="ignore", invalid="ignore"):
            return [fn(args[0])]

    return op


_SQRT_HALF = _F32(0.70710678118654752440)
_SQRT_2_OVER_PI = _F32(math.sqrt(2.0 / math.pi))
_GELU_CUBIC = _F32(0.044715) * _SQRT_2_OVER_PI


def _gelu(node: Node, args: list, ctx: Context) -> list[np.ndarray]:
    """Gelu (opset 20) as onnxruntime's kernel computes it: ``(0.5 x) (1 + erf(x sqrt(1/2)))``,
    or with ``approximate="tanh"`` ``(0.5 x) (1 + tanh(x (0.044715 sqrt(2/pi) x x +
    sqrt(2/pi))))``, every step in float32, erf and tanh MLAS's."""
    x = args[0]
    _float32(node, x)
    approximate = node.attr("approximate", "none")
    with np.errstate(over="ignore", invalid="ignore"):
        if approximate == "none":
            inner = mlas_erf(x * _SQRT_HALF)
        elif approximate == "tanh":
            inner = mlas_tanh(x * (_GELU_CUBIC * x * x + _SQRT_2_OVER_PI))
        else:
            raise UnsupportedOpError(f"node {node.name!r} (Gelu): approximate={approximate!r} "
                                     "is not supported")
        return [(_F32(0.5) * x) * (inner + _F32(1))]


def _pow(node: Node, args: list, ctx: Context) -> list[np.ndarray]:
    """Pow of a float32 base by a scalar exponent 1, 2 or 3, which onnxruntime computes as
    ``x``, ``x * x`` and ``x * x * x`` (other exponents go through the C library's ``pow``,
    which dse does not follow: refused)."""
    x, exponent = args
    _float32(node, x)
    e = float(np.asarray(exponent).reshape(-1)[0]) if np.size(exponent) == 1 else None
    if e not in (1.0, 2.0, 3.0):
        raise UnsupportedOpError(f"node {node.name!r} (Pow): only a scalar exponent 1, 2 or 3 "
                                 "is supported")
    with np.errstate(over="ignore", invalid="ignore"):
        return [x.copy() if e == 1.0 else x * x if e == 2.0 else x * x * x]


def _eigen_sum(rows: np.ndarray, aligned_start: int) -> np.ndarray:
    """Each row's float32 sum as Eigen's vectorized ``sum()`` (SSE, 4-lane packets) computes
    it: from the first 16-byte aligned element, two packet accumulators over blocks of 8,
    added, then one more packet, reduced ``(p0 + p2) + (p1 + p3)``; then the elements before
    the aligned start and those after the last packet, in order."""
    size = rows.shape[1]
    start = min(aligned_start, size)
    pairs_end = start + (size - start) // 8 * 8
    packets_end = start + (size - start) // 4 * 4
    if packets_end == start:
        total = rows[:, 0].copy()
        for k in range(1, size):
            total = total + rows[:, k]
        return total
    p0 = rows[:, start : start + 4].copy()
    if packets_end - start > 4:
        p1 = rows[:, start + 4 : start + 8].copy()
        for k in range(start + 8, pairs_end, 8):
            p0 = p0 + rows[:, k : k + 4]
            p1 = p1 + rows[:, k + 4 : k + 8]
        p0 = p0 + p1
        if packets_end > pairs_end:
            p0 = p0 + rows[:, pairs_end : pairs_end + 4]
    total = (p0[:, 0] + p0[:, 2]) + (p0[:, 1] + p0[:, 3])
    for k in [*range(start), *range(packets_end, size)]:
        total = total + rows[:, k]
    return total


def _reduce_mean(node: Node, args: list, ctx: Context) -> list[np.ndarray]:
    """ReduceMean as onnxruntime's fast reductions compute it, then ``/ count``: over the
    trailing axes each row by Eigen's ``sum()`` (its packets start at the first 16-byte aligned
    element; onnxruntime's buffers are aligned, so row ``r`` of ``n`` values starts ``r * n``
    elements in); over the leading axes one slice after the other, in order. Other axes (a
    middle block, which onnxruntime sums with a GEMV whose order depends on the CPU) take the
    float64 sum, rounded once. Axes are an attribute before opset 18, the second input from 18."""
    x = args[0]
    _float32(node, x)
    axes = args[1] if len(args) > 1 and args[1] is not None else node.attr("axes")
    if axes is None or len(axes) == 0:
        if node.attr("noop_with_empty_axes", 0):
            return [x]
        axes = range(x.ndim)
    axes = sorted({int(a) % x.ndim for a in np.asarray(axes).reshape(-1)})
    out_shape = [1 if a in axes else d for a, d in enumerate(x.shape)] \
        if node.attr("keepdims", 1) else [d for a, d in enumerate(x.shape) if a not in axes]
    count = int(np.prod([x.shape[a] for a in axes]))
    if axes == list(range(x.ndim - len(axes), x.ndim)):  # trailing: rows
        rows = x.reshape(-1, count)
        total = np.empty(len(rows), dtype=_F32)
        for aligned in range(4):
            picked = (-np.arange(len(rows)) * count) % 4 == aligned
            if picked.any() and count:
                total[picked] = _eigen_sum(rows[picked], aligned)
    elif axes == list(range(len(axes))):  # leading: slices
        slices = x.reshape(count, -1)
        total = slices[0].copy()
        for k in range(1, count):
            total = total + slices[k]
    else:
        total = x.astype(np.float64).sum(axis=tuple(axes)).astype(_F32)
    return [(total / _F32(count)).reshape(out_shape)]


def _lanes_sum(lanes: np.ndarray) -> np.ndarray:
    """The horizontal add of 8 float32 lanes as the AVX2 kernel reduces them:
    ``((l0 + l4) + (l2 + l6)) + ((l1 + l5) + (l3 + l7))``."""
    r = lanes[:, :4] + lanes[:, 4:]
    return (r[:, 0] + r[:, 2]) + (r[:, 1] + r[:, 3])


def _mlas_layer_norm_statistics(rows: np.ndarray, eps: np.float32) -> tuple:
    """(mean, 1 / sqrt(var + eps)) of each row as MLAS's AVX2 LayerNorm kernel computes them
    (rows of 8 or more): the sum in 4 double lanes (reduced ``(d0 + d2) + (d1 + d3)``, then
    the remaining values in order); the squared deviations from the float32 mean accumulated
    with FMAs in 8 float32 lanes; of the remaining ones, groups of 4 squares added in order
    (the compiler vectorizes their products), the last up to 3 with FMAs."""
    n = rows.shape[1]
    wide = rows.astype(np.float64)
    body = n // 4 * 4
    quads = np.zeros((len(rows), 4))
    for start in range(0, body, 4):
        quads += wide[:, start : start + 4]
    total = (quads[:, 0] + quads[:, 2]) + (quads[:, 1] + quads[:, 3])
    for k in range(body, n):
        total = total + wide[:, k]
    mean = (total / n).astype(_F32)
    lanes = np.zeros((len(rows), 8), dtype=_F32)
    body = n // 8 * 8
    for start in range(0, body, 8):
        d = rows[:, start : start + 8] - mean[:, None]
        lanes = fma32(d, d, lanes)
    var = _lanes_sum(lanes)
    grouped = body + (n - body) // 4 * 4
    for k in range(body, n):
        d = rows[:, k] - mean
        var = var + d * d if k < grouped else fma32(d, d, var)
    return mean, _F32(1) / np.sqrt(var / _F32(n) + eps)


def _welford_statistics(rows: np.ndarray, eps: np.float32) -> tuple:
    """(mean, sqrt(var + eps)) of each row by onnxruntime's scalar loop (rows under 8): Welford's
    running mean and sum of squared deviations in float32."""
    mean = np.zeros(len(rows), dtype=_F32)
    m2 = np.zeros(len(rows), dtype=_F32)
    for k in range(rows.shape[1]):
        delta = rows[:, k] - mean
        mean = mean + delta / _F32(k + 1)
        m2 = m2 + delta * (rows[:, k] - mean)
    return mean, np.sqrt(m2 / _F32(rows.shape[1]) + eps)


def _layer_normalization(node: Node, args: list, ctx: Context) -> list[np.ndarray]:
    """LayerNormalization as onnxruntime 1.32 computes it on x86-64 with AVX2: rows of 8 or more
    values through MLAS's kernel, ``fma((x - mean) * inv_std_dev, scale, bias)``; shorter rows
    through its scalar loop, ``(x - mean) / std_dev * scale + bias``."""
    x, scale = args[0], args[1]
    bias = args[2] if len(args) > 2 and args[2] is not None else None
    _float32(node, x, scale, *(() if bias is None else (bias,)))
    if any(node.outputs[1:]):
        raise UnsupportedOpError(f"node {node.name!r} (LayerNormalization): the Mean and "
                                 "InvStdDev outputs are not supported")
    if node.attr("stash_type", 1) != 1:
        raise UnsupportedOpError(f"node {node.name!r} (LayerNormalization): only stash_type 1 "
                                 "(float) is supported")
    axis = node.attr("axis", -1) % x.ndim
    rows = x.reshape(int(np.prod(x.shape[:axis])), -1)
    if any(v.size != rows.shape[1] for v in (scale, *(() if bias is None else (bias,)))):
        raise UnsupportedOpError(f"node {node.name!r} (LayerNormalization): scale and bias must "
                                 f"hold one value per normalized element ({rows.shape[1]})")
    scale = scale.reshape(-1)
    bias = None if bias is None else bias.reshape(-1)
    eps = _F32(node.attr("epsilon", 1e-5))
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if rows.shape[1] >= 8:
            mean, inv = _mlas_layer_norm_statistics(rows, eps)
            y = (rows - mean[:, None]) * inv[:, None]
            y = y * scale if bias is None else fma32(y, scale, bias)
        else:
            mean, deviation = _welford_statistics(rows, eps)
            y = (rows - mean[:, None]) / deviation[:, None] * scale
            y = y if bias is None else y + bias
    return [y.reshape(x.shape)]


OPS: dict[str, Op] = {
    "LayerNormalization": _layer_normalization,
    "ReduceMean": _reduce_mean,
    "Pow": _pow,
    "Sqrt": _ieee(np.sqrt),
    "Reciprocal": _ieee(lambda v: _F32(1) / v),
    "Neg": lambda node, args, ctx: [np.negative(args[0])],
    "Erf": _mlas(mlas_erf),
    "Tanh": _mlas(mlas_tanh),
    "Sigmoid": _mlas(mlas_logistic),
    "Gelu": _gelu,
}

TABLE_OPS = frozenset()
"""None of these multiply through the table."""
