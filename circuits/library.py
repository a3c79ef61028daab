"""A multiplier library: the set of characterized 8x8 multipliers a layer-wise search picks from.

Each member has a product table, error metrics, its provenance and, once characterized, hardware
figures. Member 0 is always the exact multiplier (a layer may stay exact), all members share one
signedness, and no product table appears twice (a duplicate is dropped and reported). Members
come from AppAxO configurations, the truncated/broken-array baselines, Verilog files, catalogue
folders written by ``python -m dse characterize DIR -o OUT``, and ready-made ``Member`` objects
(the dse layer passes the Pareto designs of earlier studies). A library is saved to a folder:
``library.csv`` (one row per member), ``tables/<name>.npy`` and ``verilog/<name>.v``; a name
read from a file is checked before a path is built from it, so it never leads outside the folder.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from circuits import appaxo
from circuits.activity import OperandStream
from circuits.cache import ResultCache
from circuits.catalogue import characterize_full, unusable_name
from circuits.characterize import AMBIGUOUS, Characterization, FlowSettings, characterize
from circuits.error_metrics import error_metrics
from circuits.multiplier import Multiplier, MultiplierError, parse_baseline, truncated
from circuits.product_table import SHAPE, ProductTable
from circuits.tools import ToolError

EXACT = "exact"
# library.csv's columns before the metrics; a metric may not take one of these names
COLUMNS = ("name", "source", "signed", "appaxo_config", "table_sha256")
# what a characterization or catalogue row holds besides metrics (identity, provenance, units)
NOT_METRICS = frozenset(COLUMNS) | {"signedness", "units", "error"}
TOGGLE_UNIT = "transistor toggles per multiplication"
# the Verilog simulation that gives a file's product table: the table does not depend on the
# cell library, so the Liberty-free flow (the fastest) serves
TABLE_FLOW = FlowSettings()


class LibraryError(ValueError):
    """A member or library file that cannot be used; one line naming it and what is wrong."""


@dataclass(frozen=True)
class Member:
    """One multiplier of a library: its product table, provenance (``source``: ``appaxo:N``,
    ``baseline:NAME``, a Verilog path, ``catalogue:DIR/NAME``, ``study:RUN/DESIGN``, ``exact``),
    its Verilog when known, and its metrics: the error metrics of the table always, hardware
    figures once characterized. Metrics are plain numbers or strings; missing ones are absent."""

    name: str
    table: ProductTable
    source: str
    verilog: str | None = None
    appaxo_config: int | None = None
    metrics: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_name(self.name, self.source)
        metrics = {}
        for key, value in self.metrics.items():
            if key in COLUMNS:
                raise LibraryError(f"member {self.name}: {key!r} is a library column, not a metric")
            value = value.item() if isinstance(value, np.generic) else value
            if value is None or (isinstance(value, float) and math.isnan(value)):
                continue
            if not isinstance(value, (bool, int, float, str)):
                raise LibraryError(f"member {self.name}: metric {key!r} must be a number or a "
                                   f"string, got {type(value).__name__}")
            metrics[key] = value
        metrics.update(error_metrics(self.table))  # always those of the table itself
        object.__setattr__(self, "metrics", metrics)

    def multiplier(self) -> Multiplier | None:
        """The circuit to characterize; None when only the product table is known."""
        if self.appaxo_config is not None:  # as ``appaxo:N`` names it, so caches are shared
            return replace(Multiplier.from_appaxo(self.appaxo_config), name=self.name, source=self.source)
        if self.verilog is None:
            return None
        return Multiplier(self.name, self.verilog, None, self.table.signed, self.source)


def check_name(name: Any, where: str) -> str:
    """``name`` if it can name a member's files (``catalogue.unusable_name``), else a one-line
    LibraryError naming ``where`` (the folder or file it comes from) and the name."""
    if problem := unusable_name(name):
        raise LibraryError(f"{where}: member name {name!r} must be usable as a file name: {problem}")
    return name


def exact_member(signed: bool) -> Member:
    """Member 0 of every library: the exact multiplier, with the exact baseline's Verilog."""
    return Member(EXACT, ProductTable.exact(signed), EXACT, truncated(0, signed).verilog())


