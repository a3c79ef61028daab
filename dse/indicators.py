"""Quality indicators of Pareto fronts: hypervolume, IGD+ and coverage.

All work on objective matrices already turned into minimization (``dse.pareto.to_minimization``)
so that one convention holds everywhere.
"""

from __future__ import annotations

import numpy as np


def hypervolume(points: np.ndarray, reference: np.ndarray) -> float:
    """Volume dominated by ``points`` and bounded by ``reference`` (points not better than the
    reference in every objective add nothing)."""
    from pymoo.indicators.hv import HV

    points = np.asarray(points, dtype=float).reshape(-1, len(reference))
    inside = points[np.all(points < reference, axis=1)]
    if len(inside) == 0:
        return 0.0
    return float(HV(ref_point=np.asarray(reference, dtype=float))(inside))


def hypervolume_box(points: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, float]:
    """The ideal point of the points inside the reference box (minimization form) and the
    volume of the box between it and the reference point, the most any front of those points
    can dominate; (reference, 0.0) when no point is inside."""
    inside = points[np.all(points < reference, axis=1)]
    if len(inside) == 0:
        return reference.copy(), 0.0
    ideal = inside.min(axis=0)
    return ideal, float(np.prod(reference - ideal))


def normalized(hypervolume: float, box: float) -> float:
    """The hypervolume as a fraction of its box (0 for an empty box)."""
    return hypervolume / box if box > 0 else 0.0


def igd_plus(points: np.ndarray, reference_front: np.ndarray) -> float:
    """IGD+ of ``points`` against a reference front (0 when it covers the reference front)."""
    from pymoo.indicators.igd_plus import IGDPlus

    if len(points) == 0:
        return float("inf")
    return float(IGDPlus(np.asarray(reference_front, dtype=float))(np.asarray(points, dtype=float)))


def coverage(a: np.ndarray, b: np.ndarray) -> float:
    """C(A, B): the fraction of B's points weakly dominated by some point of A."""
    if len(b) == 0:
        return 0.0
    if len(a) == 0:
        return 0.0
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    covered = np.all(a[:, None, :] <= b[None, :, :], axis=2).any(axis=0)
    return float(covered.mean())
