"""Firmware studies (an ``appaxo36`` space with a ``firmware`` block): the AppAxO multiplier
searched jointly with the network's precision, hls4ml reuse factor and sparsity, costed by the
analytic FPGA model. The joint space, configurations decoded to (AppAxO configuration, recipe,
reuse factor) before they reach the evaluator, and the plot of accuracy and resources against
bit width and sparsity."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar

import numpy as np
import pandas as pd
from optuna.distributions import BaseDistribution, CategoricalDistribution
from pydantic import Field, field_validator

from circuits.appaxo import N_BITS as APPAXO_BITS
from circuits.cache import ResultCache
from dse.assembly import evaluator_inputs
from dse.designs import DesignError, design_name
from dse.kinds.appaxo import AppAxOKind, AppAxOSpace
from dse.kinds.base import Log
from dse.reports.firmware import plot_precision_sparsity
from dse.space import AppAxOSubspace
from dse.study import Study
from dse.study_file import GridStrategy, Section, StudySettings
from evaluators.firmware.cost import SOURCE
from evaluators.firmware.precision import FineTuning, Recipe
from evaluators.scoring.candidate import build_evaluator
from evaluators.scoring.firmware_variants import FirmwareEvaluator, TrainingData

SPAN = 1 << APPAXO_BITS  # a configuration is appaxo_config + SPAN * firmware point
PLOT = "precision_sparsity.png"


def _distinct_values(value: list, field: str) -> list:
    if len(set(value)) != len(value):
        raise ValueError(f"{field} lists a value twice: {value}")
    return value


class FineTuneSettings(Section):
    """How each precision/sparsity variant of the network is fine-tuned (``epochs: 0``: not at
    all): through the exact product table, over the first ``images`` training images, Adam with
    a one-cycle schedule peaking at ``learning_rate``. The defaults are
    ``evaluators.firmware.precision.FineTuning``'s."""

    epochs: Annotated[int, Field(ge=0, le=1000)] = 2
    images: Annotated[int, Field(ge=1, le=10_000_000)] = 4000
    learning_rate: Annotated[float, Field(gt=0, le=1)] = 5e-3
    batch_size: Annotated[int, Field(ge=2, le=65536)] = 64


class FirmwareSettings(Section):
    """The network's firmware searched jointly with the multiplier: weight and activation bits
    (2 to 8; one width for all layers, or one per layer with ``per_layer_bits``), the hls4ml
    reuse factor and the magnitude-pruning sparsity (per layer). Each list holds the searched
    values (a single value is fixed). Costs come from the analytic FPGA model
    (``evaluators.firmware.cost``); each (sparsity, bits) variant is fine-tuned once (cached)."""

    weight_bits: Annotated[list[Annotated[int, Field(ge=2, le=8)]], Field(min_length=1)] = [8]
    activation_bits: Annotated[list[Annotated[int, Field(ge=2, le=8)]], Field(min_length=1)] = [8]
    per_layer_bits: bool = False
    reuse_factor: Annotated[list[Annotated[int, Field(ge=1, le=1 << 20)]],
                            Field(min_length=1)] = [1]
    sparsity: Annotated[list[Annotated[float, Field(ge=0, le=0.99)]], Field(min_length=1)] = [0.0]
    fine_tune: FineTuneSettings = FineTuneSettings()

    @field_validator("weight_bits", "activation_bits", "reuse_factor", "sparsity")
    @classmethod
    def _distinct(cls, value: list, info) -> list:
        return _distinct_values(value, info.field_name)


def firmware_variables(settings: FirmwareSettings, layers: Sequence[str]
                       ) -> tuple[tuple[str, tuple], ...]:
    """Every firmware setting as (name, values): one width for all layers (``weight_bits``,
    ``activation_bits``) or one per layer (``weight_bits:<layer>``), then ``reuse_factor`` and
    ``sparsity``. Values sorted, so a variable's digits order its values."""
    def bits(name: str, values: list[int]) -> list[tuple[str, tuple]]:
        values = tuple(sorted(values))
        if settings.per_layer_bits:
            return [(f"{name}:{layer}", values) for layer in layers]
        return [(name, values)]

    return (*bits("weight_bits", settings.weight_bits),
            *bits("activation_bits", settings.activation_bits),
            ("reuse_factor", tuple(sorted(settings.reuse_factor))),
            ("sparsity", tuple(sorted(settings.sparsity))))


