"""Calibrated FPGA cost of AppAxO configurations (Xilinx 7-series, Vivado implementation).

A behavioral 8x8 multiplier maps to about 166 LUTs, far from AppAxO's hand-built 58, so the
FPGA figures of a configuration come from a linear model calibrated on Vivado results. Features:
the 36 keep bits (MSB-first, LUT (r, j) at position 9r + j), the adder-tree size
``sum(max(h(p) - 1, 0))`` and the number of output weights with a live bit (``h(p) > 0``), both
from ``live_bit_heights``.

Provenance: ridge least squares (lambda = 1e-3 on every coefficient) fitted by
``python bench/fit_appaxo_fpga.py`` on ``appaxo_vivado_ppa_train.csv`` (680 configurations,
EMGAxO/AppAxO data, Vivado LUTs, CARRY4s, critical-path delay in ns, total power as reported,
probably uW), 2026-11-24. Ten-fold cross-validated mean absolute percentage error: LUTs 2.8%,
CARRY4 3.3%, delay 3.4%, total power 3.4% (``tests/circuits/test_fpga_model.py`` recomputes
them). The training data keeps at most 27 of 36 LUTs: for the accurate design the model
extrapolates to 62 LUTs and 19 CARRY4 against Vivado's 58 and 20.
"""

from __future__ import annotations

import numpy as np

from circuits import appaxo

TARGETS = ("fpga_luts", "fpga_carry4", "fpga_delay", "fpga_power")
RIDGE = 1e-3

COEFFICIENTS: dict[str, tuple[float, ...]] = {
    "fpga_luts": (
        0.667712, 0.640265, 0.566386, 1.22112, 1.21654, 0.927316, 0.793056, 0.856826, 0.936038,
        0.758051, 1.09963, 1.2025, 0.830636, 0.872722, 1.01366, 0.786767, 0.83035, 0.755029,
        1.1483, 0.986687, 0.83353, 0.868617, 0.788447, 0.833797, 0.755708, 0.985784, 2.09085,
        0.427968, 1.24818, 1.30467, 1.32195, 1.30976, 1.25381, 1.2324, 1.45943, 1.296, 1.53177,
        0.725263, 0.419189
    ),
    "fpga_carry4": (
        8.74851, 0.370468, 0.239627, 0.361387, 0.38938, 0.319662, 0.362509, 0.281157, 0.462085,
        0.408577, 0.383929, 0.315413, 0.381309, 0.384377, 0.340585, 0.367899, 0.382941, 0.331359,
        0.361161, 0.377914, 0.312374, 0.35014, 0.319608, 0.351328, 0.351033, 0.323099, 0.354414,
        0.385025, 0.411926, 0.413519, 0.437072, 0.329397, 0.410541, 0.357713, 0.311684, 0.433548,
        0.314432, -0.0717037, -0.047581
    ),
    "fpga_delay": (
        2.5143, -0.275411, -0.27037, -0.20564, -0.215237, -0.204461, -0.211524, -0.204616,
        -0.193891, -0.183428, -0.197277, -0.197772, -0.235983, -0.201646, -0.186898, -0.186748,
        -0.200785, -0.212162, -0.218073, -0.191834, -0.24696, -0.206049, -0.208584, -0.204987,
        -0.221674, -0.224451, -0.240769, -0.249607, -0.228253, -0.202446, -0.235413, -0.240033,
        -0.233263, -0.19908, -0.257825, -0.228032, -0.28626, 0.237802, 0.273797
    ),
    "fpga_power": (
        35.8758, -13.8144, -4.25914, 10.064, 9.87502, 11.2034, 9.7823, 14.9661, 33.5965, 15.8388,
        -10.3209, 12.764, 18.2558, 16.8074, 16.8982, 16.4087, 22.0594, 35.9333, 11.661, -6.00912,
        15.6313, 16.6373, 17.6904, 19.6847, 22.318, 22.3489, 51.3024, 10.5629, 7.62044, 27.4017,
        38.3768, 33.1932, 30.5443, 22.6715, 36.7728, 24.7774, 14.4798, 27.454, 18.3178
    ),
}


_BYTES = np.arange(256, dtype=np.int64)
# Row r reads only weight bits 2r and 2r+1, so these four weights show every row all four
# digit values: 1,024 evaluations instead of 65,536.
_DIGIT_WEIGHTS = np.array([0x00, 0x55, 0xAA, 0xFF], dtype=np.int64)


def live_bit_heights(config: int) -> np.ndarray:
    """h(p): how many row-result bits of weight 2^p vary over the operands (p = 0..16).

    A constant bit folds into the correction constant; every live bit beyond the first at a
    weight costs the adder tree about one LUT, hence the ``sum(max(h - 1, 0))`` feature.
    """
    rows = appaxo.row_sums(config, _BYTES[:, None], _DIGIT_WEIGHTS[None, :])
    heights = np.zeros(17, dtype=np.int64)
    for r, row in enumerate(rows):
        for j in range(appaxo.LUTS_PER_ROW + 1):
            bit = (row >> j) & 1
            if bit.min() != bit.max():
                heights[2 * r + j] += 1
    return heights


def features(config: int) -> np.ndarray:
    """Intercept, 36 keep bits (MSB-first), adder-tree size, live output weights."""
    heights = live_bit_heights(config)
    keep = [(config >> appaxo.lut_bit(r, j)) & 1 for r in range(4) for j in range(9)]
    return np.array([1.0, *keep, np.maximum(heights - 1, 0).sum(), (heights > 0).sum()])


def fit(configs: list[int], targets: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Ridge least-squares coefficients for each target (the calibration procedure)."""
    x = np.stack([features(c) for c in configs])
    gram = x.T @ x + RIDGE * np.eye(x.shape[1])
    return {name: np.linalg.solve(gram, x.T @ y) for name, y in targets.items()}


def cross_validate(configs: list[int], targets: dict[str, np.ndarray], folds: int = 10,
                   seed: int = 0) -> dict[str, tuple[float, float]]:
    """(MAPE in %, MAE) per target, each configuration predicted by a fit that never saw it."""
    order = np.random.default_rng(seed).permutation(len(configs))
    x = np.stack([features(c) for c in configs])
    predicted = {t: np.zeros(len(configs)) for t in targets}
    for f in range(folds):
        test = order[f::folds]
        train = np.setdiff1d(order, test)
        coefs = fit([configs[i] for i in train], {t: y[train] for t, y in targets.items()})
        for t in targets:
            predicted[t][test] = x[test] @ coefs[t]
    return {t: (float(np.mean(np.abs(predicted[t] - y) / y) * 100),
                float(np.mean(np.abs(predicted[t] - y)))) for t, y in targets.items()}


def load_vivado_csv(path) -> tuple[list[int], dict[str, np.ndarray]]:
    """Configurations and targets from an EMGAxO Vivado PPA table (Config, LUTs, Carries, CPD,
    Total_power columns)."""
    import pandas as pd

    data = pd.read_csv(path, dtype={"Config": str})
    columns = {"fpga_luts": "LUTs", "fpga_carry4": "Carries", "fpga_delay": "CPD",
               "fpga_power": "Total_power"}
    return [int(c, 2) for c in data["Config"]], {
        t: data[c].to_numpy(dtype=float) for t, c in columns.items()}


def appaxo_fpga(config: int) -> dict[str, float]:
    """Predicted Vivado LUTs, CARRY4s, critical-path delay (ns) and total power."""
    x = features(config)
    return {name: float(x @ np.asarray(COEFFICIENTS[name])) for name in TARGETS}
