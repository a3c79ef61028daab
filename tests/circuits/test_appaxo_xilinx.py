"""The LUT6_2/CARRY4 form of AppAxO configurations computes the bit model exactly."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest

from circuits import appaxo
from circuits.appaxo_xilinx import lut_init, structural_verilog
from circuits.multiplier import Multiplier
from circuits.netlist_sim import Netlist, operand_words
from circuits.synthesis import synthesize_xilinx

needs_yosys = pytest.mark.skipif(shutil.which("yosys") is None, reason="yosys is not installed")


def test_lut_init_of_a_plain_and_an_inverted_position():
    # LUT (0, 1): x = a1 b0, y = a0 b1, no inversion: O6 = x ^ y, O5 = x
    init = lut_init(0, 1)
    for index in range(32):
        x = (index & 1) & (index >> 1 & 1)
        y = (index >> 2 & 1) & (index >> 3 & 1)
        assert (init >> (32 + index)) & 1 == x ^ y and (init >> index) & 1 == x
    # LUT (0, 8): only y = a7 b1, inverted (exactly one sign bit)
    init = lut_init(0, 8)
    assert all((init >> index) & 1 == 1 - ((index & 1) & (index >> 1 & 1)) for index in range(32))


def simulated_table(tmp_path, config: int) -> np.ndarray:
    (tmp_path / "xc7.v").write_text(structural_verilog(config, "top"))
    script = ("read_verilog +/xilinx/cells_sim.v; read_verilog xc7.v; hierarchy -top top; proc; "
              "flatten; synth -flatten -top top; abc -g AND,OR,XOR,MUX; opt_clean; write_json xc7.json")
    subprocess.run(["yosys", "-q", "-p", script], cwd=tmp_path, check=True, capture_output=True)
    netlist = Netlist.from_json(tmp_path / "xc7.json", "top")
    index = np.arange(65536)
    ua, ub = index >> 8, index & 0xFF
    values = netlist.simulate({"a": operand_words(ua), "b": operand_words(ub)})
    raw = netlist.read_port(values, "p", 65536) & 0x1FFFF
    table = np.empty((256, 256), np.int64)
    table[ua ^ 0x80, ub ^ 0x80] = raw - ((raw >> 16) << 17)
    return table


@needs_yosys
def test_xilinx_primitives_simulate_to_the_model(tmp_path):
    rng = np.random.default_rng(5)
    for config in [appaxo.EXACT, 0, 404750335] + [int(c) for c in rng.integers(0, 2**36, 5)]:
        np.testing.assert_array_equal(simulated_table(tmp_path, config), appaxo.product_table(config),
                                      err_msg=appaxo.to_bitstring(config))


@needs_yosys
def test_synth_xilinx_keeps_one_lut6_2_per_kept_lut():
    for config in (appaxo.EXACT, 404750335):
        cost = synthesize_xilinx(Multiplier("m", structural_verilog(config, "m"), "m", True, "m"), 120)
        assert cost.cells["LUT6_2"] == appaxo.kept_luts(config)
        assert cost.carries >= 12  # three CARRY4 per row, plus the adder tree's
