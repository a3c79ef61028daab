"""The one helper that edits ONNX ModelProtos, in the style of qonnx: a graph transformation is
a small object whose ``apply(model)`` returns ``(new model, changed)`` (``Transformation``),
and the model it was given is never changed: it edits a copy (``copy_model``).

What transformations edit with:

- ``copy_model``: the copy to edit;
- ``Initializers``: a model's initializers by name, live (read one as an array, replace its
  content, add one once);
- ``ensure_opset``: a custom domain's opset import, once;
- ``insert_after``: a node placed after another;
- ``ModelEditor``: a mutable view for rewriting the graph node by node (initializers as arrays,
  producers and consumers, fresh names), finished into the new model;
- ``label``: how messages name a node.

Users: the approximate export (``evaluators.onnx.approximate``), the integer graph
(``evaluators.onnx.integer_graph``), reduced precision (``evaluators.firmware.precision``) and
retraining's write-back (``evaluators.recovery.retraining``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import numpy as np
import onnx
from onnx import helper, numpy_helper

from evaluators.errors import ModelError


class Transformation(Protocol):
    """A graph transformation: the new model and whether anything changed."""

    def apply(self, model: onnx.ModelProto) -> tuple[onnx.ModelProto, bool]: ...


def copy_model(model: onnx.ModelProto) -> onnx.ModelProto:
    """A deep copy of ``model`` to edit."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    return out


class Initializers(dict):
    """A model's initializers by name: the ``TensorProto``s of its graph, so that ``set`` and
    ``add`` edit the model itself."""

    def __init__(self, model: onnx.ModelProto) -> None:
        super().__init__((t.name, t) for t in model.graph.initializer)
        self._graph = model.graph

    def array(self, name: str) -> np.ndarray:
        return numpy_helper.to_array(self[name])

    def set(self, name: str, value: np.ndarray) -> None:
        """Replace the content of initializer ``name`` (its name kept)."""
        self[name].CopyFrom(numpy_helper.from_array(value, name))

    def add(self, name: str, value: np.ndarray | Callable[[], np.ndarray]) -> str:
        """Add initializer ``name`` unless the model has one (``value`` may be a function, then
        called only when it is added); the name."""
        if name not in self:
            self._graph.initializer.append(
                numpy_helper.from_array(np.asarray(value() if callable(value) else value), name))
            self[name] = self._graph.initializer[-1]
        return name


def ensure_opset(model: onnx.ModelProto, domain: str, version: int = 1) -> None:
    """Import ``domain`` (a custom op domain) unless the model does."""
    if not any(o.domain == domain for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(domain, version))


def insert_after(model: onnx.ModelProto, name: str, node: onnx.NodeProto) -> None:
    """Insert ``node`` right after the node named ``name``."""
    position = next(i for i, n in enumerate(model.graph.node) if n.name == name) + 1
    model.graph.node.insert(position, node)


def label(node: onnx.NodeProto) -> str:
    """How a node is named in messages."""
    return f"{node.name or '(unnamed)'!r} ({node.op_type})"


class ModelEditor:
    """Mutable view of a model copy for a transformation that rewrites the graph: initializers
    as arrays (Constant nodes among them), the node list, node lookups, fresh names; ``finish``
    gives the new model (dead nodes and unused initializers dropped, in topological order). The
    model given is never changed."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.model = copy_model(model)
        self.g = self.model.graph
        self.inits = {t.name: numpy_helper.to_array(t) for t in self.g.initializer}
        for node in self.g.node:  # Constant nodes become initializers
            if node.op_type == "Constant" and node.attribute[0].name == "value":
                self.inits[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
        self.g.ClearField("initializer")
        self.nodes = [n for n in self.g.node if n.op_type != "Constant"]
        self._taken = {*self.inits, *(i.name for i in self.g.input),
                       *(name for n in self.nodes for name in (n.name, *n.output))}

    def fresh(self, base: str) -> str:
        """A node or tensor name not used yet in the model."""
        count = 1
        while f"{base}__ig{count}" in self._taken:
            count += 1
        self._taken.add(f"{base}__ig{count}")
        return f"{base}__ig{count}"

    def const(self, base: str, value: np.ndarray) -> str:
        name = self.fresh(base)
        self.inits[name] = np.asarray(value)
        return name

    def producer(self, tensor: str) -> onnx.NodeProto | None:
        return next((n for n in self.nodes if tensor in n.output), None)

    def consumers(self, tensor: str) -> list[onnx.NodeProto]:
        return [n for n in self.nodes if tensor in n.input]

    def is_output(self, tensor: str) -> bool:
        return any(o.name == tensor for o in self.g.output)

    def array(self, name: str, node: onnx.NodeProto) -> np.ndarray:
        if name not in self.inits:
            raise ModelError(f"node {label(node)}: input {name!r} must be a constant")
        return self.inits[name]

    def optional(self, node: onnx.NodeProto, index: int) -> np.ndarray | None:
        return self.inits.get(node.input[index]) if len(node.input) > index and node.input[index] \
            else None

    def rename_uses(self, old: str, new: str) -> None:
        """Every reader of ``old`` reads ``new`` instead (graph outputs keep their names)."""
        for node in self.nodes:
            for i, name in enumerate(node.input):
                if name == old:
                    node.input[i] = new

    def insert(self, before: onnx.NodeProto, *new: onnx.NodeProto) -> None:
        index = self.nodes.index(before)
        self.nodes[index:index] = list(new)

    def finish(self) -> onnx.ModelProto:
        """The model with dead nodes and unused initializers dropped, in topological order."""
        needed = {o.name for o in self.g.output}
        live = []
        for node in reversed(self.nodes):
            if needed & set(node.output):
                live.append(node)
                needed.update(node.input)
        self.g.ClearField("node")
        self.g.node.extend(topological(live[::-1], self.inits, [i.name for i in self.g.input]))
        self.g.initializer.extend(numpy_helper.from_array(v, k) for k, v in self.inits.items()
                                  if k in needed)
        stale = [i for i in self.g.input if i.name in self.inits and i.name not in needed]
        for value in stale:  # old exporters list initializers as inputs too
            self.g.input.remove(value)
        self.g.ClearField("value_info")
        return self.model


def topological(nodes: list[onnx.NodeProto], inits: dict, inputs: list[str]) -> list:
    """The nodes in an order where each reads only initializers, inputs and earlier outputs."""
    ready, ordered, pending = set(inits) | set(inputs) | {""}, [], list(nodes)
    while pending:
        node = next(n for n in pending if set(n.input) <= ready)
        pending.remove(node)
        ordered.append(node)
        ready.update(node.output)
    return ordered

