"""A user's own data set: one .npz file holding x_train, y_train, x_test and y_test.

Samples are uint8 images, NHWC or NCHW (grayscale (N, H, W) too), or float feature vectors
(N, F) for fully connected networks. Images come out NHWC, the layout every dse dataset has;
a 4-D array is taken as NCHW when its axis 1 looks like a channel count (1, 3 or 4) and its
last axis does not. Labels are class indices; the class count is the largest label of either
split plus one, so a class absent from one split still counts.

The archive is checked before any array is loaded: the zip's central directory is read only up
to ``MAX_DIRECTORY`` bytes, and each array's .npy header (dtype and shape) must fit what the
member holds, the layouts above and, all four together, ``MAX_BYTES``; labels must lie below
``MAX_CLASSES``. A forged header or a zip bomb is thus refused without allocating what it
declares.

Readers raise ``ValueError`` with a one-line message naming the file and the key; ``NpzData``
(the format's reader, ``evaluators.data.reader``) reports it as a ``DatasetError``. An npz file
is never searched for: the ``path`` of ``load_split`` names it.
"""

from __future__ import annotations

import io
import math
import os
import zipfile
import zlib
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, ClassVar

import numpy as np

from evaluators.data.reader import DatasetError, DatasetReader, Split, arrays_md5, reported

KEYS = {"train": ("x_train", "y_train"), "test": ("x_test", "y_test")}
"""Per split, the arrays holding its samples and its labels."""

MAX_BYTES = 2 << 30
"""The most bytes the four arrays may declare together (2 GiB, ten times CIFAR-10's images):
what a forged header or a zip bomb could otherwise make the reader allocate."""

MAX_CLASSES = 1000
"""The largest class count the labels may imply (ImageNet's): the network gets an output per
class and the metrics a classes x classes confusion matrix."""

MAX_DIRECTORY = 4 << 20
"""The most bytes of a zip central directory read (tens of thousands of entries): zipfile builds
an object per entry, several times the entry's size, before any check could run."""

_MAX_HEADER = 10_000
"""The longest .npy header read (numpy's own limit; a real one is about a hundred bytes)."""

_NPY_MAGIC = b"\x93NUMPY"
_HEADER_READERS = {(1, 0): (2, np.lib.format.read_array_header_1_0),
                   (2, 0): (4, np.lib.format.read_array_header_2_0)}
"""Per .npy format version: the width of the header length, the header parser."""

_CHANNELS = (1, 3, 4)
_EXPECTED = ", ".join(k for pair in KEYS.values() for k in pair)
_SHAPES = "uint8 images (N, H, W), (N, H, W, C) or (N, C, H, W), or float feature vectors (N, F)"
_UNREADABLE = (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error, RuntimeError)
"""What a damaged member raises while read: zipfile's, zlib's and numpy's errors (RuntimeError:
an encrypted member; members of other compression methods are refused when the archive opens)."""
_METHODS = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflated",
            zipfile.ZIP_BZIP2: "bzip2", zipfile.ZIP_LZMA: "lzma"}
"""The compression methods zipfile reads."""


_NPZ_PATH = (f"npz data is one file: give the path of an .npz file holding "
             f"{', '.join(k for pair in KEYS.values() for k in pair)}")


@dataclass(frozen=True)
class NpzData(DatasetReader):
    """A user's .npz file: named by its path, never searched for nor downloaded."""

    format: ClassVar[str] = "npz"

    name: str = "npz"
    title: str = "npz"
    splits: Mapping[str, tuple[str, str]] = field(default_factory=lambda: dict(KEYS))

    def locate(self, split: str, path: str | Path | None) -> tuple[Path, ...]:
        return (_npz_file(path),)

    def find_folder(self, extra: Sequence[Path]) -> Path | None:
        raise DatasetError(_NPZ_PATH)

    def fetch(self, split: str, download: bool, mirrors: Sequence[str] | None) -> tuple[Path, ...]:
        raise DatasetError(_NPZ_PATH)  # never reached: ``locate`` names the file or refuses

    def read(self, split: str, files: tuple[Path, ...]) -> Split:
        with reported():
            images, labels, classes = read_split(files[0], split)
        return Split(images, labels, files, arrays_md5(images, labels), classes)

    def class_count(self, path: str | Path | None) -> int:
        """The largest label plus one: the file's label arrays are read."""
        with reported():
            return file_class_count(_npz_file(path))


def _npz_file(path: str | Path | None) -> Path:
    if path is None:
        raise DatasetError(_NPZ_PATH)
    file = Path(path).expanduser()
    if not file.is_file():
        raise DatasetError(f"{file}: no such file ({_NPZ_PATH})")
    return file


@dataclass(frozen=True)
class Declared:
    """What an archive member's .npy header declares."""

    dtype: np.dtype
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


def read_split(path: Path, split: str) -> tuple[np.ndarray, np.ndarray, int]:
    """The split's samples (uint8 NHWC images or float32 features), int64 labels, class count."""
    x_key = KEYS[split][0]
    with _archive(path) as archive:
        labels = _all_labels(path, archive)
        samples = _samples(path, x_key, _load(path, archive, x_key))
    return samples, labels[split], _classes(labels)


