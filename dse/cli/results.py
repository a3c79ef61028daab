"""What finished studies give: ``compare`` their fronts, ``export`` a study's trials as a table
or its designs as approximate ONNX models."""

from __future__ import annotations

import argparse
from pathlib import Path

from dse.cli.common import writing
from dse.comparison import compare
from dse.designs import DesignError
from dse.export import export
from dse.export_onnx import FOLDER, export_onnx
from dse.outputs import check_folder, check_png
from dse.study import load_study


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """``compare`` and ``export``."""
    cmp = sub.add_parser("compare", help="compare the Pareto fronts of finished studies")
    cmp.add_argument("folders", nargs="+", help="two or more study folders")
    cmp.add_argument("--plot", help="write the overlaid fronts and hypervolume curves (PNG)")
    cmp.add_argument("--force", action="store_true",
                     help="replace the --plot file when an earlier `compare` wrote it")
    cmp.add_argument("--json", action="store_true", help="machine-readable output")
    cmp.set_defaults(func=cmd_compare)
    exp = sub.add_parser("export", help="write a study's trials as a table, or its designs as "
                         "approximate ONNX models")
    exp.add_argument("folder")
    exp.add_argument("--format", choices=["csv", "parquet", "emgaxo", "onnx"], default="csv",
                     help="csv / parquet: every trial and metric; emgaxo: EMGAxO-style CSV; onnx: "
                          "the study's int8 network with each design's multipliers, one file per "
                          "design (retrained ones too) and index.csv")
    exp.add_argument("-o", "--output", help="file to write (default: in the study folder); for "
                                            "onnx a folder (default: export/onnx/ in it)")
    exp.add_argument("--force", action="store_true",
                     help="replace the -o file when it is an earlier export of this format")
    exp.add_argument("--design", action="append", metavar="D",
                     help="onnx: trial number, design name or configuration (repeat for several; "
                          "default: the Pareto front)")
    exp.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    exp.set_defaults(func=cmd_export)


def cmd_compare(args: argparse.Namespace) -> int:
    studies = [load_study(f) for f in args.folders]
    if args.plot:
        check_png(Path(args.plot), "compare", force=args.force)
    table = compare(studies, plot=args.plot)
    if args.json:
        print(table.to_json(orient="records", indent=2))
    else:
        print(table.drop(columns=["folder"]).to_string(index=False, float_format=lambda v: f"{v:.5g}"))
        if args.plot:
            print(f"wrote {args.plot}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    study = load_study(args.folder)
    output = Path(args.output) if args.output else None
    if args.format == "onnx":  # prints a line per file as it goes
        if output is not None and output.resolve() != (study.folder / FOLDER).resolve():
            check_folder(output)
        with writing(study.folder, "choose a writable folder with --output"):
            export_onnx(study, output, args.design, progress=not args.quiet)
        return 0
    if args.design:
        raise DesignError(f"--design chooses the designs of --format onnx; --format "
                          f"{args.format} writes every trial")
    with writing(study.folder, "choose a writable file with --output"):
        path = export(study, args.format, output, force=args.force)
    print(f"wrote {path}")
    return 0
