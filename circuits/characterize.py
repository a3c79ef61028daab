"""Characterizing a multiplier: synthesis, its product table by simulation, timing and power.

With a Liberty file: Yosys + ABC map to its cells, OpenSTA reports the critical-path delay
(ns), and power (uW) three ways: vectorless (OpenSTA's propagation of an input activity),
under uniform random operands and under a workload's operands (activities simulated on the
netlist). Without one, an embedded estimate needs no library: Yosys gates, area in transistors,
delay in gate levels, power in transistor toggles per cycle; every output says which model
produced it (``cost_model``, ``units``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from circuits import appaxo
from circuits.activity import OperandStream, toggle_rates
from circuits.cache import ResultCache, cache_dir, key_of
from circuits.error_metrics import error_metrics
from circuits.liberty import Liberty, load_liberty
from circuits.multiplier import Multiplier, MultiplierError
from circuits.netlist_sim import operand_words
from circuits.product_table import ProductTable
from circuits.sta import analyze
from circuits.synthesis import GATE_TRANSISTORS, AsicNetlist, synthesize_asic
from circuits.tools import tool_version

FLOW_VERSION = 2  # 2: metrics say how the signedness was known (``signedness``)
GATE_MODEL = "yosys-gates (transistor-count estimate, no Liberty)"
LIBERTY_UNITS = {"area": "um2", "delay": "ns", "power": "uW"}
GATE_UNITS = {"area": "transistors", "delay": "gate levels", "power": "transistor toggles/cycle"}
AMBIGUOUS = "ambiguous"
CLEAR_MARGIN = 0.5  # an inferred reading must at least halve the other reading's relative error


@dataclass(frozen=True)
class FlowSettings:
    """Settings of the ASIC flow (all of them are part of the cache key)."""

    liberty: str | None = None
    clock_period_ns: float = 10.0
    input_activity: float = 0.5
    vectors: int = 8192
    seed: int = 0
    timeout_s: float = 120.0


@dataclass
class Characterization:
    """Plain metrics (ready to store) and the simulated product table."""

    metrics: dict
    table: ProductTable


def characterize(
    mult: Multiplier,
    settings: FlowSettings = FlowSettings(),
    workload: OperandStream | None = None,
    cache: ResultCache | None = None,
) -> Characterization:
    """Characterize one multiplier, or return the cached result of an identical run."""
    liberty = load_liberty(settings.liberty) if settings.liberty else None
    key = key_of({
        "design": mult.sha256, "signed": mult.signed, "flow": FLOW_VERSION,
        "settings": {k: v for k, v in asdict(settings).items() if k not in ("liberty", "timeout_s")},
        "liberty": liberty.sha256 if liberty else None,
        "yosys": tool_version("yosys"), "sta": tool_version("sta") if liberty else None,
        "workload": workload.sha256 if workload is not None else None,
    })
    if cache is not None and (hit := cache.get(key)) is not None:
        # an identical design cached under another file keeps this one's name and source
        hit = {**hit, "name": mult.name, "source": mult.source}
        return Characterization(hit, _load_table(mult, hit))
    result = _run(mult, settings, liberty, workload)
    if cache is not None:
        cache.put(key, result.metrics)
        _save_table(mult, result.table)
    return result


def _run(mult: Multiplier, settings: FlowSettings, liberty: Liberty | None,
         workload: OperandStream | None) -> Characterization:
    synth = synthesize_asic(mult, liberty, settings.timeout_s)
    table, signedness = simulate_table(synth, mult)
    signed = table.signed
    ports = (synth.ports.activation, synth.ports.weight)
    streams = {"uniform": OperandStream.uniform(signed, settings.vectors, settings.seed)}
    if workload is not None:
        streams["workload"] = workload
    metrics: dict = {
        "name": mult.name, "source": mult.source, "signed": signed, "signedness": signedness,
        "cost_model": liberty.name if liberty else GATE_MODEL,
        "units": LIBERTY_UNITS if liberty else GATE_UNITS,
        "table_sha256": table.sha256, "cells": int(sum(synth.cells.values())),
        "area": synth.area, **error_metrics(table),
        "power_workload": None, "power_vectorless": None,
    }
    if not synth.cells:  # constant outputs: nothing switches, nothing leaks, no path
        metrics.update(delay=0.0, power_vectorless=0.0 if liberty else None)
        metrics.update({f"power_{name}": 0.0 for name in streams})
    elif liberty:
        nets = _instance_outputs(synth)
        sta = analyze(synth.netlist_verilog, synth.top, liberty,
                      clock_period_ns=settings.clock_period_ns,
                      input_activity=settings.input_activity, timeout=settings.timeout_s,
                      subject=mult.source or mult.name)
        metrics["delay"] = sta.delay_ns
        metrics["power_vectorless"] = sta.vectorless.total * 1e6
        for name, stream in streams.items():
            power = sta.power(toggle_rates(synth.netlist, nets, ports, stream))
            metrics[f"power_{name}"] = power.total * 1e6
            metrics[f"power_{name}_leakage"] = power.leakage * 1e6
    else:
        gates = synth.netlist.gates
        nets = {name: bit for name, (_, bit) in gates.items()}
        metrics["delay"] = float(synth.netlist.logic_depth())
        for name, stream in streams.items():
            rates = toggle_rates(synth.netlist, nets, ports, stream)
            metrics[f"power_{name}"] = float(sum(
                GATE_TRANSISTORS.get(kind, 6) * rates[g] for g, (kind, _) in gates.items()))
    metrics["pdp_uniform"] = metrics["power_uniform"] * metrics["delay"]
    if metrics["power_workload"] is not None:
        metrics["pdp_workload"] = metrics["power_workload"] * metrics["delay"]
    return Characterization(metrics, table)


def simulate_table(synth: AsicNetlist, mult: Multiplier) -> tuple[ProductTable, str]:
    """The product table of the synthesized netlist over all 65,536 operand pairs, and its
    signedness: from ``signed``/``unsigned`` port declarations, else as the multiplier was given,
    else inferred from the table (``infer_signedness``), possibly ``ambiguous``."""
    index = np.arange(65536)
    ua, ub = index >> 8, index & 0xFF
    values = synth.netlist.simulate({synth.ports.activation: operand_words(ua),
                                     synth.ports.weight: operand_words(ub)})
    width = len(synth.netlist.ports[synth.ports.product].bits)
    raw = synth.netlist.read_port(values, synth.ports.product, 65536)
    declared, given = synth.ports.declared_signed, mult.signed
    if declared is not None and given is not None and declared != given:
        raise MultiplierError(f"{mult.source or mult.name}: its ports are declared "
                              f"{_signedness(declared)}, but it was given as {_signedness(given)}")
    known = declared if declared is not None else given
    if known is None:
        table, signedness = infer_signedness(raw, width)
    else:
        table, signedness = ProductTable.from_bit_patterns(raw, width, known), _signedness(known)
    if mult.appaxo_config is not None and not np.array_equal(
            table.values, appaxo.product_table(mult.appaxo_config)):
        raise MultiplierError(f"{mult.source}: the synthesized netlist does not compute the AppAxO model")
    return table, signedness


def infer_signedness(raw: np.ndarray, width: int) -> tuple[ProductTable, str]:
    """Read a circuit's outputs as the signed or the unsigned multiplier they clearly are: that
    reading's mean absolute error, relative to the mean absolute exact product (what a constant 0
    scores), is below 1 and at most ``CLEAR_MARGIN`` times the other's. Otherwise (a constant
    output, a circuit far from a multiplier either way) the signedness is ``ambiguous`` and the
    table is read unsigned, as Verilog reads ports not declared signed."""
    readings = {s: ProductTable.from_bit_patterns(raw, width, s) for s in (True, False)}
    score = {s: error_metrics(t)["mae"] / np.abs(t.exact_products()).mean()
             for s, t in readings.items()}
    best = min(score, key=score.__getitem__)
    constant = np.ptp(readings[False].values) == 0
    if constant or score[best] >= 1 or score[best] > CLEAR_MARGIN * score[not best]:
        return readings[False], AMBIGUOUS
    return readings[best], _signedness(best)


def _signedness(signed: bool) -> str:
    return "signed" if signed else "unsigned"


def _instance_outputs(synth: AsicNetlist) -> dict[str, int]:
    """Liberty instance name -> bit of its output net (the flattened net ``inst.PIN``)."""
    nets = {}
    for name, bits in synth.netlist.netnames.items():
        inst, _, pin = name.rpartition(".")
        if inst and pin and not name.startswith("$") and len(bits) == 1:
            nets[inst] = bits[0]
    return nets


def _table_path(sha: str) -> Path:
    return cache_dir() / "tables" / f"{sha}.npy"


def _save_table(mult: Multiplier, table: ProductTable) -> None:
    if mult.appaxo_config is None:  # AppAxO tables come from the model in milliseconds
        path = _table_path(table.sha256)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, table.values)


def _load_table(mult: Multiplier, metrics: dict) -> ProductTable:
    if mult.appaxo_config is not None:
        return ProductTable(appaxo.product_table(mult.appaxo_config), True)
    return stored_table(metrics["table_sha256"], metrics["signed"])


def stored_table(sha256: str, signed: bool) -> ProductTable:
    """A product table that a cached characterization saved (by its hash)."""
    table = ProductTable(np.load(_table_path(sha256)), signed)
    if table.sha256 != sha256:
        raise ValueError(f"{_table_path(sha256)}: stored table does not match its hash")
    return table
