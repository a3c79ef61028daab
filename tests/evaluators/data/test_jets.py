"""The hls4ml tutorial's jet tagger and its data set (issue 16): OpenML 42468's ARFF file found,
downloaded (from a real local HTTP server speaking OpenML's API) or refused in one line, split
and standardized exactly as the tutorial's sklearn code does; the ``jet_dnn`` registry entry
built and trained with its L1 kernel penalty; a small study on jets run end to end.

There is no network here: every file is a synthetic stand-in in the official format (the real
attribute names and class labels, a few thousand class-dependent jets), read by the real code."""

from __future__ import annotations

import gzip
import hashlib
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import LabelEncoder, StandardScaler

import dse
from circuits.cache import cache_dir
from dse.cli import main
from evaluators.data import DATASETS, DatasetError, class_count, find_folder, load_split, locate
from evaluators.data.openml import JET_FEATURES
from evaluators.networks import ort_exactness, zoo
from evaluators.networks.prepared import TrainingSettings, train_model
from evaluators.networks.training import train_classifier
from tests.conftest import MINI_FREE, closed_port_url

FILE = "hls4ml_lhc_jets_hlf.arff"
ROWS = 1500
HEADER_LABELS = ("g", "q", "w", "z", "t")  # the issue's order; the classes are sorted (g,q,t,w,z)
PUBLISHED = DATASETS["jets"]


def jets_arff(n: int = ROWS, seed: int = 0, *, quoted: bool = False) -> tuple[str, np.ndarray,
                                                                              np.ndarray]:
    """An ARFF text in OpenML's layout, its float64 features and its class names. Each class
    shifts the features by its own offsets, so a network can learn it; values are written with
    repr, so they parse back exactly."""
    rng = np.random.default_rng(seed)
    names = rng.choice(np.array(HEADER_LABELS), n)
    offsets = rng.normal(0, 1.5, (5, 16))
    x = rng.normal(0, 1, (n, 16)) + offsets[[HEADER_LABELS.index(c) for c in names]]
    x = x * rng.uniform(0.1, 50, 16) + rng.uniform(-5, 100, 16)  # unscaled, as the real ones
    q = "'" if quoted else ""
    lines = ["% synthetic stand-in for OpenML 42468", "@relation hls4ml_lhc_jets_hlf", ""]
    lines += [f"@attribute {q}{f}{q} numeric" for f in JET_FEATURES]
    lines += ["@attribute class {" + ",".join(f"{q}{c}{q}" for c in HEADER_LABELS) + "}", "",
              "@data"]
    lines += [",".join(map(repr, row.tolist())) + f",{q}{c}{q}" for row, c in zip(x, names)]
    return "\n".join(lines) + "\n", x, names


