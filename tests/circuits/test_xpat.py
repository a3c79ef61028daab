"""The built-in XPAT-style generator and its parts: forced simulation, convex subgraphs,
sum-of-products fitting, and chains of generated multipliers checked by exhaustive simulation."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from circuits.baselines import truncated
from circuits.characterize import FlowSettings, simulate_table
from circuits.error_metrics import error_metrics
from circuits.generation import SIGN_FLIP, BaselineGenerator, ExactCircuit
from circuits.multiplier import Multiplier
from circuits.netlist_sim import operand_words
from circuits.product_table import ProductTable
from circuits.sop import Template, constant_fit, fit_sop
from circuits.subgraph import GateGraph
from circuits.synthesis import synthesize_asic
from circuits.xpat import XpatGenerator, XpatParams, allowed_outputs, stuck_at_labels

needs_yosys = pytest.mark.skipif(shutil.which("yosys") is None,
                                 reason="Yosys is not installed (make setup installs it)")
INDEX = np.arange(65536)
STIMULUS = {"a": operand_words(INDEX >> 8), "b": operand_words(INDEX & 0xFF)}


def _exact_netlist(signed: bool = True):
    exact = ExactCircuit.multiplier(signed)
    synth = synthesize_asic(Multiplier(exact.top, exact.verilog, exact.top, False), None, 60)
    return synth.netlist


def _outputs(netlist, values) -> np.ndarray:
    return netlist.read_port(values, "r", 65536)


# ---------------------------------------------------------------- sum-of-products fitting
def _patterns_of(fn, n_inputs: int) -> np.ndarray:
    return np.array([fn(*(((p >> i) & 1) for i in range(n_inputs))) for p in range(1 << n_inputs)])


def test_sop_fit_reproduces_a_function_with_the_fewest_literals():
    # two outputs over three inputs: o0 = x0 & x1, o1 = x0 | ~x2; exactly these values allowed
    target = _patterns_of(lambda x0, x1, x2: (x0 & x1) | ((x0 | (1 - x2)) << 1), 3)
    allowed = np.zeros((8, 4), bool)
    allowed[np.arange(8), target] = True
    occurring = np.ones(8, bool)
    sop = fit_sop(allowed, occurring, Template(literals_per_product=2, products=2), timeout_s=10)
    assert sop is not None
    np.testing.assert_array_equal(sop.evaluate(np.arange(8)), target)
    assert sop.literals == 4  # x0 x1 ; x0 + ~x2
    shared = fit_sop(allowed, occurring, Template(2, 3, shared=True), timeout_s=10)
    np.testing.assert_array_equal(shared.evaluate(np.arange(8)), target)
    # one literal per product cannot make x0 & x1
    assert fit_sop(allowed, occurring, Template(1, 2), timeout_s=10) is None


def test_sop_fit_uses_dont_cares_and_allowed_sets():
    target = _patterns_of(lambda x0, x1: x0 ^ x1, 2)  # XOR needs two 2-literal products ...
    allowed = np.zeros((4, 2), bool)
    allowed[np.arange(4), target] = True
    occurring = np.array([True, True, True, False])  # ... but never seeing x0 = x1 = 1 allows x0 | x1
    sop = fit_sop(allowed, occurring, Template(2, 2), timeout_s=10)
    assert sop.literals == 2
    np.testing.assert_array_equal(sop.evaluate(np.arange(3)), target[:3])
    allowed[:, 1] = True  # output 1 allowed everywhere: the constant, no literal
    assert constant_fit(allowed, occurring).evaluate(np.arange(4)).tolist() == [1, 1, 1, 1]
    assert fit_sop(allowed, occurring, Template(0, 0), timeout_s=10).literals == 0


# ---------------------------------------------------------------- netlist, subgraphs, labels
@needs_yosys
def test_forced_resimulation_equals_a_full_forced_simulation():
    netlist = _exact_netlist()
    values = netlist.simulate(STIMULUS)
    gate = netlist.order[len(netlist.order) // 2]
    force = {gate.output: np.zeros(1024, np.uint64)}
    again = netlist.resimulate(values, force)
    full = netlist.simulate(STIMULUS, force)
    np.testing.assert_array_equal(_outputs(netlist, again), _outputs(netlist, full))
    assert not np.array_equal(_outputs(netlist, again), _outputs(netlist, values))


@needs_yosys
def test_grown_subgraphs_are_convex_and_within_their_limits():
    netlist = _exact_netlist()
    graph = GateGraph(netlist, netlist.ports["r"].bits)
    rank = np.zeros(len(netlist.order))
    grown = [graph.grow(seed, rank, 6, 3) for seed in range(0, len(netlist.order), 17)]
    assert sum(s is not None and len(s.gates) > 1 for s in grown) > 5
    for sub in filter(None, grown):
        assert len(sub.inputs) <= 6 and len(sub.outputs) <= 3
        inside = {netlist.order[k].output for k in sub.gates}
        for k in range(len(netlist.order)):  # no outside gate on a path from S back to S
            if k in sub.gates:
                continue
            assert not (any(graph.descendants[s] >> k & 1 for s in sub.gates)
                        and any(graph.ancestors[s] >> k & 1 for s in sub.gates))
        assert set(sub.outputs) <= inside and not set(sub.inputs) & inside


@needs_yosys
def test_allowed_outputs_hold_the_original_function_and_the_threshold():
    netlist = _exact_netlist()
    values = netlist.simulate(STIMULUS)
    reference = _outputs(netlist, values)
    labels = stuck_at_labels(netlist, values, netlist.ports["r"].bits, reference)
    assert labels.min() >= 1 and labels.max() > 1000  # every gate matters; some a lot
    graph = GateGraph(netlist, netlist.ports["r"].bits)
    seed = int(np.argmin(labels))
    sub = graph.grow(seed, labels, 6, 3)
    allowed, occurring = allowed_outputs(netlist, values, netlist.ports["r"].bits, sub, reference, 0)
    # at threshold 0 only the subgraph's own output vector is allowed for each occurring pattern
    from circuits.netlist_sim import read_bits

    pattern = read_bits([values[n] for n in sub.inputs], 65536)
    own = read_bits([values[n] for n in sub.outputs], 65536)
    assert allowed[pattern, own].all()
    assert (allowed[occurring].sum(axis=1) >= 1).all()
    loose, _ = allowed_outputs(netlist, values, netlist.ports["r"].bits, sub, reference, 10**6)
    assert loose.all()


# ---------------------------------------------------------------- generated chains
def _check_chain(points, signed: bool):
    """Every point: WCE within its threshold, its table = the simulation of its netlist
    synthesized again, and the unsigned core error equal to the signed product error."""
    assert points and [p.step for p in points] == list(range(1, len(points) + 1))
    for point in points:
        assert point.metrics["wce"] <= point.threshold
        assert point.table.signed is signed
        mult = point.multiplier()
        synth = synthesize_asic(mult, None, 60)
        table, _ = simulate_table(synth, mult)
        assert table == point.table
        assert error_metrics(table) == {k: point.metrics[k] for k in error_metrics(table)}
        # the core's output read unsigned against the exact core's, as the generator measures it
        ops = table.operands
        core = (table.values.astype(np.int64) ^ (SIGN_FLIP if signed else 0)) & 0xFFFF
        exact_core = (np.outer(ops, ops) ^ (SIGN_FLIP if signed else 0)) & 0xFFFF
        assert np.abs(core - exact_core).max() == point.metrics["wce"]


@needs_yosys
def test_signed_chain_stays_within_each_threshold():
    gen = XpatGenerator(XpatParams(thresholds=(16, 128), steps_per_threshold=2, attempts=3,
                                   time_limit_s=120))
    seen = []
    points = gen.generate(ExactCircuit.multiplier(True), FlowSettings(), on_point=seen.append)
    assert seen == points and len(points) >= 2
    _check_chain(points, signed=True)
    exact = ExactCircuit.multiplier(True)
    exact_area = synthesize_asic(Multiplier("m", exact.verilog, exact.top, False), None, 60).area
    assert points[-1].metrics["area"] < exact_area
    assert points[-1].threshold == 128 and points[-1].metrics["wce"] > 16


@needs_yosys
def test_unsigned_chain_and_a_user_design_as_the_exact_circuit(tmp_path):
    path = tmp_path / "mymul.v"
    path.write_text("module mymul(input [7:0] x, input [7:0] y, output [15:0] z);\n"
                    "  assign z = x * y;\nendmodule\n")
    exact = ExactCircuit.from_multiplier(Multiplier.from_file(path), signed=False)
    gen = XpatGenerator(XpatParams(thresholds=(64,), steps_per_threshold=2, attempts=3))
    points = gen.generate(exact, FlowSettings())
    _check_chain(points, signed=False)
    assert points[0].name.startswith("mymul_xpat")


@needs_yosys
def test_baseline_generators_give_their_model():
    point, = BaselineGenerator("trunc", k=5, compensate=True).generate(
        ExactCircuit.multiplier(True), FlowSettings())
    assert point.table == truncated(5, True, True).table() != ProductTable.exact(True)
    assert point.metrics["wce"] == error_metrics(truncated(5, True, True).table())["wce"]
    with pytest.raises(ValueError, match="'trunc' or 'bam'"):
        BaselineGenerator("booth").params()


@needs_yosys
def test_exact_zero_keeps_every_product_with_a_zero_operand_exact():
    gen = XpatGenerator(XpatParams(thresholds=(64, 256), steps_per_threshold=2, attempts=3,
                                   exact_zero=True))
    points = gen.generate(ExactCircuit.multiplier(True), FlowSettings())
    _check_chain(points, signed=True)
    for point in points:
        zero = 128  # the index of operand 0 in a signed table
        assert not point.table.values[zero, :].any() and not point.table.values[:, zero].any()
    assert points[-1].metrics["wce"] > 64


@needs_yosys
def test_a_cached_chain_comes_back_without_generating_again(tmp_path, monkeypatch):
    from circuits.cache import ResultCache
    from circuits.generation import chain_key, generate_cached

    monkeypatch.setenv("DSE_CACHE_DIR", str(tmp_path))
    cache = ResultCache()
    gen = XpatGenerator(XpatParams(thresholds=(32,), steps_per_threshold=2, attempts=2))
    exact = ExactCircuit.multiplier(True)
    first = generate_cached(gen, exact, FlowSettings(), cache)
    again = generate_cached(gen, exact, FlowSettings(), cache)
    # the stored run: same designs, tables and the seconds it took then
    assert [(p.name, p.table, p.seconds, p.verilog) for p in again] == \
        [(p.name, p.table, p.seconds, p.verilog) for p in first]
    other = XpatGenerator(XpatParams(thresholds=(32,), steps_per_threshold=1, attempts=2))
    assert len(generate_cached(other, exact, FlowSettings(), cache)) == 1  # other parameters
    # a run that found nothing (threshold 0 leaves no error to spend) is not stored
    empty = XpatGenerator(XpatParams(thresholds=(0,), steps_per_threshold=1, attempts=1))
    assert generate_cached(empty, exact, FlowSettings(), cache) == []
    assert cache.get(chain_key(empty, exact, FlowSettings())) is None
