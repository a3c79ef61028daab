"""The words on every plot and page: metric names, units, where a cost figure comes from, and
the axis label they make together."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dse.pareto import to_minimization
from dse.study import Study

NAMES = {
    "accuracy": "test accuracy",
    "f1_macro": "macro F1",
    "fpga_luts": "FPGA LUTs",
    "fpga_carry4": "FPGA CARRY4s",
    "fpga_power": "FPGA power",
    "fpga_delay": "FPGA critical path",
    "mae": "mean absolute error",
    "mred": "mean relative error distance",
    "wce": "worst-case error",
    "error_probability": "error probability",
    "area": "area",
    "delay": "delay",
    "pdp": "power-delay product",
    "energy": "multiplication energy per inference",
    "energy_saving": "multiplication energy saved vs exact",
    "bram": "BRAM18 blocks",
    "dsps": "DSP slices",
    "latency_cycles": "latency",
    "multipliers": "multipliers",
}
# absolute errors count least significant bits of the product; counts and fractions have none
UNITS = {"mae": "LSB", "wce": "LSB", "fpga_delay": "ns", "fpga_power": "Vivado units",
         "latency_cycles": "clock cycles"}
LIBERTY_UNITS = {"area": "µm²", "power": "µW", "delay": "ns", "pdp": "fJ", "energy": "nJ"}
ESTIMATE_UNITS = {"area": "transistors", "power": "toggles/cycle", "delay": "gate levels",
                  "pdp": "toggles × levels", "energy": "toggles"}
ASIC = tuple(LIBERTY_UNITS)
PROJECTION_NOTE = ("A point non-dominated in all {k} objectives may look dominated in a 2-D "
                   "projection: a point beating it on both plotted axes loses on another objective.")


def library_name(liberty: str) -> str:
    """``nangate45_typ`` for ``.../nangate45_typ.lib.gz``: the cell library, not its path."""
    name = Path(liberty).name
    for suffix in (".gz", ".lib"):
        name = name.removesuffix(suffix)
    return name


def unit(study: Study, metric: str) -> str:
    """The unit of a metric under the study's hardware model ('' for a dimensionless one)."""
    if metric in ASIC:
        return (LIBERTY_UNITS if study.settings.hardware.liberty else ESTIMATE_UNITS)[metric]
    return UNITS.get(metric, "")


def source(study: Study, metric: str) -> str:
    """Where a cost figure comes from ('' for the network and error metrics)."""
    if metric in ASIC:
        liberty = study.settings.hardware.liberty
        return library_name(liberty) if liberty else "estimate"
    if metric in study.settings.kind.metric_sources:
        return study.settings.kind.metric_sources[metric]
    return "Vivado-calibrated model" if metric.startswith("fpga_") else ""


def label(study: Study, metric: str) -> str:
    """Axis label of a metric: name, then unit and source in brackets."""
    name = {"power": f"power ({study.settings.hardware.power})"}.get(metric) or NAMES.get(metric, metric)
    details = ", ".join(part for part in (unit(study, metric), source(study, metric)) if part)
    return f"{name} [{details}]" if details else name


def sense(direction: str) -> str:
    """How to read an objective's axis."""
    return "higher is better" if direction == "maximize" else "lower is better"


def point_text(study: Study, point: np.ndarray) -> str:
    """A point (minimization form) in study units: ``accuracy 0.8895, fpga_luts 68.2``."""
    values = to_minimization(point[None, :], study.directions)[0]
    return ", ".join(f"{k} {v:.4g}{' ' + unit(study, k) if unit(study, k) else ''}"
                     for k, v in zip(study.objectives, values))
