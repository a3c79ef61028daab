"""Layer-wise studies: the library a study file describes, the search space over the network's
layers, configurations decoded to assignments (layer -> member) before they reach the
evaluator, and first proposals seeded from the layer sensitivity."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from circuits.library import LibraryError, Member, MultiplierLibrary
from dse.space import LayerwiseSpace
from dse.study_file import LayerwiseSpaceSettings, LibrarySettings, StudyFileError, StudySettings
from evaluators.approx_runner import require_layers, table_layers
from evaluators.layerwise import EXACT, LayerwiseEvaluator, layer_costs

Log = Callable[[str], None]
SENSITIVITY_CSV = "sensitivity.csv"
# accuracy drops (fractions) a seeded assignment allows in each group of layers
SEED_DROPS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1)


def study_designs(folder: str) -> tuple[list[int], list[Member]]:
    """The multipliers on the Pareto front of an earlier study: its AppAxO configurations, or
    its generated circuits (Verilog and table from its ``pareto/`` files), or for a layer-wise
    study the members its front uses."""
    from circuits.product_table import ProductTable
    from dse.study import load_study

    study = load_study(folder)
    front = study.pareto()
    kind = study.settings.space.type
    if kind == "appaxo36":  # a firmware study's config is joint; its multiplier is appaxo_config
        return [int(c) for c in front.get("appaxo_config", front["config"])], []
    if kind == "layerwise":
        return [], list(MultiplierLibrary.load(Path(folder) / "pareto" / "library"))
    members = []
    for _, row in front.iterrows():
        path = Path(folder) / "pareto" / f"{row['design']}.npy"
        try:
            table = ProductTable(np.load(path), bool(row["signed"]))
        except (OSError, ValueError) as err:
            raise LibraryError(f"{path}: cannot read the product table of a Pareto design "
                               f"({err}); `python -m dse resume {folder}` writes the "
                               "front's design files again") from None
        members.append(Member(row["design"], table, f"study:{folder}/{row['design']}",
                              verilog=row["verilog"]))
    return [], members


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


def make_space(settings: LayerwiseSpaceSettings, layers: Sequence[str],
               members: Sequence[str]) -> LayerwiseSpace:
    """One variable per group: each tie group, then every other searched layer on its own (in
    network order). Layers left out of ``layers`` keep the exact multiplier."""
    named = [] if settings.layers == "all" else list(settings.layers)
    named += [] if settings.tie == "all" else [layer for group in settings.tie for layer in group]
    require_layers(named, layers, "space: ")
    searched = list(layers) if settings.layers == "all" else \
        [layer for layer in layers if layer in settings.layers]
    if settings.tie == "all":
        return LayerwiseSpace((("all", tuple(searched)),), tuple(members))
    tied = {layer: tuple(group) for group in settings.tie for layer in group}
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
            from dse.report import sensitivity_plot

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



def build_evaluator(settings: StudySettings, common: dict, folder: Path | None, log: Log,
                    progress: bool | None) -> AssignmentEvaluator:
    """The network and the library, costed under the study's flow, behind the study's space.
    A study folder that already holds its library (``library/``) and sensitivity table uses
    them, so a resumed study searches exactly what it started with."""
    from evaluators.candidate import build_evaluator as build

    space = settings.space
    saved = folder / "library" if folder is not None else None
    if saved is not None and (saved / "library.csv").is_file():
        library = MultiplierLibrary.load(saved)
    else:
        library = build_library(space.library)
    for name, kept in library.dropped:
        log(f"library: {name} has the same product table as {kept}; kept once as {kept}")
    log(f"library of {len(library)} multipliers: {', '.join(library.names)}")
    evaluator = build(LayerwiseEvaluator, **common, signed=library.signed,
                      prefix_cache_bytes=settings.evaluation.prefix_cache_mb << 20)
    layers = table_layers(evaluator.network.graph)
    wrapped = AssignmentEvaluator(evaluator, make_space(space, layers, library.names))
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
