"""Graph transformations compute exactly what the untransformed graph and onnxruntime compute."""

from __future__ import annotations

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from accel import cpu, reference
from circuits import appaxo
from circuits.product_table import ProductTable
from evaluators.data.preprocess import Preprocessing
from evaluators.networks import ort_exactness
from evaluators.networks.quantization import quantize_int8
from evaluators.networks.zoo import export_onnx
from evaluators.runtime import approx_runner
from evaluators.runtime.fused_ops import CODE_CHAIN, CONV_POOL
from evaluators.runtime.qgraph import QGraph
from evaluators.runtime.transforms import FoldCodeChains, FoldCodeMaps, FuseConvPool, optimize


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
    assert "MaxPool" not in ops and "Clip" not in ops
    expected = ort_exactness.session(tmp_path / "q.onnx").run(None, {"input": x.numpy()})[0]
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
    from evaluators.runtime.approx_network import ApproxNetworkEvaluator

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


def test_residual_network_optimizes_exactly_and_leaves_unfoldable_ops(mnist, tmp_path):
    """ResNet blocks: a quantized tensor read by a convolution and by the residual QLinearAdd,
    and ``DequantizeLinear -> Relu -> GlobalAveragePool -> Flatten -> QuantizeLinear``, which
    no code chain may swallow (average pooling does not commute with the code map)."""
    from tests.evaluators.qmodels import ResNetTiny, build, session

    _, test = mnist
    x = Preprocessing().apply(test.images[:200])
    path = build(ResNetTiny(), x[:100], tmp_path, "qoperator")
    graph = QGraph.from_onnx(path)
    optimized = optimize(graph)
    ops = [n.op for n in optimized.nodes]
    assert ops.count("QLinearAdd") == 2 and CODE_CHAIN in ops  # (others fused into convs)
    assert "GlobalAveragePool" in ops and "Relu" in ops  # the chain into the pooling stays
    shared = [t for t in {i for n in optimized.nodes for i in n.inputs}
              if len(optimized.consumers(t)) > 1]
    assert shared  # block inputs read twice
    expected = session(path).run(None, {"input": x})[0]
    table = ProductTable.exact(True)
    np.testing.assert_array_equal(approx_runner.run(optimized, {"input": x}, table, cpu)["out"],
                                  expected)
    fixed = approx_runner.table_free(optimized, {"input": x})
    assert list(fixed) == [optimized.nodes[0].outputs[0]]
    np.testing.assert_array_equal(approx_runner.run(optimized, fixed, table, cpu)["out"], expected)
    approx = appaxo.table(404750335)
    np.testing.assert_array_equal(approx_runner.run(optimized, fixed, approx, cpu)["out"],
                                  approx_runner.run(graph, {"input": x}, approx, cpu)["out"])


