"""The ``onnx`` commands: approximate ONNX models written (``approx``: a model's multipliers
replaced; ``sweep``: EMGAxO's flow of one file per AppAxO configuration), scored in a batch
(``evaluate``), run in onnxruntime with dse's custom ops; and integer-only graphs (``integer``:
an int8 QDQ model transformed step by step, each step checked against the quantized model)."""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
from tqdm import tqdm

from circuits.cache import ResultCache
from circuits.characterize import FlowSettings, characterize
from circuits.multiplier import Multiplier, MultiplierError
from circuits.product_table import SHAPE, ProductTable
from dse.outputs import check_file, check_folder, check_onnx, csv_header, write_onnx
from dse.space import AppAxOSubspace
from dse.study_file import StudyFileError, parse_bits
from evaluators.data import load_split
from evaluators.data.preprocess import default_preprocessing
from evaluators.errors import ModelError
from evaluators.networks.model_import import load_model
from evaluators.networks.ort_exactness import session as ort_session
from evaluators.onnx.approximate import (
    DSE_DOMAIN,
    EMGAXO_DOMAIN,
    approximate_model,
    rewritable_nodes,
)
from evaluators.onnx.integer_graph import feed, integer_only, parse_steps, run_steps
from evaluators.onnx.sweep import COLUMNS, done_files, evaluate_folder, sweep

ALL_FREE = "1" * 36
WHOLE_LIMIT = 1 << 16  # configurations a sweep writes without --count
DEFAULT_STEPS = ("add_rescaling,embed_act,prune_qdq,fold_op_scales,split_bias_add,integer_ops,"
                 "scale_out")


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """The ``onnx`` group: ``approx``, ``sweep``, ``evaluate`` and ``integer``."""
    group = sub.add_parser("onnx", help="approximate ONNX models (written, swept, scored, run in "
                                        "onnxruntime with dse's custom ops) and integer-only graphs")
    onnx_sub = group.add_subparsers(dest="onnx_command", required=True)
    approx = onnx_sub.add_parser(
        "approx", help="replace the multipliers of a QOperator int8 model's QLinearConv/QGemm/"
                       "QLinearMatMul nodes by an approximate one (custom-domain nodes)")
    approx.add_argument("model", help="QOperator int8 ONNX model")
    approx.add_argument("--multiplier", required=True, action="append", metavar="[NODE=]SPEC",
                        help="appaxo:CONFIG (integer or 36-bit string; written as the INIT_Value "
                             "attribute), a .npy 256x256 int32 product table, or a Verilog file / "
                             "baseline:NAME (simulated to its table; written as an initializer). "
                             "NODE=SPEC (repeatable) gives one node its own multiplier; a plain "
                             "SPEC (at most one) serves every other chosen node")
    approx.add_argument("--signedness", choices=["signed", "unsigned"], default="signed",
                        help="how to read a .npy table or a Verilog file's ports (default signed)")
    approx.add_argument("--nodes", help="comma-separated node names to replace (default: every "
                                        "table-multiplying node; in --emgaxo mode every QGemm)")
    approx.add_argument("--emgaxo", action="store_true",
                        help="write EMGAxO's form: ApproxQGemm in domain test.customop with "
                             "INIT_Value (QGemm nodes and AppAxO configurations only)")
    approx.add_argument("-o", "--output", required=True, help="ONNX file to write")
    approx.add_argument("--force", action="store_true",
                        help="replace the -o file when an earlier `onnx approx` wrote it")
    approx.set_defaults(func=cmd_approx)

    sweeps = onnx_sub.add_parser(
        "sweep", help="write one approximate model per AppAxO configuration of a space "
                      "(the configuration integer in the file name)")
    sweeps.add_argument("model", help="QOperator int8 ONNX model")
    sweeps.add_argument("--free", default=ALL_FREE,
                        help="36 characters, 1 = the LUT is searched (as a study's space.free)")
    sweeps.add_argument("--fixed", default=ALL_FREE,
                        help="36 characters: the value of each LUT that is not searched")
    sweeps.add_argument("--count", type=int,
                        help="configurations to write: the whole space in counting order when it "
                             "has at most this many, else a seeded random sample (default: all)")
    sweeps.add_argument("--seed", type=int, default=0)
    sweeps.add_argument("--emgaxo", action="store_true",
                        help="EMGAxO's node form (ApproxQGemm, INIT_Value; QGemm nodes only)")
    sweeps.add_argument("-o", "--output", required=True, help="folder for the models")
    sweeps.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    sweeps.set_defaults(func=cmd_sweep)

    evaluate = onnx_sub.add_parser(
        "evaluate", help="score every approximate model of a folder into one CSV (resumable)")
    evaluate.add_argument("folder", help="a folder of <name>_<config>.onnx files")
    evaluate.add_argument("--dataset", default="mnist", help="the test set (a dse dataset name)")
    evaluate.add_argument("--path", help="folder holding the dataset's files")
    evaluate.add_argument("--images", type=int, help="first N test images (default all)")
    evaluate.add_argument("-o", "--output", required=True,
                          help="results CSV (an earlier one of the same columns is resumed)")
    evaluate.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    evaluate.set_defaults(func=cmd_evaluate)

    integer = onnx_sub.add_parser(
        "integer", help="transform an int8 QDQ model (quantize_int8 quant_format='qdq') into a "
                        "graph of integer operations, checking predictions after each step")
    integer.add_argument("model", help="int8 QDQ ONNX model (symmetric S8S8)")
    integer.add_argument("--steps", default=DEFAULT_STEPS,
                         help=f"comma-separated steps, in order (default: {DEFAULT_STEPS})")
    integer.add_argument("-o", "--output", required=True, help="ONNX file to write")
    integer.add_argument("--force", action="store_true",
                         help="replace the -o file when an earlier `onnx integer` wrote it")
    integer.add_argument("--save-steps", help="folder for each intermediate model "
                                              "(NN_step.onnx)")
    integer.add_argument("--dataset", choices=["mnist", "fashion_mnist"],
                         help="compare each step's predictions with the quantized model's on "
                              "this dataset's test images")
    integer.add_argument("--path", help="folder holding the dataset's files")
    integer.add_argument("--images", type=int, help="first N test images (default: all)")
    integer.set_defaults(func=cmd_integer)


