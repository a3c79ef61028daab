"""The operands a network really multiplies: the workload that drives multiplier power.

Every multiplication of every Conv/Gemm/MatMul layer is one (activation code, weight code)
pair, padding included. Sampling pairs uniformly over all of a run's multiplications (so each
layer contributes in proportion to its MAC count) gives the stream a MAC unit would see, up to
the order of the pairs, which is random here (a dataflow-specific order is not modelled).
``operand_histograms`` counts the same pairs exactly instead of sampling them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from accel import cpu
from accel.codes import recentre
from accel.reference import pad_input
from circuits.activity import OperandStream
from circuits.product_table import ProductTable
from evaluators.runtime import approx_runner
from evaluators.runtime.layer_tables import Assignment
from evaluators.runtime.node import Node
from evaluators.runtime.qgraph import QGraph

MAC_OPS = ("QLinearConv", "QGemm", "QLinearMatMul")


@dataclass(frozen=True)
class ConvOperands:
    """What a QLinearConv multiplies: its padded input (padded with the activation zero point,
    as a MAC array multiplies padding too), its weights and its output geometry."""

    xp: np.ndarray  # (N, C, H + pads, W + pads) activation codes
    w: np.ndarray  # (O, C / group, kh, kw) weight codes
    strides: tuple[int, int]
    dilations: tuple[int, int]
    group: int
    out_shape: tuple[int, int]  # (oh, ow)

    @classmethod
    def of(cls, graph: QGraph, node: Node, x: np.ndarray) -> ConvOperands:
        w = graph.const(node.inputs[3])
        zp = graph.initializers.get(node.inputs[2])
        xp = pad_input(x, tuple(node.attr("pads", [0, 0, 0, 0])), int(zp) if zp is not None else 0)
        strides, dilations = tuple(node.attr("strides", [1, 1])), tuple(node.attr("dilations", [1, 1]))
        kh, kw = w.shape[2:]
        out = tuple((xp.shape[2 + i] - dilations[i] * (k - 1) - 1) // strides[i] + 1
                    for i, k in enumerate((kh, kw)))
        return cls(xp, w, strides, dilations, int(node.attr("group", 1)), out)

    def window(self, p: int, q: int) -> np.ndarray:
        """The activations kernel position (p, q) meets at every output position: (N, C, oh, ow)."""
        (sh, sw), (dh, dw), (oh, ow) = self.strides, self.dilations, self.out_shape
        return self.xp[:, :, p * dh : p * dh + sh * (oh - 1) + 1 : sh,
                       q * dw : q * dw + sw * (ow - 1) + 1 : sw]


def _gemm_operands(graph: QGraph, node: Node, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A Gemm/MatMul layer's activation rows (M, K) and weights (K, O)."""
    w = graph.const(node.inputs[3])
    return x.reshape(-1, x.shape[-1]), (w.T if node.attr("transB", 0) else w)


