"""What a study leaves for people: trials.csv, pareto.csv and the pareto.png plot."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from dse.html_report import write_front_html
from dse.pareto import non_dominated
from dse.study import BASELINE, Study

LABELS = {
    "accuracy": "test accuracy",
    "f1_macro": "macro F1",
    "fpga_luts": "FPGA LUTs (Vivado-calibrated model)",
    "fpga_power": "FPGA power (Vivado-calibrated model)",
    "fpga_delay": "FPGA critical path [ns] (Vivado-calibrated model)",
    "mae": "mean absolute error",
    "mred": "mean relative error distance",
    "wce": "worst-case error",
    "error_probability": "error probability",
}


def label(study: Study, metric: str) -> str:
    """Axis label of a metric, with the units of the study's hardware model."""
    if metric not in ("area", "power", "delay", "pdp"):
        return LABELS.get(metric, metric)
    hw = study.settings.hardware
    units = {"area": "um^2", "power": "uW", "delay": "ns", "pdp": "fJ"} if hw.liberty else {
        "area": "transistors", "power": "transistor toggles/cycle", "delay": "gate levels",
        "pdp": "toggles x levels"}
    name = {"power": f"power ({hw.power})", "pdp": "power-delay product"}.get(metric, metric)
    source = hw.liberty or "estimate"
    return f"{name} [{units[metric]}, {source}]"


def write_reports(study: Study) -> dict[str, Path]:
    """Write the tables and the front plot into the study folder; returns their paths."""
    trials = study.trials
    front = study.pareto()
    paths = {
        "trials": study.folder / "trials.csv",
        "pareto": study.folder / "pareto.csv",
        "plot": study.folder / "pareto.png",
        "html": study.folder / "pareto.html",
        "hypervolume": study.folder / "hypervolume.png",
    }
    # Verilog of generated designs stays in the store and in pareto/, not in the tables
    trials.drop(columns=["verilog"], errors="ignore").to_csv(paths["trials"], index=False)
    front.drop(columns=["verilog"], errors="ignore").to_csv(paths["pareto"], index=False)
    plot_front(study, trials, front, paths["plot"])
    write_front_html(study.name, trials, front, study.objectives,
                     {k: label(study, k) for k in study.objectives}, paths["html"])
    plot_hypervolume(study, paths["hypervolume"])
    return paths


def plot_hypervolume(study: Study, path: Path) -> None:
    """Hypervolume of the feasible front after each search trial."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    history = study.hypervolume_history()
    fig, ax = plt.subplots(figsize=(6.5, 4), dpi=110)
    ax.plot(history["evaluations"], history["hypervolume"], c="tab:blue",
            label=study.settings.strategy.type)
    ax.set_xlabel("evaluations")
    ax.set_ylabel("hypervolume")
    ax.set_title(f"{study.name}: hypervolume over evaluations")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_front(study: Study, trials: pd.DataFrame, front: pd.DataFrame, path: Path) -> None:
    """The first objective against each other one (one panel each): dominated trials grey, the
    front over all objectives highlighted, the staircase of each panel's own 2-D front, the
    exact multiplier marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    y_key, others = study.objectives[0], study.objectives[1:]
    done = trials[trials["state"] == "COMPLETE"] if not trials.empty else trials
    fig, axes = plt.subplots(1, len(others), figsize=(6.5 * len(others), 4.5), dpi=110,
                             squeeze=False)
    for ax, x_key in zip(axes[0], others):
        if not done.empty:
            ax.scatter(done[x_key], done[y_key], s=14, c="0.75", label=f"evaluated ({len(done)})")
            ax.scatter(front[x_key], front[y_key], s=26, c="tab:blue", zorder=3,
                       label=f"Pareto front ({len(front)})")
            pair = done[[x_key, y_key]].to_numpy(dtype=float)
            directions = [study.directions[study.objectives.index(k)] for k in (x_key, y_key)]
            stair = done[non_dominated(pair, directions)].sort_values(x_key)
            ax.step(stair[x_key], stair[y_key], where="post", c="tab:blue", lw=1.0, alpha=0.7)
            exact = done[done["role"] == BASELINE]
            if not exact.empty:
                ax.scatter(exact[x_key], exact[y_key], marker="*", s=220, c="tab:red",
                           edgecolors="k", zorder=4, label="exact multiplier")
        ax.set_xlabel(label(study, x_key))
        ax.set_ylabel(label(study, y_key))
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
    fig.suptitle(f"{study.name}: {len(done)} evaluated configurations")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_chain(chain: list[dict], baselines: list[dict], exact_area: float | None,
               path: Path, title: str) -> None:
    """Area against worst-case error and against MAE: a generated chain (a line in the order
    its circuits were accepted) over the truncated and broken-array baselines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, metric in zip(axes, ("wce", "mae")):
        for family, marker, name in (("trunc", "o", "truncated"), ("bam", "s", "broken array")):
            mine = [r for r in baselines if r["name"].startswith(family) and r[metric] > 0]
            if mine:
                ax.scatter([r[metric] for r in mine], [r["area"] for r in mine], marker=marker,
                           c="tab:grey", s=22, label=name)
        shown = [r for r in chain if r[metric] > 0]
        ax.plot([r[metric] for r in shown], [r["area"] for r in shown], "-^", color="tab:red",
                ms=6, lw=1, label=f"generated ({chain[0]['generator'] if chain else '-'})")
        ax.set_xscale("log")
        ax.set_xlabel("worst-case error" if metric == "wce" else "mean absolute error")
        ax.set_ylabel(f"area ({chain[0]['units']['area'] if chain else ''})")
        if exact_area is not None:
            ax.axhline(exact_area, color="black", lw=0.8, ls="--", label="exact")
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
