"""hls4ml firmware of networks ending in a QLinearSoftmax (issue 16: the jet tagger): the
``DseSoftmax`` layer's C simulation writes the evaluator's output codes bit for bit, rounding
ties included, with the exact multiplier and an AppAxO one: on a probe of the quantized
softmax's corners (equal codes, a saturating class, the widest spread, a softmax in the middle
of the network), checked against onnxruntime too, and on ``jet_dnn`` trained briefly by dse on
the synthetic stand-in of the jets data set. Skipped with the reason where g++ is missing."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from circuits import appaxo
from circuits.product_table import ProductTable
from evaluators.data import DATASETS, load_split
from evaluators.firmware.hls_export import HlsExportError, check_parity, hls_network, write_project
from evaluators.networks import ort_exactness
from evaluators.networks.prepared import TrainingSettings, prepare_network
from evaluators.runtime import qops
from evaluators.runtime.qgraph import QGraph
from tests.evaluators.data.test_jets import FILE, ROWS, jets_arff
from tests.evaluators.firmware.test_hls_export import needs_gpp

EXACT = ProductTable.exact(True)
APPROXIMATE = appaxo.table(404750335)  # the DESIGN.md golden vector: mean error -188.25
TABLES = {"exact": EXACT, "appaxo": APPROXIMATE}
CLASSES = 5
X_SCALE = 0.07  # the first softmax's input scale: not a power of two


def top_ties(outputs: np.ndarray) -> int:
    """Rows whose two largest outputs are equal: a tie for the predicted class."""
    ranked = np.sort(outputs.reshape(len(outputs), -1), axis=1)
    return int((ranked[:, -1] == ranked[:, -2]).sum())


# --- a probe of the quantized softmax ----------------------------------------------------------

def _const(name: str, values, dtype) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(values, dtype=dtype), name)


def _stage(k: int, x: str, x_scale: str, y_scale: float, y_zero_point: int,
           axis: int) -> tuple[list, list]:
    """An identity QGemm (its codes unchanged with the exact table) into a QLinearSoftmax."""
    inits = [_const(f"w{k}", np.eye(CLASSES), np.int8), _const(f"one{k}", 1.0, np.float32),
             _const(f"zero{k}", 0, np.int8), _const(f"p_scale{k}", y_scale, np.float32),
             _const(f"p_zp{k}", y_zero_point, np.int8)]
    nodes = [helper.make_node("QGemm", [x, x_scale, f"zero{k}", f"w{k}", f"one{k}", f"zero{k}",
                                        "", x_scale, f"zero{k}"], [f"logits{k}"],
                              name=f"gemm{k}", domain="com.microsoft", transB=1),
             helper.make_node("QLinearSoftmax", [f"logits{k}", x_scale, f"zero{k}",
                                                 f"p_scale{k}", f"p_zp{k}"], [f"p{k}"],
                              name=f"softmax{k}", domain="com.microsoft", axis=axis, opset=13)]
    return inits, nodes


def softmax_probe(folder: Path, middle: bool = False, axis: int = -1) -> Path:
    """Quantize -> [identity QGemm -> QLinearSoftmax (int8 codes, zero point 0)] (``middle``)
    -> identity QGemm -> QLinearSoftmax (scale 1/256, zero point -128, as onnxruntime quantizes
    a final softmax) -> Dequantize, over rows of five codes."""
    scales = [(1 / 128, 0), (1 / 256, -128)] if middle else [(1 / 256, -128)]
    inits = [_const("x_scale", X_SCALE, np.float32), _const("x_zp", 0, np.int8)]
    nodes = [helper.make_node("QuantizeLinear", ["input", "x_scale", "x_zp"], ["p_in"])]
    x, x_scale = "p_in", "x_scale"
    for k, (y_scale, y_zero_point) in enumerate(scales):
        more_inits, more_nodes = _stage(k, x, x_scale, y_scale, y_zero_point, axis)
        inits, nodes = inits + more_inits, nodes + more_nodes
        x, x_scale = f"p{k}", f"p_scale{k}"
    nodes.append(helper.make_node("DequantizeLinear", [x, x_scale, f"p_zp{len(scales) - 1}"],
                                  ["out"]))
    graph = helper.make_graph(nodes, "softmax_probe", [helper.make_tensor_value_info(
        "input", TensorProto.FLOAT, [None, CLASSES])], [helper.make_tensor_value_info(
            "out", TensorProto.FLOAT, [None, CLASSES])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid("com.microsoft", 1)])
    path = folder / f"softmax_probe{'_middle' if middle else ''}.onnx"
    onnx.save(model, path)
    return path


def rounding_edges(rng: np.random.Generator, rows: int = 2_000_000) -> np.ndarray:
    """Rows of codes (spread under 40) whose scaled probabilities ``e * floor(1 / y_scale) /
    sum`` lie within 4 float32 ulps of a rounding boundary k + 1/2: there a float32 quotient,
    another sum order, a double sum or another rounding rule gives another code. Found among
    random rows with the evaluator's own table (about 350 of 2 million)."""
    spread = rng.integers(0, 40, (rows, CLASSES))
    spread[:, 0] = 0
    e = qops.softmax_exps(X_SCALE, CLASSES)[255 - spread]
    total = np.zeros(rows, np.float32)
    for k in range(CLASSES):  # in input order, as onnxruntime sums
        total += e[:, k]
    y = e.astype(np.float64) * float(qops.softmax_numerator(1 / 256)) / total[:, None]
    edge = np.abs(y - np.floor(y) - 0.5) <= 4 * np.spacing(y.astype(np.float32))
    return 60 - spread[edge.any(axis=1)]


