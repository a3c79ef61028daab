"""Every layer shape of the model zoo, on the fast CPU kernels and the torch kernels (CPU device
here), equals the plain reference: strided, grouped (depthwise too), padded, dilated and 1x1
convolutions and Gemm, with the exact table, AppAxO tables and a random one, signed (zero point
0) and unsigned with zero points, accumulators, requantized codes and the fused pool + code map.
Inputs are small but keep the shapes' structure (channel counts that split into several output
blocks or pack several output columns into one block, odd sizes that pooling floors, borders
that padding reaches)."""

from __future__ import annotations

import zlib

import numpy as np
import pytest

from accel import cpu, reference
from accel.fold import block_width
from accel.requant import output_multiplier
from accel.torch_kernels import TorchKernels
from circuits import appaxo
from circuits.product_table import ProductTable
from tests.accel.test_kernels import codes, random_table

# (name, input (C, H, W), weight (O, C / group, KH, KW), convolution options)
CONVS = [
    ("lenet5.conv1", (1, 12, 12), (6, 1, 5, 5), dict(pads=(2, 2, 2, 2))),
    ("lenet5.conv2", (6, 9, 9), (16, 6, 5, 5), {}),
    ("mnist_cnn.conv1", (1, 9, 9), (32, 1, 3, 3), {}),
    ("mnist_cnn.conv2", (32, 7, 7), (64, 32, 3, 3), {}),
    ("resnet.stem", (3, 8, 8), (16, 3, 3, 3), dict(pads=(1, 1, 1, 1))),
    ("resnet.block", (16, 7, 7), (16, 16, 3, 3), dict(pads=(1, 1, 1, 1))),
    ("resnet.down", (16, 9, 9), (32, 16, 3, 3), dict(strides=(2, 2), pads=(1, 1, 1, 1))),
    ("resnet.projection", (16, 9, 9), (32, 16, 1, 1), dict(strides=(2, 2))),
    ("vgg16.conv", (20, 5, 5), (80, 20, 3, 3), dict(pads=(1, 1, 1, 1))),  # 80 = 5 blocks of 16
    ("alexnet.conv1", (3, 11, 11), (64, 3, 3, 3), dict(strides=(2, 2), pads=(1, 1, 1, 1))),
    ("alexnet.conv2", (24, 4, 4), (192, 24, 3, 3), dict(pads=(1, 1, 1, 1))),  # 3 blocks of 64
    ("grouped", (8, 7, 6), (12, 4, 3, 3), dict(group=2, pads=(1, 0, 1, 2))),
    ("depthwise", (8, 7, 7), (8, 1, 3, 3), dict(group=8, pads=(1, 1, 1, 1))),
    ("dilated", (5, 10, 9), (7, 5, 3, 3), dict(dilations=(2, 2), pads=(2, 1, 0, 2))),
    ("dilated.strided", (4, 11, 11), (6, 4, 3, 2), dict(strides=(2, 3), dilations=(1, 2))),
    ("few-channels.strided", (3, 13, 11), (4, 3, 3, 3), dict(strides=(2, 2), pads=(1, 2, 0, 1))),
]
# (name, K, O): the dense layers
GEMMS = [("lenet5.fc1", 400, 120), ("lenet5.fc2", 120, 84), ("lenet5.fc3", 84, 10),
         ("fcnn.fc1", 784, 128), ("fcnn.fc2", 128, 64), ("vgg16.fc", 96, 100)]
SIGNED_TABLES = {
    "exact": lambda rng: ProductTable.exact(True),
    "appaxo-404750335": lambda rng: appaxo.table(404750335),
    "appaxo-0": lambda rng: appaxo.table(0),
    "random": lambda rng: random_table(rng, True),
}
KERNELS = {"cpu": cpu, "torch": TorchKernels("cpu")}


