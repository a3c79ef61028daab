"""Malformed study files: one line naming the file, the field and what is expected; exit 2;
nothing written."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
import textwrap

import pytest

import dse
from dse.cli import main
from dse.study_file import MAX_STUDY_FILE_BYTES, load_study_file, settings_diff
from tests.conftest import REPO

GOOD = """
name: t
output: {out}
space: {{type: appaxo36, free: "000000000000000000001111111111111111"}}
strategy: {{type: random}}
budget: {{trials: 5}}
"""

MALFORMED = {
    "unknown key": ("bogus: 1\n", "bogus: unknown key"),
    "mask of 4 bits": ("space: {type: appaxo36, free: '0101'}\n",
                       "space.free: free must be a 36-character string"),
    "mask with a 2": ("space: {type: appaxo36, free: '" + "2" * 36 + "'}\n", "space.free"),
    "mask integer too wide": ("space: {type: appaxo36, free: 68719476736}\n", "fit in 36 bits"),
    "negative budget": ("budget: {trials: -5}\n", "budget.trials: Input should be greater than or equal to 1"),
    "budget not a number": ("budget: {trials: many}\n", "budget.trials: Input should be a valid integer"),
    "negative time limit": ("budget: {trials: 3, time_limit_s: -1}\n", "budget.time_limit_s"),
    "missing dataset path": ("dataset: {name: mnist, path: /no/such/folder}\n",
                             "dataset.path: folder '/no/such/folder' does not exist"),
    "unknown dataset": ("dataset: {name: imagenet}\n", "dataset.name"),
    "unknown strategy": ("strategy: {type: annealing}\n", "strategy: Input tag 'annealing'"),
    "unknown metric": ("objectives: [{metric: accuracy}, {metric: luts}]\n", "objectives.1.metric"),
    "missing Liberty file": ("hardware: {liberty: /no/such.lib.gz}\n",
                             "hardware.liberty: file '/no/such.lib.gz' does not exist"),
    "vectorless without Liberty": ("hardware: {power: vectorless}\n",
                                   "hardware: power: vectorless power needs a Liberty file"),
    "unknown power kind": ("hardware: {power: peak}\n", "hardware.power"),
    "one objective": ("objectives: [{metric: accuracy}]\n", "objectives: List should have at least 2"),
    "zero epochs": ("model: {epochs: 0}\n", "model.epochs"),
    "name with a slash": ("name: ../escape\n", "name: String should match pattern"),
    "typo in a section": ("model: {epoch: 3}\n", "model.epoch: unknown key"),
}


def write_study(tmp_path, override: str = "") -> tuple:
    out = tmp_path / "runs" / "t"
    base = GOOD.format(out=out)
    keys = {line.split(":")[0] for line in override.splitlines() if line and not line.startswith(" ")}
    lines = [line for line in base.splitlines() if line.split(":")[0] not in keys]
    path = tmp_path / "study.yaml"
    path.write_text("\n".join(lines) + "\n" + override)
    return path, out


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_study_file(tmp_path, capsys, case):
    override, expected = MALFORMED[case]
    path, out = write_study(tmp_path, override)
    assert main(["run", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"dse: error: {path}: ")
    assert expected in err
    assert not out.exists() and not (tmp_path / "runs").exists()


def test_not_yaml_and_not_a_mapping(tmp_path, capsys):
    path = tmp_path / "broken.yaml"
    path.write_text("name: [unclosed\n")
    assert main(["run", str(path)]) == 2
    assert "not valid YAML at line" in capsys.readouterr().err
    path.write_text("- just\n- a list\n")
    assert main(["run", str(path)]) == 2
    assert "expected a mapping" in capsys.readouterr().err
    assert main(["run", str(tmp_path / "absent.yaml")]) == 2
    assert "study file not found" in capsys.readouterr().err


def test_cli_error_has_no_traceback_in_a_real_process(tmp_path):
    path, out = write_study(tmp_path, "budget: {trials: -5}\n")
    proc = subprocess.run([sys.executable, "-m", "dse", "run", str(path)], cwd=REPO,
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"dse: error: {path}: budget.trials: Input should be greater than or equal to 1 (got -5)"
    ]
    assert not out.exists()


def test_defaults_and_equivalent_layouts_share_a_hash(tmp_path):
    path, _ = write_study(tmp_path)
    settings = load_study_file(path)
    assert settings.model.epochs == 20 and settings.dataset.source == "mnist"
    assert [o.direction for o in settings.objectives] == ["maximize", "minimize"]
    assert settings.space.fixed == 2**36 - 1 and settings.space.free == 0xFFFF
    other = tmp_path / "other.yaml"
    other.write_text(textwrap.dedent(f"""\
        # same study, other layout
        budget:
          trials: 5
        strategy: {{type: random}}
        space: {{type: appaxo36, free: 65535, fixed: {2**36 - 1}}}
        output: {settings.output}
        name: t
        seed: 0
        """))
    assert load_study_file(other).sha256() == settings.sha256()


def test_settings_diff_names_dotted_fields():
    assert settings_diff({"a": {"b": 1, "c": 2}, "d": 3}, {"a": {"b": 1, "c": 5}, "d": 3}) == ["a.c: 2 -> 5"]


def test_utf8_with_a_bom_and_up_to_the_size_limit_is_read(tmp_path):
    path, _ = write_study(tmp_path)
    expected = load_study_file(path)
    text = path.read_text() + "# réglages: ok\n"
    path.write_bytes(b"\xef\xbb\xbf" + text.encode())
    assert load_study_file(path) == expected
    padding = MAX_STUDY_FILE_BYTES - len(path.read_bytes())
    path.write_bytes(path.read_bytes() + b"#" * (padding - 1) + b"\n")
    assert path.stat().st_size == MAX_STUDY_FILE_BYTES
    assert load_study_file(path) == expected


def test_version_comes_from_the_package_metadata(monkeypatch):
    assert dse.__version__ == importlib.metadata.version("dse")
    proc = subprocess.run([sys.executable, "-m", "dse", "--version"], cwd=REPO,
                          capture_output=True, text=True)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, f"dse {dse.__version__}\n", "")

    def not_installed(name: str) -> str:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(dse, "version", not_installed)
    assert dse._version() == importlib.metadata.version("dse")  # read from pyproject.toml
