"""An int8 network with its approximate multiplier(s) as an hls4ml project: C++ firmware whose
C simulation computes exactly what dse's evaluator computes.

The QOperator graph (``evaluators.runtime.qgraph``, its code chains folded) becomes an hls4ml layer list,
io_parallel, every tensor of ``ap_int`` codes:

- each QLinearConv / QGemm / QLinearMatMul becomes a Conv2D / Dense layer on ``ap_int<8>``
  activation and weight codes with an ``ap_int<32>`` bias and accumulator, whose product hook
  (the ``product`` of its config in ``parameters.h``) reads that layer's 256x256 product table:
  every multiplication goes through the table, zero weights and padded positions included;
- after it, a ``DseRequant`` layer requantizes the int32 accumulators to ``ap_int<8>`` codes as
  onnxruntime does (``accel.requant``: float32 accumulator times the float32 multiplier
  ``x_scale * w_scale / y_scale``, clamp, round half to even, zero point), with the ReLU or Clip
  of the next code chain folded into its clamp;
- max pooling runs on the codes (exact: the requantization and the clamp are non-decreasing);
- a Flatten becomes an hls4ml Reshape, and the next Dense layer's weight rows are permuted so
  that hls4ml's channels-last order reads what ONNX's NCHW flatten reads;
- a QLinearSoftmax over flat rows (the jet tagger's last layer) becomes a ``DseSoftmax`` layer
  computing onnxruntime's quantized softmax on the codes: its exp table (``qops.softmax_exps``),
  the float32 sum in input order, ``rint(e * floor(1 / y_scale) / sum)`` (the quotient in
  double) plus the zero point;
  the ties its coarse codes produce are kept, as the evaluator keeps them.

What precedes the first table layer (the input's QuantizeLinear) and the output's
DequantizeLinear stay in Python, computed by the evaluator's own functions: the firmware reads
and writes int8 codes. Anything else is refused with one line naming the node.

The tables live in ``firmware/dse_approx.h``, one per table layer: constant ROM contents for
synthesis and, in the C simulation, arrays the compiled library replaces at run time
(``HlsProject.set_tables``), so one compilation serves every assignment of tables.
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import re
import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import hls4ml
import numpy as np
from hls4ml.backends.template import FunctionCallTemplate, LayerConfigTemplate
from hls4ml.model import ModelGraph
from hls4ml.model.attributes import Attribute
from hls4ml.model.layers import Layer, register_layer
from tqdm import tqdm

from circuits.product_table import ProductTable
from evaluators.classification import logits_metrics
from evaluators.errors import ModelError
from evaluators.runtime import approx_runner, qops
from evaluators.runtime.approx_network import ApproxNetworkEvaluator
from evaluators.runtime.core_ops import (
    Context,
    conv_arguments,
    qgemm_arguments,
    qlinear_matmul_arguments,
)
from evaluators.runtime.fused_ops import CODE_CHAIN
from evaluators.runtime.layer_tables import Assignment, layer_table
from evaluators.runtime.node import Node
from evaluators.runtime.ops import TABLE_OPS
from evaluators.runtime.qgraph import QGraph
from evaluators.runtime.transforms import FoldCodeChains

BACKENDS = ("Vitis", "Vivado")
PROJECT = "dse_network"  # the top function and project name
APPROX_HEADER = "dse_approx.h"  # under firmware/: the tables, product hooks and requantization
CODE = "ap_int<8>"
WIDE = "ap_int<32>"
ENTRIES = 256 * 256
PRODUCT_HOOK = "using product = nnet::product::mult<x_T, y_T>;"


class HlsExportError(ModelError):
    """A network, table or request the hls4ml export cannot serve; one line naming the node,
    layer or setting."""


# --- the requantization and softmax layers, as hls4ml extensions -------------------------

class DseRequant(Layer):
    """onnxruntime's requantization of int32 accumulators to int8 codes, per output channel."""

    _expected_attributes = [
        Attribute("n_in"),
        Attribute("n_chan"),
        Attribute("zero_point"),
        Attribute("min_code"),
        Attribute("max_code"),
        Attribute("multiplier", value_type=np.ndarray),
    ]

    def initialize(self) -> None:
        self.add_output_variable(list(self.get_input_variable().shape))


class DseSoftmax(Layer):
    """onnxruntime's QLinearSoftmax of a row of int8 codes: int8 probability codes."""

    _expected_attributes = [
        Attribute("n_in"),
        Attribute("zero_point"),
        Attribute("min_code"),
        Attribute("max_code"),
        Attribute("numerator", value_type=float),
        Attribute("exps", value_type=np.ndarray),
    ]

    def initialize(self) -> None:
        self.add_output_variable(list(self.get_input_variable().shape))


