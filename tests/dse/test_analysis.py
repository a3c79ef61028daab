"""``dse analyze`` on a small real study (LeNet-5 on MNIST, AppAxO space): the features of each
network against onnxruntime and the evaluator, every figure written, the JSON's figures
against the study, and the interactive page rendered by headless chromium with the network
blocked."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import onnx
import pandas as pd
import pytest

from circuits import appaxo
from circuits.product_table import ProductTable
from dse.analysis import AnalysisError, analyze, layer_views
from dse.assembly import study_data
from dse.cli import main
from dse.designs import DesignError, design_tables
from dse.loop import run_study
from dse.study_file import StudyFileError, parse_settings
from evaluators.networks import ort_exactness
from evaluators.networks.zoo import layer_macs
from evaluators.recovery.analysis import classifier, error_map, penultimate_features
from evaluators.runtime.approx_network import ApproxNetworkEvaluator
from evaluators.runtime.approx_runner import table_layers
from evaluators.runtime.layer_tables import LayerTables
from evaluators.runtime.qgraph import QGraph
from tests.conftest import mini_study

TEST_SIZE = 300  # the study's test images: analyze embeds all of them
CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser") if shutil.which(n)), None)


@pytest.fixture(scope="module")
def study(mnist_dir, session_cache, tmp_path_factory):
    """A small real AppAxO study of the shared mini LeNet-5 (FPGA cost model: fast)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DSE_CACHE_DIR", str(session_cache))
        data = mini_study(mnist_dir, name="an", dataset={"test_size": TEST_SIZE},
                          budget={"trials": 5}, output=str(tmp_path_factory.mktemp("an") / "an"),
                          objectives=[{"metric": "accuracy"}, {"metric": "fpga_luts"}])
        yield run_study(parse_settings(data), log=lambda m: None, progress=False)


@pytest.fixture(scope="module")
def worst(study) -> pd.Series:
    """The searched design that loses the most accuracy."""
    trials = study.trials
    return trials[trials["role"] == "search"].sort_values("accuracy").iloc[0]


@pytest.fixture(scope="module")
def analysed(study, worst, tmp_path_factory) -> dict[str, Path]:
    return analyze(study.folder, worst["design"], tmp_path_factory.mktemp("out"),
                   images=TEST_SIZE, perplexity=20, progress=False)


def test_int8_features_are_onnxruntimes_and_predictions_the_evaluators(study, worst):
    data = study_data(study, log=lambda m: None)
    inputs = data.test_inputs[:64]
    table = design_tables(study, worst)
    views = penultimate_features(data.int8_onnx, inputs, table, data.float_onnx)
    assert list(views) == ["float", "int8", "approximate"]
    # int8 with the exact table: onnxruntime's own codes entering the classifier, dequantized
    node = classifier(QGraph.from_onnx(data.int8_onnx))
    model = onnx.load(str(data.int8_onnx))
    model.graph.output.append(onnx.helper.make_empty_tensor_value_info(node.inputs[0]))
    codes, logits = ort_exactness.session(model).run(
        [node.inputs[0], "logits"], {"input": inputs})
    graph = QGraph.from_onnx(data.int8_onnx)
    scale, zero_point = graph.const(node.inputs[1]), graph.const(node.inputs[2])
    expected = (codes.astype(np.float32) - zero_point.astype(np.float32)) * scale
    np.testing.assert_array_equal(views["int8"].features, expected.reshape(len(codes), -1))
    np.testing.assert_array_equal(views["int8"].predictions, np.argmax(logits, axis=1))
    # the approximate network predicts as the study's evaluator scores it
    evaluator = ApproxNetworkEvaluator(data.int8_onnx, inputs, data.test_labels[:64])
    np.testing.assert_array_equal(views["approximate"].predictions,
                                  np.argmax(evaluator.logits(table), axis=1))
    assert not np.array_equal(views["approximate"].features, views["int8"].features)
    # the float model's classifier input is a float tensor of the same width
    assert views["float"].features.shape == views["int8"].features.shape
    assert views["float"].features.dtype == np.float32
    # without a float model: the int8 views only
    assert list(penultimate_features(data.int8_onnx, inputs, table)) == ["int8", "approximate"]


def _png(path: Path) -> None:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path


def test_analyze_writes_every_figure_and_the_study_figures(study, worst, analysed):
    layers = list(layer_macs("lenet5", (1, 28, 28), 10).values())
    assert len([k for k in analysed if k.startswith("operands ")]) == len(layers)
    for key, path in analysed.items():
        assert path.is_file() and path.stat().st_size > 1000, key
        if path.suffix == ".png":
            _png(path)
    summary = json.loads(analysed["json"].read_text())
    assert summary["design"] == worst["design"] and summary["images"] == TEST_SIZE
    # on all of the study's test images the accuracies are the study's own
    trials = study.trials
    exact = trials[trials["role"] == "baseline"].iloc[0]
    networks = summary["networks"]
    assert networks["approximate"]["accuracy"] == summary["study_accuracy"] == worst["accuracy"]
    assert networks["int8"]["accuracy"] == exact["accuracy"]
    assert set(networks) == {"float", "int8", "approximate"}
    # every multiplication of every layer counted: the zoo's MACs per image x images
    got = [v["macs"] for v in summary["layers"].values()]
    assert got == [m * TEST_SIZE for m in layers]
    for layer in summary["layers"].values():
        assert layer["mean_abs_error"] > 0 and 0 < layer["error_share_top_1pct_cells"] <= 1


