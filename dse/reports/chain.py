"""The plot of ``python -m dse generate``: a chain of generated circuits (area against worst-case
error and against MAE) over the truncated and broken-array baselines."""

from __future__ import annotations

from pathlib import Path

from dse.reports.figures import pyplot


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
