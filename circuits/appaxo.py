"""The AppAxO 36-bit signed 8x8 approximate multiplier (EMGAxO/AppAxO bit model).

Four rows r = 0..3 each add the partial-product rows of multiplier bits b(2r) and b(2r+1) along
a ripple-carry chain of 9 LUTs; LUT j of row r has weight 2^(2r+j). Configuration bit
``35 - (9r + j)`` keeps (1) or removes (0) LUT (r, j): a removed LUT outputs sum bit 0 and passes
its carry-in on unchanged. Signed operands use Baugh-Wooley: a partial-product bit is inverted
when exactly one of its factors is a sign bit, and the constant ``2^8 + 2^15 - 2^16`` completes
the product. The result is a plain integer (no 16-bit wrap), which is why product tables are
int32. See DESIGN.md for the golden vectors the tests check.
"""

from __future__ import annotations

import numpy as np

from circuits.product_table import ProductTable

N_ROWS = 4
LUTS_PER_ROW = 9
N_BITS = N_ROWS * LUTS_PER_ROW  # 36
EXACT = (1 << N_BITS) - 1
CORRECTION = (1 << 8) + (1 << 15) - (1 << 16)


def lut_bit(row: int, lut: int) -> int:
    """Bit position (LSB = 0) of the configuration integer that controls LUT (row, lut)."""
    return N_BITS - 1 - (LUTS_PER_ROW * row + lut)


def check_config(config: int) -> int:
    """Return ``config`` as a Python int, or raise ValueError if it is not a 36-bit value."""
    value = int(config)
    if value != config or not 0 <= value <= EXACT:
        raise ValueError(f"AppAxO configuration must be an integer in [0, 2^36 - 1], got {config!r}")
    return value


def to_bitstring(config: int) -> str:
    """The 36-character MSB-first form used by AppAxO/EMGAxO (character 9r + j is LUT (r, j))."""
    return format(check_config(config), "036b")


def from_bitstring(bits: str) -> int:
    """Parse a 36-character MSB-first configuration string."""
    if len(bits) != N_BITS or set(bits) - {"0", "1"}:
        raise ValueError(f"AppAxO configuration string must be 36 characters of 0/1, got {bits!r}")
    return int(bits, 2)


def kept_luts(config: int) -> int:
    """Number of LUTs the configuration keeps (of 36)."""
    return bin(check_config(config)).count("1")


def lut_inputs(row: int, lut: int) -> list[tuple[int, int, bool]]:
    """The partial-product bits LUT (row, lut) adds, as (a bit, b bit, inverted) triples.

    x = a_j AND b_2r (j <= 7) and y = a_(j-1) AND b_(2r+1) (j >= 1); Baugh-Wooley inverts a bit
    when exactly one of its factors is a sign bit (a7 or b7).
    """
    pairs = []
    if lut <= 7:
        pairs.append((lut, 2 * row))
    if lut >= 1:
        pairs.append((lut - 1, 2 * row + 1))
    return [(i, k, (i == 7) != (k == 7)) for i, k in pairs]


def row_sums(config: int, a: np.ndarray, b: np.ndarray) -> list[np.ndarray]:
    """Each row's 10-bit result (9 sum bits and the final carry) for operand arrays a, b.

    Row r depends only on a and the two bits b(2r), b(2r+1); the fast kernels of ``accel`` rely
    on that structure (a table is a sum of four functions of a and one base-4 digit of b).
    """
    config = check_config(config)
    a_bits = [(a >> i) & 1 for i in range(8)]
    b_bits = [(b >> i) & 1 for i in range(8)]
    rows = []
    for r in range(N_ROWS):
        carry = np.zeros(np.broadcast(a, b).shape, dtype=np.int64)
        total = np.zeros_like(carry)
        for j in range(LUTS_PER_ROW):
            if not (config >> lut_bit(r, j)) & 1:
                continue  # removed LUT: sum bit 0, carry passes on
            s = carry.copy()
            for i, k, inverted in lut_inputs(r, j):
                bit = a_bits[i] & b_bits[k]
                s += 1 - bit if inverted else bit
            total += (s & 1) << j
            carry = s >> 1
        total += carry << LUTS_PER_ROW
        rows.append(total)
    return rows


