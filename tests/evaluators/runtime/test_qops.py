"""The ops without table multiplications equal onnxruntime's bit for bit, one op at a time on
tensors full of rounding ties, and every tensor of QOperator networks equals onnxruntime's."""

from __future__ import annotations

import itertools

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from accel import cpu, reference
from circuits import appaxo
from circuits.product_table import ProductTable
from evaluators.data.preprocess import Preprocessing
from evaluators.errors import ModelError
from evaluators.runtime import approx_runner, qops
from evaluators.runtime.node import Node
from evaluators.runtime.qgraph import QGraph, UnsupportedOpError
from tests.evaluators.float_softmax import (
    SOFTMAX_CASES,
    assert_documented_softmax,
    mlas_avx512_softmax,
    softmax_inputs,
)
from tests.evaluators.qmodels import (
    Branches,
    ResNetTiny,
    Separable,
    TokenMixer,
    VggTiny,
    assert_every_tensor_equal,
    assert_kernels_agree,
    build,
    session,
)

F32 = np.float32
ONNX_TYPE = {np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.int8): TensorProto.INT8,
             np.dtype(np.uint8): TensorProto.UINT8}


def single_op(op: str, feeds: dict[str, np.ndarray], consts: dict[str, np.ndarray],
              inputs: list[str], version: int = 17, **attrs) -> tuple[onnx.ModelProto, np.ndarray]:
    """A one-node model, and onnxruntime's output for ``feeds``."""
    domain = "com.microsoft" if op.startswith("QLinear") else ""
    node = helper.make_node(op, inputs, ["y"], domain=domain, **attrs)
    graph = helper.make_graph(
        [node], op, [helper.make_tensor_value_info(n, ONNX_TYPE[v.dtype], v.shape)
                     for n, v in feeds.items()],
        [helper.make_empty_tensor_value_info("y")],
        [numpy_helper.from_array(v, n) for n, v in consts.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", version),
                                                    helper.make_opsetid("com.microsoft", 1)])
    return model, session(model).run(None, feeds)[0]


