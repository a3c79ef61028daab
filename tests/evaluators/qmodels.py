"""Small float networks with the layer shapes of the registry architectures, quantized by
onnxruntime in both formats, and the comparison of every tensor against onnxruntime."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torch.nn.functional as F
from torch import nn

from accel import cpu, reference
from circuits.product_table import ProductTable
from evaluators.networks import ort_exactness
from evaluators.networks.quantization import quantize_int8
from evaluators.networks.zoo import BasicBlock, export_onnx
from evaluators.runtime import approx_runner
from evaluators.runtime.qgraph import QGraph

EXACT = ProductTable.exact(True)
INT8_ALLOWED = "session.qdqisint8allowed"


class ResNetTiny(nn.Module):
    """Stem, an identity block, a projected block, global average pooling, a dense layer."""

    def __init__(self, channels: int = 1) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(channels, 8, 3, 1, 1, bias=False), nn.BatchNorm2d(8),
                                  nn.ReLU())
        self.blocks = nn.Sequential(BasicBlock(8, 8, 1), BasicBlock(8, 16, 2))
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        return self.fc(F.adaptive_avg_pool2d(self.blocks(self.stem(x)), 1).flatten(1))


class Separable(nn.Module):
    """Depthwise (strided) and pointwise convolutions, then a dilated one."""

    def __init__(self, channels: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, 8, 3, 1, 1)
        self.depthwise = nn.Conv2d(8, 8, 3, 2, 1, groups=8)
        self.pointwise = nn.Conv2d(8, 16, 1)
        self.dilated = nn.Conv2d(16, 16, 3, 1, 2, dilation=2)
        self.fc = nn.Linear(16 * 16 * 16, 10)

    def forward(self, x):
        for layer in (self.conv, self.depthwise, self.pointwise, self.dilated):
            x = F.relu(layer(x))
        return self.fc(x.flatten(1))


class VggTiny(nn.Module):
    """conv-bn-relu-maxpool twice, then two dense layers."""

    def __init__(self, channels: int = 1) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(channels, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2))
        self.head = nn.Sequential(nn.Linear(16 * 7 * 7, 32), nn.ReLU(), nn.Linear(32, 10))

    def forward(self, x):
        return self.head(self.features(x).flatten(1))


class Branches(nn.Module):
    """Concatenated branches, average pooling with padding, a product of two tensors, global
    average pooling and a final softmax."""

    def __init__(self, channels: int = 1) -> None:
        super().__init__()
        self.wide = nn.Conv2d(channels, 8, 3, padding=1)
        self.narrow = nn.Conv2d(channels, 8, 1)
        self.mix = nn.Conv2d(16, 8, 3, padding=1)
        self.gate = nn.Conv2d(16, 8, 1)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        y = torch.cat([F.relu(self.wide(x)), F.relu(self.narrow(x))], 1)
        y = F.avg_pool2d(y, 3, stride=2, padding=1)
        z = self.mix(y) * self.gate(y)
        return torch.softmax(self.fc(F.adaptive_avg_pool2d(z, 1).flatten(1)), dim=1)


class TokenMixer(nn.Module):
    """A dense layer over the rows of a 28x28 image (MatMul + Add once exported), then a head."""

    def __init__(self) -> None:
        super().__init__()
        self.rows = nn.Linear(28, 16)
        self.head = nn.Linear(28 * 16, 10)

    def forward(self, x):
        return self.head(F.relu(self.rows(x.reshape(-1, 28, 28))).flatten(1))


def randomize_batch_norm(model: nn.Module, seed: int) -> nn.Module:
    """Give batch-norm layers statistics of their own, so folding them changes the weights."""
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.3, 0.3, generator=generator)
            module.running_var.uniform_(0.5, 2.0, generator=generator)
            module.weight.data.uniform_(0.5, 1.5, generator=generator)
    return model.eval()


def build(model: nn.Module, images: np.ndarray, folder: Path, fmt: str, seed: int = 0,
          keep_float: tuple[str, ...] = ()) -> Path:
    """Export ``model`` (batch norm randomized, then folded by the exporter), quantize it in
    ``fmt`` ("qoperator" or "qdq", with the product's ``quantize_int8``) calibrated on
    ``images``, ops of types ``keep_float`` left float; returns the int8 model's path."""
    torch.manual_seed(seed)
    float_path, int8_path = folder / "float.onnx", folder / f"{fmt}.onnx"
    export_onnx(randomize_batch_norm(model, seed), torch.from_numpy(images[:1]), float_path,
                output="out")
    quantize_int8(float_path, int8_path, images, quant_format=fmt, keep_float=keep_float)
    return int8_path


def session(model: onnx.ModelProto | Path, *, int8_allowed: bool = False,
            level: ort.GraphOptimizationLevel | None = None,
            optimized: Path | None = None) -> ort.InferenceSession:
    """An onnxruntime CPU session in its precision mode (``ort_exactness.session``: exact
    products on every CPU), with default options otherwise, except those named."""
    settings: dict = {}
    if level is not None:
        settings["graph_optimization_level"] = level
    if optimized is not None:
        settings["optimized_model_filepath"] = str(optimized)
    return ort_exactness.session(model, {INT8_ALLOWED: "1"} if int8_allowed else None, **settings)


def exact_outputs(path: Path, x: np.ndarray) -> np.ndarray:
    """The model's output for ``x`` by the exact reference: onnxruntime in its precision mode
    where the probe finds it exact on this CPU for the model's scheme, the runner with the
    reference kernels elsewhere."""
    graph = QGraph.from_onnx(path)
    if ort_exactness.exact_for(graph):
        ort_session = session(path)
        return ort_session.run(None, {ort_session.get_inputs()[0].name: x})[0]
    return approx_runner.run(graph, {graph.inputs[0]: x}, EXACT, reference)[graph.outputs[0]]


def exposing(path: Path, names: list[str]) -> onnx.ModelProto:
    """The model with ``names`` added to its graph outputs."""
    model = onnx.load(str(path))
    known = {o.name for o in model.graph.output}
    model.graph.output.extend(onnx.helper.make_empty_tensor_value_info(n) for n in names
                              if n not in known)
    return model


def tensors_of(graph: QGraph) -> list[str]:
    """Every tensor the graph's nodes write."""
    return [name for node in graph.nodes for name in node.outputs if name]


def assert_every_tensor_equal(path: Path, x: np.ndarray, *, int8_allowed: bool = False,
                              kernels=cpu, leave_out: tuple[str, ...] = ()
                              ) -> dict[str, np.ndarray]:
    """Run the model with onnxruntime (its tensors exposed as outputs) and with the runner
    (exact table), compare every tensor the runner's graph computes, dtype and bits; returns
    the runner's tensors (``leave_out``: tensors not compared). On a CPU where onnxruntime is not exact for the graph's scheme
    (``ort_exactness``), the exact reference is the runner with the reference kernels."""
    graph = QGraph.from_onnx(path)
    names = tensors_of(graph)
    if ort_exactness.exact_for(graph):
        ort_session = session(exposing(path, names), int8_allowed=int8_allowed)
        outputs = [o.name for o in ort_session.get_outputs()]
        expected = dict(zip(outputs, ort_session.run(None, {"input": x})))
    else:
        expected = approx_runner.run(graph, {"input": x}, EXACT, reference, capture=names)
    got = approx_runner.run(graph, {"input": x}, EXACT, kernels, capture=names)
    for name in (n for n in names if n not in leave_out):
        assert got[name].dtype == expected[name].dtype, name
        np.testing.assert_array_equal(got[name], expected[name], err_msg=name)
    return got


def ort_ops(path: Path, folder: Path, int8_allowed: bool = True) -> list[str]:
    """The op types onnxruntime runs for ``path`` after its graph optimizations (extended level:
    the fusions without the layout changes)."""
    optimized = folder / f"{path.stem}.ort-optimized.onnx"
    session(path, int8_allowed=int8_allowed, level=ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            optimized=optimized)
    return sorted(n.op_type for n in onnx.load(str(optimized)).graph.node)


def assert_kernels_agree(path: Path, x: np.ndarray, table: ProductTable) -> None:
    """The fast CPU kernels and the reference kernels give the same outputs on ``x`` with an
    approximate table, on the optimized graph."""
    from evaluators.runtime.transforms import optimize

    graph = optimize(QGraph.from_onnx(path))
    fast = approx_runner.run(graph, {"input": x}, table, cpu)[graph.outputs[0]]
    np.testing.assert_array_equal(fast, approx_runner.run(graph, {"input": x}, table,
                                                          reference)[graph.outputs[0]])
