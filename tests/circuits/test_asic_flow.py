"""The real Yosys + ABC + OpenSTA flow on NanGate45 (and sky130): figures, tables, errors."""

from __future__ import annotations

import shutil
import time

import numpy as np
import pytest

from circuits import appaxo
from circuits.activity import OperandStream
from circuits.baselines import baseline_family
from circuits.cache import ResultCache
from circuits.characterize import GATE_MODEL, FlowSettings, characterize, infer_signedness
from circuits.error_metrics import error_metrics
from circuits.multiplier import Multiplier, MultiplierError
from circuits.product_table import ProductTable
from circuits.tools import ToolError
from tests.conftest import shared_path

pytestmark = pytest.mark.skipif(
    shutil.which("yosys") is None or shutil.which("sta") is None,
    reason="Yosys and OpenSTA are not installed (make setup installs them)",
)

SIGNED_MUL = """
module mul8s (input signed [7:0] a, input signed [7:0] b, output signed [15:0] p);
  assign p = a * b;
endmodule
"""
UNSIGNED_MUL = """
module mul8u (input [7:0] x, input [7:0] y, output [15:0] z);
  assign z = x * y;
endmodule
"""
# Ports not declared signed: the flow must infer signedness from the simulated table.
SIGNED_UNDECLARED = """
module mul8 (input [7:0] a, input [7:0] b, output [15:0] p);
  wire signed [15:0] s = $signed(a) * $signed(b);
  assign p = s;
endmodule
"""


@pytest.fixture(scope="module")
def nangate():
    return FlowSettings(liberty=str(shared_path("pdk", "nangate45_typ.lib.gz")))


def write(tmp_path, name, text):
    path = tmp_path / f"{name}.v"
    path.write_text(text)
    return path


def test_exact_signed_multiplier_lands_in_the_documented_band(tmp_path, nangate):
    result = characterize(Multiplier.from_file(write(tmp_path, "mul8s", SIGNED_MUL)), nangate)
    m = result.metrics
    assert m["signed"] is True and m["cost_model"] == "nangate45_typ.lib"
    np.testing.assert_array_equal(result.table.values, ProductTable.exact(True).values)
    # NanGate45 typical corner, 10 ns clock: the bands docs/performance.md documents
    assert 300 <= m["area"] <= 700
    assert 0.5 <= m["delay"] <= 2.5
    assert 50 <= m["power_uniform"] <= 300 and 50 <= m["power_vectorless"] <= 300
    assert 0 < m["power_uniform_leakage"] < m["power_uniform"]
    assert m["pdp_uniform"] == pytest.approx(m["power_uniform"] * m["delay"])


def test_unsigned_ports_are_read_unsigned_and_signed_is_inferred(tmp_path, nangate):
    unsigned = characterize(Multiplier.from_file(write(tmp_path, "u", UNSIGNED_MUL)), nangate)
    assert unsigned.metrics["signed"] is False and unsigned.metrics["mae"] == 0
    assert unsigned.metrics["signedness"] == "unsigned"
    np.testing.assert_array_equal(unsigned.table.values, ProductTable.exact(False).values)
    inferred = characterize(Multiplier.from_file(write(tmp_path, "s", SIGNED_UNDECLARED)), nangate)
    assert inferred.metrics["signed"] is True and inferred.metrics["mae"] == 0


def test_declared_ports_decide_the_signedness_without_inference(tmp_path):
    # a signed product behind ports declared unsigned, an unsigned one behind signed ports
    declared_unsigned = SIGNED_UNDECLARED.replace("input [7:0]", "input wire unsigned [7:0]")
    m = characterize(Multiplier.from_file(write(tmp_path, "du", declared_unsigned))).metrics
    assert (m["signed"], m["signedness"]) == (False, "unsigned") and m["mae"] > 1000
    declared_signed = "module ds (input signed [7:0] a, input signed [7:0] b, output [15:0] p);\n" \
                      "  assign p = $unsigned(a) * $unsigned(b);\nendmodule\n"
    m = characterize(Multiplier.from_file(write(tmp_path, "ds", declared_signed))).metrics
    assert (m["signed"], m["signedness"]) == (True, "signed") and m["mae"] > 1000
    with pytest.raises(MultiplierError, match=r"ds.v: its ports are declared signed, but it was "
                                              r"given as unsigned$"):
        characterize(Multiplier.from_file(tmp_path / "ds.v", signed=False))


def test_a_constant_output_is_ambiguous_not_signed(tmp_path):
    path = write(tmp_path, "zero", "module zero (input [7:0] a, input [7:0] b, output [15:0] p);\n"
                                   "  assign p = 16'd0;\nendmodule\n")
    guessed = characterize(Multiplier.from_file(path)).metrics
    assert (guessed["signed"], guessed["signedness"]) == (False, "ambiguous")
    assert guessed["mae"] == 16256.25  # the unsigned reading, as Verilog reads undeclared ports
    given = characterize(Multiplier.from_file(path, signed=False)).metrics
    assert given["signedness"] == "unsigned" and given["mae"] == guessed["mae"]