def tutorial_splits(x: np.ndarray, names: np.ndarray):
    """The hls4ml tutorial's preprocessing, verbatim apart from the one-hot encoding."""
    y = LabelEncoder().fit_transform(names)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.2, random_state=42)
    scaler = StandardScaler()
    return scaler.fit_transform(x_train), scaler.transform(x_test), y_train, y_test


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A private cache and no data folder; the registry expects the stand-in's instance count
    (the published file has 830,000)."""
    monkeypatch.setenv("DSE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("DSE_DATA_DIR", raising=False)
    monkeypatch.setitem(DATASETS, "jets", replace(PUBLISHED, rows=ROWS))


@pytest.fixture(scope="module")
def arff() -> tuple[str, np.ndarray, np.ndarray]:
    return jets_arff()


@pytest.fixture
def folder(tmp_path: Path, arff) -> Path:
    data = tmp_path / "jets"
    data.mkdir()
    (data / FILE).write_text(arff[0])
    return data


def test_the_published_file_is_what_the_registry_expects():
    jets = PUBLISHED
    assert (jets.data_id, jets.file, jets.rows, jets.classes) == (42468, FILE, 830_000, 5)
    assert jets.labels == ("g", "q", "t", "w", "z") and len(jets.features) == 16
    assert class_count("jets") == 5


def test_splits_are_the_tutorials_bit_for_bit(folder, arff):
    """sklearn's LabelEncoder, train_test_split(0.2, random_state=42) and StandardScaler fitted
    on the training part: the same float32 features, labels and order."""
    _, x, names = arff
    train, test = load_split("jets", "train", folder), load_split("jets", "test", folder)
    x_train, x_test, y_train, y_test = tutorial_splits(x, names)
    assert train.images.shape == (1200, 16) and test.images.shape == (300, 16)
    assert train.images.dtype == np.float32 and train.labels.dtype == np.int64
    np.testing.assert_array_equal(train.images, x_train.astype(np.float32))
    np.testing.assert_array_equal(test.images, x_test.astype(np.float32))
    np.testing.assert_array_equal(train.labels, y_train)
    np.testing.assert_array_equal(test.labels, y_test)
    assert train.classes == test.classes == 5 and train.files == (folder / FILE,)
    assert train.md5 != test.md5 and load_split("jets", "train", folder).md5 == train.md5
    assert np.abs(train.images.mean(0)).max() < 1e-5  # standardized on the training part


def test_gzipped_files_and_quoted_names_read_the_same(folder, tmp_path):
    text, _, _ = jets_arff(quoted=True)
    other = tmp_path / "gz"
    other.mkdir()
    (other / (FILE + ".gz")).write_bytes(gzip.compress(text.encode()))
    assert locate("jets", "test", other) == (other / (FILE + ".gz"),)
    assert load_split("jets", "test", other).md5 == load_split("jets", "test", folder).md5


def test_found_in_the_data_folder_and_the_cache(folder, monkeypatch, tmp_path):
    assert locate("jets", "train") is None and find_folder("jets") is None
    monkeypatch.setenv("DSE_DATA_DIR", str(folder.parent))  # found in DSE_DATA_DIR/jets
    assert locate("jets", "train") == (folder / FILE,)
    assert find_folder("jets") == folder
    monkeypatch.delenv("DSE_DATA_DIR")
    cached = cache_dir() / "datasets" / "jets"
    cached.mkdir(parents=True)
    (cached / FILE).write_bytes((folder / FILE).read_bytes())
    assert load_split("jets", "test").files == (cached / FILE,)


def serve_openml(root: Path, text: str, md5: str | None = None, form: str = "ARFF") -> None:
    """What OpenML's API answers for data set 42468: a JSON description naming the file."""
    description = root / "api" / "v1" / "json" / "data" / "42468"
    description.parent.mkdir(parents=True)
    description.write_text(json.dumps({"data_set_description": {
        "id": "42468", "name": "hls4ml_lhc_jets_hlf", "format": form, "file_id": "987",
        "md5_checksum": md5 or hashlib.md5(text.encode()).hexdigest()}}))
    download = root / "data" / "v1" / "download" / "987"
    download.parent.mkdir(parents=True)
    download.write_text(text)


def test_download_from_openml(http_root, arff, folder, capsys):
    root, url = http_root
    serve_openml(root, arff[0])
    split = load_split("jets", "train", mirrors=[url])
    cached = cache_dir() / "datasets" / "jets"
    assert split.files == (cached / FILE,) and [p.name for p in cached.iterdir()] == [FILE]
    assert (cached / FILE).read_text() == arff[0]
    assert FILE in capsys.readouterr().err  # the progress bar
    assert split.md5 == load_split("jets", "train", folder).md5
    again = load_split("jets", "test", mirrors=[closed_port_url()])  # from the cache now
    assert again.files == split.files


