"""A study's designs exported as approximate ONNX models (``dse export --format onnx``) run in
onnxruntime and in dse's runner exactly as the study's evaluator scored them (an AppAxO study
with a retrained design, a layer-wise study), with an index that reads back; per-node
multipliers on ``dse onnx approx``; bad requests are one line, exit code 2."""

from __future__ import annotations

import shutil

import numpy as np
import onnx
import pandas as pd
import pytest
from onnx import helper

from circuits import appaxo, baselines
from circuits.product_table import ProductTable
from dse.assembly import study_data
from dse.cli import main
from dse.designs import design_tables
from dse.export_onnx import FOLDER, INDEX, NODE_COLUMN, export_onnx
from dse.loop import run_study
from dse.retrain import retrain_designs, retrain_option
from dse.study import RETRAINED, load_study
from dse.study_file import parse_settings
from evaluators.networks.quantization import quantize_int8
from evaluators.onnx.approximate import DSE_DOMAIN, EMGAXO_DOMAIN, session
from evaluators.runtime.approx_network import ApproxNetworkEvaluator
from evaluators.runtime.layer_tables import LayerTables
from tests.conftest import mini_study
from tests.dse.test_layerwise_study import layerwise
from tests.dse.test_retrain_study import SIZES, error_line

IMAGES = 200  # the test images each file is compared on
EXACT = ProductTable.exact(True)
TRUNCATED = baselines.truncated(6, signed=True).table()
LAYERS = ["/conv1/Conv_quant", "/conv2/Conv_quant", "/fc1/Gemm_quant", "/fc2/Gemm_quant",
          "/fc3/Gemm_quant"]


def quiet(_message: str) -> None:
    pass


@pytest.fixture(scope="module")
def studies(mnist_dir, session_cache, tmp_path_factory) -> dict:
    """Two finished studies, each of a network and library other tests cache too: AppAxO (the
    retraining tests' LeNet-5, 4 trials, its most accurate front design retrained one epoch)
    and layer-wise (the layer-wise tests' study, 4 trials)."""
    root = tmp_path_factory.mktemp("export_onnx")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DSE_CACHE_DIR", str(session_cache))
        data = mini_study(mnist_dir, name="ox", **SIZES, budget={"trials": 4},
                          output=str(root / "ox"))
        study = run_study(parse_settings(data), log=quiet, progress=False)
        front = study.pareto()
        design = front[front["role"] == "search"].sort_values("accuracy").iloc[-1]
        retrain_designs(root / "ox", [str(design["trial"])], option=retrain_option(epochs=1),
                        log=quiet, progress=False)
        data = layerwise(mnist_dir, budget={"trials": 4}, output=str(root / "lw"))
        run_study(parse_settings(data), log=quiet, progress=False)
    return {"appaxo": root / "ox", "layerwise": root / "lw"}


def _custom_nodes(path) -> dict[str, onnx.NodeProto]:
    return {n.name: n for n in onnx.load(path).graph.node if n.domain == DSE_DOMAIN}


def _assert_scored_alike(study, row: pd.Series, file, tables) -> None:
    """onnxruntime and dse's runner reading ``file`` give the logits of the study's evaluator
    for the design on the first test images, and the runner its stored accuracy on all."""
    data = study_data(study, log=quiet)
    x, y = data.test_inputs[:IMAGES], data.test_labels[:IMAGES]
    source = study.folder / (row["model"] if row["role"] == RETRAINED else "network/int8.onnx")
    expected = ApproxNetworkEvaluator(source, x, y, study.settings.evaluation.kernel).logits(tables)
    sess = session(file)
    np.testing.assert_array_equal(sess.run(None, {sess.get_inputs()[0].name: x})[0], expected)
    np.testing.assert_array_equal(ApproxNetworkEvaluator(file, x, y).logits(EXACT), expected)
    runner = ApproxNetworkEvaluator(file, data.test_inputs, data.test_labels)
    assert runner.evaluate(EXACT)["accuracy"] == row["accuracy"]


