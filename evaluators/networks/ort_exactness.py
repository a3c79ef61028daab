"""Whether onnxruntime multiplies 8-bit codes exactly on this CPU, per operand scheme.

dse computes every product of every scheme exactly, on every CPU: exact integer arithmetic is
its ground truth. onnxruntime is the yardstick only where it is exact too, and on x86-64 that
depends on the CPU: without AVX-512 VNNI (AVX2-only machines, SSE4.1, AVX-512 without VNNI) its
MLAS kernels multiply uint8 x int8 with VPMADDUBSW, which adds pairs of products in saturating
int16 (64 products 255 x 127 give 1,048,544 instead of 2,072,640). Its quantization guide warns
about this and recommends 7-bit weights (``reduce_range``) or U8U8 on such CPUs; S8S8 QDQ models
are affected too, since onnxruntime moves their int8 activations to uint8 on x86.

Its precision mode (the session option ``session.x64quantprecision``) moves constant int8
weights to uint8 so that its exact U8U8 kernels run; every onnxruntime session dse opens as a
reference (``session``) turns it on. A product of two activations has no constant to move and
stays saturating. ``probe`` establishes all this with a few saturating products through
MatMulInteger, QLinearMatMul (weights and two activations) and QLinearConv per scheme, with
onnxruntime's default options and in its precision mode, once per process.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from evaluators.networks.quantization import activation_products, operand_scheme

if TYPE_CHECKING:
    from evaluators.runtime.qgraph import QGraph

PRECISION_MODE = "session.x64quantprecision"
SCHEMES = ("s8s8", "u8s8", "u8u8")  # activations then weights, as evaluators.networks.quantization
CASES = ("MatMulInteger", "QLinearMatMul", "QLinearMatMul of two activations", "QLinearConv",
         "QDQ Conv", "QDQ Gemm")
_FORMAT_CASES = {"qoperator": ("MatMulInteger", "QLinearMatMul", "QLinearConv"),
                 "qdq": ("QDQ Conv", "QDQ Gemm")}
_DEPTH = 60  # products per dot product: pairs summed in int16 overflow many times over
_OUTPUT_SCALE = 2.0 ** 15  # a QLinear op's sum of 64 extreme products lands inside 8 bits


@dataclass(frozen=True)
class Exactness:
    """What the probe found: the (case, scheme) pairs onnxruntime got wrong, with its default
    options and in its precision mode."""

    inexact_default: frozenset[tuple[str, str]]
    inexact_precise: frozenset[tuple[str, str]]

    def exact(self, scheme: str, fmt: str | None = None, *, precise: bool = True,
              activation_products: bool = False) -> bool:
        """Whether onnxruntime computes a model of ``scheme`` (``SCHEMES``, or ``mixed``: any
        of them) in ``fmt`` (``qoperator``, ``qdq``; None: either) exactly here, in its
        precision mode (``session``) or with its default options; ``activation_products``: the
        model multiplies two activations (a Q x K^T) as well as activations by weights."""
        schemes = SCHEMES if scheme == "mixed" else (scheme,)
        inexact = self.inexact_precise if precise else self.inexact_default
        cases = (_FORMAT_CASES[fmt] if fmt else sum(_FORMAT_CASES.values(), ())) + \
            (("QLinearMatMul of two activations",) if activation_products else ())
        return not any((c, s) in inexact for c in cases for s in schemes)

    def saturating(self) -> list[str]:
        """The schemes and formats onnxruntime's default options get wrong here, as
        ``U8S8 qoperator`` (for the informational lines and the benchmark)."""
        return [f"{s.upper()} {f}" for s in SCHEMES for f in _FORMAT_CASES
                if not self.exact(s, f, precise=False)]


def exact_for(graph: QGraph, *, precise: bool = True) -> bool:
    """Whether onnxruntime computes the quantized ``graph`` exactly on this CPU (in its
    precision mode, ``session``, unless ``precise`` is False): its operand scheme and whether
    it multiplies two activations, looked up in the ``probe``."""
    return probe().exact(operand_scheme(graph), precise=precise,
                         activation_products=activation_products(graph))


def session(model, config: dict[str, str] | None = None, custom_ops: str | None = None,
            **settings):
    """An onnxruntime CPU session for ``model`` (a path, ``onnx.ModelProto`` or serialized
    bytes) in its precision mode, with the session ``config`` entries, a ``custom_ops``
    library and ``SessionOptions`` attributes ``settings`` (``graph_optimization_level=...``):
    the exact reference wherever ``probe`` says so. Where onnxruntime cannot run a model in
    that mode (int8 activations against the weights it moved to uint8: S8S8 QOperator layers,
    exact without it; QDQ transformers, whose initializers its rewrite collides with), the
    default mode; the session's ``precise`` says which mode it runs in (for ``Exactness.exact``)."""
    import onnxruntime as ort

    if isinstance(model, (str, Path)):
        model = str(model)
    elif hasattr(model, "SerializeToString"):
        model = model.SerializeToString()

    def options(precise: bool) -> ort.SessionOptions:
        made = ort.SessionOptions()
        made.log_severity_level = 3  # its errors come back as exceptions, not pages on stderr
        for key, value in {**(config or {}), **({PRECISION_MODE: "1"} if precise else {})}.items():
            made.add_session_config_entry(key, value)
        for key, value in settings.items():
            setattr(made, key, value)
        if custom_ops is not None:
            made.register_custom_ops_library(custom_ops)
        return made

    try:
        made = ort.InferenceSession(model, options(True), providers=["CPUExecutionProvider"])
        made.precise = True
    except Exception:  # onnxruntime's own error types, whatever the mode trips on
        made = ort.InferenceSession(model, options(False), providers=["CPUExecutionProvider"])
        made.precise = False
    return made


