"""The trial store: an Optuna storage inside the study folder.

Every finished evaluation becomes one Optuna trial, added atomically once it is finished (an
evaluation interrupted by Ctrl-C or ``kill -9`` leaves nothing behind and is simply proposed
again on resume). The default backend is Optuna's append-only journal file, which survives a
killed process; the study is readable by ``optuna.load_study`` and optuna-dashboard.
"""

from __future__ import annotations

import datetime as dt
import re
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


def rdb_storage(url: str) -> optuna.storages.RDBStorage:
    """An RDB storage (PostgreSQL, MySQL, SQLite): several drivers, machines or studies can
    share it; each study is one Optuna study named after it."""
    try:
        return optuna.storages.RDBStorage(url, engine_kwargs={"pool_pre_ping": True})
    except Exception as err:  # connection refused, unknown database, missing driver ...
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise StorageError(f"storage {redact(url)}: {reason}") from None


def redact(url: str) -> str:
    """The URL without its password, for messages."""
    return re.sub(r"://([^:/@]+):[^@]*@", r"://\1:***@", url)


class StorageError(RuntimeError):
    """The trial store cannot be opened; one line naming it."""


class TrialStore:
    """Append finished trials and read them back: a journal file in the study folder, or an
    RDB URL shared by several drivers."""

    def __init__(self, folder: Path, study_name: str, directions: Sequence[str],
                 url: str | None = None) -> None:
        storage = rdb_storage(url) if url else journal_storage(folder)
        self.study = optuna.create_study(
            storage=storage, study_name=study_name, directions=list(directions),
            load_if_exists=True,
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