def probe_codes() -> np.ndarray:
    """Rows of input codes through the softmax's corners: all equal, one class saturating the
    output, the widest spread (255 codes), two classes tied at the top, random codes, nearby
    codes whose probabilities round alike, and rows on the edge of rounding."""
    rng = np.random.default_rng(16)
    corners = [[c] * CLASSES for c in (-128, 0, 127)]
    corners += [np.roll([127, -128, -128, -128, -128], k) for k in range(CLASSES)]
    corners += [[50, 50, 0, 0, 0], [-128, 127, 127, -128, 0], [3, 4, 4, 3, 4]]
    return np.concatenate([np.array(corners), rng.integers(-128, 128, (1500, CLASSES)),
                           40 + rng.integers(0, 5, (500, CLASSES)),
                           rounding_edges(rng)]).astype(np.float32)


@pytest.fixture(scope="module", params=["final", "middle"])
def probe(request, tmp_path_factory):
    """A softmax probe, its project compiled once with the exact table, and its input."""
    needs_gpp()
    folder = tmp_path_factory.mktemp("hls-softmax")
    path = softmax_probe(folder, middle=request.param == "middle")
    project = write_project(hls_network(QGraph.from_onnx(path), (CLASSES,)), EXACT,
                            folder / "project")
    project.compile()
    return path, project, probe_codes() * np.float32(X_SCALE)


@pytest.mark.parametrize("table", ["exact", "appaxo"])
def test_the_softmax_codes_equal_the_evaluators_ties_included(probe, table):
    path, project, x = probe
    labels = np.zeros(len(x), np.int64)
    parity, expected = check_parity(project, path, TABLES[table], x, labels, classes=CLASSES)
    assert parity.same_outputs == parity.images == len(x), parity
    assert top_ties(expected) > 0  # a tie broken otherwise would show
    if table == "exact":  # the evaluator is onnxruntime, rounding edges included
        reference = ort_exactness.session(path)
        np.testing.assert_array_equal(expected, reference.run(None, {"input": x})[0])
    if table == "exact" and "middle" not in path.stem:
        codes = np.rint(expected * 256).astype(int) - 128
        assert codes[0].tolist() == [-77] * CLASSES  # rint(256 / 5) - 128, five times
        assert codes[3].tolist() == [127] + [-128] * 4  # saturated: rint(256) - 128 > 127


def test_the_firmware_holds_the_evaluators_exp_table(probe):
    path, project, _ = probe
    parameters = (project.folder / "firmware" / "parameters.h").read_text()
    tables = re.findall(r"exps\[256\] = \{([^}]*)\}", parameters)
    assert len(tables) == (2 if "middle" in path.stem else 1)
    written = np.array([float(v.rstrip("f")) for v in tables[0].split(",")], np.float32)
    np.testing.assert_array_equal(written, qops.softmax_exps(X_SCALE, CLASSES))
    assert "dse::softmax<" in (project.folder / "firmware" / "dse_network.cpp").read_text()
    # the float32 operation order holds only without fast-math reassociation
    flags = (project.folder / "build_lib.sh").read_text()
    assert "-ffast-math" not in flags and "-Ofast" not in flags


def test_a_softmax_across_rows_is_one_line(tmp_path):
    with pytest.raises(HlsExportError, match=r"^node 'softmax0' \(QLinearSoftmax\): axis 0 .*"
                                             "over each flat row") as err:
        hls_network(QGraph.from_onnx(softmax_probe(tmp_path, axis=0)), (CLASSES,))
    assert "\n" not in str(err.value)


# --- the jet tagger --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def jet_dnn(tmp_path_factory):
    """``jet_dnn`` trained one epoch by dse on the stand-in jets file and quantized (S8S8
    QOperator: QGemm layers, a final QLinearSoftmax), its project compiled once."""
    needs_gpp()
    folder = tmp_path_factory.mktemp("hls-jets")
    (folder / FILE).write_text(jets_arff()[0])
    with pytest.MonkeyPatch.context() as patch:  # the registry expects the stand-in's rows
        patch.setitem(DATASETS, "jets", replace(DATASETS["jets"], rows=ROWS))
        train, test = (load_split("jets", split, folder) for split in ("train", "test"))
    settings = TrainingSettings(arch="jet_dnn", epochs=1, batch_size=64, learning_rate=0.003,
                                augment=False, seed=0, calibration_size=256)
    network = prepare_network(settings, train, test, cache=folder / "networks",
                              log=lambda _: None, progress=False)
    graph = QGraph.from_onnx(network.int8_onnx)
    assert [n.op for n in graph.nodes if n.op.startswith("Q")][-2:] == ["QGemm",
                                                                         "QLinearSoftmax"]
    project = write_project(hls_network(graph, (16,)), EXACT, folder / "project")
    project.compile()
    return network.int8_onnx, project, test


@pytest.mark.parametrize("table", ["exact", "appaxo"])
def test_jet_dnn_c_simulation_equals_the_evaluator(jet_dnn, table):
    path, project, test = jet_dnn
    parity, expected = check_parity(project, path, TABLES[table], test.images, test.labels,
                                    classes=CLASSES)
    assert parity.identical and parity.images == len(test.labels) == 300, parity
    assert parity.accuracy == parity.evaluator_accuracy > 0.5  # chance is 0.2
    assert top_ties(expected) > 0  # the quantized softmax ties classes: kept, not re-ranked
    layers = [layer["class_name"] for layer in project.network.layers]
    assert layers[-2:] == ["DseRequant", "DseSoftmax"] and layers.count("Dense") == 4
