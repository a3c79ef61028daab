"""The CPU's vector instruction sets, as the CPUID instruction reports them (through LLVM, which
numba brings): what onnxruntime's kernels choose by, so what decides whether its int8 products
saturate and which float Softmax kernel it runs (``evaluators.networks.ort_exactness``). Read from CPUID,
not /proc/cpuinfo, so that an emulated CPU (qemu) reports its own."""

from __future__ import annotations

import functools
import platform


@functools.cache
def features() -> frozenset[str]:
    """LLVM's names of the host CPU's features (``avx2``, ``avx512f``, ``avx512vnni``, ...)."""
    import llvmlite.binding as llvm

    return frozenset(name for name, on in llvm.get_host_cpu_features().items() if on)


def instruction_set() -> str:
    """The widest vector instruction set, as benchmarks print it beside their figures:
    ``AVX-512 VNNI``, ``AVX-512``, ``AVX2``, ``SSE4.1`` or the machine's architecture."""
    have = features()
    for name, needs in (("AVX-512 VNNI", {"avx512f", "avx512vnni"}), ("AVX-512", {"avx512f"}),
                        ("AVX2", {"avx2"}), ("SSE4.1", {"sse4.1"})):
        if needs <= have:
            return name
    return platform.machine()