def _float_literals(values: np.ndarray) -> str:
    """float32 values as C++ literals; 9 significant digits give back the very float32 value."""
    return ", ".join(f"{float(v):.8e}f" for v in np.asarray(values, np.float32).ravel())


REQUANT_CONFIG = """struct config{index} {{
    static const unsigned n_in = {n_in};
    static const unsigned n_chan = {n_chan};
    static const int zero_point = {zero_point};
    static const int min_code = {min_code};
    static const int max_code = {max_code};
    static const float multiplier[n_chan];
}};
const float config{index}::multiplier[{n_chan}] = {{{multipliers}}};
"""

SOFTMAX_CONFIG = """struct config{index} {{
    static const unsigned n_in = {n_in};
    static const int zero_point = {zero_point};
    static const int min_code = {min_code};
    static const int max_code = {max_code};
    static const float numerator;
    static const float exps[256];
}};
const float config{index}::numerator = {numerator_literal};
const float config{index}::exps[256] = {{{exps_literal}}};
"""


class RequantConfigTemplate(LayerConfigTemplate):
    def __init__(self) -> None:
        super().__init__(DseRequant)

    def format(self, node) -> str:
        params = self._default_config_params(node)
        params["multipliers"] = _float_literals(node.get_attr("multiplier"))
        return REQUANT_CONFIG.format(**params)


class SoftmaxConfigTemplate(LayerConfigTemplate):
    def __init__(self) -> None:
        super().__init__(DseSoftmax)

    def format(self, node) -> str:
        params = self._default_config_params(node)
        params["numerator_literal"] = _float_literals(node.get_attr("numerator"))
        params["exps_literal"] = _float_literals(node.get_attr("exps"))
        return SOFTMAX_CONFIG.format(**params)


class _DseCall(FunctionCallTemplate):
    """The call of ``dse::<function>`` (in ``dse_approx.h``) on a layer's input and output."""

    layer: type[Layer]
    function: str

    def __init__(self) -> None:
        super().__init__(self.layer, include_header=[APPROX_HEADER])

    def format(self, node) -> str:
        return (f"dse::{self.function}<{{input_t}}, {{output_t}}, {{config}}>({{input}}, "
                "{output});").format(**self._default_function_params(node))


class RequantFunctionTemplate(_DseCall):
    layer, function = DseRequant, "requant"


class SoftmaxFunctionTemplate(_DseCall):
    layer, function = DseSoftmax, "softmax"


@cache
def _register_extensions() -> None:
    """Teach hls4ml the requantization and softmax layers (once per process)."""
    register_layer("DseRequant", DseRequant)
    register_layer("DseSoftmax", DseSoftmax)
    for name in BACKENDS:
        backend = hls4ml.backends.get_backend(name)
        for template in (RequantConfigTemplate, RequantFunctionTemplate, SoftmaxConfigTemplate,
                         SoftmaxFunctionTemplate):
            backend.register_template(template)


# --- the graph as an hls4ml layer list ---------------------------------------------------

@dataclass(frozen=True)
class HlsNetwork:
    """An int8 graph as hls4ml layers, and what stays in Python around them: the graph (whose
    first nodes quantize the input), the tensor of int8 codes the firmware reads, and the
    output's DequantizeLinear."""

    graph: QGraph
    input_tensor: str
    layers: tuple[dict, ...]
    precisions: dict[str, dict[str, str]]  # hls4ml LayerName -> Precision
    table_layers: tuple[str, ...]  # ONNX names of the table layers; position = table slot
    hls_names: dict[str, str]  # table layer -> its hls4ml layer
    output: tuple[np.ndarray, np.ndarray | None, int] | None  # DequantizeLinear scale, zp, axis

    def input_codes(self, inputs: np.ndarray) -> np.ndarray:
        """The firmware's input for preprocessed images: the evaluator's own quantization of
        them, channels last, one flat row of int8 codes per image."""
        graph = self.graph
        codes = approx_runner.table_free(graph, {graph.inputs[0]: inputs})[self.input_tensor]
        if codes.ndim == 4:
            codes = codes.transpose(0, 2, 3, 1)
        return np.ascontiguousarray(codes.reshape(len(codes), -1))

    def dequantize(self, codes: np.ndarray) -> np.ndarray:
        """The network's output for the firmware's output codes, as the graph computes it."""
        if self.output is None:
            return codes
        scale, zero_point, axis = self.output
        return qops.dequantize(codes, scale, zero_point, axis)


