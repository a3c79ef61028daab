"""``python -m dse hls``: a real study's design (a small FCNN study on MNIST; LeNet-5 layer-wise
in the slow test) written as an hls4ml project, its C simulation compiled with g++ and checked
against the study's evaluator on the study's test images; bad requests are one line, exit code 2.
The checks skip with the reason where g++ is missing. The project folder may hold the user's
files: an export writes, and a re-export removes, only what ``dse_hls.json`` lists."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from dse.cli import main
from dse.hls import MANIFEST, TESTBENCH_FILES, TESTBENCH_IMAGES, export_hls
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


def tree(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``folder`` (links not followed) with its size and modification time."""
    found = {}
    for top, _dirs, names in os.walk(folder):
        for name in names:
            path = Path(top) / name
            stat = path.lstat()
            found[path.relative_to(folder).as_posix()] = (stat.st_size, stat.st_mtime_ns)
    return found


def listed(out: Path) -> set[str]:
    """The files the folder's manifest says the export wrote."""
    return set(json.loads((out / MANIFEST).read_text())["files"])


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
    # the manifest lists every file the export wrote, the compiled library included
    assert listed(out) == set(tree(out)) - {MANIFEST} and set(TESTBENCH_FILES) <= listed(out)
    assert [name for name in listed(out) if name.endswith(".so")] and \
        not [name for name in listed(out) if name.endswith(".o")]


def test_a_project_is_written_without_compiling_and_rewritten_in_place(study, tmp_path):
    out = tmp_path / "firmware"
    first = export_hls(study, "0", out, backend="vivado", log=quiet)
    assert (first.backend, first.trial, first.compile_seconds, first.parity) == \
        ("Vivado", 0, None, None)
    assert (out / "build_prj.tcl").is_file() and not list((out / "firmware").glob("*.so"))
    assert listed(out) == set(first.files) == set(tree(out)) - {MANIFEST}
    assert "build_prj.tcl" in first.files and "firmware/parameters.h" in first.files
    again = export_hls(study, "0", out, log=quiet)  # an earlier export's folder is rewritten
    assert again.backend == "Vitis" and json.loads((out / MANIFEST).read_text())["backend"] == \
        "Vitis"
    assert listed(out) == set(again.files) == set(tree(out)) - {MANIFEST}
    assert "build_opt.tcl" in again.files and "vivado_synth.tcl" in first.files