def _dom(page: Path, profile: Path, fragment: str = "") -> str:
    """The page's DOM after its scripts ran, in headless chromium with every host unresolvable."""
    return subprocess.run(
        [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", f"--user-data-dir={profile}",
         "--host-resolver-rules=MAP * ~NOTFOUND", "--dump-dom", page.as_uri() + fragment],
        capture_output=True, text=True, timeout=120, check=True).stdout


def _info(dom: str) -> str:
    return re.search(r'<pre id="info">(.*?)</pre>', dom, re.S).group(1)


def test_the_page_renders_offline_in_headless_chromium(analysed, tmp_path):
    page = analysed["page"].read_text()
    # nothing to fetch: no URL in a src/href/url(), no external script, style or font
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:[a-z]+:)?//|url\(\s*["']?(?:[a-z]+:)?//""",
                         page, re.I)
    assert "<link" not in page and "@import" not in page
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    summary = json.loads(analysed["json"].read_text())
    dom = _dom(analysed["page"], tmp_path / "profile", "#image=5")
    body = re.search(r"<body[^>]*>", dom).group(0)
    assert 'data-rendered="ok"' in body and "data-error" not in body, body
    # the view was built: a point per image per network, a ring per image only the
    # approximate network misclassifies, in each panel, a cross per misclassification
    rings = summary["misclassified_only_by_approximate"]
    assert dom.count("<circle") == 3 * (TEST_SIZE + rings)
    assert dom.count("<path") == sum(v["misclassified"] for v in summary["networks"].values())
    # the image the address names is shown: its index, classes, thumbnail
    assert _info(dom).startswith("image 5 (test set index)") and "approximate: class" in _info(dom)
    assert re.search(r'id="thumb"[^>]*src="data:image/png;base64,', dom)
    # hovering a point shows its image and highlights it in every panel
    hover = tmp_path / "hover.html"
    hover.write_text(page.replace("</body>", "<script>document.querySelector('circle[data-i=\"7\"]')"
                                  ".dispatchEvent(new MouseEvent('mouseover', {bubbles: true}));"
                                  "</script></body>"))
    dom = _dom(hover, tmp_path / "profile")
    assert _info(dom).startswith("image 7 (test set index)\ntrue class: ")
    assert len(re.findall(r'<circle[^>]*data-i="7"[^>]*class="on"', dom)) == 3


def test_layerwise_designs_show_each_layers_own_error(study):
    names = table_layers(QGraph.from_onnx(study.folder / "network" / "int8.onnx"))
    approximate = appaxo.table(404750335)
    tables = LayerTables({names[1]: approximate}, ProductTable.exact(True))
    row = pd.Series({"trial": 7, "design": "lw_x", "assignment": {names[1]: "appaxo_x"}})
    histograms = {name: np.ones((256, 256), dtype=np.int64) for name in names}
    views = layer_views(histograms, tables, row)
    assert not views[names[0]].error.any() and views[names[0]].stats.top_share is None
    np.testing.assert_array_equal(views[names[1]].error, error_map(approximate))
    assert views[names[1]].summary()["multiplier"] == "appaxo_x"
    assert views[names[1]].stats.mean_abs_error == 188.25


def test_bad_requests_are_one_line_errors(study, tmp_path, capsys):
    with pytest.raises(DesignError, match=r"--design 'nope': no completed trial .* Pareto designs"):
        analyze(study.folder, "nope", progress=False)
    with pytest.raises(StudyFileError, match="not a study folder"):
        analyze(tmp_path, "1", progress=False)
    with pytest.raises(AnalysisError, match=r"--images 20 --perplexity 30: t-SNE needs"):
        analyze(study.folder, "1", images=20, progress=False)
    for error in (DesignError, AnalysisError):
        assert issubclass(error, StudyFileError)  # the CLI's one-line errors, exit code 2


def test_the_command_line_on_a_study_without_a_float_model(study, worst, tmp_path, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(study.folder, copy)
    (copy / "network" / "float.onnx").unlink()
    assert main(["analyze", str(copy), "--design", "nope"]) == 2
    assert "--design 'nope': no completed trial" in capsys.readouterr().err
    assert main(["analyze", str(copy), "--design", str(worst["config"]), "--images", "40",
                 "--perplexity", "5", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert f"{worst['design']} on the first 40 test images: int8 " in out
    folder = copy / "analysis" / worst["design"]  # the default output folder
    summary = json.loads((folder / "analysis.json").read_text())
    assert list(summary["networks"]) == ["int8", "approximate"]  # two panels
    assert summary["images"] == 40 and (folder / "tsne.html").is_file()
