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
from dse.outputs import png_metadata, replacing
from dse.pareto import non_dominated, to_minimization
from dse.report import (
    PROJECTION_NOTE,
    label,
    minimization_form,
    objective_pairs,
    point_text,
    pyplot,
)
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


def plot_comparison(studies: list[Study], reference: np.ndarray, ideal: np.ndarray, box: float,
                    path: Path) -> None:
    """Fronts overlaid in every pair of objectives (staircases only for two objectives) and
    the hypervolume over evaluations as a fraction of the common ideal-reference box, one
    colour per study; reference and ideal points (minimization form) stated below."""
    plt = pyplot()
    first = studies[0]
    k = len(first.objectives)
    pairs = objective_pairs(first.objectives)
    cols = 2 if len(pairs) < 4 else 4
    rows = -(-(len(pairs) + 1) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 4.4 * rows + 0.9), dpi=130,
                             squeeze=False)
    panels, hv_ax = axes.flat[:len(pairs)], axes.flat[len(pairs)]
    ref = dict(zip(first.objectives, to_minimization(reference[None, :], first.directions)[0]))
    for study, colour in zip(studies, plt.rcParams["axes.prop_cycle"].by_key()["color"] * 4):
        front = study.pareto()
        name = f"{study.name} ({study.settings.strategy.type})"
        for ax, (x_key, y_key) in zip(panels, pairs):
            if k == 2 and not front.empty:
                minimize_x = first.directions[first.objectives.index(x_key)] == "minimize"
                stair = front.sort_values(x_key)
                ax.step(stair[x_key], stair[y_key], where="post" if minimize_x else "pre",
                        color=colour, alpha=0.8, lw=1)
            ax.scatter(front[x_key], front[y_key], s=18, color=colour, edgecolors="k",
                       linewidths=0.3, label=name)
        history = study.hypervolume_history(ref)
        hv_ax.plot(history["evaluations"], history["hypervolume"].map(lambda v: normalized(v, box)),
                   color=colour, label=name)
    for ax, (x_key, y_key) in zip(panels, pairs):
        ax.set_xlabel(label(first, x_key), fontsize=9)
        ax.set_ylabel(label(first, y_key), fontsize=9)
        ax.grid(alpha=0.3)
    hv_ax.set_xlabel("search evaluations [count]", fontsize=9)
    hv_ax.set_ylabel("hypervolume [fraction of the ideal–reference box]", fontsize=9)
    hv_ax.set_ylim(0, 1.02)
    hv_ax.grid(alpha=0.3)
    for ax in axes.flat[len(pairs) + 1:]:
        ax.set_axis_off()
    hv_ax.legend(loc="lower right", fontsize=9, title="study (strategy)", title_fontsize=9)
    fig.suptitle(f"Pareto fronts of {len(studies)} studies"
                 f"{' (pairwise projections)' if k > 2 else ''} and their hypervolume", fontsize=12)
    note = (f"Common reference point (the worst of the studies' reference points): "
            f"{point_text(first, reference)}.\nCommon ideal point (best feasible values of the "
            f"union of the fronts inside the reference box): {point_text(first, ideal)}.")
    if k > 2:
        note += "\n" + PROJECTION_NOTE.format(k=k)
    fig.text(0.01, 0.01, note, fontsize=8, va="bottom")
    fig.tight_layout(rect=(0, 0.7 / fig.get_figheight(), 1, 0.97))
    with replacing(path) as temporary:
        fig.savefig(temporary, format="png", metadata=png_metadata("compare"))
    plt.close(fig)
