"""Firmware studies: the multiplier searched jointly with the network's precision, reuse factor
and sparsity (``space.firmware`` on an ``appaxo36`` space). The joint space, configurations
decoded to (AppAxO configuration, recipe, reuse factor) before they reach the evaluator, and
the plots of accuracy and resources against bit width and sparsity.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from optuna.distributions import BaseDistribution, CategoricalDistribution

from circuits.appaxo import N_BITS as APPAXO_BITS
from dse.space import AppAxOSubspace
from dse.study import Study
from dse.study_file import FirmwareSettings, StudySettings
from evaluators.firmware import FirmwareEvaluator, TrainingData
from evaluators.precision import FineTuning, Recipe

Log = Callable[[str], None]
SPAN = 1 << APPAXO_BITS  # a configuration is appaxo_config + SPAN * firmware point
PLOT = "precision_sparsity.png"


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


def build_evaluator(settings: StudySettings, common: dict, log: Log,
                    progress: bool | None) -> FirmwareTrials:
    """The study's network and data behind the joint space of ``space.firmware``."""
    from circuits.cache import ResultCache
    from evaluators.candidate import build_evaluator as build

    firmware = settings.space.firmware
    f = firmware.fine_tune
    tuning = FineTuning(epochs=f.epochs, images=f.images, learning_rate=f.learning_rate,
                        batch_size=f.batch_size, seed=settings.seed)
    training = TrainingData(common["dataset"], common["dataset_path"], common["download"],
                            common["train_size"], common["preprocessing"])
    evaluator = build(FirmwareEvaluator, **common, tuning=tuning, tuning_data=training,
                      timeout_s=settings.hardware.timeout_s, variant_progress=progress, variant_log=log,
                      fpga_cache=ResultCache())
    layers = tuple(evaluator.layers)
    space = FirmwareSpace(AppAxOSubspace(settings.space.free, settings.space.fixed),
                          firmware_variables(firmware, layers), layers)
    log(f"firmware space: {space.inner.size} multipliers x {space.firmware_size} firmware "
        f"settings ({', '.join(n for n, _ in space.searched) or 'none searched'}) = "
        f"{space.size:.4g} configurations")
    return FirmwareTrials(evaluator, space)


def plot_precision_sparsity(study: Study, trials: pd.DataFrame, path: Path) -> None:
    """Accuracy and FPGA LUTs against weight bits and against sparsity: every evaluated design
    (faint, jittered sideways; LUTs coloured by reuse factor), the Pareto front highlighted,
    the best value at each bit width or sparsity joined by a line, and the best accuracy of a
    network variant with the exact multiplier (what precision and pruning cost by themselves);
    the exact 8-bit dense baseline starred."""
    from dse.report import BASELINE, completed, label, pyplot

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