@pytest.mark.parametrize("args, message", [
    (["--design", "999"], "no completed trial of study hls has that trial number"),
    (["--design", "0", "--check", "5000"], "--check 5000: expected 0 to 300 images"),
    (["--design", "0", "--backend", "Quartus"], "backend 'Quartus': expected one of Vitis"),
    (["--design", "0", "-o", "{mine}/notes.txt"], "a file is there; give a folder"),
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


def test_a_re_export_keeps_the_users_files_and_removes_its_own(study, tmp_path):
    out = tmp_path / "firmware"
    assert main(["hls", str(study), "--design", "0", "-o", str(out), "-q"]) == 0
    mine = {"notes.txt": "mine", "firmware/notes.md": "mine too",
            "dse_network_prj/solution1/syn/report/dse_network_csynth.rpt": "synthesis"}
    for name, text in mine.items():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_text(text)
    (tmp_path / "outside.txt").write_text("not in the folder")
    # a file the earlier export wrote that this one does not (a layer it had), and an entry
    # pointing outside the folder, which no export removes
    manifest = json.loads((out / MANIFEST).read_text())
    manifest.setdefault("files", []).extend(["old/weights/w9.h", "../outside.txt"])
    (out / MANIFEST).write_text(json.dumps(manifest))
    (out / "old" / "weights").mkdir(parents=True)
    (out / "old" / "weights" / "w9.h").write_text("stale")
    assert main(["hls", str(study), "--design", "0", "-o", str(out), "-q"]) == 0
    assert {name: (out / name).read_text() for name in mine} == mine
    assert not (out / "old").exists() and (tmp_path / "outside.txt").is_file()
    assert listed(out) == set(tree(out)) - {MANIFEST} - set(mine)


@pytest.mark.parametrize("mine, args, message", [
    ("build_prj.tcl", [], "build_prj.tcl would be overwritten by the export"),
    ("firmware", [], "firmware is in the way of a folder of the export"),
    ("firmware/ap_types/extra.h", [], "would be removed: hls4ml replaces firmware/ap_types/"),
    ("own.o", ["--compile"], "own.o would be removed: the C simulation's build removes"),
    (MANIFEST, [], f"{MANIFEST} is not the manifest of a dse hls export"),
])
def test_a_users_file_the_export_would_replace_is_refused(study, tmp_path, capsys, mine, args,
                                                          message):
    out = tmp_path / "firmware"
    (out / mine).parent.mkdir(parents=True, exist_ok=True)
    (out / mine).write_text("mine")
    before = tree(out)
    assert main(["hls", str(study), "--design", "0", "-o", str(out), "-q", *args]) == 2
    line = error_line(capsys.readouterr().err)
    assert message in line and "nothing was written" in line
    assert tree(out) == before


def test_a_first_export_shares_a_folder_with_the_users_files(study, tmp_path):
    out = tmp_path / "firmware"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    result = export_hls(study, "0", out, log=quiet)
    assert (out / "notes.txt").read_text() == "mine" and "notes.txt" not in result.files
    assert listed(out) == set(tree(out)) - {MANIFEST, "notes.txt"}


def test_an_interrupted_export_lists_what_it_wrote(study, tmp_path, monkeypatch):
    """A failed compile leaves the project and a manifest naming it: the next export replaces
    it rather than refusing files no export listed."""
    from evaluators.firmware.hls_export import HlsExportError, HlsProject

    def fail(_project):
        raise HlsExportError("g++ could not compile the C simulation")

    out = tmp_path / "firmware"
    with monkeypatch.context() as patch:
        patch.setattr(HlsProject, "compile", fail)
        with pytest.raises(HlsExportError):
            export_hls(study, "0", out, compile=True, log=quiet)
    manifest = json.loads((out / MANIFEST).read_text())
    assert not manifest["complete"] and set(manifest["files"]) == set(tree(out)) - {MANIFEST}
    assert export_hls(study, "0", out, log=quiet).files == sorted(listed(out))
    assert json.loads((out / MANIFEST).read_text())["complete"]


def test_a_symlinked_folder_works_like_the_folder(study, tmp_path, capsys):
    target = tmp_path / "target"
    target.mkdir()
    (target / "notes.txt").write_text("mine")
    link = tmp_path / "link"
    link.symlink_to(target)
    for _ in range(2):  # a re-export through the link replaces the export, not the link
        assert main(["hls", str(study), "--design", "0", "-o", str(link), "-q"]) == 0
    assert link.is_symlink() and (target / "notes.txt").read_text() == "mine"
    assert listed(target) == set(tree(target)) - {MANIFEST, "notes.txt"}
    assert "firmware/parameters.h" in listed(target)
    capsys.readouterr()
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    (tmp_path / "file").write_text("mine")
    (tmp_path / "to_file").symlink_to(tmp_path / "file")
    for name, message in [("dangling", "a symbolic link to"), ("to_file", "a file is there")]:
        assert main(["hls", str(study), "--design", "0", "-o", str(tmp_path / name), "-q"]) == 2
        assert message in error_line(capsys.readouterr().err)
    assert not (tmp_path / "nowhere").exists() and (tmp_path / "file").read_text() == "mine"


def test_a_study_folder_or_a_folder_inside_one_is_refused(study, tmp_path, capsys):
    """Even a copy of a study folder holding a dse_hls.json: it loses nothing."""
    copy = tmp_path / "copy"
    shutil.copytree(study, copy, symlinks=True)
    (copy / MANIFEST).write_text(json.dumps({"study": "hls", "design": "x", "trial": 0,
                                             "backend": "Vitis", "files": ["study.yaml"]}))
    (tmp_path / "link").symlink_to(copy)
    before = tree(copy)
    for out in [copy, copy / "firmware", tmp_path / "link", tmp_path / "link" / "firmware"]:
        assert main(["hls", str(study), "--design", "0", "-o", str(out), "-q"]) == 2
        assert "lies in study folder" in error_line(capsys.readouterr().err)
    assert tree(copy) == before and not (copy / "firmware").exists()


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
