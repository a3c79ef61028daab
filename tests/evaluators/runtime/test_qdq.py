"""QDQ models are read into the QOperator form as onnxruntime fuses them, and computed as
onnxruntime computes them: every tensor equals what onnxruntime computes with int8 fusions
allowed (``session.qdqisint8allowed``, the default on ARM; these fusions also survive exposing
intermediate tensors). onnxruntime's default x86 session equals it wherever it fuses every group;
where it does not (an int8 tensor with several readers, in residual networks) it computes those
Conv/Add groups in float, and only rounding ties can differ, never a prediction here."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from accel import cpu, reference
from circuits import appaxo
from circuits.product_table import ProductTable
from evaluators.data.preprocess import Preprocessing
from evaluators.networks.zoo import export_onnx
from evaluators.runtime import approx_runner
from evaluators.runtime.ops import TABLE_OPS
from evaluators.runtime.qgraph import QGraph, UnsupportedOpError
from evaluators.runtime.transforms import optimize
from tests.evaluators.qmodels import (
    Branches,
    ResNetTiny,
    Separable,
    TokenMixer,
    VggTiny,
    assert_every_tensor_equal,
    assert_kernels_agree,
    build,
    ort_ops,
    session,
)

EXACT = ProductTable.exact(True)
FLOAT_OPS = {"Conv", "Gemm", "MatMul", "Add", "Mul", "AveragePool", "GlobalAveragePool",
             "Softmax", "Concat"}


@pytest.fixture(scope="module")
def digits(mnist):
    _, test = mnist
    return Preprocessing().apply(test.images[:200])


def cifar_like(count: int) -> np.ndarray:
    images = np.random.default_rng(0).integers(0, 256, (count, 32, 32, 3), dtype=np.uint8)
    return Preprocessing(layout="NCHW").apply(images)


def assert_like_onnxruntime(path, x, folder) -> QGraph:
    """The fused graph has onnxruntime's ops and equals it on every tensor (int8 fusions
    allowed); against the default session: bit for bit where that session fuses every group,
    the same predictions where it computes some in float. Returns the graph."""
    graph = QGraph.from_onnx(path)
    ops = sorted(n.op for n in graph.nodes)
    assert not FLOAT_OPS & set(ops)
    assert ops == ort_ops(path, folder)  # the same fusions as onnxruntime's
    got = assert_every_tensor_equal(path, x, int8_allowed=True)[graph.outputs[0]]
    expected = session(path).run(None, {"input": x})[0]  # default session options
    if FLOAT_OPS & set(ort_ops(path, folder, int8_allowed=False)):
        np.testing.assert_array_equal(got.argmax(axis=1), expected.argmax(axis=1))
    else:
        np.testing.assert_array_equal(got, expected)
    return graph


@pytest.mark.parametrize("network", [ResNetTiny, VggTiny, Branches, Separable, TokenMixer])
def test_qdq_networks_fuse_as_onnxruntime_and_equal_it(network, digits, tmp_path):
    x = cifar_like(120) if network is Separable else digits
    path = build(network(), x[:100], tmp_path, "qdq")
    graph = assert_like_onnxruntime(path, x, tmp_path)
    assert_every_tensor_equal(path, x[:6], int8_allowed=True, kernels=reference)
    np.testing.assert_array_equal(
        approx_runner.run(optimize(graph), {"input": x}, EXACT, cpu)["out"],
        approx_runner.run(graph, {"input": x}, EXACT, cpu)["out"])
    if network is TokenMixer:
        assert {"QLinearMatMul", "QLinearAdd"} <= {n.op for n in graph.nodes}


@pytest.mark.parametrize("arch", ["resnet8", "resnet20"])
def test_registry_resnets_in_qdq_form_equal_onnxruntime(arch, tmp_path):
    """Deep residual networks: onnxruntime's default x86 session leaves some of their groups
    in float, which the fused integer graph does not."""
    from evaluators.networks import zoo
    from evaluators.networks.quantization import quantize_int8

    x = cifar_like(120)
    zoo.export_float_onnx(zoo.build_model(arch, (3, 32, 32), 10, seed=0), (3, 32, 32),
                          tmp_path / "float.onnx")
    quantize_int8(tmp_path / "float.onnx", tmp_path / "qdq.onnx", x[:40], quant_format="qdq")
    graph = assert_like_onnxruntime(tmp_path / "qdq.onnx", x, tmp_path)
    assert [n.op for n in graph.nodes].count("QLinearAdd") == {"resnet8": 3, "resnet20": 9}[arch]


def test_qdq_and_qoperator_files_of_one_network_hold_the_same_integer_layers(digits, tmp_path):
    """Both formats quantized from one float model and calibration: the fused QDQ layers carry
    the QOperator layers' weights, scales and biases, and the kernels agree on them through an
    approximate table."""
    torch.manual_seed(0)
    qop = QGraph.from_onnx(build(ResNetTiny(), digits[:100], tmp_path, "qoperator"))
    torch.manual_seed(0)
    qdq_path = build(ResNetTiny(), digits[:100], tmp_path, "qdq")
    qdq = QGraph.from_onnx(qdq_path)
    pairs = list(zip(*([n for n in g.nodes if n.op in TABLE_OPS] for g in (qop, qdq))))
    assert len(pairs) == 7 and all(a.op == b.op for a, b in pairs)
    for a, b in pairs:
        for index in (1, 3, 4, 6, 8 if a.op == "QLinearConv" else 6):
            np.testing.assert_array_equal(qop.const(a.inputs[index]), qdq.const(b.inputs[index]))
    table = ProductTable(appaxo.product_table(0b111100011000111111111111111011111111), True)
    assert_kernels_agree(qdq_path, digits[:8], table)


def test_asymmetric_uint8_qdq_network_runs_on_an_unsigned_table(digits, tmp_path):
    """uint8 activations and weights with zero points: the zero-point cross terms around the
    table lookups give onnxruntime's outputs."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    torch.manual_seed(0)
    export_onnx(VggTiny().eval(), torch.from_numpy(digits[:1]), tmp_path / "f.onnx", output="out")

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([{"input": digits[:100]}])

        def get_next(self):
            return next(self.batches, None)

    quantize_static(str(tmp_path / "f.onnx"), str(tmp_path / "u8.onnx"), Reader(),
                    quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QUInt8)
    graph = QGraph.from_onnx(tmp_path / "u8.onnx")
    assert "QLinearConv" in {n.op for n in graph.nodes}
    x = digits[:60]
    expected = session(tmp_path / "u8.onnx").run(None, {"input": x})[0]
    got = approx_runner.run(graph, {"input": x}, ProductTable.exact(False), cpu)["out"]
    np.testing.assert_array_equal(got, expected)
    # a signed multiplier takes the uint8 codes moved by 128 (accel.codes.recentre): still exact
    np.testing.assert_array_equal(approx_runner.run(graph, {"input": x}, EXACT, cpu)["out"], expected)


