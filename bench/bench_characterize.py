"""Benchmark: seconds per characterization (ASIC flow, synth_xilinx, FPGA model, cache hit).

    python bench/bench_characterize.py [--liberty PATH] [--repeats 3]

Needs Yosys and OpenSTA, and a Liberty file (default: NanGate45 from $DSE_PDK_DIR, the user
cache, or ../shared/data/pdk). Prints one table with this machine's targets.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from common import use_shared_data  # first: puts the repository on sys.path

from circuits.cache import ResultCache
from circuits.characterize import FlowSettings, characterize
from circuits.fpga_model import appaxo_fpga
from circuits.multiplier import Multiplier
from circuits.synthesis import synthesize_xilinx

EXACT_8X8 = """module mul8s (input signed [7:0] a, input signed [7:0] b, output signed [15:0] p);
  assign p = a * b;
endmodule
"""


def timed(fn, repeats: int) -> float:
    """Best of ``repeats`` wall times (seconds): the machine is shared and noisy."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--liberty")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    use_shared_data()
    settings = FlowSettings(liberty=args.liberty or "nangate45")
    exact = Multiplier("mul8s", EXACT_8X8, "mul8s", None, "mul8s.v")
    config = 404750335
    rows = [
        ("ASIC flow, exact 8x8 (Yosys+ABC, simulation, OpenSTA)", 1.5,
         timed(lambda: characterize(exact, settings), args.repeats)),
        ("ASIC flow, AppAxO configuration", 1.5,
         timed(lambda: characterize(Multiplier.from_appaxo(config), settings), args.repeats)),
        ("synth_xilinx of a Verilog multiplier", 4.0,
         timed(lambda: synthesize_xilinx(exact, 120), args.repeats)),
        ("calibrated AppAxO FPGA model", 0.001,
         timed(lambda: appaxo_fpga(config), args.repeats * 100)),
    ]
    with tempfile.TemporaryDirectory() as tmp:
        cache = ResultCache(Path(tmp) / "cache.sqlite")
        characterize(exact, settings, cache=cache)
        rows.append(("cache hit (same design, library, settings)", 0.005,
                     timed(lambda: characterize(exact, settings, cache=cache), args.repeats * 10)))
    print(f"{'characterization':<58}{'seconds':>10}{'target':>10}{'ok':>5}")
    for name, target, seconds in rows:
        print(f"{name:<58}{seconds:>10.4f}{target:>10g}{'yes' if seconds <= target else 'NO':>5}")
    print(f"(best of {args.repeats}+ runs; Liberty: {settings.liberty}; appaxo config {config})")


if __name__ == "__main__":
    main()
