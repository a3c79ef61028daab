"""Command line: ``python -m dse run|resume|status|compare|export|characterize|generate|sensitivity|
retrain|analyze|onnx ...``.

Bad input (a malformed study file, missing data, a changed study) prints one line and exits
with code 2; nothing already stored is touched.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
import threading
import warnings
from pathlib import Path

from dse.study_file import DATASET_NAMES, StudyFileError

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def _user_errors() -> tuple[type[BaseException], ...]:
    from circuits.liberty import LibertyError
    from circuits.library import LibraryError
    from circuits.multiplier import MultiplierError
    from circuits.tools import ToolError
    from dse.executors.base import ExecutorError
    from dse.storage import StorageError
    from evaluators.approx_network import DeviceError
    from evaluators.approx_runner import UnsupportedOpError
    from evaluators.datasets import DatasetError
    from evaluators.errors import AssignmentError, ModelError

    return (StudyFileError, DatasetError, UnsupportedOpError, ModelError, LibertyError,
            MultiplierError, ToolError, StorageError, ExecutorError, DeviceError, LibraryError,
            AssignmentError)


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
    """Reads only: works on an archived (read-only) folder and while a driver runs."""
    from dse.lock import holder
    from dse.study import load_study

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


def cmd_sensitivity(args: argparse.Namespace) -> int:
    """Score each library member alone in each group of layers of a layer-wise study file."""
    from dse.layerwise import SENSITIVITY_CSV, sensitivity
    from dse.loop import build_evaluator
    from dse.report import sensitivity_plot
    from dse.study_file import load_study_file

    settings = load_study_file(args.study)
    if settings.space.type != "layerwise":
        raise StudyFileError(f"{args.study}: space: the sensitivity is measured for a layer-wise "
                             f"study (space type layerwise), not {settings.space.type}")
    from dse.outputs import check_folder

    output = check_folder(Path(args.output) if args.output else Path("sensitivity") / settings.name)
    with _writing(output, "choose another folder with --output"):
        output.mkdir(parents=True, exist_ok=True)
    evaluator = build_evaluator(settings, _log, None if not args.quiet else False)
    drops = sensitivity(evaluator, progress=not args.quiet)
    with _writing(output, "choose another folder with --output"):
        drops.to_csv(output / SENSITIVITY_CSV)
        sensitivity_plot(drops, output / "sensitivity.png", settings.name)
    print("accuracy drop (percentage points), one member alone in each group of layers:")
    print((100 * drops).to_string(float_format=lambda v: f"{v:.2f}"))
    print(f"wrote {output / SENSITIVITY_CSV} and {output / 'sensitivity.png'}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from dse.report import write_reports
    from dse.study import load_study

    study = load_study(args.folder)
    with _writing(study.folder, "write the reports there"):
        paths = write_reports(study)
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


@contextlib.contextmanager
def _writing(where: Path, remedy: str):
    """A file that cannot be written (a read-only, archived study) as a one-line error."""
    try:
        yield
    except OSError as err:
        raise StudyFileError(f"{err.filename or where}: cannot write ({err.strerror}); "
                             f"{remedy}") from None


def cmd_characterize(args: argparse.Namespace) -> int:
    import tempfile

    from circuits.activity import OperandStream
    from circuits.cache import ResultCache
    from circuits.catalogue import characterize_folder, characterize_full, write_catalogue
    from circuits.characterize import AMBIGUOUS, FlowSettings
    from circuits.multiplier import Multiplier

    def warn_if_ambiguous(metrics: dict) -> None:
        if metrics.get("signedness") == AMBIGUOUS:
            _log(f"dse: warning: {metrics['source']}: signedness is ambiguous (the table reads as "
                 "neither a signed nor an unsigned multiplier), reported unsigned as Verilog reads "
                 "its ports; declare the ports signed/unsigned or pass --signedness")

    settings = FlowSettings(liberty=args.liberty, clock_period_ns=args.clock_ns)
    signed = {"signed": True, "unsigned": False}.get(args.signedness)
    workload = None
    if args.workload:
        if not Path(args.workload).is_file():
            raise StudyFileError(f"{args.workload}: workload file not found (a study's workload.npz)")
        workload = OperandStream.load(Path(args.workload))
    cache = ResultCache()
    target = Path(args.target)
    if target.is_dir():
        from dse.outputs import check_folder

        output = check_folder(Path(args.output) if args.output
                              else Path("catalogues") / target.resolve().name)
        try:  # a folder the catalogue cannot be written to fails now, not after the work
            output.mkdir(parents=True, exist_ok=True)
            tempfile.TemporaryFile(dir=output).close()
        except OSError as err:
            raise StudyFileError(f"{output}: cannot write the catalogue there "
                                 f"({err.strerror}); choose another folder with --output") from None
        frame, designs = characterize_folder(target, settings, workload, cache, fpga=not args.no_fpga,
                                    progress=not args.json, signed=signed)
        for metrics in frame.to_dict("records"):
            warn_if_ambiguous(metrics)
        csv, parquet = write_catalogue(frame, designs, output)
        if args.json:
            print(frame.to_json(orient="records", indent=2))
        else:
            shown = ["name", "signedness", "mae", "area", "delay", "power_uniform", "fpga_luts",
                     "error"]
            print(frame[shown].to_string(index=False, float_format=lambda v: f"{v:.4g}"))
            print(f"wrote {csv} and {parquet}")
        return 0
    if not args.target.startswith(("appaxo:", "baseline:")) and not target.is_file():
        raise StudyFileError(f"{target}: no such file or folder "
                             "(expected FILE.v, a folder, appaxo:CONFIG or baseline:NAME)")
    mult = Multiplier.parse(args.target, signed)
    metrics = characterize_full(mult, settings, workload, cache, fpga=not args.no_fpga).metrics
    warn_if_ambiguous(metrics)
    if args.json:
        print(json.dumps(metrics, indent=2))
    else:
        width = max(len(k) for k in metrics)
        for key, value in metrics.items():
            shown = f"{value:.6g}" if isinstance(value, float) else value
            print(f"{key:<{width}}  {shown}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from dse.comparison import compare
    from dse.outputs import check_png
    from dse.study import load_study

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
    from dse.designs import DesignError
    from dse.export import export
    from dse.study import load_study

    study = load_study(args.folder)
    output = Path(args.output) if args.output else None
    if args.format == "onnx":  # prints a line per file as it goes
        from dse.export_onnx import FOLDER, export_onnx
        from dse.outputs import check_folder

        if output is not None and output.resolve() != (study.folder / FOLDER).resolve():
            check_folder(output)
        with _writing(study.folder, "choose a writable folder with --output"):
            export_onnx(study, output, args.design, progress=not args.quiet)
        return 0
    if args.design:
        raise DesignError(f"--design chooses the designs of --format onnx; --format "
                          f"{args.format} writes every trial")
    with _writing(study.folder, "choose a writable file with --output"):
        path = export(study, args.format, output, force=args.force)
    print(f"wrote {path}")
    return 0


def cmd_zoo_list(args: argparse.Namespace) -> int:
    """The architecture registry: parameters and multiplications per image on MNIST- and
    CIFAR-shaped inputs (10 classes)."""
    from evaluators.zoo import ARCHITECTURES, macs, parameters

    shapes = {"28x28x1": (1, 28, 28), "32x32x3": (3, 32, 32)}
    print(f"{'arch':<14} {'params 32x32x3':>14} " + " ".join(f"{'MACs ' + k:>15}" for k in shapes)
          + "  description")
    for name, arch in ARCHITECTURES.items():
        counts = " ".join(f"{macs(name, s, 10):>15,}" for s in shapes.values())
        print(f"{name:<14} {parameters(name, shapes['32x32x3'], 10):>14,} {counts}  {arch.title}")
    return 0


def cmd_zoo_export(args: argparse.Namespace) -> int:
    """Train (or reuse) a registry network on a dataset, as a study would, and write its float
    (or int8) ONNX file: the start of the bring-your-own-model route."""
    import onnx

    from dse.outputs import check_onnx, write_onnx
    from dse.study_file import ModelSettings, QuantizationSettings
    from evaluators.datasets import load_split
    from evaluators.network import TrainingSettings, prepare_network
    from evaluators.preprocess import default_preprocessing

    check_onnx(Path(args.output), "zoo network", force=args.force)  # before training
    defaults = ModelSettings()
    training = TrainingSettings(
        arch=args.arch, epochs=args.epochs or defaults.epochs,
        batch_size=args.batch_size or defaults.batch_size,
        learning_rate=args.learning_rate or defaults.learning_rate, augment=defaults.augment,
        seed=args.seed, calibration_size=QuantizationSettings().calibration_size,
        checkpoint=args.checkpoint)
    dataset, path = ("npz", args.npz) if args.npz else (args.dataset, args.path)
    train = load_split(dataset, "train", path).head(args.train_size)
    test = load_split(dataset, "test", path)
    prepared = prepare_network(training, train, test, preprocessing=default_preprocessing(dataset),
                               log=_log)
    source = prepared.int8_onnx if args.int8 else prepared.float_onnx
    out = Path(args.output)
    with _writing(out.parent if str(out.parent) else Path("."), "choose a writable -o file"):
        write_onnx(onnx.load(str(source)), out, "zoo network", force=args.force)
    for kind in ("float", "int8"):
        m = prepared.report[kind]
        print(f"{kind}: accuracy {m['accuracy']:.4f}, macro F1 {m['f1_macro']:.4f} on "
              f"{prepared.report['test_images']} {dataset} test images")
    print(f"wrote {out} ({'int8' if args.int8 else 'float'} ONNX of {args.arch})")
    return 0


def _summary(study) -> dict:
    from dse.indicators import normalized
    from dse.report import study_box

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
    from dse.report import minimization_form

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


def _int_list(text: str, option: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        values = ()
    if not values or min(values) < 1:
        raise StudyFileError(f"{option}: expected comma-separated integers >= 1, got {text!r}")
    return values


def cmd_generate(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from circuits.cache import ResultCache
    from circuits.characterize import FlowSettings, characterize
    from circuits.generation import ExactCircuit, generate_cached, write_chain
    from circuits.multiplier import Multiplier
    from circuits.tools import require
    from dse.outputs import check_folder
    from dse.report import plot_chain

    check_folder(Path(args.output))
    require("yosys")
    thresholds = _int_list(args.thresholds, "--thresholds")
    try:
        if args.generator == "subxpat":
            from circuits.subxpat import SubxpatGenerator, SubxpatParams, subxpat_home

            subxpat_home()
            generator = SubxpatGenerator(SubxpatParams(
                thresholds=thresholds, max_inputs=args.max_inputs, max_outputs=args.max_outputs,
                literals_per_product=args.literals_per_product,
                products_per_output=args.products, shared=args.shared,
                encoding=args.encoding, cell_timeout_s=args.cell_timeout,
                time_limit_s=args.time_limit), work_dir=args.work_dir, progress=True)
        else:
            from circuits.xpat import XpatGenerator, XpatParams

            generator = XpatGenerator(XpatParams(
                thresholds=thresholds, max_inputs=args.max_inputs, max_outputs=args.max_outputs,
                literals_per_product=args.literals_per_product, products=args.products,
                shared=args.shared, exact_zero=args.exact_zero, steps_per_threshold=args.steps,
                attempts=args.attempts, time_limit_s=args.time_limit))
    except ValueError as err:
        raise StudyFileError(f"dse generate {args.generator}: {err}") from None
    signed = not args.unsigned
    exact = ExactCircuit.multiplier(signed) if args.exact is None else \
        ExactCircuit.from_multiplier(Multiplier.from_file(args.exact), signed)
    settings = FlowSettings(liberty=args.liberty)
    cache = ResultCache()
    bar = tqdm(unit="circuit", desc=f"{args.generator} on {exact.name}", dynamic_ncols=True)

    def progress(point) -> None:
        bar.update(1)
        bar.set_postfix(threshold=point.threshold, wce=point.metrics["wce"],
                        area=f"{point.metrics['area']:.4g}")

    try:
        chain = generate_cached(generator, exact, settings, cache, progress)
    finally:
        bar.close()
    if not chain:
        print(f"dse: error: generate {args.generator}: no circuit within the thresholds "
              f"{args.thresholds} (time limit {args.time_limit:g} s; the warnings above say why)",
              file=sys.stderr)
        return 1
    if not args.no_fpga:
        from circuits.catalogue import fpga_cost

        for point in tqdm(chain, desc="FPGA cost (synth_xilinx)", unit="circuit"):
            point.metrics.update(fpga_cost(point.multiplier(), settings.timeout_s, cache))
    folder = Path(args.output)
    csv = write_chain(chain, folder)
    rows = [p.row() for p in chain]
    baselines = []
    if args.baselines:
        from circuits.baselines import baseline_family

        baselines = [characterize(m.multiplier(), settings, cache=cache).metrics
                     for m in tqdm(baseline_family(signed), desc="baselines", unit="circuit")]
    exact_area = characterize(Multiplier(exact.top, exact.verilog, exact.top, False), settings,
                              cache=cache).metrics["area"]
    if rows:
        plot_chain(rows, baselines, exact_area, folder / "chain.png",
                   f"{exact.name}: {args.generator} chain (exact: {exact_area:.4g})")
    for row in rows:
        print(f"{row['name']:<24} threshold {row['threshold']:>6g}  WCE {row['wce']:>6g}  "
              f"MAE {row['mae']:>9.3f}  area {row['area']:>9.4g}  ({row['seconds']:.0f} s)")
    print(f"{len(rows)} circuits; exact area {exact_area:.4g}; wrote {csv}"
          + (f" and {folder / 'chain.png'}" if rows else ""))
    return 0


def build_parser() -> argparse.ArgumentParser:
    from circuits.subxpat import ENCODINGS
    from dse import __version__

    parser = argparse.ArgumentParser(
        prog="dse",
        description="Design-space exploration of approximate multipliers in quantized neural networks.",
    )
    parser.add_argument("--version", action="version", version=f"dse {__version__}")
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
    report = sub.add_parser("report", help="write a study's tables and plots again (trials.csv, "
                            "pareto.csv, pareto.png, pareto.html, hypervolume.png)")
    report.add_argument("folder")
    report.set_defaults(func=cmd_report)
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
    zoo = sub.add_parser("zoo", help="the architecture registry: list it, or train and export "
                         "a network as ONNX").add_subparsers(dest="zoo_command", required=True)
    zoo.add_parser("list", help="architectures, parameters and MACs per image").set_defaults(
        func=cmd_zoo_list)
    zex = zoo.add_parser("export", help="train (or reuse) a registry network on a dataset and "
                         "write its ONNX file")
    zex.add_argument("arch", help="registry architecture (python -m dse zoo list)")
    zex.add_argument("--dataset", default="mnist", choices=DATASET_NAMES)
    zex.add_argument("--path", help="folder holding the dataset's files")
    zex.add_argument("--npz", help="your own data instead: x_train, y_train, x_test, y_test")
    zex.add_argument("--checkpoint", help="PyTorch state dict: use these weights, do not train")
    zex.add_argument("--train-size", type=int, help="train on the first N training samples")
    zex.add_argument("--epochs", type=int)
    zex.add_argument("--batch-size", type=int)
    zex.add_argument("--learning-rate", type=float)
    zex.add_argument("--seed", type=int, default=0)
    zex.add_argument("--int8", action="store_true",
                     help="write the int8 (QOperator) model instead of the float one")
    zex.add_argument("-o", "--output", required=True, help="ONNX file to write")
    zex.add_argument("--force", action="store_true",
                     help="replace the -o file when an earlier `zoo export` wrote it")
    zex.set_defaults(func=cmd_zoo_export)
    char = sub.add_parser(
        "characterize", help="synthesize and analyse multipliers: FILE.v, appaxo:CONFIG, "
        "baseline:NAME, or a folder")
    char.add_argument("target", help="a Verilog file, appaxo:CONFIG (integer or 36-bit string), "
                                     "baseline:NAME (trunc_s_k6, trunc_u_k4_c, bam_s_h2_v7), "
                                     "or a folder of .v files (writes catalogue.csv/.parquet)")
    char.add_argument("--liberty", help="Liberty file (.lib/.lib.gz) or nangate45 | sky130hd; "
                                        "default: the Liberty-free Yosys-gate estimate")
    char.add_argument("--clock-ns", type=float, default=10.0, help="clock period for power (ns)")
    char.add_argument("--workload", help="a study's workload.npz: adds workload-driven power")
    char.add_argument("--signedness", choices=["signed", "unsigned", "infer"], default="infer",
                      help="for ports declared neither signed nor unsigned (default: infer from "
                           "the table; a row it cannot tell is marked ambiguous, with a warning)")
    char.add_argument("--no-fpga", action="store_true", help="skip the FPGA cost (synth_xilinx)")
    char.add_argument("--output", help="folder for the catalogue of a folder target (default: "
                                       "catalogues/<folder name> where you run; the input folder "
                                       "is never written)")
    char.add_argument("--json", action="store_true", help="machine-readable output")
    char.set_defaults(func=cmd_characterize)
    sens = sub.add_parser("sensitivity", help="layer sensitivity of a layer-wise study file: "
                          "accuracy drop with each library member alone in each layer group")
    sens.add_argument("study", help="a study file with space type layerwise")
    sens.add_argument("-o", "--output", help="folder for sensitivity.csv and sensitivity.png "
                                             "(default: sensitivity/<study name>)")
    sens.add_argument("--quiet", action="store_true", help="no progress bars")
    sens.set_defaults(func=cmd_sensitivity)
    gen = sub.add_parser("generate", help="generate approximate multipliers under worst-case "
                         "error thresholds (the built-in xpat generator, or SubXPAT)")
    gen.add_argument("generator", choices=["xpat", "subxpat"],
                     help="xpat: built in; subxpat: the checkout in $SUBXPAT_HOME")
    gen.add_argument("--output", required=True, help="folder for the designs, chain.csv and chain.png")
    gen.add_argument("--thresholds", default="16,32,64,128,256,512,1024",
                     help="worst-case error thresholds, walked in increasing order")
    gen.add_argument("--unsigned", action="store_true", help="an unsigned multiplier (default signed)")
    gen.add_argument("--exact", help="Verilog of the exact multiplier to start from "
                                     "(default: the built-in array multiplier)")
    gen.add_argument("--liberty", help="Liberty file or nangate45 | sky130hd (default: the "
                                       "Liberty-free estimate)")
    gen.add_argument("--max-inputs", type=int, default=8, help="subgraph inputs")
    gen.add_argument("--max-outputs", type=int, default=3, help="subgraph outputs")
    gen.add_argument("--literals-per-product", type=int, default=3)
    gen.add_argument("--products", type=int, default=2, help="products per output (or shared)")
    gen.add_argument("--shared", action="store_true", help="one pool of products for all outputs")
    gen.add_argument("--exact-zero", action="store_true",
                     help="products with a zero operand stay exactly 0 (xpat)")
    gen.add_argument("--steps", type=int, default=8, help="accepted circuits per threshold (xpat)")
    gen.add_argument("--attempts", type=int, default=6, help="subgraphs tried per step (xpat)")
    gen.add_argument("--time-limit", type=float, default=600.0,
                     help="seconds for the whole run (subxpat: shared among the thresholds)")
    gen.add_argument("--cell-timeout", type=float, default=600.0,
                     help="seconds for one cell of SubXPAT's template grid (subxpat)")
    gen.add_argument("--encoding", choices=ENCODINGS, default="z3bvec",
                     help="SubXPAT's solver encoding (subxpat)")
    gen.add_argument("--work-dir", help="keep each SubXPAT job's folder, with its subxpat.log, "
                                        "here (subxpat; default: a deleted temporary)")
    gen.add_argument("--no-fpga", action="store_true", help="skip the FPGA cost (synth_xilinx)")
    gen.add_argument("--baselines", action="store_true",
                     help="also characterize the truncated and broken-array baselines and plot them")
    gen.set_defaults(func=cmd_generate)
    from dse.analysis import add_parser as add_analyze
    from dse.hls import add_parser as add_hls
    from dse.onnx_approx import add_parser as add_onnx_approx
    from dse.onnx_integer import add_parser as add_onnx_integer
    from dse.onnx_sweep import add_parser as add_onnx_sweep
    from dse.retrain import add_parser as add_retrain

    add_retrain(sub)
    add_hls(sub)
    add_analyze(sub)
    onnx = sub.add_parser("onnx", help="approximate ONNX models (written, swept, scored, run in "
                                       "onnxruntime with dse's custom ops) and integer-only graphs")
    onnx_sub = onnx.add_subparsers(dest="onnx_command", required=True)
    add_onnx_approx(onnx_sub)
    add_onnx_sweep(onnx_sub)
    add_onnx_integer(onnx_sub)
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
    except _user_errors() as err:
        for line in str(err).splitlines():  # a study file with several errors: one line each
            print(f"dse: error: {line}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        target = getattr(args, "folder", None) or "the study folder"
        print(f"\ndse: interrupted; finished trials are stored. Continue with: "
              f"python -m dse resume {target}", file=sys.stderr)
        return EXIT_INTERRUPTED
