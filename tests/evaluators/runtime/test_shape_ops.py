"""The shape and indexing ops of transformers equal onnxruntime's bit for bit, on int64 shapes,
int8/uint8 codes and float32 values, one op at a time."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from circuits.product_table import ProductTable
from evaluators.networks.ort_exactness import session
from evaluators.runtime import approx_runner
from evaluators.runtime.qgraph import QGraph, UnsupportedOpError

F32 = np.float32
I64 = np.int64


def model(op: str, feeds: dict[str, np.ndarray], consts: dict[str, np.ndarray],
          inputs: list[str], outputs: int = 1, version: int = 17, **attrs) -> onnx.ModelProto:
    """A one-node model reading ``inputs`` (feeds or constants; "" for an absent input)."""
    node = helper.make_node(op, inputs, [f"y{i}" for i in range(outputs)], **attrs)
    graph = helper.make_graph(
        [node], op,
        [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
         for n, v in feeds.items()],
        [helper.make_empty_tensor_value_info(f"y{i}") for i in range(outputs)],
        [numpy_helper.from_array(v, n) for n, v in consts.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", version)])


def assert_equal_onnxruntime(m: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> None:
    expected = session(m).run(None, feeds)
    got = approx_runner.run(QGraph.from_onnx(m), feeds, ProductTable.exact(True), None)
    assert len(expected) == len(m.graph.output)
    for i, want in enumerate(expected):
        have = got[f"y{i}"]
        assert have.dtype == want.dtype and have.shape == want.shape, (have.dtype, have.shape,
                                                                       want.dtype, want.shape)
        assert np.array_equal(have, want), (have, want)


def values(dtype, shape, seed: int = 0) -> np.ndarray:
    """Data of every kind the shape ops meet: float32 values, 8-bit codes, int64 shapes."""
    rng = np.random.default_rng(seed)
    if np.dtype(dtype).kind == "f":
        return (rng.standard_normal(shape) * 100).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(max(info.min, -1000), min(info.max, 1000), shape, endpoint=True).astype(dtype)


DTYPES = [np.float32, np.int8, np.uint8, np.int64]


@pytest.mark.parametrize("dtype", DTYPES)
def test_shape_and_gather_equal_onnxruntime(dtype):
    x = values(dtype, (3, 5, 7, 2))
    for attrs in ({}, {"start": 1}, {"end": -1}, {"start": -3, "end": 3}, {"start": -9, "end": 99}):
        assert_equal_onnxruntime(model("Shape", {"x": x}, {}, ["x"], version=15, **attrs), {"x": x})
    for axis in (0, 1, -1, -2):
        dim = x.shape[axis]
        for indices in (np.array(dim - 1), np.array([0, -1, 2 % dim, -dim]),
                        np.array([[1, -2], [0, 0]])):
            for itype in (I64, np.int32):
                m = model("Gather", {"x": x}, {"i": indices.astype(itype)}, ["x", "i"], axis=axis)
                assert_equal_onnxruntime(m, {"x": x})


def test_the_batch_dependent_shape_subgraph_equals_onnxruntime():
    """Shape -> Gather -> Unsqueeze -> Concat -> Reshape: what constant folding leaves of a
    transformer's reshape when the batch axis is symbolic."""
    x = values(np.int8, (4, 6, 8))
    nodes = [helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("Gather", ["s", "zero"], ["b"], axis=0),
             helper.make_node("Unsqueeze", ["b", "zero_axes"], ["b1"]),
             helper.make_node("Concat", ["b1", "rest"], ["shape"], axis=0),
             helper.make_node("Reshape", ["x", "shape"], ["y0"])]
    consts = {"zero": np.array(0, I64), "zero_axes": np.array([0], I64),
              "rest": np.array([-1, 2, 4], I64)}
    graph = helper.make_graph(
        nodes, "shape", [helper.make_tensor_value_info("x", TensorProto.INT8, ["batch", 6, 8])],
        [helper.make_empty_tensor_value_info("y0")],
        [numpy_helper.from_array(v, n) for n, v in consts.items()])
    assert_equal_onnxruntime(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]),
                             {"x": x})


