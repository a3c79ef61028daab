"""Libraries of multipliers: characterize every Verilog file of a folder into a catalogue.

A catalogue row holds what a later study searches on: name, signedness (``signed``, and
``signedness``: signed, unsigned or ambiguous), error metrics, area, delay, power (uniform,
vectorless, and workload when a workload is given), FPGA LUTs/CARRY4 and the product-table hash.
A file that fails (syntax, ports, a tool) becomes a row with its error; the others go on.

A catalogue folder is self-contained: beside ``catalogue.csv`` and ``catalogue.parquet`` it holds
``tables/<name>.npy`` (the simulated int32 product table) and ``verilog/<name>.v`` of every
characterized row, so a multiplier library (``circuits.library``) reads it back without the
original files or a new simulation. A member's name is the stem of those two files, so every
name is checked (``unusable_name``) before a path is built from it, when written and when read.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from circuits.activity import OperandStream
from circuits.cache import ResultCache, key_of
from circuits.characterize import Characterization, FlowSettings, characterize
from circuits.fpga_model import appaxo_fpga
from circuits.multiplier import Multiplier, MultiplierError
from circuits.product_table import ProductTable
from circuits.synthesis import synthesize_xilinx
from circuits.tools import ToolError, tool_version

COLUMNS = ("name", "signed", "signedness", "cost_model", "mean_error", "mae", "mse", "wce",
           "mred", "error_probability", "area", "delay", "power_uniform", "power_vectorless",
           "power_workload", "pdp_uniform", "pdp_workload", "cells", "fpga_luts", "fpga_carry4",
           "fpga_source", "table_sha256", "source", "error")

# a name is a file-name stem (a file name has at most 255 bytes, the suffix included) that stays
# readable in a one-line message
MAX_NAME_BYTES = 200
_UNSAFE_CHARACTER = re.compile(r"[/\\\x00-\x1f\x7f]")


@dataclass(frozen=True)
class Design:
    """What a characterized catalogue row was made from: its Verilog and simulated table."""

    verilog: str
    table: ProductTable


def unusable_name(name: object) -> str | None:
    """Why ``name`` cannot be the stem of a member's files ``tables/<name>.npy`` and
    ``verilog/<name>.v`` inside their folder, or None when it can: a name read from a file
    (``../../x``, ``/etc/x``) must never lead outside the folder."""
    if not isinstance(name, str):
        return f"expected a string, got {type(name).__name__}"
    if not name:
        return "it is empty"
    if name.startswith("."):  # '.', '..' and hidden files
        return "it starts with '.'"
    if bad := _UNSAFE_CHARACTER.search(name):
        return f"it holds {bad[0]!r}"
    try:
        size = len(os.fsencode(name))
    except UnicodeEncodeError:
        return "it cannot be encoded as a file name"
    if size > MAX_NAME_BYTES:
        return f"it is {size} bytes long, at most {MAX_NAME_BYTES} fit"
    return None


def fpga_cost(mult: Multiplier, timeout: float, cache: ResultCache | None = None) -> dict:
    """LUTs and CARRY4s: the Vivado-calibrated model for AppAxO configurations, Yosys
    ``synth_xilinx`` for any other Verilog (cached like every characterization)."""
    if mult.appaxo_config is not None:
        model = appaxo_fpga(mult.appaxo_config)
        return {"fpga_luts": model["fpga_luts"], "fpga_carry4": model["fpga_carry4"],
                "fpga_source": "vivado-calibrated model"}
    key = key_of({"design": mult.sha256, "flow": "synth_xilinx -nodsp", "yosys": tool_version("yosys")})
    if cache is not None and (hit := cache.get(key)) is not None:
        return hit
    cost = synthesize_xilinx(mult, timeout)
    result = {"fpga_luts": cost.luts, "fpga_carry4": cost.carries, "fpga_source": "yosys synth_xilinx"}
    if cache is not None:
        cache.put(key, result)
    return result


def characterize_full(mult: Multiplier, settings: FlowSettings, workload: OperandStream | None,
                      cache: ResultCache | None, fpga: bool = True) -> Characterization:
    """The ASIC characterization plus the FPGA cost."""
    result = characterize(mult, settings, workload, cache)
    if fpga:
        result.metrics.update(fpga_cost(mult, settings.timeout_s, cache))
    return result


def characterize_folder(folder: Path, settings: FlowSettings, workload: OperandStream | None = None,
                        cache: ResultCache | None = None, fpga: bool = True,
                        progress: bool = True, signed: bool | None = None
                        ) -> tuple[pd.DataFrame, dict[str, Design]]:
    """One catalogue row per ``*.v`` file of ``folder`` (sorted by name), and the ``Design`` of
    each characterized row by name (for ``write_catalogue``); ``signed``, when given, is the
    signedness of every file (one whose ports declare the other is an error row)."""
    files = sorted(Path(folder).glob("*.v"))
    rows, designs = [], {}
    for path in tqdm(files, desc="characterizing", unit="multiplier", disable=not progress):
        if problem := unusable_name(path.stem):  # a library could not read it back
            rows.append({"name": path.stem, "source": str(path),
                         "error": f"{path}: its name cannot name a member's files: {problem}"})
            continue
        try:
            mult = Multiplier.from_file(path, signed)
            result = characterize_full(mult, settings, workload, cache, fpga)
            rows.append({**result.metrics, "error": None})
            designs[mult.name] = Design(mult.verilog, result.table)
        except (ToolError, MultiplierError) as err:
            rows.append({"name": path.stem, "source": str(path), "error": str(err)})
    return _frame(rows), designs


def _frame(rows: Iterable[dict]) -> pd.DataFrame:
    frame = pd.DataFrame(list(rows))
    for column in COLUMNS:
        if column not in frame:
            frame[column] = np.nan
    return frame[list(COLUMNS)]


def write_catalogue(frame: pd.DataFrame, designs: dict[str, Design],
                    folder: Path) -> tuple[Path, Path]:
    """``catalogue.csv`` and ``catalogue.parquet`` in ``folder``, and ``tables/<name>.npy`` and
    ``verilog/<name>.v`` of every characterized row."""
    for name in designs:
        if problem := unusable_name(name):
            raise ValueError(f"{folder}: design name {name!r} cannot name its files: {problem}")
    folder.mkdir(parents=True, exist_ok=True)
    for kind in ("tables", "verilog"):
        (folder / kind).mkdir(exist_ok=True)
    for name, design in designs.items():
        np.save(folder / "tables" / f"{name}.npy", design.table.values)
        (folder / "verilog" / f"{name}.v").write_text(design.verilog)
    csv, parquet = folder / "catalogue.csv", folder / "catalogue.parquet"
    frame.to_csv(csv, index=False)
    frame.to_parquet(parquet, index=False)
    return csv, parquet
