"""The ask/tell contract every strategy follows.

A strategy proposes configurations of a search space and is told the results; it writes
nothing. On resume the driver tells it every stored trial again (in storage order), which
rebuilds its state, so a resumed study proposes what an uninterrupted one would have. Every
proposal carries its index in the strategy's own sequence; a told index is never proposed again.

Strategies search a space through its integer variables (``space.cardinalities``, one value per
variable as ``space.digits`` spells a point), so bit spaces and layer-wise spaces alike. The
``initial`` configurations (for example seeded from a per-layer sensitivity table) are proposed
first; a resumed study is given the same ones.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

from dse.space import Space


@dataclass(frozen=True)
class Proposal:
    """A configuration to evaluate, its index in the strategy's sequence, and (for generational
    strategies) its generation."""

    config: int
    index: int
    generation: int | None = None


@dataclass(frozen=True)
class Evaluation:
    """What a strategy is told: objective values in the study's directions (None when the
    evaluation failed) and constraint values (feasible when every one is <= 0)."""

    values: tuple[float, ...] | None
    constraints: tuple[float, ...] = ()

    @property
    def feasible(self) -> bool:
        return self.values is not None and all(c <= 0 for c in self.constraints)


class Strategy(ABC):
    """Proposes configurations of ``space`` for objectives with ``directions``."""

    name: str

    def __init__(self, space: Space, directions: list[str], n_constraints: int, seed: int,
                 initial: Sequence[int] = ()):
        self.space = space
        self.directions = directions
        self.n_constraints = n_constraints
        self.seed = seed
        for config in initial:
            if config not in space:
                raise ValueError(f"initial configuration {config} is outside the search space")
        self.initial: tuple[int, ...] = tuple(dict.fromkeys(int(c) for c in initial))

    @abstractmethod
    def ask(self) -> Proposal | None:
        """The next configuration, or None when the strategy has nothing (more) to propose."""

    @abstractmethod
    def tell(self, proposal: Proposal, evaluation: Evaluation) -> None:
        """Report a finished evaluation of a proposal (live, or replayed from the store)."""
