"""A user's ONNX classifier becomes the study's int8 network: float models quantized by
onnxruntime, user-quantized QOperator and QDQ files used as they are, each giving onnxruntime's
logits through the approximate runner with the exact table on real MNIST images; unusable
files refused with one line naming the file."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import yaml
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
from torch import nn
from torch.nn import functional as F

from circuits.product_table import ProductTable
from evaluators.data.preprocess import Preprocessing
from evaluators.errors import ModelError
from evaluators.networks.model_import import ModelInfo, check_data, import_model, inspect_model
from evaluators.networks.quantization import operand_scheme
from evaluators.runtime.approx_network import ApproxNetworkEvaluator
from evaluators.runtime.qgraph import QGraph
from tests.evaluators.qmodels import exact_outputs

EXACT = ProductTable.exact(True)
TEST_IMAGES = 1000


class SmallCNN(nn.Module):
    """conv 8 3x3 - ReLU - max pool 2 - dense 10; ``channels_last`` reads NHWC input and
    transposes inside, as a Keras model exported by tf2onnx does."""

    def __init__(self, channels_last: bool = False) -> None:
        super().__init__()
        self.channels_last = channels_last
        self.conv = nn.Conv2d(1, 8, 3)
        self.fc = nn.Linear(8 * 13 * 13, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            x = x.permute(0, 3, 1, 2)
        x = F.max_pool2d(F.relu(self.conv(x)), 2)
        return self.fc(torch.flatten(x, 1))


def mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(784, 64), nn.ReLU(), nn.Linear(64, 10))


def fit(model: nn.Module, x: np.ndarray, y: np.ndarray) -> nn.Module:
    """One quick deterministic epoch, so activations have a trained network's ranges."""
    torch.manual_seed(0)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    inputs, labels = torch.from_numpy(x), torch.from_numpy(y)
    for start in range(0, len(x), 64):
        loss = F.cross_entropy(model(inputs[start : start + 64]), labels[start : start + 64])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def export(model: nn.Module, sample: np.ndarray, path: Path, dynamic: bool = True) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, torch.from_numpy(sample[:1]), str(path), input_names=["input"],
                          output_names=["logits"], opset_version=17, dynamo=False,
                          dynamic_axes={"input": {0: "n"}, "logits": {0: "n"}} if dynamic else None)
    return path


def user_quantized(float_onnx: Path, path: Path, calibration: np.ndarray, fmt: QuantFormat,
                   activations: QuantType = QuantType.QInt8) -> Path:
    """A model quantized the way a user would: onnxruntime defaults (asymmetric activations,
    per-tensor weights) with the chosen format and activation type."""

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([{"input": calibration}])

        def get_next(self):
            return next(self.batches, None)

    quantize_static(str(float_onnx), str(path), Reader(), quant_format=fmt,
                    activation_type=activations, weight_type=QuantType.QInt8)
    return path


@pytest.fixture(scope="module")
def data(mnist):
    """(train images, train labels, test images, test labels) as [0, 1] NCHW images."""
    train, test = mnist
    prep = Preprocessing()
    return (prep.apply(train.images[:2000]), train.labels[:2000],
            prep.apply(test.images[:TEST_IMAGES]), test.labels[:TEST_IMAGES])


@pytest.fixture(scope="module")
def cnn_onnx(data, tmp_path_factory) -> Path:
    x, y, _, _ = data
    folder = tmp_path_factory.mktemp("cnn")
    return export(fit(SmallCNN(), x, y), x, folder / "cnn.onnx")


def quiet_import(path: Path, folder: Path, calibration: np.ndarray) -> tuple[ModelInfo, list[str]]:
    """import_model's result and log, which must hold no warning (the dry run matched
    onnxruntime) and no pre-processing fallback."""
    messages: list[str] = []
    info = import_model(path, folder, calibration, log=messages.append)
    assert not any("warning" in m or "failed" in m for m in messages), messages
    return info, messages


def assert_runner_equals_onnxruntime(int8: Path, x: np.ndarray, labels: np.ndarray) -> None:
    expected = exact_outputs(int8, x)
    got = ApproxNetworkEvaluator(int8, x, labels, kernel="cpu").logits(EXACT)
    assert got.dtype == expected.dtype and np.array_equal(got, expected)
    assert (expected.argmax(axis=1) == labels).mean() > 0.7  # a trained classifier, not noise


