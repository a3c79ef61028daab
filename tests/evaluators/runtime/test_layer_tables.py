"""A product table per layer: each layer multiplies with its own table on every kernel, batched
like single assignments, and prefix reuse across evaluations gives exactly a full run's logits."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from accel import cpu, reference
from accel.torch_kernels import TorchKernels
from circuits import appaxo
from circuits.product_table import ProductTable
from evaluators.networks import zoo
from evaluators.networks.quantization import quantize_int8
from evaluators.runtime import approx_runner
from evaluators.runtime.approx_network import ApproxNetworkEvaluator
from evaluators.runtime.fused_ops import CONV_POOL
from evaluators.runtime.layer_tables import LayerTables, LayerTablesBatch
from evaluators.runtime.ops import TABLE_OPS
from evaluators.runtime.qgraph import QGraph
from evaluators.runtime.transforms import optimize
from tests.accel.test_kernels import random_table

TABLES = tuple(appaxo.table(c) for c in (appaxo.EXACT, 404750335, appaxo.EXACT ^ 1 << 8,
                                         appaxo.EXACT ^ 1 << 14))
ONE_LUT_OFF = tuple(appaxo.table(appaxo.EXACT ^ 1 << bit)  # mild: the logits stay informative
                    for bit in (35, 26, 17, 8, 30, 21, 14, 34, 25, 16))
SHAPES = {"lenet5": (1, 28, 28), "resnet8": (3, 16, 16)}


@pytest.fixture(scope="module", params=sorted(SHAPES))
def network(request, tmp_path_factory) -> tuple[Path, np.ndarray, np.ndarray]:
    """A registry network with random weights quantized as studies quantize it, random inputs
    and labels: (int8 model, inputs, labels)."""
    arch, shape = request.param, SHAPES[request.param]
    folder = tmp_path_factory.mktemp(arch)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((48, *shape)).astype(np.float32)
    zoo.export_float_onnx(zoo.build_model(arch, shape, 10, seed=0), shape, folder / "f.onnx")
    quantize_int8(folder / "f.onnx", folder / "q.onnx", x[:24])
    return folder / "q.onnx", x, rng.integers(0, 10, len(x))


def evaluator(network, **options) -> ApproxNetworkEvaluator:
    path, x, labels = network
    return ApproxNetworkEvaluator(path, x, labels, batch_images=16, **options)


def random_assignment(rng: np.random.Generator, layers: list[str]) -> LayerTables:
    return LayerTables({layer: TABLES[rng.integers(len(TABLES))] for layer in layers},
                       TABLES[rng.integers(len(TABLES))])


def test_an_assignment_is_one_signedness_and_hashes_by_what_it_multiplies():
    exact, approx = TABLES[0], TABLES[1]
    with pytest.raises(ValueError, match="all be signed or all unsigned"):
        LayerTables({"a": ProductTable.exact(False)}, exact)
    with pytest.raises(TypeError, match="layer 'a': expected a ProductTable, got ndarray"):
        LayerTables({"a": exact.values}, exact)
    with pytest.raises(ValueError, match="all be signed or all unsigned"):
        LayerTablesBatch((LayerTables({}, exact), LayerTables({}, ProductTable.exact(False))))
    uniform = LayerTables({"a": exact, "b": exact}, exact)
    assert uniform == LayerTables({}, exact) and uniform.sha256 == exact.sha256
    mixed = LayerTables({"a": approx, "b": exact}, exact)
    assert mixed == LayerTables({"a": approx}, exact) and mixed.sha256 != exact.sha256
    assert len({mixed, LayerTables({"b": approx}, exact), LayerTables({"a": exact}, approx)}) == 3
    assert mixed.table("a") is approx and mixed.table("zzz") is exact and mixed.signed
    again = pickle.loads(pickle.dumps(mixed))  # as sent to a Ray worker
    assert again == mixed and again.table("a") == approx


def test_fused_layers_keep_the_names_of_the_model_file(network):
    raw = QGraph.from_onnx(network[0])
    fused = optimize(raw)
    assert CONV_POOL in {n.op for n in fused.nodes}
    assert approx_runner.table_layers(fused) == approx_runner.table_layers(raw)


def test_every_layer_given_one_table_equals_that_table(network):
    plain = evaluator(network)
    layers = approx_runner.table_layers(plain.graph)
    for table, other in ((TABLES[1], TABLES[0]), (TABLES[2], TABLES[3])):
        expected = plain.logits(table)
        np.testing.assert_array_equal(plain.logits(LayerTables(dict.fromkeys(layers, table), other)),
                                      expected)
        np.testing.assert_array_equal(plain.logits(LayerTables({}, table)), expected)


def test_each_layer_multiplies_with_its_own_table(network):
    """The per-layer run equals the composition of its layers, each run alone with its own
    single table on what the per-layer run fed it (codes and int32 accumulators); the default
    table gives other accumulators."""
    path, x, _ = network
    graph = optimize(QGraph.from_onnx(path))
    layers = [n for n in graph.nodes if n.op in TABLE_OPS]
    assignment = LayerTables({n.name: t for n, t in zip(layers, ONE_LUT_OFF)}, TABLES[0])
    seen = [n.inputs[0] for n in layers] + [n.outputs[0] for n in layers]
    got = approx_runner.run(graph, {graph.inputs[0]: x[:8]}, assignment, cpu, capture=seen)
    for node in layers:
        out = node.outputs[0]
        alone = QGraph((node,), graph.initializers, (node.inputs[0],), (out,))
        feeds = {node.inputs[0]: got[node.inputs[0]]}
        own = approx_runner.run(alone, feeds, assignment.table(node.name), cpu, capture=[out])
        for name in (out, f"{out}:acc"):
            np.testing.assert_array_equal(got[name], own[name], err_msg=name)
        exact = approx_runner.run(alone, feeds, TABLES[0], cpu, capture=[out])
        assert not np.array_equal(got[f"{out}:acc"], exact[f"{out}:acc"]), node.name


def test_per_layer_tables_agree_on_every_kernel(network):
    path, x, _ = network
    graph = optimize(QGraph.from_onnx(path))
    assignment = random_assignment(np.random.default_rng(2), approx_runner.table_layers(graph))
    feeds = {graph.inputs[0]: x[:4]}
    expected = approx_runner.run(graph, feeds, assignment, reference)[graph.outputs[0]]
    for kernels in (cpu, TorchKernels("cpu")):
        got = approx_runner.run(graph, feeds, assignment, kernels)[graph.outputs[0]]
        np.testing.assert_array_equal(got, expected)


def test_a_layer_the_network_does_not_have_is_refused_in_one_line(network):
    plain = evaluator(network)
    layers = approx_runner.table_layers(plain.graph)
    wrong = LayerTables({layers[0]: TABLES[1], "conv9": TABLES[1]}, TABLES[0])
    with pytest.raises(ValueError) as err:
        plain.logits(wrong)
    assert str(err.value) == (f"layer 'conv9' is not a table layer of the network; its layers: "
                              f"{', '.join(layers)}")
    with pytest.raises(ValueError, match="'conv9'"):
        plain.logits_batch([TABLES[0], wrong])


@pytest.mark.parametrize("kernel", ["cpu", "torch"])
def test_batched_assignments_equal_one_at_a_time(network, kernel):
    plain = evaluator(network, kernel=kernel)
    rng = np.random.default_rng(4)
    layers = approx_runner.table_layers(plain.graph)
    assignments = [random_assignment(rng, layers), TABLES[2], random_assignment(rng, layers)]
    for got, assignment in zip(plain.logits_batch(assignments), assignments):  # 16 // 3 a pass
        np.testing.assert_array_equal(got, plain.logits(assignment))


def mutate(rng: np.random.Generator, assignment: LayerTables, layers: list[str]) -> LayerTables:
    """A neighbour: mostly a late layer changed, sometimes an early one."""
    late = rng.random() < 0.7
    layer = layers[rng.integers(len(layers) // 2, len(layers))] if late else layers[
        rng.integers(0, len(layers) // 2)]
    table = TABLES[(TABLES.index(assignment.table(layer)) + 1 + rng.integers(3)) % len(TABLES)]
    return LayerTables({**assignment.tables, layer: table}, assignment.default)


def test_prefix_reuse_gives_a_full_runs_logits_within_its_budget(network):
    plain = evaluator(network)
    layers = approx_runner.table_layers(plain.graph)
    rng = np.random.default_rng(7)
    first = random_assignment(rng, layers)
    roomy = evaluator(network, prefix_cache_bytes=1 << 40)
    roomy.logits(first)
    budget = roomy.prefix_stats()["bytes"] // 3  # a third of one evaluation's snapshots
    cached = evaluator(network, prefix_cache_bytes=budget)
    history = [first]
    for step in range(10):
        choice = rng.random()
        assignment = history[rng.integers(len(history))] if choice < 0.2 else mutate(
            rng, history[-1], layers)
        history.append(assignment)
        np.testing.assert_array_equal(cached.logits(assignment), plain.logits(assignment),
                                      err_msg=f"step {step}")
        assert cached.prefix_stats()["bytes"] <= budget
    batch = [mutate(rng, history[-1], layers), history[-1], mutate(rng, first, layers), TABLES[1]]
    for got, assignment in zip(cached.logits_batch(batch), batch):
        np.testing.assert_array_equal(got, plain.logits(assignment))
    stats = cached.prefix_stats()
    assert stats["hits"] > 0 and stats["layers_skipped"] > 0 and stats["evictions"] > 0
    assert 0 < stats["bytes"] <= budget and 0 < stats["hit_rate"] < 1


def test_prefix_counters_count_what_was_reused(network):
    plain = evaluator(network)
    cached = evaluator(network, prefix_cache_bytes=1 << 40)
    layers = approx_runner.table_layers(plain.graph)
    base = LayerTables({layer: TABLES[i % 3] for i, layer in enumerate(layers)}, TABLES[0])
    batches, depth = 3, len(layers)  # 48 images, 16 a pass

    def changed(index: int) -> LayerTables:
        return LayerTables({**base.tables, layers[index]: TABLES[3]}, base.default)

    expected = [(base, 0), (changed(-1), depth - 1), (changed(0), 0), (changed(2), 2), (base, depth - 1)]
    skipped = 0
    for lookups, (assignment, reused) in enumerate(expected, 1):
        before = cached.prefix_stats()
        np.testing.assert_array_equal(cached.logits(assignment), plain.logits(assignment))
        stats = cached.prefix_stats()
        skipped += batches * reused
        assert stats["hits"] - before["hits"] == (batches if reused else 0)
        assert (stats["lookups"], stats["layers_skipped"], stats["layers_total"]) == (
            batches * lookups, skipped, batches * depth * lookups)
    cached.logits(changed(-1), rows=np.arange(5))  # a subset of the images bypasses the cache
    assert cached.prefix_stats() == stats
    assert stats["hit_rate"] == pytest.approx(3 / 5)
    fresh = pickle.loads(pickle.dumps(cached))  # as sent to a Ray worker: no snapshots
    assert (fresh.prefix_stats()["bytes"], fresh.prefix_stats()["entries"]) == (0, 0)
    np.testing.assert_array_equal(fresh.logits(base), plain.logits(base))


def test_a_budget_below_one_evaluation_keeps_the_first_image_batches(network):
    """Plain LRU would evict each image batch's snapshots just before the next evaluation needs
    them; the cache keeps the first batch's instead, and replaces them when they go stale."""
    plain = evaluator(network)
    layers = approx_runner.table_layers(plain.graph)
    base = LayerTables({layers[0]: TABLES[1]}, TABLES[2])
    roomy = evaluator(network, prefix_cache_bytes=1 << 40)
    roomy.logits(base)
    budget = roomy.prefix_stats()["bytes"] // 3  # one of the three image batches
    small = evaluator(network, prefix_cache_bytes=budget)
    sequence = [(base, 0), (LayerTables({**base.tables, layers[-1]: TABLES[3]}, base.default),
                            len(layers) - 1), (LayerTables({**base.tables, layers[2]: TABLES[3]},
                                                           base.default), 2)]
    for assignment, reused in sequence:
        before = small.prefix_stats()
        np.testing.assert_array_equal(small.logits(assignment), plain.logits(assignment))
        stats = small.prefix_stats()
        assert (stats["hits"] - before["hits"], stats["layers_skipped"] - before["layers_skipped"]) \
            == ((1, reused) if reused else (0, 0))
        assert stats["bytes"] == budget
    assert stats["evictions"] == len(layers) - 3  # the first batch's, after the changed layer


