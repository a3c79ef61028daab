"""Ray resources checked before anything is trained or written, and a local Ray instance that
ends with its driver on every path, SIGKILL included."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from dse.cli import main
from dse.executors import ExecutorError, preflight
from dse.executors.resources import AUTH_HINT
from dse.study_file import ExecutorSettings
from tests.conftest import REPO, mini_study

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'dse[ray]')")

NO_GPU = "gpus_per_worker: 1 needs a machine without GPUs"

# A driver that starts its own local Ray instance through the executor, then waits to be killed.
DRIVER = """
import sys, time
from pathlib import Path
import ray
from dse.executors.ray_executor import RayExecutor
from dse.study_file import ExecutorSettings

settings = ExecutorSettings(type="ray", workers=2, temp_dir=sys.argv[1])
executor = RayExecutor({}, settings, Path(sys.argv[1]), lambda message: None)
print(ray.get_runtime_context().gcs_address, flush=True)
time.sleep(600)
"""


def session_processes(temp_dir: str) -> list[str]:
    """Processes naming the Ray temp folder in their command line or open files (Ray renames
    its agents, so ``ray::RuntimeEnvAgent`` is only found by its open log files)."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            files = [os.readlink(fd) for fd in (proc / "fd").iterdir()]
        except OSError:
            continue
        if temp_dir in cmdline or any(f.startswith(temp_dir) for f in files):
            found.append(f"{proc.name} {cmdline[:80]}")
    return found


def kill_leftovers(temp_dir: str) -> None:
    for line in session_processes(temp_dir):
        try:
            os.kill(int(line.split()[0]), signal.SIGKILL)
        except OSError:
            pass


@pytest.fixture
def temp_dir() -> Iterator[str]:
    """A Ray temp folder short enough for Ray's sockets; whatever still uses it is killed."""
    folder = tempfile.mkdtemp(prefix="dse-t-", dir="/tmp")
    yield folder
    kill_leftovers(folder)
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def no_gpu() -> None:
    from dse.executors.resources import visible_gpus

    if visible_gpus():
        pytest.skip(NO_GPU)


def test_a_gpu_request_on_a_machine_without_gpus_fails_in_seconds(tmp_path, no_gpu):
    start = time.monotonic()
    with pytest.raises(ExecutorError) as err:
        preflight(ExecutorSettings(type="ray", gpus_per_worker=1), tmp_path / "study")
    assert time.monotonic() - start < 10
    assert str(err.value).startswith(
        "executor asks for 2 workers x 1 GPU = 2 GPU, but this machine has 0;")
    assert "\n" not in str(err.value)
    assert list(tmp_path.iterdir()) == []


def test_local_cpus_and_temp_folder_are_checked(tmp_path):
    cpus = len(os.sched_getaffinity(0))
    preflight(ExecutorSettings(type="ray", workers=cpus), tmp_path)
    with pytest.raises(ExecutorError, match=f"{cpus + 1} CPU, but this machine has {cpus}"):
        preflight(ExecutorSettings(type="ray", workers=cpus + 1), tmp_path)
    long = "/tmp/" + "x" * 60
    with pytest.raises(ExecutorError, match="executor.temp_dir /tmp/x+ is 65 characters long"):
        preflight(ExecutorSettings(type="ray", workers=1, temp_dir=long), tmp_path)
    preflight(ExecutorSettings(type="serial", workers=999), tmp_path)  # nothing to check
    assert list(tmp_path.iterdir()) == []


def test_one_worker_must_fit_on_one_node():
    from dse.executors.resources import check_resources

    nodes = [{"CPU": 4.0, "GPU": 1.0}, {"CPU": 4.0}]
    total = {"CPU": 8.0, "GPU": 1.0}
    check_resources(ExecutorSettings(type="ray", workers=2, cpus_per_worker=4), total, nodes, "c")
    with pytest.raises(ExecutorError, match="^no node of the Ray cluster has 6 CPU for one worker$"):
        check_resources(ExecutorSettings(type="ray", workers=1, cpus_per_worker=6), total, nodes,
                        "the Ray cluster")


