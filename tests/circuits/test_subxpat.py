"""The SubXPAT adapter: its benchmarks, the files SubXPAT writes (read back from texts in its
formats, with the names a real run at f52f0b8 wrote), the job folder and its environment, with a
stand-in ``main.py``. SubXPAT itself runs in test_subxpat_real.py."""

from __future__ import annotations

import itertools
import logging
import shutil
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from circuits.characterize import FlowSettings, simulate_table
from circuits.generation import SIGN_FLIP, ExactCircuit, wrap_signed
from circuits.multiplier import Multiplier
from circuits.netlist_sim import operand_words
from circuits.product_table import ProductTable
from circuits.subxpat import (
    BENCHMARK,
    UNNAMED_GRID_FIELD,
    Harvested,
    Layout,
    SubxpatGenerator,
    SubxpatParams,
    benchmark_verilog,
    harvest,
    harvest_points,
    harvested_module,
    job_environment,
    job_time_limit,
    measure,
    parse_circuit_name,
    parse_grid_csv,
    parse_grid_name,
    port_wrapper,
    preflight,
    prepare_workdir,
    run_job,
    small_multiplier,
    subxpat_command,
    subxpat_home,
    subxpat_python,
)
from circuits.synthesis import synthesize_asic
from circuits.tools import ToolError
from tests.circuits.test_xpat import _check_chain, needs_yosys

needs_graphviz = pytest.mark.skipif(shutil.which("dot") is None or shutil.which("sta") is None,
                                    reason="SubXPAT's preflight needs Graphviz's dot and OpenSTA")
INDEX = np.arange(65536)
STIMULUS = {"a": operand_words(INDEX >> 8), "b": operand_words(INDEX & 0xFF)}
HEADER = ("cell,iteration,model_id,status,runtime,area,delay,total_power,et,labeling_time,"
          "subgraph_extraction,subgraph_inputs,subgraph_outputs,subxpat_phase1,subxpat_phase2")
GRID = "\n".join([
    HEADER,
    '"(0, 1)",1,0,UNSAT,None,None,None,None,2,0.51,0.02,6,3,-1,-1,0.84',
    '"(1, 1)",1,0,SAT,None,412.5,9.1,31.25,2,0.51,0.02,6,3,-1,-1,3.5',
    '"(1, 1)",2,0,UNKNOWN,None,None,None,None,4,0.47,0.03,5,2,-1,-1,600.0',
    '"(2, 1)",2,0,SAT,None,398.0,8.7,30.5,3,0.47,0.03,5,2,-1,-1,12.25',
]) + "\n"
GRID_NAME = ("grid_mul_i16_o16_3X2_et8_subxpat___fef_sef_mode55_omax3_imax6_kucFalse_Sop1_"
             "time20240403:214107.csv")
# what a real run at f52f0b8 wrote (4x4 multiplier, --max-error 4): a grid CSV with empty fields,
# and circuit names ending in i<iteration>m<model>t<stamp>
REAL_GRID_NAME = ("grid_mul_i8_o8_2X1_et4_subxpat_asc_encz3bvec_mode55_omax2_imax4_constalways_"
                  "Sop1_time20261128:151032.csv")
