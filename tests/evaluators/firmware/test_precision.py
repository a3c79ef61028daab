"""Pruning, narrowing and fine-tuning of int8 networks (``evaluators.firmware.precision``), checked on
small onnxruntime-quantized networks: codes confined exactly to their bit range, onnxruntime
and dse's runner agreeing on every logit, pruned weights held at zero."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from circuits.product_table import ProductTable
from evaluators.errors import ModelError
from evaluators.firmware.precision import (
    FineTuning,
    Recipe,
    cached_variant,
    fine_tune,
    levels,
    make_variant,
    narrow,
    prune,
    table_nodes,
)
from evaluators.networks.quantization import quantize_int8
from evaluators.networks.zoo import export_onnx
from evaluators.runtime import approx_runner
from evaluators.runtime.approx_network import ApproxNetworkEvaluator, load_kernels
from evaluators.runtime.ops import TABLE_OPS
from evaluators.runtime.qgraph import QGraph
from tests.evaluators import qmodels

EXACT = ProductTable.exact(True)


def _images(shape: tuple[int, ...], count: int = 48, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((count, *shape), dtype=np.float32)


@pytest.fixture(scope="module")
def networks(tmp_path_factory) -> dict[str, tuple[onnx.ModelProto, np.ndarray]]:
    """Untrained networks of three shapes (plain, residual with QLinearAdd, MatMul over rows),
    quantized by onnxruntime, with their calibration images."""
    out = {}
    for name, model in (("vgg", qmodels.VggTiny()), ("resnet", qmodels.ResNetTiny()),
                        ("mixer", qmodels.TokenMixer())):
        x = _images((1, 28, 28))
        folder = tmp_path_factory.mktemp(name)
        out[name] = (onnx.load(str(qmodels.build(model, x, folder, "qoperator"))), x)
    return out


def _inits(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def _layer_inputs(model: onnx.ModelProto, x: np.ndarray) -> dict[str, np.ndarray]:
    """The activation codes every table layer multiplies, from one run of dse's runner."""
    graph = QGraph.from_onnx(model)
    layers = [n for n in graph.nodes if n.op in TABLE_OPS]
    out = approx_runner.run(graph, {graph.inputs[0]: x}, EXACT, load_kernels("cpu"),
                            capture=[n.inputs[0] for n in layers])
    return {n.name: out[n.inputs[0]] for n in layers}


def _ort_logits(model: onnx.ModelProto, x: np.ndarray, path) -> np.ndarray:
    onnx.save(model, str(path))
    session = qmodels.session(path)
    return session.run(None, {session.get_inputs()[0].name: x})[0]


@pytest.mark.parametrize("name", ["vgg", "resnet", "mixer"])
@pytest.mark.parametrize(("weight_bits", "activation_bits", "sparsity"),
                         [(4, 5, 0.5), (2, 3, 0.0), (8, 6, 0.25), (6, 8, 0.75)])
def test_codes_stay_in_their_range_and_onnxruntime_computes_what_dse_does(
        networks, name, weight_bits, activation_bits, sparsity, tmp_path):
    base, x = networks[name]
    layers = [n.name for n in table_nodes(base)]
    pruned, masks = prune(base, sparsity)
    model = narrow(pruned, dict.fromkeys(layers, weight_bits), dict.fromkeys(layers, activation_bits))
    inits = _inits(model)
    for node in table_nodes(model):
        codes = inits[node.input[3]]
        bound = levels(weight_bits) if weight_bits < 8 else 128
        assert codes.dtype == np.int8 and np.abs(codes.astype(int)).max() <= bound
        assert (codes == 0).mean() >= sparsity - 1e-9  # narrowing only adds zeros
        assert np.all(codes[~masks[node.input[3]]] == 0)
    for layer, codes in _layer_inputs(model, x).items():
        if activation_bits < 8:
            assert np.abs(codes.astype(int)).max() <= levels(activation_bits), layer
    path = tmp_path / "narrowed.onnx"
    expected = _ort_logits(model, x, path)
    scorer = ApproxNetworkEvaluator(path, x, np.zeros(len(x), dtype=np.int64))
    np.testing.assert_array_equal(scorer.logits(EXACT), expected)


def test_eight_bits_and_no_pruning_leave_the_network_as_it_is(networks):
    base, _ = networks["resnet"]
    layers = [n.name for n in table_nodes(base)]
    model = narrow(prune(base, 0.0)[0], dict.fromkeys(layers, 8), dict.fromkeys(layers, 8))
    before, after = _inits(base), _inits(model)
    assert before.keys() == after.keys()
    assert all(np.array_equal(before[k], after[k]) for k in before)
    assert [n.op_type for n in model.graph.node] == [n.op_type for n in base.graph.node]


