"""The operands a network really multiplies: the workload that drives multiplier power.

Every multiplication of every Conv/Gemm/MatMul layer is one (activation code, weight code)
pair, padding included (a product of two activations, attention's Q x K^T, pairs the codes of
both). Sampling pairs uniformly over all of a run's multiplications (so each
layer contributes in proportion to its MAC count) gives the stream a MAC unit would see, up to
the order of the pairs, which is random here (a dataflow-specific order is not modelled).
``operand_histograms`` counts the same pairs exactly instead of sampling them.
"""

from __future__ import annotations

from collections.abc import Sequence
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

MAC_OPS = ("QLinearConv", "QGemm", "QLinearMatMul", "MatMulInteger")
SECOND_OPERAND = {"QLinearConv": 3, "QGemm": 3, "QLinearMatMul": 3, "MatMulInteger": 1}
"""Each layer's weight input, or its second activation (attention's K^T, V)."""


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


def _activation_operand(graph: QGraph, node: Node) -> str | None:
    """The second operand of a Gemm/MatMul layer when it is an activation (not a constant)."""
    name = node.inputs[SECOND_OPERAND[node.op]]
    return None if node.op == "QLinearConv" or name in graph.initializers else name


def _gemm_operands(graph: QGraph, node: Node, captured: dict[str, np.ndarray]
                   ) -> tuple[np.ndarray, np.ndarray]:
    """A Gemm/MatMul layer's operands as a batch of products (L, M, K) x (L, K, N): a constant
    weight is one product of all activation rows, two activations (attention) are broadcast
    over their leading axes as the matmul does."""
    x = captured[node.inputs[0]]
    second = _activation_operand(graph, node)
    w = captured[second] if second else graph.const(node.inputs[SECOND_OPERAND[node.op]])
    w = w.T if node.attr("transB", 0) else w
    if w.ndim == 2 and not second:
        return x.reshape(1, -1, x.shape[-1]), w[None]
    x, w = (x[None] if x.ndim == 1 else x), (w[:, None] if w.ndim == 1 else w)
    lead = np.broadcast_shapes(x.shape[:-2], w.shape[:-2])
    return (np.broadcast_to(x, lead + x.shape[-2:]).reshape(-1, *x.shape[-2:]),
            np.broadcast_to(w, lead + w.shape[-2:]).reshape(-1, *w.shape[-2:]))


def _layer_operands(graph: QGraph, node: Node, captured: dict[str, np.ndarray], count: int,
                    rng: np.random.Generator, signed: bool) -> tuple[np.ndarray, np.ndarray]:
    """``count`` uniformly drawn multiplications of one layer, as (activation, weight or second
    activation) codes of a ``signed`` or unsigned multiplier."""
    if node.op == "QLinearConv":
        conv = ConvOperands.of(graph, node, captured[node.inputs[0]])
        (sh, sw), (dh, dw), (oh, ow) = conv.strides, conv.dilations, conv.out_shape
        o, cg, kh, kw = conv.w.shape
        n_i, y, xx = (rng.integers(0, s, count) for s in (conv.xp.shape[0], oh, ow))
        oc, c, p, q = (rng.integers(0, s, count) for s in (o, cg, kh, kw))
        channel = (oc // (o // conv.group)) * cg + c
        a, b = conv.xp[n_i, channel, y * sh + p * dh, xx * sw + q * dw], conv.w[oc, c, p, q]
    else:
        a, b = _gemm_operands(graph, node, captured)  # (L, M, K), (L, K, N)
        batch, rows, k, oc = (rng.integers(0, s, count) for s in (*a.shape, b.shape[2]))
        a, b = a[batch, rows, k], b[batch, k, oc]
    return recentre(a, 0, signed)[0], recentre(b, 0, signed)[0]


def mac_counts(graph: QGraph, captured: dict[str, np.ndarray]) -> dict[str, int]:
    """Multiplications per layer for the captured run (``captured`` holds the layers' inputs
    and outputs)."""
    return {node.name: layer_macs(graph, node, captured) for node in graph.nodes
            if node.op in MAC_OPS}


def layer_macs(graph: QGraph, node: Node, captured: dict[str, np.ndarray]) -> int:
    """One table layer's multiplications in the captured run: each output times the products
    summed into it (a convolution's kernel volume, a product's inner dimension; two
    activations multiplied included)."""
    if node.op in ("QLinearConv", "ConvInteger"):
        weights = node.inputs[3 if node.op == "QLinearConv" else 1]
        per_output = int(np.prod(graph.const(weights).shape[1:]))
    elif node.op == "QGemm" and node.attr("transA", 0):
        per_output = captured[node.inputs[0]].shape[0]
    else:
        per_output = captured[node.inputs[0]].shape[-1]
    return int(captured[node.outputs[0]].size) * per_output


def _exact_run(graph: QGraph, inputs: np.ndarray, images: int,
               tables: Assignment | None = None) -> tuple[list[Node], dict]:
    """The table layers and what they read and write in the exact network on ``images`` inputs
    (or in the network multiplying with ``tables``)."""
    layers = [n for n in graph.nodes if n.op in MAC_OPS]
    capture = [n.inputs[0] for n in layers] + [n.outputs[0] for n in layers] + \
        [name for n in layers if (name := _activation_operand(graph, n))]
    captured = approx_runner.run(graph, {graph.inputs[0]: inputs[:images]},
                                 tables if tables is not None else ProductTable.exact(signed=True),
                                 cpu, capture)
    return layers, captured


def sample_workload(graph: QGraph, inputs: np.ndarray, length: int = 8192, images: int = 256,
                    seed: int = 0, signed: bool = True,
                    approximated: Sequence[str] | None = None) -> OperandStream:
    """A stream of ``length`` multiplications drawn over all layers (or the ``approximated``
    ones: those the multiplier replaces) of the exact int8 network run on the first ``images``
    inputs (``graph`` is the quantized model, before folding), as operands of a ``signed`` or
    unsigned multiplier (``accel.codes.recentre``)."""
    layers, captured = _exact_run(graph, inputs, images)
    macs = mac_counts(graph, captured)
    if approximated is not None:
        layers = [n for n in layers if n.name in approximated]
    rng = np.random.default_rng(seed)
    counts = np.array([macs[n.name] for n in layers])
    shares = rng.multinomial(length, counts / counts.sum())
    parts = [_layer_operands(graph, n, captured, int(k), rng, signed)
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
        a, b = _layer_operands(graph, node, captured, length, rng, signed)
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
            counts = (_conv_counts(ConvOperands.of(graph, node, captured[node.inputs[0]]))
                      if node.op == "QLinearConv" else _gemm_counts(*_gemm_operands(graph, node, captured)))
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
    """(X, W) of a batch of products (L, M, K) x (L, K, N): activation codes per product and
    input column k, second-operand codes per product and row k (rows (l, k) meet only
    each other)."""
    batches, m, k = a.shape
    return (_code_counts(a.transpose(0, 2, 1).reshape(batches * k, m)),
            _code_counts(b.reshape(batches * k, b.shape[2])))


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
