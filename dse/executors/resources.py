"""Whether an executor can run, checked in seconds before a study trains or writes anything.

Ray waits forever for workers whose CPUs or GPUs no node has, and a local Ray instance only
fails on an impossible request after it has started; so the driver checks first: this machine's
CPUs and GPUs for a local instance (counted without starting Ray or importing torch), a brief
connection for a cluster. ``RayExecutor`` checks the live cluster again (clusters change).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from dse.executors.base import ExecutorError

if TYPE_CHECKING:
    from dse.study_file import ExecutorSettings

CONNECT_TIMEOUT_S = 8.0
"""Seconds a cluster may take to answer the preflight connection."""

# Ray keeps Unix sockets under its temp folder, and their paths must fit AF_UNIX's 107 bytes:
# the temp folder is put in the study folder by default only when that path is this short.
MAX_TEMP_DIR = 40
AF_UNIX_MAX = 107
SOCKET_SUFFIX = len("/session_2026-01-01_00-00-00_000000_4194304/sockets/plasma_store")
"""What Ray appends to its temp folder for its longest socket path (a 7-digit pid)."""

_CLUSTER_SCRIPT = """
import json, sys
import ray
try:
    ray.init(address=sys.argv[1], logging_level="ERROR", log_to_driver=False)
    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    print(json.dumps({"total": ray.cluster_resources(), "nodes": nodes}))
except Exception as err:
    lines = str(err).strip().splitlines()
    print(json.dumps({"error": lines[0] if lines else type(err).__name__}))
"""


def ray_temp_dir(configured: str | None, folder: Path) -> str:
    """Ray's session folder: the configured one, else ``<study>/ray`` when its path is short
    enough for Ray's sockets, else a folder in the system temp named after the study."""
    if configured:
        return os.path.expanduser(configured)
    inside = (folder / "ray").resolve()
    if len(str(inside)) <= MAX_TEMP_DIR:
        return str(inside)
    tag = hashlib.sha256(str(inside).encode()).hexdigest()[:8]
    return os.path.join(tempfile.gettempdir(), f"dse-ray-{tag}")


def preflight(settings: ExecutorSettings, folder: Path) -> None:
    """Fail within seconds, writing nothing, when the ``executor`` section cannot run: Ray
    absent, a temp folder too long for Ray's sockets, more CPUs or GPUs per worker than a node
    has or more in all than the cluster (or this machine) has, an unreachable cluster."""
    if settings.type != "ray":
        return
    try:
        import ray
    except ImportError:
        raise ExecutorError("executor type ray needs Ray: pip install 'dse[ray]'") from None
    if ray.is_initialized():  # this process already joined a cluster: the executor uses it
        nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
        check_resources(settings, ray.cluster_resources(), nodes, "the Ray cluster")
    elif settings.address is None:
        check_temp_dir(ray_temp_dir(settings.temp_dir, folder))
        here = local_resources()
        check_resources(settings, here, [here], "this machine",
                        "or give executor.address a Ray cluster")
    else:
        total, nodes = cluster_resources(settings.address)
        check_resources(settings, total, nodes, f"the Ray cluster at {settings.address}")


def check_temp_dir(temp_dir: str) -> None:
    """Refuse a Ray temp folder whose socket paths would exceed the AF_UNIX limit."""
    longest = AF_UNIX_MAX - SOCKET_SUFFIX
    if len(temp_dir) > longest:
        raise ExecutorError(
            f"executor.temp_dir {temp_dir} is {len(temp_dir)} characters long; Ray's socket "
            f"paths need a folder of at most {longest}: choose a shorter one")


def check_resources(settings: ExecutorSettings, total: Mapping[str, float],
                    nodes: Sequence[Mapping[str, float]], where: str,
                    remedy: str = "or add nodes") -> None:
    """Refuse workers that ``where`` (its ``total`` resources, each node's) cannot host."""
    for kind, per_worker in (("CPU", settings.cpus_per_worker), ("GPU", settings.gpus_per_worker)):
        if per_worker <= 0:
            continue
        need, have = settings.workers * per_worker, total.get(kind, 0.0)
        if need > have:
            raise ExecutorError(
                f"executor asks for {settings.workers} workers x {per_worker:g} {kind} = "
                f"{need:g} {kind}, but {where} has {have:g}; lower workers or "
                f"{kind.lower()}s_per_worker, {remedy}")
        if not any(node.get(kind, 0.0) >= per_worker for node in nodes):
            raise ExecutorError(f"no node of {where} has {per_worker:g} {kind} for one worker")


def local_resources() -> dict[str, float]:
    """The CPUs this process may run on and the NVIDIA GPUs it sees, as a local Ray counts them."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return {"CPU": float(cpus), "GPU": float(visible_gpus())}


def visible_gpus() -> int:
    """NVIDIA GPUs visible to this process: ``CUDA_VISIBLE_DEVICES`` when set, else the driver's
    list (``/proc/driver/nvidia/gpus``, or ``nvidia-smi -L``); no torch, no CUDA context."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip() and d.strip() != "-1"])
    proc = Path("/proc/driver/nvidia/gpus")
    if proc.is_dir():
        return len(list(proc.iterdir()))
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return 0
    try:
        listing = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return 0
    return sum(line.startswith("GPU ") for line in listing.stdout.splitlines())


def cluster_resources(address: str) -> tuple[dict[str, float], list[dict[str, float]]]:
    """The total and per-node resources of a Ray cluster, read by a short-lived process (a
    connection that hangs is abandoned after ``CONNECT_TIMEOUT_S``; this process stays out of
    the cluster until the executor joins it)."""
    where = f"the Ray cluster at {address}"
    try:
        done = subprocess.run([sys.executable, "-c", _CLUSTER_SCRIPT, address],
                              capture_output=True, text=True, timeout=CONNECT_TIMEOUT_S)
    except subprocess.TimeoutExpired as err:
        said = _last_line(err.stderr)  # e.g. Ray retrying with a missing authentication token
        raise ExecutorError(with_auth_hint(f"cannot reach {where} within {CONNECT_TIMEOUT_S:g} s"
                                           + (f" ({said})" if said else ""))) from None
    lines = done.stdout.strip().splitlines()
    try:
        answer = json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        said = _last_line(done.stderr) or f"exit code {done.returncode}"
        raise ExecutorError(with_auth_hint(f"cannot reach {where}: {said}")) from None
    if "error" in answer:
        raise ExecutorError(with_auth_hint(f"cannot reach {where}: {answer['error']}"))
    return answer["total"], answer["nodes"]


AUTH_HINT = ("; the cluster uses Ray's token authentication: set RAY_AUTH_MODE=token here and "
             "give this machine the head's token (~/.ray/auth_token, as `ray get-auth-token` on "
             "the head prints it, or RAY_AUTH_TOKEN / RAY_AUTH_TOKEN_PATH)")


def with_auth_hint(message: str) -> str:
    """A connection error, with what to set when Ray refused it for a missing or wrong token
    (Ray 2.59 and later enable token authentication on clusters they start)."""
    refused = "InvalidAuthToken" in message or "Unauthenticated" in message
    return message + AUTH_HINT if refused else message


def _last_line(output: str | bytes | None) -> str:
    """The last thing a process said on stderr, without Ray's ``[time level pid] file:line:``."""
    if isinstance(output, bytes):
        output = output.decode(errors="replace")
    lines = (output or "").strip().splitlines()
    return re.sub(r"^\[[^]]*\]\s*(\S+:\d+:\s*)?", "", lines[-1]) if lines else ""
