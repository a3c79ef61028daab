"""What a study leaves for people: trials.csv, pareto.csv and the pareto.png plot."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from dse.study import BASELINE, Study

LABELS = {
    "accuracy": "test accuracy",
    "f1_macro": "macro F1",
    "fpga_luts": "FPGA LUTs (analytic model)",
    "mae": "mean absolute error",
    "mred": "mean relative error distance",
    "wce": "worst-case error",
    "error_probability": "error probability",
}


def write_reports(study: Study) -> dict[str, Path]:
    """Write the tables and the front plot into the study folder; returns their paths."""
    trials = study.trials
    front = study.pareto()
    paths = {
        "trials": study.folder / "trials.csv",
        "pareto": study.folder / "pareto.csv",
        "plot": study.folder / "pareto.png",
    }
    trials.to_csv(paths["trials"], index=False)
    front.to_csv(paths["pareto"], index=False)
    plot_front(study, trials, front, paths["plot"])
    return paths


def plot_front(study: Study, trials: pd.DataFrame, front: pd.DataFrame, path: Path) -> None:
    """The first objective (y) against the second (x): dominated trials grey, the front
    highlighted as a staircase, the exact multiplier marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    y_key, x_key = study.objectives[0], study.objectives[1]
    done = trials[trials["state"] == "COMPLETE"] if not trials.empty else trials
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    if not done.empty:
        ax.scatter(done[x_key], done[y_key], s=14, c="0.75", label=f"evaluated ({len(done)})")
        ordered = front.sort_values(x_key)
        ax.step(ordered[x_key], ordered[y_key], where="post", c="tab:blue", lw=1.2, alpha=0.8)
        ax.scatter(ordered[x_key], ordered[y_key], s=26, c="tab:blue",
                   label=f"Pareto front ({len(front)})", zorder=3)
        exact = done[done["role"] == BASELINE]
        if not exact.empty:
            ax.scatter(exact[x_key], exact[y_key], marker="*", s=220, c="tab:red",
                       edgecolors="k", zorder=4, label="exact multiplier")
    ax.set_xlabel(LABELS.get(x_key, x_key))
    ax.set_ylabel(LABELS.get(y_key, y_key))
    ax.set_title(f"{study.name}: {LABELS.get(y_key, y_key)} vs {LABELS.get(x_key, x_key)}")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
