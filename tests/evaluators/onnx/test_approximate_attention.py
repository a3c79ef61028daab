"""Approximate ONNX files of products of two activations (attention): ApproxQLinearMatMul of two
activations and ApproxMatMulInteger after dynamic quantization give, in onnxruntime (dse's
custom ops) and in dse's runner, the outputs the runner gives the plain model with the same
multiplier."""

from __future__ import annotations

import numpy as np
import pytest

from accel import cpu
from circuits import appaxo
from circuits.multiplier import truncated
from circuits.product_table import ProductTable
from evaluators.onnx.approximate import DSE_DOMAIN, approximate_model, rewritable_nodes, session
from evaluators.runtime.approx_runner import run
from evaluators.runtime.qgraph import QGraph
from tests.evaluators.runtime.test_activation_products import (
    code_feeds,
    dynamic_matmul_model,
    float_feeds,
    qlinear_matmul_model,
)

CONFIG = 404750335
EXACT = ProductTable.exact(True)
MULTIPLIERS = {"appaxo": CONFIG, "unsigned table": truncated(6, signed=False, compensate=True).table()}


def _table(multiplier) -> ProductTable:
    return appaxo.table(multiplier) if isinstance(multiplier, int) else multiplier


@pytest.mark.parametrize("multiplier", MULTIPLIERS.values(), ids=MULTIPLIERS)
@pytest.mark.parametrize("scheme", ["s8s8", "u8u8"])
def test_qlinear_matmul_of_two_activations(scheme, multiplier):
    model, feeds = qlinear_matmul_model(scheme), code_feeds(scheme, 8)
    expected = run(QGraph.from_onnx(model), feeds, _table(multiplier), cpu)["y"]
    assert not np.array_equal(expected, run(QGraph.from_onnx(model), feeds, EXACT, cpu)["y"])
    approx = approximate_model(model, multiplier)
    assert [(n.op_type, n.domain) for n in approx.graph.node] == [("ApproxQLinearMatMul", DSE_DOMAIN)]
    np.testing.assert_array_equal(session(approx).run(["y"], feeds)[0], expected)
    np.testing.assert_array_equal(run(QGraph.from_onnx(approx), feeds, EXACT, cpu)["y"], expected)


@pytest.mark.parametrize("multiplier", MULTIPLIERS.values(), ids=MULTIPLIERS)
def test_dynamic_quantization_with_approx_matmul_integer(multiplier):
    model, feeds = dynamic_matmul_model(), float_feeds(9)
    assert rewritable_nodes(model) == ["scores"]
    outputs = ["acc", "y", "qq"]
    expected = run(QGraph.from_onnx(model), feeds, _table(multiplier), cpu)
    assert not np.array_equal(expected["acc"], run(QGraph.from_onnx(model), feeds, EXACT, cpu)["acc"])
    approx = approximate_model(model, multiplier)
    assert "ApproxMatMulInteger" in [n.op_type for n in approx.graph.node]
    from_ort = session(approx).run(outputs, feeds)
    from_runner = run(QGraph.from_onnx(approx), feeds, EXACT, cpu)
    for name, value in zip(outputs, from_ort):
        np.testing.assert_array_equal(value, expected[name], err_msg=name)
        np.testing.assert_array_equal(from_runner[name], expected[name], err_msg=name)
