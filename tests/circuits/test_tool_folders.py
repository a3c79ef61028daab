"""Job folders of the EDA tools: made in the user cache under the owner's pid, removed after each
run, and swept when their owner was killed (kill -9 while Yosys runs), never while it lives."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from circuits import sta, synthesis
from circuits.catalogue import characterize_full
from circuits.characterize import FlowSettings
from circuits.multiplier import Multiplier
from circuits.synthesis import synthesize_asic
from circuits.tools import job_folder, sweep_stale, work_folder
from tests.conftest import REPO, shared_path

MUL = "module mul8s (input signed [7:0] a, input signed [7:0] b, output signed [15:0] p);\n" \
      "  assign p = a * b;\nendmodule\n"
# Yosys needs about a minute for this on one core: long enough to be killed while it runs
SLOW = "module slow (input [31:0] a, input [31:0] b, output [63:0] p);\n" \
       "  assign p = a * b * a * b;\nendmodule\n"
needs_yosys = pytest.mark.skipif(shutil.which("yosys") is None,
                                 reason="Yosys is not installed (make setup installs it)")


@pytest.fixture
def root(tmp_path, monkeypatch) -> Path:
    """This host's work folder in a fresh user cache (so this process has not swept it yet)."""
    monkeypatch.setenv("DSE_CACHE_DIR", str(tmp_path / "cache"))
    return work_folder()


def dead_pid() -> int:
    """The pid of a process that has ended (and been reaped)."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_work_folders_live_in_the_user_cache_per_host(root, tmp_path):
    assert root.parent == tmp_path / "cache" / "work"
    with job_folder("yosys") as work:
        assert work.is_dir() and work.parent == root
        assert work.name.startswith(f"dse-yosys-{os.getpid()}-")
        (work / "flow.ys").write_text("")
    assert not work.exists()


def test_stale_folders_are_swept_once_and_live_ones_kept(root, tmp_path):
    root.mkdir(parents=True)
    dead = dead_pid()
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        stale = [root / f"dse-yosys-{dead}-abc_12", root / f"dse-sta-{dead}-x9"]
        live = [root / f"dse-yosys-{os.getpid()}-mine", root / f"dse-sta-{child.pid}-child"]
        for folder in stale + live:
            (folder / "sub").mkdir(parents=True)
            (folder / "sub" / "netlist.v").write_text("x")
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        (elsewhere / "keep.txt").write_text("x")
        others = [root / f"dse-yosys-{dead}", root / "notes", root / f"dse-yosys-{dead}-link"]
        others[0].mkdir()
        others[1].write_text("not a job folder")
        others[2].symlink_to(elsewhere, target_is_directory=True)
        with job_folder("sta") as work:  # the first job of this process in root sweeps it
            assert [f.exists() for f in stale] == [False, False]
            assert all(f.is_dir() for f in live) and all(f.exists() for f in others)
            assert (elsewhere / "keep.txt").exists()
            assert work.exists()
        late = root / f"dse-xilinx-{dead}-late"
        late.mkdir()
        with job_folder("yosys"):  # once per process: no second sweep
            assert late.exists()
        assert sweep_stale(root) == [late] and not late.exists()
        assert sorted(p.name for p in root.iterdir()) == sorted(p.name for p in live + others)
    finally:
        child.kill()
        child.wait()


def test_another_process_never_sweeps_a_live_folder(root):
    """What a Ray worker starting its first tool run does while this process runs one."""
    sweep = "from circuits.tools import sweep_stale, work_folder; print(sweep_stale(work_folder()))"
    with job_folder("yosys") as work:
        (work / "flow.ys").write_text("")
        out = subprocess.run([sys.executable, "-c", sweep], cwd=REPO, capture_output=True, text=True,
                             env={**os.environ, "PYTHONPATH": str(REPO)}, check=True)
        assert out.stdout.strip() == "[]" and (work / "flow.ys").exists()


@pytest.fixture(scope="module")
def nangate() -> FlowSettings:
    return FlowSettings(liberty=str(shared_path("pdk", "nangate45_typ.lib.gz")))


@needs_yosys
@pytest.mark.skipif(shutil.which("sta") is None, reason="OpenSTA is not installed")
def test_yosys_opensta_and_synth_xilinx_run_in_the_cache_and_leave_nothing(nangate, root,
                                                                           monkeypatch):
    used: list[Path] = []

    def recording(run):
        def run_tool(tool, args, *, cwd, **kwargs):
            used.append(cwd)
            assert os.listdir(cwd)  # the job's files are there while the tool runs
            return run(tool, args, cwd=cwd, **kwargs)
        return run_tool

    monkeypatch.setattr(synthesis, "run_tool", recording(synthesis.run_tool))
    monkeypatch.setattr(sta, "run_tool", recording(sta.run_tool))
    result = characterize_full(Multiplier("mul8s", MUL, None, True, "mul8s.v"), nangate, None,
                               None, fpga=True)
    assert result.metrics["area"] > 0 and result.metrics["fpga_luts"] > 0
    assert sorted(p.name.split("-")[1] for p in used) == ["sta", "xilinx", "yosys"]
    assert all(p.parent == root and p.name.split("-")[2] == str(os.getpid()) for p in used)
    assert list(root.iterdir()) == []


def processes_in(folder: Path) -> list[int]:
    """Pids of live processes whose working folder lies in ``folder``."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            cwd = Path(os.readlink(entry / "cwd"))
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if cwd.is_relative_to(folder) and state != "Z":
            found.append(int(entry.name))
    return found


def wait_for(condition, seconds: float):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if found := condition():
            return found
        time.sleep(0.05)
    return condition()


@needs_yosys
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_driver_killed_during_yosys_leaves_a_folder_the_next_run_sweeps(root):
    driver = subprocess.Popen(
        [sys.executable, "-c",
         "import os; from circuits.multiplier import Multiplier; "
         "from circuits.synthesis import synthesize_asic; "
         "synthesize_asic(Multiplier('slow', os.environ['SLOW'], 'slow', None, 'slow.v'), None, 300)"],
        cwd=REPO, env={**os.environ, "SLOW": SLOW, "PYTHONPATH": str(REPO)})
    yosys: list[int] = []
    try:
        yosys = wait_for(lambda: processes_in(root), 120)
        assert yosys, "Yosys never ran in the work folder"
        (stale,) = root.iterdir()
        assert stale.name.startswith(f"dse-yosys-{driver.pid}-")
    finally:
        driver.send_signal(signal.SIGKILL)
        driver.wait()
    try:
        assert wait_for(lambda: not processes_in(root), 10), "Yosys outlived its driver"
    finally:
        for pid in processes_in(root):
            os.kill(pid, signal.SIGKILL)
    assert (stale / "flow.ys").is_file() and (stale / "slow.v").is_file()  # left behind
    net = synthesize_asic(Multiplier.from_appaxo(404750335), None, 120)  # the next run sweeps it
    assert net.area > 0 and list(root.iterdir()) == []
