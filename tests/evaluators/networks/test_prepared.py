"""LeNet-5 on real MNIST: training targets, caching, and the approximate runner's parity with
onnxruntime on the same quantized model; a user's ONNX model cached by every byte it reads,
its external data included."""

from __future__ import annotations

import shutil
from dataclasses import replace

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from accel import cpu, reference
from circuits import appaxo
from circuits.product_table import ProductTable
from evaluators.classification import classification_metrics
from evaluators.data.preprocess import Preprocessing
from evaluators.errors import ModelError
from evaluators.networks import ort_exactness, prepared
from evaluators.networks.prepared import TrainingSettings, prepare_network, train_model
from evaluators.runtime import approx_runner
from evaluators.runtime.approx_network import ApproxNetworkEvaluator
from evaluators.runtime.qgraph import QGraph, UnsupportedOpError

EXACT = ProductTable.exact(True)


def test_training_and_quantization_reach_the_targets(lenet):
    report = lenet.report
    assert report["train_images"] == 10000 and report["test_images"] == 10000
    assert report["float"]["accuracy"] >= 0.985
    assert abs(report["int8"]["accuracy"] - report["float"]["accuracy"]) <= 0.003
    for kind in ("float", "int8"):
        assert set(report[kind]) == {"accuracy", "precision_macro", "recall_macro", "f1_macro"}
        assert report[kind]["f1_macro"] > 0.98


def test_quantized_model_is_symmetric_int8_per_channel(lenet):
    graph = QGraph.from_onnx(lenet.int8_onnx)
    layers = [n for n in graph.nodes if n.op in ("QLinearConv", "QGemm")]
    assert [n.op for n in layers] == ["QLinearConv"] * 2 + ["QGemm"] * 3
    for node in layers:
        x_zp, w, w_scale, w_zp = (graph.const(node.inputs[i]) for i in (2, 3, 4, 5))
        assert w.dtype == np.int8 and x_zp.dtype == np.int8 and not x_zp.any() and not w_zp.any()
        assert w_scale.size == w.shape[0] > 1  # one scale per output channel


def test_a_second_study_reuses_the_trained_network(lenet, mnist, session_cache):
    before = lenet.int8_onnx.stat().st_mtime_ns
    messages = []
    again = prepare_network(lenet_settings(lenet), *mnist, cache=session_cache / "networks",
                            log=messages.append)
    assert again.folder == lenet.folder and again.report == lenet.report
    assert lenet.int8_onnx.stat().st_mtime_ns == before
    assert any("reusing" in m for m in messages) and not any("training" in m for m in messages)


def lenet_settings(prepared):
    return TrainingSettings(**prepared.report["settings"])


def test_training_is_deterministic(mnist):
    train, _ = mnist
    settings = TrainingSettings(arch="lenet5", epochs=1, batch_size=64, learning_rate=0.003,
                                augment=True, seed=7, calibration_size=100)
    x = Preprocessing().apply(train.images[:1500])
    runs = [train_model(settings, x, train.labels[:1500], 10) for _ in range(2)]
    for a, b in zip(runs[0].state_dict().values(), runs[1].state_dict().values()):
        assert np.array_equal(a.numpy(), b.numpy())


def ort_with_every_tensor(model_path):
    """onnxruntime session over the model with every node output exposed as a graph output."""
    model = onnx.load(str(model_path))
    known = {o.name for o in model.graph.output}
    for node in model.graph.node:
        for name in node.output:
            if name not in known:
                model.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    session = ort_exactness.session(model)
    return session, [o.name for o in session.get_outputs()]


def test_exact_table_reproduces_onnxruntime_on_every_test_image(lenet, mnist):
    _, test = mnist
    x = Preprocessing().apply(test.images)
    session, names = ort_with_every_tensor(lenet.int8_onnx)
    expected = dict(zip(names, session.run(None, {"input": x})))
    graph = QGraph.from_onnx(lenet.int8_onnx)
    got = approx_runner.run(graph, {"input": x}, EXACT, cpu, capture=names)
    for name in names:  # every intermediate tensor, bit for bit
        assert got[name].dtype == expected[name].dtype, name
        np.testing.assert_array_equal(got[name], expected[name], err_msg=name)
    plain = ort_exactness.session(lenet.int8_onnx)
    ort_pred = plain.run(None, {"input": x})[0].argmax(axis=1)
    np.testing.assert_array_equal(got["logits"].argmax(axis=1), ort_pred)
    assert classification_metrics(ort_pred, test.labels) == lenet.report["int8"]


