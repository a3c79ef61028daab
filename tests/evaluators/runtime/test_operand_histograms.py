"""The exact operand histograms of ``evaluators.runtime.workload``: every (activation, weight) pair a
layer multiplies, padding included, counted by brute force on small real quantized layers
(grouped, strided, dilated and padded convolutions, Gemm and a 3-D MatMul)."""

from __future__ import annotations

import numpy as np
import pytest

from accel import cpu
from circuits import appaxo
from circuits.product_table import ProductTable
from evaluators.data.preprocess import Preprocessing
from evaluators.recovery.analysis import error_map, workload_error
from evaluators.runtime import approx_runner
from evaluators.runtime.node import Node
from evaluators.runtime.qgraph import QGraph
from evaluators.runtime.workload import (
    MAC_OPS,
    mac_counts,
    operand_histograms,
    sample_layer_workloads,
    sample_workload,
)
from tests.evaluators.qmodels import Separable, TokenMixer, build

APPROXIMATE = 404750335  # the AppAxO golden configuration: mean absolute error 188.25


def brute_force(graph: QGraph, node: Node, x: np.ndarray) -> np.ndarray:
    """The 256x256 counts of every multiplication of one layer, each enumerated explicitly."""
    w = graph.const(node.inputs[3])
    if node.op == "QLinearConv":
        top, left, bottom, right = node.attr("pads", [0, 0, 0, 0])
        zero_point = int(graph.const(node.inputs[2]))
        xp = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)), constant_values=zero_point)
        (sh, sw), (dh, dw) = node.attr("strides", [1, 1]), node.attr("dilations", [1, 1])
        outs, cg, kh, kw = w.shape
        per_group = outs // int(node.attr("group", 1))
        oh = (xp.shape[2] - dh * (kh - 1) - 1) // sh + 1
        ow = (xp.shape[3] - dw * (kw - 1) - 1) // sw + 1
        n, o, y, col, c, p, q = np.meshgrid(*(np.arange(s) for s in (len(x), outs, oh, ow, cg, kh, kw)),
                                            indexing="ij", sparse=True)
        a = xp[n, (o // per_group) * cg + c, y * sh + p * dh, col * sw + q * dw]
        b = np.broadcast_to(w[o, c, p, q], a.shape)
    else:
        rows = x.reshape(-1, x.shape[-1])
        weights = w.T if node.attr("transB", 0) else w
        m, k, o = np.meshgrid(*(np.arange(s) for s in (len(rows), *weights.shape)),
                              indexing="ij", sparse=True)
        a, b = rows[m, k], np.broadcast_to(weights[k, o], (len(rows), *weights.shape))
    index = (a.astype(np.int64) + 128) * 256 + b.astype(np.int64) + 128
    return np.bincount(index.ravel(), minlength=65536).reshape(256, 256)


@pytest.fixture(scope="module")
def networks(tmp_path_factory) -> dict[str, tuple[QGraph, np.ndarray]]:
    """Two small quantized networks with random weights, and their (standardized) inputs."""
    rng = np.random.default_rng(0)
    rgb = ((rng.integers(0, 256, (3, 3, 32, 32)) - 120) / 64).astype(np.float32)
    gray = ((rng.integers(0, 256, (3, 1, 28, 28)) - 120) / 64).astype(np.float32)
    out = {}
    for name, model, images in [("separable", Separable(), rgb), ("token_mixer", TokenMixer(), gray)]:
        folder = tmp_path_factory.mktemp(name)
        out[name] = QGraph.from_onnx(build(model, images, folder, "qoperator")), images
    return out


@pytest.mark.parametrize("name", ["separable", "token_mixer"])
def test_histograms_count_every_multiplication_exactly(networks, name):
    graph, images = networks[name]
    layers = [n for n in graph.nodes if n.op in MAC_OPS]
    ops = {n.op for n in layers}
    assert ops >= ({"QLinearConv", "QGemm"} if name == "separable" else {"QLinearMatMul"}), ops
    if name == "separable":  # the layer shapes the brute force must get right
        convs = [n for n in layers if n.op == "QLinearConv"]
        assert {int(n.attr("group", 1)) for n in convs} >= {1, 8}
        assert any(n.attr("dilations", [1, 1]) != [1, 1] for n in convs)
        assert any(n.attr("strides", [1, 1]) != [1, 1] for n in convs)
    histograms = operand_histograms(graph, images, batch=2)  # two batches: counts add up
    captured = approx_runner.run(graph, {graph.inputs[0]: images}, ProductTable.exact(True), cpu,
                                 [n.inputs[0] for n in layers] + [n.outputs[0] for n in layers])
    assert list(histograms) == [n.name for n in layers]
    macs = mac_counts(graph, captured)
    for node in layers:
        expected = brute_force(graph, node, captured[node.inputs[0]])
        np.testing.assert_array_equal(histograms[node.name], expected, err_msg=node.name)
        # padded positions included: every multiplication of the layer is counted
        assert histograms[node.name].sum() == macs[node.name]


def test_an_approximate_network_changes_what_later_layers_multiply(networks):
    graph, images = networks["separable"]
    exact = operand_histograms(graph, images)
    approximate = operand_histograms(graph, images, appaxo.table(APPROXIMATE))
    first, *later = exact
    np.testing.assert_array_equal(exact[first], approximate[first])  # the same input codes
    assert any(not np.array_equal(exact[n], approximate[n]) for n in later)
    assert all(exact[n].sum() == approximate[n].sum() for n in exact)  # the same MACs


def test_the_power_workload_is_drawn_from_the_histograms(networks):
    graph, images = networks["separable"]
    histograms = operand_histograms(graph, images)
    streams = sample_layer_workloads(graph, images, length=2000, images=len(images), seed=1)
    for layer, stream in streams.items():
        drawn = histograms[layer][stream.a + 128, stream.b + 128]
        assert (drawn > 0).all(), layer  # every sampled pair is one the layer multiplies


def test_error_map_and_workload_weighted_error():
    table = appaxo.table(APPROXIMATE)
    errors = error_map(table)
    assert not error_map(ProductTable.exact(True)).any()
    assert errors.mean() == 188.25 and errors.max() == 753  # the golden vector's figures
    uniform = workload_error(np.ones((256, 256), dtype=np.int64), errors)
    assert uniform.macs == 65536 and uniform.mean_abs_error == 188.25
    top = np.sort(errors.ravel())[-655:].sum() / errors.sum()
    assert uniform.top_share == pytest.approx(top)
    one_cell = np.zeros((256, 256), dtype=np.int64)
    one_cell[128 + 7, 128 + 9] = 5  # 5 multiplications of 7 x 9
    hit = workload_error(one_cell, errors)
    assert hit.mean_abs_error == errors[135, 137] and hit.top_share == 1.0
    assert workload_error(one_cell, error_map(ProductTable.exact(True))).top_share is None


def test_the_power_workload_of_the_approximated_layers_is_drawn_from_them_only(lenet, mnist):
    """``approximate``: the multiplier sees only the operands of the layers it replaces."""
    graph = QGraph.from_onnx(lenet.int8_onnx)
    x = Preprocessing().apply(mnist[1].images[:32])
    last = [n for n in graph.nodes if n.op in MAC_OPS][-1]
    weights = set(graph.const(last.inputs[3]).astype(np.int64).ravel())
    confined = sample_workload(graph, x, 2000, images=32, approximated=[last.name])
    assert set(confined.b) <= weights
    everywhere = sample_workload(graph, x, 2000, images=32)
    assert not set(everywhere.b) <= weights
