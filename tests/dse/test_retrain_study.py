"""Retrained designs in a real study (LeNet-5 on MNIST, small sizes): stored as trials linked to
their designs, shown before and after by status, reports, compare and export, never counted as
search trials, reused rather than redone, retrained at the end of a study that asks for it; bad
requests are one line, exit code 2."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil

import numpy as np
import onnx
import pandas as pd
import pytest
from onnx import numpy_helper

import dse
from dse.cli import main
from dse.designs import DesignError, find_design, measured
from dse.export import emgaxo_table, export
from dse.loop import StudyRunner, build_evaluator, resume_study, run_study
from dse.retrain import retrain_designs, retrain_option
from dse.study import RETRAINED, Study, load_study, read_frozen
from dse.study_file import RetrainOption, parse_settings
from tests.conftest import mini_study

# a study small enough to retrain in seconds: LeNet-5 trained on 1000 images (10 epochs: about
# 90% accurate), scored on 500
SIZES = {"dataset": {"train_size": 1000, "test_size": 500}, "model": {"epochs": 10}}
RETRAIN = ["--epochs", "1", "-q"]


def quiet(_message: str) -> None:
    pass


def error_line(stderr: str) -> str:
    errors = [line for line in stderr.splitlines() if line.startswith("dse: error: ")]
    assert len(errors) == 1 and "Traceback" not in stderr, stderr
    return errors[0]


@pytest.fixture(scope="module")
def data(mnist_dir, session_cache) -> dict:
    os.environ["DSE_CACHE_DIR"] = str(session_cache)
    return mini_study(mnist_dir, name="rt", **SIZES)


@pytest.fixture(scope="module")
def finished(data, tmp_path_factory):
    """A finished study (6 search trials), never modified: tests work on copies."""
    folder = tmp_path_factory.mktemp("rt") / "study"
    run_study(parse_settings({**data, "output": str(folder)}), log=quiet, progress=False)
    return folder


@pytest.fixture(scope="module")
def retrained(finished, tmp_path_factory):
    """A copy of the study with its least accurate front design retrained for one epoch by
    ``python -m dse retrain``; returns (folder, the design's row)."""
    folder = tmp_path_factory.mktemp("rt") / "retrained"
    shutil.copytree(finished, folder)
    design = _least_accurate_design(load_study(folder))
    assert main(["retrain", str(folder), "--design", design["design"], *RETRAIN]) == 0
    return folder, design


def _least_accurate_design(study: Study) -> pd.Series:
    front = study.pareto()
    front = front[front["role"] == "search"]
    return front.sort_values("accuracy").iloc[0]


def _copy(folder, tmp_path):
    shutil.copytree(folder, tmp_path / "copy")
    return tmp_path / "copy"


def test_a_retrained_trial_is_stored_with_its_links(retrained, finished):
    folder, design = retrained
    study, before = load_study(folder), load_study(finished)
    trials = study.trials
    rows = trials[trials["role"] == RETRAINED]
    assert len(trials) == len(before.trials) + 1 and len(rows) == 1
    row = rows.iloc[0]
    assert row["state"] == "COMPLETE" and row["design_trial"] == design["trial"]
    assert (row["design"], row["epochs"], row["gradient"], row["scales"]) == \
        (design["design"], 1, "ste", "kept")
    assert row["learning_rate"] == RetrainOption().learning_rate and row["retrain_seconds"] > 0
    assert row["accuracy_before"] == design["accuracy"]
    # the design's configuration, parameters and costs; its own accuracy, drop, feasibility
    for key in ("config", "config_bits", "table_sha256", "fpga_luts", "mae", "kept_luts"):
        assert row[key] == design[key], key
    exact = trials.loc[trials["role"] == "baseline", "accuracy"].iloc[0]
    assert row["accuracy_drop"] == pytest.approx(exact - row["accuracy"])
    assert row["feasible"] and row["constraint_values"] == []
    stored = {t.number: t for t in study.store.trials()}
    assert stored[row["trial"]].params == stored[design["trial"]].params
    assert "proposal_index" not in stored[row["trial"]].user_attrs
    # the model: the study's int8 network with new weight codes, every scale kept
    assert row["model"] == f"retrained/{design['design']}-ste-e1/int8.onnx"
    new = {t.name: numpy_helper.to_array(t)
           for t in onnx.load(folder / row["model"]).graph.initializer}
    old = {t.name: numpy_helper.to_array(t)
           for t in onnx.load(folder / "network" / "int8.onnx").graph.initializer}
    assert new.keys() == old.keys()
    floats = [k for k, v in old.items() if v.dtype == np.float32]
    assert floats and all(np.array_equal(new[k], old[k]) for k in floats)
    assert any(not np.array_equal(new[k], old[k]) for k, v in old.items() if v.dtype == np.int8)
    assert row["fingerprint"] != design["fingerprint"]
    # the measured front, hypervolume and search count are the study's as before
    assert study.pareto()["trial"].tolist() == before.pareto()["trial"].tolist()
    assert study.hypervolume() == before.hypervolume()
    assert study.search_trials_done() == 6
    assert study.hypervolume_history().equals(before.hypervolume_history())
    # the before/after views
    table = study.retrained()
    assert table[["design_trial", "accuracy_before", "accuracy_after"]].values.tolist() == \
        [[design["trial"], design["accuracy"], row["accuracy"]]]
    lost = exact - design["accuracy"]
    assert lost > 0  # the design lost accuracy to its multiplier
    assert table["recovered"].iloc[0] == pytest.approx((row["accuracy"] - design["accuracy"]) / lost)
    # the front with each design at its best: the retrained row stands in for its design
    improved = study.pareto(retrained=True)
    assert row["accuracy"] > design["accuracy"]
    assert row["trial"] in improved["trial"].tolist()
    assert design["trial"] not in improved["trial"].tolist()
    assert study.hypervolume(retrained=True) > study.hypervolume()


def test_a_second_call_reuses_the_stored_retraining(retrained, tmp_path, capsys):
    folder, design = retrained
    row = load_study(folder).retrained().iloc[0]
    folder = _copy(folder, tmp_path)
    model = folder / row["model"]
    written = model.stat().st_mtime_ns
    assert main(["retrain", str(folder), "--design", str(design["trial"]), *RETRAIN,
                 "--json"]) == 0
    out = capsys.readouterr()
    assert "reused: trial" in out.err and "not retrained again" in out.err
    assert json.loads(out.out)[0]["reused"] is True
    assert len(load_study(folder).retrained()) == 1 and model.stat().st_mtime_ns == written


def test_status_reports_and_export_show_before_and_after(retrained, finished, tmp_path, capsys):
    folder, design = retrained
    assert main(["status", "--json", str(folder)]) == 0
    summary = json.loads(capsys.readouterr().out)
    [shown] = summary["retrained"]
    assert (shown["design"], shown["design_trial"], shown["accuracy_before"]) == \
        (design["design"], design["trial"], design["accuracy"])
    assert summary["search_trials"] == 6 and summary["hypervolume_retrained"] >= 0
    assert [r["design"] for r in summary["pareto_front"]] == \
        load_study(finished).pareto()["design"].tolist()
    assert main(["status", str(folder)]) == 0
    text = capsys.readouterr().out
    assert f"{design['design']} (trial {design['trial']} -> " in text
    assert f"{design['accuracy']:.4f} -> {shown['accuracy_after']:.4f}" in text
    # the reports the retrain command rewrote
    written = pd.read_csv(folder / "retrained.csv")
    assert written["design"].tolist() == [design["design"]]
    assert "retrained" in pd.read_csv(folder / "trials.csv")["role"].tolist()
    # export: every row with its role in csv; the EMGAxO table only the measured ones
    study = load_study(folder)
    csv = pd.read_csv(export(study, "csv", tmp_path / "all.csv"))
    assert (csv["role"] == RETRAINED).sum() == 1
    assert len(emgaxo_table(study)) == len(load_study(finished).trials)


def test_compare_reports_the_hypervolume_after_retraining(retrained, finished):
    folder, _ = retrained
    table = dse.compare([folder, finished])
    assert table["hypervolume"].iloc[0] == pytest.approx(table["hypervolume"].iloc[1])
    assert table["hypervolume_retrained"].iloc[0] >= table["hypervolume"].iloc[0]
    assert np.isnan(table["hypervolume_retrained"].iloc[1])
    assert "hypervolume_retrained" not in dse.compare([finished, finished])


def test_a_resumed_study_does_not_count_or_replay_retrained_trials(retrained, data, tmp_path):
    folder = _copy(retrained[0], tmp_path)
    design = retrained[1]
    settings = parse_settings({**data, "output": str(folder), "budget": {"trials": 8}})
    with Study(folder, settings, driver=True) as study:
        runner = StudyRunner(study, build_evaluator(settings, quiet), quiet, progress=False)
        # the cache holds the design's own accuracy, not its retrained network's
        assert runner.evaluator.network_cache[design["table_sha256"]]["accuracy"] == \
            design["accuracy"]
        assert runner.run() == 2  # 6 stored search trials of 8: the retrained one is no search
    assert load_study(folder).search_trials_done() == 8


def test_the_study_option_retrains_the_front_at_the_end(data, tmp_path, capsys):
    folder = tmp_path / "study"
    settings = parse_settings({**data, "output": str(folder), "budget": {"trials": 3},
                               "retrain": {"epochs": 1, "batch_size": 128}})
    run_study(settings, log=quiet, progress=False)
    study = load_study(folder)
    front = study.pareto()
    designs = front.loc[front["role"] == "search", "trial"].tolist()
    table = study.retrained()
    assert sorted(table["design_trial"]) == sorted(designs) and len(designs) >= 1
    assert set(table["model"].str.endswith("-lr0.001-b128/int8.onnx")) == {True}
    assert (folder / "retrained.csv").is_file()
    assert study.search_trials_done() == 3
    # resuming evaluates nothing and retrains nothing again
    resume_study(folder, log=print, progress=False)
    assert capsys.readouterr().out.count("not retrained again") == len(designs)
    assert len(load_study(folder).trials) == len(study.trials)


def test_a_retrain_section_is_part_of_a_studys_identity_and_its_absence_is_not(tmp_path):
    """Study folders frozen before the section existed keep their hash (and load)."""
    (tmp_path / "study.yaml").write_text(
        "name: frozen\nseed: 7\ndataset: {name: mnist, test_size: 500}\n"
        "space: {type: appaxo36, free: '111111100111110000111000000100000000'}\n"
        "strategy: {type: random}\nbudget: {trials: 4}\n")
    (tmp_path / "study.sha256").write_text(
        "b38886b6d7fa082b14c843515d9623030557cfdc61598d6cfb3aa630778ca0de\n")
    settings = read_frozen(tmp_path)
    assert settings.retrain is None and "retrain" not in settings.canonical()
    data = settings.canonical()
    with_section = parse_settings({**data, "retrain": {}})
    assert with_section.sha256() != settings.sha256()
    assert with_section.canonical()["retrain"] == {"epochs": 3, "gradient": "ste",
                                                   "learning_rate": 1e-3, "batch_size": 64,
                                                   "front": True}


def test_the_retrain_section_takes_the_cores_defaults_and_gradients():
    from typing import get_args

    from evaluators.recovery.retraining import GRADIENTS, RetrainSettings

    option, core = RetrainOption(), RetrainSettings()
    assert {f.name: getattr(option, f.name) for f in dataclasses.fields(core)
            if f.name != "seed"} == {f.name: getattr(core, f.name)
                                     for f in dataclasses.fields(core) if f.name != "seed"}
    assert get_args(RetrainOption.model_fields["gradient"].annotation) == GRADIENTS


@pytest.mark.parametrize("args, expected", [
    (["--design", "appaxo_nope"], "--design 'appaxo_nope': no completed trial of study rt"),
    (["--front", "--epochs", "0"], "--epochs 0: Input should be greater than or equal to 1"),
    (["--front", "--gradient", "sgd"], "--gradient 'sgd': Input should be 'ste' or 'table'"),
    (["--front", "--batch-size", "1"], "--batch-size 1: Input should be greater than or equal to 2"),
])
def test_bad_requests_are_one_line(finished, args, expected, capsys):
    journal = (finished / "trials.journal").read_bytes()
    assert main(["retrain", str(finished), *args]) == 2
    assert expected in error_line(capsys.readouterr().err)
    assert (finished / "trials.journal").read_bytes() == journal


def test_a_non_study_folder_and_a_running_study_are_refused(finished, data, tmp_path, capsys):
    assert main(["retrain", str(tmp_path), "--front"]) == 2
    assert "not a study folder (no study.yaml)" in error_line(capsys.readouterr().err)
    with Study(finished, parse_settings({**data, "output": str(finished)}), driver=True):
        assert main(["retrain", str(finished), "--front"]) == 2
    assert "another driver is running this study" in error_line(capsys.readouterr().err)


def test_the_python_api_refuses_what_the_cli_refuses(finished):
    with pytest.raises(dse.StudyFileError, match="--epochs 0"):
        retrain_option(epochs=0)
    with pytest.raises(dse.StudyFileError, match="no completed trial"):
        retrain_designs(finished, ["424242"], option=retrain_option(1), log=quiet)


def test_a_design_screened_on_a_subset_is_not_offered(data, tmp_path):
    """A screened trial's accuracy is of a subset of the test images: neither a design to
    retrain nor a before to compare with."""
    folder = tmp_path / "screened"
    settings = parse_settings({**data, "output": str(folder), "budget": {"trials": 8},
                               "evaluation": {"screening": {"images": 100}}})
    run_study(settings, log=quiet, progress=False)
    study = load_study(folder)
    screened = study.trials[study.trials["fidelity"] == "screened"]
    assert not screened.empty, "the case needs a screened trial"
    with pytest.raises(DesignError, match="no completed trial"):
        find_design(study, screened["design"].iloc[0])
    assert not measured(study)["fidelity"].eq("screened").any()
