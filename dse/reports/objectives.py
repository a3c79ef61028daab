"""A study's objectives as the figures see them: the pairs a projection plots, the objective
columns in minimization form, the hypervolume box, and the completed trials."""

from __future__ import annotations

from itertools import combinations

import numpy as np
import pandas as pd

from dse.indicators import hypervolume_box
from dse.pareto import to_minimization
from dse.study import RETRAINED, Study


def objective_pairs(objectives: list[str]) -> list[tuple[str, str]]:
    """(x, y) of every pair of objectives once, the earlier objective on y (accuracy first)."""
    return [(objectives[j], objectives[i]) for i, j in combinations(range(len(objectives)), 2)]


def minimization_form(study: Study, frame: pd.DataFrame) -> np.ndarray:
    """The objective columns of ``frame`` with maximized ones negated."""
    return to_minimization(frame[study.objectives].to_numpy(dtype=float), study.directions)


def study_box(study: Study) -> tuple[np.ndarray, np.ndarray, float]:
    """(reference, ideal, box volume) of the study, all in minimization form."""
    ref = study.reference_point
    reference = to_minimization(np.array([[ref[k] for k in study.objectives]]), study.directions)[0]
    ideal, box = hypervolume_box(minimization_form(study, study.feasible()), reference)
    return reference, ideal, box


def completed(trials: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The completed trials: (measured, retrained)."""
    done = trials[trials["state"] == "COMPLETE"]
    return done[done["role"] != RETRAINED], done[done["role"] == RETRAINED]
