"""The one interface every data format implements, and what loading a split gives (``Split``).

A registered dataset (``evaluators.data.datasets.DATASETS``) is an instance of its format's
reader class: ``IdxDataset`` (``evaluators.data.idx``), ``CifarDataset`` (``.cifar``),
``OpenMLDataset`` (``.openml``) or ``NpzData`` (``.npz``). The facade (``load_split``,
``locate``, ``find_folder``, ``class_count``) calls only the methods of ``DatasetReader``, so
adding a format is one subclass and its line in ``datasets.FORMATS``; nothing branches on the
format.

Formats whose files are searched for in folders and downloaded derive from
``SearchedDataset``, which implements the search order and the download loop once and asks
the format only which files serve a split in a folder, what is missing there, how to download
them and how to say which files to put where. A user's ``npz`` file is named, never searched
for, so ``NpzData`` implements ``DatasetReader`` directly.

Format readers raise ``ValueError`` with a one-line message naming the file; ``reported``
turns it into this package's ``DatasetError``.
"""

from __future__ import annotations

import hashlib
import os
import urllib.error
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from http.client import HTTPException
from pathlib import Path
from typing import ClassVar

import numpy as np

from circuits.cache import cache_dir
from circuits.download import DownloadError, Verify, download


class DatasetError(Exception):
    """A dataset cannot be found, verified or parsed; the message is one line meant for the user."""


@dataclass(frozen=True, eq=False)
class Split:
    """One loaded split.

    ``md5`` covers the decompressed image and label bytes, so it identifies the data (e.g. for
    caching a model trained on it) whatever folder or compression the files came from.
    """

    images: np.ndarray
    """uint8 images (N, H, W, C), or float32 feature vectors (N, F)."""
    labels: np.ndarray
    """int64 class indices (N,) in [0, classes)."""
    files: tuple[Path, ...]
    md5: str
    classes: int

    def check_size(self, count: int | None, field: str) -> None:
        """Refuse a requested sample count (the study file's ``field``) beyond what the split
        holds, rather than silently using fewer."""
        if count is not None and count > len(self.labels):
            where = self.files[0].parent if self.files else "the data"
            raise DatasetError(f"{field}: {count}, but the split in {where} holds "
                               f"{len(self.labels)} samples; expected at most {len(self.labels)} "
                               "(or leave it out for all)")

    def head(self, count: int | None) -> Split:
        """The first ``count`` samples (all for None), identified by their own md5."""
        if count is None or count >= len(self.labels):
            return self
        digest = hashlib.md5(np.ascontiguousarray(self.images[:count]).tobytes())
        digest.update(np.ascontiguousarray(self.labels[:count]).tobytes())
        return replace(self, images=self.images[:count], labels=self.labels[:count],
                       md5=digest.hexdigest())


class DatasetReader(ABC):
    """One registered dataset in its data format: where its split files are, how they are
    fetched, read and counted. Subclasses are frozen dataclasses holding the dataset's
    published description (file names, checksums, sizes, mirrors)."""

    format: ClassVar[str]
    """The format's name (its key in ``datasets.FORMATS``)."""

    name: str
    """The dataset's key in ``datasets.DATASETS`` (and its folder in the cache)."""
    title: str
    """How messages name the dataset."""
    splits: Mapping[str, object]
    """The splits by name (``train``, ``test``), each described as the format needs."""
    mirrors: tuple[str, ...]
    """Where downloads come from, tried in order."""

    def check_split(self, split: str) -> None:
        if split not in self.splits:
            raise DatasetError(f"unknown {self.title} split {split!r} "
                               f"(known: {', '.join(self.splits)})")

    @abstractmethod
    def locate(self, split: str, path: str | Path | None) -> tuple[Path, ...] | None:
        """The files serving the split: in ``path``, which must hold them, else wherever the
        format looks; None when nothing holds them (``fetch`` may then get them)."""

    @abstractmethod
    def find_folder(self, extra: Sequence[Path]) -> Path | None:
        """The first searched folder (``extra`` after the usual ones) holding every split."""

    @abstractmethod
    def fetch(self, split: str, download: bool, mirrors: Sequence[str] | None) -> tuple[Path, ...]:
        """The split's files downloaded (from ``mirrors``, None: the dataset's own), or a
        ``DatasetError`` saying which files to put where."""

    @abstractmethod
    def read(self, split: str, files: tuple[Path, ...]) -> Split:
        """The split read from the files ``locate`` or ``fetch`` gave, verified as published."""

    @abstractmethod
    def class_count(self, path: str | Path | None) -> int:
        """The number of classes, without loading the samples."""


