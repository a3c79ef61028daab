"""Executors: where evaluations run. The driver submits proposals and collects outcomes; only
the driver writes to the trial store.

``slots`` evaluations may be in flight at once; ``next_outcome`` returns whichever finishes
first, so results stream back as they come and the strategy is asked for more as slots free up.
"""

from __future__ import annotations

import datetime as dt
import traceback
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

from dse.strategies import Proposal


class ExecutorError(RuntimeError):
    """An executor that cannot start (unreachable cluster, impossible resources); one line."""


@dataclass
class Outcome:
    """A finished evaluation: its metrics, or the error that ended it."""

    proposal: Proposal
    role: str
    started: dt.datetime
    metrics: dict | None = None
    error: str | None = None
    traceback: str | None = None
    attempts: int = 1
    info: dict = field(default_factory=dict)


def evaluate_safely(evaluator, proposal: Proposal, role: str, context=None) -> Outcome:
    """Run one evaluation (``context``: what the evaluator may use to skip work, such as the
    front for screening); an exception becomes an outcome with its message (a failed trial)."""
    started = dt.datetime.now()
    try:
        metrics = evaluator.evaluate(proposal.config) if context is None \
            else evaluator.evaluate(proposal.config, context)
        return Outcome(proposal, role, started, metrics=metrics)
    except Exception as err:  # a candidate that cannot be evaluated is a failed trial
        return Outcome(proposal, role, started, error=f"{type(err).__name__}: {err}",
                       traceback=traceback.format_exc(limit=5))


class Executor(ABC):
    """Runs evaluations for the driver."""

    slots: int = 1

    @property
    @abstractmethod
    def in_flight(self) -> int:
        """Evaluations submitted and not yet returned by ``next_outcome``."""

    @abstractmethod
    def submit(self, proposal: Proposal, role: str, context=None) -> None:
        """Start evaluating a proposal (at most ``slots`` at a time)."""

    @abstractmethod
    def next_outcome(self) -> Outcome:
        """Block until an evaluation finishes and return it."""

    @abstractmethod
    def close(self) -> None:
        """Stop the workers (evaluations still running are abandoned, not stored)."""


class SerialExecutor(Executor):
    """Evaluates in the driver's process, one at a time (tests, debugging)."""

    def __init__(self, evaluator) -> None:
        self.evaluator = evaluator
        self._queue: list[tuple] = []

    @property
    def in_flight(self) -> int:
        return len(self._queue)

    def submit(self, proposal: Proposal, role: str, context=None) -> None:
        self._queue.append((proposal, role, context))

    def next_outcome(self) -> Outcome:
        return evaluate_safely(self.evaluator, *self._queue.pop(0))

    def close(self) -> None:
        self._queue.clear()
