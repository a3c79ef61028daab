"""Approximation-aware fine-tuning: the int8 network trained through its multiplier's table.

The forward pass is dse's own evaluation: every node of the quantized graph runs through
``evaluators.runtime.ops.OPS`` (table layers through the ``accel`` kernels with the layer's product
table), so a forward value equals the evaluator's bit for bit. Each node also has a float
*surrogate* in PyTorch (``evaluators.recovery.surrogates``; the table layers' are here) whose
value is replaced by the exact one: only its gradient is used. Rounding and the table lookups
are thereby straight-through, and a clamp (a fused ReLU, saturation) passes no gradient where
the exact value is clamped.

The trainable parameters are float shadows of the weights and biases of each table layer with a
constant weight (QLinearConv, QGemm, QLinearMatMul; MatMulInteger and ConvInteger of dynamic
quantization); their codes are ``round(W / w_scale) + w_zero_point`` and
``round(B / (x_scale * w_scale))``. Every scale and zero point of the graph is **kept**: the
activations keep the ranges the multiplier's error and workload were measured under, the
requantization multipliers stay those of the study's graph, and the retrained model is the
study's model with new weight and bias codes (``quantized_model``). A product of two
activations (a transformer's Q x K^T and softmax x V, as QLinearMatMul or MatMulInteger) has no
weights: its gradient flows to both operands.

Two gradients of a product ``T[a, w]`` (``gradient``):

- ``ste``: the exact product's, ``dT/da = w - w_zp``, ``dT/dw = a - a_zp`` (straight-through).
- ``table``: read from the table. ``T`` is factored ``T ~ sum_r U_r[a] V_r[w]`` (its
  leading singular vectors, ``RANK`` of them: a low-rank smoothing that keeps the exact product
  and the dominant error patterns); ``dT/da = sum_r U'_r[a] V_r[w]`` with ``U'_r`` the central
  finite difference of ``U_r`` smoothed by a Gaussian of ``SMOOTH`` codes (likewise for ``w``).
  A layer's gradient then costs ``RANK`` float convolutions. For the exact table it is ``ste``.
  Both operands of an activation product read it alike (``a`` the table's row, the second
  operand its column).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from torch import nn

from accel.requant import output_multiplier
from circuits.product_table import ProductTable
from evaluators.errors import ModelError
from evaluators.networks.training import train_classifier
from evaluators.onnx.editing import Initializers, copy_model
from evaluators.recovery.surrogates import (
    OPS_WITH_SURROGATES,
    along,
    const,
    straight_through,
    surrogate,
)
from evaluators.runtime import approx_runner, core_ops
from evaluators.runtime.approx_network import load_kernels, resolve
from evaluators.runtime.layer_tables import Tables, layer_table
from evaluators.runtime.node import Node
from evaluators.runtime.ops import OPS, TABLE_OPS
from evaluators.runtime.qgraph import QGraph

GRADIENTS = ("ste", "table")
RANK = 4  # factors of a table's gradient model
SMOOTH = 2.0  # codes: standard deviation of the Gaussian that smooths the finite differences


@dataclass(frozen=True)
class RetrainSettings:
    """How a design's network is fine-tuned: Adam with a one-cycle schedule peaking at
    ``learning_rate`` (float weight units), seeded shuffling, no augmentation."""

    epochs: int = 3
    gradient: str = "ste"
    batch_size: int = 64
    learning_rate: float = 1e-3
    seed: int = 0

    def __post_init__(self) -> None:
        if self.gradient not in GRADIENTS:
            raise ModelError(f"gradient {self.gradient!r}: expected one of {', '.join(GRADIENTS)}")
        if self.epochs < 1 or self.batch_size < 2 or not self.learning_rate > 0:
            raise ModelError("retraining needs epochs >= 1, batch_size >= 2 and a positive "
                             f"learning rate (got {self.epochs}, {self.batch_size}, "
                             f"{self.learning_rate})")


# -- gradient models of a product table ------------------------------------------------------

@dataclass(frozen=True)
class ProductModel:
    """``T[a, w] ~ sum_r u[r, a] v[r, w]`` over the table's 256 codes per operand, with the
    slopes ``du``, ``dv`` the gradient reads. ``residual``: relative Frobenius error of the fit."""

    u: np.ndarray
    du: np.ndarray
    v: np.ndarray
    dv: np.ndarray
    offset: int
    residual: float

    @classmethod
    def exact(cls, signed: bool) -> ProductModel:
        codes = ProductTable.exact(signed).operands.astype(np.float64)[None]
        ones = np.ones_like(codes)
        return cls(codes, ones, codes, ones, 128 if signed else 0, 0.0)

    @classmethod
    def of_table(cls, table: ProductTable, rank: int = RANK, smooth: float = SMOOTH) -> ProductModel:
        values = table.values.astype(np.float64)
        left, sigma, right = np.linalg.svd(values)
        u = left[:, :rank].T * np.sqrt(sigma[:rank])[:, None]
        v = right[:rank] * np.sqrt(sigma[:rank])[:, None]
        residual = float(np.linalg.norm(values - u.T @ v) / max(np.linalg.norm(values), 1e-12))
        return cls(u, _slope(u, smooth), v, _slope(v, smooth), table.offset, residual)


def _slope(f: np.ndarray, smooth: float) -> np.ndarray:
    """Central differences (one-sided at the ends) of each row, smoothed by a Gaussian."""
    diff = np.gradient(f, axis=1)
    radius = int(np.ceil(3 * smooth))
    kernel = np.exp(-0.5 * (np.arange(-radius, radius + 1) / smooth) ** 2)
    kernel /= kernel.sum()
    padded = np.pad(diff, ((0, 0), (radius, radius)), mode="edge")
    return np.stack([np.convolve(row, kernel, mode="valid") for row in padded])


def product_model(table: ProductTable, gradient: str) -> ProductModel:
    """The gradient model of one table under a gradient mode."""
    if gradient == "ste" or table == ProductTable.exact(table.signed):
        return ProductModel.exact(table.signed)
    return ProductModel.of_table(table)


class _Lookup(torch.autograd.Function):
    """``values[:, code]`` for float tensors holding codes, with ``slopes[:, code]`` as the
    derivative: a table read that gradients can flow through."""

    @staticmethod
    def forward(ctx, codes: torch.Tensor, values: torch.Tensor, slopes: torch.Tensor, offset: int):
        index = codes.detach().round().long() + offset
        ctx.save_for_backward(index, slopes)
        return values[:, index]

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        index, slopes = ctx.saved_tensors
        return (grad * slopes[:, index]).sum(0), None, None, None


class _Factors:
    """A ``ProductModel`` as torch tensors, for a table of the given signedness."""

    def __init__(self, model: ProductModel, signed: bool) -> None:
        as_t = lambda a: torch.as_tensor(a, dtype=torch.float32)  # noqa: E731
        self.u, self.du, self.v, self.dv = as_t(model.u), as_t(model.du), as_t(model.v), as_t(model.dv)
        self.offset, self.signed = model.offset, signed

    @property
    def rank(self) -> int:
        return self.u.shape[0]

    def rows(self, a: torch.Tensor) -> torch.Tensor:
        """``U[:, a]``: the first operand's factors (activations), rank first."""
        return _Lookup.apply(a, self.u, self.du, self.offset)

    def columns(self, b: torch.Tensor) -> torch.Tensor:
        """``V[:, b]``: the second operand's factors (weights, or attention's second
        activation), rank first."""
        return _Lookup.apply(b, self.v, self.dv, self.offset)


