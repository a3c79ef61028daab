"""Liberty standard-cell libraries for the ASIC flow (plain or gzip-compressed files)."""

from __future__ import annotations

import gzip
import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from circuits.cache import cache_dir


@dataclass(frozen=True)
class Liberty:
    """A Liberty file the tools can read, and the identity of its content."""

    path: Path
    sha256: str
    name: str


def load_liberty(path: str | Path) -> Liberty:
    """Resolve a Liberty file; a ``.gz`` one is decompressed once into the user cache."""
    source = Path(path).expanduser()
    if not source.is_file():
        raise FileNotFoundError(f"Liberty file {source} not found")
    data = source.read_bytes()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    digest = hashlib.sha256(data).hexdigest()
    if source.suffix != ".gz":
        return Liberty(source.resolve(), digest, source.name)
    target = cache_dir() / "liberty" / f"{digest[:16]}-{source.name.removesuffix('.gz')}"
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".tmp")
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(tmp, target)
    return Liberty(target, digest, source.name.removesuffix(".gz"))
