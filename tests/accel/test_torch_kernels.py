"""The PyTorch kernels (the GPU path) against the reference, on the CPU here and on a GPU where
one is present."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from accel import cpu, reference
from accel.requant import output_multiplier
from accel.torch_kernels import TorchKernels
from circuits import appaxo
from circuits.product_table import ProductTable
from evaluators.runtime.approx_network import DeviceError, resolve
from tests.accel.test_kernels import CONV_CASES, codes, random_table

CONFIGS = [appaxo.EXACT, 0, 404750335, 0x9F3A5C1E7, 0b111100011000111111111111111011111111]
needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(),
                               reason="no CUDA GPU here: the GPU path is checked on the CPU only")


@pytest.fixture(scope="module")
def kernels():
    return TorchKernels("cpu")


def test_appaxo_tables_carry_their_exact_decomposition():
    ops = np.arange(-128, 128)
    for config in CONFIGS:
        t = appaxo.table(config)
        digits = [((ops & 0xFF) >> (2 * r)) & 3 for r in range(4)]
        rebuilt = appaxo.CORRECTION + sum(t.rows[r][:, digits[r]].astype(np.int64) << (2 * r)
                                          for r in range(4))
        np.testing.assert_array_equal(rebuilt, t.values)


@pytest.mark.parametrize("case", range(len(CONV_CASES)))
def test_structured_and_generic_convolutions_equal_the_reference(kernels, case):
    rng = np.random.default_rng(case)
    conv = CONV_CASES[case]
    x = codes(rng, (3, 4, 11, 9), True)
    w = codes(rng, (8, 4 // conv["group"], 3, 2), True, sparsity=0)
    for config in CONFIGS:
        structured = appaxo.table(config)
        generic = ProductTable(structured.values, True)
        expected = reference.conv_accumulate(x, w, structured, **conv)
        np.testing.assert_array_equal(kernels.conv_accumulate(x, w, structured, **conv), expected)
        np.testing.assert_array_equal(kernels.conv_accumulate(x, w, generic, **conv), expected)


def test_generic_path_with_zero_points_and_unsigned_tables(kernels):
    rng = np.random.default_rng(9)
    table = random_table(rng, False)
    a = codes(rng, (20, 37), False, 9)
    b = codes(rng, (37, 5), False, sparsity=0)
    zb = rng.integers(0, 256, 5)
    np.testing.assert_array_equal(kernels.gemm_accumulate(a, b, table, 9, zb),
                                  reference.gemm_accumulate(a, b, table, 9, zb))


def test_wide_layers_stay_exact(kernels):
    """K beyond one exact float32 block: the reduction is split and still exact."""
    rng = np.random.default_rng(3)
    a = codes(rng, (6, 9000), True)
    b = codes(rng, (9000, 3), True, sparsity=0)
    table = appaxo.table(0x9F3A5C1E7)
    np.testing.assert_array_equal(kernels.gemm_accumulate(a, b, table), cpu.gemm_accumulate(a, b, table))


def test_requantized_layers_equal_the_cpu_kernels(kernels):
    rng = np.random.default_rng(4)
    table = appaxo.table(404750335)
    x, w = codes(rng, (5, 3, 10, 10), True), codes(rng, (4, 3, 3, 3), True, sparsity=0)
    q = dict(bias=rng.integers(-3000, 3000, 4).astype(np.int32),
             multiplier=output_multiplier(np.float32(0.03), np.full(4, 0.002, np.float32), np.float32(0.4)),
             y_zero_point=np.array(0, np.int8), pads=(1, 1, 1, 1))
    np.testing.assert_array_equal(kernels.qlinear_conv(x, w, table, **q), cpu.qlinear_conv(x, w, table, **q))
    code_map = np.sort(rng.integers(-128, 128, 256)).astype(np.int8)
    np.testing.assert_array_equal(kernels.qlinear_conv_pool(x, w, table, pool=(2, 2), code_map=code_map, **q),
                                  cpu.qlinear_conv_pool(x, w, table, pool=(2, 2), code_map=code_map, **q))
    a, b = codes(rng, (30, 40), True), codes(rng, (40, 4), True, sparsity=0)
    g = dict(a_zero_point=0, b_zero_point=0, bias=q["bias"], multiplier=q["multiplier"],
             y_zero_point=q["y_zero_point"])
    np.testing.assert_array_equal(kernels.qlinear_gemm(a, b, table, **g), cpu.qlinear_gemm(a, b, table, **g))


def test_device_choice():
    if torch.cuda.is_available():
        assert resolve("auto", "auto") == ("torch", "cuda")
    else:
        assert resolve("auto", "auto") == ("cpu", "cpu")
        with pytest.raises(DeviceError, match="PyTorch sees no CUDA GPU"):
            resolve("auto", "cuda")
    assert resolve("torch", "cpu") == ("torch", "cpu")
    assert resolve("reference", "auto") == ("reference", "cpu")


def test_the_network_on_the_torch_path_equals_the_cpu_kernels(lenet, mnist):
    from evaluators.data.preprocess import Preprocessing
    from evaluators.runtime.approx_network import ApproxNetworkEvaluator

    _, test = mnist
    inputs, labels = Preprocessing().apply(test.images[:400]), test.labels[:400]
    fast = ApproxNetworkEvaluator(lenet.int8_onnx, inputs, labels, "cpu", "cpu")
    torch_cpu = ApproxNetworkEvaluator(lenet.int8_onnx, inputs, labels, "torch", "cpu")
    for config in CONFIGS[2:]:
        table = appaxo.table(config)
        np.testing.assert_array_equal(torch_cpu.logits(table), fast.logits(table))


@needs_gpu
def test_gpu_equals_cpu_on_every_test_image(lenet, mnist):
    from evaluators.data.preprocess import Preprocessing
    from evaluators.runtime.approx_network import ApproxNetworkEvaluator

    _, test = mnist
    inputs, labels = Preprocessing().apply(test.images), test.labels
    gpu = ApproxNetworkEvaluator(lenet.int8_onnx, inputs, labels, "torch", "cuda")
    fast = ApproxNetworkEvaluator(lenet.int8_onnx, inputs, labels, "cpu", "cpu")
    tables = [appaxo.table(config) for config in CONFIGS]
    expected = [fast.logits(table) for table in tables]
    for table, logits in zip(tables, expected):
        np.testing.assert_array_equal(gpu.logits(table), logits)
    for batched, logits in zip(gpu.logits_batch(tables), expected):  # many tables per launch
        np.testing.assert_array_equal(batched, logits)
