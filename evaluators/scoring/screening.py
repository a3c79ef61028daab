"""Screening: score a configuration on a subset of the test images first, and skip the full
evaluation when even an optimistic bound on its accuracy could not reach the front.

The bound is Wilson's score interval on the subset accuracy (one-sided, at the study's
confidence), treating the subset as a random sample of the test set (it is a seeded random
subset, not the first images: MNIST's test set is ordered by writer group). A configuration is
screened out when its upper bound is below the lowest feasible accuracy, or when the point
(upper-bound accuracy, exact costs) is dominated by the current front of fully evaluated
configurations. Screened results are stored with ``fidelity: screened`` and never reach a
front.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from statistics import NormalDist

import numpy as np


@dataclass(frozen=True)
class FrontContext:
    """What the driver knows when it submits a candidate: the front so far (study units) and
    the lowest accuracy the constraints allow."""

    objectives: tuple[str, ...]
    directions: tuple[str, ...]
    points: np.ndarray = field(default_factory=lambda: np.empty((0, 0)))
    min_accuracy: float | None = None

    def dominates(self, candidate: dict[str, float]) -> bool:
        """Whether some front point is at least as good as ``candidate`` everywhere and better
        somewhere."""
        if len(self.points) == 0:
            return False
        signs = np.array([-1.0 if d == "maximize" else 1.0 for d in self.directions])
        point = np.array([candidate[k] for k in self.objectives]) * signs
        front = self.points * signs
        return bool(np.any(np.all(front <= point, axis=1) & np.any(front < point, axis=1)))


def wilson_upper(correct: int, n: int, confidence: float) -> float:
    """One-sided upper confidence bound of a proportion (Wilson score)."""
    z = NormalDist().inv_cdf(confidence)
    p = correct / n
    centre = p + z * z / (2 * n)
    spread = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return min(1.0, (centre + spread) / (1 + z * z / n))


@dataclass(frozen=True)
class Screening:
    """Screen on ``images`` test images at ``confidence``."""

    images: int
    confidence: float
    seed: int = 0

    def rows(self, total: int) -> np.ndarray:
        """The seeded random subset of test-image indices (sorted, for cache-friendly reads)."""
        rng = np.random.default_rng(self.seed)
        return np.sort(rng.permutation(total)[: min(self.images, total)])
