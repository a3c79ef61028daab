"""Reduced precision and pruning of the study's int8 network: the variants a firmware study
scores (``space.firmware`` in the study file).

A variant is the study's int8 QOperator model transformed in three steps, each a function on the
ONNX model (the model stays a plain QOperator graph that onnxruntime and dse's runner both read):

1. ``prune``: magnitude pruning, per layer: in every table-multiplying layer the fraction
   ``sparsity`` of its weights with the smallest ``|code * scale|`` become 0.
2. ``narrow``: the weights of a layer on ``b`` bits take codes in ``[-(2^(b-1)-1), 2^(b-1)-1]``,
   symmetric per output channel (scale ``max|w_c| / (2^(b-1)-1)``); the activations a layer reads
   on ``b`` bits likewise: their scale is multiplied by ``127 / (2^(b-1)-1)`` wherever that
   tensor's scale is written or read, and an int8 ``Clip`` to the ``b``-bit range follows the
   node that produces them, so the codes are confined exactly. Biases are requantized to the new
   ``x_scale * w_scale``. At 8 bits a layer's weights and activations stay as the int8 model has
   them (codes in [-128, 127]). A tensor read by several layers takes the narrowest of their
   activation widths.
3. ``fine_tune``: the transformed int8 graph trained through the exact product table
   (``evaluators.recovery.retraining.TableNetwork``: straight-through rounding, every scale kept), the
   pruned weights held at 0 and every weight held inside its ``b``-bit range after each step.

The 8x8 product table then scores a variant as it scores the int8 network: only its sub-range
is exercised. Variants are cached beside the prepared network, keyed by the network, the
sparsity, the bits of every layer and the fine-tuning settings.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import onnx
from onnx import helper

from circuits.product_table import ProductTable
from evaluators.errors import ModelError
from evaluators.networks.training import train_classifier
from evaluators.onnx.editing import Initializers, copy_model, insert_after
from evaluators.recovery.retraining import TableNetwork, quantized_model
from evaluators.runtime.ops import TABLE_OPS
from evaluators.runtime.qgraph import QGraph

FULL_BITS = 8
VARIANT_ONNX = "int8.onnx"
VARIANT_REPORT = "variant.json"
_FORMAT = 1  # of the variant cache key
_BIAS = {"QLinearConv": 8, "QGemm": 6}  # input index of the int32 bias
# where a node reads (input index -> index of that input's scale) and writes (output scale)
# quantized tensors; the ops between a producer and its readers pass codes through unchanged
_READS = {"QLinearConv": {0: 1}, "QGemm": {0: 1}, "QLinearMatMul": {0: 1, 3: 4},
          "DequantizeLinear": {0: 1}, "QLinearAdd": {0: 1, 3: 4}, "QLinearMul": {0: 1, 3: 4},
          "QLinearGlobalAveragePool": {0: 1}, "QLinearAveragePool": {0: 1}}
_WRITES = {"QuantizeLinear": 1, "QLinearConv": 6, "QGemm": 7, "QLinearMatMul": 6,
           "QLinearAdd": 6, "QLinearMul": 6, "QLinearGlobalAveragePool": 3,
           "QLinearAveragePool": 3}
_PASS = {"MaxPool", "Flatten", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Identity"}


def levels(bits: int) -> int:
    """The largest code of a symmetric ``bits``-bit quantization: ``2^(bits-1) - 1``."""
    return (1 << (bits - 1)) - 1


@dataclass(frozen=True)
class Recipe:
    """What makes a variant: the sparsity and the bits of every table layer (network order)."""

    sparsity: float
    weight_bits: tuple[int, ...]
    activation_bits: tuple[int, ...]

    @property
    def identity(self) -> bool:
        """Whether the variant is the int8 network itself."""
        return self.sparsity == 0 and set(self.weight_bits) | set(self.activation_bits) == {FULL_BITS}


@dataclass(frozen=True)
class FineTuning:
    """How a variant is fine-tuned: ``epochs`` over the first ``images`` training images
    (0 epochs: not at all), Adam with a one-cycle schedule peaking at ``learning_rate``."""

    epochs: int = 2
    images: int = 4000
    learning_rate: float = 5e-3  # recovers 75%-sparse 4-bit LeNet-5 from 30% to 95% accuracy
    batch_size: int = 64
    seed: int = 0


# -- the model's table layers ------------------------------------------------------------------

def table_nodes(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """The table-multiplying nodes in graph order, every node of the graph named first (as
    ``QGraph`` names an unnamed one), so layer names survive inserted nodes."""
    for i, node in enumerate(model.graph.node):
        if not node.name:
            node.name = f"{node.op_type}_{i}"
    nodes = [n for n in model.graph.node if n.op_type in TABLE_OPS]
    if not nodes:
        raise ModelError("firmware precision: the model has no QLinearConv/QGemm/QLinearMatMul "
                         "layer (the QOperator int8 model a study scores)")
    return nodes


def _constant(inits: Initializers, name: str, node: onnx.NodeProto, what: str) -> np.ndarray:
    if name not in inits:
        raise ModelError(f"firmware precision: node {node.name!r} ({node.op_type}): its {what} "
                         f"{name!r} must be an initializer of the model")
    return inits.array(name)


def _weight_axis(node: onnx.NodeProto) -> int:
    """The output-channel axis of a layer's weights (as ``retraining.TableLayer`` reads it)."""
    trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
    return 0 if node.op_type == "QLinearConv" or (node.op_type == "QGemm" and trans_b) else 1


