"""What a study kind is, and the registry that names them.

A study kind (AppAxO configurations, generated circuits, layer-wise assignments, firmware ...)
owns everything that differs between kinds: its part of the study-file schema (the ``space``
section and the rules it adds across sections), the metrics it measures, its search space, its
evaluator behind the wrapper that decodes a configuration before evaluation, and how its
designs are read back (product tables, the multipliers an export writes, the multipliers an
earlier study's front offers a library). The study machinery asks a study's kind through this
registry, the way optuna's samplers and hls4ml's backends are looked up by name, so no code
outside ``dse.kinds`` branches on the kind and a new kind is one class and its ``register``.

This module imports no kind (they import it), so the schema can resolve a kind by name.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from circuits.library import Member
    from dse.space import Space
    from dse.study import Study
    from dse.study_file import StudySettings

Log = Callable[[str], None]


class StudyKind(ABC):
    """One kind of study. Class attributes describe it; methods do its kind-specific work."""

    name: str  #: the registry name, also what ``status`` and the errors call it
    space_type: str  #: the ``space.type`` of the study files it reads
    space_settings: type  #: the pydantic section of its ``space`` (``extra="forbid"``)
    settings_class: type[StudySettings]  #: its study file: ``StudySettings`` with that ``space``
    where: str  #: how messages name it: "the AppAxO model (space type appaxo36)"
    metrics: tuple[str, ...]  #: what its trials measure: the objectives and constraints it takes
    metric_sources: Mapping[str, str] = {}  #: where a cost figure comes from, where not the default
    appaxo_column: str | None = None  #: the trials' column holding an AppAxO configuration
    screening: bool = False  #: whether ``evaluation.screening`` applies
    runs_flow: bool = False  #: whether every trial runs the ASIC flow (not only when asked)
    #: the accuracy drop of each group of layers with each multiplier, the others exact:
    #: ``(evaluator, progress) -> groups x multipliers``; None for a kind with no layers to
    #: choose a multiplier for (``dse sensitivity`` refuses its study files)
    sensitivity: Callable[[Any, bool], pd.DataFrame] | None = None

    def claims(self, space: Mapping[str, Any]) -> bool:
        """Whether a study file's raw ``space`` section is of this kind."""
        return space.get("type") == self.space_type

    def check(self, settings: StudySettings) -> None:
        """Rules across sections beyond the metrics (a ``ValueError`` naming the field); none
        by default."""
        return

    @abstractmethod
    def build_evaluator(self, settings: StudySettings, log: Log, progress: bool | None,
                        folder: Path | None) -> Any:
        """The evaluator of the study's configurations (network, data and costs resident);
        ``folder``: the study folder where it holds what an earlier run measured."""

    @abstractmethod
    def space(self, settings: StudySettings, evaluator: Any) -> Space:
        """The search space the strategy proposes from."""

    @abstractmethod
    def design_tables(self, study: Study, row: pd.Series) -> Any:
        """A design's product table (or its ``LayerTables``, one per layer)."""

    @abstractmethod
    def node_multipliers(self, study: Study, row: pd.Series, layers: Sequence[str]
                         ) -> dict[str, tuple[Any, str]]:
        """Node -> (what an approximate ONNX file carries for it: an AppAxO configuration or a
        product table, its description) for a design."""

    @abstractmethod
    def front_multipliers(self, study: Study) -> tuple[list[int], list[Member]]:
        """The multipliers of the study's front, as a library takes them: (AppAxO
        configurations, other members)."""

    def write_reports(self, study: Study, trials: pd.DataFrame) -> dict[str, Path]:
        """The kind's own plots beside the common ones; returns their paths."""
        return {}

    def unmeasured(self, metric: str) -> str:
        """Why ``metric`` cannot be an objective or constraint of this kind, and who has it."""
        others = [k.where for k in kinds() if k is not self and metric in k.metrics]
        text = f"{metric} is not measured for {self.where}; use {', '.join(self.metrics)}"
        return f"{text} ({metric} comes from {' or '.join(others)})" if others else text


def table_description(name: str, table: Any) -> str:
    """A product table as an approximate ONNX export's ``index.csv`` names it: whose it is and
    its hash (the file's table initializer is ``dse_product_table_<the same 16 digits>``)."""
    return f"{name} (table {table.sha256[:16]})"


_KINDS: dict[str, StudyKind] = {}


def register(kind: StudyKind) -> StudyKind:
    """Add a kind under its name (a name registered twice is an error)."""
    if kind.name in _KINDS:
        raise ValueError(f"study kind {kind.name!r} is registered already")
    _KINDS[kind.name] = kind
    return kind


def unregister(name: str) -> None:
    """Remove a kind (for kinds a program registers for a while, as the tests do)."""
    _KINDS.pop(name, None)


def kinds() -> tuple[StudyKind, ...]:
    """Every registered kind, in registration order."""
    return tuple(_KINDS.values())


def kind_named(name: str) -> StudyKind:
    """The kind registered as ``name``."""
    try:
        return _KINDS[name]
    except KeyError:
        raise ValueError(f"no study kind {name!r} (registered: {', '.join(_KINDS)})") from None


def space_types() -> tuple[str, ...]:
    """The ``space.type`` values study files may give."""
    return tuple(dict.fromkeys(k.space_type for k in _KINDS.values()))


def resolve(space: Mapping[str, Any]) -> StudyKind | None:
    """The kind of a study file's raw ``space`` section (None when none claims it)."""
    claiming = [k for k in _KINDS.values() if k.claims(space)]
    if len(claiming) > 1:
        raise RuntimeError(f"study kinds {', '.join(k.name for k in claiming)} all claim "
                           f"space type {space.get('type')!r}")
    return claiming[0] if claiming else None
