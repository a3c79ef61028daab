"""Fault injection on real studies through the real CLI: kill -9 at many points (serial and Ray)
with resume-equivalence checks, torn journal tails, two drivers, a lost journal, an edited or
damaged frozen study file, unusable storage URLs, read-only study folders."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

import dse
from dse.cli import main
from tests.conftest import REPO, interruptible
from tests.dse.test_store_faults import without_write_permission
from tests.dse.test_study_loop import run, search_rows, study_data, wait_for_trials
from tests.evaluators.data.test_npz import PEAK, refused_in_one_line, run_dse


def dse_cli(*args: str, env: dict, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dse", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def start(path: Path, env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "dse", "run", str(path), "-q"], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=interruptible)


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dse: error: ") and "Traceback" not in err, err
    return lines[0]


def write(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture
def warm(tmp_path, mnist_dir, env):
    """The test network trained once into the session cache (so children start in seconds)."""
    run(study_data(tmp_path / "warm", mnist_dir, budget={"trials": 1}))


@pytest.mark.slow
@pytest.mark.parametrize("executor", [{"type": "serial"}, {"type": "ray", "workers": 2}],
                         ids=["serial", "ray"])
def test_killed_at_many_points_the_study_resumes_to_the_straight_result(
        tmp_path, mnist_dir, env, warm, executor):
    """kill -9 during start-up, after the baseline and at several trial counts, resuming in
    between: the same trials as an uninterrupted run, nothing lost, nothing evaluated twice."""
    budget = 16
    data = study_data(tmp_path / "mini", mnist_dir, budget={"trials": budget}, executor=executor)
    path = write(tmp_path / "study.yaml", data)
    folder = tmp_path / "mini"
    kept = None
    for kill_at in (None, 0, 3, 7, 11):  # None: during start-up; 0: around the baseline
        proc = start(path, env)
        if kill_at is None:
            time.sleep(1.5)
        else:
            wait_for_trials(folder, kill_at, proc)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if (folder / "trials.journal").is_file() and (folder / "study.yaml").is_file():
            study = dse.load_study(folder)
            if kill_at:
                rows = search_rows(study)
                if kept is not None:  # finished trials are kept as they were
                    again = rows.set_index("trial").loc[kept["trial"]]
                    assert again["config"].tolist() == kept["config"].tolist()
                kept = rows
    resumed = dse_cli("resume", str(folder), "-q", env=env)
    assert resumed.returncode == 0, resumed.stderr
    after = search_rows(dse.load_study(folder))
    assert after["proposal_index"].tolist() == list(range(budget)) and after["config"].is_unique
    straight = search_rows(run(study_data(tmp_path / "straight", mnist_dir, budget={"trials": budget})))
    assert after["config"].tolist() == straight["config"].tolist()
    np.testing.assert_array_equal(after["accuracy"], straight["accuracy"])


@pytest.mark.slow
def test_a_second_driver_is_refused_naming_the_first(tmp_path, mnist_dir, env, warm):
    folder = tmp_path / "mini"
    budget = 150  # the first driver must outlast two refused drivers' start-up (5-10 s each)
    path = write(tmp_path / "study.yaml", study_data(folder, mnist_dir, budget={"trials": budget}))
    first = start(path, env)
    try:
        wait_for_trials(folder, 2, first)
        for args in (("resume", str(folder)), ("run", str(path))):
            refused = dse_cli(*args, env=env, timeout=60)
            assert refused.returncode == 2
            line = one_error_line(refused.stderr)
            assert f"another driver is running this study (pid {first.pid} on " in line
        status = dse_cli("status", str(folder), env=env, timeout=60)  # readers need no lock
        assert status.returncode == 0 and f"a driver holds the study (pid {first.pid}" in status.stdout
    finally:
        out, err = first.communicate(timeout=600)
    assert first.returncode == 0, err
    rows = search_rows(dse.load_study(folder))
    assert rows["proposal_index"].tolist() == list(range(budget)) and rows["config"].is_unique


def test_a_torn_tail_is_survived_by_readers_and_repaired_by_the_driver(tmp_path, mnist_dir, env,
                                                                       capsys):
    folder = tmp_path / "mini"
    run(study_data(folder, mnist_dir, budget={"trials": 4}))
    journal = folder / "trials.journal"
    whole = journal.read_bytes()
    journal.write_bytes(whole[:-40])  # the power went out mid-write
    assert main(["status", str(folder)]) == 0
    captured = capsys.readouterr()
    assert "dse: warning: " in captured.err and "cut short by an interrupted write" in captured.err
    assert journal.read_bytes() == whole[:-40]  # reading does not write
    run(study_data(folder, mnist_dir, budget={"trials": 4}))  # the lost trial is evaluated again
    study = dse.load_study(folder)
    assert search_rows(study)["proposal_index"].tolist() == list(range(4))
    assert (folder / "trials.journal.torn").is_file()


def test_a_lost_journal_is_an_error_not_a_fresh_start(tmp_path, mnist_dir, env, capsys):
    folder = tmp_path / "mini"
    path = write(tmp_path / "study.yaml", study_data(folder, mnist_dir, budget={"trials": 2}))
    assert main(["run", str(path), "-q"]) == 0
    (folder / "trials.journal").unlink()
    capsys.readouterr()
    for args in (["resume", str(folder)], ["run", str(path)], ["status", str(folder)]):
        assert main(args) == 2
        line = one_error_line(capsys.readouterr().err)
        assert "trials.journal: the trial store is missing" in line
    assert not (folder / "trials.journal").exists()


def test_damage_in_the_middle_is_one_line_and_nothing_is_touched(tmp_path, mnist_dir, env, capsys):
    folder = tmp_path / "mini"
    run(study_data(folder, mnist_dir, budget={"trials": 2}))
    journal = folder / "trials.journal"
    lines = journal.read_bytes().split(b"\n")
    journal.write_bytes(lines[0] + b"\n\x00\x01garbage\n" + b"\n".join(lines[1:]))
    damaged = journal.read_bytes()
    for args in (["resume", str(folder)], ["status", str(folder)], ["export", str(folder)]):
        assert main(args) == 2
        assert f"damaged record at byte {len(lines[0]) + 1}" in one_error_line(capsys.readouterr().err)
    assert journal.read_bytes() == damaged


def test_an_edited_or_broken_frozen_study_file_is_refused(tmp_path, mnist_dir, env, capsys):
    folder = tmp_path / "mini"
    run(study_data(folder, mnist_dir, budget={"trials": 2}))
    frozen = folder / "study.yaml"
    original = frozen.read_text()
    frozen.write_text(original.replace("trials: 2", "trials: 9"))
    for args in (["resume", str(folder)], ["status", str(folder)]):
        assert main(args) == 2
        assert "edited after the study started" in one_error_line(capsys.readouterr().err)
    frozen.write_text(original + "\n  - [unclosed\n")
    assert main(["resume", str(folder)]) == 2
    assert "study.yaml: not valid YAML" in one_error_line(capsys.readouterr().err)
    frozen.write_text(original)
    (folder / "study.sha256").unlink()
    assert main(["status", str(folder)]) == 2
    assert "study.sha256: missing or unreadable" in one_error_line(capsys.readouterr().err)


def test_a_study_frozen_before_later_settings_existed_still_opens(tmp_path, mnist_dir, env, capsys):
    """A folder frozen by an older dse lacks settings added since (their defaults fill in on
    loading): its own dump still verifies against its hash, and an edit is still refused."""
    from dse.study_file import identity_sha256

    folder = tmp_path / "mini"
    run(study_data(folder, mnist_dir, budget={"trials": 2}))
    frozen = folder / "study.yaml"
    older = yaml.safe_load(frozen.read_text())
    del older["evaluation"]["prefix_cache_mb"], older["dataset"]["train_size"]
    frozen.write_text(yaml.safe_dump(older))
    (folder / "study.sha256").write_text(identity_sha256(older) + "\n")
    assert main(["status", str(folder), "--json"]) == 0
    assert main(["resume", str(folder), "-q"]) == 0
    capsys.readouterr()
    frozen.write_text(yaml.safe_dump({**older, "seed": 99}))
    assert main(["status", str(folder)]) == 2
    assert "edited after the study started" in one_error_line(capsys.readouterr().err)


@pytest.mark.parametrize("url, expected", [
    ("sqlite:///{tmp}/no/such/folder/s.db", "does not exist"),
    ("mysql://dse@127.0.0.1:1/studies", "is not installed"),
    ("postgresql+psycopg://dse@127.0.0.1:1/studies", "storage postgresql+psycopg://dse@127.0.0.1:1/studies: "),
], ids=["sqlite-missing-folder", "mysql-without-driver", "postgresql-unreachable"])
def test_an_unusable_storage_url_fails_at_once_and_can_be_fixed(tmp_path, mnist_dir, env, capsys,
                                                               url, expected):
    folder = tmp_path / "mini"
    data = study_data(folder, mnist_dir, budget={"trials": 1}, storage=url.format(tmp=tmp_path))
    path = write(tmp_path / "study.yaml", data)
    begin = time.monotonic()
    assert main(["run", str(path), "-q"]) == 2
    assert time.monotonic() - begin < 10
    assert expected in one_error_line(capsys.readouterr().err)
    assert not folder.exists()  # nothing frozen: the corrected file is a new study
    write(path, {**data, "storage": f"sqlite:///{tmp_path}/s.db"})
    assert main(["run", str(path), "-q"]) == 0


def test_a_read_only_study_folder_is_read_by_every_read_command(tmp_path, mnist_dir, env):
    folder = tmp_path / "mini"
    run(study_data(folder, mnist_dir, budget={"trials": 2}))
    code = ("import sys; from dse.cli import main; "
            f"sys.exit(main(['status', {str(folder)!r}]) or main(['status', {str(folder)!r}, '--json'])"
            f" or main(['compare', {str(folder)!r}, {str(folder)!r}])"
            f" or len(__import__('dse').load_study({str(folder)!r}).trials) != 3)")
    out = without_write_permission(folder, code)
    assert out.returncode == 0, out.stderr
    assert "2/2 search trials" in out.stdout and "Traceback" not in out.stderr
    # writing commands say so in one line (export elsewhere with --output)
    code = f"import sys; from dse.cli import main; sys.exit(main(['export', {str(folder)!r}]))"
    out = without_write_permission(folder, code)
    assert out.returncode == 2 and "trials.csv: cannot write (Permission denied)" in \
        one_error_line(out.stderr)


# -- outputs: every command's -o / --output pointed at what it does not own ---------------------

@pytest.fixture(scope="module")
def two_studies(tmp_path_factory, mnist_dir, session_cache) -> tuple[Path, Path]:
    """Two finished studies (A and B) and a user's folder beside them."""
    root = tmp_path_factory.mktemp("outputs")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DSE_CACHE_DIR", str(session_cache))
        for name in ("A", "B"):
            run(study_data(root / name, mnist_dir, budget={"trials": 2}))
    user = root / "mine"
    user.mkdir()
    (user / "notes.csv").write_text("file,config\nmine,1\n")  # looks like a table, is not ours
    (user / "model.onnx").write_bytes((root / "A" / "network" / "int8.onnx").read_bytes())
    (user / "plot.png").write_bytes(b"\x89PNG\r\n\x1a\n not ours")
    (user / "project").mkdir()
    (user / "project" / "notes.txt").write_text("synthesis notes\n")
    (user / "link.csv").symlink_to(root / "B" / "trials.journal")
    (user / "link_dir").symlink_to(root / "B", target_is_directory=True)
    return root


