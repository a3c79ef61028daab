"""Static 8-bit quantization with onnxruntime, in one of its three schemes.

``s8s8`` (the default): symmetric int8 activations (zero point 0) and symmetric per-channel int8
weights, what a signed 8x8 multiplier pairs with. ``u8s8``: asymmetric uint8 activations (a zero
point per tensor) and the same int8 weights, onnxruntime's default on x86. ``u8u8``: asymmetric
uint8 activations and per-channel uint8 weights, which onnxruntime centres on zero point 128 (its
QLinear ops take one weight zero point for all channels). MinMax calibration on training
images; QOperator format (QLinearConv / QGemm nodes, the integer layers explicit in the graph)
or QDQ. Any scheme multiplies through signed and unsigned tables alike: the runner moves codes
of the other kind into the multiplier's domain (``accel.codes.recentre``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from evaluators.runtime.qgraph import QGraph

SCHEMES = ("s8s8", "u8s8", "u8u8")  # activations then weights: signed or unsigned 8-bit
FORMATS = ("qoperator", "qdq")
# (activation, weight) zero-point inputs of the ops that multiply through the product table
OPERAND_ZERO_POINTS = {"QLinearConv": (2, 5), "QGemm": (2, 5), "QLinearMatMul": (2, 5)}


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
    import onnx
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


def operand_scheme(graph: QGraph) -> str:
    """The operand types of the table-multiplying layers as onnxruntime names its schemes
    (activations then weights, or the second activation: ``s8s8``, ``u8s8``, ``u8u8``;
    ``mixed`` when layers differ)."""
    schemes = set()
    for node in graph.nodes:
        if node.op in OPERAND_ZERO_POINTS:
            a_zero, b_zero = (node.inputs[i] if i < len(node.inputs) else ""
                              for i in OPERAND_ZERO_POINTS[node.op])
            activations = graph.initializers.get(a_zero, np.zeros((), np.int8)).dtype
            weights = graph.initializers[node.inputs[3]].dtype \
                if node.inputs[3] in graph.initializers else \
                graph.initializers.get(b_zero, np.zeros((), np.int8)).dtype
            schemes.add(("s8" if activations == np.int8 else "u8")
                        + ("s8" if weights == np.int8 else "u8"))
    return schemes.pop() if len(schemes) == 1 else "mixed"  # U8U8 QOperator: int8 conv weights


def activation_products(graph: QGraph) -> bool:
    """Whether a table-multiplying layer multiplies two activations (neither operand a
    constant): an attention's Q x K^T."""
    return any(n.op in OPERAND_ZERO_POINTS and n.inputs[3] not in graph.initializers
               for n in graph.nodes)


def seven_bit_weights(graph: QGraph) -> bool:
    """Whether the table-multiplying layers have int8 weights, each in [-64, 64]
    (``reduce_range``): a uint8 x int8 pair then sums to at most 32,640, inside int16, so
    onnxruntime's saturating kernels are exact."""
    weights = [graph.initializers[n.inputs[3]] for n in graph.nodes
               if n.op in OPERAND_ZERO_POINTS and n.inputs[3] in graph.initializers]
    int8 = [w for w in weights if w.dtype == np.int8]
    return bool(int8) and all(np.abs(w.astype(np.int16)).max() <= 64 for w in int8)
