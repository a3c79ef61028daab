"""What a study leaves for people: trials.csv, pareto.csv, retrained.csv (when designs were
retrained), the front and hypervolume plots and the interactive page.

Plots follow what a reader of a paper expects: titles, axis labels with units, a front of three
or four objectives shown as pairwise projections (a scatter matrix, no staircases: a point
non-dominated in all objectives may look dominated in a projection) and as parallel
coordinates, and the hypervolume normalized by the box between the ideal and reference points.
"""

from __future__ import annotations

import textwrap
from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd

from dse.export import trials_table, write_csv
from dse.html_report import write_front_html
from dse.indicators import hypervolume_box, normalized
from dse.pareto import to_minimization
from dse.study import BASELINE, RETRAINED, Study

NAMES = {
    "accuracy": "test accuracy",
    "f1_macro": "macro F1",
    "fpga_luts": "FPGA LUTs",
    "fpga_carry4": "FPGA CARRY4s",
    "fpga_power": "FPGA power",
    "fpga_delay": "FPGA critical path",
    "mae": "mean absolute error",
    "mred": "mean relative error distance",
    "wce": "worst-case error",
    "error_probability": "error probability",
    "area": "area",
    "delay": "delay",
    "pdp": "power-delay product",
    "energy": "multiplication energy per inference",
    "energy_saving": "multiplication energy saved vs exact",
    "bram": "BRAM18 blocks",
    "dsps": "DSP slices",
    "latency_cycles": "latency",
    "multipliers": "multipliers",
}
# absolute errors count least significant bits of the product; counts and fractions have none
UNITS = {"mae": "LSB", "wce": "LSB", "fpga_delay": "ns", "fpga_power": "Vivado units",
         "latency_cycles": "clock cycles"}
LIBERTY_UNITS = {"area": "µm²", "power": "µW", "delay": "ns", "pdp": "fJ", "energy": "nJ"}
ESTIMATE_UNITS = {"area": "transistors", "power": "toggles/cycle", "delay": "gate levels",
                  "pdp": "toggles × levels", "energy": "toggles"}
ASIC = tuple(LIBERTY_UNITS)
FPGA_BY_YOSYS = ("fpga_luts", "fpga_carry4")  # generated circuits: Yosys synth_xilinx counts
PROJECTION_NOTE = ("A point non-dominated in all {k} objectives may look dominated in a 2-D "
                   "projection: a point beating it on both plotted axes loses on another objective.")


def library_name(liberty: str) -> str:
    """``nangate45_typ`` for ``.../nangate45_typ.lib.gz``: the cell library, not its path."""
    name = Path(liberty).name
    for suffix in (".gz", ".lib"):
        name = name.removesuffix(suffix)
    return name


def unit(study: Study, metric: str) -> str:
    """The unit of a metric under the study's hardware model ('' for a dimensionless one)."""
    if metric in ASIC:
        return (LIBERTY_UNITS if study.settings.hardware.liberty else ESTIMATE_UNITS)[metric]
    return UNITS.get(metric, "")


def source(study: Study, metric: str) -> str:
    """Where a cost figure comes from ('' for the network and error metrics)."""
    if metric in ASIC:
        liberty = study.settings.hardware.liberty
        return library_name(liberty) if liberty else "estimate"
    if metric in FPGA_BY_YOSYS and study.settings.space.type == "xpat":
        return "Yosys synth_xilinx"
    if metric in FPGA_BY_YOSYS and study.settings.space.type == "layerwise":
        return "AppAxO model or Yosys synth_xilinx"
    if getattr(study.settings.space, "firmware", None) is not None and \
            metric in ("fpga_luts", "bram", "dsps", "latency_cycles", "multipliers"):
        from evaluators.firmware_cost import SOURCE

        return SOURCE
    return "Vivado-calibrated model" if metric.startswith("fpga_") else ""


def label(study: Study, metric: str) -> str:
    """Axis label of a metric: name, then unit and source in brackets."""
    name = {"power": f"power ({study.settings.hardware.power})"}.get(metric) or NAMES.get(metric, metric)
    details = ", ".join(part for part in (unit(study, metric), source(study, metric)) if part)
    return f"{name} [{details}]" if details else name


def sense(direction: str) -> str:
    """How to read an objective's axis."""
    return "higher is better" if direction == "maximize" else "lower is better"


def minimization_form(study: Study, frame: pd.DataFrame) -> np.ndarray:
    """The objective columns of ``frame`` with maximized ones negated."""
    return to_minimization(frame[study.objectives].to_numpy(dtype=float), study.directions)


def study_box(study: Study) -> tuple[np.ndarray, np.ndarray, float]:
    """(reference, ideal, box volume) of the study, all in minimization form."""
    ref = study.reference_point
    reference = to_minimization(np.array([[ref[k] for k in study.objectives]]), study.directions)[0]
    ideal, box = hypervolume_box(minimization_form(study, study.feasible()), reference)
    return reference, ideal, box


def point_text(study: Study, point: np.ndarray) -> str:
    """A point (minimization form) in study units: ``accuracy 0.8895, fpga_luts 68.2``."""
    values = to_minimization(point[None, :], study.directions)[0]
    return ", ".join(f"{k} {v:.4g}{' ' + unit(study, k) if unit(study, k) else ''}"
                     for k, v in zip(study.objectives, values))


