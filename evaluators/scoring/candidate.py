"""Turning one candidate into measured metrics: network quality and hardware cost (the shared
scoring, and the AppAxO evaluator)."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import pandas as pd

from circuits import appaxo
from circuits.activity import OperandStream
from circuits.appaxo_xilinx import structural_verilog
from circuits.cache import ResultCache
from circuits.characterize import FlowSettings, characterize
from circuits.error_metrics import error_metrics
from circuits.fpga_model import appaxo_fpga
from circuits.liberty import load_liberty
from circuits.multiplier import Multiplier
from circuits.product_table import ProductTable
from circuits.tools import require
from evaluators.classification import METRICS, TOP5
from evaluators.data import study_splits
from evaluators.data.preprocess import Preprocessing, default_preprocessing
from evaluators.networks.prepared import PreparedNetwork, TrainingSettings, prepare_network
from evaluators.runtime.approx_network import ApproxNetworkEvaluator
from evaluators.runtime.qgraph import QGraph
from evaluators.runtime.workload import sample_workload
from evaluators.scoring.screening import FrontContext, Screening, wilson_upper


@dataclass(frozen=True)
class AsicObjectives:
    """The ASIC flow a study runs per candidate, and which power is its ``power`` objective."""

    flow: FlowSettings
    power: str  # workload | uniform | vectorless
    workload: OperandStream


ASIC_KEYS = ("area", "delay", "power_uniform", "power_workload", "power_vectorless",
             "cells", "cost_model")


def asic_metrics(mult: Multiplier, asic: AsicObjectives, cache: ResultCache | None) -> dict:
    """The ASIC figures of a multiplier, ``power`` being the study's chosen power."""
    result = characterize(mult, asic.flow, asic.workload, cache).metrics
    out = {k: result.get(k) for k in ASIC_KEYS}
    out["power"] = result[f"power_{asic.power}"]
    out["pdp"] = out["power"] * result["delay"]
    return out


@dataclass
class ScoredEvaluator:
    """What every candidate evaluator keeps resident: the quantized network it scores product
    tables with, and the ASIC flow. Network results are shared between identical tables.

    ``network_cache`` maps a product-table hash to network metrics for this evaluator's
    fingerprint; the driver may pre-fill it from stored trials so replays cost nothing. ASIC
    characterizations are cached on disk by ``circuits.characterize`` across studies.
    """

    network: ApproxNetworkEvaluator
    prepared: PreparedNetwork
    network_cache: dict[str, dict]
    asic: AsicObjectives | None = None
    asic_cache: ResultCache | None = None

    @property
    def fingerprint(self) -> str:
        return self.network.fingerprint

    def remember(self, metrics: dict) -> None:
        """Warm the cache with a stored result of ``evaluate`` (ignored if scored elsewhere)."""
        if metrics.get("fingerprint") == self.fingerprint and "table_sha256" in metrics \
                and metrics.get("fidelity", "full") == "full":
            self.network_cache.setdefault(metrics["table_sha256"],
                                          {k: metrics[k] for k in (*METRICS, TOP5) if k in metrics})

    def score(self, table: ProductTable) -> dict:
        """Network metrics of a product table (``cached``: scored before)."""
        cached = table.sha256 in self.network_cache
        if not cached:
            self.network_cache[table.sha256] = self.network.evaluate(table)
        return {**self.network_cache[table.sha256], "cached": cached, "fidelity": "full"}

    def save_artifacts(self, folder: Path) -> None:
        """Keep with the study the models it is scored with and the workload that drives power."""
        (folder / "network").mkdir(parents=True, exist_ok=True)
        for src in self.prepared.folder.iterdir():
            shutil.copy2(src, folder / "network" / src.name)
        if self.asic is not None:
            self.asic.workload.save(folder / "workload.npz")


