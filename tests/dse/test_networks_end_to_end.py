"""Every registry architecture, a user's float ONNX file and a user's quantized ONNX file each
run a small study end to end through the command line (issue 12), and the exact multiplier
scores what onnxruntime's int8 model scores on the same images. The bad models and data of the
issue's "done means" are each refused in one line with exit code 2, nothing stored lost."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import yaml

import dse
from dse.cli import main
from evaluators.data.preprocess import Preprocessing
from evaluators.networks import ort_exactness
from evaluators.networks.quantization import seven_bit_weights
from evaluators.networks.zoo import ARCHITECTURES
from evaluators.runtime.qgraph import QGraph
from tests.conftest import REPO, mini_study

SLOW = {"vgg16", "alexnet_cifar", "resnet56", "resnet20", "mnist_cnn"}  # tens of seconds each


def small_study(folder, mnist_dir, **changes) -> dict:
    """Two AppAxO trials on 64 test digits, the network trained 1 epoch on 256 digits."""
    data = mini_study(mnist_dir, output=str(folder), budget={"trials": 2},
                      quantization={"calibration_size": 64}, **changes)
    data["dataset"].update(train_size=256, test_size=64, download=False)
    data["model"] = {"epochs": 1, **changes.get("model", {})}
    return data


def run_cli(tmp_path, data: dict, *argv: str) -> int:
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(data))
    return main(["run", str(path), "--quiet", *argv])


def exact_matches_onnxruntime(folder, test) -> None:
    """The stored exact baseline's accuracy is onnxruntime's on the study's int8 model."""
    study = dse.load_study(folder)
    trials = study.trials
    assert set(trials["state"]) == {"COMPLETE"} and len(trials) == 3
    session = ort_exactness.session(folder / "network" / "int8.onnx")
    name = session.get_inputs()[0].name
    logits = session.run(None, {name: Preprocessing().apply(test.images[:64])})[0]
    baseline = trials[trials["role"] == "baseline"].iloc[0]
    assert baseline["accuracy"] == pytest.approx((logits.argmax(1) == test.labels[:64]).mean())


@pytest.mark.parametrize("arch", [pytest.param(a, marks=pytest.mark.slow) if a in SLOW else a
                                  for a in ARCHITECTURES])
def test_every_registry_architecture_runs_a_study(arch, tmp_path, mnist_dir, mnist, env):
    folder = tmp_path / arch
    assert run_cli(tmp_path, small_study(folder, mnist_dir, model={"arch": arch})) == 0
    exact_matches_onnxruntime(folder, mnist[1])
    report = yaml.safe_load((folder / "network" / "network.json").read_text())
    assert report["arch"] == arch and report["macs_per_image"] > 0


@pytest.mark.parametrize("scheme, fmt, reduce_range", [("u8s8", "qoperator", False),
                                                      ("u8u8", "qdq", False),
                                                      ("u8s8", "qdq", True)])
def test_a_study_quantizes_in_the_scheme_its_file_names(scheme, fmt, reduce_range, tmp_path,
                                                        mnist_dir, mnist, env):
    """The study file's quantization scheme, format and range reach onnxruntime's quantizer;
    the signed AppAxO multipliers take the uint8 operands and the exact one still scores what
    onnxruntime scores."""
    folder = tmp_path / scheme
    data = small_study(folder, mnist_dir, model={"arch": "lenet5"})
    data["quantization"].update(scheme=scheme, format=fmt, reduce_range=reduce_range)
    assert run_cli(tmp_path, data) == 0
    exact_matches_onnxruntime(folder, mnist[1])
    report = yaml.safe_load((folder / "network" / "network.json").read_text())
    assert report["operand_scheme"] == scheme
    assert (report["settings"]["scheme"], report["settings"]["quant_format"],
            report["settings"]["reduce_range"]) == (scheme, fmt, reduce_range)
    assert seven_bit_weights(QGraph.from_onnx(folder / "network" / "int8.onnx")) == reduce_range
    frozen = yaml.safe_load((folder / "study.yaml").read_text())
    assert ("reduce_range" in frozen["quantization"]) == reduce_range  # old hashes kept


