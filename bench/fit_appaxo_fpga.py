"""Calibrate the AppAxO FPGA model on Vivado data and print its cross-validated errors.

    python bench/fit_appaxo_fpga.py [appaxo_vivado_ppa_train.csv]

Prints a table of 10-fold cross-validated MAPE / MAE per target, and the coefficients as the
Python literal that ``circuits/fpga_model.py`` holds (paste it there after a refit).
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from circuits import fpga_model  # noqa: E402


def main() -> None:
    default = REPO.parent / "shared/data/appaxo/appaxo_vivado_ppa_train.csv"
    configs, targets = fpga_model.load_vivado_csv(Path(sys.argv[1]) if len(sys.argv) > 1 else default)
    print(f"{'target':<14}{'CV MAPE %':>12}{'CV MAE':>12}   ({len(configs)} configurations, 10 folds)")
    for t, (mape, mae) in fpga_model.cross_validate(configs, targets).items():
        print(f"{t:<14}{mape:>12.2f}{mae:>12.3f}")
    print("\nCOEFFICIENTS = {")
    for t, c in fpga_model.fit(configs, targets).items():
        print(f'    "{t}": ({", ".join(f"{v:.6g}" for v in c)}),')
    print("}")


if __name__ == "__main__":
    main()
