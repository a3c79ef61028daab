"""CIFAR-10 / CIFAR-100 read from the official python tarball or from its extracted folder.

Each batch is a Python 2 pickle of a dict: ``b"data"`` uint8 (N, 3072), one row per 32x32
image in channel-major order (1024 red bytes, then green, then blue, each row by row), and the
class indices under ``b"labels"`` (CIFAR-10) or ``b"fine_labels"`` (CIFAR-100). Unpickling can
run any code a file names, so batches are read by an unpickler that resolves only the three
numpy names an array needs. Every file is checked against the published one first: its size
(before a byte is read, so that a huge or sparse file costs nothing), then its md5, hashed in
chunks: the tarball as a whole, or each extracted batch on its own.

Readers raise ``ValueError`` with a one-line message naming the file; ``CifarDataset`` (the
format's reader, ``evaluators.data.reader``) reports it as a ``DatasetError``.
"""

from __future__ import annotations

import io
import pickle
import tarfile
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from circuits.download import file_digest
from evaluators.data.reader import SearchedDataset, Split, arrays_md5, download_file, reported

try:
    from numpy._core.multiarray import _reconstruct
except ImportError:  # numpy < 2
    from numpy.core.multiarray import _reconstruct  # type: ignore[no-redef]

_IMAGE_SHAPE = (3, 32, 32)
"""Channels, rows, columns of one stored row of ``b"data"``."""


MAX_BATCH_BYTES = 200_000_000
"""The largest batch file read whose published size is not recorded: the largest official
batch, CIFAR-100's ``train`` (50,000 images of 3,072 bytes, labels and file names), is about
155 MB."""


@dataclass(frozen=True)
class Batch:
    """One pickled batch file, its published md5 and size in bytes (None: not recorded; then
    at most ``MAX_BATCH_BYTES``)."""

    name: str
    md5: str
    size: int | None = None


@dataclass(frozen=True)
class CifarDataset(SearchedDataset):
    """A CIFAR variant: its tarball, the folder the tarball extracts to, the batches per split."""

    format: ClassVar[str] = "cifar"

    name: str
    title: str
    archive: str
    md5: str
    folder: str
    splits: Mapping[str, tuple[Batch, ...]]
    label_key: bytes
    classes: int
    mirrors: tuple[str, ...]
    size: int | None = None
    """The tarball's published size in bytes (None: not recorded, only its md5 is checked)."""

    def files_in(self, split: str, folder: Path) -> tuple[Path, ...] | None:
        return find_files(folder, self, split)

    def what_is_missing(self, split: str, folder: Path) -> str:
        return f"expected {self.archive} or its extracted {self.folder}/ folder"

    def download(self, split: str, folder: Path, mirrors: Sequence[str]) -> tuple[Path, ...]:
        def verify_archive(tmp: Path, url: str) -> None:
            with reported():
                check_archive(tmp, self, url)

        if not (folder / self.archive).is_file():
            download_file(self.archive, folder / self.archive, mirrors, verify_archive)
        return (folder / self.archive,)

    def not_found(self, split: str, why: str) -> str:
        searched = ", ".join(str(d) for d in self.search_dirs())
        return (
            f"{self.title} {split} files not found: put {self.archive} (or its extracted "
            f"{self.folder}/ folder) in one of the folders searched ({searched}) or in the folder "
            f"named by $DSE_DATA_DIR ({why})"
        )

    def read(self, split: str, files: tuple[Path, ...]) -> Split:
        with reported():
            images, labels = read_batches(files, self, split)
        return Split(images, labels, files, arrays_md5(images, labels), self.classes)


def find_files(folder: Path, ds: CifarDataset, split: str) -> tuple[Path, ...] | None:
    """The files in ``folder`` that serve ``split``, by name only: the extracted batches
    (in ``folder/<extracted>/``, or in ``folder`` when it is that extracted folder; read without
    a gunzip) else the tarball."""
    for extracted in (folder / ds.folder, *([folder] if folder.name == ds.folder else [])):
        batches = tuple(extracted / b.name for b in ds.splits[split])
        if all(p.is_file() for p in batches):
            return batches
    archive = folder / ds.archive
    return (archive,) if archive.is_file() else None


def read_batches(files: tuple[Path, ...], ds: CifarDataset, split: str) -> tuple[np.ndarray, np.ndarray]:
    """uint8 NHWC images (N, 32, 32, 3) and int64 labels from what ``find_files`` returned."""
    if len(files) == 1 and files[0].name == ds.archive:
        batches = _archive_batches(files[0], ds, split)
    else:
        batches = [_parse_batch(_verified(p, b, ds), str(p), ds.label_key)
                   for p, b in zip(files, ds.splits[split])]
    images = np.concatenate([images for images, _ in batches])
    labels = np.concatenate([labels for _, labels in batches])
    if len(labels) and (labels.min() < 0 or labels.max() >= ds.classes):
        raise ValueError(f"{files[0]}: labels outside 0..{ds.classes - 1}")
    return images, labels


def check_archive(path: Path, ds: CifarDataset, source: str) -> None:
    """Refuse a tarball (``source`` names it in the message) unless it is the published one:
    its size first, then its md5."""
    size = path.stat().st_size
    if ds.size is not None and size != ds.size:
        raise ValueError(f"{source}: {size} bytes, but the published {ds.title} {ds.archive} is "
                         f"{ds.size} bytes")
    if file_md5(path) != ds.md5:
        raise ValueError(f"{source}: checksum does not match the published {ds.title} {ds.archive}")


