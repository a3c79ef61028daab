"""Products of two activations (attention's Q x K^T and softmax(..) x V) in every form
onnxruntime quantizes transformers into: QLinearMatMul of two activations (QOperator, and QDQ
MatMul fused into it), DynamicQuantizeLinear -> MatMulInteger. The runner equals exact integer
arithmetic always and onnxruntime where onnxruntime is exact (``ort_exactness.probe``)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from accel import cpu, reference
from accel.batch import PerTable
from accel.requant import output_multiplier, requantize
from circuits import appaxo
from circuits.multiplier import truncated
from circuits.product_table import ProductTable
from evaluators.networks import ort_exactness
from evaluators.runtime import approx_runner
from evaluators.runtime.core_ops import dynamic_quantization
from evaluators.runtime.layer_tables import LayerTables
from evaluators.runtime.prefix_cache import PrefixCache
from evaluators.runtime.qgraph import QGraph, UnsupportedOpError
from evaluators.runtime.workload import mac_counts, operand_histograms, sample_layer_workloads

BATCH, HEADS, SEQ, DIM = 3, 2, 5, 8
EXACT = ProductTable.exact(True)
SCHEMES = {"s8s8": (np.int8, np.int8), "u8u8": (np.uint8, np.uint8)}
_TYPES = {np.int8: TensorProto.INT8, np.uint8: TensorProto.UINT8}


def _model(nodes, inputs, outputs, consts) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes, "attention", [helper.make_tensor_value_info(n, t, s) for n, t, s in inputs],
        [helper.make_tensor_value_info(n, t, None) for n, t in outputs],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in consts.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _params(scheme: str) -> dict[str, np.ndarray]:
    """Scales and zero points of Q (a), K^T (b) and the product (y), in the scheme's types."""
    ta, tb = SCHEMES[scheme]
    az, bz, yz = (3, -5, 0) if ta is np.int8 else (131, 120, 128)
    return {"as": np.float32(0.05), "az": np.asarray(az, ta), "bs": np.float32(0.03),
            "bz": np.asarray(bz, tb), "ys": np.float32(0.2), "yz": np.asarray(yz, ta)}


def qlinear_matmul_model(scheme: str) -> onnx.ModelProto:
    """QLinearMatMul of two 4-D activations: (B, H, S, D) x (B, H, D, S)."""
    ta, tb = SCHEMES[scheme]
    node = helper.make_node("QLinearMatMul", ["a", "as", "az", "b", "bs", "bz", "ys", "yz"],
                            ["y"], name="scores")
    return _model([node], [("a", _TYPES[ta], [BATCH, HEADS, SEQ, DIM]),
                           ("b", _TYPES[tb], [BATCH, HEADS, DIM, SEQ])],
                  [("y", _TYPES[ta])], _params(scheme))


def qdq_matmul_model(scheme: str) -> onnx.ModelProto:
    """Float Q and K^T quantized, dequantized, multiplied, requantized: a QDQ attention score."""
    nodes = [helper.make_node("QuantizeLinear", ["qf", "as", "az"], ["qq"]),
             helper.make_node("DequantizeLinear", ["qq", "as", "az"], ["qd"]),
             helper.make_node("QuantizeLinear", ["kf", "bs", "bz"], ["kq"]),
             helper.make_node("DequantizeLinear", ["kq", "bs", "bz"], ["kd"]),
             helper.make_node("MatMul", ["qd", "kd"], ["sf"], name="scores"),
             helper.make_node("QuantizeLinear", ["sf", "ys", "yz"], ["sq"]),
             helper.make_node("DequantizeLinear", ["sq", "ys", "yz"], ["y"])]
    return _model(nodes, [("qf", TensorProto.FLOAT, [BATCH, HEADS, SEQ, DIM]),
                          ("kf", TensorProto.FLOAT, [BATCH, HEADS, DIM, SEQ])],
                  [("y", TensorProto.FLOAT)], _params(scheme))


