"""Benchmark: the classic baselines on NanGate45, area against worst-case and mean absolute error.

    python bench/bench_baselines.py [--unsigned] [--plot baselines.png]

Characterizes every multiplier of ``circuits.baselines.baseline_family`` (truncated with and
without compensation, broken-array over both break levels; signed Baugh-Wooley by default) with
the ASIC flow (Yosys + ABC on NanGate45, OpenSTA) and prints area, delay, uniform power and the
error metrics, marking the points on the (area, worst-case error) front. These are the points a
generated chain of approximate circuits is compared with. Needs the NanGate45 Liberty file
(DSE_PDK_DIR, ~/.cache/dse/pdk, or ../shared/data/pdk).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from common import use_shared_data  # first: puts the repository on sys.path

from circuits.baselines import baseline_family, truncated
from circuits.characterize import FlowSettings, characterize
from dse.pareto import non_dominated
from dse.reports.figures import pyplot


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--unsigned", action="store_true", help="the unsigned family instead")
    parser.add_argument("--plot", help="PNG of area against worst-case error and against MAE")
    args = parser.parse_args()
    use_shared_data()
    settings = FlowSettings(liberty="nangate45")
    signed = not args.unsigned

    start = time.perf_counter()
    rows = characterize_baselines(signed, settings)
    seconds = time.perf_counter() - start
    points = np.array([[r["area"], r["wce"]] for _, r in rows])
    front = non_dominated(points, ("minimize", "minimize"))

    print(f"\n{'signed' if signed else 'unsigned'} 8x8 baselines on NanGate45 "
          f"({len(rows)} multipliers characterized in {seconds:.0f} s); * = on the (area, WCE) front")
    print(f"{'multiplier':<16}{'area um2':>10}{'delay ns':>10}{'power uW':>10}{'WCE':>8}"
          f"{'MAE':>10}{'bias':>10}{'MRED':>8}")
    for (name, r), on_front in sorted(zip(rows, front), key=lambda x: x[0][1]["wce"]):
        print(f"{name + (' *' if on_front else ''):<16}{r['area']:>10.1f}{r['delay']:>10.3f}"
              f"{r['power_uniform']:>10.1f}{r['wce']:>8.0f}{r['mae']:>10.2f}{r['mean_error']:>10.2f}"
              f"{r['mred']:>8.4f}")
    if args.plot:
        plot(rows, front, Path(args.plot))
        print(f"wrote {args.plot}")


def characterize_baselines(signed: bool, settings: FlowSettings) -> list[tuple[str, dict]]:
    """(name, metrics) of the exact array multiplier (first) and every baseline."""
    family = [truncated(0, signed), *baseline_family(signed)]
    return [(m.name, characterize(m.multiplier(), settings).metrics) for m in family]


def plot(rows: list[tuple[str, dict]], front: np.ndarray, path: Path) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, metric in zip(axes, ("wce", "mae")):
        for family, marker in (("trunc", "o"), ("bam", "s")):
            mine = [(r, f) for (n, r), f in zip(rows, front) if n.startswith(family) and r[metric] > 0]
            ax.scatter([r[metric] for r, _ in mine], [r["area"] for r, _ in mine], marker=marker,
                       c=["tab:red" if f else "tab:grey" for _, f in mine], s=22,
                       label="truncated" if family == "trunc" else "broken array")
        ax.set_xscale("log")
        ax.set_xlabel("worst-case error" if metric == "wce" else "mean absolute error")
        ax.set_ylabel("area (um^2, NanGate45)")
        ax.axhline(rows[0][1]["area"], color="black", lw=0.8, ls="--", label="exact")
        ax.legend(fontsize=8)
    fig.suptitle("8x8 baselines (red: on the area / worst-case error front)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