# -- the trainable layers -------------------------------------------------------------------

def _round_ste(t: torch.Tensor) -> torch.Tensor:
    return t + (torch.round(t) - t).detach()


@dataclass(frozen=True)
class _Inputs:
    """Where a table op keeps its operands: the second operand's input and zero point's, its
    channel axis (that of the output channels, of a constant weight), and the bias's input
    (-1: none)."""

    second: int
    second_zero: int
    axis: int
    bias: int = -1


_INPUTS = {"QLinearConv": _Inputs(3, 5, 0, 8), "QGemm": _Inputs(3, 5, 1, 6),
           "QLinearMatMul": _Inputs(3, 5, 1), "ConvInteger": _Inputs(1, 3, 0),
           "MatMulInteger": _Inputs(1, 3, 1)}
_INTEGER = {"ConvInteger", "MatMulInteger"}  # int32 accumulators out, rescaled by float ops
_CONVOLUTIONS = {"QLinearConv", "ConvInteger"}


def _weight_axis(node: Node) -> int:
    return 0 if node.op == "QGemm" and node.attr("transB", 0) else _INPUTS[node.op].axis


def _dynamic_weight_scale(graph: QGraph, node: Node) -> np.ndarray:
    """The scale of a MatMulInteger/ConvInteger weight, as onnxruntime's dynamic quantizer
    writes it: the layer's accumulators are cast to float and multiplied by the product of the
    activation's scale and this constant (``Cast -> Mul(acc, Mul(x_scale, w_scale))``)."""
    for cast in graph.consumers(node.outputs[0]):
        for mul in graph.consumers(cast.outputs[0]) if cast.op == "Cast" else ():
            factor = next((i for i in mul.inputs if i != cast.outputs[0]), "")
            producer = next((n for n in graph.nodes if factor in n.outputs), None)
            if mul.op == "Mul" and producer is not None and producer.op == "Mul":
                constants = [i for i in producer.inputs if i in graph.initializers]
                if len(constants) == 1:
                    return graph.initializers[constants[0]]
    raise ModelError(f"retraining: the scale of {node.op} {node.name!r}'s weight is not found "
                     "(expected Cast -> Mul by the activation's scale times a constant, as "
                     "onnxruntime's dynamic quantization writes it)")


