"""The user cache folder and the characterization cache kept in it.

Characterizations are keyed by everything that determines them (netlist or table hash, Liberty
hash, tool versions, flow settings, activity profile), so one computed in any study is reused
by every later one. The store is one SQLite file: safe for concurrent readers and writers.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from pathlib import Path
from typing import Any


def cache_dir() -> Path:
    """$DSE_CACHE_DIR, else $XDG_CACHE_HOME/dse, else ~/.cache/dse."""
    if explicit := os.environ.get("DSE_CACHE_DIR"):
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "dse"


def key_of(parts: dict[str, Any]) -> str:
    """A stable key for a dict of plain values."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


class ResultCache:
    """A persistent key -> JSON-able dict map (one SQLite file in the user cache)."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or cache_dir() / "characterizations.sqlite"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.execute("CREATE TABLE IF NOT EXISTS results (key TEXT PRIMARY KEY, value TEXT)")

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=60)

    def get(self, key: str) -> dict | None:
        with self._connect() as db:
            row = db.execute("SELECT value FROM results WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def put(self, key: str, value: dict) -> None:
        with self._connect() as db:
            db.execute("INSERT OR REPLACE INTO results VALUES (?, ?)", (key, json.dumps(value)))
