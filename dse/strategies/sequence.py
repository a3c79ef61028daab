"""Strategies whose i-th proposal is a fixed function of i and the seed: grid, random, sobol."""

from __future__ import annotations

from abc import abstractmethod

import numpy as np

from dse.strategies.base import Evaluation, Proposal, Strategy


class SequenceStrategy(Strategy):
    """Proposes the initial configurations, then ``sequence(0), sequence(1), ...`` without
    those, skipping indices already told."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._next = 0
        self._done: set[int] = set()
        self._after: list[int] = []  # the sequence after the initial configurations, so far
        self._cursor = 0  # the next index of ``sequence`` to read

    @abstractmethod
    def sequence(self, index: int) -> int | None:
        """Configuration ``index`` of the strategy's own sequence, or None when it has ended."""

    def config(self, index: int) -> int | None:
        """Configuration of proposal ``index``, or None when there is none."""
        if index < len(self.initial):
            return self.initial[index]
        while len(self._after) <= index - len(self.initial):
            config = self.sequence(self._cursor)
            if config is None:
                return None
            self._cursor += 1
            if config not in self.initial:
                self._after.append(config)
        return self._after[index - len(self.initial)]

    def ask(self) -> Proposal | None:
        while self._next in self._done:
            self._next += 1
        config = self.config(self._next)
        if config is None:
            return None
        self._next += 1
        return Proposal(config, self._next - 1)

    def tell(self, proposal: Proposal, evaluation: Evaluation) -> None:
        self._done.add(proposal.index)


class GridStrategy(SequenceStrategy):
    """Every point of the space in counting order (the lowest variable changes fastest), from
    ``start`` on; or an explicit list of configurations, in its order."""

    name = "grid"

    def __init__(self, *args, start: int = 0, configs: list[int] | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.start = start
        self.configs = configs

    def sequence(self, index: int) -> int | None:
        if self.configs is not None:
            return self.configs[index] if index < len(self.configs) else None
        point = self.start + index
        return self.space.config(point) if point < self.space.size else None


class _DistinctPoints(SequenceStrategy):
    """A sequence of distinct points of the space drawn from a deterministic generator."""

    _BLOCK = 4096

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._order: list[int] = []
        self._seen: set[int] = set()
        self._exhausted = False

    @abstractmethod
    def _draw(self, count: int) -> list[int]:
        """The generator's next ``count`` points (repeats allowed)."""

    def sequence(self, index: int) -> int | None:
        while len(self._order) <= index and not self._exhausted:
            before = len(self._order)
            for point in self._draw(self._BLOCK):
                if point not in self._seen:
                    self._seen.add(point)
                    self._order.append(point)
            # all points seen, or a whole block brought nothing new: the generator is spent
            self._exhausted = len(self._seen) == self.space.size or len(self._order) == before
        return self.space.config(self._order[index]) if index < len(self._order) else None


class RandomStrategy(_DistinctPoints):
    """Uniform points of the space without repetition (small spaces: one shuffle)."""

    name = "random"
    _PERMUTE_UP_TO = 1 << 20

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._rng = np.random.default_rng(self.seed)
        if self.space.size <= self._PERMUTE_UP_TO:
            self._order = self._rng.permutation(self.space.size).tolist()
            self._seen = set(self._order)
            self._exhausted = True

    def _draw(self, count: int) -> list[int]:
        return self.space.sample_points(self._rng, count).tolist()


class SobolStrategy(_DistinctPoints):
    """A scrambled Sobol sequence over the space's variables (coordinate ``u`` of a variable of
    ``n`` values picks value ``floor(u * n)``; a bit is 1 where ``u >= 0.5``): low-discrepancy
    coverage of the space; repeats are skipped."""

    name = "sobol"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        from scipy.stats import qmc

        self._cardinalities = np.array(self.space.cardinalities)
        self._sobol = qmc.Sobol(d=len(self._cardinalities), scramble=True, seed=self.seed)

    def _draw(self, count: int) -> list[int]:
        u = self._sobol.random(count)
        digits = np.minimum((u * self._cardinalities).astype(np.int64), self._cardinalities - 1)
        return [self.space.from_digits(row) for row in digits.tolist()]
