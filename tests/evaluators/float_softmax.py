"""dse's float Softmax against onnxruntime's: the cases, dse's result and its documented
arithmetic (light to import: the emulated-CPU test runs it under qemu)."""

from __future__ import annotations

import numpy as np

from accel import isa
from circuits.product_table import ProductTable
from evaluators.runtime import approx_runner
from evaluators.runtime.node import Node
from evaluators.runtime.qgraph import QGraph

F32 = np.float32


def mlas_avx512_softmax() -> bool:
    """Whether onnxruntime runs MLAS's AVX-512F Softmax kernel here, the one dse's float
    Softmax follows bit for bit (CPUID, so an emulated CPU answers for itself)."""
    return "avx512f" in isa.features()


SOFTMAX_CASES = [(17, (500, 10), -1, 5), (17, (300, 100), 1, 3), (17, (7, 37), -1, 20),
                 (17, (4, 5, 6), 1, 4), (11, (4, 5, 6), 1, 4)]  # opset, shape, axis, spread


def softmax_inputs() -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    return [(rng.standard_normal(shape) * spread).astype(F32)
            for _, shape, _, spread in SOFTMAX_CASES]


def assert_documented_softmax(got: np.ndarray, x: np.ndarray, opset: int, axis: int,
                              onnxruntime: np.ndarray) -> None:
    """dse's float Softmax is its documented arithmetic (MLAS's exp polynomial, 16 lanes,
    ``e * (1 / sum)``): within ``2^-21 (1 + |x - max|)`` of the float64 softmax, relative (the
    exp's range reduction loses a little with every ln 2 it removes), below float32's normal
    range absolute; and onnxruntime's other kernels (other lanes, the exps of very negative
    inputs flushed to 0) agree with it as closely."""
    rows = x.astype(np.float64)
    if opset < 13:  # the axes from ``axis`` on form one row
        rows = rows.reshape(int(np.prod(x.shape[:axis])), -1)
        axis = 1
    below = rows - rows.max(axis=axis, keepdims=True)
    exact = np.exp(below) / np.exp(below).sum(axis=axis, keepdims=True)
    bound = 2.0 ** -21 * (1 + np.abs(below)).reshape(x.shape)
    exact, tiny = exact.reshape(x.shape), np.finfo(F32).tiny
    assert np.all(np.abs(got - exact) <= bound * exact + tiny)
    assert np.all(np.abs(onnxruntime - got) <= bound * got + tiny)


def dse_softmax(x: np.ndarray, opset: int, axis: int) -> np.ndarray:
    """dse's float Softmax of ``x`` as the runner computes it (the graph's opset matters)."""
    graph = QGraph((Node("Softmax", "s", ("x",), ("y",), {"axis": axis}),), {}, ("x",), ("y",),
                   opset)
    return approx_runner.run(graph, {"x": x}, ProductTable.exact(True), None)["y"]


