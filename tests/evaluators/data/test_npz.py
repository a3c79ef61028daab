"""A user's own .npz data through ``load_split("npz", split, path)``: layouts, labels, errors,
and hostile files (forged headers, zip bombs, absurd labels) refused in one line before any
allocation. The helpers at the top also serve the CIFAR and checkpoint tests: hostile zip
archives written in milliseconds, and ``python -m dse`` run with bounded memory."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest

from evaluators.data import DatasetError, class_count, find_folder, load_split, locate, npz
from tests.conftest import REPO

ADDRESS_SPACE = 3 << 30
"""The address space of a ``dse`` child reading a hostile file (its imports take about 1 GiB):
a loader that allocates what the file declares fails there at once, not in the machine's RAM."""

PEAK = 1 << 30
"""The most resident memory a refusal may take (imports included)."""


def deflated(prefix: bytes, zeros: int) -> bytes:
    """Raw deflate of ``prefix`` then ``zeros`` zero bytes: one compressed MiB of zeros repeated
    (a full flush makes the blocks independent), so gigabytes cost milliseconds."""
    mib = 1 << 20
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    head = c.compress(prefix) + c.flush(zlib.Z_FULL_FLUSH)
    block = c.compress(bytes(mib)) + c.flush(zlib.Z_FULL_FLUSH) if zeros >= mib else b""
    return head + block * (zeros // mib) + c.compress(bytes(zeros % mib)) + c.flush()


def write_zip(path: Path, members: dict[str, tuple[bytes, int]]) -> Path:
    """A zip archive of deflated members, each ``(prefix, zeros)``, sizes in zip64 fields. A
    member with zeros keeps CRC 0: readers check it only once they have unpacked it all."""
    local, central = bytearray(), bytearray()
    for name, (prefix, zeros) in members.items():
        data, raw = deflated(prefix, zeros), name.encode()
        crc = 0 if zeros else zlib.crc32(prefix)
        extra = struct.pack("<HHQQ", 1, 16, len(prefix) + zeros, len(data))
        central += struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 45, 45, 0, 8, 0, 0x21, crc,
                               0xFFFFFFFF, 0xFFFFFFFF, len(raw), len(extra), 0, 0, 0, 0,
                               len(local)) + raw + extra
        local += struct.pack("<4s5H3L2H", b"PK\x03\x04", 45, 0, 8, 0, 0x21, crc, 0xFFFFFFFF,
                             0xFFFFFFFF, len(raw), len(extra)) + raw + extra + data
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, len(members), len(members),
                      len(central), len(local), 0)
    path.write_bytes(bytes(local + central + end))
    return path


def npy(array: np.ndarray) -> bytes:
    out = io.BytesIO()
    np.save(out, array)
    return out.getvalue()


def npy_header(dtype: str, shape: tuple[int, ...]) -> bytes:
    """A .npy header alone: the array it declares is not there."""
    out = io.BytesIO()
    np.lib.format.write_array_header_1_0(out, {"descr": np.lib.format.dtype_to_descr(
        np.dtype(dtype)), "fortran_order": False, "shape": shape})
    return out.getvalue()


@dataclasses.dataclass
class Finished:
    """A ``dse`` child's exit status, output and peak resident memory."""

    returncode: int
    stdout: str
    stderr: str
    peak: int


_BOUNDED_DSE = """
import atexit, resource, runpy, sys
_, limit, report, *args = sys.argv
resource.setrlimit(resource.RLIMIT_AS, (int(limit), int(limit)))
def peak():
    with open("/proc/self/status") as status, open(report, "w") as out:
        out.write(next(line.split()[1] for line in status if line.startswith("VmHWM:")))
atexit.register(peak)
sys.argv = ["dse", *args]
runpy.run_module("dse", run_name="__main__", alter_sys=True)
"""
"""``python -m dse`` within an address space, writing its peak resident memory (KiB) at exit:
measured inside, as the child's own (a fork's ru_maxrss counts the parent's pages too)."""


