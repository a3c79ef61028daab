"""Approximation-aware fine-tuning: the int8 network trained through its multiplier's table.

The forward pass is dse's own evaluation: every node of the quantized graph runs through
``evaluators.runtime.ops.OPS`` (table layers through the ``accel`` kernels with the layer's product
table), so a forward value equals the evaluator's bit for bit. Each node also has a float
*surrogate* in PyTorch whose value is replaced by the exact one (``y = s + (exact - s).detach()``):
only its gradient is used. Rounding and the table lookups are thereby straight-through, and a
clamp (a fused ReLU, saturation) passes no gradient where the exact value is clamped.

The trainable parameters are float shadows of each table layer's weights and bias; their codes
are ``round(W / w_scale) + w_zero_point`` and ``round(B / (x_scale * w_scale))``. Every scale and
zero point of the graph is **kept**: the activations keep the ranges the multiplier's error and
workload were measured under, the requantization multipliers stay those of the study's graph, and
the retrained model is the study's model with new weight and bias codes (``quantized_model``).

Two gradients of a product ``T[a, w]`` (``gradient``):

- ``ste``: the exact product's, ``dT/da = w - w_zp``, ``dT/dw = a - a_zp`` (straight-through).
- ``table``: read from the table. ``T`` is factored ``T ~ sum_r U_r[a] V_r[w]`` (its
  leading singular vectors, ``RANK`` of them: a low-rank smoothing that keeps the exact product
  and the dominant error patterns); ``dT/da = sum_r U'_r[a] V_r[w]`` with ``U'_r`` the central
  finite difference of ``U_r`` smoothed by a Gaussian of ``SMOOTH`` codes (likewise for ``w``).
  A layer's gradient then costs ``RANK`` float convolutions. For the exact table it is ``ste``.
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

from accel.requant import requantize
from circuits.product_table import ProductTable
from evaluators.errors import ModelError
from evaluators.networks.training import train_classifier
from evaluators.onnx.editing import Initializers, copy_model
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
    """A ``ProductModel`` as torch tensors."""

    def __init__(self, model: ProductModel) -> None:
        as_t = lambda a: torch.as_tensor(a, dtype=torch.float32)  # noqa: E731
        self.u, self.du, self.v, self.dv = as_t(model.u), as_t(model.du), as_t(model.v), as_t(model.dv)
        self.offset = model.offset

    def activations(self, x: torch.Tensor) -> torch.Tensor:
        return _Lookup.apply(x, self.u, self.du, self.offset)

    def weights(self, w: torch.Tensor) -> torch.Tensor:
        return _Lookup.apply(w, self.v, self.dv, self.offset)


# -- the trainable layers -------------------------------------------------------------------

def _round_ste(t: torch.Tensor) -> torch.Tensor:
    return t + (torch.round(t) - t).detach()


def _exact(surrogate: torch.Tensor, value: np.ndarray) -> torch.Tensor:
    """The exact value carrying the surrogate's gradient."""
    exact = torch.from_numpy(np.asarray(value, dtype=np.float32))
    return surrogate + (exact - surrogate).detach()


def _along(values: np.ndarray, axis: int, ndim: int) -> torch.Tensor:
    """A per-channel constant shaped to broadcast along ``axis`` (a scalar stays a scalar)."""
    t = torch.as_tensor(np.asarray(values, dtype=np.float32))
    if t.numel() == 1:
        return t.reshape(())
    shape = [1] * ndim
    shape[axis] = -1
    return t.reshape(shape)


