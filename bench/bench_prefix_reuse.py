"""Benchmark: prefix reuse in a layer-wise NSGA-II search, against evaluating every trial in full.

    python bench/bench_prefix_reuse.py [--network lenet5|resnet8] [--images N]
                                       [--generations 10] [--population 20] [--members 8]
                                       [--budget-mb 1024]

A realistic run: NSGA-II (the study strategy, integer genome) searches a layer-wise space of
``--members`` AppAxO multipliers (from studies/lenet_layerwise.yaml's library) per table layer,
maximizing accuracy and minimizing a multiplication cost (MACs of each layer times the member's
kept LUTs). The proposals of the run with the prefix cache (``--budget-mb``, the study
default 1 GiB) are then evaluated again
without it, in the same order; both must give identical accuracies. ``lenet5`` is the trained
network of the main study on the MNIST test images; ``resnet8`` a random-weight registry network
on random CIFAR-shaped images (timing only: its accuracy is chance).

Prints, per network: trials, seconds with and without reuse, the speed-up, the share of trials
(per image batch) that resumed from stored activations, the share of table-layer computations skipped, the cache's
peak bytes, and one exact-table inference by onnxruntime of the same images as the yardstick.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from bench_inference import onnxruntime_seconds, study_network, zoo_network
from common import REPO, cpu_name

from circuits import appaxo
from dse.kinds.layerwise import make_space
from dse.strategies import Evaluation, make_strategy
from dse.study_file import load_study_file
from evaluators.networks.prepared import int8_layer_macs
from evaluators.networks.quantization import quantize_int8
from evaluators.runtime.approx_network import ApproxNetworkEvaluator
from evaluators.runtime.layer_tables import LayerTables


def library_configs(count: int) -> list[int]:
    """The exact configuration and the first ``count - 1`` AppAxO members of the shipped library."""
    study = load_study_file(REPO / "studies" / "lenet_layerwise.yaml")
    return [appaxo.EXACT, *study.space.library.appaxo[: count - 1]]


def search(evaluator: ApproxNetworkEvaluator, space, macs: dict, configs: list[int],
           generations: int, population: int) -> tuple[list[int], list[float], float]:
    """An NSGA-II run: its proposals in order, their accuracies and its seconds."""
    strategy = make_strategy({"type": "nsga2", "population": population,
                              "generations": generations}, space, ["maximize", "minimize"])
    kept = [appaxo.kept_luts(c) for c in configs]
    proposals, accuracies = [], []
    start = time.perf_counter()
    while (proposal := strategy.ask()) is not None:
        assignment = space.assignment(proposal.config)
        accuracy = evaluator.evaluate(tables(assignment, space, configs))["accuracy"]
        cost = sum(macs[layer] * kept[space.members.index(m)] for layer, m in assignment.items())
        strategy.tell(proposal, Evaluation((accuracy, float(cost))))
        proposals.append(proposal.config)
        accuracies.append(accuracy)
    return proposals, accuracies, time.perf_counter() - start


def tables(assignment: dict, space, configs: list[int]) -> LayerTables:
    return LayerTables({layer: appaxo.table(configs[space.members.index(m)])
                        for layer, m in assignment.items()}, appaxo.table(appaxo.EXACT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--network", choices=["lenet5", "resnet8"], default="lenet5")
    parser.add_argument("--images", type=int, help="test images (default: 10,000 for lenet5, "
                                                   "2,000 for resnet8)")
    parser.add_argument("--generations", type=int, default=10)
    parser.add_argument("--population", type=int, default=20)
    parser.add_argument("--members", type=int, default=8)
    parser.add_argument("--budget-mb", type=int, default=1024, help="prefix cache budget")
    args = parser.parse_args()
    images = args.images or (10_000 if args.network == "lenet5" else 2_000)
    with tempfile.TemporaryDirectory() as tmp:
        if args.network == "lenet5":
            float_onnx, int8_onnx, inputs, labels, _ = study_network(images)
        else:
            float_onnx, int8_onnx, inputs, labels = zoo_network(args.network, images, Path(tmp))
        qdq = Path(tmp) / "qdq.onnx"
        quantize_int8(float_onnx, qdq, inputs[:200], quant_format="qdq")
        ort = onnxruntime_seconds(qdq, inputs)
        macs = int8_layer_macs(int8_onnx, inputs[:1])
        configs = library_configs(args.members)
        names = tuple(appaxo.config_name(c) for c in configs)
        space = make_space(load_study_file(REPO / "studies" / "lenet_layerwise.yaml").space,
                           list(macs), names)
        cached = ApproxNetworkEvaluator(int8_onnx, inputs, labels, prefix_cache_bytes=args.budget_mb << 20)
        cached.evaluate(appaxo.table(appaxo.EXACT))  # compile the kernels before timing
        proposals, accuracies, seconds = search(cached, space, macs, configs, args.generations,
                                                args.population)
        stats = cached.prefix_stats()
        full = ApproxNetworkEvaluator(int8_onnx, inputs, labels)
        start = time.perf_counter()
        again = [full.evaluate(tables(space.assignment(c), space, configs))["accuracy"]
                 for c in proposals]
        plain = time.perf_counter() - start
    if again != accuracies:
        sys.exit("prefix reuse changed an accuracy: a bug")
    print(f"# prefix reuse in a layer-wise NSGA-II run ({cpu_name()})")
    print(f"network {args.network}, {images} images, {len(macs)} table layers, {args.members} "
          f"members, population {args.population}, {args.generations} generations, cache "
          f"budget {args.budget_mb} MiB")
    print("| trials | with reuse (s) | without (s) | speed-up | batches resumed | layers skipped "
          "| cache held at the end (MiB) | onnxruntime int8, one inference pass (s) |")
    print("|---|---|---|---|---|---|---|---|")
    print(f"| {len(proposals)} | {seconds:.1f} | {plain:.1f} | {plain / seconds:.2f}x | "
          f"{stats['hits'] / max(stats['lookups'], 1):.0%} | "
          f"{stats['layers_skipped'] / max(stats['layers_total'], 1):.0%} | "
          f"{stats['bytes'] / 2**20:.0f} | {ort:.2f} |")
    print(f"identical accuracies with and without reuse: {len(again)} of {len(again)}; "
          f"{np.mean(accuracies):.4f} mean accuracy")


if __name__ == "__main__":
    main()
