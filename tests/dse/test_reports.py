"""Exports that read back unchanged, and the plots and page a study leaves (2, 3, 4 objectives)."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest

import dse
from dse.export import export
from dse.indicators import normalized
from dse.loop import run_study
from dse.reports import write_reports
from dse.reports.front_page import nice_ticks
from dse.reports.labels import label
from dse.reports.objectives import minimization_form, study_box
from dse.study_file import parse_settings
from tests.conftest import mini_study

OBJECTIVES = {
    2: ["accuracy", "fpga_luts"],
    3: ["accuracy", "fpga_luts", "mae"],
    4: ["accuracy", "fpga_luts", "fpga_delay", "mae"],
}
# the exact multiplier's error is 0, so 10% worse than it would leave no box for the error metric
REFERENCE = {"accuracy": 0.85, "fpga_luts": 70.0, "fpga_delay": 5.0, "mae": 400.0}
ISO_8601 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?[+-]\d\d:\d\d$")


def quiet(_message: str) -> None:
    pass


@pytest.fixture(scope="module")
def studies(mnist_dir, session_cache, tmp_path_factory):
    """Small real AppAxO studies with 2, 3 and 4 objectives, and a second 3-objective one."""
    with pytest.MonkeyPatch.context() as patch:  # the session's network cache, while this module runs
        patch.setenv("DSE_CACHE_DIR", str(session_cache))
        yield _studies(mnist_dir, tmp_path_factory)


def _studies(mnist_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("reports")
    out = {}
    for key, k, strategy in [(2, 2, "random"), (3, 3, "random"), (4, 4, "random"),
                             ("3ga", 3, "nsga2")]:
        objectives = OBJECTIVES[k]
        data = mini_study(mnist_dir, name=f"k{key}", output=str(root / f"k{key}"), seed=2,
                          dataset={"test_size": 300}, budget={"trials": 12},
                          objectives=[{"metric": m} for m in objectives],
                          reference_point={m: REFERENCE[m] for m in objectives},
                          strategy={"type": strategy, **({"population": 6} if strategy == "nsga2" else {})},
                          constraints=["accuracy_drop <= 0.03"])
        out[key] = run_study(parse_settings(data), log=quiet, progress=False)
    return out


def _same(read: pd.Series, stored: pd.Series) -> bool:
    """A column read back from CSV against the store (NaN where the store has none)."""
    if stored.map(lambda v: isinstance(v, list)).all():  # JSON text in every format
        return read.map(json.loads).tolist() == stored.tolist()
    if pd.api.types.is_bool_dtype(stored) or stored.map(lambda v: isinstance(v, bool)).all():
        return read.astype(str).tolist() == stored.astype(str).tolist()
    if pd.api.types.is_numeric_dtype(stored):
        return np.allclose(read.to_numpy(float), stored.to_numpy(float), equal_nan=True, rtol=1e-12)
    return read.fillna("").astype(str).tolist() == stored.fillna("").astype(str).tolist()


def test_every_csv_reads_back_with_pandas_defaults(studies, tmp_path):
    study = studies[3]
    stored = study.trials
    write_reports(study)
    trials_csv = pd.read_csv(study.folder / "trials.csv")
    pareto_csv = pd.read_csv(study.folder / "pareto.csv")
    exported = pd.read_csv(export(study, "csv", tmp_path / "trials.csv"))
    parquet = pd.read_parquet(export(study, "parquet", tmp_path / "trials.parquet"))
    emgaxo = pd.read_csv(export(study, "emgaxo", tmp_path / "emgaxo.csv"))
    assert (stored["config_bits"].str[0] == "0").any(), "the study should hold a leading zero"
    for table in (trials_csv, exported, parquet):
        assert len(table) == len(stored)
        # configuration bits: all 36 digits, leading zeros included, and the integer alongside
        bits = table["config_bits"]
        if table is not parquet:  # typed there; a Python binary literal in CSV
            assert bits.str.startswith("0b").all() and (bits.map(lambda s: int(s, 0)) == table["config"]).all()
            bits = bits.map(lambda s: format(int(s, 0), "036b"))
        assert bits.tolist() == stored["config_bits"].tolist()
        assert table["config"].tolist() == stored["config"].tolist()
        for column in stored.columns.drop("config_bits"):
            if column in table:  # trials.csv leaves out nothing but generated Verilog
                assert _same(table[column], stored[column]), column
        # one timestamp format: ISO 8601 with the UTC offset, which pandas parses
        for column in ("started_at", "completed_at"):
            assert table[column].map(lambda s: bool(ISO_8601.match(s))).all(), column
            assert (pd.to_datetime(table[column]) == pd.to_datetime(stored[column])).all()
        assert (pd.to_datetime(table["completed_at"]) >= pd.to_datetime(table["started_at"])).all()
    done = stored[stored["state"] == "COMPLETE"]
    assert emgaxo["Config"].map(lambda s: format(int(s, 0), "036b")).tolist() == done["config_bits"].tolist()
    assert (emgaxo["Config"].map(lambda s: int(s, 2)) == emgaxo["Config_int"]).all()
    assert (emgaxo["Disabled_LUTs"] == done["config_bits"].str.count("0").to_numpy()).all()
    # the front: pareto.csv in the front's order, every member naming its design files
    front = study.pareto()
    assert pareto_csv["trial"].tolist() == front["trial"].tolist()
    assert set(trials_csv.loc[trials_csv["on_front"], "trial"]) == set(front["trial"])
    for design in pareto_csv["design"]:
        for suffix in (".v", "_xc7.v", ".npy"):
            assert (study.folder / "pareto" / f"{design}{suffix}").is_file()
        assert f"module {design}" in (study.folder / "pareto" / f"{design}.v").read_text()
    assert len(list((study.folder / "pareto").iterdir())) == 3 * len(front)


def _png(path) -> None:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 30_000, path


@pytest.mark.parametrize("k", [2, 3, 4])
def test_plots_and_page_for_every_number_of_objectives(studies, k):
    study = studies[k]
    paths = write_reports(study)
    for key in ("plot", "hypervolume"):
        _png(paths[key])
    assert ("parallel" in paths) == (k > 2)
    if k > 2:
        _png(paths["parallel"])
    page = paths["html"].read_text()
    front, done = study.pareto(), study.trials[study.trials["state"] == "COMPLETE"]
    assert "<script src" not in page and "http" not in page.replace("http://www.w3.org/2000/svg", "")
    assert page.count("<svg") == k * (k - 1) // 2
    assert page.count("<circle") == len(done) * k * (k - 1) // 2
    table = page[page.index('<table id="front"'):page.index("</table>")]
    assert table.count("<tr>") == len(front) + 1
    for design in front["design"]:
        assert f">{design}</td>" in table
    for objective in study.objectives:  # every axis label, with its units
        assert label(study, objective) in page
    ticks = re.findall(r'class="tick"[^>]*>([^<]+)</text>', page)
    assert len(ticks) >= 4 * k * (k - 1)  # at least 4 ticks per axis
    assert ("2-D projection" in page) == (k > 2)


def test_hover_values_are_rounded_with_units(studies):
    page = (studies[4].folder / "pareto.html").read_text()
    assert re.search(r"fpga_delay: \d\.\d{3} ns", page)
    assert re.search(r"mae: [\d.]+ LSB", page)
    assert not re.search(r"accuracy: 0\.\d{5,}", page)
    assert label(studies[4], "fpga_delay") == "FPGA critical path [ns, Vivado-calibrated model]"


def test_nice_ticks():
    assert nice_ticks(0.9243, 0.9757) == pytest.approx([0.93, 0.94, 0.95, 0.96, 0.97])
    assert nice_ticks(-3.0, 41.0) == pytest.approx([0, 10, 20, 30, 40])


def _box(studies_, reference):
    fronts = np.vstack([minimization_form(studies_[0], s.pareto()) for s in studies_])
    fronts = fronts[np.all(fronts < reference, axis=1)]
    return float(np.prod(reference - fronts.min(axis=0)))


def test_compare_reports_normalized_hypervolume(studies, tmp_path):
    pair = [studies[3], studies["3ga"]]
    table = dse.compare(pair, plot=tmp_path / "cmp.png")
    _png(tmp_path / "cmp.png")
    reference = minimization_form(pair[0], pd.DataFrame([REFERENCE]))[0]
    box = _box(pair, reference)
    assert box > 0
    assert table["hypervolume"].to_numpy() == pytest.approx(
        [s.hypervolume() for s in pair])  # same reference point in both studies
    assert table["hypervolume_normalized"].to_numpy() == pytest.approx(table["hypervolume"] / box)
    assert ((table["hypervolume_normalized"] > 0) & (table["hypervolume_normalized"] <= 1)).all()


def test_study_hypervolume_is_normalized_by_its_ideal_reference_box(studies):
    study = studies[4]
    reference, ideal, box = study_box(study)
    assert reference == pytest.approx(minimization_form(study, pd.DataFrame([REFERENCE]))[0])
    assert box == pytest.approx(_box([study], reference)) and box > 0
    assert np.all(ideal < reference)
    share = normalized(study.hypervolume(), box)
    assert 0 < share <= 1 and share == pytest.approx(study.hypervolume() / box)


def test_no_searched_design_inside_the_box_has_no_share_of_it(tmp_path, mnist_dir, env, capsys):
    """Only the exact baseline meets the constraint: it alone would fill the box (a share of
    1), so status says there is no share to speak of."""
    from dse.cli import main

    folder = tmp_path / "none_inside"
    run_study(parse_settings(mini_study(mnist_dir, output=str(folder), budget={"trials": 3},
                                        constraints=["mae <= 0"])), log=lambda s: None,
              progress=False)
    assert main(["status", str(folder)]) == 0
    assert "n/a (no design inside the reference box) of the box" in capsys.readouterr().out
    assert main(["status", str(folder), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["hypervolume_normalized"] is None
