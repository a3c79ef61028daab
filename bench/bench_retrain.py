"""Benchmark: one epoch of fine-tuning LeNet-5 through a product table (target: under a minute).

    python bench/bench_retrain.py [--images 10000] [--batch-size 64]

The main study's LeNet-5 (studies/lenet_appaxo.yaml) fine-tuned for one epoch on the MNIST
training images through an AppAxO table, with each gradient mode (``ste``, ``table``), beside
two yardsticks measured in the same run: one epoch of float PyTorch training of the same
architecture on the same images and batch size, and onnxruntime's exact int8 inference of those
images. Prints a markdown table with the processor's name.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from bench_inference import onnxruntime_seconds, study_network
from common import cpu_name, use_shared_data

from circuits import appaxo
from evaluators.data import load_split
from evaluators.data.preprocess import Preprocessing
from evaluators.networks import zoo
from evaluators.networks.quantization import quantize_int8
from evaluators.networks.training import train_classifier
from evaluators.recovery.retraining import RetrainSettings, retrain

CONFIG = 0b010000011101001111100111111011111111  # an AppAxO design that loses accuracy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10_000, help="training images per epoch")
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    use_shared_data()
    float_onnx, int8_onnx, test_inputs, _, _ = study_network(200)
    train = load_split("mnist", "train").head(args.images)
    inputs, labels = Preprocessing().apply(train.images), train.labels
    table = appaxo.table(CONFIG)
    rows = []
    for gradient in ("ste", "table"):
        retrain(int8_onnx, table, inputs[:128], labels[:128],  # compile the kernels first
                RetrainSettings(epochs=1, gradient=gradient, batch_size=args.batch_size))
        start = time.perf_counter()
        retrain(int8_onnx, table, inputs, labels,
                RetrainSettings(epochs=1, gradient=gradient, batch_size=args.batch_size))
        rows.append((f"fine-tuning through the table, {gradient} gradient",
                     time.perf_counter() - start))
    model = zoo.build_model("lenet5", inputs.shape[1:], 10, seed=0)
    start = time.perf_counter()
    train_classifier(model, inputs, labels, epochs=1, batch_size=args.batch_size,
                     learning_rate=1e-3, augment=False, seed=0)
    rows.append(("float PyTorch training of LeNet-5 (yardstick)", time.perf_counter() - start))
    with tempfile.TemporaryDirectory() as tmp:
        qdq = Path(tmp) / "qdq.onnx"
        quantize_int8(float_onnx, qdq, test_inputs[:200], quant_format="qdq")
        rows.append(("onnxruntime exact int8 inference (yardstick)", onnxruntime_seconds(qdq, inputs)))
    print(f"# one epoch of LeNet-5 on {len(inputs)} MNIST training images, batch "
          f"{args.batch_size} ({cpu_name()})")
    print("| what | seconds | images/s |")
    print("|---|---|---|")
    for name, seconds in rows:
        print(f"| {name} | {seconds:.1f} | {len(inputs) / seconds:.0f} |")
    worst = max(s for name, s in rows[:2])
    print(f"target, one epoch under 60 s: {'met' if worst < 60 else 'missed'} ({worst:.1f} s)")


if __name__ == "__main__":
    main()
