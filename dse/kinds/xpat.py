"""Generated-circuit studies (``space.type: xpat``): a trial runs the built-in XPAT-style
generator on the exact multiplier at one worst-case error threshold with the searched
parameters, and every circuit it accepts is a design (its Verilog, its simulated product table,
its synthesized costs)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import numpy as np
import pandas as pd
from pydantic import Field, field_validator, model_validator

from circuits.characterize import characterize, stored_table
from circuits.library import LibraryError, Member
from circuits.multiplier import Multiplier
from circuits.product_table import ProductTable
from dse.assembly import evaluator_inputs, flow_settings
from dse.designs import DesignError
from dse.kinds.base import Log, StudyKind, table_description
from dse.space import ChoiceSpace
from dse.study import Study
from dse.study_file import CONSTRAINT_METRICS, Seconds, Section, StudySettings
from evaluators.scoring.candidate import build_evaluator
from evaluators.scoring.generated import XpatEvaluator, XpatRun

# figures of the AppAxO model, of a layer-wise assignment and of the firmware model
NOT_MEASURED = ("fpga_delay", "fpga_power", "kept_luts", "energy", "energy_saving", "bram",
                "dsps", "latency_cycles", "multipliers")
FIXED = ("steps", "attempts", "solver_timeout_s", "time_limit_s")  # the same for every trial


def _power_of_two_list(value: list, field: str) -> list:
    if not value or len(value) & (len(value) - 1):
        raise ValueError(f"{field} must list 1, 2, 4, 8 or 16 ... values (the space is encoded "
                         f"in bits), got {len(value)}")
    if len(set(map(repr, value))) != len(value):
        raise ValueError(f"{field} lists a value twice: {value}")
    return value


class Thresholds(Section):
    """Worst-case error thresholds: ``count`` values log-spaced from ``low`` to ``high``."""

    low: Annotated[float, Field(ge=1, le=1 << 20)] = 16
    high: Annotated[float, Field(ge=1, le=1 << 20)] = 1024
    count: Annotated[int, Field(ge=1, le=64)] = 8

    @model_validator(mode="after")
    def _check(self) -> Thresholds:
        if self.count & (self.count - 1):
            raise ValueError(f"count must be 1, 2, 4, 8, 16, 32 or 64 (the space is encoded in "
                             f"bits), got {self.count}")
        if self.high < self.low:
            raise ValueError(f"high ({self.high:g}) must be >= low ({self.low:g})")
        if len(self.values()) != self.count:
            raise ValueError(f"{self.count} log-spaced integer thresholds from {self.low:g} to "
                             f"{self.high:g} are not distinct; lower count or widen the range")
        return self

    def values(self) -> tuple[int, ...]:
        return tuple(sorted({int(round(v)) for v in np.geomspace(self.low, self.high, self.count)}))


class XpatSpace(Section):
    """Parameters of the built-in XPAT-style generator (``circuits.xpat``). A trial runs the
    generator on the exact multiplier at one worst-case error threshold and stores every
    circuit it accepts. Lists are the searched values (lengths 1, 2, 4, 8, ...); the others
    are fixed for every trial."""

    type: Literal["xpat"]
    signed: bool = True
    thresholds: Thresholds = Thresholds()
    max_inputs: list[Annotated[int, Field(ge=1, le=12)]] = [6, 8]
    max_outputs: list[Annotated[int, Field(ge=1, le=8)]] = [2, 3]
    literals_per_product: list[Annotated[int, Field(ge=0, le=16)]] = [2, 3]
    products: list[Annotated[int, Field(ge=0, le=16)]] = [1, 2]
    shared: list[bool] = [False]
    exact_zero: list[bool] = [False]
    steps: Annotated[int, Field(ge=1, le=1000)] = 8
    attempts: Annotated[int, Field(ge=1, le=1000)] = 6
    solver_timeout_s: Seconds = 2.0
    time_limit_s: Seconds = 300.0

    @field_validator("max_inputs", "max_outputs", "literals_per_product", "products", "shared",
                     "exact_zero")
    @classmethod
    def _lists(cls, value: list, info) -> list:
        return _power_of_two_list(value, info.field_name)

    def choices(self) -> tuple[tuple[str, tuple], ...]:
        """The searched parameters and their values, in bit order."""
        return (("threshold", self.thresholds.values()),
                *((name, tuple(getattr(self, name))) for name in
                  ("max_inputs", "max_outputs", "literals_per_product", "products", "shared",
                   "exact_zero")))


class XpatStudySettings(StudySettings):
    """A study file of a generated-circuit study."""

    kind_name: ClassVar[str] = "xpat"
    space: XpatSpace


@dataclass
class XpatTrials:
    """The generator evaluator seen through the study's space: a configuration is decoded to
    the generator's parameters (none for the exact multiplier) before the run. Everything
    else is the evaluator's."""

    evaluator: XpatEvaluator
    space: ChoiceSpace

    def evaluate(self, config: int, front=None) -> dict:
        params = None if config == self.space.exact else self.space.values(config)
        return self.evaluator.evaluate_run(config, params)

    def __getattr__(self, name: str):
        if name.startswith("__") or name in ("evaluator", "space"):
            raise AttributeError(name)  # unpickling looks these up before they exist
        return getattr(self.evaluator, name)


