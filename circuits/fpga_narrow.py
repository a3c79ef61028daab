"""FPGA LUTs of a signed 8x8 multiplier used on narrower operands.

A network quantized to fewer than 8 bits multiplies n-bit activations by m-bit weights on the
same 8x8 circuit: its operands are sign-extended, so only the table's sub-range
``[-2^(n-1), 2^(n-1)) x [-2^(m-1), 2^(m-1))`` is ever exercised. Synthesis removes what the
narrower operands make redundant (bits that copy the sign, partial products that repeat).

The LUT count of the narrowed multiplier is the 8x8 figure (the Vivado-calibrated AppAxO model,
or a library member's own figure) scaled by the ratio Yosys ``synth_xilinx`` finds between the
behavioral circuit with sign-extended n- and m-bit ports and the same circuit at 8x8: Yosys maps
a behavioral 8x8 multiplier to about 2.5 times the LUTs of AppAxO's hand-built one, and the
ratio carries the narrowing over to the calibrated figure. Both runs are cached like every
characterization (``circuits.catalogue.fpga_cost``).
"""

from __future__ import annotations

from circuits.cache import ResultCache
from circuits.catalogue import fpga_cost
from circuits.multiplier import Multiplier

WIDTH = 8  # operand bits of the multipliers the tables describe


def _extended(port: str, bits: int) -> str:
    """An n-bit port sign-extended to 8 bits."""
    if bits == WIDTH:
        return port
    return f"{{{{{WIDTH - bits}{{{port}[{bits - 1}]}}}}, {port}}}"


def narrowed(mult: Multiplier, activation_bits: int, weight_bits: int) -> Multiplier:
    """The multiplier behind ports of ``activation_bits`` (``a``) and ``weight_bits`` (``b``),
    both signed and sign-extended to its 8-bit inputs; a design the synthesis tool simplifies.
    Its ``appaxo_config`` is dropped, so its FPGA cost is synthesized, not modelled."""
    for bits in (activation_bits, weight_bits):
        if not 2 <= bits <= WIDTH:
            raise ValueError(f"operand width {bits}: expected 2 to {WIDTH} bits")
    if mult.top is None:
        raise ValueError(f"{mult.name}: the top module must be known to wrap it for narrower operands")
    if mult.signed is False:
        raise ValueError(f"{mult.name}: narrower operands are sign-extended; the multiplier must be signed")
    if activation_bits == weight_bits == WIDTH:
        return Multiplier(mult.name, mult.verilog, mult.top, True, mult.source)
    top = f"{mult.top}_a{activation_bits}w{weight_bits}"
    wrapper = (f"module {top} (input [{activation_bits - 1}:0] a, input [{weight_bits - 1}:0] b, "
               "output [16:0] p);\n"
               f"  {mult.top} core (.a({_extended('a', activation_bits)}), "
               f".b({_extended('b', weight_bits)}), .p(p));\nendmodule\n")
    return Multiplier(top, f"{mult.verilog}\n{wrapper}", top, True, mult.source)


def narrowed_luts(mult: Multiplier, luts_8x8: float, activation_bits: int, weight_bits: int,
                  timeout: float, cache: ResultCache | None = None) -> float:
    """LUTs of ``mult`` on ``activation_bits`` x ``weight_bits`` operands: ``luts_8x8`` (the
    calibrated 8x8 figure) times Yosys's narrowed-to-full LUT ratio (two cached syntheses)."""
    if activation_bits == weight_bits == WIDTH:
        return float(luts_8x8)
    full = fpga_cost(narrowed(mult, WIDTH, WIDTH), timeout, cache)["fpga_luts"]
    narrow = fpga_cost(narrowed(mult, activation_bits, weight_bits), timeout, cache)["fpga_luts"]
    return float(luts_8x8) * narrow / full if full else 0.0