def hls_network(graph: QGraph, input_shape: Sequence[int]) -> HlsNetwork:
    """The hls4ml layers of an int8 graph whose input has ``input_shape`` (one image, no batch
    axis); one line naming the node that no hls4ml layer here computes."""
    graph, _ = FoldCodeChains().apply(graph)
    approx_runner.check_supported(graph)
    if len(graph.inputs) != 1 or len(graph.outputs) != 1:
        raise HlsExportError(f"hls export needs one input and one output; the network has "
                             f"{len(graph.inputs)} inputs and {len(graph.outputs)} outputs")
    start = next((i for i, n in enumerate(graph.nodes) if n.op in TABLE_OPS), None)
    if start is None:
        raise HlsExportError("the network has no QLinearConv, QGemm or QLinearMatMul layer: "
                             "nothing multiplies through a product table")
    first = graph.nodes[start]
    probe = np.zeros((1, *input_shape), dtype=np.float32)
    codes = approx_runner.table_free(graph, {graph.inputs[0]: probe}).get(first.inputs[0])
    if codes is None:
        raise HlsExportError(f"node {first.name!r} ({first.op}) does not read the quantized "
                             "input: hls export needs the first table layer to")
    builder = _Builder(graph, first.inputs[0], codes.shape[1:])
    for node in graph.nodes[start:]:
        builder.add(node)
    return builder.network()


def _c_name(name: str, taken: set[str]) -> str:
    """An ONNX node name as a C identifier hls4ml can name types after, unique in ``taken``."""
    base = re.sub(r"\W+", "_", name).strip("_") or "layer"
    base = f"n_{base}" if base[0].isdigit() else base
    unique, n = base, 1
    while unique.lower() in taken:
        n += 1
        unique = f"{base}_{n}"
    taken.add(unique.lower())
    return unique


