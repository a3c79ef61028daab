"""The SubXPAT adapter: its benchmark, the files SubXPAT writes (read back from texts in its
formats), the job folder, and, where ``SUBXPAT_HOME`` names a checkout, a real run."""

from __future__ import annotations

import itertools
import logging
import os
import sys
import time
from datetime import datetime
from pathlib import Path

import numpy as np
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
    SubxpatGenerator,
    SubxpatParams,
    benchmark_verilog,
    harvest,
    harvest_points,
    harvested_module,
    parse_circuit_name,
    parse_grid_csv,
    parse_grid_name,
    port_wrapper,
    prepare_workdir,
    subxpat_command,
    subxpat_home,
    subxpat_python,
)
from circuits.synthesis import synthesize_asic
from circuits.tools import ToolError
from tests.circuits.test_xpat import _check_chain, needs_yosys

needs_subxpat = pytest.mark.skipif(
    not os.environ.get("SUBXPAT_HOME"),
    reason="SUBXPAT_HOME is not set (a SubXPAT checkout at commit f52f0b8 with its own "
           "environment)")
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


def _core_values(signed: bool) -> np.ndarray:
    """The exact core r over the operand bit patterns (a << 8) | b, read unsigned."""
    a, b = INDEX >> 8, INDEX & 0xFF
    if signed:
        a, b = a - ((a >> 7) << 8), b - ((b >> 7) << 8)
    return ((a * b) & 0xFFFF) ^ (SIGN_FLIP if signed else 0)


def _subxpat_style(signed: bool, out0_zero: bool = False, name: str = "graph") -> str:
    """An exact core in SubXPAT's format: a module of scalar in*/out* ports, one assignment per
    node, constants written 0/1, and some identical assignments repeated. Partial products (the
    Baugh-Wooley array when signed, whose constant 2^15 + 2^8 plus the sign flip's 2^15 is 2^8
    modulo 2^16) are summed column by column with full and half adders."""
    body, wires, ids = [], [], itertools.count()

    def node(expression: str) -> str:
        wire = f"g{next(ids)}"
        wires.append(wire)
        body.append(f"assign {wire} = {expression};")
        return wire

    columns: list[list[str]] = [[] for _ in range(16)]
    for i, j in itertools.product(range(8), range(8)):
        bit = node(f"(in{i} & in{8 + j})")
        columns[i + j].append(node(f"(~{bit})") if signed and (i == 7) != (j == 7) else bit)
    if signed:
        columns[8].append(node("1"))
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
            if w < 15:
                columns[w + 1].append(node(carry))
        outputs.append(f"assign out{w} = {'0' if out0_zero and w == 0 else column[0]};")
    body += outputs
    body += body[::7]  # SubXPAT's exporter repeats identical assignments
    ports = [f"in{k}" for k in range(16)] + [f"out{k}" for k in range(16)]
    return "\n".join(["/* model 0 */", f"module {name} ({', '.join(ports)});",
                      f"input {', '.join(ports[:16])};", f"output {', '.join(ports[16:])};",
                      f"wire {', '.join(wires)};", *body, "endmodule"])


def _fake_checkout(root: Path) -> Path:
    home = root / "subxpat"
    (home / "sxpat").mkdir(parents=True)
    (home / "sxpat" / "__init__.py").write_text("")
    (home / "main.py").write_text("print('SubXPAT')\n")
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
    with pytest.raises(ValueError, match="encoding must be one of"):
        SubxpatParams(encoding="z3")


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


STAND_IN = '''
import re, sys, pathlib
args = sys.argv[1:]
pathlib.Path("args.txt").write_text(" ".join(args))
bench = pathlib.Path(args[0]).read_text()
if "--fail" in args:
    raise SystemExit("Traceback (most recent call last):\\nValueError: no solver")
# one circuit per run, SubXPAT-style: module graph, out0 stuck at 0, assignments repeated
text = bench.replace("mul_i16_o16 (", "graph (")
text = re.sub(r"assign out0 = [^;]*;", "assign out0 = 0;", text)
lines = text.splitlines()
text = "\\n".join(lines[:-1] + [l for l in lines if l.startswith("assign")][::5] + ["endmodule"])
pathlib.Path("input/ver/mul_i16_o16_STANDIN_i1_0.v").write_text("/* model 0 */\\n" + text)
pathlib.Path("output/report/grid_mul_i16_o16_2X1_etNone_time20240403:214107.csv").write_text(
    "cell,iteration,model_id,status,runtime,area,delay,total_power,et,labeling_time,"
    "subgraph_extraction,subgraph_inputs,subgraph_outputs,subxpat_phase1,subxpat_phase2\\n"
    '"(1, 1)",1,0,SAT,None,1.0,1.0,1.0,1,0.1,0.1,4,2,-1,-1,0.5\\n')
'''


@needs_yosys
def test_generate_runs_jobs_in_their_own_folders(tmp_path, monkeypatch, caplog):
    """The plumbing around SubXPAT (folder, subprocess, harvest, points), with a stand-in
    ``main.py`` that writes one circuit in SubXPAT's formats."""
    home = _fake_checkout(tmp_path)
    (home / "main.py").write_text(STAND_IN)
    monkeypatch.setenv("SUBXPAT_HOME", str(home))
    monkeypatch.setenv("SUBXPAT_PYTHON", sys.executable)
    gen = SubxpatGenerator(SubxpatParams(thresholds=(4, 1)), work_dir=str(tmp_path / "jobs"))
    seen = []
    points = gen.generate(ExactCircuit.multiplier(True), FlowSettings(), on_point=seen.append)
    assert seen == points and [p.threshold for p in points] == [1, 4]
    _check_chain(points, signed=True)
    assert all(p.metrics["wce"] == 1 and p.metrics["subxpat_error"] == 1 for p in points)
    jobs = sorted((tmp_path / "jobs").iterdir())
    assert len(jobs) == 2 and "--max-error 1 " in (jobs[0] / "args.txt").read_text()
    assert not (home / "input" / "ver" / "mul_i16_o16_STANDIN_i1_0.v").exists()
    failing = SubxpatGenerator(SubxpatParams(thresholds=(4,), extra_args=("--fail",)))
    with pytest.raises(ToolError, match="SubXPAT failed at threshold 4 .exit 1.: ValueError"):
        failing.generate(ExactCircuit.multiplier(True), FlowSettings())


# ---------------------------------------------------------------- a real run
@needs_subxpat
@needs_yosys
def test_subxpat_chain_on_the_signed_multiplier():
    gen = SubxpatGenerator(SubxpatParams(thresholds=(8,), max_inputs=4, max_outputs=2,
                                         literals_per_product=2, products_per_output=1,
                                         cell_timeout_s=60, time_limit_s=540))
    seen = []
    points = gen.generate(ExactCircuit.multiplier(True), FlowSettings(), on_point=seen.append)
    assert seen == points
    _check_chain(points, signed=True)
    assert all(p.generator == "subxpat" and p.threshold == 8 for p in points)
    assert all(p.metrics["subxpat_file"].endswith(".v") for p in points)
