"""Static 8-bit quantization with onnxruntime, in one of its three schemes.

``s8s8`` (the default): symmetric int8 activations (zero point 0) and symmetric per-channel int8
weights, what a signed 8x8 multiplier pairs with. ``u8s8``: asymmetric uint8 activations (a zero
point per tensor) and the same int8 weights, onnxruntime's default on x86. ``u8u8``: asymmetric
uint8 activations and per-channel uint8 weights, which onnxruntime centres on zero point 128 (its
QLinear ops take one weight zero point for all channels). MinMax calibration on training
images; QOperator format (QLinearConv / QGemm nodes, the integer layers explicit in the graph)
or QDQ. Any scheme multiplies through signed and unsigned tables alike: the runner moves codes
of the other kind into the multiplier's domain (``accel.codes.recentre``).

Dynamic quantization (``quantize_dynamic_int8``) needs no calibration: onnxruntime's
``quantize_dynamic`` stores the Conv/MatMul/Gemm weights as int8 (or uint8) codes and quantizes
each activation at run time (DynamicQuantizeLinear: uint8, asymmetric, the tensor's own range)
into ConvInteger/MatMulInteger. It leaves a MatMul of two activations (attention's q @ k^T and
attn @ v) float; ``QuantizeActivationMatMuls`` quantizes those the same way, so every product
of a transformer goes through the table.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnx
from onnx import TensorProto, helper

if TYPE_CHECKING:
    from evaluators.runtime.node import Node
    from evaluators.runtime.qgraph import QGraph

SCHEMES = ("s8s8", "u8s8", "u8u8")  # activations then weights: signed or unsigned 8-bit
FORMATS = ("qoperator", "qdq")
MODES = ("static", "dynamic")
# the ops that multiply through the product table: the inputs holding (the first operand's zero
# point, the second operand (weights or an activation), its zero point)
OPERANDS = {"QLinearConv": (2, 3, 5), "QGemm": (2, 3, 5), "QLinearMatMul": (2, 3, 5),
            "ConvInteger": (2, 1, 3), "MatMulInteger": (2, 1, 3)}


def quantize_int8(float_model: Path, int8_model: Path, calibration: np.ndarray, batch: int = 100,
                  quant_format: str = "qoperator", keep_float: tuple[str, ...] = (),
                  scheme: str = "s8s8", reduce_range: bool = False) -> None:
    """Quantize ``float_model`` into ``int8_model`` using ``calibration`` inputs (N, ...) float32.

    ``quant_format``: "qoperator" (what studies score by default) or "qdq" (the form
    onnxruntime's own int8 kernels run fastest: the benchmarks' yardstick); ``scheme``: one of
    ``SCHEMES``; ``reduce_range``: 7-bit weights, onnxruntime's option for x86 CPUs without
    AVX-512 VNNI, where its uint8 x int8 kernels saturate pairs of 8-bit products but not of
    8 x 7-bit ones (``evaluators.networks.ort_exactness``); ops of the types in ``keep_float`` stay float
    (tests of mixed graphs)."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    if scheme not in SCHEMES or quant_format not in FORMATS:
        raise ValueError(f"quantization scheme {scheme!r} / format {quant_format!r}: expected "
                         f"one of {', '.join(SCHEMES)} / {', '.join(FORMATS)}")
    activations = QuantType.QInt8 if scheme == "s8s8" else QuantType.QUInt8
    weights = QuantType.QUInt8 if scheme == "u8u8" else QuantType.QInt8
    graph = onnx.load(str(float_model)).graph
    excluded = [n.name for n in graph.node if n.op_type in keep_float]
    constants = {t.name for t in graph.initializer}  # old exporters list them as inputs too
    name = next(i.name for i in graph.input if i.name not in constants)

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._batches = iter(
                {name: calibration[i : i + batch]} for i in range(0, len(calibration), batch)
            )

        def get_next(self):
            return next(self._batches, None)

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # the quantizer logs advice about pre-processing and formats
    try:
        quantize_static(
            str(float_model),
            str(int8_model),
            _Reader(),
            quant_format=QuantFormat.QDQ if quant_format == "qdq" else QuantFormat.QOperator,
            per_channel=True,
            reduce_range=reduce_range,
            activation_type=activations,
            weight_type=weights,
            nodes_to_exclude=excluded,
            extra_options={"ActivationSymmetric": activations == QuantType.QInt8,
                           "WeightSymmetric": True},
        )
    finally:
        root.setLevel(level)


