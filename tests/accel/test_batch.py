"""Batched mode: several tables in one pass give exactly what each table gives alone, on the
kernels that batch natively (torch) and through the per-table adapter (cpu, reference)."""

from __future__ import annotations

import numpy as np
import pytest

from accel import cpu, reference
from accel.batch import PerTable, TableBatch
from accel.torch_kernels import TorchKernels
from circuits import appaxo
from circuits.product_table import ProductTable
from tests.accel.test_kernels import codes, random_table

CONFIGS = (appaxo.EXACT, 404750335, 0x9F3A5C1E7)


def test_a_batch_is_one_signedness_and_splits_evenly():
    with pytest.raises(ValueError, match="all be signed or all unsigned"):
        TableBatch((ProductTable.exact(True), ProductTable.exact(False)))
    with pytest.raises(ValueError, match="at least one table"):
        TableBatch(())
    batch = TableBatch((ProductTable.exact(True),) * 3)
    with pytest.raises(ValueError, match="does not split into 3 tables"):
        batch.split(np.zeros((10, 2)))


@pytest.mark.parametrize("kernels", [TorchKernels("cpu"), PerTable(cpu), PerTable(reference)],
                         ids=["torch", "cpu", "reference"])
@pytest.mark.parametrize("structured", [True, False], ids=["appaxo-rows", "generic"])
def test_batched_layers_equal_each_table_alone(kernels, structured):
    rng = np.random.default_rng(5)
    tables = [appaxo.table(c) for c in CONFIGS]
    if not structured:  # a table without row structure sends the whole batch the generic way
        tables.append(random_table(rng, True))
    batch = TableBatch(tuple(tables))
    x, w = codes(rng, (4, 3, 9, 8), True), codes(rng, (5, 3, 3, 3), True, sparsity=0)
    stacked = np.concatenate([x] * len(batch))
    conv = dict(pads=(1, 0, 1, 2), strides=(1, 2))
    expected = np.concatenate([reference.conv_accumulate(x, w, t, **conv) for t in tables])
    np.testing.assert_array_equal(kernels.conv_accumulate(stacked, w, batch, **conv), expected)
    a, b = codes(rng, (7, 30), True), codes(rng, (30, 6), True, sparsity=0)
    expected = np.concatenate([reference.gemm_accumulate(a, b, t) for t in tables])
    np.testing.assert_array_equal(kernels.gemm_accumulate(np.concatenate([a] * len(batch)), b, batch),
                                  expected)


@pytest.mark.parametrize("kernel", ["cpu", "torch"])
def test_the_network_in_batched_mode_equals_one_table_at_a_time(lenet, mnist, kernel):
    from evaluators.data.preprocess import Preprocessing
    from evaluators.runtime.approx_network import ApproxNetworkEvaluator

    _, test = mnist
    evaluator = ApproxNetworkEvaluator(lenet.int8_onnx, Preprocessing().apply(test.images[:100]),
                                       test.labels[:100], kernel, "cpu")
    tables = [appaxo.table(c) for c in CONFIGS]
    batched = evaluator.logits_batch(tables)
    for table, logits in zip(tables, batched):
        np.testing.assert_array_equal(logits, evaluator.logits(table))
    assert evaluator.evaluate_batch(tables[:2]) == [evaluator.evaluate(t) for t in tables[:2]]


def test_results_do_not_depend_on_how_images_are_streamed(lenet, mnist):
    from evaluators.data.preprocess import Preprocessing
    from evaluators.runtime.approx_network import ApproxNetworkEvaluator, batch_size

    _, test = mnist
    inputs, labels = Preprocessing().apply(test.images[:150]), test.labels[:150]
    whole = ApproxNetworkEvaluator(lenet.int8_onnx, inputs, labels)
    streamed = ApproxNetworkEvaluator(lenet.int8_onnx, inputs, labels, batch_images=32)
    assert whole.batch_images == 4096 and batch_size(np.zeros((1, 3, 224, 224), np.float32)) == 27
    tables = [appaxo.table(c) for c in CONFIGS]
    np.testing.assert_array_equal(streamed.logits(tables[1]), whole.logits(tables[1]))
    rows = np.arange(3, 150, 2)
    np.testing.assert_array_equal(streamed.logits(tables[1], rows), whole.logits(tables[1])[rows])
    for a, b in zip(streamed.logits_batch(tables), whole.logits_batch(tables)):  # 32 // 3 a pass
        np.testing.assert_array_equal(a, b)
