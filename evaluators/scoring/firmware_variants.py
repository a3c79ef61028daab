"""Measuring a multiplier inside a network's firmware: precision, pruning and reuse factor.

One evaluation takes an AppAxO configuration (the multiplier every layer uses), a ``Recipe``
(sparsity, weight and activation bits of every layer) and a reuse factor. The recipe's variant of
the study's int8 network (``evaluators.firmware.precision``: pruned, narrowed, fine-tuned; cached on
disk) is scored with the configuration's 8x8 product table, and the firmware is costed by the
analytic model of ``evaluators.firmware.cost`` with the multiplier's LUTs at the layer's
operand widths (``circuits.fpga_narrow``). Network results are cached by (variant, table).
"""

from __future__ import annotations

import hashlib
import math
import shutil
import sys
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import pandas as pd
from tqdm import tqdm

from circuits import appaxo
from circuits.appaxo_xilinx import structural_verilog
from circuits.cache import ResultCache
from circuits.error_metrics import error_metrics
from circuits.fpga_model import appaxo_fpga
from circuits.fpga_narrow import narrowed_luts
from circuits.multiplier import Multiplier
from circuits.product_table import ProductTable
from evaluators.classification import METRICS, TOP5
from evaluators.data import load_split
from evaluators.data.preprocess import Preprocessing, default_preprocessing
from evaluators.firmware.cost import LayerShape, layer_shapes, network_cost
from evaluators.firmware.precision import (
    VARIANT_ONNX,
    FineTuning,
    Recipe,
    cached_variant,
    make_variant,
    variant_key,
)
from evaluators.networks.prepared import int8_layer_macs
from evaluators.runtime.approx_network import ApproxNetworkEvaluator
from evaluators.runtime.approx_runner import table_layers
from evaluators.scoring.candidate import ScoredEvaluator

RESIDENT_VARIANTS = 8  # variants kept in memory with their quantized test inputs
EXACT = ProductTable.exact(True)


@dataclass(frozen=True)
class TrainingData:
    """Where the fine-tuning images come from (read only when a variant is fine-tuned)."""

    dataset: str
    path: str | None
    download: bool
    train_size: int | None
    preprocessing: Preprocessing | None

    def load(self) -> tuple[np.ndarray, np.ndarray]:
        """Preprocessed training inputs and labels."""
        train = load_split(self.dataset, "train", self.path, download=self.download).head(self.train_size)
        preprocessing = self.preprocessing or default_preprocessing(self.dataset)
        return preprocessing.apply(train.images), train.labels


@dataclass
class Variant:
    """A variant resident in memory: its key, scorer and layer shapes."""

    key: str
    network: ApproxNetworkEvaluator
    shapes: list[LayerShape]


def mean_bits(bits: tuple[int, ...], weights: list[int]) -> float:
    """Bits of the layers averaged with ``weights`` (the value itself when all are equal)."""
    if len(set(bits)) == 1:
        return float(bits[0])
    return float(np.average(bits, weights=weights))


def variant_name(config: int, recipe: Recipe, reuse_factor: int) -> str:
    """``<AppAxO design>-w<bits>a<bits>-rf<R>-s<percent>`` (per-layer bits joined by ``.``)."""
    def widths(bits: tuple[int, ...]) -> str:
        return str(bits[0]) if len(set(bits)) == 1 else ".".join(map(str, bits))

    return (f"{appaxo.config_name(config)}-w{widths(recipe.weight_bits)}"
            f"a{widths(recipe.activation_bits)}-rf{reuse_factor}-s{round(100 * recipe.sparsity):02d}")


