"""Multipliers on narrower operands (``circuits.fpga_narrow``): the wrapped circuit computes the
8x8 table's sub-range, and its LUTs scale the calibrated figure by what Yosys removes."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest

from circuits import appaxo
from circuits.cache import ResultCache
from circuits.fpga_model import appaxo_fpga
from circuits.fpga_narrow import narrowed, narrowed_luts
from circuits.multiplier import Multiplier
from circuits.netlist_sim import Netlist, operand_words

needs_yosys = pytest.mark.skipif(shutil.which("yosys") is None, reason="yosys is not installed")
CONFIG = 404750335  # an AppAxO configuration with 8 LUTs of row 0 removed


def simulated_products(tmp_path, mult: Multiplier, a_bits: int, b_bits: int) -> np.ndarray:
    """Every product of the narrowed design on its signed operands (a rows, b columns)."""
    (tmp_path / "m.v").write_text(mult.verilog)
    script = (f"read_verilog m.v; hierarchy -top {mult.top}; proc; flatten; "
              f"synth -flatten -top {mult.top}; abc -g AND,OR,XOR,MUX; opt_clean; write_json m.json")
    subprocess.run(["yosys", "-q", "-p", script], cwd=tmp_path, check=True, capture_output=True)
    netlist = Netlist.from_json(tmp_path / "m.json", mult.top)
    index = np.arange(1 << (a_bits + b_bits))
    ua, ub = index >> b_bits, index & ((1 << b_bits) - 1)
    values = netlist.simulate({"a": operand_words(ua, a_bits), "b": operand_words(ub, b_bits)})
    raw = netlist.read_port(values, "p", len(index)) & 0x1FFFF
    table = np.empty((1 << a_bits, 1 << b_bits), np.int64)
    table[ua ^ (1 << (a_bits - 1)), ub ^ (1 << (b_bits - 1))] = raw - ((raw >> 16) << 17)
    return table


@needs_yosys
@pytest.mark.parametrize(("a_bits", "b_bits"), [(4, 4), (8, 3)])
def test_the_narrowed_circuit_computes_the_tables_sub_range(tmp_path, a_bits, b_bits):
    mult = narrowed(Multiplier.from_appaxo(CONFIG), a_bits, b_bits)
    table = appaxo.product_table(CONFIG)
    a = np.arange(-(1 << (a_bits - 1)), 1 << (a_bits - 1)) + 128
    b = np.arange(-(1 << (b_bits - 1)), 1 << (b_bits - 1)) + 128
    np.testing.assert_array_equal(simulated_products(tmp_path, mult, a_bits, b_bits),
                                  table[np.ix_(a, b)])


@needs_yosys
def test_narrower_operands_scale_the_calibrated_luts_down(tmp_path):
    cache = ResultCache(tmp_path / "cache.sqlite")
    mult = Multiplier.from_appaxo(appaxo.EXACT)
    full = appaxo_fpga(appaxo.EXACT)["fpga_luts"]
    assert narrowed_luts(mult, full, 8, 8, 120, cache) == full  # no synthesis at 8x8
    four = narrowed_luts(mult, full, 8, 4, 120, cache)
    assert 0.3 * full < four < full
    assert narrowed_luts(mult, full, 8, 4, 120, cache) == four  # read back from the cache


def test_the_wrapper_refuses_what_it_cannot_narrow():
    mult = Multiplier.from_appaxo(CONFIG)
    with pytest.raises(ValueError, match="operand width 9"):
        narrowed(mult, 9, 8)
    with pytest.raises(ValueError, match="must be signed"):
        narrowed(Multiplier("u", mult.verilog, mult.top, False), 4, 4)
