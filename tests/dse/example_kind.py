"""An example study kind, as a plug-in would add one: truncated multipliers (the ``k`` least
significant partial-product columns dropped, ``circuits.baselines.truncated``), one multiplier
for every layer. This module and ``register(TruncationKind())`` are all a new kind needs: its
space section, its metrics, its space and evaluator, and how its designs are read back."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import numpy as np
import pandas as pd
from pydantic import Field

from circuits.baselines import truncated
from circuits.error_metrics import error_metrics
from circuits.library import Member
from circuits.product_table import ProductTable
from dse.assembly import evaluator_inputs
from dse.kinds import StudyKind
from dse.kinds.base import Log, table_description
from dse.space import ChoiceSpace
from dse.study import Study
from dse.study_file import Section, StudySettings
from evaluators.scoring.candidate import ScoredEvaluator, build_evaluator


class TruncationSpace(Section):
    """``columns``: the searched numbers of dropped columns (1, 2, 4, 8 ... values)."""

    type: Literal["truncation"]
    columns: list[Annotated[int, Field(ge=0, le=15)]] = [1, 2, 4, 6]


class TruncationStudySettings(StudySettings):
    kind_name: ClassVar[str] = "truncation"
    space: TruncationSpace


@dataclass
class TruncationEvaluator(ScoredEvaluator):
    """Scores the truncated multiplier with ``columns`` dropped."""

    def evaluate_columns(self, config: int, columns: int) -> dict:
        array = truncated(columns, signed=True)
        table = array.table()
        return {"config": int(config), "design": array.name, "columns": columns,
                "table_sha256": table.sha256, "fingerprint": self.fingerprint,
                **error_metrics(table), **self.score(table)}

    def export(self, front: pd.DataFrame, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        for _, row in front.iterrows():
            np.save(folder / f"{row['design']}.npy", truncated(int(row["columns"])).table().values)


@dataclass
class TruncationTrials:
    """The evaluator behind the study's space: a configuration decoded to its columns."""

    evaluator: TruncationEvaluator
    space: ChoiceSpace

    def evaluate(self, config: int, front=None) -> dict:
        columns = 0 if config == self.space.exact else self.space.values(config)["columns"]
        return self.evaluator.evaluate_columns(config, columns)

    def __getattr__(self, name: str):
        if name.startswith("__") or name in ("evaluator", "space"):
            raise AttributeError(name)
        return getattr(self.evaluator, name)


class TruncationKind(StudyKind):
    name = "truncation"
    space_type = "truncation"
    space_settings = TruncationSpace
    settings_class = TruncationStudySettings
    where = "truncated multipliers (space type truncation)"
    metrics = ("accuracy", "accuracy_drop", "f1_macro", "mae", "wce", "mred",
               "error_probability")

    def build_evaluator(self, settings: StudySettings, log: Log, progress: bool | None,
                        folder: Path | None) -> TruncationTrials:
        evaluator = build_evaluator(TruncationEvaluator, **evaluator_inputs(settings, log,
                                                                            progress))
        return TruncationTrials(evaluator, self.space(settings, evaluator))

    def space(self, settings: StudySettings, evaluator: Any) -> ChoiceSpace:
        return ChoiceSpace((("columns", tuple(sorted(settings.space.columns))),))

    def design_tables(self, study: Study, row: pd.Series) -> ProductTable:
        return truncated(int(row["columns"])).table()

    def node_multipliers(self, study: Study, row: pd.Series, layers: Sequence[str]
                         ) -> dict[str, tuple[Any, str]]:
        table = self.design_tables(study, row)
        return {layer: (table, table_description(row["design"], table)) for layer in layers}

    def front_multipliers(self, study: Study) -> tuple[list[int], list[Member]]:
        return [], [Member(row["design"], self.design_tables(study, row), f"study:{row['design']}")
                    for _, row in study.pareto().iterrows()]