FILE_TARGETS = ["A/trials.journal", "A/study.yaml", "B/trials.journal", "B/study.yaml",
                "B/network/int8.onnx", "B/pareto.csv", "mine/notes.csv", "mine/model.onnx",
                "mine/plot.png", "mine/link.csv", "mine/missing/out.csv"]
FOLDER_TARGETS = ["A", "B", "B/network", "B/pareto", "mine/link_dir"]


def file_commands(target: str) -> list[list[str]]:
    """Every command that writes a file it is given, aimed at ``target``."""
    model = "A/network/int8.onnx"
    return [["export", "A", "--format", fmt, "-o", target] for fmt in ("csv", "parquet", "emgaxo")] + [
        ["export", "A", "--format", "csv", "-o", target, "--force"],
        ["onnx", "approx", model, "--multiplier", "appaxo:404750335", "-o", target],
        ["onnx", "approx", model, "--multiplier", "appaxo:404750335", "-o", target, "--force"],
        ["onnx", "integer", model, "-o", target, "--force"],
        ["onnx", "evaluate", "B/network", "--dataset", "mnist", "-o", target],
        ["zoo", "export", "lenet5", "-o", target, "--force"],
        ["compare", "A", "B", "--plot", target, "--force"]]


def folder_commands(target: str) -> list[list[str]]:
    """Every command that writes into a folder it is given, aimed at ``target``."""
    return [["export", "A", "--format", "onnx", "-o", target],
            ["onnx", "sweep", "A/network/int8.onnx", "--count", "1", "-o", target],
            ["hls", "A", "--design", "0", "-o", target],
            ["generate", "xpat", "--output", target]]


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and not p.is_symlink()}