class TableLayer:
    """A table-multiplying node's weight and bias as float parameters and their codes."""

    def __init__(self, graph: QGraph, node: Node) -> None:
        self.node = node
        g = graph
        self.weight_name = node.inputs[3]
        codes = g.const(self.weight_name)
        self.dtype = codes.dtype
        self.axis = 0 if node.op == "QLinearConv" or (node.op == "QGemm" and node.attr("transB", 0)) \
            else 1
        self.w_scale = _along(g.const(node.inputs[4]), self.axis, codes.ndim)
        zp = g.initializers.get(node.inputs[5]) if len(node.inputs) > 5 and node.inputs[5] else None
        self.w_zero = _along(np.zeros(()) if zp is None else zp, self.axis, codes.ndim)
        self.weight = nn.Parameter((torch.from_numpy(codes.astype(np.float32)) - self.w_zero)
                                   * self.w_scale)
        self.bias_name = self._bias_input()
        self.bias, self.b_scale = None, None
        if self.bias_name:
            bias = g.const(self.bias_name)
            self.b_scale = torch.as_tensor(np.float32(g.const(node.inputs[1]))) * \
                self.w_scale.reshape(-1)
            self.bias = nn.Parameter(torch.from_numpy(bias.astype(np.float32)) * self.b_scale)

    def _bias_input(self) -> str:
        index = {"QLinearConv": 8, "QGemm": 6}.get(self.node.op)
        if index is None or len(self.node.inputs) <= index:
            return ""
        return self.node.inputs[index]

    def weight_codes(self) -> torch.Tensor:
        """Codes of the current weights (straight-through rounding), as float."""
        info = np.iinfo(self.dtype)
        return torch.clamp(_round_ste(self.weight / self.w_scale + self.w_zero), info.min, info.max)

    def bias_codes(self) -> torch.Tensor | None:
        if self.bias is None:
            return None
        info = np.iinfo(np.int32)
        return torch.clamp(_round_ste(self.bias / self.b_scale), info.min, info.max)


# -- surrogates of the other ops (their gradients; values come from runtime.ops.OPS) ---------

def _dequant(t: torch.Tensor, scale, zero) -> torch.Tensor:
    return (t - _const(zero)) * _const(scale)


def _const(value) -> torch.Tensor:
    return torch.as_tensor(np.asarray(0 if value is None else value, dtype=np.float32))


def _quant(t: torch.Tensor, scale, zero, dtype) -> torch.Tensor:
    info = np.iinfo(np.asarray(zero).dtype if zero is not None else dtype)
    return torch.clamp(t / _const(scale) + _const(zero), info.min, info.max)


def _arg(args: list, i: int):
    return args[i] if len(args) > i else None


def _quantize_linear(node: Node, t: list, a: list, exact: list) -> torch.Tensor:
    x, scale, zero = t[0], a[1], _arg(a, 2)
    axis = node.attr("axis", 1) % x.dim()
    s, z = _along(scale, axis, x.dim()), _along(0 if zero is None else zero, axis, x.dim())
    info = np.iinfo(exact[0].dtype)
    return torch.clamp(x / s + z, info.min, info.max)


def _dequantize_linear(node: Node, t: list, a: list, exact: list) -> torch.Tensor:
    x, scale, zero = t[0], a[1], _arg(a, 2)
    axis = node.attr("axis", 1) % x.dim()
    return (x - _along(0 if zero is None else zero, axis, x.dim())) * _along(scale, axis, x.dim())


def _pads(node: Node) -> tuple[int, int, int, int]:
    top, left, bottom, right = node.attr("pads", [0, 0, 0, 0])
    return left, right, top, bottom


def _max_pool(node: Node, t: list, a: list, exact: list) -> torch.Tensor:
    x = F.pad(t[0], _pads(node), value=float("-inf"))
    return F.max_pool2d(x, node.attr("kernel_shape"), node.attr("strides", None) or 1,
                        dilation=node.attr("dilations", [1, 1]),
                        ceil_mode=bool(node.attr("ceil_mode", 0)))


def _clip(node: Node, t: list, a: list, exact: list) -> torch.Tensor:
    lo = _arg(a, 1) if _arg(a, 1) is not None else node.attr("min", -np.inf)
    hi = _arg(a, 2) if _arg(a, 2) is not None else node.attr("max", np.inf)
    return torch.clamp(t[0], float(lo), float(hi))


def _binary(fn: Callable) -> Callable:
    return lambda node, t, a, exact: fn(t[0], t[1])