class TableLayer:
    """A table-multiplying node's constant weight and bias as float parameters and their codes."""

    def __init__(self, graph: QGraph, node: Node) -> None:
        g, where = graph, _INPUTS[node.op]
        self.node = node
        self.weight_name = node.inputs[where.second]
        codes = g.const(self.weight_name)
        self.dtype = codes.dtype
        self.axis = _weight_axis(node)
        scale = _dynamic_weight_scale(g, node) if node.op in _INTEGER else g.const(node.inputs[4])
        self.w_scale = along(np.asarray(scale).reshape(-1), self.axis, codes.ndim)
        zp = g.initializers.get(node.inputs[where.second_zero]) \
            if len(node.inputs) > where.second_zero and node.inputs[where.second_zero] else None
        self.w_zero = along(np.zeros(()) if zp is None else zp, self.axis, codes.ndim)
        self.weight = nn.Parameter((const(codes) - self.w_zero) * self.w_scale)
        self.bias_name = node.inputs[where.bias] if 0 <= where.bias < len(node.inputs) else ""
        self.bias, self.b_scale = None, None
        if self.bias_name:
            self.b_scale = const(g.const(node.inputs[1])).reshape(()) * self.w_scale.reshape(-1)
            self.bias = nn.Parameter(const(g.const(self.bias_name)) * self.b_scale)

    def weight_codes(self) -> torch.Tensor:
        """Codes of the current weights (straight-through rounding), as float."""
        info = np.iinfo(self.dtype)
        return torch.clamp(_round_ste(self.weight / self.w_scale + self.w_zero), info.min, info.max)

    def bias_codes(self) -> torch.Tensor | None:
        if self.bias is None:
            return None
        info = np.iinfo(np.int32)
        return torch.clamp(_round_ste(self.bias / self.b_scale), info.min, info.max)


# -- surrogates of the table ops ---------------------------------------------------------------

def _shift(dtype: np.dtype, signed: bool) -> int:
    """What ``accel.codes.recentre`` adds to codes of ``dtype`` (and their zero point) to move
    them into a signed or unsigned multiplier's domain."""
    if (np.dtype(dtype) == np.int8) == signed:
        return 0
    return -128 if signed else 128


