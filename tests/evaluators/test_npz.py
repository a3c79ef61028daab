"""A user's own .npz data through ``load_split("npz", split, path)``: layouts, labels, errors."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from evaluators.datasets import DatasetError, class_count, find_folder, load_split, locate


def write(path: Path, **arrays: np.ndarray) -> Path:
    np.savez(path, **arrays)
    return path


def images(n: int, shape: tuple[int, ...], seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, *shape), dtype=np.uint8)


def split_md5(x: np.ndarray, y: np.ndarray) -> str:
    return hashlib.md5(x.tobytes() + y.astype("<i8").tobytes()).hexdigest()


@pytest.fixture
def nhwc(tmp_path: Path) -> dict[str, np.ndarray]:
    """RGB 8x6 images; class 4 only in the test split, so the count needs both splits."""
    return {"x_train": images(5, (8, 6, 3), 0), "y_train": np.array([0, 1, 2, 3, 1], np.uint8),
            "x_test": images(3, (8, 6, 3), 1), "y_test": np.array([4, 0, 2])}


def test_nhwc_images_round_trip(tmp_path: Path, nhwc: dict[str, np.ndarray]) -> None:
    path = write(tmp_path / "mine.npz", **nhwc)
    for split in ("train", "test"):
        got = load_split("npz", split, path)
        x, y = nhwc[f"x_{split}"], nhwc[f"y_{split}"]
        assert got.images.dtype == np.uint8 and np.array_equal(got.images, x)
        assert got.labels.dtype == np.int64 and got.labels.tolist() == y.tolist()
        assert got.classes == 5 and got.files == (path,)
        assert got.md5 == split_md5(x, y)
    assert class_count("npz", path) == 5
    assert locate("npz", "test", path) == (path,)


def test_nchw_images_become_nhwc(tmp_path: Path, nhwc: dict[str, np.ndarray]) -> None:
    nchw = {k: v.transpose(0, 3, 1, 2) if k.startswith("x") else v for k, v in nhwc.items()}
    assert nchw["x_train"].shape == (5, 3, 8, 6)
    got = load_split("npz", "train", write(tmp_path / "nchw.npz", **nchw))
    same = load_split("npz", "train", write(tmp_path / "nhwc.npz", **nhwc))
    assert got.images.shape == (5, 8, 6, 3) and got.images.flags.c_contiguous
    assert np.array_equal(got.images, nhwc["x_train"]) and got.md5 == same.md5
    # channels last stays as it is, even when axis 1 could be a channel count
    small = {**nhwc, "x_train": images(5, (3, 4, 1), 2)}
    assert load_split("npz", "train", write(tmp_path / "s.npz", **small)).images.shape == (5, 3, 4, 1)


def test_grayscale_and_keras_style_labels(tmp_path: Path) -> None:
    x = images(4, (28, 28), 3)
    path = write(tmp_path / "gray.npz", x_train=x, y_train=np.array([[1], [0], [2], [1]]),
                 x_test=x[:2], y_test=np.array([2.0, 0.0]))  # (N, 1) and integral floats
    train, test = load_split("npz", "train", path), load_split("npz", "test", path)
    assert train.images.shape == (4, 28, 28, 1) and np.array_equal(train.images[..., 0], x)
    assert train.labels.tolist() == [1, 0, 2, 1] and test.labels.tolist() == [2, 0]
    assert test.labels.dtype == np.int64 and train.classes == 3


def test_float_feature_vectors(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    x_train, x_test = rng.normal(size=(6, 20)), rng.normal(size=(2, 20)).astype(np.float32)
    path = write(tmp_path / "feat.npz", x_train=x_train, y_train=np.arange(6) % 2,
                 x_test=x_test, y_test=np.array([1, 0]))
    train = load_split("npz", "train", path)
    assert train.images.dtype == np.float32 and train.images.shape == (6, 20)
    assert np.array_equal(train.images, x_train.astype(np.float32)) and train.classes == 2
    assert train.md5 == split_md5(x_train.astype(np.float32), np.arange(6) % 2)
    assert np.array_equal(load_split("npz", "test", path).images, x_test)


GOOD = {"x_train": np.zeros((2, 4, 4), np.uint8), "y_train": np.array([0, 1]),
        "x_test": np.zeros((1, 4, 4), np.uint8), "y_test": np.array([1])}


@pytest.mark.parametrize(
    ("change", "split", "message"),
    [
        ({"y_test": None}, "train", r"no array 'y_test' \(expected x_train, y_train, x_test, "
                                    r"y_test; found x_train, y_train, x_test\)"),
        ({"x_train": np.array([None, None], dtype=object)}, "train", "x_train cannot be read"),
        ({"x_train": np.array([[0.5, np.nan], [1.0, 2.0]])}, "train",
         "x_train holds NaN or infinite values .*: 1 of 2 samples, first sample 0"),
        ({"x_test": np.array([[1.0, np.inf]], np.float32)}, "test", "x_test holds NaN or infinite"),
        ({"x_train": np.array([[1e39, 0.0], [0.0, 0.0]])}, "train", "values beyond float32"),
        ({"y_train": np.array([0, -3])}, "test", r"y_train has a negative label -3 \(index 1\)"),
        ({"y_test": np.array([0.5])}, "test", "y_test is float64 with non-integer values"),
        ({"y_test": np.array([True])}, "test", "y_test is bool, expected integer class indices"),
        ({"y_train": np.array([0, 1, 1])}, "train", "y_train has 3 labels but x_train has 2"),
        ({"y_train": np.eye(2)}, "train", r"y_train has shape \(2, 2\), expected class indices"),
        ({"x_train": np.zeros((2, 4, 4, 3), np.int64)}, "train",
         r"x_train is int64 \(2, 4, 4, 3\), expected uint8 images"),
        ({"x_train": np.zeros((2, 3, 4, 4), np.float32)}, "train", "x_train is float32"),
        ({"x_train": np.zeros(2, np.uint8)}, "train", r"x_train is uint8 \(2,\)"),
        ({"x_test": np.zeros((0, 4, 4), np.uint8), "y_test": np.zeros(0, int)}, "test",
         "y_test holds no labels"),
        ({"x_test": np.zeros((0, 4, 4), np.uint8)}, "test", "x_test holds no samples"),
    ],
)
def test_bad_arrays_name_file_and_key(
    tmp_path: Path, change: dict[str, np.ndarray | None], split: str, message: str
) -> None:
    arrays = {k: v for k, v in {**GOOD, **change}.items() if v is not None}
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)  # allow_pickle is on for saving: the loader must refuse objects
    with pytest.raises(DatasetError, match=message) as err:
        load_split("npz", split, path)
    assert str(err.value).startswith(f"{path}: ") and "\n" not in str(err.value)


def test_files_that_are_not_an_npz(tmp_path: Path) -> None:
    text = tmp_path / "data.npz"
    text.write_text("x_train,y_train\n1,2\n")
    with pytest.raises(DatasetError, match=f"{text}: not an .npz archive"):
        load_split("npz", "train", text)
    single = tmp_path / "single.npy"
    np.save(single, np.zeros(3))
    with pytest.raises(DatasetError, match=f"{single}: a single .npy array, expected an .npz"):
        class_count("npz", single)
    truncated = tmp_path / "truncated.npz"
    np.savez(truncated, **GOOD)
    truncated.write_bytes(truncated.read_bytes()[:-40])
    with pytest.raises(DatasetError, match=f"{truncated}: not an .npz archive"):
        load_split("npz", "test", truncated)


def test_npz_needs_an_existing_file(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="^npz data is one file: give the path of an .npz"):
        load_split("npz", "train")
    with pytest.raises(DatasetError, match=f"^{tmp_path}: no such file"):
        load_split("npz", "train", tmp_path)
    with pytest.raises(DatasetError, match="no such file"):
        class_count("npz", tmp_path / "absent.npz")
    with pytest.raises(DatasetError, match="npz data is one file"):
        find_folder("npz")
    with pytest.raises(DatasetError, match=r"unknown npz split 'val' \(known: train, test\)"):
        load_split("npz", "val", tmp_path / "absent.npz")
