"""Studies over generator parameters (the ``xpat`` space): the space's encoding, its study-file
section, and a real study whose trials each store a chain of generated circuits."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

import dse
from circuits.product_table import ProductTable
from dse.loop import run_study
from dse.space import ChoiceSpace
from dse.strategies import Evaluation, make_strategy
from dse.study import BASELINE, DESIGN_POINT, SEARCH
from dse.study_file import StudyFileError, parse_settings
from tests.conftest import REPO, mini_study

XPAT = {"type": "xpat", "thresholds": {"low": 16, "high": 256, "count": 4}, "steps": 3,
        "attempts": 3, "max_inputs": [6, 8], "max_outputs": [2, 3], "literals_per_product": [2],
        "products": [1, 2]}


def _xpat_study(mnist_dir: Path, tmp_path: Path, **changes) -> dict:
    data = mini_study(mnist_dir, name="xpat_mini", output=str(tmp_path / "xpat_mini"),
                      objectives=[{"metric": "accuracy"}, {"metric": "area"}],
                      **{"budget": {"trials": 3}, **changes})
    data["space"] = XPAT
    return data


def test_choice_space_packs_parameters_into_bits():
    space = ChoiceSpace((("threshold", (16, 64, 256, 1024)), ("shared", (False, True)),
                         ("products", (1,))))
    assert space.size == 8 and space.free_bits == (0, 1, 2)
    assert [space.values(c) for c in (0, 3, 6)] == [
        {"threshold": 16, "shared": False, "products": 1},
        {"threshold": 1024, "shared": False, "products": 1},
        {"threshold": 256, "shared": True, "products": 1}]
    assert space.exact not in space
    with pytest.raises(ValueError, match="power of two"):
        ChoiceSpace((("max_inputs", (4, 6, 8)),))
    with pytest.raises(ValueError, match="outside the space"):
        space.values(8)
    # what optuna clients see: each parameter with its choices (nothing for the exact circuit)
    params = space.params(6)
    assert {k: v for k, (v, _) in params.items()} == space.values(6)
    assert params["threshold"][1].choices == (16, 64, 256, 1024)
    assert space.params(space.exact) == {}


@pytest.mark.parametrize("strategy", [{"type": "nsga2", "population": 4}, {"type": "bayes"},
                                      {"type": "sobol"}, {"type": "grid"}])
def test_every_strategy_searches_a_choice_space(strategy):
    space = ChoiceSpace((("threshold", (16, 32, 64, 128)), ("max_inputs", (6, 8)),
                         ("products", (1, 2))))
    s = make_strategy(strategy, space, ["maximize", "minimize"], 0, seed=1)
    seen = []
    for _ in range(12):
        proposal = s.ask()
        if proposal is None:
            break
        assert proposal.config in space
        seen.append(proposal.config)
        values = space.values(proposal.config)
        s.tell(proposal, Evaluation((1.0 / values["threshold"], float(values["products"]))))
    assert len(set(seen)) == len(seen) >= 8


def test_xpat_space_errors_name_the_field(tmp_path):
    base = _xpat_study(tmp_path, tmp_path)
    cases = {
        "max_inputs": ({**XPAT, "max_inputs": [4, 6, 8]}, "space.max_inputs: max_inputs must list"),
        "count": ({**XPAT, "thresholds": {"count": 6}}, "count must be 1, 2, 4"),
        "range": ({**XPAT, "thresholds": {"low": 100, "high": 10}}, "high (10) must be >= low (100)"),
    }
    for space, message in cases.values():
        with pytest.raises(StudyFileError, match=message.replace("(", r"\(").replace(")", r"\)")):
            parse_settings({**base, "space": space}, "s.yaml")
    with pytest.raises(StudyFileError, match=r"fpga_power is not measured for generated circuits .*\(fpga_power comes from AppAxO configurations"):
        parse_settings({**base, "objectives": [{"metric": "accuracy"}, {"metric": "fpga_power"}]})
    assert parse_settings({**base, "constraints": ["fpga_luts <= 100"]}).needs_fpga_synthesis
    with pytest.raises(StudyFileError, match="screening is not for generated circuits"):
        parse_settings({**base, "evaluation": {"screening": {"images": 100}}})


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("yosys") is None, reason="Yosys is not installed (make setup)")
def test_an_xpat_study_stores_every_generated_circuit_linked_to_its_trial(mnist_dir, tmp_path,
                                                                          session_cache, monkeypatch):
    monkeypatch.setenv("DSE_CACHE_DIR", str(session_cache))
    settings = parse_settings(_xpat_study(mnist_dir, tmp_path, constraints=["fpga_luts <= 1000"]))
    study = run_study(settings, log=lambda s: None, progress=False)
    trials = study.trials
    assert (trials["fpga_luts"] > 20).all() and trials["feasible"].all()  # synth_xilinx LUTs
    search = trials[trials["role"] == SEARCH]
    points = trials[trials["role"] == DESIGN_POINT]
    assert len(search) == 3 and (trials["role"] == BASELINE).sum() == 1
    assert trials[trials["role"] == BASELINE]["design"].iloc[0] == "trunc_s_k0"
    assert len(points) > 0 and (trials["state"] == "COMPLETE").all()
    for _, point in points.iterrows():  # linked: same configuration, an earlier step
        parent = search[search["proposal_index"] == point["parent_proposal_index"]].iloc[0]
        assert parent["config"] == point["config"] and point["step"] < parent["step"]
    generated = trials[trials["generator"] == "xpat"]
    assert (generated["wce"] <= generated["threshold"]).all()
    assert (search["chain_length"] == [1 + (points["parent_proposal_index"] == i).sum()
                                       for i in search["proposal_index"]]).all()
    history = study.hypervolume_history()
    assert len(history) == 3 and history["hypervolume"].is_monotonic_increasing
    front = study.pareto()
    for _, row in front.iterrows():
        table = np.load(study.folder / "pareto" / f"{row['design']}.npy")
        assert (study.folder / "pareto" / f"{row['design']}.v").read_text() == row["verilog"]
        assert ProductTable(table, True).sha256 == row["table_sha256"]
    assert "verilog" not in (study.folder / "trials.csv").read_text().splitlines()[0]
    again = run_study(settings, log=lambda s: None, progress=False)  # the budget is spent
    assert len(again.trials) == len(trials)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("yosys") is None, reason="Yosys is not installed (make setup)")
def test_a_killed_xpat_study_resumes_with_every_chain_whole(mnist_dir, tmp_path, session_cache):
    data = _xpat_study(mnist_dir, tmp_path, strategy={"type": "nsga2", "population": 4},
                       budget={"trials": 5})
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(data))
    folder = Path(data["output"])
    env = {**os.environ, "DSE_CACHE_DIR": str(session_cache)}
    proc = subprocess.Popen([sys.executable, "-m", "dse", "run", str(path), "-q"], cwd=REPO,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if dse.load_study(folder).search_trials_done() >= 2:
                break
        except Exception:  # not started yet, or the journal mid-write
            pass
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert 2 <= dse.load_study(folder).search_trials_done() < 5
    resumed = subprocess.run([sys.executable, "-m", "dse", "resume", str(folder), "-q"],
                             cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    trials = dse.load_study(folder).trials
    search = trials[trials["role"] == SEARCH]
    points = trials[trials["role"] == DESIGN_POINT]
    assert len(search) == 5 and search["proposal_index"].tolist() == list(range(5))
    assert not points.duplicated(["parent_proposal_index", "design"]).any()
    per_trial = points.groupby("parent_proposal_index").size()
    for _, row in search.iterrows():
        assert per_trial.get(row["proposal_index"], 0) == row["chain_length"] - 1
