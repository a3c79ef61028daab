"""Layer-wise studies (``space.type: layerwise``): one member of a multiplier library per
table-multiplying layer (or per tied group of layers). The library a study file describes, the
search space over the network's layers, configurations decoded to assignments (layer ->
member) before they reach the evaluator, first proposals seeded from the layer sensitivity,
and the designs read back as a product table per layer."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import pandas as pd
from pydantic import Field, field_validator, model_validator

from circuits.baselines import parse
from circuits.library import Member, MultiplierLibrary
from dse.assembly import evaluator_inputs
from dse.kinds.base import Log, StudyKind, table_description
from dse.reports.sensitivity import sensitivity_plot
from dse.space import LayerwiseSpace
from dse.study import Study, load_study
from dse.study_file import (
    GridStrategy,
    Section,
    StudyFileError,
    StudySettings,
    existing,
    parse_bits,
)
from evaluators.errors import AssignmentError
from evaluators.runtime.approx_runner import table_layers
from evaluators.runtime.layer_tables import LayerTables
from evaluators.runtime.roles import LayerRole, choose, layer_roles
from evaluators.scoring.candidate import build_evaluator
from evaluators.scoring.layerwise import EXACT, LayerwiseEvaluator, layer_costs


def _one_or_more(value: Any) -> Any:
    """A single path or name where a list is expected reads as a list of one."""
    return [value] if isinstance(value, str) else value


class LibrarySettings(Section):
    """The candidate multipliers of a layer-wise study, from any mix of sources; the exact
    multiplier is always a member. ``from_study``: the Pareto designs of earlier studies;
    ``folder``: a library saved by an earlier layer-wise study (``runs/NAME/library``)."""

    appaxo: list[int] = []
    baselines: list[str] = []
    verilog: list[str] = []
    catalogues: list[str] = []
    from_study: list[str] = []
    folder: str | None = None
    signed: bool = True

    @field_validator("appaxo", mode="before")
    @classmethod
    def _configs(cls, value: Any) -> Any:
        if not isinstance(value, list):
            raise ValueError("appaxo must be a list of configurations (integers or 36-character "
                             "bit strings)")
        return [parse_bits(v, "appaxo entry") for v in value]

    @field_validator("baselines", "verilog", "catalogues", "from_study", mode="before")
    @classmethod
    def _lists(cls, value: Any) -> Any:
        return _one_or_more(value)

    @field_validator("baselines")
    @classmethod
    def _baseline_names(cls, value: list[str]) -> list[str]:
        for name in value:
            parse(name)  # its ValueError names the baseline and the expected forms
        return value

    @field_validator("verilog")
    @classmethod
    def _verilog_files(cls, value: list[str]) -> list[str]:
        return [existing(v, "a Verilog file of an 8x8 multiplier", want_dir=False) for v in value]

    @field_validator("catalogues")
    @classmethod
    def _catalogue_folders(cls, value: list[str]) -> list[str]:
        return [existing(v, "a catalogue written by `python -m dse characterize DIR`",
                          want_dir=True) for v in value]

    @field_validator("from_study")
    @classmethod
    def _study_folders(cls, value: list[str]) -> list[str]:
        for v in value:
            existing(v, "a study folder (runs/NAME)", want_dir=True)
            if not (Path(os.path.expanduser(v)) / "study.yaml").is_file():
                raise ValueError(f"folder {v!r} is not a study folder (no study.yaml)")
        return value

    @field_validator("folder")
    @classmethod
    def _library_folder(cls, value: str | None) -> str | None:
        return None if value is None else existing(
            value, "a saved library (library.csv with tables/)", want_dir=True)

    @model_validator(mode="after")
    def _some_source(self) -> LibrarySettings:
        if not (self.appaxo or self.baselines or self.verilog or self.catalogues
                or self.from_study or self.folder):
            raise ValueError("no candidate multiplier: give appaxo, baselines, verilog, "
                             "catalogues, from_study or folder")
        return self


class LayerwiseSpaceSettings(Section):
    """One library member per table-multiplying layer (``layers``: all, or roles, blocks and
    node names: ``evaluators.runtime.roles``), or per ``tie`` group of layers that must share
    one (``tie: all``: one multiplier everywhere, the homogeneous study over the same library;
    ``per_block``, ``per_role``: one per transformer block or per role; or a list of groups,
    each of roles, blocks or node names). ``datapath`` says how area and FPGA LUTs add up:
    ``shared`` (one array of the distinct multipliers used, time-shared by the layers) or
    ``spatial`` (a processing element per layer). ``sensitivity``: score each layer with each
    member first and seed the first proposals from it."""

    type: Literal["layerwise"]
    library: LibrarySettings
    layers: Literal["all"] | Annotated[list[str], Field(min_length=1)] = "all"
    tie: Literal["all", "per_block", "per_role"] | \
        list[Annotated[list[str], Field(min_length=1)]] = []
    datapath: Literal["shared", "spatial"] = "shared"
    sensitivity: bool = False

    @model_validator(mode="after")
    def _disjoint_ties(self) -> LayerwiseSpaceSettings:
        if isinstance(self.tie, list):
            seen: set[str] = set()
            for group in self.tie:
                for layer in group:
                    if layer in seen:
                        raise ValueError(f"tie: layer {layer!r} is in two groups")
                    seen.add(layer)
        return self


SENSITIVITY_CSV = "sensitivity.csv"
# accuracy drops (fractions) a seeded assignment allows in each group of layers
SEED_DROPS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1)


def study_designs(folder: str) -> tuple[list[int], list[Member]]:
    """The multipliers on the Pareto front of an earlier study, as its kind reads them back."""
    study = load_study(folder)
    return study.settings.kind.front_multipliers(study)


def build_library(settings: LibrarySettings) -> MultiplierLibrary:
    """The library a study file's ``space.library`` describes (exact multiplier first)."""
    configs, members = list(settings.appaxo), []
    if settings.folder:
        members += list(MultiplierLibrary.load(Path(settings.folder)))
    for folder in settings.from_study:
        found, designs = study_designs(folder)
        configs += found
        members += designs
    return MultiplierLibrary.build(signed=settings.signed, appaxo=configs,
                                   baselines=settings.baselines, verilog=settings.verilog,
                                   catalogues=settings.catalogues, members=members)


