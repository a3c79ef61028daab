"""Running the open EDA tools (Yosys, OpenSTA): discovery, timeouts, one-line errors."""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
from pathlib import Path

INSTALL_HINT = {
    "yosys": "sudo apt-get install yosys",
    "sta": "sudo apt-get install opensta",
}


class ToolError(RuntimeError):
    """An EDA tool is missing, failed or hung; the message is one line for the user."""


def require(tool: str) -> str:
    """Path of ``tool`` or a ToolError saying how to install it."""
    path = shutil.which(tool)
    if path is None:
        hint = INSTALL_HINT.get(tool, f"install {tool}")
        raise ToolError(f"{tool} not found on PATH: install it with `{hint}` (or run `make setup`)")
    return path


def run_tool(tool: str, args: list[str], *, cwd: Path, timeout: float, subject: str) -> str:
    """Run a tool; return its standard output. ``subject`` names what it works on (a file) in
    error messages, followed by the tool's first error line."""
    try:
        proc = subprocess.run([require(tool), *args], cwd=cwd, capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        raise ToolError(f"{subject}: {tool} timed out after {timeout:g} s") from None
    output = proc.stdout + proc.stderr
    error = first_error(output)
    if proc.returncode != 0 or error:
        detail = error or (output.strip().splitlines() or ["no output"])[-1]
        raise ToolError(f"{subject}: {tool} failed: {detail}")
    return proc.stdout


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
    out = subprocess.run([require(tool), flag], capture_output=True, text=True, timeout=30)
    return (out.stdout or out.stderr).strip().splitlines()[0]