REAL_GRID = "\n".join([
    HEADER,
    '"(0, 1)",1,0,UNSAT,,,,,1,1.6675996780395508,2.396381378173828,2,1,-1,-1,0.41743993759155273',
    '"(0, 1)",5,0,SAT,,140.79,0.46913,5.2748222515220005e-05,3,4.761338472366333,'
    '3.3852486610412598,2,1,-1,-1,0.9353127479553223',
    '"(2, 1)",1,0,SAT,,180.2112,0.528867,5.826507185702e-05,0,1.6675996780395508,'
    '2.396381378173828,2,1,-1,-1,0.6084856986999512',
    '"(2, 1)",2,0,SAT,,173.641,0.526139,5.6804448831830006e-05,2,4.570107698440552,'
    '2.024451494216919,4,2,-1,-1,0.9727394580841064',
]) + "\n"
REAL_LOG = "\n".join([  # its output (colours included) for iterations 1 and 2
    "\x1b[36miteration 1 with et 1, available error 4\x1b[39m",
    "\x1b[33mCell(0,1) at iteration 1 -> UNSAT\x1b[39m",
    "\x1b[32mverifying all approximate circuits -> \x1b[39m\x1b[32mCell = (2, 1) iteration = 1 -> "
    "sat (1 models found)\x1b[39m",
    "\x1b[32mErrorEval PASS! with total wce = 0\x1b[39m",
    "\x1b[36miteration 2 with et 2, available error 4\x1b[39m",
    "\x1b[32mverifying all approximate circuits -> \x1b[39m\x1b[32mCell = (2, 1) iteration = 2 -> "
    "sat (1 models found)\x1b[39m",
    "\x1b[32mErrorEval PASS! with total wce = 2\x1b[39m",
    "\x1b[36miteration 5 with et 3, available error 4\x1b[39m",
])
REAL_NAMES = [  # iterations 1, 2 and 5 (3 and 4 left out)
    "mul_i8_o8_Sop1_et1_encz3bvec_imax4_omax2_constalways_sE_i1m0t878639999850738.v",
    "mul_i8_o8_Sop1_et2_encz3bvec_imax4_omax2_constalways_si1m0t878639999850738_"
    "i2m0t878655530030275.v",
    "mul_i8_o8_Sop1_et3_encz3bvec_imax4_omax2_constalways_si4m0t878694900832897_"
    "i5m0t878717271150830.v",
]


def _core_values(signed: bool) -> np.ndarray:
    """The exact core r over the operand bit patterns (a << 8) | b, read unsigned."""
    a, b = INDEX >> 8, INDEX & 0xFF
    if signed:
        a, b = a - ((a >> 7) << 8), b - ((b >> 7) << 8)
    return ((a * b) & 0xFFFF) ^ (SIGN_FLIP if signed else 0)


def _subxpat_style(signed: bool, out0_zero: bool = False, name: str = "graph", bits: int = 8
                   ) -> str:
    """An exact ``bits`` x ``bits`` core in SubXPAT's format: a module of scalar in*/out* ports,
    one assignment per node, constants written 0/1, and some identical assignments repeated.
    Partial products (the Baugh-Wooley array when signed, whose constant 2^(2 bits - 1) + 2^bits
    plus the sign flip's 2^(2 bits - 1) is 2^bits modulo 2^(2 bits)) are summed column by column
    with full and half adders."""
    body, wires, ids, width = [], [], itertools.count(), 2 * bits

    def node(expression: str) -> str:
        wire = f"g{next(ids)}"
        wires.append(wire)
        body.append(f"assign {wire} = {expression};")
        return wire

    columns: list[list[str]] = [[] for _ in range(width)]
    top = bits - 1
    for i, j in itertools.product(range(bits), range(bits)):
        bit = node(f"(in{i} & in{bits + j})")
        columns[i + j].append(node(f"(~{bit})") if signed and (i == top) != (j == top) else bit)
    if signed:
        columns[bits].append(node("1"))
    outputs = []
    for w, column in enumerate(columns):
        while len(column) > 1:
            if len(column) >= 3:
                x, y, z = column.pop(0), column.pop(0), column.pop(0)
                column.append(node(f"({x} ^ {y} ^ {z})"))
                carry = f"(({x} & {y}) | ({z} & ({x} ^ {y})))"
            else:
                x, y = column.pop(0), column.pop(0)
                column.append(node(f"({x} ^ {y})"))
                carry = f"({x} & {y})"
            if w < width - 1:
                columns[w + 1].append(node(carry))
        outputs.append(f"assign out{w} = {'0' if out0_zero and w == 0 else column[0]};")
    body += outputs
    body += body[::7]  # SubXPAT's exporter repeats identical assignments
    ports = [f"in{k}" for k in range(width)] + [f"out{k}" for k in range(width)]
    return "\n".join(["/* model 0 */", f"module {name} ({', '.join(ports)});",
                      f"input {', '.join(ports[:width])};", f"output {', '.join(ports[width:])};",
                      f"wire {', '.join(wires)};", *body, "endmodule"])


def _small_core_values(bits: int, signed: bool) -> np.ndarray:
    """The exact small core r over the operand bit patterns (a << 8) | b (low bits used)."""
    mask, width = (1 << bits) - 1, 2 * bits
    a, b = (INDEX >> 8) & mask, INDEX & mask
    if signed:
        a, b = a - ((a >> (bits - 1)) << bits), b - ((b >> (bits - 1)) << bits)
    flip = 1 << (width - 1) if signed else 0
    return ((a * b) & ((1 << width) - 1)) ^ flip