def test_first_layer_accumulators_equal_onnxruntime_conv_integer(lenet, mnist):
    _, test = mnist
    graph = QGraph.from_onnx(lenet.int8_onnx)
    conv = next(n for n in graph.nodes if n.op == "QLinearConv")
    x_q = approx_runner.run(graph, {"input": Preprocessing().apply(test.images)}, EXACT, cpu,
                            capture=[conv.inputs[0]])[conv.inputs[0]]
    w = graph.const(conv.inputs[3])
    model = helper.make_model(
        helper.make_graph(
            [helper.make_node("ConvInteger", ["x", "w"], ["acc"], pads=conv.attr("pads"))], "first",
            [helper.make_tensor_value_info("x", TensorProto.INT8, list(x_q.shape))],
            [helper.make_tensor_value_info("acc", TensorProto.INT32, None)],
            [numpy_helper.from_array(w, "w")],
        ),
        opset_imports=[helper.make_opsetid("", 17)],
    )
    expected = ort_exactness.session(model).run(None, {"x": x_q})[0]
    got = approx_runner.run(graph, {"input": Preprocessing().apply(test.images)}, EXACT, cpu,
                            capture=[conv.outputs[0]])[conv.outputs[0] + ":acc"]
    bias = graph.const(conv.inputs[8]).reshape(1, -1, 1, 1)
    np.testing.assert_array_equal(got - bias, expected)


def test_reference_and_fast_kernels_agree_on_an_approximate_network(lenet, mnist):
    _, test = mnist
    table = ProductTable(appaxo.product_table(0b111100011000111111111111111011111111), True)
    x = {"input": Preprocessing().apply(test.images[:150])}
    graph = QGraph.from_onnx(lenet.int8_onnx)
    fast = approx_runner.run(graph, x, table, cpu)["logits"]
    np.testing.assert_array_equal(fast, approx_runner.run(graph, x, table, reference)["logits"])
    assert not np.array_equal(fast, approx_runner.run(graph, x, EXACT, cpu)["logits"])


def test_accuracy_falls_to_chance_without_any_lut(lenet, mnist):
    _, test = mnist
    evaluator = ApproxNetworkEvaluator(lenet.int8_onnx, Preprocessing().apply(test.images[:2000]),
                                       test.labels[:2000])
    assert evaluator.evaluate(ProductTable(appaxo.product_table(0), True))["accuracy"] < 0.2
    assert evaluator.evaluate(EXACT)["accuracy"] > 0.98


def test_an_unsupported_op_is_named_with_its_node(lenet, tmp_path):
    model = onnx.load(str(lenet.int8_onnx))
    model.graph.node.append(helper.make_node("Einsum", ["logits"], ["scores"], name="head_einsum",
                                             equation="ij->ij"))
    model.graph.output[0].name = "scores"
    path = tmp_path / "einsum.onnx"
    onnx.save(model, str(path))
    with pytest.raises(UnsupportedOpError, match="'Einsum'.*'head_einsum'"):
        ApproxNetworkEvaluator(path, np.zeros((1, 1, 28, 28), np.float32), np.zeros(1, np.uint8))


def test_classification_metrics_by_hand():
    labels = np.array([0, 0, 1, 1, 2, 2])
    preds = np.array([0, 1, 1, 1, 0, 0])
    m = classification_metrics(preds, labels, n_classes=3)
    assert m["accuracy"] == pytest.approx(0.5)
    assert m["precision_macro"] == pytest.approx((1 / 3 + 2 / 3 + 0) / 3)
    assert m["recall_macro"] == pytest.approx((0.5 + 1 + 0) / 3)
    f1 = [2 * (1 / 3) * 0.5 / (1 / 3 + 0.5), 2 * (2 / 3) / (2 / 3 + 1), 0]
    assert m["f1_macro"] == pytest.approx(np.mean(f1))


# --- the cache of a user's ONNX model with external data (issue 25) ----------------------------


@pytest.fixture(scope="module")
def small(mnist):
    """300 training and 200 test MNIST images."""
    train, test = mnist
    return (replace(train, images=train.images[:300], labels=train.labels[:300]),
            replace(test, images=test.images[:200], labels=test.labels[:200]))


