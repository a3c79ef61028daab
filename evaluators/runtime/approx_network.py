"""Scoring a product table: the quantized network's test metrics with every multiplication of
its Conv/Gemm/MatMul layers looked up in the table (one table for all layers, or one per layer:
``evaluators.runtime.layer_tables``)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from accel import cpu, reference
from accel.batch import PerTable
from accel.torch_kernels import TorchKernels
from circuits.product_table import ProductTable
from evaluators.classification import logits_metrics
from evaluators.runtime import approx_runner
from evaluators.runtime.approx_runner import table_layers
from evaluators.runtime.layer_tables import Assignment, LayerTables, batch_of
from evaluators.runtime.prefix_cache import PrefixCache
from evaluators.runtime.qgraph import QGraph
from evaluators.runtime.roles import select_layers
from evaluators.runtime.transforms import optimize

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
        return cpu
    if name == "reference":
        return reference
    if name == "torch":
        return TorchKernels(device)
    raise ValueError(f"unknown kernel {name!r}; expected one of {', '.join(KERNELS)}")


BATCH_BYTES = 1 << 30
"""Memory for one batch of images in flight: activations and the ops' temporaries are budgeted
at 64 times the float input's size per image."""


DYNAMIC_BATCH = 100
"""Images per pass through a dynamically quantized graph: DynamicQuantizeLinear takes its
range over the whole tensor, so a pass of 100 images is scored as onnxruntime scores a batch
of 100 (the same images, the same ranges)."""