class SearchedDataset(DatasetReader):
    """A dataset whose files are searched for in folders, first folder holding them wins:

    1. the ``path`` argument (an explicit path is a promise: no fall-through when absent),
    2. ``$DSE_DATA_DIR/<dataset>``, then ``$DSE_DATA_DIR`` itself,
    3. the user cache ``cache_dir()/datasets/<dataset>``,
    4. the format's system folders (``system_dirs``),

    and, found nowhere, downloaded into the user cache."""

    system_dirs: tuple[Path, ...] = ()
    classes: int

    # -- what each format says ---------------------------------------------------------------

    @abstractmethod
    def files_in(self, split: str, folder: Path) -> tuple[Path, ...] | None:
        """By name only, the files in ``folder`` that serve the split (the preferred ones)."""

    @abstractmethod
    def what_is_missing(self, split: str, folder: Path) -> str:
        """What ``folder`` lacks to serve the split (for the message refusing it)."""

    @abstractmethod
    def download(self, split: str, folder: Path, mirrors: Sequence[str]) -> tuple[Path, ...]:
        """Download the split's missing files into ``folder``, each verified; their paths."""

    @abstractmethod
    def not_found(self, split: str, why: str) -> str:
        """One line saying which files to put where (``why``: what went wrong)."""

    # -- the search and the download, once for every format ----------------------------------

    def cache_folder(self) -> Path:
        return cache_dir() / "datasets" / self.name

    def search_dirs(self) -> list[Path]:
        """Folders searched when no explicit path is given, in order."""
        dirs: list[Path] = []
        if data_dir := os.environ.get("DSE_DATA_DIR"):
            root = Path(data_dir).expanduser()
            dirs += [root / self.name, root]
        return [*dirs, self.cache_folder(), *self.system_dirs]

    def locate(self, split: str, path: str | Path | None) -> tuple[Path, ...] | None:
        if path is not None:
            folder = Path(path).expanduser()
            files = self.files_in(split, folder)
            if files is None:
                raise DatasetError(f"{folder}: no {self.title} {split} files there "
                                   f"({self.what_is_missing(split, folder)})")
            return files
        return next((files for folder in self.search_dirs()
                     if (files := self.files_in(split, folder))), None)

    def find_folder(self, extra: Sequence[Path]) -> Path | None:
        folders = [*self.search_dirs(), *extra]
        return next((f for f in folders if all(self.files_in(s, f) for s in self.splits)), None)

    def fetch(self, split: str, download: bool, mirrors: Sequence[str] | None) -> tuple[Path, ...]:
        """Download the split's files into the user cache, or say in one line which files to
        put where."""
        if not download:
            raise DatasetError(self.not_found(split, "download disabled"))
        folder = self.cache_folder()
        try:
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                raise DatasetError(f"cannot create {folder}: {err.strerror}") from None
            return self.download(split, folder, self.mirrors if mirrors is None else mirrors)
        except DatasetError as err:
            raise DatasetError(self.not_found(split, f"download failed: {err}")) from None

    def class_count(self, path: str | Path | None) -> int:
        return self.classes


@contextmanager
def reported() -> Iterator[None]:
    """The format readers' ValueError (one line naming the file) as this package's error."""
    try:
        yield
    except ValueError as err:
        raise DatasetError(str(err)) from None


def arrays_md5(images: np.ndarray, labels: np.ndarray) -> str:
    """Identifies a split by its samples' and labels' bytes, wherever the files came from."""
    digest = hashlib.md5(np.ascontiguousarray(images).tobytes())
    digest.update(labels.astype("<i8").tobytes())
    return digest.hexdigest()


def download_file(name: str, dest: Path, mirrors: Sequence[str], verify: Verify) -> None:
    """Try each mirror until one serves a verified copy; the reasons of all failures otherwise."""
    failures = []
    for mirror in mirrors:
        url = mirror.rstrip("/") + "/" + name
        try:
            download(url, dest, verify)
            return
        except (OSError, HTTPException, DatasetError) as err:
            failures.append(failure(url, err))
    raise DatasetError("; ".join(failures) or "no mirror to try")


def failure(url: str, err: Exception) -> str:
    """One download failure in a few words, naming the url."""
    if isinstance(err, (DatasetError, DownloadError)):
        return str(err)  # already names the url
    if isinstance(err, urllib.error.HTTPError):
        return f"{url}: HTTP {err.code} {err.reason}"
    if isinstance(err, urllib.error.URLError):
        return f"{url}: {err.reason}"
    return f"{url}: {err}"


def one_line(err: Exception) -> str:
    return " ".join(str(err).split())