def _fake_checkout(root: Path) -> Path:
    home = root / "subxpat"
    (home / "sxpat").mkdir(parents=True)
    (home / "sxpat" / "__init__.py").write_text("")
    (home / "main.py").write_text("print('SubXPAT')\n")
    (home / "pygraphviz.py").write_text("")  # stand-ins for the preflight's imports (z3 is dse's)
    (home / "Z3Log").mkdir()
    (home / "Z3Log" / "__init__.py").write_text("")
    (home / "config").mkdir()
    (home / "config" / "abc.script").write_text("strash\n")
    (home / "input" / "ver").mkdir(parents=True)
    (home / "input" / "ver" / "adder_i8_o5.v").write_text("module adder_i8_o5(); endmodule\n")
    (home / "input" / "ver" / "error_threshold_arrays.json").write_text("[]\n")
    (home / "output" / "report").mkdir(parents=True)
    (home / "output" / "report" / "grid_old.csv").write_text(HEADER + "\n")
    return home


# ---------------------------------------------------------------- the benchmark
@needs_yosys
@pytest.mark.parametrize("signed", [True, False])
def test_benchmark_computes_the_exact_core_on_subxpat_ports(signed):
    text = benchmark_verilog(ExactCircuit.multiplier(signed))
    assert f"module {BENCHMARK} (in0, in1," in text and "out15);" in text
    mult = Multiplier("bench", text + port_wrapper(BENCHMARK, "bench_ab"), "bench_ab", False)
    netlist = synthesize_asic(mult, None, 60).netlist
    values = netlist.read_port(netlist.simulate(STIMULUS), "r", 65536)
    np.testing.assert_array_equal(values, _core_values(signed))


@needs_yosys
@pytest.mark.parametrize("signed", [True, False])
def test_a_small_multiplier_is_a_benchmark_on_the_low_bits(signed):
    exact, layout = small_multiplier(4, signed)
    assert layout == Layout(4, 4, 8) and layout.name == "mul_i8_o8"
    text = benchmark_verilog(exact, layout=layout)
    assert "module mul_i8_o8 (in0, in1, in2, in3, in4, in5, in6, in7, out0," in text
    assert "in8" not in text and "out8" not in text
    mult = Multiplier("b4", text + port_wrapper("mul_i8_o8", "b4_ab", layout=layout), "b4_ab",
                      False)
    netlist = synthesize_asic(mult, None, 60).netlist
    values = netlist.read_port(netlist.simulate(STIMULUS), "r", 65536)
    np.testing.assert_array_equal(values, _small_core_values(4, signed))  # r[15:8] = 0


@needs_yosys
def test_a_layout_that_leaves_out_used_bits_is_refused():
    with pytest.raises(ValueError, match=r"mul8s: a\[4\], .* outside the layout mul_i8_o8"):
        benchmark_verilog(ExactCircuit.multiplier(True), layout=Layout(4, 4, 8))
    with pytest.raises(ValueError, match="a layout within a"):
        Layout(9, 8, 16)
    with pytest.raises(ValueError, match="2 to 7 bits"):
        small_multiplier(8)


# ---------------------------------------------------------------- SubXPAT's Verilog
@needs_yosys
@pytest.mark.parametrize("signed", [True, False])
def test_a_harvested_circuit_is_cleaned_wrapped_and_simulates_to_its_function(signed):
    text = _subxpat_style(signed, out0_zero=True)
    assigns = [s for s in text.splitlines() if s.startswith("assign ")]
    assert len(assigns) > len(set(assigns))  # the repeated assignments are there
    core = harvested_module(text, "h_core", "mul_i16_o16_X_i1_0.v")
    kept = [s.strip() for s in core.splitlines() if s.strip().startswith("assign ")]
    assert sorted(kept) == sorted(set(assigns))
    verilog = wrap_signed(core, "h_core", "h", signed)
    mult = Multiplier("h", verilog, "h", signed)
    table, _ = simulate_table(synthesize_asic(mult, None, 60), mult)
    exact = ProductTable.exact(signed).values.astype(np.int64)
    assert table == ProductTable(exact & ~1, signed)  # out0 forced to 0: product bit 0 cleared