def run_dse(tmp_path: Path, *args: str, timeout: float = 120) -> Finished:
    """``python -m dse ARGS`` within ``ADDRESS_SPACE``, its cache and data folders in
    ``tmp_path``."""
    env = {**os.environ, "DSE_CACHE_DIR": str(tmp_path / "cache"),
           "DSE_DATA_DIR": str(tmp_path / "no-data")}
    peak = tmp_path / "dse.peak"
    done = subprocess.run([sys.executable, "-c", _BOUNDED_DSE, str(ADDRESS_SPACE), str(peak),
                           *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)
    kib = int(peak.read_text()) if peak.is_file() else 1 << 40  # killed: no bound shown
    return Finished(done.returncode, done.stdout, done.stderr, kib * 1024)


def refused_in_one_line(done: Finished) -> str:
    """The ``dse: error:`` line of a child that exited 2 without a traceback, within ``PEAK``."""
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert [line for line in lines if line.startswith("dse: error")] == lines[-1:], lines
    assert done.peak < PEAK, f"peak resident memory {done.peak} bytes"
    return lines[-1].removeprefix("dse: error: ")


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


def test_an_unknown_compression_method_is_refused_on_opening(tmp_path: Path) -> None:
    """A member zipfile cannot decompress (method 99) is one line before any member is read."""
    path = tmp_path / "method.npz"
    np.savez(path, **GOOD)  # stored members
    raw = bytearray(path.read_bytes())
    for signature, offset in ((b"PK\x03\x04", 8), (b"PK\x01\x02", 10)):
        start = raw.find(signature)
        struct.pack_into("<H", raw, start + offset, 99)
    path.write_bytes(bytes(raw))
    with pytest.raises(DatasetError, match="uses compression method 99; expected one of stored"):
        load_split("npz", "train", path)


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


# --- hostile files: refused from the headers, before anything is allocated --------------------


def members(**changes: bytes) -> dict[str, tuple[bytes, int]]:
    """GOOD's members as .npy bytes, with ``changes`` (key: member bytes) replacing some."""
    arrays = {k: npy(v) for k, v in GOOD.items()} | changes
    return {f"{k}.npy": (v, 0) for k, v in arrays.items()}


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"x_train": npy_header("u1", (10**6, 1000, 100))},
         r"x_train declares uint8 \(1000000, 1000, 100\) \(100000000000 bytes\) but holds 0 bytes "
         "of data"),
        ({"y_train": npy(np.array([0, 2**31 - 1]))},
         r"y_train has a label 2147483647 \(index 1\), expected class indices 0 to 999"),
        ({"y_train": npy(np.array([2**62, 0]))}, r"y_train has a label 4611686018427387904 \(index 0"),
        ({"y_test": npy(np.array([2**64 - 1], np.uint64))}, "y_test has a label 18446744073709551615"),
        ({"y_test": npy(np.array([1e300]))}, r"y_test has a label 1e\+300"),
        ({"y_train": npy(np.array([0, 1000]))}, "a label 1000 .*at most 1000 classes"),
        ({"y_test": b"not an array at all"}, "y_test cannot be read .*magic string"),
        ({"x_train": npy_header("u1", (2, -4, 4))}, "x_train cannot be read .*negative dimension"),
        ({"x_train": b"\x93NUMPY\x02\x00" + (3 << 30).to_bytes(4, "little")},
         "x_train cannot be read .*a .npy header of 3221225472 bytes, expected at most 10000"),
        ({"x_train": npy(np.zeros((2, 0, 4), np.uint8))}, r"x_train has shape \(2, 0, 4\): samples"),
    ],
)
def test_hostile_arrays_are_refused_from_their_headers(
    tmp_path: Path, changes: dict[str, bytes], message: str
) -> None:
    path = write_zip(tmp_path / "hostile.npz", members(**changes))
    for load in (lambda: load_split("npz", "train", path), lambda: class_count("npz", path)):
        with pytest.raises(DatasetError, match=message) as err:
            load()
        assert str(err.value).startswith(f"{path}: ") and "\n" not in str(err.value)


def test_labels_up_to_the_class_bound_load(tmp_path: Path) -> None:
    path = write_zip(tmp_path / "many.npz", members(y_train=npy(np.array([0, 999], np.uint16)),
                                                    y_test=npy(np.array([5.0]))))
    split = load_split("npz", "train", path)
    assert split.labels.tolist() == [0, 999] and split.classes == npz.MAX_CLASSES
    assert class_count("npz", path) == 1000


def test_a_zip_bomb_and_a_directory_of_many_entries_are_refused_unread(tmp_path: Path) -> None:
    bomb = write_zip(tmp_path / "bomb.npz", members(
        x_train=npy_header("u1", (10_000_000, 28, 28)), y_train=npy(np.zeros(10_000_000, np.uint8)))
        | {"x_train.npy": (npy_header("u1", (10_000_000, 28, 28)), 7_840_000_000)})
    assert bomb.stat().st_size < 10_000_000  # 7.84 GB once deflated
    start = time.monotonic()
    with pytest.raises(DatasetError, match=r"the arrays declare 7850000\d+ bytes together "
                                           r"\(x_train uint8 \(10000000, 28, 28\) alone "
                                           r"7840000000\), expected at most 2147483648$"):
        load_split("npz", "test", bomb)
    assert time.monotonic() - start < 2
    entries = [b"e%06d" % i for i in range(100_000)]  # a 5 MB central directory, no data
    directory = b"".join(struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 20, 20, 0, 0, 0, 0x21, 0, 0, 0,
                                     len(n), 0, 0, 0, 0, 0, 0) + n for n in entries)
    many = tmp_path / "many.npz"
    many.write_bytes(directory + struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 65535, 65535,
                                             len(directory), 0, 0))
    with pytest.raises(DatasetError, match=f"{many}: not an .npz archive \\(a zip central "
                                           f"directory of {len(directory)} bytes, expected at most "
                                           f"{npz.MAX_DIRECTORY}\\)"):
        class_count("npz", many)


@pytest.mark.parametrize("hostile", ["bomb", "declared", "label"])
def test_the_command_line_refuses_hostile_npz_files_in_one_line(tmp_path: Path, hostile: str) -> None:
    """``dse zoo export --npz`` on an 8 GB zip bomb, a header declaring 100 GB and a label of
    2^31 - 1: exit 2, one ``dse: error:`` line, nothing written, far under 1 GiB of memory."""
    changes = {
        "bomb": {"x_train": npy_header("u1", (10_000_000, 28, 28)),
                 "y_train": npy(np.zeros(10_000_000, np.uint8))},
        "declared": {"x_train": npy_header("u1", (10**6, 1000, 100))},
        "label": {"y_train": npy(np.array([0, 2**31 - 1]))},
    }[hostile]
    files = members(**changes)
    if hostile == "bomb":
        files["x_train.npy"] = (changes["x_train"], 7_840_000_000)
    path = write_zip(tmp_path / f"{hostile}.npz", files)
    out = tmp_path / "out.onnx"
    line = refused_in_one_line(run_dse(tmp_path, "zoo", "export", "fcnn", "--npz", str(path),
                                       "-o", str(out)))
    assert line.startswith(f"{path}: ")
    assert not out.exists() and not (tmp_path / "cache").exists()
