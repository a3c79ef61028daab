"""Requantization of int32 accumulators to 8-bit codes, as onnxruntime's CPU kernels do it.

``code = clamp(rint(float32(acc) * m), lo - zp, hi - zp) + zp`` with the float32 multiplier
``m = x_scale * w_scale / y_scale`` per output channel and round half to even. Every kernel's
fused epilogue must agree with this function bit for bit (tests check it).
"""

from __future__ import annotations

import numpy as np


def output_multiplier(x_scale, w_scale, y_scale, alpha: float = 1.0) -> np.ndarray:
    """``x_scale * w_scale / y_scale`` in float32, in onnxruntime's order of operations."""
    xs = np.float32(x_scale) if alpha == 1.0 else np.float32(alpha) * np.float32(x_scale)
    return np.atleast_1d((xs * np.asarray(w_scale, dtype=np.float32)) / np.float32(y_scale))


def requantize(
    acc: np.ndarray, multiplier: np.ndarray, zero_point: np.ndarray, channel_axis: int = 1
) -> np.ndarray:
    """int32 accumulators (bias included) to codes of ``zero_point``'s dtype."""
    info = np.iinfo(zero_point.dtype)
    multiplier = np.asarray(multiplier, dtype=np.float32)
    shape = [1] * acc.ndim
    if multiplier.size > 1:
        shape[channel_axis] = -1
    y = acc.astype(np.float32) * multiplier.reshape(shape)
    zp = np.float32(zero_point)
    np.clip(y, np.float32(info.min) - zp, np.float32(info.max) - zp, out=y)
    np.rint(y, out=y)
    return (y + zp).astype(zero_point.dtype)
