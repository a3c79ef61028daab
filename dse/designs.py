"""A study's stored designs read back for work after the search: the trial a user names, the
product table(s) it multiplies with (as the study's kind reads them back).

``retrain`` and ``analyze`` start from a study folder and a design name, so both resolve it
here: by trial number, by the ``design`` column (an AppAxO design name, a generated circuit, a
layer-wise ``lw_...`` name) or by configuration integer.
"""

from __future__ import annotations

import pandas as pd

from dse.study import BASELINE, DESIGN_POINT, SEARCH, Study
from dse.study_file import StudyFileError

DESIGN_ROLES = (BASELINE, SEARCH, DESIGN_POINT)  # the trials that measured a multiplier


class DesignError(StudyFileError):
    """A design that the study does not hold, or whose multiplier cannot be read back."""


def design_name(row: pd.Series) -> str:
    """The design's name, or ``trial<N>`` where the trial has none."""
    design = row.get("design")
    return str(design) if isinstance(design, str) and design else f"trial{int(row['trial'])}"


def measured(study: Study) -> pd.DataFrame:
    """The completed trials that measured a design on the whole test set (not the retrained
    ones, nor those screened on a subset, whose accuracy is not comparable)."""
    done = study.trials
    if done.empty:
        return done
    done = done[(done["state"] == "COMPLETE") & done["role"].isin(DESIGN_ROLES)]
    if "fidelity" in done:
        done = done[done["fidelity"].fillna("full") != "screened"]
    return done


def find_design(study: Study, spec: str) -> pd.Series:
    """The trial ``spec`` names: a trial number, a design name, or a configuration integer
    (the first completed trial that matches, in that order). One line naming valid choices
    otherwise."""
    rows = measured(study)
    spec = str(spec).strip()
    if spec.isdigit() and int(spec) in set(rows["trial"]):
        return rows[rows["trial"] == int(spec)].iloc[0]
    if "design" in rows and (hit := rows[rows["design"].astype(str) == spec]).shape[0]:
        return hit.iloc[0]
    if spec.isdigit() and (hit := rows[rows["config"].astype(str) == spec]).shape[0]:
        return hit.iloc[0]
    front = study.pareto()
    front = front[front["role"].isin(DESIGN_ROLES)] if not front.empty else front
    names = [f"{int(t)} ({d})" for t, d in zip(front.get("trial", []), front.get("design", []))]
    raise DesignError(f"--design {spec!r}: no completed trial of study {study.name} has that "
                      "trial number, design name or configuration; its Pareto designs (trial "
                      f"(design)): {', '.join(names[:12]) or 'none yet'}")


def front_designs(study: Study) -> pd.DataFrame:
    """The Pareto-optimal measured designs, the exact baseline left out (nothing to recover)."""
    front = study.pareto()
    if front.empty:
        return front
    return front[front["role"].isin((SEARCH, DESIGN_POINT))]


def design_tables(study: Study, row: pd.Series):
    """The product table of a design, or its ``LayerTables`` (one per layer), as the study's
    kind reads it back."""
    return study.settings.kind.design_tables(study, row)
