"""Benchmark: SubXPAT against the built-in generator on the same exact multiplier and threshold.

    python bench/bench_subxpat.py [--bits 8] [--threshold 8] [--time-limit 2400] [--unsigned]

Runs SubXPAT (``$SUBXPAT_HOME``, default ../shared/subxpat, with the environment
``make subxpat-env`` builds) on the exact signed multiplier at one worst-case error threshold,
within a wall-clock limit, and the built-in generator (``circuits.xpat``, 8x8 only) with the same
subgraph and template limits. Prints, for each, the time to its first circuit, the circuits it
found within the threshold, the smallest one's area and the run time; areas on NanGate45
(``--bits 8``: every circuit characterized as a multiplier; smaller: simulated against the exact
circuit). The 8x8 SubXPAT run takes tens of minutes to hours; ``--bits 4`` takes minutes.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from common import REPO, cpu_name, use_shared_data  # first: puts the repository on sys.path

from circuits.characterize import FlowSettings
from circuits.generation import ExactCircuit
from circuits.liberty import load_liberty
from circuits.multiplier import Multiplier
from circuits.subxpat import (
    FULL,
    SubxpatGenerator,
    SubxpatParams,
    measure,
    parse_circuit_name,
    run_subxpat,
    small_multiplier,
)
from circuits.synthesis import synthesize_asic
from circuits.xpat import XpatGenerator, XpatParams


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bits", type=int, default=8, help="operand width (8, or 2..7)")
    parser.add_argument("--threshold", type=int, default=8, help="worst-case error threshold")
    parser.add_argument("--time-limit", type=float, default=2400.0, help="seconds per generator")
    parser.add_argument("--cell-timeout", type=float, default=600.0,
                        help="SubXPAT's limit for one template cell")
    parser.add_argument("--max-inputs", type=int, default=6)
    parser.add_argument("--max-outputs", type=int, default=3)
    parser.add_argument("--literals-per-product", type=int, default=3)
    parser.add_argument("--products", type=int, default=2)
    parser.add_argument("--unsigned", action="store_true")
    args = parser.parse_args()
    use_shared_data()
    os.environ.setdefault("SUBXPAT_HOME", str(REPO.parent / "shared" / "subxpat"))
    flow = FlowSettings(liberty="nangate45")
    signed = not args.unsigned
    if args.bits == 8:
        exact, layout = ExactCircuit.multiplier(signed), FULL
    else:
        exact, layout = small_multiplier(args.bits, signed)
    params = SubxpatParams(thresholds=(args.threshold,), max_inputs=args.max_inputs,
                           max_outputs=args.max_outputs,
                           literals_per_product=args.literals_per_product,
                           products_per_output=args.products, cell_timeout_s=args.cell_timeout,
                           time_limit_s=args.time_limit)
    print(f"{exact.name} ({layout.name}), threshold {args.threshold}, time limit "
          f"{args.time_limit:g} s per generator, NanGate45; {cpu_name()}", flush=True)
    rows = [_subxpat(exact, layout, params, flow)]
    if args.bits == 8:
        rows.insert(0, _builtin(exact, params, flow))
    exact_area = synthesize_asic(Multiplier(exact.top, exact.verilog, exact.top, False),
                                 load_liberty(flow.liberty), flow.timeout_s).area
    print(f"exact circuit: {exact_area:.1f} um2")
    print(f"\n{'generator':<10}{'first circuit s':>16}{'circuits':>9}{'WCE':>5}"
          f"{'smallest um2':>13}{'run s':>7}")
    for name, first, count, wce, area, seconds in rows:
        first_text = f"{first:.0f}" if first is not None else "-"
        area_text = f"{area:.1f}" if area is not None else "-"
        print(f"{name:<10}{first_text:>16}{count:>9}{wce if wce is not None else '-':>5}"
              f"{area_text:>13}{seconds:>7.0f}")


def _builtin(exact: ExactCircuit, params: SubxpatParams, flow: FlowSettings) -> tuple:
    """The built-in generator with SubXPAT's limits: (name, first s, count, WCE, area, s)."""
    generator = XpatGenerator(XpatParams(
        thresholds=params.thresholds, max_inputs=params.max_inputs,
        max_outputs=params.max_outputs, literals_per_product=params.literals_per_product,
        products=params.products_per_output, time_limit_s=params.time_limit_s))
    start = time.monotonic()
    chain = generator.generate(exact, flow)
    seconds = time.monotonic() - start
    for p in chain:
        print(f"  built-in {p.name}: WCE {p.metrics['wce']:.0f}, area {p.metrics['area']:.1f} "
              f"um2 ({p.seconds:.0f} s)", flush=True)
    best = min(chain, key=lambda p: p.metrics["area"], default=None)
    return ("built-in", chain[0].seconds if chain else None, len(chain),
            best and int(best.metrics["wce"]), best and best.metrics["area"], seconds)


def _subxpat(exact: ExactCircuit, layout, params: SubxpatParams, flow: FlowSettings) -> tuple:
    """SubXPAT's run, its circuits re-measured: (name, first s, count, WCE, area, s). The time
    to its first circuit is read from the circuit files' times in the kept job folders."""
    with tempfile.TemporaryDirectory(prefix="bench-subxpat-") as work:
        start, wall = time.monotonic(), time.time()
        if layout == FULL:
            points = SubxpatGenerator(params, work_dir=work, progress=True).generate(exact, flow)
            found = [(p.name, p.metrics["wce"], p.metrics["area"]) for p in points]
        else:
            measured = measure(run_subxpat(exact, params, layout, work, flow.timeout_s, True),
                               exact, layout, flow)
            found = [(m.name, m.wce, m.area) for m in measured]
        seconds = time.monotonic() - start
        written = [p.stat().st_mtime - wall for p in Path(work).glob("*/input/ver/*.v")
                   if parse_circuit_name(p.name) is not None]
    for name, wce, area in found:
        print(f"  SubXPAT {name}: WCE {wce:.0f}, area {area:.1f} um2", flush=True)
    best = min(found, key=lambda f: f[2], default=None)
    return ("SubXPAT", min(written, default=None), len(found), best and int(best[1]),
            best and best[2], seconds)


if __name__ == "__main__":
    main()
