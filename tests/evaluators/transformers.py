"""Two small float transformer classifiers for the import tests, as a user exports them:
attention written out (``zoo.VisionTransformer``, 2 blocks: its products are MatMul nodes) and
through ``torch.nn.MultiheadAttention`` on the tokens of a patch embedding; each exported by
PyTorch's TorchScript exporter (opset 17) or its dynamo exporter (opset 18, onnxscript)."""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from evaluators.networks.zoo import VisionTransformer

MNIST_SHAPE = (1, 28, 28)
DYNAMO = importlib.util.find_spec("onnxscript") is not None  # the dynamo exporter's backend


def explicit_attention(seed: int = 0) -> nn.Module:
    """A 2-block ViT of width 32 (2 heads, MLP 64) on 7x7 patches, attention written out."""
    torch.manual_seed(seed)
    return VisionTransformer(MNIST_SHAPE, 10, patch=7, width=32, depth=2, heads=2, mlp=64).eval()


class MhaClassifier(nn.Module):
    """Patch embedding (7x7 Conv) - learned position embedding - one pre-norm block through
    ``nn.MultiheadAttention`` (batch first, no attention weights returned) and a GELU MLP -
    LayerNorm - mean over the tokens - Linear head."""

    def __init__(self, width: int = 32, heads: int = 2) -> None:
        super().__init__()
        self.embed = nn.Conv2d(1, width, 7, 7)
        self.pos = nn.Parameter(0.02 * torch.randn(1, 16, width))
        self.norm1 = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 2 * width), nn.GELU(), nn.Linear(2 * width, width))
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x).flatten(2).transpose(1, 2) + self.pos
        y = self.norm1(x)
        x = x + self.attn(y, y, y, need_weights=False)[0]
        x = x + self.mlp(self.norm2(x))
        return self.head(self.norm(x).mean(dim=1))


def mha_attention(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return MhaClassifier().eval()


def fit(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int = 60) -> nn.Module:
    """A few deterministic AdamW steps, so activations have a trained network's ranges."""
    torch.manual_seed(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    model.train()
    for step in range(steps):
        start = step * 32 % (len(x) - 32)
        loss = F.cross_entropy(model(x[start : start + 32]), y[start : start + 32])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def export(model: nn.Module, path: Path, dynamo: bool = False) -> Path:
    """``model`` as float ONNX with a symbolic batch axis: input ``input``, output ``logits``;
    TorchScript (opset 17) or dynamo (opset 18)."""
    sample = torch.zeros(2, *MNIST_SHAPE)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            batch = torch.export.Dim("batch", min=1, max=4096)
            torch.onnx.export(model, (sample,), str(path), input_names=["input"],
                              output_names=["logits"], dynamic_shapes={"x": {0: batch}},
                              opset_version=18, dynamo=True, external_data=False,
                              verbose=False)
        else:
            torch.onnx.export(model, sample, str(path), input_names=["input"],
                              output_names=["logits"],
                              dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                              opset_version=17, dynamo=False)
    return path
