"""Datasets behind one facade, ``load_split``: each split found or downloaded, verified, read.

The registered datasets (``DATASETS``) and their formats (``FORMATS``), each format one reader
class behind the interface of ``evaluators.data.reader``: MNIST and Fashion-MNIST as the
standard IDX gz files (``evaluators.data.idx``), CIFAR-10 and CIFAR-100 as the official python
tarballs or their extracted folders (``evaluators.data.cifar``), the hls4ml LHC jets (``jets``,
OpenML 42468) as OpenML's ARFF file (``evaluators.data.openml``, split and standardized as the
hls4ml tutorial does), and a user's own ``npz`` file (``evaluators.data.npz``). Every split
comes out as a ``Split``: uint8 NHWC images (or float32 feature vectors), int64 labels, a class
count and an md5 identifying the data.

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

from collections.abc import Sequence
from pathlib import Path

from evaluators.data.cifar import CIFAR10, CIFAR100, CifarDataset
from evaluators.data.idx import FASHION_MNIST, MNIST, IdxDataset
from evaluators.data.npz import NpzData
from evaluators.data.openml import JETS, OpenMLDataset
from evaluators.data.reader import DatasetError, DatasetReader, Split

__all__ = ["DATASETS", "FORMATS", "DatasetError", "Split", "class_count", "find_folder",
           "load_split", "locate"]

FORMATS: dict[str, type[DatasetReader]] = {
    cls.format: cls for cls in (IdxDataset, CifarDataset, OpenMLDataset, NpzData)
}
"""The data formats by name, each its reader class (``evaluators.data.reader``)."""

DATASETS: dict[str, DatasetReader] = {
    "mnist": MNIST,
    "fashion_mnist": FASHION_MNIST,
    "cifar10": CIFAR10,
    "cifar100": CIFAR100,
    "jets": JETS,
    "npz": NpzData(),
}
"""The datasets a study can name (``dataset.name``), each as its format's reader."""


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
    return _lookup(dataset, split).locate(split, path)


def find_folder(dataset: str, extra: Sequence[str | Path] = ()) -> Path | None:
    """The first searched folder holding every split of a dataset, without downloading or
    verifying: what a study's ``dataset.path`` (or a test) can point at.

    Args:
        dataset: a key of ``DATASETS`` other than ``npz`` (a file, not searched for).
        extra: folders searched after the usual ones (``DSE_DATA_DIR``, the cache, system folders).

    Returns:
        The folder, or None when no searched folder holds all the splits.
    """
    return _dataset(dataset).find_folder([Path(p).expanduser() for p in extra])


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
    files = ds.locate(split, path)
    if files is None:  # never for npz: its path names the file or is refused
        files = ds.fetch(split, download, mirrors)
    return ds.read(split, files)


def study_splits(dataset: str, path: str | Path | None, download: bool, train_size: int | None,
                 test_size: int | None) -> tuple[Split, Split]:
    """What a study trains, calibrates and scores on: the training split's first
    ``train_size`` samples and the whole test split (a study scores its first ``test_size``:
    ``test.head(test_size)``), each size refused when the split holds fewer."""
    train = load_split(dataset, "train", path, download=download)
    test = load_split(dataset, "test", path, download=download)
    train.check_size(train_size, "dataset.train_size")
    test.check_size(test_size, "dataset.test_size")
    return train.head(train_size), test


def class_count(dataset: str, path: str | Path | None = None) -> int:
    """The number of classes, without loading the images: the registry's for a named dataset,
    the largest label plus one for an ``npz`` file (``path``; its label arrays are read)."""
    return _dataset(dataset).class_count(path)


def _dataset(name: str) -> DatasetReader:
    ds = DATASETS.get(name)
    if ds is None:
        raise DatasetError(f"unknown dataset {name!r} (known: {', '.join(DATASETS)})")
    return ds


def _lookup(dataset: str, split: str) -> DatasetReader:
    ds = _dataset(dataset)
    ds.check_split(split)
    return ds
