"""Tables of a study's trials: CSV, Parquet, and the EMGAxO-style CSV.

Every CSV reads back unchanged with ``pandas.read_csv`` defaults: configuration bit strings
(``config_bits``, EMGAxO's ``Config``) are written as Python binary literals (``0b0011...``,
all 36 digits; ``int(s, 0)`` or ``int(s, 2)`` reads the integer back) so that no reader takes
them for numbers and drops their leading zeros, with the integer (``config``, ``Config_int``)
alongside; lists and dicts are JSON text; timestamps are ISO 8601 with their UTC offset.
Parquet holds a layer-wise study's configurations as decimal text when one exceeds int64.
"""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import pandas as pd

from circuits.appaxo import N_BITS
from dse.outputs import check_file, csv_header, replacing
from dse.study import RETRAINED, Study
from dse.study_file import StudyFileError

# EMGAxO's sweep tables: configuration string and integer, removed LUTs, then the metrics.
EMGAXO_METRICS = ("accuracy", "precision_macro", "recall_macro", "f1_macro", "mean_error", "mae",
                  "mse", "wce", "mred", "error_probability", "fpga_luts", "fpga_carry4",
                  "fpga_delay", "fpga_power", "area", "delay", "power", "power_uniform",
                  "power_workload", "pdp")
BIT_COLUMNS = ("config_bits", "Config")
BITS_PREFIX = "0b"


def plain(frame: pd.DataFrame) -> pd.DataFrame:
    """Lists and dicts (units, constraint values) as JSON text, so every format can hold them."""
    out = frame.copy()
    for column in out.columns:
        if out[column].map(lambda v: isinstance(v, (list, dict))).any():
            out[column] = out[column].map(lambda v: json.dumps(v) if isinstance(v, (list, dict)) else v)
    return out


def write_csv(frame: pd.DataFrame, path: Path) -> None:
    """A table as CSV that ``pandas.read_csv`` reads back without mangling a column."""
    out = plain(frame)
    for column in BIT_COLUMNS:
        if column in out:
            out[column] = out[column].map(lambda b: BITS_PREFIX + b if isinstance(b, str) else b)
    out.to_csv(path, index=False)


def trials_table(study: Study, front: pd.DataFrame | None = None) -> pd.DataFrame:
    """Every trial with ``on_front``: whether it is on the Pareto front, so has design files
    named by its ``design`` in the study's ``pareto/`` folder."""
    trials = study.trials.copy()
    front = study.pareto() if front is None else front
    trials["on_front"] = trials["trial"].isin(front["trial"]) if not front.empty else False
    return trials


def emgaxo_table(study: Study) -> pd.DataFrame:
    """Completed trials as EMGAxO lays them out: Config (36 bits, MSB first), Config_int,
    Disabled_LUTs (removed LUTs out of 36), then every metric the study has. Retrained trials
    are left out: a row there is a configuration with the study's weights (the csv and
    parquet formats hold them, with their role)."""
    column = study.settings.kind.appaxo_column
    if column is None:
        raise StudyFileError(f"{study.folder}: the emgaxo format lists AppAxO configurations; "
                             f"this is an {study.settings.kind.name} study (use csv or parquet)")
    done = study.trials
    done = done[(done["state"] == "COMPLETE") & (done["role"] != RETRAINED)]
    table = pd.DataFrame({
        "Config": done["config_bits"],
        "Config_int": done[column].astype("int64"),
        "Disabled_LUTs": N_BITS - done["config_bits"].str.count("1"),
    })
    for metric in EMGAXO_METRICS:
        if metric in done:
            table[metric] = done[metric].to_numpy()
    return table


def export(study: Study, fmt: str, path: Path | None = None, *, force: bool = False) -> Path:
    """Write the table in ``fmt`` (csv, parquet, emgaxo) to ``path`` (default: its name in the
    study folder) by the output rules (``dse.outputs``): an existing file is replaced only when
    it is an earlier export of this format, and with ``force`` unless it is the default path;
    returns the path."""
    default = study.folder / DEFAULT_NAMES[fmt]
    path = check_file(path or default, f"{fmt} export of a study", partial(_is_export, fmt),
                      force=force or path is None or Path(path).resolve() == default.resolve(),
                      study_exports=DEFAULT_NAMES.values())
    with replacing(path) as temporary:
        if fmt == "emgaxo":
            write_csv(emgaxo_table(study), temporary)
        elif fmt == "parquet":
            _write_parquet(plain(trials_table(study)), temporary)
        else:
            write_csv(trials_table(study), temporary)
    return path


DEFAULT_NAMES = {"csv": "trials.csv", "parquet": "trials.parquet", "emgaxo": "emgaxo.csv"}
_PARQUET_KIND = (b"dse.export", b"trials")  # schema metadata that marks a trials export


def _write_parquet(table: pd.DataFrame, path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    if table["config"].map(lambda c: c >= 2**63).any():  # layer-wise: beyond int64
        table["config"] = table["config"].map(str)
    arrow = pa.Table.from_pandas(table, preserve_index=False)
    arrow = arrow.replace_schema_metadata({**(arrow.schema.metadata or {}),
                                           _PARQUET_KIND[0]: _PARQUET_KIND[1]})
    pq.write_table(arrow, path)


def _is_export(fmt: str, path: Path) -> bool:
    """Whether ``path`` holds an export in ``fmt``: a trials CSV's leading columns, EMGAxO's
    columns, or the marker in a Parquet file's schema."""
    if fmt == "parquet":
        import pyarrow.parquet as pq

        try:
            metadata = pq.read_schema(path).metadata or {}
        except Exception:  # noqa: BLE001  anything pyarrow cannot read is not our export
            return False
        return metadata.get(_PARQUET_KIND[0]) == _PARQUET_KIND[1]
    header = csv_header(path) or []
    if fmt == "emgaxo":
        return header[:3] == ["Config", "Config_int", "Disabled_LUTs"]
    return header[:2] == ["trial", "state"] and {"config", "role"} <= set(header)
