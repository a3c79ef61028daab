"""The multipliers a study chooses from: ``characterize`` one (or a folder of them: hardware
and error figures), ``sensitivity`` of each library member in each layer group of a layer-wise
study file, ``generate`` new ones under worst-case error thresholds (xpat, SubXPAT)."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from tqdm import tqdm

from circuits.activity import OperandStream
from circuits.baselines import baseline_family
from circuits.cache import ResultCache
from circuits.catalogue import characterize_folder, characterize_full, fpga_cost, write_catalogue
from circuits.characterize import AMBIGUOUS, FlowSettings, characterize
from circuits.generation import ExactCircuit, generate_cached, write_chain
from circuits.multiplier import Multiplier
from circuits.subxpat import ENCODINGS, SubxpatGenerator, SubxpatParams, subxpat_home
from circuits.tools import require
from circuits.xpat import XpatGenerator, XpatParams
from dse.cli.common import log, writing
from dse.kinds import kinds
from dse.kinds.layerwise import SENSITIVITY_CSV
from dse.loop import build_evaluator
from dse.outputs import check_folder
from dse.reports.chain import plot_chain
from dse.reports.sensitivity import sensitivity_plot
from dse.study_file import StudyFileError, load_study_file


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """``characterize``, ``sensitivity`` and ``generate``."""
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


def cmd_characterize(args: argparse.Namespace) -> int:
    def warn_if_ambiguous(metrics: dict) -> None:
        if metrics.get("signedness") == AMBIGUOUS:
            log(f"dse: warning: {metrics['source']}: signedness is ambiguous (the table reads as "
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


def cmd_sensitivity(args: argparse.Namespace) -> int:
    """Score each library member alone in each group of layers of a layer-wise study file."""
    settings = load_study_file(args.study)
    kind = settings.kind
    if kind.sensitivity is None:
        having = " or ".join(k.where for k in kinds() if k.sensitivity is not None)
        raise StudyFileError(f"{args.study}: space: the sensitivity is measured for {having}, "
                             f"not for {kind.where}")
    output = check_folder(Path(args.output) if args.output else Path("sensitivity") / settings.name)
    with writing(output, "choose another folder with --output"):
        output.mkdir(parents=True, exist_ok=True)
    evaluator = build_evaluator(settings, log, None if not args.quiet else False)
    drops = kind.sensitivity(evaluator, progress=not args.quiet)
    with writing(output, "choose another folder with --output"):
        drops.to_csv(output / SENSITIVITY_CSV)
        sensitivity_plot(drops, output / "sensitivity.png", settings.name)
    print("accuracy drop (percentage points), one member alone in each group of layers:")
    print((100 * drops).to_string(float_format=lambda v: f"{v:.2f}"))
    print(f"wrote {output / SENSITIVITY_CSV} and {output / 'sensitivity.png'}")
    return 0


def _int_list(text: str, option: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        values = ()
    if not values or min(values) < 1:
        raise StudyFileError(f"{option}: expected comma-separated integers >= 1, got {text!r}")
    return values


def cmd_generate(args: argparse.Namespace) -> int:
    check_folder(Path(args.output))
    require("yosys")
    thresholds = _int_list(args.thresholds, "--thresholds")
    try:
        if args.generator == "subxpat":
            subxpat_home()
            generator = SubxpatGenerator(SubxpatParams(
                thresholds=thresholds, max_inputs=args.max_inputs, max_outputs=args.max_outputs,
                literals_per_product=args.literals_per_product,
                products_per_output=args.products, shared=args.shared,
                encoding=args.encoding, cell_timeout_s=args.cell_timeout,
                time_limit_s=args.time_limit), work_dir=args.work_dir, progress=True)
        else:
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
        for point in tqdm(chain, desc="FPGA cost (synth_xilinx)", unit="circuit"):
            point.metrics.update(fpga_cost(point.multiplier(), settings.timeout_s, cache))
    folder = Path(args.output)
    csv = write_chain(chain, folder)
    rows = [p.row() for p in chain]
    baselines = []
    if args.baselines:
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
