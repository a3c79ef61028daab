"""One reader per data format behind one interface: every registered dataset is a reader of a
registered format, and a new format is one class and its registration, with nothing else of the
facade to change."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

from evaluators.data import (
    DATASETS,
    FORMATS,
    DatasetError,
    Split,
    class_count,
    find_folder,
    load_split,
    locate,
)
from evaluators.data.reader import DatasetReader, SearchedDataset, arrays_md5, reported


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DSE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("DSE_DATA_DIR", raising=False)


def test_every_dataset_is_a_reader_of_a_registered_format():
    assert set(FORMATS) == {"idx", "cifar", "openml", "npz"}
    for name, ds in DATASETS.items():
        assert isinstance(ds, DatasetReader) and FORMATS[ds.format] is type(ds), name
        assert ds.name == name


@dataclasses.dataclass(frozen=True)
class CsvDataset(SearchedDataset):
    """A made-up format: ``<split>.csv`` files of integer features and a last label column."""

    format: ClassVar[str] = "csv"

    name: str
    title: str
    splits: Mapping[str, str]
    mirrors: tuple[str, ...] = ()
    classes: int = 3

    def files_in(self, split: str, folder: Path) -> tuple[Path, ...] | None:
        path = folder / self.splits[split]
        return (path,) if path.is_file() else None

    def what_is_missing(self, split: str, folder: Path) -> str:
        return f"expected {self.splits[split]}"

    def download(self, split: str, folder: Path, mirrors: Sequence[str]) -> tuple[Path, ...]:
        raise DatasetError("no mirror to try")

    def not_found(self, split: str, why: str) -> str:
        return f"{self.title} {split} data not found: put {self.splits[split]} somewhere ({why})"

    def read(self, split: str, files: tuple[Path, ...]) -> Split:
        with reported():
            try:
                rows = np.loadtxt(files[0], delimiter=",", dtype=np.int64, ndmin=2)
            except ValueError as err:
                raise ValueError(f"{files[0]}: not a CSV of integers ({err})") from None
        features, labels = rows[:, :-1].astype(np.float32), rows[:, -1]
        return Split(features, labels, files, arrays_md5(features, labels), self.classes)


@pytest.fixture
def csv_data(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    folder = tmp_path / "csv"
    folder.mkdir()
    (folder / "train.csv").write_text("1,2,0\n3,4,1\n5,6,2\n")
    (folder / "test.csv").write_text("7,8,1\n")
    monkeypatch.setitem(FORMATS, "csv", CsvDataset)
    monkeypatch.setitem(DATASETS, "tiny_csv", CsvDataset(
        "tiny_csv", "Tiny CSV", {"train": "train.csv", "test": "test.csv"}))
    return folder


def test_a_new_format_is_one_class_and_its_registration(csv_data: Path, monkeypatch):
    train = load_split("tiny_csv", "train", csv_data)
    assert train.images.tolist() == [[1, 2], [3, 4], [5, 6]] and train.labels.tolist() == [0, 1, 2]
    assert locate("tiny_csv", "test", csv_data) == (csv_data / "test.csv",)
    assert class_count("tiny_csv") == 3
    assert find_folder("tiny_csv") is None
    assert find_folder("tiny_csv", [csv_data]) == csv_data
    monkeypatch.setenv("DSE_DATA_DIR", str(csv_data))  # searched like every format's folders
    assert find_folder("tiny_csv") == csv_data
    assert load_split("tiny_csv", "test", download=False).files == (csv_data / "test.csv",)


def test_the_facade_reports_a_new_format_as_it_reports_the_others(csv_data: Path, tmp_path):
    with pytest.raises(DatasetError, match=r"no Tiny CSV test files there \(expected test.csv\)"):
        load_split("tiny_csv", "test", tmp_path)
    with pytest.raises(DatasetError, match=r"put test.csv somewhere \(download disabled\)"):
        load_split("tiny_csv", "test", download=False)
    with pytest.raises(DatasetError, match=r"\(download failed: no mirror to try\)"):
        load_split("tiny_csv", "test")
    with pytest.raises(DatasetError, match=r"unknown Tiny CSV split 'val' \(known: train, test\)"):
        load_split("tiny_csv", "val", csv_data)
    (csv_data / "test.csv").write_text("a,b,c\n")
    with pytest.raises(DatasetError, match="test.csv: not a CSV of integers"):
        load_split("tiny_csv", "test", csv_data)
