"""AppAxO configurations in their FPGA form: LUT6_2 and CARRY4 instances with INIT values.

Each partial-product row is a 9-position carry chain over three CARRY4s. A kept LUT (r, j) is a
LUT6_2 whose O6 is the propagate ``x XOR y`` (the chain's S input) and whose O5 is the generate
``x`` (DI), with the Baugh-Wooley inversions folded into INIT; the chain then yields the sum bit
``S XOR carry`` and the carry ``S ? carry : DI``. A removed LUT is left out: its chain position
gets S = 1 (the carry passes) and its sum bit is 0, exactly the bit model of
``circuits.appaxo``. The four rows are added behaviorally (the synthesis tool maps that adder
tree). Yosys ``synth_xilinx`` keeps the instances as they are.
"""

from __future__ import annotations

from circuits import appaxo

# LUT6_2 pins: I0 = a_i and I1 = b_k of the first partial product, I2/I3 of the second; I5 = 1
# selects INIT[63:32] for O6 while O5 reads INIT[31:0].
_PINS = ("I0", "I1", "I2", "I3")


def lut_init(row: int, lut: int) -> int:
    """The 64-bit INIT of LUT (row, lut): O6 = propagate (upper half), O5 = generate (lower)."""
    products = appaxo.lut_inputs(row, lut)
    init = 0
    for index in range(32):
        values = [(index >> 2 * n) & 1 & ((index >> (2 * n + 1)) & 1) for n in range(len(products))]
        bits = [v ^ inverted for v, (_, _, inverted) in zip(values, products)]
        propagate = bits[0] ^ (bits[1] if len(bits) > 1 else 0)
        generate = bits[0]
        init |= propagate << (32 + index) | generate << index
    return init


def structural_verilog(config: int, module: str | None = None) -> str:
    """Verilog of the configuration with Xilinx LUT6_2/CARRY4 primitives (ports as
    ``appaxo.verilog``: ``a``, ``b`` 8 bits, ``p`` 17 bits signed)."""
    config = appaxo.check_config(config)
    name = module or f"appaxo_xc7_{config:09x}"
    out = [f"// AppAxO configuration {appaxo.to_bitstring(config)} ({config}) on Xilinx 7-series",
           f"module {name} (input [7:0] a, input [7:0] b, output [16:0] p);"]
    terms = []
    for r in range(appaxo.N_ROWS):
        s_bits, di_bits, row_bits = [], [], []
        for j in range(appaxo.LUTS_PER_ROW):
            if not (config >> appaxo.lut_bit(r, j)) & 1:
                s_bits.append("1'b1")
                di_bits.append("1'b0")
                row_bits.append("1'b0")
                continue
            pins = []
            for pin_pair, (i, k, _) in zip((_PINS[:2], _PINS[2:]), appaxo.lut_inputs(r, j)):
                pins += [f".{pin_pair[0]}(a[{i}])", f".{pin_pair[1]}(b[{k}])"]
            used = {p.split("(")[0][1:] for p in pins}
            pins += [f".{p}(1'b0)" for p in _PINS if p not in used] + [".I4(1'b0)", ".I5(1'b1)"]
            out.append(f"  wire p{r}_{j}, g{r}_{j};")
            out.append(f"  LUT6_2 #(.INIT(64'h{lut_init(r, j):016X})) lut{r}_{j} "
                       f"({', '.join(pins)}, .O6(p{r}_{j}), .O5(g{r}_{j}));")
            s_bits.append(f"p{r}_{j}")
            di_bits.append(f"g{r}_{j}")
            row_bits.append(f"o{r}[{j}]")
        s_bits += ["1'b0"] * 3
        di_bits += ["1'b0"] * 3
        out.append(f"  wire [11:0] o{r}, co{r};")
        for c in range(3):
            ci = "1'b0" if c == 0 else f"co{r}[{4 * c - 1}]"
            s = ", ".join(reversed(s_bits[4 * c : 4 * c + 4]))
            di = ", ".join(reversed(di_bits[4 * c : 4 * c + 4]))
            out.append(f"  CARRY4 chain{r}_{c} (.CI({ci}), .CYINIT(1'b0), .S({{{s}}}), .DI({{{di}}}), "
                       f".O(o{r}[{4 * c + 3}:{4 * c}]), .CO(co{r}[{4 * c + 3}:{4 * c}]));")
        out.append(f"  wire [9:0] row{r} = {{co{r}[8], {', '.join(reversed(row_bits))}}};")
        terms.append(f"({{7'b0, row{r}}} << {2 * r})")
    out.append(f"  assign p = {' + '.join(terms)} - 17'd{-appaxo.CORRECTION};")
    out.append("endmodule")
    return "\n".join(out) + "\n"
