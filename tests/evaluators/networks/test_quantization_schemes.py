"""onnxruntime's three 8-bit schemes (S8S8, U8S8, U8U8) in both graph forms: every one
multiplies through signed and unsigned tables alike, exactly as onnxruntime with the exact
table, in dse's runner and in approximate ONNX files run by onnxruntime (issue 15, item 4)."""

from __future__ import annotations

import itertools

import numpy as np
import onnx
import pytest

from accel.codes import recentre
from circuits import appaxo, baselines
from circuits.product_table import ProductTable
from evaluators.data.preprocess import Preprocessing
from evaluators.networks.quantization import FORMATS, SCHEMES, operand_scheme, quantize_int8
from evaluators.onnx.approximate import approximate_model, session
from evaluators.runtime.approx_network import ApproxNetworkEvaluator
from evaluators.runtime.qgraph import QGraph
from evaluators.runtime.workload import sample_workload
from tests.evaluators.qmodels import exact_outputs

IMAGES = 200
CONFIG = 404750335
UNSIGNED_TRUNCATED = baselines.truncated(6, signed=False).table()


@pytest.mark.parametrize("kind", [np.int8, np.uint8])
@pytest.mark.parametrize("signed", [True, False])
def test_recentred_codes_keep_their_value_and_table_index(kind, signed):
    codes = np.arange(256).astype(np.uint8).view(kind)
    zero_points = np.array([0, 3, 100 if kind == np.int8 else 200], np.int64)
    for zero_point in zero_points:
        moved, moved_zp = recentre(codes, zero_point, signed)
        assert moved.dtype == (np.int8 if signed else np.uint8)
        np.testing.assert_array_equal(moved.astype(np.int64) - moved_zp,
                                      codes.astype(np.int64) - zero_point)
        offset = ProductTable.exact(signed).offset
        index = codes.astype(np.int64) + (128 if kind == np.int8 else 0)
        np.testing.assert_array_equal(moved.astype(np.int64) + offset, index)


@pytest.fixture(scope="module")
def x(mnist) -> np.ndarray:
    """The first test digits, preprocessed."""
    return Preprocessing().apply(mnist[1].images[:IMAGES])


@pytest.fixture(scope="module")
def models(lenet, x, tmp_path_factory):
    """LeNet-5's float model quantized in every scheme and form: {(scheme, format): path}."""
    folder = tmp_path_factory.mktemp("schemes")
    out = {}
    for scheme, fmt in itertools.product(SCHEMES, FORMATS):
        out[scheme, fmt] = folder / f"{scheme}_{fmt}.onnx"
        quantize_int8(lenet.float_onnx, out[scheme, fmt], x[:100], quant_format=fmt, scheme=scheme)
    return out


EXPECTED_SCHEME = {("s8s8", "qoperator"): "s8s8", ("s8s8", "qdq"): "s8s8",
                   ("u8s8", "qoperator"): "u8s8", ("u8s8", "qdq"): "u8s8",
                   # onnxruntime keeps int8 weights for QLinearConv in U8U8 QOperator models
                   ("u8u8", "qoperator"): "mixed", ("u8u8", "qdq"): "u8u8"}


@pytest.mark.parametrize("scheme, fmt", list(itertools.product(SCHEMES, FORMATS)))
def test_exact_tables_of_either_signedness_give_onnxruntime_outputs(models, x, scheme, fmt):
    path = models[scheme, fmt]
    graph = QGraph.from_onnx(path)
    assert operand_scheme(graph) == EXPECTED_SCHEME[scheme, fmt]
    expected = exact_outputs(path, x)
    evaluator = ApproxNetworkEvaluator(path, x, np.zeros(len(x), np.int64))
    for signed in (True, False):
        np.testing.assert_array_equal(evaluator.logits(ProductTable.exact(signed)), expected)


def test_unsigned_operands_carry_zero_points(models):
    """U8U8 weights sit around zero point 128 and uint8 activations have their own zero points:
    the cross terms around the table lookups are exercised, not zero."""
    graph = QGraph.from_onnx(models["u8u8", "qdq"])
    layers = [n for n in graph.nodes if n.op in ("QLinearConv", "QGemm")]
    for node in layers:
        weights = graph.const(node.inputs[5])
        assert weights.dtype == np.uint8 and np.all(weights == 128)
    outputs = [graph.const(n.inputs[8 if n.op == "QGemm" else 7]) for n in layers]
    assert any(z != 0 for z in outputs)  # the logits' zero point


@pytest.mark.parametrize("scheme", ["u8s8", "u8u8"])
@pytest.mark.parametrize("multiplier", [CONFIG, UNSIGNED_TRUNCATED], ids=["appaxo", "unsigned"])
def test_approximate_files_of_uint8_models_match_the_evaluator(models, x, tmp_path, scheme,
                                                               multiplier):
    path = models[scheme, "qoperator"]
    table = appaxo.table(multiplier) if isinstance(multiplier, int) else multiplier
    expected = ApproxNetworkEvaluator(path, x, np.zeros(len(x), np.int64)).logits(table)
    assert not np.array_equal(expected, exact_outputs(path, x))  # the multiplier matters
    out = tmp_path / "approx.onnx"
    onnx.save(approximate_model(onnx.load(path), multiplier), out)
    sess = session(out)
    np.testing.assert_array_equal(sess.run(None, {sess.get_inputs()[0].name: x})[0], expected)
    runner = ApproxNetworkEvaluator(out, x, np.zeros(len(x), np.int64))
    np.testing.assert_array_equal(runner.logits(ProductTable.exact(True)), expected)


def test_workload_operands_are_drawn_in_the_multiplier_domain(models, x):
    graph = QGraph.from_onnx(models["u8s8", "qoperator"])
    signed = sample_workload(graph, x[:16], 2000, images=16, signed=True)
    unsigned = sample_workload(graph, x[:16], 2000, images=16, signed=False)
    assert signed.a.min() >= -128 and signed.a.max() <= 127
    assert unsigned.b.min() >= 0 and unsigned.b.max() <= 255
    np.testing.assert_array_equal(unsigned.a - signed.a, 128)  # the same draws, moved
    np.testing.assert_array_equal(unsigned.b - signed.b, 128)