def multiply(config: int, a: np.ndarray | int, b: np.ndarray | int) -> np.ndarray:
    """Approximate products of signed 8-bit operands a (activation) and b (weight)."""
    a = np.asarray(a, dtype=np.int64)
    b = np.asarray(b, dtype=np.int64)
    if a.size and (a.min() < -128 or a.max() > 127 or b.min() < -128 or b.max() > 127):
        raise ValueError("AppAxO operands must lie in [-128, 127]")
    rows = row_sums(config, a & 0xFF, b & 0xFF)
    return sum(row << (2 * r) for r, row in enumerate(rows)) + CORRECTION


_OPERANDS = np.arange(-128, 128, dtype=np.int64)


def product_table(config: int) -> np.ndarray:
    """The (256, 256) int32 product table of a configuration, indexed ``[a + 128, b + 128]``."""
    return multiply(config, _OPERANDS[:, None], _OPERANDS[None, :]).astype(np.int32)


# Weight bytes whose four base-4 digits all equal d: every row sees digit d.
_DIGIT_BYTES = np.array([0x00, 0x55, 0xAA, 0xFF], dtype=np.int64)


def row_tables(config: int) -> np.ndarray:
    """R[r, a + 128, d]: row r's result for activation a and weight digit d = (b >> 2r) & 3.

    Row r reads only the activation and one base-4 digit of the weight, so every table is
    ``T[a, b] = CORRECTION + sum_r 4^r * R[r, a + 128, d_r(b)]`` (see ``accel.torch_kernels``).
    """
    rows = row_sums(config, (_OPERANDS & 0xFF)[:, None], _DIGIT_BYTES[None, :])
    return np.stack(rows).astype(np.int32)


def table(config: int):
    """The configuration's ``ProductTable`` (signed), carrying its row tables."""
    return ProductTable(product_table(config), signed=True, rows=row_tables(config))


def config_name(config: int) -> str:
    """A configuration's name: its Verilog module, its files in a study's ``pareto/`` folder
    and its ``design`` column (9 hex digits hold the 36 bits)."""
    return f"appaxo_{config:09x}"


def verilog(config: int, module: str | None = None) -> str:
    """Synthesizable Verilog of a configuration: the same LUT/carry equations as the model.

    Ports: signed ``a`` (activation), ``b`` (weight), 8 bits each, and signed ``p``, 17 bits,
    because removed LUTs can push the plain-integer product outside the 16-bit range.
    """
    config = check_config(config)
    name = module or config_name(config)
    lines = [
        f"// AppAxO signed 8x8 approximate multiplier, configuration {to_bitstring(config)}",
        f"// ({config}); generated by dse from the AppAxO bit model.",
        f"module {name} (input [7:0] a, input [7:0] b, output [16:0] p);",
    ]
    terms = []
    for r in range(N_ROWS):
        carry, bits = "1'b0", []
        for j in range(LUTS_PER_ROW):
            if not (config >> lut_bit(r, j)) & 1:
                bits.append("1'b0")
                continue
            pp = [f"{'~' if inv else ''}(a[{i}] & b[{k}])" for i, k, inv in lut_inputs(r, j)]
            x, y = (pp + ["1'b0"])[:2]
            lines.append(f"  wire s{r}_{j} = {x} ^ {y} ^ {carry};")
            lines.append(f"  wire c{r}_{j} = ({x} & {y}) | ({x} & {carry}) | ({y} & {carry});")
            bits.append(f"s{r}_{j}")
            carry = f"c{r}_{j}"
        lines.append(f"  wire [9:0] row{r} = {{{carry}, {', '.join(reversed(bits))}}};")
        terms.append(f"({{7'b0, row{r}}} << {2 * r})")
    # Two's-complement sum modulo 2^17 equals the plain integer product (it fits in 17 bits).
    lines.append(f"  assign p = {' + '.join(terms)} - 17'd{-CORRECTION};")
    lines.append("endmodule")
    return "\n".join(lines) + "\n"
