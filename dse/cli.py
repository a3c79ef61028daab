"""Command line: ``python -m dse run|resume|status ...``.

Bad input (a malformed study file, missing data, a changed study) prints one line and exits
with code 2; nothing already stored is touched.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from dse.study_file import StudyFileError

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def _user_errors() -> tuple[type[BaseException], ...]:
    from circuits.liberty import LibertyError
    from circuits.multiplier import MultiplierError
    from circuits.tools import ToolError
    from evaluators.approx_runner import UnsupportedOpError
    from evaluators.datasets import DatasetError

    return (StudyFileError, DatasetError, UnsupportedOpError, LibertyError, MultiplierError,
            ToolError)


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def cmd_run(args: argparse.Namespace) -> int:
    from dse.loop import run_study
    from dse.study_file import load_study_file

    settings = load_study_file(args.study)
    folder = Path(args.output) if args.output else settings.output_dir
    args.folder = folder  # named by the interruption message
    study = run_study(settings, folder, log=_log, progress=not args.quiet)
    _print_summary(study)
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    from dse.loop import resume_study

    study = resume_study(args.folder, log=_log, progress=not args.quiet)
    _print_summary(study)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from dse.report import write_reports
    from dse.study import load_study

    study = load_study(args.folder)
    paths = write_reports(study)
    summary = _summary(study)
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
    else:
        _print_summary(study, summary)
        print(f"wrote {paths['pareto']} and {paths['plot']}")
    return 0


def _summary(study) -> dict:
    trials = study.trials
    counts = trials["state"].value_counts().to_dict() if not trials.empty else {}
    front = study.pareto()
    baseline = trials[trials["role"] == "baseline"] if not trials.empty else trials
    cols = ["config_bits", "config", *study.objectives]
    return {
        "study": study.name,
        "folder": str(study.folder),
        "search_trials": study.search_trials_done(),
        "budget": study.settings.budget.trials,
        "states": counts,
        "exact": baseline[study.objectives].iloc[0].to_dict() if not baseline.empty else None,
        "pareto_front": front[[c for c in cols if c in front]].to_dict(orient="records"),
    }


def _print_summary(study, summary: dict | None = None) -> None:
    summary = summary or _summary(study)
    print(f"study {summary['study']} ({summary['folder']}): "
          f"{summary['search_trials']}/{summary['budget']} search trials, states {summary['states']}")
    if summary["exact"]:
        print("exact multiplier: " + ", ".join(f"{k} {v:g}" for k, v in summary["exact"].items()))
    front = summary["pareto_front"]
    print(f"Pareto front ({len(front)} configurations):")
    for row in front[:20]:
        print("  " + "  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                               for k, v in row.items() if k != "config"))
    if len(front) > 20:
        print(f"  ... {len(front) - 20} more in pareto.csv")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dse",
        description="Design-space exploration of approximate multipliers in quantized neural networks.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="start or continue the study a study file describes")
    run.add_argument("study", help="study YAML file")
    run.add_argument("--output", help="study folder (default: the file's output, else runs/<name>)")
    run.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    run.set_defaults(func=cmd_run)
    resume = sub.add_parser("resume", help="continue a study from its folder")
    resume.add_argument("folder")
    resume.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    resume.set_defaults(func=cmd_resume)
    status = sub.add_parser("status", help="progress and Pareto front of a study folder")
    status.add_argument("folder")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(func=cmd_status)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except _user_errors() as err:
        print(f"dse: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        target = getattr(args, "folder", None) or "the study folder"
        print(f"\ndse: interrupted; finished trials are stored. Continue with: "
              f"python -m dse resume {target}", file=sys.stderr)
        return EXIT_INTERRUPTED