@needs_yosys
def test_the_exact_core_in_subxpat_style_is_exact():
    verilog = wrap_signed(harvested_module(_subxpat_style(True), "e_core"), "e_core", "e", True)
    mult = Multiplier("e", verilog, "e", True)
    table, _ = simulate_table(synthesize_asic(mult, None, 60), mult)
    assert table == ProductTable.exact(True)


@needs_yosys
def test_an_empty_wire_list_and_missing_inputs_are_accepted():
    outputs = ", ".join(f"out{k}" for k in range(16))
    text = (f"module graph (in3, {outputs});\ninput in3;\noutput {outputs};\nwire ;\n"
            + "".join(f"assign out{k} = {'in3' if k == 2 else 0};\n" for k in range(16))
            + "endmodule\n")
    core = harvested_module(text, "c")
    assert "wire ;" not in core and ".in3(a[3])" in core and ".in0(" not in core
    mult = Multiplier("c_top", core, "c", False)
    netlist = synthesize_asic(mult, None, 60).netlist
    values = netlist.read_port(netlist.simulate(STIMULUS), "r", 65536)
    np.testing.assert_array_equal(values, ((INDEX >> 8) >> 3 & 1) << 2)


def test_repeats_through_subxpats_alias_wires_are_one_driver():
    """As a real run wrote: ``w_g9 = in2 & in5`` and ``w_g9 = w_in2 & w_in5``, ``w_in2 = in2``."""
    text = _subxpat_style(False).replace("endmodule", "assign w_in0 = in0;\nassign j0 = w_in0;\n"
                                         "assign g0 = (j0 & in8);\nendmodule")
    core = harvested_module(text, "x", "c.v")
    assert "assign g0 = (in0 & in8);" in core and "(j0 & in8)" not in core
    with pytest.raises(ValueError, match=r"g0 is assigned twice, differently \('\(in0 & in8\)' "
                                         r"and '\(j0 & in9\)'\)"):
        harvested_module(text.replace("(j0 & in8)", "(j0 & in9)"), "x", "c.v")


def test_harvested_module_refuses_what_is_not_a_subxpat_circuit():
    text = _subxpat_style(False)
    clash = text.replace("endmodule", "assign out3 = in0;\nendmodule")
    with pytest.raises(ValueError, match="out3 is assigned twice, differently"):
        harvested_module(clash, "x", "c.v")
    with pytest.raises(ValueError, match="c.v: output out15 missing or never assigned"):
        harvested_module(text.replace("assign out15", "assign g_unused"), "x", "c.v")
    with pytest.raises(ValueError, match="unexpected port a"):
        harvested_module("module m (a, r); input a; output r; assign r = a; endmodule", "x")
    with pytest.raises(ValueError, match="expected one module, found 2"):
        harvested_module(text + "\n" + text, "x")


# ---------------------------------------------------------------- SubXPAT's other files
def test_grid_csv_has_fifteen_names_for_sixteen_fields():
    rows = parse_grid_csv(GRID)
    assert len(rows) == 4 and all(len(r) == 16 for r in rows)
    sat = rows[1]
    assert sat["cell"] == (1, 1) and sat["iteration"] == 1 and sat["status"] == "SAT"
    assert sat["runtime"] is None and sat["area"] == 412.5 and sat["et"] == 2
    assert sat["subgraph_inputs"] == 6 and sat[UNNAMED_GRID_FIELD] == 3.5
    with pytest.raises(ValueError, match="grid.csv: line 2 has 14 fields for 15 header names"):
        parse_grid_csv(HEADER + "\n" + ",".join(["1"] * 14) + "\n", "grid.csv")


def test_file_names_with_colons_and_iterations():
    fields = parse_grid_name(f"output/report/{GRID_NAME}")
    assert fields == {"benchmark": "mul_i16_o16", "lpp": 3, "ppo": 2, "et": 8,
                      "time": datetime(2024, 4, 3, 21, 41, 7)}
    assert parse_grid_name("grid_mul_i16_o16_3X2_etNone_Sop1_time20240403:214107.csv")["et"] is None
    assert parse_grid_name("area_model_nummodels1_mul_i16_o16_8_SubXPAT.csv") is None
    assert [parse_circuit_name(n) for n in REAL_NAMES] == [(1, 0), (2, 0), (5, 0)]
    assert parse_circuit_name("mul_i16_o16_Sop1_et8_encz3bvec_imax6_omax3_constalways_"
                              "si3m1t835345233541502_i4m2t835345233599999.v") == (4, 2)
    assert parse_circuit_name("mul_i8_o8_for_metrics.v") is None
    assert parse_circuit_name("mul_i16_o16_1A2B3C_i3_1.v") == (3, 1)
    assert parse_circuit_name("mul_i16_o16_si1m0_i2m0.v") == (2, 0)
    assert parse_circuit_name("gen_iter4_model2.v") == (4, 2)
    assert parse_circuit_name("mul_i16_o16.v") is None