@dataclass(frozen=True)
class FirmwareSpace:
    """AppAxO configurations times firmware settings. A configuration is
    ``appaxo_config + 2^36 * f`` with ``f`` the mixed-radix number of the firmware values
    (first variable the lowest digit); a point is ``inner_point + inner.size * f``. Variables:
    the free AppAxO bits, then each firmware setting with two values or more (a single value is
    fixed). ``exact`` (the baseline): the exact multiplier on the widest bits, the lowest
    sparsity and the smallest reuse factor listed."""

    inner: AppAxOSubspace
    variables: tuple[tuple[str, tuple], ...]
    layers: tuple[str, ...]

    @property
    def searched(self) -> tuple[tuple[str, tuple], ...]:
        return tuple((n, v) for n, v in self.variables if len(v) > 1)

    @property
    def firmware_size(self) -> int:
        return int(np.prod([len(v) for _, v in self.searched], dtype=object))

    @property
    def cardinalities(self) -> tuple[int, ...]:
        return (*self.inner.cardinalities, *(len(v) for _, v in self.searched))

    @property
    def variable_names(self) -> tuple[str, ...]:
        return (*self.inner.variable_names, *(n for n, _ in self.searched))

    @property
    def size(self) -> int:
        return self.inner.size * self.firmware_size

    @property
    def exact(self) -> int:
        digits = [len(v) - 1 if n.startswith(("weight_bits", "activation_bits")) else 0
                  for n, v in self.searched]
        return self.inner.exact + SPAN * self._number(digits)

    def _number(self, digits: Sequence[int]) -> int:
        number, weight = 0, 1
        for d, (_, values) in zip(digits, self.searched, strict=True):
            number += int(d) * weight
            weight *= len(values)
        return number

    def _firmware_digits(self, number: int) -> list[int]:
        digits = []
        for _, values in self.searched:
            number, d = divmod(number, len(values))
            digits.append(d)
        return digits

    def config(self, point: int) -> int:
        if not 0 <= point < self.size:
            raise ValueError(f"point {point} outside the space of {self.size} configurations")
        number, inner = divmod(int(point), self.inner.size)
        return self.inner.config(inner) + SPAN * number

    def point(self, config: int) -> int:
        if config not in self:
            raise ValueError(f"configuration {config} outside the firmware space")
        number, inner = divmod(int(config), SPAN)
        return self.inner.point(inner) + self.inner.size * number

    def __contains__(self, config: int) -> bool:
        number, inner = divmod(int(config), SPAN)
        return config >= 0 and number < self.firmware_size and inner in self.inner

    def digits(self, point: int) -> tuple[int, ...]:
        number, inner = divmod(int(point), self.inner.size)
        return (*self.inner.digits(inner), *self._firmware_digits(number))

    def from_digits(self, digits: Sequence[int]) -> int:
        n = len(self.inner.cardinalities)
        return self.inner.from_digits(digits[:n]) + self.inner.size * self._number(digits[n:])

    def sample_points(self, rng: np.random.Generator, count: int) -> np.ndarray:
        inner = self.inner.sample_points(rng, count)
        return inner + self.inner.size * rng.integers(0, self.firmware_size, size=count, dtype=np.int64)

    def values(self, config: int) -> dict[str, object]:
        """Every firmware setting of a configuration, fixed ones included."""
        number = int(config) // SPAN
        chosen = dict(zip((n for n, _ in self.searched),
                          (v[d] for (_, v), d in zip(self.searched, self._firmware_digits(number)))))
        return {n: chosen.get(n, v[0]) for n, v in self.variables}

    def decode(self, config: int) -> tuple[int, Recipe, int]:
        """(AppAxO configuration, recipe, reuse factor) of a configuration."""
        if config not in self and config != self.exact:
            raise ValueError(f"configuration {config} outside the firmware space")
        values = self.values(config)

        def widths(name: str) -> tuple[int, ...]:
            if name in values:
                return (int(values[name]),) * len(self.layers)
            return tuple(int(values[f"{name}:{layer}"]) for layer in self.layers)

        recipe = Recipe(float(values["sparsity"]), widths("weight_bits"), widths("activation_bits"))
        return int(config) % SPAN, recipe, int(values["reuse_factor"])

    def params(self, config: int) -> dict[str, tuple[object, BaseDistribution]]:
        """The searched LUTs and firmware settings as named parameters, for Optuna clients."""
        values = self.values(config)
        return {**self.inner.params(int(config) % SPAN),
                **{n: (values[n], CategoricalDistribution(v)) for n, v in self.searched}}


