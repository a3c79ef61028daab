"""Study folders written before the restructuring (commit 8b6d1a6) keep working: the frozen
study files of every shipped study (all four kinds) keep their hash, and a study folder that
dse wrote and that was killed mid-run (``tests/fixtures/v0_appaxo``: its frozen settings,
hash and trial journal) opens, reports and resumes with the same hash and its trials intact."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from dse.loop import resume_study
from dse.reports import write_reports
from dse.study import load_study
from dse.study_file import load_study_file
from tests.conftest import REPO

FIXTURES = REPO / "tests" / "fixtures"
FROZEN = sorted((FIXTURES / "frozen_v0").glob("*.yaml"))


def test_every_kind_is_among_the_frozen_studies():
    kinds = {load_study_file(path).kind.name for path in FROZEN}
    assert kinds == {"appaxo36", "xpat", "layerwise", "firmware"}


@pytest.mark.parametrize("path", FROZEN, ids=lambda p: p.stem)
def test_a_frozen_study_file_keeps_its_hash(path, monkeypatch):
    monkeypatch.chdir(REPO)  # its Verilog library members are named relative to the repository
    settings = load_study_file(path)
    assert settings.sha256() == path.with_suffix(".sha256").read_text().strip()


@pytest.fixture
def old_study(tmp_path, mnist_dir, monkeypatch, env) -> Path:
    """A copy of the killed study; its data found the way the product finds them."""
    monkeypatch.setenv("DSE_DATA_DIR", str(mnist_dir.parent))
    folder = tmp_path / "v0_appaxo"
    shutil.copytree(FIXTURES / "v0_appaxo", folder)
    return folder


def test_an_old_study_folder_opens_reports_and_resumes(old_study):
    stored = (old_study / "study.sha256").read_text().strip()
    study = load_study(old_study)
    assert study.settings.sha256() == stored and study.settings.kind.name == "appaxo36"
    before = study.trials.set_index("trial")
    assert len(before) == 6 and (before["state"] == "COMPLETE").all()
    paths = write_reports(study)
    assert all(p.is_file() for p in paths.values())
    resumed = resume_study(old_study, log=lambda m: None, progress=False)
    after = resumed.trials.set_index("trial")
    assert len(after) == 13  # the baseline and the budget's 12 search trials
    assert (after.loc[before.index, "accuracy"] == before["accuracy"]).all()
    assert (after.loc[before.index, "config"] == before["config"]).all()
    assert (old_study / "study.sha256").read_text().strip() == stored
    assert load_study(old_study).settings.sha256() == stored
