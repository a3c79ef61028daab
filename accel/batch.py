"""Batched mode: several product tables scored in one pass over the network.

The leading (image) axis of every tensor holds the images of each table in turn: rows
``[i * n, (i + 1) * n)`` belong to table ``i``. Ops without multiplications need nothing new
(they are elementwise along that axis); the multiplying kernels receive a ``TableBatch`` in
place of a table. ``accel.torch_kernels`` batches natively (one matrix product per layer for
all tables, which is where a GPU gains); ``PerTable`` runs any other kernel module table by
table on its slice, so batched mode gives the same results on every kernel.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from circuits.product_table import ProductTable


@dataclass(frozen=True)
class TableBatch:
    """Tables of one signedness, scored together."""

    tables: tuple[ProductTable, ...]

    def __post_init__(self) -> None:
        if not self.tables:
            raise ValueError("a table batch needs at least one table")
        if len({t.signed for t in self.tables}) > 1:
            raise ValueError("the tables of a batch must all be signed or all unsigned")

    def __len__(self) -> int:
        return len(self.tables)

    @property
    def signed(self) -> bool:
        return self.tables[0].signed

    @property
    def offset(self) -> int:
        return self.tables[0].offset

    def split(self, x: np.ndarray) -> list[np.ndarray]:
        """The slices of ``x`` (along its leading axis) that belong to each table."""
        return split_rows(x, len(self))


def split_rows(x: np.ndarray, parts: int) -> list[np.ndarray]:
    """``x`` cut along its leading axis into ``parts`` equal slices, one per table of a batch."""
    if x.shape[0] % parts:
        raise ValueError(f"a leading axis of {x.shape[0]} does not split into {parts} tables")
    return np.split(x, parts)


def tables_of(table: ProductTable | TableBatch) -> tuple[ProductTable, ...]:
    """The tables of a batch, or the single table as a batch of one."""
    return table.tables if isinstance(table, TableBatch) else (table,)


class PerTable:
    """Any kernel module in batched mode: each kernel call (``f(x, w, table, **options)``, the
    contract of ``accel.reference``) is run per table on that table's slice."""

    def __init__(self, kernels) -> None:
        self._kernels = kernels

    def __getattr__(self, name: str):
        kernel = getattr(self._kernels, name)

        def per_table(x, w, table, **options):
            if not isinstance(table, TableBatch):
                return kernel(x, w, table, **options)
            return np.concatenate([kernel(part, w, t, **options)
                                   for part, t in zip(table.split(x), table.tables)])

        return per_table