def make_space(settings: LayerwiseSpaceSettings, layers: Sequence[str], members: Sequence[str],
               roles: Mapping[str, LayerRole] | None = None,
               approximate: Sequence[str] | str = "all") -> LayerwiseSpace:
    """One variable per group: each tie group, then every other searched layer on its own (in
    network order). The searched layers are those both ``settings.layers`` and the study's
    ``approximate`` choose (``roles``: each layer's role and block); the others keep the exact
    multiplier."""
    roles = roles or {}
    searched = [layer for layer in choose(layers, roles, settings.layers, "space: ")
                if layer in choose(layers, roles, approximate, "approximate: ")]
    if settings.tie == "all":
        return LayerwiseSpace((("all", tuple(searched)),), tuple(members))
    if settings.tie in ("per_block", "per_role"):
        if not roles:
            raise AssignmentError(f"space: tie: {settings.tie} needs a transformer (layers with "
                                  "roles and blocks); this network multiplies no two activations")
        key = {layer: r.group if settings.tie == "per_block" else r.role
               for layer, r in roles.items()}
        grouped: dict[str, list[str]] = {}
        for layer in searched:
            grouped.setdefault(key[layer], []).append(layer)
        return LayerwiseSpace(tuple((name, tuple(g)) for name, g in grouped.items()),
                              tuple(members))
    tied: dict[str, tuple[str, ...]] = {}
    for group in settings.tie:
        # a role or block ties its searched layers; a layer named in a tie must be searched
        chosen = tuple(layer for layer in choose(layers, roles, group, "space: ")
                       if layer in searched or layer in group)
        for layer in chosen:
            if layer in tied:
                raise AssignmentError(f"space: tie: layer {layer!r} is in two groups")
            if layer not in searched:
                raise AssignmentError(f"space: tie: {layer!r} is not among the searched layers")
            tied[layer] = chosen
    groups: dict[tuple[str, ...], None] = {}
    for layer in searched:
        groups.setdefault(tied.get(layer, (layer,)), None)
    return LayerwiseSpace(tuple(("+".join(g), g) for g in groups), tuple(members))