def _zero(args: list, index: int) -> np.ndarray:
    value = args[index] if len(args) > index else None
    return np.zeros((), np.int64) if value is None else np.asarray(value).astype(np.int64)


def _conv_surrogate(x: torch.Tensor, w: torch.Tensor, factors: _Factors, node: Node,
                    x_zero: int, w_zero: np.ndarray) -> torch.Tensor:
    """``sum_r conv(U_r(x), V_r(w))`` minus the zero-point terms: the accumulator as a
    differentiable function of the codes (the exact product for ``ste``)."""
    strides, dilations = node.attr("strides", [1, 1]), node.attr("dilations", [1, 1])
    top, left, bottom, right = node.attr("pads", [0, 0, 0, 0])
    group = int(node.attr("group", 1))
    xp = F.pad(x, (left, right, top, bottom), value=float(x_zero))
    n, c, h, wd = xp.shape
    o, cg = w.shape[:2]
    rank = factors.rank
    ux = factors.rows(xp).reshape(rank, n, group, cg, h, wd).permute(1, 2, 0, 3, 4, 5)
    vw = factors.columns(w).reshape(rank, o, cg, *w.shape[2:]).permute(1, 0, 2, 3, 4)
    acc = F.conv2d(ux.reshape(n, group * rank * cg, h, wd), vw.reshape(o, rank * cg, *w.shape[2:]),
                   stride=strides, dilation=dilations, groups=group)
    zw = np.broadcast_to(w_zero, (o,))
    if np.any(zw):
        ones = torch.ones((o, cg, *w.shape[2:])) * const(zw).reshape(-1, 1, 1, 1)
        acc = acc - F.conv2d(xp, ones, stride=strides, dilation=dilations, groups=group)
    if x_zero:
        acc = acc - float(x_zero) * w.sum(dim=(1, 2, 3)).reshape(1, -1, 1, 1)
    return acc


def _matmul_surrogate(a: torch.Tensor, b: torch.Tensor, factors: _Factors, a_zero: int,
                      b_zero: np.ndarray) -> torch.Tensor:
    """The accumulators of ``a`` (..., M, K) times ``b`` (..., K, N), leading axes broadcast
    (a weight, or a second activation), as in ``_conv_surrogate``."""
    ua, vb = factors.rows(a), factors.columns(b)
    depth = max(ua.dim(), vb.dim())
    ua = ua.reshape(ua.shape[0], *[1] * (depth - ua.dim()), *ua.shape[1:])
    vb = vb.reshape(vb.shape[0], *[1] * (depth - vb.dim()), *vb.shape[1:])
    acc = torch.matmul(ua, vb).sum(0)
    zb = np.broadcast_to(b_zero, (b.shape[-1],))
    if np.any(zb):
        acc = acc - a.sum(-1, keepdim=True) * const(zb)
    if a_zero:
        acc = acc - float(a_zero) * b.sum(-2, keepdim=True)
    return acc


def _requantized(acc: torch.Tensor, multiplier: np.ndarray, axis: int, y_zero,
                 codes: np.ndarray) -> torch.Tensor:
    """The output codes' surrogate ``acc * multiplier + zp``, passing no gradient where the
    exact codes saturate (a fused ReLU, or the range's ends)."""
    y = acc * along(multiplier, axis, acc.dim()) + float(0 if y_zero is None else y_zero)
    info = np.iinfo(codes.dtype)
    inside = torch.from_numpy((codes > info.min) & (codes < info.max))
    return torch.where(inside, y, y.detach())


