"""Benchmark: how exact onnxruntime's int8 inference is on this CPU and on an emulated AVX2 one.

    python bench/bench_exactness.py [--images 10000] [--no-emulation]

The trained LeNet-5 of the main study, quantized in every operand scheme and format (and U8S8
with 7-bit weights, ``quantization.reduce_range``), scored on the MNIST test images by dse's
evaluator with the exact table (exact integer arithmetic, the ground truth) and by onnxruntime
with its default options and in its precision mode (``session.x64quantprecision``, what
``evaluators.networks.ort_exactness.session`` opens), here and on an AVX2 CPU without VNNI emulated by
qemu (``qemu-x86_64 -cpu Haswell-noTSX``, Debian's qemu-user; minutes). Per model: the accuracy
and the number of images whose logits differ from the exact ones.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from bench_inference import study_network  # first: the repository on sys.path
from common import cpu_name

from circuits.product_table import ProductTable
from evaluators.networks import ort_exactness
from evaluators.networks.quantization import FORMATS, SCHEMES, quantize_int8
from evaluators.runtime.approx_network import ApproxNetworkEvaluator

EMULATED = "Haswell-noTSX"
RUN_ONNXRUNTIME = """
import sys
import numpy as np, onnxruntime as ort
from evaluators.networks import ort_exactness
x = np.load(sys.argv[1])
for path in sys.argv[2:]:
    plain = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    name = plain.get_inputs()[0].name
    np.save(path + ".default.npy", plain.run(None, {name: x})[0])
    np.save(path + ".precise.npy", ort_exactness.session(path).run(None, {name: x})[0])
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--no-emulation", action="store_true",
                        help="leave out the emulated AVX2 CPU")
    args = parser.parse_args()
    float_onnx, _, inputs, labels, _ = study_network(args.images)
    qemu = shutil.which("qemu-x86_64")
    with tempfile.TemporaryDirectory() as tmp:
        models = {}
        for scheme in SCHEMES:
            for fmt in FORMATS:
                models[scheme, fmt, False] = Path(tmp) / f"{scheme}_{fmt}.onnx"
        models["u8s8", "qoperator", True] = Path(tmp) / "u8s8_qoperator_7bit.onnx"
        for (scheme, fmt, reduce_range), path in models.items():
            quantize_int8(float_onnx, path, inputs[:1000], quant_format=fmt, scheme=scheme,
                          reduce_range=reduce_range)
        np.save(Path(tmp) / "x.npy", inputs)
        script = [sys.executable, "-c", RUN_ONNXRUNTIME, str(Path(tmp) / "x.npy"),
                  *map(str, models.values())]
        machines = [("here", script)]
        if qemu and not args.no_emulation:
            machines.append((f"emulated AVX2 ({EMULATED})", [qemu, "-cpu", EMULATED, *script]))
        rows = {key: [] for key in models}
        for _, command in machines:
            subprocess.run(command, check=True, stderr=subprocess.DEVNULL)
            for key, path in models.items():
                rows[key].append((np.load(f"{path}.default.npy"), np.load(f"{path}.precise.npy")))
        report(machines, models, rows, labels)


def report(machines, models, rows, labels) -> None:
    print(f"\nLeNet-5, {len(labels):,} MNIST test images; {cpu_name()}; onnxruntime's default "
          f"kernels saturate here: {', '.join(ort_exactness.probe().saturating()) or 'nothing'}")
    header = f"{'scheme':<8}{'format':<10}{'weights':<8}{'exact':>7}"
    for name, _ in machines:
        header += f" | {name}: default (differ), precision mode (differ)"
    print(header)
    for (scheme, fmt, reduce_range), path in models.items():
        ev = ApproxNetworkEvaluator(path, np.load(path.parent / "x.npy"), labels)
        exact = ev.logits(ProductTable.exact(True))
        line = f"{scheme.upper():<8}{fmt:<10}{'7-bit' if reduce_range else '8-bit':<8}" \
               f"{accuracy(exact, labels):>7.4f}"
        for default, precise in rows[scheme, fmt, reduce_range]:
            line += (f" | {accuracy(default, labels):.4f} ({differ(default, exact):>5,}), "
                     f"{accuracy(precise, labels):.4f} ({differ(precise, exact):>5,})")
        print(line)


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(logits.argmax(axis=1) == labels))


def differ(logits: np.ndarray, exact: np.ndarray) -> int:
    return int(np.sum((logits != exact).any(axis=1)))


if __name__ == "__main__":
    main()
