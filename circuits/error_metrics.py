"""Arithmetic error metrics of a product table against the exact multiplier.

Uniform over all 65,536 operand pairs, as the approximate-multiplier literature reports them.
"""

from __future__ import annotations

import numpy as np

from circuits.product_table import ProductTable


def error_metrics(table: ProductTable) -> dict[str, float]:
    """Mean error (bias), MAE, MSE, worst-case error, MRED and error probability.

    MRED is the mean of |approx - exact| / |exact| over the pairs whose exact product is not 0.
    """
    exact = table.exact_products()
    error = table.values.astype(np.int64) - exact
    abs_error = np.abs(error)
    nonzero = exact != 0
    return {
        "mean_error": float(error.mean()),
        "mae": float(abs_error.mean()),
        "mse": float((error.astype(np.float64) ** 2).mean()),
        "wce": float(abs_error.max()),
        "mred": float((abs_error[nonzero] / np.abs(exact[nonzero])).mean()),
        "error_probability": float((error != 0).mean()),
    }
