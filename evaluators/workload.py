"""The operands a network really multiplies: the workload that drives multiplier power.

Every multiplication of every Conv/Gemm/MatMul layer is one (activation code, weight code)
pair, padding included. Sampling pairs uniformly over all of a run's multiplications (so each
layer contributes in proportion to its MAC count) gives the stream a MAC unit would see, up to
the order of the pairs, which is random here (a dataflow-specific order is not modelled).
"""

from __future__ import annotations

import numpy as np

from accel import cpu
from accel.reference import pad_input
from circuits.activity import OperandStream
from circuits.product_table import ProductTable
from evaluators import approx_runner
from evaluators.qgraph import Node, QGraph

MAC_OPS = ("QLinearConv", "QGemm", "QLinearMatMul")


def _layer_operands(graph: QGraph, node: Node, x: np.ndarray, count: int,
                    rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``count`` uniformly drawn multiplications of one layer, as (activation, weight) codes."""
    w = graph.const(node.inputs[3])
    if node.op == "QLinearConv":
        pads = tuple(node.attr("pads", [0, 0, 0, 0]))
        sh, sw = node.attr("strides", [1, 1])
        dh, dw = node.attr("dilations", [1, 1])
        group = int(node.attr("group", 1))
        zp = graph.initializers.get(node.inputs[2])
        xp = pad_input(x, pads, int(zp) if zp is not None else 0)
        o, cg, kh, kw = w.shape
        oh = (xp.shape[2] - dh * (kh - 1) - 1) // sh + 1
        ow = (xp.shape[3] - dw * (kw - 1) - 1) // sw + 1
        n_i, y, xx = (rng.integers(0, s, count) for s in (xp.shape[0], oh, ow))
        oc, c, p, q = (rng.integers(0, s, count) for s in (o, cg, kh, kw))
        channel = (oc // (o // group)) * cg + c
        return xp[n_i, channel, y * sh + p * dh, xx * sw + q * dw], w[oc, c, p, q]
    a = x.reshape(-1, x.shape[-1])
    b = w.T if node.attr("transB", 0) else w  # (K, O)
    rows, k, oc = (rng.integers(0, s, count) for s in (a.shape[0], b.shape[0], b.shape[1]))
    return a[rows, k], b[k, oc]


def mac_counts(graph: QGraph, captured: dict[str, np.ndarray]) -> dict[str, int]:
    """Multiplications per layer for the captured run (layer output shape x products per output)."""
    counts = {}
    for node in graph.nodes:
        if node.op in MAC_OPS:
            w = graph.const(node.inputs[3])
            per_output = int(np.prod(w.shape[1:])) if node.op == "QLinearConv" else (
                w.shape[1] if node.attr("transB", 0) else w.shape[0])
            counts[node.name] = int(captured[node.outputs[0]].size) * per_output
    return counts


def _exact_run(graph: QGraph, inputs: np.ndarray, images: int) -> tuple[list[Node], dict]:
    """The table layers and what they read and write in the exact network on ``images`` inputs."""
    layers = [n for n in graph.nodes if n.op in MAC_OPS]
    capture = [n.inputs[0] for n in layers] + [n.outputs[0] for n in layers]
    captured = approx_runner.run(graph, {graph.inputs[0]: inputs[:images]},
                                 ProductTable.exact(signed=True), cpu, capture)
    return layers, captured


def sample_workload(graph: QGraph, inputs: np.ndarray, length: int = 8192, images: int = 256,
                    seed: int = 0) -> OperandStream:
    """A stream of ``length`` multiplications drawn over all layers of the exact int8 network
    run on the first ``images`` inputs (``graph`` is the quantized model, before folding)."""
    layers, captured = _exact_run(graph, inputs, images)
    macs = mac_counts(graph, captured)
    rng = np.random.default_rng(seed)
    shares = rng.multinomial(length, np.array([macs[n.name] for n in layers]) / sum(macs.values()))
    parts = [_layer_operands(graph, n, captured[n.inputs[0]], int(k), rng)
             for n, k in zip(layers, shares) if k]
    a = np.concatenate([p[0] for p in parts]).astype(np.int64)
    b = np.concatenate([p[1] for p in parts]).astype(np.int64)
    order = rng.permutation(length)
    return OperandStream(a[order], b[order], "workload")


def sample_layer_workloads(graph: QGraph, inputs: np.ndarray, length: int = 8192,
                           images: int = 256, seed: int = 0) -> dict[str, OperandStream]:
    """One stream of ``length`` multiplications per table layer (by node name, in graph
    order), each drawn from that layer's own operands in the exact network: a multiplier's
    power depends on what it multiplies, and layers multiply very different codes."""
    layers, captured = _exact_run(graph, inputs, images)
    rng = np.random.default_rng(seed)
    streams = {}
    for node in layers:
        a, b = _layer_operands(graph, node, captured[node.inputs[0]], length, rng)
        streams[node.name] = OperandStream(a.astype(np.int64), b.astype(np.int64), node.name)
    return streams
