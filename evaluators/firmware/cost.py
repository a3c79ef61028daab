"""An analytic FPGA cost model of a network's firmware in the style of hls4ml ``io_parallel``.

What it counts, per table-multiplying layer ``l`` (Conv/Gemm/MatMul), with ``RF`` the reuse
factor, ``nz_l`` the layer's non-zero weights (pruned weights, and weights that round to 0 on
``w_l`` bits, are constants the synthesis removes: hls4ml drops zero-weight multiplications),
``w_l``/``a_l`` its weight/activation bits and ``P_l`` its kernel applications per inference
(output pixels of a convolution, 1 for a dense layer):

- multipliers ``M_l = ceil(nz_l / RF)``: the layer's multiplier array, each multiplier reused
  ``RF`` times per kernel application (one pixel at a time: parallelization factor 1).
- DSPs: a product goes to a DSP only when its weight has at least ``DSP_MIN_WEIGHT_BITS`` (9)
  bits and the multiplier is exact (hls4ml's DSP-aware pruning treats layers with narrower
  weights as multiplied in LUTs, and an approximate multiplier is fabric by construction): with
  8x8 product tables there is never one; the column says so.
- LUTs: ``M_l * LUT(multiplier, a_l, w_l)`` (the calibrated AppAxO model narrowed by
  ``circuits.fpga_narrow``) plus the adder tree, one adder per product of
  ``w_l + a_l + ceil(log2 fan_in_l)`` bits at one LUT per bit (carry chains), plus weight storage
  in distributed RAM (below).
- weight storage: with ``RF = 1`` the weights are constants in the logic (nothing stored). With
  ``RF >= 2`` they form a memory of depth ``RF`` and width ``M_l * w_l`` bits (hls4ml reshapes
  the weight array by the block factor): in BRAM18 blocks when ``RF >= BRAM_MIN_DEPTH`` (64: a
  shallower memory wastes most of a block, and HLS maps it to LUTs), counted over the BRAM18
  aspect ratios (16Kx1 ... 512x36); otherwise in distributed RAM, one LUT per 64 x 1 bits.
- latency ``sum_l (P_l * RF + D_l)`` cycles, the layers one after another; the pipeline depth
  ``D_l = 1 (multiply) + ceil(log2 fan_in_l) (one adder-tree level per cycle) + 1 (bias,
  requantization, activation)``. The initiation interval is the slowest layer's ``P_l * RF``.

Not counted: flip-flops, pooling and activation layers, input/output buffers, control logic;
a multiplier is the full circuit with both operands variable (a constant weight would let the
synthesis simplify it further).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import onnx
from onnx import numpy_helper

from evaluators.firmware.precision import table_nodes

DSP_MIN_WEIGHT_BITS = 9
BRAM_MIN_DEPTH = 64
LUTRAM_BITS = 64  # bits of one LUT as distributed RAM (RAM64X1S)
BRAM18_SHAPES = ((16384, 1), (8192, 2), (4096, 4), (2048, 9), (1024, 18), (512, 36))
SOURCE = "analytic network model (hls4ml io_parallel)"


@dataclass(frozen=True)
class LayerShape:
    """What the cost of one layer depends on, read from its int8 model."""

    name: str
    weights: int  # weight count
    nonzero: int  # non-zero weight codes
    fan_in: int  # weights per output value (the dot product's length)
    applications: int  # kernel applications per inference (output pixels; 1 for dense)
    weight_bits: int
    activation_bits: int


def layer_shapes(model: onnx.ModelProto, macs: Mapping[str, int], weight_bits: Sequence[int],
                 activation_bits: Sequence[int]) -> list[LayerShape]:
    """The table layers of an int8 model (network order) with their bits; ``macs``:
    multiplications per inference of each layer (``network.int8_layer_macs``)."""
    inits = {t.name: t for t in model.graph.initializer}
    out = []
    for node, w_bits, a_bits in zip(table_nodes(model), weight_bits, activation_bits, strict=True):
        codes = numpy_helper.to_array(inits[node.input[3]])
        trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
        if node.op_type == "QLinearConv" or (node.op_type == "QGemm" and trans_b):
            fan_in = codes.size // codes.shape[0]
        else:
            fan_in = codes.shape[0]
        out.append(LayerShape(node.name, int(codes.size), int(np.count_nonzero(codes)), int(fan_in),
                              max(1, round(macs[node.name] / codes.size)), int(w_bits), int(a_bits)))
    return out


def bram18_blocks(depth: int, width: int) -> int:
    """BRAM18 blocks of a ``depth`` x ``width``-bit memory in the best aspect ratio."""
    return min(math.ceil(depth / d) * math.ceil(width / w) for d, w in BRAM18_SHAPES)


@dataclass(frozen=True)
class LayerCost:
    """The counted resources and cycles of one layer."""

    layer: str
    multipliers: int
    dsps: int
    multiplier_luts: float
    adder_luts: int
    storage_luts: int
    bram: int
    latency_cycles: int
    interval_cycles: int


def layer_cost(shape: LayerShape, reuse_factor: int, luts_per_multiplier: float,
               exact: bool) -> LayerCost:
    """One layer's resources under ``reuse_factor`` (see the module docstring)."""
    multipliers = math.ceil(shape.nonzero / reuse_factor)
    on_dsp = exact and shape.weight_bits >= DSP_MIN_WEIGHT_BITS
    tree = math.ceil(math.log2(max(shape.fan_in, 1)))
    adder = multipliers * (shape.weight_bits + shape.activation_bits + tree)
    width = multipliers * shape.weight_bits
    bram = storage = 0
    if reuse_factor >= BRAM_MIN_DEPTH:
        bram = bram18_blocks(reuse_factor, width) if width else 0
    elif reuse_factor >= 2:
        storage = math.ceil(reuse_factor / LUTRAM_BITS) * width
    interval = shape.applications * reuse_factor
    return LayerCost(shape.name, multipliers, multipliers if on_dsp else 0,
                     0.0 if on_dsp else multipliers * float(luts_per_multiplier), adder, storage,
                     bram, interval + 1 + tree + 1, interval)


def network_cost(shapes: Sequence[LayerShape], reuse_factor: int,
                 luts_per_multiplier: Mapping[str, float], exact: bool
                 ) -> tuple[dict[str, float], list[dict]]:
    """The network's totals (``fpga_luts``, ``multipliers``, ``dsps``, ``bram``,
    ``latency_cycles``, ``interval_cycles`` and the LUT shares) and one row per layer;
    ``luts_per_multiplier``: each layer's multiplier at its operand widths."""
    if reuse_factor < 1:
        raise ValueError(f"reuse factor {reuse_factor}: expected 1 or more")
    layers = [layer_cost(s, reuse_factor, luts_per_multiplier[s.name], exact) for s in shapes]
    totals = {
        "multiplier_luts": sum(c.multiplier_luts for c in layers),
        "adder_luts": sum(c.adder_luts for c in layers),
        "storage_luts": sum(c.storage_luts for c in layers),
        "multipliers": sum(c.multipliers for c in layers),
        "dsps": sum(c.dsps for c in layers),
        "bram": sum(c.bram for c in layers),
        "latency_cycles": sum(c.latency_cycles for c in layers),
        "interval_cycles": max(c.interval_cycles for c in layers),
    }
    totals["fpga_luts"] = totals["multiplier_luts"] + totals["adder_luts"] + totals["storage_luts"]
    return {k: float(v) for k, v in totals.items()}, [asdict(c) for c in layers]
