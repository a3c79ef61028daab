"""hls4ml firmware of int8 networks: hls4ml converts and writes the project, g++ compiles its
C simulation, and the C simulation's outputs equal dse's evaluator's bit for bit with the exact
multiplier, an AppAxO one and a table per layer (one compilation, tables swapped at run time).
Skipped with the reason where g++ is missing."""

from __future__ import annotations

import re
import shutil

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from circuits import appaxo, baselines
from circuits.product_table import ProductTable
from evaluators.data.preprocess import Preprocessing
from evaluators.errors import AssignmentError
from evaluators.firmware.hls_export import (
    APPROX_HEADER,
    HlsExportError,
    check_parity,
    hls_network,
    write_project,
)
from evaluators.runtime.layer_tables import LayerTables
from evaluators.runtime.qgraph import QGraph
from tests.evaluators.qmodels import ResNetTiny, build

IMAGES = 200
EXACT = ProductTable.exact(True)
APPROXIMATE = appaxo.table(404750335)  # the DESIGN.md golden vector: mean error -188.25
TRUNCATED = baselines.truncated(6, signed=True).table()


def needs_gpp() -> None:
    if shutil.which("g++") is None:
        pytest.skip("g++ is not on PATH: hls4ml compiles the C simulation with it")


class TinyCnn(nn.Module):
    """LeNet-5's kinds of layers at few pixels (a fast compile): a padded strided convolution,
    ReLU and max pooling, an unpadded convolution, a dense layer on the NCHW flatten."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 5, stride=2, padding=2)
        self.conv2 = nn.Conv2d(4, 8, 3)
        self.fc = nn.Linear(8 * 5 * 5, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        return self.fc(F.relu(self.conv2(x)).flatten(1))


@pytest.fixture(scope="module")
def images(mnist):
    test = mnist[1]
    return Preprocessing().apply(test.images[:IMAGES]), test.labels[:IMAGES]


@pytest.fixture(scope="module")
def cnn(images, tmp_path_factory):
    """The tiny CNN quantized as studies quantize (S8S8 QOperator), and its project compiled
    once with the exact table."""
    needs_gpp()
    folder = tmp_path_factory.mktemp("hls-cnn")
    torch.manual_seed(0)
    path = build(TinyCnn().eval(), images[0], folder, "qoperator")
    network = hls_network(QGraph.from_onnx(path), images[0].shape[1:])
    project = write_project(network, EXACT, folder / "project")
    project.compile()
    return path, project


def _layer_tables(project) -> LayerTables:
    first, second, third = project.network.table_layers
    return LayerTables({first: APPROXIMATE, second: TRUNCATED}, EXACT)


@pytest.mark.parametrize("tables", ["exact", "appaxo", "per layer"])
def test_the_c_simulation_equals_the_evaluator(cnn, images, tables):
    path, project = cnn
    chosen = {"exact": EXACT, "appaxo": APPROXIMATE}.get(tables) or _layer_tables(project)
    parity, expected = check_parity(project, path, chosen, *images)
    assert parity.identical, parity
    assert parity.images == IMAGES and parity.accuracy == parity.evaluator_accuracy
    assert project.tables[0] == (EXACT if tables == "exact" else APPROXIMATE)
    # the tables matter: the approximate multipliers change the outputs
    if tables != "exact":
        assert not np.array_equal(expected, check_parity(project, path, EXACT, *images)[1])


def test_the_project_multiplies_through_one_table_per_layer(cnn):
    _, project = cnn
    firmware = project.folder / "firmware"
    parameters = (firmware / "parameters.h").read_text()
    hooks = re.findall(r"using product = (\S+)<x_T, y_T>;", parameters)
    assert hooks == ["dse::product0", "dse::product1", "dse::product2"]
    approx = (firmware / APPROX_HEADER).read_text()
    assert approx.count("DSE_TABLE product_t table") == 3 and EXACT.sha256[:16] in approx
    assert "typedef ap_int<16> product_t;" in approx  # the exact products' width
    defines = (firmware / "defines.h").read_text()
    assert "typedef ap_int<8> input_t;" in defines and "typedef ap_int<8> result_t;" in defines
    names = project.network.hls_names
    assert list(names) == ["/conv1/Conv_quant", "/conv2/Conv_quant", "/fc/Gemm_quant"]
    assert f"// {names['/fc/Gemm_quant']}" in parameters
    # the ReLU after conv1 is folded into its requantization's clamp
    requant = next(layer for layer in project.network.layers
                   if layer["name"] == f"{names['/conv1/Conv_quant']}_requant")
    assert (requant["min_code"], requant["max_code"]) == (0, 127)


def _requant_probe(folder) -> tuple:
    """Quantize -> QGemm of one input code into six channels -> Dequantize, with multipliers,
    biases and an output zero point that reach the requantization's corners: ties (x / 2,
    (3x + 1) / 4), saturation (127 x), accumulators beyond float32's exact integers
    (2^25 + 1 + x, -2^24 - 3 - 128 x) and a multiplier that is not a power of two."""
    def const(name, values, dtype):
        return numpy_helper.from_array(np.asarray(values, dtype=dtype), name)

    inits = [const("x_scale", 1.0, np.float32), const("x_zp", 0, np.int8),
             const("w", [[1, 3, 127, 1, -128, 77]], np.int8),
             const("w_scale", [0.5, 0.25, 1.0, 2.0 ** -19, 3e-6, 0.1], np.float32),
             const("w_zp", [0] * 6, np.int8),
             const("bias", [0, 1, 0, 2 ** 25 + 1, -(2 ** 24) - 3, 5], np.int32),
             const("y_scale", 1.0, np.float32), const("y_zp", 3, np.int8)]
    nodes = [helper.make_node("QuantizeLinear", ["input", "x_scale", "x_zp"], ["xq"]),
             helper.make_node("QGemm", ["xq", "x_scale", "x_zp", "w", "w_scale", "w_zp", "bias",
                                        "y_scale", "y_zp"], ["yq"], name="probe",
                              domain="com.microsoft"),
             helper.make_node("DequantizeLinear", ["yq", "y_scale", "y_zp"], ["out"])]
    graph = helper.make_graph(nodes, "probe", [helper.make_tensor_value_info(
        "input", TensorProto.FLOAT, [None, 1])], [helper.make_tensor_value_info(
            "out", TensorProto.FLOAT, [None, 6])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid("com.microsoft", 1)])
    path = folder / "probe.onnx"
    onnx.save(model, path)
    return path, np.arange(-128, 128, dtype=np.float32).reshape(-1, 1)


def test_the_requantization_equals_onnxruntimes_on_every_input_code(tmp_path):
    needs_gpp()
    path, codes = _requant_probe(tmp_path)
    project = write_project(hls_network(QGraph.from_onnx(path), (1,)), EXACT, tmp_path / "p")
    project.compile()
    labels = np.zeros(len(codes), np.int64)
    for table in (EXACT, APPROXIMATE):
        parity, expected = check_parity(project, path, table, codes, labels, classes=6)
        assert parity.same_outputs == len(codes), table
    exact = check_parity(project, path, EXACT, codes, labels, classes=6)[1]
    odd = (codes[:, 0] % 2 == 1)
    assert np.array_equal(exact[odd, 0], np.rint(codes[odd, 0] / 2))  # half to even
    assert exact[:, 2].max() == 124 and exact[:, 2].min() == -131  # saturated codes, zp 3


def test_what_hls_export_cannot_take_is_one_line(cnn, images, tmp_path):
    path, project = cnn
    residual = build(ResNetTiny().eval(), images[0][:20], tmp_path, "qoperator")
    with pytest.raises(HlsExportError, match=r"^node '\S+' \(\w+\):.*supported:") as err:
        hls_network(QGraph.from_onnx(residual), images[0].shape[1:])
    assert "\n" not in str(err.value)
    network = project.network
    unsigned = ProductTable.exact(signed=False)
    with pytest.raises(HlsExportError, match="signed 8x8 multiplier"):
        write_project(network, unsigned, tmp_path / "u")
    with pytest.raises(AssignmentError, match="'/conv9' is not a table layer"):
        project.set_tables(LayerTables({"/conv9": APPROXIMATE}, EXACT))
    with pytest.raises(HlsExportError, match="backend 'Quartus': expected one of Vitis, Vivado"):
        write_project(network, EXACT, tmp_path / "q", backend="Quartus")
    fresh = write_project(network, EXACT, tmp_path / "fresh", backend="vivado")
    assert fresh.backend == "Vivado" and (tmp_path / "fresh" / "build_prj.tcl").is_file()
    with pytest.raises(HlsExportError, match="compile the project before"):
        fresh.set_tables(EXACT)


@pytest.mark.slow
def test_lenet5_c_simulation_equals_the_evaluator(lenet, images, tmp_path):
    """The registry's LeNet-5 (padded 5x5 convolutions, pooling, three dense layers): about a
    minute of g++, then every table on the same images."""
    needs_gpp()
    network = hls_network(QGraph.from_onnx(lenet.int8_onnx), images[0].shape[1:])
    project = write_project(network, EXACT, tmp_path / "lenet")
    project.compile()
    layers = network.table_layers
    per_layer = LayerTables({layers[0]: TRUNCATED, layers[3]: APPROXIMATE}, EXACT)
    for tables in (EXACT, APPROXIMATE, per_layer):
        parity, _ = check_parity(project, lenet.int8_onnx, tables, *images)
        assert parity.identical, parity