def batch_size(inputs: np.ndarray) -> int:
    """Images per pass through the graph: as many as ``BATCH_BYTES`` allows, between 16 and
    4096 (MNIST 4096 at a time, CIFAR 1365, 224x224 RGB 27). Larger passes fold each layer's
    table fewer times when the folds do not all fit ``accel.fold``'s cache (VGG-16)."""
    per_image = 64 * max(1, int(np.prod(inputs.shape[1:]))) * 4
    return int(np.clip(BATCH_BYTES // per_image, 16, 4096))


class ApproxNetworkEvaluator:
    """The int8 network and the test images, kept resident to score many tables. Images stream
    through the graph ``batch_images`` at a time, so memory stays bounded whatever the test set
    (results do not depend on the batch size).

    With ``prefix_cache_bytes`` > 0, what the network computes before each table layer is kept
    (up to that many bytes) and reused by later evaluations whose earlier layers have the same
    tables (``evaluators.runtime.prefix_cache``; exact). Evaluations of a subset of the images
    (``rows``) bypass it.

    A dynamically quantized graph (DynamicQuantizeLinear) runs ``DYNAMIC_BATCH`` images per
    pass and one assignment at a time, since its ranges depend on the images a pass holds.

    ``approximate`` chooses the layers a single table replaces (``all``, or roles, blocks and
    layer names: ``evaluators.runtime.roles.select_layers``); the others multiply exactly."""

    def __init__(self, int8_onnx: Path, inputs: np.ndarray, labels: np.ndarray, kernel: str = "cpu",
                 device: str = "cpu", classes: int = 10, batch_images: int | None = None,
                 prefix_cache_bytes: int = 0, approximate: Sequence[str] | str = "all"):
        self.graph = optimize(QGraph.from_onnx(int8_onnx))
        if len(self.graph.inputs) != 1 or len(self.graph.outputs) != 1:
            raise ValueError(f"{int8_onnx}: expected one input and one output")
        layers = select_layers(self.graph, approximate, "approximate: ")
        self.approximated = None if layers == table_layers(self.graph) else tuple(layers)
        self.inputs = inputs
        self.labels = labels
        self.classes = classes
        # dynamic quantization takes its ranges over the images of a pass: fixed passes keep
        # the scores independent of memory
        self.dynamic = any(n.op == "DynamicQuantizeLinear" for n in self.graph.nodes)
        self.batch_images = batch_images or (DYNAMIC_BATCH if self.dynamic else batch_size(inputs))
        # what does not depend on the table (the input's quantization) is computed once
        self.feeds = approx_runner.table_free(self.graph, {self.graph.inputs[0]: inputs})
        self.kernel, self.device = resolve(kernel, device)
        self.prefix = PrefixCache(self.graph, prefix_cache_bytes)
        digest = hashlib.sha256(Path(int8_onnx).read_bytes())
        digest.update(np.ascontiguousarray(inputs).tobytes())
        digest.update(np.ascontiguousarray(labels).tobytes())
        if self.approximated is not None:
            digest.update(("approximate:" + ",".join(self.approximated)).encode())
        # identity of (model, test data): results with equal fingerprints are interchangeable
        self.fingerprint = digest.hexdigest()[:20]

    @property
    def kernels(self):
        """The kernel module (looked up by name, so the evaluator pickles to Ray workers)."""
        return load_kernels(self.kernel, self.device)

    def restrict(self, tables: Assignment) -> Assignment:
        """A single table as the study applies it: in the approximated layers only."""
        if self.approximated is None or not isinstance(tables, ProductTable):
            return tables
        return LayerTables({layer: tables for layer in self.approximated},
                           ProductTable.exact(tables.signed))

    def _stream(self, feeds: dict[str, np.ndarray], assignments: Sequence[Assignment], kernels,
                reuse: bool) -> list[np.ndarray]:
        """The graph's output for every image of ``feeds`` under each assignment, batch after
        batch (with several assignments, each batch of images is repeated once per assignment);
        ``reuse``: through the prefix cache."""
        assignments = [self.restrict(a) for a in assignments]
        images = len(next(iter(feeds.values())))
        step = max(1, self.batch_images // len(assignments))
        batches = [((start, start + step), {k: v[start : start + step] for k, v in feeds.items()})
                   for start in range(0, images, step)]
        if reuse and self.prefix.budget:
            outs = self.prefix.run(batches, assignments, kernels)
        else:
            outs = [approx_runner.run_each(self.graph, [batch] * len(assignments), assignments,
                                           kernels) for _, batch in batches]
        output = self.graph.outputs[0]
        return [np.concatenate([out[i][output] for out in outs]) if outs else np.empty((0,))
                for i in range(len(assignments))]

    def logits(self, tables: Assignment, rows: np.ndarray | None = None) -> np.ndarray:
        """Network outputs for every test image, or for the images ``rows`` selects, with one
        product table or a table per layer."""
        feeds = self.feeds if rows is None else {k: v[rows] for k, v in self.feeds.items()}
        return self._stream(feeds, [tables], self.kernels, reuse=rows is None)[0]

    def evaluate(self, tables: Assignment, rows: np.ndarray | None = None) -> dict[str, float]:
        """Accuracy, macro precision/recall/F1 (and top-5 accuracy for 100 classes or more) on
        the test images (or a subset of them)."""
        labels = self.labels if rows is None else self.labels[rows]
        return logits_metrics(self.logits(tables, rows), labels, self.classes)

    def logits_batch(self, assignments: Sequence[Assignment]) -> list[np.ndarray]:
        """Network outputs for every test image under each table (or per-layer assignment), in
        one pass over the graph per batch of images (batched mode: the images are repeated once
        per assignment)."""
        batch_of(assignments)  # one signedness, at least one
        kernels = self.kernels
        if self.dynamic:  # ranges over each assignment's own images: one at a time
            return [self._stream(self.feeds, [a], kernels, reuse=True)[0] for a in assignments]
        if not getattr(kernels, "batches_natively", False):
            kernels = PerTable(kernels)
        return self._stream(self.feeds, list(assignments), kernels, reuse=True)

    def evaluate_batch(self, assignments: Sequence[Assignment]) -> list[dict[str, float]]:
        """``evaluate`` of each assignment, computed in one batched pass."""
        return [logits_metrics(logits, self.labels, self.classes)
                for logits in self.logits_batch(assignments)]

    def prefix_stats(self) -> dict:
        """The prefix cache's counters (``PrefixCache.stats``)."""
        return self.prefix.stats()
