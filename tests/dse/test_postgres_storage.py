"""A study whose trial store is a real PostgreSQL server (started here, on loopback)."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import optuna
import pytest

import dse
from dse.loop import build_evaluator, run_study
from dse.storage import StorageError, TrialStore, check_storage
from dse.study_file import parse_settings
from tests.conftest import mini_study

pytest.importorskip("psycopg", reason="the PostgreSQL driver is not installed (pip install 'dse[postgresql]')")


def _server_binaries() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return Path(found[-1]).parent if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def postgres_url():
    """Initialize a throw-away cluster, start it on 127.0.0.1, create a database; stop it after.
    As root, the server runs as the 'postgres' user (PostgreSQL refuses to run as root)."""
    bindir = _server_binaries()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries not found (apt-get install postgresql; make setup does)")
    root = Path(tempfile.mkdtemp(prefix="dse-pg-"))
    data, port = root / "data", _free_port()
    prefix: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
        prefix = ["runuser", "-u", "postgres", "--"]

    def run(*cmd: str) -> None:
        subprocess.run([*prefix, *cmd], check=True, capture_output=True, text=True)

    run(str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "dse", "--no-sync")
    run(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(root / "log"), "-w", "-o",
        f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off", "start")
    try:
        run(str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "dse", "studies")
        yield f"postgresql+psycopg://dse@127.0.0.1:{port}/studies"
    finally:
        run(str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop")
        shutil.rmtree(root, ignore_errors=True)


def study(folder, mnist_dir, url, trials):
    return parse_settings(mini_study(mnist_dir, name="pg", output=str(folder), seed=1, storage=url,
                                     dataset={"test_size": 300},
                                     strategy={"type": "nsga2", "population": 4},
                                     budget={"trials": trials}))


def test_a_study_runs_and_resumes_on_postgresql(tmp_path, mnist_dir, session_cache, monkeypatch,
                                                postgres_url):
    monkeypatch.setenv("DSE_CACHE_DIR", str(session_cache))
    folder = tmp_path / "pg"
    from tests.dse.test_strategies import run_study_with  # the real loop, interrupted

    settings = study(folder, mnist_dir, postgres_url, 10)
    data = settings.canonical()
    evaluator = build_evaluator(settings, lambda m: None)
    first = run_study_with(folder, data, evaluator, stop_after=6)
    assert first.search_trials_done() == 5
    assert not (folder / "trials.journal").exists()  # the trials are in PostgreSQL
    resumed = run_study(settings, log=lambda m: None, progress=False)
    rows = resumed.trials
    search = rows[rows["role"] == "search"].sort_values("proposal_index")
    assert search["proposal_index"].tolist() == list(range(10)) and search["config"].is_unique
    # the same study, read by optuna directly and by dse from the folder
    stored = optuna.load_study(study_name="pg", storage=postgres_url)
    assert len(stored.trials) == 11
    assert dse.load_study(folder).trials["config"].tolist() == rows["config"].tolist()


def test_an_unreachable_server_is_a_one_line_error(tmp_path, mnist_dir):
    url = f"postgresql+psycopg://dse@127.0.0.1:{_free_port()}/nothing"
    with pytest.raises(StorageError, match=r"storage postgresql\+psycopg://dse@127.0.0.1:\d+/nothing: "):
        TrialStore(tmp_path, "x", ["maximize", "minimize"], url)


def test_two_drivers_on_machines_sharing_the_database_one_refused(tmp_path, postgres_url):
    """Drivers on two machines have two study folders: the database's advisory lock is what
    keeps the second out, and it is released when the first lets go."""
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    first = TrialStore(tmp_path / "a", "shared", ["maximize", "minimize"], postgres_url, writable=True)
    with pytest.raises(StorageError, match=r"another driver is running this study"):
        TrialStore(tmp_path / "b", "shared", ["maximize", "minimize"], postgres_url, writable=True)
    first.close()
    TrialStore(tmp_path / "b", "shared", ["maximize", "minimize"], postgres_url, writable=True).close()


def test_a_database_the_driver_cannot_write_is_refused_before_any_work(postgres_url):
    """A read-only user, or a database read-only by default: refused by the preflight, which
    itself writes nothing."""
    import sqlalchemy

    engine = sqlalchemy.create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(sqlalchemy.text("CREATE ROLE reader LOGIN"))
        connection.execute(sqlalchemy.text("CREATE DATABASE archive"))
        connection.execute(sqlalchemy.text("ALTER DATABASE archive SET default_transaction_read_only = on"))
    engine.dispose()
    check_storage(postgres_url)
    with pytest.raises(StorageError, match=r"reader@.*: this user may not write Optuna's tables"):
        check_storage(postgres_url.replace("//dse@", "//reader@"))
    with pytest.raises(StorageError, match=r"/archive: the database is read-only"):
        check_storage(postgres_url.rsplit("/", 1)[0] + "/archive")
