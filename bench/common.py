"""What the benchmarks share: the repository on the import path, this development setup's data
folders, and the main study as the benchmark problem."""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dse.study_file import load_study_file  # noqa: E402

SHARED_DATA = REPO.parent / "shared" / "data"


def cpu_name() -> str:
    """The processor's model name, widest instruction set and core count, to print beside every
    figure."""
    from accel.isa import instruction_set

    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        model = next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
    except (OSError, StopIteration):
        model = platform.processor() or platform.machine()
    return f"{model} ({instruction_set()}), {os.cpu_count()} cores"


def use_shared_data() -> None:
    """Point ``DSE_DATA_DIR`` (MNIST) and ``DSE_PDK_DIR`` (Liberty files) at ../shared/data
    where they are unset and that folder exists."""
    for variable, folder in (("DSE_DATA_DIR", SHARED_DATA / "mnist"), ("DSE_PDK_DIR", SHARED_DATA / "pdk")):
        if variable not in os.environ and folder.is_dir():
            os.environ[variable] = str(folder)


def lenet_fpga_study(**changes) -> dict:
    """studies/lenet_appaxo.yaml as a study dict scored on accuracy and the calibrated FPGA LUT
    count (no ASIC flow), with ``changes`` applied: a dict value updates that section, anything
    else replaces it."""
    data = load_study_file(REPO / "studies" / "lenet_appaxo.yaml").canonical()
    data.update(objectives=[{"metric": "accuracy"}, {"metric": "fpga_luts"}], hardware={})
    for key, value in changes.items():
        data[key] = {**data.get(key, {}), **value} if isinstance(value, dict) else value
    return data
