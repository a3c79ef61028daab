"""``python -m dse onnx sweep|evaluate``: EMGAxO's flow of one approximate ONNX file per
AppAxO configuration, scored in a batch (``evaluators.onnx_sweep``)."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from tqdm import tqdm

from dse.study_file import StudyFileError

ALL_FREE = "1" * 36
WHOLE_LIMIT = 1 << 16  # configurations a sweep writes without --count


def add_parser(onnx_sub: argparse._SubParsersAction) -> None:
    """Add ``sweep`` and ``evaluate`` to the ``onnx`` command group."""
    sweep = onnx_sub.add_parser(
        "sweep", help="write one approximate model per AppAxO configuration of a space "
                      "(the configuration integer in the file name)")
    sweep.add_argument("model", help="QOperator int8 ONNX model")
    sweep.add_argument("--free", default=ALL_FREE,
                       help="36 characters, 1 = the LUT is searched (as a study's space.free)")
    sweep.add_argument("--fixed", default=ALL_FREE,
                       help="36 characters: the value of each LUT that is not searched")
    sweep.add_argument("--count", type=int,
                       help="configurations to write: the whole space in counting order when it "
                            "has at most this many, else a seeded random sample (default: all)")
    sweep.add_argument("--seed", type=int, default=0)
    sweep.add_argument("--emgaxo", action="store_true",
                       help="EMGAxO's node form (ApproxQGemm, INIT_Value; QGemm nodes only)")
    sweep.add_argument("-o", "--output", required=True, help="folder for the models")
    sweep.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    sweep.set_defaults(func=cmd_sweep)

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


def configurations(free: str, fixed: str, count: int | None, seed: int) -> list[int]:
    """The space's configurations: all of them (counting order) or ``count`` distinct ones
    drawn with ``seed``; a malformed bit string is one line."""
    from dse.space import AppAxOSubspace
    from dse.study_file import _parse_bits

    try:
        space = AppAxOSubspace(_parse_bits(free, "--free"), _parse_bits(fixed, "--fixed"))
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
    from dse.outputs import check_folder
    from evaluators.model_import import load_model
    from evaluators.onnx_sweep import sweep

    configs = configurations(args.free, args.fixed, args.count, args.seed)
    check_folder(Path(args.output))
    model = load_model(Path(args.model))
    with tqdm(total=len(configs), unit="model", disable=args.quiet, desc="sweep") as bar:
        written = sweep(model, configs, Path(args.output), Path(args.model).stem,
                        emgaxo=args.emgaxo, progress=lambda n: bar.update(1))
    print(f"wrote {len(written)} approximate models to {args.output}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from dse.outputs import check_file, csv_header
    from evaluators.datasets import load_split
    from evaluators.onnx_sweep import COLUMNS, done_files, evaluate_folder
    from evaluators.preprocess import default_preprocessing

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
