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

This module measures; the figures and the page are drawn by ``dse.reports.analysis`` and
``dse.reports.tsne_page``.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from tqdm import tqdm

from dse.assembly import study_data
from dse.designs import design_name, design_tables, find_design
from dse.reports.analysis import only_approximate, plot_operands, plot_tsne
from dse.reports.tsne_page import write_tsne_page
from dse.study import Study, load_study
from dse.study_file import StudyFileError
from evaluators.recovery.analysis import (
    classifier,
    error_map,
    penultimate_features,
    workload_error,
)
from evaluators.runtime.layer_tables import layer_table
from evaluators.runtime.qgraph import QGraph
from evaluators.runtime.workload import operand_histograms

if TYPE_CHECKING:
    from circuits.product_table import ProductTable
    from evaluators.recovery.analysis import WorkloadError

ANALYSIS = "analysis"  # the folder under a study folder
TOP = 0.01  # the share of (activation, weight) cells whose error mass analysis.json reports


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
    views: dict  # network -> evaluators.recovery.analysis.Features
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


@dataclass(frozen=True)
class LayerView:
    """One layer's operand histogram H, its multiplier's error map E = |T - a*w| and what they
    give together (``evaluators.recovery.analysis.WorkloadError``)."""

    histogram: np.ndarray
    error: np.ndarray
    signed: bool
    multiplier: str
    stats: WorkloadError

    @classmethod
    def of(cls, histogram: np.ndarray, table: ProductTable, multiplier: str) -> LayerView:
        error = error_map(table)
        return cls(histogram, error, table.signed, multiplier,
                   workload_error(histogram, error, TOP))

    def summary(self) -> dict:
        s = self.stats
        return {"multiplier": self.multiplier, "macs": s.macs, "mean_abs_error": s.mean_abs_error,
                f"error_share_top_{100 * TOP:g}pct_cells": s.top_share}


def layer_views(histograms: dict[str, np.ndarray], tables, row: pd.Series) -> dict[str, LayerView]:
    """Each layer's view under the table it multiplies with (a layer-wise design: its own)."""
    assignment = row.get("assignment")
    return {layer: LayerView.of(h, layer_table(tables, layer),
                             assignment.get(layer, "") if isinstance(assignment, dict)
                             else design_name(row))
            for layer, h in histograms.items()}
