"""EMGAxO's sweep and batch evaluation: one approximate ONNX file per AppAxO configuration,
then a folder of such files scored into one table.

The sweep writes ``<stem>_appaxo_<config>.onnx`` (the configuration integer in the file name,
as EMGAxO's ``AppAxO_Models40k/`` does); ``evaluate_folder`` parses the configuration back from
each name, scores the file with dse's evaluator (its nodes carry their own multipliers) and
appends a row at once, so a run stopped anywhere resumes where it stopped. A file that does not
parse or load is a row with its error, not a stop.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import onnx

from circuits import appaxo
from circuits.product_table import ProductTable
from evaluators.errors import ModelError
from evaluators.networks.model_import import load_model
from evaluators.onnx.approximate import approximate_model
from evaluators.runtime.approx_network import ApproxNetworkEvaluator

CONFIG_IN_NAME = re.compile(r"(\d+)\.onnx$")
COLUMNS = ("file", "config", "config_bits", "removed_luts", "accuracy", "precision_macro",
           "recall_macro", "f1_macro", "error")


def sweep(model: onnx.ModelProto, configs: Iterable[int], folder: Path, stem: str = "model", *,
          emgaxo: bool = False, progress: Callable[[int], None] | None = None) -> list[Path]:
    """One approximate model per configuration in ``folder`` (files already there are kept);
    ``progress(written)`` after each."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for config in configs:
        path = folder / f"{stem}_appaxo_{int(config)}.onnx"
        if not path.is_file():
            tmp = path.with_suffix(".tmp")
            onnx.save(approximate_model(model, int(config), emgaxo=emgaxo), str(tmp))
            tmp.replace(path)  # a file there is always a whole model
        written.append(path)
        if progress is not None:
            progress(len(written))
    return written


def done_files(results: Path) -> set[str]:
    """The files a results table already holds (for resuming)."""
    if not results.is_file():
        return set()
    with open(results, newline="") as f:
        return {row["file"] for row in csv.DictReader(f)}


def score_file(path: Path, inputs: np.ndarray, labels: np.ndarray, classes: int) -> dict:
    """One row: the configuration from the file name, its removed LUTs out of 36, and the
    file's network metrics; or the error that stopped it."""
    row: dict = {"file": path.name}
    match = CONFIG_IN_NAME.search(path.name)
    try:
        if match is None:
            raise ModelError("no configuration integer at the end of the file name")
        config = appaxo.check_config(int(match.group(1)))
        row.update(config=config, config_bits=appaxo.to_bitstring(config),
                   removed_luts=36 - appaxo.kept_luts(config))
        load_model(path)  # a regular file of bounded size, its external data checked: then read
        network = ApproxNetworkEvaluator(path, inputs, labels, classes=classes)
        metrics = network.evaluate(ProductTable.exact(signed=True))  # nodes carry their own
        row.update({k: metrics[k] for k in COLUMNS if k in metrics})
    except Exception as err:  # noqa: BLE001  one file's failure is its row, never the batch's
        row["error"] = f"{type(err).__name__}: {err}".splitlines()[0]
    return row


def evaluate_folder(folder: Path, inputs: np.ndarray, labels: np.ndarray, classes: int,
                    results: Path, progress: Callable[[dict], None] | None = None) -> int:
    """Score every ``.onnx`` file of ``folder`` not yet in ``results`` (a CSV appended row by
    row); returns how many were scored now."""
    files = sorted(folder.glob("*.onnx"))
    done = done_files(results)
    new = not results.is_file()
    scored = 0
    with open(results, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        if new:
            writer.writeheader()
        for path in files:
            if path.name in done:
                continue
            row = score_file(path, inputs, labels, classes)
            writer.writerow(row)
            f.flush()
            scored += 1
            if progress is not None:
                progress(row)
    return scored
