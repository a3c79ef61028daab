"""Shared fixtures: real data found as the product finds it (with ../shared/data, or
$DSE_TEST_DATA, as one more source) and one trained LeNet-5 per test session."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("DSE_TEST_DATA") or REPO.parent / "shared" / "data")


def shared_path(*parts: str) -> Path:
    """A path under the shared data folder, or skip the test saying where it was looked for.
    A Liberty library (``"pdk", file``) is first looked up where the product looks for it."""
    if parts[:1] == ("pdk",) and len(parts) == 2 and (found := product_liberty(parts[1])):
        return found
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared test data {path} is absent (set DSE_TEST_DATA to the data folder)")
    return path


def product_liberty(file: str) -> Path | None:
    """A known Liberty library's file as the product finds it ($DSE_PDK_DIR, the user cache)."""
    from circuits.liberty import KNOWN, LibertyError, find_liberty

    name = next((n for n, f in KNOWN.items() if f == file), None)
    try:
        return find_liberty(name) if name else None
    except LibertyError:
        return None


def dataset_dir(name: str) -> Path:
    """A folder holding every split of a dataset: where the product looks ($DSE_DATA_DIR, the
    user cache, system folders), then the shared data folder, then a download into the user
    cache; skips the test with the reason when none of them has it."""
    from evaluators.data import DatasetError, find_folder, load_split

    found = find_folder(name, [SHARED_DATA / name])
    if found is not None:
        return found
    try:
        for split in ("train", "test"):
            load_split(name, split)
    except DatasetError as err:
        pytest.skip(f"{err} (or set DSE_TEST_DATA to a folder holding {name}/)")
    return find_folder(name)


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    return dataset_dir("mnist")


@pytest.fixture(scope="session")
def session_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A dse cache folder private to this test session (trained networks land here)."""
    return tmp_path_factory.mktemp("dse-cache")


@pytest.fixture
def env(monkeypatch, session_cache: Path) -> dict:
    """The session's cache for this process and the environment for children (``dse`` CLI
    processes that must find the trained network)."""
    monkeypatch.setenv("DSE_CACHE_DIR", str(session_cache))
    return {**os.environ, "DSE_CACHE_DIR": str(session_cache)}


@pytest.fixture(scope="session")
def mnist(mnist_dir: Path):
    """(train, test) MNIST splits: the 10k training subset and the official test set."""
    from evaluators.data import load_split

    return load_split("mnist", "train", mnist_dir), load_split("mnist", "test", mnist_dir)


@pytest.fixture(scope="session")
def lenet(mnist, session_cache: Path):
    """LeNet-5 trained and quantized with the study defaults, as a study would get it."""
    from dse.study_file import ModelSettings, QuantizationSettings
    from evaluators.networks.prepared import TrainingSettings, prepare_network

    m, q = ModelSettings(), QuantizationSettings()
    settings = TrainingSettings(
        arch=m.architecture, epochs=m.epochs, batch_size=m.batch_size, learning_rate=m.learning_rate,
        augment=m.augment, seed=0, calibration_size=q.calibration_size,
    )
    train, test = mnist
    return prepare_network(settings, train, test, cache=session_cache / "networks", log=lambda s: None)


MINI_FREE = "111111100111110000111000000100000000"  # the main study's 16 searched LUTs


def mini_study(mnist_dir: Path, **changes) -> dict:
    """A small study file (LeNet-5 trained 2 epochs, so every test shares one cached network),
    with ``changes`` applied: a dict value updates that section, anything else replaces it."""
    data = {
        "name": "mini",
        "seed": 3,
        "dataset": {"name": "mnist", "path": str(mnist_dir), "test_size": 1000},
        "model": {"epochs": 2},
        "quantization": {"calibration_size": 200},
        "space": {"type": "appaxo36", "free": MINI_FREE},
        "strategy": {"type": "random"},
        "budget": {"trials": 6},
    }
    for key, value in changes.items():
        data[key] = {**data.get(key, {}), **value} if isinstance(value, dict) else value
    return data


def interruptible() -> None:
    """``preexec_fn`` for a child that the test interrupts with SIGINT: a shell running the
    tests in the background (``cmd &`` without job control) passes SIGINT on as ignored."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def closed_port_url() -> str:
    """An http URL on 127.0.0.1 where nothing listens: a mirror that cannot be reached."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


@pytest.fixture
def http_root(tmp_path: Path):
    """A real HTTP server on 127.0.0.1 serving a tmp folder; yields the folder and its URL."""
    import threading
    from functools import partial
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    class QuietHandler(SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

    root = tmp_path / "www"
    root.mkdir()
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(QuietHandler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()
    thread.join()
