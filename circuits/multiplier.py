"""A multiplier to characterize: Verilog text, its top module, and how to read its ports.

Any module with two 8-bit inputs and one output of 16 or more bits is an 8x8 multiplier. The
inputs named ``a`` and ``b`` are the activation and the weight operand; otherwise the first
declared input is the activation. Signedness comes from the port declarations (``signed`` or
``unsigned``), else from what the caller gives (``signed``), else from the simulated table
(``circuits.characterize.infer_signedness``), which says ``ambiguous`` rather than guess.

The partial-product array multipliers the baselines are made of (``ArrayMultiplier``:
truncated, broken array; ``circuits.baselines`` is their family) live here too, next to the
``Multiplier`` they build, because ``Multiplier.parse`` resolves ``baseline:NAME`` through them.
An array multiplier keeps a set of the 8x8 array's partial-product bits and sums them exactly:

- **Truncated** (parameter ``k``): every bit of the columns below ``k`` is removed; with
  ``compensate`` the expected value of the removed bits (operands uniform) is added back as a
  constant, which removes most of the bias.
- **Broken array** (BAM, Mahdiani et al., IEEE TCAS-I 2010; parameters ``hbl``, ``vbl``): the
  cells of the partial-product rows below the horizontal break level (weight bits ``j < hbl``)
  and of the columns below the vertical break level (``i + j < vbl``) are removed.

Unsigned multipliers use the plain array ``a_i b_j``. Signed ones use the Baugh-Wooley array:
``a_i b_j`` for ``i, j < 7`` and ``a_7 b_7``, the complements ``~(a_7 b_j)`` and ``~(a_i b_7)``
for the sign row and column, and the constant ``2^15 + 2^8``; the 16-bit sum read as two's
complement is the signed product. A removed bit is removed wherever it sits in that array, so a
bit ``(i, j)`` has the same meaning for both signednesses.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from circuits import appaxo
from circuits.product_table import ProductTable


class MultiplierError(ValueError):
    """A Verilog file that is not a usable 8x8 multiplier; one line naming the file."""


@dataclass(frozen=True)
class Multiplier:
    """Verilog of an 8x8 multiplier and what is known of it."""

    name: str
    verilog: str
    top: str | None = None  # None: Yosys picks the top of the hierarchy
    signed: bool | None = None
    source: str = ""
    appaxo_config: int | None = None

    @property
    def file_name(self) -> str:
        """The name the tools see, so their messages name the user's file: letters, digits and
        ``_ . -`` only, never leading with ``-`` (a tool script could read it as an option)."""
        return re.sub(r"^[^A-Za-z0-9_]|[^A-Za-z0-9_.-]", "_", self.name) + ".v"

    @property
    def sha256(self) -> str:
        """Identity of the design (text and top module) for caches."""
        return hashlib.sha256(f"{self.top}\n{self.verilog}".encode()).hexdigest()

    @classmethod
    def from_file(cls, path: str | Path, signed: bool | None = None, top: str | None = None) -> Multiplier:
        path = Path(path)
        try:
            text = path.read_text()
        except OSError as err:
            raise MultiplierError(f"{path}: cannot read ({err.strerror})") from None
        if not re.search(r"^\s*module\b", text, flags=re.M):
            raise MultiplierError(f"{path}: no Verilog module found")
        return cls(path.stem, text, top, signed, str(path))

    @classmethod
    def from_appaxo(cls, config: int) -> Multiplier:
        config = appaxo.check_config(config)
        top = appaxo.config_name(config)
        return cls(top, appaxo.verilog(config, top), top, True, f"appaxo:{config}", config)

    @classmethod
    def parse(cls, spec: str, signed: bool | None = None) -> Multiplier:
        """``FILE.v``, ``appaxo:CONFIG`` (CONFIG an integer or a 36-character bit string) or
        ``baseline:NAME`` (see ``parse_baseline``)."""
        if spec.startswith("baseline:"):
            try:
                return parse_baseline(spec.removeprefix("baseline:")).multiplier()
            except ValueError as err:
                raise MultiplierError(f"{spec}: {err}") from None
        if spec.startswith("appaxo:"):
            value = spec.removeprefix("appaxo:")
            try:
                config = appaxo.from_bitstring(value) if len(value) == 36 and set(value) <= {"0", "1"} \
                    else int(value, 0)
                return cls.from_appaxo(config)
            except ValueError as err:
                raise MultiplierError(f"{spec}: {err}") from None
        return cls.from_file(spec, signed)


# -- array multipliers (the baselines) -------------------------------------------------------------

WIDTH = 8
_BW_CONSTANT = (1 << 15) + (1 << 8)  # Baugh-Wooley's constant, modulo 2^16


def _complemented(i: int, j: int, signed: bool) -> bool:
    """Baugh-Wooley: the sign row's and column's bits (not their corner) enter complemented."""
    return signed and (i == WIDTH - 1) != (j == WIDTH - 1)


@dataclass(frozen=True)
class ArrayMultiplier:
    """An 8x8 multiplier given by which partial-product bits ``(i, j)`` (activation bit ``i``,
    weight bit ``j``) it keeps, plus a constant added to the sum."""

    name: str
    signed: bool
    kept: frozenset[tuple[int, int]]
    constant: int = 0

    def _total_constant(self) -> int:
        return (self.constant + (_BW_CONSTANT if self.signed else 0)) % (1 << 16)

    def table(self) -> ProductTable:
        """The product table of the model (the netlist of ``verilog()`` simulates to it)."""
        index = np.arange(65536, dtype=np.int64)
        ua, ub = index >> 8, index & 0xFF  # operand bit patterns
        total = np.full(index.shape, self._total_constant(), dtype=np.int64)
        for i, j in self.kept:
            bit = (ua >> i) & (ub >> j) & 1
            total += (1 - bit if _complemented(i, j, self.signed) else bit) << (i + j)
        return ProductTable.from_bit_patterns(total, 16, self.signed)

    def verilog(self) -> str:
        """Synthesizable Verilog: one 16-bit row per weight bit, summed with the constant."""
        lines = [f"// {self.name}: {'signed (Baugh-Wooley)' if self.signed else 'unsigned'} 8x8 "
                 f"array multiplier keeping {len(self.kept)} of 64 partial products; dse baselines",
                 f"module {self.name} (input [7:0] a, input [7:0] b, output [15:0] p);"]
        rows = []
        for j in range(WIDTH):
            bits = ["1'b0"] * 16
            for i in range(WIDTH):
                if (i, j) in self.kept:
                    bits[i + j] = f"{'~' if _complemented(i, j, self.signed) else ''}(a[{i}] & b[{j}])"
            if any(b != "1'b0" for b in bits):
                lines.append(f"  wire [15:0] r{j} = {{{', '.join(reversed(bits))}}};")
                rows.append(f"r{j}")
        constant = f"16'd{self._total_constant()}"
        lines.append(f"  assign p = {' + '.join(rows + [constant])};")
        lines.append("endmodule")
        return "\n".join(lines) + "\n"

    def multiplier(self) -> Multiplier:
        return Multiplier(self.name, self.verilog(), self.name, self.signed, f"baseline:{self.name}")


def _all_bits() -> list[tuple[int, int]]:
    return [(i, j) for i in range(WIDTH) for j in range(WIDTH)]


def truncated(k: int, signed: bool = True, compensate: bool = False) -> ArrayMultiplier:
    """The array without its ``k`` least significant columns (0 <= k <= 15)."""
    if not 0 <= k <= 2 * WIDTH - 1:
        raise ValueError(f"truncation k must be in 0..15, got {k}")
    kept = frozenset((i, j) for i, j in _all_bits() if i + j >= k)
    removed = [b for b in _all_bits() if b not in kept]
    # E[bit] = 1/4 for a product of two uniform bits, 3/4 for a complemented one
    expected = sum((0.75 if _complemented(i, j, signed) else 0.25) * (1 << (i + j)) for i, j in removed)
    constant = int(round(expected)) if compensate else 0
    name = f"trunc{'_s' if signed else '_u'}_k{k}{'_c' if compensate else ''}"
    return ArrayMultiplier(name, signed, kept, constant)


def broken_array(hbl: int, vbl: int, signed: bool = True) -> ArrayMultiplier:
    """The broken-array multiplier: rows ``j < hbl`` and columns ``i + j < vbl`` removed."""
    if not 0 <= hbl <= WIDTH or not 0 <= vbl <= 2 * WIDTH - 1:
        raise ValueError(f"broken array needs 0 <= hbl <= 8 and 0 <= vbl <= 15, got {hbl}, {vbl}")
    kept = frozenset((i, j) for i, j in _all_bits() if j >= hbl and i + j >= vbl)
    return ArrayMultiplier(f"bam{'_s' if signed else '_u'}_h{hbl}_v{vbl}", signed, kept)


def parse_baseline(name: str) -> ArrayMultiplier:
    """A baseline by its name: ``trunc_s_k6``, ``trunc_u_k4_c`` (compensated), ``bam_s_h2_v7``."""
    if m := re.fullmatch(r"trunc_([su])_k(\d+)(_c)?", name):
        return truncated(int(m[2]), m[1] == "s", bool(m[3]))
    if m := re.fullmatch(r"bam_([su])_h(\d+)_v(\d+)", name):
        return broken_array(int(m[2]), int(m[3]), m[1] == "s")
    raise ValueError(f"unknown baseline {name!r}; expected trunc_<s|u>_k<K>[_c] or bam_<s|u>_h<H>_v<V>")
