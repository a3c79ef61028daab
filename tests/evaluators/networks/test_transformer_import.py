"""Transformer classifiers become study networks: their exported shape computations fold for the
study's sample shape with the batch axis left symbolic; static (QOperator, QDQ) and dynamic
quantization put every product, the attention's two activations included, through the table;
the approximate runner with the exact table gives onnxruntime's logits wherever onnxruntime is
exact on this CPU."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper

from accel import reference
from circuits.product_table import ProductTable
from dse.study_file import QuantizationSettings
from evaluators.data.preprocess import Preprocessing
from evaluators.errors import ModelError
from evaluators.networks import ort_exactness
from evaluators.networks.model_import import import_model, reference_session
from evaluators.networks.prepared import TrainingSettings, network_identity
from evaluators.networks.quantization import (
    QuantizeActivationMatMuls,
    activation_products,
    operand_scheme,
)
from evaluators.networks.shape_folding import fold_shapes
from evaluators.runtime import approx_runner
from evaluators.runtime.qgraph import QGraph
from evaluators.runtime.transforms import optimize
from tests.evaluators import transformers

EXACT = ProductTable.exact(True)
MODES = {"static-qoperator": dict(scheme="s8s8", quant_format="qoperator"),
         "static-qdq": dict(scheme="s8s8", quant_format="qdq"),
         "dynamic": dict(scheme="u8s8", quant_format="qoperator", mode="dynamic")}
MODELS = {"explicit": (transformers.explicit_attention, False),
          "mha": (transformers.mha_attention, False),
          "mha-dynamo": (transformers.mha_attention, True)}


@pytest.fixture(scope="module")
def images(mnist) -> tuple[np.ndarray, np.ndarray]:
    """Preprocessed MNIST training images and labels (the first 2,000)."""
    train = mnist[0]
    return Preprocessing().apply(train.images[:2000]), train.labels[:2000]


@pytest.fixture(scope="module")
def exported(images, tmp_path_factory) -> dict[str, Path]:
    """Each test model briefly trained and exported as a user would (dynamo where onnxscript
    is installed)."""
    x, y = (torch.from_numpy(a) for a in (images[0], images[1].astype(np.int64)))
    folder, paths = tmp_path_factory.mktemp("transformers"), {}
    for name, (build, dynamo) in MODELS.items():
        if dynamo and not transformers.DYNAMO:
            continue
        model = transformers.fit(build(), x, y)
        paths[name] = transformers.export(model, folder / f"{name}.onnx", dynamo=dynamo)
    return paths


def model_param(name: str):
    dynamo = MODELS[name][1]
    return pytest.param(name, marks=pytest.mark.skipif(
        dynamo and not transformers.DYNAMO, reason="the dynamo exporter needs onnxscript"))


def test_folding_leaves_the_batch_symbolic(exported, images, tmp_path):
    """The TorchScript export computes its Reshape targets from Shape(input); folded, it keeps
    its node names and runs at any batch size as before."""
    path = exported["explicit"]
    model = onnx.load(str(path))
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("Shape") > 2
    folded = fold_shapes(model, (1, 28, 28), source=str(path))
    assert [n.op_type for n in folded.graph.node].count("Shape") < ops.count("Shape")
    assert {n.name for n in folded.graph.node if n.op_type == "Conv"} == \
        {n.name for n in model.graph.node if n.op_type == "Conv"}
    assert folded.graph.input[0].type.tensor_type.shape.dim[0].dim_param
    onnx.save(folded, str(tmp_path / "folded.onnx"))
    before, after = (ort.InferenceSession(str(p)) for p in (path, tmp_path / "folded.onnx"))
    for batch in (1, 3, 7):
        x = images[0][:batch]
        expected = before.run(None, {"input": x})[0]
        np.testing.assert_allclose(after.run(None, {"input": x})[0], expected, rtol=1e-5,
                                   atol=1e-6)


def test_folding_refusals_are_one_line(exported):
    model = onnx.load(str(exported["explicit"]))
    with pytest.raises(ModelError, match=r"^net\.onnx: input 'input' has 4 axes; expected "
                                         r"\(batch, 28, 28\)$"):
        fold_shapes(model, (28, 28), source="net.onnx")
    broken = helper.make_model(helper.make_graph(
        [helper.make_node("Reshape", ["x", "s"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [helper.make_tensor("s", TensorProto.INT64, [2], [3, 3])]))
    with pytest.raises(ModelError, match=r"^bad\.onnx: onnxsim could not fold") as err:
        fold_shapes(broken, (4,), source="bad.onnx")
    assert "\n" not in str(err.value)


def test_activation_matmuls_are_quantized_dynamically():
    """q @ k^T of two inputs becomes DynamicQuantizeLinear x 2 - MatMulInteger - Cast - Mul,
    close to the float product in onnxruntime; a MatMul by a constant stays (the weight
    quantizer's); a second pass changes nothing."""
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["q", "k"], ["s"], name="scores"),
         helper.make_node("MatMul", ["s", "w"], ["y"], name="weights")], "g",
        [helper.make_tensor_value_info("q", TensorProto.FLOAT, ["n", 3, 8]),
         helper.make_tensor_value_info("k", TensorProto.FLOAT, ["n", 8, 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3, 5])],
        [onnx.numpy_helper.from_array(np.eye(5, dtype=np.float32), "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    rewritten, changed = QuantizeActivationMatMuls().apply(model)
    assert changed and not QuantizeActivationMatMuls().apply(rewritten)[1]
    ops = [n.op_type for n in rewritten.graph.node]
    assert ops.count("DynamicQuantizeLinear") == 2 and ops.count("MatMul") == 1
    assert [n.name for n in rewritten.graph.node if n.op_type == "MatMulInteger"] == ["scores_quant"]
    onnx.checker.check_model(rewritten)
    rng = np.random.default_rng(0)
    q, k = rng.normal(size=(2, 3, 8)).astype(np.float32), rng.normal(size=(2, 8, 5)).astype(np.float32)
    got = ort.InferenceSession(rewritten.SerializeToString()).run(None, {"q": q, "k": k})[0]
    np.testing.assert_allclose(got, q @ k, atol=0.1)


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("name", [model_param(n) for n in MODELS])
def test_a_transformer_imports_in_every_mode(name, mode, exported, images, tmp_path):
    """The int8 file runs in onnxruntime at batch sizes 1 and 5, every attention product is a
    table layer, and the runner's logits with the exact table are onnxruntime's where
    onnxruntime is exact here."""
    lines: list[str] = []
    x = images[0]
    import_model(exported[name], tmp_path, x[:200], lines.append, classes=10, **MODES[mode])
    assert any("shape computations folded" in line for line in lines), lines
    int8 = tmp_path / "int8.onnx"
    session = reference_session(int8)
    for batch in (1, 5):
        assert session.run(None, {"input": x[:batch]})[0].shape == (batch, 10)
    graph = QGraph.from_onnx(int8)
    assert activation_products(graph)
    if mode == "dynamic":
        ops = {n.op_type for n in onnx.load(str(int8)).graph.node}
        assert "MatMul" not in ops and {"MatMulInteger", "DynamicQuantizeLinear"} <= ops
    expected = session.run(None, {"input": x[:5]})[0]
    got = approx_runner.run(optimize(graph), {"input": x[:5]}, EXACT, reference)[graph.outputs[0]]
    assert got.shape == expected.shape
    if ort_exactness.probe().exact(operand_scheme(graph), MODES[mode]["quant_format"],
                                   precise=session.precise, activation_products=True):
        np.testing.assert_array_equal(got, expected)


def test_dynamic_mode_needs_uint8_activations(exported, images, tmp_path):
    with pytest.raises(ModelError, match=r"explicit\.onnx: dynamic quantization writes uint8 "
                                         r"activations .* expected scheme u8s8 or u8u8"):
        import_model(exported["explicit"], tmp_path, images[0][:10], lambda _: None,
                     mode="dynamic")
    with pytest.raises(ValueError, match="mode dynamic"):
        QuantizationSettings(mode="dynamic", scheme="s8s8")


def test_the_static_mode_keeps_the_keys_of_existing_networks(mnist):
    """A study file without ``mode`` dumps as before, and a static network's identity is that
    of a network prepared before modes existed; a dynamic one's differs."""
    assert "mode" not in QuantizationSettings().model_dump(exclude_defaults=True)
    train, test = mnist
    static = TrainingSettings("vit_tiny", 1, 64, 1e-3, False, 0, 100, scheme="u8s8")
    identity = network_identity(static, train, test, Preprocessing())
    assert "quantization_mode" not in identity
    dynamic = network_identity(TrainingSettings("vit_tiny", 1, 64, 1e-3, False, 0, 100,
                                                scheme="u8s8", mode="dynamic"),
                               train, test, Preprocessing())
    assert dynamic == {**identity, "quantization_mode": "dynamic"}
