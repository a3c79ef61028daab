"""A table of malformed study files (issue 11): the real CLI refuses each with exit code 2 and
one line naming the file and the field, no traceback, and nothing written.

Every row runs in-process through ``dse.cli.main``; a representative dozen also run as real
``python -m dse`` processes, where a traceback or a stray write could not hide.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from dse.cli import main
from dse.study_file import MAX_STUDY_FILE_BYTES
from tests.conftest import REPO, mini_study

Writer = Callable[[Path], None]


def dumped(data: dict) -> str:
    """Study data as YAML. A dataset is never downloaded: should a row ever pass validation,
    it fails on the data instead of fetching MNIST into the repository."""
    if isinstance(data.get("dataset"), dict):
        data["dataset"].setdefault("download", False)
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


def study(**changes) -> str:
    """The mini study with ``changes`` (see ``mini_study``). Its dataset path is any existing
    folder: no row gets as far as reading data."""
    return dumped(mini_study(REPO, **changes))


def replaced(**sections) -> str:
    """The mini study with whole sections replaced (``study`` updates a section's keys)."""
    return dumped({**mini_study(REPO), **sections})


def edited(old: str, new: str, **changes) -> str:
    """The mini study with the text ``old`` replaced by ``new``."""
    text = study(**changes)
    assert old in text, f"{old!r} is not in the study text"
    return text.replace(old, new, 1)


def without(section: str, key: str) -> str:
    """The mini study without ``section.key`` (or without the section when key is empty)."""
    data = mini_study(REPO)
    if key:
        del data[section][key]
    else:
        del data[section]
    return dumped(data)


def text(content: str) -> Writer:
    return lambda path: path.write_text(content, encoding="utf-8")


def raw(content: bytes) -> Writer:
    return lambda path: path.write_bytes(content)


def nothing() -> Writer:
    return lambda path: None


def folder() -> Writer:
    return lambda path: path.mkdir()


def objectives(*metrics: str) -> list[dict]:
    return [{"metric": m} for m in metrics]


def line_of(fragment: str) -> int:
    """The line of the mini study's text where ``fragment`` first appears."""
    return study().split(fragment)[0].count("\n") + 1


NAN, INF = float("nan"), float("inf")
END = len(study().splitlines()) + 1  # the first line after the mini study
OVERSIZED = study() + ("# padding\n" * (MAX_STUDY_FILE_BYTES // 10 + 1))

# (id, how the file is made, a part of the one-line error that names the problem)
ROWS: list[tuple[str, Writer, str]] = [
    # the file itself
    ("missing file", nothing(), "study file not found"),
    ("a folder", folder(), "is a folder, not a study file"),
    ("over the size limit", text(OVERSIZED), "larger than 1 MiB"),
    ("binary", raw(bytes(range(256)) * 8), "not UTF-8 text (byte 128 is 0x80)"),
    ("UTF-16 with BOM", raw(study().encode("utf-16")), "not UTF-8 text (byte 0 is 0xff)"),
    ("UTF-16 without BOM", raw(study().encode("utf-16-le")), "not UTF-8 text (it holds NUL"),
    ("Latin-1", raw(study(name="café").encode("latin-1")), "not UTF-8 text (byte 9 is 0xe9)"),
    ("control character", text(edited("name: mini", "name: mi\x07ni")),
     "not valid YAML at line 1: unacceptable character '\\x07'"),
    # YAML that is not a study mapping
    ("empty", text(""), "the study file is empty"),
    ("only a comment", text("# a study, one day\n"), "the study file is empty"),
    ("a list at top level", text("- name: mini\n- seed: 3\n"),
     "expected a mapping of study settings at the top level, got [{'name': 'mini'}"),
    ("a scalar", text("lenet\n"),
     "expected a mapping of study settings at the top level, got 'lenet'"),
    ("two documents", text(study() + "---\n" + study()),
     "expected a single document in the stream, but found another document"),
    # syntax
    ("tab indentation", text(edited("  epochs: 2", "\tepochs: 2")),
     f"not valid YAML at line {line_of('epochs')}, column 1: while scanning for the next token, "
     "found character '\\t'"),
    ("bad indentation", text(edited("  epochs: 2", "   epochs: 2\n  batch_size: 8")),
     f"not valid YAML at line {line_of('epochs') + 1}"),
    ("unclosed bracket", text(study() + "objectives: [{metric: accuracy}, {metric: area}\n"),
     f"not valid YAML at line {END + 1}, column 1: while parsing a flow sequence"),
    ("unclosed quote", text(study() + "output: 'runs/mini\n"),
     f"not valid YAML at line {END + 1}, column 1: while scanning a quoted scalar, found "
     "unexpected end"),
    ("python tag", text(edited("name: mini", "name: !!python/object/apply:os.system [ls]")),
     "could not determine a constructor for the tag"),
    # keys
    ("duplicate top-level key", text(study() + "budget:\n  trials: 7\n"),
     f"duplicate key 'budget' at line {END} (first given at line {line_of('budget')})"),
    ("duplicate nested key", text(edited("  epochs: 2\n", "  epochs: 2\n  epochs: 3\n")),
     f"duplicate key 'epochs' at line {line_of('epochs') + 1} "
     f"(first given at line {line_of('epochs')})"),
    ("duplicate key in a flow mapping", text(edited("strategy:\n  type: random",
                                                    "strategy: {type: random, type: sobol}")),
     f"duplicate key 'type' at line {line_of('strategy')} "
     f"(first given at line {line_of('strategy')})"),
    ("duplicate key, quoted the second time", text(study() + "'seed': 4\n"),
     f"duplicate key 'seed' at line {END} (first given at line 2)"),
    ("integer key", text(study() + "1: one\n"), f"key 1 at line {END} is not a string"),
    ("boolean key", text(study() + "yes: true\n"), f"key True at line {END} is not a string"),
    ("sequence key", text(study() + "? [a, b]\n: 1\n"),
     f"a sequence key at line {END} is not a string"),
    ("alias", text(edited("  trials: 6", "  trials: &n 6\nseed: *n")), f"alias *n at line {END}"),
    ("alias bomb", text("a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a]\n"
                        "c: [*b, *b, *b, *b, *b, *b, *b, *b]\n"), "alias *a at line 2"),
    ("merge key", text(edited("model:\n", "model:\n  <<: {epochs: 3}\n")),
     f"merge key '<<' at line {line_of('model') + 1}"),
    ("nested too deep", text(study() + "x: " + "[" * 200 + "]" * 200 + "\n"),
     f"nested more than 32 levels deep at line {END}"),
    # numbers
    ("5000-digit integer", text(edited("trials: 6", "trials: " + "9" * 5000)),
     f"integer of 5000 digits at line {END - 1} is out of range"),
    ("huge budget", text(study(budget={"trials": 10**30})),
     "budget.trials: Input should be less than or equal to 1000000000 (got 1000000000000000"),
    ("negative budget", text(study(budget={"trials": -5})),
     "budget.trials: Input should be greater than or equal to 1 (got -5)"),
    ("zero budget", text(study(budget={"trials": 0})),
     "budget.trials: Input should be greater than"),
    ("budget as text", text(study(budget={"trials": "many"})),
     "budget.trials: Input should be a valid integer"),
    ("fractional budget", text(study(budget={"trials": 2.5})),
     "budget.trials: Input should be a valid integer"),
    ("NaN learning rate", text(study(model={"learning_rate": NAN})),
     "model.learning_rate: Input should be a finite number (got nan)"),
    ("nan written as text", text(edited("  epochs: 2", "  epochs: 2\n  learning_rate: nan")),
     "model.learning_rate: Input should be a finite number (got 'nan')"),
    ("inf time limit", text(study(budget={"time_limit_s": INF})),
     "budget.time_limit_s: Input should be a finite number"),
    ("-inf clock", text(study(hardware={"clock_period_ns": -INF})),
     "hardware.clock_period_ns: Input should be a finite number"),
    ("1e999 as text", text(study(hardware={"timeout_s": "1e999"})),
     "hardware.timeout_s: Input should be a finite number"),
    ("huge float", text(study(budget={"time_limit_s": 1e300})),
     "budget.time_limit_s: Input should be less than or equal to"),
    ("NaN in reference_point", text(study(objectives=objectives("accuracy", "fpga_luts"),
                                          reference_point={"accuracy": NAN, "fpga_luts": 100})),
     "reference_point.accuracy: Input should be a finite number"),
    ("inf in reference_point", text(study(reference_point={"accuracy": 0.9, "fpga_luts": INF})),
     "reference_point.fpga_luts: Input should be a finite number"),
    ("infinite constraint bound", text(study(constraints=["accuracy_drop <= 1e999"])),
     "constraints: constraint 'accuracy_drop <= 1e999': '1e999' is not a finite number"),
    ("NaN stagnation tolerance", text(study(budget={"stagnation": {"window": 5,
     "tolerance": NAN}})),
     "budget.stagnation.tolerance: Input should be a finite number"),
    ("seed negative", text(study(seed=-1)), "seed: Input should be greater than or equal to 0"),
    ("seed over 32 bits", text(study(seed=2**40)), "seed: Input should be less than 4294967296"),
    # wrong types for every section
    ("name a number", text(study(name=123)), "name: Input should be a valid string (got 123)"),
    ("dataset a number", text(study(dataset=5)), "dataset: Input should be a valid dictionary"),
    ("model a list", text(study(model=[1, 2])), "model: Input should be a valid dictionary"),
    ("quantization text", text(study(quantization="int8")),
     "quantization: Input should be a valid dictionary"),
    ("evaluation a boolean", text(study(evaluation=True)),
     "evaluation: Input should be a valid dictionary"),
    ("hardware a number", text(study(hardware=3)), "hardware: Input should be a valid dictionary"),
    ("executor text", text(study(executor="ray")), "executor: Input should be a valid dictionary"),
    ("space text", text(study(space="appaxo36")), "space: Input should be a valid dictionary"),
    ("strategy text", text(study(strategy="random")),
     "strategy: Input should be a valid dictionary"),
    ("objectives text", text(study(objectives="accuracy")),
     "objectives: Input should be a valid list"),
    ("constraints text", text(study(constraints="accuracy >= 0.9")),
     "constraints: Input should be a valid list"),
    ("reference_point a list", text(study(reference_point=[0.9, 100])),
     "reference_point: Input should be a valid dictionary"),
    ("budget a number", text(study(budget=10)), "budget: Input should be a valid dictionary"),
    ("storage a number", text(study(storage=5432)), "storage: Input should be a valid string"),
    # unknown and missing keys at several depths
    ("unknown top-level key", text(study(bogus=1)), "bogus: unknown key"),
    ("typo in model", text(study(model={"epoch": 3})), "model.epoch: unknown key"),
    ("unknown key in space", text(study(space={"bits": 36})), "space.bits: unknown key"),
    ("unknown key in screening", text(study(evaluation={"screening": {"imgs": 100}})),
     "evaluation.screening.imgs: unknown key"),
    ("unknown key in stagnation", text(study(budget={"stagnation": {"window": 5, "windw": 5}})),
     "budget.stagnation.windw: unknown key"),
    ("unknown key in an objective", text(study(objectives=[{"metric": "accuracy", "goal": "max"},
                                                           {"metric": "area"}])),
     "objectives.0.goal: unknown key"),
    ("missing name", text(without("name", "")), "name: required field is missing"),
    ("missing budget", text(without("budget", "")), "budget: required field is missing"),
    ("missing space type", text(without("space", "type")),
     "space.type: required field is missing (one of appaxo36, xpat, layerwise)"),
    # metrics, objectives and constraints
    ("bad metric name", text(study(objectives=objectives("accuracy", "luts"))),
     "objectives.1.metric: Input should be"),
    ("duplicate objectives", text(study(objectives=objectives("accuracy", "accuracy"))),
     "objectives: objectives must be distinct metrics, got ['accuracy', 'accuracy']"),
    ("one objective", text(study(objectives=objectives("accuracy"))),
     "objectives: List should have at least 2 items"),
    ("five objectives", text(study(objectives=objectives("accuracy", "area", "power", "delay",
     "mae"))),
     "objectives: List should have at most 4 items"),
    ("bad direction", text(study(objectives=[{"metric": "accuracy",
     "direction": "up"}, {"metric": "area"}])),
     "objectives.0.direction: Input should be 'maximize' or 'minimize'"),
    ("constraint with ==", text(study(constraints=["accuracy == 0.9"])),
     "constraints: constraint 'accuracy == 0.9' must read 'metric <= number' or "
     "'metric >= number'"),
    ("constraint unknown metric", text(study(constraints=["luts <= 100"])),
     "constraint 'luts <= 100': unknown metric 'luts'"),
    ("constraint bound not a number", text(study(constraints=["area <= 1.2.3"])),
     "'1.2.3' is not a number"),
    ("error metric without reference_point", text(study(objectives=objectives("accuracy", "wce"))),
     "reference_point: required when an objective is an error metric (wce)"),
    ("reference_point other metrics", text(study(reference_point={"accuracy": 0.9, "area": 10})),
     "reference_point: must give one value for each objective ['accuracy', 'fpga_luts']"),
    # space bits
    ("free of 4 bits", text(study(space={"free": "0101"})),
     "space.free: free must be a 36-character string"),
    ("free with a 2", text(study(space={"free": "2" * 36})),
     "space.free: free must be a 36-character string"),
    ("free integer too wide", text(study(space={"free": 2**36})),
     "space.free: free must fit in 36 bits"),
    ("free of no bit", text(study(space={"free": 0})), "space.free: free has no bit set"),
    ("fixed negative", text(study(space={"fixed": -1})), "space.fixed: fixed must fit in 36 bits"),
    ("free a boolean", text(study(space={"free": True})),
     "space.free: free must be 36 bits, got a boolean"),
    ("unknown space type", text(study(space={"type": "ga64"})),
     "space.type: 'ga64' is not a space type (expected one of appaxo36, xpat, layerwise)"),
    ("xpat list of 3", text(replaced(space={"type": "xpat", "max_inputs": [4, 6, 8]})),
     "space.max_inputs: max_inputs must list 1, 2, 4, 8 or 16"),
    ("xpat huge threshold", text(replaced(space={"type": "xpat", "thresholds": {"high": 1e12}})),
     "space.thresholds.high: Input should be less than or equal to 1048576"),
    # strategy options
    ("unknown strategy", text(study(strategy={"type": "annealing"})),
     "strategy: Input tag 'annealing'"),
    ("nsga2 population 2", text(study(strategy={"type": "nsga2", "population": 2})),
     "strategy.population: Input should be greater than or equal to 4"),
    ("nsga2 one-point crossover", text(study(strategy={"type": "nsga2", "crossover": "one_point"})),
     "strategy.crossover: Input should be 'two_point' or 'uniform'"),
    ("nsga2 mutation rate 2", text(study(strategy={"type": "nsga2", "mutation_rate": 2})),
     "strategy.mutation_rate: Input should be less than or equal to 1"),
    ("bayes sampler cma", text(study(strategy={"type": "bayes", "sampler": "cma"})),
     "strategy.sampler: Input should be 'tpe' or 'gp'"),
    ("grid of no configs", text(study(strategy={"type": "grid", "configs": []})),
     "strategy.configs: configs must be a non-empty list"),
    ("grid file missing", text(study(strategy={"type": "grid", "file": "/no/such/grid.txt"})),
     "strategy: file '/no/such/grid.txt' does not exist"),
    ("random with options", text(study(strategy={"type": "random", "population": 4})),
     "strategy.population: unknown key"),
    # paths and URLs
    ("Liberty file missing", text(study(hardware={"liberty": "/no/such.lib.gz"})),
     "hardware.liberty: file '/no/such.lib.gz' does not exist"),
    ("dataset folder missing", text(study(dataset={"path": "/no/such/folder"})),
     "dataset.path: folder '/no/such/folder' does not exist"),
    ("dataset path a file", text(study(dataset={"path": str(REPO / "pyproject.toml")})),
     "dataset.path: folder"),
    ("storage http URL", text(study(storage="http://db.example.org/studies")),
     "storage: 'http://db.example.org/studies' is not an RDB URL"),
    ("storage file name", text(study(storage="trials.journal")),
     "storage: 'trials.journal' is not an RDB URL"),
    ("storage redis URL", text(study(storage="redis://localhost:6379")), "is not an RDB URL"),
    # executor numbers
    ("zero workers", text(study(executor={"type": "ray", "workers": 0})),
     "executor.workers: Input should be greater than or equal to 1"),
    ("workers as text", text(study(executor={"workers": "four"})),
     "executor.workers: Input should be a valid integer"),
    ("zero cpus per worker", text(study(executor={"cpus_per_worker": 0})),
     "executor.cpus_per_worker: Input should be greater than 0"),
    ("negative gpus per worker", text(study(executor={"gpus_per_worker": -1})),
     "executor.gpus_per_worker: Input should be greater than or equal to 0"),
    ("retries out of range", text(study(executor={"max_retries": 1000})),
     "executor.max_retries: Input should be less than or equal to 100"),
    ("zero in flight", text(study(executor={"max_in_flight": 0})),
     "executor.max_in_flight: Input should be greater than or equal to 1"),
    ("zero executor timeout", text(study(executor={"timeout_s": 0})),
     "executor.timeout_s: Input should be greater than 0"),
    ("unknown executor", text(study(executor={"type": "kubernetes"})),
     "executor.type: Input should be 'serial' or 'ray'"),
    # the study name (it names the folder)
    ("name with a slash", text(study(name="a/b")), "name: String should match pattern"),
    ("name ..", text(study(name="..")), "name: String should match pattern"),
    ("name escaping", text(study(name="../escape")), "name: String should match pattern"),
    ("empty name", text(study(name="")), "name: String should match pattern"),
    ("name too long", text(study(name="n" * 101)),
     "name: String should have at most 100 characters"),
    # other sections
    ("unknown dataset", text(study(dataset={"name": "imagenet"})),
     "dataset.name: Input should be 'mnist', 'fashion_mnist', 'cifar10', 'cifar100' or 'jets'"),
    ("npz and name", text(study(dataset={"name": "mnist", "npz": str(REPO / "pyproject.toml")})),
     "dataset: give either npz (your own data) or name (and path), not both"),
    ("npz missing", text(study(dataset={"npz": "/no/such/data.npz"})),
     "dataset.npz: file '/no/such/data.npz' does not exist"),
    ("onnx missing", text(study(model={"onnx": "/no/such/model.onnx"})),
     "model.onnx: file '/no/such/model.onnx' does not exist"),
    ("checkpoint missing", text(study(model={"arch": "resnet8", "checkpoint": "/no/such.pt"})),
     "model.checkpoint: file '/no/such.pt' does not exist"),
    ("checkpoint without arch", text(study(model={"checkpoint": str(REPO / "pyproject.toml")})),
     "model: checkpoint needs arch"),
    ("onnx and arch", text(study(model={"arch": "lenet5", "onnx": str(REPO / "pyproject.toml")})),
     "model: give either onnx (your own model) or arch"),
    ("preprocessing std 0", text(study(model={"preprocessing": {"std": [0.0]}})),
     "model.preprocessing.std.0: Input should be greater than 0"),
    ("preprocessing layout", text(study(model={"preprocessing": {"layout": "CHW"}})),
     "model.preprocessing.layout: Input should be 'NCHW' or 'NHWC'"),
    ("test_size 0", text(study(dataset={"test_size": 0})),
     "dataset.test_size: Input should be greater than or equal to 1"),
    ("unknown architecture", text(study(model={"arch": "resnet18"})),
     "model.arch: unknown architecture 'resnet18' (known: lenet5"),
    ("zero epochs", text(study(model={"epochs": 0})),
     "model.epochs: Input should be greater than or equal to 1"),
    ("augment as text", text(study(model={"augment": "sometimes"})),
     "model.augment: Input should be a valid boolean"),
    ("calibration too large", text(study(quantization={"calibration_size": 10**6})),
     "quantization.calibration_size: Input should be less than or equal to 60000"),
    ("unknown device", text(study(evaluation={"device": "tpu"})),
     "evaluation.device: Input should be"),
    ("screening confidence 1.5", text(study(evaluation={"screening": {"confidence": 1.5}})),
     "evaluation.screening.confidence: Input should be less than 1"),
    ("vectorless without Liberty", text(study(hardware={"power": "vectorless"})),
     "hardware: power: vectorless power needs a Liberty file"),
    ("too few vectors", text(study(hardware={"vectors": 10})),
     "hardware.vectors: Input should be greater than or equal to 64"),
    ("stagnation window 1", text(study(budget={"stagnation": {"window": 1}})),
     "budget.stagnation.window: Input should be greater than or equal to 2"),
]

# the rows that also run as real processes: one of each kind of failure
IN_SUBPROCESS = {
    "missing file", "a folder", "binary", "UTF-16 with BOM", "Latin-1", "over the size limit",
    "tab indentation", "duplicate nested key", "alias bomb", "5000-digit integer",
    "NaN in reference_point", "storage http URL", "name with a slash",
}


def _params(ids: set[str] | None = None) -> list:
    return [pytest.param(write, expected, id=name) for name, write, expected in ROWS
            if ids is None or name in ids]


def assert_refused(stderr: str, stdout: str, path: Path, expected: str, workdir: Path) -> None:
    """One ``dse: error:`` line naming the file and the problem; no traceback; nothing written."""
    assert "Traceback" not in stderr + stdout
    assert stdout == ""
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith(f"dse: error: {path}: "), lines[0]
    assert expected in lines[0], lines[0]
    assert [p.name for p in workdir.iterdir()] in ([], [path.name])  # no output, no runs/


def test_the_table_is_large_and_names_rows_once():
    names = [name for name, _, _ in ROWS]
    assert len(names) >= 60 and len(set(names)) == len(names)
    assert IN_SUBPROCESS <= set(names)


@pytest.mark.parametrize(("write", "expected"), _params())
def test_refused_in_process(tmp_path, monkeypatch, capsys, write, expected):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "study.yaml"
    write(path)
    assert main(["run", str(path), "--output", str(tmp_path / "out")]) == 2
    captured = capsys.readouterr()
    assert_refused(captured.err, captured.out, path, expected, tmp_path)


@pytest.fixture(scope="module")
def real_processes(tmp_path_factory) -> dict[str, tuple[Path, subprocess.CompletedProcess]]:
    """Each ``IN_SUBPROCESS`` file refused by its own ``python -m dse run``, the processes
    running side by side (each imports the whole package: seconds of start-up)."""
    # run from the test's folder, so a stray runs/ would show; the package from this checkout
    pythonpath = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    started = {}
    for name, write, _ in ROWS:
        if name in IN_SUBPROCESS:
            folder = tmp_path_factory.mktemp("refused")
            path = folder / "study.yaml"
            write(path)
            started[name] = path, subprocess.Popen(
                [sys.executable, "-m", "dse", "run", str(path), "--output", str(folder / "out")],
                cwd=folder, env={**os.environ, "PYTHONPATH": pythonpath}, text=True,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    done = {}
    for name, (path, proc) in started.items():
        out, err = proc.communicate(timeout=300)
        done[name] = path, subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    return done


@pytest.mark.parametrize("name", sorted(IN_SUBPROCESS))
def test_refused_by_a_real_process(real_processes, name):
    path, proc = real_processes[name]
    expected = next(e for n, _, e in ROWS if n == name)
    assert proc.returncode == 2, proc.stderr
    assert_refused(proc.stderr, proc.stdout, path, expected, path.parent)


def test_every_validation_error_is_listed_one_per_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "study.yaml"
    path.write_text(study(budget={"trials": -5}, model={"epochs": 0}, bogus=1))
    assert main(["run", str(path), "--output", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"dse: error: {path}: model.epochs: Input should be greater than or equal to 1 (got 0)",
        f"dse: error: {path}: budget.trials: Input should be greater than or equal to 1 (got -5)",
        f"dse: error: {path}: bogus: unknown key (check the spelling; see the study file "
        "reference, docs/study-file.md)",
    ]
    assert [p.name for p in tmp_path.iterdir()] == ["study.yaml"]