def _code_type(graph: QGraph, zero_point: str, operand: str | None = None) -> np.dtype:
    """The 8-bit type of an operand: that of its constant codes, of its zero point, or uint8
    where DynamicQuantizeLinear writes it; int8 where nothing says (no zero point)."""
    if operand is not None and operand in graph.initializers:
        return graph.initializers[operand].dtype
    if zero_point in graph.initializers:
        return graph.initializers[zero_point].dtype
    if any(n.op == "DynamicQuantizeLinear" and zero_point in n.outputs for n in graph.nodes):
        return np.dtype(np.uint8)
    return np.dtype(np.int8)


def _operand_names(node: Node) -> tuple[str, str, str]:
    """(first operand's zero point, second operand, its zero point) of a table layer; "" where
    an optional input is absent."""
    return tuple(node.inputs[i] if i < len(node.inputs) else "" for i in OPERANDS[node.op])


def operand_scheme(graph: QGraph) -> str:
    """The operand types of the table-multiplying layers as onnxruntime names its schemes
    (activations then weights, or the second activation: ``s8s8``, ``u8s8``, ``u8u8``;
    ``mixed`` when layers differ)."""
    schemes = set()
    for node in graph.nodes:
        if node.op in OPERANDS:
            a_zero, second, b_zero = _operand_names(node)
            activations = _code_type(graph, a_zero, node.inputs[0])
            weights = _code_type(graph, b_zero, second)
            schemes.add(("s8" if activations == np.int8 else "u8")
                        + ("s8" if weights == np.int8 else "u8"))
    return schemes.pop() if len(schemes) == 1 else "mixed"  # U8U8 QOperator: int8 conv weights


def activation_products(graph: QGraph) -> bool:
    """Whether a table-multiplying layer multiplies two activations (neither operand a
    constant): an attention's Q x K^T."""
    return any(n.op in OPERANDS and _operand_names(n)[1] not in graph.initializers
               for n in graph.nodes)


def seven_bit_weights(graph: QGraph) -> bool:
    """Whether the table-multiplying layers have int8 weights, each in [-64, 64]
    (``reduce_range``): a uint8 x int8 pair then sums to at most 32,640, inside int16, so
    onnxruntime's saturating kernels are exact."""
    weights = [graph.initializers[_operand_names(n)[1]] for n in graph.nodes
               if n.op in OPERANDS and _operand_names(n)[1] in graph.initializers]
    int8 = [w for w in weights if w.dtype == np.int8]
    return bool(int8) and all(np.abs(w.astype(np.int16)).max() <= 64 for w in int8)


