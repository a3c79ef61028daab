"""Search strategies behind one ask/tell contract, chosen by name in the study file."""

from __future__ import annotations

from collections.abc import Sequence

from dse.space import Space
from dse.strategies.base import Evaluation, Proposal, Strategy
from dse.strategies.bayes import BayesStrategy
from dse.strategies.nsga2 import NSGA2Strategy
from dse.strategies.sequence import GridStrategy, RandomStrategy, SobolStrategy

REGISTRY: dict[str, type[Strategy]] = {
    s.name: s for s in (GridStrategy, RandomStrategy, SobolStrategy, NSGA2Strategy, BayesStrategy)
}

__all__ = ["REGISTRY", "Evaluation", "Proposal", "Strategy", "make_strategy"]


def make_strategy(settings: dict, space: Space, directions: list[str], n_constraints: int = 0,
                  seed: int = 0, initial: Sequence[int] = ()) -> Strategy:
    """The strategy a study file's ``strategy`` section describes (its other keys are options),
    proposing the ``initial`` configurations first."""
    options = {k: v for k, v in settings.items() if k != "type"}
    return REGISTRY[settings["type"]](space, list(directions), n_constraints, seed,
                                      initial=initial, **options)
