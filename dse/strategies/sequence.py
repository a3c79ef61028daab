"""Strategies whose i-th proposal is a fixed function of i and the seed: grid, random, sobol."""

from __future__ import annotations

from abc import abstractmethod

import numpy as np

from dse.strategies.base import Evaluation, Proposal, Strategy


class SequenceStrategy(Strategy):
    """Proposes ``config(0), config(1), ...`` skipping indices already told."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._next = 0
        self._done: set[int] = set()

    @abstractmethod
    def config(self, index: int) -> int | None:
        """Configuration of proposal ``index``, or None when the sequence has ended."""

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
    """Every point of the subspace in counting order (the lowest free bit changes fastest),
    from ``start`` on; or an explicit list of configurations, in its order."""

    name = "grid"

    def __init__(self, *args, start: int = 0, configs: list[int] | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.start = start
        self.configs = configs

    def config(self, index: int) -> int | None:
        if self.configs is not None:
            return self.configs[index] if index < len(self.configs) else None
        point = self.start + index
        return self.space.config(point) if point < self.space.size else None


class _DistinctPoints(SequenceStrategy):
    """A sequence of distinct subspace points drawn from a deterministic generator."""

    _BLOCK = 4096

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._order: list[int] = []
        self._seen: set[int] = set()
        self._exhausted = False

    @abstractmethod
    def _draw(self, count: int) -> np.ndarray:
        """The generator's next ``count`` points (repeats allowed)."""

    def config(self, index: int) -> int | None:
        while len(self._order) <= index and not self._exhausted:
            before = len(self._order)
            for point in self._draw(self._BLOCK).tolist():
                if point not in self._seen:
                    self._seen.add(point)
                    self._order.append(point)
            # all points seen, or a whole block brought nothing new: the generator is spent
            self._exhausted = len(self._seen) == self.space.size or len(self._order) == before
        return self.space.config(self._order[index]) if index < len(self._order) else None


class RandomStrategy(_DistinctPoints):
    """Uniform points of the subspace without repetition (small subspaces: one shuffle)."""

    name = "random"
    _PERMUTE_UP_TO = 1 << 20

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._rng = np.random.default_rng(self.seed)
        if self.space.size <= self._PERMUTE_UP_TO:
            self._order = self._rng.permutation(self.space.size).tolist()
            self._seen = set(self._order)
            self._exhausted = True

    def _draw(self, count: int) -> np.ndarray:
        return self.space.sample_points(self._rng, count)


class SobolStrategy(_DistinctPoints):
    """A scrambled Sobol sequence over the free bits (a bit is 1 where its coordinate is at
    least 0.5): low-discrepancy coverage of the subspace; repeats are skipped."""

    name = "sobol"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        from scipy.stats import qmc

        self._sobol = qmc.Sobol(d=len(self.space.free_bits), scramble=True, seed=self.seed)
        self._weights = 1 << np.arange(len(self.space.free_bits), dtype=np.int64)

    def _draw(self, count: int) -> np.ndarray:
        bits = self._sobol.random(count) >= 0.5
        return bits.astype(np.int64) @ self._weights