def cmd_approx(args: argparse.Namespace) -> int:
    model = load_model(Path(args.model))
    default, per_node = node_specs(args.multiplier)
    signed = args.signedness == "signed"
    multiplier = None if default is None else read_multiplier(default, signed)
    nodes = [n.strip() for n in args.nodes.split(",") if n.strip()] if args.nodes else None
    if per_node:  # the plain SPEC serves the chosen nodes (by default: all) not named here
        if nodes is None:
            nodes = rewritable_nodes(model, args.emgaxo) if multiplier is not None else []
        nodes = list(dict.fromkeys([*nodes, *per_node]))
        given = dict.fromkeys(nodes, multiplier) if multiplier is not None else {}
        multiplier = {**given, **{n: read_multiplier(s, signed) for n, s in per_node.items()}}
    check_onnx(Path(args.output), "approximate", force=args.force)  # before the work
    approx = approximate_model(model, multiplier, nodes, emgaxo=args.emgaxo)
    try:
        write_onnx(approx, Path(args.output), "approximate", force=args.force)
    except OSError as err:
        raise ModelError(f"{args.output}: cannot write ({err.strerror})") from None
    ops = Counter(n.op_type for n in approx.graph.node if n.domain in (DSE_DOMAIN, EMGAXO_DOMAIN))
    print(f"wrote {args.output}: " + ", ".join(f"{count} {op}" for op, count in ops.items())
          + f" with {'; '.join(args.multiplier)}")
    return 0


def node_specs(values: list[str]) -> tuple[str | None, dict[str, str]]:
    """``--multiplier`` values as (the plain SPEC, or None; node -> SPEC of the ``NODE=SPEC``
    ones). A value that names an existing file is a plain SPEC even with a ``=`` in it."""
    plain, per_node = [], {}
    for value in values:
        node, sep, spec = value.partition("=")
        if sep and not Path(value).exists():
            if not node or not spec:
                raise MultiplierError(f"--multiplier {value!r}: expected NODE=SPEC with a node "
                                      "name and a multiplier")
            if node in per_node:
                raise MultiplierError(f"--multiplier: node {node!r} is given two multipliers "
                                      f"({per_node[node]}, {spec})")
            per_node[node] = spec
        else:
            plain.append(value)
    if len(plain) > 1:
        raise MultiplierError(f"--multiplier: one plain SPEC serves every node not given its own "
                              f"(NODE=SPEC); got {len(plain)}: {', '.join(plain)}")
    return (plain[0] if plain else None), per_node


def read_multiplier(spec: str, signed: bool = True) -> int | ProductTable:
    """An AppAxO configuration for ``appaxo:CONFIG``, else the product table of a ``.npy`` file,
    a Verilog file or ``baseline:NAME`` (simulated through ``characterize``, cached)."""
    if spec.startswith("appaxo:"):
        return Multiplier.parse(spec).appaxo_config
    if spec.endswith(".npy"):
        return _npy_table(Path(spec), signed)
    return characterize(Multiplier.parse(spec, signed), FlowSettings(), cache=ResultCache()).table


