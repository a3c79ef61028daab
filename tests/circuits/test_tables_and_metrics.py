from __future__ import annotations

import numpy as np
import pytest

from circuits import appaxo
from circuits.error_metrics import error_metrics
from circuits.product_table import ProductTable


def test_exact_tables_and_their_indexing():
    signed, unsigned = ProductTable.exact(True), ProductTable.exact(False)
    assert signed.lookup(-128, -128) == 16384 and signed.lookup(-3, 7) == -21
    assert unsigned.lookup(255, 255) == 65025 and unsigned.lookup(0, 9) == 0
    assert signed.sha256 != unsigned.sha256


def test_hash_is_the_identity_of_values_and_signedness():
    a = ProductTable(appaxo.product_table(404750335), True)
    b = ProductTable(appaxo.product_table(404750335).copy(), True)
    assert a.sha256 == b.sha256
    assert a.sha256 != ProductTable(appaxo.product_table(404750334), True).sha256
    with pytest.raises(ValueError):
        a.values[0, 0] = 1  # tables are read-only: a hash must not go stale


def test_bad_tables_are_refused():
    with pytest.raises(ValueError, match="shape"):
        ProductTable(np.zeros((255, 256), np.int32), True)
    with pytest.raises(ValueError, match="int32"):
        ProductTable(np.full((256, 256), 2**40), True)


def test_metrics_of_the_exact_table_are_zero():
    m = error_metrics(ProductTable.exact(True))
    assert all(v == 0 for v in m.values())


def test_metrics_of_a_constant_offset():
    exact = ProductTable.exact(False)
    m = error_metrics(ProductTable(exact.values + 2, False))
    assert m == {"mean_error": 2.0, "mae": 2.0, "mse": 4.0, "wce": 2.0,
                 "mred": pytest.approx(np.mean(2 / np.outer(np.arange(1, 256), np.arange(1, 256)))),
                 "error_probability": 1.0}


def test_metrics_of_the_golden_configuration():
    m = error_metrics(ProductTable(appaxo.product_table(404750335), True))
    assert m["mean_error"] == -188.25 and m["mae"] == 188.25 and m["wce"] == 753
    assert m["error_probability"] == pytest.approx(0.92578125)
