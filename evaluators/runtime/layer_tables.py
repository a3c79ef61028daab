"""Per-layer product tables: which multiplier each table-multiplying layer of a network uses.

A layer is named as the int8 ONNX model names its QLinearConv/QGemm/QLinearMatMul node (a QDQ
group is named after its float op), so an assignment written for the model file holds for the
graph the runner executes: fused ops keep the name of the layer they absorbed
(``approx_runner.table_layers`` lists them in execution order). Layers an assignment does not
name use its default table.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np

from accel.batch import TableBatch, split_rows
from circuits.product_table import ProductTable


@dataclass(frozen=True, eq=False)
class LayerTables:
    """Layer name -> product table, and the ``default`` table of every other layer; one
    signedness. Equal assignments (the same table for every layer) compare and hash equal."""

    tables: Mapping[str, ProductTable]
    default: ProductTable

    def __post_init__(self) -> None:
        tables = dict(self.tables)
        for layer, table in tables.items():
            if not isinstance(table, ProductTable):
                raise TypeError(f"layer {layer!r}: expected a ProductTable, got {type(table).__name__}")
        if len({self.default.signed, *(t.signed for t in tables.values())}) > 1:
            raise ValueError("the tables of a layer assignment must all be signed or all unsigned")
        object.__setattr__(self, "tables", MappingProxyType(tables))

    def __reduce__(self) -> tuple:
        """Pickled as a plain mapping (to Ray workers): a read-only view does not pickle."""
        return LayerTables, (dict(self.tables), self.default)

    def table(self, layer: str) -> ProductTable:
        """The table the layer multiplies with."""
        return self.tables.get(layer, self.default)

    @property
    def signed(self) -> bool:
        return self.default.signed

    @property
    def offset(self) -> int:
        return self.default.offset

    @property
    def sha256(self) -> str:
        """Identity of the assignment: the default's hash and the (layer, hash) pairs of the
        layers that differ from it. Without such layers it is the default table's own hash, as
        the assignment multiplies exactly as that table does."""
        pairs = sorted((layer, t.sha256) for layer, t in self.tables.items() if t != self.default)
        if not pairs:
            return self.default.sha256
        digest = hashlib.sha256(f"default:{self.default.sha256}".encode())
        for layer, sha in pairs:
            digest.update(f"|{layer}:{sha}".encode())
        return digest.hexdigest()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LayerTables) and other.sha256 == self.sha256

    def __hash__(self) -> int:
        return hash(self.sha256)


Assignment = ProductTable | LayerTables
"""What one evaluation multiplies with: one table for every layer, or a table per layer."""


@dataclass(frozen=True)
class LayerTablesBatch:
    """Several assignments scored in one pass (batched mode, see ``accel.batch``): each layer
    multiplies with the ``TableBatch`` of every assignment's table for it."""

    assignments: tuple[LayerTables, ...]

    def __post_init__(self) -> None:
        if not self.assignments:
            raise ValueError("a batch of layer assignments needs at least one assignment")
        if len({a.signed for a in self.assignments}) > 1:
            raise ValueError("the assignments of a batch must all be signed or all unsigned")

    def __len__(self) -> int:
        return len(self.assignments)

    def table(self, layer: str) -> TableBatch:
        return TableBatch(tuple(a.table(layer) for a in self.assignments))

    @property
    def signed(self) -> bool:
        return self.assignments[0].signed

    @property
    def offset(self) -> int:
        return self.assignments[0].offset

    def split(self, x: np.ndarray) -> list[np.ndarray]:
        """The slices of ``x`` (along its leading axis) that belong to each assignment."""
        return split_rows(x, len(self))


Tables = ProductTable | TableBatch | LayerTables | LayerTablesBatch
"""What the runner multiplies with: one assignment, or a batch of them."""


def layer_table(tables: Tables, layer: str) -> ProductTable | TableBatch:
    """The table (or batch of tables) the layer multiplies with."""
    return tables.table(layer) if isinstance(tables, (LayerTables, LayerTablesBatch)) else tables


def batch_of(assignments: Sequence[Assignment]) -> TableBatch | LayerTablesBatch:
    """The assignments as one batch: a ``TableBatch`` when each is a single table."""
    if all(isinstance(a, ProductTable) for a in assignments):
        return TableBatch(tuple(assignments))
    return LayerTablesBatch(tuple(a if isinstance(a, LayerTables) else LayerTables({}, a)
                                  for a in assignments))


def assigned_layers(tables: Tables) -> set[str]:
    """The layer names the assignment (or batch of assignments) names."""
    if isinstance(tables, LayerTables):
        return set(tables.tables)
    if isinstance(tables, LayerTablesBatch):
        return {layer for a in tables.assignments for layer in a.tables}
    return set()
