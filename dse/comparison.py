"""Comparing the Pareto fronts of several studies on the same objectives.

Every study is measured against one reference point (the worst of the studies' own reference
points in each objective) and one reference front (the non-dominated union of all their
feasible trials), so the numbers are comparable across studies and strategies. Fronts are the
measured designs'; a study with retrained designs also reports its hypervolume with each design
at its best retrained accuracy (against the same reference point and box).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from dse.indicators import coverage, hypervolume, hypervolume_box, igd_plus, normalized
from dse.pareto import non_dominated, to_minimization
from dse.reports.compare import plot_comparison
from dse.reports.objectives import minimization_form
from dse.study import Study
from dse.study_file import StudyFileError


def _check_compatible(studies: list[Study]) -> None:
    if len(studies) < 2:
        raise StudyFileError("compare needs at least two studies")
    first = studies[0]
    for study in studies[1:]:
        # the same objectives and directions, in any order
        if dict(zip(study.objectives, study.directions)) != \
                dict(zip(first.objectives, first.directions)):
            raise StudyFileError(
                f"{study.folder}: objectives {study.objectives} differ from "
                f"{first.folder}'s {first.objectives}; fronts are comparable only on the same objectives")


def common_reference(studies: list[Study]) -> np.ndarray:
    """The worst reference value of each objective over the studies (minimization form)."""
    first = studies[0]
    refs = [s.reference_point for s in studies if s.reference_point is not None]
    if not refs:
        raise StudyFileError(f"{first.folder}: no reference point yet (the study has no trial)")
    points = to_minimization(np.array([[r[k] for k in first.objectives] for r in refs]),
                             first.directions)
    return points.max(axis=0)


def compare(studies: list[Study], plot: Path | None = None) -> pd.DataFrame:
    """One row per study: evaluations, front size, hypervolume against the common reference
    (raw, and as a fraction of the box between the common ideal and reference points), IGD+
    against the union front, and coverage of the other studies' fronts; when a study has
    retrained designs, ``hypervolume_retrained`` (raw and normalized, NaN for the others):
    its front with each design at its best retrained accuracy. Optionally a plot of the fronts
    overlaid with the normalized hypervolume over evaluations."""
    _check_compatible(studies)
    first = studies[0]
    reference = common_reference(studies)
    fronts = [minimization_form(first, study.pareto()) for study in studies]
    union = np.vstack(fronts)
    union = union[non_dominated(union, ["minimize"] * len(first.objectives))]
    ideal, box = hypervolume_box(union, reference)
    rows = []
    for i, (study, front) in enumerate(zip(studies, fronts)):
        others = [f for j, f in enumerate(fronts) if j != i]
        raw = hypervolume(front, reference)
        rows.append({
            "study": study.name,
            "folder": str(study.folder),
            "strategy": study.settings.strategy.type,
            "evaluations": study.search_trials_done(),
            "front_size": len(front),
            "hypervolume": raw,
            "hypervolume_normalized": normalized(raw, box),
            "igd_plus": igd_plus(front, union),
            "coverage": coverage(front, np.vstack(others)),
            **_after_retraining(study, reference, box),
        })
    table = pd.DataFrame(rows)
    if table["hypervolume_retrained"].isna().all():
        table = table.drop(columns=["hypervolume_retrained", "hypervolume_retrained_normalized"])
    if plot is not None:
        plot_comparison(studies, reference, ideal, box, Path(plot))
    return table


def _after_retraining(study: Study, reference: np.ndarray, box: float) -> dict[str, float]:
    """Hypervolume of the study's front with each design at its best retrained accuracy
    (NaN without retrained designs); normalized by the measured fronts' box, so it can pass 1
    where retraining moves a design past the common ideal point."""
    if study.retrained().empty:
        return {"hypervolume_retrained": np.nan, "hypervolume_retrained_normalized": np.nan}
    raw = hypervolume(minimization_form(study, study.pareto(retrained=True)), reference)
    return {"hypervolume_retrained": raw, "hypervolume_retrained_normalized": normalized(raw, box)}
