"""The analytic FPGA cost model of a network's firmware (``evaluators.firmware.cost``): each
rule of the module docstring on hand-counted layers, and the layer shapes read from a model."""

from __future__ import annotations

import math

import numpy as np
import onnx
import pytest

from evaluators.firmware.cost import (
    BRAM_MIN_DEPTH,
    LayerShape,
    bram18_blocks,
    layer_cost,
    layer_shapes,
    network_cost,
)
from evaluators.firmware.precision import narrow, prune, table_nodes
from evaluators.networks.prepared import int8_layer_macs
from tests.evaluators import qmodels

DENSE = LayerShape("fc", weights=1000, nonzero=600, fan_in=100, applications=1, weight_bits=4,
                   activation_bits=6)
CONV = LayerShape("conv", weights=150, nonzero=150, fan_in=25, applications=784, weight_bits=8,
                  activation_bits=8)


def test_multipliers_luts_and_latency_of_a_dense_layer():
    cost = layer_cost(DENSE, reuse_factor=4, luts_per_multiplier=20.0, exact=False)
    assert cost.multipliers == 150  # ceil(600 non-zero weights / 4)
    assert cost.multiplier_luts == 150 * 20.0
    assert cost.adder_luts == 150 * (4 + 6 + 7)  # product bits + ceil(log2 100) guard bits
    assert cost.storage_luts == 150 * 4  # depth 4 <= 64: distributed RAM, 150 * 4 bits wide
    assert cost.bram == 0 and cost.dsps == 0
    assert cost.interval_cycles == 4 and cost.latency_cycles == 4 + 1 + 7 + 1


def test_a_convolution_reuses_its_multipliers_at_every_output_pixel():
    cost = layer_cost(CONV, reuse_factor=1, luts_per_multiplier=62.0, exact=True)
    assert cost.multipliers == 150 and cost.storage_luts == 0  # RF 1: weights are constants
    assert cost.interval_cycles == 784 and cost.latency_cycles == 784 + 1 + 5 + 1


def test_weights_go_to_bram_from_the_minimum_depth_on():
    shallow = layer_cost(DENSE, BRAM_MIN_DEPTH // 2, 20.0, exact=False)
    deep = layer_cost(DENSE, BRAM_MIN_DEPTH, 20.0, exact=False)
    assert shallow.bram == 0 and shallow.storage_luts > 0
    width = math.ceil(600 / BRAM_MIN_DEPTH) * 4  # 10 multipliers x 4 bits: 40 > 36 bits
    assert deep.storage_luts == 0 and deep.bram == bram18_blocks(BRAM_MIN_DEPTH, width) == 2


@pytest.mark.parametrize(("depth", "width", "blocks"),
                         [(64, 36, 1), (64, 37, 2), (512, 72, 2), (1024, 18, 1), (1024, 36, 2),
                          (16384, 1, 1), (16385, 1, 2), (2048, 9, 1)])
def test_bram18_blocks_pick_the_best_aspect_ratio(depth, width, blocks):
    assert bram18_blocks(depth, width) == blocks


def test_dsps_only_for_exact_products_of_wide_weights():
    wide = LayerShape("fc", 1000, 1000, 100, 1, weight_bits=9, activation_bits=8)
    assert layer_cost(wide, 1, 50.0, exact=True).dsps == 1000
    assert layer_cost(wide, 1, 50.0, exact=True).multiplier_luts == 0
    assert layer_cost(wide, 1, 50.0, exact=False).dsps == 0  # an approximate circuit: fabric
    assert layer_cost(DENSE, 1, 20.0, exact=True).dsps == 0  # 4-bit weights: LUTs


def test_network_totals_add_the_layers_and_take_the_slowest_interval():
    totals, layers = network_cost([CONV, DENSE], 2, {"conv": 62.0, "fc": 20.0}, exact=False)
    assert [row["layer"] for row in layers] == ["conv", "fc"]
    assert totals["multipliers"] == 75 + 300
    assert totals["fpga_luts"] == pytest.approx(sum(
        r["multiplier_luts"] + r["adder_luts"] + r["storage_luts"] for r in layers))
    assert totals["latency_cycles"] == sum(r["latency_cycles"] for r in layers)
    assert totals["interval_cycles"] == 784 * 2
    with pytest.raises(ValueError, match="reuse factor 0"):
        network_cost([CONV], 0, {"conv": 62.0}, exact=False)


def test_layer_shapes_read_the_model(tmp_path):
    x = np.random.default_rng(0).random((16, 1, 28, 28), dtype=np.float32)
    base = onnx.load(str(qmodels.build(qmodels.VggTiny(), x, tmp_path, "qoperator")))
    layers = [n.name for n in table_nodes(base)]
    model = narrow(prune(base, 0.5)[0], dict.fromkeys(layers, 4), dict.fromkeys(layers, 8))
    path = tmp_path / "narrowed.onnx"
    onnx.save(model, str(path))
    shapes = layer_shapes(model, int8_layer_macs(path, x[:1]), [4] * 4, [8] * 4)
    assert [(s.weights, s.fan_in, s.applications) for s in shapes] == [
        (8 * 9, 9, 28 * 28), (16 * 8 * 9, 8 * 9, 14 * 14), (32 * 16 * 7 * 7, 16 * 7 * 7, 1),
        (10 * 32, 32, 1)]
    assert all(s.nonzero <= s.weights // 2 for s in shapes)