def _layer_operands(graph: QGraph, node: Node, x: np.ndarray, count: int,
                    rng: np.random.Generator, signed: bool) -> tuple[np.ndarray, np.ndarray]:
    """``count`` uniformly drawn multiplications of one layer, as (activation, weight) codes of
    a ``signed`` or unsigned multiplier."""
    if node.op == "QLinearConv":
        conv = ConvOperands.of(graph, node, x)
        (sh, sw), (dh, dw), (oh, ow) = conv.strides, conv.dilations, conv.out_shape
        o, cg, kh, kw = conv.w.shape
        n_i, y, xx = (rng.integers(0, s, count) for s in (conv.xp.shape[0], oh, ow))
        oc, c, p, q = (rng.integers(0, s, count) for s in (o, cg, kh, kw))
        channel = (oc // (o // conv.group)) * cg + c
        a, b = conv.xp[n_i, channel, y * sh + p * dh, xx * sw + q * dw], conv.w[oc, c, p, q]
    else:
        a, b = _gemm_operands(graph, node, x)  # (M, K), (K, O)
        rows, k, oc = (rng.integers(0, s, count) for s in (a.shape[0], b.shape[0], b.shape[1]))
        a, b = a[rows, k], b[k, oc]
    return recentre(a, 0, signed)[0], recentre(b, 0, signed)[0]


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


def _exact_run(graph: QGraph, inputs: np.ndarray, images: int,
               tables: Assignment | None = None) -> tuple[list[Node], dict]:
    """The table layers and what they read and write in the exact network on ``images`` inputs
    (or in the network multiplying with ``tables``)."""
    layers = [n for n in graph.nodes if n.op in MAC_OPS]
    capture = [n.inputs[0] for n in layers] + [n.outputs[0] for n in layers]
    captured = approx_runner.run(graph, {graph.inputs[0]: inputs[:images]},
                                 tables if tables is not None else ProductTable.exact(signed=True),
                                 cpu, capture)
    return layers, captured


def sample_workload(graph: QGraph, inputs: np.ndarray, length: int = 8192, images: int = 256,
                    seed: int = 0, signed: bool = True) -> OperandStream:
    """A stream of ``length`` multiplications drawn over all layers of the exact int8 network
    run on the first ``images`` inputs (``graph`` is the quantized model, before folding), as
    operands of a ``signed`` or unsigned multiplier (``accel.codes.recentre``)."""
    layers, captured = _exact_run(graph, inputs, images)
    macs = mac_counts(graph, captured)
    rng = np.random.default_rng(seed)
    shares = rng.multinomial(length, np.array([macs[n.name] for n in layers]) / sum(macs.values()))
    parts = [_layer_operands(graph, n, captured[n.inputs[0]], int(k), rng, signed)
             for n, k in zip(layers, shares) if k]
    a = np.concatenate([p[0] for p in parts]).astype(np.int64)
    b = np.concatenate([p[1] for p in parts]).astype(np.int64)
    order = rng.permutation(length)
    return OperandStream(a[order], b[order], "workload")


def sample_layer_workloads(graph: QGraph, inputs: np.ndarray, length: int = 8192,
                           images: int = 256, seed: int = 0,
                           signed: bool = True) -> dict[str, OperandStream]:
    """One stream of ``length`` multiplications per table layer (by node name, in graph
    order), each drawn from that layer's own operands in the exact network: a multiplier's
    power depends on what it multiplies, and layers multiply very different codes."""
    layers, captured = _exact_run(graph, inputs, images)
    rng = np.random.default_rng(seed)
    streams = {}
    for node in layers:
        a, b = _layer_operands(graph, node, captured[node.inputs[0]], length, rng, signed)
        streams[node.name] = OperandStream(a.astype(np.int64), b.astype(np.int64), node.name)
    return streams


def operand_histograms(graph: QGraph, inputs: np.ndarray, tables: Assignment | None = None,
                       batch: int = 512) -> dict[str, np.ndarray]:
    """Per table layer (by node name, in graph order), the exact joint histogram of the
    (activation code, weight code) pairs it multiplies over all ``inputs``, padding included:
    256x256 int64 counts indexed as a product table is (``[a + 128, w + 128]`` for int8 codes,
    ``[a, w]`` for uint8), in the exact network or in the one multiplying with ``tables`` (later
    layers then see the activations the approximate layers before them produce).

    This is the distribution the power workload is drawn from, counted instead of sampled:
    ``sample_layer_workloads`` draws pairs with probability H / H.sum() (in the exact network),
    and H.sum() is the layer's MAC count (``mac_counts``). Counted exactly and fast: for every
    kernel position k (a Gemm's input column), X[k, a] counts the activation code a over the
    output positions (rows) that position meets and W[k, w] the weight code w over the output
    channels; each of those activations meets each of those weights once, so H = X^T W."""
    totals: dict[str, np.ndarray] = {}
    for start in range(0, len(inputs), batch):
        layers, captured = _exact_run(graph, inputs[start : start + batch], batch, tables)
        for node in layers:
            x = captured[node.inputs[0]]
            counts = (_conv_counts(ConvOperands.of(graph, node, x)) if node.op == "QLinearConv"
                      else _gemm_counts(*_gemm_operands(graph, node, x)))
            h = _exact_product(*counts)
            totals[node.name] = totals[node.name] + h if node.name in totals else h
    return totals


def _exact_product(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """X^T W as int64 through float64 BLAS (numpy has no BLAS for integer matmul, many times slower):
    exact, as every partial sum is an integer at most one batch's MAC count, far below 2^53."""
    return np.rint(x.T.astype(np.float64) @ w.astype(np.float64)).astype(np.int64)


def _code_counts(codes: np.ndarray) -> np.ndarray:
    """(K, 256) int64: how often each code occurs in each row of ``codes`` (K, M), by table
    index (int8 codes shifted by 128)."""
    offset = 128 if codes.dtype == np.int8 else 0
    rows = np.arange(codes.shape[0], dtype=np.int64)[:, None] * 256
    flat = (rows + codes.astype(np.int64) + offset).ravel()
    return np.bincount(flat, minlength=codes.shape[0] * 256).reshape(-1, 256)


def _gemm_counts(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(X, W) of a Gemm: activation codes per input column k, weight codes per weight row k."""
    return _code_counts(a.T), _code_counts(b)


def _conv_counts(conv: ConvOperands) -> tuple[np.ndarray, np.ndarray]:
    """(X, W) of a convolution, one row per (group, input channel, kernel row, kernel column)."""
    o, cg, kh, kw = conv.w.shape
    og = o // conv.group
    xs, ws = [], []
    for p in range(kh):
        for q in range(kw):
            window = conv.window(p, q)  # (N, C, oh, ow): channel g * cg + c meets group g
            xs.append(_code_counts(window.transpose(1, 0, 2, 3).reshape(window.shape[1], -1)))
            per_group = conv.w[:, :, p, q].reshape(conv.group, og, cg).transpose(0, 2, 1)
            ws.append(_code_counts(per_group.reshape(conv.group * cg, og)))
    return np.concatenate(xs), np.concatenate(ws)
