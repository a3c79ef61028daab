"""Yosys synthesis of a multiplier: to Liberty cells (ABC), to Yosys gates, or to Xilinx LUTs.

The ASIC run writes two views of the same mapped circuit: ``netlist.v`` (Liberty cells, for
OpenSTA) and ``flat.json`` (each cell replaced by the gates Yosys derives from its Liberty
``function``, for bit-parallel simulation). ``rename -enumerate`` gives cells and nets short
public names first, so a simulated net ``_12_.ZN`` is OpenSTA's pin ``_12_/ZN``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from circuits.liberty import Liberty
from circuits.multiplier import Multiplier, MultiplierError
from circuits.netlist_sim import Netlist
from circuits.tools import job_folder, run_tool, script_name

# Transistor counts of static CMOS gates: the area unit of the Liberty-free estimate.
GATE_TRANSISTORS = {
    "$_NOT_": 2, "$_BUF_": 4, "$_NAND_": 4, "$_NOR_": 4, "$_AND_": 6, "$_OR_": 6,
    "$_ANDNOT_": 6, "$_ORNOT_": 6, "$_XOR_": 12, "$_XNOR_": 12, "$_MUX_": 12, "$_NMUX_": 12,
    "$_AOI3_": 6, "$_OAI3_": 6, "$_AOI4_": 8, "$_OAI4_": 8,
}
ABC_GATES = "AND,NAND,OR,NOR,XOR,XNOR,ANDNOT,ORNOT,MUX,AOI3,OAI3,AOI4,OAI4"


@dataclass
class Ports:
    """Which ports carry the activation, the weight and the product."""

    activation: str
    weight: str
    product: str
    declared_signed: bool | None  # None: the operands are not declared signed or unsigned


@dataclass
class AsicNetlist:
    """A synthesized multiplier: the simulation view, the STA view and the cell statistics."""

    top: str
    ports: Ports
    netlist: Netlist
    netlist_verilog: str | None
    area: float
    cells: dict[str, int] = field(default_factory=dict)


def find_ports(module: dict, subject: str) -> Ports:
    """The operand and product ports of a synthesized module, or a MultiplierError."""
    ports = module["ports"]
    inputs = [p for p, d in ports.items() if d["direction"] == "input"]
    outputs = [p for p, d in ports.items() if d["direction"] == "output"]
    widths = {p: len(d["bits"]) for p, d in ports.items()}
    found = ", ".join(f"{ports[p]['direction']} {p}[{widths[p]}]" for p in ports)
    if len(inputs) != 2 or any(widths[p] != 8 for p in inputs) or len(outputs) != 1 \
            or not 16 <= widths[outputs[0]] <= 32:
        raise MultiplierError(
            f"{subject}: expected two 8-bit inputs and one 16- to 32-bit output, found {found}")
    a, b = ("a", "b") if set(inputs) == {"a", "b"} else inputs
    signed = True if all(ports[p].get("signed", 0) for p in inputs) else None
    return Ports(a, b, outputs[0], signed)


def declares_unsigned(verilog: str, top: str, names: list[str]) -> bool:
    """Whether module ``top`` declares every port of ``names`` with the keyword ``unsigned``
    (``input unsigned [7:0] a``, ``input wire unsigned [7:0] a, b``): Yosys does not say."""
    module = re.search(rf"\bmodule\s+{re.escape(top)}\b(.*?)\bendmodule\b", verilog, re.S)
    if module is None:
        return False
    declared = re.findall(r"\binput\s+(?:(?:wire|logic|reg|var)\s+)?unsigned\b\s*(?:\[[^\]]*\])?"
                          r"\s*((?:\w+\s*,\s*(?!input\b|output\b|inout\b))*\w+)", module.group(1))
    found = {n for names_list in declared for n in re.split(r"\s*,\s*", names_list)}
    return all(n in found for n in names)


def synthesize_asic(mult: Multiplier, liberty: Liberty | None, timeout: float) -> AsicNetlist:
    """Synthesize with Yosys to the Liberty cells (or to Yosys gates when ``liberty`` is None)."""
    subject = mult.source or mult.name
    top = f"-top {script_name(mult.top, 'top module', subject)}" if mult.top else "-auto-top"
    with job_folder("yosys") as work:
        (work / mult.file_name).write_text(mult.verilog)
        lib = liberty.link_into(work) if liberty else None
        script = [
            f"read_verilog -sv {mult.file_name}",
            f"hierarchy -check {top}",
            "synth -flatten",
            f"abc -liberty {lib}" if lib else f"abc -g {ABC_GATES}",
            "opt_clean",
            "rename -enumerate",
            "tee -q -o stat.json stat -json",
        ]
        if lib:  # stat -json of Yosys 0.23 has no area: read the text report's total
            script += [f"tee -q -o stat.txt stat -liberty {lib}",
                       "opt_clean -purge", "write_verilog -noattr -noexpr -simple-lhs netlist.v",
                       f"read_liberty -ignore_miss_func {lib}", "flatten", "opt_clean -purge"]
        script.append("write_json flat.json")
        (work / "flow.ys").write_text("\n".join(script) + "\n")
        run_tool("yosys", ["-q", "-s", "flow.ys"], cwd=work, timeout=timeout, subject=subject)
        modules = json.loads((work / "flat.json").read_text())["modules"]
        name = next(n for n, m in modules.items() if m.get("attributes", {}).get("top")) \
            if len(modules) > 1 else next(iter(modules))
        stat = json.loads((work / "stat.json").read_text())["modules"]
        cells = _cell_counts(stat)
        if not cells:
            area = 0.0  # constant outputs (every LUT removed): no logic at all
        elif liberty:
            area = _area((work / "stat.txt").read_text())
        else:
            area = float(sum(GATE_TRANSISTORS.get(t, 6) * n for t, n in cells.items()))
        netlist_v = (work / "netlist.v").read_text() if liberty else None
        ports = find_ports(modules[name], subject)
        if ports.declared_signed is None and \
                declares_unsigned(mult.verilog, name, [ports.activation, ports.weight]):
            ports.declared_signed = False
        return AsicNetlist(name, ports, Netlist(modules[name], name), netlist_v, area, cells)


def _cell_counts(stat: dict) -> dict[str, int]:
    counts: dict[str, int] = {}
    for module in stat.values():
        for cell, n in module.get("num_cells_by_type", {}).items():
            counts[cell] = counts.get(cell, 0) + int(n)
    return counts


def _area(report: str) -> float:
    match = re.search(r"Chip area for (?:top )?module .*?:\s*([0-9.eE+-]+)", report)
    if match is None:
        raise ValueError("Yosys stat reported no chip area (are the cells in the Liberty file?)")
    return float(match.group(1))


@dataclass(frozen=True)
class FpgaCost:
    """Xilinx 7-series resources from ``synth_xilinx``."""

    luts: int
    carries: int
    cells: dict[str, int]


def synthesize_xilinx(mult: Multiplier, timeout: float) -> FpgaCost:
    """LUT and CARRY4 counts of a multiplier mapped by Yosys ``synth_xilinx`` (no DSP blocks:
    an approximate multiplier is built from fabric)."""
    subject = mult.source or mult.name
    with job_folder("xilinx") as work:
        (work / mult.file_name).write_text(mult.verilog)
        # synth_xilinx reads the Xilinx primitives itself, so it also resolves the hierarchy
        top = f"-top {script_name(mult.top, 'top module', subject)}" if mult.top else ""  # or auto
        script = [f"read_verilog -sv {mult.file_name}",
                  f"synth_xilinx {top} -flatten -nodsp -noiopad", "tee -q -o stat.json stat -json"]
        (work / "flow.ys").write_text("\n".join(script) + "\n")
        run_tool("yosys", ["-q", "-s", "flow.ys"], cwd=work, timeout=timeout, subject=subject)
        cells = _cell_counts(json.loads((work / "stat.json").read_text())["modules"])
    luts = sum(n for c, n in cells.items() if c.startswith("LUT"))
    carries = sum(n for c, n in cells.items() if c.startswith("CARRY"))
    return FpgaCost(luts, carries, cells)