class XpatKind(StudyKind):
    """Generator runs; each accepted circuit a design point of its trial."""

    name = "xpat"
    space_type = "xpat"
    space_settings = XpatSpace
    settings_class = XpatStudySettings
    where = "generated circuits (space type xpat)"
    metrics = tuple(m for m in CONSTRAINT_METRICS if m not in NOT_MEASURED)
    metric_sources = {"fpga_luts": "Yosys synth_xilinx", "fpga_carry4": "Yosys synth_xilinx"}
    runs_flow = True  # a generator synthesizes every circuit it tries

    def build_evaluator(self, settings: StudySettings, log: Log, progress: bool | None,
                        folder: Path | None) -> XpatTrials:
        run = XpatRun(settings.space.model_dump(include=set(FIXED)), settings.space.signed,
                      fpga=settings.needs_fpga_synthesis)
        evaluator = build_evaluator(XpatEvaluator, **evaluator_inputs(settings, log, progress,
                                                                      flow=True),
                                    run=run, signed=settings.space.signed)
        return XpatTrials(evaluator, self.space(settings, evaluator))

    def space(self, settings: StudySettings, evaluator: Any) -> ChoiceSpace:
        return ChoiceSpace(settings.space.choices())

    def design_tables(self, study: Study, row: pd.Series) -> ProductTable:
        """A generated circuit's table: cached by hash, else in ``pareto/``, else simulated."""
        signed, sha = bool(row["signed"]), str(row["table_sha256"])
        try:
            return stored_table(sha, signed)
        except (OSError, ValueError):
            pass
        path = study.folder / "pareto" / f"{row['design']}.npy"
        if path.is_file():
            table = ProductTable(np.load(path), signed)
            if table.sha256 == sha:
                return table
        table = characterize(Multiplier(row["design"], row["verilog"], row["design"], signed),
                             flow_settings(study.settings)).table
        if table.sha256 != sha:
            raise DesignError(f"design {row['design']}: its Verilog simulates to a table other "
                              "than the one the study measured")
        return table

    def node_multipliers(self, study: Study, row: pd.Series, layers: Sequence[str]
                         ) -> dict[str, tuple[Any, str]]:
        table = self.design_tables(study, row)
        text = table_description(row["design"], table)
        return {layer: (table, text) for layer in layers}

    def front_multipliers(self, study: Study) -> tuple[list[int], list[Member]]:
        """The front's circuits, with the Verilog and table its ``pareto/`` files hold."""
        members = []
        for _, row in study.pareto().iterrows():
            path = study.folder / "pareto" / f"{row['design']}.npy"
            try:
                table = ProductTable(np.load(path), bool(row["signed"]))
            except (OSError, ValueError) as err:
                raise LibraryError(f"{path}: cannot read the product table of a Pareto design "
                                   f"({err}); `python -m dse resume {study.folder}` writes the "
                                   "front's design files again") from None
            members.append(Member(row["design"], table, f"study:{study.folder}/{row['design']}",
                                  verilog=row["verilog"]))
        return [], members