def operands(rng, conv_shape, weight_shape, signed, n=2):
    """Activations (ReLU-like zeros included) and weights, with zero points when unsigned."""
    zx, zw = (0, 0) if signed else (int(rng.integers(0, 256)), rng.integers(0, 256, weight_shape[0]))
    x = codes(rng, (n, *conv_shape), signed, zx)
    w = codes(rng, weight_shape, signed, sparsity=0)
    return x, w, zx, zw


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("table_name", [*SIGNED_TABLES, "unsigned-random", "unsigned-exact"])
@pytest.mark.parametrize("layer", CONVS, ids=[c[0] for c in CONVS])
def test_convolution_equals_the_reference(kernel, table_name, layer):
    _, conv_shape, weight_shape, options = layer
    rng = np.random.default_rng(zlib.crc32(f"{layer[0]} {table_name}".encode()))
    signed = not table_name.startswith("unsigned")
    if signed:
        table = SIGNED_TABLES[table_name](rng)
    else:
        table = random_table(rng, False) if table_name == "unsigned-random" else ProductTable.exact(False)
    x, w, zx, zw = operands(rng, conv_shape, weight_shape, signed)
    conv = dict(options, x_zero_point=zx, w_zero_point=zw)
    expected = reference.conv_accumulate(x, w, table, **conv)
    np.testing.assert_array_equal(KERNELS[kernel].conv_accumulate(x, w, table, **conv), expected)


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("signed", [True, False], ids=["signed", "unsigned"])
@pytest.mark.parametrize("layer", CONVS, ids=[c[0] for c in CONVS])
def test_requantized_pooled_and_mapped_convolution_equals_the_reference(kernel, signed, layer):
    """The fused epilogues: requantization, and max pooling ((1, 1) = none, or 2x2 floored)
    followed by a non-decreasing code map."""
    _, conv_shape, weight_shape, options = layer
    rng = np.random.default_rng(len(layer[0]) + 7 * signed)
    table = appaxo.table(404750335) if signed else random_table(rng, False)
    x, w, zx, zw = operands(rng, conv_shape, weight_shape, signed, n=3)
    o = weight_shape[0]
    zy = np.array(0 if signed else 117, dtype=np.int8 if signed else np.uint8)
    q = dict(options, x_zero_point=zx, w_zero_point=zw, y_zero_point=zy,
             bias=rng.integers(-20000, 20000, o).astype(np.int32),
             multiplier=output_multiplier(np.float32(0.05), rng.uniform(1e-4, 2e-3, o).astype(np.float32),
                                          np.float32(0.5)))
    kernels = KERNELS[kernel]
    np.testing.assert_array_equal(kernels.qlinear_conv(x, w, table, **q),
                                  reference.qlinear_conv(x, w, table, **q))
    code_map = np.sort(rng.integers(np.iinfo(zy.dtype).min, np.iinfo(zy.dtype).max + 1, 256)).astype(zy.dtype)
    for pool in ((1, 1), (2, 2)):
        np.testing.assert_array_equal(
            kernels.qlinear_conv_pool(x, w, table, pool=pool, code_map=code_map, **q),
            reference.qlinear_conv_pool(x, w, table, pool=pool, code_map=code_map, **q))


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("table_name", [*SIGNED_TABLES, "unsigned-random"])
@pytest.mark.parametrize("layer", GEMMS, ids=[g[0] for g in GEMMS])
def test_gemm_equals_the_reference(kernel, table_name, layer):
    _, k, o = layer
    rng = np.random.default_rng(k * o)
    signed = table_name != "unsigned-random"
    table = SIGNED_TABLES[table_name](rng) if signed else random_table(rng, False)
    za, zb = (0, 0) if signed else (int(rng.integers(0, 256)), rng.integers(0, 256, o))
    a, b = codes(rng, (5, k), signed, za), codes(rng, (k, o), signed, sparsity=0)
    kernels = KERNELS[kernel]
    np.testing.assert_array_equal(kernels.gemm_accumulate(a, b, table, za, zb),
                                  reference.gemm_accumulate(a, b, table, za, zb))
    zy = np.array(0 if signed else 99, dtype=np.int8 if signed else np.uint8)
    q = dict(a_zero_point=za, b_zero_point=zb, bias=rng.integers(-9000, 9000, o).astype(np.int32),
             multiplier=np.full(o, 3e-4, np.float32), y_zero_point=zy)
    np.testing.assert_array_equal(kernels.qlinear_gemm(a, b, table, **q),
                                  reference.qlinear_gemm(a, b, table, **q))


