"""Graph transformations of the quantized IR, each a small object returning (graph, changed).

They change how a graph is computed, never what it computes: tests run every transformation
against the untransformed graph and against onnxruntime. The ops they fuse are computed by
``evaluators.runtime.fused_ops``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from evaluators.runtime import approx_runner
from evaluators.runtime.core_ops import Context
from evaluators.runtime.fused_ops import CODE_CHAIN, CONV_POOL
from evaluators.runtime.node import Node
from evaluators.runtime.ops import OPS
from evaluators.runtime.qgraph import QGraph

_ELEMENTWISE = {"Relu", "Clip"}  # monotone non-decreasing, so they commute with max pooling
_STRUCTURAL = {"MaxPool", "Flatten", "Reshape", "Identity", "Transpose", "Squeeze", "Unsqueeze"}


def _until_fixed(graph: QGraph, fuse_first: Callable[[QGraph], QGraph | None]
                 ) -> tuple[QGraph, bool]:
    """A transformation's result: ``fuse_first`` (the graph with its first fusable place
    fused, or None) applied until nothing is left to fuse, and whether anything was."""
    changed = False
    while (fused := fuse_first(graph)) is not None:
        graph, changed = fused, True
    return graph, changed


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
        return _until_fixed(graph, self._fuse_first)

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


class FoldCodeMaps:
    """``DequantizeLinear -> elementwise float ops -> QuantizeLinear``, where the float ops
    (a GELU's Div, Erf, Add and Mul, a sigmoid, ...) may branch and join but read nothing else
    than the dequantized tensor and scalar constants, becomes one ``dse.CodeChain`` node with a
    256-entry code map: the region maps each 8-bit code to one output code.

    Exact: every op of the region computes each element alone (its float32 arithmetic does
    not depend on the element's neighbours), so evaluating the region once on all 256 codes
    gives what it computes on any tensor. A region tensor read outside the region or the
    graph's output leaves the graph as it is.
    """

    def apply(self, graph: QGraph) -> tuple[QGraph, bool]:
        return _until_fixed(graph, self._fuse_first)

    def _fuse_first(self, graph: QGraph) -> QGraph | None:
        for index, node in enumerate(graph.nodes):
            if node.op != "DequantizeLinear" or not _scalar_quantization(graph, node):
                continue
            region = self._region(graph, index)
            if region is None:
                continue
            quantize = region[-1]
            fused = Node(CODE_CHAIN, f"{node.name}_codemap", (node.inputs[0],), quantize.outputs,
                         {"steps": [], "code_map": self._code_map(graph, region)})
            removed = {id(n) for n in region[1:]}
            return graph.with_nodes(
                [fused if n is node else n for n in graph.nodes if id(n) not in removed])
        return None

    @staticmethod
    def _code_map(graph: QGraph, region: list[Node]) -> np.ndarray:
        """What the region makes of every input code, in code order."""
        dq = region[0]
        zero = graph.initializers.get(dq.inputs[2]) if len(dq.inputs) > 2 and dq.inputs[2] else None
        info = np.iinfo(zero.dtype if zero is not None else np.uint8)
        env = {dq.inputs[0]: np.arange(info.min, info.max + 1).astype(info.dtype)}
        ctx = Context(graph, None, None, set())
        for node in region:
            args = [env[n] if n in env else graph.initializers.get(n) if n else None
                    for n in node.inputs]
            env.update(zip(node.outputs, OPS[node.op](node, args, ctx)))
        return env[region[-1].outputs[0]].reshape(-1)

    @staticmethod
    def _region(graph: QGraph, index: int) -> list[Node] | None:
        """The DequantizeLinear at ``index``, the elementwise ops fed only by it and by
        scalar constants, and the one QuantizeLinear that ends them; None if that is not all
        that reads them, or if nothing but a plain round trip lies between."""
        dq = graph.nodes[index]
        tensors, region = {dq.outputs[0]}, [dq]
        for node in graph.nodes[index + 1:]:
            inputs = [n for n in node.inputs if n]
            if node.op in _FLOAT_ELEMENTWISE and any(n in tensors for n in inputs) and all(
                    n in tensors or _scalar(graph, n) for n in inputs):
                region.append(node)
                tensors.update(node.outputs)
        ends = [n for n in graph.nodes if n.op == "QuantizeLinear" and n.inputs[0] in tensors]
        if len(region) < 2 or len(ends) != 1 or not _scalar_quantization(graph, ends[0]):
            return None
        inside = {id(n) for n in region} | {id(ends[0])}
        for tensor in tensors:
            if tensor in graph.outputs or any(id(r) not in inside for r in graph.consumers(tensor)):
                return None
        return region + ends


_FLOAT_ELEMENTWISE = {"Add", "Sub", "Mul", "Div", "Erf", "Tanh", "Sigmoid", "Sqrt", "Neg",
                      "Reciprocal", "Pow", "Relu", "Clip", "Gelu", "Identity"}
"""Float ops computing each element alone (from it and scalar constants)."""


def _scalar(graph: QGraph, name: str) -> bool:
    value = graph.initializers.get(name)
    return value is not None and value.size == 1


def _scalar_quantization(graph: QGraph, node: Node) -> bool:
    """A Quantize/DequantizeLinear with one constant scale and zero point (if any)."""
    return _scalar(graph, node.inputs[1]) and (len(node.inputs) < 3 or not node.inputs[2]
                                               or _scalar(graph, node.inputs[2]))


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
        return _until_fixed(graph, self._fuse_first)

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


DEFAULT_TRANSFORMS = (FoldCodeMaps(), FoldCodeChains(), FuseConvPool())


def optimize(graph: QGraph) -> QGraph:
    """Apply the default transformations; the result computes exactly what ``graph`` does."""
    for transform in DEFAULT_TRANSFORMS:
        graph, _ = transform.apply(graph)
    approx_runner.check_supported(graph)
    return graph