class MultiplierLibrary:
    """An immutable sequence of members with unique names and tables, of one signedness, whose
    member 0 is the exact multiplier. ``dropped`` lists ``(name, kept name)`` of members left out
    because an earlier member has the same table; ``notes`` are warnings from loading
    (e.g. catalogue rows skipped because their characterization failed)."""

    def __init__(self, members: Iterable[Member] = (), signed: bool = True,
                 notes: Iterable[str] = (), dropped: Iterable[tuple[str, str]] = ()) -> None:
        """``members`` in order; an exact member (name and source ``exact``, as a saved or
        characterized library holds it) becomes member 0, else ``exact_member(signed)`` does; any
        other member with the exact table is a duplicate of it. ``dropped``: pairs that a library
        this one derives from dropped."""
        given = list(members)
        exact = next((m for m in given if m.name == m.source == EXACT), None) or exact_member(signed)
        kept: dict[ProductTable, Member] = {}
        names: dict[str, Member] = {}
        self.dropped: tuple[tuple[str, str], ...] = tuple(dropped)
        for member in [exact, *(m for m in given if m is not exact)]:
            if member.table.signed != signed:
                raise LibraryError(f"{member.source}: member {member.name} is "
                                   f"{_signedness(member.table.signed)}; the library is "
                                   f"{_signedness(signed)}")
            if member.name == EXACT and member.table != ProductTable.exact(signed):
                raise LibraryError(f"{member.source}: the member named {EXACT!r} must be the "
                                   "exact multiplier")
            if (twin := kept.get(member.table)) is not None:
                self.dropped += ((member.name, twin.name),)
                continue
            if (other := names.get(member.name)) is not None:
                raise LibraryError(f"{member.source}: member name {member.name} is taken by {other.source}")
            kept[member.table] = names[member.name] = member
        self.signed = signed
        self.notes: tuple[str, ...] = tuple(notes)
        self._members = tuple(kept.values())
        self._index = {m.name: i for i, m in enumerate(self._members)}

    def __len__(self) -> int:
        return len(self._members)

    def __iter__(self) -> Iterator[Member]:
        return iter(self._members)

    def __getitem__(self, key: int | str) -> Member:
        return self._members[self.index(key) if isinstance(key, str) else key]

    def __contains__(self, name: object) -> bool:
        return name in self._index

    def __repr__(self) -> str:
        return f"MultiplierLibrary({_signedness(self.signed)}: {', '.join(self.names)})"

    def index(self, name: str) -> int:
        """Position of the member called ``name``."""
        if name not in self._index:
            raise LibraryError(f"no member named {name!r} in the library (members: {', '.join(self.names)})")
        return self._index[name]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(m.name for m in self._members)

    @property
    def tables(self) -> tuple[ProductTable, ...]:
        return tuple(m.table for m in self._members)

    @classmethod
    def build(cls, *, signed: bool = True, appaxo: Iterable[int | str] = (), baselines: Iterable[str] = (),
              verilog: Iterable[str | Path] = (), catalogues: Iterable[str | Path] = (),
              members: Iterable[Member] = (), cache: ResultCache | None = None) -> MultiplierLibrary:
        """A library of the exact multiplier and, in this order: AppAxO configurations (integers
        or 36-character bit strings), baselines by name (``trunc_s_k6``, ``bam_s_h2_v7``, see
        ``circuits.baselines.parse``), Verilog files (their tables simulated through the cached
        ``characterize``), catalogue folders and ready-made members."""
        found = [_appaxo_member(config) for config in appaxo]
        found += [_baseline_member(name) for name in baselines]
        found += [_verilog_member(Path(path), signed, cache) for path in verilog]
        notes: list[str] = []
        for folder in catalogues:
            rows, skipped = _catalogue_members(Path(folder), cache)
            found += rows
            notes += skipped
        return cls([*found, *members], signed, notes)

    def characterize(self, flow: FlowSettings, workload: OperandStream | None = None,
                     cache: ResultCache | None = None, fpga: bool = True,
                     progress: bool = False) -> MultiplierLibrary:
        """A new library whose members' metrics also hold the ASIC figures of ``flow`` (area,
        delay, power uniform/vectorless/workload, cells, cost_model; through the cached
        ``characterize``) and, with ``fpga``, the FPGA LUTs and CARRY4s (``catalogue.fpga_cost``).
        Every member needs its Verilog, and the Verilog must simulate to the member's table."""
        members = []
        for member in tqdm(self, desc="characterizing", unit="multiplier", disable=not progress):
            result = _characterize_member(member, flow, workload, cache, fpga)
            figures = {k: v for k, v in result.metrics.items() if k not in NOT_METRICS}
            members.append(replace(member, metrics={**member.metrics, **figures}))
        return MultiplierLibrary(members, self.signed, self.notes, self.dropped)

    def energy_per_multiplication(self, flow: FlowSettings, workloads: Mapping[str, OperandStream],
                                  cache: ResultCache | None = None, progress: bool = False) -> pd.DataFrame:
        """Energy of one multiplication by each member (rows) under each workload (columns, e.g.
        the operand stream of each layer).

        A multiplier does one multiplication per clock cycle, so the energy of one is the power
        under that workload's operands times the clock period::

            E [pJ] = power_workload [uW] * flow.clock_period_ns [ns] * 1e-3

        Without a Liberty file (``flow.liberty`` None) the power is the Liberty-free estimate in
        transistor toggles per cycle, returned as is (transistor toggles per multiplication).
        ``frame.attrs["unit"]`` names the unit. Each (member, workload) pair is one cached
        ``characterize`` run, so it is computed once across calls and studies.
        """
        for name, stream in workloads.items():
            _check_stream(name, stream, self.signed)
        pairs = [(member, name) for member in self for name in workloads]
        energy: dict[tuple[str, str], float] = {}
        for member, name in tqdm(pairs, desc="workload power", unit="run", disable=not progress):
            power = _characterize_member(member, flow, workloads[name], cache).metrics["power_workload"]
            energy[member.name, name] = power * flow.clock_period_ns * 1e-3 if flow.liberty else power
        frame = pd.DataFrame([[energy[m, name] for name in workloads] for m in self.names],
                             index=pd.Index(self.names, name="member"), columns=list(workloads), dtype=float)
        frame.attrs["unit"] = "pJ" if flow.liberty else TOGGLE_UNIT
        return frame

    def subset(self, names: Iterable[str]) -> MultiplierLibrary:
        """The members named (in library order; the exact multiplier always)."""
        wanted = set(names)
        for name in wanted:
            self.index(name)  # an unknown name is a LibraryError
        return MultiplierLibrary([m for m in self if m.name in wanted or m is self[0]],
                                 self.signed, self.notes)

    def frame(self) -> pd.DataFrame:
        """One row per member: name, provenance, table hash and every metric (for reports)."""
        return pd.DataFrame([_row(m) for m in self])

    def save(self, folder: str | Path) -> Path:
        """Write ``library.csv``, ``tables/<name>.npy`` and ``verilog/<name>.v`` (when known)
        into ``folder``; returns the path of ``library.csv``."""
        folder = Path(folder)
        for kind in ("tables", "verilog"):
            (folder / kind).mkdir(parents=True, exist_ok=True)
        for member in self:
            np.save(folder / "tables" / f"{member.name}.npy", member.table.values)
            verilog = folder / "verilog" / f"{member.name}.v"
            if member.verilog is None:  # a stale file must not be read back as its Verilog
                verilog.unlink(missing_ok=True)
            else:
                verilog.write_bytes(member.verilog.encode())
        # object columns keep ints as ints and write floats as their exact repr
        pd.DataFrame([_row(m) for m in self], dtype=object).to_csv(folder / "library.csv", index=False)
        return folder / "library.csv"

    @classmethod
    def load(cls, folder: str | Path) -> MultiplierLibrary:
        """The library ``save`` wrote into ``folder``; every table is checked against its hash."""
        folder = Path(folder)
        csv = folder / "library.csv"
        if not csv.is_file():
            raise LibraryError(f"{csv}: not found (a folder written by MultiplierLibrary.save)")
        frame = _read_csv(csv)
        if missing := [c for c in COLUMNS if c not in frame]:
            raise LibraryError(f"{csv}: missing column(s) {', '.join(missing)}")
        members = []
        for line, row in enumerate(frame.to_dict("records"), start=2):
            name, source, signed, config, sha256 = (row.pop(c) for c in COLUMNS)
            if _blank(name) or _blank(signed) or _blank(sha256):
                raise LibraryError(f"{csv}: line {line} lacks its name, signed or table_sha256 value")
            name = check_name(name, f"{csv}: line {line}")  # before it names a path
            table = _read_table(folder / "tables" / f"{name}.npy", bool(signed), sha256, "library.csv")
            verilog = folder / "verilog" / f"{name}.v"
            text = verilog.read_bytes().decode() if verilog.is_file() else None
            members.append(Member(name, table, source or "", text, config, row))
        if not members:
            raise LibraryError(f"{csv}: no members (the exact multiplier at least is expected)")
        return cls(members, members[0].table.signed)


