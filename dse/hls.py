"""FPGA firmware of a study's design: ``python -m dse hls runs/NAME --design D -o PROJECT/``.

Writes the study's int8 network with the design's approximate multiplier(s) (one per layer for a
layer-wise design) as an hls4ml project (``evaluators.firmware.hls_export``: Vitis or Vivado backend,
io_parallel, ``ap_int`` codes, the product tables behind each layer's product hook, onnxruntime's
requantization). ``--compile`` builds its C simulation with g++; ``--check`` also runs the
study's test images through it and through the study's evaluator and compares them: the same
outputs, bit for bit, on every image is what the export promises. Synthesis (Vitis HLS or
Vivado HLS on ``build_prj.tcl``) is the next step, where the user has the tools.

The project folder also holds ``dse_hls.json`` (the study, design, each layer's multiplier and
table hash, compile time, the check, and ``files``: every file the export wrote there), and
after a check ``tb_data/``: the checked images' input codes and the evaluator's output codes for
the HLS C simulation's testbench.

The folder may hold the user's own files (synthesis runs, notes): an export writes, and a
re-export removes, only the files an earlier export listed in ``dse_hls.json``, and is refused,
before anything is written, when it would overwrite or remove any other file. A study folder,
or a folder inside one, is never an output (``dse.outputs.check_folder``).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd

from dse.assembly import study_data
from dse.designs import design_name, design_tables, find_design
from dse.outputs import check_folder, replacing
from dse.study import load_study
from dse.study_file import StudyFileError
from evaluators.firmware.hls_export import (
    backend_name,
    check_parity,
    hls_network,
    write_project,
    write_testbench,
)
from evaluators.runtime.qgraph import QGraph

MANIFEST = "dse_hls.json"
TESTBENCH_IMAGES = 100  # images in the project's tb_data/
# what the export writes beside hls4ml's project files, and what hls4ml removes: its writer
# replaces firmware/ap_types/ whole, and its build_lib.sh removes every *.o of the folder
TESTBENCH_FILES = ("tb_data/tb_input_features.dat", "tb_data/tb_output_predictions.dat")
REPLACED_FOLDERS = ("firmware/ap_types",)
BUILD_REMOVES = "*.o"
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
    parity: dict | None  # evaluators.firmware.hls_export.Parity as a dict, plus "identical"
    files: list[str]  # every file the export wrote in the folder (POSIX paths relative to it)

    def summary(self) -> dict:
        return {**asdict(self), "folder": str(self.folder)}


def export_hls(study_dir: str | Path, design: str, out: str | Path, *, backend: str = "Vitis",
               compile: bool = False, check_images: int | None = 0,
               log: Callable[[str], None] = print, progress: bool = True) -> HlsExport:
    """Write the hls4ml project of a study's design into ``out``; ``compile``: build its C
    simulation with g++; ``check_images``: 0 for no check, N to compare the C simulation with
    the study's evaluator on the first N test images, None on all of them (compiles)."""
    backend = backend_name(backend)
    out = _output_folder(out)
    study = load_study(study_dir)
    row = find_design(study, design)
    tables = design_tables(study, row)
    data = study_data(study, log)
    count = _image_count(check_images, len(data.test_labels))
    network = hls_network(QGraph.from_onnx(data.int8_onnx), data.test_inputs.shape[1:])
    compiles = bool(compile or count)
    root = out.resolve()
    earlier = _earlier_files(root, out)
    files, folders = _project_paths(network, tables, backend, bool(count))
    _refuse_clashes(root, out, files, folders, earlier, compiles)
    root.mkdir(parents=True, exist_ok=True)
    _remove(root, earlier)
    before = _files(root)
    _write_manifest(root, {"complete": False, "files": sorted(files)})
    with _listed_on_failure(root, before):
        project = write_project(network, tables, root, backend)
        log(f"wrote the hls4ml project ({project.backend}, io_parallel) of {design_name(row)} "
            f"to {out}")
        seconds = parity = None
        if compiles:
            log("compiling the C simulation with g++ (convolutions take longest: LeNet-5 about "
                "a minute, dense networks a few seconds)")
            seconds = project.compile()
        if count:
            parity = _check(project, data, tables, count, progress)
    layers = [{"layer": layer, "hls_layer": network.hls_names[layer],
               "multiplier": _multiplier(row, layer), "table_sha256": table.sha256}
              for layer, table in zip(network.table_layers, project.tables)]
    result = HlsExport(out, study.name, design_name(row), int(row["trial"]), project.backend,
                       layers, seconds, parity, sorted(_files(root) - before))
    _write_manifest(root, {**result.summary(), "complete": True})
    return result


def _output_folder(out: str | Path) -> Path:
    """The project folder as given: a folder (a link to one works as the folder) or a new path,
    never a file, a dangling link, a study folder or a folder inside one."""
    out = check_folder(Path(out))
    if out.is_symlink() and not out.exists():
        raise HlsError(f"-o {out}: a symbolic link to {os.readlink(out)}, which does not exist; "
                       "give a folder")
    return out


