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
from evaluators.classification import classification_metrics
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


class ApproxNetworkEvaluator:
    """The int8 network and the test images, kept resident to score many tables."""

    def __init__(self, int8_onnx: Path, inputs: np.ndarray, labels: np.ndarray, kernel: str = "cpu",
                 device: str = "cpu"):
        self.graph = optimize(QGraph.from_onnx(int8_onnx))
        if len(self.graph.inputs) != 1 or len(self.graph.outputs) != 1:
            raise ValueError(f"{int8_onnx}: expected one input and one output")
        self.inputs = inputs
        self.labels = labels
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

    def logits(self, table: ProductTable, rows: np.ndarray | None = None) -> np.ndarray:
        """Network outputs for every test image, or for the images ``rows`` selects."""
        feeds = self.feeds if rows is None else {k: v[rows] for k, v in self.feeds.items()}
        return approx_runner.run(self.graph, feeds, table, self.kernels)[self.graph.outputs[0]]

    def evaluate(self, table: ProductTable, rows: np.ndarray | None = None) -> dict[str, float]:
        """Accuracy and macro precision/recall/F1 on the test images (or a subset of them)."""
        labels = self.labels if rows is None else self.labels[rows]
        return classification_metrics(self.logits(table, rows).argmax(axis=1), labels)

    def logits_batch(self, tables: Sequence[ProductTable]) -> list[np.ndarray]:
        """Network outputs for every test image under each table, in one pass over the graph
        (batched mode: the images are repeated once per table)."""
        batch = TableBatch(tuple(tables))
        kernels = self.kernels
        if not getattr(kernels, "batches_natively", False):
            kernels = PerTable(kernels)
        feeds = {k: np.concatenate([v] * len(batch)) for k, v in self.feeds.items()}
        return batch.split(approx_runner.run(self.graph, feeds, batch, kernels)[self.graph.outputs[0]])

    def evaluate_batch(self, tables: Sequence[ProductTable]) -> list[dict[str, float]]:
        """``evaluate`` of each table, computed in one batched pass."""
        return [classification_metrics(logits.argmax(axis=1), self.labels)
                for logits in self.logits_batch(tables)]
