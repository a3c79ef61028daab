"""FPGA firmware of a study's design: ``python -m dse hls runs/NAME --design D -o PROJECT/``.

Writes the study's int8 network with the design's approximate multiplier(s) (one per layer for a
layer-wise design) as an hls4ml project (``evaluators.hls_export``: Vitis or Vivado backend,
io_parallel, ``ap_int`` codes, the product tables behind each layer's product hook, onnxruntime's
requantization). ``--compile`` builds its C simulation with g++; ``--check`` also runs the
study's test images through it and through the study's evaluator and compares them: the same
outputs, bit for bit, on every image is what the export promises. Synthesis (Vitis HLS or
Vivado HLS on ``build_prj.tcl``) is the next step, where the user has the tools.

The project folder also holds ``dse_hls.json`` (the study, design, each layer's multiplier and
table hash, compile time and the check), and after a check ``tb_data/``: the checked images'
input codes and the evaluator's output codes for the HLS C simulation's testbench.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import pandas as pd

from dse.designs import design_name, design_tables, find_design, study_data
from dse.study import load_study
from dse.study_file import StudyFileError

MANIFEST = "dse_hls.json"
TESTBENCH_IMAGES = 100  # images in the project's tb_data/
SYNTHESIS = {"Vitis": "vitis-run --mode hls --tcl build_prj.tcl (steps: build_opt.tcl)",
             "Vivado": 'vivado_hls -f build_prj.tcl "csim=1 synth=1"'}


class HlsError(StudyFileError):
    """An export request that cannot be carried out (output folder, image count); one line."""


@dataclass(frozen=True)
class HlsExport:
    """What ``export_hls`` wrote and measured."""

    folder: Path
    study: str
    design: str
    trial: int
    backend: str
    layers: list[dict]  # per table layer: layer, hls_layer, multiplier, table_sha256
    compile_seconds: float | None
    parity: dict | None  # evaluators.hls_export.Parity as a dict, plus "identical"

    def summary(self) -> dict:
        return {**asdict(self), "folder": str(self.folder)}


def export_hls(study_dir: str | Path, design: str, out: str | Path, *, backend: str = "Vitis",
               compile: bool = False, check_images: int | None = 0,
               log: Callable[[str], None] = print, progress: bool = True) -> HlsExport:
    """Write the hls4ml project of a study's design into ``out``; ``compile``: build its C
    simulation with g++; ``check_images``: 0 for no check, N to compare the C simulation with
    the study's evaluator on the first N test images, None on all of them (compiles)."""
    from evaluators.hls_export import backend_name, hls_network, write_project
    from evaluators.qgraph import QGraph

    backend = backend_name(backend)
    study = load_study(study_dir)
    row = find_design(study, design)
    tables = design_tables(study, row)
    data = study_data(study, log)
    count = _image_count(check_images, len(data.test_labels))
    out = _output_folder(out)
    network = hls_network(QGraph.from_onnx(data.int8_onnx), data.test_inputs.shape[1:])
    project = write_project(network, tables, out, backend)
    log(f"wrote the hls4ml project ({project.backend}, io_parallel) of {design_name(row)} to {out}")
    seconds = parity = None
    if compile or count:
        log("compiling the C simulation with g++ (convolutions take longest: LeNet-5 about a "
            "minute, dense networks a few seconds)")
        seconds = project.compile()
    if count:
        parity = _check(project, data, tables, count, progress)
    layers = [{"layer": layer, "hls_layer": network.hls_names[layer],
               "multiplier": _multiplier(row, layer), "table_sha256": table.sha256}
              for layer, table in zip(network.table_layers, project.tables)]
    result = HlsExport(out, study.name, design_name(row), int(row["trial"]), project.backend,
                       layers, seconds, parity)
    (out / MANIFEST).write_text(json.dumps(result.summary(), indent=2) + "\n")
    return result


def _output_folder(out: str | Path) -> Path:
    """The project folder, emptied if an earlier export wrote it; any other non-empty folder
    is refused, so that nothing of the user's is overwritten."""
    out = Path(out)
    if out.is_dir() and any(out.iterdir()):
        if not (out / MANIFEST).is_file():
            raise HlsError(f"-o {out}: the folder holds files dse hls did not write; give a new "
                           "or empty folder")
        shutil.rmtree(out)
    elif out.exists() and not out.is_dir():
        raise HlsError(f"-o {out}: a file is there; give a folder")
    return out


def _image_count(check_images: int | None, available: int) -> int:
    """The images to check: 0 (none), N, or every test image (None)."""
    if check_images is None:
        return available
    if not 0 <= check_images <= available:
        raise HlsError(f"--check {check_images}: expected 0 to {available} images (the "
                       "study's test set)")
    return check_images


def _check(project, data, tables, count: int, progress: bool) -> dict:
    """The C simulation against the study's evaluator on the first ``count`` test images;
    writes the testbench data of the first of them."""
    from evaluators.hls_export import check_parity, write_testbench

    inputs, labels = data.test_inputs[:count], data.test_labels[:count]
    parity, expected = check_parity(project, data.int8_onnx, tables, inputs, labels,
                                    data.classes, progress=progress)
    write_testbench(project, inputs[:TESTBENCH_IMAGES], expected[:TESTBENCH_IMAGES])
    return {**asdict(parity), "identical": parity.identical}


def _multiplier(row: pd.Series, layer: str) -> str:
    """The multiplier a layer uses: its member of a layer-wise assignment, else the design."""
    assignment = row.get("assignment")
    if isinstance(assignment, dict) and layer in assignment:
        return str(assignment[layer])
    return design_name(row)


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """The ``hls`` subcommand on the CLI's subparsers."""
    parser = sub.add_parser(
        "hls", help="write a study's network with a design's multiplier(s) as an hls4ml "
        "project (FPGA firmware); compile and check its C simulation against the evaluator")
    parser.add_argument("folder", help="a study folder (runs/NAME)")
    parser.add_argument("--design", required=True,
                        help="trial number, design name or configuration integer")
    parser.add_argument("-o", "--output", required=True, help="project folder to write")
    parser.add_argument("--backend", default="Vitis", help="hls4ml backend: Vitis or Vivado "
                                                           "(default Vitis)")
    parser.add_argument("--compile", action="store_true",
                        help="compile the C simulation with g++")
    parser.add_argument("--check", nargs="?", type=int, const=None, default=0, metavar="N",
                        help="compile, then compare the C simulation with the study's evaluator "
                             "on every test image (or the first N)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=cmd_hls)
    return parser


def cmd_hls(args: argparse.Namespace) -> int:
    """Export, print what was written and the check; exit code 1 when the check differs."""
    log = partial(print, file=sys.stderr, flush=True)
    start = time.perf_counter()
    result = export_hls(args.folder, args.design, args.output, backend=args.backend,
                        compile=args.compile, check_images=args.check, log=log,
                        progress=not args.quiet)
    if args.json:
        print(json.dumps(result.summary(), indent=2))
    else:
        _print(result, time.perf_counter() - start)
    return 0 if result.parity is None or result.parity["identical"] else 1


def _print(result: HlsExport, seconds: float) -> None:
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
