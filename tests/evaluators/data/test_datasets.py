"""The IDX loader on the real MNIST / Fashion-MNIST files: search order, checksums, downloads."""

from __future__ import annotations

import gzip
import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest

from circuits.cache import cache_dir
from evaluators.data import DATASETS, DatasetError, find_folder, load_split, locate
from evaluators.data.idx import IdxDataset, IdxFile, IdxPair
from tests.conftest import closed_port_url

DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")
TEST_FILES = ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
TRAIN10K_FILES = ("train10k-images-idx3-ubyte.gz", "train10k-labels-idx1-ubyte.gz")


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Never read or write the developer's real cache or data folder."""
    monkeypatch.setenv("DSE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("DSE_DATA_DIR", raising=False)


def copy_files(src: Path, dst: Path, names: tuple[str, ...]) -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copyfile(src / name, dst / name)
    return dst


def flip_byte(path: Path, offset: int = 1000) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_cache_dir_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert cache_dir() == tmp_path / "cache"
    monkeypatch.delenv("DSE_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "dse"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "dse"


def test_mnist_test_split_from_data_dir(
    mnist_dir: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    data = copy_files(mnist_dir, tmp_path / "data", TEST_FILES)
    monkeypatch.setenv("DSE_DATA_DIR", str(data))
    split = load_split("mnist", "test", download=False)
    assert split.images.shape == (10000, 28, 28, 1) and split.images.dtype == np.uint8
    assert split.labels.shape == (10000,) and split.labels.dtype == np.int64
    assert set(np.unique(split.labels)) == set(range(10))
    assert split.images.max() == 255 and split.images.min() == 0
    assert split.files == (data / TEST_FILES[0], data / TEST_FILES[1])
    assert locate("mnist", "test") == split.files


def test_train_falls_back_to_train10k_and_prefers_full_set(
    mnist_dir: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    if not all((mnist_dir / name).is_file() for name in TRAIN10K_FILES):
        pytest.skip(f"{mnist_dir} holds the full training set, not the 10k subset")
    copy_files(mnist_dir, tmp_path / "data" / "mnist", TRAIN10K_FILES + TEST_FILES)
    monkeypatch.setenv("DSE_DATA_DIR", str(tmp_path / "data"))  # found in DSE_DATA_DIR/mnist
    train = load_split("mnist", "train", download=False)
    test = load_split("mnist", "test", download=False)
    assert train.images.shape == (10000, 28, 28, 1) and len(train.labels) == 10000
    assert train.files[0].name == TRAIN10K_FILES[0]
    assert set(np.unique(train.labels)) == set(range(10))
    assert train.md5 != test.md5
    # With the full set beside the subset, the full set wins (checked by name only: it is absent).
    both = copy_files(mnist_dir, tmp_path / "both", TRAIN10K_FILES)
    for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"):
        (both / name).touch()
    assert locate("mnist", "train", both) == (
        both / "train-images-idx3-ubyte.gz",
        both / "train-labels-idx1-ubyte.gz",
    )


def test_find_folder_needs_every_split_and_searches_extra_folders_last(
    mnist_dir: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    extra = copy_files(mnist_dir, tmp_path / "extra", tuple(p.name for p in mnist_dir.glob("*.gz")))
    assert find_folder("mnist") is None
    assert find_folder("mnist", [tmp_path / "nothing", extra]) == extra
    data = copy_files(mnist_dir, tmp_path / "data" / "mnist", TEST_FILES)  # no training split
    monkeypatch.setenv("DSE_DATA_DIR", str(tmp_path / "data"))
    assert find_folder("mnist", [extra]) == extra
    copy_files(extra, data, tuple(p.name for p in extra.iterdir()))
    assert find_folder("mnist", [extra]) == data
    with pytest.raises(DatasetError, match="unknown dataset 'cifar'"):
        find_folder("cifar")


def test_explicit_path_wins(
    mnist_dir: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    data = copy_files(mnist_dir, tmp_path / "data", TEST_FILES)
    monkeypatch.setenv("DSE_DATA_DIR", str(data))
    explicit = copy_files(mnist_dir, tmp_path / "explicit", TEST_FILES)
    split = load_split("mnist", "test", explicit, download=False)
    assert split.files[0].parent == explicit
    assert split.md5 == load_split("mnist", "test", download=False).md5


def test_explicit_path_without_files_does_not_fall_through(
    mnist_dir: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("DSE_DATA_DIR", str(mnist_dir))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetError, match="t10k-labels-idx1-ubyte.gz") as err:
        load_split("mnist", "test", empty)
    assert str(empty) in str(err.value)
    with pytest.raises(DatasetError, match=str(empty)):
        locate("mnist", "test", empty)


def test_corrupted_copy_is_refused(mnist_dir: Path, tmp_path: Path) -> None:
    data = copy_files(mnist_dir, tmp_path / "data", TEST_FILES)
    flip_byte(data / TEST_FILES[0])
    with pytest.raises(DatasetError, match="checksum does not match") as err:
        load_split("mnist", "test", data, download=False)
    assert str(data / TEST_FILES[0]) in str(err.value)


def test_recompressed_copy_verifies_by_raw_md5(mnist_dir: Path, tmp_path: Path) -> None:
    """Like Debian's packages: other gz bytes, same content."""
    data = tmp_path / "recompressed"
    data.mkdir()
    for name in TEST_FILES:
        raw = gzip.decompress((mnist_dir / name).read_bytes())
        (data / name).write_bytes(gzip.compress(raw, compresslevel=1, mtime=0))
        assert md5(data / name) != md5(mnist_dir / name)
    split = load_split("mnist", "test", data, download=False)
    assert split.md5 == load_split("mnist", "test", mnist_dir, download=False).md5


def test_another_datasets_file_is_named(mnist_dir: Path) -> None:
    with pytest.raises(DatasetError, match="checksum does not match.*it is the MNIST file"):
        load_split("fashion_mnist", "test", mnist_dir, download=False)


def test_fashion_mnist_from_debian_package() -> None:
    if not all((DEBIAN_FASHION / name).is_file() for name in TEST_FILES):
        pytest.skip(f"{DEBIAN_FASHION} absent (apt install dataset-fashion-mnist)")
    split = load_split("fashion_mnist", "test", download=False)
    assert split.files[0].parent == DEBIAN_FASHION
    assert split.images.shape == (10000, 28, 28, 1) and split.images.dtype == np.uint8
    assert np.bincount(split.labels).tolist() == [1000] * 10


def test_download_into_empty_cache(
    mnist_dir: Path, http_root: tuple[Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    root, url = http_root
    copy_files(mnist_dir, root, TEST_FILES)
    assert locate("mnist", "test") is None
    split = load_split("mnist", "test", mirrors=[url])
    cached = cache_dir() / "datasets" / "mnist"
    assert split.files == (cached / TEST_FILES[0], cached / TEST_FILES[1])
    assert sorted(p.name for p in cached.iterdir()) == sorted(TEST_FILES)  # no leftover .part
    for name in TEST_FILES:
        assert md5(cached / name) == md5(mnist_dir / name)
    assert TEST_FILES[0] in capsys.readouterr().err  # the progress bar
    again = load_split("mnist", "test", mirrors=[closed_port_url()])  # now from the cache
    assert again.md5 == split.md5


def test_corrupted_mirror_is_skipped(mnist_dir: Path, http_root: tuple[Path, str]) -> None:
    root, url = http_root
    bad = copy_files(mnist_dir, root / "bad", TEST_FILES)
    flip_byte(bad / TEST_FILES[0])
    flip_byte(bad / TEST_FILES[1], offset=100)
    copy_files(mnist_dir, root / "good", TEST_FILES)
    split = load_split("mnist", "test", mirrors=[url + "bad/", url + "good"])
    assert len(split.labels) == 10000
    cached = cache_dir() / "datasets" / "mnist"
    assert sorted(p.name for p in cached.iterdir()) == sorted(TEST_FILES)
    (cached / TEST_FILES[0]).unlink()
    with pytest.raises(DatasetError, match="bad/t10k-images-idx3-ubyte.gz: checksum does not"):
        load_split("mnist", "test", mirrors=[url + "bad/"])
    assert not (cached / TEST_FILES[0]).exists()


def test_offline_without_files_says_what_to_put_where() -> None:
    with pytest.raises(DatasetError) as err:
        load_split("mnist", "test", mirrors=[closed_port_url()])
    message = str(err.value)
    assert "\n" not in message
    assert all(name in message for name in TEST_FILES)
    assert str(cache_dir() / "datasets" / "mnist") in message and "DSE_DATA_DIR" in message
    assert "download failed" in message
    with pytest.raises(DatasetError, match="download disabled"):
        load_split("mnist", "test", download=False)
    assert locate("mnist", "test") is None


def test_unknown_names() -> None:
    with pytest.raises(DatasetError, match="unknown dataset 'cifar'"):
        load_split("cifar", "test")
    with pytest.raises(DatasetError, match="unknown MNIST split 'val'"):
        locate("mnist", "val")


def write_idx(path: Path, magic: int, dims: tuple[int, ...], payload: bytes) -> IdxFile:
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in dims)
    path.write_bytes(gzip.compress(header + payload))
    return IdxFile(path.name, dims[0], md5(path))


@pytest.mark.parametrize(
    ("magic", "dims", "message"),
    [(0x0801, (2, 28, 28), "bad IDX magic number"), (0x0803, (3, 28, 28), "IDX dimensions")],
)
def test_malformed_idx_names_the_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, magic: int, dims: tuple[int, ...], message: str
) -> None:
    images = write_idx(tmp_path / "img.gz", magic, dims, bytes(28 * 28 * dims[0]))
    labels = write_idx(tmp_path / "lbl.gz", 0x0801, (2,), bytes(2))
    pair = IdxPair(IdxFile(images.name, 2, images.gz_md5), labels)
    tiny = IdxDataset("tiny", "Tiny", {"test": (pair,)}, mirrors=())
    monkeypatch.setitem(DATASETS, "tiny", tiny)
    with pytest.raises(DatasetError, match=message) as err:
        load_split("tiny", "test", tmp_path)
    assert str(tmp_path / "img.gz") in str(err.value)
