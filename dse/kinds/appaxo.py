"""AppAxO studies (``space.type: appaxo36``): the free LUTs of EMGAxO/AppAxO's 36-LUT signed
8x8 multiplier are searched, one multiplier for every layer; a design is a 36-bit
configuration whose product table the bit model computes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import pandas as pd
from pydantic import field_validator

from circuits import appaxo
from circuits.appaxo import N_BITS as APPAXO_BITS
from circuits.library import Member
from circuits.product_table import ProductTable
from dse.assembly import evaluator_inputs
from dse.kinds.base import Log, StudyKind
from dse.space import AppAxOSubspace
from dse.study import Study
from dse.study_file import CONSTRAINT_METRICS, Section, StudySettings, parse_bits
from evaluators.scoring.candidate import AppAxOEvaluator, build_evaluator
from evaluators.scoring.screening import Screening

# what neither the multiplier nor the network measures alone: a layer-wise assignment's
# multiplication energy, the firmware model's resources
NOT_MEASURED = ("energy", "energy_saving", "bram", "dsps", "latency_cycles", "multipliers")


class AppAxOSpace(Section):
    """AppAxO 36-bit configurations: the bits set in ``free`` are searched; the others take
    their value from ``fixed``. Both are 36-character MSB-first strings (or integers)."""

    type: Literal["appaxo36"]
    free: int
    fixed: int = (1 << APPAXO_BITS) - 1

    @field_validator("free", "fixed", mode="before")
    @classmethod
    def _bits(cls, value: Any, info) -> int:
        return parse_bits(value, info.field_name)

    @field_validator("free")
    @classmethod
    def _some_free(cls, value: int) -> int:
        if value == 0:
            raise ValueError("free has no bit set: there is nothing to search")
        return value


class AppAxOStudySettings(StudySettings):
    """A study file of an AppAxO study."""

    kind_name: ClassVar[str] = "appaxo36"
    space: AppAxOSpace


class AppAxOKind(StudyKind):
    """One AppAxO configuration for every layer; the network scored through its table."""

    name = "appaxo36"
    space_type = "appaxo36"
    space_settings = AppAxOSpace
    settings_class = AppAxOStudySettings
    where = "AppAxO configurations (space type appaxo36)"
    metrics = tuple(m for m in CONSTRAINT_METRICS if m not in NOT_MEASURED)
    appaxo_column = "config"
    screening = True

    def claims(self, space: Mapping[str, Any]) -> bool:
        return super().claims(space) and "firmware" not in space  # dse.kinds.firmware's

    def build_evaluator(self, settings: StudySettings, log: Log, progress: bool | None,
                        folder: Path | None) -> AppAxOEvaluator:
        screen = settings.evaluation.screening
        return build_evaluator(
            AppAxOEvaluator, **evaluator_inputs(settings, log, progress),
            screening=Screening(screen.images, screen.confidence, settings.seed) if screen
            else None)

    def space(self, settings: StudySettings, evaluator: Any) -> AppAxOSubspace:
        return AppAxOSubspace(settings.space.free, settings.space.fixed)

    def design_tables(self, study: Study, row: pd.Series) -> ProductTable:
        return appaxo.table(int(row["config"]))

    def node_multipliers(self, study: Study, row: pd.Series, layers: Sequence[str]
                         ) -> dict[str, tuple[Any, str]]:
        config = int(row[self.appaxo_column])
        return {layer: (config, f"appaxo:{config}") for layer in layers}

    def front_multipliers(self, study: Study) -> tuple[list[int], list[Member]]:
        front = study.pareto()
        return [int(c) for c in front[self.appaxo_column]], []
