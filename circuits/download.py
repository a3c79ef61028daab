"""Verified downloads: a file fetched from a pinned address is streamed to a temporary file
beside its destination, with a progress bar, and renamed into place only once its checksum
matches; a failure leaves nothing behind and is one line naming the address."""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
import urllib.error
import urllib.request
from http.client import HTTPException
from pathlib import Path

from tqdm import tqdm

TIMEOUT_S = 30
_CHUNK = 1 << 16


class DownloadError(OSError):
    """A download that failed or did not match its checksum; the message names the address."""


def download_verified(url: str, dest: Path, sha256: str) -> Path:
    """Fetch ``url`` into ``dest`` if its content has the ``sha256`` digest; returns ``dest``."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    tmp = Path(name)
    try:
        digest = hashlib.sha256()
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
            length = response.headers.get("Content-Length")
            with tqdm(total=int(length) if length else None, desc=dest.name, unit="B",
                      unit_scale=True, unit_divisor=1024, file=sys.stderr) as bar:
                while chunk := response.read(_CHUNK):
                    out.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
        if digest.hexdigest() != sha256:
            raise DownloadError(f"{url}: checksum {digest.hexdigest()} does not match the pinned "
                                f"sha256 {sha256}")
        os.replace(tmp, dest)
        return dest
    except urllib.error.HTTPError as err:
        raise DownloadError(f"{url}: HTTP {err.code} {err.reason}") from None
    except urllib.error.URLError as err:
        raise DownloadError(f"{url}: {err.reason}") from None
    except (HTTPException, TimeoutError) as err:
        raise DownloadError(f"{url}: {err}") from None
    finally:
        tmp.unlink(missing_ok=True)