def test_harvest_reads_the_circuits_and_the_errors_a_job_wrote(tmp_path):
    ver, report = tmp_path / "input" / "ver", tmp_path / "output" / "report"
    ver.mkdir(parents=True)
    report.mkdir(parents=True)
    (ver / f"{BENCHMARK}.v").write_text(_subxpat_style(True, name=BENCHMARK))
    (ver / "mul_i16_o16_ABC_i2_0.v").write_text(_subxpat_style(True, out0_zero=True))
    (ver / "mul_i16_o16_ABC_i1_0.v").write_text(_subxpat_style(True))
    (ver / "mul_i16_o16_ABC_i1_0_syn.v").write_text("/* Generated by Yosys 0.23 */\n"
                                                     "module graph(out0); endmodule\n")
    (report / GRID_NAME).write_text(GRID)
    found = harvest(tmp_path, 8)
    assert [(h.file, h.iteration, h.model, h.reported_error, h.threshold) for h in found] == [
        ("mul_i16_o16_ABC_i1_0.v", 1, 0, 2, 8), ("mul_i16_o16_ABC_i2_0.v", 2, 0, 3, 8)]
    assert found[0].verilog == _subxpat_style(True)


def test_harvest_reads_what_a_real_run_wrote(tmp_path):
    ver, report = tmp_path / "input" / "ver", tmp_path / "output" / "report"
    ver.mkdir(parents=True)
    report.mkdir(parents=True)
    (ver / "mul_i8_o8.v").write_text(_subxpat_style(True, name="mul_i8_o8", bits=4))
    (ver / "mul_i8_o8_for_metrics.v").write_text("/* Generated by Yosys 0.23 */\n"
                                                 "module top(a, b, c); endmodule\n")
    for name in REAL_NAMES[::-1]:
        (ver / name).write_text(_subxpat_style(True, bits=4))
    (tmp_path / "subxpat.log").write_text(REAL_LOG)  # stopped in iteration 5: no grid CSV yet
    found = harvest(tmp_path, 4, "mul_i8_o8")
    assert [(h.file, h.iteration, h.model, h.reported_error) for h in found] == [
        (REAL_NAMES[0], 1, 0, 0), (REAL_NAMES[1], 2, 0, 2), (REAL_NAMES[2], 5, 0, None)]
    (report / REAL_GRID_NAME).write_text(REAL_GRID)
    assert [h.reported_error for h in harvest(tmp_path, 4, "mul_i8_o8")] == [0, 2, 3]


@needs_yosys
def test_small_circuits_are_measured_against_their_exact_circuit(caplog):
    exact, layout = small_multiplier(4, True)
    exact_core, out0 = _subxpat_style(True, bits=4), _subxpat_style(True, True, bits=4)
    candidates = [Harvested(REAL_NAMES[0], exact_core, 1, 1, 0, 0),
                  Harvested(REAL_NAMES[1], out0, 0, 2, 0, 1),
                  Harvested(REAL_NAMES[2], out0, 2, 5, 0, 2)]
    with caplog.at_level(logging.WARNING, logger="circuits.subxpat"):
        measured = measure(candidates, exact, layout, FlowSettings())
    assert f"{REAL_NAMES[1]}: rejected, its measured worst-case error 1 exceeds" in caplog.text
    assert f"{REAL_NAMES[2]}: SubXPAT reported a worst-case error of 2, measured 1" in caplog.text
    assert [(m.harvested.iteration, m.wce) for m in measured] == [(1, 0), (5, 1)]
    assert measured[1].mae == 0.25  # out0 stuck at 0: off by one where a and b are odd
    assert measured[1].name == "mul4s_subxpat_et2_i5m0" and measured[0].area > measured[1].area