def _along(values: np.ndarray, axis: int, ndim: int) -> np.ndarray:
    """Per-channel values shaped to broadcast along ``axis`` (a scalar stays a scalar)."""
    values = np.asarray(values)
    if values.size == 1:
        return values.reshape(())
    shape = [1] * ndim
    shape[axis] = -1
    return values.reshape(shape)


def _symmetric_int8(node: onnx.NodeProto, inits: Initializers) -> None:
    """Narrowing keeps zero points at 0: refuse anything but symmetric int8 operands."""
    for index, what in ((2, "activation zero point"), (5, "weight zero point")):
        if len(node.input) > index and node.input[index]:
            zero = _constant(inits, node.input[index], node, what)
            if zero.dtype != np.int8 or np.any(zero != 0):
                raise ModelError(f"firmware precision: node {node.name!r} has a nonzero or "
                                 f"unsigned {what}; narrower precision needs the symmetric int8 "
                                 "quantization (zero point 0)")


# -- 1. pruning ------------------------------------------------------------------------------

def prune(model: onnx.ModelProto, sparsity: float) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """A copy of ``model`` with ``round(sparsity * n)`` of each table layer's ``n`` weights set
    to 0, those of smallest magnitude (ties: the first in memory order); and the mask of the
    weights kept, by weight initializer name."""
    if not 0 <= sparsity < 1:
        raise ValueError(f"sparsity {sparsity}: expected a fraction in [0, 1)")
    model = copy_model(model)
    inits = Initializers(model)
    masks = {}
    for node in table_nodes(model):
        name = node.input[3]
        codes = _constant(inits, name, node, "weight")
        scale = _along(_constant(inits, node.input[4], node, "weight scale"), _weight_axis(node),
                       codes.ndim)
        magnitude = np.abs(codes.astype(np.float64) * scale).ravel()
        keep = np.ones(codes.size, dtype=bool)
        keep[np.argsort(magnitude, kind="stable")[: int(round(sparsity * codes.size))]] = False
        masks[name] = keep.reshape(codes.shape)
        inits.set(name, np.where(masks[name], codes, 0).astype(codes.dtype))
    return model, masks


# -- 2. narrowing ----------------------------------------------------------------------------

@dataclass
class _Activation:
    """A quantized tensor as written by its producer and read, through code-preserving ops,
    by its readers: every (node, scale input index) naming its scale, and the layers reading it."""

    producer: onnx.NodeProto
    scales: list[tuple[onnx.NodeProto, int]]
    layers: list[onnx.NodeProto]


def _activation(model: onnx.ModelProto, layer: onnx.NodeProto) -> _Activation:
    """The quantized tensor a layer multiplies (its input 0), traced to its producer."""
    producers = {out: n for n in model.graph.node for out in n.output}
    tensor = layer.input[0]
    while (node := producers.get(tensor)) is not None and node.op_type in _PASS:
        tensor = node.input[0]
    if node is None or node.op_type not in _WRITES:
        raise ModelError(f"firmware precision: the activations of layer {layer.name!r} come from "
                         f"{'a graph input' if node is None else f'node {node.name!r} ({node.op_type})'}"
                         "; their scale must be set by a QuantizeLinear or a QLinear op")
    found = _Activation(node, [(node, _WRITES[node.op_type])], [])
    pending = [node.output[0]]
    while pending:
        tensor = pending.pop()
        for reader in (n for n in model.graph.node if tensor in n.input):
            if reader.op_type in _PASS:
                pending.append(reader.output[0])
                continue
            if reader.op_type not in _READS:
                raise ModelError(f"firmware precision: node {reader.name!r} ({reader.op_type}) "
                                 f"reads the activations of layer {layer.name!r}; it has no known "
                                 "scale input to narrow")
            for index, scale in _READS[reader.op_type].items():
                if index < len(reader.input) and reader.input[index] == tensor:
                    found.scales.append((reader, scale))
                    if reader.op_type in TABLE_OPS and index == 0:
                        found.layers.append(reader)
    return found


