"""OpenSTA timing and power of a synthesized (combinational) multiplier.

The operands arrive from registers and the product goes to registers of one virtual clock
(``clock_period_ns``, which also sets how often activities toggle). Reported:

- ``delay``: the arrival time of the worst input-to-output path (ns);
- vectorless power: OpenSTA's own propagation of an input activity through the cell functions
  (``set_power_activity -input``; the figure SubXPAT-style flows report);
- each instance's dynamic power at one transition per cycle and its leakage. Simulated per-net
  activities are applied by weighting each instance's dynamic power with the transition rate of
  its output net (``circuits.activity``). That is what OpenSTA computes for annotated pins when
  a cell's internal power is attached to its output pin, and ABC maps only to single-output
  cells; it is needed because OpenSTA 2.0.17 (Debian) recomputes the activity of every internal
  pin by propagation, overwriting per-pin annotations.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from circuits.liberty import Liberty
from circuits.tools import ToolError, job_folder, run_tool, script_name

_FLOAT = r"[-+]?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?"


@dataclass(frozen=True)
class PowerBreakdown:
    """Power in watts."""

    internal: float
    switching: float
    leakage: float

    @property
    def total(self) -> float:
        return self.internal + self.switching + self.leakage


@dataclass(frozen=True)
class StaReport:
    delay_ns: float
    vectorless: PowerBreakdown
    unit_activity: dict[str, PowerBreakdown]  # instance -> power at one transition per cycle

    def power(self, rates: dict[str, float]) -> PowerBreakdown:
        """Total power with the given output transition rates (per cycle) of each instance."""
        internal = switching = leakage = 0.0
        for inst, p in self.unit_activity.items():
            rate = rates.get(inst, 0.0)
            internal += p.internal * rate
            switching += p.switching * rate
            leakage += p.leakage
        return PowerBreakdown(internal, switching, leakage)


def analyze(netlist_verilog: str, top: str, liberty: Liberty, *, clock_period_ns: float,
            input_activity: float, timeout: float, subject: str) -> StaReport:
    """Run OpenSTA once for timing, vectorless power and per-instance unit-activity power."""
    top = script_name(top, "top module", subject)
    with job_folder("sta") as work:
        (work / "netlist.v").write_text(netlist_verilog)
        (work / "flow.tcl").write_text(f"""
read_liberty {liberty.link_into(work)}
read_verilog netlist.v
link_design {{{top}}}
create_clock -name vclk -period {float(clock_period_ns)!r}
set_input_delay 0 -clock vclk [all_inputs]
set_output_delay 0 -clock vclk [all_outputs]
puts "DSE-TIMING"
report_checks -path_delay max -digits 6
set_power_activity -input -activity {float(input_activity)!r} -duty 0.5
puts "DSE-VECTORLESS"
report_power -digits 8
set_power_activity -global -activity 1.0 -duty 0.5
puts "DSE-INSTANCES"
report_power -instances [get_cells *] -digits 8
""")
        out = run_tool("sta", ["-no_splash", "-exit", "flow.tcl"], cwd=work, timeout=timeout,
                       subject=subject)
    return _parse(out, subject)


def _parse(out: str, subject: str) -> StaReport:
    try:
        timing = out.split("DSE-TIMING", 1)[1].split("DSE-VECTORLESS", 1)[0]
        vectorless = out.split("DSE-VECTORLESS", 1)[1].split("DSE-INSTANCES", 1)[0]
        instances = out.split("DSE-INSTANCES", 1)[1]
        arrival = re.search(rf"({_FLOAT})\s+data arrival time", timing)
        total = re.search(rf"^Total\s+({_FLOAT})\s+({_FLOAT})\s+({_FLOAT})", vectorless, re.M)
        if arrival is None or total is None:
            raise IndexError
    except IndexError:
        raise ToolError(f"{subject}: unexpected OpenSTA report (no timing path or power total)") from None
    unit = {
        m.group(4): PowerBreakdown(float(m.group(1)), float(m.group(2)), float(m.group(3)))
        for m in re.finditer(rf"^\s*({_FLOAT})\s+({_FLOAT})\s+({_FLOAT})\s+{_FLOAT}\s+(\S+)\s*$",
                             instances, re.M)
    }
    return StaReport(float(arrival.group(1)),
                     PowerBreakdown(*(float(total.group(i)) for i in (1, 2, 3))), unit)