def _qlinear_binary(fn: Callable) -> Callable:
    """QLinearAdd/QLinearMul: A, A_scale, A_zp, B, B_scale, B_zp, C_scale, C_zp."""
    def op(node: Node, t: list, a: list, exact: list) -> torch.Tensor:
        y = fn(_dequant(t[0], a[1], _arg(a, 2)), _dequant(t[3], a[4], _arg(a, 5)))
        return _quant(y, a[6], _arg(a, 7), exact[0].dtype)
    return op


def _qlinear_global_average_pool(node: Node, t: list, a: list, exact: list) -> torch.Tensor:
    x = _dequant(t[0], a[1], a[2])
    dims = tuple(range(1, x.dim() - 1)) if node.attr("channels_last", 0) else tuple(range(2, x.dim()))
    return _quant(x.mean(dim=dims, keepdim=True), a[3], a[4], exact[0].dtype)


def _avg_pool(x: torch.Tensor, node: Node) -> torch.Tensor:
    include = bool(node.attr("count_include_pad", 0))
    x = F.pad(x, _pads(node)) if include else x
    if not include and any(_pads(node)):
        ones = F.pad(torch.ones_like(x[:1, :1]), _pads(node))
        total = F.avg_pool2d(F.pad(x, _pads(node)), node.attr("kernel_shape"),
                             node.attr("strides", None) or 1, ceil_mode=bool(node.attr("ceil_mode", 0)))
        share = F.avg_pool2d(ones, node.attr("kernel_shape"), node.attr("strides", None) or 1,
                             ceil_mode=bool(node.attr("ceil_mode", 0)))
        return total / share
    return F.avg_pool2d(x, node.attr("kernel_shape"), node.attr("strides", None) or 1,
                        ceil_mode=bool(node.attr("ceil_mode", 0)))


def _qlinear_average_pool(node: Node, t: list, a: list, exact: list) -> torch.Tensor:
    return _quant(_avg_pool(_dequant(t[0], a[1], a[2]), node), a[3], a[4], exact[0].dtype)


def _qlinear_concat(node: Node, t: list, a: list, exact: list) -> torch.Tensor:
    parts = [_dequant(t[i], a[i + 1], a[i + 2]) for i in range(2, len(t), 3)]
    return _quant(torch.cat(parts, dim=node.attr("axis")), a[0], a[1], exact[0].dtype)


