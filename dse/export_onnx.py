"""``python -m dse export runs/NAME --format onnx``: a study's designs as approximate ONNX models
(``evaluators.onnx.approximate``), one file per design, that run in dse's runner and in onnxruntime.

Each file is the network the study's evaluator scored (``network/int8.onnx``; for a retrained
design, its ``retrained/.../int8.onnx``) with every table-multiplying node carrying the design's
multiplier: an AppAxO design its configuration (``INIT_Value``), a layer-wise design each
layer's library member (an AppAxO member as its configuration, any other member as its product
table), a generated circuit its product table. ``index.csv`` lists the files with each node's
multiplier and the study's objectives. The network must be in QOperator form: a QDQ network's
multiplying nodes are float ops, refused by name.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path

import onnx
import pandas as pd
from tqdm import tqdm

from dse.designs import DesignError, design_name, find_design
from dse.export import write_csv
from dse.study import RETRAINED, Study
from evaluators.networks.model_import import load_model
from evaluators.onnx.approximate import ApproxExportError, approximate_model
from evaluators.runtime.approx_runner import table_layers
from evaluators.runtime.qgraph import QGraph

FOLDER = Path("export") / "onnx"  # in the study folder
INDEX = "index.csv"
NETWORK = Path("network") / "int8.onnx"
NODE_COLUMN = "multiplier:"  # index.csv: one column per node, ``multiplier:<node name>``

Log = Callable[[str], None]


def export_onnx(study: Study, folder: Path | None = None, designs: Sequence[str] | None = None,
                *, log: Log = tqdm.write, progress: bool = True) -> pd.DataFrame:
    """Write ``<design>.onnx`` for each design (``designs`` as ``find_design`` reads them;
    default: the measured Pareto front) and each of its retrained networks, and ``index.csv``,
    into ``folder`` (default ``export/onnx/`` in the study folder); returns the index."""
    folder = folder or study.folder / FOLDER
    rows = export_rows(study, designs)
    index = []
    with tqdm(total=len(rows), unit="design", desc=f"export {study.name}",
              disable=not progress or len(rows) < 2, dynamic_ncols=True) as bar:
        for _, row in rows.iterrows():
            index.append(_write_design(study, row, folder))
            log(f"wrote {folder / index[-1]['file']}")
            bar.update()
    table = pd.DataFrame(index)
    write_csv(table, folder / INDEX)
    log(f"wrote {folder / INDEX}")
    return table


def _write_design(study: Study, row: pd.Series, folder: Path) -> dict:
    """Write one design's file (a row of ``export_rows``); its row of the index."""
    source = NETWORK if row["role"] != RETRAINED else Path(row["model"])
    path = study.folder / source
    model = _network(study, source, row)
    nodes = study.settings.kind.node_multipliers(study, row, _layers(model, path))
    try:
        approx = approximate_model(model, {node: m for node, (m, _) in nodes.items()})
    except ApproxExportError as err:
        raise ApproxExportError(f"{path}: {err}") from None
    folder.mkdir(parents=True, exist_ok=True)
    onnx.save(approx, str(folder / f"{row['file']}.onnx"))
    return {"design": row["design"], "trial": int(row["trial"]), "role": row["role"],
            "file": f"{row['file']}.onnx", "model": source.as_posix(),
            **{NODE_COLUMN + node: text for node, (_, text) in nodes.items()},
            **{k: row[k] for k in study.objectives}}


def export_rows(study: Study, designs: Sequence[str] | None = None) -> pd.DataFrame:
    """The designs to export (trials of ``Study.trials``), each followed by its completed
    retrained trials, with ``design`` (a name, ``trial<N>`` where it has none) and ``file``
    (the file's stem; a design listed twice is exported once)."""
    chosen = study.pareto() if designs is None else \
        pd.DataFrame([find_design(study, d) for d in designs])
    if chosen.empty:
        raise DesignError(f"study {study.name}: its Pareto front holds no completed design yet; "
                          "nothing to export")
    trials = study.trials
    retrained = trials[(trials["role"] == RETRAINED) & (trials["state"] == "COMPLETE")]
    links = retrained.get("design_trial", pd.Series(dtype=float))  # absent: none retrained
    rows = []
    for _, row in chosen.iterrows():
        rows.append(row.copy())
        rows[-1]["design"] = design_name(row)
        rows[-1]["file"] = re.sub(r"[^A-Za-z0-9_.-]", "_", rows[-1]["design"])
        for _, again in retrained[links == row["trial"]].iterrows():
            rows.append(again.copy())
            rows[-1]["file"] = Path(again["model"]).parent.name  # retrain.model_folder's name
    return pd.DataFrame(rows).drop_duplicates("file").reset_index(drop=True)


def _network(study: Study, source: Path, row: pd.Series) -> onnx.ModelProto:
    """The study's int8 model (or the design's retrained one), one line when it is missing."""
    path = study.folder / source
    if not path.is_file():
        again = f"`python -m dse resume {study.folder}` writes it again" if source == NETWORK \
            else f"retrain design {row['design']} again (`python -m dse retrain {study.folder}`)"
        raise DesignError(f"{path}: the int8 network to export is missing; {again}")
    return load_model(path)


def _layers(model: onnx.ModelProto, path: Path) -> list[str]:
    """The nodes that multiply through a product table, named as ``approximate_model`` names
    them (a QDQ network's are its float Conv/Gemm/MatMul nodes, which it refuses by name)."""
    layers = table_layers(QGraph.from_onnx(model))
    if not layers:
        raise ApproxExportError(f"{path}: the network has no node that multiplies through a "
                                "product table; nothing to make approximate")
    return layers
