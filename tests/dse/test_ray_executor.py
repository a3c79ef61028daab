"""The Ray executor for real: parallel workers, preflight, killed workers, failures, timeouts,
Ctrl-C."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time

import pandas as pd
import pytest
import yaml

import dse
from dse.cli import main
from dse.loop import StudyRunner, build_evaluator, freeze, run_study
from dse.study import Study
from dse.study_file import parse_settings
from tests.conftest import REPO, interruptible, mini_study

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'dse[ray]')")
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers get the test evaluators


def quiet(_message: str) -> None:
    pass


@pytest.fixture(scope="module")
def base(mnist_dir, session_cache):
    os.environ["DSE_CACHE_DIR"] = str(session_cache)
    return mini_study(mnist_dir, name="ray", seed=5, budget={"trials": 10})


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray instance for the module (each executor would otherwise start its own)."""
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    yield
    ray.shutdown()


def study_at(folder, data):
    settings = parse_settings({**data, "output": str(folder)})
    return settings


def search(study):
    t = study.trials
    return t[t["role"] == "search"].sort_values("proposal_index")


@pytest.mark.parametrize("strategy", [{"type": "random"}, {"type": "nsga2", "population": 4}])
def test_two_workers_give_the_serial_trials(tmp_path, base, local_ray, strategy):
    data = {**base, "strategy": strategy}
    serial = search(run_study(study_at(tmp_path / "serial", data), log=quiet, progress=False))
    data["executor"] = {"type": "ray", "workers": 2}
    parallel = search(run_study(study_at(tmp_path / "ray", data), log=quiet, progress=False))
    assert parallel["proposal_index"].tolist() == list(range(10))
    assert parallel["config"].tolist() == serial["config"].tolist()
    assert parallel["accuracy"].tolist() == serial["accuracy"].tolist()


def test_an_impossible_gpu_request_fails_fast(tmp_path, base, capsys):
    data = {**base, "output": str(tmp_path / "gpu"), "executor": {"type": "ray", "gpus_per_worker": 1}}
    path = tmp_path / "gpu.yaml"
    path.write_text(yaml.safe_dump(data))
    start = time.monotonic()
    assert main(["run", str(path), "-q"]) == 2
    assert time.monotonic() - start < 60  # Ray alone would wait forever
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert re.search(r"executor asks for 2 workers x 1 GPU = 2 GPU, but (the Ray cluster|this "
                     r"machine) has 0", err), err


def ray_runner(folder, data, evaluator):
    settings = study_at(folder, data)
    freeze(settings, folder)
    from dse.executors import make_executor

    executor = make_executor(settings.executor, evaluator, folder, quiet)
    return StudyRunner(Study(folder, settings, driver=True), evaluator, quiet, False, executor), executor


def test_a_killed_worker_is_retried_without_losing_or_repeating(tmp_path, base, local_ray):
    data = {**base, "executor": {"type": "ray", "workers": 2, "max_retries": 2},
            "budget": {"trials": 16}}
    evaluator = build_evaluator(study_at(tmp_path / "kill", data), quiet)
    runner, executor = ray_runner(tmp_path / "kill", data, evaluator)

    def kill_one():
        while runner.study.search_trials_done() < 3:
            time.sleep(0.05)
        os.kill(executor.pids[0], signal.SIGKILL)

    killer = threading.Thread(target=kill_one)
    killer.start()
    try:
        runner.run()
    finally:
        killer.join()
        executor.close()
    rows = search(runner.study)
    assert len(rows) == 16 and rows["proposal_index"].tolist() == list(range(16))
    assert rows["config"].is_unique and set(rows["state"]) == {"COMPLETE"}, rows.get("error", pd.Series()).dropna().tolist()
    assert rows["attempts"].max() == 2  # the evaluation the kill interrupted ran again


class FlakyEvaluator:
    """The real evaluator, except that one configuration cannot be built and one hangs."""

    def __init__(self, real, broken: int, hanging: int | None = None) -> None:
        self.real, self.broken, self.hanging = real, broken, hanging

    def evaluate(self, config: int, front=None) -> dict:
        if config == self.broken:
            raise RuntimeError("synthesis failed: no cells")
        if config == self.hanging:
            time.sleep(600)
        return self.real.evaluate(config, front)

    def remember(self, metrics: dict) -> None:
        self.real.remember(metrics)


def test_failures_and_timeouts_become_failed_trials(tmp_path, base, local_ray):
    data = {**base, "executor": {"type": "ray", "workers": 2, "timeout_s": 20}}
    real = build_evaluator(study_at(tmp_path / "flaky", data), quiet)
    from dse.space import AppAxOSubspace
    from dse.strategies import make_strategy

    probe = make_strategy({"type": "random"}, AppAxOSubspace(
        parse_settings(data).space.free, 2**36 - 1), ["maximize", "minimize"], 0, 5)
    configs = [probe.ask().config for _ in range(4)]
    runner, executor = ray_runner(tmp_path / "flaky", data,
                                  FlakyEvaluator(real, broken=configs[1], hanging=configs[2]))
    try:
        runner.run()
    finally:
        executor.close()
    rows = search(runner.study).set_index("config")
    assert len(rows) == 10
    assert rows.loc[configs[1], "error"] == "RuntimeError: synthesis failed: no cells"
    assert rows.loc[configs[2], "error"] == "timed out after 20 s (evaluation cancelled)"
    assert (rows["state"] == "COMPLETE").sum() == 8


def test_ctrl_c_stops_the_workers_and_the_study_resumes(tmp_path, base, session_cache):
    folder = tmp_path / "ctrlc"
    data = {**base, "output": str(folder), "executor": {"type": "ray", "workers": 2},
            "budget": {"trials": 40}}
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(data))
    env = {**os.environ, "DSE_CACHE_DIR": str(session_cache)}
    proc = subprocess.Popen([sys.executable, "-m", "dse", "run", str(path), "-q"], cwd=REPO,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=interruptible)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        try:
            if dse.load_study(folder).search_trials_done() >= 4:
                break
        except Exception:
            pass
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and f"python -m dse resume {folder}" in err
    done = dse.load_study(folder).search_trials_done()
    assert 4 <= done < 40
    workers = subprocess.run(["pgrep", "-f", "EvaluationWorker"], capture_output=True, text=True)
    assert workers.stdout.strip() == "", "Ray workers outlived the interrupted driver"
    resumed = subprocess.run([sys.executable, "-m", "dse", "resume", str(folder), "-q"], cwd=REPO,
                             env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    rows = search(dse.load_study(folder))
    assert rows["proposal_index"].tolist() == list(range(40)) and rows["config"].is_unique
