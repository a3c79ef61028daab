"""Graph transformations of the quantized IR, each a small object returning (graph, changed).

They change how a graph is computed, never what it computes: tests run every transformation
against the untransformed graph and against onnxruntime. The ops they fuse are computed by
``evaluators.runtime.fused_ops``.
"""

from __future__ import annotations

import numpy as np

from evaluators.runtime import approx_runner
from evaluators.runtime.core_ops import Context
from evaluators.runtime.fused_ops import CODE_CHAIN, CONV_POOL
from evaluators.runtime.node import Node
from evaluators.runtime.ops import OPS
from evaluators.runtime.qgraph import QGraph

_ELEMENTWISE = {"Relu", "Clip"}  # monotone non-decreasing, so they commute with max pooling
_STRUCTURAL = {"MaxPool", "Flatten", "Reshape", "Identity", "Transpose", "Squeeze", "Unsqueeze"}


class FoldCodeChains:
    """``DequantizeLinear -> (Relu | Clip | MaxPool | Flatten | Reshape | Transpose | Squeeze |
    Unsqueeze | Identity)* -> QuantizeLinear`` becomes one ``dse.CodeChain`` node: pooling and
    reshapes on the 8-bit codes, then a 256-entry code map. Any other op ends the search (the
    chain is not folded), as does a tensor read by more than one node (a residual branch).

    Exact: with positive scales, DequantizeLinear, Relu, Clip and QuantizeLinear are
    non-decreasing elementwise maps, and max pooling commutes with them, so the float round trip
    collapses into a table of what each input code becomes, computed with the same float32
    operations. It avoids converting every activation to float and back between layers.
    """

    def apply(self, graph: QGraph) -> tuple[QGraph, bool]:
        changed = False
        while (fused := self._fuse_first(graph)) is not None:
            graph, changed = fused, True
        return graph, changed

    def _fuse_first(self, graph: QGraph) -> QGraph | None:
        """The graph with its first foldable chain fused, or None if there is none."""
        for node in graph.nodes:
            chain = self._chain(graph, node) if node.op == "DequantizeLinear" else None
            if chain is None:
                continue
            fused = Node(CODE_CHAIN, f"{node.name}_codechain", (node.inputs[0],), chain[-1].outputs,
                         {"steps": [n for n in chain[1:-1] if n.op in _STRUCTURAL],
                          "code_map": self._code_map(graph, chain)})
            removed = {id(n) for n in chain[1:]}
            return graph.with_nodes(
                [fused if n is node else n for n in graph.nodes if id(n) not in removed])
        return None

    @staticmethod
    def _chain(graph: QGraph, dq: Node) -> list[Node] | None:
        if not _positive_scalar(graph, dq.inputs[1]):
            return None
        chain, tensor = [dq], dq.outputs[0]
        while True:
            readers = graph.consumers(tensor)
            if len(readers) != 1 or tensor in graph.outputs:
                return None
            node = readers[0]
            if node.op == "QuantizeLinear":
                return chain + [node] if _positive_scalar(graph, node.inputs[1]) else None
            if node.op not in _ELEMENTWISE | _STRUCTURAL:
                return None
            if any(name not in graph.initializers for name in node.inputs[1:] if name):
                return None  # only constant clip bounds and shapes
            chain.append(node)
            tensor = node.outputs[0]

    @staticmethod
    def _code_map(graph: QGraph, chain: list[Node]) -> np.ndarray:
        dtype = graph.initializers.get(chain[0].inputs[2]) if len(chain[0].inputs) > 2 else None
        dtype = dtype.dtype if dtype is not None else np.uint8
        info = np.iinfo(dtype)
        values = np.arange(info.min, info.max + 1).astype(dtype)
        ctx = Context(graph, None, None, set())
        for node in chain:
            if node.op in _STRUCTURAL:
                continue
            args = [values] + [graph.initializers.get(n) if n else None for n in node.inputs[1:]]
            values = OPS[node.op](node, args, ctx)[0]
        return values


def _positive_scalar(graph: QGraph, name: str) -> bool:
    scale = graph.initializers.get(name)
    return scale is not None and scale.size == 1 and float(scale.reshape(())) > 0


class FuseConvPool:
    """``QLinearConv -> dse.CodeChain`` becomes one ``dse.QLinearConvPool``: the kernel
    requantizes and applies the chain's code map in the same pass. When the chain's first step
    is a non-overlapping MaxPool, the kernel pools the int32 accumulators and requantizes only
    the pooled values (exact: requantization with positive scales and the code map are
    non-decreasing, so they commute with max pooling); otherwise the pool is (1, 1). The fused
    node keeps the convolution's name, which per-layer tables (``LayerTables``) are keyed by.
    Run after ``FoldCodeChains``."""

    def apply(self, graph: QGraph) -> tuple[QGraph, bool]:
        changed = False
        while (fused := self._fuse_first(graph)) is not None:
            graph, changed = fused, True
        return graph, changed

    @staticmethod
    def _poolable(step: Node) -> bool:
        kernel = tuple(step.attr("kernel_shape", ()))
        return (step.op == "MaxPool" and len(kernel) == 2
                and tuple(step.attr("strides", [1, 1])) == kernel
                and not any(step.attr("pads", [0, 0, 0, 0]))
                and tuple(step.attr("dilations", [1, 1])) == (1, 1)
                and not step.attr("ceil_mode", 0)
                and step.attr("auto_pad", "NOTSET") in ("NOTSET", "VALID"))

    def _fuse_first(self, graph: QGraph) -> QGraph | None:
        for conv in graph.nodes:
            if conv.op != "QLinearConv" or conv.outputs[0] in graph.outputs:
                continue
            readers = graph.consumers(conv.outputs[0])
            if len(readers) != 1 or readers[0].op != CODE_CHAIN:
                continue
            chain = readers[0]
            steps = chain.attrs["steps"]
            pooled = bool(steps) and self._poolable(steps[0])
            scales = [graph.initializers.get(conv.inputs[i]) for i in (1, 4, 6)]
            if pooled and any(s is None or np.any(s <= 0) for s in scales):
                continue  # pooling first needs a non-decreasing requantization
            fused = Node(CONV_POOL, conv.name, conv.inputs, chain.outputs,
                         {**conv.attrs, "code_map": chain.attrs["code_map"],
                          "pool": tuple(steps[0].attr("kernel_shape")) if pooled else (1, 1),
                          "steps": steps[1:] if pooled else steps})
            return graph.with_nodes([fused if n is conv else n for n in graph.nodes if n is not chain])
        return None


DEFAULT_TRANSFORMS = (FoldCodeChains(), FuseConvPool())


def optimize(graph: QGraph) -> QGraph:
    """Apply the default transformations; the result computes exactly what ``graph`` does."""
    for transform in DEFAULT_TRANSFORMS:
        graph, _ = transform.apply(graph)
    approx_runner.check_supported(graph)
    return graph
