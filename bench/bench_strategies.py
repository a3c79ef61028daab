"""Benchmark: search strategies on the real LeNet-5 AppAxO problem at a fixed budget.

    python bench/bench_strategies.py [--budget 300] [--seeds 3] [--test-size 10000]
                                     [--strategies random,sobol,nsga2,bayes-tpe,bayes-gp]

Each (strategy, seed) is a real study (trial store, resume-able) over the 16 lowest-weight LUTs
of studies/lenet_appaxo.yaml with objectives accuracy and the calibrated FPGA LUT count; all
runs share one network evaluator, so a product table is scored once however many runs propose
it. Prints the hypervolume (against the common reference point: 10% worse than the exact
multiplier) per strategy: mean, spread, and the ratio to random's mean. Needs the MNIST files
(DSE_DATA_DIR or ../shared/data/mnist). About 70 minutes on 2 cores with the defaults.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import lenet_fpga_study, use_shared_data  # first: puts the repository on sys.path

from dse.comparison import common_reference
from dse.loop import StudyRunner, build_evaluator, freeze
from dse.pareto import to_minimization
from dse.study import Study
from dse.study_file import parse_settings

STRATEGIES = {
    "random": {"type": "random"},
    "sobol": {"type": "sobol"},
    "nsga2": {"type": "nsga2", "population": 30},
    "bayes-tpe": {"type": "bayes", "sampler": "tpe", "startup_trials": 20},
    "bayes-gp": {"type": "bayes", "sampler": "gp", "startup_trials": 20},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=int, default=300)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--test-size", type=int, default=10000)
    parser.add_argument("--strategies", default=",".join(STRATEGIES))
    args = parser.parse_args()
    use_shared_data()
    base = lenet_fpga_study(dataset={"test_size": args.test_size}, budget={"trials": args.budget})
    evaluator = build_evaluator(parse_settings({**base, "strategy": {"type": "random"}}),
                                lambda m: print(m, file=sys.stderr))
    studies: dict[str, list[tuple[Study, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="dse-bench-") as tmp:
        for name in args.strategies.split(","):
            for seed in range(args.seeds):
                data = {**base, "name": f"{name}-{seed}", "seed": seed,
                        "output": str(Path(tmp) / f"{name}-{seed}"), "strategy": STRATEGIES[name]}
                settings = parse_settings(data)
                freeze(settings, settings.output_dir)
                start = time.perf_counter()
                with Study(settings.output_dir, settings, driver=True) as study:
                    StudyRunner(study, evaluator, lambda m: None, progress=False).run()
                studies.setdefault(name, []).append((study, time.perf_counter() - start))
                unique = study.trials["config"].nunique() - 1
                print(f"{name} seed {seed}: {time.perf_counter() - start:.0f} s, hypervolume "
                      f"{study.hypervolume():.4f}, {unique} distinct configurations", file=sys.stderr)
        every = [s for runs in studies.values() for s, _ in runs]
        reference = common_reference(every)
        ref = dict(zip(every[0].objectives, to_minimization(reference[None, :], every[0].directions)[0]))
        table = {name: (np.array([s.hypervolume(ref) for s, _ in runs]),
                        np.mean([len(s.pareto()) for s, _ in runs]), np.mean([t for _, t in runs]))
                 for name, runs in studies.items()}
    baseline = table["random"][0].mean() if "random" in table else None
    print(f"\nLeNet-5 / MNIST ({args.test_size} test images), 16 free AppAxO LUTs, accuracy vs "
          f"FPGA LUTs, {args.budget} evaluations, {args.seeds} seeds each")
    print(f"{'strategy':<12}{'HV mean':>10}{'HV std':>10}{'HV min':>10}{'HV max':>10}"
          f"{'vs random':>11}{'front':>7}{'s/run':>8}")
    for name, (hv, front, seconds) in table.items():
        ratio = f"{hv.mean() / baseline:.4f}" if baseline else "-"
        print(f"{name:<12}{hv.mean():>10.4f}{hv.std():>10.4f}{hv.min():>10.4f}{hv.max():>10.4f}"
              f"{ratio:>11}{front:>7.1f}{seconds:>8.0f}")
    print(f"(reference point: {', '.join(f'{k} {v:.4g}' for k, v in ref.items())})")


if __name__ == "__main__":
    main()