def ours(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> np.ndarray:
    graph = QGraph.from_onnx(model)
    return approx_runner.run(graph, feeds, ProductTable.exact(True), None)["y"]


def every_pair(dtype) -> tuple[np.ndarray, np.ndarray]:
    """All 65,536 (a, b) code pairs as two (1, 256, 256, 1) tensors."""
    codes = qops.all_codes(np.dtype(dtype))
    a, b = np.meshgrid(codes, codes, indexing="ij")
    return a.reshape(1, 256, 256, 1), b.reshape(1, 256, 256, 1)


def binary_params(rng, dtype, zero_points: bool) -> dict[str, np.ndarray]:
    info = np.iinfo(dtype)
    params = {f"{t}_scale": F32(rng.uniform(0.002, 0.05)) for t in "abc"}
    for t in "abc":
        zp = rng.integers(info.min // 2 + 32, info.max // 2 + 32) if zero_points else 0
        params[f"{t}_zp"] = np.array(zp, dtype=dtype)
    return {k: np.asarray(v) for k, v in params.items()}


BINARY_INPUTS = ["a", "a_scale", "a_zp", "b", "b_scale", "b_zp", "c_scale", "c_zp"]


def textbook_add(a, b, p):
    """Dequantize, add, quantize: the formula without onnxruntime's order of operations."""
    real = (a.astype(F32) - p["a_zp"]) * p["a_scale"] + (b.astype(F32) - p["b_zp"]) * p["b_scale"]
    return qops.quantize(real, p["c_scale"], p["c_zp"])


def zero_point_after_rounding(a, b, p):
    """QLinearMul as MLAS's published vector code does it: round, then add the zero point."""
    ratio = (p["a_scale"] * p["b_scale"]) / p["c_scale"]
    product = (a.astype(np.int32) - p["a_zp"]) * (b.astype(np.int32) - p["b_zp"])
    info = np.iinfo(a.dtype)
    y = np.rint(product.astype(F32) * ratio).astype(np.int64) + p["c_zp"]
    return np.clip(y, info.min, info.max).astype(a.dtype)


def telling_draws(rng, op, a, b, alternative, count=4, **options):
    """Parameter draws under which our op and ``alternative`` disagree somewhere (so the
    comparison with onnxruntime tells them apart), then as many ordinary draws."""
    telling, plain = [], []
    while len(telling) < count or len(plain) < count:
        params = binary_params(rng, a.dtype, **options)
        if op == "QLinearMul":
            params["c_scale"] = np.asarray(F32(rng.uniform(0.05, 0.5)))
        node = Node(op, "n", tuple(BINARY_INPUTS), ("y",))
        mine = getattr(qops, op.replace("QLinear", "qlinear_").lower())(
            node, [a, *[params[k] for k in BINARY_INPUTS[1:3]], b,
                   *[params[k] for k in BINARY_INPUTS[4:]]], None)[0]
        differs = not np.array_equal(mine, alternative(a, b, params))
        (telling if differs else plain).append(params)
    return telling[:count] + plain[:count]


@pytest.mark.parametrize("dtype", [np.int8, np.uint8])
@pytest.mark.parametrize("layout", ["same", "second per channel", "first per channel"])
def test_qlinear_add_equals_onnxruntime_on_every_code_pair(dtype, layout):
    rng = np.random.default_rng(1)
    a, b = every_pair(dtype)
    if layout == "second per channel":
        b = np.ascontiguousarray(b[:, :1, :, :])  # constant along the innermost span
    elif layout == "first per channel":
        a = np.ascontiguousarray(a[:, :, :1, :])  # onnxruntime swaps the operands
    for zero_points in (False, True):
        for params in telling_draws(rng, "QLinearAdd", a, b, textbook_add,
                                    zero_points=zero_points):
            model, expected = single_op("QLinearAdd", {"a": a, "b": b}, params, BINARY_INPUTS)
            np.testing.assert_array_equal(ours(model, {"a": a, "b": b}), expected)


@pytest.mark.parametrize("dtype", [np.int8, np.uint8])
@pytest.mark.parametrize("layout", ["same", "second per channel", "first per channel"])
def test_qlinear_mul_equals_onnxruntime_on_every_code_pair(dtype, layout):
    rng = np.random.default_rng(2)
    a, b = every_pair(dtype)
    if layout == "second per channel":
        b = np.ascontiguousarray(b[:, :1, :, :])
    elif layout == "first per channel":
        a = np.ascontiguousarray(a[:, :, :1, :])
    for params in telling_draws(rng, "QLinearMul", a, b, zero_point_after_rounding,
                                count=3, zero_points=True):
        model, expected = single_op("QLinearMul", {"a": a, "b": b}, params, BINARY_INPUTS)
        np.testing.assert_array_equal(ours(model, {"a": a, "b": b}), expected)


def correctly_rounded(x: F32, y: F32, z: F32) -> F32:
    """The float32 nearest to the exact x * y + z (ties to even), from rational arithmetic."""
    from fractions import Fraction

    true = Fraction(float(x)) * Fraction(float(y)) + Fraction(float(z))
    near = F32(float(true))
    candidates = [near, np.nextafter(near, F32(np.inf)), np.nextafter(near, F32(-np.inf))]
    return min(candidates, key=lambda c: (abs(Fraction(float(c)) - true),
                                          int(np.asarray(c).view(np.uint32)) & 1))


def test_fma_rounds_once_even_where_float64_would_round_twice():
    rng = np.random.default_rng(3)
    x, y, z = (rng.standard_normal(3000).astype(F32) for _ in range(3))
    got = qops.fma32(x, y, z)
    assert all(got[i] == correctly_rounded(x[i], y[i], z[i]) for i in range(len(x)))
    # (1 + 2^-12)^2 = 1 + 2^-11 + 2^-24 lies halfway between two float32 values: the tiny
    # addend decides the rounding, but rounding the float64 sum first loses it
    x = F32(1 + 2.0 ** -12)
    for tiny in (F32(2.0 ** -60), F32(-(2.0 ** -60))):
        assert qops.fma32(x, x, tiny) == correctly_rounded(x, x, tiny)
    naive = F32(np.float64(x) * np.float64(x) + np.float64(F32(2.0 ** -60)))
    assert naive != correctly_rounded(x, x, F32(2.0 ** -60))


def pool_cases():
    for kernel, strides, pads, ceil, include in itertools.product(
            [(2, 2), (3, 3), (3, 2), (9, 9)], [(1, 1), (2, 2), (3, 3)],
            [(0, 0, 0, 0), (1, 1, 1, 1), (1, 0, 0, 1)], [0, 1], [0, 1]):
        if max(pads) < min(kernel):
            yield dict(kernel_shape=list(kernel), strides=list(strides), pads=list(pads),
                       ceil_mode=ceil, count_include_pad=include)


def test_quantized_pooling_equals_onnxruntime():
    rng = np.random.default_rng(4)
    x = rng.integers(-128, 128, (2, 5, 9, 9)).astype(np.int8)
    params = {"xs": np.asarray(F32(0.037)), "xz": np.asarray(3, np.int8),
              "ys": np.asarray(F32(0.011)), "yz": np.asarray(-7, np.int8)}
    names = ["x", "xs", "xz", "ys", "yz"]
    checked = 0
    for attrs in pool_cases():
        for channels_last in (0, 1):
            feed = np.ascontiguousarray(x.transpose(0, 2, 3, 1)) if channels_last else x
            model, expected = single_op("QLinearAveragePool", {"x": feed}, params, names,
                                        channels_last=channels_last, **attrs)
            np.testing.assert_array_equal(ours(model, {"x": feed}), expected, err_msg=str(attrs))
            checked += 1
    for channels_last in (0, 1):
        feed = np.ascontiguousarray(x.transpose(0, 2, 3, 1)) if channels_last else x
        model, expected = single_op("QLinearGlobalAveragePool", {"x": feed}, params, names,
                                    channels_last=channels_last)
        np.testing.assert_array_equal(ours(model, {"x": feed}), expected)
    assert checked > 100


@pytest.mark.parametrize("opset", [11, 17, 19])
def test_float_pooling_equals_onnxruntime(opset):
    rng = np.random.default_rng(5)
    x = (rng.standard_normal((2, 3, 13, 17)) * 10).astype(F32)  # sums that round differently
    for attrs in pool_cases():
        model, expected = single_op("AveragePool", {"x": x}, {}, ["x"], opset, **attrs)
        np.testing.assert_array_equal(ours(model, {"x": x}), expected, err_msg=str(attrs))
        if opset >= 12:
            max_attrs = {k: v for k, v in attrs.items() if k != "count_include_pad"}
            for feed in (x, (x * 7).astype(np.int8)):
                model, expected = single_op("MaxPool", {"x": feed}, {}, ["x"], opset, **max_attrs,
                                            dilations=[2, 1] if attrs["kernel_shape"][0] < 5 else [1, 1])
                np.testing.assert_array_equal(ours(model, {"x": feed}), expected, err_msg=str(attrs))
    for shape in [(2, 3, 7, 7), (2, 5, 1, 1), (1, 4, 32, 32), (3, 2, 5, 3)]:
        x = (rng.standard_normal(shape) * 10).astype(F32)
        model, expected = single_op("GlobalAveragePool", {"x": x}, {}, ["x"], opset)
        np.testing.assert_array_equal(ours(model, {"x": x}), expected)


def test_float_elementwise_and_shape_ops_equal_onnxruntime():
    rng = np.random.default_rng(8)
    x = (rng.standard_normal((2, 3, 4, 5)) * 3).astype(F32)
    per_channel = (rng.standard_normal((1, 3, 1, 1)) * 3).astype(F32)
    for op in ("Add", "Sub", "Mul"):
        for a, b in ((x, x[::-1].copy()), (x, per_channel), (per_channel, x)):
            model, expected = single_op(op, {"a": a, "b": b}, {}, ["a", "b"])
            np.testing.assert_array_equal(ours(model, {"a": a, "b": b}), expected)
    cases = [("Relu", {}, [], {}), ("Clip", {"lo": np.array(-1, F32), "hi": np.array(2, F32)},
                                     ["lo", "hi"], {}),
             ("Transpose", {}, [], {"perm": [0, 2, 3, 1]}), ("Flatten", {}, [], {"axis": 2}),
             ("Reshape", {"shape": np.array([0, -1, 5], np.int64)}, ["shape"], {}),
             ("Unsqueeze", {"axes": np.array([0, -1], np.int64)}, ["axes"], {}),
             ("Squeeze", {"axes": np.array([0], np.int64)}, ["axes"], {}),
             ("Concat", {"c": x[:, :1]}, ["c"], {"axis": 1})]
    for op, consts, extra, attrs in cases:
        feed = x[:1] if op == "Squeeze" else x
        model, expected = single_op(op, {"x": feed}, consts, ["x", *extra], **attrs)
        got = ours(model, {"x": feed})
        assert got.shape == expected.shape, op
        np.testing.assert_array_equal(got, expected, err_msg=op)


def test_qlinear_concat_and_softmax_equal_onnxruntime():
    rng = np.random.default_rng(6)
    for dtype in (np.int8, np.uint8):
        info = np.iinfo(dtype)
        a = rng.integers(info.min, info.max + 1, (3, 4, 5, 5)).astype(dtype)
        b = rng.integers(info.min, info.max + 1, (3, 2, 5, 5)).astype(dtype)
        consts = {"ys": np.asarray(F32(0.05)), "yz": np.asarray(info.min + 100, dtype),
                  "as": np.asarray(F32(0.031)), "az": np.asarray(info.min + 90, dtype),
                  "bs": np.asarray(F32(0.05)), "bz": np.asarray(info.min + 100, dtype)}
        model, expected = single_op("QLinearConcat", {"a": a, "b": b}, consts,
                                    ["ys", "yz", "a", "as", "az", "b", "bs", "bz"], axis=1)
        np.testing.assert_array_equal(ours(model, {"a": a, "b": b}), expected)
        x = rng.integers(info.min, info.max + 1, (64, 10)).astype(dtype)
        for ys, yz in ((1 / 256, info.min), (1 / 200, info.min + 10)):
            consts = {"xs": np.asarray(F32(rng.uniform(0.05, 0.3))), "xz": np.asarray(0, dtype),
                      "ys": np.asarray(F32(ys)), "yz": np.asarray(yz, dtype)}
            model, expected = single_op("QLinearSoftmax", {"x": x}, consts,
                                        ["x", "xs", "xz", "ys", "yz"], axis=-1, opset=13)
            np.testing.assert_array_equal(ours(model, {"x": x}), expected)


def test_float_softmax_equals_onnxruntime_where_its_kernel_is_the_one_dse_follows():
    for (opset, _, axis, _), x in zip(SOFTMAX_CASES, softmax_inputs()):
        model, expected = single_op("Softmax", {"x": x}, {}, ["x"], opset, axis=axis)
        got = ours(model, {"x": x})
        if mlas_avx512_softmax():
            np.testing.assert_array_equal(got, expected)
        assert_documented_softmax(got, x, opset, axis, expected)


def cifar_like(count: int, seed: int = 0) -> np.ndarray:
    images = np.random.default_rng(seed).integers(0, 256, (count, 32, 32, 3), dtype=np.uint8)
    return Preprocessing(layout="NCHW").apply(images)


@pytest.fixture(scope="module")
def digits(mnist):
    _, test = mnist
    return Preprocessing().apply(test.images[:200])


@pytest.mark.parametrize("network", [ResNetTiny, VggTiny, Branches, TokenMixer])
def test_every_tensor_of_qoperator_networks_equals_onnxruntime(network, digits, tmp_path):
    path = build(network(), digits[:100], tmp_path, "qoperator")
    got = assert_every_tensor_equal(path, digits)
    graph = QGraph.from_onnx(path)
    ops = {n.op for n in graph.nodes}
    assert {"QLinearConv" if network is not TokenMixer else "QLinearMatMul", "QGemm"} <= ops
    if network is ResNetTiny:
        assert "QLinearAdd" in ops and "GlobalAveragePool" in ops
    if network is Branches:
        assert {"QLinearConcat", "QLinearAveragePool", "QLinearMul", "QLinearGlobalAveragePool",
                "QLinearSoftmax"} <= ops
    if network is TokenMixer:
        assert {"QLinearMatMul", "QLinearAdd"} <= ops
    logits = [n for n in graph.nodes if n.op == "QGemm"][-1].outputs[0]
    assert len(np.unique(got[logits], axis=0)) > 10  # the network's codes depend on the image
    assert_every_tensor_equal(path, digits[:8], kernels=reference)


@pytest.mark.parametrize("fmt", ["qoperator", "qdq"])
def test_a_final_float_softmax_equals_onnxruntime(fmt, digits, tmp_path):
    path = build(Branches(), digits[:100], tmp_path, fmt, keep_float=("Softmax",))
    graph = QGraph.from_onnx(path)
    assert [n.op for n in graph.nodes][-2:] == ["DequantizeLinear", "Softmax"]
    expected = session(path).run(None, {"input": digits})[0]
    got = approx_runner.run(graph, {"input": digits}, ProductTable.exact(True), cpu)["out"]
    if mlas_avx512_softmax():
        np.testing.assert_array_equal(got, expected)
        assert_every_tensor_equal(path, digits, int8_allowed=fmt == "qdq")
    else:  # every tensor up to the softmax's input, then the documented arithmetic
        softmax = graph.nodes[-1]
        logits = assert_every_tensor_equal(path, digits, int8_allowed=fmt == "qdq",
                                           leave_out=softmax.outputs)[softmax.inputs[0]]
        assert_documented_softmax(got, logits, graph.opset, softmax.attr("axis", -1), expected)
        np.testing.assert_array_equal(got.argmax(axis=1), expected.argmax(axis=1))


def test_depthwise_pointwise_and_dilated_convolutions_equal_onnxruntime(tmp_path):
    x = cifar_like(160)
    path = build(Separable(), x[:100], tmp_path, "qoperator")
    graph = QGraph.from_onnx(path)
    groups = [n.attr("group", 1) for n in graph.nodes if n.op == "QLinearConv"]
    assert 8 in groups and any(n.attr("dilations") == [2, 2] for n in graph.nodes)
    assert_every_tensor_equal(path, x)
    approx = ProductTable(appaxo.product_table(0b111100011000111111111111111011111111), True)
    assert_kernels_agree(path, x[:6], approx)


def unsupported_model(op: str) -> onnx.ModelProto:
    if op == "Einsum":
        node = helper.make_node("Einsum", ["input", "w"], ["out"], name="mixer", equation="ij,jk->ik")
        inits = [numpy_helper.from_array(np.ones((4, 3), F32), "w")]
    else:
        node = helper.make_node("LSTM", ["input", "w", "r"], ["", "out"], name="recurrent",
                                hidden_size=2)
        inits = [numpy_helper.from_array(np.ones((1, 8, 4), F32), "w"),
                 numpy_helper.from_array(np.ones((1, 8, 2), F32), "r")]
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, None)],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("op, node", [("LSTM", "recurrent"), ("Einsum", "mixer")])
def test_an_unsupported_op_is_refused_in_one_line_naming_node_and_op(op, node):
    graph = QGraph.from_onnx(unsupported_model(op))
    with pytest.raises(UnsupportedOpError) as err:
        approx_runner.check_supported(graph)
    message = str(err.value)
    assert f"'{op}'" in message and f"'{node}'" in message and "\n" not in message
    assert isinstance(err.value, ModelError)
    with pytest.raises(UnsupportedOpError):  # before any work: nothing is computed
        approx_runner.run(graph, {"input": None}, ProductTable.exact(True), None)


def test_per_channel_activation_scale_is_refused_in_one_line():
    x = np.zeros((1, 2, 3, 3), np.int8)
    node = Node("QLinearGlobalAveragePool", "gap", ("x",) * 5, ("y",))
    with pytest.raises(UnsupportedOpError, match=r"^node 'gap' \(QLinearGlobalAveragePool\): "
                                                 r"per-channel scale is not supported$"):
        qops.qlinear_global_average_pool(node, [x, np.ones(2, F32), None, F32(1), None], None)
