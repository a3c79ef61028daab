"""dse: design-space exploration of approximate multipliers in quantized neural networks.

    import dse
    s = dse.load_study("runs/lenet_appaxo")
    s.trials      # one row per evaluated configuration
    s.pareto()    # the non-dominated rows
    s.hypervolume()
    dse.compare([s, dse.load_study("runs/other")])
"""

from __future__ import annotations

import re
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from dse.comparison import compare as _compare
from dse.kinds import register
from dse.kinds.appaxo import AppAxOKind
from dse.kinds.firmware import FirmwareKind
from dse.kinds.layerwise import LayerwiseKind
from dse.kinds.xpat import XpatKind
from dse.loop import run_study as _run
from dse.study import Study, load_study
from dse.study_file import StudyFileError, StudySettings, load_study_file

__all__ = ["Study", "StudyFileError", "StudySettings", "__version__", "compare", "load_study",
           "load_study_file", "run_study"]


def _version() -> str:
    """The installed package's version; a source tree run without installing it has no
    package metadata, so its pyproject.toml says."""
    try:
        return version("dse")
    except PackageNotFoundError:
        pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
        found = re.search(r'^version = "([^"]+)"', pyproject.read_text(), re.M) \
            if pyproject.is_file() else None
        return found.group(1) if found else "unknown"


__version__ = _version()

# the built-in study kinds, by name (dse.kinds)
for _kind in (AppAxOKind(), XpatKind(), LayerwiseKind(), FirmwareKind()):
    register(_kind)


# the implementation lives in dse.comparison: a submodule named ``compare`` would replace this
# function on the package as soon as it was imported
def compare(studies, plot=None):
    """Compare the fronts of studies (``Study`` objects or folders): a table of hypervolume,
    IGD+ against the union front, coverage, front size and evaluations; optionally a plot."""
    return _compare([s if isinstance(s, Study) else load_study(s) for s in studies], plot)


def run_study(study_file, folder=None, **kwargs) -> Study:
    """Start or continue the study a study file (path or settings) describes."""
    settings = study_file if isinstance(study_file, StudySettings) else load_study_file(study_file)
    return _run(settings, folder, **kwargs)
