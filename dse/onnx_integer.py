"""``python -m dse onnx integer``: turn an int8 QDQ model into an integer-only graph, step by
step (``evaluators.integer_graph``), checking each step's predictions against the quantized
model's in onnxruntime."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import onnx
from tqdm import tqdm

from dse.outputs import check_onnx, write_onnx

DEFAULT_STEPS = ("add_rescaling,embed_act,prune_qdq,fold_op_scales,split_bias_add,integer_ops,"
                 "scale_out")


def add_parser(onnx_sub: argparse._SubParsersAction) -> None:
    """Add ``integer`` to the ``onnx`` command group."""
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


def _predictions(model: onnx.ModelProto, images: np.ndarray, preprocessing) -> np.ndarray:
    from evaluators.integer_graph import feed
    from evaluators.ort_exactness import session as ort_session

    session = ort_session(model)
    return session.run(None, feed(model, images, preprocessing))[0].argmax(axis=1)


def cmd_integer(args: argparse.Namespace) -> int:
    """Run the steps; print, after each, how many predictions differ from the quantized
    model's, and at the end whether the graph is integer-only."""
    from evaluators.integer_graph import integer_only, parse_steps, run_steps
    from evaluators.model_import import load_model

    check_onnx(Path(args.output), "integer", force=args.force)  # before the work
    model = load_model(Path(args.model))
    steps = parse_steps(args.steps)
    check = None
    if args.dataset:
        from evaluators.datasets import load_split
        from evaluators.preprocess import default_preprocessing

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
