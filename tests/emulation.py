"""Python code run on another x86-64 CPU: this interpreter under qemu's user-mode emulation
(Debian's qemu-user, which ``make setup`` installs). The emulated CPU answers CPUID as its model
does, so onnxruntime's MLAS picks that model's kernels: the tests see both kinds of CPU whatever
machine runs them."""

from __future__ import annotations

import platform
import shutil
import subprocess
import sys

import pytest

from tests.conftest import REPO

AVX2 = "Haswell-noTSX"  # AVX2 and FMA, no AVX-512, no VNNI: onnxruntime's U8S8 kernels saturate
SSE4 = "Nehalem"  # SSE4.2, no AVX: onnxruntime's kernels are exact


def run_on(cpu: str, code: str, args: list[str] = (), timeout: float = 300) -> str:
    """Run ``code`` (a Python script, given ``args``) in this interpreter on the emulated
    ``cpu`` model, in the repository; returns its standard output, fails with its error
    output."""
    if platform.machine() != "x86_64":
        pytest.skip(f"qemu-x86_64 emulates x86-64 CPUs; this machine is {platform.machine()}")
    qemu = shutil.which("qemu-x86_64")
    assert qemu, "qemu-x86_64 is missing: `make setup` installs Debian's qemu-user"
    result = subprocess.run([qemu, "-cpu", cpu, sys.executable, "-c", code, *args], cwd=REPO,
                            capture_output=True, text=True, timeout=timeout)
    errors = "\n".join(line for line in result.stderr.splitlines()
                       if not line.startswith("qemu-x86_64: warning"))
    assert result.returncode == 0, f"on {cpu}: {errors[-3000:]}"
    return result.stdout
