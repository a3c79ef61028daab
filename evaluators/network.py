"""The network under study: trained once, exported to ONNX, quantized, cached by its settings.

A trained and quantized network is keyed by everything that determines it (architecture,
training settings, seed, the training data's checksum, calibration size, torch and onnxruntime
versions), so a second study with the same settings reuses it instead of retraining. Training
shows a progress bar with rate and ETA on an interactive stderr, and one log line per epoch
otherwise.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from circuits.cache import cache_dir
from evaluators.classification import classification_metrics
from evaluators.datasets import Split
from evaluators.preprocess import Preprocessing

FLOAT_ONNX = "float.onnx"
INT8_ONNX = "int8.onnx"
REPORT = "network.json"


@dataclass(frozen=True)
class TrainingSettings:
    """What determines a trained network."""

    arch: str
    epochs: int
    batch_size: int
    learning_rate: float
    augment: bool
    seed: int
    calibration_size: int


@dataclass(frozen=True)
class PreparedNetwork:
    """Paths of the float and int8 ONNX models and their test metrics."""

    folder: Path
    key: str
    report: dict

    @property
    def float_onnx(self) -> Path:
        return self.folder / FLOAT_ONNX

    @property
    def int8_onnx(self) -> Path:
        return self.folder / INT8_ONNX


def network_key(settings: TrainingSettings, train: Split) -> str:
    """Cache key of a trained, quantized network."""
    import onnxruntime
    import torch

    ident = {
        "settings": settings.__dict__,
        "train_md5": train.md5,
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "format": 1,
    }
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:20]


def prepare_network(
    settings: TrainingSettings,
    train: Split,
    test: Split,
    *,
    reuse: bool = True,
    cache: Path | None = None,
    log: Callable[[str], None] = print,
    progress: bool | None = None,
) -> PreparedNetwork:
    """Return the cached network for these settings, training and quantizing it if needed.
    ``progress``: show the training bar (None: when stderr is a terminal)."""
    key = network_key(settings, train)
    folder = (cache or cache_dir() / "networks") / f"{settings.arch}-{key}"
    if reuse and (folder / REPORT).is_file():
        log(f"reusing trained network {folder}")
        return PreparedNetwork(folder, key, json.loads((folder / REPORT).read_text()))
    folder.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".tmp-", dir=folder.parent))
    try:
        report = _build(settings, train, test, work, log, progress)
        (work / REPORT).write_text(json.dumps(report, indent=2))
        shutil.rmtree(folder, ignore_errors=True)
        work.rename(folder)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return PreparedNetwork(folder, key, report)


def _build(settings: TrainingSettings, train: Split, test: Split, work: Path, log,
           progress: bool | None) -> dict:
    import torch

    from evaluators.lenet import train_lenet5
    from evaluators.quantization import quantize_int8

    if settings.arch != "lenet5":
        raise ValueError(f"unknown network architecture {settings.arch!r}")
    log(f"training LeNet-5 on {len(train.labels)} images for {settings.epochs} epochs (CPU)")
    with tqdm(total=settings.epochs, desc="training LeNet-5", unit="epoch", file=sys.stderr,
              disable=None if progress is None else not progress, dynamic_ncols=True) as bar:

        def epoch_done(epoch: int, loss: float) -> None:
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}")
            if bar.disable:  # no bar to show it: a line per epoch
                log(f"  epoch {epoch}/{settings.epochs}: loss {loss:.4f}")

        model = train_lenet5(
            train.images, train.labels,
            epochs=settings.epochs, batch_size=settings.batch_size,
            learning_rate=settings.learning_rate, augment=settings.augment, seed=settings.seed,
            progress=epoch_done,
        )
    export_onnx(model, torch.zeros(1, 1, 28, 28), work / FLOAT_ONNX, output="logits")
    rng = np.random.default_rng(settings.seed)
    pick = rng.choice(len(train.labels), size=min(settings.calibration_size, len(train.labels)),
                      replace=False)
    log(f"quantizing to int8 (calibration on {len(pick)} training images)")
    quantize_int8(work / FLOAT_ONNX, work / INT8_ONNX, Preprocessing().apply(train.images[np.sort(pick)]))
    log(f"measuring the float and int8 networks on {len(test.labels)} test images")
    x = Preprocessing().apply(test.images)
    report = {
        "arch": settings.arch,
        "settings": settings.__dict__,
        "train_images": len(train.labels),
        "train_md5": train.md5,
        "test_images": len(test.labels),
        "float": classification_metrics(_onnx_predict(work / FLOAT_ONNX, x), test.labels),
        "int8": classification_metrics(_onnx_predict(work / INT8_ONNX, x), test.labels),
    }
    log(f"test accuracy: float {report['float']['accuracy']:.4f}, int8 {report['int8']['accuracy']:.4f}")
    return report


def export_onnx(model, sample, path: Path, output: str = "output") -> None:
    """Float ONNX (opset 17, dynamic batch) with the TorchScript exporter, whose plain
    Conv/Gemm graphs onnxruntime's static quantizer handles; its deprecation notice is muted."""
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model, sample, str(path), input_names=["input"], output_names=[output],
            dynamic_axes={"input": {0: "batch"}, output: {0: "batch"}},
            opset_version=17, dynamo=False,
        )


def _onnx_predict(model: Path, x: np.ndarray) -> np.ndarray:
    """Class predictions of an ONNX model run by onnxruntime."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return session.run(None, {name: x})[0].argmax(axis=1)
