"""Input preprocessing: stored dataset samples to the float tensor a network reads.

One concept in one place: training, calibration, onnxruntime's reference runs and the
approximate evaluator all turn images into inputs through a ``Preprocessing``, so they see the
same values. The default per dataset is what its networks are usually trained with: [0, 1]
pixels for the MNIST family (not mean-centred: [0, 1] uses the whole positive half of a
symmetric int8 range), per-channel mean/std standardization for CIFAR.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np


@dataclass(frozen=True)
class Preprocessing:
    """``(pixel * scale - mean[c]) / std[c]``, laid out NCHW or NHWC; float feature vectors
    (N, F) pass through unchanged."""

    scale: float = 1 / 255
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    layout: Literal["NCHW", "NHWC"] = "NCHW"

    def apply(self, images: np.ndarray) -> np.ndarray:
        """uint8 (N, H, W, C) images (or float (N, F) features) to float32 network inputs."""
        if images.ndim == 2:
            return np.ascontiguousarray(images, dtype=np.float32)
        channels = images.shape[-1]
        for name, values in (("mean", self.mean), ("std", self.std)):
            if len(values) not in (1, channels):
                raise ValueError(f"preprocessing {name} has {len(values)} values for "
                                 f"{channels}-channel images (give 1 or {channels})")
        mean = np.asarray(self.mean, dtype=np.float32)
        std = np.asarray(self.std, dtype=np.float32)
        x = (images.astype(np.float32) * np.float32(self.scale) - mean) / std
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2) if self.layout == "NCHW" else x)

    def input_shape(self, images: np.ndarray) -> tuple[int, ...]:
        """The per-sample shape ``apply`` produces for these samples."""
        if images.ndim == 2:
            return (images.shape[1],)
        h, w, c = images.shape[1:]
        return (c, h, w) if self.layout == "NCHW" else (h, w, c)


DATASET_PREPROCESSING: dict[str, Preprocessing] = {
    "mnist": Preprocessing(),
    "fashion_mnist": Preprocessing(),
    # the usual CIFAR training statistics (per channel, on [0, 1] pixels)
    "cifar10": Preprocessing(mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616)),
    "cifar100": Preprocessing(mean=(0.5071, 0.4865, 0.4409), std=(0.2673, 0.2564, 0.2762)),
    "npz": Preprocessing(),
}


def default_preprocessing(dataset: str) -> Preprocessing:
    """The dataset's usual preprocessing ([0, 1] pixels for data without a known default)."""
    return DATASET_PREPROCESSING.get(dataset, Preprocessing())
