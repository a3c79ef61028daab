"""Benchmark: seconds to score one AppAxO configuration on a network, against onnxruntime.

    python bench/bench_inference.py [--network lenet5|fcnn|resnet8|resnet20|vgg16|vit_tiny]
                                    [--images 10000] [--configs 3] [--reference-images 300]
                                    [--layers]

``lenet5`` (the default) is the trained network of studies/lenet_appaxo.yaml on the MNIST test
images (real post-ReLU sparsity; needs the MNIST files: DSE_DATA_DIR, the user cache or
../shared/data/mnist; trains LeNet-5 once if no cached network exists). The other networks are
random-weight registry networks (``evaluators.networks.zoo``) on random images of their dataset's shape
(MNIST for fcnn, CIFAR for the others), calibrated on 200 of them.

Per kernel: seconds per configuration (scaled to 10,000 images), configurations per second,
nominal table-MACs per second (every multiplication of the network, skipped zeros included),
the time against onnxruntime's exact int8 inference of the same network on the same images in
the same run (QDQ form, the same symmetric int8 quantization, intra-op spinning off: the
machine-independent yardstick) and the process's peak memory so far. The plain reference kernel
(numpy) runs on a subset and is scaled; the numba CPU kernel also in batched mode (every timed
configuration in one pass); the torch kernel where PyTorch sees a CUDA GPU. Configurations come
from the main study's space: their activations are as sparse as a working network's (a random
36-bit configuration breaks the network and zeros most activations, which flatters the kernel).

``--layers`` times each convolution alone instead, on its real input codes (at most 1,000
images), against onnxruntime running that one layer (DequantizeLinear -> Conv ->
QuantizeLinear, which it fuses into its int8 kernel).
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import cpu_name, lenet_fpga_study, use_shared_data  # first: the repository on sys.path

from circuits import appaxo
from circuits.product_table import ProductTable
from dse.space import AppAxOSubspace
from dse.study_file import parse_settings
from evaluators.networks import ort_exactness
from evaluators.networks.prepared import int8_layer_macs
from evaluators.networks.quantization import quantize_int8
from evaluators.runtime.approx_network import ApproxNetworkEvaluator

NETWORKS = {"lenet5": None, "fcnn": ("mnist", (1, 28, 28)), "resnet8": ("cifar10", (3, 32, 32)),
            "resnet20": ("cifar10", (3, 32, 32)), "vgg16": ("cifar10", (3, 32, 32)),
            "vit_tiny": ("fashion_mnist", (1, 28, 28))}
"""The benchmarked networks: the trained study network, or (dataset, input shape) of a
random-weight registry network."""
ORT_BATCH = 256


def torch_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def gpu_name() -> str:
    import torch

    return torch.cuda.get_device_name(0)


def peak_mib() -> float:
    """Peak resident memory of this process so far."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def study_network(images: int):
    """The trained LeNet-5 of the main study and its MNIST test images."""
    use_shared_data()
    study = parse_settings(lenet_fpga_study(evaluation={"kernel": "cpu", "device": "cpu"}))
    from dse.loop import build_evaluator

    built = build_evaluator(study, lambda s: print(s, file=sys.stderr))
    prepared = built.prepared
    return prepared.float_onnx, prepared.int8_onnx, built.network.inputs[:images], \
        built.network.labels[:images], study


def zoo_network(arch: str, images: int, folder: Path):
    """A random-weight registry network on random images of its dataset's shape, quantized
    as the study quantizes (``evaluators.networks.quantization``)."""
    from evaluators.data.preprocess import default_preprocessing
    from evaluators.networks import zoo

    dataset, shape = NETWORKS[arch]
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (images, *shape[1:], shape[0]), dtype=np.uint8)  # NHWC
    inputs = default_preprocessing(dataset).apply(pixels)
    float_onnx, int8_onnx = folder / f"{arch}.onnx", folder / f"{arch}.int8.onnx"
    zoo.export_float_onnx(zoo.build_model(arch, shape, 10, seed=0), shape, float_onnx)
    quantize_int8(float_onnx, int8_onnx, inputs[:200])
    return float_onnx, int8_onnx, inputs, rng.integers(0, 10, images)