def _signedness(signed: bool) -> str:
    return "signed" if signed else "unsigned"


def _one_line(err: Exception) -> str:
    return " ".join(str(err).split())


def _named(subject: str, err: Exception) -> LibraryError:
    """A one-line LibraryError naming ``subject`` once."""
    text = _one_line(err)
    return LibraryError(text if subject in text else f"{subject}: {text}")


def _row(member: Member) -> dict[str, Any]:
    return {"name": member.name, "source": member.source, "signed": member.table.signed,
            "appaxo_config": member.appaxo_config, "table_sha256": member.table.sha256, **member.metrics}


def _appaxo_member(config: int | str) -> Member:
    try:
        mult = Multiplier.parse(f"appaxo:{config}")
    except MultiplierError as err:
        raise LibraryError(_one_line(err)) from None
    return Member(mult.name, appaxo.table(mult.appaxo_config), mult.source, mult.verilog, mult.appaxo_config)


def _baseline_member(name: str) -> Member:
    try:
        model = parse_baseline(name)
    except ValueError as err:
        raise _named(f"baseline:{name}", err) from None
    return Member(model.name, model.table(), f"baseline:{model.name}", model.verilog())


def _verilog_member(path: Path, signed: bool, cache: ResultCache | None) -> Member:
    """A Verilog file's member, its table simulated. Its signedness is declared or inferred; a
    table that reads as neither (``ambiguous``) is read with the library's signedness."""
    try:
        mult = Multiplier.from_file(path)
        result = characterize(mult, TABLE_FLOW, cache=cache)
        if result.metrics["signedness"] == AMBIGUOUS:
            mult = replace(mult, signed=signed)
            result = characterize(mult, TABLE_FLOW, cache=cache)
    except (MultiplierError, ToolError) as err:
        raise _named(str(path), err) from None
    return Member(path.stem, result.table, str(path), mult.verilog)


