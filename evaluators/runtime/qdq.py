"""QDQ models read into the QOperator form: ``DequantizeLinear -> op -> QuantizeLinear`` groups
become the integer ops onnxruntime's QDQ fusion makes of them when it loads such a file.

The rules follow onnxruntime's ``QDQSelectorActionTransformer`` (CPU provider, int8 allowed):

- ``DQ(x), DQ(w)[, DQ(int32 b)] -> Conv -> Q`` becomes QLinearConv (the bias codes are used as
  they are), ``Gemm`` with a Q becomes QGemm, ``MatMul`` with a Q becomes QLinearMatMul (also
  of two activations, attention's Q x K^T: both DQ per tensor); a Relu or
  Clip between the op and Q that Q's range makes redundant is dropped;
- ``Add`` / ``Mul`` with two DQ inputs become QLinearAdd / QLinearMul, ``AveragePool``,
  ``GlobalAveragePool`` and ``Softmax`` their QLinear versions, ``Concat`` QLinearConcat;
- ``MaxPool`` (positive scale), ``Reshape``, ``Flatten``, ``Transpose``, ``Squeeze`` and
  ``Unsqueeze`` whose DQ and Q have equal parameters run on the codes (the pair is dropped).

Input, weight and output code types must agree as onnxruntime requires (same activation type in
and out; int8 activations need int8 weights). A group that does not match stays as float ops,
computed as onnxruntime computes them; a float Conv/Gemm/MatMul left over is refused by the
runner, since no product table can stand in for a float multiplier.

One difference is deliberate: on x86, onnxruntime's default session first turns int8 Q/DQ pairs
into uint8 ones, which it can only do where a QuantizeLinear has a single reader; an op fed by
an int8 tensor with several readers (a residual block's input) is then left unfused and
computed in float. Here every group is fused as onnxruntime fuses it where int8 is allowed (its
``session.qdqisint8allowed`` option, the default on ARM): a multiplier must see integer
operands, and the fused integer result is what onnxruntime computes too whenever it fuses. The
float groups differ from it only in rounding ties (ResNet-20 in QDQ form, random weights, 300
random images: the default session keeps 11 Conv and 7 Add groups in float, 33 rows of logits
differ by a code, no prediction changes).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from evaluators.runtime.node import Node

if TYPE_CHECKING:  # the graph reads this module (QGraph.from_onnx fuses on reading)
    from evaluators.runtime.qgraph import QGraph

_DROP = {"MaxPool", "Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze"}
_UNARY = {"AveragePool": "QLinearAveragePool", "GlobalAveragePool": "QLinearGlobalAveragePool",
          "Softmax": "QLinearSoftmax"}
_BINARY = {"Add": "QLinearAdd", "Mul": "QLinearMul"}


class _Fuser:
    """One pass over a graph: finds each target's DQ inputs and Q output and rewrites it."""

    def __init__(self, graph: QGraph) -> None:
        self.graph = graph
        self.producer = {out: n for n in graph.nodes for out in n.outputs}
        self.readers: dict[str, list[Node]] = {}
        for n in graph.nodes:
            for name in set(n.inputs):
                self.readers.setdefault(name, []).append(n)
        self.dropped: set[int] = set()  # ids of nodes a fusion absorbed (Q, redundant Relu/Clip)

    # -- what surrounds a target ------------------------------------------------------------

    def constant(self, name: str) -> bool:
        return not name or name in self.graph.initializers

    def dq(self, tensor: str) -> Node | None:
        """The DequantizeLinear writing ``tensor``, if its parameters are constants."""
        node = self.producer.get(tensor)
        if node is None or node.op != "DequantizeLinear" or node.attr("block_size", 0):
            return None
        return node if all(self.constant(n) for n in node.inputs[1:]) else None

    def q_after(self, node: Node) -> Node | None:
        """The only reader of ``node``'s output if it is a QuantizeLinear with constant
        parameters, looking through one Relu/Clip that Q's range makes redundant."""
        q = self._single_reader(node.outputs[0])
        if q is not None and q.op in ("Relu", "Clip"):
            clip, q = q, self._single_reader(q.outputs[0])
            if q is None or q.op != "QuantizeLinear" or not self._redundant(clip, q):
                return None
            self.dropped.add(id(clip))
        if q is None or q.op != "QuantizeLinear" or not all(self.constant(n) for n in q.inputs[1:]):
            return None
        if q.attr("block_size", 0) or np.size(self.value(q.inputs[1])) != 1:
            return None
        return q

    def _single_reader(self, tensor: str) -> Node | None:
        readers = self.readers.get(tensor, [])
        if tensor in self.graph.outputs or len(readers) != 1 or readers[0].inputs.count(tensor) != 1:
            return None
        return readers[0]

    def _redundant(self, clip: Node, q: Node) -> bool:
        """Whether Q already clamps to a range inside the Relu/Clip bounds."""
        if clip.op == "Relu":
            lo, hi = 0.0, np.inf
        else:
            bounds = [self.value(n) if n else None for n in clip.inputs[1:3]] + [None, None]
            lo = float(bounds[0]) if bounds[0] is not None else clip.attr("min", -np.inf)
            hi = float(bounds[1]) if bounds[1] is not None else clip.attr("max", np.inf)
            if any(n and not self.constant(n) for n in clip.inputs[1:]):
                return False
        info = np.iinfo(self.code_type(q))
        scale = np.float32(self.value(q.inputs[1]))
        zp = int(self.value(q.inputs[2])) if len(q.inputs) > 2 and q.inputs[2] else 0
        return lo <= scale * np.float32(info.min - zp) and hi >= scale * np.float32(info.max - zp)

    def value(self, name: str) -> np.ndarray:
        return self.graph.initializers[name]

    def code_type(self, node: Node) -> np.dtype:
        """The 8-bit type of a Q's output or a DQ's input."""
        if len(node.inputs) > 2 and node.inputs[2]:
            return self.value(node.inputs[2]).dtype
        source = node.inputs[0]
        if node.op == "DequantizeLinear":
            if source in self.graph.initializers:
                return self.value(source).dtype
            writer = self.producer.get(source)
            if writer is not None and writer.op == "QuantizeLinear":
                return self.code_type(writer)
        return np.dtype(np.uint8)

    def scalar(self, node: Node) -> bool:
        return np.size(self.value(node.inputs[1])) == 1

    def per_channel(self, dq: Node, axis: int) -> bool:
        """A weight DQ whose scale is scalar or runs along ``axis``."""
        return self.scalar(dq) or dq.attr("axis", 1) % self.value(dq.inputs[0]).ndim == axis

    @staticmethod
    def params(node: Node) -> tuple[str, str]:
        """(scale, zero point) names of a Q or DQ node ("" for an absent zero point)."""
        return node.inputs[1], node.inputs[2] if len(node.inputs) > 2 else ""

    # -- the rules -------------------------------------------------------------------------

    def fuse(self, node: Node) -> Node | None:
        rule = _RULES.get(node.op)
        if rule is None or len(node.outputs) != 1:
            return None
        q = self.q_after(node)
        if q is None:
            self.dropped.clear()
            return None
        fused = rule(self, node, q)
        if fused is None:
            self.dropped.clear()
            return None
        self.dropped.add(id(q))
        return fused

    def conv(self, node: Node, q: Node) -> Node | None:
        x, w = self.dq(node.inputs[0]), self.dq(node.inputs[1])
        b = self.dq(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2] else None
        if x is None or w is None or not self.constant(w.inputs[0]) or not self.scalar(x):
            return None
        if len(node.inputs) > 2 and node.inputs[2] and (
                b is None or not self.constant(b.inputs[0]) or self.value(b.inputs[0]).dtype != np.int32):
            return None
        if not self._types_fit(x, w, q) or not self.per_channel(w, 0):
            return None
        inputs = (x.inputs[0], *self.params(x), w.inputs[0], *self.params(w), *self.params(q))
        return Node("QLinearConv", node.name, inputs + ((b.inputs[0],) if b else ()), q.outputs,
                    dict(node.attrs))

    def gemm(self, node: Node, q: Node) -> Node | None:
        a, w = self.dq(node.inputs[0]), self.dq(node.inputs[1])
        c = self.dq(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2] else None
        if a is None or w is None or not self.constant(w.inputs[0]) or not self.scalar(a):
            return None
        if len(node.inputs) > 2 and node.inputs[2] and (
                c is None or not self.constant(c.inputs[0]) or node.attr("beta", 1.0) != 1.0
                or self.value(c.inputs[0]).dtype != np.int32):
            return None
        if not self._types_fit(a, w, q) or not self.per_channel(w, 0 if node.attr("transB", 0) else 1):
            return None
        attrs = {k: v for k, v in node.attrs.items() if k in ("alpha", "transA", "transB")}
        inputs = (a.inputs[0], *self.params(a), w.inputs[0], *self.params(w),
                  c.inputs[0] if c else "", *self.params(q))
        return Node("QGemm", node.name, inputs, q.outputs, attrs)

    def matmul(self, node: Node, q: Node) -> Node | None:
        """A weight (per tensor or per column) or a second activation (per tensor, attention's
        Q x K^T): QLinearMatMul either way."""
        a, w = self.dq(node.inputs[0]), self.dq(node.inputs[1])
        if a is None or w is None or not self.scalar(a) or not self._types_fit(a, w, q):
            return None
        if not (self.per_channel(w, self.value(w.inputs[0]).ndim - 1)
                if self.constant(w.inputs[0]) else self.scalar(w)):
            return None
        inputs = (a.inputs[0], *self.params(a), w.inputs[0], *self.params(w), *self.params(q))
        return Node("QLinearMatMul", node.name, inputs, q.outputs, {})

    def _types_fit(self, x: Node, w: Node, q: Node) -> bool:
        kind = self.code_type(x)
        return kind == self.code_type(q) and (kind != np.int8 or self.code_type(w) == np.int8)

    def binary(self, node: Node, q: Node) -> Node | None:
        dqs = [self.dq(name) for name in node.inputs]
        if len(dqs) != 2 or any(d is None or not self.scalar(d) for d in dqs) \
                or len({self.code_type(d) for d in dqs} | {self.code_type(q)}) != 1:
            return None
        a, b = dqs
        inputs = (a.inputs[0], *self.params(a), b.inputs[0], *self.params(b), *self.params(q))
        return Node(_BINARY[node.op], node.name, inputs, q.outputs, {})

    def unary(self, node: Node, q: Node) -> Node | None:
        x = self.dq(node.inputs[0])
        if x is None or not self.scalar(x) or self.code_type(x) != self.code_type(q):
            return None
        attrs = dict(node.attrs)
        if node.op == "Softmax":
            attrs["opset"] = 13 if self.graph.opset >= 13 else 11
        else:
            attrs["channels_last"] = 0
        return Node(_UNARY[node.op], node.name, (x.inputs[0], *self.params(x), *self.params(q)),
                    q.outputs, attrs)

    def concat(self, node: Node, q: Node) -> Node | None:
        dqs = [self.dq(name) for name in node.inputs]
        if any(d is None or not self.scalar(d) for d in dqs) \
                or len({self.code_type(d) for d in dqs} | {self.code_type(q)}) != 1:
            return None
        inputs = [*self.params(q)]
        for d in dqs:
            inputs += [d.inputs[0], *self.params(d)]
        return Node("QLinearConcat", node.name, tuple(inputs), q.outputs, dict(node.attrs))

    def drop(self, node: Node, q: Node) -> Node | None:
        x = self.dq(node.inputs[0])
        if x is None or self.code_type(x) != self.code_type(q):
            return None
        (xs, xz), (qs, qz) = self.params(x), self.params(q)
        same = np.array_equal(self.value(xs), self.value(qs)) and self.scalar(x) and (
            (not xz and not qz) or (xz and qz and np.array_equal(self.value(xz), self.value(qz))))
        if not same or (node.op == "MaxPool" and float(self.value(qs).reshape(())) <= 0):
            return None
        return Node(node.op, node.name, (x.inputs[0], *node.inputs[1:]), q.outputs,
                    dict(node.attrs))


