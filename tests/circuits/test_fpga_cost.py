from __future__ import annotations

import numpy as np
import pandas as pd

from circuits import appaxo
from circuits.fpga_cost import appaxo_luts, live_bit_heights
from tests.conftest import shared_path


def test_exact_multiplier_estimate():
    heights = live_bit_heights(appaxo.EXACT)
    assert heights.sum() == 40  # four 10-bit row results, every bit live
    assert appaxo_luts(appaxo.EXACT) == 60


def test_removing_everything_leaves_nothing():
    assert appaxo_luts(0) == 0


def test_fewer_luts_never_cost_more_along_a_chain():
    config = appaxo.EXACT
    costs = []
    for lut in range(36):  # remove LUTs one by one
        config &= ~(1 << lut)
        costs.append(appaxo_luts(config))
    assert all(b <= a for a, b in zip(costs, costs[1:]))


def test_model_against_vivado_implementations():
    data = pd.read_csv(shared_path("appaxo", "appaxo_vivado_ppa_train.csv"), dtype={"Config": str})
    estimate = pd.Series([appaxo_luts(int(c, 2)) for c in data["Config"]])
    mae = float(np.abs(estimate - data["LUTs"]).mean())
    rank = estimate.rank().corr(data["LUTs"].rank())
    # The figures the module docstring and the README quote (MAE 4.2 LUTs, Spearman 0.97).
    assert round(mae, 1) == 4.2
    assert round(rank, 2) == 0.97