def dynamic_matmul_model() -> onnx.ModelProto:
    """Dynamic quantization of both operands, MatMulInteger, and the float rescaling."""
    nodes = [helper.make_node("DynamicQuantizeLinear", ["qf"], ["qq", "qs", "qz"]),
             helper.make_node("DynamicQuantizeLinear", ["kf"], ["kq", "ks", "kz"]),
             helper.make_node("MatMulInteger", ["qq", "kq", "qz", "kz"], ["acc"], name="scores"),
             helper.make_node("Cast", ["acc"], ["accf"], to=TensorProto.FLOAT),
             helper.make_node("Mul", ["qs", "ks"], ["scale"]),
             helper.make_node("Mul", ["accf", "scale"], ["y"])]
    return _model(nodes, [("qf", TensorProto.FLOAT, [BATCH, HEADS, SEQ, DIM]),
                          ("kf", TensorProto.FLOAT, [BATCH, HEADS, DIM, SEQ])],
                  [("acc", TensorProto.INT32), ("y", TensorProto.FLOAT), ("qq", TensorProto.UINT8)],
                  {})


def codes(rng: np.random.Generator, shape, dtype) -> np.ndarray:
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max + 1, shape).astype(dtype)


def code_feeds(scheme: str, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    ta, tb = SCHEMES[scheme]
    return {"a": codes(rng, (BATCH, HEADS, SEQ, DIM), ta), "b": codes(rng, (BATCH, HEADS, DIM, SEQ), tb)}


def float_feeds(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"qf": rng.normal(0, 2, (BATCH, HEADS, SEQ, DIM)).astype(np.float32),
            "kf": rng.normal(0.5, 3, (BATCH, HEADS, DIM, SEQ)).astype(np.float32)}


def _exact_qlinear(a, b, p) -> np.ndarray:
    acc = np.matmul(a.astype(np.int64) - p["az"].astype(np.int64), b.astype(np.int64) - p["bz"].astype(np.int64))
    return requantize(acc.astype(np.int32), output_multiplier(p["as"], p["bs"], p["ys"]), p["yz"])


def _ort(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    return ort_exactness.session(model).run(None, feeds)


def _ort_exact(scheme: str) -> bool:
    return ort_exactness.probe().exact(scheme, "qoperator", activation_products=True)


def _approximate(signed: bool) -> ProductTable:
    return appaxo.table(404750335) if signed else truncated(6, signed=False, compensate=True).table()


@pytest.mark.parametrize("scheme", SCHEMES)
def test_qlinear_matmul_of_two_activations(scheme):
    model, feeds = qlinear_matmul_model(scheme), code_feeds(scheme)
    graph = QGraph.from_onnx(model)
    assert approx_runner.table_layers(graph) == ["scores"]
    expected = _exact_qlinear(feeds["a"], feeds["b"], _params(scheme))
    for kernels in (reference, cpu):
        for signed in (True, False):
            got = approx_runner.run(graph, feeds, ProductTable.exact(signed), kernels)["y"]
            np.testing.assert_array_equal(got, expected)
    if _ort_exact(scheme):
        np.testing.assert_array_equal(_ort(model, feeds)[0], expected)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_qdq_matmul_of_two_activations_fuses_into_qlinear_matmul(scheme):
    model, feeds = qdq_matmul_model(scheme), float_feeds()
    graph = QGraph.from_onnx(model)
    scores = [n for n in graph.nodes if n.name == "scores"]
    assert [n.op for n in scores] == ["QLinearMatMul"]
    assert approx_runner.table_layers(graph) == ["scores"]
    got = {k: approx_runner.run(graph, feeds, EXACT, k)["y"] for k in (reference, cpu)}
    np.testing.assert_array_equal(got[reference], got[cpu])
    p = _params(scheme)
    quantized = {k: approx_runner.quantize(feeds[f], p[s], p[z])
                 for k, f, s, z in (("a", "qf", "as", "az"), ("b", "kf", "bs", "bz"))}
    y = _exact_qlinear(quantized["a"], quantized["b"], p)
    np.testing.assert_array_equal(got[cpu], approx_runner.dequantize(y, p["ys"], p["yz"]))
    if _ort_exact(scheme):
        np.testing.assert_array_equal(_ort(model, feeds)[0], got[cpu])


def test_dynamic_quantize_linear_is_bit_exact_to_onnxruntime():
    node = helper.make_node("DynamicQuantizeLinear", ["x"], ["y", "s", "z"])
    model = _model([node], [("x", TensorProto.FLOAT, None)],
                   [("y", TensorProto.UINT8), ("s", TensorProto.FLOAT), ("z", TensorProto.UINT8)], {})
    graph = QGraph.from_onnx(model)
    rng = np.random.default_rng(3)
    tensors = [rng.normal(0, 1, (4, 33)), rng.normal(0, 50, (2, 3, 7)), rng.uniform(0.1, 9, 100),
               -rng.uniform(0.1, 9, 100), np.full((5, 5), 3.7), np.full(6, -0.25), np.zeros(8),
               rng.uniform(-1e-3, 2e-3, 64), np.array([-1.0, 254.0]), np.array([0.5, -127.5])]
    for x in tensors:
        x = x.astype(np.float32)
        want = _ort(model, {"x": x})
        got = approx_runner.run(graph, {"x": x}, EXACT, cpu)
        for name, value in zip(("y", "s", "z"), want):
            assert got[name].dtype == value.dtype and got[name].shape == value.shape, name
            np.testing.assert_array_equal(got[name], value, err_msg=name)
        scale, zero = dynamic_quantization(x)
        assert scale.dtype == np.float32 and zero.dtype == np.uint8


def test_dynamic_quantization_and_matmul_integer_of_two_activations():
    model, feeds = dynamic_matmul_model(), float_feeds(1)
    graph = QGraph.from_onnx(model)
    assert approx_runner.table_layers(graph) == ["scores"]
    got = {k: approx_runner.run(graph, feeds, EXACT, k) for k in (reference, cpu)}
    (qs, qz), (ks, kz) = dynamic_quantization(feeds["qf"]), dynamic_quantization(feeds["kf"])
    qq = approx_runner.quantize(feeds["qf"], qs, qz)
    kq = approx_runner.quantize(feeds["kf"], ks, kz)
    acc = np.matmul(qq.astype(np.int64) - int(qz), kq.astype(np.int64) - int(kz))
    for result in got.values():
        np.testing.assert_array_equal(result["acc"], acc)
        np.testing.assert_array_equal(result["y"], got[cpu]["y"])
    if _ort_exact("u8u8"):
        want = _ort(model, feeds)
        for name, value in zip(("acc", "y", "qq"), want):
            np.testing.assert_array_equal(got[cpu][name], value, err_msg=name)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_an_approximate_table_changes_the_products_alike_in_every_kernel(scheme):
    model, feeds = qlinear_matmul_model(scheme), code_feeds(scheme, 4)
    graph = QGraph.from_onnx(model)
    exact = approx_runner.run(graph, feeds, EXACT, cpu, capture=["y"])
    for signed in (True, False):
        table = _approximate(signed)
        runs = [approx_runner.run(graph, feeds, table, k, capture=["y"]) for k in (reference, cpu)]
        assert not np.array_equal(runs[0]["y:acc"], exact["y:acc"])
        for name in ("y", "y:acc"):
            np.testing.assert_array_equal(runs[0][name], runs[1][name])
    dynamic, dfeeds = QGraph.from_onnx(dynamic_matmul_model()), float_feeds(2)
    runs = [approx_runner.run(dynamic, dfeeds, _approximate(False), k)["acc"] for k in (reference, cpu)]
    np.testing.assert_array_equal(runs[0], runs[1])
    assert not np.array_equal(runs[0], approx_runner.run(dynamic, dfeeds, EXACT, cpu)["acc"])


@pytest.mark.parametrize("scheme", SCHEMES)
def test_batched_tables_give_each_table_s_run(scheme):
    graph = QGraph.from_onnx(qlinear_matmul_model(scheme))
    feeds = [code_feeds(scheme, 5), code_feeds(scheme, 6)]
    tables = [EXACT, _approximate(True)]
    alone = [approx_runner.run(graph, f, t, cpu)["y"] for f, t in zip(feeds, tables)]
    for kernels in (PerTable(reference), PerTable(cpu)):
        batched = approx_runner.run_each(graph, feeds, tables, kernels)
        for one, want in zip(batched, alone):
            np.testing.assert_array_equal(one["y"], want)


def test_dynamic_quantization_is_refused_in_batched_mode():
    graph = QGraph.from_onnx(dynamic_matmul_model())
    with pytest.raises(UnsupportedOpError, match="DynamicQuantizeLinear"):
        approx_runner.run_each(graph, [float_feeds(1), float_feeds(2)], [EXACT, EXACT],
                               PerTable(cpu))


def test_table_free_part_reads_both_activations():
    graph = QGraph.from_onnx(qdq_matmul_model("u8u8"))
    feeds = float_feeds(7)
    free = approx_runner.table_free(graph, feeds)
    assert approx_runner.run(graph, free, EXACT, cpu)["y"].tobytes() == \
        approx_runner.run(graph, feeds, EXACT, cpu)["y"].tobytes()


def self_attention_model() -> onnx.ModelProto:
    """One input, Q = x and K^T = its transpose: the product of two activations a network of
    one input (what the workload functions take) makes."""
    node = helper.make_node("QLinearMatMul", ["a", "as", "az", "b", "as", "az", "ys", "yz"],
                            ["y"], name="scores")
    transpose = helper.make_node("Transpose", ["a"], ["b"], perm=[0, 1, 3, 2])
    p = _params("u8u8")
    return _model([transpose, node], [("a", TensorProto.UINT8, [BATCH, HEADS, SEQ, DIM])],
                  [("y", TensorProto.UINT8)], {k: p[k] for k in ("as", "az", "ys", "yz")})


def test_workload_counts_and_samples_pairs_of_activations():
    graph = QGraph.from_onnx(self_attention_model())
    a = code_feeds("u8u8", 10)["a"]
    histograms = operand_histograms(graph, a, batch=2)  # two image batches: counts add up
    a3 = a.reshape(-1, SEQ, DIM)
    b3 = a3.transpose(0, 2, 1)
    pairs = a3[:, :, :, None].astype(np.int64) * 256 + b3[:, None, :, :]  # (L, M, K, N)
    np.testing.assert_array_equal(histograms["scores"],
                                  np.bincount(pairs.ravel(), minlength=65536).reshape(256, 256))
    captured = approx_runner.run(graph, {"a": a}, EXACT, cpu, ["a", "y"])
    assert mac_counts(graph, captured) == {"scores": a3.shape[0] * SEQ * SEQ * DIM}
    stream = sample_layer_workloads(graph, a, length=500, signed=False)["scores"]
    seen = histograms["scores"][stream.a, stream.b]
    assert (seen > 0).all()  # every drawn pair is one the layer multiplies


def projected_attention_model() -> onnx.ModelProto:
    """A weight layer (Q = x W) then the product of Q with its own transpose: a table layer
    whose second operand is an activation computed after another table layer."""
    rng = np.random.default_rng(12)
    p = _params("u8u8")
    consts = {**{k: p[k] for k in ("as", "az", "ys", "yz")}, "w": codes(rng, (DIM, DIM), np.uint8),
              "ws": np.float32(0.01), "wz": np.asarray(128, np.uint8)}
    nodes = [helper.make_node("QLinearMatMul", ["a", "as", "az", "w", "ws", "wz", "as", "az"],
                              ["q"], name="project"),
             helper.make_node("Transpose", ["q"], ["k"], perm=[0, 1, 3, 2]),
             helper.make_node("QLinearMatMul", ["q", "as", "az", "k", "as", "az", "ys", "yz"],
                              ["y"], name="scores")]
    return _model(nodes, [("a", TensorProto.UINT8, [BATCH, HEADS, SEQ, DIM])],
                  [("y", TensorProto.UINT8)], consts)


def test_prefix_cache_resumes_before_a_product_of_two_activations():
    graph = QGraph.from_onnx(projected_attention_model())
    assert approx_runner.table_layers(graph) == ["project", "scores"]
    cache = PrefixCache(graph, budget=1 << 20)
    feeds = code_feeds("u8u8", 13)
    first = LayerTables({"scores": EXACT}, _approximate(True))
    second = LayerTables({"scores": _approximate(True)}, _approximate(True))
    for assignment in (first, second):
        got = cache.run([("batch", {"a": feeds["a"]})], [assignment], cpu)[0][0]
        np.testing.assert_array_equal(got["y"], approx_runner.run(graph, {"a": feeds["a"]},
                                                                  assignment, cpu)["y"])
    assert cache.stats()["hits"] == 1  # the second resumed after "project"
