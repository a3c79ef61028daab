"""What to do with one design of a study (``--design D``): ``retrain`` it through its product
table(s), write it as FPGA firmware (``hls``), ``analyze`` why it loses accuracy."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from dse.analysis import analyze
from dse.cli.common import log
from dse.hls import SYNTHESIS, HlsExport, export_hls
from dse.retrain import FOLDER, retrain_designs, retrain_option
from dse.study_file import RetrainOption


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """``retrain``, ``hls`` and ``analyze``."""
    defaults = RetrainOption()  # None below: the section's default
    retrain = sub.add_parser(
        "retrain", help="fine-tune the study's network through a design's product table(s), "
        "score it and store it in the study as a retrained trial linked to the design")
    retrain.add_argument("folder", help="a study folder (runs/NAME)")
    which = retrain.add_mutually_exclusive_group(required=True)
    which.add_argument("--design", action="append", metavar="D",
                       help="trial number, design name or configuration (repeat for several)")
    which.add_argument("--front", action="store_true",
                       help="every design of the study's Pareto front (the exact one left out)")
    retrain.add_argument("--epochs", type=int,
                         help=f"epochs of fine-tuning (default {defaults.epochs})")
    retrain.add_argument("--gradient",
                         help="ste: straight-through (the exact product's gradient); table: "
                              f"finite differences of the table (default {defaults.gradient})")
    retrain.add_argument("--learning-rate", type=float,
                         help=f"peak learning rate of the one-cycle schedule (default "
                              f"{defaults.learning_rate:g})")
    retrain.add_argument("--batch-size", type=int,
                         help=f"images per step (default {defaults.batch_size})")
    retrain.add_argument("--json", action="store_true", help="machine-readable output")
    retrain.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    retrain.set_defaults(func=cmd_retrain)

    hls = sub.add_parser(
        "hls", help="write a study's network with a design's multiplier(s) as an hls4ml "
        "project (FPGA firmware); compile and check its C simulation against the evaluator")
    hls.add_argument("folder", help="a study folder (runs/NAME)")
    hls.add_argument("--design", required=True,
                     help="trial number, design name or configuration integer")
    hls.add_argument("-o", "--output", required=True, help="project folder to write")
    hls.add_argument("--backend", default="Vitis", help="hls4ml backend: Vitis or Vivado "
                                                        "(default Vitis)")
    hls.add_argument("--compile", action="store_true",
                     help="compile the C simulation with g++")
    hls.add_argument("--check", nargs="?", type=int, const=None, default=0, metavar="N",
                     help="compile, then compare the C simulation with the study's evaluator "
                          "on every test image (or the first N)")
    hls.add_argument("--json", action="store_true", help="machine-readable output")
    hls.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    hls.set_defaults(func=cmd_hls)

    analysis = sub.add_parser("analyze", help="t-SNE views of the classifier's features and "
                              "per-layer operand heat maps of one design of a study")
    analysis.add_argument("folder", help="a study folder")
    analysis.add_argument("--design", required=True,
                          help="trial number, design name or configuration integer")
    analysis.add_argument("--output", help="folder for the figures (default: "
                                           "FOLDER/analysis/DESIGN)")
    analysis.add_argument("--images", type=int, default=2000,
                          help="embed and count the first N test images (default 2000)")
    analysis.add_argument("--perplexity", type=float, default=30.0, help="t-SNE perplexity")
    analysis.add_argument("--seed", type=int, default=0, help="t-SNE seed")
    analysis.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    analysis.set_defaults(func=cmd_analyze)


def cmd_retrain(args: argparse.Namespace) -> int:
    """Retrain, store, print the before/after table."""
    option = retrain_option(args.epochs, args.gradient, args.learning_rate, args.batch_size)
    table = retrain_designs(args.folder, None if args.front else args.design, option=option,
                            log=log, progress=not args.quiet)
    if args.json:
        print(json.dumps(table.astype(object).where(table.notna(), None).to_dict("records"),
                         indent=2))
    else:
        shown = ["design", "design_trial", "trial", "epochs", "gradient", "accuracy_before",
                 "accuracy_after", "recovered", "reused", "retrain_seconds"]
        print(table[shown].to_string(index=False, float_format=lambda v: f"{v:.4g}"))
        print(f"retrained networks in {Path(args.folder) / FOLDER}; reports rewritten")
    return 0


def cmd_hls(args: argparse.Namespace) -> int:
    """Export, print what was written and the check; exit code 1 when the check differs."""
    start = time.perf_counter()
    result = export_hls(args.folder, args.design, args.output, backend=args.backend,
                        compile=args.compile, check_images=args.check, log=log,
                        progress=not args.quiet)
    if args.json:
        print(json.dumps(result.summary(), indent=2))
    else:
        _print_hls(result, time.perf_counter() - start)
    return 0 if result.parity is None or result.parity["identical"] else 1


def _print_hls(result: HlsExport, seconds: float) -> None:
    print(f"{result.study}: design {result.design} (trial {result.trial}) as an hls4ml "
          f"{result.backend} project in {result.folder}")
    for layer in result.layers:
        print(f"  {layer['layer']} -> {layer['hls_layer']}: {layer['multiplier']}")
    if result.compile_seconds is not None:
        print(f"C simulation compiled with g++ in {result.compile_seconds:.1f} s")
    if (parity := result.parity) is not None:
        verdict = "identical" if parity["identical"] else "DIFFERENT"
        print(f"C simulation vs the study's evaluator on {parity['images']} test images: "
              f"{verdict} ({parity['same_predictions']} same predictions, "
              f"{parity['same_outputs']} same outputs bit for bit); accuracy "
              f"{parity['accuracy']:.4f} (evaluator {parity['evaluator_accuracy']:.4f}); "
              f"{parity['csim_seconds']:.1f} s of C simulation")
    print(f"next, synthesis where installed: cd {result.folder} && {SYNTHESIS[result.backend]}")
    print(f"done in {seconds:.0f} s")


def cmd_analyze(args: argparse.Namespace) -> int:
    """Analyze, print the accuracies on the images and where the files went."""
    paths = analyze(args.folder, args.design, args.output, args.images, args.perplexity,
                    args.seed, progress=not args.quiet)
    summary = json.loads(paths["json"].read_text())
    accuracies = ", ".join(f"{net} {100 * v['accuracy']:.2f}%"
                           for net, v in summary["networks"].items())
    print(f"{summary['design']} on the first {summary['images']} test images: {accuracies}; "
          f"{summary['misclassified_only_by_approximate']} misclassified only by the "
          f"approximate network ({summary['seconds']:.0f} s)")
    print(f"wrote {len(paths)} files to {paths['json'].parent}")
    return 0
