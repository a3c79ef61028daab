"""``python -m dse onnx approx``: write an approximate ONNX model (``evaluators.approx_onnx``)
that runs in dse's runner and in onnxruntime with dse's custom ops."""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

import numpy as np

from circuits.multiplier import Multiplier, MultiplierError
from circuits.product_table import SHAPE, ProductTable
from dse.outputs import check_onnx, write_onnx
from evaluators.errors import ModelError


def add_parser(onnx_sub: argparse._SubParsersAction) -> None:
    """Add ``approx`` to the ``onnx`` command group."""
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


def cmd_approx(args: argparse.Namespace) -> int:
    from evaluators.approx_onnx import (
        DSE_DOMAIN,
        EMGAXO_DOMAIN,
        approximate_model,
        rewritable_nodes,
    )
    from evaluators.model_import import load_model

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
    from circuits.cache import ResultCache
    from circuits.characterize import FlowSettings, characterize

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