def test_an_appaxo_front_and_its_retrained_design_run_as_scored(studies, capsys):
    folder = studies["appaxo"]
    assert main(["export", str(folder), "--format", "onnx", "-q"]) == 0
    study = load_study(folder)
    trials = study.trials.set_index("trial", drop=False)
    front = study.pareto()
    retrained = trials[trials["role"] == RETRAINED]
    out = folder / FOLDER
    index = pd.read_csv(out / INDEX)
    assert capsys.readouterr().out.splitlines() == \
        [f"wrote {out / f}" for f in index["file"]] + [f"wrote {out / INDEX}"]
    # the front's designs, each followed by its retrained network
    assert set(index["trial"]) == set(front["trial"]) | set(retrained["trial"])
    assert len(retrained) == 1 and (index["role"] == RETRAINED).sum() == 1
    position = index.set_index("trial").index.get_loc
    assert position(retrained["trial"].iloc[0]) == position(retrained["design_trial"].iloc[0]) + 1
    assert list(index.columns) == ["design", "trial", "role", "file", "model",
                                   *(NODE_COLUMN + layer for layer in LAYERS), *study.objectives]
    for _, entry in index.iterrows():
        row = trials.loc[entry["trial"]]
        config = int(row["config"])
        assert entry["design"] == row["design"] and entry["role"] == row["role"]
        assert [entry[NODE_COLUMN + layer] for layer in LAYERS] == [f"appaxo:{config}"] * 5
        assert [entry[k] for k in study.objectives] == pytest.approx(
            [row[k] for k in study.objectives], rel=1e-12)
        nodes = _custom_nodes(out / entry["file"])
        assert sorted(nodes) == sorted(LAYERS)
        assert {helper.get_attribute_value(n.attribute[-1]) for n in nodes.values()} == {config}
        if entry["role"] == RETRAINED:  # exported from the retrained network's weights
            assert entry["model"] == row["model"] and entry["file"] == \
                row["model"].split("/")[1] + ".onnx"
            _assert_scored_alike(study, row, out / entry["file"], appaxo.table(config))
    # a front design (its retrained one checked above)
    first = trials.loc[index.loc[index["role"] != RETRAINED, "trial"].iloc[0]]
    _assert_scored_alike(study, first, out / f"{first['design']}.onnx", appaxo.table(
        int(first["config"])))


def test_a_layerwise_design_carries_a_multiplier_per_node(studies, tmp_path):
    study = load_study(studies["layerwise"])
    searched = study.trials[study.trials["role"] == "search"]
    library = pd.read_csv(study.folder / "library" / "library.csv").set_index("name")
    appaxo_members = set(library.index[library["appaxo_config"].notna()])
    # a design mixing AppAxO members (carried as configurations) and tables
    mixed = searched[searched["assignment"].map(
        lambda a: bool(set(a.values()) & appaxo_members) and bool(set(a.values()) - appaxo_members))]
    row = mixed.iloc[0]
    table = export_onnx(study, tmp_path, [str(row["trial"]), row["design"]], progress=False,
                        log=quiet)
    assert len(table) == 1  # one design, named twice
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / INDEX), table)
    nodes = _custom_nodes(tmp_path / f"{row['design']}.onnx")
    for layer, member in row["assignment"].items():
        text = table[NODE_COLUMN + layer].iloc[0]
        if member in appaxo_members:
            config = int(library.loc[member, "appaxo_config"])
            assert text == f"appaxo:{config}"
            assert helper.get_attribute_value(nodes[layer].attribute[-1]) == config
        else:
            sha = library.loc[member, "table_sha256"]
            assert text == f"{member} (table {sha[:16]})"
            assert nodes[layer].input[-1] == f"dse_product_table_{sha[:16]}"
    tables = design_tables(study, row)
    assert isinstance(tables, LayerTables)
    _assert_scored_alike(study, row, tmp_path / f"{row['design']}.onnx", tables)


def test_a_qdq_study_and_bad_requests_are_one_line(studies, mnist_dir, session_cache, tmp_path,
                                                   capsys, monkeypatch):
    folder = studies["appaxo"]
    cases = [(["--design", "nope"], "--design 'nope': no completed trial of study ox"),
             (["--format", "csv", "--design", "1"], "--design chooses the designs of --format onnx")]
    for args, message in cases:
        assert main(["export", str(folder), "--format", "onnx", *args]) == 2
        assert message in error_line(capsys.readouterr().err)
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    (copy / "network" / "int8.onnx").unlink()
    assert main(["export", str(copy), "--format", "onnx", "-q"]) == 2
    assert "the int8 network to export is missing; `python -m dse resume" in \
        error_line(capsys.readouterr().err)
    # a study of a user's QDQ model: its multiplying nodes are float ops, named
    network = folder / "network"
    qdq = tmp_path / "qdq.onnx"
    data = study_data(load_study(folder), log=quiet)
    quantize_int8(network / "float.onnx", qdq, data.train_inputs[:100], quant_format="qdq")
    monkeypatch.setenv("DSE_CACHE_DIR", str(session_cache))
    settings = mini_study(mnist_dir, name="qdq", model={"onnx": str(qdq)}, budget={"trials": 1},
                          dataset={"test_size": 100}, output=str(tmp_path / "qdq"))
    run_study(parse_settings(settings), log=quiet, progress=False)
    assert main(["export", str(tmp_path / "qdq"), "--format", "onnx"]) == 2
    line = error_line(capsys.readouterr().err)
    assert "node '/conv1/Conv' (Conv) cannot be rewritten" in line and "QOperator" in line


