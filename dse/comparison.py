"""Comparing the Pareto fronts of several studies on the same objectives.

Every study is measured against one reference point (the worst of the studies' own reference
points in each objective) and one reference front (the non-dominated union of all their
feasible trials), so the numbers are comparable across studies and strategies.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from dse.indicators import coverage, hypervolume, igd_plus
from dse.pareto import non_dominated, to_minimization
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
    """One row per study: evaluations, front size, hypervolume against the common reference,
    IGD+ against the union front, and coverage of the other studies' fronts; optionally a plot
    of the fronts overlaid with the hypervolume over evaluations."""
    _check_compatible(studies)
    first = studies[0]
    reference = common_reference(studies)
    fronts = []
    for study in studies:
        done = study.pareto()
        fronts.append(to_minimization(done[first.objectives].to_numpy(dtype=float), first.directions)
                      if not done.empty else np.empty((0, len(first.objectives))))
    union = np.vstack(fronts)
    union = union[non_dominated(union, ["minimize"] * len(first.objectives))]
    rows = []
    for i, (study, front) in enumerate(zip(studies, fronts)):
        others = [f for j, f in enumerate(fronts) if j != i]
        rows.append({
            "study": study.name,
            "folder": str(study.folder),
            "strategy": study.settings.strategy.type,
            "evaluations": study.search_trials_done(),
            "front_size": len(front),
            "hypervolume": hypervolume(front, reference),
            "igd_plus": igd_plus(front, union),
            "coverage": coverage(front, np.vstack(others)),
        })
    table = pd.DataFrame(rows)
    if plot is not None:
        plot_comparison(studies, reference, Path(plot))
    return table


def plot_comparison(studies: list[Study], reference: np.ndarray, path: Path) -> None:
    """Fronts overlaid (first objective against each other one) and hypervolume over
    evaluations, one colour per study."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    first = studies[0]
    y_key, others = first.objectives[0], first.objectives[1:]
    fig, axes = plt.subplots(1, len(others) + 1, figsize=(6 * (len(others) + 1), 4.5), dpi=110,
                             squeeze=False)
    ref_row = to_minimization(reference[None, :], first.directions)[0]  # back to study units
    ref = dict(zip(first.objectives, ref_row))
    for study, colour in zip(studies, plt.rcParams["axes.prop_cycle"].by_key()["color"] * 4):
        front = study.pareto()
        for ax, x_key in zip(axes[0], others):
            if not front.empty:
                stair = front.sort_values(x_key)
                ax.step(stair[x_key], stair[y_key], where="post", color=colour, alpha=0.8)
                ax.scatter(stair[x_key], stair[y_key], s=18, color=colour, label=study.name)
        history = study.hypervolume_history(ref)
        axes[0][-1].plot(history["evaluations"], history["hypervolume"], color=colour, label=study.name)
    for ax, x_key in zip(axes[0], others):
        ax.set_xlabel(x_key)
        ax.set_ylabel(y_key)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0][-1].set_xlabel("evaluations")
    axes[0][-1].set_ylabel("hypervolume (common reference)")
    axes[0][-1].grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
