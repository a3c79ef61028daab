"""Scoring a product table: the quantized network's test metrics with every multiplication of
its Conv/Gemm/MatMul layers looked up in the table."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from accel.batch import PerTable, TableBatch
from circuits.product_table import ProductTable
from evaluators import approx_runner
from evaluators.classification import logits_metrics
from evaluators.qgraph import QGraph
from evaluators.transforms import optimize

KERNELS = ("auto", "cpu", "torch", "reference")
DEVICES = ("auto", "cpu", "cuda")


class DeviceError(RuntimeError):
    """A requested device that is not there; one line."""


def resolve(kernel: str, device: str) -> tuple[str, str]:
    """(kernel, device) to run: ``auto`` picks the GPU path (torch on cuda) when PyTorch sees a
    CUDA GPU and the numba CPU kernels otherwise; ``cuda`` without a GPU is an error."""
    if kernel not in KERNELS or device not in DEVICES:
        raise ValueError(f"unknown kernel {kernel!r} or device {device!r}")
    has_cuda = _cuda_available()
    if device == "cuda" and not has_cuda:
        raise DeviceError("evaluation.device is cuda, but PyTorch sees no CUDA GPU; use auto or cpu")
    if device == "auto":
        device = "cuda" if has_cuda and kernel in ("auto", "torch") else "cpu"
    if kernel == "auto":
        kernel = "torch" if device == "cuda" else "cpu"
    if device == "cuda" and kernel != "torch":
        raise DeviceError(f"kernel {kernel} runs on the CPU; use kernel auto or torch on cuda")
    return kernel, device


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def load_kernels(name: str, device: str = "cpu"):
    """The kernels by name: ``cpu`` (numba), ``reference`` (plain numpy) or ``torch`` (on
    ``device``)."""
    if name == "cpu":
        from accel import cpu

        return cpu
    if name == "reference":
        from accel import reference

        return reference
    if name == "torch":
        from accel.torch_kernels import TorchKernels

        return TorchKernels(device)
    raise ValueError(f"unknown kernel {name!r}; expected one of {', '.join(KERNELS)}")


BATCH_BYTES = 1 << 30
"""Memory for one batch of images in flight: activations and the ops' temporaries are budgeted
at 64 times the float input's size per image."""


def batch_size(inputs: np.ndarray) -> int:
    """Images per pass through the graph: as many as ``BATCH_BYTES`` allows, between 16 and
    4096 (MNIST 4096 at a time, CIFAR 1365, 224x224 RGB 27). Larger passes fold each layer's
    table fewer times when the folds do not all fit ``accel.fold``'s cache (VGG-16)."""
    per_image = 64 * max(1, int(np.prod(inputs.shape[1:]))) * 4
    return int(np.clip(BATCH_BYTES // per_image, 16, 4096))


class ApproxNetworkEvaluator:
    """The int8 network and the test images, kept resident to score many tables. Images stream
    through the graph ``batch_images`` at a time, so memory stays bounded whatever the test set
    (results do not depend on the batch size)."""

    def __init__(self, int8_onnx: Path, inputs: np.ndarray, labels: np.ndarray, kernel: str = "cpu",
                 device: str = "cpu", classes: int = 10, batch_images: int | None = None):
        self.graph = optimize(QGraph.from_onnx(int8_onnx))
        if len(self.graph.inputs) != 1 or len(self.graph.outputs) != 1:
            raise ValueError(f"{int8_onnx}: expected one input and one output")
        self.inputs = inputs
        self.labels = labels
        self.classes = classes
        self.batch_images = batch_images or batch_size(inputs)
        # what does not depend on the table (the input's quantization) is computed once
        self.feeds = approx_runner.table_free(self.graph, {self.graph.inputs[0]: inputs})
        self.kernel, self.device = resolve(kernel, device)
        digest = hashlib.sha256(Path(int8_onnx).read_bytes())
        digest.update(np.ascontiguousarray(inputs).tobytes())
        digest.update(np.ascontiguousarray(labels).tobytes())
        # identity of (model, test data): results with equal fingerprints are interchangeable
        self.fingerprint = digest.hexdigest()[:20]

    @property
    def kernels(self):
        """The kernel module (looked up by name, so the evaluator pickles to Ray workers)."""
        return load_kernels(self.kernel, self.device)

    def _stream(self, feeds: dict[str, np.ndarray], table: ProductTable | TableBatch,
                kernels) -> list[np.ndarray]:
        """The graph's output for every image of ``feeds``, batch after batch; with a table
        batch, one output per table (each batch of images is repeated once per table)."""
        copies = len(table) if isinstance(table, TableBatch) else 1
        images = len(next(iter(feeds.values())))
        step = max(1, self.batch_images // copies)
        parts: list[list[np.ndarray]] = [[] for _ in range(copies)]
        for start in range(0, images, step):
            batch = {k: v[start : start + step] for k, v in feeds.items()}
            if copies > 1:
                batch = {k: np.concatenate([v] * copies) for k, v in batch.items()}
            out = approx_runner.run(self.graph, batch, table, kernels)[self.graph.outputs[0]]
            for i, part in enumerate(table.split(out) if copies > 1 else [out]):
                parts[i].append(part)
        return [np.concatenate(p) if p else np.empty((0,)) for p in parts]

    def logits(self, table: ProductTable, rows: np.ndarray | None = None) -> np.ndarray:
        """Network outputs for every test image, or for the images ``rows`` selects."""
        feeds = self.feeds if rows is None else {k: v[rows] for k, v in self.feeds.items()}
        return self._stream(feeds, table, self.kernels)[0]

    def evaluate(self, table: ProductTable, rows: np.ndarray | None = None) -> dict[str, float]:
        """Accuracy, macro precision/recall/F1 (and top-5 accuracy for 100 classes or more) on
        the test images (or a subset of them)."""
        labels = self.labels if rows is None else self.labels[rows]
        return logits_metrics(self.logits(table, rows), labels, self.classes)

    def logits_batch(self, tables: Sequence[ProductTable]) -> list[np.ndarray]:
        """Network outputs for every test image under each table, in one pass over the graph
        per batch of images (batched mode: the images are repeated once per table)."""
        batch = TableBatch(tuple(tables))
        kernels = self.kernels
        if not getattr(kernels, "batches_natively", False):
            kernels = PerTable(kernels)
        return self._stream(self.feeds, batch, kernels)

    def evaluate_batch(self, tables: Sequence[ProductTable]) -> list[dict[str, float]]:
        """``evaluate`` of each table, computed in one batched pass."""
        return [logits_metrics(logits, self.labels, self.classes)
                for logits in self.logits_batch(tables)]
