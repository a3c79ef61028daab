"""The fast CPU kernels against the plain reference, and the reference against plain integer
arithmetic, on random tables (signed and unsigned), zero points, strides, padding, groups."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from accel import cpu, fold, reference
from accel.requant import output_multiplier, requantize
from circuits import appaxo
from circuits.product_table import ProductTable

CONV_CASES = [
    dict(strides=(1, 1), pads=(0, 0, 0, 0), dilations=(1, 1), group=1),
    dict(strides=(2, 1), pads=(1, 0, 2, 1), dilations=(1, 2), group=2),
    dict(strides=(1, 2), pads=(2, 2, 2, 2), dilations=(2, 1), group=1),
    dict(strides=(3, 3), pads=(1, 1, 1, 1), dilations=(1, 1), group=4),
]


def random_table(rng: np.random.Generator, signed: bool) -> ProductTable:
    return ProductTable(rng.integers(-70000, 70000, (256, 256)).astype(np.int32), signed)


def codes(rng, shape, signed, zero_point=0, sparsity=0.4):
    lo, hi = (-128, 128) if signed else (0, 256)
    x = rng.integers(lo, hi, shape)
    x[rng.random(shape) < sparsity] = zero_point  # ReLU-like zeros exercise the skip path
    return x.astype(np.int8 if signed else np.uint8)


@pytest.mark.parametrize("signed", [True, False])
@pytest.mark.parametrize("case", range(len(CONV_CASES)))
def test_conv_fast_equals_reference(signed, case):
    rng = np.random.default_rng(case + 10 * signed)
    table = random_table(rng, signed)
    conv = dict(CONV_CASES[case])
    if not signed:  # asymmetric uint8 quantization: zero points on both operands
        conv.update(x_zero_point=7, w_zero_point=rng.integers(0, 256, 8))
    x = codes(rng, (3, 4, 11, 9), signed, conv.get("x_zero_point", 0))
    w = codes(rng, (8, 4 // conv["group"], 3, 2), signed, sparsity=0)
    expected = reference.conv_accumulate(x, w, table, **conv)
    np.testing.assert_array_equal(cpu.conv_accumulate(x, w, table, **conv), expected)


@pytest.mark.parametrize("signed", [True, False])
def test_gemm_fast_equals_reference(signed):
    rng = np.random.default_rng(3)
    table = random_table(rng, signed)
    za, zb = (0, 0) if signed else (11, rng.integers(0, 256, 7))
    a = codes(rng, (13, 40), signed, za)
    b = codes(rng, (40, 7), signed, sparsity=0)
    np.testing.assert_array_equal(cpu.gemm_accumulate(a, b, table, za, zb),
                                  reference.gemm_accumulate(a, b, table, za, zb))


def test_exact_table_gives_integer_convolution():
    rng = np.random.default_rng(4)
    x = codes(rng, (2, 3, 8, 8), True)
    w = codes(rng, (5, 3, 3, 3), True, sparsity=0)
    expected = torch.nn.functional.conv2d(
        torch.tensor(x, dtype=torch.float64), torch.tensor(w, dtype=torch.float64), padding=1
    ).numpy()
    for kernels in (reference, cpu):
        got = kernels.conv_accumulate(x, w, ProductTable.exact(True), pads=(1, 1, 1, 1))
        np.testing.assert_array_equal(got, expected)


def test_unsigned_zero_points_are_exact_around_the_table():
    rng = np.random.default_rng(5)
    a = rng.integers(0, 256, (6, 20)).astype(np.uint8)
    b = rng.integers(0, 256, (20, 4)).astype(np.uint8)
    za, zb = 13, np.array([0, 7, 128, 255])
    expected = (a.astype(np.int64) - za) @ (b.astype(np.int64) - zb)
    for kernels in (reference, cpu):
        np.testing.assert_array_equal(kernels.gemm_accumulate(a, b, ProductTable.exact(False), za, zb), expected)


def test_padding_is_multiplied_through_the_table():
    # AppAxO with all LUTs removed gives -32512 for every pair, zero operands included: a 3x3
    # convolution of an all-zero image with padding 1 still sums nine products everywhere.
    table = ProductTable(appaxo.product_table(0), True)
    x = np.zeros((1, 1, 4, 4), np.int8)
    w = np.ones((1, 1, 3, 3), np.int8)
    for kernels in (reference, cpu):
        acc = kernels.conv_accumulate(x, w, table, pads=(1, 1, 1, 1))
        assert np.all(acc == 9 * -32512)


@pytest.mark.parametrize("signed", [True, False])
def test_fused_requantization_matches_numpy(signed):
    rng = np.random.default_rng(6)
    table = random_table(rng, signed)
    x = codes(rng, (4, 2, 7, 7), signed)
    w = codes(rng, (3, 2, 3, 3), signed, sparsity=0)
    bias = rng.integers(-5000, 5000, 3).astype(np.int32)
    mult = output_multiplier(np.float32(0.02), rng.random(3).astype(np.float32) * 0.01, np.float32(0.3))
    zp = np.array(0 if signed else 120, dtype=np.int8 if signed else np.uint8)
    args = dict(bias=bias, multiplier=mult, y_zero_point=zp, pads=(1, 1, 1, 1))
    fast, ref = cpu.qlinear_conv(x, w, table, **args), reference.qlinear_conv(x, w, table, **args)
    assert fast.dtype == ref.dtype
    np.testing.assert_array_equal(fast, ref)
    a, b = codes(rng, (9, 30), signed), codes(rng, (30, 3), signed, sparsity=0)
    gemm = dict(a_zero_point=0, b_zero_point=0, bias=bias, multiplier=mult, y_zero_point=zp)
    np.testing.assert_array_equal(cpu.qlinear_gemm(a, b, table, **gemm),
                                  reference.qlinear_gemm(a, b, table, **gemm))


def test_requantize_rounds_half_to_even_and_saturates():
    acc = np.array([[1, 3, 5, -1, -3, 1000, -1000]], dtype=np.int32)
    got = requantize(acc, np.float32(0.5), np.array(0, np.int8))
    np.testing.assert_array_equal(got, [[0, 2, 2, 0, -2, 127, -128]])


def test_int32_overflow_is_refused():
    table = ProductTable(np.full((256, 256), 2**30, dtype=np.int32), True)
    with pytest.raises(OverflowError):
        cpu.gemm_accumulate(np.ones((1, 4), np.int8), np.ones((4, 1), np.int8), table)


@pytest.mark.parametrize("signed", [True, False])
def test_fused_conv_pool_matches_the_composition(signed):
    rng = np.random.default_rng(7)
    table = random_table(rng, signed)
    x = codes(rng, (3, 2, 11, 9), signed)  # odd sizes: pooling floors
    w = codes(rng, (5, 2, 3, 3), signed, sparsity=0)
    zp = np.array(0 if signed else 100, dtype=np.int8 if signed else np.uint8)
    code_map = rng.permutation(256).astype(zp.dtype)  # any map works for the composition
    code_map.sort()  # ... but pooling first needs a non-decreasing one
    args = dict(bias=rng.integers(-900, 900, 5).astype(np.int32),
                multiplier=output_multiplier(np.float32(0.05), np.full(5, 0.004, np.float32), np.float32(0.2)),
                y_zero_point=zp, pads=(1, 1, 1, 1), pool=(2, 2), code_map=code_map)
    np.testing.assert_array_equal(cpu.qlinear_conv_pool(x, w, table, **args),
                                  reference.qlinear_conv_pool(x, w, table, **args))


def test_folded_weights_are_int16_exactly_when_every_value_fits():
    rng = np.random.default_rng(11)
    a, b = codes(rng, (40, 30), True), codes(rng, (30, 7), True, sparsity=0)
    for spread, dtype in ((32767, np.int16), (32768, np.int32)):
        values = ProductTable.exact(True).values.copy()
        values[255, :] = values[128, :] + spread  # the largest code's row, against the zero row
        table = ProductTable(values, True)
        w = np.ascontiguousarray(b.T).reshape(7, 30, 1, 1)
        (block,) = fold.layer_blocks(table, w, 1, 0, np.zeros(7, np.int64), None)
        assert block.rows.dtype == dtype
        np.testing.assert_array_equal(cpu.gemm_accumulate(a, b, table),
                                      reference.gemm_accumulate(a, b, table))