def _table_surrogate(node: Node, t: list, a: list, codes: np.ndarray,
                     factors: _Factors) -> torch.Tensor:
    """A table op's output as a differentiable function of both operands (and the bias): the
    factored accumulator, then the requantization (none for the integer ops)."""
    where = _INPUTS[node.op]
    first_shift = _shift(a[0].dtype, factors.signed)
    second_shift = _shift(a[where.second].dtype, factors.signed)
    x, w = t[0] + first_shift, t[where.second] + second_shift
    x_zero = int(_zero(a, 2).reshape(-1)[0]) + first_shift
    w_zero = _zero(a, where.second_zero).reshape(-1) + second_shift
    if node.op in _CONVOLUTIONS:
        acc, axis = _conv_surrogate(x, w, factors, node, x_zero, w_zero), 1
    else:
        w = w.T if node.op == "QGemm" and node.attr("transB", 0) else w
        acc = _matmul_surrogate(x, w, factors, x_zero, w_zero)
        axis = acc.dim() - 1
    if node.op in _INTEGER:
        return acc
    if where.bias >= 0 and len(t) > where.bias and a[where.bias] is not None:
        acc = acc + t[where.bias].reshape([-1 if d == axis else 1 for d in range(acc.dim())])
    y_scale, y_zero = (a[6], _zero(a, 7)) if node.op != "QGemm" else (a[7], _zero(a, 8))
    alpha = float(node.attr("alpha", 1.0)) if node.op == "QGemm" else 1.0
    multiplier = output_multiplier(np.asarray(a[1], np.float32).reshape(()),
                                   np.asarray(a[4], np.float32).reshape(-1), y_scale, alpha)
    return _requantized(acc, multiplier, axis, y_zero.reshape(()), codes)


# -- the network -------------------------------------------------------------------------------

SOFTMAX = {"Softmax", "QLinearSoftmax"}
_TOWARD_OUTPUT = {"DequantizeLinear", "QuantizeLinear", "Identity", "Reshape", "Flatten",
                  "Squeeze", "Cast"}  # what may follow a final softmax, value-preserving
TRAINED_OPS = ("QLinearConv", "QGemm", "QLinearMatMul", "MatMulInteger", "ConvInteger")
"""The table ops whose constant weights are trained (a QLinearMatMul or MatMulInteger of two
activations has none: its gradient flows to both operands)."""


