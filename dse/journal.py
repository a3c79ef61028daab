"""The journal file read with care: a torn last record tolerated, damage reported by byte offset.

Optuna's journal file is one JSON record a line, appended under a lock. A write cut short (a
power cut, ``kill -9`` mid-write, a full disk) leaves a last line without its newline or with
half a record; Optuna's own reader then fails on every later open, and its writer glues the
next record onto the torn line. Here a torn last record is skipped with a warning (only that
record is lost), the file is repaired only by the study's driver (which holds the study lock),
and damage anywhere else is a one-line error naming the file and the byte offset. Readers
never write: the file may be read-only.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from optuna.storages.journal import BaseJournalBackend


class StorageError(RuntimeError):
    """The trial store cannot be opened or used; one line naming it."""


class StoreWarning(UserWarning):
    """Something the user should know about the store that did not stop the command."""


@dataclass(frozen=True)
class Torn:
    """A last record cut short: its byte offset and length."""

    offset: int
    length: int


def _record(line: bytes) -> dict[str, Any] | None:
    """The record a complete line holds, or None if it is not one."""
    try:
        record = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    return record if isinstance(record, dict) and "op_code" in record else None


def scan(path: Path, start: int = 0) -> tuple[list[tuple[int, dict]], int, Torn | None]:
    """The records of ``path`` from byte ``start`` (each with its offset), the offset after the
    last whole record, and the torn last record if there is one. Damage before the last record
    raises StorageError."""
    with open(path, "rb") as f:
        f.seek(start)
        data = f.read()
    *complete, tail = data.split(b"\n")  # tail: the text after the final newline
    records: list[tuple[int, dict]] = []
    offset = start
    for n, line in enumerate(complete):
        record = _record(line)
        if record is None:
            if n == len(complete) - 1 and not tail:  # the last record, garbled by its write
                return records, offset, Torn(offset, len(line) + 1)
            raise StorageError(
                f"{path}: damaged record at byte {offset} (not a journal record; the store was "
                "changed by something other than dse or optuna); restore the file from a backup")
        records.append((offset, record))
        offset += len(line) + 1
    return records, offset, Torn(offset, len(tail)) if tail else None


def torn_message(path: Path, torn: Torn) -> str:
    return (f"{path}: the last record (byte {torn.offset}, {torn.length} bytes) was cut short by "
            "an interrupted write and is ignored; that one record is lost")


class ReadOnlyJournal(BaseJournalBackend):
    """A journal backend that reads and never writes (``optuna.load_study`` over it works on a
    read-only file). An incomplete last record is skipped: silently while ``writing()`` says a
    driver is appending, with a warning otherwise (a torn record)."""

    def __init__(self, path: Path, writing: Callable[[], bool] = lambda: False) -> None:
        self.path = path
        self.writing = writing
        self._offsets: dict[int, int] = {0: 0}  # record number -> byte offset
        self._warned = False

    def read_logs(self, log_number_from: int) -> Iterator[dict[str, Any]]:
        known = max(n for n in self._offsets if n <= log_number_from)
        try:
            records, end, torn = scan(self.path, self._offsets[known])
        except FileNotFoundError:
            raise StorageError(f"{self.path}: the trial store is missing") from None
        except PermissionError:
            raise StorageError(f"{self.path}: permission denied (cannot read the trial store)") from None
        for i, (offset, _) in enumerate(records):
            self._offsets[known + i] = offset
        self._offsets[known + len(records)] = end
        if torn is not None and not self._warned and not self.writing():
            self._warned = True
            warnings.warn(torn_message(self.path, torn), StoreWarning, stacklevel=2)
        for i, (_, record) in enumerate(records):
            if known + i >= log_number_from:
                yield record

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        raise StorageError(f"{self.path}: opened for reading; only the study's driver writes")


def repair(path: Path) -> str | None:
    """Cut a torn last record off the journal (the caller holds the study lock), keeping its
    bytes in ``<journal>.torn``; returns the warning to show, or None if the file was whole.
    Damage elsewhere raises StorageError; a journal not created yet is whole."""
    if not path.exists():
        return None
    _, end, torn = scan(path)
    if torn is None:
        return None
    with open(path, "rb") as f:
        f.seek(end)
        tail = f.read()
    with open(path.with_name(path.name + ".torn"), "ab") as keep:
        keep.write(tail + b"\n")
    with open(path, "r+b") as f:
        f.truncate(end)
        f.flush()
        os.fsync(f.fileno())
    return torn_message(path, torn).replace("is ignored", "was removed (kept in "
                                                          f"{path.name}.torn)")
