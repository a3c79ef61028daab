"""The elementwise code-table kernels against numpy's fancy indexing, in every memory layout."""

from __future__ import annotations

import numpy as np
import pytest

from accel.codes import flat_bytes, map_codes, map_pairs


def layouts(x: np.ndarray) -> list[np.ndarray]:
    """x as NCHW, as a channel-last view, and as a strided (non-dense) view."""
    nhwc = np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    strided = np.repeat(x, 2, axis=3)[..., ::2]
    return [x, nhwc, strided]


@pytest.mark.parametrize("dtype", [np.int8, np.uint8])
def test_code_maps_equal_numpy(dtype):
    rng = np.random.default_rng(0)
    info = np.iinfo(dtype)
    x = rng.integers(info.min, info.max + 1, (3, 5, 7, 4)).astype(dtype)
    code_map = rng.integers(-128, 128, 256).astype(np.int8)
    expected = code_map[x.astype(np.int16) - info.min]
    for view in layouts(x):
        got = map_codes(code_map, view)
        assert got.dtype == np.int8 and got.strides == np.empty_like(view).strides
        np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("dtype", [np.int8, np.uint8])
def test_pair_tables_equal_numpy(dtype):
    rng = np.random.default_rng(1)
    info = np.iinfo(dtype)
    a = rng.integers(info.min, info.max + 1, (2, 6, 5, 3)).astype(dtype)
    b = rng.integers(info.min, info.max + 1, (2, 6, 5, 3)).astype(dtype)
    table = rng.integers(0, 256, (256, 256)).astype(np.uint8)
    expected = table[a.astype(np.int16) - info.min, b.astype(np.int16) - info.min]
    for va in layouts(a):
        for vb in layouts(b):
            np.testing.assert_array_equal(map_pairs(table, va, vb), expected)
    for small in (b[:1, :, :1, :1], b[0, 0, 0, 0]):  # broadcast either way round
        expected = table[a.astype(np.int16) - info.min, small.astype(np.int16) - info.min]
        np.testing.assert_array_equal(map_pairs(table, a, small), expected)
        np.testing.assert_array_equal(map_pairs(table.T, small, a), expected)
    assert map_pairs(table, a[0, 0, 0, 0], b[0, 0, 0, 0]) == \
        table[int(a[0, 0, 0, 0]) - info.min, int(b[0, 0, 0, 0]) - info.min]


def test_an_axis_of_length_one_does_not_hide_a_filled_layout():
    """numpy may give a length-1 axis any stride (0 here, as a transposed image batch has):
    the bytes still fill memory, so they are read without a copy."""
    x = np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28)
    odd = np.lib.stride_tricks.as_strided(x, (2, 1, 28, 28), (784, 0, 28, 1))
    np.testing.assert_array_equal(flat_bytes(odd), x.reshape(-1))
    assert flat_bytes(x[:, ::2]) is None  # gaps: not filled
