"""Heterogeneous against homogeneous: a layer-wise study's front against one multiplier in every
layer over the same library.

    python bench/layerwise_fronts.py runs/lenet_layerwise runs/lenet_layerwise_homogeneous \
        [--plot docs/lenet_layerwise_fronts.png]

Prints, per study: evaluations, front size, hypervolume and its normalized value against a
common reference (``dse.compare``), and the largest multiplication-energy saving (against the
exact multiplier everywhere) among the designs that lose at most 0.5%, 1% and 2% accuracy
(points, absolute), with the heterogeneous saving as a multiple of the homogeneous one.
"""

from __future__ import annotations

import argparse

import pandas as pd
from common import cpu_name  # noqa: F401  (the repository on sys.path)

import dse

LOSSES = (0.005, 0.01, 0.02)


def savings(study: dse.Study) -> dict[float, tuple[float, str]]:
    """The largest energy saving within each accuracy loss, and the design that reaches it."""
    done = study.feasible()
    exact = done[done["role"] == "baseline"].iloc[0]
    out = {}
    for loss in LOSSES:
        within = done[done["accuracy"] >= exact["accuracy"] - loss - 1e-12]
        best = within.loc[within["energy"].idxmin()]
        out[loss] = (1 - best["energy"] / exact["energy"], best["design"])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("heterogeneous")
    parser.add_argument("homogeneous")
    parser.add_argument("--plot", help="PNG of both fronts (accuracy against energy)")
    args = parser.parse_args()
    studies = [dse.load_study(args.heterogeneous), dse.load_study(args.homogeneous)]
    table = dse.compare(studies, plot=args.plot)
    found = [savings(s) for s in studies]
    rows = []
    for study, (_, row), saved in zip(studies, table.iterrows(), found):
        rows.append({"study": study.name, "evaluations": str(row["evaluations"]),
                     "front": str(row["front_size"]), "hypervolume": f"{row['hypervolume']:.4g}",
                     "normalized": f"{row['hypervolume_normalized']:.4f}",
                     **{f"saving <= {100 * loss:g}%": f"{100 * s:.1f}% ({d})"
                        for loss, (s, d) in saved.items()}})
    rows.append({"study": "heterogeneous / homogeneous saving",
                 **{f"saving <= {100 * loss:g}%": f"{found[0][loss][0] / found[1][loss][0]:.2f}x"
                    for loss in LOSSES}})
    frame = pd.DataFrame(rows, dtype=object).fillna("")
    print("| " + " | ".join(frame.columns) + " |")
    print("|" + "---|" * len(frame.columns))
    for values in frame.itertuples(index=False):
        print("| " + " | ".join(str(v) for v in values) + " |")


if __name__ == "__main__":
    main()
