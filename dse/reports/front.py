"""The Pareto front a study writes: ``pareto.png`` (one panel for two objectives, every pair of
objectives for three or four, retrained designs as arrows from before to after) and
``pareto_parallel.png`` (parallel coordinates, for three objectives or more)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from dse.pareto import to_minimization
from dse.reports.figures import pyplot, wrap
from dse.reports.labels import NAMES, PROJECTION_NOTE, label, sense
from dse.reports.objectives import completed, minimization_form, objective_pairs
from dse.study import BASELINE, Study


def plot_front(study: Study, trials: pd.DataFrame, front: pd.DataFrame, path: Path) -> None:
    """The front over all objectives among every evaluated configuration: one panel for two
    objectives (with the staircase the front bounds), every pair of objectives for three or
    four (no staircases: they would be the front of the projection, not of the study).
    Retrained designs are arrows from each design's accuracy before to after."""
    plt = pyplot()
    done, retrained = completed(trials)
    k = len(study.objectives)
    pairs = objective_pairs(study.objectives)
    rows, cols = (len(pairs) + 2) // 3, min(len(pairs), 3)
    fig, axes = plt.subplots(rows, cols, figsize=(7 if k == 2 else 15, 4.6 * rows + 1.1),
                             dpi=130, squeeze=False)
    for ax, (x_key, y_key) in zip(axes.flat, pairs):
        _front_panel(study, ax, done, front, x_key, y_key, staircase=k == 2)
        _retrained_arrows(ax, done, retrained, x_key, y_key)
        ax.set_xlabel(label(study, x_key), fontsize=9)
        ax.set_ylabel(label(study, y_key), fontsize=9)
    senses = "; ".join(f"{NAMES.get(m, m)}: {sense(d)}"
                       for m, d in zip(study.objectives, study.directions))
    caption = f"{senses}." if k == 2 else f"{senses}. {PROJECTION_NOTE.format(k=k)}"
    handles, names = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", ncol=2 if len(handles) == 4 else 3,
               fontsize=9, frameon=False,
               bbox_to_anchor=(0.5, 0.35 / fig.get_figheight()))
    fig.text(0.5, 0.08 / fig.get_figheight(), wrap(caption, 110 if k == 2 else 190), fontsize=8.5,
             ha="center", va="bottom")
    fig.suptitle(f"{study.name}: Pareto front of {len(done)} evaluated configurations"
                 f"{' (pairwise projections)' if k > 2 else ''}", fontsize=12)
    fig.tight_layout(rect=(0, 1.0 / fig.get_figheight(), 1, 1))
    fig.savefig(path)
    plt.close(fig)


def _front_panel(study: Study, ax, done: pd.DataFrame, front: pd.DataFrame, x_key: str,
                 y_key: str, staircase: bool) -> None:
    """One projection: every evaluation faint, the front highlighted, the exact multiplier
    starred; with ``staircase`` the region the front dominates is outlined."""
    ax.scatter(done[x_key], done[y_key], s=10, c="0.72", alpha=0.6, linewidths=0,
               label=f"evaluated ({len(done)})")
    if staircase and not front.empty:
        minimize_x = study.directions[study.objectives.index(x_key)] == "minimize"
        stair = front.sort_values(x_key)
        ax.step(stair[x_key], stair[y_key], where="post" if minimize_x else "pre", c="tab:blue",
                lw=1.0, alpha=0.7)
    ax.scatter(front[x_key], front[y_key], s=24, c="tab:blue", edgecolors="k", linewidths=0.5,
               zorder=3, label=f"Pareto front, all objectives ({len(front)})")
    exact = done[done["role"] == BASELINE]
    if not exact.empty:
        ax.scatter(exact[x_key], exact[y_key], marker="*", s=160, c="tab:red", edgecolors="k",
                   linewidths=0.6, zorder=4, label="exact multiplier")
    ax.grid(alpha=0.3)


def _retrained_arrows(ax, done: pd.DataFrame, retrained: pd.DataFrame, x_key: str,
                      y_key: str) -> None:
    """Each retrained trial as a triangle, with an arrow from its design's point (before) to
    it (after) where the projection separates them."""
    if retrained.empty:
        return
    before = done.set_index("trial")
    for _, row in retrained.iterrows():
        if row["design_trial"] in before.index:
            start = before.loc[row["design_trial"]]
            if (start[x_key], start[y_key]) != (row[x_key], row[y_key]):
                ax.annotate("", xy=(row[x_key], row[y_key]), xytext=(start[x_key], start[y_key]),
                            arrowprops={"arrowstyle": "->", "color": "tab:green", "lw": 1.2},
                            zorder=4)
    ax.scatter(retrained[x_key], retrained[y_key], marker="^", s=40, c="tab:green",
               edgecolors="k", linewidths=0.5, zorder=5,
               label=f"retrained ({len(retrained)}; arrow: its design before → after)")


def plot_parallel(study: Study, trials: pd.DataFrame, front: pd.DataFrame, path: Path) -> None:
    """Parallel coordinates of a non-empty front: one vertical axis per objective, scaled
    between the worst and best evaluated value and turned so that up is better; one line per
    member, coloured by the first objective."""
    plt = pyplot()
    done, _ = completed(trials)
    k = len(study.objectives)
    fig, ax = plt.subplots(figsize=(2.4 * k + 2, 5), dpi=130)
    evaluated = minimization_form(study, done)
    best, worst = evaluated.min(axis=0), evaluated.max(axis=0)
    span = np.where(worst > best, worst - best, 1.0)

    def height(frame: pd.DataFrame) -> np.ndarray:
        return (worst - minimization_form(study, frame)) / span  # 1 = best evaluated

    first = study.objectives[0]
    shade = plt.Normalize(float(front[first].min()), float(front[first].max()))
    for value, line in zip(front[first], height(front)):
        ax.plot(range(k), line, c=plt.cm.viridis(shade(value)), lw=1.2, alpha=0.85)
    exact = done[done["role"] == BASELINE]
    for line in height(exact):
        ax.plot(range(k), line, c="tab:red", lw=2, ls="--", label="exact multiplier")
    for i in range(k):
        ax.axvline(i, c="k", lw=0.8)
        for frac in np.linspace(0, 1, 5):  # the axis's own values, in study units
            value = to_minimization(np.array([[worst[i] - frac * span[i]]]),
                                    [study.directions[i]])[0, 0]
            ax.text(i + 0.03, frac, f"{value:.4g}", fontsize=7.5, va="center",
                    bbox={"fc": "white", "ec": "none", "alpha": 0.75, "pad": 0.6})
    ax.plot([], [], c=plt.cm.viridis(0.5), label=f"Pareto front ({len(front)})")
    bar = fig.colorbar(plt.cm.ScalarMappable(shade, "viridis"), ax=ax, pad=0.02, fraction=0.03)
    bar.set_label(f"front colour: {label(study, first)}", fontsize=8)
    ax.set_xticks(range(k), [wrap(label(study, m), 22) for m in study.objectives], fontsize=8)
    ax.set_yticks([0, 1], ["worst\nevaluated", "best\nevaluated"], fontsize=8)
    ax.set_xlim(-0.15, k - 0.65)
    ax.set_ylim(-0.05, 1.05)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, fontsize=8, frameon=False)
    ax.set_title(f"{study.name}: Pareto front in parallel coordinates (up is better)", fontsize=11)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
