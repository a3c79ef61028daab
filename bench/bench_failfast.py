"""Benchmark: how fast a study that cannot run is refused, and that nothing is written.

    python bench/bench_failfast.py

Each case is `python -m dse run STUDY.yaml` (or `resume`) as a user types it, on a study file
that cannot run: an impossible Ray GPU request, unusable storage URLs, a file that is not a
Liberty library, a malformed study file, a second driver. The target is a one-line error within
10 s with nothing written; the yardstick is `python -m dse --version` in the same run (the cost
of starting the command at all).
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from common import REPO, cpu_name, lenet_fpga_study, use_shared_data  # first: sys.path

from dse.lock import holder


def dse(*args: str) -> tuple[float, int, str]:
    """Wall time, exit code and last stderr line of one CLI call."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "dse", *args], cwd=REPO, capture_output=True,
                          text=True)
    lines = done.stderr.strip().splitlines() or done.stdout.strip().splitlines() or [""]
    return time.perf_counter() - start, done.returncode, lines[-1]


def cases(tmp: Path) -> dict[str, dict]:
    """Study files that cannot run, by what is wrong with them."""
    not_liberty = tmp / "cells.lib"
    not_liberty.write_text("this is not a cell library\n")
    return {
        "GPU request, no GPU (Ray)": {"executor": {"type": "ray", "workers": 2, "gpus_per_worker": 1}},
        "PostgreSQL unreachable": {"storage": "postgresql+psycopg://dse@127.0.0.1:1/studies"},
        "MySQL without its driver": {"storage": "mysql://dse@127.0.0.1:1/studies"},
        "SQLite in a missing folder": {"storage": f"sqlite:///{tmp}/missing/studies.db"},
        "not a Liberty file": {"hardware": {"liberty": str(not_liberty)},
                               "objectives": [{"metric": "accuracy"}, {"metric": "area"}]},
    }


def second_driver(tmp: Path) -> tuple[float, int, str]:
    """`resume` while another driver holds the study."""
    path = tmp / "driver.yaml"
    folder = tmp / "driver"
    path.write_text(yaml.safe_dump(lenet_fpga_study(name="driver", output=str(folder),
                                                    budget={"trials": 10_000})))
    first = subprocess.Popen([sys.executable, "-m", "dse", "run", str(path), "-q"], cwd=REPO,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while holder(folder) is None:
            if first.poll() is not None:
                raise SystemExit("the first driver stopped before taking the study lock")
            time.sleep(0.2)
        return dse("resume", str(folder))
    finally:
        first.send_signal(signal.SIGINT)
        first.wait()


def main() -> None:
    use_shared_data()
    rows = []
    with tempfile.TemporaryDirectory(prefix="dse-bench-") as name:
        tmp = Path(name)
        seconds, code, line = dse("--version")
        rows.append(("yardstick: dse --version", seconds, code, False, line))
        for case, changes in cases(tmp).items():
            folder = tmp / "out"
            path = tmp / "study.yaml"
            path.write_text(yaml.safe_dump(lenet_fpga_study(output=str(folder), **changes)))
            seconds, code, line = dse("run", str(path), "-q")
            rows.append((case, seconds, code, folder.exists(), line))
            shutil.rmtree(folder, ignore_errors=True)
        path = tmp / "duplicate.yaml"
        path.write_text("name: a\nname: b\n")
        seconds, code, line = dse("run", str(path))
        rows.append(("duplicate key in the study file", seconds, code, (REPO / "runs" / "b").exists(), line))
        seconds, code, line = second_driver(tmp)
        rows.append(("second driver (resume)", seconds, code, False, line))
    print(f"\n{cpu_name()}; target: exit 2 within 10 s, nothing written\n")
    print(f"{'case':<34} {'seconds':>7} {'exit':>4}  {'wrote':<5}  message")
    for case, seconds, code, wrote, line in rows:
        print(f"{case:<34} {seconds:>7.2f} {code:>4}  {'yes' if wrote else 'no':<5}  {line[:90]}")


if __name__ == "__main__":
    main()
