"""A guardian that ends a local Ray instance when its driver ends, however it ends.

Ray ties its GCS and raylet to the driver that started them, but its dashboard and runtime-env
agents survive a driver killed with SIGKILL. So the driver starts this script (standard library
only, in a session of its own so that Ctrl-C and group kills leave it alone) with a pipe on its
standard input. When the pipe reaches end of file, because the driver shut Ray down or died,
the guardian ends every process still belonging to the Ray session and exits. Ray renames its
agents and workers (``ray::RuntimeEnvAgent``), so a process belongs to the session when its
command line or one of its open files lies in the session folder. Linux only (``/proc``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

GRACE_S = 2.0
"""Seconds the session's processes get to exit on SIGTERM before SIGKILL."""


def start(session_dir: str) -> subprocess.Popen:
    """Start the guardian of this driver's Ray session; close its ``stdin`` to release it."""
    return subprocess.Popen(
        [sys.executable, __file__, session_dir, str(os.getpid())], stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def session_processes(session_dir: str, exclude: set[int] = frozenset()) -> list[int]:
    """Pids of the processes whose command line or open files lie in ``session_dir``."""
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        pid = int(entry.name)
        if pid not in exclude and _belongs(entry, session_dir):
            found.append(pid)
    return found


def _belongs(proc: Path, session_dir: str) -> bool:
    """Whether a process names the session folder (unique: it carries a time and a pid)."""
    try:
        if session_dir.encode() in (proc / "cmdline").read_bytes():
            return True
        return any(os.readlink(fd).startswith(session_dir) for fd in (proc / "fd").iterdir())
    except OSError:  # gone meanwhile, or not ours to inspect
        return False


def end_session(session_dir: str, exclude: set[int]) -> None:
    """SIGTERM the session's processes, then SIGKILL whichever still run after ``GRACE_S``."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = session_processes(session_dir, exclude)
        for pid in pids:
            try:
                os.kill(pid, sig)
            except OSError:
                pass
        deadline = time.monotonic() + GRACE_S
        while pids and time.monotonic() < deadline:
            time.sleep(0.1)
            pids = session_processes(session_dir, exclude)
        if not pids:
            return


def main(session_dir: str, driver: int) -> None:
    sys.stdin.buffer.read()  # returns at end of file: the driver released us or died
    end_session(session_dir, {os.getpid(), driver})


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