@needs_yosys
def test_points_over_their_threshold_are_rejected_with_a_warning(caplog):
    exact = ExactCircuit.multiplier(True)
    text = _subxpat_style(True, out0_zero=True)  # worst-case error 1
    candidates = [Harvested("mul_i16_o16_A_i1_0.v", text, 0, 1, 0, None),
                  Harvested("mul_i16_o16_B_i1_0.v", text, 4, 1, 0, 2),
                  Harvested("mul_i16_o16_B_i2_0.v", _subxpat_style(True), 4, 2, 0, 0)]
    with caplog.at_level(logging.WARNING, logger="circuits.subxpat"):
        points = harvest_points(candidates, exact, "subxpat", FlowSettings(), None,
                                time.monotonic())
    assert "mul_i16_o16_A_i1_0.v: rejected, its measured worst-case error 1 exceeds the " \
           "threshold 0" in caplog.text
    assert "mul_i16_o16_B_i1_0.v: SubXPAT reported a worst-case error of 2, measured 1" \
        in caplog.text
    assert [p.metrics["wce"] for p in points] == [0, 1]  # ordered by the measured error
    assert [p.metrics["subxpat_file"] for p in points] == ["mul_i16_o16_B_i2_0.v",
                                                           "mul_i16_o16_B_i1_0.v"]
    _check_chain(points, signed=True)


# ---------------------------------------------------------------- the job
def test_command_line_follows_the_params():
    args = subxpat_command(SubxpatParams(thresholds=(16,), max_inputs=5, max_outputs=2,
                                         literals_per_product=2, products_per_output=1,
                                         cell_timeout_s=30), 16)
    assert args[:2] == [f"input/ver/{BENCHMARK}.v", "--subxpat"]
    pairs = dict(zip(args[2::2], args[3::2]))
    assert {k: pairs[k] for k in ("--max-error", "--extraction-mode", "--imax", "--omax",
                                  "--template", "--max-lpp", "--max-ppo", "--timeout")} == {
        "--max-error": "16", "--extraction-mode": "55", "--imax": "5", "--omax": "2",
        "--template": "nonshared", "--max-lpp": "2", "--max-ppo": "1", "--timeout": "30"}
    shared = subxpat_command(SubxpatParams(shared=True, products_in_total=4,
                                           extra_args=("--parallel",)), 64)
    assert "--max-lpp" not in shared and shared[-1] == "--parallel"
    assert shared[shared.index("--template") + 1] == "shared"
    assert shared[shared.index("--max-pit") + 1] == "4"
    with pytest.raises(ValueError, match="thresholds must be"):
        SubxpatParams(thresholds=(0,))
    for encoding in ("z3", "z3dint", "z3dbvec", "qbf"):  # not in f52f0b8 (qbf: a stub there)
        with pytest.raises(ValueError, match="encoding must be one of z3bvec, z3int"):
            SubxpatParams(encoding=encoding)
    assert job_time_limit(600, 3) == 200 and job_time_limit(-5, 2) == 0


def test_checkout_and_python_are_found_or_named(tmp_path, monkeypatch):
    monkeypatch.delenv("SUBXPAT_HOME", raising=False)
    monkeypatch.delenv("SUBXPAT_PYTHON", raising=False)
    with pytest.raises(ToolError, match="SUBXPAT_HOME is not set"):
        subxpat_home()
    monkeypatch.setenv("SUBXPAT_HOME", str(tmp_path))
    with pytest.raises(ToolError, match="not a SubXPAT checkout"):
        subxpat_home()
    home = _fake_checkout(tmp_path)
    monkeypatch.setenv("SUBXPAT_HOME", str(home))
    assert subxpat_home() == home.resolve()
    monkeypatch.setenv("DSE_CACHE_DIR", str(tmp_path / "cache"))
    cached = tmp_path / "cache" / "subxpat-venv" / "bin" / "python"
    cached.parent.mkdir(parents=True)
    cached.write_text("")
    assert subxpat_python(home) == str(cached)  # what make subxpat-env builds
    (home / ".venv" / "bin").mkdir(parents=True)
    (home / ".venv" / "bin" / "python").write_text("")
    assert subxpat_python(home) == str(home / ".venv" / "bin" / "python")
    monkeypatch.setenv("SUBXPAT_PYTHON", "no-such-python-here")
    with pytest.raises(ToolError, match="SUBXPAT_PYTHON=no-such-python-here: no such"):
        subxpat_python(home)