_RULES: dict[str, Callable[[_Fuser, Node, Node], Node | None]] = {
    "Conv": _Fuser.conv, "Gemm": _Fuser.gemm, "MatMul": _Fuser.matmul,
    **{op: _Fuser.binary for op in _BINARY}, **{op: _Fuser.unary for op in _UNARY},
    "Concat": _Fuser.concat, **{op: _Fuser.drop for op in _DROP},
}


def fuse_qdq(graph: QGraph) -> QGraph:
    """The graph with its QDQ groups fused into QOperator ops and the DequantizeLinear nodes
    nobody reads any more removed; a QOperator graph comes back unchanged."""
    fuser = _Fuser(graph)
    nodes: list[Node] = []
    absorbed: set[int] = set()
    for node in graph.nodes:
        if id(node) in absorbed:
            continue
        fused = fuser.fuse(node)
        if fused is not None:
            absorbed |= fuser.dropped
            fuser.dropped = set()
        nodes.append(fused or node)
    nodes = [n for n in nodes if id(n) not in absorbed]
    while True:  # DQ nodes left without readers (weights, the fused groups' inputs)
        read = {name for n in nodes for name in n.inputs} | set(graph.outputs)
        unread = {id(n) for n in nodes if n.op == "DequantizeLinear" and n.outputs[0] not in read}
        if not unread:
            break
        nodes = [n for n in nodes if id(n) not in unread]
    if len(nodes) == len(graph.nodes) and all(a is b for a, b in zip(nodes, graph.nodes)):
        return graph
    return graph.with_nodes(nodes)
