"""The figures of ``python -m dse analyze`` (the numbers are measured in ``dse.analysis``):

- ``tsne.png``: a t-SNE panel per network (float, int8, approximate), points coloured by true
  class, misclassified ones crossed, those only the approximate network misclassifies ringed;
- ``operands_<layer>.png`` and ``operands_summary.png``: per layer, the joint histogram of the
  (activation, weight) codes multiplied, the multiplier's error map and their product.

The names, colours and ringed images here are shared with the t-SNE page (``tsne_page``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

from dse.reports.figures import pyplot

NETWORK_NAMES = {"float": "float", "int8": "int8 (exact multiplier)",
                 "approximate": "int8, approximate multiplier"}


class OperandView(Protocol):
    """What the operand heat maps read of one layer (``dse.analysis.LayerView``)."""

    histogram: np.ndarray  # (256, 256) multiplications per (activation, weight) code
    error: np.ndarray  # (256, 256) |T[a, w] - a*w|
    signed: bool
    multiplier: str
    stats: object  # evaluators.recovery.analysis.WorkloadError: macs, mean_abs_error, top_share


def only_approximate(views: dict, labels: np.ndarray) -> np.ndarray:
    """Images the approximate network misclassifies and every other network gets right."""
    wrong = views["approximate"].predictions != labels
    for net, view in views.items():
        if net != "approximate":
            wrong &= view.predictions == labels
    return wrong


def class_colours(classes: int) -> list[str]:
    """One colour per class (#rrggbb): tab10 / tab20, evenly spaced hues beyond 20 classes."""
    import matplotlib.colors as mcolors
    from matplotlib import colormaps

    if classes <= 10:
        colours = colormaps["tab10"].colors[:classes]
    elif classes <= 20:
        colours = colormaps["tab20"].colors[:classes]
    else:
        colours = colormaps["hsv"](np.linspace(0, 1, classes, endpoint=False))
    return [mcolors.to_hex(c) for c in colours]


def plot_tsne(embeddings: dict[str, np.ndarray], views: dict, labels: np.ndarray, classes: int,
              title: str, path: Path) -> None:
    """A panel per network: points coloured by true class, misclassified ones crossed in
    black, those only the approximate network misclassifies ringed in black (a red ring would
    vanish among tab10's red class)."""
    from matplotlib.lines import Line2D

    plt = pyplot()
    colours = np.array(class_colours(classes))
    ringed = only_approximate(views, labels)
    fig, axes = plt.subplots(1, len(views), figsize=(5 * len(views), 5.9), squeeze=False)
    for ax, (net, view) in zip(axes[0], views.items()):
        xy = embeddings[net]
        wrong = view.predictions != labels
        ax.scatter(xy[:, 0], xy[:, 1], c=colours[labels], s=7, linewidths=0)
        ax.scatter(xy[wrong, 0], xy[wrong, 1], marker="x", c="black", s=12, linewidths=0.6)
        ax.scatter(xy[ringed, 0], xy[ringed, 1], facecolors="none", edgecolors="black", s=30,
                   linewidths=0.7)
        ax.set_title(f"{NETWORK_NAMES[net]}: accuracy {100 * view.accuracy(labels):.1f}% "
                     f"({int(wrong.sum())} wrong)", fontsize=9)
        ax.set_xlabel("t-SNE 1 (no unit)", fontsize=8)
        ax.set_ylabel("t-SNE 2 (no unit)", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    handles = [Line2D([], [], marker="o", ls="", color=colours[c], label=f"class {c}")
               for c in range(classes)] if classes <= 20 else []
    handles += [Line2D([], [], marker="x", ls="", color="black", label="misclassified"),
                Line2D([], [], marker="o", ls="", mfc="none", mec="black",
                       label=f"misclassified only by the approximate network ({int(ringed.sum())})")]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 7), fontsize=8,
               frameon=False)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.09 if classes <= 20 else 0.05, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


HEAT_MAPS = (  # panel title, colour-bar label
    ("operand pairs multiplied", "multiplications [count]"),
    ("multiplier error |T[a,w] - a*w|", "absolute error [LSB of the product]"),
    ("error x count", "error mass [LSB x multiplications]"),
)


def plot_operands(layers: dict[str, OperandView], title: str, path: Path) -> None:
    """A row of three log-scaled heat maps per layer (histogram, error map, their product);
    white cells hold zero."""
    from matplotlib.colors import LogNorm

    plt = pyplot()
    cmap = plt.get_cmap("magma").with_extremes(bad="white")
    rows = len(layers)
    height = 4.3 * rows + 0.5
    fig, axes = plt.subplots(rows, 3, figsize=(15, height), squeeze=False)
    for ax_row, (layer, view) in zip(axes, layers.items()):
        offset = 128 if view.signed else 0
        extent = (-offset - 0.5, 255.5 - offset, -offset - 0.5, 255.5 - offset)
        maps = (view.histogram, view.error, view.histogram * view.error)
        for ax, values, (name, unit) in zip(ax_row, maps, HEAT_MAPS):
            positive = values > 0
            if positive.any():
                image = ax.imshow(np.ma.masked_where(~positive, values), origin="lower",
                                  extent=extent, cmap=cmap, interpolation="nearest",
                                  norm=LogNorm(vmin=values[positive].min(), vmax=values.max()))
                fig.colorbar(image, ax=ax, label=unit, fraction=0.046, pad=0.03)
            else:
                ax.imshow(np.zeros_like(values), origin="lower", extent=extent, cmap="Greys",
                          vmin=0, vmax=1)
                ax.text(0.5, 0.5, "zero everywhere", transform=ax.transAxes, ha="center")
            ax.set_title(f"{layer}: {name}" + (f" ({view.multiplier})" if values is view.error
                                                else ""), fontsize=9)
            ax.set_xlabel("weight code w")
            ax.set_ylabel("activation code a")
        s = view.stats
        share = "no error" if s.top_share is None else \
            f"top 1% of cells hold {100 * s.top_share:.0f}% of the error mass"
        ax_row[2].set_title(f"{layer}: error x count\nmean |error| {s.mean_abs_error:.3g} LSB "
                            f"over {s.macs:,} multiplications\n{share}", fontsize=8)
    fig.suptitle(f"{title} (log colour scales; white: zero)", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / height))  # room for the title
    fig.savefig(path, dpi=100 if rows == 1 else 70)
    plt.close(fig)
