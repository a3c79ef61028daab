"""Analytic FPGA LUT count of AppAxO configurations (until synthesis arrives, see issue #3).

Model: every kept partial-product LUT costs one LUT, and the adder tree that sums the four row
results costs one LUT per bit it must compress: at each output weight 2^p with h(p) live
(non-constant) row bits, a two-operand adder tree spends h(p) - 1 LUTs. Constant bits fold into
the correction constant for free. The accurate multiplier scores 36 + 24 = 60 LUTs against
Vivado's 58; over the 680 Vivado-implemented configurations of
``appaxo_vivado_ppa_train.csv`` (EMGAxO) the model's mean absolute error is 4.2 LUTs with a
Spearman rank correlation of 0.97 (tests/circuits/test_fpga_cost.py recomputes both), which is
what a search needs: it ranks configurations, it does not sign off a design.
"""

from __future__ import annotations

import numpy as np

from circuits import appaxo

_BYTES = np.arange(256, dtype=np.int64)


def live_bit_heights(config: int) -> np.ndarray:
    """h(p): how many row-result bits of weight 2^p vary over the operands (p = 0..16)."""
    rows = appaxo.row_sums(config, _BYTES[:, None], _BYTES[None, :])
    heights = np.zeros(17, dtype=np.int64)
    for r, row in enumerate(rows):
        for j in range(appaxo.LUTS_PER_ROW + 1):
            bit = (row >> j) & 1
            if bit.min() != bit.max():
                heights[2 * r + j] += 1
    return heights


def appaxo_luts(config: int) -> int:
    """Estimated LUT count of an AppAxO configuration: kept LUTs plus the adder tree."""
    heights = live_bit_heights(config)
    return appaxo.kept_luts(config) + int(np.maximum(heights - 1, 0).sum())
