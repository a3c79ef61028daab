"""``python -m dse analyze runs/NAME --design D``: why one design of a study loses accuracy.

Writes into ``runs/NAME/analysis/<design>/``:

- ``tsne.png`` and ``tsne.html``: t-SNE embeddings of the features entering the classifier
  (the last table layer) of the float, int8 and approximate networks on the first test images,
  coloured by class, misclassified images marked, those only the approximate network
  misclassifies ringed; the page shows each image's index, classes and thumbnail on hover.
- ``operands_<layer>.png`` per table layer and ``operands_summary.png``: the joint histogram
  of the (activation, weight) codes the layer multiplies in the approximate network, the
  multiplier's error map |T[a, w] - a*w| and their product (where the error meets the workload).
- ``analysis.json``: accuracies on those images, and per layer the MACs counted, the
  workload-weighted mean absolute error and the share of the error mass in the top 1% of cells.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from tqdm import tqdm

from dse.designs import design_name, design_tables, find_design, study_data
from dse.report import pyplot
from dse.study import Study, load_study
from dse.study_file import StudyFileError

if TYPE_CHECKING:
    from circuits.product_table import ProductTable
    from evaluators.analysis import WorkloadError

ANALYSIS = "analysis"  # the folder under a study folder
TOP = 0.01  # the share of (activation, weight) cells whose error mass analysis.json reports
NETWORK_NAMES = {"float": "float", "int8": "int8 (exact multiplier)",
                 "approximate": "int8, approximate multiplier"}


class AnalysisError(StudyFileError):
    """An analysis the request cannot give (too few images for the perplexity); one line."""


@dataclass(frozen=True)
class Analysis:
    """What ``analyze`` measured for one design on the first ``labels.size`` test images."""

    study: str
    design: pd.Series  # the trial row
    labels: np.ndarray
    classes: int
    images: np.ndarray  # the raw test images, for thumbnails
    classifier: str  # the last table layer, whose input the features are
    views: dict  # network -> evaluators.analysis.Features
    embeddings: dict[str, np.ndarray]  # network -> (images, 2)
    layers: dict[str, LayerView]

    @property
    def name(self) -> str:
        return design_name(self.design)

    @property
    def operands_of(self) -> str:
        return f"the approximate network on the first {self.labels.size} test images"


def analyze(folder: str | Path, design: str, output: str | Path | None = None,
            images: int = 2000, perplexity: float = 30.0, seed: int = 0,
            progress: bool = True) -> dict[str, Path]:
    """Write the t-SNE views, the operand heat maps and ``analysis.json`` of one design of the
    study in ``folder`` (``design``: trial number, design name or configuration); returns the
    written paths by name (``operands <layer>`` for each layer's figure)."""
    start = time.monotonic()
    study = load_study(folder)
    row = find_design(study, design)
    out = Path(output) if output else study.folder / ANALYSIS / _file_name(design_name(row))
    with tqdm(total=len(STEPS), desc=f"analyze {design_name(row)}", unit="step",
              disable=not progress, dynamic_ncols=True) as bar:
        bar.set_postfix_str(STEPS[0])
        analysis = measure(study, row, images, perplexity, seed, bar)
        out.mkdir(parents=True, exist_ok=True)
        title = (f"{study.name}: {analysis.name}, features entering {analysis.classifier}, first "
                 f"{analysis.labels.size} test images (t-SNE, perplexity {perplexity:g}, seed {seed})")
        paths = write_figures(analysis, title, out)
        summary = {**summarize(analysis), "perplexity": perplexity, "seed": seed,
                   "seconds": round(time.monotonic() - start, 1)}
        paths["json"] = out / "analysis.json"
        paths["json"].write_text(json.dumps(summary, indent=2) + "\n")
        _advance(bar)
    return paths


def measure(study: Study, row: pd.Series, images: int, perplexity: float, seed: int,
            bar: tqdm) -> Analysis:
    """Features, predictions and t-SNE embeddings of each network, and each layer's operand
    histogram in the approximate network, on the first ``images`` test images."""
    from evaluators.analysis import classifier, penultimate_features
    from evaluators.qgraph import QGraph
    from evaluators.workload import operand_histograms

    data = study_data(study, log=bar.write if not bar.disable else _quiet)
    count = image_count(images, perplexity, len(data.test_labels))
    tables = design_tables(study, row)
    inputs = data.test_inputs[:count]
    _advance(bar)
    views = penultimate_features(data.int8_onnx, inputs, tables, data.float_onnx)
    _advance(bar)
    graph = QGraph.from_onnx(data.int8_onnx)
    layers = layer_views(operand_histograms(graph, inputs, tables), tables, row)
    _advance(bar)
    embeddings = {net: tsne(view.features, perplexity, seed) for net, view in views.items()}
    _advance(bar)
    return Analysis(study.name, row, data.test_labels[:count], data.classes,
                    data.test_images[:count], classifier(graph).name, views, embeddings, layers)


def write_figures(analysis: Analysis, title: str, out: Path) -> dict[str, Path]:
    """tsne.png, tsne.html, a heat-map figure per layer and the summary of all layers."""
    from dse.analysis_page import write_tsne_page

    a = analysis
    paths = {"tsne": out / "tsne.png", "page": out / "tsne.html",
             "summary": out / "operands_summary.png"}
    plot_tsne(a.embeddings, a.views, a.labels, a.classes, title, paths["tsne"])
    write_tsne_page(a.embeddings, a.views, a.labels, a.classes, a.images, title, paths["page"])
    heading = f"{a.study}: {a.name}, operands of {a.operands_of}"
    for layer, view in a.layers.items():
        paths[f"operands {layer}"] = out / f"operands_{_file_name(layer)}.png"
        plot_operands({layer: view}, heading, paths[f"operands {layer}"])
    plot_operands(a.layers, heading, paths["summary"])
    return paths


def summarize(analysis: Analysis) -> dict:
    """The figures ``analysis.json`` holds: accuracies on the images, per-layer error figures."""
    a = analysis
    return {
        "study": a.study, "design": a.name, "trial": int(a.design["trial"]),
        "config": str(a.design["config"]), "images": int(a.labels.size),
        "classifier_layer": a.classifier,
        "study_accuracy": _number(a.design.get("accuracy")),
        "networks": {net: {"accuracy": view.accuracy(a.labels),
                           "misclassified": int(np.sum(view.predictions != a.labels))}
                     for net, view in a.views.items()},
        "misclassified_only_by_approximate": int(only_approximate(a.views, a.labels).sum()),
        "operands_of": a.operands_of,
        "layers": {layer: view.summary() for layer, view in a.layers.items()},
    }


STEPS = ("loading the data", "features", "operand histograms", "t-SNE", "figures")


def _advance(bar: tqdm) -> None:
    """One step done; the bar names the next."""
    bar.update()
    if bar.n < len(STEPS):
        bar.set_postfix_str(STEPS[bar.n])


def _quiet(_message: str) -> None:
    pass


def _file_name(name: str) -> str:
    """A layer or design name as a file name: ``/conv1/Conv_quant`` -> ``conv1_Conv_quant``."""
    return re.sub(r"[^\w.-]+", "_", name).strip("_") or "unnamed"


def _number(value) -> float | None:
    return None if value is None or pd.isna(value) else float(value)


def image_count(images: int, perplexity: float, available: int) -> int:
    """The images to embed: the first ``images`` test images, at most all of them; t-SNE needs
    more images than its perplexity."""
    count = min(images, available)
    if perplexity <= 0 or count <= perplexity:
        raise AnalysisError(f"--images {images} --perplexity {perplexity:g}: t-SNE needs a "
                            f"positive perplexity below the number of images ({count} used; the "
                            f"study has {available} test images)")
    return count


def tsne(features: np.ndarray, perplexity: float, seed: int) -> np.ndarray:
    """Two-dimensional t-SNE embedding (scikit-learn, PCA initialisation, seeded)."""
    from sklearn.manifold import TSNE

    return TSNE(2, perplexity=perplexity, init="pca", learning_rate="auto",
                random_state=seed).fit_transform(features.astype(np.float32))


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


@dataclass(frozen=True)
class LayerView:
    """One layer's operand histogram H, its multiplier's error map E = |T - a*w| and what they
    give together (``evaluators.analysis.WorkloadError``)."""

    histogram: np.ndarray
    error: np.ndarray
    signed: bool
    multiplier: str
    stats: WorkloadError

    @classmethod
    def of(cls, histogram: np.ndarray, table: ProductTable, multiplier: str) -> LayerView:
        from evaluators.analysis import error_map, workload_error

        error = error_map(table)
        return cls(histogram, error, table.signed, multiplier,
                   workload_error(histogram, error, TOP))

    def summary(self) -> dict:
        s = self.stats
        return {"multiplier": self.multiplier, "macs": s.macs, "mean_abs_error": s.mean_abs_error,
                f"error_share_top_{100 * TOP:g}pct_cells": s.top_share}


def layer_views(histograms: dict[str, np.ndarray], tables, row: pd.Series) -> dict[str, LayerView]:
    """Each layer's view under the table it multiplies with (a layer-wise design: its own)."""
    from evaluators.layer_tables import layer_table

    assignment = row.get("assignment")
    return {layer: LayerView.of(h, layer_table(tables, layer),
                             assignment.get(layer, "") if isinstance(assignment, dict)
                             else design_name(row))
            for layer, h in histograms.items()}


HEAT_MAPS = (  # panel title, colour-bar label
    ("operand pairs multiplied", "multiplications [count]"),
    ("multiplier error |T[a,w] - a*w|", "absolute error [LSB of the product]"),
    ("error x count", "error mass [LSB x multiplications]"),
)


def plot_operands(layers: dict[str, LayerView], title: str, path: Path) -> None:
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


def add_parser(sub: argparse._SubParsersAction) -> None:
    """The ``analyze`` command's arguments."""
    parser = sub.add_parser("analyze", help="t-SNE views of the classifier's features and "
                            "per-layer operand heat maps of one design of a study")
    parser.add_argument("folder", help="a study folder")
    parser.add_argument("--design", required=True,
                        help="trial number, design name or configuration integer")
    parser.add_argument("--output", help="folder for the figures (default: "
                                         "FOLDER/analysis/DESIGN)")
    parser.add_argument("--images", type=int, default=2000,
                        help="embed and count the first N test images (default 2000)")
    parser.add_argument("--perplexity", type=float, default=30.0, help="t-SNE perplexity")
    parser.add_argument("--seed", type=int, default=0, help="t-SNE seed")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=cmd_analyze)


def cmd_analyze(args: argparse.Namespace) -> int:
    paths = analyze(args.folder, args.design, args.output, args.images, args.perplexity,
                    args.seed, progress=not args.quiet)
    summary = json.loads(paths["json"].read_text())
    accuracies = ", ".join(f"{net} {100 * v['accuracy']:.2f}%"
                           for net, v in summary["networks"].items())
    print(f"{summary['design']} on the first {summary['images']} test images: {accuracies}; "
          f"{summary['misclassified_only_by_approximate']} misclassified only by the "
          f"approximate network ({summary['seconds']:.0f} s)")
    print(f"wrote {len(paths)} files to {paths['json'].parent}")
    return 0