def quantize_dynamic_int8(float_model: Path, int8_model: Path, scheme: str = "u8s8",
                          reduce_range: bool = False, keep_float: tuple[str, ...] = ()) -> None:
    """Quantize ``float_model`` dynamically into ``int8_model``: per-channel symmetric weights
    of the ``scheme`` (``u8s8``: int8, ``u8u8``: uint8; activations are uint8, the only type
    DynamicQuantizeLinear writes, so ``s8s8`` is refused), ConvInteger/MatMulInteger layers,
    and the float MatMuls between two activations quantized too
    (``QuantizeActivationMatMuls``); ops of the types in ``keep_float`` stay float."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    if scheme not in ("u8s8", "u8u8"):
        raise ValueError(f"dynamic quantization scheme {scheme!r}: expected u8s8 or u8u8 "
                         "(DynamicQuantizeLinear quantizes activations to uint8)")
    graph = onnx.load(str(float_model)).graph
    excluded = [n.name for n in graph.node if n.op_type in keep_float]
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # the quantizer logs advice about pre-processing
    try:
        with tempfile.TemporaryDirectory(dir=Path(int8_model).parent) as tmp:
            weights_only = Path(tmp) / "weights.onnx"
            quantize_dynamic(
                str(float_model), str(weights_only),
                op_types_to_quantize=["Conv", "MatMul", "Gemm"],
                per_channel=True,
                reduce_range=reduce_range,
                weight_type=QuantType.QUInt8 if scheme == "u8u8" else QuantType.QInt8,
                nodes_to_exclude=excluded,
                extra_options={"WeightSymmetric": True},
            )
            model, _ = QuantizeActivationMatMuls(skip=tuple(excluded)).apply(
                onnx.load(str(weights_only)))
    finally:
        root.setLevel(level)
    onnx.save(model, str(int8_model))


class QuantizeActivationMatMuls:
    """Every float MatMul whose operands are both activations (neither an initializer nor a
    Constant) quantized dynamically, as onnxruntime's dynamic quantizer does its weight layers:
    DynamicQuantizeLinear on each operand (uint8 codes, a scale and a zero point per tensor),
    MatMulInteger, Cast to float, times the product of the two scales. An ONNX-level rewrite,
    so onnxruntime runs the very graph the approximate runner scores; nodes named in ``skip``
    stay float."""

    def __init__(self, skip: tuple[str, ...] = ()) -> None:
        self.skip = frozenset(skip)

    def apply(self, model: onnx.ModelProto) -> tuple[onnx.ModelProto, bool]:
        """The rewritten copy of ``model`` and whether any MatMul was quantized."""
        out = onnx.ModelProto()
        out.CopyFrom(model)
        graph = out.graph
        constants = {t.name for t in graph.initializer} | {
            o for n in graph.node if n.op_type == "Constant" for o in n.output}
        nodes, changed = [], False
        for node in graph.node:
            if node.op_type != "MatMul" or node.name in self.skip or \
                    any(i in constants for i in node.input):
                nodes.append(node)
                continue
            nodes += self._quantized(node, len(nodes))
            changed = True
        if changed:
            del graph.node[:]
            graph.node.extend(nodes)
        return out, changed

    @staticmethod
    def _quantized(node: onnx.NodeProto, index: int) -> list[onnx.NodeProto]:
        """The nodes replacing one MatMul (named after it, as onnxruntime names its own)."""
        name = node.name or f"MatMul_{index}"
        new: list[onnx.NodeProto] = []
        codes = {}
        for tensor in dict.fromkeys(node.input):  # x @ x quantizes x once
            q = f"{tensor}_quantized_{name}"
            codes[tensor] = (q, f"{q}_scale", f"{q}_zero_point")
            new.append(helper.make_node("DynamicQuantizeLinear", [tensor], list(codes[tensor]),
                                        name=f"{name}_{tensor}_quantize"))
        (qa, sa, za), (qb, sb, zb) = codes[node.input[0]], codes[node.input[1]]
        acc, scale = f"{name}_output_quantized", f"{name}_scales_mul"
        new += [
            helper.make_node("MatMulInteger", [qa, qb, za, zb], [acc], name=f"{name}_quant"),
            helper.make_node("Cast", [acc], [f"{acc}_cast"], to=TensorProto.FLOAT,
                             name=f"{name}_output_cast"),
            helper.make_node("Mul", [sa, sb], [scale], name=f"{name}_scales_mul"),
            helper.make_node("Mul", [f"{acc}_cast", scale], list(node.output),
                             name=f"{name}_output_scale"),
        ]
        return new
