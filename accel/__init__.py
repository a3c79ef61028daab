"""The kernels: approximate Conv/Gemm given a product table, on CPU and GPU, plus the plain
reference kernel the tests hold the fast ones to.

The compiled kernels' OpenMP threads wait passively between parallel loops
(``OMP_WAIT_POLICY=PASSIVE`` unless the environment says otherwise; the OpenMP runtime reads it
once, when it loads, so this module sets it before any kernel runs). Spinning threads steal the
CPU from each other whenever the machine is busier than its cores (Ray workers, other jobs):
measured here, LeNet-5 on 10,000 images took twice as long with two spinning threads on a busy
2-core machine. onnxruntime, the yardstick, runs with its spinning off too.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
