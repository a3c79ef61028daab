"""Pareto fronts: the non-dominated points of a multi-objective study."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def to_minimization(values: np.ndarray, directions: Sequence[str]) -> np.ndarray:
    """Negate the maximized columns so that smaller is better everywhere."""
    signs = np.array([-1.0 if d == "maximize" else 1.0 for d in directions])
    return np.asarray(values, dtype=np.float64) * signs


def non_dominated(values: np.ndarray, directions: Sequence[str]) -> np.ndarray:
    """Boolean mask of the rows no other row dominates (at least as good in every objective and
    better in one). Equal rows do not dominate each other, so duplicates stay on the front."""
    points = to_minimization(values, directions)
    n = len(points)
    mask = np.zeros(n, dtype=bool)
    if n == 0:
        return mask
    order = np.lexsort(points.T[::-1])  # sorted by the first objective, then the next ...
    front: list[int] = []
    for i in order:
        p = points[i]
        if front:
            f = points[front]
            if np.any(np.all(f <= p, axis=1) & np.any(f < p, axis=1)):
                continue
        front.append(i)
    mask[front] = True
    return mask