def _read_csv(path: Path) -> pd.DataFrame:
    """A CSV with nullable dtypes (ints stay ints beside blanks) where only a blank is missing."""
    try:
        return pd.read_csv(path, dtype_backend="numpy_nullable", keep_default_na=False, na_values=[""],
                           dtype={"name": str, "source": str})
    except (OSError, ValueError) as err:
        raise _named(str(path), err) from None


def _read_table(path: Path, signed: bool, sha256: str, listed_in: str) -> ProductTable:
    """A saved product table, checked: present, 256x256 int32, and the hash its list gives."""
    if not path.is_file():
        raise LibraryError(f"{path}: missing (the product table {listed_in} lists)")
    try:
        values = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise LibraryError(f"{path}: not a readable .npy product table ({_one_line(err)})") from None
    if values.shape != SHAPE or values.dtype != np.int32:
        raise LibraryError(f"{path}: expected a 256x256 int32 product table, got "
                           f"{values.dtype} {values.shape}")
    table = ProductTable(values, signed)
    if table.sha256 != sha256:
        raise LibraryError(f"{path}: does not match the table_sha256 {listed_in} gives "
                           f"({_signedness(signed)}); the file is damaged or was replaced")
    return table


def _catalogue_members(folder: Path, cache: ResultCache | None) -> tuple[list[Member], list[str]]:
    """The characterized rows of a catalogue folder as members (metrics as catalogued), and one
    note per row skipped because its characterization failed. Tables and Verilog come from the
    folder's ``tables/`` and ``verilog/``; an older catalogue without them falls back to the
    Verilog file its ``source`` column names, simulated again (cached)."""
    files = [folder / name for name in ("catalogue.parquet", "catalogue.csv")]
    path = next((f for f in files if f.is_file()), None)
    if path is None:
        raise LibraryError(f"{folder}: no catalogue.csv or catalogue.parquet (write one with "
                           f"python -m dse characterize DIR -o {folder})")
    try:
        frame = pd.read_parquet(path) if path.suffix == ".parquet" else _read_csv(path)
    except (OSError, ValueError) as err:
        raise _named(str(path), err) from None
    if missing := [c for c in ("name", "signed", "table_sha256", "source", "error") if c not in frame]:
        raise LibraryError(f"{path}: not a catalogue (missing column(s) {', '.join(missing)})")
    members, notes = [], []
    for row in frame.to_dict("records"):
        row = {k: None if _blank(v) else v for k, v in row.items()}
        if row["error"] is not None:  # only named in the note: no file of it is read
            notes.append(f"{folder}: {row['name']} skipped, its characterization failed: {row['error']}")
            continue
        name = check_name(row["name"], str(path))  # before it names a path
        table, verilog = _catalogued_design(folder, path.name, row, cache)
        metrics = {k: v for k, v in row.items() if k not in NOT_METRICS}
        members.append(Member(name, table, f"catalogue:{folder}/{name}", verilog, None, metrics))
    return members, notes


