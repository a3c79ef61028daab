"""Running the open EDA tools (Yosys, OpenSTA): discovery, timeouts, one-line errors.

Every tool runs in its own process group with a parent-death signal: a timeout or Ctrl-C kills
the whole group (Yosys with the ABC it started), and a killed driver takes its tool with it.
What a tool script names is a fixed file name in the job folder or a checked identifier
(``script_name``), never a user's path.

Job folders (``job_folder``) live in the user cache, ``work/<host>/dse-<kind>-<pid>-<random>``,
not in the system's temporary folder: a driver killed with SIGKILL cannot remove its own, so the
first job of every process sweeps the folders of this host whose owner process is gone. The pid
in the name is what makes that safe: a live owner (another study, a Ray worker) keeps its folders,
and a pid reused by a new process only delays a sweep.
"""

from __future__ import annotations

import ctypes
import functools
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from circuits.cache import cache_dir

INSTALL_HINT = {
    "yosys": "sudo apt-get install yosys",
    "sta": "sudo apt-get install opensta",
}
PR_SET_PDEATHSIG = 1  # linux/prctl.h
# A Verilog identifier Yosys scripts and Tcl read as one plain word (``$`` only after the first
# character: Yosys reserves a leading ``$`` and Tcl braces keep the rest literal).
IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*")
# a job folder: dse-<kind>-<owner pid>-<tempfile's random part>
JOB_FOLDER = re.compile(r"dse-[a-z]+-([0-9]+)-[A-Za-z0-9_]+")
_swept: set[Path] = set()  # the work folders this process has swept
_sweep_lock = threading.Lock()


class ToolError(RuntimeError):
    """An EDA tool is missing, failed or hung; the message is one line for the user."""


def require(tool: str) -> str:
    """Path of ``tool`` or a ToolError saying how to install it."""
    path = shutil.which(tool)
    if path is None:
        hint = INSTALL_HINT.get(tool, f"install {tool}")
        raise ToolError(f"{tool} not found on PATH: install it with `{hint}` (or run `make setup`)")
    return path


def script_name(name: str, what: str, subject: str) -> str:
    """``name`` if it may be written into a tool script as it is, else a ToolError."""
    if not IDENTIFIER.fullmatch(name):
        raise ToolError(f"{subject}: {what} {name!r} is not a plain Verilog identifier "
                        "(letters, digits, _ and $, not starting with a digit or $)")
    return name


def work_folder() -> Path:
    """This host's folder of job folders in the user cache (hosts may share a cache over NFS,
    and a pid means something only on its own host)."""
    host = re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname()) or "host"
    return cache_dir() / "work" / host


@contextmanager
def job_folder(kind: str) -> Iterator[Path]:
    """A fresh, private folder for one tool run (``kind``: yosys, sta, ...), removed afterwards.
    The first one of a process in a work folder sweeps that folder's stale job folders first."""
    root = work_folder()
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ToolError(f"{root}: cannot create the tools' work folder ({err.strerror}); set "
                        "DSE_CACHE_DIR to a writable folder") from None
    with _sweep_lock:
        if root not in _swept:
            sweep_stale(root)
            _swept.add(root)
    with tempfile.TemporaryDirectory(prefix=f"dse-{kind}-{os.getpid()}-", dir=root) as tmp:
        yield Path(tmp)


def sweep_stale(root: Path) -> list[Path]:
    """Remove the job folders in ``root`` whose owner process no longer runs (a driver killed
    while its tool ran); returns them. Anything else in ``root`` is left alone."""
    removed = []
    try:
        entries = list(root.iterdir())
    except OSError:  # best effort: a sweep never stops a tool run
        return removed
    for entry in entries:
        match = JOB_FOLDER.fullmatch(entry.name)
        if match is None or entry.is_symlink() or not entry.is_dir() or _alive(int(match[1])):
            continue
        shutil.rmtree(entry, ignore_errors=True)  # another process may be sweeping it too
        removed.append(entry)
    return removed


def _alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host (another user's counts, so does a zombie)."""
    if not 0 < pid < 1 << 31:  # pid 0 would name our own process group
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        pass
    return True


def run_tool(tool: str, args: list[str], *, cwd: Path, timeout: float, subject: str) -> str:
    """Run a tool; return its standard output. ``subject`` names what it works on (a file) in
    error messages, followed by the tool's first error line."""
    try:
        proc = run_group([require(tool), *args], cwd=cwd, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise ToolError(f"{subject}: {tool} timed out after {timeout:g} s") from None
    output = proc.stdout + proc.stderr
    error = first_error(output)
    if proc.returncode != 0 or error:
        detail = error or (output.strip().splitlines() or ["no output"])[-1]
        raise ToolError(f"{subject}: {tool} failed: {detail}")
    return proc.stdout


def run_group(argv: list[str], *, cwd: Path | None, timeout: float) -> subprocess.CompletedProcess:
    """Run ``argv`` in a new process group that dies with this process; when it times out or
    this call is interrupted (Ctrl-C), the whole group (the tool and its children) is killed."""
    with subprocess.Popen(argv, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, start_new_session=True,
                          preexec_fn=die_with_parent()) as proc:
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        finally:
            if proc.poll() is None:
                kill_group(proc.pid)
    return subprocess.CompletedProcess(argv, proc.returncode, stdout, stderr)


def kill_group(pgid: int) -> None:
    """SIGKILL every process of a group (gone already is fine)."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child receive SIGKILL when this process dies (Linux
    ``PR_SET_PDEATHSIG``; None elsewhere). libc is loaded here, before the fork."""
    if not sys.platform.startswith("linux"):
        return None
    prctl = _libc().prctl
    parent = os.getpid()

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # the parent died before the signal was armed
            os.kill(os.getpid(), signal.SIGKILL)

    return preexec


@functools.cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def first_error(output: str) -> str | None:
    """The first line of tool output that reports an error (Yosys 'ERROR:', OpenSTA 'Error:')."""
    for line in output.splitlines():
        if re.search(r"\bERROR\b|^Error:", line):
            return line.strip()
    return None


@functools.cache
def tool_version(tool: str) -> str:
    """The tool's version string (part of every cache key)."""
    flag = {"yosys": "-V", "sta": "-version"}[tool]
    out = run_group([require(tool), flag], cwd=None, timeout=30)
    return (out.stdout or out.stderr).strip().splitlines()[0]
