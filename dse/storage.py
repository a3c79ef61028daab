"""The trial store: an Optuna storage inside the study folder.

Every finished evaluation becomes one Optuna trial, added atomically once it is finished (an
evaluation interrupted by Ctrl-C or ``kill -9`` leaves nothing behind and is simply proposed
again on resume). The default backend is Optuna's append-only journal file, which survives a
killed process; the study is readable by ``optuna.load_study`` and optuna-dashboard.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import IntDistribution
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial, TrialState

from circuits.appaxo import EXACT

JOURNAL = "trials.journal"
CONFIG_DISTRIBUTION = IntDistribution(0, EXACT)

optuna.logging.set_verbosity(optuna.logging.WARNING)


def constraint_dict(values: Sequence[float]) -> dict[str, float]:
    """Constraint values as optuna names them on a trial (feasible when all are <= 0)."""
    return {f"c{i}": float(v) for i, v in enumerate(values)}


def journal_storage(folder: Path) -> JournalStorage:
    """The journal-file storage of a study folder."""
    return JournalStorage(JournalFileBackend(str(folder / JOURNAL)))


class TrialStore:
    """Append finished trials and read them back."""

    def __init__(self, folder: Path, study_name: str, directions: Sequence[str]) -> None:
        self.study = optuna.create_study(
            storage=journal_storage(folder), study_name=study_name,
            directions=list(directions), load_if_exists=True,
        )

    def add(
        self,
        config: int,
        values: Sequence[float] | None,
        attrs: dict[str, Any],
        started: dt.datetime,
        constraints: dict[str, float] | None = None,
    ) -> None:
        """Store one finished evaluation: COMPLETE with objective values, or FAIL without."""
        trial = optuna.trial.create_trial(
            state=TrialState.COMPLETE if values is not None else TrialState.FAIL,
            values=list(values) if values is not None else None,
            params={"config": int(config)},
            distributions={"config": CONFIG_DISTRIBUTION},
            user_attrs={**attrs, "started_at": started.isoformat()},
            constraints=constraints or None,
        )
        self.study.add_trial(trial)

    def trials(self) -> list[FrozenTrial]:
        return self.study.get_trials(deepcopy=False)

    def get(self, key: str, default: Any = None) -> Any:
        """A study-level attribute (for example the elapsed wall time)."""
        return self.study.user_attrs.get(key, default)

    def set(self, key: str, value: Any) -> None:
        self.study.set_user_attr(key, value)