def test_chains_through_transpose_and_squeeze_fold_exactly():
    """``DequantizeLinear -> Transpose -> Unsqueeze -> Squeeze -> Relu -> QuantizeLinear`` on the
    codes of a QLinearConv: one code chain, the same codes as onnxruntime."""
    from onnx import TensorProto, helper, numpy_helper

    from tests.evaluators.qmodels import session

    f32, i8 = np.float32, np.int8
    inits = {"xs": np.array(0.02, f32), "xz": np.array(0, i8), "w": np.arange(-27, 27, dtype=i8).reshape(6, 1, 3, 3),
             "ws": np.full(6, 0.01, f32), "wz": np.zeros(6, i8), "ys": np.array(0.03, f32),
             "yz": np.array(0, i8), "zs": np.array(0.017, f32), "zz": np.array(3, i8),
             "axes": np.array([0], np.int64)}
    nodes = [helper.make_node("QuantizeLinear", ["input", "xs", "xz"], ["xq"]),
             helper.make_node("QLinearConv", ["xq", "xs", "xz", "w", "ws", "wz", "ys", "yz"], ["c"],
                              pads=[1, 1, 1, 1]),
             helper.make_node("DequantizeLinear", ["c", "ys", "yz"], ["d"]),
             helper.make_node("Transpose", ["d"], ["t"], perm=[0, 2, 3, 1]),
             helper.make_node("Unsqueeze", ["t", "axes"], ["u"]),
             helper.make_node("Squeeze", ["u", "axes"], ["s"]),
             helper.make_node("Relu", ["s"], ["r"]),
             helper.make_node("QuantizeLinear", ["r", "zs", "zz"], ["out"])]
    model = helper.make_model(helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, 1, 6, 6])],
        [helper.make_tensor_value_info("out", TensorProto.INT8, None)],
        [numpy_helper.from_array(v, k) for k, v in inits.items()]),
        opset_imports=[helper.make_opsetid("", 17)])
    graph = optimize(QGraph.from_onnx(model))
    assert [n.op for n in graph.nodes] == ["QuantizeLinear", "dse.QLinearConvPool"]
    x = np.random.default_rng(0).standard_normal((32, 1, 6, 6)).astype(f32)
    np.testing.assert_array_equal(
        approx_runner.run(graph, {"input": x}, ProductTable.exact(True), cpu)["out"],
        session(model).run(None, {"input": x})[0])


def _gelu_model(extra_reader: bool) -> onnx.ModelProto:
    """QuantizeLinear -> DequantizeLinear -> GELU as exported at opset 17 (x * 0.5 *
    (1 + erf(x / sqrt 2)): a branching region of elementwise float ops) -> QuantizeLinear ->
    DequantizeLinear; ``extra_reader``: the Erf output is also a graph output."""
    consts = {"s": np.float32(0.05), "z": np.int8(0), "s2": np.float32(0.03),
              "root2": np.float32(1.4142135), "one": np.float32(1), "half": np.float32(0.5)}
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
             helper.make_node("DequantizeLinear", ["q", "s", "z"], ["f"]),
             helper.make_node("Div", ["f", "root2"], ["d"]),
             helper.make_node("Erf", ["d"], ["e"]),
             helper.make_node("Add", ["e", "one"], ["a"]),
             helper.make_node("Mul", ["f", "a"], ["m"]),
             helper.make_node("Mul", ["m", "half"], ["g"]),
             helper.make_node("QuantizeLinear", ["g", "s2", "z"], ["gq"]),
             helper.make_node("DequantizeLinear", ["gq", "s2", "z"], ["y"])]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 6])]
    if extra_reader:
        outputs.append(helper.make_tensor_value_info("e", TensorProto.FLOAT, ["n", 6]))
    graph = helper.make_graph(
        nodes, "gelu", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 6])], outputs,
        [numpy_helper.from_array(np.asarray(v), k) for k, v in consts.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_a_branching_region_of_float_ops_folds_into_one_code_map_exactly():
    """GELU between DequantizeLinear and QuantizeLinear becomes a 256-entry code map; the
    results are the unfolded graph's and onnxruntime's on every code, and a region whose
    tensor is read elsewhere stays as it is."""
    x = np.linspace(-7, 7, 600, dtype=np.float32).reshape(100, 6)
    model = _gelu_model(extra_reader=False)
    plain = QGraph.from_onnx(model)
    folded, changed = FoldCodeMaps().apply(plain)
    assert changed and [n.op for n in folded.nodes] == ["QuantizeLinear", CODE_CHAIN,
                                                        "DequantizeLinear"]
    table = ProductTable.exact(True)
    got = approx_runner.run(folded, {"x": x}, table, reference)["y"]
    np.testing.assert_array_equal(got, approx_runner.run(plain, {"x": x}, table, reference)["y"])
    np.testing.assert_array_equal(got, ort_exactness.session(model).run(None, {"x": x})[0])
    kept = QGraph.from_onnx(_gelu_model(extra_reader=True))
    assert FoldCodeMaps().apply(kept) == (kept, False)
