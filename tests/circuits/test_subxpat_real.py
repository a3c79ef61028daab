"""SubXPAT itself: the checkout in ``$SUBXPAT_HOME`` or ../shared/subxpat (commit f52f0b8, used
read-only), run in the environment ``make subxpat-env`` builds. Skips where there is no checkout
or no SubXPAT environment; fails where the environment is there but broken."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from circuits.cache import cache_dir
from circuits.characterize import FlowSettings
from circuits.subxpat import (
    VENV_FOLDER,
    SubxpatParams,
    job_environment,
    measure,
    preflight,
    run_subxpat,
    small_multiplier,
    subxpat_python,
)
from tests.circuits.test_xpat import needs_yosys

REPO = Path(__file__).resolve().parents[2]
HOME = Path(os.environ.get("SUBXPAT_HOME") or REPO.parent / "shared" / "subxpat").resolve()


@pytest.fixture
def subxpat(monkeypatch) -> Path:
    """The checkout, named by SUBXPAT_HOME for the adapter, or skip saying what is missing."""
    if not (HOME / "main.py").is_file():
        pytest.skip(f"no SubXPAT checkout at {HOME} (set SUBXPAT_HOME)")
    venvs = (HOME / ".venv", HOME / "venv", cache_dir() / VENV_FOLDER)
    if not os.environ.get("SUBXPAT_PYTHON") and not any((v / "bin" / "python").exists()
                                                         for v in venvs):
        pytest.skip("no SubXPAT environment: make subxpat-env (or set SUBXPAT_PYTHON)")
    monkeypatch.setenv("SUBXPAT_HOME", str(HOME))
    return HOME


def _snapshot(folder: Path) -> list:
    return sorted((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*"))


def test_subxpats_environment_passes_the_preflight(subxpat, tmp_path):
    python = subxpat_python(subxpat)
    preflight(job_environment(python, subxpat, tmp_path / "bin"), python)


@pytest.mark.slow
@needs_yosys
def test_subxpat_on_the_4x4_multiplier_harvests_circuits_within_their_thresholds(
        subxpat, tmp_path, caplog):
    """A real run (about 2 to 4 minutes): every circuit SubXPAT writes is harvested with its
    iteration, re-measured by our flow within its threshold, and the worst-case error SubXPAT
    reported for it is the one we measure. The checkout is left as it was."""
    before = _snapshot(subxpat)
    exact, layout = small_multiplier(4, signed=True)
    params = SubxpatParams(thresholds=(2,), max_inputs=4, max_outputs=2, literals_per_product=2,
                           products_per_output=1, cell_timeout_s=60, time_limit_s=420)
    with caplog.at_level(logging.WARNING, logger="circuits.subxpat"):
        harvested = run_subxpat(exact, params, layout, str(tmp_path / "jobs"))
        measured = measure(harvested, exact, layout, FlowSettings())
    assert harvested, caplog.text
    assert all(h.iteration is not None and h.model == 0 for h in harvested)
    assert len(measured) == len(harvested) and "rejected" not in caplog.text
    assert all(m.wce <= 2 for m in measured)
    assert [m.wce for m in measured] == sorted(m.wce for m in measured)
    reported = [m for m in measured if m.harvested.reported_error is not None]
    assert reported and all(m.harvested.reported_error == m.wce for m in reported)
    assert "SubXPAT reported" not in caplog.text
    assert all(m.name.startswith("mul4s_subxpat_et2_i") for m in measured)
    assert _snapshot(subxpat) == before
