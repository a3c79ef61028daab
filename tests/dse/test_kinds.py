"""Study kinds as plug-ins (``dse.kinds``): the registry, the schema each kind owns, no branch on
the kind outside the kinds package, and a new kind (``tests/dse/example_kind.py``) that runs a
whole study, reports, exports and reads its designs back by registering one class."""

from __future__ import annotations

import re
from pathlib import Path

import onnx
import pandas as pd
import pytest

import dse
from dse.export import export
from dse.export_onnx import export_onnx
from dse.kinds import kind_named, kinds, register, resolve, unregister
from dse.loop import resume_study, run_study
from dse.study_file import CONSTRAINT_METRICS, StudyFileError, load_study_file, parse_settings
from tests.conftest import REPO, mini_study
from tests.dse.example_kind import TruncationKind

BUILT_IN = {"appaxo36": "appaxo36", "xpat": "xpat", "layerwise": "layerwise",
            "firmware": "appaxo36"}


def test_the_built_in_kinds_are_registered_by_name():
    assert {k.name: k.space_type for k in kinds()} == BUILT_IN
    for kind in kinds():
        assert kind_named(kind.name) is kind
        assert set(kind.metrics) <= set(CONSTRAINT_METRICS), kind.name
        assert kind.settings_class.kind_name == kind.name
    with pytest.raises(ValueError, match="study kind 'appaxo36' is registered already"):
        register(kind_named("appaxo36"))
    with pytest.raises(ValueError, match="no study kind 'ga64'"):
        kind_named("ga64")


@pytest.mark.parametrize("path", sorted((REPO / "studies").glob("*.yaml")), ids=lambda p: p.stem)
def test_exactly_one_kind_claims_every_shipped_study(path):
    import yaml

    space = yaml.safe_load(path.read_text())["space"]
    kind = resolve(space)
    assert kind is not None and sum(k.claims(space) for k in kinds()) == 1
    assert kind.name == ("firmware" if "firmware" in space else space["type"])


def test_a_space_no_kind_claims_is_one_line_among_the_others(mnist_dir):
    data = mini_study(mnist_dir, budget={"trials": 0})
    data["space"] = {"type": "ga64", "bits": 3}
    with pytest.raises(StudyFileError) as err:
        parse_settings(data, "s.yaml")
    lines = str(err.value).splitlines()
    assert "s.yaml: space.type: 'ga64' is not a space type (expected one of appaxo36, xpat, " \
           "layerwise)" in lines
    assert any(line.startswith("s.yaml: budget.trials:") for line in lines)  # checked too
    data["space"] = {"free": 3}
    with pytest.raises(StudyFileError, match=r"space.type: required field is missing \(one of"):
        parse_settings(data, "s.yaml")


def test_a_metric_the_kind_does_not_measure_names_the_kinds_that_do(mnist_dir):
    data = mini_study(mnist_dir, objectives=[{"metric": "accuracy"}, {"metric": "energy"}])
    with pytest.raises(StudyFileError) as err:
        parse_settings(data, "s.yaml")
    assert str(err.value) == (
        "s.yaml: <top level>: energy is not measured for AppAxO configurations (space type "
        f"appaxo36); use {', '.join(kind_named('appaxo36').metrics)} (energy comes from a "
        "layer-wise assignment (space type layerwise))")


def test_no_code_outside_the_kinds_package_branches_on_the_kind():
    """The kind's name or space type compared, or a kind's section looked for, anywhere in the
    four packages but dse/kinds/ (a new kind must not need edits elsewhere)."""
    names = "|".join(sorted({*BUILT_IN, *BUILT_IN.values()}))
    branch = re.compile(rf"""space\.type\s*(==|!=|\bin\b)|(==|!=|\bin\b)\s*\(?["']({names})["']"""
                        rf"""|getattr\([^)]*["']firmware["']|isinstance\([^)]*Space(Settings)?\b""")
    files = [p for pkg in ("dse", "evaluators", "accel", "circuits")
             for p in (REPO / pkg).rglob("*.py") if "kinds" not in p.relative_to(REPO).parts]
    assert len(files) > 80
    found = [f"{p.relative_to(REPO)}:{n}: {line.strip()}" for p in files
             for n, line in enumerate(p.read_text().splitlines(), 1) if branch.search(line)]
    assert not found, "\n".join(found)


@pytest.fixture
def truncation():
    """The example kind, registered for one test."""
    kind = register(TruncationKind())
    yield kind
    unregister(kind.name)


def test_a_new_kind_is_one_module_and_its_registration(truncation, mnist_dir, tmp_path, env):
    folder = tmp_path / "trunc"
    data = mini_study(mnist_dir, name="trunc", output=str(folder), budget={"trials": 4},
                      strategy={"type": "grid"},
                      objectives=[{"metric": "accuracy"}, {"metric": "mae"}],
                      reference_point={"accuracy": 0.0, "mae": 1e6})
    data["space"] = {"type": "truncation", "columns": [1, 2, 4, 6]}
    settings = parse_settings(data)
    assert settings.kind is truncation and type(settings).__name__ == "TruncationStudySettings"
    study = run_study(settings, log=lambda m: None, progress=False)
    done = study.trials[study.trials["state"] == "COMPLETE"]
    assert sorted(done["columns"]) == [0, 1, 2, 4, 6]  # the exact baseline, then every choice
    assert done.set_index("columns")["mae"].is_monotonic_increasing
    # the frozen study reads back as the same kind, and resumes with nothing left to do
    assert load_study_file(folder / "study.yaml").kind is truncation
    again = resume_study(folder, log=lambda m: None, progress=False)
    assert len(again.trials) == len(study.trials)
    # reports, exports and read-back work through the kind alone
    assert (folder / "pareto.png").is_file() and (folder / "pareto.csv").is_file()
    assert pd.read_csv(export(again, "csv"))["columns"].notna().all()
    with pytest.raises(StudyFileError, match="the emgaxo format lists AppAxO configurations; "
                                             "this is an truncation study"):
        export(again, "emgaxo")
    index = export_onnx(again, progress=False, log=lambda m: None)
    assert len(index) == len(again.pareto()) and all(
        onnx.load(str(folder / "export" / "onnx" / f)).graph.node for f in index["file"])
    assert dse.load_study(folder).settings.kind.name == "truncation"


def test_the_unregistered_kind_is_unknown_again(tmp_path: Path):
    assert resolve({"type": "truncation"}) is None


def test_sensitivity_is_refused_for_a_kind_without_layers(mnist_dir, tmp_path, capsys):
    """``dse sensitivity`` asks the kind; one line, exit 2, nothing built or written."""
    import yaml

    from dse.cli import main

    path = tmp_path / "appaxo.yaml"
    path.write_text(yaml.safe_dump(mini_study(mnist_dir)))
    assert main(["sensitivity", str(path), "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"dse: error: {path}: space: the sensitivity is measured for a layer-wise "
                   "assignment (space type layerwise), not for AppAxO configurations (space "
                   "type appaxo36)"]
    assert not (tmp_path / "out").exists()
