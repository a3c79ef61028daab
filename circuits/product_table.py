"""Product tables: the contract between multipliers and the approximate kernels.

An 8x8 multiplier is a 256x256 table of int32 products. Signed tables are indexed
``[a + 128, b + 128]`` for a, b in [-128, 127]; unsigned ones ``[a, b]`` for a, b in [0, 255].
``a`` is the activation operand and ``b`` the weight operand. The sha256 of the table bytes and
its signedness is the identity every cache uses.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

SHAPE = (256, 256)


@dataclass(frozen=True, eq=False)
class ProductTable:
    """A multiplier's 256x256 int32 product table and its signedness; equal tables are equal
    values with equal signedness (compared through their hash)."""

    values: np.ndarray
    signed: bool
    # Optional structure: AppAxO row tables R[r, a + 128, d] with
    # values[a, b] = -32512 + sum_r 4^r R[r, a + 128, (b >> 2r) & 3] (see circuits.appaxo).
    rows: np.ndarray | None = field(default=None, repr=False)
    sha256: str = field(init=False, compare=False)

    def __post_init__(self) -> None:
        values = np.ascontiguousarray(self.values)
        if values.shape != SHAPE:
            raise ValueError(f"product table must have shape {SHAPE}, got {values.shape}")
        if values.dtype != np.int32:
            if not np.array_equal(values, values.astype(np.int32)):
                raise ValueError("product table values must fit in int32")
            values = values.astype(np.int32)
        values.setflags(write=False)
        object.__setattr__(self, "values", values)
        digest = hashlib.sha256(b"signed" if self.signed else b"unsigned")
        digest.update(values.tobytes())
        object.__setattr__(self, "sha256", digest.hexdigest())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ProductTable) and other.sha256 == self.sha256

    def __hash__(self) -> int:
        return hash(self.sha256)

    @property
    def offset(self) -> int:
        """What to add to an operand to get its row/column index."""
        return 128 if self.signed else 0

    @property
    def operands(self) -> np.ndarray:
        """The 256 operand values in index order."""
        return np.arange(256, dtype=np.int64) - self.offset

    @classmethod
    def from_bit_patterns(cls, outputs: np.ndarray, width: int, signed: bool) -> ProductTable:
        """The table of a circuit whose ``width``-bit output for the operand bit patterns
        ``(a << 8) | b`` is ``outputs[(a << 8) | b]`` (read as unsigned, or as two's complement
        with the operands when ``signed``)."""
        raw = np.asarray(outputs, dtype=np.int64) & ((1 << width) - 1)
        product = raw - ((raw >> (width - 1)) << width) if signed else raw
        index = np.arange(65536)
        flip = 0x80 if signed else 0  # an int8 bit pattern xor 0x80 is its signed index
        values = np.empty(SHAPE, dtype=np.int64)
        values[(index >> 8) ^ flip, (index & 0xFF) ^ flip] = product
        return cls(values, signed)

    @classmethod
    def exact(cls, signed: bool = True) -> ProductTable:
        """The table of the exact multiplier."""
        ops = np.arange(256, dtype=np.int64) - (128 if signed else 0)
        return cls(np.outer(ops, ops).astype(np.int32), signed)

    def exact_products(self) -> np.ndarray:
        """The exact products at every index of this table, as int64."""
        ops = self.operands
        return np.outer(ops, ops)

    def lookup(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Products of operand arrays a (activations) and b (weights), broadcast together."""
        return self.values[np.asarray(a) + self.offset, np.asarray(b) + self.offset]