def test_a_shape_as_long_as_the_batch_is_not_taken_for_images():
    """``table_free`` keeps per-image tensors to slice them into batches; a shape whose length
    happens to be the number of images (3 axes, 3 images) is not one of them, and the
    Constant forms ``value_ints`` and ``value_int`` are read as the tensors they hold."""
    nodes = [helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("Constant", [], ["zero"], value_int=0),
             helper.make_node("Constant", [], ["rest"], value_ints=[-1, 2, 4]),
             helper.make_node("Gather", ["s", "zero"], ["b"], axis=0),
             helper.make_node("Unsqueeze", ["b", "zero_axes"], ["b1"]),
             helper.make_node("Concat", ["b1", "rest"], ["shape"], axis=0),
             helper.make_node("Reshape", ["x", "shape"], ["y0"])]
    graph = helper.make_graph(
        nodes, "shape", [helper.make_tensor_value_info("x", TensorProto.INT8, ["batch", 6, 8])],
        [helper.make_empty_tensor_value_info("y0")],
        [numpy_helper.from_array(np.array([0], I64), "zero_axes")])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    x = values(np.int8, (3, 6, 8))
    assert_equal_onnxruntime(m, {"x": x})
    qgraph = QGraph.from_onnx(m)
    feeds = approx_runner.table_free(qgraph, {"x": x})
    assert "s" not in feeds
    first = {k: v[:2] for k, v in feeds.items()}
    got = approx_runner.run(qgraph, first, ProductTable.exact(True), None)["y0"]
    assert np.array_equal(got, x[:2].reshape(2, -1, 2, 4))


SLICES = [  # starts, ends, axes, steps
    ([1], [3], None, None),
    ([0, 1], [-1, 1000], [0, 2], None),
    ([-2], [-9223372036854775807], [1], [-1]),
    ([9223372036854775807], [-9223372036854775807], [-1], [-2]),
    ([-100], [100], [-2], [3]),
    ([2, 0], [0, 5], [2, -3], [-1, 2]),
    ([0], [0], [0], [1]),
]


@pytest.mark.parametrize("dtype", DTYPES)
def test_slice_clamps_as_onnxruntime_does(dtype):
    x = values(dtype, (4, 5, 6))
    for starts, ends, axes, steps in SLICES:
        consts = {"s": np.array(starts, I64), "e": np.array(ends, I64)}
        inputs = ["x", "s", "e"]
        if axes is not None:
            consts["a"], inputs = np.array(axes, I64), inputs + ["a"]
        if steps is not None:
            consts["t"], inputs = np.array(steps, I64), inputs + ["t"] if axes is not None \
                else inputs + ["", "t"]
        assert_equal_onnxruntime(model("Slice", {"x": x}, consts, inputs), {"x": x})


def test_slice_before_opset_10_reads_attributes():
    x = values(F32, (4, 5))
    m = model("Slice", {"x": x}, {}, ["x"], version=9, starts=[1, -3], ends=[1000, -1], axes=[0, 1])
    assert_equal_onnxruntime(m, {"x": x})


@pytest.mark.parametrize("dtype", DTYPES)
def test_split_in_every_opset_form_equals_onnxruntime(dtype):
    x = values(dtype, (2, 9, 4))
    assert_equal_onnxruntime(model("Split", {"x": x}, {"s": np.array([2, 3, 4], I64)},
                                   ["x", "s"], outputs=3, axis=1), {"x": x})
    assert_equal_onnxruntime(model("Split", {"x": x}, {}, ["x"], outputs=3, axis=-2), {"x": x})
    assert_equal_onnxruntime(model("Split", {"x": x}, {}, ["x"], outputs=2, version=11, axis=2,
                                   split=[1, 3]), {"x": x})
    for parts in (3, 4, 2):
        assert_equal_onnxruntime(model("Split", {"x": x}, {}, ["x"], outputs=parts, version=18,
                                       axis=1, num_outputs=parts), {"x": x})


def test_constant_of_shape_equals_onnxruntime():
    shape = np.array([2, 3, 1], I64)
    assert_equal_onnxruntime(model("ConstantOfShape", {"s": shape}, {}, ["s"]), {"s": shape})
    for value in (np.array([7], I64), np.array([-3], np.int8), np.array([1.5], F32)):
        m = model("ConstantOfShape", {"s": shape}, {}, ["s"],
                  value=numpy_helper.from_array(value))
        assert_equal_onnxruntime(m, {"s": shape})


