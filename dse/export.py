"""Tables of a study's trials: CSV, Parquet, and the EMGAxO-style CSV."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from circuits.appaxo import N_BITS
from dse.study import Study
from dse.study_file import StudyFileError

# EMGAxO's sweep tables: configuration string and integer, removed LUTs, then the metrics.
EMGAXO_METRICS = ("accuracy", "precision_macro", "recall_macro", "f1_macro", "mean_error", "mae",
                  "mse", "wce", "mred", "error_probability", "fpga_luts", "fpga_carry4",
                  "fpga_delay", "fpga_power", "area", "delay", "power", "power_uniform",
                  "power_workload", "pdp")


def plain(frame: pd.DataFrame) -> pd.DataFrame:
    """Lists and dicts (units, constraint values) as JSON text, so every format can hold them."""
    out = frame.copy()
    for column in out.columns:
        if out[column].map(lambda v: isinstance(v, (list, dict))).any():
            out[column] = out[column].map(lambda v: json.dumps(v) if isinstance(v, (list, dict)) else v)
    return out


def emgaxo_table(study: Study) -> pd.DataFrame:
    """Completed trials as EMGAxO lays them out: Config (36-character, MSB first), Config_int,
    Disabled_LUTs (removed LUTs out of 36), then every metric the study has."""
    if study.settings.space.type != "appaxo36":
        raise StudyFileError(f"{study.folder}: the emgaxo format lists AppAxO configurations; "
                             f"this is an {study.settings.space.type} study (use csv or parquet)")
    done = study.trials
    done = done[done["state"] == "COMPLETE"]
    table = pd.DataFrame({
        "Config": done["config_bits"],
        "Config_int": done["config"].astype("int64"),
        "Disabled_LUTs": N_BITS - done["config_bits"].str.count("1"),
    })
    for metric in EMGAXO_METRICS:
        if metric in done:
            table[metric] = done[metric].to_numpy()
    return table


def export(study: Study, fmt: str, path: Path | None = None) -> Path:
    """Write the table in ``fmt`` (csv, parquet, emgaxo); returns its path."""
    default = {"csv": "trials.csv", "parquet": "trials.parquet", "emgaxo": "emgaxo.csv"}[fmt]
    path = path or study.folder / default
    if fmt == "emgaxo":
        emgaxo_table(study).to_csv(path, index=False)
    elif fmt == "parquet":
        plain(study.trials).to_parquet(path, index=False)
    else:
        study.trials.to_csv(path, index=False)
    return path
