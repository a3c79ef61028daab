"""Static int8 quantization with onnxruntime: what a signed 8x8 multiplier needs.

Symmetric int8 activations (zero point 0) and symmetric per-channel int8 weights, MinMax
calibration on training images, QOperator format (QLinearConv / QGemm nodes), so the integer
layers the approximate runner replaces are explicit in the graph.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np


def quantize_int8(float_model: Path, int8_model: Path, calibration: np.ndarray, batch: int = 100,
                  quant_format: str = "qoperator", keep_float: tuple[str, ...] = ()) -> None:
    """Quantize ``float_model`` into ``int8_model`` using ``calibration`` inputs (N, ...) float32.

    ``quant_format``: "qoperator" (what studies score) or "qdq" (the form onnxruntime's own
    int8 kernels run fastest: the benchmarks' yardstick); ops of the types in ``keep_float``
    stay float (tests of mixed graphs)."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

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
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=excluded,
            extra_options={"ActivationSymmetric": True, "WeightSymmetric": True},
        )
    finally:
        root.setLevel(level)