def _scale_uses(model: onnx.ModelProto) -> dict[str, int]:
    uses: dict[str, int] = {}
    for node in model.graph.node:
        for name in node.input:
            uses[name] = uses.get(name, 0) + 1
    return uses


def _narrow_activation(model: onnx.ModelProto, act: _Activation, bits: int,
                       uses: Mapping[str, int]) -> float:
    """Scale the tensor's codes to ``bits`` and clip them after its producer; the factor its
    scale was multiplied by."""
    inits = Initializers(model)
    names = [node.input[index] for node, index in act.scales]
    for name in set(names):
        if uses.get(name) != names.count(name):
            raise ModelError(f"firmware precision: scale {name!r} is shared with other tensors; "
                             "narrowing one tensor would change another")
    factor = 127.0 / levels(bits)
    for name in set(names):
        scale = _constant(inits, name, act.producer, "scale")
        inits.set(name, (scale * factor).astype(scale.dtype))
    out = act.producer.output[0]
    raw = f"{out}_unclipped"
    act.producer.output[0] = raw
    bound = levels(bits)
    low = inits.add(f"{out}_min{bits}", np.array(-bound, np.int8))
    high = inits.add(f"{out}_max{bits}", np.array(bound, np.int8))
    clip = helper.make_node("Clip", [raw, low, high], [out], name=f"{act.producer.name}_clip{bits}")
    insert_after(model, act.producer.name, clip)
    return factor


def _narrow_weights(node: onnx.NodeProto, inits: Initializers, bits: int,
                    activation_factor: float) -> None:
    """Requantize a layer's weights to ``bits`` per output channel and its bias to the new
    input and weight scales."""
    codes = _constant(inits, node.input[3], node, "weight")
    scale = _constant(inits, node.input[4], node, "weight scale").astype(np.float64)
    axis = _weight_axis(node)
    weight_factor = np.ones_like(scale)
    if bits < FULL_BITS:
        others = tuple(a for a in range(codes.ndim) if a != axis)
        peak = np.abs(codes.astype(np.int64)).max(axis=others) if scale.size > 1 \
            else np.abs(codes.astype(np.int64)).max(keepdims=True)
        weight_factor = np.where(peak > 0, peak / levels(bits), 1.0).reshape(scale.shape)
        narrowed = np.round(codes / _along(weight_factor, axis, codes.ndim))
        inits.set(node.input[3], np.clip(narrowed, -levels(bits), levels(bits)).astype(np.int8))
        inits.set(node.input[4], (scale * weight_factor).astype(np.float32))
    bias_index = _BIAS.get(node.op_type)
    if bias_index is not None and len(node.input) > bias_index and node.input[bias_index] and \
            (bits < FULL_BITS or activation_factor != 1.0):
        bias = _constant(inits, node.input[bias_index], node, "bias").astype(np.float64)
        rescaled = np.round(bias / (activation_factor * weight_factor.reshape(-1)))
        info = np.iinfo(np.int32)
        inits.set(node.input[bias_index], np.clip(rescaled, info.min, info.max).astype(np.int32))


def narrow(model: onnx.ModelProto, weight_bits: Mapping[str, int],
           activation_bits: Mapping[str, int]) -> onnx.ModelProto:
    """A copy of ``model`` with each table layer's weights on ``weight_bits[layer]`` and the
    activations it reads on ``activation_bits[layer]`` (2 to 8; 8 leaves them as they are)."""
    model = copy_model(model)
    layers = table_nodes(model)
    inits = Initializers(model)
    names = [n.name for n in layers]
    for bits in (weight_bits, activation_bits):
        if sorted(bits) != sorted(names) or not all(2 <= b <= FULL_BITS for b in bits.values()):
            raise ValueError(f"bits {dict(bits)}: expected 2 to {FULL_BITS} for each of {names}")
    weights = [n.input[3] for n in layers]
    if len(set(weights)) != len(weights):
        raise ModelError("firmware precision: a weight tensor is shared by two layers; narrowing "
                         "needs a weight tensor per layer")
    for node in layers:
        _symmetric_int8(node, inits)
    factors = {name: 1.0 for name in names}
    done: set[str] = set()
    uses = _scale_uses(model)
    for node in layers:
        if node.name in done:
            continue
        act = _activation(model, node)
        done |= {n.name for n in act.layers}
        bits = min(activation_bits[n.name] for n in act.layers)
        if bits < FULL_BITS:
            factor = _narrow_activation(model, act, bits, uses)
            factors.update({n.name: factor for n in act.layers})
    inits = Initializers(model)
    for node in layers:
        _narrow_weights(node, inits, weight_bits[node.name], factors[node.name])
    return model


