from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest

from circuits import appaxo

OPS = np.arange(-128, 128, dtype=np.int64)
EXACT_PRODUCTS = np.outer(OPS, OPS)


def test_all_ones_is_the_exact_multiplier():
    table = appaxo.product_table(appaxo.EXACT)
    assert table.dtype == np.int32 and table.shape == (256, 256)
    np.testing.assert_array_equal(table, EXACT_PRODUCTS)


def test_all_zeros_leaves_only_the_constant():
    assert np.all(appaxo.product_table(0) == -32512)


def test_golden_configuration_404750335():
    error = appaxo.product_table(404750335).astype(np.int64) - EXACT_PRODUCTS
    assert error.mean() == -188.25
    assert np.abs(error).mean() == 188.25
    assert error.max() == 0 and error.min() == -753
    assert (error != 0).mean() * 100 == 92.578125


def test_table_is_indexed_by_activation_then_weight():
    config = 404750335
    table = appaxo.product_table(config)
    for a, b in [(-128, 127), (5, -3), (100, 7), (-1, -1)]:
        assert table[a + 128, b + 128] == appaxo.multiply(config, a, b)


def test_removed_lut_passes_its_carry():
    # Removing only LUT (0, 0) drops the a0*b0 partial product: the product loses exactly
    # a0 AND b0 (no carry can leave LUT 0, which has a single input).
    config = appaxo.EXACT & ~(1 << appaxo.lut_bit(0, 0))
    error = appaxo.product_table(config).astype(np.int64) - EXACT_PRODUCTS
    a0 = (OPS[:, None] & 1) & (OPS[None, :] & 1)
    np.testing.assert_array_equal(error, -a0)


def test_each_row_depends_on_one_weight_digit():
    rng = np.random.default_rng(1)
    config = int(rng.integers(0, 2**36))
    a = np.arange(256)[:, None]
    for r, row in enumerate(appaxo.row_sums(config, a, np.arange(256)[None, :])):
        digit = (np.arange(256) >> (2 * r)) & 3
        for d in range(4):
            cols = row[:, digit == d]
            assert np.all(cols == cols[:, :1]), f"row {r} varies within weight digit {d}"


def test_bitstring_round_trip_and_lut_numbering():
    assert appaxo.to_bitstring(404750335) == format(404750335, "036b")
    assert appaxo.from_bitstring(appaxo.to_bitstring(123456789)) == 123456789
    assert appaxo.lut_bit(0, 0) == 35 and appaxo.lut_bit(3, 8) == 0
    assert appaxo.kept_luts(appaxo.EXACT) == 36
    with pytest.raises(ValueError):
        appaxo.check_config(1 << 36)
    with pytest.raises(ValueError):
        appaxo.from_bitstring("01" * 10)


@pytest.mark.skipif(shutil.which("yosys") is None, reason="yosys is not installed (make setup installs it)")
@pytest.mark.parametrize("config", [appaxo.EXACT, 0, 404750335, 0x9F3A5C1E7])
def test_verilog_evaluates_like_the_model_in_yosys(tmp_path, config):
    (tmp_path / "m.v").write_text(appaxo.verilog(config, "m"))
    rng = np.random.default_rng(config % 1000)
    pairs = [(-128, -128), (127, 127), (-128, 127), (0, 0)] + [
        tuple(int(v) for v in rng.integers(-128, 128, 2)) for _ in range(12)
    ]
    script = ["read_verilog m.v", "prep -top m"] + [
        f"eval -set a {a & 0xFF} -set b {b & 0xFF} -show p" for a, b in pairs
    ]
    out = subprocess.run(["yosys", "-p", "; ".join(script)], cwd=tmp_path, capture_output=True,
                         text=True, check=True).stdout
    results = [line.split("17'")[1].strip().rstrip(".") for line in out.splitlines()
               if "Eval result: \\p = 17'" in line]
    assert len(results) == len(pairs)
    for (a, b), bits in zip(pairs, results):
        value = int(bits, 2) - (1 << 17 if bits[0] == "1" else 0)
        assert value == appaxo.multiply(config, a, b), (a, b)