@pytest.mark.parametrize("target", FILE_TARGETS + FOLDER_TARGETS)
def test_no_output_replaces_what_its_command_did_not_write(two_studies, target, capsys,
                                                           monkeypatch):
    """Aimed at a study's own files (its own or another study's), a user's file, a symbolic
    link into a study or a missing folder: one line, exit 2, and every byte where it was."""
    monkeypatch.chdir(two_studies)
    before = snapshot(two_studies)
    commands = folder_commands(target) if target in FOLDER_TARGETS else file_commands(target)
    for argv in commands:
        assert main(argv) == 2, argv
        assert target in one_error_line(capsys.readouterr().err), argv  # the path is named
        assert snapshot(two_studies) == before, argv


def test_outputs_replace_only_their_own_earlier_outputs(two_studies, capsys, monkeypatch):
    """A second export to the same file needs --force and replaces it whole; the study's own
    table exports are written in place."""
    monkeypatch.chdir(two_studies)
    out = Path("mine") / "trials_a.csv"
    assert main(["export", "A", "-o", str(out)]) == 0
    assert main(["export", "A", "-o", str(out)]) == 2
    assert "pass --force" in one_error_line(capsys.readouterr().err)
    assert main(["export", "A", "-o", str(out), "--force"]) == 0
    assert main(["export", "A", "--format", "parquet", "-o", str(out), "--force"]) == 2
    assert "not an earlier parquet export" in one_error_line(capsys.readouterr().err)
    for fmt in ("csv", "emgaxo"):
        assert main(["export", "A", "--format", fmt]) == 0
    assert main(["export", "A", "--format", "parquet", "-o", "mine/a.parquet"]) == 0
    assert main(["export", "A", "--format", "parquet", "-o", "mine/a.parquet", "--force"]) == 0
    assert not list(Path("mine").glob(".*.tmp")) and not list(Path("A").glob(".*.tmp"))