@dataclass
class AppAxOEvaluator(ScoredEvaluator):
    """Measures AppAxO configurations."""

    screening: Screening | None = None

    def export(self, front: pd.DataFrame, folder: Path) -> None:
        """Design files of the Pareto-optimal configurations, named by ``appaxo.config_name``:
        Verilog for ASIC flows, the Xilinx LUT6_2/CARRY4 form, and the product table
        (``.npy``). Replaces the folder."""
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        for config in (int(c) for c in front.get("config", ())):
            name = appaxo.config_name(config)
            (folder / f"{name}.v").write_text(appaxo.verilog(config, name))
            (folder / f"{name}_xc7.v").write_text(structural_verilog(config, f"{name}_xc7"))
            np.save(folder / f"{name}.npy", appaxo.product_table(config))

    def evaluate(self, config: int, front: FrontContext | None = None) -> dict:
        """Every metric of one configuration (plain values, ready to store). With screening
        enabled and the current ``front`` given, a configuration that cannot reach the front
        is scored on the screening subset only (``fidelity: screened``)."""
        start = time.perf_counter()
        table = appaxo.table(config)
        metrics = {
            "config": int(config),
            "config_bits": appaxo.to_bitstring(config),
            "design": appaxo.config_name(config),
            "table_sha256": table.sha256,
            "kept_luts": appaxo.kept_luts(config),
            **appaxo_fpga(config),
            **error_metrics(table),
            "fingerprint": self.fingerprint,
        }
        if self.asic is not None:
            metrics.update(asic_metrics(Multiplier.from_appaxo(config), self.asic, self.asic_cache))
        cached = table.sha256 in self.network_cache
        screened = None if cached else self._screen(table, metrics, front)
        if screened is not None:
            metrics.update(screened, cached=False, fidelity="screened")
        else:
            metrics.update(self.score(table))
        metrics["eval_seconds"] = time.perf_counter() - start
        return metrics

    def _screen(self, table: ProductTable, costs: dict, front: FrontContext | None) -> dict | None:
        """Subset metrics if the configuration is screened out, else None (evaluate fully)."""
        if self.screening is None or front is None or \
                any(k in METRICS and k != "accuracy" for k in front.objectives):
            return None  # only accuracy has a bound here
        rows = self.screening.rows(len(self.network.labels))
        subset = self.network.evaluate(table, rows)
        upper = wilson_upper(round(subset["accuracy"] * len(rows)), len(rows),
                             self.screening.confidence)
        optimistic = {**costs, "accuracy": upper}
        below = front.min_accuracy is not None and upper < front.min_accuracy
        if not below and not front.dominates(optimistic):
            return None
        return {**subset, "accuracy_upper_bound": upper, "screen_images": len(rows)}


E = TypeVar("E", bound=ScoredEvaluator)


def build_evaluator(
    evaluator_type: type[E],
    *,
    dataset: str,
    dataset_path: str | None,
    download: bool,
    test_size: int | None,
    training: TrainingSettings,
    train_size: int | None = None,
    preprocessing: Preprocessing | None = None,
    reuse_network: bool,
    kernel: str,
    device: str = "cpu",
    prefix_cache_bytes: int = 0,
    asic: tuple[FlowSettings, str] | None = None,
    signed: bool = True,
    seed: int = 0,
    approximate: Sequence[str] | str = "all",
    log: Callable[[str], None] = print,
    progress: bool | None = None,
    **options,
) -> E:
    """Load the data, train, import or reuse the network, and keep it resident for many
    evaluations (training and calibration on the first ``train_size`` training samples, all
    by default). ``preprocessing`` defaults to the dataset's; ``asic`` (flow settings, power
    kind) adds the ASIC flow, driven by the network's workload drawn as operands of ``signed``
    (or unsigned) multipliers; ``approximate``: the layers a single table replaces (roles,
    blocks, layer names: ``evaluators.runtime.roles``); ``prefix_cache_bytes``: memory
    for activations reused across per-layer tables (layer-wise studies); ``options`` are the
    evaluator type's own fields."""
    if asic is not None:  # missing tools and libraries fail now, before any training or trial
        require("yosys")
        if asic[0].liberty:
            require("sta")
            log(f"reading the Liberty library {asic[0].liberty}")
            load_liberty(asic[0].liberty)
    log(f"loading the {dataset} training and test data")
    train, test = study_splits(dataset, dataset_path, download, train_size, test_size)
    preprocessing = preprocessing or default_preprocessing(dataset)
    prepared = prepare_network(training, train, test, preprocessing=preprocessing,
                               reuse=reuse_network, log=log, progress=progress)
    for kind in ("float", "int8"):
        if (m := prepared.report.get(kind)) is not None:
            top5 = f", top-5 {m[TOP5]:.4f}" if TOP5 in m else ""
            log(f"{kind} network on {prepared.report['test_images']} test images: accuracy "
                f"{m['accuracy']:.4f}{top5}, macro precision {m['precision_macro']:.4f}, recall "
                f"{m['recall_macro']:.4f}, F1 {m['f1_macro']:.4f}")
    scored = test.head(test_size)
    inputs = preprocessing.apply(scored.images)
    network = ApproxNetworkEvaluator(prepared.int8_onnx, inputs, scored.labels, kernel, device,
                                     classes=test.classes, prefix_cache_bytes=prefix_cache_bytes,
                                     approximate=approximate)
    log(f"approximate inference: kernel {network.kernel} on {network.device}")
    objectives = None
    if asic is not None:
        flow, power = asic
        log(f"sampling the power workload: {flow.vectors} operand pairs from the exact "
            "network's multiplications")
        workload = sample_workload(QGraph.from_onnx(prepared.int8_onnx), inputs, flow.vectors,
                                   seed=seed, signed=signed, approximated=network.approximated)
        objectives = AsicObjectives(flow, power, workload)
    return evaluator_type(network, prepared, {}, objectives,
                          ResultCache() if asic is not None else None, **options)