def test_pruning_removes_the_smallest_weights_of_each_layer(networks):
    base, _ = networks["vgg"]
    pruned, masks = prune(base, 0.6)
    before, after = _inits(base), _inits(pruned)
    for node in table_nodes(pruned):
        codes, kept = before[node.input[3]], masks[node.input[3]]
        scale = before[node.input[4]].reshape(-1, *[1] * (codes.ndim - 1)) \
            if node.op_type == "QLinearConv" else before[node.input[4]].reshape(-1, 1)
        magnitude = np.abs(codes * scale)
        assert (~kept).sum() == round(0.6 * codes.size)
        assert magnitude[kept].min() >= magnitude[~kept].max()
        np.testing.assert_array_equal(after[node.input[3]], np.where(kept, codes, 0))


def test_a_tensor_read_by_two_layers_takes_the_narrowest_width(networks, tmp_path):
    base, x = networks["resnet"]  # a projected block: its conv and its shortcut read one tensor
    nodes = table_nodes(base)
    first, second = next((a, b) for i, a in enumerate(nodes) for b in nodes[i + 1:]
                         if a.input[0] == b.input[0])
    widths = {n.name: 8 for n in nodes} | {first.name: 6, second.name: 3}
    model = narrow(base, {n.name: 8 for n in nodes}, widths)
    codes = _layer_inputs(model, x)
    for layer in (first.name, second.name):
        assert np.abs(codes[layer].astype(int)).max() <= levels(3)
    path = tmp_path / "narrowed.onnx"
    expected = _ort_logits(model, x, path)
    np.testing.assert_array_equal(
        ApproxNetworkEvaluator(path, x, np.zeros(len(x), dtype=np.int64)).logits(EXACT), expected)


def test_fine_tuning_holds_pruned_weights_at_zero_and_codes_in_range(networks):
    base, _ = networks["vgg"]
    layers = [n.name for n in table_nodes(base)]
    x = _images((1, 28, 28), count=256, seed=1)
    labels = np.random.default_rng(1).integers(0, 10, 256)
    pruned, masks = prune(base, 0.5)
    before = narrow(pruned, dict.fromkeys(layers, 4), dict.fromkeys(layers, 6))
    after = fine_tune(before, masks, dict.fromkeys(layers, 4), x, labels,
                      FineTuning(epochs=1, images=256, learning_rate=0.05, batch_size=32))
    old, new = _inits(before), _inits(after)
    changed = 0
    for node in table_nodes(after):
        codes = new[node.input[3]]
        assert np.abs(codes.astype(int)).max() <= levels(4)
        assert np.all(codes[~masks[node.input[3]]] == 0)
        changed += int((codes != old[node.input[3]]).sum())
        assert np.array_equal(new[node.input[4]], old[node.input[4]])  # scales kept
    assert changed > 0


def test_a_variant_is_built_once_and_read_back_from_the_cache(networks, tmp_path):
    base, _ = networks["vgg"]
    layers = [n.name for n in table_nodes(base)]
    recipe = Recipe(0.5, (4,) * len(layers), (8,) * len(layers))
    builds = []

    def build() -> onnx.ModelProto:
        builds.append(1)
        return make_variant(base, layers, recipe, FineTuning(epochs=0), data=None)

    first = cached_variant(tmp_path / "v", build, {"sparsity": 0.5})
    second = cached_variant(tmp_path / "v", build, {"sparsity": 0.5})
    assert first == second and first.is_file() and len(builds) == 1
    assert make_variant(base, layers, Recipe(0.0, (8,) * len(layers), (8,) * len(layers)),
                        FineTuning(), data=None) == base


def test_asymmetric_activations_are_refused_in_one_line(tmp_path):
    x = _images((1, 28, 28))
    float_path, int8_path = tmp_path / "float.onnx", tmp_path / "u8.onnx"
    export_onnx(qmodels.VggTiny().eval(), torch.from_numpy(x[:1]), float_path, output="out")
    quantize_int8(float_path, int8_path, x, scheme="u8s8")
    model = onnx.load(str(int8_path))
    layers = [n.name for n in table_nodes(model)]
    with pytest.raises(ModelError, match="symmetric int8") as err:
        narrow(model, dict.fromkeys(layers, 4), dict.fromkeys(layers, 4))
    assert "\n" not in str(err.value)