def test_a_snapshot_larger_than_the_budget_is_not_kept(network):
    plain = evaluator(network)
    tiny = evaluator(network, prefix_cache_bytes=1)
    assignment = LayerTables({}, random_table(np.random.default_rng(0), True))
    for _ in range(2):
        np.testing.assert_array_equal(tiny.logits(assignment), plain.logits(assignment))
    assert {k: tiny.prefix_stats()[k] for k in ("hits", "bytes", "entries")} == dict.fromkeys(
        ("hits", "bytes", "entries"), 0)
    with pytest.raises(ValueError, match="budget must be >= 0 bytes, got -1"):
        evaluator(network, prefix_cache_bytes=-1)


def test_approximate_confines_a_single_table_to_the_chosen_layers(network):
    """``approximate``: the table replaces the chosen layers' multipliers only, as the
    assignment of that table to them would, and the results are told apart by fingerprint."""
    plain = evaluator(network)
    layers = approx_runner.table_layers(plain.graph)
    chosen = layers[1::2]
    confined = evaluator(network, approximate=chosen)
    assert confined.approximated == tuple(chosen)
    expected = plain.logits(LayerTables(dict.fromkeys(chosen, TABLES[1]), TABLES[0]))
    np.testing.assert_array_equal(confined.logits(TABLES[1]), expected)
    np.testing.assert_array_equal(confined.logits_batch([TABLES[1], TABLES[2]])[0], expected)
    assert not np.array_equal(expected, plain.logits(TABLES[1]))
    assert confined.fingerprint != plain.fingerprint
    assert evaluator(network, approximate=layers).fingerprint == plain.fingerprint
