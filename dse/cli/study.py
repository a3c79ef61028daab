"""The study commands: ``run`` a study file, ``resume`` a study folder, its ``status`` and its
``report`` (tables and plots written again)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from dse.cli.common import log, writing
from dse.indicators import normalized
from dse.lock import holder
from dse.loop import resume_study, run_study
from dse.reports import write_reports
from dse.reports.objectives import minimization_form, study_box
from dse.study import load_study
from dse.study_file import load_study_file


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """``run``, ``resume``, ``status`` and ``report``."""
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
    report = sub.add_parser("report", help="write a study's tables and plots again (trials.csv, "
                            "pareto.csv, pareto.png, pareto.html, hypervolume.png)")
    report.add_argument("folder")
    report.set_defaults(func=cmd_report)


def cmd_run(args: argparse.Namespace) -> int:
    settings = load_study_file(args.study)
    folder = Path(args.output) if args.output else settings.output_dir
    args.folder = folder  # named by the interruption message
    study = run_study(settings, folder, log=log, progress=not args.quiet)
    _print_summary(study)
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    study = resume_study(args.folder, log=log, progress=not args.quiet)
    _print_summary(study)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    """Reads only: works on an archived (read-only) folder and while a driver runs."""
    study = load_study(args.folder)
    summary = _summary(study)
    summary["driver"] = holder(study.folder)
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
    else:
        _print_summary(study, summary)
        if summary["driver"]:
            print(f"running: a driver holds the study ({summary['driver']})")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    study = load_study(args.folder)
    with writing(study.folder, "write the reports there"):
        paths = write_reports(study)
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


def _summary(study) -> dict:
    trials = study.trials
    counts = trials["state"].value_counts().to_dict() if not trials.empty else {}
    front = study.pareto()
    baseline = trials[trials["role"] == "baseline"] if not trials.empty else trials
    cols = ["config_bits", "config", "design", *study.objectives]
    retrained = study.retrained()
    reference, _, box = study_box(study) if study.reference_point else (None, None, 0.0)
    # a share of the box means something only once a searched design lies inside the box (the
    # exact baseline alone would make it 1)
    share = reference is not None and _searched_inside(study, reference)
    after = study.hypervolume(retrained=True) if not retrained.empty else None
    return {
        "study": study.name,
        "folder": str(study.folder),
        "search_trials": study.search_trials_done(),
        "budget": study.settings.budget.trials,
        "states": counts,
        "exact": baseline[study.objectives].iloc[0].to_dict() if not baseline.empty else None,
        "reference_point": study.reference_point,
        "hypervolume": study.hypervolume(),
        "hypervolume_normalized": normalized(study.hypervolume(), box) if share else None,
        "constraints": study.settings.constraints,
        "feasible_trials": len(study.feasible()),
        "pareto_front": front[[c for c in cols if c in front]].to_dict(orient="records"),
        # designs retrained since (dse retrain): accuracy before and after, the front's
        # hypervolume with each design at its best retrained accuracy
        "retrained": retrained.drop(columns=["model"]).astype(object)
        .where(retrained.notna(), None).to_dict(orient="records"),
        "hypervolume_retrained": after,
        "hypervolume_retrained_normalized": normalized(after, box)
        if after is not None and share else None,
    }


def _searched_inside(study, reference) -> bool:
    """Whether a feasible searched design lies inside the reference box (minimization form)."""
    feasible = study.feasible()
    searched = feasible[feasible["role"] != "baseline"] if not feasible.empty else feasible
    return bool(len(searched)) and bool(
        (minimization_form(study, searched) < reference).all(axis=1).any())


def _print_summary(study, summary: dict | None = None) -> None:
    summary = summary or _summary(study)
    print(f"study {summary['study']} ({summary['folder']}): "
          f"{summary['search_trials']}/{summary['budget']} search trials, states {summary['states']}")
    if summary["exact"]:
        print("exact multiplier: " + ", ".join(f"{k} {v:g}" for k, v in summary["exact"].items()))
    if summary["reference_point"]:
        ref = ", ".join(f"{k} {v:g}" for k, v in summary["reference_point"].items())
        share = summary["hypervolume_normalized"]
        share = f"{share:.4f}" if share is not None else "n/a (no design inside the reference box)"
        print(f"hypervolume {summary['hypervolume']:.6g}, {share} of the box between the ideal "
              f"and the reference point ({ref})")
    if summary["constraints"]:
        print(f"constraints {'; '.join(summary['constraints'])}: "
              f"{summary['feasible_trials']} feasible completed trials")
    front = summary["pareto_front"]
    print(f"Pareto front ({len(front)} configurations):")
    for row in front[:20]:
        print("  " + "  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                               for k, v in row.items() if k != "config"))
    if len(front) > 20:
        print(f"  ... {len(front) - 20} more in pareto.csv")
    _print_retrained(summary)


def _print_retrained(summary: dict) -> None:
    """The retrained designs, accuracy before -> after, and the hypervolume they give."""
    if not summary["retrained"]:
        return
    print(f"retrained designs ({len(summary['retrained'])}; accuracy before -> after, share of "
          "the drop against the exact multiplier recovered):")
    for r in summary["retrained"][:20]:
        recovered = f", {r['recovered']:.0%} recovered" if r["recovered"] is not None else ""
        print(f"  {r['design']} (trial {r['design_trial']} -> {r['trial']}): {r['gradient']}, "
              f"{r['epochs']} epoch{'s' if r['epochs'] != 1 else ''}: "
              f"{r['accuracy_before']:.4f} -> {r['accuracy_after']:.4f}{recovered}"
              f"{'' if r['feasible'] else ' (infeasible)'}")
    if len(summary["retrained"]) > 20:
        print(f"  ... {len(summary['retrained']) - 20} more in retrained.csv")
    if summary["hypervolume_retrained"] is not None and summary["hypervolume"]:
        gain = summary["hypervolume_retrained"] / summary["hypervolume"] - 1
        share = summary["hypervolume_retrained_normalized"]
        share = f"{share:.4f}" if share is not None else "n/a"
        print(f"hypervolume with each design at its best retrained accuracy "
              f"{summary['hypervolume_retrained']:.6g}, {share} of the box ({gain:+.1%})")
