"""Search strategies behind one ask/tell contract.

A strategy proposes configurations; whoever evaluates them tells it the results. Strategies
write nothing: on resume the driver replays every stored trial through ``tell``, which rebuilds
their state, so a resumed study proposes exactly what an uninterrupted one would have.
Sequence strategies (random, grid) number their proposals; a proposal whose number is already
stored is never made again.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from dse.space import AppAxOSubspace


@dataclass(frozen=True)
class Proposal:
    """A configuration to evaluate and its number in the strategy's sequence."""

    config: int
    index: int


class Strategy(ABC):
    """Ask/tell contract shared by every strategy."""

    name: str

    @abstractmethod
    def ask(self) -> Proposal | None:
        """The next configuration to evaluate, or None when the strategy has nothing left."""

    @abstractmethod
    def tell(self, proposal: Proposal, values: Sequence[float] | None) -> None:
        """Report a finished evaluation (``values`` None for a failed one)."""


class SequenceStrategy(Strategy):
    """A strategy whose i-th proposal is a fixed function of i and the seed."""

    def __init__(self, space: AppAxOSubspace) -> None:
        self.space = space
        self._next = 0
        self._done: set[int] = set()

    @abstractmethod
    def _point(self, index: int) -> int | None:
        """Subspace point of proposal ``index``, or None when the sequence has ended."""

    def ask(self) -> Proposal | None:
        while self._next in self._done:
            self._next += 1
        point = self._point(self._next)
        if point is None:
            return None
        proposal = Proposal(self.space.config(point), self._next)
        self._next += 1
        return proposal

    def tell(self, proposal: Proposal, values: Sequence[float] | None) -> None:
        self._done.add(proposal.index)


class GridStrategy(SequenceStrategy):
    """Every point of the subspace in counting order (the lowest free bit changes fastest)."""

    name = "grid"

    def __init__(self, space: AppAxOSubspace, start: int = 0) -> None:
        super().__init__(space)
        self.start = start

    def _point(self, index: int) -> int | None:
        point = self.start + index
        return point if point < self.space.size else None


class RandomStrategy(SequenceStrategy):
    """Uniform points of the subspace without repetition, from a seeded generator."""

    name = "random"
    _PERMUTE_UP_TO = 1 << 20  # small subspaces: one shuffled list; large ones: rejection
    _BLOCK = 4096

    def __init__(self, space: AppAxOSubspace, seed: int) -> None:
        super().__init__(space)
        self._rng = np.random.default_rng(seed)
        self._order: list[int] = []
        self._seen: set[int] = set()
        if space.size <= self._PERMUTE_UP_TO:
            self._order = self._rng.permutation(space.size).tolist()
            self._seen = set(self._order)

    def _point(self, index: int) -> int | None:
        while len(self._order) <= index and len(self._seen) < self.space.size:
            for point in self.space.sample_points(self._rng, self._BLOCK).tolist():
                if point not in self._seen:
                    self._seen.add(point)
                    self._order.append(point)
        return self._order[index] if index < len(self._order) else None


def make_strategy(settings: dict, space: AppAxOSubspace, seed: int) -> Strategy:
    """Build the strategy a study file's ``strategy`` section names."""
    kind = settings["type"]
    if kind == "grid":
        return GridStrategy(space, settings.get("start", 0))
    if kind == "random":
        return RandomStrategy(space, seed)
    raise ValueError(f"unknown strategy {kind!r}")