def external_model(folder, seed: int):
    """A float linear classifier (n, 1, 28, 28) -> (n, 10) saved as model.onnx with its weights
    in data.bin beside it."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["x"], ["flat"]),
         helper.make_node("MatMul", ["flat", "w"], ["scores"]),
         helper.make_node("Add", ["scores", "b"], ["y"])], "linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 1, 28, 28])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 10])],
        [numpy_helper.from_array(rng.normal(0, 0.05, (784, 10)).astype(np.float32), "w"),
         numpy_helper.from_array(rng.normal(0, 0.05, 10).astype(np.float32), "b")])
    path = folder / "model.onnx"
    onnx.save_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]),
                    str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="data.bin", size_threshold=0)
    return path


@pytest.fixture
def user_model(tmp_path):
    """model.onnx with weights A in data.bin, and ``swap(seed)``: other weights written into
    that data.bin, model.onnx left byte for byte as it was."""
    path = external_model(tmp_path / "user", seed=1)

    def swap(seed: int) -> None:
        other = external_model(tmp_path / f"other{seed}", seed)
        assert other.read_bytes() == path.read_bytes()
        shutil.copyfile(other.parent / "data.bin", path.parent / "data.bin")

    return path, swap


def onnx_settings(path) -> TrainingSettings:
    return TrainingSettings(arch=None, epochs=1, batch_size=64, learning_rate=0.003,
                            augment=False, seed=0, calibration_size=64, onnx=str(path))


def prepare(path, small, cache, lines=None, **kwargs):
    log = (lines.append if lines is not None else lambda _: None)
    return prepare_network(onnx_settings(path), *small, cache=cache, log=log, **kwargs)


def int8_weights(prepared) -> list[np.ndarray]:
    return [numpy_helper.to_array(t) for t in onnx.load(str(prepared.int8_onnx)).graph.initializer]


def same_weights(a, b) -> bool:
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))


def test_changed_external_data_gives_another_key_and_network(user_model, small, tmp_path):
    path, swap = user_model
    cache = tmp_path / "cache"
    first = prepare(path, small, cache)
    swap(2)
    lines: list[str] = []
    second = prepare(path, small, cache, lines)
    assert second.key != first.key and second.folder != first.folder
    assert not any("reusing" in line for line in lines), lines
    assert not same_weights(int8_weights(first), int8_weights(second))
    assert second.report["float"] != first.report["float"]
    hashes = [r["identity"]["onnx_external_sha256"] for r in (first.report, second.report)]
    assert hashes[0].keys() == hashes[1].keys() == {"data.bin"} and hashes[0] != hashes[1]


def test_a_rebuild_with_reuse_off_replaces_only_its_own_entry(user_model, small, tmp_path):
    path, swap = user_model
    cache = tmp_path / "cache"
    first = prepare(path, small, cache)
    kept = {p.name: p.read_bytes() for p in first.folder.iterdir()}
    swap(2)
    rebuilt = prepare(path, small, cache, reuse=False)
    assert rebuilt.folder != first.folder
    assert {p.name: p.read_bytes() for p in first.folder.iterdir()} == kept  # not clobbered
    swap(1)
    lines: list[str] = []
    again = prepare(path, small, cache, lines)
    assert again.folder == first.folder and "reusing" in lines[-1]
    assert same_weights(int8_weights(again), int8_weights(first))
    same_key = prepare(path, small, cache, reuse=False)  # its own entry, replaced whole
    assert same_key.folder == first.folder
    assert same_weights(int8_weights(same_key), int8_weights(first))
    assert sorted(p.name for p in cache.iterdir()) == sorted([first.folder.name,
                                                              rebuilt.folder.name])


def test_an_entry_whose_record_is_not_its_key_is_rebuilt(user_model, small, tmp_path):
    """An entry holding another network than its key's (as the old key left them) is not
    reused: it is rebuilt in its place."""
    path, swap = user_model
    cache = tmp_path / "cache"
    first = prepare(path, small, cache)
    swap(2)
    stale = prepare(path, small, cache)
    for p in first.folder.iterdir():  # the entry of weights A now holds B's network
        shutil.copyfile(stale.folder / p.name, p)
    swap(1)
    lines: list[str] = []
    again = prepare(path, small, cache, lines)
    assert again.folder == first.folder and any("rebuilding" in line for line in lines), lines
    assert same_weights(int8_weights(again), int8_weights(first))
    assert again.report["identity"] == first.report["identity"]


def test_a_model_changed_while_prepared_is_not_cached(user_model, small, tmp_path, monkeypatch):
    path, swap = user_model
    build = prepared._import

    def import_then_swap(*args, **kwargs):
        report = build(*args, **kwargs)
        swap(2)
        return report

    monkeypatch.setattr(prepared, "_import", import_then_swap)
    with pytest.raises(ModelError, match="changed while the network was prepared") as err:
        prepare(path, small, tmp_path / "cache")
    assert "\n" not in str(err.value) and str(path) in str(err.value)
    assert not any((tmp_path / "cache").iterdir())
