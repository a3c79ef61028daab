"""Command line: ``python -m dse run|resume|status|compare|export|characterize|generate|sensitivity|
retrain|analyze|onnx ...``.

Bad input (a malformed study file, missing data, a changed study) prints one line and exits
with code 2; nothing already stored is touched.

One module per command group, each with ``add_parsers(sub)`` (its sub-commands, their options
and ``func``) and the ``cmd_*`` functions they run; the library functions they call live where
their concept does (``dse.loop``, ``dse.hls``, ``evaluators.onnx``, ...):

- ``study``: run, resume, status, report
- ``results``: compare, export
- ``zoo``: zoo list, zoo export
- ``multipliers``: characterize, sensitivity, generate
- ``design``: retrain, hls, analyze (one design of a study)
- ``onnx``: onnx approx, sweep, evaluate, integer
- ``common``: what they share (progress lines, unwritable files as one-line errors)
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import warnings

from circuits.liberty import LibertyError
from circuits.library import LibraryError
from circuits.multiplier import MultiplierError
from circuits.tools import ToolError
from dse import __version__
from dse.cli import design, multipliers, onnx, results, study, zoo
from dse.executors.base import ExecutorError
from dse.storage import StorageError
from dse.study_file import StudyFileError
from evaluators.data import DatasetError
from evaluators.errors import AssignmentError, ModelError
from evaluators.runtime.approx_network import DeviceError
from evaluators.runtime.qgraph import UnsupportedOpError

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

# the command groups, in the order ``dse --help`` lists their commands
GROUPS = (study, results, zoo, multipliers, design, onnx)

# errors of the user's input: one line each (``dse: error: ...``) and exit code 2
USER_ERRORS = (StudyFileError, DatasetError, UnsupportedOpError, ModelError, LibertyError,
               MultiplierError, ToolError, StorageError, ExecutorError, DeviceError, LibraryError,
               AssignmentError)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dse",
        description="Design-space exploration of approximate multipliers in quantized neural networks.",
    )
    parser.add_argument("--version", action="version", version=f"dse {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for group in GROUPS:
        group.add_parsers(sub)
    return parser


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"dse: warning: {message}", file=sys.stderr)


def _terminate(signum, frame) -> None:
    raise KeyboardInterrupt  # SIGTERM stops a driver as Ctrl-C does: children and Ray shut down


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    warnings.showwarning = _show_warning
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminate)
    try:
        return args.func(args)
    except USER_ERRORS as err:
        for line in str(err).splitlines():  # a study file with several errors: one line each
            print(f"dse: error: {line}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        target = getattr(args, "folder", None) or "the study folder"
        print(f"\ndse: interrupted; finished trials are stored. Continue with: "
              f"python -m dse resume {target}", file=sys.stderr)
        return EXIT_INTERRUPTED