class TableNetwork(nn.Module):
    """The int8 graph as a trainable module: ``forward`` returns the logits the evaluator
    computes (the input of a final softmax), carrying surrogate gradients."""

    def __init__(self, graph: QGraph, tables: Tables, gradient: str = "ste",
                 kernel: str = "cpu", device: str = "cpu") -> None:
        super().__init__()
        approx_runner.check_supported(graph)
        approx_runner.check_layers(graph, tables)
        self.graph, self.tables = graph, tables
        self.kernel, self.device = resolve(kernel, device)
        self.nodes, self.logits_name = self._trained_nodes(graph)
        self.layers: dict[str, TableLayer] = {}
        self.factors: dict[str, _Factors] = {}
        ctx = core_ops.Context(graph, tables, None, set())
        for node in self.nodes:
            if node.op in TABLE_OPS:
                if node.op not in TRAINED_OPS:
                    raise ModelError(f"retraining: node {node.name!r} ({node.op}) has no gradient "
                                     f"model here; the table ops with one: {', '.join(TRAINED_OPS)}")
                index = _INPUTS[node.op].second
                weights = graph.initializers.get(node.inputs[index])
                if weights is not None and node.inputs[index] not in self.layers and \
                        (node.op in _CONVOLUTIONS or core_ops.weight_layer(node, ctx, weights, index)):
                    self.layers[node.inputs[index]] = TableLayer(graph, node)
                table = layer_table(tables, node.name)
                self.factors[node.name] = _Factors(product_model(table, gradient), table.signed)
            elif node.op not in OPS_WITH_SURROGATES:
                raise ModelError(f"retraining: ONNX op {node.op!r} (node {node.name!r}) has no "
                                 "gradient model here; ops with one: "
                                 f"{', '.join(sorted(OPS_WITH_SURROGATES | set(TRAINED_OPS)))}")
        self.params = nn.ParameterList([p for layer in self.layers.values()
                                        for p in (layer.weight, layer.bias) if p is not None])

    @staticmethod
    def _trained_nodes(graph: QGraph) -> tuple[list[Node], str]:
        """The nodes up to the logits: a final (QLinear)Softmax, one whose output reaches the
        graph's output through value-preserving ops only, and what follows it are left out
        (cross-entropy reads the logits; the prediction is the same). An attention's softmax
        stays."""
        nodes = list(graph.nodes)
        producers = {name: node for node in nodes for name in node.outputs}
        node = producers.get(graph.outputs[0])
        while node is not None and node.op not in SOFTMAX and node.op in _TOWARD_OUTPUT:
            node = producers.get(node.inputs[0])
        if node is not None and node.op in SOFTMAX:
            return nodes[:nodes.index(node)], node.inputs[0]
        return nodes, graph.outputs[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = self.graph
        ctx = core_ops.Context(g, self.tables, load_kernels(self.kernel, self.device), set())
        exact: dict[str, np.ndarray] = {**g.initializers, g.inputs[0]: x.detach().numpy(), "": None}
        grads: dict[str, torch.Tensor] = {g.inputs[0]: x} if x.requires_grad else {}
        for name, layer in self.layers.items():
            grads[name] = layer.weight_codes()
            exact[name] = grads[name].detach().numpy().astype(layer.dtype)
            if layer.bias is not None:
                grads[layer.bias_name] = layer.bias_codes()
                exact[layer.bias_name] = grads[layer.bias_name].detach().numpy().astype(np.int32)
        for node in self.nodes:
            args = [exact[name] for name in node.inputs]
            values = OPS[node.op](node, args, ctx)
            exact.update(zip(node.outputs, values))
            if not any(name in grads for name in node.inputs):
                continue  # constant to the gradient: only its exact value is needed
            tensors = [grads[name] if name in grads else const(exact[name]) for name in node.inputs]
            if node.op in TABLE_OPS:
                outputs = [_table_surrogate(node, tensors, args, values[0], self.factors[node.name])]
            else:
                outputs = surrogate(node, tensors, args, values, g.opset)
            for name, tensor, value in zip(node.outputs, outputs, values):
                if tensor is not None:
                    grads[name] = straight_through(tensor, value)
        logits = grads.get(self.logits_name)
        return const(exact[self.logits_name]) if logits is None else logits


# -- retraining --------------------------------------------------------------------------------

def quantized_model(network: TableNetwork, base: onnx.ModelProto) -> onnx.ModelProto:
    """``base`` (the int8 model the graph was read from) with the network's current weight and
    bias codes; every other tensor, scale and zero point unchanged."""
    model = copy_model(base)
    codes = {}
    with torch.no_grad():
        for name, layer in network.layers.items():
            codes[name] = layer.weight_codes().numpy().astype(layer.dtype)
            if layer.bias is not None:
                codes[layer.bias_name] = layer.bias_codes().numpy().astype(np.int32)
    inits = Initializers(model)
    for name, values in codes.items():
        if name in inits:
            inits.set(name, values)
    if missing := sorted(set(codes) - set(inits)):
        raise ModelError(f"retraining: tensor {missing[0]!r} is not an initializer of the model "
                         "(a Constant node?); cannot write the retrained codes back")
    return model


def retrain(int8_onnx: Path, tables: Tables, inputs: np.ndarray, labels: np.ndarray,
            settings: RetrainSettings, *, kernel: str = "cpu", device: str = "cpu",
            progress: Callable[[int, float], None] | None = None,
            batch_done: Callable[[], None] | None = None) -> onnx.ModelProto:
    """The int8 model with retrained weight and bias codes: every scale and zero point kept,
    so the graph (and the multiplier's operand ranges) stay those the study measured.
    ``progress(epoch, mean loss)`` after each epoch, ``batch_done()`` after each batch."""
    base = onnx.load(str(int8_onnx))
    network = TableNetwork(QGraph.from_onnx(base), tables, settings.gradient, kernel, device)
    train_classifier(network, inputs, labels, epochs=settings.epochs,
                     batch_size=settings.batch_size, learning_rate=settings.learning_rate,
                     augment=False, seed=settings.seed, progress=progress, batch_done=batch_done)
    return quantized_model(network, base)