def onnxruntime_seconds(qdq_onnx: Path, inputs: np.ndarray) -> float:
    """onnxruntime's exact int8 inference of every image, ``ORT_BATCH`` at a time, spinning off;
    the better of two runs."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(str(qdq_onnx), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    session.run(None, {name: inputs[:ORT_BATCH]})
    best = float("inf")
    for _ in range(2):
        start = time.perf_counter()
        for i in range(0, len(inputs), ORT_BATCH):
            session.run(None, {name: inputs[i : i + ORT_BATCH]})
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--network", choices=NETWORKS, default="lenet5")
    parser.add_argument("--images", type=int, default=10_000, help="images scored per configuration")
    parser.add_argument("--configs", type=int, default=3, help="configurations timed per kernel")
    parser.add_argument("--reference-images", type=int, default=300,
                        help="images for the plain reference kernel (0: leave it out)")
    parser.add_argument("--layers", action="store_true",
                        help="time each convolution against onnxruntime's instead")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        if args.network == "lenet5":
            float_onnx, int8_onnx, inputs, labels, study = study_network(args.images)
        else:
            float_onnx, int8_onnx, inputs, labels = zoo_network(args.network, args.images, Path(tmp))
            study = parse_settings(lenet_fpga_study())
        if args.layers:
            return layers(args.network, int8_onnx, inputs[:1000], Path(tmp))
        qdq_onnx = Path(tmp) / "qdq.onnx"
        quantize_int8(float_onnx, qdq_onnx, inputs[:200], quant_format="qdq")
        run(args, int8_onnx, qdq_onnx, inputs, labels, study)


def run(args, int8_onnx: Path, qdq_onnx: Path, inputs: np.ndarray, labels: np.ndarray, study) -> None:
    space = AppAxOSubspace(study.space.free, study.space.fixed)
    configs = [space.config(int(p)) for p in space.sample_points(np.random.default_rng(0), args.configs)]
    start = time.perf_counter()
    tables = [appaxo.table(c) for c in configs]
    table_ms = (time.perf_counter() - start) / len(configs) * 1e3
    per_image = sum(int8_layer_macs(int8_onnx, inputs[:1]).values())
    n = len(inputs)
    ort_10k = onnxruntime_seconds(qdq_onnx, inputs) * 10_000 / n
    rows = [("onnxruntime int8 (QDQ)", n, ort_10k, per_image * n / (ort_10k * n / 10_000),
             peak_mib())]
    kernels = [("cpu", "cpu", n)]
    if args.reference_images:
        kernels.insert(0, ("reference", "cpu", min(n, args.reference_images)))
    if torch_cuda():
        kernels.append(("torch", "cuda", n))
    parity = None
    for kernel, device, images in kernels:
        ev = ApproxNetworkEvaluator(int8_onnx, inputs[:images], labels[:images], kernel, device)
        ev.logits(ProductTable.exact(True), np.arange(min(images, 64)))  # compile, warm up
        timed = tables if kernel != "reference" else tables[:1]
        start = time.perf_counter()
        for table in timed:
            ev.logits(table)
        seconds = (time.perf_counter() - start) / len(timed)
        rows.append((f"{kernel} ({device})", images, seconds * 10_000 / images,
                     per_image * images / seconds, peak_mib()))
        if kernel == "cpu":
            parity = exact_parity(ev, int8_onnx, inputs[:200])
        if kernel != "reference" and len(timed) > 1:  # batched mode: the tables in one pass
            start = time.perf_counter()
            ev.logits_batch(timed)
            seconds = (time.perf_counter() - start) / len(timed)
            rows.append((f"{kernel} ({device}), {len(timed)} per pass", images,
                         seconds * 10_000 / images, per_image * images / seconds, peak_mib()))
    report(args.network, per_image, n, rows, ort_10k, table_ms, parity)


def exact_parity(ev: ApproxNetworkEvaluator, int8_onnx: Path, inputs: np.ndarray) -> bool:
    """Whether the exact table gives onnxruntime's outputs of the QOperator model bit for bit
    (onnxruntime in its precision mode: exact on every CPU for constant weights)."""
    from evaluators.networks.ort_exactness import session as ort_session

    session = ort_session(int8_onnx)
    expected = session.run(None, {session.get_inputs()[0].name: inputs})[0]
    return bool(np.array_equal(ev.logits(ProductTable.exact(True), np.arange(len(inputs))), expected))


def layers(network: str, int8_onnx: Path, inputs: np.ndarray, folder: Path) -> None:
    """Each QLinearConv of the network alone, on its input codes, against onnxruntime."""
    from accel import cpu
    from evaluators.runtime import approx_runner
    from evaluators.runtime.qgraph import QGraph

    graph = QGraph.from_onnx(int8_onnx)
    convs = [n for n in graph.nodes if n.op == "QLinearConv"]
    codes = approx_runner.run(graph, {graph.inputs[0]: inputs}, ProductTable.exact(True), cpu,
                              capture=[n.inputs[0] for n in convs])
    table = appaxo.table(404750335)
    print(f"\n{network}: each convolution alone on {len(inputs):,} images; {cpu_name()}; "
          f"load average {', '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print(f"{'layer':<34}{'MMAC/image':>11}{'onnxruntime ms':>16}{'cpu ms':>9}{'ratio':>7}"
          f"{'G table-MAC/s':>15}")
    totals = [0.0, 0.0]
    for i, node in enumerate(convs):
        x = codes[node.inputs[0]]
        _, w, qconv = approx_runner.conv_arguments(node, [graph.initializers.get(n, codes.get(n))
                                                          for n in node.inputs], _Plain(graph))
        session = _conv_session(graph, node, folder / f"layer{i}.onnx")
        runs = (lambda s=session, x=x: s.run(None, {"x": x}),
                lambda x=x, w=w, q=qconv: cpu.qlinear_conv(x, w, table, **q))
        seconds = [min(_timed(f) for _ in range(4)) for f in runs]  # the first run warms up
        macs = int(np.prod(runs[1]().shape[1:])) * int(np.prod(w.shape[1:]))
        totals = [t + s for t, s in zip(totals, seconds)]
        name = f"{w.shape[1] * qconv['group']}->{w.shape[0]} {x.shape[2]}px k{w.shape[2]} " \
            f"s{qconv['strides'][0]}"
        print(f"{name:<34}{macs / 1e6:>11.2f}{seconds[0] * 1e3:>16.1f}{seconds[1] * 1e3:>9.1f}"
              f"{seconds[1] / seconds[0]:>7.2f}{macs * len(x) / seconds[1] / 1e9:>15.2f}")
    print(f"{'all convolutions':<34}{'':>11}{totals[0] * 1e3:>16.1f}{totals[1] * 1e3:>9.1f}"
          f"{totals[1] / totals[0]:>7.2f}")


class _Plain:
    """What ``approx_runner.conv_arguments`` needs of a run: the graph and a signed table."""

    def __init__(self, graph) -> None:
        self.graph, self.table, self.capture = graph, ProductTable.exact(True), set()

    def operands(self, node, x, x_zero_point, w, w_zero_point):
        return x, x_zero_point, w, w_zero_point


def _timed(f) -> float:
    start = time.perf_counter()
    f()
    return time.perf_counter() - start


def _conv_session(graph, node, path: Path):
    """onnxruntime running one QLinearConv node's layer in QDQ form (int8 codes in and out)."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    names = ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz", "b"]
    values = {n: graph.initializers[i] for n, i in zip(names[1:], node.inputs[1:]) if i}
    w = values["w"]
    values["bs"] = (values["xs"] * values["ws"]).astype(np.float32).reshape(-1)
    values["bz"] = np.zeros(w.shape[0], np.int32)
    axis = {"axis": 0} if np.size(values["ws"]) > 1 else {}
    nodes = [helper.make_node("DequantizeLinear", ["x", "xs", "xz"], ["xf"]),
             helper.make_node("DequantizeLinear", ["w", "ws", "wz"], ["wf"], **axis),
             helper.make_node("DequantizeLinear", ["b", "bs", "bz"], ["bf"], axis=0),
             helper.make_node("Conv", ["xf", "wf", "bf"] if "b" in values else ["xf", "wf"], ["yf"],
                              **{k: node.attr(k) for k in ("strides", "pads", "dilations", "group")
                                 if node.attr(k) is not None}),
             helper.make_node("QuantizeLinear", ["yf", "ys", "yz"], ["y"])]
    if "b" not in values:
        nodes.pop(2)
    model = helper.make_model(helper.make_graph(
        nodes, "layer", [helper.make_tensor_value_info("x", TensorProto.INT8, None)],
        [helper.make_tensor_value_info("y", TensorProto.INT8, None)],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in values.items()
         if k != "b" or "b" in values]), opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, str(path))
    options = ort.SessionOptions()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def report(network: str, per_image: int, n: int, rows: list, ort_10k: float, table_ms: float,
           parity: bool | None) -> None:
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    gpu = f", {gpu_name()}" if torch_cuda() else ", no CUDA GPU"
    print(f"\n{network} int8, {n:,} images, {per_image:,} table-MACs per image; {cpu_name()}{gpu}; "
          f"load average {load}")
    print(f"{'kernel':<32}{'images':>8}{'s/config (10k)':>16}{'configs/s':>11}{'G table-MAC/s':>15}"
          f"{'x onnxruntime':>15}{'peak MiB':>10}")
    for kernel, images, per_10k, macs, peak in rows:
        print(f"{kernel:<32}{images:>8,}{per_10k:>16.3f}{1 / per_10k:>11.2f}{macs / 1e9:>15.2f}"
              f"{per_10k / ort_10k:>15.2f}{peak:>10.0f}")
    exact = ort_exactness.probe().exact("s8s8", "qdq", precise=False)
    saturating = ", ".join(ort_exactness.probe().saturating())
    print(f"onnxruntime's yardstick (S8S8 QDQ, default options) multiplies exactly on this CPU: "
          f"{'yes' if exact else 'no'}" + (f" (it saturates {saturating})" if saturating else ""))
    if parity is not None:
        print(f"exact table equals onnxruntime's QOperator outputs on 200 images: {parity}")
    print(f"product table construction: {table_ms:.1f} ms per configuration")


if __name__ == "__main__":
    main()