def test_float_mlp_on_feature_vectors_is_quantized_symmetric_int8(data, tmp_path):
    x, y, x_test, labels = (a.reshape(len(a), -1) if a.ndim == 4 else a for a in data)
    path = export(fit(mlp(), x, y), x, tmp_path / "mlp.onnx")
    info = inspect_model(path)
    assert (info.format, info.input_name, info.input_shape, info.classes) == \
        ("float", "input", (784,), 10)
    check_data(info, (784,), 10)
    assert quiet_import(path, tmp_path / "net", x[:200])[0] == info
    assert (tmp_path / "net" / "float.onnx").is_file()
    graph = QGraph.from_onnx(tmp_path / "net" / "int8.onnx")
    gemms = [n for n in graph.nodes if n.op == "QGemm"]
    assert len(gemms) == 2
    for node in gemms:  # symmetric int8 activations, per-channel int8 weights
        x_zp, w, w_scale = (graph.const(node.inputs[i]) for i in (2, 3, 4))
        assert x_zp.dtype == np.int8 and not x_zp.any() and w.dtype == np.int8
        assert w_scale.size > 1
    assert_runner_equals_onnxruntime(tmp_path / "net" / "int8.onnx", x_test, labels)


def test_float_cnn_with_nhwc_input_keras_style(data, tmp_path):
    x, y, x_test, labels = data
    nhwc = Preprocessing(layout="NHWC")
    x, x_test = x.transpose(0, 2, 3, 1).copy(), x_test.transpose(0, 2, 3, 1).copy()
    path = export(fit(SmallCNN(channels_last=True), x, y), x, tmp_path / "keras_style.onnx")
    info = inspect_model(path)
    assert info.format == "float" and info.input_shape == (28, 28, 1) and info.classes == 10
    with pytest.raises(ModelError, match="layout: NHWC") as err:
        check_data(info, Preprocessing().input_shape(np.zeros((1, 28, 28, 1), np.uint8)), 10)
    assert_one_line(err, path)
    check_data(info, nhwc.input_shape(np.zeros((1, 28, 28, 1), np.uint8)), 10)
    quiet_import(path, tmp_path / "net", x[:200])
    assert_runner_equals_onnxruntime(tmp_path / "net" / "int8.onnx", x_test, labels)


def test_fixed_batch_model_gets_a_symbolic_batch_axis(data, tmp_path):
    x, y, x_test, labels = data
    path = export(fit(SmallCNN(), x, y), x, tmp_path / "batch1.onnx", dynamic=False)
    assert onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim[0].dim_value == 1
    _, messages = quiet_import(path, tmp_path / "net", x[:200])
    assert any("symbolic batch axis" in m for m in messages)
    assert_runner_equals_onnxruntime(tmp_path / "net" / "int8.onnx", x_test, labels)


def test_user_quantized_qoperator_model_is_used_as_it_is(data, cnn_onnx, tmp_path):
    x, _, x_test, labels = data
    path = user_quantized(cnn_onnx, tmp_path / "user_qop.onnx", x[:200], QuantFormat.QOperator)
    info = inspect_model(path)
    assert info.format == "qoperator" and info.input_shape == (1, 28, 28) and info.classes == 10
    quiet_import(path, tmp_path / "net", x[:200])
    assert not (tmp_path / "net" / "float.onnx").exists()
    assert (tmp_path / "net" / "int8.onnx").read_bytes() == path.read_bytes()
    graph = QGraph.from_onnx(path)
    conv = next(n for n in graph.nodes if n.op == "QLinearConv")
    assert graph.const(conv.inputs[2]).any()  # the user's asymmetric activations: a zero point
    assert_runner_equals_onnxruntime(tmp_path / "net" / "int8.onnx", x_test, labels)


def test_user_quantized_qdq_model_is_used_as_it_is(data, cnn_onnx, tmp_path):
    x, _, x_test, labels = data
    path = user_quantized(cnn_onnx, tmp_path / "user_qdq.onnx", x[:200], QuantFormat.QDQ)
    info = inspect_model(path)
    assert info.format == "qdq" and info.input_shape == (1, 28, 28) and info.classes == 10
    quiet_import(path, tmp_path / "net", x[:200])
    assert (tmp_path / "net" / "int8.onnx").read_bytes() == path.read_bytes()
    assert_runner_equals_onnxruntime(tmp_path / "net" / "int8.onnx", x_test, labels)


# --- refusals: one line naming the file -------------------------------------------------


def assert_one_line(err: pytest.ExceptionInfo, path: Path) -> None:
    message = str(err.value)
    assert "\n" not in message and str(path) in message, message


def save(path: Path, nodes, inputs, outputs, initializers=(), **kwargs) -> Path:
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path),
              **kwargs)
    return path


def float_input(name: str = "x", shape=("n", 784)):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape))


def weights(name: str = "w", shape=(784, 10)):
    return numpy_helper.from_array(np.random.default_rng(0).normal(size=shape).astype(np.float32),
                                   name)


def linear(path: Path, **kwargs) -> Path:
    """x (n, 784) @ w (784, 10): the smallest valid classifier."""
    return save(path, [helper.make_node("MatMul", ["x", "w"], ["y"])], [float_input()],
                [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 10])], [weights()],
                **kwargs)


