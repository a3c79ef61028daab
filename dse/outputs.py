"""The rules every command follows for an output it is given (``-o``/``--output``): it writes
only what it owns.

- A study folder's own files (its frozen settings, trial store, network, reports, designs) are
  never an output, whoever's study it is; in a study folder only the table exports it holds
  by name (``trials.csv``, ...) may be written.
- An existing file is replaced only when it is an earlier output of the same kind (each command
  says how it recognizes one) and, for a path the user named, ``--force`` says so.
- A file is written to a temporary file beside it and renamed over it: an interrupted write
  leaves the earlier file whole.
- An output folder that is or lies inside a study folder is refused.

Every refusal is an ``OutputError``: one line naming the path and what to do.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Collection, Iterator
from functools import partial
from pathlib import Path

from dse.study import FROZEN, FROZEN_HASH
from dse.study_file import StudyFileError


class OutputError(StudyFileError):
    """An output path a command must not write; one line."""


def study_folder_holding(path: Path) -> Path | None:
    """The study folder that is or holds ``path`` (resolved: a symbolic link counts where it
    points), or None."""
    path = Path(path).resolve()
    for folder in (path, *path.parents):
        if (folder / FROZEN).is_file() and (folder / FROZEN_HASH).is_file():
            return folder
    return None


def check_file(path: Path, kind: str, earlier: Callable[[Path], bool], *, force: bool,
               study_exports: Collection[str] = ()) -> Path:
    """Check that a command may write the file ``path`` (an output of ``kind``, as the
    messages name it); ``earlier(path)``: whether an existing file is an earlier output of that
    kind; ``force``: the user allows replacing one; ``study_exports``: the names the command
    may write inside a study folder. Returns ``path``."""
    path = Path(path)
    target = path.resolve()
    if not target.parent.is_dir():
        raise OutputError(f"{path}: the folder {path.parent} does not exist; create it or choose "
                          "another output path")
    study = study_folder_holding(target.parent)
    if study is not None and not (target.parent == study and target.name in study_exports):
        raise OutputError(f"{path}: lies in study folder {study}, whose files no output may "
                          "replace; choose a path outside it")
    if target.exists() or path.is_symlink():
        if not target.is_file():
            raise OutputError(f"{path}: not a regular file; choose a file path")
        if not earlier(target):
            raise OutputError(f"{path}: exists and is not an earlier {kind}; choose another path "
                              "(nothing was written)")
        if not force:
            raise OutputError(f"{path}: exists (an earlier {kind}); pass --force to replace it")
    return path


def check_folder(path: Path) -> Path:
    """Check that a command may write into the folder ``path``: not a file, not a study folder
    or a folder inside one. Returns ``path``."""
    path = Path(path)
    if path.exists() and not path.resolve().is_dir():
        raise OutputError(f"{path}: a file is there; give a folder")
    study = study_folder_holding(path)
    if study is not None:
        raise OutputError(f"{path}: is or lies in study folder {study}; give a folder outside "
                          "it")
    return path


@contextlib.contextmanager
def replacing(path: Path) -> Iterator[Path]:
    """A temporary path beside ``path`` to write; renamed over ``path`` when the block ends
    without an error, removed otherwise."""
    path = Path(path).resolve()
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield temporary
        os.replace(temporary, path)
    except OSError as err:  # named by the file the user knows, not the temporary one
        if err.filename in (str(temporary), temporary):
            err.filename = str(path)
        raise
    finally:
        temporary.unlink(missing_ok=True)


def csv_header(path: Path) -> list[str] | None:
    """The first line of a CSV file as column names, or None when it is not UTF-8 text."""
    import csv

    try:
        with open(path, newline="", encoding="utf-8") as f:
            return next(csv.reader([f.readline(1 << 16)]), [])
    except (OSError, UnicodeDecodeError, csv.Error):
        return None


ONNX_MARK = "dse.output"  # metadata_props key of the ONNX files the commands write


def write_onnx(model, path: Path, kind: str, *, force: bool) -> Path:
    """Write an ONNX ``model`` (``onnx.ModelProto``) that a command made to ``path`` by the
    output rules: marked as a ``kind`` output, so that only such a file is replaced (with
    ``force``), and written whole through a temporary file."""
    import onnx

    path = check_onnx(path, kind, force=force)
    marked = onnx.ModelProto()
    marked.CopyFrom(model)
    for prop in list(marked.metadata_props):
        if prop.key == ONNX_MARK:
            marked.metadata_props.remove(prop)
    marked.metadata_props.add(key=ONNX_MARK, value=kind)
    with replacing(path) as temporary:
        onnx.save(marked, str(temporary))
    return path


def check_onnx(path: Path, kind: str, *, force: bool) -> Path:
    """``check_file`` for an ONNX ``kind`` output (before the work that makes it)."""
    return check_file(path, f"{kind} model written by dse", partial(_marked_onnx, kind),
                      force=force)


def _marked_onnx(kind: str, path: Path) -> bool:
    """Whether ``path`` is an ONNX file a command wrote as a ``kind`` output."""
    import onnx

    if path.stat().st_size > (2 << 30):  # a protobuf file holds at most 2 GiB
        return False
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # noqa: BLE001  whatever onnx cannot read is not our output
        return False
    return any(p.key == ONNX_MARK and p.value == kind for p in model.metadata_props)


PNG_SOFTWARE = "Software"  # the PNG text key matplotlib writes a figure's maker under


def check_png(path: Path, kind: str, *, force: bool) -> Path:
    """``check_file`` for a plot of ``kind`` (a PNG whose ``Software`` text names it, as
    ``savefig(..., metadata=png_metadata(kind))`` writes it)."""
    return check_file(path, f"{kind} plot", partial(_marked_png, kind), force=force)


def png_metadata(kind: str) -> dict[str, str]:
    """The metadata that marks a PNG plot as a ``kind`` output."""
    return {PNG_SOFTWARE: f"dse {kind}"}


def _marked_png(kind: str, path: Path) -> bool:
    from PIL import Image

    try:
        with Image.open(path) as image:
            return image.format == "PNG" and image.text.get(PNG_SOFTWARE) == f"dse {kind}"
    except Exception:  # noqa: BLE001  whatever Pillow cannot read is not our plot
        return False