def _earlier_files(root: Path, out: Path) -> set[str]:
    """The files an earlier export listed in the folder's manifest (none without a manifest);
    a ``dse_hls.json`` that no export wrote is refused, as it would be overwritten."""
    manifest = root / MANIFEST
    if not (manifest.exists() or manifest.is_symlink()):
        return set()
    try:
        data = json.loads(manifest.read_text()) if _real_file(manifest) else None
    except (OSError, UnicodeDecodeError, ValueError):
        data = None
    if isinstance(data, dict) and isinstance(data.get("files"), list):
        return {name for name in data["files"] if isinstance(name, str)}
    if isinstance(data, dict) and {"study", "design", "trial", "backend"} <= data.keys():
        return set()  # an export by a dse that kept no file list: it owns nothing we know of
    raise HlsError(f"-o {out}: {out / MANIFEST} is not the manifest of a dse hls export and "
                   "would be overwritten; move it or give another folder (nothing was written)")


def _project_paths(network, tables, backend: str, checks: bool) -> tuple[set[str], set[str]]:
    """The files and folders the export will write: hls4ml's writer run into a temporary
    folder tells them, and a check adds the testbench data."""
    with tempfile.TemporaryDirectory(prefix="dse-hls-") as temporary:
        write_project(network, tables, temporary, backend)
        files, folders = _tree(Path(temporary))
    files |= set(TESTBENCH_FILES) if checks else set()
    folders |= {parent.as_posix() for name in files for parent in Path(name).parents
                if parent.name}
    return files, folders


def _refuse_clashes(root: Path, out: Path, files: set[str], folders: set[str],
                    earlier: set[str], compiles: bool) -> None:
    """Refuse, naming it, a file no earlier export listed that the export would overwrite or
    remove: one at a path it writes or in the way of its folders, one in a folder hls4ml
    replaces whole, or a ``*.o`` file the C simulation's build removes."""
    clashes = {name: "is in the way of a folder of the export" for name in sorted(folders)
               if not _free_folder(root / name, name in earlier)}
    for name in sorted(files):
        if _exists(root / name) and not (name in earlier and not (root / name).is_dir()):
            clashes.setdefault(name, "would be overwritten by the export")
    for folder in REPLACED_FOLDERS:
        if _real_folder(root / folder):
            for name in sorted(_tree(root, folder)[0] - earlier):
                clashes.setdefault(name, f"would be removed: hls4ml replaces {folder}/ whole")
    if compiles:
        for path in sorted(root.glob(BUILD_REMOVES)):
            if path.name not in earlier:
                clashes.setdefault(path.name, "would be removed: the C simulation's build "
                                              f"removes the {BUILD_REMOVES} files there")
    if clashes:
        name, reason = next(iter(clashes.items()))
        more = f" (and {len(clashes) - 1} more)" if len(clashes) > 1 else ""
        raise HlsError(f"-o {out}: {out / name} {reason}{more}, and no earlier export listed it "
                       f"in {MANIFEST}; move it or give another folder (nothing was written)")


def _remove(root: Path, earlier: set[str]) -> None:
    """Remove the files an earlier export listed, then the folders that left empty; never
    anything else, nor anything through a symbolic link or outside the folder."""
    for name in sorted(earlier):
        path = root / name
        if name == MANIFEST or not _inside(root, name) or not _exists(path) or path.is_dir():
            continue
        path.unlink()
        for parent in Path(name).parents:
            if not parent.name:
                break
            try:
                (root / parent).rmdir()
            except OSError:  # not empty: it holds something else
                break


def _inside(root: Path, name: str) -> bool:
    """Whether ``name`` is a relative path whose folders are real folders under ``root``."""
    parts = Path(name).parts
    if not parts or Path(name).is_absolute() or any(p in ("", ".", "..") for p in parts):
        return False
    return all(_real_folder(root.joinpath(*parts[:i])) for i in range(1, len(parts)))


def _tree(root: Path, under: str = "") -> tuple[set[str], set[str]]:
    """The files (symbolic links included) and folders under ``root`` (or its ``under``), as
    POSIX paths relative to ``root``; links to folders are not followed."""
    files, folders = set(), set()
    for top, dirs, names in os.walk(root / under):
        relative = Path(top).relative_to(root)
        folders.update((relative / d).as_posix() for d in dirs)
        files.update((relative / n).as_posix() for n in names)
    return files, folders


def _files(root: Path) -> set[str]:
    """The files under ``root`` but the manifest (see ``_tree``)."""
    return _tree(root)[0] - {MANIFEST}


def _exists(path: Path) -> bool:
    return path.exists() or path.is_symlink()


def _real_file(path: Path) -> bool:
    return path.is_file() and not path.is_symlink()


def _real_folder(path: Path) -> bool:
    return path.is_dir() and not path.is_symlink()


def _free_folder(path: Path, earlier: bool) -> bool:
    """Whether the export may have a folder at ``path``: a real folder, nothing, or a file an
    earlier export wrote (removed first)."""
    return _real_folder(path) or not _exists(path) or (earlier and not path.is_dir())


@contextlib.contextmanager
def _listed_on_failure(root: Path, before: set[str]) -> Iterator[None]:
    """On any error, Ctrl-C included, a manifest listing what the export wrote so far, so that
    the next export replaces it rather than refusing files no export listed."""
    try:
        yield
    except BaseException:
        _write_manifest(root, {"complete": False, "files": sorted(_files(root) - before)})
        raise


def _write_manifest(root: Path, data: dict) -> None:
    """``dse_hls.json``, written whole through a temporary file."""
    with replacing(root / MANIFEST) as temporary:
        temporary.write_text(json.dumps(data, indent=2) + "\n")


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