class _Builder:
    """Walks the graph from the first table layer, one node after the other, keeping the ONNX
    shape of the current tensor and, once flat, which ONNX position each hls4ml position holds."""

    def __init__(self, graph: QGraph, tensor: str, shape: tuple[int, ...]) -> None:
        self.graph, self.input_tensor = graph, tensor
        # the exact signed table: the argument helpers check the operands' types against it
        self.ctx = Context(graph, ProductTable.exact(signed=True), None, set())
        self.tensor, self.shape = tensor, tuple(shape)
        self.order: np.ndarray | None = None  # flat tensors: ONNX index of each hls4ml position
        self.taken: set[str] = set()
        self.layers: list[dict] = []
        self.precisions: dict[str, dict[str, str]] = {}
        self.requant: dict | None = None  # the last layer, when it requantizes
        self._append({"class_name": "InputLayer", "name": _c_name("input_codes", self.taken),
                      "input_shape": self._hls_shape()}, {"result": CODE})
        self.table_layers: list[str] = []
        self.hls_names: dict[str, str] = {}
        self.output: tuple | None = None

    def _hls_shape(self) -> list[int]:
        c, *spatial = self.shape
        return [*spatial, c] if spatial else [c]

    def add(self, node: Node) -> None:
        handlers = {"QLinearConv": self._conv, "QGemm": self._gemm, "QLinearMatMul": self._gemm,
                    "QLinearSoftmax": self._softmax, CODE_CHAIN: self._code_chain,
                    "DequantizeLinear": self._dequantize}
        if node.op not in handlers:
            raise HlsExportError(
                f"node {node.name!r} ({node.op}): no hls4ml layer of the export computes it; "
                "supported: QLinearConv, QGemm, QLinearMatMul, QLinearSoftmax, MaxPool, Relu, "
                "Clip, Flatten, Reshape, and QuantizeLinear/DequantizeLinear at the ends")
        if self.output is not None or node.inputs[0] != self.tensor:
            raise HlsExportError(
                f"node {node.name!r} ({node.op}) does not read the previous layer's output: "
                "hls export supports a chain of layers ending in the output's DequantizeLinear")
        handlers[node.op](node)
        self.tensor = node.outputs[0]

    def network(self) -> HlsNetwork:
        if self.tensor != self.graph.outputs[0]:
            raise HlsExportError(f"tensor {self.tensor!r} is not the network's output "
                                 f"{self.graph.outputs[0]!r}")
        return HlsNetwork(self.graph, self.input_tensor, tuple(self.layers), self.precisions,
                          tuple(self.table_layers), self.hls_names, self.output)

    def _args(self, node: Node) -> list:
        """The node's inputs for the runner's argument helpers: a one-image tensor of the
        activation's code type (its zero point's) in place of the activation."""
        zero_point = self.graph.initializers.get(node.inputs[2]) if len(node.inputs) > 2 else None
        dtype = zero_point.dtype if zero_point is not None else np.uint8
        x = np.zeros((1, *self.shape), dtype=dtype)
        return [x] + [self.graph.initializers.get(n) if n else None for n in node.inputs[1:]]

    def _conv(self, node: Node) -> None:
        _, w, conv = conv_arguments(node, self._args(node), self.ctx)
        if conv["group"] != 1 or conv["dilations"] != (1, 1) or len(self.shape) != 3:
            raise HlsExportError(f"node {node.name!r} (QLinearConv): hls export supports 2-D "
                                 "convolutions without groups or dilation")
        _symmetric(node, conv["x_zero_point"], conv["w_zero_point"])
        c, h, width = self.shape
        filters, _, kh, kw = w.shape
        top, left, bottom, right = conv["pads"]
        sh, sw = conv["strides"]
        out = ((h + top + bottom - kh) // sh + 1, (width + left + right - kw) // sw + 1)
        layer = {"class_name": "Conv2D", "data_format": "channels_last", "in_height": h,
                 "in_width": width, "n_chan": c, "out_height": out[0], "out_width": out[1],
                 "n_filt": filters, "filt_height": kh, "filt_width": kw, "stride_height": sh,
                 "stride_width": sw, "pad_top": top, "pad_bottom": bottom, "pad_left": left,
                 "pad_right": right, "weight_data": w.transpose(2, 3, 1, 0)}
        self._table_layer(node, layer, conv["bias"], conv["multiplier"], conv["y_zero_point"],
                          (filters, *out))

    def _gemm(self, node: Node) -> None:
        arguments = qgemm_arguments if node.op == "QGemm" else qlinear_matmul_arguments
        _, b, gemm, bias, multiplier, y_zero_point = arguments(node, self._args(node), self.ctx)
        if len(self.shape) != 1 or b.shape[0] != self.shape[0]:
            raise HlsExportError(f"node {node.name!r} ({node.op}) reads a tensor of shape "
                                 f"{list(self.shape)}; hls export needs it flat (Flatten first)")
        _symmetric(node, gemm["a_zero_point"], gemm["b_zero_point"])
        weights = b if self.order is None else b[self.order]
        layer = {"class_name": "Dense", "n_in": b.shape[0], "n_out": b.shape[1],
                 "weight_data": weights}
        self._table_layer(node, layer, bias, multiplier, y_zero_point, (b.shape[1],))

    def _table_layer(self, node: Node, layer: dict, bias, multiplier, y_zero_point,
                     shape: tuple[int, ...]) -> None:
        """A Conv2D/Dense layer multiplying through the next table slot, then its requant."""
        if np.asarray(y_zero_point).dtype != np.int8:
            raise HlsExportError(f"node {node.name!r} ({node.op}) writes "
                                 f"{np.asarray(y_zero_point).dtype} codes; hls export needs int8")
        name = _c_name(node.name, self.taken)
        channels = shape[0]
        bias = np.zeros(channels, np.int32) if bias is None else np.asarray(bias)
        self._append({**layer, "name": name, "bias_data": bias},
                     {"weight": CODE, "bias": WIDE, "accum": WIDE, "result": WIDE})
        self.table_layers.append(node.name)
        self.hls_names[node.name] = name
        info = np.iinfo(np.int8)
        self._append({"class_name": "DseRequant", "name": _c_name(f"{name}_requant", self.taken),
                      "n_in": int(np.prod(shape)), "n_chan": channels,
                      "multiplier": np.broadcast_to(np.asarray(multiplier, np.float32),
                                                    (channels,)).copy(),
                      "zero_point": int(qops.scalar(y_zero_point, "output zero point", node)),
                      "min_code": int(info.min), "max_code": int(info.max)}, {"result": CODE})
        self.shape, self.order = shape, None

    def _append(self, layer: dict, precision: dict[str, str]) -> None:
        self.layers.append(layer)
        self.precisions[layer["name"]] = precision
        self.requant = layer if layer["class_name"] == "DseRequant" else None

    def _code_chain(self, node: Node) -> None:
        """Dequantize -> (Relu | Clip | MaxPool | Flatten)* -> Quantize: a clamp folded into the
        previous requantization, then max pooling and flattening on the codes."""
        if self.requant is None:
            raise HlsExportError(f"node {node.name!r}: hls export folds a code chain only "
                                 "into the requantization of the table layer before it")
        self._fold_clamp(node, node.attrs["code_map"])
        for step in node.attrs["steps"]:
            if step.op == "MaxPool":
                self._max_pool(step)
            elif step.op in ("Flatten", "Reshape"):
                self._flatten(step)
            elif step.op != "Identity":
                raise HlsExportError(f"node {step.name!r} ({step.op}): hls export supports "
                                     "MaxPool, Flatten and Reshape between layers")

    def _fold_clamp(self, node: Node, code_map: np.ndarray) -> None:
        codes = np.arange(-128, 128)
        lo, hi = int(code_map[0]), int(code_map[-1])
        if code_map.dtype != np.int8 or not np.array_equal(code_map, np.clip(codes, lo, hi)):
            raise HlsExportError(
                f"node {node.name!r}: the codes between two layers change scale or zero point "
                "(their dequantize-requantize map is not a clamp); hls export folds only ReLU "
                "and Clip at one scale into the requantization")
        self.requant["min_code"] = max(self.requant["min_code"], lo)
        self.requant["max_code"] = min(self.requant["max_code"], hi)

    def _max_pool(self, step: Node) -> None:
        c, h, w = self.shape
        kernel, strides, dilations, pads, out = qops.pool_geometry(step, (h, w))
        if any(pads) or dilations != (1, 1) or step.attr("ceil_mode", 0):
            raise HlsExportError(f"node {step.name!r} (MaxPool): hls export supports pooling "
                                 "without padding, dilation or ceil mode")
        layer = {"class_name": "MaxPooling2D", "name": _c_name(step.name, self.taken),
                 "data_format": "channels_last", "in_height": h, "in_width": w, "n_filt": c,
                 "out_height": out[0], "out_width": out[1], "pool_height": kernel[0],
                 "pool_width": kernel[1], "stride_height": strides[0],
                 "stride_width": strides[1], "pad_top": 0, "pad_bottom": 0, "pad_left": 0,
                 "pad_right": 0}
        self._append(layer, {"result": CODE, "accum": CODE})
        self.shape = (c, *out)

    def _flatten(self, step: Node) -> None:
        size = int(np.prod(self.shape))
        target = self.graph.initializers.get(step.inputs[1]) if step.op == "Reshape" else None
        flattens = step.attr("axis", 1) == 1 if target is None else \
            (target.size == 2 and int(target[0]) in (0, 1, -1) and int(target[1]) in (-1, size))
        if not flattens:
            raise HlsExportError(f"node {step.name!r} ({step.op}): hls export supports only "
                                 "flattening each image to one row")
        if len(self.shape) == 1:
            return
        c, h, w = self.shape
        self.order = np.arange(size).reshape(c, h, w).transpose(1, 2, 0).ravel()
        self._append({"class_name": "Reshape", "name": _c_name(step.name, self.taken),
                      "target_shape": [size]}, {"result": CODE})
        self.shape = (size,)

    def _softmax(self, node: Node) -> None:
        """A QLinearSoftmax over each flat row of int8 codes, as a ``DseSoftmax`` layer holding
        the evaluator's own exp table and numerator."""
        opset = int(node.attr("opset", 13))
        axis = int(node.attr("axis", 1 if opset < 13 else -1))
        if len(self.shape) != 1 or axis % 2 != 1:
            raise HlsExportError(f"node {node.name!r} (QLinearSoftmax): axis {axis} of a tensor "
                                 f"of shape {[1, *self.shape]}; hls export supports a softmax "
                                 "over each flat row (after a dense layer)")
        x_scale = qops.scalar(self.graph.const(node.inputs[1]), "input scale", node)
        y_scale = qops.scalar(self.graph.const(node.inputs[3]), "output scale", node)
        y_zero_point = self.graph.const(node.inputs[4]) if len(node.inputs) > 4 and \
            node.inputs[4] else np.zeros((), np.int8)
        if np.asarray(y_zero_point).dtype != np.int8:
            raise HlsExportError(f"node {node.name!r} (QLinearSoftmax) writes "
                                 f"{np.asarray(y_zero_point).dtype} codes; hls export needs int8")
        info = np.iinfo(np.int8)
        self._append({"class_name": "DseSoftmax", "name": _c_name(node.name, self.taken),
                      "n_in": self.shape[0],
                      "zero_point": int(qops.scalar(y_zero_point, "output zero point", node)),
                      "min_code": int(info.min), "max_code": int(info.max),
                      "numerator": float(qops.softmax_numerator(y_scale)),
                      "exps": qops.softmax_exps(x_scale, self.shape[0])},
                     {"result": CODE})

    def _dequantize(self, node: Node) -> None:
        scale = self.graph.const(node.inputs[1])
        zero_point = self.graph.const(node.inputs[2]) if len(node.inputs) > 2 and \
            node.inputs[2] else None
        self.output = (scale, zero_point, int(node.attr("axis", 1)))


def _symmetric(node: Node, x_zero_point: int, w_zero_point: np.ndarray) -> None:
    """hls4ml pads with code 0 and the firmware has no zero-point terms: both must be 0."""
    if x_zero_point != 0 or np.any(w_zero_point != 0):
        raise HlsExportError(
            f"node {node.name!r} ({node.op}): activation zero point {x_zero_point}, weight zero "
            f"points {sorted(set(np.asarray(w_zero_point).ravel().tolist()))}; hls export needs "
            "symmetric int8 codes (zero point 0), as a signed multiplier pairs with")


# --- the project ---------------------------------------------------------------------------

def project_tables(network: HlsNetwork, tables: Assignment) -> list[ProductTable]:
    """The table of each table layer, in slot order; one line for an unsigned multiplier or an
    assignment naming a layer the network does not have."""
    if not tables.signed:
        raise HlsExportError("hls export needs a signed 8x8 multiplier (int8 activations and "
                             "weights); the design's product table is unsigned")
    approx_runner.check_layers(network.graph, tables)
    return [layer_table(tables, layer) for layer in network.table_layers]


def _product_width(tables: Sequence[ProductTable]) -> int:
    """Bits of the signed integer that holds every product of the tables."""
    lo = min(int(t.values.min()) for t in tables)
    hi = max(int(t.values.max()) for t in tables)
    return max((-lo - 1).bit_length(), hi.bit_length()) + 1


APPROX_TOP = """#ifndef DSE_APPROX_H_
#define DSE_APPROX_H_
// Written by dse (evaluators/firmware/hls_export.py): the approximate multipliers' product tables, one
// per table layer, the product hooks that read them, and onnxruntime's requantization and
// quantized softmax.
#include <algorithm>
#include "ap_int.h"
#include "nnet_utils/nnet_mult.h"

namespace dse {{

#ifdef __SYNTHESIS__
typedef ap_int<{width}> product_t;  // holds every product of this design's tables
#define DSE_TABLE static const
#else
typedef int product_t;  // C simulation: dse_set_table may load any table
#define DSE_TABLE static
#endif

// Product tables, indexed [(a + 128) * 256 + (w + 128)] for activation a and weight w.
"""

TABLE_CPP = """
// slot {slot}: layer {layer} (table sha256 {sha})
DSE_TABLE product_t table{slot}[{entries}] = {{
{values}
}};

template <class x_T, class w_T> class product{slot} : public nnet::product::Product {{
  public:
    static product_t product(x_T a, w_T w) {{
        #pragma HLS INLINE
        return table{slot}[(a.to_int() + 128) * 256 + (w.to_int() + 128)];
    }}
}};
"""

REQUANT_CPP = """
// onnxruntime's requantization (accel/requant.py): float32(acc) * float32 multiplier, clamped
// to the code range (a folded ReLU's included), rounded half to even, plus the zero point.
template <class real_t>
inline int round_half_even(real_t y) {
    #pragma HLS INLINE
    int n = (int)y;
    if ((real_t)n > y) n -= 1;         // floor; |y| < 256 after the clamp
    real_t fraction = y - (real_t)n;   // exact
    if (fraction > (real_t)0.5 || (fraction == (real_t)0.5 && (n & 1))) n += 1;
    return n;
}

template <class data_T, class res_T, typename CONFIG_T>
void requant(data_T data[CONFIG_T::n_in], res_T res[CONFIG_T::n_in]) {
    #pragma HLS PIPELINE
    const float lo = (float)(CONFIG_T::min_code - CONFIG_T::zero_point);
    const float hi = (float)(CONFIG_T::max_code - CONFIG_T::zero_point);
Requant:
    for (unsigned i = 0; i < CONFIG_T::n_in; i++) {
        float y = (float)data[i].to_int() * CONFIG_T::multiplier[i % CONFIG_T::n_chan];
        y = y < lo ? lo : (y > hi ? hi : y);
        res[i] = round_half_even(y) + CONFIG_T::zero_point;
    }
}
"""

SOFTMAX_CPP = """
// onnxruntime's QLinearSoftmax (evaluators/runtime/qops.py): each code's exp read from the table at
// 255 - (row max - code), summed in float32 in input order, then rint(e * numerator / sum)
// (in double, numerator = floor(1 / y_scale)) plus the zero point, clamped to the code range
// (before rounding: the same, the bounds being integers). No product feeds an addition, so FMA
// contraction has nothing to fuse, and without -ffast-math g++ keeps the sum's order.
template <class data_T, class res_T, typename CONFIG_T>
void softmax(data_T data[CONFIG_T::n_in], res_T res[CONFIG_T::n_in]) {
    #pragma HLS PIPELINE
    int top = data[0].to_int();
SoftmaxMax:
    for (unsigned i = 1; i < CONFIG_T::n_in; i++) {
        top = std::max(top, data[i].to_int());
    }
    float e[CONFIG_T::n_in];
    #pragma HLS ARRAY_PARTITION variable=e complete
    float total = 0.0f;
SoftmaxSum:
    for (unsigned i = 0; i < CONFIG_T::n_in; i++) {
        e[i] = CONFIG_T::exps[255 + data[i].to_int() - top];
        total += e[i];
    }
    const double lo = (double)(CONFIG_T::min_code - CONFIG_T::zero_point);
    const double hi = (double)(CONFIG_T::max_code - CONFIG_T::zero_point);
SoftmaxQuantize:
    for (unsigned i = 0; i < CONFIG_T::n_in; i++) {
        double y = (double)e[i] * (double)CONFIG_T::numerator;
        y = y / (double)total;
        y = y < lo ? lo : (y > hi ? hi : y);
        res[i] = round_half_even(y) + CONFIG_T::zero_point;
    }
}
"""

SETTER_CPP = """
}} // namespace dse

#ifndef __SYNTHESIS__
// C simulation: dse replaces a layer's table without recompiling (HlsProject.set_tables).
extern "C" void dse_set_table(unsigned slot, const int *values) {{
    static dse::product_t *const tables[] = {{{tables}}};
    std::copy(values, values + {entries}, tables[slot]);
}}
#endif

#endif
"""


def approx_header(network: HlsNetwork, tables: Sequence[ProductTable]) -> str:
    """The text of ``firmware/dse_approx.h`` for one table per table layer."""
    parts = [APPROX_TOP.format(width=_product_width(tables))]
    for slot, (layer, table) in enumerate(zip(network.table_layers, tables)):
        rows = "\n".join(",".join(map(str, row)) + "," for row in table.values.tolist())
        parts.append(TABLE_CPP.format(slot=slot, layer=layer, sha=table.sha256[:16],
                                      entries=ENTRIES, values=rows))
    parts += [REQUANT_CPP, SOFTMAX_CPP]
    parts.append(SETTER_CPP.format(entries=ENTRIES, tables=", ".join(
        f"dse::table{slot}" for slot in range(len(tables)))))
    return "".join(parts)


@contextlib.contextmanager
def _captured() -> Iterator[io.StringIO]:
    """hls4ml's console output, kept for an error message instead of printed."""
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        yield buffer


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else ""


def _first_error(output: str) -> str:
    lines = [line.strip() for line in output.splitlines()]
    return next((line for line in lines if "error" in line.lower()), lines[-1] if lines else "")


@dataclass
class HlsProject:
    """A written hls4ml project of a network and its tables; ``compile`` builds its C
    simulation with g++, after which ``set_tables`` swaps tables and ``logits`` runs images."""

    network: HlsNetwork
    model: ModelGraph
    folder: Path
    backend: str
    tables: list[ProductTable]
    _library: ctypes.CDLL | None = field(default=None, repr=False)

    def compile(self) -> float:
        """Compile the C simulation with g++ (hls4ml's build_lib.sh) and load it; seconds."""
        if shutil.which("g++") is None:
            raise HlsExportError("g++ is not on PATH: hls4ml compiles the C simulation with it "
                                 "(install g++, or write the project without compiling)")
        start = time.perf_counter()
        with _captured() as output:
            try:
                self.model.compile()
            except Exception as err:  # hls4ml raises a bare Exception and prints the log
                raise HlsExportError(f"{self.folder}: g++ could not compile the C simulation: "
                                     f"{_first_error(output.getvalue()) or err}") from None
        config = self.model.config
        library = self.folder / "firmware" / f"{PROJECT}-{config.get_config_value('Stamp')}.so"
        self._library = ctypes.CDLL(str(library))  # the library hls4ml loaded, shared
        self._library.dse_set_table.argtypes = [ctypes.c_uint, ctypes.POINTER(ctypes.c_int)]
        self._library.dse_set_table.restype = None
        return time.perf_counter() - start

    def set_tables(self, tables: Assignment) -> None:
        """Multiply with other tables from now on, without recompiling (one table for every
        layer, or ``LayerTables``)."""
        if self._library is None:
            raise HlsExportError(f"{self.folder}: compile the project before swapping tables")
        chosen = project_tables(self.network, tables)
        for slot, table in enumerate(chosen):
            values = np.ascontiguousarray(table.values, dtype=np.int32)
            self._library.dse_set_table(slot, values.ctypes.data_as(ctypes.POINTER(ctypes.c_int)))
        self.tables = chosen

    def output_codes(self, codes: np.ndarray) -> np.ndarray:
        """The C simulation's int8 output codes for rows of input codes (``input_codes``)."""
        if self._library is None:
            raise HlsExportError(f"{self.folder}: compile the project before running it")
        out = self.model.predict(np.ascontiguousarray(codes, dtype=np.float32))
        return np.asarray(out).reshape(len(codes), -1).astype(np.int8)

    def logits(self, inputs: np.ndarray, batch: int = 500, progress: bool = False) -> np.ndarray:
        """The network's outputs for preprocessed images, computed by the C simulation."""
        codes = self.network.input_codes(inputs)
        outs = []
        with tqdm(total=len(codes), unit="image", desc="C simulation", disable=not progress,
                  dynamic_ncols=True) as bar:
            for start in range(0, len(codes), batch):
                outs.append(self.output_codes(codes[start:start + batch]))
                bar.update(len(outs[-1]))
        return self.network.dequantize(np.concatenate(outs))


def backend_name(backend: str) -> str:
    """``Vitis`` or ``Vivado`` spelt any case; one line otherwise."""
    found = next((b for b in BACKENDS if b.lower() == str(backend).lower()), None)
    if found is None:
        raise HlsExportError(f"backend {backend!r}: expected one of {', '.join(BACKENDS)}")
    return found


def write_project(network: HlsNetwork, tables: Assignment, folder: str | Path,
                  backend: str = "Vitis") -> HlsProject:
    """Write the hls4ml project (io_parallel, ``ap_int`` codes, Latency strategy) of a network
    multiplying with ``tables`` into ``folder``; compile it with ``HlsProject.compile``."""
    _register_extensions()
    backend, folder = backend_name(backend), Path(folder).resolve()
    chosen = project_tables(network, tables)
    config = hls4ml.utils.config.create_config(output_dir=str(folder), project_name=PROJECT,
                                               backend=backend, io_type="io_parallel")
    config["HLSConfig"] = {"Model": {"Precision": WIDE, "ReuseFactor": 1, "Strategy": "Latency"},
                           "LayerName": {name: {"Precision": precision}
                                         for name, precision in network.precisions.items()}}
    with _captured() as output:
        try:
            model = ModelGraph.from_layer_list(config, list(network.layers))
        except Exception as err:  # hls4ml names the layer, if at all, in its message
            raise HlsExportError("hls4ml could not convert the network: "
                                 f"{_first_line(str(err)) or _first_error(output.getvalue())}"
                                 ) from None
        _hook_products(model, network)
        model.write()
    (folder / "firmware" / APPROX_HEADER).write_text(approx_header(network, chosen))
    return HlsProject(network, model, folder, backend, chosen)


def _hook_products(model: ModelGraph, network: HlsNetwork) -> None:
    """Point each table layer's product hook at its table (slot)."""
    for slot, layer in enumerate(network.table_layers):
        node = model.graph[network.hls_names[layer]]
        config = node.get_attr("config_cpp")
        if config.count(PRODUCT_HOOK) != 1:
            raise HlsExportError(f"layer {layer!r}: hls4ml {hls4ml.__version__} wrote no single "
                                 f"product hook ({PRODUCT_HOOK!r}) in its config")
        node.set_attr("config_cpp", config.replace(
            PRODUCT_HOOK, f"using product = dse::product{slot}<x_T, y_T>;"))


# --- parity with dse's evaluator ---------------------------------------------------------------

@dataclass(frozen=True)
class Parity:
    """The C simulation against dse's evaluator on the same images and tables."""

    images: int
    same_predictions: int  # images whose predicted class is the evaluator's
    same_outputs: int  # images whose outputs are bit for bit the evaluator's
    accuracy: float  # of the C simulation
    evaluator_accuracy: float
    csim_seconds: float

    @property
    def identical(self) -> bool:
        return self.same_predictions == self.same_outputs == self.images


def check_parity(project: HlsProject, int8_onnx: str | Path, tables: Assignment,
                 inputs: np.ndarray, labels: np.ndarray, classes: int = 10,
                 progress: bool = False) -> tuple[Parity, np.ndarray]:
    """Run the images through the C simulation with ``tables`` and through dse's evaluator;
    the comparison and the evaluator's outputs."""
    project.set_tables(tables)
    start = time.perf_counter()
    csim = project.logits(inputs, progress=progress)
    seconds = time.perf_counter() - start
    evaluator = ApproxNetworkEvaluator(Path(int8_onnx), inputs, labels, kernel="cpu",
                                       classes=classes)
    expected = evaluator.logits(tables)
    same_outputs = np.all(csim.reshape(len(csim), -1) == expected.reshape(len(expected), -1),
                          axis=1)
    same = csim.argmax(axis=1) == expected.argmax(axis=1)
    parity = Parity(len(labels), int(same.sum()), int(same_outputs.sum()),
                    logits_metrics(csim, labels, classes)["accuracy"],
                    logits_metrics(expected, labels, classes)["accuracy"], seconds)
    return parity, expected


def write_testbench(project: HlsProject, inputs: np.ndarray, expected: np.ndarray) -> None:
    """``tb_data/`` of the project: input codes and the evaluator's output codes of checked
    images, which the HLS C simulation (``csim``) of hls4ml's testbench reads."""
    tb = project.folder / "tb_data"
    tb.mkdir(exist_ok=True)
    codes = project.network.input_codes(inputs)
    if project.network.output is not None:  # the output codes the logits came from
        scale, zero_point, axis = project.network.output
        zero_point = np.zeros((), np.int8) if zero_point is None else zero_point
        expected = qops.quantize(expected, scale, zero_point, axis)
    np.savetxt(tb / "tb_input_features.dat", codes, fmt="%d")
    np.savetxt(tb / "tb_output_predictions.dat", expected.reshape(len(expected), -1), fmt="%d")
