"""A quantized ONNX graph as a small IR the approximate runner executes.

The IR is a topologically ordered list of nodes plus the initializers as numpy arrays. QOperator
models (QLinearConv, QGemm, ...) are read as they are; QDQ models (QuantizeLinear /
DequantizeLinear around float ops) are fused into the same QOperator form on reading, as
onnxruntime fuses them when it loads the file (``evaluators.runtime.qdq``), so callers never
know the format. Graph transformations (``evaluators.runtime.transforms``) take a ``QGraph`` and return a
new one and whether anything changed, in the style of qonnx. The nodes are ``Node``s
(``evaluators.runtime.node``); what each op computes is in ``evaluators.runtime.ops``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from evaluators.errors import ModelError
from evaluators.runtime.node import Node
from evaluators.runtime.qdq import fuse_qdq

DEFAULT_OPSET = 17


_CONSTANT_TYPES = {"value_float": np.float32, "value_floats": np.float32, "value_int": np.int64,
                   "value_ints": np.int64}


def _constant(attrs: dict) -> np.ndarray | None:
    """The tensor of a Constant node (``value`` or one of its scalar and list forms); None for
    forms the runner does not read (strings, sparse tensors)."""
    (name, value), = attrs.items()
    if name == "value":
        return numpy_helper.to_array(value)
    if name in _CONSTANT_TYPES:
        return np.asarray(value, dtype=_CONSTANT_TYPES[name])
    return None


class UnsupportedOpError(ModelError):
    """The graph holds an op (or an op's setting) the approximate runner cannot execute."""


@dataclass(frozen=True)
class QGraph:
    """Nodes in execution order, constant tensors, the graph's input and output names, and the
    default-domain opset (some ops change meaning with it: Softmax's axis, Squeeze's axes)."""

    nodes: tuple[Node, ...]
    initializers: dict[str, np.ndarray]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    opset: int = DEFAULT_OPSET

    @classmethod
    def from_onnx(cls, model: onnx.ModelProto | str | Path) -> QGraph:
        """Read an ONNX model (path or proto); constants become initializers, and QDQ groups
        are fused into QOperator ops as onnxruntime does."""
        if not isinstance(model, onnx.ModelProto):
            model = onnx.load(str(model))
        graph = model.graph
        inits = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
        nodes = []
        for i, n in enumerate(graph.node):
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
            if n.op_type == "Constant" and len(attrs) == 1 and (value := _constant(attrs)) is not None:
                inits[n.output[0]] = value
                continue
            attrs = {k: v.decode() if isinstance(v, bytes) else v for k, v in attrs.items()}
            nodes.append(
                Node(n.op_type, n.name or f"{n.op_type}_{i}", tuple(n.input), tuple(n.output), attrs)
            )
        inputs = tuple(i.name for i in graph.input if i.name not in inits)
        opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")),
                     DEFAULT_OPSET)
        raw = cls(tuple(nodes), inits, inputs, tuple(o.name for o in graph.output), opset)
        return fuse_qdq(raw)

    def consumers(self, tensor: str) -> list[Node]:
        """Nodes that read ``tensor``."""
        return [n for n in self.nodes if tensor in n.inputs]

    def const(self, name: str) -> np.ndarray:
        """A constant input by name (scales, zero points, weights, shapes)."""
        try:
            return self.initializers[name]
        except KeyError:
            raise UnsupportedOpError(
                f"tensor {name!r} must be a constant (initializer) of the model") from None

    def with_nodes(self, nodes: list[Node]) -> QGraph:
        return replace(self, nodes=tuple(nodes))