def qdq_conv(bias: str, relu: bool = False, y_zero_point: int = 0) -> onnx.ModelProto:
    """x -> Q -> DQ -> Conv(DQ(w), bias) [-> Relu] -> Q -> DQ, by hand; ``bias`` is "int32"
    (quantized, fusable) or "float" (onnxruntime leaves the Conv in float)."""
    w = np.arange(-13, 14, dtype=np.int8).reshape(3, 1, 3, 3)
    inits = [numpy_helper.from_array(np.array(0.02, np.float32), "xs"),
             numpy_helper.from_array(np.array(0, np.int8), "xz"),
             numpy_helper.from_array(w, "w"),
             numpy_helper.from_array(np.array([0.01, 0.02, 0.03], np.float32), "ws"),
             numpy_helper.from_array(np.zeros(3, np.int8), "wz"),
             numpy_helper.from_array(np.array(0.05, np.float32), "ys"),
             numpy_helper.from_array(np.array(y_zero_point, np.int8), "yz")]
    nodes = [helper.make_node("QuantizeLinear", ["input", "xs", "xz"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xf"]),
             helper.make_node("DequantizeLinear", ["w", "ws", "wz"], ["wf"], axis=0)]
    if bias == "int32":
        inits += [numpy_helper.from_array(np.array([50, -70, 9], np.int32), "b"),
                  numpy_helper.from_array(np.array([2e-4, 4e-4, 6e-4], np.float32), "bs"),
                  numpy_helper.from_array(np.zeros(3, np.int32), "bz")]
        nodes.append(helper.make_node("DequantizeLinear", ["b", "bs", "bz"], ["bf"], axis=0))
    else:
        inits.append(numpy_helper.from_array(np.array([0.01, -0.02, 0.5], np.float32), "bf"))
    nodes.append(helper.make_node("Conv", ["xf", "wf", "bf"], ["y"], name="conv", pads=[1, 1, 1, 1]))
    if relu:
        nodes.append(helper.make_node("Relu", ["y"], ["y_relu"], name="relu"))
    nodes += [helper.make_node("QuantizeLinear", ["y_relu" if relu else "y", "ys", "yz"], ["yq"]),
              helper.make_node("DequantizeLinear", ["yq", "ys", "yz"], ["out"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                                         [None, 1, 8, 8])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("relu", [False, True])
def test_hand_written_qdq_convolution_is_fused_with_its_int32_bias(relu):
    """With a Relu between Conv and Q whose range starts at 0 (zero point -128), onnxruntime
    drops the Relu and fuses the rest; so does the reader."""
    model = qdq_conv("int32", relu=relu, y_zero_point=-128 if relu else 0)
    graph = QGraph.from_onnx(model)
    assert [n.op for n in graph.nodes] == ["QuantizeLinear", "QLinearConv", "DequantizeLinear"]
    x = np.random.default_rng(0).standard_normal((16, 1, 8, 8)).astype(np.float32)
    expected = session(model).run(None, {"input": x})[0]
    np.testing.assert_array_equal(approx_runner.run(graph, {"input": x}, EXACT, cpu)["out"],
                                  expected)
    assert (expected > 0).any() and (expected < 0).any() != relu


@pytest.mark.parametrize("case", ["float bias", "relu kept"])
def test_a_convolution_left_in_float_is_refused_in_one_line(case):
    """A float bias, or a Relu that Q's range does not make redundant, keeps onnxruntime from
    fusing the Conv: no product table can stand in for its float multiplications."""
    model = qdq_conv("float") if case == "float bias" else qdq_conv("int32", relu=True)
    graph = QGraph.from_onnx(model)
    assert "Conv" in [n.op for n in graph.nodes]
    with pytest.raises(UnsupportedOpError) as err:
        approx_runner.check_supported(graph)
    message = str(err.value)
    assert "'Conv'" in message and "'conv'" in message and "\n" not in message
    assert "multiplies float tensors" in message
