"""Liberty standard-cell libraries for the ASIC flow (plain or gzip-compressed files).

A library is checked (a ``library (NAME)`` group with cells) and its content copied once into
the user cache under a name made of its hash, so what the tools read is exactly what was hashed;
a job links it into its folder as ``cells.lib``, the only name a tool script ever writes.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import os
import re
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from circuits.cache import cache_dir
from circuits.download import download_verified


class LibertyError(ValueError):
    """A Liberty file that cannot be found or is not a cell library; one line naming it."""


@dataclass(frozen=True)
class Liberty:
    """A Liberty file the tools can read, and the identity of its content."""

    path: Path
    sha256: str
    name: str

    def link_into(self, folder: Path) -> str:
        """Link the library into a job folder; return the fixed name tool scripts use for it."""
        (folder / JOB_FILE).symlink_to(self.path)
        return JOB_FILE


JOB_FILE = "cells.lib"
# Libraries known by name: the OpenSTA repository's examples folder publishes both files
# (NanGate45: Nangate Inc.'s Open Cell Library under its licence agreement, see the file's
# header; sky130hd: SkyWater's PDK, Apache-2.0). dse fetches them from a pinned revision and
# checks their sha256 rather than shipping them.
KNOWN = {"nangate45": "nangate45_typ.lib.gz", "sky130hd": "sky130hd_tt.lib.gz"}
SHA256 = {"nangate45_typ.lib.gz":
          "7ee6c11d0c8964f9971ba28b879a6cad28e178f86911adda71ac0672ce00f7ef",
          "sky130hd_tt.lib.gz": "210e56be3a3a0907b5241a34d277f664cf4b4d91dcb49a27ff813df4406a5889"}
REVISION = "b04def2de07e3bcec6a648c2d491e5fcff09ebd0"
SOURCE = "https://github.com/The-OpenROAD-Project/OpenSTA/tree/master/examples"
DOWNLOAD = f"https://raw.githubusercontent.com/The-OpenROAD-Project/OpenSTA/{REVISION}/examples/"
# The opening ``library (NAME) {`` group, after blank space and comments, and one cell group.
LIBRARY_GROUP = re.compile(rb"(?:\s|/\*.*?\*/|//[^\n]*+)*+library\s*\(\s*[^()\n]+\)\s*\{", re.S)
CELL_GROUP = re.compile(rb"\bcell\s*\(")


def find_liberty(spec: str) -> Path:
    """A Liberty file path, or a known library name looked up in ``$DSE_PDK_DIR`` and the user
    cache's ``pdk/`` folder, and downloaded into the latter where the network allows."""
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
    file = KNOWN[spec]
    try:
        return download_verified(DOWNLOAD + file, cache_dir() / "pdk" / file, SHA256[file])
    except OSError as err:  # offline, refused, or not the pinned bytes
        raise LibertyError(
            f"Liberty library {spec!r}: cannot download it ({err}); put {file} (from {SOURCE}) "
            f"in $DSE_PDK_DIR or {cache_dir() / 'pdk'}") from None


def load_liberty(path: str | Path) -> Liberty:
    """Resolve, check and cache a Liberty file or known name (a ``.gz`` file is decompressed).
    Checking and hashing are remembered per file version, so repeated calls cost a ``stat``."""
    source = find_liberty(str(path))
    stat = source.stat()
    return _load(source.resolve(), stat.st_mtime_ns, stat.st_size, str(cache_dir()))


@functools.lru_cache(maxsize=16)
def _load(source: Path, _mtime_ns: int, _size: int, _cache: str) -> Liberty:
    data = _library_text(source)
    digest = hashlib.sha256(data).hexdigest()
    name = source.name.removesuffix(".gz")
    target = cache_dir() / "liberty" / f"{digest[:16]}-{re.sub(r'[^A-Za-z0-9_.-]', '_', name)}"
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".tmp")
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(tmp, target)
    return Liberty(target, digest, name)


def _library_text(source: Path) -> bytes:
    """The (decompressed) bytes of a file that looks like a Liberty cell library."""
    try:
        data = source.read_bytes()
        if data[:2] == b"\x1f\x8b":
            data = gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as err:
        raise LibertyError(f"{source}: cannot read the Liberty file ({err})") from None
    if LIBRARY_GROUP.match(data) is None or CELL_GROUP.search(data) is None:
        raise LibertyError(f"{source}: not a Liberty library (expected `library (...)` with cells)")
    return data