# -- hostile model files: one line, exit 2, nothing written, bounded memory ----------------------

def external_model(folder: Path, length: int | None = None, opset: int = 17) -> Path:
    """A float Gemm classifier (784 -> 10) whose weights lie in ``data.bin``; ``length``: the
    byte count its weight tensor declares there."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weights = numpy_helper.from_array(
        np.random.default_rng(0).standard_normal((784, 10)).astype(np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["input", "w"], ["out"])], "gemm",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["n", 784])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["n", 10])], [weights])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    folder.mkdir(parents=True, exist_ok=True)
    onnx.save_model(model, str(folder / "model.onnx"), save_as_external_data=True,
                    location="data.bin", size_threshold=0)
    if length is not None:
        model = onnx.load(str(folder / "model.onnx"), load_external_data=False)
        tensor = model.graph.initializer[0]
        for entry in tensor.external_data:
            if entry.key == "length":
                entry.value = str(length)
        onnx.save(model, str(folder / "model.onnx"))
    return folder / "model.onnx"


@pytest.mark.parametrize("hostile", ["length 2^40", "opset from the future", "not a file"])
def test_hostile_onnx_files_are_one_line(tmp_path, env, hostile):
    """Through `onnx approx`: one line naming the file, exit 2, nothing written, and (for the
    declared terabyte) memory far below it."""
    if hostile == "length 2^40":
        model = external_model(tmp_path / "m", length=1 << 40)
        expected = "declares 1,099,511,627,776 bytes at offset 0 of 'data.bin'"
    elif hostile == "opset from the future":
        model = external_model(tmp_path / "m", opset=99)
        expected = "opset 99 of the default domain"
    else:
        model = tmp_path / "m" / "fifo.onnx"
        model.parent.mkdir()
        os.mkfifo(model)  # reading it would wait forever
        expected = "not a regular file"
    before = sorted(p.name for p in tmp_path.rglob("*"))
    (tmp_path / "child").mkdir()  # the child's cache and its peak memory report
    done = run_dse(tmp_path / "child", "onnx", "approx", str(model), "--multiplier",
                   "appaxo:404750335", "-o", str(tmp_path / "out.onnx"))
    assert expected in refused_in_one_line(done)  # exit 2, one line, peak under 1 GiB
    assert sorted(p.name for p in tmp_path.rglob("*") if "child" not in p.parts) == before


def test_models_with_external_data_are_read_whole(tmp_path, mnist, env):
    """`onnx approx` and `onnx integer` on a QDQ model whose weights lie in external data:
    what they write stands alone (no reference to a file they did not write)."""
    import onnx

    from evaluators.data.preprocess import Preprocessing
    from evaluators.networks.quantization import quantize_int8
    from evaluators.networks.zoo import build_model, export_float_onnx

    export_float_onnx(build_model("lenet5", (1, 28, 28), 10, seed=0), (1, 28, 28),
                      tmp_path / "float.onnx")
    (tmp_path / "external").mkdir()
    for fmt in ("qdq", "qoperator"):
        quantize_int8(tmp_path / "float.onnx", tmp_path / f"{fmt}.onnx",
                      Preprocessing().apply(mnist[0].images[:64]), quant_format=fmt)
        onnx.save_model(onnx.load(str(tmp_path / f"{fmt}.onnx")),
                        str(tmp_path / "external" / f"{fmt}.onnx"), save_as_external_data=True,
                        location=f"{fmt}.bin", size_threshold=0)
    for argv, fmt, out in ((["onnx", "integer"], "qdq", "integer.onnx"),
                           (["onnx", "approx", "--multiplier", "appaxo:404750335"], "qoperator",
                            "approx.onnx")):
        done = dse_cli(*argv, str(tmp_path / "external" / f"{fmt}.onnx"), "-o",
                       str(tmp_path / out), env=env)
        assert done.returncode == 0, done.stderr
        written = onnx.load(str(tmp_path / out), load_external_data=False)
        assert not any(t.data_location == onnx.TensorProto.EXTERNAL
                       for t in written.graph.initializer), out
        onnx.checker.check_model(written)


def test_onnx_evaluate_reads_only_regular_files(tmp_path, mnist_dir, env):
    """A link to /dev/zero and a FIFO among the models: each a row with its error, at once,
    in bounded memory."""
    folder = tmp_path / "models"
    folder.mkdir()
    (folder / "zero_404750335.onnx").symlink_to("/dev/zero")
    os.mkfifo(folder / "fifo_404750335.onnx")
    (tmp_path / "child").mkdir()
    done = run_dse(tmp_path / "child", "onnx", "evaluate", str(folder), "--dataset", "mnist",
                   "--path", str(mnist_dir), "--images", "8", "-q", "-o",
                   str(tmp_path / "scores.csv"))
    assert done.returncode == 0, done.stderr
    rows = (tmp_path / "scores.csv").read_text().splitlines()[1:]
    assert len(rows) == 2 and all("not a regular file" in row for row in rows), rows
    assert done.peak < PEAK