def _blank(value: Any) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def _catalogued_design(folder: Path, listed_in: str, row: dict,
                       cache: ResultCache | None) -> tuple[ProductTable, str | None]:
    """A catalogue row's product table and Verilog: its files in the folder, or for an older
    catalogue the Verilog file of its ``source`` column, simulated again through ``characterize``."""
    name, signed, sha256 = row["name"], bool(row["signed"]), row["table_sha256"]  # name checked
    table_file, verilog_file = folder / "tables" / f"{name}.npy", folder / "verilog" / f"{name}.v"
    source = Path(str(row["source"]))
    if table_file.is_file():
        table = _read_table(table_file, signed, sha256, listed_in)
        text = verilog_file.read_text() if verilog_file.is_file() else \
            source.read_text() if source.is_file() else None
        return table, text
    if not source.is_file():
        raise LibraryError(f"{folder}: catalogue row {name} has neither tables/{name}.npy nor "
                           f"its Verilog file {source}")
    try:
        mult = Multiplier.from_file(source, signed)
        table = characterize(mult, TABLE_FLOW, cache=cache).table
    except (MultiplierError, ToolError) as err:
        raise _named(str(source), err) from None
    if table.sha256 != sha256:
        raise LibraryError(f"{source}: simulates to another table than catalogue row {name} of "
                           f"{folder} records (the file changed since it was catalogued)")
    return table, mult.verilog


def _characterize_member(member: Member, flow: FlowSettings, workload: OperandStream | None,
                         cache: ResultCache | None, fpga: bool = False) -> Characterization:
    """One member through the flow, checked: the simulated table must be the member's."""
    mult = member.multiplier()
    if mult is None:
        raise LibraryError(f"{member.source}: member {member.name} has only a product table; "
                           "characterizing it needs its Verilog")
    try:
        result = characterize_full(mult, flow, workload, cache, fpga)
    except (MultiplierError, ToolError) as err:
        raise _named(f"member {member.name}", err) from None
    if result.table != member.table:
        raise LibraryError(f"member {member.name}: its Verilog does not implement its product table "
                           f"(simulated MAE {result.metrics['mae']:g}, the member's "
                           f"{member.metrics['mae']:g})")
    return result


def _check_stream(name: str, stream: OperandStream, signed: bool) -> None:
    """A workload must hold at least two operand pairs in the library's operand range."""
    lo, hi = (-128, 127) if signed else (0, 255)
    a, b = np.asarray(stream.a), np.asarray(stream.b)
    if a.shape != b.shape or a.ndim != 1 or len(a) < 2:
        raise LibraryError(f"workload {name}: expected two equally long 1-D operand arrays of "
                           f"at least 2 pairs, got shapes {a.shape} and {b.shape}")
    if min(a.min(), b.min()) < lo or max(a.max(), b.max()) > hi:
        raise LibraryError(f"workload {name}: operands must lie in [{lo}, {hi}] for a "
                           f"{_signedness(signed)} library")
