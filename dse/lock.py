"""One driver per study: an exclusive lock held for the driver's whole life.

Two drivers on one study would both evaluate and store (duplicate proposals, a front with
duplicates, one of them dying while the other rewrites ``pareto/``). The lock is an ``flock`` on
``driver.lock`` in the study folder, which the kernel releases when the holder dies however it
dies (``kill -9`` included), so a lock is never stale on the machine that holds it; the file
records the holder (pid, host, start time) so that a refused driver can name it. A study in an
RDB store shared by several machines is also locked in the database: a PostgreSQL advisory lock
or a MySQL named lock on a connection the driver keeps open (released by the server when the
connection dies), or an ``flock`` beside a SQLite file. Readers never take the lock.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import hashlib
import os
import socket
from pathlib import Path

from dse.journal import StorageError

LOCK_FILE = "driver.lock"


def _holder_text() -> str:
    now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    return f"pid {os.getpid()} on {socket.gethostname()} since {now}"


def _try_flock(path: Path) -> int | None:
    """An open descriptor holding an exclusive flock on ``path``, or None if another holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def holder(folder: Path) -> str | None:
    """Who holds the study lock ("pid N on HOST since T"), or None if nobody does. Reads only
    (works on a read-only folder)."""
    path = folder / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return os.read(fd, 200).decode("utf-8", "replace").strip() or "another driver"
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _refusal(where: str, who: str | None) -> StorageError:
    return StorageError(f"{where}: another driver is running this study ({who or 'holder unknown'}); "
                        "wait for it to finish or stop it, then resume")


class StudyLock:
    """The exclusive right to write a study: taken at once or refused with a one-line error."""

    def __init__(self, folder: Path, study_name: str, engine=None) -> None:
        self.folder = folder
        self._fds: list[int] = []
        self._connection = None
        path = folder / LOCK_FILE
        try:
            fd = _try_flock(path)
        except OSError as err:
            raise StorageError(f"{path}: cannot create the study lock ({err.strerror})") from None
        if fd is None:
            raise _refusal(str(folder), holder(folder))
        os.ftruncate(fd, 0)
        os.pwrite(fd, (_holder_text() + "\n").encode(), 0)
        self._fds.append(fd)
        if engine is not None:
            try:
                self._lock_database(engine, study_name)
            except BaseException:
                self.release()
                raise

    def _lock_database(self, engine, study_name: str) -> None:
        """Lock the study in its RDB store, for drivers on other machines."""
        import sqlalchemy

        dialect = engine.dialect.name
        name = f"dse:{study_name}"
        where = f"study {study_name!r} in {engine.url.render_as_string(hide_password=True)}"
        if dialect == "sqlite":
            database = engine.url.database
            if not database or database == ":memory:":
                return
            fd = _try_flock(Path(f"{database}.{hashlib.sha256(name.encode()).hexdigest()[:12]}.lock"))
            if fd is None:
                raise _refusal(where, None)
            self._fds.append(fd)
            return
        self._connection = engine.connect()
        if dialect == "postgresql":
            key = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)
            query, params = "SELECT pg_try_advisory_lock(:key)", {"key": key}
        elif dialect == "mysql":
            query, params = "SELECT GET_LOCK(:name, 0)", {"name": name[:64]}
        else:
            return
        got = self._connection.execute(sqlalchemy.text(query), params).scalar()
        self._connection.commit()
        if not got:
            raise _refusal(where, None)

    def release(self) -> None:
        """Give the lock back (also done by the kernel and the database when the driver dies)."""
        if self._connection is not None:
            self._connection.invalidate()  # a real disconnect: the server drops the lock
            self._connection.close()
            self._connection = None
        for fd in self._fds:
            os.close(fd)
        self._fds = []