@pytest.mark.parametrize("md5, form, message", [
    ("0" * 32, "ARFF", r"data/v1/download/987: checksum [0-9a-f]{32} does not match the md5 "
                       r"0{32} OpenML lists"),
    (None, "Sparse_ARFF", r"api/v1/json/data/42468: OpenML 42468 is in Sparse_ARFF format"),
])
def test_a_bad_download_is_refused_and_not_kept(http_root, arff, md5, form, message):
    root, url = http_root
    serve_openml(root, arff[0], md5, form)
    with pytest.raises(DatasetError, match=message) as err:
        load_split("jets", "train", mirrors=[url])
    assert "\n" not in str(err.value)
    assert not any((cache_dir() / "datasets" / "jets").iterdir())


def test_offline_the_error_names_the_url_and_the_folder():
    with pytest.raises(DatasetError) as err:
        load_split("jets", "train", mirrors=[closed_port_url()])
    message = str(err.value)
    assert "\n" not in message and "download failed" in message
    for part in ("https://www.openml.org/d/42468", "https://api.openml.org/api/v1/json/data/42468",
                 FILE, str(cache_dir() / "datasets" / "jets"), "$DSE_DATA_DIR"):
        assert part in message, part
    with pytest.raises(DatasetError, match="download disabled"):
        load_split("jets", "test", download=False)


def edited(text: str, old: str, new: str, count: int = 1) -> str:
    assert old in text
    return text.replace(old, new, count)


def malformed(text: str) -> dict[str, tuple[str | bytes, str]]:
    first_row = text.index("@data\n") + len("@data\n")
    second_row = text.index("\n", first_row) + 1
    return {
        "renamed feature": (edited(text, "@attribute zlogz", "@attribute j_zlogz"),
                            r"not the hls4ml LHC jets ARFF file of OpenML 42468: expected the "
                            r"numeric attributes zlogz, .*found j_zlogz numeric"),
        "other classes": (edited(text, "{g,q,w,z,t}", "{g,q,w,z}"),
                          r"and a nominal class \{g,q,t,w,z\}"),
        "fewer instances": (text[: text.rindex("\n", 0, -1) + 1],
                            f"{ROWS - 1} instances, expected the published {ROWS}"),
        "text value": (text[:first_row] + "abc" + text[text.index(",", first_row):],
                       r"malformed ARFF data \(.*abc"),
        "missing value": (text[:first_row] + "?" + text[text.index(",", first_row):],
                          "instance 0 has a missing value or a class outside g, q, t, w, z"),
        "extra value": (text[:first_row] + "1.0," + text[first_row:],
                        r"malformed ARFF data \(18 values on the first data line, expected 17\)"),
        "extra value later": (text[:second_row] + "1.0," + text[second_row:],
                              r"malformed ARFF data \(.*Expected 17 fields in line 2, saw 18\)"),
        "no data line": (text[:first_row - len("@data\n")], "no @data line"),
        "not ARFF": (b"\x89PNG\r\n\x1a\n\xff\xfe" * 50, "not a readable ARFF file"),
    }


@pytest.mark.parametrize("case", ["renamed feature", "other classes", "fewer instances",
                                  "text value", "missing value", "extra value",
                                  "extra value later", "no data line", "not ARFF"])
