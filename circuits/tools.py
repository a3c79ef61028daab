"""Running the open EDA tools (Yosys, OpenSTA): discovery, timeouts, one-line errors.

Every tool runs in its own process group with a parent-death signal: a timeout or Ctrl-C kills
the whole group (Yosys with the ABC it started), and a killed driver takes its tool with it.
What a tool script names is a fixed file name in the job folder or a checked identifier
(``script_name``), never a user's path.
"""

from __future__ import annotations

import ctypes
import functools
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

INSTALL_HINT = {
    "yosys": "sudo apt-get install yosys",
    "sta": "sudo apt-get install opensta",
}
PR_SET_PDEATHSIG = 1  # linux/prctl.h
# A Verilog identifier Yosys scripts and Tcl read as one plain word (``$`` only after the first
# character: Yosys reserves a leading ``$`` and Tcl braces keep the rest literal).
IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*")


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