@dataclass
class FirmwareEvaluator(ScoredEvaluator):
    """Scores (AppAxO configuration, recipe, reuse factor) triples; ``network`` is the study's
    int8 network (the recipe that changes nothing)."""

    tuning: FineTuning = FineTuning()
    tuning_data: TrainingData | None = None
    timeout_s: float = 120.0
    variant_progress: bool | None = None  # the fine-tuning bar (None: on a terminal)
    variant_log: Callable[[str], None] = print
    fpga_cache: ResultCache | None = None
    _resident: OrderedDict = field(default_factory=OrderedDict, repr=False)
    _luts: dict = field(default_factory=dict, repr=False)
    _macs: dict | None = field(default=None, repr=False)

    @property
    def layers(self) -> list[str]:
        """The table layers of the network, in order (what per-layer bits are given for)."""
        return table_layers(self.network.graph)

    @property
    def folder(self) -> Path:
        """The variants' cache: beside the prepared network."""
        return self.prepared.folder.parent / f"{self.prepared.folder.name}-variants"

    def variant_fingerprint(self, key: str) -> str:
        """Identity of (variant, test data): results with equal fingerprints are interchangeable."""
        return hashlib.sha256(f"{self.fingerprint}:{key}".encode()).hexdigest()[:20]

    def remember(self, metrics: dict) -> None:
        """Warm the cache with a stored result of ``evaluate`` (ignored if scored elsewhere)."""
        key = metrics.get("variant")
        if key and metrics.get("fingerprint") == self.variant_fingerprint(key) \
                and "table_sha256" in metrics:
            self.network_cache.setdefault(f"{key}:{metrics['table_sha256']}",
                                          {k: metrics[k] for k in (*METRICS, TOP5) if k in metrics})

    def _recipe_check(self, recipe: Recipe) -> None:
        n = len(self.layers)
        if len(recipe.weight_bits) != n or len(recipe.activation_bits) != n:
            raise ValueError(f"recipe with {len(recipe.weight_bits)} weight and "
                             f"{len(recipe.activation_bits)} activation widths for {n} layers")

    def variant(self, recipe: Recipe) -> Variant:
        """The recipe's variant, built (pruned, narrowed, fine-tuned) on first use and cached."""
        self._recipe_check(recipe)
        key = variant_key(self.prepared.key, recipe, self.tuning)
        if key in self._resident:
            self._resident.move_to_end(key)
            return self._resident[key]
        path = cached_variant(self.folder / key, lambda: self._build(recipe),
                              {"network": self.prepared.key, "sparsity": recipe.sparsity,
                               "weight_bits": dict(zip(self.layers, recipe.weight_bits)),
                               "activation_bits": dict(zip(self.layers, recipe.activation_bits)),
                               "fine_tuning": None if recipe.identity else vars(self.tuning)})
        base = self.network
        network = ApproxNetworkEvaluator(path, base.inputs, base.labels, base.kernel, base.device,
                                         classes=base.classes)
        if self._macs is None:
            self._macs = int8_layer_macs(self.prepared.int8_onnx, base.inputs[:1])
        shapes = layer_shapes(onnx.load(str(path)), self._macs, recipe.weight_bits,
                              recipe.activation_bits)
        self._resident[key] = Variant(key, network, shapes)
        while len(self._resident) > RESIDENT_VARIANTS:
            self._resident.popitem(last=False)
        return self._resident[key]

    def _build(self, recipe: Recipe) -> onnx.ModelProto:
        """Prune, narrow and fine-tune the int8 network as the recipe says (with a bar)."""
        tuning = self.tuning
        what = (f"sparsity {recipe.sparsity:g}, weights {'/'.join(map(str, recipe.weight_bits))} "
                f"bits, activations {'/'.join(map(str, recipe.activation_bits))} bits")
        if recipe.identity or not tuning.epochs:
            self.variant_log(f"network variant ({what}): no fine-tuning")
            return make_variant(onnx.load(str(self.prepared.int8_onnx)), self.layers, recipe,
                                tuning, self._data)
        self.variant_log(f"network variant ({what}): fine-tuning {tuning.epochs} epoch(s) on "
                         f"{tuning.images} training images")
        steps = tuning.epochs * math.ceil(tuning.images / tuning.batch_size)
        with tqdm(total=steps, desc="fine-tuning variant", unit="batch", file=sys.stderr,
                  disable=None if self.variant_progress is None else not self.variant_progress,
                  dynamic_ncols=True) as bar:
            return make_variant(onnx.load(str(self.prepared.int8_onnx)), self.layers, recipe,
                                tuning, self._data, batch_done=lambda: bar.update(1))

    def _data(self) -> tuple[np.ndarray, np.ndarray]:
        if self.tuning_data is None:
            raise ValueError("fine-tuning needs the training data (TrainingData)")
        return self.tuning_data.load()

    def multiplier_luts(self, config: int, activation_bits: int, weight_bits: int) -> float:
        """LUTs of the configuration on narrower operands (memoized; syntheses are cached)."""
        key = (config, activation_bits, weight_bits)
        if key not in self._luts:
            self._luts[key] = narrowed_luts(Multiplier.from_appaxo(config),
                                            appaxo_fpga(config)["fpga_luts"], activation_bits,
                                            weight_bits, self.timeout_s, self.fpga_cache)
        return self._luts[key]

    def score_variant(self, variant: Variant, table: ProductTable) -> dict:
        """Network metrics of a table on a variant (``cached``: scored before)."""
        key = f"{variant.key}:{table.sha256}"
        cached = key in self.network_cache
        if not cached:
            self.network_cache[key] = variant.network.evaluate(table)
        return {**self.network_cache[key], "cached": cached, "fidelity": "full"}

    def evaluate(self, config: int, recipe: Recipe, reuse_factor: int) -> dict:
        """Every metric of one (configuration, recipe, reuse factor): plain values, ready to store."""
        start = time.perf_counter()
        table = appaxo.table(config)
        variant = self.variant(recipe)
        luts = {s.name: self.multiplier_luts(config, s.activation_bits, s.weight_bits)
                for s in variant.shapes}
        totals, per_layer = network_cost(variant.shapes, reuse_factor, luts,
                                         exact=config == appaxo.EXACT)
        weights = [s.weights for s in variant.shapes]
        macs = [s.weights * s.applications for s in variant.shapes]
        nonzero = sum(s.nonzero for s in variant.shapes)
        scored = self.score_variant(variant, table)
        metrics = {
            "appaxo_config": int(config),
            "config_bits": appaxo.to_bitstring(config),
            "design": variant_name(config, recipe, reuse_factor),
            "table_sha256": table.sha256,
            "kept_luts": appaxo.kept_luts(config),
            "multiplier_fpga_luts": appaxo_fpga(config)["fpga_luts"],
            **error_metrics(table),
            "weight_bits": mean_bits(recipe.weight_bits, weights),
            "activation_bits": mean_bits(recipe.activation_bits, macs),
            "layer_weight_bits": dict(zip(self.layers, recipe.weight_bits)),
            "layer_activation_bits": dict(zip(self.layers, recipe.activation_bits)),
            "reuse_factor": int(reuse_factor),
            "sparsity": float(recipe.sparsity),
            "weight_sparsity": 1.0 - nonzero / sum(weights),
            **totals,
            "layer_costs": per_layer,
            "variant": variant.key,
            "fingerprint": self.variant_fingerprint(variant.key),
            **scored,
            # what the network variant loses by itself, before any multiplier error
            "variant_accuracy": self.score_variant(variant, EXACT)["accuracy"],
        }
        metrics["eval_seconds"] = time.perf_counter() - start
        return metrics

    def export(self, front: pd.DataFrame, folder: Path) -> None:
        """Per Pareto design, ``<design>/``: the multiplier (Verilog, the Xilinx LUT6_2/CARRY4
        form, the product table) and the network variant it was scored with (``int8.onnx``)
        with its per-layer costs (``layer_costs.csv``). Replaces the folder."""
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        for _, row in front.iterrows():
            if not isinstance(row.get("variant"), str):
                continue
            design = folder / row["design"]
            design.mkdir()
            config = int(row["appaxo_config"])
            name = appaxo.config_name(config)
            (design / f"{name}.v").write_text(appaxo.verilog(config, name))
            (design / f"{name}_xc7.v").write_text(structural_verilog(config, f"{name}_xc7"))
            np.save(design / f"{name}.npy", appaxo.product_table(config))
            source = self.folder / row["variant"] / VARIANT_ONNX
            if source.is_file():
                shutil.copy2(source, design / VARIANT_ONNX)
            pd.DataFrame(row["layer_costs"]).to_csv(design / "layer_costs.csv", index=False)
