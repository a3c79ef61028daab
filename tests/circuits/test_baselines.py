"""The classic baselines: their models, and their Verilog synthesized and simulated."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from circuits.baselines import baseline_family, broken_array, truncated
from circuits.characterize import FlowSettings, characterize
from circuits.error_metrics import error_metrics
from circuits.product_table import ProductTable
from tests.conftest import shared_path


@pytest.mark.parametrize("signed", [True, False])
def test_nothing_removed_is_the_exact_multiplier(signed):
    assert truncated(0, signed).table() == ProductTable.exact(signed)
    assert broken_array(0, 0, signed).table() == ProductTable.exact(signed)


def test_truncation_error_grows_with_k_and_compensation_removes_the_bias():
    for signed in (True, False):
        wce = [error_metrics(truncated(k, signed).table())["wce"] for k in range(16)]
        assert wce == sorted(wce) and wce[0] == 0 and wce[8] > 0
        plain, compensated = (error_metrics(truncated(7, signed, c).table()) for c in (False, True))
        assert plain["mean_error"] < -100 and abs(compensated["mean_error"]) < 1
    # unsigned: the worst case is every removed bit set, i.e. their full weight
    for k in (3, 6, 9):
        removed = sum(1 << (i + j) for i in range(8) for j in range(8) if i + j < k)
        assert error_metrics(truncated(k, False).table())["wce"] == removed


def test_broken_array_removes_rows_and_columns():
    m = broken_array(2, 6, signed=False)
    assert len(m.kept) == sum(1 for i in range(8) for j in range(8) if j >= 2 and i + j >= 6)
    a, b = np.array([255, 3, 17]), np.array([1, 255, 12])
    exact = a * b
    kept = sum(((a >> i) & (b >> j) & 1) << (i + j) for i, j in m.kept)
    np.testing.assert_array_equal(m.table().lookup(a, b), kept)
    assert np.all(m.table().lookup(a, b) <= exact)  # unsigned: removing bits only lowers products
    with pytest.raises(ValueError, match="0 <= hbl <= 8"):
        broken_array(9, 0)
    with pytest.raises(ValueError, match="truncation k must be in 0..15"):
        truncated(16)


def test_the_family_holds_distinct_circuits():
    family = baseline_family()
    assert len({m.name for m in family}) == len({m.table().sha256 for m in family}) == len(family) > 40


@pytest.mark.skipif(shutil.which("yosys") is None or shutil.which("sta") is None,
                    reason="Yosys and OpenSTA are not installed (make setup installs them)")
@pytest.mark.parametrize("mult", [truncated(5), truncated(9, True, True), truncated(4, False, True),
                                  broken_array(2, 7), broken_array(3, 5, False)],
                         ids=lambda m: m.name)
def test_the_synthesized_netlist_computes_the_model(mult, tmp_path):
    """The Verilog through Yosys and ABC on NanGate45, simulated over all 65,536 pairs."""
    settings = FlowSettings(liberty=str(shared_path("pdk", "nangate45_typ.lib.gz")))
    result = characterize(mult.multiplier(), settings)
    assert result.table == mult.table()
    exact = characterize(truncated(0, mult.signed).multiplier(), settings)
    assert result.metrics["area"] < exact.metrics["area"]
