"""The architecture registry: ``zoo list`` its networks, ``zoo export`` one trained (or reused)
on a dataset as an ONNX file."""

from __future__ import annotations

import argparse
from pathlib import Path

import onnx
from pydantic import ValidationError

from dse.assembly import training_settings
from dse.cli.common import log, writing
from dse.outputs import check_onnx, write_onnx
from dse.study_file import (
    DATASET_NAMES,
    ModelSettings,
    QuantizationSettings,
    StudyFileError,
    format_errors,
)
from evaluators.data import load_split
from evaluators.data.preprocess import default_preprocessing
from evaluators.networks.prepared import prepare_network
from evaluators.networks.zoo import ARCHITECTURES, macs, parameters


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """``zoo list`` and ``zoo export``."""
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


def cmd_zoo_list(args: argparse.Namespace) -> int:
    """The architecture registry: parameters and multiplications per image on MNIST- and
    CIFAR-shaped inputs (10 classes)."""
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
    check_onnx(Path(args.output), "zoo network", force=args.force)  # before training
    given = {"epochs": args.epochs, "batch_size": args.batch_size,
             "learning_rate": args.learning_rate}
    try:
        model = ModelSettings(arch=args.arch, checkpoint=args.checkpoint,
                              **{k: v for k, v in given.items() if v})
    except ValidationError as err:
        raise StudyFileError(format_errors("zoo export", err)) from None
    training = training_settings(model, QuantizationSettings(), args.seed)
    dataset, path = ("npz", args.npz) if args.npz else (args.dataset, args.path)
    train = load_split(dataset, "train", path).head(args.train_size)
    test = load_split(dataset, "test", path)
    prepared = prepare_network(training, train, test, preprocessing=default_preprocessing(dataset),
                               log=log)
    source = prepared.int8_onnx if args.int8 else prepared.float_onnx
    out = Path(args.output)
    with writing(out.parent if str(out.parent) else Path("."), "choose a writable -o file"):
        write_onnx(onnx.load(str(source)), out, "zoo network", force=args.force)
    for kind in ("float", "int8"):
        m = prepared.report[kind]
        print(f"{kind}: accuracy {m['accuracy']:.4f}, macro F1 {m['f1_macro']:.4f} on "
              f"{prepared.report['test_images']} {dataset} test images")
    print(f"wrote {out} ({'int8' if args.int8 else 'float'} ONNX of {args.arch})")
    return 0