def test_per_node_multipliers_on_the_command_line(studies, tmp_path, capsys):
    int8 = studies["appaxo"] / "network" / "int8.onnx"
    np.save(tmp_path / "trunc.npy", TRUNCATED.values)
    out = tmp_path / "approx.onnx"
    a, b = 29997662207, 404750335
    assert main(["onnx", "approx", str(int8), "--multiplier", f"appaxo:{a}", "--multiplier",
                 f"/conv1/Conv_quant=appaxo:{b}", "--multiplier",
                 f"/fc2/Gemm_quant={tmp_path / 'trunc.npy'}", "-o", str(out)]) == 0
    assert "2 ApproxQLinearConv, 3 ApproxQGemm" in capsys.readouterr().out
    nodes = _custom_nodes(out)
    configs = {name: helper.get_attribute_value(n.attribute[-1]) for name, n in nodes.items()
               if n.attribute[-1].name == "INIT_Value"}
    assert configs == {"/conv1/Conv_quant": b, "/conv2/Conv_quant": a, "/fc1/Gemm_quant": a,
                       "/fc3/Gemm_quant": a}
    assert nodes["/fc2/Gemm_quant"].input[-1].startswith("dse_product_table_")
    data = study_data(load_study(studies["appaxo"]), log=quiet)
    x, y = data.test_inputs[:IMAGES], data.test_labels[:IMAGES]
    assignment = LayerTables({"/conv1/Conv_quant": appaxo.table(b), "/fc2/Gemm_quant": TRUNCATED},
                             appaxo.table(a))
    np.testing.assert_array_equal(ApproxNetworkEvaluator(out, x, y).logits(EXACT),
                                  ApproxNetworkEvaluator(int8, x, y).logits(assignment))
    # with --nodes, the plain SPEC serves the chosen nodes not named; in EMGAxO mode, the QGemms
    assert main(["onnx", "approx", str(int8), "--nodes", "/conv2/Conv_quant", "--multiplier",
                 f"appaxo:{a}", "--multiplier", f"/fc3/Gemm_quant=appaxo:{b}", "-o", str(out),
                 "--force"]) == 0  # out: an earlier `onnx approx` output
    assert {k: helper.get_attribute_value(n.attribute[-1]) for k, n in _custom_nodes(out).items()} \
        == {"/conv2/Conv_quant": a, "/fc3/Gemm_quant": b}
    assert main(["onnx", "approx", str(int8), "--emgaxo", "--multiplier", f"appaxo:{a}",
                 "--multiplier", f"/fc1/Gemm_quant=appaxo:{b}", "-o", str(out), "--force"]) == 0
    gemms = {n.name: helper.get_attribute_value(n.attribute[-1])
             for n in onnx.load(out).graph.node if n.domain == EMGAXO_DOMAIN}
    assert gemms == {"/fc1/Gemm_quant": b, "/fc2/Gemm_quant": a, "/fc3/Gemm_quant": a}
    capsys.readouterr()
    cases = [
        ([f"nope=appaxo:{a}"], "node 'nope' is not in the model"),
        (["--nodes", "/conv2/Conv_quant", "--multiplier", f"/fc1/Gemm_quant=appaxo:{a}"],
         "node '/conv2/Conv_quant' is chosen but given no multiplier"),
        ([f"appaxo:{a}", "--multiplier", f"appaxo:{b}"], "one plain SPEC serves every node"),
        ([f"/fc1/Gemm_quant=appaxo:{a}", "--multiplier", f"/fc1/Gemm_quant=appaxo:{b}"],
         "node '/fc1/Gemm_quant' is given two multipliers"),
        (["=appaxo:1"], "expected NODE=SPEC"),
    ]
    for args, message in cases:
        args = args if args[0] == "--nodes" else ["--multiplier", *args]
        assert main(["onnx", "approx", str(int8), *args, "-o", str(tmp_path / "new.onnx")]) == 2
        assert message in error_line(capsys.readouterr().err)
        assert not (tmp_path / "new.onnx").exists()
