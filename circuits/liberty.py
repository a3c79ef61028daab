"""Liberty standard-cell libraries for the ASIC flow (plain or gzip-compressed files)."""

from __future__ import annotations

import functools
import gzip
import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from circuits.cache import cache_dir


class LibertyError(ValueError):
    """A Liberty file that cannot be found; one line saying where to put it."""


@dataclass(frozen=True)
class Liberty:
    """A Liberty file the tools can read, and the identity of its content."""

    path: Path
    sha256: str
    name: str


# Libraries known by name: the OpenSTA repository's examples folder publishes both files.
KNOWN = {"nangate45": "nangate45_typ.lib.gz", "sky130hd": "sky130hd_tt.lib.gz"}
SOURCE = "https://github.com/The-OpenROAD-Project/OpenSTA/tree/master/examples"


def find_liberty(spec: str) -> Path:
    """A Liberty file path, or a known library name looked up in ``$DSE_PDK_DIR`` and the user
    cache's ``pdk/`` folder."""
    if spec not in KNOWN:
        path = Path(spec).expanduser()
        if not path.is_file():
            raise LibertyError(f"Liberty file {path} not found")
        return path
    folders = [Path(p).expanduser() for p in [os.environ.get("DSE_PDK_DIR")] if p]
    folders.append(cache_dir() / "pdk")
    for folder in folders:
        if (folder / KNOWN[spec]).is_file():
            return folder / KNOWN[spec]
    raise LibertyError(
        f"Liberty library {spec!r}: put {KNOWN[spec]} (from {SOURCE}) in $DSE_PDK_DIR or "
        f"{cache_dir() / 'pdk'}")


def load_liberty(path: str | Path) -> Liberty:
    """Resolve a Liberty file or known name; a ``.gz`` file is decompressed once into the user
    cache. Hashing is remembered per file version, so repeated calls cost a ``stat``."""
    source = find_liberty(str(path))
    stat = source.stat()
    return _load(source.resolve(), stat.st_mtime_ns, stat.st_size, str(cache_dir()))


@functools.lru_cache(maxsize=16)
def _load(source: Path, _mtime_ns: int, _size: int, _cache: str) -> Liberty:
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
