"""``precision_sparsity.png`` of a firmware study: accuracy and FPGA LUTs against weight bits
and against sparsity."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from dse.reports.figures import pyplot
from dse.reports.labels import label
from dse.reports.objectives import completed
from dse.study import BASELINE, Study


def plot_precision_sparsity(study: Study, trials: pd.DataFrame, path: Path) -> None:
    """Accuracy and FPGA LUTs against weight bits and against sparsity: every evaluated design
    (faint, jittered sideways; LUTs coloured by reuse factor), the Pareto front highlighted,
    the best value at each bit width or sparsity joined by a line, and the best accuracy of a
    network variant with the exact multiplier (what precision and pruning cost by themselves);
    the exact 8-bit dense baseline starred."""
    plt = pyplot()
    done, _ = completed(trials)
    front = done[done["trial"].isin(study.pareto()["trial"])] if not done.empty else done
    rows = [("accuracy", "max"), ("fpga_luts", "min")]
    columns = [("weight_bits", "weight bits [bits, mean over layers weighted by weights]"),
               ("sparsity", "sparsity (pruned share of each layer's weights)")]
    fig, axes = plt.subplots(2, 2, figsize=(12, 8.5), dpi=130, squeeze=False)
    rng = np.random.default_rng(0)
    for i, (metric, best) in enumerate(rows):
        for j, (x, x_label) in enumerate(columns):
            ax = axes[i][j]
            if done.empty or x not in done:
                ax.text(0.5, 0.5, "no completed trial", ha="center", transform=ax.transAxes)
                continue
            span = np.ptp(done[x].to_numpy(dtype=float)) or 1.0
            jitter = rng.uniform(-0.015, 0.015, len(done)) * span
            if metric == "fpga_luts":  # resources follow the reuse factor first
                for k, (rf, group) in enumerate(done.groupby("reuse_factor")):
                    ax.scatter(group[x] + jitter[done.index.get_indexer(group.index)],
                               group[metric], s=12, alpha=0.7, linewidths=0,
                               c=[plt.cm.viridis(k / max(done["reuse_factor"].nunique() - 1, 1))],
                               label=f"reuse factor {rf}")
                ax.legend(fontsize=7, loc="best", title="evaluated", title_fontsize=7)
            else:
                ax.scatter(done[x] + jitter, done[metric], s=10, c="0.7", alpha=0.6,
                           linewidths=0, label=f"evaluated ({len(done)})")
            ax.scatter(front[x], front[metric], s=26, c="tab:blue", edgecolors="k",
                       linewidths=0.5, zorder=3, label=f"Pareto front ({len(front)})")
            envelope = done.groupby(x)[metric].agg(best)
            ax.plot(envelope.index, envelope.to_numpy(), c="tab:orange", lw=1.2, zorder=2,
                    label="best at each value (highest accuracy, fewest LUTs)")
            if metric == "accuracy" and "variant_accuracy" in done:
                network = done.groupby(x)["variant_accuracy"].max()
                ax.plot(network.index, network.to_numpy(), c="tab:green", lw=1.2, ls="--",
                        marker="o", ms=3, zorder=2,
                        label="network variant alone: best with the exact multiplier")
            exact = done[done["role"] == BASELINE]
            ax.scatter(exact[x], exact[metric], marker="*", s=160, c="tab:red", edgecolors="k",
                       linewidths=0.6, zorder=4, label="exact multiplier, 8 bits, dense")
            ax.set_xlabel(x_label, fontsize=9)
            ax.set_ylabel(label(study, metric), fontsize=9)
            if metric == "fpga_luts":
                ax.set_yscale("log")
            ax.grid(alpha=0.3)
    handles, names = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", ncol=3, fontsize=9, frameon=False)
    fig.suptitle(f"{study.name}: accuracy and FPGA LUTs against bit width and sparsity",
                 fontsize=12)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.savefig(path)
    plt.close(fig)