@pytest.fixture(scope="module")
def fcnn_onnx(tmp_path_factory, mnist_dir):
    """A trained float FCNN written by the documented command (``zoo export``)."""
    out = tmp_path_factory.mktemp("zoo") / "fcnn.onnx"
    done = subprocess.run(
        [sys.executable, "-m", "dse", "zoo", "export", "fcnn", "--dataset", "mnist", "--path",
         str(mnist_dir), "--epochs", "1", "--train-size", "512", "-o", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert f"wrote {out}" in done.stdout
    return out


def test_a_user_float_onnx_model_runs_a_study(fcnn_onnx, tmp_path, mnist_dir, mnist, env):
    folder = tmp_path / "user_float"
    data = small_study(folder, mnist_dir, model={"onnx": str(fcnn_onnx)})
    assert run_cli(tmp_path, data) == 0
    exact_matches_onnxruntime(folder, mnist[1])
    report = yaml.safe_load((folder / "network" / "network.json").read_text())
    assert report["route"] == "onnx" and {"float", "int8"} <= set(report)


def test_a_user_quantized_onnx_model_is_used_as_it_is(fcnn_onnx, tmp_path, mnist_dir, mnist, env):
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    images = Preprocessing().apply(mnist[0].images[:64])

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{"input": images}])

        def get_next(self):
            return next(self.batches, None)

    qdq = tmp_path / "fcnn_qdq.onnx"
    quantize_static(str(fcnn_onnx), str(qdq), Reader(), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
    folder = tmp_path / "user_int8"
    assert run_cli(tmp_path, small_study(folder, mnist_dir, model={"onnx": str(qdq)})) == 0
    exact_matches_onnxruntime(folder, mnist[1])
    stored = (folder / "network" / "int8.onnx").read_bytes()
    assert stored == qdq.read_bytes()  # used as it is, not quantized again
    assert "float" not in yaml.safe_load((folder / "network" / "network.json").read_text())


def refused(capsys, code: int) -> str:
    assert code == 2
    lines = [x for x in capsys.readouterr().err.splitlines() if x.startswith("dse: error: ")]
    assert len(lines) == 1, lines
    return lines[0]


def test_bad_models_and_data_are_one_line_errors(fcnn_onnx, tmp_path, mnist_dir, capsys, env):
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(fcnn_onnx.read_bytes()[: 3000])
    wrong_classes = tmp_path / "classes.npz"
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (40, 28, 28), dtype=np.uint8)
    np.savez(wrong_classes, x_train=x, y_train=np.arange(40) % 12, x_test=x[:8],
             y_test=np.arange(8) % 12)
    small_images = tmp_path / "small.npz"
    np.savez(small_images, x_train=x[:, :20, :20], y_train=np.arange(40) % 10,
             x_test=x[:8, :20, :20], y_test=np.arange(8) % 10)
    features = tmp_path / "features.npz"
    f = rng.random((40, 16), dtype=np.float32)
    np.savez(features, x_train=f, y_train=np.arange(40) % 10, x_test=f[:8],
             y_test=np.arange(8) % 10)
    cases = {
        "corrupt": ({"model": {"onnx": str(corrupt)}}, str(corrupt)),
        "classes": ({"model": {"onnx": str(fcnn_onnx)}, "dataset": {"npz": str(wrong_classes)}},
                    "12 classes"),
        "shape": ({"model": {"onnx": str(fcnn_onnx)}, "dataset": {"npz": str(small_images)}},
                  "(1, 20, 20)"),
        "conv net on features": ({"model": {"arch": "resnet8"},
                                  "dataset": {"npz": str(features)}}, "resnet8"),
    }
    for name, (changes, expected) in cases.items():
        folder = tmp_path / name
        data = small_study(folder, mnist_dir, **{k: v for k, v in changes.items()
                                                 if k != "dataset"})
        if "dataset" in changes:
            data["dataset"] = {**changes["dataset"], "train_size": 32}
        line = refused(capsys, run_cli(tmp_path, data))
        assert expected in line, (name, line)
        assert not (folder / "trials.journal").exists() or dse.load_study(folder).trials.empty


def test_a_missing_checkpoint_is_one_line(tmp_path, mnist_dir, capsys, env):
    data = small_study(tmp_path / "ck", mnist_dir,
                       model={"arch": "resnet8", "checkpoint": str(tmp_path / "none.pt")})
    line = refused(capsys, run_cli(tmp_path, data))
    assert "model.checkpoint: file" in line and "none.pt" in line


def test_a_mismatched_checkpoint_is_one_line(tmp_path, mnist_dir, capsys, env):
    import torch

    from evaluators.networks.zoo import build_model

    ck = tmp_path / "lenet.pt"
    torch.save(build_model("lenet5", (1, 28, 28), 10, seed=0).state_dict(), ck)
    data = small_study(tmp_path / "ck", mnist_dir, model={"arch": "resnet8",
                                                          "checkpoint": str(ck)})
    line = refused(capsys, run_cli(tmp_path, data))
    assert str(ck) in line and "resnet8" in line


def test_an_unsupported_op_is_one_line(tmp_path, mnist_dir, capsys, env):
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, 28, 28])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])
    nodes = [helper.make_node("Flatten", ["input"], ["f"]),
             helper.make_node("Gemm", ["f", "w"], ["g"], name="dense"),
             helper.make_node("Hardmax", ["g"], ["logits"], name="odd")]
    w = onnx.numpy_helper.from_array(np.zeros((784, 10), np.float32), "w")
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [y], [w]),
                              opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path / "hardmax.onnx"
    onnx.save(model, path)
    data = small_study(tmp_path / "op", mnist_dir, model={"onnx": str(path)})
    line = refused(capsys, run_cli(tmp_path, data))
    assert "'Hardmax'" in line and "odd" in line and str(path) in line


def test_cifar_study_offline_is_the_one_line_data_error(tmp_path, capsys, env, monkeypatch):
    monkeypatch.setenv("DSE_DATA_DIR", str(tmp_path / "empty"))
    data = yaml.safe_load((REPO / "studies" / "resnet20_cifar10.yaml").read_text())
    data["output"] = str(tmp_path / "cifar")
    data["dataset"]["download"] = False
    data["hardware"]["liberty"] = None
    line = refused(capsys, run_cli(tmp_path, data))
    assert "cifar-10-python.tar.gz" in line and str(tmp_path / "empty") in line


@pytest.mark.parametrize("field", ["test_size", "train_size"])
def test_more_samples_than_the_data_holds_are_refused(field, tmp_path, mnist_dir, env, capsys):
    """A test (or training) size beyond the split is one line naming the field and what the
    split holds, not a silent run on fewer images."""
    data = small_study(tmp_path / "big", mnist_dir)
    data["dataset"][field] = 20_000  # the test set and the training subset hold 10,000
    assert run_cli(tmp_path, data) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"dse: error: dataset.{field}: 20000, but the split in ")
    assert err[-1].endswith("holds 10000 samples; expected at most 10000 (or leave it out for all)")
    assert "Traceback" not in "\n".join(err)
