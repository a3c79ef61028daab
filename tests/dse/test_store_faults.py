"""The trial store under damage and contention: torn tails, damage in the middle, stale locks,
two drivers, read-only folders. Real journal files, real processes, real optuna readers."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import optuna
import pytest

from dse.journal import StorageError, StoreWarning
from dse.space import AppAxOSubspace
from dse.storage import JOURNAL, TrialStore, journal_storage
from tests.conftest import REPO

DIRECTIONS = ["maximize", "minimize"]
SPACE = AppAxOSubspace(free=0b111 << 4, fixed=(1 << 36) - 1)


def writer(folder: Path) -> TrialStore:
    return TrialStore(folder, "s", DIRECTIONS, writable=True, metric_names=["accuracy", "area"],
                      log=lambda m: None)


def fill(folder: Path, n: int) -> None:
    store = writer(folder)
    started = dt.datetime.now() - dt.timedelta(seconds=2)
    for i in range(n):
        config = SPACE.config(i)
        store.add(config, [0.9 - i / 100, 100.0 + i], {"role": "search", "proposal_index": i},
                  started, {"c0": -1.0}, SPACE.params(config))
    store.close()


def read(folder: Path) -> list:
    return TrialStore(folder, "s", DIRECTIONS).trials()


def test_a_driver_stores_what_optuna_clients_expect(tmp_path):
    fill(tmp_path, 3)
    study = optuna.load_study(study_name="s", storage=journal_storage(tmp_path))
    assert study.metric_names == ["accuracy", "area"]
    trial = study.trials[1]
    assert trial.params["config"] == SPACE.config(1)
    assert {k: v for k, v in trial.params.items() if k.startswith("lut_")} == \
        {"lut_r3_j4": 1, "lut_r3_j3": 0, "lut_r3_j2": 0}  # bits 4, 5, 6: LUTs (3, 4), (3, 3), (3, 2)
    assert (trial.datetime_complete - trial.datetime_start).total_seconds() >= 2
    assert trial.system_attrs["constraints"] == [-1.0]


def test_reading_never_writes(tmp_path):
    fill(tmp_path, 2)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert len(read(tmp_path)) == 2
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_a_torn_tail_loses_only_that_record_and_the_driver_repairs_it(tmp_path):
    fill(tmp_path, 3)
    journal = tmp_path / JOURNAL
    whole = journal.read_bytes()
    journal.write_bytes(whole[:-25])  # the last record cut mid-write
    torn = journal.read_bytes()
    with pytest.warns(StoreWarning, match=r"trials.journal: the last record \(byte \d+, \d+ bytes\) was cut short"):
        assert len(read(tmp_path)) == 2
    assert journal.read_bytes() == torn  # a reader does not repair
    messages = []
    store = TrialStore(tmp_path, "s", DIRECTIONS, writable=True, log=messages.append)
    assert "was removed (kept in trials.journal.torn)" in messages[0]
    store.add(SPACE.config(5), [0.5, 1.0], {"role": "search"}, dt.datetime.now())
    store.close()
    assert (tmp_path / "trials.journal.torn").read_bytes() == torn.rsplit(b"\n", 1)[1] + b"\n"
    assert [t.params["config"] for t in read(tmp_path)] == [SPACE.config(i) for i in (0, 1, 5)]
    optuna.load_study(study_name="s", storage=journal_storage(tmp_path))  # optuna reads it too


@pytest.mark.parametrize("damage", [b"\xff\xfe garbage\n", b"{not json\n", b"[1, 2]\n"])
def test_damage_in_the_middle_is_one_line_naming_the_byte(tmp_path, damage):
    fill(tmp_path, 3)
    journal = tmp_path / JOURNAL
    lines = journal.read_bytes().split(b"\n")
    offset = len(lines[0]) + 1
    journal.write_bytes(lines[0] + b"\n" + damage + b"\n".join(lines[1:]))
    before = journal.read_bytes()
    for open_store in (read, writer):
        with pytest.raises(StorageError, match=rf"trials.journal: damaged record at byte {offset} ") as err:
            open_store(tmp_path)
        assert "\n" not in str(err.value)
    assert journal.read_bytes() == before


def test_a_stale_optuna_lock_does_not_stall_the_driver(tmp_path):
    fill(tmp_path, 1)
    os.symlink(tmp_path / JOURNAL, tmp_path / (JOURNAL + ".lock"))  # a writer killed mid-write
    start = time.monotonic()
    store = writer(tmp_path)
    store.add(SPACE.config(1), [0.5, 1.0], {"role": "search"}, dt.datetime.now())
    store.close()
    assert time.monotonic() - start < 5 and len(read(tmp_path)) == 2


def test_two_drivers_one_refused_naming_the_holder(tmp_path):
    first = writer(tmp_path)
    with pytest.raises(StorageError, match=rf"another driver is running this study \(pid {os.getpid()} on "):
        writer(tmp_path)
    assert len(read(tmp_path)) == 0  # a reader needs no lock
    first.close()
    writer(tmp_path).close()


def test_a_killed_drivers_lock_is_not_stale(tmp_path):
    """A driver killed with SIGKILL holds nothing: the next driver takes the lock at once."""
    fill(tmp_path, 1)
    code = textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from dse.storage import TrialStore
        TrialStore(Path({str(tmp_path)!r}), "s", ["maximize", "minimize"], writable=True)
        print("locked", flush=True)
        time.sleep(600)
    """)
    child = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "locked"
        with pytest.raises(StorageError, match=rf"pid {child.pid} on "):
            writer(tmp_path)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    writer(tmp_path).close()


def without_write_permission(folder: Path, code: str) -> subprocess.CompletedProcess:
    """Run ``code`` in a Python child that cannot write to ``folder`` (read-only modes; as root,
    with every capability dropped so that the modes apply)."""
    for path in [folder, *folder.iterdir()]:
        path.chmod(0o555 if path.is_dir() else 0o444)
    prefix = ["setpriv", "--bounding-set=-all", "--inh-caps=-all"] if os.geteuid() == 0 else []
    try:
        return subprocess.run([*prefix, sys.executable, "-c", code], cwd=REPO,
                              capture_output=True, text=True)
    finally:
        for path in [folder, *folder.iterdir()]:
            path.chmod(0o755 if path.is_dir() else 0o644)


@pytest.mark.skipif(os.geteuid() == 0 and shutil.which("setpriv") is None,
                    reason="as root, dropping capabilities needs setpriv (util-linux)")
def test_a_read_only_store_is_read(tmp_path):
    """Archived studies: a store that may be read but not written is read."""
    fill(tmp_path, 2)
    code = ("from pathlib import Path; from dse.storage import TrialStore; "
            f"print(len(TrialStore(Path({str(tmp_path)!r}), 's', ['maximize', 'minimize']).trials()))")
    out = without_write_permission(tmp_path, code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "2"


def test_two_drivers_sharing_a_sqlite_store_one_refused(tmp_path):
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    first = TrialStore(tmp_path / "a", "s", DIRECTIONS, url, writable=True)
    with pytest.raises(StorageError, match=r"another driver is running this study"):
        TrialStore(tmp_path / "b", "s", DIRECTIONS, url, writable=True)
    first.close()
    TrialStore(tmp_path / "b", "s", DIRECTIONS, url, writable=True).close()
