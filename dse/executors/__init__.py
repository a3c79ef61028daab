"""Executors by name: ``serial`` (in the driver) and ``ray`` (worker actors, local or a cluster).

``preflight`` checks, before a study trains or writes anything, that the executor can run."""

from __future__ import annotations

from pathlib import Path

from dse.executors.base import Executor, ExecutorError, Outcome, SerialExecutor
from dse.executors.ray_executor import RayExecutor
from dse.executors.resources import preflight

__all__ = ["Executor", "ExecutorError", "Outcome", "SerialExecutor", "make_executor", "preflight"]


def make_executor(settings, evaluator, folder: Path, log=print) -> Executor:
    """The executor a study file's ``executor`` section describes."""
    if settings.type == "serial":
        return SerialExecutor(evaluator)
    return RayExecutor(evaluator, settings, folder, log)  # imports Ray: it is optional
