"""Real studies on MNIST: the store, the reports, resume after Ctrl-C and kill -9, refusal of a
changed study file, the budget and the time limit."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import optuna
import pandas as pd
import pytest
import yaml

import dse
from circuits import appaxo
from circuits.fpga_model import appaxo_fpga
from dse.cli import main
from dse.loop import StudyRunner, build_evaluator, run_study
from dse.study import Study
from dse.study_file import StudyFileError, parse_settings
from evaluators.data.preprocess import Preprocessing
from evaluators.networks import ort_exactness
from tests.conftest import MINI_FREE, REPO, interruptible, mini_study, shared_path


def study_data(folder, mnist_dir, **changes) -> dict:
    return mini_study(mnist_dir, output=str(folder), **changes)


def quiet(_message: str) -> None:
    pass


def run(data: dict, **kwargs) -> Study:
    return run_study(parse_settings(data), log=quiet, progress=False, **kwargs)


def error_line(stderr: str) -> str:
    """The one error line of a refused command (progress lines may precede it), no traceback."""
    errors = [line for line in stderr.splitlines() if line.startswith("dse: error: ")]
    assert len(errors) == 1 and "Traceback" not in stderr, stderr
    return errors[0]


def search_rows(study: Study):
    trials = study.trials
    return trials[trials["role"] == "search"].sort_values("proposal_index")


def test_a_study_stores_every_trial_and_writes_its_front(tmp_path, mnist_dir, mnist, env):
    folder = tmp_path / "mini"
    study = run(study_data(folder, mnist_dir))
    trials = study.trials
    assert len(trials) == 7 and set(trials["state"]) == {"COMPLETE"}
    assert (trials["role"] == "baseline").sum() == 1
    assert search_rows(study)["proposal_index"].tolist() == list(range(6))
    assert trials["config_bits"].str.len().eq(36).all()
    # the exact baseline scores what onnxruntime's int8 model scores on the same images
    _, test = mnist
    session = ort_exactness.session(folder / "network" / "int8.onnx")
    ort_acc = (session.run(None, {"input": Preprocessing().apply(test.images[:1000])})[0].argmax(1)
               == test.labels[:1000]).mean()
    baseline = trials[trials["role"] == "baseline"].iloc[0]
    assert baseline["accuracy"] == pytest.approx(ort_acc)
    assert baseline["fpga_luts"] == pytest.approx(appaxo_fpga(appaxo.EXACT)["fpga_luts"])
    # reports
    front = study.pareto()
    written = pd.read_csv(folder / "pareto.csv")
    assert written["config"].tolist() == front["config"].tolist() and len(front) >= 1
    assert (folder / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (folder / "trials.csv").is_file() and (folder / "study.sha256").is_file()
    for config in front["config"]:  # design files of every Pareto-optimal multiplier
        name = appaxo.config_name(int(config))
        assert (folder / "pareto" / f"{name}.v").read_text().startswith("// AppAxO")
        assert "LUT6_2" in (folder / "pareto" / f"{name}_xc7.v").read_text()
        np.testing.assert_array_equal(np.load(folder / "pareto" / f"{name}.npy"),
                                      appaxo.product_table(int(config)))
    assert len(list((folder / "pareto").iterdir())) == 3 * len(front)
    # the store is a real Optuna study
    loaded = optuna.load_study(study_name="mini", storage=dse.storage.journal_storage(folder))
    assert len(loaded.trials) == 7 and loaded.directions[0].name == "MAXIMIZE"
    assert loaded.metric_names == ["accuracy", "fpga_luts"]  # what optuna-dashboard labels
    for trial in loaded.trials:  # the searched LUTs as parameters, real durations
        luts = {k: v for k, v in trial.params.items() if k.startswith("lut_")}
        assert len(luts) == MINI_FREE.count("1") and set(luts.values()) <= {0, 1}
        bits = format(trial.params["config"], "036b")
        assert all(bits[int(k[5]) * 9 + int(k[8])] == str(v) for k, v in luts.items())
        assert trial.datetime_complete > trial.datetime_start
    # the Python API reads the same thing back
    again = dse.load_study(folder)
    assert again.trials["config"].tolist() == trials["config"].tolist()


def test_running_a_finished_study_again_evaluates_nothing(tmp_path, mnist_dir, env):
    folder = tmp_path / "mini"
    run(study_data(folder, mnist_dir))
    stored = dse.load_study(folder).trials
    study = run(study_data(folder, mnist_dir))
    assert study.trials["trial"].tolist() == stored["trial"].tolist()
    with Study(folder, study.settings, driver=True) as again:
        runner = StudyRunner(again, build_evaluator(study.settings, quiet), quiet, False)
        assert runner.run() == 0
    assert len(runner.evaluator.network_cache) == stored["table_sha256"].nunique()


def test_a_changed_study_file_is_refused_and_nothing_is_lost(tmp_path, mnist_dir, env, capsys):
    folder = tmp_path / "mini"
    run(study_data(folder, mnist_dir))
    before = (folder / "trials.journal").read_bytes()
    with pytest.raises(StudyFileError, match=r"budget.trials: 6 -> 9; seed: 3 -> 4"):
        run(study_data(folder, mnist_dir, budget={"trials": 9}, seed=4))
    path = tmp_path / "changed.yaml"
    path.write_text(yaml.safe_dump(study_data(folder, mnist_dir, model={"epochs": 3})))
    assert main(["run", str(path)]) == 2
    assert "model.epochs: 2 -> 3" in capsys.readouterr().err
    assert (folder / "trials.journal").read_bytes() == before


def test_time_limit_is_a_study_total(tmp_path, mnist_dir, env):
    folder = tmp_path / "mini"
    data = study_data(folder, mnist_dir, budget={"trials": 10_000, "time_limit_s": 1.5})
    study = run(data)
    done = study.search_trials_done()
    assert 1 <= done < 10_000
    assert float(study.store.get("elapsed_s")) >= 1.5
    assert run(data).search_trials_done() == done  # resuming: the time is already spent


def test_a_failing_evaluation_becomes_a_failed_trial(tmp_path, mnist_dir, env):
    folder = tmp_path / "mini"
    settings = parse_settings(study_data(folder, mnist_dir))
    from dse.loop import freeze

    freeze(settings, folder)
    study = Study(folder, settings, driver=True)
    evaluator = build_evaluator(settings, quiet)
    calls = []
    real = evaluator.evaluate

    def sometimes_broken(config, *context):  # the third proposal fails as a circuit that cannot be built
        calls.append(config)
        if len(calls) == 4:
            raise RuntimeError("synthesis failed")
        return real(config, *context)

    evaluator.evaluate = sometimes_broken
    StudyRunner(study, evaluator, quiet, False).run()
    trials = study.trials
    failed = trials[trials["state"] == "FAIL"]
    assert len(failed) == 1 and failed.iloc[0]["error"] == "RuntimeError: synthesis failed"
    assert study.search_trials_done() == 6  # the failure counts against the budget
    assert failed.iloc[0]["config"] not in study.pareto()["config"].tolist()


def wait_for_trials(folder, count, proc, timeout=240):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        if (folder / "trials.journal").is_file():
            try:
                if dse.load_study(folder).search_trials_done() >= count:
                    return
            except Exception:  # the journal may be mid-write; read again
                pass
        time.sleep(0.2)
    raise AssertionError(f"no {count} trials within {timeout} s")


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGINT], ids=["kill-9", "ctrl-c"])
def test_interrupted_study_resumes_to_the_same_result(tmp_path, mnist_dir, env, how):
    folder = tmp_path / "mini"
    data = study_data(folder, mnist_dir, budget={"trials": 24})
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(data))
    run(study_data(tmp_path / "warm", mnist_dir, budget={"trials": 1}))  # network in the cache
    proc = subprocess.Popen([sys.executable, "-m", "dse", "run", str(path), "-q"], cwd=REPO,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=interruptible)
    wait_for_trials(folder, 5, proc)
    proc.send_signal(how)
    _, err = proc.communicate(timeout=60)
    if how == signal.SIGINT:
        assert proc.returncode == 130 and f"python -m dse resume {folder}" in err
    else:
        assert proc.returncode == -signal.SIGKILL
    before = search_rows(dse.load_study(folder))
    assert 5 <= len(before) < 24

    resumed = subprocess.run([sys.executable, "-m", "dse", "resume", str(folder), "-q"], cwd=REPO,
                             env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    after = search_rows(dse.load_study(folder))
    assert len(after) == 24 and after["proposal_index"].tolist() == list(range(24))
    assert after["config"].is_unique  # nothing evaluated twice
    kept = after.set_index("trial").loc[before["trial"]]
    assert kept["config"].tolist() == before["config"].tolist()  # finished trials kept as they were
    assert kept["accuracy"].tolist() == before["accuracy"].tolist()

    reference = search_rows(run(study_data(tmp_path / "straight", mnist_dir, budget={"trials": 24})))
    assert after["config"].tolist() == reference["config"].tolist()
    np.testing.assert_array_equal(after["accuracy"], reference["accuracy"])


def test_status_prints_the_front_and_json(tmp_path, mnist_dir, env, capsys):
    folder = tmp_path / "mini"
    run(study_data(folder, mnist_dir))
    (folder / "pareto.png").unlink()
    assert main(["status", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "6/6 search trials" in out and "Pareto front" in out
    assert not (folder / "pareto.png").exists()  # status only reads; report redraws
    assert main(["report", str(folder)]) == 0
    assert (folder / "pareto.png").is_file() and "pareto.html" in capsys.readouterr().out
    assert main(["status", str(folder), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["search_trials"] == 6 and 55 < summary["exact"]["fpga_luts"] < 65
    assert main(["status", str(tmp_path / "nothing")]) == 2
    assert "not a study folder" in capsys.readouterr().err


def test_missing_data_is_a_one_line_error_and_writes_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DSE_CACHE_DIR", str(tmp_path / "empty-cache"))
    monkeypatch.delenv("DSE_DATA_DIR", raising=False)
    folder = tmp_path / "mini"
    data = study_data(folder, tmp_path, dataset={"path": None, "download": False})
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(data))
    assert main(["run", str(path)]) == 2
    err = error_line(capsys.readouterr().err)
    assert "train-images-idx3-ubyte.gz" in err and "DSE_DATA_DIR" in err
    assert not folder.exists()


def test_a_missing_liberty_file_fails_before_any_work(tmp_path, mnist_dir, monkeypatch, capsys):
    monkeypatch.setenv("DSE_CACHE_DIR", str(tmp_path / "empty-cache"))  # no cached network
    monkeypatch.setenv("DSE_PDK_DIR", str(tmp_path))  # no Liberty files here
    folder = tmp_path / "mini"
    data = study_data(folder, mnist_dir, hardware={"liberty": "nangate45"},
                      objectives=[{"metric": "accuracy"}, {"metric": "area"}])
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(data))
    assert main(["run", str(path)]) == 2
    err = error_line(capsys.readouterr().err)
    assert "put nangate45_typ.lib.gz" in err and "DSE_PDK_DIR" in err
    assert not folder.exists() and not (tmp_path / "empty-cache" / "networks").exists()


@pytest.mark.skipif(shutil.which("yosys") is None or shutil.which("sta") is None,
                    reason="Yosys and OpenSTA are not installed (make setup installs them)")
def test_an_asic_study_optimizes_workload_power_and_area(tmp_path, mnist_dir, env, monkeypatch):
    monkeypatch.setenv("DSE_PDK_DIR", str(shared_path("pdk")))
    folder = tmp_path / "asic"
    data = study_data(folder, mnist_dir, budget={"trials": 4},
                      hardware={"liberty": "nangate45", "power": "workload"},
                      objectives=[{"metric": "accuracy"}, {"metric": "power"}, {"metric": "area"}])
    study = run(data)
    trials = study.trials
    assert len(trials) == 5 and set(trials["state"]) == {"COMPLETE"}
    assert (trials["power"] == trials["power_workload"]).all()
    assert (trials["power_workload"] < trials["power_uniform"]).all()
    assert (trials["pdp"] == trials["power"] * trials["delay"]).all()
    assert set(trials["cost_model"]) == {"nangate45_typ.lib"}
    exact = trials[trials["role"] == "baseline"].iloc[0]
    assert (trials["area"] <= exact["area"]).all()  # removing LUTs never adds area here
    with np.load(folder / "workload.npz") as w:
        assert w["activations"].shape == (8192,) and w["activation_histogram"].sum() == 8192
    assert (folder / "pareto.png").is_file()


@pytest.mark.skipif(shutil.which("yosys") is None, reason="Yosys is not installed")
def test_without_liberty_the_estimate_is_used_and_labelled(tmp_path, mnist_dir, env):
    folder = tmp_path / "estimate"
    data = study_data(folder, mnist_dir, budget={"trials": 2},
                      objectives=[{"metric": "accuracy"}, {"metric": "power"}])
    trials = run(data).trials
    assert trials["cost_model"].str.startswith("yosys-gates").all()
    assert (trials["power"] > 0).all() and trials["power_vectorless"].isna().all()