def file_class_count(path: Path) -> int:
    """The largest label over both splits plus one (reads the label arrays only)."""
    with _archive(path) as archive:
        return _classes(_all_labels(path, archive))


@contextmanager
def open_zip(path: Path) -> Iterator[zipfile.ZipFile]:
    """``path`` as a zip archive whose central directory is read only when it is at most
    ``MAX_DIRECTORY`` bytes (an .npz file and a PyTorch checkpoint are both zip archives).

    Raises:
        ValueError: not a readable zip archive; the message is the reason, on one line.
    """
    with ExitStack() as stack:
        try:
            file = stack.enter_context(path.open("rb"))
            archive = stack.enter_context(zipfile.ZipFile(_CappedReads(file, MAX_DIRECTORY)))
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as err:
            raise ValueError(_one_line(err) or type(err).__name__) from None
        for info in archive.infolist():
            if info.compress_type not in _METHODS:
                raise ValueError(f"member {info.filename!r} uses compression method "
                                 f"{info.compress_type}; expected one of {', '.join(_METHODS.values())}")
        yield archive


class _CappedReads:
    """A binary file refusing any single read over ``cap`` bytes: zipfile reads a central
    directory in one read, and reads member data in chunks of at most the caller's request."""

    def __init__(self, file: BinaryIO, cap: int) -> None:
        self._file = file
        self._cap = cap
        self._size = os.fstat(file.fileno()).st_size

    def read(self, n: int | None = -1) -> bytes:
        if n is None or n < 0:
            n = self._size - self._file.tell()
        if n > self._cap:
            raise zipfile.BadZipFile(f"a zip central directory of {n} bytes, expected at most "
                                     f"{self._cap}")
        return self._file.read(n)

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._file.seek(offset, whence)

    def tell(self) -> int:
        return self._file.tell()

    def seekable(self) -> bool:
        return True


@contextmanager
def _archive(path: Path) -> Iterator[zipfile.ZipFile]:
    """The .npz archive once every array's header is checked (see the module docstring)."""
    try:
        with path.open("rb") as f:
            single = f.read(len(_NPY_MAGIC)) == _NPY_MAGIC
    except OSError as err:
        raise ValueError(f"{path}: not an .npz archive ({_one_line(err)})") from None
    if single:
        raise ValueError(f"{path}: a single .npy array, expected an .npz archive holding "
                         f"{_EXPECTED}")
    with ExitStack() as stack:
        try:
            archive = stack.enter_context(open_zip(path))
        except ValueError as err:
            raise ValueError(f"{path}: not an .npz archive ({err})") from None
        _check_headers(path, {key: _header(path, archive, key)
                              for pair in KEYS.values() for key in pair})
        yield archive


def _member(path: Path, archive: zipfile.ZipFile, key: str) -> str:
    """The archive member holding ``key`` (``key.npy`` as numpy.savez names it, or ``key``)."""
    names = archive.namelist()
    for name in (f"{key}.npy", key):
        if name in names:
            return name
    found = ", ".join(n.removesuffix(".npy") for n in names) or "nothing"
    raise ValueError(f"{path}: no array {key!r} (expected {_EXPECTED}; found {found})")


def _header(path: Path, archive: zipfile.ZipFile, key: str) -> Declared:
    """The dtype and shape the member's .npy header declares, once its data can hold them."""
    member = _member(path, archive, key)
    try:
        with archive.open(member) as f:
            version = np.lib.format.read_magic(f)
            if version not in _HEADER_READERS:
                raise ValueError(f".npy format version {version[0]}.{version[1]}, expected 1.0 "
                                 "or 2.0")
            width, parse = _HEADER_READERS[version]
            prefix = f.read(width)
            length = int.from_bytes(prefix, "little")
            if length > _MAX_HEADER:
                raise ValueError(f"a .npy header of {length} bytes, expected at most "
                                 f"{_MAX_HEADER}")
            shape, _, dtype = parse(io.BytesIO(prefix + f.read(length)),
                                    max_header_size=_MAX_HEADER)
    except _UNREADABLE as err:
        raise ValueError(f"{path}: {key} cannot be read ({_one_line(err)})") from None
    if dtype.hasobject:
        raise ValueError(f"{path}: {key} cannot be read (an array of Python objects, which "
                         "loading would unpickle; expected numbers)")
    if any(d < 0 for d in shape):
        raise ValueError(f"{path}: {key} cannot be read (negative dimension in its shape "
                         f"{shape})")
    declared = Declared(dtype, shape)
    data = archive.getinfo(member).file_size - (len(_NPY_MAGIC) + 2 + width + length)
    if declared.nbytes > data:
        raise ValueError(f"{path}: {key} declares {dtype} {shape} ({declared.nbytes} bytes) but "
                         f"holds {max(data, 0)} bytes of data (a damaged or forged file)")
    return declared