@dataclass
class AssignmentEvaluator:
    """A layer-wise evaluator seen through the study's space: configurations are decoded to
    assignments (layers outside the space keep the exact multiplier) before evaluation.
    Everything else is the evaluator's. ``initial``: configurations to propose first;
    ``drops``: the layer sensitivity they were seeded from."""

    evaluator: LayerwiseEvaluator
    space: LayerwiseSpace
    initial: tuple[int, ...] = ()
    drops: pd.DataFrame | None = None

    def save_artifacts(self, folder: Path) -> None:
        """The evaluator's artifacts, and the sensitivity table and heat map when measured."""
        self.evaluator.save_artifacts(folder)
        if self.drops is not None:
            self.drops.to_csv(folder / SENSITIVITY_CSV)
            sensitivity_plot(self.drops, folder / "sensitivity.png", folder.name)

    def assignment(self, config: int) -> dict[str, str]:
        exact = self.evaluator.library[EXACT].name
        return {**{layer: exact for layer in self.evaluator.layers}, **self.space.assignment(config)}

    def evaluate(self, config: int, front=None) -> dict:
        """The assignment's metrics (the store records ``config`` with every trial)."""
        return self.evaluator.evaluate(self.assignment(config), front)

    def __getattr__(self, name: str):
        if name.startswith("__") or name in ("evaluator", "space", "initial", "drops"):
            raise AttributeError(name)  # unpickling looks these up before they exist
        return getattr(self.evaluator, name)


def sensitivity(evaluator: AssignmentEvaluator, folder: Path | None = None,
                progress: bool = False) -> pd.DataFrame:
    """The accuracy drop of each group of layers with each member (exact elsewhere): read from
    ``folder`` when an earlier run stored it there, else measured."""
    path = folder / SENSITIVITY_CSV if folder is not None else None
    if path is not None and path.is_file():
        drops = pd.read_csv(path, index_col=0)
        check_groups(evaluator.space, drops)
        return drops
    groups = dict(evaluator.space.groups)
    accuracy = evaluator.evaluator.sensitivity(groups, progress)
    exact = evaluator.evaluator.library[EXACT].name
    return -(accuracy.sub(accuracy[exact], axis=0))


def seed_configs(space: LayerwiseSpace, drops: pd.DataFrame, cost: pd.DataFrame) -> tuple[int, ...]:
    """One assignment per allowed drop in ``SEED_DROPS``: in each group, the cheapest member
    (``cost``: groups x members) whose accuracy drop alone in that group is within it. A ladder
    from near-exact to aggressive designs for the strategy's first proposals."""
    configs: dict[int, None] = {}
    members = list(space.members)
    for allowed in SEED_DROPS:
        digits = []
        for group, _ in space.groups:
            ok = [m for m in members if drops.loc[group, m] <= allowed]
            digits.append(members.index(min(ok, key=lambda m: cost.loc[group, m])))
        configs.setdefault(space.from_digits(digits), None)
    return tuple(configs)


def group_costs(evaluator: LayerwiseEvaluator, space: LayerwiseSpace) -> pd.DataFrame:
    """The multiplication energy of each group (its layers' MACs x energy per multiplication)
    with each member: what the seeding ranks members by."""
    costs = evaluator.costs
    rows = {}
    for group, layers in space.groups:
        rows[group] = sum(costs.energy[layer] * costs.macs[layer] for layer in layers)
    return pd.DataFrame(rows).T[list(space.members)]


def check_groups(space: LayerwiseSpace, drops: pd.DataFrame) -> None:
    """A stored sensitivity table must be the one of this space (same groups and members)."""
    if list(drops.index) != [g for g, _ in space.groups] or \
            list(drops.columns) != list(space.members):
        raise StudyFileError(f"{SENSITIVITY_CSV}: does not match the study's layer groups and "
                             "library; delete it to measure it again")