SURROGATES: dict[str, Callable] = {
    "QuantizeLinear": _quantize_linear,
    "DequantizeLinear": _dequantize_linear,
    "Relu": lambda node, t, a, exact: torch.relu(t[0]),
    "Clip": _clip,
    "MaxPool": _max_pool,
    "Flatten": lambda node, t, a, exact: t[0].reshape(exact[0].shape),
    "Reshape": lambda node, t, a, exact: t[0].reshape(exact[0].shape),
    "Squeeze": lambda node, t, a, exact: t[0].reshape(exact[0].shape),
    "Unsqueeze": lambda node, t, a, exact: t[0].reshape(exact[0].shape),
    "Transpose": lambda node, t, a, exact: t[0].permute(*node.attr("perm")),
    "Concat": lambda node, t, a, exact: torch.cat(t, dim=node.attr("axis")),
    "Identity": lambda node, t, a, exact: t[0],
    "Add": _binary(torch.add),
    "Sub": _binary(torch.sub),
    "Mul": _binary(torch.mul),
    "QLinearAdd": _qlinear_binary(torch.add),
    "QLinearMul": _qlinear_binary(torch.mul),
    "QLinearGlobalAveragePool": _qlinear_global_average_pool,
    "QLinearAveragePool": _qlinear_average_pool,
    "QLinearConcat": _qlinear_concat,
    "GlobalAveragePool": lambda node, t, a, exact: t[0].mean(dim=tuple(range(2, t[0].dim())),
                                                             keepdim=True),
    "AveragePool": lambda node, t, a, exact: _avg_pool(t[0], node),
}
SOFTMAX = {"Softmax", "QLinearSoftmax"}
TRAINED_OPS = ("QLinearConv", "QGemm", "QLinearMatMul")  # the table ops with trainable weights


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
        for node in self.nodes:
            if node.op in TABLE_OPS:
                if node.op not in TRAINED_OPS:
                    raise ModelError(f"retraining: node {node.name!r} ({node.op}) has no trainable "
                                     f"int8 weights here; retraining takes {', '.join(TRAINED_OPS)} "
                                     "(the QOperator model a study scores)")
                if node.inputs[3] not in self.layers:
                    self.layers[node.inputs[3]] = TableLayer(graph, node)
                table = layer_table(tables, node.name)
                self.factors[node.name] = _Factors(product_model(table, gradient))
            elif node.op not in SURROGATES:
                raise ModelError(f"retraining: ONNX op {node.op!r} (node {node.name!r}) has no "
                                 "gradient model here; ops with one: "
                                 f"{', '.join(sorted(set(SURROGATES) | TABLE_OPS))}")
        self.params = nn.ParameterList([p for layer in self.layers.values()
                                        for p in (layer.weight, layer.bias) if p is not None])

    @staticmethod
    def _trained_nodes(graph: QGraph) -> tuple[list[Node], str]:
        """The nodes up to the logits: a final (QLinear)Softmax and what follows it are left
        out (cross-entropy reads the logits; the prediction is the same)."""
        nodes = list(graph.nodes)
        for i in range(len(nodes) - 1, -1, -1):
            if nodes[i].op in SOFTMAX:
                return nodes[:i], nodes[i].inputs[0]
        return nodes, graph.outputs[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = self.graph
        kernels = load_kernels(self.kernel, self.device)
        ctx = core_ops.Context(g, self.tables, kernels, set())
        exact: dict[str, np.ndarray] = {**g.initializers, g.inputs[0]: x.detach().numpy(), "": None}
        grads: dict[str, torch.Tensor] = {g.inputs[0]: x}
        for name, layer in self.layers.items():
            codes = layer.weight_codes()
            grads[name] = codes
            exact[name] = codes.detach().numpy().astype(layer.dtype)
            if layer.bias is not None:
                bias = layer.bias_codes()
                grads[layer.bias_name] = bias
                exact[layer.bias_name] = bias.detach().numpy().astype(np.int32)
        for node in self.nodes:
            args = [exact[name] for name in node.inputs]
            if node.op in TABLE_OPS:
                outputs = [self._table_op(node, args, grads, ctx)]
            else:
                values = OPS[node.op](node, args, ctx)
                tensors = [grads.get(name) if name in grads else _const(exact[name])
                           for name in node.inputs]
                surrogate = SURROGATES[node.op](node, tensors, args, values)
                outputs = [(_exact(surrogate, values[0]), values[0])]
            for name, (tensor, value) in zip(node.outputs, outputs):
                grads[name], exact[name] = tensor, value
        return grads[self.logits_name]

    def _table_op(self, node: Node, args: list, grads: dict, ctx) -> tuple[torch.Tensor, np.ndarray]:
        """Exact codes from the kernels; gradient through the layer's product model, the bias,
        and the requantization's clamp (where the exact value saturates, none)."""
        layer = self.layers[node.inputs[3]]
        factors = self.factors[node.name]
        x_t, w_t = grads[node.inputs[0]], grads[node.inputs[3]]
        if node.op == "QLinearConv":
            x, w, conv = core_ops.conv_arguments(node, args, ctx)
            keys = ("strides", "pads", "dilations", "group", "x_zero_point", "w_zero_point")
            acc = ctx.kernels.conv_accumulate(x, w, ctx.table_for(node), **{k: conv[k] for k in keys})
            surrogate = _conv_surrogate(x_t, w_t, factors, conv)
            bias, multiplier, y_zero = conv["bias"], conv["multiplier"], conv["y_zero_point"]
        else:
            arguments = core_ops.qgemm_arguments if node.op == "QGemm" else \
                core_ops.qlinear_matmul_arguments
            a, b, gemm, bias, multiplier, y_zero = arguments(node, args, ctx)
            shape_out = (*a.shape[:-1], b.shape[1])
            acc = ctx.kernels.gemm_accumulate(a.reshape(-1, a.shape[-1]), b, ctx.table_for(node),
                                              **gemm)
            if node.op == "QGemm" and node.attr("transB", 0):
                w_t = w_t.T
            surrogate = _gemm_surrogate(x_t.reshape(-1, a.shape[-1]), w_t, factors, gemm)
        pre = acc.astype(np.int64)
        shape = [1, -1] + [1] * (acc.ndim - 2)
        if bias is not None:
            pre = pre + bias.astype(np.int64).reshape(shape)
            surrogate = surrogate + grads[layer.bias_name].reshape(shape)
        codes = requantize(pre.astype(np.int32), multiplier, y_zero)
        pre_t = _exact(surrogate, pre)
        info = np.iinfo(y_zero.dtype)
        zp = float(y_zero)
        y = torch.clamp(pre_t * _along(multiplier, 1, acc.ndim), info.min - zp, info.max - zp) + zp
        if node.op != "QLinearConv":
            y, codes = y.reshape(shape_out), codes.reshape(shape_out)
        return _exact(y, codes), codes


def _conv_surrogate(x: torch.Tensor, w: torch.Tensor, factors: _Factors, conv: dict) -> torch.Tensor:
    """``sum_r conv(U_r(x), V_r(w))`` minus the zero-point terms: the accumulator as a
    differentiable function of the codes (the exact product for ``ste``)."""
    top, left, bottom, right = conv["pads"]
    xp = F.pad(x, (left, right, top, bottom), value=float(conv["x_zero_point"]))
    group, rank = conv["group"], factors.u.shape[0]
    n, c, h, wd = xp.shape
    o, cg = w.shape[:2]
    ux = factors.activations(xp).reshape(rank, n, group, cg, h, wd).permute(1, 2, 0, 3, 4, 5)
    vw = factors.weights(w).reshape(rank, o, cg, *w.shape[2:]).permute(1, 0, 2, 3, 4)
    acc = F.conv2d(ux.reshape(n, group * rank * cg, h, wd), vw.reshape(o, rank * cg, *w.shape[2:]),
                   stride=conv["strides"], dilation=conv["dilations"], groups=group)
    zw = np.broadcast_to(np.asarray(conv["w_zero_point"]), (o,))
    if np.any(zw):
        ones = torch.ones((o, cg, *w.shape[2:])) * torch.as_tensor(zw, dtype=torch.float32).reshape(-1, 1, 1, 1)
        acc = acc - F.conv2d(xp, ones, stride=conv["strides"], dilation=conv["dilations"], groups=group)
    if conv["x_zero_point"]:
        acc = acc - float(conv["x_zero_point"]) * w.sum(dim=(1, 2, 3)).reshape(1, -1, 1, 1)
    return acc


def _gemm_surrogate(a: torch.Tensor, b: torch.Tensor, factors: _Factors, gemm: dict) -> torch.Tensor:
    """The Gemm accumulator (``a`` (M, K) times ``b`` (K, O)) as in ``_conv_surrogate``."""
    a2, k = a, a.shape[1]
    rank = factors.u.shape[0]
    ua = factors.activations(a2).permute(1, 0, 2).reshape(a2.shape[0], rank * k)
    vb = factors.weights(b).reshape(rank * k, b.shape[1])
    acc = ua @ vb
    zb = np.broadcast_to(np.asarray(gemm["b_zero_point"]), (b.shape[1],))
    if np.any(zb):
        acc = acc - a2.sum(1, keepdim=True) * torch.as_tensor(zb, dtype=torch.float32)[None]
    if gemm["a_zero_point"]:
        acc = acc - float(gemm["a_zero_point"]) * b.sum(0)[None]
    return acc


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