@pytest.mark.parametrize("signed", [True, False])
def test_inference_recognizes_every_baseline_that_is_a_multiplier(signed):
    """Every truncated / broken-array baseline closer to the products than a constant 0 is read
    with its own signedness; the others are ambiguous, never the wrong signedness."""
    for baseline in baseline_family(signed):
        table = baseline.table()
        flip = 0x80 if signed else 0
        index = np.arange(65536)
        raw = table.values[(index >> 8) ^ flip, (index & 0xFF) ^ flip].astype(np.int64) & 0xFFFF
        inferred, signedness = infer_signedness(raw, 16)
        relative = error_metrics(table)["mae"] / np.abs(table.exact_products()).mean()
        expected = ("signed" if signed else "unsigned") if relative < 1 else "ambiguous"
        assert signedness == expected, baseline.name
        if signedness != "ambiguous":
            assert inferred == table, baseline.name


def test_simulated_tables_equal_the_appaxo_model(nangate):
    rng = np.random.default_rng(2024)
    configs = [appaxo.EXACT, 0] + [int(c) for c in rng.integers(0, 2**36, 20)]
    for config in configs:
        result = characterize(Multiplier.from_appaxo(config), nangate)
        np.testing.assert_array_equal(result.table.values, appaxo.product_table(config),
                                      err_msg=appaxo.to_bitstring(config))


def test_area_and_power_never_grow_along_nested_configurations(nangate):
    order = np.random.default_rng(0).permutation(36)
    config, rows = appaxo.EXACT, []
    for step in range(0, 37, 3):
        m = characterize(Multiplier.from_appaxo(config), nangate).metrics
        rows.append((m["area"], m["power_uniform"], m["power_vectorless"]))
        for lut in order[step : step + 3]:
            config &= ~(1 << int(lut))
    for before, after in zip(rows, rows[1:]):
        assert all(b >= a for b, a in zip(before, after)), rows
    assert rows[-1] == (0.0, 0.0, 0.0)


def test_workload_activity_changes_power(nangate):
    mult = Multiplier.from_appaxo(appaxo.EXACT)
    rng = np.random.default_rng(1)
    # ReLU-like activations (mostly 0, small positives) against small weights
    a = np.where(rng.random(8192) < 0.6, 0, rng.integers(0, 40, 8192))
    quiet = OperandStream(a, rng.integers(-20, 21, 8192), "relu-like")
    m = characterize(mult, nangate, workload=quiet).metrics
    assert m["power_workload"] < 0.7 * m["power_uniform"]
    assert m["power_workload_leakage"] == pytest.approx(m["power_uniform_leakage"])


def test_sky130_library_works_too():
    sky = FlowSettings(liberty=str(shared_path("pdk", "sky130hd_tt.lib.gz")))
    m = characterize(Multiplier.from_appaxo(404750335), sky).metrics
    assert m["cost_model"] == "sky130hd_tt.lib" and m["area"] > 0 and m["delay"] > 0
    assert m["mae"] == 188.25


def test_without_a_liberty_file_the_estimate_is_labelled():
    m = characterize(Multiplier.from_appaxo(appaxo.EXACT)).metrics
    assert m["cost_model"] == GATE_MODEL and m["units"]["area"] == "transistors"
    assert m["area"] > 0 and m["delay"] >= 8 and m["power_vectorless"] is None


def test_a_repeated_characterization_is_a_cache_hit(tmp_path, nangate):
    cache = ResultCache(tmp_path / "cache.sqlite")
    mult = Multiplier.from_file(write(tmp_path, "mul8s", SIGNED_MUL))
    first = characterize(mult, nangate, cache=cache)
    start = time.perf_counter()
    again = characterize(mult, nangate, cache=cache)
    assert time.perf_counter() - start < 0.5  # the bench measures it properly
    assert again.metrics == first.metrics and again.table == first.table
    other = characterize(mult, FlowSettings(liberty=nangate.liberty, clock_period_ns=5.0), cache=cache)
    assert other.metrics["power_uniform"] > first.metrics["power_uniform"]  # a different key


def test_verilog_that_does_not_parse_names_file_and_error(tmp_path, nangate):
    path = write(tmp_path, "broken", "module broken (input [7:0] a, input [7:0] b, output [15:0] p);\n"
                                      "  assign p = a * ;\nendmodule\n")
    with pytest.raises(ToolError, match=rf"{path}: yosys failed: .*ERROR.*"):
        characterize(Multiplier.from_file(path), nangate)


def test_wrong_ports_are_named(tmp_path, nangate):
    path = write(tmp_path, "adder", "module adder (input [7:0] a, input [7:0] b, output [8:0] s);\n"
                                    "  assign s = a + b;\nendmodule\n")
    with pytest.raises(MultiplierError, match=r"adder.v: expected two 8-bit inputs .* output s\[9\]"):
        characterize(Multiplier.from_file(path), nangate)


def test_missing_tool_says_how_to_install(monkeypatch, tmp_path, nangate):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ToolError, match=r"yosys not found on PATH: install it with `sudo apt-get install yosys`"):
        characterize(Multiplier.from_appaxo(12345), nangate)


def test_a_hanging_tool_times_out(nangate):
    settings = FlowSettings(liberty=nangate.liberty, timeout_s=0.01)
    with pytest.raises(ToolError, match=r"appaxo:999: yosys timed out after 0.01 s"):
        characterize(Multiplier.from_appaxo(999), settings)
