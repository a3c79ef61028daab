"""``python -m dse characterize``: one multiplier, or a folder into a catalogue."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from circuits.activity import OperandStream
from dse.cli import main
from tests.conftest import shared_path

pytestmark = pytest.mark.skipif(
    shutil.which("yosys") is None or shutil.which("sta") is None,
    reason="Yosys and OpenSTA are not installed (make setup installs them)",
)

EXACT = "module exact (input signed [7:0] a, input signed [7:0] b, output signed [15:0] p);\n" \
        "  assign p = a * b;\nendmodule\n"
TRUNCATED = "module trunc4 (input signed [7:0] a, input signed [7:0] b, output signed [15:0] p);\n" \
            "  wire signed [15:0] full = a * b;\n  assign p = {full[15:4], 4'b0};\nendmodule\n"


@pytest.fixture
def cache(monkeypatch, tmp_path):
    monkeypatch.setenv("DSE_CACHE_DIR", str(tmp_path / "cache"))


def test_a_folder_becomes_a_catalogue(tmp_path, capsys, cache):
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "exact.v").write_text(EXACT)
    (lib / "trunc4.v").write_text(TRUNCATED)
    (lib / "broken.v").write_text("module broken (input [7:0] a;\n")
    stream = OperandStream(np.arange(1024) % 50, (np.arange(1024) * 7) % 21 - 10)
    stream.save(tmp_path / "workload.npz")
    liberty = str(shared_path("pdk", "nangate45_typ.lib.gz"))
    assert main(["characterize", str(lib), "--liberty", liberty,
                 "--workload", str(tmp_path / "workload.npz"), "--output", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "catalogue.csv" in out and "catalogue.parquet" in out
    csv = pd.read_csv(tmp_path / "out" / "catalogue.csv")
    parquet = pd.read_parquet(tmp_path / "out" / "catalogue.parquet")
    assert csv["name"].tolist() == parquet["name"].tolist() == ["broken", "exact", "trunc4"]
    rows = parquet.set_index("name")
    assert "broken.v" in rows.loc["broken", "error"] and "ERROR" in rows.loc["broken", "error"]
    assert rows.loc["exact", "mae"] == 0 and rows.loc["trunc4", "mae"] > 0
    assert bool(rows.loc["exact", "signed"]) and rows.loc["exact", "fpga_luts"] > 100
    for name in ("exact", "trunc4"):
        r = rows.loc[name]
        assert r["area"] > 0 and r["delay"] > 0 and 0 < r["power_workload"] < r["power_uniform"]
        assert len(r["table_sha256"]) == 64 and r["fpga_source"] == "yosys synth_xilinx"


def test_one_appaxo_configuration_as_json(capsys, cache):
    assert main(["characterize", "appaxo:404750335", "--liberty",
                 str(shared_path("pdk", "nangate45_typ.lib.gz")), "--json"]) == 0
    m = json.loads(capsys.readouterr().out)
    assert m["mae"] == 188.25 and m["cost_model"] == "nangate45_typ.lib"
    assert m["fpga_source"] == "vivado-calibrated model" and 30 < m["fpga_luts"] < 50


def test_a_baseline_by_name(capsys, cache):
    from circuits.baselines import truncated
    from circuits.error_metrics import error_metrics

    assert main(["characterize", "baseline:trunc_s_k6_c", "--no-fpga", "--json"]) == 0
    m = json.loads(capsys.readouterr().out)
    assert m["signed"] and m["table_sha256"] == truncated(6, True, True).table().sha256
    assert m["wce"] == error_metrics(truncated(6, True, True).table())["wce"]


def test_bad_targets_are_one_line_errors(tmp_path, capsys, cache):
    assert main(["characterize", str(tmp_path / "nothing.v")]) == 2
    assert "no such file or folder" in capsys.readouterr().err
    assert main(["characterize", "baseline:trunc_s_k99"]) == 2
    assert "truncation k must be in 0..15" in capsys.readouterr().err
    assert main(["characterize", "appaxo:2", "--liberty", str(tmp_path / "none.lib")]) == 2
    assert "Liberty file" in capsys.readouterr().err
    (tmp_path / "adder.v").write_text("module adder (input [7:0] a, input [7:0] b, output [8:0] s);\n"
                                      "  assign s = a + b;\nendmodule\n")
    assert main(["characterize", str(tmp_path / "adder.v"), "--no-fpga"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "adder.v: expected two 8-bit inputs" in err


def test_generate_writes_the_chain_its_designs_and_plot(tmp_path, capsys, cache):
    exact = tmp_path / "exact.v"
    exact.write_text(EXACT)
    out = tmp_path / "chain"
    assert main(["generate", "xpat", "--output", str(out), "--thresholds", "8,40", "--steps", "2",
                 "--attempts", "2", "--exact", str(exact), "--exact-zero"]) == 0
    chain = pd.read_csv(out / "chain.csv")
    assert len(chain) >= 2 and (chain["wce"] <= chain["threshold"]).all()
    assert (chain["fpga_luts"] > 20).all() and (chain["fpga_source"] == "yosys synth_xilinx").all()
    assert (out / "chain.png").stat().st_size > 10_000
    for name in chain["name"]:
        table = np.load(out / f"{name}.npy")
        assert table[128].tolist() == [0] * 256  # --exact-zero: a zero activation gives 0
        assert f"module {name} " in (out / f"{name}.v").read_text()
    assert "wrote" in capsys.readouterr().out
    assert main(["generate", "xpat", "--output", str(out), "--thresholds", "0"]) == 2
    assert "--thresholds: expected comma-separated integers >= 1" in capsys.readouterr().err


ZERO = "module zero (input [7:0] a, input [7:0] b, output [15:0] p);\n" \
       "  assign p = 16'd0;\nendmodule\n"


def snapshot(folder):
    """Names, sizes and modification times of everything in a folder."""
    return sorted((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*"))


def test_a_constant_output_is_catalogued_ambiguous_with_a_warning(tmp_path, capsys, cache):
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "zero.v").write_text(ZERO)
    before = snapshot(lib)
    out = tmp_path / "out"
    assert main(["characterize", str(lib), "--no-fpga", "--output", str(out)]) == 0
    err = capsys.readouterr().err
    assert f"dse: warning: {lib / 'zero.v'}: signedness is ambiguous" in err
    row = pd.read_csv(out / "catalogue.csv").iloc[0]
    assert row["signedness"] == "ambiguous" and not row["signed"] and row["mae"] == 16256.25
    assert snapshot(lib) == before  # --output given: the input folder is not written
    assert main(["characterize", str(lib), "--no-fpga", "--output", str(out),
                 "--signedness", "unsigned"]) == 0
    assert "warning" not in capsys.readouterr().err
    row = pd.read_csv(out / "catalogue.csv").iloc[0]
    assert row["signedness"] == "unsigned" and not row["signed"] and row["mae"] == 16256.25


def test_signed_ports_need_no_inference(tmp_path, capsys, cache):
    (tmp_path / "exact.v").write_text(EXACT)
    assert main(["characterize", str(tmp_path / "exact.v"), "--no-fpga", "--json"]) == 0
    m = json.loads(capsys.readouterr().out)
    assert m["signed"] is True and m["signedness"] == "signed" and m["mae"] == 0
    assert main(["characterize", str(tmp_path / "exact.v"), "--no-fpga",
                 "--signedness", "unsigned"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"dse: error: {tmp_path / 'exact.v'}: its ports are declared signed, but it " \
                  "was given as unsigned"


def test_the_catalogue_goes_to_catalogues_by_default_and_never_into_the_input(
        tmp_path, monkeypatch, capsys, cache):
    lib = tmp_path / "my lib"
    lib.mkdir()
    (lib / "exact.v").write_text(EXACT)
    before = snapshot(lib)
    monkeypatch.chdir(tmp_path)
    assert main(["characterize", str(lib), "--no-fpga"]) == 0
    assert "wrote catalogues/my lib/catalogue.csv" in capsys.readouterr().out
    assert (tmp_path / "catalogues" / "my lib" / "catalogue.parquet").is_file()
    assert snapshot(lib) == before
    blocked = tmp_path / "a file"
    blocked.write_text("")
    assert main(["characterize", str(lib), "--no-fpga", "--output", str(blocked / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"dse: error: {blocked / 'out'}: cannot write the catalogue there (Not a " \
                  "directory); choose another folder with --output"