@functools.cache
def probe() -> Exactness:
    """Run the saturating products through onnxruntime on this CPU (a second or less, once per
    process) and compare each output with the exact one."""
    import onnxruntime as ort

    inexact: dict[bool, set[tuple[str, str]]] = {False: set(), True: set()}
    for scheme in SCHEMES:
        for case in CASES:
            model, feeds, expected = _case(case, scheme)
            for precise in (False, True):
                opened = session(model) if precise else ort.InferenceSession(
                    model.SerializeToString(), providers=["CPUExecutionProvider"])
                got = opened.run(None, feeds)[0]
                if not np.array_equal(got.reshape(expected.shape), expected):
                    inexact[precise].add((case, scheme))
    return Exactness(frozenset(inexact[False]), frozenset(inexact[True]))


def _operands(scheme: str) -> tuple[np.ndarray, np.ndarray]:
    """Two activation rows (2, depth) and two weight columns (depth, 2) of extreme codes whose
    products, summed in pairs, leave int16 in both directions (int8 activations also once
    onnxruntime has moved them to uint8)."""
    a = np.repeat(np.array([[-128], [127]] if scheme[:2] == "s8" else [[255], [200]]), _DEPTH, 1)
    a = a.astype(np.int8 if scheme[:2] == "s8" else np.uint8)
    if scheme[2:] == "s8":
        b = np.stack([np.full(_DEPTH, 127), np.full(_DEPTH, -128)], 1).astype(np.int8)
    else:
        b = np.stack([np.full(_DEPTH, 255), np.tile([255, 1], _DEPTH // 2)], 1).astype(np.uint8)
    return a, b


def _case(case: str, scheme: str):
    """One probe model (``onnx.ModelProto``), its feeds and the exact output."""
    from onnx import TensorProto, helper, numpy_helper

    a, b = _operands(scheme)
    exact = a.astype(np.int64) @ b.astype(np.int64)  # (2, 2)
    constants = [numpy_helper.from_array(b, "b")]
    inputs = [helper.make_tensor_value_info("a", helper.np_dtype_to_tensor_dtype(a.dtype), a.shape)]
    feeds = {"a": a}
    if case == "MatMulInteger":
        nodes = [helper.make_node("MatMulInteger", ["a", "b"], ["y"])]
        output_type, expected = TensorProto.INT32, exact.astype(np.int32)
    else:
        # the output in the activations' type, around its middle
        zero = np.array(0 if a.dtype == np.int8 else 128, a.dtype)
        constants += [numpy_helper.from_array(np.array(1.0, np.float32), "one"),
                      numpy_helper.from_array(np.array(1.0, np.float32), "a_scale"),
                      numpy_helper.from_array(np.array(_OUTPUT_SCALE, np.float32), "y_scale"),
                      numpy_helper.from_array(np.zeros((), a.dtype), "a_zero"),
                      numpy_helper.from_array(zero, "y_zero"),
                      numpy_helper.from_array(np.zeros((), b.dtype), "b_zero")]
        info = np.iinfo(a.dtype)
        expected = np.clip(np.rint(exact / _OUTPUT_SCALE) + zero, info.min, info.max).astype(a.dtype)
        output_type = helper.np_dtype_to_tensor_dtype(a.dtype)
        operands = ["a", "a_scale", "a_zero", "b", "one", "b_zero", "y_scale", "y_zero"]
        if case in ("QLinearConv", "QDQ Conv"):
            constants[0] = numpy_helper.from_array(b.T.reshape(2, _DEPTH, 1, 1), "b")
            feeds = {"a": a.reshape(2, _DEPTH, 1, 1)}
            inputs = [helper.make_tensor_value_info("a", output_type, [2, _DEPTH, 1, 1])]
            expected = expected.reshape(2, 2, 1, 1)
        elif case == "QLinearMatMul of two activations":
            constants = constants[1:]
            feeds["b"] = b
            inputs.append(helper.make_tensor_value_info(
                "b", helper.np_dtype_to_tensor_dtype(b.dtype), b.shape))
        if case.startswith("QDQ"):  # float in and out, as quantize_int8 writes it: onnxruntime
            # fuses it into a QLinearConv / QGemm (and moves int8 activations to uint8 on x86)
            feeds = {"x": feeds["a"].astype(np.float32)}
            inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, feeds["x"].shape)]
            layer = helper.make_node("Conv", ["af", "bf"], ["yf"]) if case == "QDQ Conv" else \
                helper.make_node("Gemm", ["af", "bf"], ["yf"])
            nodes = [helper.make_node("QuantizeLinear", ["x", "a_scale", "a_zero"], ["a"]),
                     helper.make_node("DequantizeLinear", ["a", "a_scale", "a_zero"], ["af"]),
                     helper.make_node("DequantizeLinear", ["b", "one", "b_zero"], ["bf"]),
                     layer,
                     helper.make_node("QuantizeLinear", ["yf", "y_scale", "y_zero"], ["yq"]),
                     helper.make_node("DequantizeLinear", ["yq", "y_scale", "y_zero"], ["y"])]
            output_type = TensorProto.FLOAT
            expected = ((expected.astype(np.float64) - zero) * _OUTPUT_SCALE).astype(np.float32)
        else:
            nodes = [helper.make_node("QLinearConv" if case == "QLinearConv" else "QLinearMatMul",
                                      operands, ["y"])]
    graph = helper.make_graph(nodes, "probe", inputs,
                              [helper.make_tensor_value_info("y", output_type, None)], constants)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model, feeds, expected
