"""Benchmark: scoring one AppAxO configuration on LeNet-5 over the 10,000 MNIST test images.

Uses the network and the configuration space of studies/lenet_appaxo.yaml.

    python bench/bench_inference.py [--configs 5] [--reference-images 300]

Prints seconds per configuration, configurations per second and table-MACs per second for the
plain reference kernel (numpy, measured on a subset and scaled to 10,000 images), the fast CPU
kernel (numba) and, where PyTorch sees a CUDA GPU, the GPU path; the fast paths also in
batched mode (all timed configurations in one pass), each with the process's peak memory so
far; then the time to build a product table. Needs the MNIST files
(DSE_DATA_DIR, the user cache, or ../shared/data/mnist) and trains LeNet-5 once if no cached
network exists.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np
from common import lenet_fpga_study, use_shared_data  # first: puts the repository on sys.path

from accel import reference
from circuits import appaxo
from circuits.product_table import ProductTable
from dse.loop import build_evaluator
from dse.space import AppAxOSubspace
from dse.study_file import parse_settings
from evaluators import approx_runner
from evaluators.approx_network import ApproxNetworkEvaluator
from evaluators.qgraph import QGraph


def macs_per_image(int8_onnx: Path, image: np.ndarray) -> int:
    """Multiplications per image in the Conv/Gemm/MatMul layers (every one is a table lookup),
    counted on the graph as exported (before fusing layers)."""
    graph = QGraph.from_onnx(int8_onnx)
    layers = [n for n in graph.nodes if n.op in ("QLinearConv", "QGemm", "QLinearMatMul")]
    outs = approx_runner.run(graph, {graph.inputs[0]: image}, ProductTable.exact(True), reference,
                             capture=[n.outputs[0] for n in layers])
    total = 0
    for node in layers:
        weight = graph.const(node.inputs[3])
        per_output = int(np.prod(weight.shape[1:])) if node.op == "QLinearConv" else (
            weight.shape[1] if node.attr("transB", 0) else weight.shape[0])
        total += outs[node.outputs[0]].size * per_output
    return total


def torch_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def gpu_name() -> str:
    import torch

    return torch.cuda.get_device_name(0)


def peak_mib() -> float:
    """Peak resident memory of this process so far."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", type=int, default=5, help="configurations timed per kernel")
    parser.add_argument("--reference-images", type=int, default=300)
    args = parser.parse_args()

    use_shared_data()
    study = parse_settings(lenet_fpga_study(evaluation={"kernel": "cpu", "device": "cpu"}))
    built = build_evaluator(study, lambda s: print(s, file=sys.stderr))
    prepared, inputs, labels = built.prepared, built.network.inputs, built.network.labels
    # Configurations of the main study's space: their activations are as sparse as a working
    # network's (a random 36-bit configuration breaks the network and zeros most activations,
    # which the kernel skips, so it would flatter the figures).
    space = AppAxOSubspace(study.space.free, study.space.fixed)
    rng = np.random.default_rng(0)
    configs = [space.config(int(p)) for p in space.sample_points(rng, args.configs)]

    start = time.perf_counter()
    for c in configs:
        appaxo.product_table(c)
    table_ms = (time.perf_counter() - start) / len(configs) * 1e3

    per_image = macs_per_image(prepared.int8_onnx, inputs[:1])
    rows = []
    kernels = [("reference", "cpu", args.reference_images), ("cpu", "cpu", len(labels))]
    if torch_cuda():
        kernels.append(("torch", "cuda", len(labels)))
    for kernel, device, n_images in kernels:
        ev = ApproxNetworkEvaluator(prepared.int8_onnx, inputs[:n_images], labels[:n_images],
                                    kernel, device)
        macs = per_image * n_images
        ev.evaluate(ProductTable.exact(True))  # warm-up: compilation, caches
        timed = configs if kernel != "reference" else configs[:2]
        tables = [appaxo.table(c) for c in timed]
        start = time.perf_counter()
        for table in tables:
            ev.evaluate(table)
        seconds = (time.perf_counter() - start) / len(timed)
        rows.append((f"{kernel} ({device})", n_images, seconds * 10_000 / n_images, macs / seconds / 1e9,
                     peak_mib()))
        if kernel != "reference":  # batched mode: every table in one pass over the network
            start = time.perf_counter()
            ev.evaluate_batch(tables)
            seconds = (time.perf_counter() - start) / len(timed)
            rows.append((f"{kernel} ({device}), {len(timed)} per pass", n_images,
                         seconds * 10_000 / n_images, macs / seconds / 1e9, peak_mib()))

    print(f"\nLeNet-5 int8, MNIST test set, {os.cpu_count()} CPU cores"
          f"{', ' + gpu_name() if torch_cuda() else ', no CUDA GPU'}, "
          f"{per_image:,} table-MACs per image")
    print(f"{'kernel':<28}{'images timed':>14}{'s/config (10k images)':>24}{'configs/s':>11}"
          f"{'G table-MAC/s':>16}{'peak MiB so far':>17}")
    for kernel, n, per_10k, gmacs, peak in rows:
        print(f"{kernel:<28}{n:>14,}{per_10k:>24.3f}{1 / per_10k:>11.2f}{gmacs:>16.2f}{peak:>17.0f}")
    print(f"{'speed-up of cpu over reference':<63}{rows[0][2] / rows[1][2]:>16.1f}x")
    print(f"{'product table construction (ms/config)':<63}{table_ms:>16.1f}")


if __name__ == "__main__":
    main()