def refused(path: Path, match: str, call=inspect_model) -> None:
    with pytest.raises(ModelError, match=match) as err:
        call(path)
    assert_one_line(err, path)


def test_missing_file(tmp_path):
    refused(tmp_path / "absent.onnx", "no such ONNX model file")


def test_random_bytes(tmp_path):
    path = tmp_path / "random.onnx"
    path.write_bytes(np.random.default_rng(1).bytes(3000))
    refused(path, "not a readable ONNX model .*expected an ONNX ModelProto")


def test_truncated_protobuf(tmp_path):
    whole = linear(tmp_path / "whole.onnx").read_bytes()
    path = tmp_path / "truncated.onnx"
    path.write_bytes(whole[: len(whole) // 2])
    refused(path, "not a readable ONNX model")


def test_missing_external_data(tmp_path):
    path = linear(tmp_path / "external.onnx", save_as_external_data=True, location="weights.bin",
                  size_threshold=0)
    (tmp_path / "weights.bin").unlink()
    refused(path, "external data file 'weights.bin' of tensor 'w' is missing")


def test_two_inputs(tmp_path):
    path = save(tmp_path / "two.onnx", [helper.make_node("Add", ["x", "z"], ["y"])],
                [float_input("x"), float_input("z")],
                [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 784])])
    refused(path, r"2 input\(s\) and 1 output\(s\); expected a classifier with one input")


def test_output_not_batch_by_classes(tmp_path):
    axes = numpy_helper.from_array(np.array([2], np.int64), "axes")
    path = save(tmp_path / "rank3.onnx",
                [helper.make_node("MatMul", ["x", "w"], ["y"]),
                 helper.make_node("Unsqueeze", ["y", "axes"], ["out"])],
                [float_input()], [helper.make_tensor_value_info("out", TensorProto.FLOAT,
                                                                ["n", 10, 1])],
                [weights(), axes])
    refused(path, r"output 'out' has shape \(\?, 10, 1\); expected \(batch, classes\)")


def test_integer_input(tmp_path):
    path = save(tmp_path / "uint8_input.onnx",
                [helper.make_node("Cast", ["x"], ["xf"], to=TensorProto.FLOAT),
                 helper.make_node("MatMul", ["xf", "w"], ["y"])],
                [helper.make_tensor_value_info("x", TensorProto.UINT8, ["n", 784])],
                [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 10])], [weights()])
    refused(path, "input 'x' is uint8; expected float32")


@pytest.mark.parametrize("fmt", [QuantFormat.QOperator, QuantFormat.QDQ], ids=["qoperator", "qdq"])
def test_uint8_activations_are_imported(data, cnn_onnx, tmp_path, fmt):
    """A user's U8S8 model (onnxruntime's default) is used as it is: the signed multipliers
    take its uint8 activations moved by 128, and with the exact table the runner gives
    onnxruntime's outputs (import_model warns otherwise)."""
    x = data[0][:200]
    path = user_quantized(cnn_onnx, tmp_path / "quint8.onnx", x, fmt, activations=QuantType.QUInt8)
    assert inspect_model(path).format == ("qdq" if fmt == QuantFormat.QDQ else "qoperator")
    messages: list[str] = []
    import_model(path, tmp_path / "net", x, log=messages.append)
    assert not [m for m in messages if "warning" in m]
    assert operand_scheme(QGraph.from_onnx(tmp_path / "net" / "int8.onnx")) == "u8s8"


def test_unsupported_op_names_node_and_op(data, tmp_path):
    """A float model with an op the runner lacks is quantized, then refused before any study
    work, naming the node and the op."""
    x = data[0][:200].reshape(200, -1)
    w2 = weights("w2", (10, 10))
    path = save(tmp_path / "einsum.onnx",
                [helper.make_node("MatMul", ["x", "w"], ["h"]),
                 helper.make_node("Einsum", ["h", "w2"], ["y"], name="mixer", equation="bi,ij->bj")],
                [float_input()], [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 10])],
                [weights(), w2])
    refused(path, "ONNX op 'Einsum' \\(node 'mixer'\\)",
            lambda p: import_model(p, tmp_path / "net", x, log=lambda _: None))


def test_data_that_does_not_fit(tmp_path):
    info = inspect_model(linear(tmp_path / "linear.onnx"))
    with pytest.raises(ModelError, match=r"reads samples of shape \(784,\), but the preprocessed "
                       r"data has \(3, 32, 32\)$") as err:
        check_data(info, (3, 32, 32), 10)
    assert_one_line(err, info.path)
    with pytest.raises(ModelError, match="flat vectors of 784 values") as err:
        check_data(info, (1, 28, 28), 10)
    assert_one_line(err, info.path)
    with pytest.raises(ModelError, match="has 10 outputs, but the dataset has 100 classes") as err:
        check_data(info, (784,), 100)
    assert_one_line(err, info.path)


