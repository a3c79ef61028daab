"""Benchmark: evaluations per second of the LeNet-5 study, serial against Ray workers.

    python bench/bench_executors.py [--evaluations 80] [--test-size 10000]

Runs the same kind of study (random AppAxO configurations of studies/lenet_appaxo.yaml's space,
accuracy against the calibrated FPGA LUT count, every evaluation over the test images) with the
serial executor (numba on all cores), Ray with 1 worker and Ray with 2 workers (1 CPU each), and
prints throughput, the ratio of 2 workers to 1, and Ray's start-up time (local instance and
workers ready). Each run starts from an empty evaluation cache and its own seed.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from common import lenet_fpga_study, use_shared_data  # first: puts the repository on sys.path

from dse.executors import make_executor
from dse.loop import StudyRunner, build_evaluator, freeze
from dse.study import Study
from dse.study_file import parse_settings

RUNS = {
    "serial": {"type": "serial"},
    "ray, 1 worker": {"type": "ray", "workers": 1, "cpus_per_worker": 1},
    "ray, 2 workers": {"type": "ray", "workers": 2, "cpus_per_worker": 1},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--evaluations", type=int, default=80)
    parser.add_argument("--test-size", type=int, default=10000)
    args = parser.parse_args()
    use_shared_data()
    base = lenet_fpga_study(dataset={"test_size": args.test_size}, budget={"trials": args.evaluations},
                            strategy={"type": "random"})
    evaluator = build_evaluator(parse_settings(base), lambda m: print(m, file=sys.stderr))
    rows = []
    with tempfile.TemporaryDirectory(prefix="dse-bench-") as tmp:
        for seed, (name, executor_settings) in enumerate(RUNS.items(), start=10):
            settings = parse_settings({**base, "name": f"run{seed}", "seed": seed,
                                       "output": str(Path(tmp) / f"run{seed}"),
                                       "executor": executor_settings})
            freeze(settings, settings.output_dir)
            evaluator.network_cache.clear()
            started = time.perf_counter()
            executor = make_executor(settings.executor, evaluator, settings.output_dir)
            startup = time.perf_counter() - started
            study = Study(settings.output_dir, settings, driver=True)
            runner = StudyRunner(study, evaluator, lambda m: None, False, executor)
            try:
                start = time.perf_counter()
                runner.run()
                seconds = time.perf_counter() - start
            finally:
                executor.close()
                study.close()
            rows.append((name, args.evaluations + 1, seconds, startup))
            print(f"{name}: {seconds:.1f} s", file=sys.stderr)
    print(f"\nLeNet-5 / MNIST, {args.test_size} test images per evaluation, {os.cpu_count()} CPU cores")
    print(f"{'executor':<18}{'evaluations':>12}{'seconds':>10}{'eval/s':>9}{'start-up s':>12}")
    rates = {}
    for name, n, seconds, startup in rows:
        rates[name] = n / seconds
        shown = f"{startup:.1f}" if name.startswith("ray") else "-"
        print(f"{name:<18}{n:>12}{seconds:>10.1f}{rates[name]:>9.2f}{shown:>12}")
    print(f"2 workers / 1 worker throughput: {rates['ray, 2 workers'] / rates['ray, 1 worker']:.2f}x "
          "(target >= 1.7x)")


if __name__ == "__main__":
    main()