def _npy_table(path: Path, signed: bool) -> ProductTable:
    try:
        values = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise MultiplierError(f"{path}: not a readable .npy product table ({err})") from None
    if values.shape != SHAPE or not np.issubdtype(values.dtype, np.integer):
        raise MultiplierError(f"{path}: expected a 256x256 integer product table, got "
                              f"{values.dtype} {values.shape}")
    try:
        return ProductTable(values, signed)
    except ValueError as err:
        raise MultiplierError(f"{path}: {err}") from None


def configurations(free: str, fixed: str, count: int | None, seed: int) -> list[int]:
    """The space's configurations: all of them (counting order) or ``count`` distinct ones
    drawn with ``seed``; a malformed bit string is one line."""
    try:
        space = AppAxOSubspace(parse_bits(free, "--free"), parse_bits(fixed, "--fixed"))
    except ValueError as err:
        raise StudyFileError(str(err)) from None
    if count is None and space.size > WHOLE_LIMIT:
        raise StudyFileError(f"--free: {space.size} configurations; give --count N to sample, "
                             f"or fewer free bits (the whole space at most {WHOLE_LIMIT})")
    if count is None or count >= space.size:
        return [space.config(p) for p in range(space.size)]
    if count < 1:
        raise StudyFileError(f"--count {count}: expected at least 1")
    points = np.random.default_rng(seed).choice(space.size, size=count, replace=False)
    return [space.config(int(p)) for p in sorted(points)]


def cmd_sweep(args: argparse.Namespace) -> int:
    configs = configurations(args.free, args.fixed, args.count, args.seed)
    check_folder(Path(args.output))
    model = load_model(Path(args.model))
    with tqdm(total=len(configs), unit="model", disable=args.quiet, desc="sweep") as bar:
        written = sweep(model, configs, Path(args.output), Path(args.model).stem,
                        emgaxo=args.emgaxo, progress=lambda n: bar.update(1))
    print(f"wrote {len(written)} approximate models to {args.output}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    folder, results = Path(args.folder), Path(args.output)
    if not folder.is_dir():
        raise StudyFileError(f"{folder}: not a folder of approximate models")
    # resuming appends to an earlier table of exactly these columns, and to nothing else
    check_file(results, "`onnx evaluate` results table",
               lambda path: csv_header(path) == list(COLUMNS), force=True)
    if args.images is not None and args.images < 1:
        raise StudyFileError(f"--images {args.images}: expected at least 1")
    test = load_split(args.dataset, "test", args.path)
    images, labels = test.images[: args.images], test.labels[: args.images]
    inputs = default_preprocessing(args.dataset).apply(images)
    todo = len(set(p.name for p in folder.glob("*.onnx")) - done_files(results))
    failed = 0
    with tqdm(total=todo, unit="model", disable=args.quiet, desc="evaluate") as bar:
        def scored(row: dict) -> None:
            nonlocal failed
            failed += bool(row.get("error"))
            bar.update(1)

        count = evaluate_folder(folder, inputs, labels, test.classes, results, scored)
    print(f"scored {count} models on {len(labels)} {args.dataset} test images into {results}"
          + (f"; {failed} could not be scored (their error is in the table)" if failed else ""))
    return 0


def _predictions(model: onnx.ModelProto, images: np.ndarray, preprocessing) -> np.ndarray:
    session = ort_session(model)
    return session.run(None, feed(model, images, preprocessing))[0].argmax(axis=1)


def cmd_integer(args: argparse.Namespace) -> int:
    """Run the steps; print, after each, how many predictions differ from the quantized
    model's, and at the end whether the graph is integer-only."""
    check_onnx(Path(args.output), "integer", force=args.force)  # before the work
    model = load_model(Path(args.model))
    steps = parse_steps(args.steps)
    check = None
    if args.dataset:
        test = load_split(args.dataset, "test", args.path).head(args.images)
        preprocessing = default_preprocessing(args.dataset)
        reference = _predictions(model, test.images, preprocessing)
        print(f"quantized model: accuracy {np.mean(reference == test.labels):.4f} on "
              f"{len(reference)} {args.dataset} test images")

        def check(step: str, stepped: onnx.ModelProto) -> None:
            got = _predictions(stepped, test.images, preprocessing)
            tqdm.write(f"{step}: {int(np.sum(got != reference))} of {len(got)} predictions "
                       f"differ from the quantized model's (accuracy "
                       f"{np.mean(got == test.labels):.4f})")

    with tqdm(total=len(steps), desc="integer graph", unit="step", file=sys.stderr) as bar:
        def after(step: str, stepped: onnx.ModelProto) -> None:
            if check is not None:
                check(step, stepped)
            bar.update()

        save = Path(args.save_steps) if args.save_steps else None
        result = run_steps(model, steps, save, after)
    out = write_onnx(result, Path(args.output), "integer", force=args.force)
    left = integer_only(result)
    print(f"wrote {out}: " + ("integer operations only" if not left else
                              f"{len(left)} non-integer node(s) left: {'; '.join(left[:5])}"))
    return 0