def test_the_job_folder_holds_our_benchmark_alone(tmp_path):
    home = _fake_checkout(tmp_path)
    work = tmp_path / "job"
    work.mkdir()
    prepare_workdir(home, work, "module mul_i16_o16(); endmodule\n")
    assert (work / "config").is_symlink() and (work / "config" / "abc.script").exists()
    assert (work / "sxpat").is_symlink()
    assert sorted(p.name for p in (work / "input" / "ver").iterdir()) == [
        "error_threshold_arrays.json", f"{BENCHMARK}.v"]
    assert not (work / "input").is_symlink() and not (work / "output").is_symlink()
    assert (work / "output" / "report").is_dir() and not any((work / "output").rglob("*.csv"))
    assert harvest(work, 8) == []


def test_a_job_is_killed_at_its_time_limit_and_its_last_words_kept(tmp_path):
    waits = []
    script = "import time; print('\\x1b[33mlabeling\\x1b[39m', flush=True); time.sleep(60)"
    result = run_job([sys.executable, "-c", script], tmp_path, {}, 1.5, waits.append, 0.4)
    assert result.returncode is None and result.seconds < 10 and result.log_tail == "labeling"
    assert len(waits) >= 3 and all(0 < w < 2 for w in waits)
    done = run_job([sys.executable, "-c", "raise ValueError('no model')"], tmp_path, {}, 30)
    assert done.returncode == 1 and done.failed and done.log_tail == "ValueError: no model"


def _venv(root: Path) -> Path:
    """A bare virtualenv (no pip, no packages): its interpreter."""
    subprocess.run([sys._base_executable, "-m", "venv", "--without-pip", str(root)], check=True)
    return root / "bin" / "python"


def _in_env(env: dict, code: str) -> str:
    python3 = shutil.which("python3", path=env["PATH"])
    return subprocess.run([python3, "-c", code], env=env, capture_output=True, text=True,
                          check=True).stdout.strip()


def test_subxpat_finds_its_interpreter_as_python3_on_path(tmp_path):
    """SubXPAT starts its z3 scripts with a bare python3: a venv's bin comes first (with
    VIRTUAL_ENV), a bare interpreter is linked as python3 in a private folder."""
    home = _fake_checkout(tmp_path)
    python = _venv(tmp_path / "venv")
    env = job_environment(str(python), home, tmp_path / "bin")
    assert env["PATH"].split(":")[0] == str(python.parent)
    assert env["VIRTUAL_ENV"] == str(tmp_path / "venv") and env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert _in_env(env, "import sys; print(sys.prefix)") == str(tmp_path / "venv")
    assert not (tmp_path / "bin").exists()
    bare = job_environment(sys._base_executable, home, tmp_path / "bin")
    assert bare["PATH"].split(":")[0] == str(tmp_path / "bin") and "VIRTUAL_ENV" not in bare
    assert (tmp_path / "bin" / "python3").resolve() == Path(sys._base_executable).resolve()
    assert _in_env(bare, "import sys; print(sys.prefix)") == sys.base_prefix
    assert str(home) in _in_env(bare, "import sys; print(sys.path)")


@needs_graphviz
def test_preflight_names_what_subxpats_python_lacks_in_one_line(tmp_path):
    home = _fake_checkout(tmp_path)
    env = job_environment(str(_venv(tmp_path / "venv")), home, tmp_path / "bin")
    with pytest.raises(ToolError) as err:
        preflight(env, str(tmp_path / "venv" / "bin" / "python"))
    message = str(err.value)
    assert "cannot import z3 (ModuleNotFoundError: No module named 'z3')" in message
    assert message.startswith(f"SubXPAT's Python ({tmp_path / 'venv' / 'bin' / 'python'}) ")
    assert "make subxpat-env" in message and len(message.splitlines()) == 1
    with pytest.raises(ToolError, match="SubXPAT needs yosys on PATH, not found"):
        preflight({**env, "PATH": str(tmp_path / "venv" / "bin")}, "python")
    # dse's interpreter has z3; the fake checkout has stand-ins for pygraphviz and Z3Log
    preflight(job_environment(sys.executable, home, tmp_path / "bin"), sys.executable)


