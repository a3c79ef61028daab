"""The plot of ``python -m dse compare`` and ``dse.compare(..., plot=...)``: the fronts of several
studies overlaid in every pair of objectives and their hypervolume over evaluations, against the
common reference and ideal points (computed in ``dse.comparison``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dse.indicators import normalized
from dse.outputs import png_metadata, replacing
from dse.pareto import to_minimization
from dse.reports.figures import pyplot
from dse.reports.labels import PROJECTION_NOTE, label, point_text
from dse.reports.objectives import objective_pairs
from dse.study import Study


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