def test_an_unreachable_cluster_is_one_line_within_seconds(tmp_path):
    with pytest.raises(ExecutorError, match="cannot reach the Ray cluster at auto: ") as err:
        preflight(ExecutorSettings(type="ray", address="auto"), tmp_path)
    assert "\n" not in str(err.value)
    start = time.monotonic()
    with pytest.raises(ExecutorError, match=r"cannot reach the Ray cluster at 127\.0\.0\.1:9"):
        preflight(ExecutorSettings(type="ray", address="127.0.0.1:9"), tmp_path)
    assert time.monotonic() - start < 10


def test_run_with_an_impossible_gpu_request_writes_nothing(tmp_path, mnist_dir, no_gpu, capsys):
    """The study loop checks the executor before loading data, training or writing."""
    study = tmp_path / "gpu.yaml"
    study.write_text(yaml.safe_dump(mini_study(mnist_dir, executor={"type": "ray",
                                                                    "gpus_per_worker": 1})))
    out = tmp_path / "out"
    start = time.monotonic()
    assert main(["run", str(study), "--output", str(out), "-q"]) == 2
    assert time.monotonic() - start < 10
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("dse: error: executor asks for 2 workers x 1 GPU")
    assert not out.exists()


def start_driver(temp_dir: str) -> tuple[subprocess.Popen, str]:
    """A driver process holding a RayExecutor with a local Ray instance; and its GCS address."""
    driver = subprocess.Popen([sys.executable, "-c", DRIVER, temp_dir], cwd=REPO,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    address = driver.stdout.readline().strip()
    if not address:
        driver.kill()
        pytest.fail(f"the driver did not start Ray: {driver.communicate(timeout=30)[1][-2000:]}")
    return driver, address


def wait_until_gone(temp_dir: str, seconds: float) -> list[str]:
    deadline = time.monotonic() + seconds
    while (left := session_processes(temp_dir)) and time.monotonic() < deadline:
        time.sleep(0.5)
    return left


def test_a_cluster_is_checked_by_connecting(temp_dir, monkeypatch):
    driver, address = start_driver(temp_dir)
    try:
        start = time.monotonic()
        try:
            preflight(ExecutorSettings(type="ray", address=address, workers=2), Path(temp_dir))
        except ExecutorError as err:  # Ray >= 2.5x: a cluster ray.init starts requires a token
            assert time.monotonic() - start < 10 and "Unauthenticated" in str(err), err
            assert str(err).endswith(AUTH_HINT) and "\n" not in str(err)
            monkeypatch.setenv("RAY_AUTH_MODE", "token")
            preflight(ExecutorSettings(type="ray", address=address, workers=2), Path(temp_dir))
        with pytest.raises(ExecutorError, match=f"= 2 GPU, but the Ray cluster at {address} has 0"):
            preflight(ExecutorSettings(type="ray", address=address, gpus_per_worker=1),
                      Path(temp_dir))
    finally:
        driver.kill()
        driver.communicate()


def test_ray_dies_with_a_driver_killed_outright(temp_dir):
    driver, _ = start_driver(temp_dir)
    running = session_processes(temp_dir)
    assert any("raylet" in p for p in running), running
    assert any("RuntimeEnvAgent" in p for p in running), running  # the one that used to survive
    driver.send_signal(signal.SIGKILL)
    driver.communicate()
    assert wait_until_gone(temp_dir, 15) == []


def test_ray_ends_when_the_executor_closes_or_fails_to_start(temp_dir):
    from dse.executors.ray_executor import RayExecutor

    with pytest.raises(ExecutorError, match="= 64 CPU, but the Ray cluster has"):
        RayExecutor({}, ExecutorSettings(type="ray", workers=64, temp_dir=temp_dir),
                    Path(temp_dir), lambda message: None)
    assert not ray.is_initialized()
    assert wait_until_gone(temp_dir, 15) == []
    executor = RayExecutor({}, ExecutorSettings(type="ray", workers=1, temp_dir=temp_dir),
                           Path(temp_dir), lambda message: None)
    assert session_processes(temp_dir)
    executor.close()
    assert not ray.is_initialized()
    assert wait_until_gone(temp_dir, 15) == []
