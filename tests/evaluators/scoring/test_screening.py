"""Screening on a subset: a sound bound, and screened results kept off the front."""

from __future__ import annotations

import numpy as np
import pytest

from circuits import appaxo
from circuits.product_table import ProductTable
from dse.loop import run_study
from dse.pareto import non_dominated
from dse.study_file import parse_settings
from evaluators.scoring.screening import FrontContext, Screening, wilson_upper


def test_wilson_upper_bound():
    assert wilson_upper(950, 1000, 0.99) == pytest.approx(0.96375, abs=1e-5)
    assert wilson_upper(1000, 1000, 0.99) == pytest.approx(1.0)
    bounds = [wilson_upper(950, 1000, c) for c in (0.9, 0.99, 0.9999)]
    assert 0.95 < bounds[0] < bounds[1] < bounds[2]
    # coverage: the bound holds for binomial samples at least as often as promised
    rng = np.random.default_rng(0)
    misses = sum(wilson_upper(int(rng.binomial(500, 0.97)), 500, 0.95) < 0.97 for _ in range(4000))
    assert misses / 4000 <= 0.06


def test_front_context_domination():
    front = FrontContext(("accuracy", "power"), ("maximize", "minimize"),
                         np.array([[0.98, 40.0], [0.95, 30.0]]))
    assert front.dominates({"accuracy": 0.97, "power": 41.0})
    assert not front.dominates({"accuracy": 0.99, "power": 41.0})
    assert not front.dominates({"accuracy": 0.98, "power": 40.0})  # equal is not dominated
    assert not FrontContext(("accuracy", "power"), ("maximize", "minimize")).dominates({"accuracy": 0, "power": 9})


def test_subset_is_a_seeded_random_sample():
    rows = Screening(300, 0.99, seed=3).rows(10000)
    assert len(rows) == 300 and np.all(np.diff(rows) > 0) and rows.max() > 5000
    assert np.array_equal(rows, Screening(300, 0.99, seed=3).rows(10000))


def test_screened_configurations_never_reach_the_front(tmp_path, mnist_dir, session_cache,
                                                       monkeypatch):
    monkeypatch.setenv("DSE_CACHE_DIR", str(session_cache))
    data = {
        "name": "screen", "output": str(tmp_path / "screen"), "seed": 0,
        "dataset": {"name": "mnist", "path": str(mnist_dir), "test_size": 3000},
        "model": {"epochs": 2}, "quantization": {"calibration_size": 200},
        "evaluation": {"screening": {"images": 400, "confidence": 0.9999}},
        # the main study's 16 low-weight LUTs and four row-2 LUTs that can cost accuracy
        "space": {"type": "appaxo36", "free": "111111100111110000111111100100000000"},
        "strategy": {"type": "random"}, "constraints": ["accuracy_drop <= 0.02"],
        "budget": {"trials": 40},
    }
    study = run_study(parse_settings(data), log=lambda m: None, progress=False)
    trials = study.trials
    screened = trials[trials["fidelity"] == "screened"]
    full = trials[trials["fidelity"] == "full"]
    assert len(screened) >= 5 and len(full) >= 5
    assert (screened["screen_images"] == 400).all()
    assert (screened["accuracy_upper_bound"] >= screened["accuracy"]).all()
    assert not set(screened["config"]) & set(study.pareto()["config"])
    # soundness: with their full accuracy, the screened configurations would not be on the front
    from dse.loop import build_evaluator

    evaluator = build_evaluator(study.settings, lambda m: None)
    every = full[full["feasible"].astype(bool)][["accuracy", "fpga_luts"]].to_numpy(dtype=float)
    for _, row in screened.iterrows():
        table = ProductTable(appaxo.product_table(int(row["config"])), True)
        accuracy = evaluator.network.evaluate(table)["accuracy"]
        points = np.vstack([every, [accuracy, row["fpga_luts"]]])
        on_front = non_dominated(points, ["maximize", "minimize"])[-1]
        feasible = study.trials.iloc[0]["accuracy"] - accuracy <= 0.02
        assert not (on_front and feasible), row["config_bits"]
