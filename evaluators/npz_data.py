"""A user's own data set: one .npz file holding x_train, y_train, x_test and y_test.

Samples are uint8 images, NHWC or NCHW (grayscale (N, H, W) too), or float feature vectors
(N, F) for fully connected networks. Images come out NHWC, the layout every dse dataset has;
a 4-D array is taken as NCHW when its axis 1 looks like a channel count (1, 3 or 4) and its
last axis does not. Labels are class indices; the class count is the largest label of either
split plus one, so a class absent from one split still counts.

Readers raise ``ValueError`` with a one-line message naming the file and the key; the
``load_split`` facade reports it as a ``DatasetError``.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

KEYS = {"train": ("x_train", "y_train"), "test": ("x_test", "y_test")}
"""Per split, the arrays holding its samples and its labels."""

_CHANNELS = (1, 3, 4)
_EXPECTED = ", ".join(k for pair in KEYS.values() for k in pair)
_SHAPES = "uint8 images (N, H, W), (N, H, W, C) or (N, C, H, W), or float feature vectors (N, F)"


def read_split(path: Path, split: str) -> tuple[np.ndarray, np.ndarray, int]:
    """The split's samples (uint8 NHWC images or float32 features), int64 labels, class count."""
    labels = _all_labels(path)
    x_key, y_key = KEYS[split]
    samples = _samples(path, x_key, _load(path, x_key))
    if len(labels[split]) != len(samples):
        raise ValueError(f"{path}: {y_key} has {len(labels[split])} labels but {x_key} has "
                         f"{len(samples)} samples")
    return samples, labels[split], _classes(labels)


def class_count(path: Path) -> int:
    """The largest label over both splits plus one (reads the label arrays only)."""
    return _classes(_all_labels(path))


def _all_labels(path: Path) -> dict[str, np.ndarray]:
    return {split: _labels(path, y_key, _load(path, y_key)) for split, (_, y_key) in KEYS.items()}


def _classes(labels: dict[str, np.ndarray]) -> int:
    return 1 + max(int(y.max()) for y in labels.values())


def _load(path: Path, key: str) -> np.ndarray:
    """One array of the archive, never unpickled (object arrays are refused)."""
    try:
        npz = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as err:
        raise ValueError(f"{path}: not an .npz archive ({_one_line(err)})") from None
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise ValueError(f"{path}: a single .npy array, expected an .npz archive holding "
                         f"{_EXPECTED}")
    with npz:
        if key not in npz.files:
            raise ValueError(f"{path}: no array {key!r} (expected {_EXPECTED}; found "
                             f"{', '.join(npz.files) or 'nothing'})")
        try:
            return npz[key]
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as err:
            raise ValueError(f"{path}: {key} cannot be read ({_one_line(err)})") from None


def _one_line(err: Exception) -> str:
    return " ".join(str(err).split())


def _samples(path: Path, key: str, x: np.ndarray) -> np.ndarray:
    if x.ndim == 0 or len(x) == 0:
        raise ValueError(f"{path}: {key} holds no samples (shape {x.shape})")
    if x.dtype == np.uint8 and x.ndim == 3:
        return x[..., None]
    if x.dtype == np.uint8 and x.ndim == 4:
        nchw = x.shape[1] in _CHANNELS and x.shape[-1] not in _CHANNELS
        return np.ascontiguousarray(x.transpose(0, 2, 3, 1)) if nchw else x
    if x.dtype.kind == "f" and x.ndim == 2:
        with np.errstate(over="ignore"):  # overflow is reported below, as a non-finite value
            features = x.astype(np.float32)
        bad = np.flatnonzero(~np.isfinite(features).all(axis=1))
        if len(bad):
            raise ValueError(f"{path}: {key} holds NaN or infinite values (or values beyond "
                             f"float32): {len(bad)} of {len(x)} samples, first sample {bad[0]}")
        return features
    raise ValueError(f"{path}: {key} is {x.dtype} {x.shape}, expected {_SHAPES}")


def _labels(path: Path, key: str, y: np.ndarray) -> np.ndarray:
    if y.ndim == 2 and y.shape[1] == 1:  # (N, 1), as Keras ships CIFAR labels
        y = y[:, 0]
    if y.ndim != 1:
        raise ValueError(f"{path}: {key} has shape {y.shape}, expected class indices (N,)")
    if len(y) == 0:
        raise ValueError(f"{path}: {key} holds no labels")
    if y.dtype.kind == "f" and np.isfinite(y).all() and (y == np.round(y)).all():
        y = y.astype(np.int64)
    if y.dtype.kind not in "iu":
        values = " with non-integer values" if y.dtype.kind == "f" else ""
        raise ValueError(f"{path}: {key} is {y.dtype}{values}, expected integer class indices")
    if y.min() < 0:
        first = int(np.flatnonzero(y < 0)[0])
        raise ValueError(f"{path}: {key} has a negative label {int(y[first])} (index {first}), "
                         "expected class indices 0, 1, ...")
    return y.astype(np.int64)