@dataclass
class FirmwareTrials:
    """The firmware evaluator seen through the study's space (configurations decoded before
    evaluation); everything else is the evaluator's."""

    evaluator: FirmwareEvaluator
    space: FirmwareSpace

    def evaluate(self, config: int, front=None) -> dict:
        appaxo_config, recipe, reuse_factor = self.space.decode(config)
        return self.evaluator.evaluate(appaxo_config, recipe, reuse_factor)

    def __getattr__(self, name: str):
        if name.startswith("__") or name in ("evaluator", "space"):
            raise AttributeError(name)  # unpickling looks these up before they exist
        return getattr(self.evaluator, name)


def build_firmware_evaluator(settings: StudySettings, log: Log,
                             progress: bool | None) -> FirmwareTrials:
    """The study's network and data behind the joint space of ``space.firmware``."""
    common = evaluator_inputs(settings, log, progress)
    firmware = settings.space.firmware
    f = firmware.fine_tune
    tuning = FineTuning(epochs=f.epochs, images=f.images, learning_rate=f.learning_rate,
                        batch_size=f.batch_size, seed=settings.seed)
    training = TrainingData(common["dataset"], common["dataset_path"], common["download"],
                            common["train_size"], common["preprocessing"])
    evaluator = build_evaluator(FirmwareEvaluator, **common, tuning=tuning, tuning_data=training,
                      timeout_s=settings.hardware.timeout_s, variant_progress=progress, variant_log=log,
                      fpga_cache=ResultCache())
    layers = tuple(evaluator.layers)
    space = FirmwareSpace(AppAxOSubspace(settings.space.free, settings.space.fixed),
                          firmware_variables(firmware, layers), layers)
    log(f"firmware space: {space.inner.size} multipliers x {space.firmware_size} firmware "
        f"settings ({', '.join(n for n, _ in space.searched) or 'none searched'}) = "
        f"{space.size:.4g} configurations")
    return FirmwareTrials(evaluator, space)


class FirmwareSpaceSettings(AppAxOSpace):
    """AppAxO configurations with ``firmware``: the network's precision, reuse factor and
    sparsity searched with them."""

    firmware: FirmwareSettings


class FirmwareStudySettings(StudySettings):
    """A study file of a firmware study."""

    kind_name: ClassVar[str] = "firmware"
    space: FirmwareSpaceSettings


class FirmwareKind(AppAxOKind):
    """AppAxO configurations times firmware settings, costed by the analytic FPGA model."""

    name = "firmware"
    space_settings = FirmwareSpaceSettings
    settings_class = FirmwareStudySettings
    where = "the firmware model (a space.firmware section)"
    metrics = ("accuracy", "accuracy_drop", "precision_macro", "recall_macro", "f1_macro",
               "fpga_luts", "bram", "dsps", "latency_cycles", "multipliers", "kept_luts",
               "mean_error", "mae", "mse", "wce", "mred", "error_probability")
    metric_sources = {m: SOURCE for m in ("fpga_luts", "bram", "dsps", "latency_cycles",
                                          "multipliers")}
    appaxo_column = "appaxo_config"
    screening = False

    def claims(self, space: Mapping[str, Any]) -> bool:
        return space.get("type") == self.space_type and "firmware" in space

    def check(self, settings: StudySettings) -> None:
        if settings.retrain is not None:
            raise ValueError("retrain: not for space.firmware studies (each precision/sparsity "
                             "variant is fine-tuned already)")
        if isinstance(settings.strategy, GridStrategy) and settings.strategy.configs is not None:
            raise ValueError("strategy.configs lists AppAxO configurations; with space.firmware "
                             "a grid counts over the joint space")
        q = settings.quantization
        if (q.scheme, q.format) != ("s8s8", "qoperator"):
            raise ValueError("space.firmware narrows the symmetric int8 QOperator network: "
                             "quantization.scheme must be s8s8 and quantization.format qoperator")

    def build_evaluator(self, settings: StudySettings, log: Log, progress: bool | None,
                        folder: Path | None) -> FirmwareTrials:
        return build_firmware_evaluator(settings, log, progress)

    def space(self, settings: StudySettings, evaluator: Any) -> FirmwareSpace:
        return evaluator.space

    def design_tables(self, study: Study, row: pd.Series) -> Any:
        raise DesignError(f"{study.folder}: design {design_name(row)} is a precision/sparsity "
                          "variant of the network; retrain, analyze, export --format onnx and hls "
                          "read the study's int8 network, so they do not take firmware designs yet")

    def node_multipliers(self, study: Study, row: pd.Series, layers: Sequence[str]
                         ) -> dict[str, tuple[Any, str]]:
        return self.design_tables(study, row)

    def write_reports(self, study: Study, trials: pd.DataFrame) -> dict[str, Path]:
        path = study.folder / PLOT
        plot_precision_sparsity(study, trials, path)
        return {"precision_sparsity": path}
