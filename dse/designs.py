"""A study's stored designs read back for work after the search: the trial a user names, the
product table(s) it multiplies with, and the study's network and data as it was scored.

``retrain`` and ``analyze`` start from a study folder and a design name, so both resolve it
here: by trial number, by the ``design`` column (an AppAxO design name, a generated circuit, a
layer-wise ``lw_...`` name) or by configuration integer.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from dse.study import BASELINE, DESIGN_POINT, SEARCH, Study
from dse.study_file import StudyFileError

DESIGN_ROLES = (BASELINE, SEARCH, DESIGN_POINT)  # the trials that measured a multiplier


class DesignError(StudyFileError):
    """A design that the study does not hold, or whose multiplier cannot be read back."""


def design_name(row: pd.Series) -> str:
    """The design's name, or ``trial<N>`` where the trial has none."""
    design = row.get("design")
    return str(design) if isinstance(design, str) and design else f"trial{int(row['trial'])}"


def measured(study: Study) -> pd.DataFrame:
    """The completed trials that measured a design on the whole test set (not the retrained
    ones, nor those screened on a subset, whose accuracy is not comparable)."""
    done = study.trials
    if done.empty:
        return done
    done = done[(done["state"] == "COMPLETE") & done["role"].isin(DESIGN_ROLES)]
    if "fidelity" in done:
        done = done[done["fidelity"].fillna("full") != "screened"]
    return done


def find_design(study: Study, spec: str) -> pd.Series:
    """The trial ``spec`` names: a trial number, a design name, or a configuration integer
    (the first completed trial that matches, in that order). One line naming valid choices
    otherwise."""
    rows = measured(study)
    spec = str(spec).strip()
    if spec.isdigit() and int(spec) in set(rows["trial"]):
        return rows[rows["trial"] == int(spec)].iloc[0]
    if "design" in rows and (hit := rows[rows["design"].astype(str) == spec]).shape[0]:
        return hit.iloc[0]
    if spec.isdigit() and (hit := rows[rows["config"].astype(str) == spec]).shape[0]:
        return hit.iloc[0]
    front = study.pareto()
    front = front[front["role"].isin(DESIGN_ROLES)] if not front.empty else front
    names = [f"{int(t)} ({d})" for t, d in zip(front.get("trial", []), front.get("design", []))]
    raise DesignError(f"--design {spec!r}: no completed trial of study {study.name} has that "
                      "trial number, design name or configuration; its Pareto designs (trial "
                      f"(design)): {', '.join(names[:12]) or 'none yet'}")


def front_designs(study: Study) -> pd.DataFrame:
    """The Pareto-optimal measured designs, the exact baseline left out (nothing to recover)."""
    front = study.pareto()
    if front.empty:
        return front
    return front[front["role"].isin((SEARCH, DESIGN_POINT))]


def design_tables(study: Study, row: pd.Series):
    """The product table of a design, or its ``LayerTables`` for a layer-wise study: AppAxO
    tables from the bit model, generated circuits from the table cache, the study's
    ``pareto/`` files or a re-run of the flow, layer-wise members from the study's library."""
    from circuits import appaxo
    from circuits.product_table import ProductTable

    kind = study.settings.space.type
    if getattr(study.settings.space, "firmware", None) is not None:
        raise DesignError(f"{study.folder}: design {design_name(row)} is a precision/sparsity "
                          "variant of the network; retrain, analyze, export --format onnx and hls "
                          "read the study's int8 network, so they do not take firmware designs yet")
    if kind == "appaxo36":
        return appaxo.table(int(row["config"]))
    if kind == "layerwise":
        from circuits.library import MultiplierLibrary
        from evaluators.layer_tables import LayerTables
        from evaluators.layerwise import EXACT

        library = MultiplierLibrary.load(study.folder / "library")
        assignment = row["assignment"]
        return LayerTables({layer: library[m].table for layer, m in assignment.items()},
                           library[EXACT].table)
    return _circuit_table(study, row, ProductTable)


def _circuit_table(study: Study, row: pd.Series, table_type):
    """A generated circuit's table: cached by hash, else in ``pareto/``, else simulated."""
    from circuits.characterize import characterize, stored_table
    from circuits.multiplier import Multiplier
    from dse.loop import flow_settings

    signed, sha = bool(row["signed"]), str(row["table_sha256"])
    try:
        return stored_table(sha, signed)
    except (OSError, ValueError):
        pass
    path = study.folder / "pareto" / f"{row['design']}.npy"
    if path.is_file():
        table = table_type(np.load(path), signed)
        if table.sha256 == sha:
            return table
    table = characterize(Multiplier(row["design"], row["verilog"], row["design"], signed),
                         flow_settings(study.settings)).table
    if table.sha256 != sha:
        raise DesignError(f"design {row['design']}: its Verilog simulates to a table other than "
                          "the one the study measured")
    return table


@dataclass(frozen=True)
class StudyData:
    """The study's network and data as it was scored: the int8 (and float, where the study
    had one) ONNX models kept in ``network/``, and the preprocessed training and test samples."""

    int8_onnx: Path
    float_onnx: Path | None
    train_inputs: np.ndarray
    train_labels: np.ndarray
    test_inputs: np.ndarray
    test_labels: np.ndarray
    test_images: np.ndarray  # the raw test samples (uint8 images), for thumbnails
    classes: int


def study_data(study: Study, log=print) -> StudyData:
    """Load the study's data exactly as ``build_evaluator`` did (same sizes, preprocessing)."""
    from dse.loop import model_preprocessing
    from evaluators.datasets import load_split
    from evaluators.preprocess import default_preprocessing

    settings = study.settings
    folder = study.folder / "network"
    int8 = folder / "int8.onnx"
    if not int8.is_file():
        raise DesignError(f"{int8}: the study's int8 network is missing; "
                          f"`python -m dse resume {study.folder}` writes it again")
    d = settings.dataset
    log(f"loading the {d.source} training and test data")
    train = load_split(d.source, "train", d.location, download=d.download)
    test = load_split(d.source, "test", d.location, download=d.download)
    train.check_size(d.train_size, "dataset.train_size")
    test.check_size(d.test_size, "dataset.test_size")
    train = train.head(d.train_size)
    preprocessing = model_preprocessing(settings) or default_preprocessing(d.source)
    images, labels = test.images, test.labels
    if d.test_size is not None:
        images, labels = images[:d.test_size], labels[:d.test_size]
    float_onnx = folder / "float.onnx"
    return StudyData(int8, float_onnx if float_onnx.is_file() else None,
                     preprocessing.apply(train.images), train.labels,
                     preprocessing.apply(images), labels, images, test.classes)
