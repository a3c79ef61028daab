"""``python -m dse hls``: a real study's design (a small FCNN study on MNIST; LeNet-5 layer-wise
in the slow test) written as an hls4ml project, its C simulation compiled with g++ and checked
against the study's evaluator on the study's test images; bad requests are one line, exit code 2.
The checks skip with the reason where g++ is missing."""

from __future__ import annotations

import json
import shutil

import pytest

from dse.cli import main
from dse.hls import MANIFEST, TESTBENCH_IMAGES, export_hls
from dse.loop import run_study
from dse.study import load_study
from dse.study_file import parse_settings
from tests.conftest import mini_study

# a study small enough to run in seconds: the registry's FCNN, 2 epochs on 2000 images, scored
# on 300 test images, one AppAxO configuration searched
SIZES = {"dataset": {"train_size": 2000, "test_size": 300}, "model": {"arch": "fcnn", "epochs": 2},
         "budget": {"trials": 1}}


def quiet(_message: str) -> None:
    pass


def needs_gpp() -> None:
    if shutil.which("g++") is None:
        pytest.skip("g++ is not on PATH: hls4ml compiles the C simulation with it")


def error_line(stderr: str) -> str:
    errors = [line for line in stderr.splitlines() if line.startswith("dse: error: ")]
    assert len(errors) == 1 and "Traceback" not in stderr, stderr
    return errors[0]


@pytest.fixture(scope="module")
def study(mnist_dir, session_cache, tmp_path_factory):
    """A finished FCNN study, never modified."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DSE_CACHE_DIR", str(session_cache))
        folder = tmp_path_factory.mktemp("hls") / "study"
        data = mini_study(mnist_dir, name="hls", output=str(folder), **SIZES)
        run_study(parse_settings(data), log=quiet, progress=False)
        yield folder


def test_an_approximate_design_becomes_firmware_equal_to_the_evaluator(study, tmp_path, capsys):
    needs_gpp()
    row = load_study(study).trials.query("role == 'search'").iloc[0]
    out = tmp_path / "firmware"
    assert main(["hls", str(study), "--design", row["design"], "-o", str(out), "--check",
                 "-q"]) == 0
    printed = capsys.readouterr().out
    assert "identical (300 same predictions, 300 same outputs bit for bit)" in printed
    manifest = json.loads((out / MANIFEST).read_text())
    assert (manifest["study"], manifest["design"], manifest["trial"], manifest["backend"]) == \
        ("hls", row["design"], row["trial"], "Vitis")
    parity = manifest["parity"]
    assert parity["identical"] and parity["images"] == 300 and manifest["compile_seconds"] > 0
    assert parity["accuracy"] == parity["evaluator_accuracy"] == pytest.approx(row["accuracy"])
    layers = manifest["layers"]
    assert len(layers) == 3 and {layer["table_sha256"] for layer in layers} == \
        {row["table_sha256"]}
    assert {layer["multiplier"] for layer in layers} == {row["design"]}
    parameters = (out / "firmware" / "parameters.h").read_text()
    assert all(f"using product = dse::product{slot}<x_T, y_T>;" in parameters
               for slot in range(3))
    # the testbench data of hls4ml's C simulation: input codes and the evaluator's output codes
    inputs = (out / "tb_data" / "tb_input_features.dat").read_text().splitlines()
    outputs = (out / "tb_data" / "tb_output_predictions.dat").read_text().splitlines()
    assert len(inputs) == len(outputs) == TESTBENCH_IMAGES
    assert len(inputs[0].split()) == 784 and len(outputs[0].split()) == 10


def test_a_project_is_written_without_compiling_and_rewritten_in_place(study, tmp_path):
    out = tmp_path / "firmware"
    first = export_hls(study, "0", out, backend="vivado", log=quiet)
    assert (first.backend, first.trial, first.compile_seconds, first.parity) == \
        ("Vivado", 0, None, None)
    assert (out / "build_prj.tcl").is_file() and not list((out / "firmware").glob("*.so"))
    again = export_hls(study, "0", out, log=quiet)  # an earlier export's folder is rewritten
    assert again.backend == "Vitis" and json.loads((out / MANIFEST).read_text())["backend"] == \
        "Vitis"


@pytest.mark.parametrize("args, message", [
    (["--design", "999"], "no completed trial of study hls has that trial number"),
    (["--design", "0", "--check", "5000"], "--check 5000: expected 0 to 300 images"),
    (["--design", "0", "--backend", "Quartus"], "backend 'Quartus': expected one of Vitis"),
    (["--design", "0", "-o", "{mine}"], "the folder holds files dse hls did not write"),
])
def test_bad_requests_are_one_line(study, tmp_path, capsys, args, message):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    args = [a.format(mine=mine) for a in args]
    out = [] if "-o" in args else ["-o", str(tmp_path / "out")]
    assert main(["hls", str(study), *args, *out, "-q"]) == 2
    assert message in error_line(capsys.readouterr().err)
    assert (mine / "notes.txt").read_text() == "mine"


@pytest.mark.slow
def test_a_layerwise_lenet5_design_becomes_firmware_equal_to_the_evaluator(mnist_dir, env,
                                                                           tmp_path, capsys):
    """LeNet-5 (padded convolutions, pooling, the NCHW flatten) with a multiplier per layer:
    about a minute of g++."""
    needs_gpp()
    from tests.dse.test_layerwise_study import layerwise

    folder = tmp_path / "lw"
    data = layerwise(mnist_dir, dataset={"test_size": 200}, budget={"trials": 4})
    run_study(parse_settings({**data, "output": str(folder)}), log=quiet, progress=False)
    searched = load_study(folder).trials.query("role == 'search'")
    row = searched[searched["assignment"].map(lambda a: len(set(a.values())) > 1)].iloc[0]
    out = tmp_path / "firmware"
    assert main(["hls", str(folder), "--design", row["design"], "-o", str(out), "--check",
                 "-q"]) == 0
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["parity"]["identical"] and manifest["parity"]["images"] == 200
    assert [layer["multiplier"] for layer in manifest["layers"]] == \
        [row["assignment"][layer["layer"]] for layer in manifest["layers"]]
