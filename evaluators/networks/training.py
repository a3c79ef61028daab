"""Deterministic CPU training of a classifier from the model zoo.

The same settings and data give the same weights bit for bit: the initialization is seeded
where the model is built (``zoo.build_model(..., seed=)``); here shuffling, augmentation and
dropout draw from seeded generators, and PyTorch runs deterministic algorithms only. Adam with
a one-cycle learning-rate schedule serves every architecture (batch-norm networks included);
its first 30% of steps warm the learning rate up, which transformers need, and these also take
decoupled weight decay (AdamW) on their kernels.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

SHIFT = "random shifts of up to 2 pixels"
CROP_FLIP = "random crop (zero padding of 4 pixels) and horizontal flip"


def augmentation(input_shape: tuple[int, ...]) -> str | None:
    """The augmentation ``train_classifier`` applies to samples of this shape: crop and flip
    for 3-channel natural images of at least 32x32 (CIFAR), shifts for other images (MNIST-like
    digits and clothes, which flips would confuse), none for feature vectors."""
    if len(input_shape) != 3:
        return None
    c, h, w = input_shape
    return CROP_FLIP if c == 3 and min(h, w) >= 32 else SHIFT


def _shift(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """The batch rolled by one random (dy, dx) in [-2, 2]."""
    dy, dx = (int(s) for s in torch.randint(-2, 3, (2,), generator=generator))
    return torch.roll(x, shifts=(dy, dx), dims=(2, 3))


def _crop_flip(x: torch.Tensor, generator: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Each sample cropped back to its size at a random offset of its zero-padded copy, and
    mirrored left-right with probability 1/2."""
    n, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    oy, ox = torch.randint(0, 2 * pad + 1, (2, n), generator=generator)
    rows = (oy[:, None] + torch.arange(h))[:, None, :, None]
    cols = (ox[:, None] + torch.arange(w))[:, None, None, :]
    out = padded[torch.arange(n)[:, None, None, None], torch.arange(x.shape[1])[None, :, None, None],
                 rows, cols]
    flip = torch.rand(n, generator=generator) < 0.5
    return torch.where(flip[:, None, None, None], out.flip(3), out)


def _kernels(model: nn.Module) -> list[torch.Tensor]:
    """The weight tensors an L1 kernel penalty covers: those of every Linear and Conv2d."""
    return [m.weight for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]


def _optimizer(model: nn.Module, learning_rate: float, weight_decay: float) -> torch.optim.Optimizer:
    """Adam, or AdamW decaying the matrices and kernels where ``weight_decay``: parameters of
    two or more axes whose first holds more than one row (a class token or a position table
    of shape (1, ...) is an embedding, not a kernel)."""
    if not weight_decay:
        return torch.optim.Adam(model.parameters(), lr=learning_rate)
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.ndim >= 2 and p.shape[0] > 1],
               "weight_decay": weight_decay},
              {"params": [p for p in params if not (p.ndim >= 2 and p.shape[0] > 1)],
               "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=learning_rate)


def train_classifier(
    model: nn.Module,
    inputs: np.ndarray,
    labels: np.ndarray,
    *,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    augment: bool,
    seed: int,
    l1: float = 0.0,
    weight_decay: float = 0.0,
    progress: Callable[[int, float], None] | None = None,
    batch_done: Callable[[], None] | None = None,
) -> nn.Module:
    """Train ``model`` in place on preprocessed float32 ``inputs`` (N, ...) and int labels;
    returns it in eval mode. Adam with a one-cycle schedule peaking at ``learning_rate``;
    ``augment``: the ``augmentation`` of the input shape, per batch; ``progress(epoch, mean
    loss)`` after each epoch, ``batch_done()`` after each batch. A last batch of a single
    sample is left out of its epoch (batch norm cannot train on one value per channel).
    ``l1``: a penalty ``l1 * sum|w|`` over the Linear/Conv2d kernels (not biases) added to every
    batch's loss, as Keras's ``kernel_regularizer=l1(...)`` does; the reported loss includes it.
    ``weight_decay``: AdamW's decoupled decay of the matrices and kernels (biases, norms, a
    class token and a position table are not decayed), Adam without it."""
    kind = augmentation(inputs.shape[1:]) if augment else None
    generator = torch.Generator().manual_seed(seed)
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        with torch.random.fork_rng(devices=[]):  # dropout draws from the global generator
            torch.manual_seed(seed)
            x = torch.from_numpy(np.ascontiguousarray(inputs, dtype=np.float32))
            y = torch.from_numpy(labels.astype(np.int64))
            starts = [s for s in range(0, len(x), batch_size) if len(x) - s > 1 or s == 0]
            optimizer = _optimizer(model, learning_rate / 3, weight_decay)
            kernels = _kernels(model)
            schedule = torch.optim.lr_scheduler.OneCycleLR(
                optimizer, max_lr=learning_rate, total_steps=epochs * len(starts)
            )
            model.train()
            for epoch in range(epochs):
                order = torch.randperm(len(x), generator=generator)
                total, seen = 0.0, 0
                for start in starts:
                    idx = order[start : start + batch_size]
                    xb = x[idx]
                    if kind == SHIFT:
                        xb = _shift(xb, generator)
                    elif kind == CROP_FLIP:
                        xb = _crop_flip(xb, generator)
                    loss = F.cross_entropy(model(xb), y[idx])
                    if l1:
                        loss = loss + l1 * sum(w.abs().sum() for w in kernels)
                    optimizer.zero_grad()
                    loss.backward()
                    optimizer.step()
                    schedule.step()
                    total += loss.item() * len(idx)
                    seen += len(idx)
                    if batch_done is not None:
                        batch_done()
                if progress is not None:
                    progress(epoch + 1, total / seen)
        model.eval()
        return model
    finally:
        torch.use_deterministic_algorithms(previous)