def _check_headers(path: Path, declared: dict[str, Declared]) -> None:
    """The bound on the total, then per split the labels, the samples and their counts."""
    total = sum(d.nbytes for d in declared.values())
    if total > MAX_BYTES:
        largest = max(declared, key=lambda k: declared[k].nbytes)
        raise ValueError(f"{path}: the arrays declare {total} bytes together ({largest} "
                         f"{declared[largest].dtype} {declared[largest].shape} alone "
                         f"{declared[largest].nbytes}), expected at most {MAX_BYTES}")
    for x_key, y_key in KEYS.values():
        labels = _check_label_layout(path, y_key, declared[y_key])
        _check_sample_layout(path, x_key, declared[x_key])
        if labels != declared[x_key].shape[0]:
            raise ValueError(f"{path}: {y_key} has {labels} labels but {x_key} has "
                             f"{declared[x_key].shape[0]} samples")


def _check_label_layout(path: Path, key: str, y: Declared) -> int:
    """The label count, once ``y`` is (N,) or (N, 1) numbers."""
    shape = y.shape[:1] if len(y.shape) == 2 and y.shape[1] == 1 else y.shape  # Keras's (N, 1)
    if len(shape) != 1:
        raise ValueError(f"{path}: {key} has shape {y.shape}, expected class indices (N,)")
    if shape[0] == 0:
        raise ValueError(f"{path}: {key} holds no labels")
    if y.dtype.kind not in "iuf":
        raise ValueError(f"{path}: {key} is {y.dtype}, expected integer class indices")
    return shape[0]


def _check_sample_layout(path: Path, key: str, x: Declared) -> None:
    if not x.shape or x.shape[0] == 0:
        raise ValueError(f"{path}: {key} holds no samples (shape {x.shape})")
    images = x.dtype == np.uint8 and len(x.shape) in (3, 4)
    features = x.dtype.kind == "f" and len(x.shape) == 2
    if not (images or features):
        raise ValueError(f"{path}: {key} is {x.dtype} {x.shape}, expected {_SHAPES}")
    if 0 in x.shape:
        raise ValueError(f"{path}: {key} has shape {x.shape}: samples without values")


def _load(path: Path, archive: zipfile.ZipFile, key: str) -> np.ndarray:
    """One array of the checked archive, never unpickled."""
    try:
        with archive.open(_member(path, archive, key)) as f:
            return np.lib.format.read_array(f, allow_pickle=False, max_header_size=_MAX_HEADER)
    except _UNREADABLE as err:
        raise ValueError(f"{path}: {key} cannot be read ({_one_line(err)})") from None


def _all_labels(path: Path, archive: zipfile.ZipFile) -> dict[str, np.ndarray]:
    return {split: _labels(path, y_key, _load(path, archive, y_key))
            for split, (_, y_key) in KEYS.items()}


def _classes(labels: dict[str, np.ndarray]) -> int:
    return 1 + max(int(y.max()) for y in labels.values())


def _one_line(err: Exception) -> str:
    return " ".join(str(err).split())


def _samples(path: Path, key: str, x: np.ndarray) -> np.ndarray:
    """NHWC uint8 images or float32 features (the layout is checked from the header)."""
    if x.dtype == np.uint8 and x.ndim == 3:
        return x[..., None]
    if x.dtype == np.uint8 and x.ndim == 4:
        nchw = x.shape[1] in _CHANNELS and x.shape[-1] not in _CHANNELS
        return np.ascontiguousarray(x.transpose(0, 2, 3, 1)) if nchw else x
    with np.errstate(over="ignore"):  # overflow is reported below, as a non-finite value
        features = x.astype(np.float32)
    bad = np.flatnonzero(~np.isfinite(features).all(axis=1))
    if len(bad):
        raise ValueError(f"{path}: {key} holds NaN or infinite values (or values beyond "
                         f"float32): {len(bad)} of {len(x)} samples, first sample {bad[0]}")
    return features


def _labels(path: Path, key: str, y: np.ndarray) -> np.ndarray:
    """int64 class indices in [0, MAX_CLASSES), checked before the cast (which would wrap
    values beyond int64)."""
    y = y.reshape(-1)
    if y.dtype.kind == "f" and not (np.isfinite(y).all() and (y == np.round(y)).all()):
        raise ValueError(f"{path}: {key} is {y.dtype} with non-integer values, expected integer "
                         "class indices")
    if y.min() < 0:
        first = int(np.flatnonzero(y < 0)[0])
        raise ValueError(f"{path}: {key} has a negative label {y[first].item()} (index {first}), "
                         "expected class indices 0, 1, ...")
    if y.max() >= MAX_CLASSES:
        first = int(np.flatnonzero(y >= MAX_CLASSES)[0])
        raise ValueError(f"{path}: {key} has a label {y[first].item()} (index {first}), expected "
                         f"class indices 0 to {MAX_CLASSES - 1} (at most {MAX_CLASSES} classes)")
    return y.astype(np.int64)