def write_reports(study: Study) -> dict[str, Path]:
    """Write the tables, the plots and the page into the study folder; returns their paths."""
    front = study.pareto()
    trials = trials_table(study, front)
    paths = {
        "trials": study.folder / "trials.csv",
        "pareto": study.folder / "pareto.csv",
        "plot": study.folder / "pareto.png",
        "html": study.folder / "pareto.html",
        "hypervolume": study.folder / "hypervolume.png",
    }
    # Verilog of generated designs stays in the store and in pareto/, not in the tables
    write_csv(trials.drop(columns=["verilog"], errors="ignore"), paths["trials"])
    write_csv(front.drop(columns=["verilog"], errors="ignore"), paths["pareto"])
    retrained = study.retrained()
    if not retrained.empty:
        paths["retrained"] = study.folder / "retrained.csv"
        write_csv(retrained, paths["retrained"])
    plot_front(study, trials, front, paths["plot"])
    if len(study.objectives) > 2 and not front.empty:
        paths["parallel"] = study.folder / "pareto_parallel.png"
        plot_parallel(study, trials, front, paths["parallel"])
    measured = trials[trials["role"] != RETRAINED]  # the page shows what the search measured
    write_front_html(study.name, measured, front, study.objectives, study.directions,
                     {k: label(study, k) for k in study.objectives},
                     {k: unit(study, k) for k in trials.columns}, paths["html"])
    plot_hypervolume(study, paths["hypervolume"])
    if getattr(study.settings.space, "firmware", None) is not None:
        from dse.firmware import PLOT, plot_precision_sparsity

        paths["precision_sparsity"] = study.folder / PLOT
        plot_precision_sparsity(study, trials, paths["precision_sparsity"])
    return paths


def sensitivity_plot(drops: pd.DataFrame, path: Path, title: str) -> None:
    """Heat map of the layer sensitivity: accuracy drop (percentage points) with each member
    alone in each group of layers, the exact multiplier elsewhere."""
    plt = pyplot()
    points = 100 * drops.to_numpy(dtype=float)
    fig, ax = plt.subplots(figsize=(1.2 + 0.45 * drops.shape[1], 1.4 + 0.4 * drops.shape[0]))
    image = ax.imshow(np.clip(points, 0, None), cmap="magma_r", aspect="auto")
    ax.set_xticks(range(drops.shape[1]), drops.columns, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(drops.shape[0]), [_wrap(str(g), 40) for g in drops.index], fontsize=7)
    if points.size <= 400:
        for (i, j), value in np.ndenumerate(points):
            ax.text(j, i, f"{value:.1f}", ha="center", va="center", fontsize=6,
                    color="white" if value > 0.6 * max(np.nanmax(points), 1e-9) else "black")
    fig.colorbar(image, ax=ax, label="accuracy drop [percentage points]")
    ax.set_xlabel("multiplier (library member)")
    ax.set_ylabel("layers")
    ax.set_title(f"{title}: layer sensitivity (one layer approximate, exact elsewhere)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)


def pyplot():
    """matplotlib's pyplot on the file-only backend (imported late: it is slow)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


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


def objective_pairs(objectives: list[str]) -> list[tuple[str, str]]:
    """(x, y) of every pair of objectives once, the earlier objective on y (accuracy first)."""
    return [(objectives[j], objectives[i]) for i, j in combinations(range(len(objectives)), 2)]


def completed(trials: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The completed trials: (measured, retrained)."""
    done = trials[trials["state"] == "COMPLETE"]
    return done[done["role"] != RETRAINED], done[done["role"] == RETRAINED]


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
    fig.text(0.5, 0.08 / fig.get_figheight(), _wrap(caption, 110 if k == 2 else 190), fontsize=8.5,
             ha="center", va="bottom")
    fig.suptitle(f"{study.name}: Pareto front of {len(done)} evaluated configurations"
                 f"{' (pairwise projections)' if k > 2 else ''}", fontsize=12)
    fig.tight_layout(rect=(0, 1.0 / fig.get_figheight(), 1, 1))
    fig.savefig(path)
    plt.close(fig)


def _wrap(text: str, width: int) -> str:
    return "\n".join(textwrap.wrap(text, width))


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
    ax.set_xticks(range(k), [_wrap(label(study, m), 22) for m in study.objectives], fontsize=8)
    ax.set_yticks([0, 1], ["worst\nevaluated", "best\nevaluated"], fontsize=8)
    ax.set_xlim(-0.15, k - 0.65)
    ax.set_ylim(-0.05, 1.05)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, fontsize=8, frameon=False)
    ax.set_title(f"{study.name}: Pareto front in parallel coordinates (up is better)", fontsize=11)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_chain(chain: list[dict], baselines: list[dict], exact_area: float | None,
               path: Path, title: str) -> None:
    """Area against worst-case error and against MAE: a generated chain (a line in the order
    its circuits were accepted) over the truncated and broken-array baselines."""
    plt = pyplot()
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