def test_malformed_files_are_one_line_errors(case, arff, tmp_path):
    content, message = malformed(arff[0])[case]
    path = tmp_path / FILE
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(DatasetError, match=message) as err:
        load_split("jets", "train", tmp_path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_unknown_split_and_a_folder_without_the_file(tmp_path):
    with pytest.raises(DatasetError, match="unknown hls4ml LHC jets split 'val'"):
        load_split("jets", "val")
    with pytest.raises(DatasetError, match=f"no hls4ml LHC jets test files there "
                                           rf"\(expected {FILE} or {FILE}.gz\)"):
        load_split("jets", "test", tmp_path)


# --- the jet_dnn registry entry ----------------------------------------------------------------


def test_jet_dnn_is_the_issues_network():
    """16 - 32 - 32 - 32 - 5 with ReLU, Keras's initialization, softmax in eval mode only."""
    model = zoo.build_model("jet_dnn", (16,), 5, seed=0)
    assert zoo.layer_macs("jet_dnn", (16,), 5) == {"fc1": 512, "fc2": 1024, "fc3": 1024,
                                                   "output": 160}
    assert zoo.parameters("jet_dnn", (16,), 5) == 16 * 32 + 32 + 2 * (32 * 32 + 32) + 32 * 5 + 5
    assert torch.all(model.fc1.bias == 0) and model.fc1.weight.abs().max() <= (3 / 16) ** 0.5
    entry = zoo.architecture("jet_dnn")
    assert entry.l1 == 1e-4 and not entry.images_only
    x = torch.randn(4, 16)
    probabilities = model.eval()(x)
    torch.testing.assert_close(probabilities.sum(1), torch.ones(4))
    torch.testing.assert_close(probabilities, torch.softmax(model.train()(x), 1))


def test_jet_dnn_trains_on_the_stand_in_with_its_l1_penalty(folder):
    train, test = load_split("jets", "train", folder), load_split("jets", "test", folder)

    def trained(l1: float) -> torch.nn.Module:
        model = zoo.build_model("jet_dnn", (16,), 5, seed=1)
        return train_classifier(model, train.images, train.labels, epochs=4, batch_size=64,
                                learning_rate=0.01, augment=True, seed=1, l1=l1)

    model = trained(zoo.architecture("jet_dnn").l1)
    with torch.no_grad():
        accuracy = (model(torch.from_numpy(test.images)).argmax(1).numpy() == test.labels).mean()
    assert accuracy > 0.6  # chance is 0.2

    def kernel_l1(m: torch.nn.Module) -> float:
        return sum(float(p.detach().abs().sum()) for n, p in m.named_parameters()
               if n.endswith("weight"))

    assert kernel_l1(trained(0.01)) < 0.8 * kernel_l1(trained(0.0))
    # a study trains the registry network with its own penalty
    settings = TrainingSettings(arch="jet_dnn", epochs=4, batch_size=64, learning_rate=0.01,
                                augment=True, seed=1, calibration_size=64)
    studied = train_model(settings, train.images, train.labels, 5)
    for a, b in zip(studied.state_dict().values(), model.state_dict().values()):
        assert torch.equal(a, b)


# --- a study on jets --------------------------------------------------------------------------


def test_a_jets_study_runs_end_to_end(folder, tmp_path, capsys):
    """``python -m dse run`` on a study file naming ``dataset: {name: jets}`` and
    ``model: {arch: jet_dnn}``: the exact multiplier scores what onnxruntime's int8 model
    scores on the standardized test features."""
    out = tmp_path / "study"
    study = {
        "name": "jets-mini", "output": str(out), "seed": 3,
        "dataset": {"name": "jets", "path": str(folder), "test_size": 200, "download": False},
        "model": {"arch": "jet_dnn", "epochs": 3, "batch_size": 64, "learning_rate": 0.01},
        "quantization": {"calibration_size": 128},
        "space": {"type": "appaxo36", "free": MINI_FREE},
        "strategy": {"type": "random"},
        "budget": {"trials": 2},
    }
    path = tmp_path / "jets.yaml"
    path.write_text(yaml.safe_dump(study))
    assert main(["run", str(path), "--quiet"]) == 0, capsys.readouterr().err
    trials = dse.load_study(out).trials
    assert len(trials) == 3 and set(trials["state"]) == {"COMPLETE"}
    report = json.loads((out / "network" / "network.json").read_text())
    assert report["arch"] == "jet_dnn" and report["input_shape"] == [16] and report["classes"] == 5
    assert report["macs_per_image"] == 512 + 1024 + 1024 + 160
    test = load_split("jets", "test", folder)
    session = ort_exactness.session(out / "network" / "int8.onnx")
    probabilities = session.run(None, {"input": test.images[:200]})[0]
    baseline = trials[trials["role"] == "baseline"].iloc[0]
    assert baseline["accuracy"] == pytest.approx((probabilities.argmax(1) ==
                                                  test.labels[:200]).mean())
    assert baseline["accuracy"] > 0.5
