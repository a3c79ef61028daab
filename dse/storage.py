"""The trial store: an Optuna storage inside the study folder, or an RDB shared by machines.

Every finished evaluation becomes one Optuna trial, added atomically once it is finished (an
evaluation interrupted by Ctrl-C or ``kill -9`` leaves nothing behind and is simply proposed
again on resume). The default backend is Optuna's append-only journal file; the study is
readable by ``optuna.load_study`` and optuna-dashboard, with the objectives' metric names, the
configuration as per-parameter values (AppAxO LUTs, generator parameters, the member of each
group of layers) and real start and completion times. The configuration itself is the user
attribute ``config`` (a JSON integer of any size: a layer-wise configuration can exceed 2^63),
and also the parameter ``config`` when it fits its 36-bit distribution.

Only a driver writes, and only while it holds the study lock (``dse.lock``); it repairs a torn
journal tail before writing. Readers (``status``, ``export``, ``compare``, ``dse.load_study``)
open the store read-only and never write to it.
"""

from __future__ import annotations

import datetime as dt
import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, IntDistribution
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.study._constrained_optimization import _CONSTRAINTS_KEY
from optuna.trial import FrozenTrial, TrialState

from circuits.appaxo import EXACT
from dse.journal import ReadOnlyJournal, StorageError, StoreWarning, repair
from dse.lock import StudyLock, holder

__all__ = ["JOURNAL", "StorageError", "StoreWarning", "TrialStore", "check_storage",
           "constraint_dict", "journal_storage", "redact", "stored_config"]

JOURNAL = "trials.journal"
CONFIG_DISTRIBUTION = IntDistribution(0, EXACT)
CONNECT_TIMEOUT_S = 5

optuna.logging.set_verbosity(optuna.logging.WARNING)


def constraint_dict(values: Sequence[float]) -> dict[str, float]:
    """Constraint values as optuna names them on a trial (feasible when all are <= 0)."""
    return {f"c{i}": float(v) for i, v in enumerate(values)}


def stored_config(trial: FrozenTrial) -> int:
    """The configuration a stored trial evaluated: its ``config`` parameter, else its ``config``
    user attribute (a configuration beyond the parameter's 36-bit range is stored only there)."""
    config = trial.params.get("config", trial.user_attrs.get("config"))
    if config is None:
        raise StorageError(f"trial {trial.number}: stores no configuration (no 'config' parameter "
                           "or user attribute); it was not written by dse")
    return int(config)


def journal_storage(folder: Path) -> JournalStorage:
    """The journal-file storage of a study folder, as Optuna itself opens it (for optuna clients;
    dse reads through ``TrialStore``)."""
    return JournalStorage(JournalFileBackend(str(folder / JOURNAL)))


def redact(url: str) -> str:
    """The URL without its password, for messages."""
    return re.sub(r"://([^:/@]+):[^@]*@", r"://\1:***@", url)