@pytest.mark.parametrize("dtype", DTYPES)
def test_expand_and_where_broadcast_as_onnxruntime(dtype):
    x = values(dtype, (3, 1, 5))
    for shape in ([2, 3, 4, 5], [1, 1], [3, 1, 1], [5]):
        m = model("Expand", {"x": x}, {"s": np.array(shape, I64)}, ["x", "s"])
        assert_equal_onnxruntime(m, {"x": x})
    y = values(dtype, (4, 1), seed=1)
    cond = np.random.default_rng(2).integers(0, 2, (1, 4, 5)).astype(bool)
    assert_equal_onnxruntime(model("Where", {"c": cond, "x": x, "y": y}, {}, ["c", "x", "y"]),
                             {"c": cond, "x": x, "y": y})


@pytest.mark.parametrize("op", ["Equal", "Less", "Greater"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_comparisons_and_not_equal_onnxruntime(op, dtype):
    a = values(dtype, (4, 6)) // (10 if np.dtype(dtype).kind != "f" else 1)
    b = a[:, :1].copy()
    feeds = {"a": a.astype(dtype), "b": b.astype(dtype)}
    assert_equal_onnxruntime(model(op, feeds, {}, ["a", "b"]), feeds)
    c = a > a.mean()
    assert_equal_onnxruntime(model("Not", {"c": c}, {}, ["c"]), {"c": c})


def test_range_equals_onnxruntime():
    for start, limit, delta in [(0, 10, 1), (10, -3, -4), (5, 5, 1), (3, 1, 1)]:
        for dtype in (I64, np.int32):
            feeds = {n: np.array(v, dtype) for n, v in zip("sld", (start, limit, delta))}
            assert_equal_onnxruntime(model("Range", feeds, {}, ["s", "l", "d"]), feeds)
    # float steps accumulate one at a time: the rounding of each addition shows
    for start, limit, delta in [(0.1, 7.3, 0.1), (1e7, 1e7 + 50, 0.7), (-2.5, -30.0, -0.3)]:
        feeds = {n: np.array(v, F32) for n, v in zip("sld", (start, limit, delta))}
        assert_equal_onnxruntime(model("Range", feeds, {}, ["s", "l", "d"]), feeds)


def test_mod_equals_onnxruntime():
    rng = np.random.default_rng(3)
    for dtype in (I64, np.int32, np.int8):
        a = rng.integers(-100, 100, (5, 7)).astype(dtype)
        b = rng.choice([-7, -3, 2, 5], (1, 7)).astype(dtype)
        for fmod in (0, 1):
            assert_equal_onnxruntime(model("Mod", {"a": a, "b": b}, {}, ["a", "b"], fmod=fmod),
                                     {"a": a, "b": b})
    a, b = (rng.standard_normal((5, 7)) * 50).astype(F32), rng.uniform(-3, 3, (5, 7)).astype(F32)
    assert_equal_onnxruntime(model("Mod", {"a": a, "b": b}, {}, ["a", "b"], fmod=1),
                             {"a": a, "b": b})


def test_an_op_still_unsupported_is_refused_in_one_line_naming_the_node():
    x = values(F32, (2, 3))
    m = model("Hardmax", {"x": x}, {}, ["x"])
    m.graph.node[0].name = "head_pick"
    with pytest.raises(UnsupportedOpError) as refused:
        approx_runner.run(QGraph.from_onnx(m), {"x": x}, ProductTable.exact(True), None)
    message = str(refused.value)
    assert "\n" not in message and "'Hardmax'" in message and "'head_pick'" in message


def test_a_setting_the_runner_cannot_follow_is_refused_naming_the_node():
    x = values(F32, (4, 5))
    m = model("Split", {"x": x}, {}, ["x"], outputs=3, axis=0)
    with pytest.raises(UnsupportedOpError, match="Split_0.*equal parts"):
        approx_runner.run(QGraph.from_onnx(m), {"x": x}, ProductTable.exact(True), None)