def build_assignment_evaluator(settings: StudySettings, folder: Path | None, log: Log,
                               progress: bool | None) -> AssignmentEvaluator:
    """The network and the library, costed under the study's flow, behind the study's space.
    A study folder that already holds its library (``library/``) and sensitivity table uses
    them, so a resumed study searches exactly what it started with."""
    space = settings.space
    saved = folder / "library" if folder is not None else None
    if saved is not None and (saved / "library.csv").is_file():
        library = MultiplierLibrary.load(saved)
    else:
        library = build_library(space.library)
    for name, kept in library.dropped:
        log(f"library: {name} has the same product table as {kept}; kept once as {kept}")
    log(f"library of {len(library)} multipliers: {', '.join(library.names)}")
    evaluator = build_evaluator(LayerwiseEvaluator, **evaluator_inputs(settings, log, progress, flow=True),
                                signed=library.signed,
                      prefix_cache_bytes=settings.evaluation.prefix_cache_mb << 20)
    graph = evaluator.network.graph
    wrapped = AssignmentEvaluator(evaluator, make_space(
        space, table_layers(graph), library.names, layer_roles(graph), settings.approximate))
    evaluator.library, evaluator.costs = layer_costs(
        evaluator, library, space.datapath, fpga=settings.needs_fpga_synthesis,
        seed=settings.seed, log=log, progress=bool(progress))
    log(f"layer-wise space: {len(wrapped.space.groups)} groups of layers x {len(library)} "
        f"multipliers = {wrapped.space.size:.4g} assignments")
    if space.sensitivity:
        log("measuring the layer sensitivity (each member alone in each group of layers)")
        wrapped.drops = sensitivity(wrapped, folder if saved is not None else None, bool(progress))
        wrapped.initial = seed_configs(wrapped.space, wrapped.drops,
                                       group_costs(evaluator, wrapped.space))
    return wrapped


class LayerwiseStudySettings(StudySettings):
    """A study file of a layer-wise study."""

    kind_name: ClassVar[str] = "layerwise"
    space: LayerwiseSpaceSettings


class LayerwiseKind(StudyKind):
    """Assignments of library members to layers, costed per layer under the workload."""

    name = "layerwise"
    space_type = "layerwise"
    space_settings = LayerwiseSpaceSettings
    settings_class = LayerwiseStudySettings
    where = "a layer-wise assignment (space type layerwise)"
    metrics = ("accuracy", "accuracy_drop", "precision_macro", "recall_macro", "f1_macro",
               "energy", "energy_saving", "area", "delay", "fpga_luts", "fpga_carry4",
               "mae", "mred", "wce", "error_probability")
    metric_sources = {"fpga_luts": "AppAxO model or Yosys synth_xilinx",
                      "fpga_carry4": "AppAxO model or Yosys synth_xilinx"}
    runs_flow = True  # every member is costed under the network's workload

    def check(self, settings: StudySettings) -> None:
        if isinstance(settings.strategy, GridStrategy) and settings.strategy.configs is not None:
            raise ValueError("strategy.configs lists AppAxO configurations; a layer-wise grid "
                             "counts over the assignments")

    def build_evaluator(self, settings: StudySettings, log: Log, progress: bool | None,
                        folder: Path | None) -> AssignmentEvaluator:
        return build_assignment_evaluator(settings, folder, log, progress)

    def space(self, settings: StudySettings, evaluator: Any) -> LayerwiseSpace:
        return evaluator.space

    def design_tables(self, study: Study, row: pd.Series) -> LayerTables:
        library = MultiplierLibrary.load(study.folder / "library")
        return LayerTables({layer: library[m].table for layer, m in row["assignment"].items()},
                           library[EXACT].table)

    def node_multipliers(self, study: Study, row: pd.Series, layers: Sequence[str]
                         ) -> dict[str, tuple[Any, str]]:
        """AppAxO members as their configuration, the others as their table."""
        library = MultiplierLibrary.load(study.folder / "library")
        members = {layer: library[row["assignment"].get(layer, EXACT)] for layer in layers}
        return {layer: (m.appaxo_config, f"appaxo:{m.appaxo_config}")
                if m.appaxo_config is not None else (m.table, table_description(m.name, m.table))
                for layer, m in members.items()}

    def front_multipliers(self, study: Study) -> tuple[list[int], list[Member]]:
        """The members the front uses (its ``pareto/library``)."""
        return [], list(MultiplierLibrary.load(study.folder / "pareto" / "library"))

    def sensitivity(self, evaluator: Any, progress: bool) -> pd.DataFrame:  # type: ignore[override]
        """The drops measured over the study's groups of layers (``sensitivity``)."""
        return sensitivity(evaluator, progress=progress)
