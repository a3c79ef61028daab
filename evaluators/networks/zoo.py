"""The model zoo: the registry of network architectures a study can name, by ``model.arch``.

Every entry builds a PyTorch classifier for the dataset's samples: an image shape (C, H, W)
(NCHW after preprocessing) or a feature-vector shape (F,), and the dataset's class count, so one
architecture serves MNIST (28x28x1), CIFAR (32x32x3) and a user's data alike. Batch norm is
folded into the preceding convolution before export (``fold_batch_norm``), so the float ONNX
graph holds only Conv/Gemm layers and activations, which onnxruntime quantizes to
QLinearConv/QGemm (plus QLinearAdd for residuals and QLinearGlobalAveragePool for ResNets).

``layer_macs`` counts the multiplications per image of each Conv/Gemm layer: every one of them
goes through the product table in the approximate runner (padded positions included). A
transformer (``vit_tiny``) also multiplies two activations twice per block (``q @ k^T`` and
``attn @ v``, MatMul layers once exported); its exported graph has its shape computations folded
(``shape_folding.fold_shapes``), so that only what depends on the batch size is left for the
runner to compute.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from evaluators.data.npz import open_zip
from evaluators.errors import ModelError
from evaluators.networks.shape_folding import fold_shapes

Shape = tuple[int, ...]


@dataclass(frozen=True)
class Architecture:
    """A registry entry: its name in study files, a title for logs, the builder
    ``(input_shape, classes) -> nn.Module``, and what it is (layers and source)."""

    name: str
    title: str
    builder: Callable[[Shape, int], nn.Module]
    description: str
    images_only: bool = True
    """Convolutional: needs (C, H, W) samples, not feature vectors."""
    l1: float = 0.0
    """L1 penalty on the kernels in the network's default training (``train_classifier``'s
    ``l1``): the source trains with one (Keras's ``kernel_regularizer=l1(...)``)."""
    weight_decay: float = 0.0
    """Decoupled weight decay on the kernels in the network's default training (AdamW, as
    transformers are trained; ``train_classifier``'s ``weight_decay``)."""


def _pool(size: tuple[int, int]) -> tuple[nn.Module, tuple[int, int]]:
    """A 2x2 max pool, or nothing where the map is already below 2 pixels (small inputs)."""
    h, w = size
    if min(h, w) < 2:
        return nn.Identity(), size
    return nn.MaxPool2d(2), (h // 2, w // 2)


def _conv_out(size: tuple[int, int], kernel: int, stride: int = 1, pad: int = 0) -> tuple[int, int]:
    return tuple((s + 2 * pad - kernel) // stride + 1 for s in size)  # type: ignore[return-value]


class LeNet5(nn.Module):
    """LeNet-5: conv(6, 5x5, pad 2) - pool - conv(16, 5x5) - pool - 120 - 84 - classes, ReLU
    activations and max pooling (the variant the AppAxO/EMGAxO MNIST studies quantize)."""

    def __init__(self, input_shape: Shape, classes: int) -> None:
        super().__init__()
        channels, *size = input_shape
        h, w = (s // 2 for s in _conv_out(tuple(size), 5, pad=2))
        h, w = ((s - 4) // 2 for s in (h, w))
        if min(h, w) < 1:
            raise ModelError(f"lenet5 needs images of at least 12x12 pixels, got "
                             f"{size[0]}x{size[1]}")
        self.conv1 = nn.Conv2d(channels, 6, 5, padding=2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * h * w, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


class FCNN(nn.Module):
    """Fully connected classifier (EMGAxO's MNIST example): flatten - 128 - 64 - classes, ReLU."""

    def __init__(self, input_shape: Shape, classes: int) -> None:
        super().__init__()
        features = 1
        for s in input_shape:
            features *= s
        self.fc1 = nn.Linear(features, 128)
        self.fc2 = nn.Linear(128, 64)
        self.fc3 = nn.Linear(64, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


class JetDNN(nn.Module):
    """The hls4ml tutorial's jet tagger as issue #16 sizes it: the 16 high-level features of a
    jet (any feature vector; images are flattened) - dense 32 - ReLU - dense 32 - ReLU -
    dense 32 - ReLU - dense classes - softmax, with Keras's initialization (LeCun-uniform
    kernels, zero biases) and an L1 penalty of 1e-4 on the kernels in training (the tutorial's
    ``kernel_regularizer=l1(0.0001)``; its first layer has 64 units). The softmax is applied in
    eval mode only: training minimizes cross entropy on the logits, while the exported graph
    ends with the softmax as the tutorial's does (QLinearSoftmax once quantized)."""

    def __init__(self, input_shape: Shape, classes: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(math.prod(input_shape), 32)
        self.fc2 = nn.Linear(32, 32)
        self.fc3 = nn.Linear(32, 32)
        self.output = nn.Linear(32, classes)
        for layer in (self.fc1, self.fc2, self.fc3, self.output):
            bound = (3 / layer.in_features) ** 0.5
            nn.init.uniform_(layer.weight, -bound, bound)
            nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        x = self.output(F.relu(self.fc3(x)))
        return x if self.training else F.softmax(x, dim=1)


class MnistCNN(nn.Module):
    """PyTorch's MNIST example network: conv(32, 3x3) - ReLU - conv(64, 3x3) - ReLU - max pool 2
    - dropout 0.25 - dense 128 - ReLU - dropout 0.5 - dense classes. The example's final
    log-softmax is left out (logits; the same arg-max)."""

    def __init__(self, input_shape: Shape, classes: int) -> None:
        super().__init__()
        channels, *size = input_shape
        h, w = _conv_out(_conv_out(tuple(size), 3), 3)
        if min(h, w) < 2:
            raise ModelError(f"mnist_cnn needs images of at least 6x6 pixels, got "
                             f"{size[0]}x{size[1]}")
        self.conv1 = nn.Conv2d(channels, 32, 3)
        self.conv2 = nn.Conv2d(32, 64, 3)
        self.dropout1 = nn.Dropout(0.25)
        self.dropout2 = nn.Dropout(0.5)
        self.fc1 = nn.Linear(64 * (h // 2) * (w // 2), 128)
        self.fc2 = nn.Linear(128, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv2(F.relu(self.conv1(x))))
        x = self.dropout1(F.max_pool2d(x, 2))
        x = self.dropout2(F.relu(self.fc1(torch.flatten(x, 1))))
        return self.fc2(x)


class BasicBlock(nn.Module):
    """ResNet basic block: conv3x3-BN-ReLU-conv3x3-BN plus the shortcut, then ReLU. The
    shortcut is the identity, or a strided 1x1 conv + BN projection where the shape changes
    (option B)."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                          nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """He et al.'s CIFAR ResNet (6n+2 layers): conv3x3(16)-BN-ReLU, three stages of n basic
    blocks with 16/32/64 channels (stages 2 and 3 start with stride 2), global average pool,
    dense classes. Parameter names follow the common PyTorch ports (conv1, bn1, layer1..3,
    linear)."""

    def __init__(self, input_shape: Shape, classes: int, blocks: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(input_shape[0], 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        stages, cin = [], 16
        for cout, stride in ((16, 1), (32, 2), (64, 2)):
            layers = []
            for i in range(blocks):
                layers.append(BasicBlock(cin, cout, stride if i == 0 else 1))
                cin = cout
            stages.append(nn.Sequential(*layers))
        self.layer1, self.layer2, self.layer3 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(64, classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.linear(torch.flatten(self.pool(x), 1))


VGG16_CONVS = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
               512, 512, 512, "M")


class VGG16(nn.Module):
    """CIFAR VGG-16 with batch norm: 13 conv3x3 (pad 1)-BN-ReLU layers of 64..512 channels in
    five groups, each followed by a 2x2 max pool, then dropout-512-ReLU-dropout-512-ReLU-classes
    (the CIFAR classifier of the torchvision-derived ports, 16 weight layers). A pool that would
    take the map below 1 pixel is left out: on 28x28 inputs the maps go 14, 7, 3, 1 and the
    fifth pool is skipped."""

    def __init__(self, input_shape: Shape, classes: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin, size = input_shape[0], tuple(input_shape[1:])
        for v in VGG16_CONVS:
            if v == "M":
                pool, size = _pool(size)
                layers.append(pool)
            else:
                layers += [nn.Conv2d(cin, v, 3, padding=1), nn.BatchNorm2d(v), nn.ReLU()]
                cin = v
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Dropout(), nn.Linear(512 * size[0] * size[1], 512), nn.ReLU(),
            nn.Dropout(), nn.Linear(512, 512), nn.ReLU(),
            nn.Linear(512, classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


class AlexNetCifar(nn.Module):
    """AlexNet adapted to 32x32 inputs (the common CIFAR-10 port): conv(64, 3x3, stride 2,
    pad 1)-ReLU-pool, conv(192, 3x3, pad 1)-ReLU-pool, conv(384, 3x3, pad 1)-ReLU,
    conv(256, 3x3, pad 1)-ReLU, conv(256, 3x3, pad 1)-ReLU-pool, then dropout-4096-ReLU-
    dropout-4096-ReLU-classes; 2x2 max pools (32x32: 16, 8, 4, 2 pixels, 1024 features;
    28x28: 14, 7, 3, 1, 256 features). No local response normalization."""

    def __init__(self, input_shape: Shape, classes: int) -> None:
        super().__init__()
        size = _conv_out(tuple(input_shape[1:]), 3, 2, 1)
        pool1, size = _pool(size)
        pool2, size = _pool(size)
        pool3, size = _pool(size)
        self.features = nn.Sequential(
            nn.Conv2d(input_shape[0], 64, 3, 2, 1), nn.ReLU(), pool1,
            nn.Conv2d(64, 192, 3, padding=1), nn.ReLU(), pool2,
            nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(),
            nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(),
            nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(), pool3,
        )
        self.classifier = nn.Sequential(
            nn.Dropout(), nn.Linear(256 * size[0] * size[1], 4096), nn.ReLU(),
            nn.Dropout(), nn.Linear(4096, 4096), nn.ReLU(),
            nn.Linear(4096, classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


class Attention(nn.Module):
    """Multi-head self-attention written out: one Linear makes Q, K and V, then
    ``softmax(q @ k^T * scale) @ v`` and an output projection. No fused kernel
    (``scaled_dot_product_attention``): both attention products must export as MatMul nodes,
    the layers that multiply two activations through the product table."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads, self.head_dim = heads, width // heads
        self.scale = self.head_dim ** -0.5
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, s, c = x.shape
        qkv = self.qkv(x).reshape(n, s, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = (q @ k.transpose(-2, -1) * self.scale).softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(n, s, c))


class EncoderBlock(nn.Module):
    """A pre-norm transformer encoder block: x + attention(LN(x)), then x + MLP(LN(x)) with a
    GELU between its two Linears."""

    def __init__(self, width: int, heads: int, mlp: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(width)
        self.attn = Attention(width, heads)
        self.norm2 = nn.LayerNorm(width)
        self.fc1 = nn.Linear(width, mlp)
        self.fc2 = nn.Linear(mlp, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


class VisionTransformer(nn.Module):
    """A small ViT: patch embedding (a Conv with kernel = stride = patch), a class token and a
    learned position embedding, pre-norm encoder blocks, a final LayerNorm and a Linear head on
    the class token. Its layers multiplying through the product table are the patch Conv, the
    Linears (QKV, projection, MLP, head) and the two attention products of every block."""

    def __init__(self, input_shape: Shape, classes: int, *, patch: int, width: int = 64,
                 depth: int = 4, heads: int = 4, mlp: int = 128) -> None:
        super().__init__()
        channels, h, w = input_shape
        if h % patch or w % patch:
            raise ModelError(f"a ViT with {patch}x{patch} patches needs images whose sides are "
                             f"multiples of {patch}, got {h}x{w}")
        self.heads = heads
        self.patch_embed = nn.Conv2d(channels, width, patch, patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width))
        self.pos_embed = nn.Parameter(torch.zeros(1, (h // patch) * (w // patch) + 1, width))
        self.blocks = nn.Sequential(*(EncoderBlock(width, heads, mlp) for _ in range(depth)))
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, classes)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    @property
    def tokens(self) -> int:
        """Sequence length: the patches and the class token."""
        return self.pos_embed.shape[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        return self.head(self.norm(self.blocks(x))[:, 0])


class VitTiny(VisionTransformer):
    """ViT-Tiny scaled down to small images (Dosovitskiy et al., An Image is Worth 16x16 Words:
    Transformers for Image Recognition at Scale, ICLR 2021): 7x7 patches on 28x28 inputs and
    8x8 patches on 32x32 ones (16 patches and a class token: 17 tokens), 4 pre-norm blocks of
    width 64 with 4 heads of 16 and an MLP of 128 with GELU, LayerNorm, and a head on the class
    token. Attention is written out (one Linear of width 192 for Q, K and V,
    ``softmax(q @ k^T / 4) @ v``, an output projection), so the attention products are MatMul
    layers between two activations; exported by the TorchScript exporter with its shape
    subgraphs folded (``shape_folding.fold_shapes``)."""

    def __init__(self, input_shape: Shape, classes: int) -> None:
        super().__init__(input_shape, classes, patch=max(input_shape[1], input_shape[2]) // 4)


def _resnet(blocks: int) -> Callable[[Shape, int], nn.Module]:
    return lambda shape, classes: CifarResNet(shape, classes, blocks)


_RESNET = ("He et al., Deep Residual Learning for Image Recognition (CVPR 2016), CIFAR "
           "variant with {n} blocks per stage. Shortcuts use option B (a strided 1x1 conv + BN "
           "projection where the shape changes, the identity otherwise), as TFApprox/ALWANN's "
           "Keras ResNet-v1 does (its projection has no BN; folded, both are one 1x1 conv); it "
           "quantizes to plain QLinearConv + QLinearAdd. (The paper's CIFAR networks used "
           "option A, zero-padded identity shortcuts.)")

ARCHITECTURES: dict[str, Architecture] = {
    a.name: a
    for a in (
        Architecture("lenet5", "LeNet-5", LeNet5, LeNet5.__doc__ or ""),
        Architecture("fcnn", "FCNN", FCNN, FCNN.__doc__ or "", images_only=False),
        Architecture("jet_dnn", "Jet-tagging DNN", JetDNN, JetDNN.__doc__ or "",
                     images_only=False, l1=1e-4),
        Architecture("mnist_cnn", "MNIST CNN", MnistCNN, MnistCNN.__doc__ or ""),
        Architecture("resnet8", "ResNet-8", _resnet(1), _RESNET.format(n=1)),
        Architecture("resnet20", "ResNet-20", _resnet(3), _RESNET.format(n=3)),
        Architecture("resnet56", "ResNet-56", _resnet(9), _RESNET.format(n=9)),
        Architecture("vgg16", "VGG-16", VGG16, VGG16.__doc__ or ""),
        Architecture("alexnet_cifar", "AlexNet (CIFAR)", AlexNetCifar, AlexNetCifar.__doc__ or ""),
        Architecture("vit_tiny", "ViT-Tiny (small images)", VitTiny, VitTiny.__doc__ or "",
                     weight_decay=0.05),
    )
}


def architecture(name: str) -> Architecture:
    """The registry entry, or a one-line ModelError listing the known names."""
    try:
        return ARCHITECTURES[name]
    except KeyError:
        raise ModelError(f"unknown architecture {name!r} (known: "
                         f"{', '.join(ARCHITECTURES)})") from None


def build_model(arch: str, input_shape: Shape, classes: int, *, seed: int | None = None) -> nn.Module:
    """A fresh (untrained) network for samples of ``input_shape`` ((C, H, W) images or (F,)
    feature vectors) and ``classes`` outputs; ``seed`` makes the initialization reproducible
    without touching the global random state. Impossible combinations raise a one-line
    ModelError."""
    entry = architecture(arch)
    shape = tuple(int(s) for s in input_shape)
    if entry.images_only and len(shape) != 3:
        raise ModelError(f"{arch} is a convolutional network and needs images (C, H, W); the data "
                         f"gives samples of shape {shape} (use fcnn for feature vectors)")
    if classes < 2:
        raise ModelError(f"{arch} needs at least 2 classes, got {classes}")
    if seed is None:
        return entry.builder(shape, classes)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return entry.builder(shape, classes)


def fold_batch_norm(model: nn.Module) -> nn.Module:
    """An eval-mode copy of ``model`` with every BatchNorm2d that directly follows a Conv2d
    folded into it (w' = w * g / sqrt(v + eps), b' = (b - m) * g / sqrt(v + eps) + beta), so the
    exported graph has no BatchNormalization. A model without batch norm comes back as a plain
    eval-mode copy."""
    from torch.fx import symbolic_trace
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    model = copy.deepcopy(model).eval()
    if not any(isinstance(m, nn.BatchNorm2d) for m in model.modules()):
        return model
    traced = symbolic_trace(model)
    modules = dict(traced.named_modules())
    for node in list(traced.graph.nodes):
        if node.op != "call_module" or not isinstance(modules[node.target], nn.BatchNorm2d):
            continue
        prev = node.args[0]
        if getattr(prev, "op", None) != "call_module" or \
                not isinstance(modules[prev.target], nn.Conv2d) or len(prev.users) != 1:
            raise ModelError(f"batch norm {node.target} does not follow a convolution: cannot fold")
        fused = fuse_conv_bn_eval(modules[prev.target], modules[node.target])
        parent, _, name = prev.target.rpartition(".")
        setattr(traced.get_submodule(parent) if parent else traced, name, fused)
        node.replace_all_uses_with(prev)
        traced.graph.erase_node(node)
    traced.graph.lint()
    traced.delete_all_unused_submodules()
    traced.recompile()
    return traced.eval()


def export_onnx(model: nn.Module, sample: torch.Tensor, path: Path, output: str = "output") -> None:
    """Float ONNX (opset 17, dynamic batch) with the TorchScript exporter, whose plain
    Conv/Gemm graphs onnxruntime's static quantizer handles; its deprecation notice is muted.
    Equal weights the exporter shares through Identity nodes (the zero biases of untrained
    folded batch norms) get back initializers of their own: the quantizer needs them."""
    import onnx

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model, sample, str(path), input_names=["input"], output_names=[output],
            dynamic_axes={"input": {0: "batch"}, output: {0: "batch"}},
            opset_version=17, dynamo=False,
        )
    proto = onnx.load(str(path))
    inits = {t.name: t for t in proto.graph.initializer}
    shared = [n for n in proto.graph.node if n.op_type == "Identity" and n.input[0] in inits]
    if shared:
        for node in shared:
            copy_ = onnx.TensorProto()
            copy_.CopyFrom(inits[node.input[0]])
            copy_.name = node.output[0]
            proto.graph.initializer.append(copy_)
            proto.graph.node.remove(node)
        onnx.save(proto, str(path))


def export_float_onnx(model: nn.Module, input_shape: Shape, path: Path) -> None:
    """The network, batch norm folded, as a float ONNX classifier: input ``input`` (batch,
    *input_shape), output ``logits`` (batch, classes). A transformer's shape computations
    (Reshape targets, the expanded class token) are folded for ``input_shape``."""
    import onnx

    export_onnx(fold_batch_norm(model), torch.zeros(1, *input_shape), path, output="logits")
    if is_transformer(model):
        onnx.save(fold_shapes(onnx.load(str(path)), input_shape, source=str(path)), str(path))


def is_transformer(model: nn.Module) -> bool:
    """Whether the network has attention layers (products of two activations)."""
    return any(isinstance(m, Attention) for m in model.modules())


def model_layer_macs(model: nn.Module, input_shape: Shape) -> dict[str, int]:
    """Multiplications per sample of each Conv2d/Linear layer of a built model, by module name
    (batch norm folded first, so the names are those of the exported layers), and of the two
    attention products of each Attention module (``<name>.scores``: q @ k^T, ``<name>.context``:
    attn @ v; heads x S^2 x head_dim each for S tokens). The int8 graph's node names for the
    same layers: ``prepared.int8_layer_macs``."""
    model = fold_batch_norm(model)
    counts: dict[str, int] = {}

    def hook(name: str) -> Callable:
        def count(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            if isinstance(module, Attention):
                tokens = inputs[0].shape[1]
                counts[f"{name}.scores"] = counts[f"{name}.context"] = \
                    module.heads * tokens * tokens * module.head_dim
                return
            if isinstance(module, nn.Conv2d):
                per_output = module.in_channels // module.groups * module.weight[0, 0].numel()
            else:
                per_output = module.in_features
            counts[name] = output[0].numel() * per_output
        return count

    handles = [m.register_forward_hook(hook(n)) for n, m in model.named_modules()
               if isinstance(m, (nn.Conv2d, nn.Linear, Attention))]
    with torch.no_grad():
        model(torch.zeros(1, *input_shape))
    for h in handles:
        h.remove()
    return counts


def layer_macs(arch: str, input_shape: Shape, classes: int) -> dict[str, int]:
    """Multiplications per sample of each Conv/Gemm layer of ``arch``, in execution order."""
    return model_layer_macs(build_model(arch, input_shape, classes, seed=0), input_shape)


def macs(arch: str, input_shape: Shape, classes: int) -> int:
    """Multiplications per sample of the whole network (all of them go through the table)."""
    return sum(layer_macs(arch, input_shape, classes).values())


def parameters(arch: str, input_shape: Shape, classes: int) -> int:
    """Trainable parameters of the PyTorch model (batch norm's scale and shift included)."""
    return count_parameters(build_model(arch, input_shape, classes, seed=0))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


CHECKPOINT_BYTES_PER_VALUE = 16
"""Checkpoint bytes allowed per value of the architecture's state dict: float32 weights take 4,
and a training checkpoint may add an optimizer's state (Adam keeps two more values per weight)
or hold float64 weights."""

CHECKPOINT_ALLOWANCE = 16 << 20
"""Checkpoint bytes allowed beyond that: the pickle, the zip records and what a training script
saves besides (epoch, metrics, settings)."""


def load_checkpoint(arch: str, input_shape: Shape, classes: int, path: Path) -> nn.Module:
    """``arch`` built for this data with the weights of a PyTorch checkpoint: a state dict, or a
    dict holding one under ``state_dict`` or ``model`` (a ``module.`` prefix from
    DataParallel is dropped). Read with ``weights_only=True`` (no code runs), and only once its
    size fits the architecture (``_check_checkpoint_size``). A missing or unreadable file,
    weights that do not fit, and NaN or infinite weights raise a one-line ModelError."""
    model = build_model(arch, input_shape, classes, seed=0)
    where = f"model.checkpoint {path}"
    if not Path(path).is_file():
        raise ModelError(f"{where}: no such file")
    _check_checkpoint_size(Path(path), model, arch, where)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - zip, pickle and unpickler errors alike
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelError(f"{where}: not a readable PyTorch state dict ({reason})") from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict) or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise ModelError(f"{where}: expected a state dict (parameter names to tensors), got "
                         f"{type(state).__name__}")
    if state and all(k.startswith("module.") for k in state):
        state = {k.removeprefix("module."): v for k, v in state.items()}
    expected = model.state_dict()
    head = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)][-1] + ".weight"
    if head in state and state[head].ndim == 2 and state[head].shape[0] != classes:
        raise ModelError(f"{where}: its {arch} has {state[head].shape[0]} outputs ({head}), the "
                         f"data has {classes} classes")
    optional = {k for k in expected if k.endswith("num_batches_tracked")}
    missing = [k for k in expected if k not in state and k not in optional]
    unexpected = [k for k in state if k not in expected]
    misshaped = [f"{k} {tuple(state[k].shape)} instead of {tuple(v.shape)}"
                 for k, v in expected.items() if k in state and state[k].shape != v.shape]
    problems = [f"{len(keys)} {what} ({', '.join(keys[:3])}{', ...' if len(keys) > 3 else ''})"
                for what, keys in (("missing keys", missing), ("unexpected keys", unexpected),
                                   ("mis-shaped tensors", misshaped)) if keys]
    if problems:
        raise ModelError(f"{where} does not fit {arch} for inputs {tuple(input_shape)} and "
                         f"{classes} classes: {'; '.join(problems)}")
    try:
        model.load_state_dict(state, strict=False)
    except (RuntimeError, TypeError, ValueError) as err:  # sparse, quantized or complex tensors
        reason = " ".join(str(err).split()) or type(err).__name__
        raise ModelError(f"{where}: its tensors cannot be loaded into {arch} ({reason})") from None
    _check_weights(model, where)
    return model.eval()


def _check_checkpoint_size(path: Path, model: nn.Module, arch: str, where: str) -> None:
    """Refuse, before ``torch.load``, a checkpoint bigger than a state dict of ``model`` can be
    (``CHECKPOINT_BYTES_PER_VALUE`` per value plus ``CHECKPOINT_ALLOWANCE``): on disk, and once
    unpacked, summed from the zip's central directory. torch.load allocates each record's
    unpacked size, so a zip bomb (megabytes deflating to gigabytes) would fill the memory first.
    A legacy (pre-1.6, not zipped) file loads what it holds: its size on disk is the bound."""
    values = sum(t.numel() for t in model.state_dict().values())
    limit = CHECKPOINT_BYTES_PER_VALUE * values + CHECKPOINT_ALLOWANCE
    expected = f"expected at most {limit} for the {values} values of a {arch} state dict"
    size = path.stat().st_size
    if size > limit:
        raise ModelError(f"{where}: {size} bytes, {expected}")
    try:
        with path.open("rb") as f:
            if f.read(4) != b"PK\x03\x04":  # how torch.load tells a zip from the legacy format
                return
        with open_zip(path) as archive:
            unpacked = sum(info.file_size for info in archive.infolist())
    except (OSError, ValueError) as err:
        reason = " ".join(str(err).split()) or type(err).__name__
        raise ModelError(f"{where}: not a readable PyTorch state dict ({reason})") from None
    if unpacked > limit:
        raise ModelError(f"{where}: its zip entries unpack to {unpacked} bytes, {expected} "
                         "(a zip bomb, or not a checkpoint of this network)")


def _check_weights(model: nn.Module, where: str) -> None:
    """Refuse weights the quantizer cannot scale (it fails on them much later, with an
    assertion): NaN or infinite values, float64 values beyond float32 included (infinite once
    loaded), and negative batch-norm variances (NaN once folded into the convolution)."""
    for name, tensor in model.state_dict().items():
        if not tensor.is_floating_point():
            continue
        bad = int((~torch.isfinite(tensor)).sum())
        if bad:
            raise ModelError(f"{where}: {name} has {bad} of {tensor.numel()} values NaN or "
                             "infinite (as float32), expected finite weights")
        if name.endswith("running_var") and bool((tensor < 0).any()):
            raise ModelError(f"{where}: {name} holds negative variances, expected values >= 0")