STAND_IN = '''
import os, re, shutil, sys, pathlib
args = sys.argv[1:]
pathlib.Path("args.txt").write_text(" ".join(args))
pathlib.Path("env.txt").write_text(f"{shutil.which('python3')}\\n{os.environ.get('VIRTUAL_ENV')}")
bench = pathlib.Path(args[0]).read_text()
if "--fail" in args:
    raise SystemExit("Traceback (most recent call last):\\nValueError: no solver")
if os.environ.get("STAND_IN_FINDS_NOTHING"):
    raise SystemExit(print("The error space is exhausted!"))
# one circuit per run, named and formatted as f52f0b8 does: out0 stuck at 0, assignments repeated
et = args[args.index("--max-error") + 1]
name = f"mul_i16_o16_Sop1_et{et}_encz3bvec_imax6_omax3_constalways_sE_i1m0t835345233541502"
text = bench.replace("mul_i16_o16 (", f"{name} (")
text = re.sub(r"assign out0 = [^;]*;", "assign out0 = 0;", text)
lines = text.splitlines()
text = "\\n".join(lines[:-1] + [l for l in lines if l.startswith("assign")][::5] + ["endmodule"])
pathlib.Path(f"input/ver/{name}.v").write_text("/* model 0 */ \\n" + text)
pathlib.Path("output/report/grid_mul_i16_o16_2X1_et4_time20240403:214107.csv").write_text(
    "cell,iteration,model_id,status,runtime,area,delay,total_power,et,labeling_time,"
    "subgraph_extraction,subgraph_inputs,subgraph_outputs,subxpat_phase1,subxpat_phase2\\n"
    '"(1, 1)",1,0,SAT,,1.0,1.0,1.0,1,0.1,0.1,4,2,-1,-1,0.5\\n')
'''


@needs_yosys
@needs_graphviz
def test_generate_subxpat_runs_jobs_in_their_own_folders(tmp_path, monkeypatch, capsys,
                                                         caplog):
    """The plumbing around SubXPAT (folder, environment, subprocess, harvest, points, the
    command line), with a stand-in ``main.py`` that writes one circuit in SubXPAT's formats."""
    from dse.cli import main

    home = _fake_checkout(tmp_path)
    (home / "main.py").write_text(STAND_IN)
    monkeypatch.setenv("SUBXPAT_HOME", str(home))
    monkeypatch.setenv("SUBXPAT_PYTHON", sys.executable)
    monkeypatch.setenv("DSE_CACHE_DIR", str(tmp_path / "cache"))
    out, jobs = tmp_path / "chain", tmp_path / "jobs"
    assert main(["generate", "subxpat", "--output", str(out), "--thresholds", "4,1", "--no-fpga",
                 "--work-dir", str(jobs), "--cell-timeout", "30", "--encoding", "z3int"]) == 0
    chain = pd.read_csv(out / "chain.csv")
    assert chain["name"].tolist() == ["mul8s_subxpat_et1_i1m0", "mul8s_subxpat_et4_i1m0"]
    assert (chain["wce"] == 1).all() and (chain["subxpat_error"] == 1).all()
    folders = sorted(jobs.iterdir())
    args = (folders[0] / "args.txt").read_text()
    assert len(folders) == 2 and "--max-error 1 " in args and "--timeout 30" in args
    assert "--encoding z3int" in args
    python3, venv = (folders[0] / "env.txt").read_text().splitlines()
    assert Path(python3).parent == Path(sys.executable).parent and venv == sys.prefix
    assert not list((home / "input" / "ver").glob("*_i1m0t*.v"))  # the checkout is untouched
    capsys.readouterr()
    monkeypatch.setenv("STAND_IN_FINDS_NOTHING", "1")
    assert main(["generate", "subxpat", "--output", str(out), "--thresholds", "3"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == ("dse: error: generate subxpat: no circuit within the thresholds 3 (time "
                       "limit 600 s; the warnings above say why)")
    assert "SubXPAT wrote no circuit at threshold 3 (The error space is exhausted!)" \
        in caplog.text
    failing = SubxpatGenerator(SubxpatParams(thresholds=(4,), extra_args=("--fail",)))
    with pytest.raises(ToolError, match="SubXPAT failed at threshold 4 .exit 1.: ValueError"):
        failing.generate(ExactCircuit.multiplier(True), FlowSettings())
