"""Graph transformations compute exactly what the untransformed graph and onnxruntime compute."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from accel import cpu, reference
from circuits import appaxo
from circuits.product_table import ProductTable
from evaluators import approx_runner
from evaluators.network import export_onnx
from evaluators.preprocess import Preprocessing
from evaluators.qgraph import QGraph
from evaluators.quantization import quantize_int8
from evaluators.transforms import CODE_CHAIN, CONV_POOL, FoldCodeChains, FuseConvPool, optimize


def test_lenet_chains_fold_and_results_do_not_change(lenet, mnist):
    _, test = mnist
    plain = QGraph.from_onnx(lenet.int8_onnx)
    folded, changed = FoldCodeChains().apply(plain)
    assert changed
    assert [n.op for n in folded.nodes] == [
        "QuantizeLinear", "QLinearConv", CODE_CHAIN, "QLinearConv", CODE_CHAIN,
        "QGemm", CODE_CHAIN, "QGemm", CODE_CHAIN, "QGemm", "DequantizeLinear"]
    assert FoldCodeChains().apply(folded) == (folded, False)
    x = {"input": Preprocessing().apply(test.images)}
    for config in (appaxo.EXACT, 0b111100011000111111111111111011111111):
        table = ProductTable(appaxo.product_table(config), True)
        np.testing.assert_array_equal(approx_runner.run(folded, x, table, cpu)["logits"],
                                      approx_runner.run(plain, x, table, cpu)["logits"])


def test_conv_and_pool_fuse_without_changing_any_logit(lenet, mnist):
    _, test = mnist
    folded, _ = FoldCodeChains().apply(QGraph.from_onnx(lenet.int8_onnx))
    fused, changed = FuseConvPool().apply(folded)
    assert changed and [n.op for n in fused.nodes].count(CONV_POOL) == 2
    assert [n.op for n in optimize(QGraph.from_onnx(lenet.int8_onnx)).nodes] == [n.op for n in fused.nodes]
    x = {"input": Preprocessing().apply(test.images)}
    table = ProductTable(appaxo.product_table(0b111100011000111111111111111011111111), True)
    expected = approx_runner.run(folded, x, table, cpu)["logits"]
    np.testing.assert_array_equal(approx_runner.run(fused, x, table, cpu)["logits"], expected)
    few = {"input": x["input"][:64]}
    np.testing.assert_array_equal(approx_runner.run(fused, few, table, reference)["logits"], expected[:64])


class ClipPadPool(nn.Module):
    """Conv -> ReLU6 (an ONNX Clip) -> padded, strided 3x3 max pool -> reshape -> linear."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, padding=1)
        self.pool = nn.MaxPool2d(3, stride=2, padding=1)
        self.fc = nn.Linear(4 * 5 * 5, 3)

    def forward(self, x):
        x = self.pool(torch.clamp(self.conv(x), 0.0, 6.0))
        return self.fc(x.reshape(-1, 4 * 5 * 5))


def test_clip_and_padded_pooling_fold_exactly_against_onnxruntime(tmp_path):
    torch.manual_seed(0)
    model = ClipPadPool().eval()
    x = torch.randn(64, 2, 10, 10) * 3
    export_onnx(model, x[:1], tmp_path / "f.onnx", output="out")
    quantize_int8(tmp_path / "f.onnx", tmp_path / "q.onnx", x[:32].numpy())
    graph = optimize(QGraph.from_onnx(tmp_path / "q.onnx"))
    ops = [n.op for n in graph.nodes]
    assert CODE_CHAIN in ops and "MaxPool" not in ops and "Clip" not in ops
    expected = ort.InferenceSession(str(tmp_path / "q.onnx")).run(None, {"input": x.numpy()})[0]
    got = approx_runner.run(graph, {"input": x.numpy()}, ProductTable.exact(True), cpu)["out"]
    np.testing.assert_array_equal(got, expected)


def test_a_chain_whose_tensor_is_read_elsewhere_is_left_alone(lenet):
    plain = QGraph.from_onnx(lenet.int8_onnx)
    relu = next(n for n in plain.nodes if n.op == "Relu")
    exposed = type(plain)(plain.nodes, plain.initializers, plain.inputs,
                          plain.outputs + (relu.outputs[0],))
    folded, _ = FoldCodeChains().apply(exposed)
    assert relu in folded.nodes


def test_table_free_tensors_are_computed_once_and_skipped(lenet, mnist):
    from evaluators.approx_network import ApproxNetworkEvaluator

    _, test = mnist
    graph = optimize(QGraph.from_onnx(lenet.int8_onnx))
    x = {"input": Preprocessing().apply(test.images[:500])}
    fixed = approx_runner.table_free(graph, x)
    quantized = graph.nodes[0].outputs[0]  # the input's QuantizeLinear: the only table-free node
    assert list(fixed) == [quantized] and fixed[quantized].dtype == np.int8
    assert fixed[quantized].shape[0] == 500
    table = appaxo.table(404750335)
    expected = approx_runner.run(graph, x, table, cpu)["logits"]
    np.testing.assert_array_equal(approx_runner.run(graph, fixed, table, cpu)["logits"], expected)
    evaluator = ApproxNetworkEvaluator(lenet.int8_onnx, x["input"], test.labels[:500])
    assert list(evaluator.feeds) == [quantized]  # the float input is no longer needed
    np.testing.assert_array_equal(evaluator.logits(table), expected)
    rows = np.array([3, 400, 7])
    np.testing.assert_array_equal(evaluator.logits(table, rows), expected[rows])
