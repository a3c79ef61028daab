"""LeNet-5 in PyTorch and its deterministic CPU training."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from evaluators.preprocess import Preprocessing


class LeNet5(nn.Module):
    """LeNet-5 for 28x28 digits: conv(6, 5x5, pad 2) - pool - conv(16, 5x5) - pool - 120 - 84 - 10,
    ReLU activations and max pooling (the variant the AppAxO/EMGAxO MNIST studies quantize)."""

    def __init__(self, n_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 5, padding=2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


def train_lenet5(
    images: np.ndarray,
    labels: np.ndarray,
    *,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    augment: bool,
    seed: int,
    progress: Callable[[int, float], None] | None = None,
) -> LeNet5:
    """Train deterministically on the CPU: seeded initialisation and shuffling, deterministic
    algorithms, Adam with a one-cycle schedule, optional random +-2 pixel shifts per batch."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        model = LeNet5()
        x = torch.from_numpy(Preprocessing().apply(images))
        y = torch.from_numpy(labels.astype(np.int64))
        steps = (len(x) + batch_size - 1) // batch_size
        optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate / 3)
        schedule = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=learning_rate, total_steps=epochs * steps
        )
        model.train()
        for epoch in range(epochs):
            order = torch.randperm(len(x), generator=generator)
            total = 0.0
            for start in range(0, len(x), batch_size):
                idx = order[start : start + batch_size]
                xb = x[idx]
                if augment:
                    dy, dx = (int(s) for s in torch.randint(-2, 3, (2,), generator=generator))
                    xb = torch.roll(xb, shifts=(dy, dx), dims=(2, 3))
                loss = F.cross_entropy(model(xb), y[idx])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                schedule.step()
                total += loss.item() * len(idx)
            if progress is not None:
                progress(epoch + 1, total / len(x))
        model.eval()
        return model
    finally:
        torch.use_deterministic_algorithms(previous)
