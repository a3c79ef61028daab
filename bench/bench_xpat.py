"""Benchmark: the built-in XPAT-style generator on the 8x8 multiplier against the baselines.

    python bench/bench_xpat.py [--unsigned] [--time-limit 600] [--plot docs/xpat_vs_baselines.png]

Runs ``circuits.xpat.XpatGenerator`` with its default parameters (thresholds log-spaced from
16 to 1024) on the signed 8x8 multiplier, characterizing every accepted circuit on NanGate45,
and prints the chain: when each circuit was accepted, its worst-case error, MAE and area, and
the smallest truncated/broken-array baseline with a worst-case error no larger. Then the time to
the first accepted circuit, the run time, and how many generated points are non-dominated in
the union of both sets on (area, WCE) and (area, MAE). Needs Yosys, OpenSTA and the NanGate45
Liberty file (DSE_PDK_DIR, ~/.cache/dse/pdk, or ../shared/data/pdk).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from bench_baselines import characterize_baselines
from common import use_shared_data  # first: puts the repository on sys.path

from circuits.characterize import FlowSettings
from circuits.generation import DesignPoint, ExactCircuit
from circuits.xpat import XpatGenerator, XpatParams
from dse.pareto import non_dominated
from dse.reports.chain import plot_chain


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--unsigned", action="store_true", help="the unsigned multiplier")
    parser.add_argument("--time-limit", type=float, default=600.0, help="seconds for the chain")
    parser.add_argument("--plot", help="PNG of area against worst-case error and against MAE")
    args = parser.parse_args()
    use_shared_data()
    settings = FlowSettings(liberty="nangate45")
    signed = not args.unsigned

    baselines = characterize_baselines(signed, settings)
    exact_area = baselines[0][1]["area"]
    generator = XpatGenerator(replace(XpatParams(), time_limit_s=args.time_limit))
    start = time.perf_counter()
    first: list[float] = []

    def progress(point: DesignPoint) -> None:
        if not first:
            first.append(time.perf_counter() - start)
        print(f"  accepted {point.name}: threshold {point.threshold}, WCE {point.metrics['wce']:.0f}, "
              f"area {point.metrics['area']:.1f} um2 ({point.seconds:.0f} s)", flush=True)

    chain = generator.generate(ExactCircuit.multiplier(signed), settings, on_point=progress)
    seconds = time.perf_counter() - start
    if not chain:
        raise SystemExit("the generator accepted no circuit")

    generated = [(p.name, {**p.metrics, "threshold": p.threshold, "seconds": p.seconds}) for p in chain]
    fronts = {m: _front_in_union(generated, baselines[1:], m) for m in ("wce", "mae")}
    print(f"\n{'signed' if signed else 'unsigned'} 8x8 multiplier, NanGate45; exact array "
          f"{exact_area:.1f} um2; generator parameters {generator.params()}")
    print(f"{'step':>4}{'threshold':>10}{'s':>6}{'WCE':>7}{'MAE':>9}{'area um2':>10}{'saved':>7}"
          f"  {'best baseline with WCE <= it':<28}{'front':>6}")
    for point, (_, r), on_wce in zip(chain, generated, fronts["wce"]):
        name, area = _best_baseline(baselines, r["wce"])
        print(f"{point.step:>4}{point.threshold:>10}{point.seconds:>6.0f}{r['wce']:>7.0f}"
              f"{r['mae']:>9.2f}{r['area']:>10.1f}{1 - r['area'] / exact_area:>7.1%}"
              f"  {f'{name} {area:.1f}':<28}{'*' if on_wce else '':>6}")
    print(f"\ntime to the first accepted circuit: {first[0]:.1f} s (target <= 60 s)")
    print(f"chain of {len(chain)} design points, thresholds {chain[0].threshold}..{chain[-1].threshold}, "
          f"in {seconds:.0f} s (target: >= 5 points in <= 600 s)")
    for metric, label, target in (("wce", "worst-case error", "; target >= 1/3"),
                                  ("mae", "MAE", "")):
        print(f"non-dominated in the union on (area, {label}): {int(fronts[metric].sum())} of "
              f"{len(chain)} generated points ({fronts[metric].mean():.0%}{target})")
    if args.plot:
        kind = "signed" if signed else "unsigned"
        plot_chain([p.row() for p in chain], [r for _, r in baselines[1:]], exact_area,
                   Path(args.plot), f"{kind} 8x8 multipliers on NanGate45: the built-in "
                   f"generator's chain against the baselines")
        print(f"wrote {args.plot}")


def _front_in_union(generated: list, baselines: list, metric: str) -> np.ndarray:
    """Which generated points are non-dominated among generated and baseline points."""
    points = np.array([[r["area"], r[metric]] for _, r in generated + baselines])
    return non_dominated(points, ("minimize", "minimize"))[: len(generated)]


def _best_baseline(baselines: list, wce: float) -> tuple[str, float]:
    name, r = min(((n, r) for n, r in baselines if r["wce"] <= wce), key=lambda x: x[1]["area"])
    return name, r["area"]


if __name__ == "__main__":
    main()
