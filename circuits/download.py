"""Verified downloads: a file fetched from an address is streamed to a temporary file beside
its destination, with a progress bar, and renamed into place only once its check passes (a
pinned sha256, or the caller's own: a published md5, a header); a failure leaves nothing
behind. Used for the known Liberty libraries here and for the datasets in ``evaluators``."""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from functools import partial
from http.client import HTTPException
from pathlib import Path

from tqdm import tqdm

TIMEOUT_S = 30
_CHUNK = 1 << 16

Verify = Callable[[Path, str], None]
"""Checks a downloaded file (its temporary path, the address) and raises when it is not the
expected one."""


class DownloadError(OSError):
    """A download that failed or did not match its checksum; the message names the address."""


def download(url: str, dest: Path, verify: Verify) -> Path:
    """Fetch ``url`` into ``dest`` once ``verify`` accepts it; returns ``dest``. Network and
    HTTP failures are a ``DownloadError`` naming the address; ``verify``'s own errors pass."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    tmp = Path(name)
    try:
        try:
            with os.fdopen(fd, "wb") as out, \
                    urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
                length = response.headers.get("Content-Length")
                with tqdm(total=int(length) if length else None, desc=dest.name, unit="B",
                          unit_scale=True, unit_divisor=1024, file=sys.stderr) as bar:
                    while chunk := response.read(_CHUNK):
                        out.write(chunk)
                        bar.update(len(chunk))
        except urllib.error.HTTPError as err:
            raise DownloadError(f"{url}: HTTP {err.code} {err.reason}") from None
        except urllib.error.URLError as err:
            raise DownloadError(f"{url}: {err.reason}") from None
        except (HTTPException, OSError) as err:
            raise DownloadError(f"{url}: {err}") from None
        verify(tmp, url)
        os.replace(tmp, dest)
        return dest
    finally:
        tmp.unlink(missing_ok=True)


def download_verified(url: str, dest: Path, sha256: str) -> Path:
    """``download`` of a file pinned by its ``sha256`` digest."""
    return download(url, dest, partial(_check_sha256, sha256))


def file_digest(path: Path, algorithm: str) -> str:
    """The hex digest (``md5``, ``sha256``, ...) of a file, read in chunks: memory stays bounded
    whatever its size."""
    digest = hashlib.new(algorithm)
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _check_sha256(expected: str, path: Path, url: str) -> None:
    if (found := file_digest(path, "sha256")) != expected:
        raise DownloadError(f"{url}: checksum {found} does not match the pinned sha256 "
                            f"{expected}")
