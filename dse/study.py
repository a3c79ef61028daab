"""A study folder read back: settings, trials as a DataFrame, the Pareto front.

Layout of a study folder (default ``runs/<name>/``): ``study.yaml`` (the frozen, validated
settings) and ``study.sha256``, ``trials.journal`` (the Optuna trial store), ``network/`` (the
float and int8 ONNX models it was scored with), ``workload.npz`` (when power is an objective),
``trials.csv``, ``pareto.csv``, ``pareto.png``, ``pareto/`` (design files of the front),
``retrained/<design>-<gradient>-e<epochs>/int8.onnx`` (retrained networks; ``-lr<rate>-b<batch>``
appended where those are not the defaults) and ``retrained.csv``.

Retrained trials (role ``retrained``, ``dse.retrain``) are the study's designs with fine-tuned
weights: they never count as search trials, and the front, the hypervolume and the feasible
trials mean the measured designs unless ``retrained=True`` asks for each design at its best.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from optuna.distributions import CategoricalDistribution

from dse.indicators import hypervolume
from dse.pareto import non_dominated, to_minimization
from dse.storage import JOURNAL, StorageError, TrialStore, stored_config
from dse.study_file import (
    Constraint,
    StudyFileError,
    StudySettings,
    identity_sha256,
    load_study_file,
)

FROZEN = "study.yaml"
FROZEN_HASH = "study.sha256"
BASELINE = "baseline"
SEARCH = "search"
DESIGN_POINT = "design_point"  # a further circuit of a search trial's generator run
RETRAINED = "retrained"  # a design with retrained weights, linked to it by ``design_trial``
REFERENCE_POINT = "reference_point"


def read_frozen(folder: Path) -> StudySettings:
    """The settings frozen into a study folder, checked against ``study.sha256``: a frozen file
    edited, damaged or missing its hash is refused (its trials were measured under the
    settings the hash names)."""
    path = folder / FROZEN
    if not path.is_file():
        raise StudyFileError(f"{folder}: not a study folder (no {FROZEN}); start one with `dse run STUDY.yaml`")
    settings = load_study_file(path)
    try:
        recorded = (folder / FROZEN_HASH).read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        raise StudyFileError(f"{folder / FROZEN_HASH}: missing or unreadable; it holds the hash of "
                             f"{FROZEN} that the study's trials were measured under") from None
    if recorded not in (settings.sha256(), identity_sha256(_frozen_dump(path))):
        raise StudyFileError(f"{path}: edited after the study started (its settings no longer match "
                             f"{FROZEN_HASH}); restore it, or start a new study with the new settings")
    return settings


def _frozen_dump(path: Path) -> dict:
    """The mapping ``study.yaml`` holds, as frozen (read before a well-formed load)."""
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def _iso(moment: dt.datetime | None) -> str | None:
    """ISO 8601 with the UTC offset (Optuna keeps naive local times)."""
    return moment.astimezone().isoformat() if moment is not None else None


class Study:
    """A study as stored: ``trials`` (one row per evaluation) and its Pareto front."""

    def __init__(self, folder: Path, settings: StudySettings, *, driver: bool = False,
                 log=print) -> None:
        """Open the study's store read-only, or as its ``driver``: holding the study lock (one
        driver per study) until ``close``."""
        self.folder = folder
        self.settings = settings
        self.objectives = [o.metric for o in settings.objectives]
        self.directions = [o.direction for o in settings.objectives]
        self.store = TrialStore(folder, settings.name, self.directions, settings.storage,
                                writable=driver, metric_names=self.objectives, log=log)

    def close(self) -> None:
        """Release the study lock if this is the driver."""
        self.store.close()

    def __enter__(self) -> Study:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def name(self) -> str:
        return self.settings.name

    @property
    def trials(self) -> pd.DataFrame:
        """Every stored trial: configuration (int and bits), metrics, role, state, timestamps,
        and its named choices (generator parameters, the member of each group of layers; the
        LUT bits are already in ``config_bits``). A layer-wise configuration beyond int64 makes
        ``config`` a column of Python ints (object dtype)."""
        rows = []
        for t in self.store.trials():
            row = {"trial": t.number, "state": t.state.name}
            row.update(t.user_attrs)
            row["config"] = stored_config(t)
            for name, value in t.params.items():
                if isinstance(t.distributions[name], CategoricalDistribution):
                    row.setdefault(name, value)
            row["started_at"] = _iso(t.datetime_start)
            row["completed_at"] = _iso(t.datetime_complete)
            rows.append(row)
        frame = pd.DataFrame(rows)
        if frame.empty:
            return pd.DataFrame(columns=["trial", "state", "config", "role", *self.objectives])
        first = ["trial", "state", "role", "strategy", "proposal_index", "config", "config_bits",
                 *self.objectives]
        cols = [c for c in first if c in frame] + [c for c in frame if c not in first]
        return frame[cols]

    @property
    def reference_point(self) -> dict[str, float] | None:
        """The hypervolume reference point, fixed when the exact baseline was first evaluated."""
        return self.store.get(REFERENCE_POINT)

    def _usable(self) -> pd.DataFrame:
        """Completed trials at full fidelity that meet every constraint, retrained ones too."""
        done = self.trials
        if done.empty:
            return done
        done = done[done["state"] == "COMPLETE"]
        if "feasible" in done:
            done = done[done["feasible"].fillna(True).astype(bool)]
        if "fidelity" in done:  # screened results never reach a front
            done = done[done["fidelity"].fillna("full") != "screened"]
        return done

    def feasible(self, retrained: bool = False) -> pd.DataFrame:
        """Measured trials that meet every constraint (the only ones a front may hold); with
        ``retrained``, each design replaced by its most accurate feasible retrained trial
        where that one is more accurate (or the design itself was infeasible)."""
        done = self._usable()
        if done.empty:
            return done
        measured = done[done["role"] != RETRAINED]
        after = done[done["role"] == RETRAINED]
        if not retrained or after.empty:
            return measured
        best = after.sort_values("accuracy", ascending=False).drop_duplicates("design_trial")
        before = best["design_trial"].map(measured.set_index("trial")["accuracy"])
        better = best[~(best["accuracy"] <= before)]  # NaN before: the design was infeasible
        if better.empty:
            return measured
        return pd.concat([measured[~measured["trial"].isin(better["design_trial"])], better])

    def retrained(self) -> pd.DataFrame:
        """One row per completed retrained trial: its design (``design_trial``), how it was
        retrained, the accuracy before and after, and ``recovered``: the share of the design's
        accuracy drop against the exact multiplier that retraining won back (NaN where the
        design lost nothing)."""
        done = self.trials
        columns = ["design", "design_trial", "trial", "epochs", "gradient", "learning_rate",
                   "batch_size", "accuracy_exact", "accuracy_before", "accuracy_after",
                   "recovered", "feasible", "retrain_seconds", "model"]
        if done.empty or not (done["role"] == RETRAINED).any():
            return pd.DataFrame(columns=columns)
        done = done[done["state"] == "COMPLETE"]
        rows = done[done["role"] == RETRAINED].rename(columns={"accuracy": "accuracy_after"})
        exact = done.loc[done["role"] == BASELINE, "accuracy"]
        rows["accuracy_exact"] = float(exact.iloc[0]) if not exact.empty else np.nan
        lost = rows["accuracy_exact"] - rows["accuracy_before"]
        gained = rows["accuracy_after"] - rows["accuracy_before"]
        rows["recovered"] = (gained / lost).where(lost > 0)
        rows = rows.reindex(columns=columns).reset_index(drop=True)
        return rows.astype({"design_trial": int, "epochs": int, "batch_size": int})

    def hypervolume(self, reference: dict[str, float] | None = None,
                    retrained: bool = False) -> float:
        """Hypervolume of the feasible front against the study's reference point (or another);
        ``retrained``: of the front with each design at its best retrained accuracy."""
        reference = reference or self.reference_point
        if reference is None:
            return 0.0
        done = self.feasible(retrained)
        points = to_minimization(done[self.objectives].to_numpy(dtype=float), self.directions)
        ref = to_minimization(np.array([[reference[k] for k in self.objectives]]), self.directions)[0]
        return hypervolume(points, ref)

    def hypervolume_history(self, reference: dict[str, float] | None = None) -> pd.DataFrame:
        """Hypervolume after each finished search trial (storage order), the exact baseline
        included from the start: how the front grew."""
        reference = reference or self.reference_point
        done = self.trials
        if reference is None or done.empty:
            return pd.DataFrame(columns=["evaluations", "hypervolume"])
        ref = to_minimization(np.array([[reference[k] for k in self.objectives]]), self.directions)[0]
        # a trial's design points are stored just before it and count with it
        rows = done[done["role"].isin([SEARCH, DESIGN_POINT])].reset_index(drop=True)
        ok = (rows["state"] == "COMPLETE").to_numpy().copy()
        if "feasible" in rows:
            ok &= rows["feasible"].fillna(True).astype(bool).to_numpy()
        if "fidelity" in rows:
            ok &= (rows["fidelity"].fillna("full") != "screened").to_numpy()
        points = to_minimization(rows[self.objectives].to_numpy(dtype=float), self.directions)
        base = self.feasible()
        base = base[base["role"] == BASELINE]  # the exact multiplier starts every front
        front = to_minimization(base[self.objectives].to_numpy(dtype=float), self.directions)
        history: list[tuple[int, float]] = []
        for n, role in enumerate(rows["role"]):
            if ok[n]:
                front = np.vstack([front, points[n]])
                front = front[non_dominated(front, ["minimize"] * len(self.objectives))]
            if role == SEARCH:
                history.append((len(history) + 1, hypervolume(front, ref)))
        return pd.DataFrame(history, columns=["evaluations", "hypervolume"])

    def search_trials_done(self) -> int:
        """Finished search trials (the budget counts these; the exact baseline is extra)."""
        return sum(1 for t in self.store.trials() if t.user_attrs.get("role") == SEARCH)

    def pareto(self, retrained: bool = False) -> pd.DataFrame:
        """The non-dominated feasible trials, sorted by the first objective; ``retrained``:
        the front where each design takes its best retrained accuracy (retrained rows keep
        their role and ``design_trial``)."""
        done = self.feasible(retrained)
        if done.empty:
            return done
        mask = non_dominated(done[self.objectives].to_numpy(dtype=float), self.directions)
        front = done[mask]
        return front.sort_values(self.objectives[0], ascending=self.directions[0] == "minimize")


def load_study(path: str | Path) -> Study:
    """Open a study folder for reading (``runs/<name>``); writes nothing, takes no lock."""
    folder = Path(path)
    settings = read_frozen(folder)
    if settings.storage is None and not (folder / JOURNAL).is_file():
        raise StorageError(f"{folder / JOURNAL}: the trial store is missing next to {FROZEN}; "
                           "restore it from a backup (or delete the folder to start over)")
    return Study(folder, settings)


def judge(row: dict, exact_accuracy: float, constraints: Sequence[Constraint]) -> tuple[float, ...]:
    """Complete a measured row with its accuracy drop against the exact multiplier, its
    constraint values and feasibility; returns the constraint values."""
    row["accuracy_drop"] = exact_accuracy - row["accuracy"]
    violations = tuple(c.violation(float(row[c.metric])) for c in constraints)
    row["constraint_values"] = list(violations)
    row["feasible"] = all(v <= 0 for v in violations)
    return violations
