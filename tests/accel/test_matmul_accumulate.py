"""Products of two activations (attention's Q x K^T): the reference, cpu and torch kernels of
``matmul_accumulate`` against exact integer arithmetic and against each other."""

from __future__ import annotations

import numpy as np
import pytest

from accel import cpu, reference
from accel.batch import PerTable, TableBatch, matmul_parts
from accel.torch_kernels import TorchKernels
from circuits import appaxo
from circuits.multiplier import truncated
from circuits.product_table import ProductTable

SHAPES = [((2, 3, 5, 7), (2, 3, 7, 4)),  # (B, H, S, D) x (B, H, D, S)
          ((5, 7), (3, 7, 4)),  # a constant-like operand broadcast over a batch
          ((2, 1, 5, 7), (3, 7, 4)),
          ((3, 5, 6), (2, 1, 6, 2)),
          ((5, 7), (7, 4)),
          ((1, 9, 33), (1, 33, 1))]
KERNELS = {"reference": reference, "cpu": cpu, "torch": TorchKernels("cpu")}


def _codes(rng: np.random.Generator, shape, signed: bool) -> np.ndarray:
    dtype = np.int8 if signed else np.uint8
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max + 1, shape).astype(dtype)


def _approximate(signed: bool) -> ProductTable:
    return appaxo.table(404750335) if signed else truncated(6, signed=False, compensate=True).table()


def _exact(a, b, za, zb) -> np.ndarray:
    return np.matmul(a.astype(np.int64) - za, b.astype(np.int64) - np.asarray(zb, np.int64))


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("signed", [True, False])
@pytest.mark.parametrize("shapes", SHAPES)
def test_exact_table_gives_exact_integer_matmul(kernel, signed, shapes):
    rng = np.random.default_rng(len(shapes[0]) + 7 * signed)
    a, b = _codes(rng, shapes[0], signed), _codes(rng, shapes[1], signed)
    for za, zb in [(0, 0), (int(_codes(rng, (), signed)), int(_codes(rng, (), signed))),
                   (3, _codes(rng, shapes[1][-1:], signed).astype(np.int64))]:
        got = KERNELS[kernel].matmul_accumulate(a, b, ProductTable.exact(signed), za, zb)
        assert got.dtype == np.int32
        np.testing.assert_array_equal(got, _exact(a, b, za, zb))


@pytest.mark.parametrize("signed", [True, False])
@pytest.mark.parametrize("shapes", SHAPES)
def test_kernels_agree_on_an_approximate_table(signed, shapes):
    rng = np.random.default_rng(11 + signed)
    a, b = _codes(rng, shapes[0], signed), _codes(rng, shapes[1], signed)
    table, za, zb = _approximate(signed), int(_codes(rng, (), signed)), int(_codes(rng, (), signed))
    want = reference.matmul_accumulate(a, b, table, za, zb)
    assert not np.array_equal(want, _exact(a, b, za, zb))
    for kernels in (cpu, KERNELS["torch"]):
        np.testing.assert_array_equal(kernels.matmul_accumulate(a, b, table, za, zb), want)


def test_every_product_goes_through_the_table():
    """A table of ones counts the products: zero codes are multiplied too."""
    a, b = np.zeros((2, 3, 4), np.int8), np.zeros((2, 4, 5), np.int8)
    ones = ProductTable(np.ones((256, 256), np.int32), signed=True)
    for kernels in KERNELS.values():
        np.testing.assert_array_equal(kernels.matmul_accumulate(a, b, ones), np.full((2, 3, 5), 4))


@pytest.mark.parametrize("signed", [True, False])
@pytest.mark.parametrize("shapes", [((4, 3, 5, 7), (4, 3, 7, 2)), ((4, 5, 7), (7, 2)),
                                    ((6, 7), (7, 3)), ((4, 5, 7), (1, 7, 3))])
def test_table_batches_multiply_each_share_with_its_table(signed, shapes):
    rng = np.random.default_rng(5)
    a, b = _codes(rng, shapes[0], signed), _codes(rng, shapes[1], signed)
    batch = TableBatch((ProductTable.exact(signed), _approximate(signed)))
    parts = matmul_parts(a, b, len(batch))
    want = np.concatenate([reference.matmul_accumulate(x, y, t, 1, 2)
                           for (x, y), t in zip(parts, batch.tables)])
    for kernels in (PerTable(reference), PerTable(cpu), KERNELS["torch"]):
        np.testing.assert_array_equal(kernels.matmul_accumulate(a, b, batch, a_zero_point=1, b_zero_point=2), want)


def test_mismatched_operands_are_refused():
    a, b = np.zeros((2, 3, 4), np.int8), np.zeros((2, 5, 4), np.int8)
    for kernels in KERNELS.values():
        with pytest.raises(ValueError, match="cannot multiply"):
            kernels.matmul_accumulate(a, b, ProductTable.exact(True))
