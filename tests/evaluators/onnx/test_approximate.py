"""Approximate ONNX files give, in onnxruntime (dse's custom ops) and in dse's runner, exactly
the outputs dse's evaluator gives for the same multipliers."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from circuits import appaxo, baselines
from circuits.product_table import ProductTable
from dse.cli import build_parser
from evaluators.data.preprocess import Preprocessing
from evaluators.errors import ModelError
from evaluators.onnx.approximate import DSE_DOMAIN, EMGAXO_DOMAIN, approximate_model, session
from evaluators.runtime.approx_network import ApproxNetworkEvaluator
from evaluators.runtime.layer_tables import LayerTables

IMAGES = 300
CONFIG = 404750335  # the DESIGN.md golden vector: mean error -188.25
EXACT = ProductTable.exact(True)
TRUNCATED = baselines.truncated(6, signed=True).table()


@pytest.fixture(scope="module")
def data(lenet, mnist):
    """(int8 model path, test images, labels, the evaluator of the plain model)."""
    test = mnist[1]
    x, y = Preprocessing().apply(test.images[:IMAGES]), test.labels[:IMAGES]
    return lenet.int8_onnx, x, y, ApproxNetworkEvaluator(lenet.int8_onnx, x, y)


def _written(model: onnx.ModelProto, folder: Path) -> Path:
    path = folder / "approx.onnx"
    onnx.save(model, path)
    return path


def _onnxruntime(path: Path, x: np.ndarray) -> np.ndarray:
    sess = session(path)
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def _assert_parity(path: Path, x: np.ndarray, y: np.ndarray, expected: np.ndarray) -> None:
    """onnxruntime and the runner reading ``path`` both give ``expected`` (the outputs)."""
    np.testing.assert_array_equal(_onnxruntime(path, x), expected)
    # every custom node carries its own table, which wins over the run's (exact) table
    np.testing.assert_array_equal(ApproxNetworkEvaluator(path, x, y).logits(EXACT), expected)


@pytest.mark.parametrize("multiplier", [CONFIG, TRUNCATED], ids=["appaxo", "table"])
def test_whole_network_file_matches_the_evaluator(data, tmp_path, multiplier):
    int8, x, y, evaluator = data
    table = appaxo.table(multiplier) if isinstance(multiplier, int) else multiplier
    expected = evaluator.logits(table)
    assert not np.array_equal(expected, evaluator.logits(EXACT))  # the multiplier matters
    model = approximate_model(onnx.load(int8), multiplier)
    custom = [n for n in model.graph.node if n.domain == DSE_DOMAIN]
    assert [n.op_type for n in custom] == ["ApproxQLinearConv"] * 2 + ["ApproxQGemm"] * 3
    if isinstance(multiplier, int):
        assert all(helper.get_attribute_value(n.attribute[-1]) == CONFIG for n in custom)
    else:
        assert len(model.graph.initializer) == len(onnx.load(int8).graph.initializer) + 1
    _assert_parity(_written(model, tmp_path), x, y, expected)


def test_per_layer_multipliers_match_the_layer_assignment(data, tmp_path):
    int8, x, y, evaluator = data
    chosen = {"/conv1/Conv_quant": CONFIG, "/fc2/Gemm_quant": TRUNCATED}
    assignment = LayerTables({"/conv1/Conv_quant": appaxo.table(CONFIG),
                              "/fc2/Gemm_quant": TRUNCATED}, EXACT)
    expected = evaluator.logits(assignment)
    model = approximate_model(onnx.load(int8), chosen)
    assert sorted(n.name for n in model.graph.node if n.domain == DSE_DOMAIN) == sorted(chosen)
    _assert_parity(_written(model, tmp_path), x, y, expected)
    # a LayerTables assignment is written as it is: every layer carries its table
    path = tmp_path / "layers.onnx"
    onnx.save(approximate_model(onnx.load(int8), assignment), path)
    np.testing.assert_array_equal(ApproxNetworkEvaluator(path, x, y).logits(TRUNCATED), expected)


def test_batched_runs_use_each_node_s_own_table(data, tmp_path):
    int8, x, y, evaluator = data
    path = _written(approximate_model(onnx.load(int8), {"/fc1/Gemm_quant": CONFIG}), tmp_path)
    runner = ApproxNetworkEvaluator(path, x, y)
    for table, out in zip([EXACT, TRUNCATED], runner.logits_batch([EXACT, TRUNCATED])):
        np.testing.assert_array_equal(
            out, evaluator.logits(LayerTables({"/fc1/Gemm_quant": appaxo.table(CONFIG)}, table)))


def test_emgaxo_mode_round_trips(data, tmp_path):
    int8, x, y, evaluator = data
    model = approximate_model(onnx.load(int8), CONFIG, emgaxo=True)
    gemms = [n for n in model.graph.node if n.op_type == "ApproxQGemm"]
    assert [n.domain for n in gemms] == [EMGAXO_DOMAIN] * 3
    assert all(len(n.input) == 9 and [a.name for a in n.attribute][-1] == "INIT_Value"
               for n in gemms)
    assert any(o.domain == EMGAXO_DOMAIN for o in model.opset_import)
    layers = {n.name: appaxo.table(CONFIG) for n in gemms}
    _assert_parity(_written(model, tmp_path), x, y, evaluator.logits(LayerTables(layers, EXACT)))


def test_nodes_that_cannot_be_rewritten_are_one_line_errors(lenet):
    model = onnx.load(lenet.int8_onnx)
    cases = [
        (dict(multipliers=CONFIG, nodes=["/Relu"]), "node '/Relu' (Relu) cannot be rewritten"),
        (dict(multipliers=CONFIG, nodes=["nope"]), "node 'nope' is not in the model"),
        (dict(multipliers=CONFIG, nodes=["/conv1/Conv_quant"], emgaxo=True),
         "EMGAxO mode replaces QGemm nodes only"),
        (dict(multipliers=TRUNCATED, emgaxo=True), "AppAxO configurations only"),
        (dict(multipliers={"/fc1/Gemm_quant": CONFIG}, nodes=["/fc2/Gemm_quant"]),
         "node '/fc2/Gemm_quant' is chosen but given no multiplier"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ModelError, match=re.escape(message)) as err:
            approximate_model(model, **kwargs)
        assert "\n" not in str(err.value)


def test_a_float_model_names_its_float_node():
    conv = helper.make_node("Conv", ["x", "w"], ["y"], name="stem")
    graph = helper.make_graph(
        [conv], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [helper.make_tensor("w", TensorProto.FLOAT, [1, 1, 1, 1], [1.0])])
    with pytest.raises(ModelError, match="node 'stem' is a float Conv .*QOperator"):
        approximate_model(helper.make_model(graph), CONFIG)


def test_cli_writes_the_file(lenet, tmp_path, capsys):
    parser = build_parser()
    table = tmp_path / "trunc.npy"
    np.save(table, TRUNCATED.values)
    out = tmp_path / "out.onnx"
    args = parser.parse_args(["onnx", "approx", str(lenet.int8_onnx), "--multiplier", str(table),
                              "--nodes", "/conv2/Conv_quant,/fc3/Gemm_quant", "-o", str(out)])
    assert args.func(args) == 0
    assert "1 ApproxQLinearConv, 1 ApproxQGemm" in capsys.readouterr().out
    written = onnx.load(out)
    assert {n.name for n in written.graph.node if n.domain == DSE_DOMAIN} == \
        {"/conv2/Conv_quant", "/fc3/Gemm_quant"}


def _qlinear_matmul_model() -> onnx.ModelProto:
    """x (int8, [n, 16]) times a constant int8 [16, 4] weight, requantized to int8."""
    rng = np.random.default_rng(0)
    consts = {"xs": np.float32(0.05), "xz": np.int8(0),
              "w": rng.integers(-128, 128, (16, 4)).astype(np.int8), "ws": np.float32(0.02),
              "wz": np.int8(0), "ys": np.float32(0.4), "yz": np.int8(0)}
    node = helper.make_node("QLinearMatMul", ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz"], ["y"],
                            name="mm")
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("x", TensorProto.INT8, ["n", 16])],
        [helper.make_tensor_value_info("y", TensorProto.INT8, ["n", 4])],
        [onnx.numpy_helper.from_array(np.asarray(v), k) for k, v in consts.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("multiplier", [CONFIG, TRUNCATED], ids=["appaxo", "table"])
def test_qlinear_matmul_runs_in_onnxruntime_as_in_the_runner(multiplier):
    from accel import cpu
    from evaluators.runtime.approx_runner import run
    from evaluators.runtime.qgraph import QGraph

    model = _qlinear_matmul_model()
    x = np.random.default_rng(1).integers(-128, 128, (32, 16)).astype(np.int8)
    table = appaxo.table(multiplier) if isinstance(multiplier, int) else multiplier
    expected = run(QGraph.from_onnx(model), {"x": x}, table, cpu)["y"]
    assert not np.array_equal(expected, run(QGraph.from_onnx(model), {"x": x}, EXACT, cpu)["y"])
    approx = approximate_model(model, multiplier)
    np.testing.assert_array_equal(session(approx).run(None, {"x": x})[0], expected)
    np.testing.assert_array_equal(run(QGraph.from_onnx(approx), {"x": x}, EXACT, cpu)["y"], expected)
