from __future__ import annotations

import numpy as np
import pytest

from circuits import appaxo, fpga_model
from tests.conftest import shared_path


def test_live_bits_of_the_exact_and_the_empty_multiplier():
    heights = fpga_model.live_bit_heights(appaxo.EXACT)
    assert heights.sum() == 40  # four 10-bit row results, every bit live
    assert fpga_model.live_bit_heights(0).sum() == 0


def test_live_bits_match_a_scan_of_all_operand_pairs():
    ops = np.arange(256)
    for config in (404750335, 0x9F3A5C1E7, appaxo.EXACT & ~0xFF):
        rows = appaxo.row_sums(config, ops[:, None], ops[None, :])
        expected = np.zeros(17, int)
        for r, row in enumerate(rows):
            for j in range(10):
                expected[2 * r + j] += int(np.ptp((row >> j) & 1) > 0)
        np.testing.assert_array_equal(fpga_model.live_bit_heights(config), expected)


@pytest.fixture(scope="module")
def vivado():
    return fpga_model.load_vivado_csv(shared_path("appaxo", "appaxo_vivado_ppa_train.csv"))


def test_committed_coefficients_are_the_fit_of_the_vivado_data(vivado):
    refit = fpga_model.fit(*vivado)
    for name in fpga_model.TARGETS:
        np.testing.assert_allclose(fpga_model.COEFFICIENTS[name], refit[name], rtol=1e-5, atol=1e-5)


def test_cross_validated_errors_are_the_documented_ones(vivado):
    errors = fpga_model.cross_validate(*vivado)
    mape = {name: round(errors[name][0], 1) for name in fpga_model.TARGETS}
    # the figures of circuits/fpga_model.py and docs/modelling.md
    assert mape == {"fpga_luts": 2.8, "fpga_carry4": 3.3, "fpga_delay": 3.4, "fpga_power": 3.4}


def test_predictions_are_plausible_for_the_accurate_design():
    exact = fpga_model.appaxo_fpga(appaxo.EXACT)
    assert 55 <= exact["fpga_luts"] <= 65 and 17 <= exact["fpga_carry4"] <= 22
    assert fpga_model.appaxo_fpga(404750335)["fpga_luts"] < exact["fpga_luts"]