def test_blocks_pad_little():
    """Output channels split into blocks of one width (16 to 64 lanes) with little padding; a
    layer of at most 8 channels packs neighbouring output columns into one block when their
    windows overlap (a pool's columns being the packed ones)."""
    assert [block_width(c) for c in (6, 10, 16, 32, 64, 84, 120, 128, 192, 512, 100)] == \
        [16, 16, 16, 32, 64, 48, 64, 64, 64, 64, 16]
    # (output channels, kernel width, stride, dilation, pool width) -> columns per block
    assert [cpu._packing(*case) for case in ((6, 5, 1, 1, 2), (6, 5, 1, 1, 1), (4, 3, 2, 1, 1),
                                             (1, 3, 1, 1, 1), (16, 3, 1, 1, 1), (6, 1, 1, 1, 1),
                                             (6, 3, 1, 2, 1), (6, 3, 1, 1, 3))] == \
        [2, 2, 4, 16, 1, 1, 1, 1]


def test_inputs_in_any_memory_layout():
    """Results are NCHW arrays stored channel-last, read by the next layer without a copy;
    NCHW, channel-last and strided inputs all give the reference's result."""
    rng = np.random.default_rng(2)
    table = appaxo.table(404750335)
    x, w1 = codes(rng, (3, 8, 6, 6), True), codes(rng, (16, 8, 3, 3), True, sparsity=0)
    w2 = codes(rng, (8, 16, 1, 1), True, sparsity=0)
    q = dict(bias=None, multiplier=np.full(16, 2e-4, np.float32), y_zero_point=np.array(0, np.int8),
             pads=(1, 1, 1, 1))
    y = cpu.qlinear_conv(x, w1, table, **q)
    assert y.shape == (3, 16, 6, 6) and y.transpose(0, 2, 3, 1).flags.c_contiguous
    np.testing.assert_array_equal(cpu.conv_accumulate(y, w2, table),
                                  reference.conv_accumulate(np.ascontiguousarray(y), w2, table))
    strided = codes(rng, (3, 8, 12, 7), True)[:, :, ::2]
    np.testing.assert_array_equal(cpu.conv_accumulate(strided, w1, table, pads=(1, 1, 1, 1)),
                                  reference.conv_accumulate(strided, w1, table, pads=(1, 1, 1, 1)))


@pytest.mark.parametrize("arch", ["resnet8", "lenet5", "fcnn"])
def test_every_layer_of_a_registry_network_equals_the_reference(arch, tmp_path):
    """A random-weight registry network quantized as studies quantize it: every Conv/Gemm
    output (codes and int32 accumulators) of the fast kernels equals the reference's."""
    from evaluators.networks import zoo
    from evaluators.networks.quantization import quantize_int8
    from evaluators.runtime import approx_runner
    from evaluators.runtime.qgraph import QGraph

    shape = (1, 28, 28) if arch != "resnet8" else (3, 16, 16)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((24, *shape)).astype(np.float32)
    zoo.export_float_onnx(zoo.build_model(arch, shape, 10, seed=0), shape, tmp_path / "f.onnx")
    quantize_int8(tmp_path / "f.onnx", tmp_path / "q.onnx", x)
    graph = QGraph.from_onnx(tmp_path / "q.onnx")
    layers = [n.outputs[0] for n in graph.nodes if n.op in approx_runner.TABLE_OPS]
    feeds = {graph.inputs[0]: x[:3]}
    table = appaxo.table(404750335)
    expected = approx_runner.run(graph, feeds, table, reference, capture=layers)
    for kernels in KERNELS.values():
        got = approx_runner.run(graph, feeds, table, kernels, capture=layers)
        assert set(got) == set(expected) and len(got) > len(layers)
        for name, value in expected.items():
            np.testing.assert_array_equal(got[name], value, err_msg=name)
