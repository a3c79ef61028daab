"""``hypervolume.png``: the normalized hypervolume of a study's feasible front after each
search trial, with the reference and ideal points that fix its box."""

from __future__ import annotations

from pathlib import Path

from dse.indicators import normalized
from dse.reports.figures import pyplot
from dse.reports.labels import point_text
from dse.reports.objectives import study_box
from dse.study import Study


def plot_hypervolume(study: Study, path: Path) -> None:
    """Normalized hypervolume of the feasible front after each search trial, with the
    reference and ideal points that fix its box."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.6), dpi=150)
    history = study.hypervolume_history()
    if study.reference_point is None or history.empty:
        ax.text(0.5, 0.5, "no search trial yet", ha="center", transform=ax.transAxes)
        note = "no reference point yet"
    else:
        reference, ideal, box = study_box(study)
        fraction = history["hypervolume"].map(lambda hv: normalized(hv, box))
        ax.plot(history["evaluations"], fraction, c="tab:blue",
                label=f"strategy: {study.settings.strategy.type}")
        ax.legend(loc="lower right")
        final = history["hypervolume"].iloc[-1]
        inside = (f"ideal point (best feasible values inside the box): {point_text(study, ideal)}"
                  if box > 0 else "no feasible point is better than the reference point in "
                                  "every objective: the hypervolume is 0")
        note = (f"final: {normalized(final, box):.4f} of the box (raw {final:.4g})\n"
                f"reference point: {point_text(study, reference)}\n{inside}")
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("search evaluations [count]")
    ax.set_ylabel("hypervolume [fraction of the ideal–reference box]")
    ax.set_title(f"{study.name}: normalized hypervolume of the feasible front", fontsize=11)
    ax.grid(alpha=0.3)
    fig.text(0.01, 0.01, note, fontsize=7.5, va="bottom", ha="left")
    fig.tight_layout(rect=(0, 0.13, 1, 1))
    fig.savefig(path)
    plt.close(fig)