def test_symbolic_dims_match_any_size(tmp_path):
    path = save(tmp_path / "any_size.onnx", [helper.make_node("GlobalAveragePool", ["x"], ["p"]),
                                             helper.make_node("Flatten", ["p"], ["y"])],
                [float_input("x", ("n", 3, "h", "w"))],
                [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3])])
    info = inspect_model(path)
    assert info.input_shape == (3, None, None) and info.classes == 3
    check_data(info, (3, 32, 32), 3)
    with pytest.raises(ModelError, match="layout: NCHW"):
        check_data(info, (32, 32, 3), 3)


def test_model_without_multiplying_layers(tmp_path):
    """Nothing for the multipliers to replace: refused, not studied with identical results."""
    path = save(tmp_path / "pool_only.onnx", [helper.make_node("GlobalAveragePool", ["x"], ["p"]),
                                              helper.make_node("Flatten", ["p"], ["y"])],
                [float_input("x", ("n", 3, 8, 8))],
                [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3])])
    x = np.random.default_rng(0).random((20, 3, 8, 8), dtype=np.float32)
    refused(path, "no layer of the int8 model multiplies int8 codes",
            lambda p: import_model(p, tmp_path / "net", x, log=lambda _: None))


# --- the class count of a symbolic class axis, counted on a real batch (issue 25) ---------------


def symbolic_classes(path: Path, classes: int) -> Path:
    """A float classifier of MNIST images whose output declares (n, classes) symbolically."""
    return save(path, [helper.make_node("Flatten", ["x"], ["flat"]),
                       helper.make_node("MatMul", ["flat", "w"], ["y"])],
                [float_input("x", ("n", 1, 28, 28))],
                [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", "classes"])],
                [weights("w", (784, classes))])


@pytest.mark.parametrize("classes", [7, 12])
def test_a_symbolic_class_axis_is_counted_on_a_real_batch(data, tmp_path, classes):
    path = symbolic_classes(tmp_path / f"classes{classes}.onnx", classes)
    info = inspect_model(path)
    assert info.classes is None
    check_data(info, (1, 28, 28), 10)  # the declared shape cannot tell
    x = data[0][:64]
    refused(path, f"the model has {classes} outputs, but the dataset has 10 classes; expected",
            lambda p: import_model(p, tmp_path / "net", x, log=lambda _: None, classes=10))
    import_model(path, tmp_path / "fits", x, log=lambda _: None, classes=classes)


def test_a_study_on_a_symbolic_class_axis_of_other_classes_is_refused(tmp_path, mnist_dir,
                                                                     capsys, env):
    import dse
    from dse.cli import main
    from tests.conftest import mini_study

    path = symbolic_classes(tmp_path / "seven.onnx", 7)
    study = mini_study(mnist_dir, output=str(tmp_path / "study"), budget={"trials": 2},
                       model={"onnx": str(path)}, quantization={"calibration_size": 64})
    study["dataset"].update(train_size=256, test_size=64, download=False)
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(study))
    assert main(["run", str(tmp_path / "study.yaml"), "--quiet"]) == 2
    lines = [x for x in capsys.readouterr().err.splitlines() if x.startswith("dse: error: ")]
    assert len(lines) == 1 and str(path) in lines[0], lines
    assert "the model has 7 outputs, but the dataset has 10 classes" in lines[0]
    folder = tmp_path / "study"
    assert not (folder / "trials.journal").exists() or dse.load_study(folder).trials.empty


def test_failed_shape_inference_leaves_nothing_in_the_working_folder(tmp_path, monkeypatch):
    """onnxruntime's symbolic shape inference writes temporary files into the current folder
    and leaves them when it fails (here on an op of an unknown domain, weights external): the
    import runs it in a private folder, and the model is still refused in one line."""
    weights = numpy_helper.from_array(
        np.random.default_rng(0).standard_normal((784, 10)).astype(np.float32), "w")
    nodes = [helper.make_node("Gemm", ["x", "w"], ["g"]),
             helper.make_node("Mystery", ["g"], ["out"], domain="my.domain")]
    graph = helper.make_graph(nodes, "m", [float_input()],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["n", 10])],
                              [weights])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid("my.domain", 1)])
    model.ir_version = 8
    (tmp_path / "model").mkdir()
    onnx.save_model(model, str(tmp_path / "model" / "m.onnx"), save_as_external_data=True,
                    location="m.bin", size_threshold=0)
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    with pytest.raises(ModelError) as err:
        import_model(tmp_path / "model" / "m.onnx", tmp_path / "net",
                     np.zeros((4, 784), np.float32), log=lambda _: None)
    assert "\n" not in str(err.value) and str(tmp_path / "model" / "m.onnx") in str(err.value)
    assert list(work.iterdir()) == []
