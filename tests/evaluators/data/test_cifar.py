"""The CIFAR loader on tarballs this test writes in the official format (Python 2 pickles of
dicts, the official member names), read through the real ``load_split``: only the registry's
checksums and sizes are replaced by those of the files written here. Files of another size than
the published ones, sparse gigabytes included, are refused before they are read."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import struct
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest

from circuits.cache import cache_dir
from evaluators.data import DATASETS, DatasetError, class_count, find_folder, load_split, locate
from evaluators.data.cifar import Batch, CifarDataset
from tests.conftest import closed_port_url
from tests.evaluators.data.test_npz import refused_in_one_line, run_dse

CIFAR10_NAMES = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog",
                 b"horse", b"ship", b"truck"]


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Never read or write the developer's real cache or data folder."""
    monkeypatch.setenv("DSE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("DSE_DATA_DIR", raising=False)


def py2_pickle(obj: object) -> bytes:
    """``obj`` as Python 2's cPickle (protocol 2) wrote the official batches: str values as
    BINSTRING, arrays through ``numpy.core.multiarray._reconstruct`` with a Python 2 dtype state."""
    return b"\x80\x02" + _py2(obj) + b"."


def _py2(obj: object) -> bytes:
    if isinstance(obj, bytes):
        if len(obj) < 256:
            return b"U" + bytes([len(obj)]) + obj
        return b"T" + struct.pack("<i", len(obj)) + obj
    if isinstance(obj, int):
        if 0 <= obj < 256:
            return b"K" + bytes([obj])
        if 0 <= obj < 65536:
            return b"M" + struct.pack("<H", obj)
        return b"J" + struct.pack("<i", obj)
    if isinstance(obj, list):
        return b"](" + b"".join(_py2(v) for v in obj) + b"e"
    if isinstance(obj, dict):
        return b"}(" + b"".join(_py2(k) + _py2(v) for k, v in obj.items()) + b"u"
    assert isinstance(obj, np.ndarray) and obj.dtype == np.uint8
    shape = b"(" + b"".join(_py2(d) for d in obj.shape) + b"t"
    dtype = (b"cnumpy\ndtype\n" + _py2(b"u1") + _py2(0) + _py2(1) + b"\x87R"
             + b"(" + _py2(3) + _py2(b"|") + b"NNN" + b"J\xff\xff\xff\xff" * 2 + _py2(0) + b"tb")
    return (b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n" + _py2(0) + b"\x85"
            + _py2(b"b") + b"\x87R" + b"(" + _py2(1) + shape + dtype + b"\x89"
            + _py2(obj.tobytes()) + b"tb")


@dataclasses.dataclass
class Written:
    """A tarball written here, its members' bytes, and per split the images and labels in
    the official layout (rows of 3072 bytes)."""

    archive: Path
    members: dict[str, bytes]
    data: dict[str, np.ndarray]
    labels: dict[str, np.ndarray]


def write_cifar(folder: Path, ds: CifarDataset, sizes: dict[str, tuple[int, ...]],
                seed: int = 0) -> Written:
    """The official tarball of ``ds`` with ``sizes[split][i]`` images in batch i."""
    rng = np.random.default_rng(seed)
    members: dict[str, bytes] = {}
    data, labels = {}, {}
    for split, batches in ds.splits.items():
        parts, part_labels = [], []
        for i, (batch, n) in enumerate(zip(batches, sizes[split])):
            rows = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
            fine = rng.integers(0, ds.classes, n).tolist()
            names = [b"img_%05d.png" % (100 * i + k) for k in range(n)]
            if ds.classes == 10:
                label_part = {b"labels": fine}
                title = (b"training batch %d of 5" % (i + 1) if split == "train"
                         else b"testing batch 1 of 1")
            else:  # CIFAR-100: coarse labels must not be read as the classes
                label_part = {b"fine_labels": fine,
                              b"coarse_labels": [(v + 7) % 20 for v in fine]}
                title = b"training batch 1 of 1" if split == "train" else b"testing batch 1 of 1"
            members[batch.name] = py2_pickle({b"batch_label": title, **label_part,
                                              b"data": rows, b"filenames": names})
            parts.append(rows)
            part_labels += fine
        data[split], labels[split] = np.concatenate(parts), np.array(part_labels)
    if ds.classes == 10:
        members["batches.meta"] = py2_pickle({b"num_cases_per_batch": 10000,
                                              b"label_names": CIFAR10_NAMES, b"num_vis": 3072})
        members["readme.html"] = b"<meta HTTP-EQUIV='REFRESH' content='0'>"
    else:
        members["meta"] = py2_pickle({b"fine_label_names": [b"c%d" % i for i in range(100)],
                                      b"coarse_label_names": [b"s%d" % i for i in range(20)]})
    folder.mkdir(parents=True, exist_ok=True)
    archive = folder / ds.archive
    with tarfile.open(archive, "w:gz") as tar:
        top = tarfile.TarInfo(ds.folder)
        top.type = tarfile.DIRTYPE
        tar.addfile(top)
        for name, raw in members.items():
            info = tarfile.TarInfo(f"{ds.folder}/{name}")
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    return Written(archive, members, data, labels)


def md5(raw: bytes) -> str:
    return hashlib.md5(raw).hexdigest()


def register(monkeypatch: pytest.MonkeyPatch, name: str, written: Written) -> CifarDataset:
    """The registry entry with the checksums and sizes of the files written here."""
    ds = DATASETS[name]
    splits = {s: tuple(Batch(b.name, md5(written.members[b.name]), len(written.members[b.name]))
                       for b in batches)
              for s, batches in ds.splits.items()}
    patched = dataclasses.replace(ds, md5=md5(written.archive.read_bytes()), splits=splits,
                                  size=written.archive.stat().st_size)
    monkeypatch.setitem(DATASETS, name, patched)
    return patched


def extract(written: Written, folder: Path) -> Path:
    with tarfile.open(written.archive) as tar:
        tar.extractall(folder, filter="data")
    return folder


def cifar10(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Written, CifarDataset]:
    written = write_cifar(tmp_path / "data" / "cifar10", DATASETS["cifar10"],
                          {"train": (3, 2, 4, 1, 2), "test": (5,)})
    return written, register(monkeypatch, "cifar10", written)


def split_md5(images: np.ndarray, labels: np.ndarray) -> str:
    return md5(images.tobytes() + labels.astype("<i8").tobytes())


def test_cifar10_tarball_round_trip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    written, _ = cifar10(tmp_path, monkeypatch)
    monkeypatch.setenv("DSE_DATA_DIR", str(tmp_path / "data"))  # found in DSE_DATA_DIR/cifar10
    for split, count in (("train", 12), ("test", 5)):
        got = load_split("cifar10", split, download=False)
        assert got.images.shape == (count, 32, 32, 3) and got.images.dtype == np.uint8
        assert got.labels.dtype == np.int64 and got.labels.tolist() == written.labels[split].tolist()
        assert got.classes == 10 and got.files == (written.archive,)
        rows = written.data[split]
        for n, y, x, c in [(0, 0, 0, 0), (0, 0, 1, 0), (0, 1, 0, 0), (0, 0, 0, 2),
                           (count - 1, 31, 30, 1), (count - 1, 17, 5, 2)]:
            assert got.images[n, y, x, c] == rows[n, c * 1024 + y * 32 + x]
        channel_planes = rows.reshape(count, 3, 32, 32)
        assert np.array_equal(got.images, channel_planes.transpose(0, 2, 3, 1))
        assert got.md5 == split_md5(got.images, got.labels)
    assert locate("cifar10", "test") == (written.archive,)
    assert find_folder("cifar10") == tmp_path / "data" / "cifar10"
    assert class_count("cifar10") == 10


def test_cifar100_reads_fine_labels(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    written = write_cifar(tmp_path / "c100", DATASETS["cifar100"],
                          {"train": (6,), "test": (3,)}, seed=1)
    register(monkeypatch, "cifar100", written)
    (tmp_path / "c100" / "test").write_bytes(b"not a batch")  # only an extracted folder's batches count
    train = load_split("cifar100", "train", tmp_path / "c100", download=False)
    test = load_split("cifar100", "test", tmp_path / "c100", download=False)
    assert train.images.shape == (6, 32, 32, 3) and test.images.shape == (3, 32, 32, 3)
    assert train.labels.tolist() == written.labels["train"].tolist()  # fine, not coarse
    assert test.labels.tolist() == written.labels["test"].tolist()
    assert train.classes == test.classes == class_count("cifar100") == 100
    assert np.array_equal(test.images[2, 31, 0], written.data["test"][2, [31 * 32, 1024 + 31 * 32,
                                                                         2048 + 31 * 32]])


def test_extracted_folder_gives_the_same_split(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    written, ds = cifar10(tmp_path, monkeypatch)
    from_tarball = load_split("cifar10", "train", written.archive.parent, download=False)
    extracted = extract(written, tmp_path / "extracted")
    batches = extracted / "cifar-10-batches-py"
    names = [b.name for b in ds.splits["train"]]
    for path in (extracted, batches):  # the folder holding the extracted folder, or it itself
        split = load_split("cifar10", "train", path, download=False)
        assert split.files == tuple(batches / n for n in names)
        assert split.md5 == from_tarball.md5
        assert np.array_equal(split.images, from_tarball.images)
    # Beside the tarball, the extracted batches are preferred (no gunzip).
    extract(written, written.archive.parent)
    assert locate("cifar10", "test", written.archive.parent) == (
        written.archive.parent / "cifar-10-batches-py" / "test_batch",)
    (batches / "data_batch_3").unlink()  # an incomplete extraction does not serve the split
    with pytest.raises(DatasetError, match="no CIFAR-10 train files there .*cifar-10-python"):
        load_split("cifar10", "train", extracted)
    assert load_split("cifar10", "test", extracted).labels.tolist() == written.labels["test"].tolist()


def test_wrong_checksums_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    written = write_cifar(tmp_path / "data", DATASETS["cifar10"],
                          {"train": (1,) * 5, "test": (2,)})
    # The real registry entry: a tarball written here is not the published one, by its size.
    with pytest.raises(DatasetError) as err:
        load_split("cifar10", "test", tmp_path / "data", download=False)
    size = written.archive.stat().st_size
    assert str(err.value) == (f"{written.archive}: {size} bytes, but the published CIFAR-10 "
                              "cifar-10-python.tar.gz is 170498071 bytes")
    ds = DATASETS["cifar10"]
    monkeypatch.setitem(DATASETS, "cifar10", dataclasses.replace(ds, size=size))
    with pytest.raises(DatasetError) as err:  # the published size, not the published content
        load_split("cifar10", "test", tmp_path / "data", download=False)
    assert str(err.value) == (f"{written.archive}: checksum does not match the published "
                              "CIFAR-10 cifar-10-python.tar.gz")
    register(monkeypatch, "cifar10", written)
    batches = extract(written, tmp_path / "x") / "cifar-10-batches-py"
    raw = bytearray((batches / "test_batch").read_bytes())
    raw[-20] ^= 0xFF
    (batches / "test_batch").write_bytes(bytes(raw))
    with pytest.raises(DatasetError, match="test_batch: checksum does not match the published "
                                           "CIFAR-10 test_batch"):
        load_split("cifar10", "test", tmp_path / "x")
    assert load_split("cifar10", "train", tmp_path / "x").images.shape == (5, 32, 32, 3)


def test_offline_message_names_files_and_every_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data"
    monkeypatch.setenv("DSE_DATA_DIR", str(data))
    with pytest.raises(DatasetError) as err:
        load_split("cifar100", "test", mirrors=[closed_port_url()])
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("CIFAR-100 test files not found: put cifar-100-python.tar.gz "
                              "(or its extracted cifar-100-python/ folder)")
    for folder in (data / "cifar100", data, cache_dir() / "datasets" / "cifar100"):
        assert f"{folder}," in message or f"{folder})" in message
    assert "download failed: http://127.0.0.1:" in message
    with pytest.raises(DatasetError, match=r"\(download disabled\)$"):
        load_split("cifar10", "train", download=False)
    assert locate("cifar10", "train") is None and find_folder("cifar10") is None
    with pytest.raises(DatasetError, match=f"{tmp_path}: no CIFAR-10 test files there"):
        load_split("cifar10", "test", tmp_path)


def test_download_into_cache_and_corrupt_mirror(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, http_root: tuple[Path, str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    root, url = http_root
    written = write_cifar(root / "good", DATASETS["cifar10"], {"train": (1,) * 5, "test": (3,)})
    register(monkeypatch, "cifar10", written)
    bad = root / "bad"
    bad.mkdir()
    raw = bytearray(written.archive.read_bytes())
    raw[100] ^= 0xFF
    (bad / written.archive.name).write_bytes(bytes(raw))
    cached = cache_dir() / "datasets" / "cifar10"
    with pytest.raises(DatasetError, match="bad/cifar-10-python.tar.gz: checksum does not match"):
        load_split("cifar10", "test", mirrors=[url + "bad/"])
    assert list(cached.iterdir()) == []  # nothing unverified kept, no .part left
    split = load_split("cifar10", "test", mirrors=[url + "bad/", url + "good/"])
    assert split.files == (cached / "cifar-10-python.tar.gz",)
    assert split.labels.tolist() == written.labels["test"].tolist()
    assert "cifar-10-python.tar.gz" in capsys.readouterr().err  # the progress bar
    again = load_split("cifar10", "train", mirrors=[closed_port_url()])  # from the cache now
    assert again.files == split.files and len(again.labels) == 5


class Reduce:
    """Pickles as a call of ``os.system``: what a malicious batch would hold."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[object, tuple[str]]:
        import os

        return os.system, (self.command,)


def forbidden_global(marker: Path) -> bytes:
    import pickle

    return pickle.dumps({b"data": Reduce(f"touch {marker}"), b"labels": []}, protocol=4)


@pytest.mark.parametrize(
    ("batch", "message"),
    [
        (py2_pickle([1, 2]), "a CIFAR batch is a dict, found list"),
        (py2_pickle({b"data": np.zeros((2, 3071), np.uint8), b"labels": [0, 1]}),
         r"b'data' is uint8 \(2, 3071\), expected uint8 \(N, 3072\)"),
        (py2_pickle({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}),
         "2 images but 1 labels"),
        (py2_pickle({b"data": np.zeros((1, 3072), np.uint8), b"fine_labels": [0]}),
         "b'labels' is not a list of integers"),
        (py2_pickle({b"data": np.zeros((1, 3072), np.uint8), b"labels": [10]}),
         r"labels outside 0\.\.9"),
        (py2_pickle({b"data": np.zeros((1, 3072), np.uint8), b"labels": [0]})[:-30],
         "not a CIFAR batch pickle"),
    ],
)
def test_malformed_batch_names_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, batch: bytes, message: str
) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    (folder / "test_batch").write_bytes(batch)
    ds = DATASETS["cifar10"]
    monkeypatch.setitem(DATASETS, "cifar10", dataclasses.replace(
        ds, splits={**ds.splits, "test": (Batch("test_batch", md5(batch)),)}))
    with pytest.raises(DatasetError, match=message) as err:
        load_split("cifar10", "test", tmp_path)
    assert str(err.value).startswith(str(folder / "test_batch")) and "\n" not in str(err.value)


def test_pickle_with_a_forbidden_global_is_refused_unrun(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = tmp_path / "ran"
    evil = forbidden_global(marker)
    written = write_cifar(tmp_path / "data", DATASETS["cifar10"], {"train": (1,) * 5, "test": (1,)})
    written.members["test_batch"] = evil
    with tarfile.open(written.archive, "w:gz") as tar:  # the tarball again, with the evil batch
        for name, raw in written.members.items():
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    register(monkeypatch, "cifar10", written)
    with pytest.raises(DatasetError, match=r"refused global (posix|os|nt)\.system") as err:
        load_split("cifar10", "test", tmp_path / "data")
    assert f"{written.archive}:cifar-10-batches-py/test_batch" in str(err.value)
    assert not marker.exists()
    assert load_split("cifar10", "train", tmp_path / "data").images.shape == (5, 32, 32, 3)


def test_archive_without_the_split_or_not_a_tarball(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    written = write_cifar(tmp_path / "data", DATASETS["cifar10"], {"train": (1,) * 5, "test": (1,)})
    with tarfile.open(written.archive, "w:gz") as tar:  # the batches at the top, not in the folder
        for name, raw in written.members.items():
            info = tarfile.TarInfo(name)
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    register(monkeypatch, "cifar10", written)
    with pytest.raises(DatasetError, match="no member cifar-10-batches-py/test_batch in the"):
        load_split("cifar10", "test", tmp_path / "data")
    written.archive.write_bytes(b"\x1f\x8b" + bytes(100))  # a gzip header, then garbage
    register(monkeypatch, "cifar10", written)
    with pytest.raises(DatasetError, match=f"{written.archive}: unreadable tar.gz"):
        load_split("cifar10", "test", tmp_path / "data")


# --- files of another size than the published ones: refused before they are read -------------


def official_folder(tmp_path: Path, ds: CifarDataset, sizes: dict[str, int]) -> Path:
    """The extracted folder of ``ds`` (the real registry entry), each batch a sparse file of
    ``sizes[name]`` bytes (default 100): the sizes cost no disk."""
    folder = tmp_path / ds.folder
    folder.mkdir(parents=True)
    for batches in ds.splits.values():
        for batch in batches:
            with (folder / batch.name).open("wb") as f:
                f.truncate(sizes.get(batch.name, 100))
    return folder


def test_a_batch_of_another_size_is_refused_before_its_checksum(tmp_path: Path) -> None:
    folder = official_folder(tmp_path / "a", DATASETS["cifar10"], {})
    with pytest.raises(DatasetError) as err:
        load_split("cifar10", "test", folder)
    assert str(err.value) == (f"{folder / 'test_batch'}: 100 bytes, but the published CIFAR-10 "
                              "test_batch is 31035526 bytes")
    folder = official_folder(tmp_path / "b", DATASETS["cifar100"], {"test": 300_000_000})
    with pytest.raises(DatasetError) as err:  # CIFAR-100's sizes are not recorded: the bound
        load_split("cifar100", "test", folder)
    assert str(err.value) == (f"{folder / 'test'}: 300000000 bytes, more than any published "
                              "CIFAR batch (at most 200000000)")


def test_a_tarball_of_another_size_is_refused_unhashed(tmp_path: Path) -> None:
    archive = tmp_path / "cifar-100-python.tar.gz"
    with archive.open("wb") as f:
        f.truncate(1 << 30)  # sparse: hashing it would read a GiB
    start = time.monotonic()
    with pytest.raises(DatasetError) as err:
        load_split("cifar100", "train", tmp_path, download=False)
    assert str(err.value) == (f"{archive}: 1073741824 bytes, but the published CIFAR-100 "
                              "cifar-100-python.tar.gz is 169001437 bytes")
    assert time.monotonic() - start < 1


@pytest.mark.parametrize(("dataset", "batch", "message"), [
    ("cifar10", "data_batch_1", "but the published CIFAR-10 data_batch_1 is 31035704 bytes"),
    ("cifar100", "train", "more than any published CIFAR batch (at most 200000000)"),
])
def test_the_command_line_refuses_an_8_gb_batch_unread(
    tmp_path: Path, dataset: str, batch: str, message: str
) -> None:
    """An 8 GB sparse batch was read whole (8.3 GB, 71 s) before its checksum refused it: now
    exit 2 and one ``dse: error:`` line at once, nothing written, far under 1 GiB of memory."""
    folder = official_folder(tmp_path, DATASETS[dataset], {batch: 8 << 30})
    out = tmp_path / "out.onnx"
    done = run_dse(tmp_path, "zoo", "export", "lenet5", "--dataset", dataset, "--path",
                   str(folder), "-o", str(out))
    assert refused_in_one_line(done) == f"{folder / batch}: 8589934592 bytes, {message}"
    assert not out.exists() and not (tmp_path / "cache").exists()