# -- 3. fine-tuning --------------------------------------------------------------------------

def fine_tune(model: onnx.ModelProto, masks: Mapping[str, np.ndarray],
              weight_bits: Mapping[str, int], inputs: np.ndarray, labels: np.ndarray,
              settings: FineTuning, batch_done: Callable[[], None] | None = None
              ) -> onnx.ModelProto:
    """``model`` trained through the exact product table, every scale kept; after each step the
    pruned weights (``masks``: kept weights by weight name) are set back to 0 and every weight
    is clamped to its layer's ``b``-bit range (``weight_bits`` by layer name); then
    ``batch_done()``."""
    import torch

    graph = QGraph.from_onnx(model)
    # writable copies: torch warns about (and may not write through) read-only arrays
    graph = replace(graph, initializers={k: np.array(v) for k, v in graph.initializers.items()})
    network = TableNetwork(graph, ProductTable.exact(True))
    bits = {node.input[3]: weight_bits[node.name] for node in table_nodes(model)}
    limits = []
    for name, layer in network.layers.items():
        bound = float(levels(bits[name])) * layer.w_scale
        mask = torch.from_numpy(masks[name].astype(np.float32)) if name in masks \
            else torch.ones_like(layer.weight)
        limits.append((layer.weight, bound, mask))

    def project() -> None:
        with torch.no_grad():
            for weight, bound, mask in limits:
                weight.copy_(torch.minimum(torch.maximum(weight, -bound), bound) * mask)

    def step_done() -> None:
        project()
        if batch_done is not None:
            batch_done()

    project()
    train_classifier(network, inputs, labels, epochs=settings.epochs,
                     batch_size=settings.batch_size, learning_rate=settings.learning_rate,
                     augment=False, seed=settings.seed, batch_done=step_done)
    return quantized_model(network, model)


# -- variants, cached ------------------------------------------------------------------------

def variant_key(network_key: str, recipe: Recipe, tuning: FineTuning) -> str:
    """Cache key of a variant of the prepared network ``network_key``."""
    ident = {"network": network_key, "recipe": asdict(recipe), "format": _FORMAT,
             "fine_tuning": asdict(tuning) if tuning.epochs and not recipe.identity else None}
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:20]


def make_variant(base: onnx.ModelProto, layers: Sequence[str], recipe: Recipe,
                 tuning: FineTuning, data: Callable[[], tuple[np.ndarray, np.ndarray]],
                 batch_done: Callable[[], None] | None = None) -> onnx.ModelProto:
    """The int8 model ``base`` pruned, narrowed and fine-tuned as ``recipe`` says (the int8
    model itself when the recipe changes nothing); ``data()`` gives the preprocessed
    fine-tuning images and labels, read only when fine-tuning runs; ``batch_done()`` after
    each fine-tuning step."""
    if recipe.identity:
        return copy_model(base)
    weight_bits = dict(zip(layers, recipe.weight_bits))
    pruned, masks = prune(base, recipe.sparsity)
    model = narrow(pruned, weight_bits, dict(zip(layers, recipe.activation_bits)))
    if tuning.epochs:
        inputs, labels = data()
        model = fine_tune(model, masks, weight_bits, inputs[: tuning.images],
                          labels[: tuning.images], tuning, batch_done)
    return model


def cached_variant(folder: Path, build: Callable[[], onnx.ModelProto], report: dict) -> Path:
    """The variant's model file in ``folder`` (the cache), built by ``build`` when absent; the
    folder appears whole or not at all, so concurrent builders never see half a variant."""
    path = folder / VARIANT_ONNX
    if (folder / VARIANT_REPORT).is_file():
        return path
    folder.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".tmp-", dir=folder.parent))
    try:
        onnx.save(build(), str(work / VARIANT_ONNX))
        (work / VARIANT_REPORT).write_text(json.dumps(report, indent=2))
        if not (folder / VARIANT_REPORT).is_file():
            shutil.rmtree(folder, ignore_errors=True)
            work.rename(folder)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return path
