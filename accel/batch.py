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


def matmul_parts(a: np.ndarray, b: np.ndarray, parts: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """The operands of a batched matrix product (``a`` (..., M, K) times ``b`` (..., K, N),
    numpy broadcasting) cut into each table's share: the result's leading axis holds the
    images, so an operand that spans it (``a``'s rows when the product is 2-D) is cut along
    its leading axis and one broadcast over it (a constant) is shared."""
    out_ndim = max(a.ndim, b.ndim)
    lead = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    rows = lead[0] if lead else a.shape[-2]
    cut_a = a.ndim == out_ndim and a.shape[0] == rows
    cut_b = b.ndim == out_ndim > 2 and b.shape[0] == rows
    a_parts = split_rows(a, parts) if cut_a else [a] * parts
    b_parts = split_rows(b, parts) if cut_b else [b] * parts
    return list(zip(a_parts, b_parts))


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
            if name == "matmul_accumulate":  # two activations: both may hold the images
                return np.concatenate([kernel(a, b, t, **options) for (a, b), t in
                                       zip(matmul_parts(x, w, len(table)), table.tables)])
            return np.concatenate([kernel(part, w, t, **options)
                                   for part, t in zip(table.split(x), table.tables)])

        return per_table
