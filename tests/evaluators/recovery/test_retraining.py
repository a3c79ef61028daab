"""Training through a product table: the forward pass is the evaluator's, the gradients are
the chosen model's, and retraining on real data helps an approximate multiplier."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from accel import cpu
from circuits import appaxo
from circuits.product_table import ProductTable
from evaluators.data.preprocess import Preprocessing
from evaluators.errors import ModelError
from evaluators.recovery.retraining import (
    ProductModel,
    RetrainSettings,
    TableNetwork,
    product_model,
    quantized_model,
    retrain,
)
from evaluators.runtime import approx_runner
from evaluators.runtime.approx_network import ApproxNetworkEvaluator
from evaluators.runtime.layer_tables import LayerTables
from evaluators.runtime.qgraph import QGraph

EXACT = ProductTable.exact(True)
AGGRESSIVE = appaxo.table(0b010000011101001111100111111011111111)  # loses points on LeNet-5


def _inputs(mnist, count: int, split: int = 1) -> tuple[np.ndarray, np.ndarray]:
    data = mnist[split]
    return Preprocessing().apply(data.images[:count]), data.labels[:count]


@pytest.mark.parametrize("gradient", ["ste", "table"])
@pytest.mark.parametrize("table", [EXACT, AGGRESSIVE], ids=["exact", "appaxo"])
def test_the_forward_pass_is_the_evaluators_on_a_whole_network(lenet, mnist, table, gradient):
    x, y = _inputs(mnist, 200)
    network = TableNetwork(QGraph.from_onnx(lenet.int8_onnx), table, gradient)
    logits = network(torch.from_numpy(x)).detach().numpy()
    expected = ApproxNetworkEvaluator(lenet.int8_onnx, x, y).logits(table)
    np.testing.assert_array_equal(logits, expected)


def test_per_layer_tables_and_every_op_of_the_small_networks(tmp_path, mnist):
    """Residual adds, group and dilated convolutions, concatenation, average pooling, a
    product of tensors, MatMul and a final softmax, in both ONNX formats, with a table per layer."""
    from tests.evaluators.qmodels import Branches, ResNetTiny, Separable, TokenMixer, VggTiny, build

    x, y = _inputs(mnist, 64, split=0)
    cases = [(ResNetTiny(), x), (VggTiny(), x), (Branches(), x), (TokenMixer(), x),
             (Separable(channels=1), np.pad(x, ((0, 0), (0, 0), (2, 2), (2, 2))))]
    for i, (model, images) in enumerate(cases):
        for fmt in ("qoperator", "qdq"):
            folder = tmp_path / f"{i}-{fmt}"
            folder.mkdir()
            path = build(model, images, folder, fmt)
            graph = QGraph.from_onnx(path)
            layers = [n.name for n in graph.nodes if n.op in ("QLinearConv", "QGemm", "QLinearMatMul")]
            tables = LayerTables({name: AGGRESSIVE if k % 2 == 0 else EXACT
                                  for k, name in enumerate(layers)}, EXACT)
            network = TableNetwork(graph, tables, "table")
            logits = network(torch.from_numpy(images))
            expected = ApproxNetworkEvaluator(path, images, y).logits(tables)
            if network.logits_name != graph.outputs[0]:  # the input of a final softmax
                expected = approx_runner.run(graph, {graph.inputs[0]: images}, tables, cpu,
                                             capture=[network.logits_name])[network.logits_name]
                np.testing.assert_array_equal(logits.detach().numpy(), expected)
            else:
                np.testing.assert_array_equal(logits.detach().numpy(), expected, err_msg=f"{i} {fmt}")
            torch.nn.functional.cross_entropy(logits, torch.from_numpy(y)).backward()
            grads = [p.grad for p in network.params]
            assert all(g is not None and torch.isfinite(g).all() for g in grads)
            assert any(g.abs().sum() > 0 for g in grads)


def test_the_table_gradient_of_the_exact_table_is_the_straight_through_one():
    model = product_model(EXACT, "table")
    assert np.array_equal(model.u, ProductModel.exact(True).u)
    fitted = ProductModel.of_table(EXACT)  # the SVD route recovers a*w and slope w as well
    assert fitted.residual < 1e-9
    rebuilt = fitted.u.T @ fitted.v
    np.testing.assert_allclose(rebuilt, EXACT.values, atol=1e-6)
    # d(a*w)/da = w: the smoothed differences of the factors, away from the ends
    np.testing.assert_allclose((fitted.du.T @ fitted.v)[20:-20], EXACT.exact_products()[20:-20]
                               * 0 + EXACT.operands[None, :], atol=1e-6)


def test_an_approximate_tables_gradient_model_fits_it_and_differs_from_the_exact_one():
    model = ProductModel.of_table(AGGRESSIVE)
    assert 0 < model.residual < 0.2
    slope = model.du.T @ model.v  # dT/da at every (a, w)
    assert not np.allclose(slope, np.broadcast_to(AGGRESSIVE.operands[None, :], slope.shape))


def test_the_exported_model_keeps_every_scale_and_the_untrained_codes(lenet):
    base = onnx.load(str(lenet.int8_onnx))
    network = TableNetwork(QGraph.from_onnx(base), AGGRESSIVE, "ste")
    model = quantized_model(network, base)
    before = {t.name: onnx.numpy_helper.to_array(t) for t in base.graph.initializer}
    after = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    assert before.keys() == after.keys()
    for name in before:
        assert before[name].dtype == after[name].dtype
        np.testing.assert_array_equal(before[name], after[name], err_msg=name)


def test_retraining_with_the_exact_table_keeps_the_accuracy(lenet, mnist, tmp_path):
    x, y = _inputs(mnist, 2000, split=0)
    tx, ty = _inputs(mnist, 2000)
    before = ApproxNetworkEvaluator(lenet.int8_onnx, tx, ty).evaluate(EXACT)["accuracy"]
    model = retrain(lenet.int8_onnx, EXACT, x, y, RetrainSettings(epochs=1))
    onnx.save(model, str(tmp_path / "retrained.onnx"))
    after = ApproxNetworkEvaluator(tmp_path / "retrained.onnx", tx, ty).evaluate(EXACT)["accuracy"]
    assert after >= before - 0.005


@pytest.mark.parametrize("gradient", ["ste", "table"])
def test_retraining_recovers_accuracy_an_approximate_multiplier_lost(lenet, mnist, tmp_path, gradient):
    x, y = _inputs(mnist, 2000, split=0)
    tx, ty = _inputs(mnist, 2000)
    exact = ApproxNetworkEvaluator(lenet.int8_onnx, tx, ty).evaluate(EXACT)["accuracy"]
    before = ApproxNetworkEvaluator(lenet.int8_onnx, tx, ty).evaluate(AGGRESSIVE)["accuracy"]
    assert exact - before > 0.03, "the case must lose accuracy to test recovery"
    model = retrain(lenet.int8_onnx, AGGRESSIVE, x, y,
                    RetrainSettings(epochs=1, gradient=gradient, learning_rate=1e-3))
    onnx.save(model, str(tmp_path / "retrained.onnx"))
    after = ApproxNetworkEvaluator(tmp_path / "retrained.onnx", tx, ty).evaluate(AGGRESSIVE)["accuracy"]
    assert after - before > 0.5 * (exact - before)


def test_bad_settings_are_one_line_errors():
    with pytest.raises(ModelError, match="gradient 'tables'"):
        RetrainSettings(gradient="tables")
    with pytest.raises(ModelError, match="epochs >= 1"):
        RetrainSettings(epochs=0)
