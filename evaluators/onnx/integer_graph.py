"""Transformations of a statically quantized ONNX model into a graph of integer operations only.

Each step is a small object whose ``apply(model)`` returns ``(new model, changed)``
(``evaluators.onnx.editing.Transformation``), in the style of ``evaluators.runtime.transforms``
but on an ``onnx.ModelProto``: after every step the model still runs in onnxruntime (and in
dse's runner: ``evaluators.runtime.integer_ops``). The chain starts from the int8 QDQ model that
``evaluators.networks.quantization.quantize_int8(..., quant_format="qdq")`` writes (S8S8: int8
activations and per-channel int8 weights, zero points 0; U8S8 and U8U8: uint8 activations with
their zero points, int8 or uint8 weights; int32 biases), and ends with a graph of
ConvInteger / MatMulInteger accumulators, int32 bias additions and fixed-point requantizations
whose output is the 8-bit logit codes (same arg-max as the dequantized logits).

Order and what each step accepts:

- ``add_rescaling``: any model with one float input; the input becomes the uint8 image (NCHW),
  normalized by a DequantizeLinear (scale 1/(255 std), zero point round(255 mean)).
- ``embed_act``: QDQ; a QuantizeLinear whose zero point is its type's minimum after a
  Conv/Gemm/MatMul/Add (a ReLU fused into the output range) gets an explicit Relu before it.
- ``prune_qdq``: QDQ; DequantizeLinear moves past ops that accept codes as well as reals
  (MaxPool, Flatten, Reshape, Transpose, Squeeze, Unsqueeze, Identity, and Relu when the zero
  point is 0), then DequantizeLinear -> QuantizeLinear pairs with equal parameters are removed.
- ``fold_op_scales``: QDQ Conv/Gemm with DequantizeLinear inputs (bias scale = input scale x
  weight scale, bias zero point 0) followed by one QuantizeLinear (or a Relu and one): the layer
  works on the codes minus their zero points and the QuantizeLinear scale becomes output scale /
  (input scale x weight scale), per channel.
- ``split_bias_add``: a Conv/Gemm with a constant bias (or a Cast of one) becomes the layer
  without bias and an Add.
- ``integer_ops``: a Conv/Gemm reading Casts of 8-bit codes becomes ConvInteger / MatMulInteger
  (weights transposed to (K, O); the zero points as their inputs) with int32 accumulators; its
  bias Add becomes an int32 Add, and a Relu after it a Relu on the int32 accumulators.
- ``scale_out``: the rescalings left (Cast int -> float -> QuantizeLinear, DequantizeLinear ->
  QuantizeLinear) become a fixed-point mantissa multiplication and a division by 2^frac_bits
  (round half up, where QuantizeLinear rounds half to even: the source of rare differences);
  the output DequantizeLinear is dropped, so the graph returns the 8-bit codes.

A node a step cannot rewrite is refused with a one-line ``ModelError`` naming it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from evaluators.data.preprocess import Preprocessing
from evaluators.errors import ModelError
from evaluators.onnx.editing import ModelEditor, label

__all__ = ["STEPS", "AddRescaling", "EmbedAct", "FoldOpScales", "IntegerOps", "PruneQdq",
           "ScaleOut", "SplitBiasAdd", "feed", "integer_only", "run_steps"]

_CODE_OPS = {"MaxPool", "Flatten", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Identity"}
_LAYERS = {"Conv", "Gemm"}
_INTEGER_TYPES = {TensorProto.INT8, TensorProto.UINT8, TensorProto.INT16, TensorProto.UINT16,
                  TensorProto.INT32, TensorProto.UINT32, TensorProto.INT64, TensorProto.UINT64,
                  TensorProto.BOOL}


def _scalar_params(graph: ModelEditor, node: onnx.NodeProto) -> tuple[np.ndarray, np.ndarray]:
    """(scale, zero point) of a Quantize/DequantizeLinear node (zero point int8 0 if absent)."""
    scale = graph.array(node.input[1], node)
    zp = graph.optional(node, 2)
    return scale, zp if zp is not None else np.zeros((), np.uint8)


def _same_params(graph: ModelEditor, a: onnx.NodeProto, b: onnx.NodeProto) -> bool:
    (sa, za), (sb, zb) = _scalar_params(graph, a), _scalar_params(graph, b)
    return (sa.shape == sb.shape and np.array_equal(sa, sb) and za.dtype == zb.dtype
            and np.array_equal(za, zb) and _axis(a) == _axis(b))


def _axis(node: onnx.NodeProto) -> int:
    return next((a.i for a in node.attribute if a.name == "axis"), 1)


def _attr(node: onnx.NodeProto, name: str, default=None):
    found = next((a for a in node.attribute if a.name == name), None)
    return default if found is None else helper.get_attribute_value(found)


class AddRescaling:
    """The model reads the uint8 images (NCHW) and normalizes them itself with a
    DequantizeLinear: scale 1/(255 std), zero point round(255 mean), per channel when the
    preprocessing has several. Exact when 255 mean is an integer (MNIST: mean 0, std 1)."""

    def __init__(self, preprocessing: Preprocessing | None = None) -> None:
        self.preprocessing = preprocessing or Preprocessing()

    def apply(self, model: onnx.ModelProto) -> tuple[onnx.ModelProto, bool]:
        graph = ModelEditor(model)
        inputs = [i for i in graph.g.input if i.name not in graph.inits]
        if len(inputs) != 1:
            raise ModelError(f"add_rescaling needs a model with one input, got {len(inputs)}")
        value = inputs[0]
        if value.type.tensor_type.elem_type == TensorProto.UINT8:
            return model, False
        if value.type.tensor_type.elem_type != TensorProto.FLOAT:
            raise ModelError(f"add_rescaling: input {value.name!r} must be float32")
        p = self.preprocessing
        if p.layout != "NCHW" or abs(p.scale * 255 - 1) > 1e-9:
            raise ModelError("add_rescaling supports x/255 preprocessing in NCHW layout only")
        mean, std = np.asarray(p.mean, np.float64), np.asarray(p.std, np.float64)
        per_channel = max(mean.size, std.size) > 1
        shape = (max(mean.size, std.size),) if per_channel else ()
        scale = np.broadcast_to(1 / (255 * std), shape or (1,)).reshape(shape).astype(np.float32)
        zp = np.broadcast_to(np.round(255 * mean), shape or (1,)).reshape(shape).astype(np.uint8)
        images = f"{value.name}_uint8"
        normalize = helper.make_node(
            "DequantizeLinear", [images, graph.const("input_scale", scale),
                                 graph.const("input_zero_point", zp)],
            [value.name], name="add_rescaling", axis=1)
        graph.nodes.insert(0, normalize)
        value.name = images
        value.type.tensor_type.elem_type = TensorProto.UINT8
        return graph.finish(), True


class EmbedAct:
    """A ReLU the quantizer fused into a layer's output range (the QuantizeLinear's zero point
    is its type's minimum, so the clamp at the zero point is the ReLU) becomes an explicit Relu
    before the QuantizeLinear, so later rescalings keep it. Exact. Symmetric S8S8 models keep
    their Relus explicit: nothing changes there."""

    def apply(self, model: onnx.ModelProto) -> tuple[onnx.ModelProto, bool]:
        graph, changed = ModelEditor(model), False
        for q in [n for n in graph.nodes if n.op_type == "QuantizeLinear"]:
            zp = graph.optional(q, 2)
            source = graph.producer(q.input[0])
            if zp is None or source is None or source.op_type not in _LAYERS | {"MatMul", "Add"}:
                continue
            if zp.size != 1 or int(zp.reshape(())) != np.iinfo(zp.dtype).min:
                continue
            relu_out = graph.fresh(q.input[0] + "_relu")
            graph.insert(q, helper.make_node("Relu", [q.input[0]], [relu_out],
                                             name=graph.fresh("embed_act")))
            q.input[0] = relu_out
            changed = True
        return (graph.finish(), True) if changed else (model, False)


class PruneQdq:
    """Ops that accept codes as well as reals run on the codes: a DequantizeLinear read only by
    such an op moves past it (max pooling commutes with the non-decreasing dequantization;
    reshapes move values unchanged; a Relu commutes when the zero point is 0), and then a
    DequantizeLinear -> QuantizeLinear pair with equal parameters is removed. Exact."""

    def apply(self, model: onnx.ModelProto) -> tuple[onnx.ModelProto, bool]:
        graph, changed = ModelEditor(model), False
        while self._sink_one(graph) or self._cancel_one(graph):
            changed = True
        return (graph.finish(), True) if changed else (model, False)

    @staticmethod
    def _sink_one(graph: ModelEditor) -> bool:
        for dq in [n for n in graph.nodes if n.op_type == "DequantizeLinear"]:
            readers = graph.consumers(dq.output[0])
            if len(readers) != 1 or graph.is_output(dq.output[0]) or dq.input[0] in graph.inits:
                continue
            op = readers[0]
            scale, zp = _scalar_params(graph, dq)
            movable = op.op_type in _CODE_OPS or (op.op_type == "Relu" and not np.any(zp))
            if not movable or op.input[0] != dq.output[0] or scale.size != 1 or np.any(scale <= 0):
                continue
            codes = graph.fresh(op.output[0] + "_codes")
            op.input[0], real = dq.input[0], op.output[0]
            op.output[0] = codes
            dq.input[0], dq.output[0] = codes, real
            graph.nodes.remove(dq)
            graph.nodes.insert(graph.nodes.index(op) + 1, dq)
            return True
        return False

    @staticmethod
    def _cancel_one(graph: ModelEditor) -> bool:
        for q in [n for n in graph.nodes if n.op_type == "QuantizeLinear"]:
            dq = graph.producer(q.input[0])
            if dq is None or dq.op_type != "DequantizeLinear" or graph.is_output(q.output[0]):
                continue
            if not _same_params(graph, dq, q) or _attr(q, "saturate", 1) != 1:
                continue
            graph.rename_uses(q.output[0], dq.input[0])
            graph.nodes.remove(q)
            return True
        return False


def _made_by(graph: ModelEditor, tensor: str, op: str) -> bool:
    producer = graph.producer(tensor)
    return producer is not None and producer.op_type == op


def _cast(graph: ModelEditor, tensor: str, to: int, before: onnx.NodeProto) -> str:
    out = graph.fresh(tensor + "_cast")
    graph.insert(before, helper.make_node("Cast", [tensor], [out], to=to, name=graph.fresh("cast")))
    return out


class FoldOpScales:
    """Conv(DQ(x, sx, zx), DQ(w, sw, zw), DQ(b, sx sw)) -> QuantizeLinear(sy) becomes
    Conv(x - zx, w - zw, b) on the codes (cast to float: integer sums, exact below 2^24; the
    subtraction only where a zero point is not 0) -> QuantizeLinear(sy / (sx sw), per channel):
    the input and weight scales are folded into the output scale, and the bias, whose scale is
    sx sw, keeps its int32 codes. Same for Gemm. One QuantizeLinear reads the layer, directly or
    through a Relu (which commutes with the positive scaling); the rounding of the folded scale
    can change a code in rare ties."""

    def apply(self, model: onnx.ModelProto) -> tuple[onnx.ModelProto, bool]:
        graph, changed = ModelEditor(model), False
        for layer in [n for n in graph.nodes if n.op_type in _LAYERS]:
            if all(_made_by(graph, name, "Cast") or _made_by(graph, name, "Sub")
                   for name in layer.input if name):
                continue  # folded already
            self._fold(graph, layer)
            changed = True
        return (graph.finish(), True) if changed else (model, False)

    def _fold(self, graph: ModelEditor, layer: onnx.NodeProto) -> None:
        dqs = [graph.producer(name) if name else None for name in layer.input]
        if len(dqs) < 2 or any(d is None or d.op_type != "DequantizeLinear" for d in dqs):
            raise ModelError(f"fold_op_scales cannot rewrite node {label(layer)}: every input "
                             "must come from a DequantizeLinear (a QDQ model)")
        q = _requantization(graph, layer.output[0])
        if q is None:
            raise ModelError(f"fold_op_scales cannot rewrite node {label(layer)}: its output "
                             "must be read by one QuantizeLinear (directly or through a Relu)")
        if layer.op_type == "Gemm" and (_attr(layer, "transA", 0) or _attr(layer, "alpha", 1.0) != 1
                                        or _attr(layer, "beta", 1.0) != 1):
            raise ModelError(f"fold_op_scales cannot rewrite node {label(layer)}: transA, alpha "
                             "and beta must be defaults")
        params = [_scalar_params(graph, d) for d in dqs]
        if len(params) > 2 and np.any(params[2][1]):
            raise ModelError(f"fold_op_scales cannot rewrite node {label(layer)}: the bias zero "
                             "point must be 0")
        sx, sw = params[0][0].astype(np.float64), params[1][0].astype(np.float64)
        if sx.size != 1:
            raise ModelError(f"fold_op_scales cannot rewrite node {label(layer)}: the input "
                             "scale must be per tensor")
        folded = sx.reshape(()) * sw.reshape(-1)
        if len(dqs) > 2 and not np.allclose(params[2][0].astype(np.float64).reshape(-1),
                                            folded, rtol=1e-5):
            raise ModelError(f"fold_op_scales cannot rewrite node {label(layer)}: the bias "
                             "scale is not input scale x weight scale")
        sy, _ = _scalar_params(graph, q)
        if sy.size != 1:
            raise ModelError(f"node {label(q)}: fold_op_scales needs a per-tensor output scale")
        for i, dq in enumerate(dqs):
            layer.input[i] = _cast(graph, dq.input[0], TensorProto.FLOAT, layer)
            if i < 2 and np.any(params[i][1]):
                layer.input[i] = _centred(graph, layer.input[i], dq, layer)
        scale = (float(sy.reshape(())) / folded).astype(np.float32)
        q.input[1] = graph.const(q.input[1] + "_folded", scale if scale.size > 1 else scale[0])
        zp = _scalar_params(graph, q)[1]
        q.input[2:] = [graph.const(q.output[0] + "_zero_point",
                                   np.full(scale.shape, zp.reshape(()), zp.dtype)
                                   if scale.size > 1 else zp)]
        del q.attribute[:]
        q.attribute.append(helper.make_attribute("axis", 1))


def _requantization(graph: ModelEditor, tensor: str) -> onnx.NodeProto | None:
    """The one QuantizeLinear reading ``tensor``, directly or through one Relu, if so."""
    readers = graph.consumers(tensor)
    if len(readers) == 1 and readers[0].op_type == "Relu" and not graph.is_output(tensor):
        readers = graph.consumers(readers[0].output[0])
    return readers[0] if len(readers) == 1 and readers[0].op_type == "QuantizeLinear" else None


def _centred(graph: ModelEditor, codes: str, dq: onnx.NodeProto, before: onnx.NodeProto) -> str:
    """``Cast(codes) - Cast(zero point)`` in float: the zero point of ``dq`` as an integer
    constant laid out along its axis, which ``integer_ops`` hands to ConvInteger /
    MatMulInteger."""
    zp = graph.optional(dq, 2)
    if zp.size > 1:
        rank = graph.array(dq.input[0], dq).ndim
        shape = [1] * rank
        shape[_axis(dq) % rank] = -1
        zp = zp.reshape(shape)
    name = _cast(graph, graph.const(dq.input[2] + "_laid_out", zp), TensorProto.FLOAT, before)
    out = graph.fresh(codes + "_centred")
    graph.insert(before, helper.make_node("Sub", [codes, name], [out], name=graph.fresh("centre")))
    return out


def _bias_source(graph: ModelEditor, layer: onnx.NodeProto) -> tuple[np.ndarray, bool]:
    """The bias constant of a layer and whether it was read through a Cast (to float)."""
    cast = graph.producer(layer.input[2])
    if cast is not None and cast.op_type == "Cast" and cast.input[0] in graph.inits:
        return graph.inits[cast.input[0]], True
    if layer.input[2] not in graph.inits:
        raise ModelError(f"split_bias_add cannot rewrite node {label(layer)}: the bias must be "
                         "a constant or a Cast of one (run fold_op_scales first)")
    return graph.inits[layer.input[2]], False


class SplitBiasAdd:
    """Conv/Gemm(x, w, b) becomes Conv/Gemm(x, w) followed by Add(b), the bias laid out to
    broadcast over the output channels. Exact up to float addition order."""

    def apply(self, model: onnx.ModelProto) -> tuple[onnx.ModelProto, bool]:
        graph, changed = ModelEditor(model), False
        for layer in [n for n in graph.nodes if n.op_type in _LAYERS and len(n.input) > 2
                      and n.input[2]]:
            if layer.op_type == "Gemm" and _attr(layer, "beta", 1.0) != 1:
                raise ModelError(f"split_bias_add cannot rewrite node {label(layer)}: beta != 1")
            bias, cast = _bias_source(graph, layer)
            shape = (-1, 1, 1) if layer.op_type == "Conv" else (-1,)
            bias_name = graph.const(layer.input[2] + "_split", bias.reshape(shape))
            if cast:
                bias_name = _cast(graph, bias_name, TensorProto.FLOAT, layer)
            out = layer.output[0]
            layer.output[0] = graph.fresh(out + "_nobias")
            del layer.input[2]
            add = helper.make_node("Add", [layer.output[0], bias_name], [out],
                                   name=graph.fresh("split_bias_add"))
            graph.nodes.insert(graph.nodes.index(layer) + 1, add)
            changed = True
        return (graph.finish(), True) if changed else (model, False)


class IntegerOps:
    """Conv(Cast(x), Cast(w)) on int8 codes becomes ConvInteger(x, w) and Gemm becomes
    MatMulInteger(a, w^T) (the weight transposed to (K, O)): int32 accumulators, exact. A
    following bias Add of a cast int32 constant becomes an int32 Add; a Cast to float follows
    for the requantization (``scale_out`` removes it)."""

    def apply(self, model: onnx.ModelProto) -> tuple[onnx.ModelProto, bool]:
        graph, changed = ModelEditor(model), False
        for layer in [n for n in graph.nodes if n.op_type in _LAYERS]:
            self._rewrite(graph, layer)
            changed = True
        return (graph.finish(), True) if changed else (model, False)

    @staticmethod
    def _operand(graph: ModelEditor, layer: onnx.NodeProto, tensor: str) -> tuple[str, str]:
        """(codes, integer zero point constant or "") of one input: a Cast of 8-bit codes, or
        the Sub of two such Casts that ``fold_op_scales`` writes for a zero point."""
        node = graph.producer(tensor)
        zero_point = ""
        if node is not None and node.op_type == "Sub":
            centre = graph.producer(node.input[1])
            if centre is None or centre.op_type != "Cast" or centre.input[0] not in graph.inits:
                raise ModelError(f"integer_ops cannot rewrite node {label(layer)}: a Sub must "
                                 "take a constant zero point (run fold_op_scales first)")
            zero_point, node = centre.input[0], graph.producer(node.input[0])
        if node is None or node.op_type != "Cast":
            raise ModelError(f"integer_ops cannot rewrite node {label(layer)}: it must read two "
                             "Casts of 8-bit codes (run fold_op_scales and split_bias_add first)")
        return node.input[0], zero_point

    def _integer_node(self, graph: ModelEditor, layer: onnx.NodeProto, acc: str) -> onnx.NodeProto:
        if len(layer.input) != 2:
            raise ModelError(f"integer_ops cannot rewrite node {label(layer)}: it must read two "
                             "Casts of 8-bit codes (run fold_op_scales and split_bias_add first)")
        (x, zx), (w, zw) = (self._operand(graph, layer, name) for name in layer.input)
        weight = graph.array(w, layer)
        if weight.dtype not in (np.int8, np.uint8):
            raise ModelError(f"integer_ops cannot rewrite node {label(layer)}: weights must be "
                             f"int8 or uint8, got {weight.dtype}")
        if zw:  # ConvInteger / MatMulInteger take one weight zero point per output channel
            zp = graph.inits[zw].reshape(-1)
            zw = graph.const(zw + "_per_output", zp[:1].reshape(()) if np.all(zp == zp[0]) else zp)
        zero_points = [zx, zw] if zw else [zx] if zx else []
        if layer.op_type == "Conv":
            attrs = {a.name: helper.get_attribute_value(a) for a in layer.attribute}
            return helper.make_node("ConvInteger", [x, w, *zero_points], [acc], name=layer.name,
                                    **attrs)
        if _attr(layer, "transA", 0) or _attr(layer, "alpha", 1.0) != 1:
            raise ModelError(f"integer_ops cannot rewrite node {label(layer)}: transA and alpha "
                             "must be defaults")
        b = np.ascontiguousarray(weight.T if _attr(layer, "transB", 0) else weight)
        return helper.make_node("MatMulInteger", [x, graph.const(w + "_t", b), *zero_points],
                                [acc], name=layer.name)

    def _rewrite(self, graph: ModelEditor, layer: onnx.NodeProto) -> None:
        acc = graph.fresh(layer.output[0] + "_acc")
        new, float_out = [self._integer_node(graph, layer, acc)], layer.output[0]
        readers = graph.consumers(float_out)
        add = readers[0] if len(readers) == 1 and readers[0].op_type == "Add" else None
        bias = self._int32_bias(graph, add, float_out) if add is not None else None
        if bias is not None:
            summed = graph.fresh(acc + "_bias")
            new.append(helper.make_node("Add", [acc, bias], [summed], name=add.name or
                                        graph.fresh("bias_add")))
            graph.nodes.remove(add)
            acc, float_out = summed, add.output[0]
        readers = graph.consumers(float_out)
        if len(readers) == 1 and readers[0].op_type == "Relu" and not graph.is_output(float_out):
            relu = readers[0]  # on the int32 accumulators, before the Cast
            rectified = graph.fresh(acc + "_relu")
            new.append(helper.make_node("Relu", [acc], [rectified], name=relu.name))
            graph.nodes.remove(relu)
            acc, float_out = rectified, relu.output[0]
        new.append(helper.make_node("Cast", [acc], [float_out], to=TensorProto.FLOAT,
                                    name=graph.fresh("cast")))
        index = graph.nodes.index(layer)
        graph.nodes[index:index + 1] = new

    @staticmethod
    def _int32_bias(graph: ModelEditor, add: onnx.NodeProto, tensor: str) -> str | None:
        """The int32 constant the bias Add casts to float, if that is what it adds."""
        other = add.input[1] if add.input[0] == tensor else add.input[0]
        cast = graph.producer(other)
        if cast is None or cast.op_type != "Cast" or cast.input[0] not in graph.inits:
            return None
        return cast.input[0] if graph.inits[cast.input[0]].dtype == np.int32 else None


class ScaleOut:
    """Every rescaling left becomes integer arithmetic: ``Cast(int -> float) ->
    QuantizeLinear(S)`` and ``DequantizeLinear(s1) -> QuantizeLinear(s2)`` compute
    ``clip(round(v * M) + zp)`` with ``M = 1/S`` or ``s1/s2`` (per channel where the scale is),
    here as ``(v * m + 2^(f-1)) div 2^f`` with an integer mantissa ``m = round(M 2^f)`` of
    ``mantissa_bits`` bits (int64 arithmetic; the division floors thanks to a positive
    offset). It rounds halves up where QuantizeLinear rounds them to even, and ``m`` is not
    exactly ``M``: both can move a code by one in rare cases. The output DequantizeLinear is
    dropped: the graph returns the codes (a positive scale and one zero point for the tensor:
    same arg-max)."""

    def __init__(self, mantissa_bits: int = 24) -> None:
        self.mantissa_bits = mantissa_bits

    def apply(self, model: onnx.ModelProto) -> tuple[onnx.ModelProto, bool]:
        ranks = _ranks(model)
        graph, changed = ModelEditor(model), False
        for q in [n for n in graph.nodes if n.op_type == "QuantizeLinear"]:
            self._rewrite(graph, q, ranks)
            changed = True
        changed |= self._codes_out(graph)
        return (graph.finish(), True) if changed else (model, False)

    def _rewrite(self, graph: ModelEditor, q: onnx.NodeProto, ranks: dict[str, int]) -> None:
        source = graph.producer(q.input[0])
        s2, zp2 = _scalar_params(graph, q)
        if source is not None and source.op_type == "Cast" and _attr(source, "to") == TensorProto.FLOAT:
            codes, multiplier, zp1 = source.input[0], 1 / s2.astype(np.float64), 0
        elif source is not None and source.op_type == "DequantizeLinear":
            s1, zp1 = _scalar_params(graph, source)
            if s1.size != 1 and s2.size != 1:
                raise ModelError(f"scale_out cannot rewrite node {label(q)}: per-channel scales "
                                 "on both sides")
            codes, multiplier = source.input[0], s1.astype(np.float64) / s2.astype(np.float64)
        else:
            raise ModelError(f"scale_out cannot rewrite node {label(q)}: it must read a Cast of "
                             "integers or a DequantizeLinear (run the earlier steps first)")
        rank = ranks.get(q.input[0], 0)
        if max(multiplier.size, np.size(zp1)) > 1 and rank < 2:
            raise ModelError(f"scale_out cannot rewrite node {label(q)}: per-channel rescaling "
                             "of a tensor of unknown rank")
        nodes = self._fixed_point(graph, q, codes, _along_channels(multiplier, rank),
                                  _along_channels(zp1, rank), zp2)
        index = graph.nodes.index(q)
        graph.nodes[index:index + 1] = nodes

    def _fixed_point(self, graph: ModelEditor, q: onnx.NodeProto, codes: str, multiplier: np.ndarray,
                     zp_in, zp_out: np.ndarray) -> list[onnx.NodeProto]:
        if np.unique(zp_out).size != 1:
            raise ModelError(f"scale_out cannot rewrite node {label(q)}: per-channel zero points")
        frac = int(self.mantissa_bits - 1 - np.floor(np.log2(np.max(multiplier))))
        if not 0 < frac <= 60:
            raise ModelError(f"scale_out cannot rewrite node {label(q)}: multiplier "
                             f"{float(np.max(multiplier)):g} out of the fixed-point range")
        mantissa = np.round(multiplier * 2.0 ** frac).astype(np.int64)
        offset = 2 ** 61  # keeps the truncating division a floor
        info = np.iinfo(zp_out.dtype)

        def c(base: str, value) -> str:
            return graph.const(f"{q.name or 'q'}_{base}", np.asarray(value, np.int64))

        steps = [("Cast", [], {"to": TensorProto.INT64})]
        if np.any(zp_in):
            steps.append(("Sub", [c("zp_in", np.asarray(zp_in).astype(np.int64))], {}))
        steps += [("Mul", [c("mantissa", mantissa)], {}),
                  ("Add", [c("half", 2 ** (frac - 1) + offset)], {}),
                  ("Div", [c("two_pow_frac", 2 ** frac)], {}),
                  ("Sub", [c("zp_out", offset // 2 ** frac - int(zp_out.reshape(-1)[0]))], {}),
                  ("Clip", [c("min", info.min), c("max", info.max)], {}),
                  ("Cast", [], {"to": helper.np_dtype_to_tensor_dtype(zp_out.dtype)})]
        nodes, tensor = [], codes
        for i, (op, consts, attrs) in enumerate(steps):
            out = q.output[0] if i == len(steps) - 1 else graph.fresh(q.output[0] + f"_{op.lower()}")
            nodes.append(helper.make_node(op, [tensor, *consts], [out],
                                          name=graph.fresh(f"scale_out_{op.lower()}"), **attrs))
            tensor = out
        return nodes

    @staticmethod
    def _codes_out(graph: ModelEditor) -> bool:
        """Drop a DequantizeLinear that writes a graph output: the output becomes its codes."""
        changed = False
        for out in graph.g.output:
            dq = graph.producer(out.name)
            if dq is None or dq.op_type != "DequantizeLinear":
                continue
            scale, zp = _scalar_params(graph, dq)
            if np.any(scale <= 0) or zp.size != 1:
                continue
            producer = graph.producer(dq.input[0])
            if producer is None:
                continue
            producer.output[list(producer.output).index(dq.input[0])] = out.name
            graph.nodes.remove(dq)
            out.type.tensor_type.elem_type = helper.np_dtype_to_tensor_dtype(zp.dtype)
            changed = True
        return changed


def _along_channels(value, rank: int) -> np.ndarray:
    """A per-channel vector shaped to broadcast along axis 1 of a rank-``rank`` tensor."""
    return np.reshape(value, (-1,) + (1,) * (rank - 2)) if np.size(value) > 1 \
        else np.reshape(value, ())


def _ranks(model: onnx.ModelProto) -> dict[str, int]:
    """Rank of every tensor shape inference knows."""
    inferred = onnx.shape_inference.infer_shapes(model)
    values = [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]
    return {v.name: len(v.type.tensor_type.shape.dim) for v in values
            if v.type.tensor_type.HasField("shape")}


STEPS: dict[str, type] = {
    "add_rescaling": AddRescaling,
    "embed_act": EmbedAct,
    "prune_qdq": PruneQdq,
    "fold_op_scales": FoldOpScales,
    "split_bias_add": SplitBiasAdd,
    "integer_ops": IntegerOps,
    "scale_out": ScaleOut,
}


def parse_steps(text: str) -> list[str]:
    """Comma-separated step names, checked against ``STEPS`` (one-line error otherwise)."""
    names = [s.strip() for s in text.split(",") if s.strip()]
    if unknown := [n for n in names if n not in STEPS]:
        raise ModelError(f"unknown integer-graph step {unknown[0]!r}; steps: {', '.join(STEPS)}")
    return names


def run_steps(model: onnx.ModelProto, steps: Sequence[str], save_each: Path | None = None,
              after: Callable[[str, onnx.ModelProto], None] | None = None) -> onnx.ModelProto:
    """Apply the named steps in order; ``save_each``: write each intermediate model there as
    ``NN_step.onnx``; ``after(step, model)`` is called after each step (parity checks)."""
    for i, name in enumerate(parse_steps(",".join(steps))):
        model, _ = STEPS[name]().apply(model)
        onnx.checker.check_model(model)
        if save_each is not None:
            save_each.mkdir(parents=True, exist_ok=True)
            onnx.save(model, str(save_each / f"{i + 1:02d}_{name}.onnx"))
        if after is not None:
            after(name, model)
    return model


def integer_only(model: onnx.ModelProto) -> list[str]:
    """The nodes that still produce a non-integer tensor (empty for an integer-only graph),
    each as ``name (op) -> type``."""
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {v.name: v.type.tensor_type.elem_type for v in
             [*inferred.graph.value_info, *inferred.graph.output, *inferred.graph.input]}
    left = []
    for node in inferred.graph.node:
        for out in node.output:
            kind = types.get(out)
            if kind not in _INTEGER_TYPES:
                name = TensorProto.DataType.Name(kind) if kind else "unknown type"
                left.append(f"{label(node)} -> {name}")
    return left


def feed(model: onnx.ModelProto, images: np.ndarray, preprocessing: Preprocessing) -> dict:
    """The input a model of the chain reads for uint8 (N, H, W, C) images: the raw images in
    NCHW once ``add_rescaling`` ran, the preprocessed floats before."""
    graph = model.graph
    inits = {t.name for t in graph.initializer}
    value = next(i for i in graph.input if i.name not in inits)
    if value.type.tensor_type.elem_type == TensorProto.UINT8:
        return {value.name: np.ascontiguousarray(images.transpose(0, 3, 1, 2))}
    return {value.name: preprocessing.apply(images)}