def _archive_batches(
    path: Path, ds: CifarDataset, split: str
) -> list[tuple[np.ndarray, np.ndarray]]:
    """The split's batches in registry order, parsed in one pass over the verified tarball."""
    check_archive(path, ds, str(path))
    wanted = {f"{ds.folder}/{b.name}": i for i, b in enumerate(ds.splits[split])}
    parsed: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    try:
        with tarfile.open(path, "r|gz") as tar:
            for member in tar:
                index = wanted.get(member.name)
                if index is not None and member.isfile() and (f := tar.extractfile(member)):
                    parsed[index] = _parse_batch(f.read(), f"{path}:{member.name}", ds.label_key)
    except (tarfile.TarError, OSError, EOFError, zlib.error) as err:
        raise ValueError(f"{path}: unreadable tar.gz ({err})") from None
    missing = [name for name, i in wanted.items() if i not in parsed]
    if missing:
        raise ValueError(f"{path}: no member {', '.join(missing)} in the archive")
    return [parsed[i] for i in range(len(wanted))]


def file_md5(path: Path) -> str:
    """The file's md5, read in chunks (memory stays bounded whatever its size)."""
    return file_digest(path, "md5")


def _verified(path: Path, batch: Batch, ds: CifarDataset) -> bytes:
    """The batch file's bytes once its size and md5 are the published ones."""
    size = path.stat().st_size
    if batch.size is not None and size != batch.size:
        raise ValueError(f"{path}: {size} bytes, but the published {ds.title} {batch.name} is "
                         f"{batch.size} bytes")
    if size > MAX_BATCH_BYTES:
        raise ValueError(f"{path}: {size} bytes, more than any published CIFAR batch (at most "
                         f"{MAX_BATCH_BYTES})")
    if file_md5(path) != batch.md5:
        raise ValueError(f"{path}: checksum does not match the published {ds.title} {batch.name}")
    return path.read_bytes()


class _ArrayUnpickler(pickle.Unpickler):
    """Resolves only the globals a pickled uint8 array refers to; any other global is refused
    before it is imported, so a crafted file cannot run code."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
    }

    def find_class(self, module: str, name: str) -> object:
        found = self.ALLOWED.get((module, name))
        if found is None:
            raise pickle.UnpicklingError(
                f"refused global {module}.{name}; a batch holds only numpy arrays, lists, "
                "numbers and strings"
            )
        return found


def _parse_batch(raw: bytes, source: str, label_key: bytes) -> tuple[np.ndarray, np.ndarray]:
    """The batch's images as uint8 NHWC (N, 32, 32, 3) and its labels as int64."""
    try:
        batch = _ArrayUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except (pickle.UnpicklingError, ValueError, TypeError, EOFError, AttributeError) as err:
        raise ValueError(f"{source}: not a CIFAR batch pickle ({err})") from None
    if not isinstance(batch, dict):
        raise ValueError(f"{source}: a CIFAR batch is a dict, found {type(batch).__name__}")
    data, labels = batch.get(b"data"), batch.get(label_key)
    row = int(np.prod(_IMAGE_SHAPE))
    if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2
            and data.shape[1] == row):
        found = (f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray)
                 else type(data).__name__)
        raise ValueError(f"{source}: b'data' is {found}, expected uint8 (N, {row})")
    if not (isinstance(labels, list) and all(type(v) is int for v in labels)):
        raise ValueError(f"{source}: {label_key!r} is not a list of integers")
    if len(labels) != len(data):
        raise ValueError(f"{source}: {len(data)} images but {len(labels)} labels")
    images = np.ascontiguousarray(data.reshape(-1, *_IMAGE_SHAPE).transpose(0, 2, 3, 1))
    return images, np.asarray(labels, dtype=np.int64)


# Checksums as published with the tarballs and as torchvision checks the extracted batches;
# sizes of the official files (CIFAR-100's batches unrecorded: MAX_BATCH_BYTES).
CIFAR10 = CifarDataset(
    name="cifar10",
    title="CIFAR-10",
    archive="cifar-10-python.tar.gz",
    md5="c58f30108f718f92721af3b95e74349a",
    size=170498071,
    folder="cifar-10-batches-py",
    splits={
        "train": (
            Batch("data_batch_1", "c99cafc152244af753f735de768cd75f", 31035704),
            Batch("data_batch_2", "d4bba439e000b95fd0a9bffe97cbabec", 31035320),
            Batch("data_batch_3", "54ebc095f3ab1f0389bbae665268c751", 31035999),
            Batch("data_batch_4", "634d18415352ddfa80567beed471001a", 31035696),
            Batch("data_batch_5", "482c414d41f54cd18b22e5b47cb7c3cb", 31035623),
        ),
        "test": (Batch("test_batch", "40351d587109b95175f43aff81a1287e", 31035526),),
    },
    label_key=b"labels",
    classes=10,
    mirrors=("https://www.cs.toronto.edu/~kriz/",),
)

CIFAR100 = CifarDataset(
    name="cifar100",
    title="CIFAR-100",
    archive="cifar-100-python.tar.gz",
    md5="eb9058c3a382ffc7106e4002c42a8d85",
    size=169001437,
    folder="cifar-100-python",
    splits={
        "train": (Batch("train", "16019d7e3df5f24257cddd939b257f8d"),),
        "test": (Batch("test", "f0ef6b0ae62326f3e7ffdfab6717acfc"),),
    },
    label_key=b"fine_labels",
    classes=100,
    mirrors=("https://www.cs.toronto.edu/~kriz/",),
)
