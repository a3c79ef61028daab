"""The float32 ops of quantized transformers equal onnxruntime's bit for bit, one op at a time,
on inputs that stress their arithmetic: large offsets, constant rows, subnormals, infinities,
values on rounding ties, every length of a vector kernel's tail."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from accel import isa
from circuits.product_table import ProductTable
from evaluators.networks.ort_exactness import session
from evaluators.runtime import approx_runner
from evaluators.runtime.qgraph import QGraph, UnsupportedOpError
from tests.evaluators.float_softmax import assert_documented_softmax, mlas_avx512_softmax
from tests.evaluators.runtime.test_qops import ours, single_op
from tests.evaluators.runtime.test_shape_ops import model

F32 = np.float32
I64 = np.int64


def both(m: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(the runner's output, onnxruntime's) of a one-output model."""
    expected = session(m).run(None, feeds)[0]
    got = approx_runner.run(QGraph.from_onnx(m), feeds, ProductTable.exact(True), None)["y0"]
    assert got.dtype == expected.dtype and got.shape == expected.shape
    return got, expected


def assert_bitwise(m: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> None:
    got, expected = both(m, feeds)
    assert np.array_equal(got, expected, equal_nan=True), \
        np.flatnonzero(~((got == expected) | (np.isnan(got) & np.isnan(expected))))[:10]


def mlas_avx2() -> bool:
    """Whether onnxruntime runs MLAS's AVX2/FMA3 kernels here (activations, LayerNorm), the
    ones dse follows."""
    return {"avx2", "fma"} <= isa.features()


needs_avx2 = pytest.mark.skipif(not mlas_avx2(), reason="onnxruntime runs MLAS's SSE2 kernels "
                                "on this CPU, which dse does not follow")


def spread(seed: int = 0) -> np.ndarray:
    """Float32 values of every kind an activation meets: a fine grid over the interesting range,
    random values, signed zeros, subnormals, huge values, infinities and NaN."""
    rng = np.random.default_rng(seed)
    special = [0.0, -0.0, 1e-40, -1e-40, 1e-30, -1e-8, 0.921875, -0.921875, 3.725, 9.0, -18.0,
               50.0, -50.0, 3e38, -3e38, np.inf, -np.inf, np.nan]
    return np.concatenate([np.linspace(-30, 30, 120_001), rng.standard_normal(30_000) * 4,
                           special]).astype(F32)


@needs_avx2
@pytest.mark.parametrize("op", ["Erf", "Tanh", "Sigmoid"])
def test_mlas_activations_equal_onnxruntime(op):
    x = spread()
    for length in (x.size, 1, 7, 8, 13):  # the vector kernels' tails
        part = x[-length:]
        assert_bitwise(model(op, {"x": part}, {}, ["x"]), {"x": part})


@needs_avx2
@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_equals_onnxruntime(approximate):
    x = spread(1)
    for length in (x.size, 1, 7, 13):
        part = x[-length:]
        m = model("Gelu", {"x": part}, {}, ["x"], version=20, approximate=approximate)
        assert_bitwise(m, {"x": part})


def test_div_sqrt_reciprocal_neg_are_one_ieee_operation_each():
    x = spread(2)
    y = np.concatenate([spread(3)[: x.size - 5], [0.0, -0.0, 1e-45, np.inf, 7.0]]).astype(F32)
    assert_bitwise(model("Div", {"a": x, "b": y}, {}, ["a", "b"]), {"a": x, "b": y})
    rows = x[:120].reshape(4, 30)
    column = np.array([[3.0], [-0.1], [1e-38], [0.0]], F32)
    assert_bitwise(model("Div", {"a": rows, "b": column}, {}, ["a", "b"]),
                   {"a": rows, "b": column})
    for op in ("Sqrt", "Reciprocal", "Neg"):
        assert_bitwise(model(op, {"x": x}, {}, ["x"]), {"x": x})


def test_integer_div_still_rounds_toward_zero():
    a = np.array([[7, -7, 7, -7, 0]], I64)
    b = np.array([[2, 2, -2, -2, 3]], I64)
    got, expected = both(model("Div", {"a": a, "b": b}, {}, ["a", "b"]), {"a": a, "b": b})
    assert np.array_equal(got, expected) and got.tolist() == [[3, -3, -3, 3, 0]]


def test_pow_by_1_2_3_equals_onnxruntime_and_other_exponents_are_refused():
    x = spread(4)
    for exponent in (np.array(2.0, F32), np.array(2, I64), np.array(3.0, F32), np.array(1, I64)):
        assert_bitwise(model("Pow", {"x": x}, {"e": exponent}, ["x", "e"]), {"x": x})
    m = model("Pow", {"x": x}, {"e": np.array(0.5, F32)}, ["x", "e"])
    with pytest.raises(UnsupportedOpError, match="Pow_0.*exponent"):
        approx_runner.run(QGraph.from_onnx(m), {"x": x}, ProductTable.exact(True), None)


REDUCE_CASES = [((300, 768), [-1]), ((4, 50, 13), [-1]), ((4, 50, 13), [2]), ((4, 50, 13), [1, 2]),
                ((4, 50, 13), [0]), ((4, 50, 13), [0, 1]), ((6, 9), None), ((7, 3), [0]),
                ((5, 1, 33), [-1, -2]), ((2, 3, 1), [-1]), ((3, 5), [1])]


def test_reduce_mean_over_leading_or_trailing_axes_equals_onnxruntime():
    rng = np.random.default_rng(5)
    for shape, axes in REDUCE_CASES:
        x = (rng.standard_normal(shape) * 3 + 1e3 * rng.integers(0, 2, shape)).astype(F32)
        for keepdims in (0, 1):
            attrs = {"keepdims": keepdims} | ({} if axes is None else {"axes": axes})
            assert_bitwise(model("ReduceMean", {"x": x}, {}, ["x"], **attrs), {"x": x})
            if axes is not None:  # opset 18: the axes are an input
                m = model("ReduceMean", {"x": x}, {"a": np.array(axes, I64)}, ["x", "a"],
                          version=18, keepdims=keepdims)
                assert_bitwise(m, {"x": x})


def test_reduce_mean_over_middle_axes_is_within_the_float32_summation_bound():
    rng = np.random.default_rng(6)
    for shape, axes in [((4, 50, 13), [1]), ((3, 300, 5), [1]), ((6, 1, 7), [0, 2])]:
        x = (rng.standard_normal(shape) * 3 + 1).astype(F32)
        got, expected = both(model("ReduceMean", {"x": x}, {}, ["x"], axes=axes), {"x": x})
        count = int(np.prod([shape[a] for a in axes]))
        bound = (count + 1) * 2.0 ** -24 * np.abs(x).mean(axis=tuple(axes), keepdims=True)
        assert np.all(np.abs(got - expected) <= bound)


def layer_norm_inputs(rng: np.random.Generator, rows: int, n: int) -> dict[str, np.ndarray]:
    """Rows of four kinds: spread around 1, a large offset with tiny variance (where a careless
    variance cancels), constant (variance 0: 1 / sqrt(eps)), and multiples of 1/8 (sums and
    squares exact, so every rounding is a tie-breaking one)."""
    kinds = [rng.standard_normal((rows, n)) * 3 + 1,
             1e4 + rng.standard_normal((rows, n)) * 1e-2,
             np.full((rows, n), 3.14),
             rng.integers(-64, 64, (rows, n)) / 8]
    return {"x": np.concatenate(kinds).astype(F32), "s": rng.standard_normal(n).astype(F32),
            "b": rng.standard_normal(n).astype(F32)}


@pytest.mark.parametrize("n", [768, 100, 13, 9, 8, 7, 5, 2, 1])
def test_layer_normalization_equals_onnxruntime(n):
    """Rows of 8 or more through MLAS's AVX2 kernel (every length of its tails), shorter ones
    through onnxruntime's scalar loop."""
    if n >= 8 and not mlas_avx2():
        pytest.skip("onnxruntime runs its scalar loop for every row on this CPU")
    rng = np.random.default_rng(n)
    v = layer_norm_inputs(rng, 50, n)
    x = {"x": v["x"]}
    assert_bitwise(model("LayerNormalization", x, {"s": v["s"], "b": v["b"]}, ["x", "s", "b"],
                         epsilon=1e-5), x)
    assert_bitwise(model("LayerNormalization", x, {"s": v["s"]}, ["x", "s"], epsilon=1e-3), x)


@needs_avx2
def test_layer_normalization_over_several_axes_equals_onnxruntime():
    rng = np.random.default_rng(7)
    x = {"x": (rng.standard_normal((2, 3, 4, 5)) * 2).astype(F32)}
    for axis, shape in ((-2, (4, 5)), (1, (3, 4, 5)), (3, (5,)), (2, (4, 5))):
        consts = {"s": rng.standard_normal(shape).astype(F32),
                  "b": rng.standard_normal(shape).astype(F32)}
        assert_bitwise(model("LayerNormalization", x, consts, ["x", "s", "b"], axis=axis), x)


@pytest.mark.parametrize("outputs, scale, refusal", [
    (2, np.ones(8, F32), "Mean and InvStdDev"),
    (1, np.ones(1, F32), "one value per normalized element"),
])
def test_layer_normalization_refuses_what_it_does_not_follow(outputs, scale, refusal):
    """Its statistics outputs, and a scale broadcast over the normalized axes."""
    x = np.ones((2, 8), F32)
    m = model("LayerNormalization", {"x": x}, {"s": scale}, ["x", "s"], outputs=outputs)
    with pytest.raises(UnsupportedOpError, match=f"LayerNormalization_0.*{refusal}"):
        approx_runner.run(QGraph.from_onnx(m), {"x": x}, ProductTable.exact(True), None)


@pytest.mark.parametrize("opset", [13, 17])
def test_softmax_over_the_last_axis_of_attention_scores(opset):
    """Attention's (batch, heads, queries, keys) scores, softmax over the keys: the float
    Softmax as the softmax tests allow on every CPU, the QLinearSoftmax bit for bit."""
    rng = np.random.default_rng(opset)
    scores = (rng.standard_normal((2, 3, 17, 17)) * 4).astype(F32)
    m, expected = single_op("Softmax", {"x": scores}, {}, ["x"], opset, axis=-1)
    got = ours(m, {"x": scores})
    if mlas_avx512_softmax():
        np.testing.assert_array_equal(got, expected)
    assert_documented_softmax(got, scores, opset, -1, expected)
    codes = rng.integers(-128, 128, (2, 3, 17, 17)).astype(np.int8)
    consts = {"xs": np.asarray(F32(0.07)), "xz": np.asarray(0, np.int8),
              "ys": np.asarray(F32(1 / 256)), "yz": np.asarray(-128, np.int8)}
    m, expected = single_op("QLinearSoftmax", {"x": codes}, consts, ["x", "xs", "xz", "ys", "yz"],
                            axis=-1, opset=opset)
    np.testing.assert_array_equal(ours(m, {"x": codes}), expected)



def test_a_decomposed_layer_norm_equals_onnxruntime_running_it_op_by_op():
    """ReduceMean, Sub, Pow, ReduceMean, Add, Sqrt, Div, Mul, Add over a symbolic batch, as
    torch exports LayerNorm before opset 17, against onnxruntime with its graph optimizations
    off (they fuse these nodes into one LayerNormalization, which the runner does not)."""
    rng = np.random.default_rng(8)
    width = 64
    consts = {"two": np.array(2, F32), "eps": np.array(1e-5, F32),
              "g": rng.standard_normal(width).astype(F32),
              "b": rng.standard_normal(width).astype(F32)}
    nodes = [helper.make_node("ReduceMean", ["x"], ["m"], axes=[-1]),
             helper.make_node("Sub", ["x", "m"], ["d"]),
             helper.make_node("Pow", ["d", "two"], ["d2"]),
             helper.make_node("ReduceMean", ["d2"], ["v"], axes=[-1]),
             helper.make_node("Add", ["v", "eps"], ["ve"]),
             helper.make_node("Sqrt", ["ve"], ["sd"]),
             helper.make_node("Div", ["d", "sd"], ["n"]),
             helper.make_node("Mul", ["n", "g"], ["ng"]),
             helper.make_node("Add", ["ng", "b"], ["y0"])]
    graph = helper.make_graph(
        nodes, "layer_norm",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 10, width])],
        [helper.make_empty_tensor_value_info("y0")],
        [numpy_helper.from_array(v, n) for n, v in consts.items()])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    x = (rng.standard_normal((3, 10, width)) * 3 + 1).astype(F32)
    opened = session(m, graph_optimization_level=ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    got = approx_runner.run(QGraph.from_onnx(m), {"x": x}, ProductTable.exact(True), None)["y0"]
    np.testing.assert_array_equal(got, opened.run(None, {"x": x})[0])
