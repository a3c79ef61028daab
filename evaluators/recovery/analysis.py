"""Why a multiplier fails, seen from inside the network: the features entering the classifier
(of the float, int8 and approximate networks, to embed with t-SNE) and where the multiplier's
error meets the operands a layer multiplies.

The penultimate features are the input of the network's last table layer (the classifier's
Gemm/MatMul): for the float model the float tensor onnxruntime computes there, for the int8
networks the activation codes ``approx_runner.run`` captures there, dequantized with the
layer's input scale and zero point.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numpy as np
import onnx

from accel import cpu
from circuits.product_table import ProductTable
from evaluators.errors import ModelError
from evaluators.runtime import approx_runner
from evaluators.runtime.approx_network import batch_size
from evaluators.runtime.layer_tables import Assignment
from evaluators.runtime.node import Node
from evaluators.runtime.ops import TABLE_OPS
from evaluators.runtime.qgraph import QGraph
from evaluators.runtime.qops import dequantize
from evaluators.runtime.transforms import optimize

FLOAT, INT8, APPROXIMATE = "float", "int8", "approximate"  # the networks, in this order


@dataclass(frozen=True)
class Features:
    """One network's penultimate features (images, features) and predictions on the same images."""

    features: np.ndarray
    predictions: np.ndarray

    def accuracy(self, labels: np.ndarray) -> float:
        return float(np.mean(self.predictions == labels))


def classifier(graph: QGraph) -> Node:
    """The last node that multiplies through a product table: the classifier layer."""
    layers = [n for n in graph.nodes if n.op in TABLE_OPS]
    if not layers:
        raise ModelError("the int8 network has no table-multiplying layer (QLinearConv, QGemm, "
                         "QLinearMatMul), so it has no classifier input to analyse")
    return layers[-1]


def float_classifier_input(model: onnx.ModelProto) -> str:
    """The float tensor the float model's last Conv/Gemm/MatMul reads (not its weights)."""
    constants = {t.name for t in model.graph.initializer}
    constants |= {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    for node in reversed(model.graph.node):
        if node.op_type in approx_runner.FLOAT_MULTIPLYING:
            return next(name for name in node.input if name and name not in constants)
    raise ModelError("the float network has no Conv/Gemm/MatMul layer, so it has no classifier "
                     "input to analyse")


def _batches(count: int, step: int) -> list[slice]:
    return [slice(start, start + step) for start in range(0, count, step)]


def float_features(float_onnx: Path, inputs: np.ndarray) -> Features:
    """The float model's classifier input and predictions, by onnxruntime (the input tensor
    added to the graph's outputs)."""
    import onnxruntime as ort

    model = onnx.load(str(float_onnx))
    tensor = float_classifier_input(model)
    if tensor not in {o.name for o in model.graph.output}:
        model.graph.output.append(onnx.helper.make_empty_tensor_value_info(tensor))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    feed, logits_name = session.get_inputs()[0].name, model.graph.output[0].name
    parts = [session.run([tensor, logits_name], {feed: inputs[rows]})
             for rows in _batches(len(inputs), batch_size(inputs))]
    features = np.concatenate([f.reshape(len(f), -1) for f, _ in parts])
    return Features(features, np.concatenate([np.argmax(lg, axis=-1) for _, lg in parts]))


def table_features(graph: QGraph, inputs: np.ndarray, tables: Assignment,
                   kernels: ModuleType = cpu) -> Features:
    """The classifier input of the int8 network multiplying with ``tables`` (activation codes
    captured by the runner, dequantized) and its predictions."""
    node = classifier(graph)
    tensor, output = node.inputs[0], graph.outputs[0]
    scale, zero_point = graph.const(node.inputs[1]), graph.const(node.inputs[2])
    features, predictions = [], []
    for rows in _batches(len(inputs), batch_size(inputs)):
        out = approx_runner.run(graph, {graph.inputs[0]: inputs[rows]}, tables, kernels, [tensor])
        codes = out[tensor]
        features.append(dequantize(codes, scale, zero_point).reshape(len(codes), -1))
        predictions.append(np.argmax(out[output], axis=-1))
    return Features(np.concatenate(features), np.concatenate(predictions))


def penultimate_features(int8_onnx: Path, inputs: np.ndarray, tables: Assignment,
                         float_onnx: Path | None = None,
                         kernels: ModuleType = cpu) -> dict[str, Features]:
    """The classifier inputs and predictions of the float model (when there is one), the int8
    network with the exact multiplier and the int8 network with ``tables``, keyed ``float``,
    ``int8``, ``approximate``."""
    graph = optimize(QGraph.from_onnx(int8_onnx))
    views = {FLOAT: float_features(float_onnx, inputs)} if float_onnx is not None else {}
    views[INT8] = table_features(graph, inputs, ProductTable.exact(tables.signed), kernels)
    views[APPROXIMATE] = table_features(graph, inputs, tables, kernels)
    return views


def error_map(table: ProductTable) -> np.ndarray:
    """|T[a, w] - a*w| at every table index (int64, in LSB of the product)."""
    return np.abs(table.values.astype(np.int64) - table.exact_products())


@dataclass(frozen=True)
class WorkloadError:
    """How a layer's operands meet a multiplier's error: ``macs`` multiplications counted, the
    workload-weighted mean absolute error (LSB per multiplication) and the share of the error
    mass sum(H * E) held by the top ``top`` fraction of (activation, weight) cells."""

    macs: int
    mean_abs_error: float
    top_share: float | None  # None when the layer multiplies without error
    top: float


def workload_error(histogram: np.ndarray, error: np.ndarray, top: float = 0.01) -> WorkloadError:
    """``histogram`` (operand counts H) against ``error`` (|T - a*w|, same indexing)."""
    mass = (histogram * error).ravel()
    total, macs = int(mass.sum()), int(histogram.sum())
    cells = max(1, int(round(top * mass.size)))
    share = float(np.sort(mass)[-cells:].sum() / total) if total else None
    return WorkloadError(macs, total / macs if macs else 0.0, share, top)
