"""Generators of approximate multipliers: the exact circuits they start from, the interface
they share, and the design points they return.

A generator takes an exact circuit and its own parameters and returns a chain of design points:
every accepted approximate circuit, each with its Verilog, the product table of its synthesized
netlist (exhaustive simulation), error statistics and the hardware figures of the ASIC flow.

**Signed error scheme.** Generators compare outputs as unsigned integers (the worst-case
absolute difference of the 16 output bits read unsigned, as SubXPAT does). For a signed 8x8
multiplier the circuit given to a generator therefore computes ``r = p XOR 0x8000``, where
``p`` is the two's complement product: flipping the top bit maps the signed range
[-32768, 32767] onto [0, 65535] in order (``r = p + 32768``), so ``|r' - r| = |p' - p|`` and
an unsigned error bound on ``r`` is the same bound on the signed product. Every generated
circuit is wrapped back (``p = r XOR 0x8000``, one inverter) before it is characterized, so
its product table is that of a signed multiplier.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from circuits import baselines
from circuits.activity import OperandStream
from circuits.cache import ResultCache, key_of
from circuits.characterize import FlowSettings, characterize, stored_table
from circuits.liberty import load_liberty
from circuits.multiplier import Multiplier
from circuits.product_table import ProductTable
from circuits.synthesis import synthesize_asic
from circuits.tools import tool_version

SIGN_FLIP = 0x8000


@dataclass(frozen=True)
class ExactCircuit:
    """A circuit with inputs ``a[7:0]``, ``b[7:0]`` and output ``r[15:0]`` read unsigned (for a
    signed multiplier, the product XOR 0x8000): what a generator approximates."""

    name: str
    verilog: str
    top: str
    signed: bool

    @property
    def sha256(self) -> str:
        return hashlib.sha256(f"{self.top}\n{self.signed}\n{self.verilog}".encode()).hexdigest()

    @classmethod
    def multiplier(cls, signed: bool = True) -> ExactCircuit:
        """The built-in exact 8x8 multiplier: the array of ``circuits.baselines`` (Baugh-Wooley
        when signed), the same circuit the truncated and broken-array baselines start from."""
        array = baselines.truncated(0, signed)
        return cls._wrap(f"mul8{'s' if signed else 'u'}", array.verilog(), array.name,
                         ("a", "b", "p"), signed)

    @classmethod
    def from_multiplier(cls, mult: Multiplier, signed: bool) -> ExactCircuit:
        """Any 8x8 multiplier design (ports as ``circuits.multiplier`` reads them) as the
        starting circuit."""
        ports = synthesize_asic(mult, None, 120.0).ports
        top = mult.top or re.search(r"^\s*module\s+(\w+)", mult.verilog, flags=re.M)[1]
        return cls._wrap(mult.name, mult.verilog, top,
                         (ports.activation, ports.weight, ports.product), signed)

    @classmethod
    def _wrap(cls, name: str, verilog: str, top: str, ports: tuple[str, str, str],
              signed: bool) -> ExactCircuit:
        """The design under a top ``dse_exact`` (a, b -> r), its product XOR 0x8000 if signed."""
        a, b, p = ports
        flip = f" ^ 16'h{SIGN_FLIP:04x}" if signed else ""
        wrapper = (f"// dse: generators read r unsigned{'; r = product XOR 0x8000' if signed else ''}\n"
                   f"module dse_exact (input [7:0] a, input [7:0] b, output [15:0] r);\n"
                   f"  wire [31:0] p;\n"
                   f"  {top} u_exact (.{a}(a), .{b}(b), .{p}(p));\n"
                   f"  assign r = p[15:0]{flip};\nendmodule\n")
        return cls(name, verilog + "\n" + wrapper, "dse_exact", signed)


def wrap_signed(core_verilog: str, core_top: str, name: str, signed: bool) -> str:
    """A multiplier ``name`` (ports a, b, p) around a generated core (ports a, b, r): for a
    signed multiplier ``p = r XOR 0x8000`` undoes the signed error scheme."""
    flip = f" ^ 16'h{SIGN_FLIP:04x}" if signed else ""
    return (f"{core_verilog}\n"
            f"module {name} (input [7:0] a, input [7:0] b, output [15:0] p);\n"
            f"  wire [15:0] r;\n  {core_top} u_core (.a(a), .b(b), .r(r));\n"
            f"  assign p = r{flip};\nendmodule\n")


@dataclass
class DesignPoint:
    """One generated circuit: its design, its product table and its measured figures."""

    name: str
    generator: str
    verilog: str
    signed: bool
    threshold: float | None  # the error bound it was generated under (None: a fixed design)
    step: int  # position in its chain
    seconds: float  # since the generator started
    table: ProductTable
    metrics: dict = field(default_factory=dict)  # error statistics and hardware figures

    def multiplier(self) -> Multiplier:
        return Multiplier(self.name, self.verilog, self.name, self.signed, f"generated:{self.name}")

    def row(self) -> dict:
        """Plain values (for a table or a store)."""
        return {"name": self.name, "generator": self.generator, "threshold": self.threshold,
                "step": self.step, "seconds": self.seconds, **self.metrics}


def design_point(name: str, generator: str, verilog: str, signed: bool, *, threshold: float | None,
                 step: int, started: float, flow: FlowSettings, cache: ResultCache | None = None,
                 workload: OperandStream | None = None) -> DesignPoint:
    """Characterize a generated design (synthesis, simulated table, timing, power; power under
    ``workload`` too when one is given)."""
    seconds = time.monotonic() - started
    mult = Multiplier(name, verilog, name, signed, f"generated:{name}")
    result = characterize(mult, flow, workload, cache)
    return DesignPoint(name, generator, verilog, signed, threshold, step, seconds, result.table,
                       result.metrics)


OnPoint = Callable[[DesignPoint], None]
CHAIN_FIELDS = ("name", "generator", "verilog", "signed", "threshold", "step", "seconds", "metrics")


def chain_key(generator: Generator, exact: ExactCircuit, flow: FlowSettings,
              workload: OperandStream | None = None) -> str:
    """The cache key of a generator run: the exact circuit, the generator's name, version and
    parameters, the flow, the workload and the tool versions."""
    return key_of({
        "generator": generator.name, "version": generator.version, "params": generator.params(),
        "exact": exact.sha256,
        "flow": {k: v for k, v in asdict(flow).items() if k != "timeout_s"},
        "liberty": load_liberty(flow.liberty).sha256 if flow.liberty else None,
        "yosys": tool_version("yosys"), "sta": tool_version("sta") if flow.liberty else None,
        "workload": workload.sha256 if workload is not None else None,
    })


def generate_cached(generator: Generator, exact: ExactCircuit, flow: FlowSettings,
                    cache: ResultCache, on_point: OnPoint | None = None,
                    workload: OperandStream | None = None) -> list[DesignPoint]:
    """``generator.generate``, or the chain an identical run stored (``chain_key``); a run that
    found nothing is not stored."""
    key = chain_key(generator, exact, flow, workload)
    if (hit := cache.get(key)) is not None:
        points = [DesignPoint(**{k: row[k] for k in CHAIN_FIELDS},
                              table=stored_table(row["metrics"]["table_sha256"], row["signed"]))
                  for row in hit["chain"]]
        for point in points:
            if on_point:
                on_point(point)
        return points
    points = generator.generate(exact, flow, cache, on_point, workload)
    if points:  # an empty chain (a run stopped early, a tool failing) is not a result to keep
        cache.put(key, {"chain": [{k: getattr(p, k) for k in CHAIN_FIELDS} for p in points]})
    return points


class Generator(Protocol):
    """Anything that turns an exact circuit into a chain of approximate design points."""

    name: str
    version: str

    def params(self) -> dict:
        """The parameters that determine the chain (part of every cache key)."""

    def generate(self, exact: ExactCircuit, flow: FlowSettings, cache: ResultCache | None = None,
                 on_point: OnPoint | None = None, workload: OperandStream | None = None
                 ) -> list[DesignPoint]:
        """The accepted design points, in the order they were accepted, characterized under
        ``flow`` (and ``workload``, when given, for workload power)."""


@dataclass(frozen=True)
class BaselineGenerator:
    """A classic multiplier (``circuits.baselines``) as a one-point generator: ``kind`` is
    ``trunc`` (parameters ``k``, ``compensate``) or ``bam`` (``hbl``, ``vbl``)."""

    kind: str
    k: int = 0
    compensate: bool = False
    hbl: int = 0
    vbl: int = 0
    name: str = "baseline"
    version: str = "1"

    def params(self) -> dict:
        if self.kind == "trunc":
            return {"kind": "trunc", "k": self.k, "compensate": self.compensate}
        if self.kind == "bam":
            return {"kind": "bam", "hbl": self.hbl, "vbl": self.vbl}
        raise ValueError(f"baseline kind must be 'trunc' or 'bam', got {self.kind!r}")

    def generate(self, exact: ExactCircuit, flow: FlowSettings, cache: ResultCache | None = None,
                 on_point: OnPoint | None = None, workload: OperandStream | None = None
                 ) -> list[DesignPoint]:
        started = time.monotonic()
        p = self.params()
        array = baselines.truncated(self.k, exact.signed, self.compensate) if p["kind"] == "trunc" \
            else baselines.broken_array(self.hbl, self.vbl, exact.signed)
        point = design_point(array.name, self.name, array.verilog(), exact.signed, threshold=None,
                             step=0, started=started, flow=flow, cache=cache, workload=workload)
        if not np.array_equal(point.table.values, array.table().values):
            raise RuntimeError(f"{array.name}: the synthesized netlist does not compute the model")
        if on_point:
            on_point(point)
        return [point]


def write_chain(points: list[DesignPoint], folder: Path) -> Path:
    """Each design's Verilog (``<name>.v``) and product table (``<name>.npy``), and
    ``chain.csv`` with one row of figures per design; returns the CSV's path."""
    import pandas as pd

    folder.mkdir(parents=True, exist_ok=True)
    for point in points:
        (folder / f"{point.name}.v").write_text(point.verilog)
        np.save(folder / f"{point.name}.npy", point.table.values)
    rows = [{k: v for k, v in point.row().items() if not isinstance(v, dict)} for point in points]
    path = folder / "chain.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path
