"""Tabular classification data published on OpenML as one dense ARFF file: the format's reader
and the hls4ml LHC jets (``jets``, OpenML 42468), split and standardized as the hls4ml tutorial
does.

A downloaded file is only used when its md5 is the one OpenML's data description lists (as
sklearn's ``fetch_openml`` checks it); a file found in a folder is checked by its ARFF header
(attributes and class values) and its instance count.
"""

from __future__ import annotations

import gzip
import json
import re
import urllib.request
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache, partial
from http.client import HTTPException
from pathlib import Path
from typing import ClassVar

import numpy as np

from circuits.download import TIMEOUT_S, download, file_digest
from evaluators.data.reader import (
    DatasetError,
    SearchedDataset,
    Split,
    arrays_md5,
    failure,
    one_line,
    reported,
)


@dataclass(frozen=True)
class OpenMLDataset(SearchedDataset):
    """A tabular classification dataset published on OpenML as one dense ARFF file (numeric
    features, one nominal target), split and standardized here as its reference code does:
    sklearn's ``train_test_split(test_size, random_state=split_seed)``, then a
    ``StandardScaler`` fitted on the training part and applied to both."""

    format: ClassVar[str] = "openml"

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

    def files_in(self, split: str, folder: Path) -> tuple[Path, ...] | None:
        return next(((p,) for name in (self.file, self.file + ".gz")
                     if (p := folder / name).is_file()), None)

    def what_is_missing(self, split: str, folder: Path) -> str:
        return f"expected {self.file} or {self.file}.gz"

    def download(self, split: str, folder: Path, mirrors: Sequence[str]) -> tuple[Path, ...]:
        _download_openml(self, folder / self.file, mirrors)
        return (folder / self.file,)

    def not_found(self, split: str, why: str) -> str:
        return (
            f"{self.title} {split} data not found: save the ARFF file of OpenML dataset "
            f"{self.data_id} (https://www.openml.org/d/{self.data_id}; "
            f"{_description_url(self.mirrors[0], self)} names it) as {self.file} in "
            f"{self.cache_folder()} or in the folder named by $DSE_DATA_DIR ({why})"
        )

    def read(self, split: str, files: tuple[Path, ...]) -> Split:
        with reported():
            images, labels = _openml_split(files[0], self, split)
        return Split(images, labels, files, arrays_md5(images, labels), self.classes)


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
            failures.append(failure(url, err))
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
                raise ValueError(f"{path}: malformed ARFF data ({one_line(err)})") from None
    except (OSError, EOFError, UnicodeDecodeError, zlib.error) as err:
        raise ValueError(f"{path}: not a readable ARFF file ({one_line(err)})") from None
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


JET_FEATURES = (
    "zlogz", "c1_b0_mmdt", "c1_b1_mmdt", "c1_b2_mmdt", "c2_b1_mmdt", "c2_b2_mmdt", "d2_b1_mmdt",
    "d2_b2_mmdt", "d2_a1_b1_mmdt", "d2_a1_b2_mmdt", "m2_b1_mmdt", "m2_b2_mmdt", "n2_b1_mmdt",
    "n2_b2_mmdt", "mass_mmdt", "multiplicity",
)
"""The 16 high-level features of a jet in OpenML's hls4ml_lhc_jets_hlf (the HDF5 files'
j_-prefixed names without the prefix)."""

# OpenML 42468 (hls4ml_lhc_jets_hlf, 830,000 simulated jets) as the hls4ml tutorial reads
# it: fetch_openml's ARFF file, labels g, q, t, w, z by LabelEncoder, an 80/20
# train_test_split with random_state=42 and a StandardScaler fitted on the training part.
JETS = OpenMLDataset(
    name="jets",
    title="hls4ml LHC jets",
    data_id=42468,
    file="hls4ml_lhc_jets_hlf.arff",
    features=JET_FEATURES,
    labels=("g", "q", "t", "w", "z"),
    rows=830_000,
)
