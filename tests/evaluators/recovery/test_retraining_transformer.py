"""Retraining through the table on a transformer: a tiny ViT (patch Conv, class token, two
pre-norm blocks with attention written out, GELU MLP, LayerNorm, head) exported by TorchScript,
its shapes folded by onnxsim, quantized statically (S8S8 QOperator) and dynamically
(DynamicQuantizeLinear -> MatMulInteger): the forward pass is the runner's bit for bit with an
approximate table on every layer, the attention products among them; gradients reach every
weight and flow through Q x K^T to both operands; a few steps of retraining raise the accuracy
the approximate multiplier leaves, and the retrained file runs in onnxruntime."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from accel import cpu
from circuits import appaxo
from circuits.product_table import ProductTable
from evaluators.data.preprocess import Preprocessing
from evaluators.networks import ort_exactness
from evaluators.networks.quantization import quantize_dynamic_int8, quantize_int8
from evaluators.networks.shape_folding import fold_shapes
from evaluators.recovery.retraining import RetrainSettings, TableNetwork, retrain
from evaluators.runtime import approx_runner
from evaluators.runtime.approx_network import ApproxNetworkEvaluator
from evaluators.runtime.qgraph import QGraph
from tests.evaluators import transformers

EXACT = ProductTable.exact(True)
APPROXIMATE = appaxo.table(404750335)  # mean error -188 LSB, 93% of the products wrong
HARSH = appaxo.table(0b000000000111111111111111111111111111)  # first row gone: mean |error| 383
MODES = ("static", "dynamic")
PRODUCTS = {"QLinearMatMul", "MatMulInteger"}


@pytest.fixture(scope="module")
def data(mnist) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """MNIST: 2,000 training images (fit, calibration, retraining) and 300 held-out ones."""
    train, test = mnist
    return {"train": (Preprocessing().apply(train.images[:2000]), train.labels[:2000]),
            "test": (Preprocessing().apply(test.images[:300]), test.labels[:300])}


@pytest.fixture(scope="module")
def vit(data, tmp_path_factory) -> dict[str, Path]:
    """The ViT briefly trained (long enough that the harsh multiplier costs it accuracy), exported (opset 17, symbolic batch), folded by onnxsim and
    quantized in each mode."""
    x, y = data["train"]
    folder = tmp_path_factory.mktemp("vit")
    model = transformers.fit(transformers.explicit_attention(), torch.from_numpy(x),
                             torch.from_numpy(y.astype(np.int64)), steps=250)
    exported = transformers.export(model, folder / "float.onnx")
    onnx.save(fold_shapes(onnx.load(str(exported)), transformers.MNIST_SHAPE), str(folder / "folded.onnx"))
    quantize_int8(folder / "folded.onnx", folder / "static.onnx", x[:200])
    quantize_dynamic_int8(folder / "folded.onnx", folder / "dynamic.onnx")
    return {"static": folder / "static.onnx", "dynamic": folder / "dynamic.onnx"}


def _activation_products(graph: QGraph) -> list:
    return [n for n in graph.nodes if n.op in PRODUCTS and
            n.inputs[3 if n.op == "QLinearMatMul" else 1] not in graph.initializers]


@pytest.mark.parametrize("gradient", ["ste", "table"])
@pytest.mark.parametrize("mode", MODES)
def test_the_forward_pass_is_the_runners_on_a_vit(vit, data, mode, gradient):
    x, y = data["test"]
    graph = QGraph.from_onnx(vit[mode])
    assert len(_activation_products(graph)) == 4  # Q x K^T and softmax x V of both blocks
    network = TableNetwork(graph, APPROXIMATE, gradient)
    weights = [n for n in graph.nodes if n.op in approx_runner.TABLE_OPS and n not in
               _activation_products(graph)]
    assert len(network.layers) == len(weights) == 10  # patch Conv, 4 Linears a block, head
    logits = network(torch.from_numpy(x[:64])).detach().numpy()
    expected = approx_runner.run(graph, {graph.inputs[0]: x[:64]}, APPROXIMATE, cpu)
    np.testing.assert_array_equal(logits, expected[graph.outputs[0]])
    if mode == "static":
        scored = ApproxNetworkEvaluator(vit[mode], x[:64], y[:64]).logits(APPROXIMATE)
        np.testing.assert_array_equal(logits, scored)


@pytest.mark.parametrize("gradient", ["ste", "table"])
@pytest.mark.parametrize("mode", MODES)
def test_gradients_reach_every_weight_and_both_operands_of_q_times_k(vit, data, mode, gradient):
    x, y = data["train"]
    graph = QGraph.from_onnx(vit[mode])
    network = TableNetwork(graph, APPROXIMATE, gradient)
    loss = torch.nn.functional.cross_entropy(network(torch.from_numpy(x[:32])),
                                             torch.from_numpy(y[:32].astype(np.int64)))
    loss.backward()
    for name, layer in network.layers.items():
        assert torch.isfinite(layer.weight.grad).all() and layer.weight.grad.abs().sum() > 0, name
    # the graph up to the first block's Q x K^T: only the Q and K columns of the QKV Linear
    # reach it, each through its own operand of the product
    scores = _activation_products(graph)[0]
    cut = replace(graph, nodes=graph.nodes[:graph.nodes.index(scores) + 1], outputs=scores.outputs[:1])
    network = TableNetwork(cut, APPROXIMATE, gradient)
    qkv = [layer for layer in network.layers.values() if layer.weight.shape[layer.axis] == 96]
    assert len(qkv) == 1
    network(torch.from_numpy(x[:8])).sum().backward()
    grad = qkv[0].weight.grad.abs()
    per_output = (grad if qkv[0].axis == 1 else grad.T).sum(0)  # Q, K, V: 32 outputs each
    q, k, v = per_output.reshape(3, 32).sum(1)
    assert q > 0 and k > 0 and v == 0


@pytest.mark.parametrize(("mode", "gradient"), [  # one in the default suite (seconds each)
    ("static", "ste"), pytest.param("static", "table", marks=pytest.mark.slow),
    pytest.param("dynamic", "ste", marks=pytest.mark.slow)])
def test_retraining_raises_the_accuracy_a_harsh_multiplier_leaves(vit, data, mode, gradient,
                                                                  tmp_path):
    x, y = data["train"]
    tx, ty = data["test"]
    evaluator = ApproxNetworkEvaluator(vit[mode], tx, ty)
    exact, before = (evaluator.evaluate(t)["accuracy"] for t in (EXACT, HARSH))
    model = retrain(vit[mode], HARSH, x[:320], y[:320],
                    RetrainSettings(epochs=2, gradient=gradient, batch_size=32, learning_rate=3e-3))
    path = tmp_path / "retrained.onnx"
    onnx.save(model, str(path))
    after = ApproxNetworkEvaluator(path, tx, ty).evaluate(HARSH)["accuracy"]
    print(f"{mode} {gradient}: exact multiplier {exact:.4f}; harsh one {before:.4f} -> {after:.4f}")
    assert after > before + 0.05
    # the retrained int8 file runs in onnxruntime; with the exact table the runner agrees up to
    # the last bits of the float ops (LayerNormalization, Erf: evaluators.runtime.float_ops)
    graph = QGraph.from_onnx(path)
    expected = ort_exactness.session(path).run(None, {"input": tx[:50]})[0]
    got = approx_runner.run(graph, {graph.inputs[0]: tx[:50]}, EXACT, cpu)[graph.outputs[0]]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(got.argmax(1), expected.argmax(1))