def _reason(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _engine_kwargs(url: str) -> dict:
    """A server that does not answer fails in seconds (SQLite has no connection to wait for)."""
    if url.startswith(("postgresql", "mysql")):
        return {"pool_pre_ping": True, "connect_args": {"connect_timeout": CONNECT_TIMEOUT_S}}
    return {"pool_pre_ping": True}


def check_storage(url: str) -> None:
    """Fail in seconds, writing nothing, when an RDB URL cannot be used: a missing driver, a
    SQLite file in a folder that does not exist or is read-only, an unreachable server."""
    import os

    import sqlalchemy

    where = f"storage {redact(url)}"
    try:
        engine = sqlalchemy.create_engine(url, **_engine_kwargs(url))
    except ModuleNotFoundError as err:
        raise StorageError(f"{where}: the database driver {err.name!r} is not installed "
                           "(pip install it, e.g. 'dse[postgresql]' for PostgreSQL)") from None
    except Exception as err:  # a malformed URL, an unknown dialect
        raise StorageError(f"{where}: {_reason(err)}") from None
    if engine.dialect.name == "sqlite":
        database = engine.url.database
        if database and database != ":memory:":
            parent = Path(database).expanduser().resolve().parent
            if not parent.is_dir():
                raise StorageError(f"{where}: the folder {parent} does not exist")
            if not os.access(parent, os.W_OK):
                raise StorageError(f"{where}: the folder {parent} is not writable")
    try:
        with engine.connect() as connection:
            refusal = _write_refusal(connection, engine.dialect.name)
    except Exception as err:  # connection refused, unknown database, authentication
        raise StorageError(f"{where}: {_reason(err)}") from None
    finally:
        engine.dispose()
    if refusal:
        raise StorageError(f"{where}: {refusal}")


# PostgreSQL: the tables Optuna writes when they exist, else the right to create them
_PG_WRITABLE = """
SELECT current_setting('transaction_read_only') = 'off' AS writable_server,
       CASE WHEN to_regclass('trials') IS NOT NULL
            THEN has_table_privilege('trials', 'INSERT') AND has_table_privilege('studies', 'INSERT')
            ELSE has_schema_privilege(current_schema(), 'CREATE') END AS may_write
"""


def _write_refusal(connection, dialect: str) -> str | None:
    """Why the connected database would refuse the driver's writes, or None (checked without
    writing: a read-only server or replica, no privilege on Optuna's tables or to create them)."""
    import sqlalchemy

    if dialect == "postgresql":
        server, may_write = connection.execute(sqlalchemy.text(_PG_WRITABLE)).one()
        if not server:
            return "the database is read-only (a standby, or read-only by default); a driver must write its trials"
        if not may_write:
            return ("this user may not write Optuna's tables (or create them); grant INSERT "
                    "on them, or CREATE on the schema")
    elif dialect == "mysql":
        if connection.execute(sqlalchemy.text("SELECT @@read_only")).scalar():
            return "the server is read-only; a driver must write its trials"
    else:
        connection.execute(sqlalchemy.text("SELECT 1"))
    return None


def _rdb(url: str, writable: bool) -> optuna.storages.RDBStorage:
    try:
        return optuna.storages.RDBStorage(url, engine_kwargs=_engine_kwargs(url),
                                          skip_table_creation=not writable)
    except Exception as err:  # connection refused, unknown database, missing driver ...
        raise StorageError(f"storage {redact(url)}: {_reason(err)}") from None


class TrialStore:
    """The trials of one study: appended by its driver, read by everyone else.

    ``writable=True`` takes the study lock first (refused with a one-line error naming the
    holder while another driver runs), repairs a torn journal tail, and creates the Optuna
    study if needed. Without it nothing is written: the store must exist.
    """

    def __init__(self, folder: Path, study_name: str, directions: Sequence[str],
                 url: str | None = None, *, writable: bool = False,
                 metric_names: Sequence[str] | None = None, log=print) -> None:
        self.folder = folder
        self.writable = writable
        self.lock: StudyLock | None = None
        where = redact(url) if url else str(folder / JOURNAL)
        if url:
            storage = _rdb(url, writable)
        elif writable:
            storage = None
        else:
            storage = JournalStorage(ReadOnlyJournal(folder / JOURNAL,
                                                     lambda: holder(folder) is not None))
        if not writable:
            try:
                self.study = optuna.load_study(study_name=study_name, storage=storage)
            except KeyError:
                raise StorageError(f"{where}: holds no study {study_name!r} yet "
                                   "(the study has not stored anything)") from None
            return
        engine = storage.engine if url else None
        self.lock = StudyLock(folder, study_name, engine)
        try:
            if not url:
                message = repair(folder / JOURNAL)
                if message:
                    log(f"warning: {message}")
                # Optuna's per-write lock left by a writer killed mid-write: stale, since only
                # the lock holder writes (Optuna would wait 30 s before breaking it)
                Path(f"{folder / JOURNAL}.lock").unlink(missing_ok=True)
                storage = JournalStorage(JournalFileBackend(str(folder / JOURNAL)))
            self.study = optuna.create_study(storage=storage, study_name=study_name,
                                             directions=list(directions), load_if_exists=True)
            if metric_names and self.study.metric_names is None:
                with warnings.catch_warnings():  # experimental in optuna, and what clients read
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    self.study.set_metric_names(list(metric_names))
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Release the study lock (a reader holds none); the store stays open for reading."""
        if self.lock is not None:
            self.lock.release()
            self.lock = None
        self.writable = False

    def add(
        self,
        config: int,
        values: Sequence[float] | None,
        attrs: dict[str, Any],
        started: dt.datetime,
        constraints: dict[str, float] | None = None,
        params: dict[str, tuple[Any, BaseDistribution]] | None = None,
    ) -> None:
        """Store one finished evaluation: COMPLETE with objective values, or FAIL without;
        ``params`` are the configuration's readable parameters (name -> value, distribution)."""
        config = int(config)
        fits = CONFIG_DISTRIBUTION.low <= config <= CONFIG_DISTRIBUTION.high
        params = {**({"config": (config, CONFIG_DISTRIBUTION)} if fits else {}), **(params or {})}
        attrs = {**attrs, "config": config}
        trial = FrozenTrial(
            number=-1, trial_id=-1,
            state=TrialState.COMPLETE if values is not None else TrialState.FAIL,
            value=None, values=list(values) if values is not None else None,
            datetime_start=started, datetime_complete=dt.datetime.now(),
            params={k: v for k, (v, _) in params.items()},
            distributions={k: d for k, (_, d) in params.items()},
            user_attrs=attrs,
            system_attrs={_CONSTRAINTS_KEY: list(constraints.values())} if constraints else {},
            intermediate_values={},
        )
        self.study.add_trial(trial)

    def trials(self) -> list[FrozenTrial]:
        return self.study.get_trials(deepcopy=False)

    def get(self, key: str, default: Any = None) -> Any:
        """A study-level attribute (for example the elapsed wall time)."""
        return self.study.user_attrs.get(key, default)

    def set(self, key: str, value: Any) -> None:
        self.study.set_user_attr(key, value)
