"""Fronts compared across studies, hypervolume, constraints, stagnation, exports and reports."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

import dse
from dse.cli import main
from dse.indicators import coverage, hypervolume, igd_plus
from dse.loop import run_study
from dse.study_file import parse_settings
from tests.conftest import mini_study


def quiet(_message: str) -> None:
    pass


@pytest.fixture(scope="module")
def studies(mnist_dir, session_cache, tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:  # the session's network cache, while this module runs
        patch.setenv("DSE_CACHE_DIR", str(session_cache))
        yield _studies(mnist_dir, tmp_path_factory)


def _studies(mnist_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("compare")
    out = {}
    for name, strategy in [("rnd", {"type": "random"}), ("ga", {"type": "nsga2", "population": 6})]:
        data = mini_study(mnist_dir, name=name, output=str(root / name), seed=2,
                          dataset={"test_size": 300}, strategy=strategy,
                          constraints=["accuracy_drop <= 0.03"], budget={"trials": 18})
        out[name] = run_study(parse_settings(data), log=quiet, progress=False)
    return out


def test_indicators_on_known_fronts():
    ref = np.array([4.0, 4.0])
    assert hypervolume(np.array([[1.0, 3.0], [3.0, 1.0]]), ref) == pytest.approx(5.0)
    assert hypervolume(np.array([[5.0, 1.0]]), ref) == 0.0  # outside the reference box
    assert igd_plus(np.array([[1.0, 3.0], [3.0, 1.0]]), np.array([[1.0, 3.0], [3.0, 1.0]])) == 0
    assert coverage(np.array([[1.0, 1.0]]), np.array([[1.0, 2.0], [0.5, 3.0]])) == 0.5


def test_infeasible_trials_are_stored_but_never_on_the_front(studies):
    study = studies["rnd"]
    trials = study.trials
    assert trials["accuracy_drop"].notna().all() and "constraint_values" in trials
    infeasible = trials[~trials["feasible"].astype(bool)]
    assert len(infeasible) > 0, "the test space should hold some configuration below the bound"
    assert (infeasible["accuracy_drop"] > 0.03).all()
    assert not set(infeasible["config"]) & set(study.pareto()["config"])
    optuna_trial = study.store.trials()[int(infeasible.iloc[0]["trial"])]
    assert optuna_trial.system_attrs.get("constraints") or optuna_trial.user_attrs["constraint_values"]


def test_reference_point_is_fixed_and_hypervolume_grows(studies):
    study = studies["ga"]
    ref = study.reference_point
    exact = study.trials[study.trials["role"] == "baseline"].iloc[0]
    assert ref["accuracy"] == pytest.approx(0.9 * exact["accuracy"])
    assert ref["fpga_luts"] == pytest.approx(1.1 * exact["fpga_luts"])
    history = study.hypervolume_history()
    assert len(history) == 18 and np.all(np.diff(history["hypervolume"]) >= 0)
    assert history["hypervolume"].iloc[-1] == pytest.approx(study.hypervolume())
    assert set(study.trials.loc[study.trials["role"] == "search", "generation"]) == {0, 1, 2}


def test_compare_table_and_plot(studies, tmp_path, capsys):
    table = dse.compare([studies["rnd"], studies["ga"]], plot=tmp_path / "cmp.png")
    assert list(table["study"]) == ["rnd", "ga"] and list(table["evaluations"]) == [18, 18]
    assert (table["hypervolume"] > 0).all() and (table["front_size"] >= 1).all()
    assert ((table["hypervolume_normalized"] > 0) & (table["hypervolume_normalized"] <= 1)).all()
    assert (table["igd_plus"] >= 0).all() and table["igd_plus"].min() < table["igd_plus"].max() + 1e-12
    assert ((table["coverage"] >= 0) & (table["coverage"] <= 1)).all()
    assert (tmp_path / "cmp.png").read_bytes()[:4] == b"\x89PNG"
    assert main(["compare", str(studies["rnd"].folder), str(studies["ga"].folder), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["study"] for r in rows] == ["rnd", "ga"]
    assert main(["compare", str(studies["rnd"].folder)]) == 2
    assert "at least two studies" in capsys.readouterr().err


def test_compare_takes_the_same_objectives_in_any_order(studies, mnist_dir, tmp_path):
    def study(name, objectives, **changes):
        data = mini_study(mnist_dir, name=name, output=str(tmp_path / name), seed=2,
                          dataset={"test_size": 300}, objectives=objectives, budget={"trials": 6},
                          **changes)
        return run_study(parse_settings(data), log=quiet, progress=False)

    swapped = study("swapped", [{"metric": "fpga_luts"}, {"metric": "accuracy"}])
    table = dse.compare([studies["rnd"], swapped])
    assert (table["hypervolume"] > 0).all()
    other = study("other", [{"metric": "accuracy"}, {"metric": "mae"}],
                  reference_point={"accuracy": 0.5, "mae": 2000})
    with pytest.raises(dse.StudyFileError, match="comparable only on the same objectives"):
        dse.compare([studies["rnd"], other])


def test_exports(studies, tmp_path, capsys):
    study = studies["rnd"]
    for fmt in ("csv", "parquet", "emgaxo"):
        assert main(["export", str(study.folder), "--format", fmt, "--output", str(tmp_path / fmt)]) == 0
    assert len(pd.read_csv(tmp_path / "csv")) == 19
    assert len(pd.read_parquet(tmp_path / "parquet")) == 19
    emgaxo = pd.read_csv(tmp_path / "emgaxo")  # pandas defaults keep the binary literal text
    assert list(emgaxo.columns[:3]) == ["Config", "Config_int", "Disabled_LUTs"]
    row = emgaxo.iloc[1]
    assert row["Config"].startswith("0b") and len(row["Config"]) == 2 + 36
    assert int(row["Config"], 2) == row["Config_int"] and row["Disabled_LUTs"] == row["Config"][2:].count("0")


def test_reports_include_the_interactive_page_and_the_hypervolume_curve(studies, capsys):
    folder = studies["ga"].folder
    page = (folder / "pareto.html").read_text()
    assert page.count("<circle") == 19 and "config_bits" in page and "<script>" in page
    assert (folder / "hypervolume.png").read_bytes()[:4] == b"\x89PNG"
    assert main(["status", str(folder), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["hypervolume"] > 0 and summary["constraints"] == ["accuracy_drop <= 0.03"]


def test_stagnation_stops_a_study(mnist_dir, session_cache, tmp_path, monkeypatch):
    monkeypatch.setenv("DSE_CACHE_DIR", str(session_cache))
    data = {
        "name": "stag", "output": str(tmp_path / "stag"), "seed": 2,
        "dataset": {"name": "mnist", "path": str(mnist_dir), "test_size": 300},
        "model": {"epochs": 2}, "quantization": {"calibration_size": 200},
        "space": {"type": "appaxo36", "free": "000000000000000000000000000000000111"},
        "strategy": {"type": "grid"},
        "budget": {"trials": 8, "stagnation": {"window": 2, "tolerance": 0.5}},
    }
    study = run_study(parse_settings(data), log=quiet, progress=False)
    assert 3 <= study.search_trials_done() < 8
