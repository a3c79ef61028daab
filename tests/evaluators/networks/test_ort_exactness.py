"""Exact on every CPU (issue 24): the probe of onnxruntime's int8 exactness on this CPU and on
emulated ones (an AVX2 CPU without VNNI, where onnxruntime's U8S8 kernels saturate; an SSE4
one, where they do not), the import check under both outcomes, ``reduce_range``, and dse's float
Softmax, whose numbers do not depend on the CPU."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pytest

from accel import isa, reference
from circuits.product_table import ProductTable
from evaluators.data.preprocess import Preprocessing
from evaluators.networks import ort_exactness
from evaluators.networks.model_import import import_model
from evaluators.networks.ort_exactness import CASES, Exactness
from evaluators.networks.quantization import quantize_int8, seven_bit_weights
from evaluators.networks.zoo import build_model, export_float_onnx
from evaluators.runtime import approx_runner
from evaluators.runtime.qgraph import QGraph
from tests.emulation import AVX2, SSE4, run_on
from tests.evaluators.float_softmax import (
    SOFTMAX_CASES,
    assert_documented_softmax,
    dse_softmax,
    softmax_inputs,
)

PAIRS = "QLinearMatMul of two activations"
WEIGHT_CASES = [c for c in CASES if c != PAIRS]
# what onnxruntime 1.32 gets wrong on an AVX2 CPU without VNNI: every uint8 x int8 product,
# and int8 QDQ layers (whose activations it moves to uint8)
AVX2_DEFAULT = frozenset({(c, "u8s8") for c in CASES} | {("QDQ Conv", "s8s8"), ("QDQ Gemm", "s8s8")})
AVX2_PRECISE = frozenset({(PAIRS, "u8s8")})  # two activations: no constant to move to uint8
PROBE = """
import json
from evaluators.networks import ort_exactness
found = ort_exactness.probe()
print(json.dumps([sorted(found.inexact_default), sorted(found.inexact_precise)]))
"""


def emulated_probe(cpu: str) -> Exactness:
    default, precise = json.loads(run_on(cpu, PROBE))
    return Exactness(frozenset(map(tuple, default)), frozenset(map(tuple, precise)))


def test_the_probe_on_this_cpu():
    found = ort_exactness.probe()
    assert not {case for case, _ in found.inexact_precise} - {PAIRS}
    if isa.features() & {"avx512vnni", "avxvnni"}:
        assert found.inexact_default == found.inexact_precise == frozenset()
    elif "avx2" in isa.features():
        assert found.inexact_default == AVX2_DEFAULT
    assert ort_exactness.probe() is found  # once per process


def test_on_an_avx2_cpu_onnxruntime_saturates_u8s8_and_its_precision_mode_does_not():
    found = emulated_probe(AVX2)
    assert (found.inexact_default, found.inexact_precise) == (AVX2_DEFAULT, AVX2_PRECISE)
    assert not found.exact("u8s8", precise=False) and found.exact("u8s8")
    assert found.exact("s8s8", "qoperator", precise=False)
    assert not found.exact("s8s8", "qdq", precise=False) and found.exact("s8s8", "qdq")
    assert found.exact("u8u8", precise=False) and not found.exact("mixed", precise=False)
    assert not found.exact("u8s8", activation_products=True)
    assert found.exact("s8s8", activation_products=True)
    assert found.saturating() == ["S8S8 qdq", "U8S8 qoperator", "U8S8 qdq"]


def test_on_an_sse4_cpu_onnxruntime_is_exact():
    found = emulated_probe(SSE4)
    assert found.inexact_default == found.inexact_precise == frozenset()
    assert found.saturating() == [] and found.exact("mixed", precise=False)


@pytest.fixture(scope="module")
def lenet(mnist, tmp_path_factory) -> tuple[Path, np.ndarray]:
    """LeNet-5 with random weights as a user's float ONNX file, and 64 test digits."""
    folder = tmp_path_factory.mktemp("lenet")
    export_float_onnx(build_model("lenet5", (1, 28, 28), 10, seed=0), (1, 28, 28),
                      folder / "float.onnx")
    return folder / "float.onnx", Preprocessing().apply(mnist[1].images[:64])


def exact_outputs(path: Path, x: np.ndarray) -> np.ndarray:
    """The exact reference: the runner with the reference kernels and the exact table."""
    graph = QGraph.from_onnx(path)
    return approx_runner.run(graph, {graph.inputs[0]: x}, ProductTable.exact(True),
                             reference)[graph.outputs[0]]


SATURATING = Exactness(AVX2_DEFAULT, AVX2_PRECISE)
EXACT_HERE = Exactness(frozenset(), frozenset())


@pytest.mark.parametrize("found", [SATURATING, EXACT_HERE], ids=["saturating", "exact"])
@pytest.mark.parametrize("scheme, fmt, reduce_range", [
    ("u8s8", "qoperator", False), ("u8s8", "qdq", False), ("u8s8", "qoperator", True),
    ("s8s8", "qoperator", False), ("s8s8", "qdq", False)])
def test_the_import_check_says_where_onnxruntime_saturates(lenet, tmp_path, monkeypatch, found,
                                                           scheme, fmt, reduce_range):
    """One informational line where onnxruntime's default kernels saturate for the model's
    scheme and format (not with 7-bit weights); never the request to report the model, since
    the check compares with the exact products."""
    monkeypatch.setattr(ort_exactness, "probe", lambda: found)
    path, x = lenet
    messages: list[str] = []
    import_model(path, tmp_path, x[:16], messages.append, scheme=scheme, quant_format=fmt,
                 reduce_range=reduce_range)
    notes = [m for m in messages if m.startswith("note:")]
    assert not any("warning" in m for m in messages), messages
    saturates = found is SATURATING and (scheme, fmt) != ("s8s8", "qoperator") and not reduce_range
    assert len(notes) == saturates, messages
    if saturates:
        assert f"{scheme.upper()} {fmt} kernels saturate on this CPU" in notes[0]
        assert "quantization.reduce_range: true" in notes[0] and "U8U8" in notes[0]
    assert seven_bit_weights(QGraph.from_onnx(tmp_path / "int8.onnx")) == reduce_range


def two_activations_model(path: Path, scheme: str) -> Path:
    """A QOperator model whose QLinearMatMul multiplies two activations: the input's codes and
    codes quantized at run time (an attention's Q x K^T in miniature)."""
    from onnx import TensorProto, helper, numpy_helper, save

    kind = np.int8 if scheme[:2] == "s8" else np.uint8
    zero = 0 if kind == np.int8 else 128
    initializers = [
        numpy_helper.from_array(np.random.default_rng(0).standard_normal((10, 10), np.float32),
                                "w"),
        numpy_helper.from_array(np.array(0.05, np.float32), "scale"),
        numpy_helper.from_array(np.array(zero, kind), "zero"),
        numpy_helper.from_array(np.array(0.5, np.float32), "y_scale")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "scale", "zero"], ["xq"]),
             helper.make_node("QuantizeLinear", ["w", "scale", "zero"], ["wq"]),
             helper.make_node("QLinearMatMul", ["xq", "scale", "zero", "wq", "scale", "zero",
                                                "y_scale", "zero"], ["yq"]),
             helper.make_node("DequantizeLinear", ["yq", "y_scale", "zero"], ["out"])]
    graph = helper.make_graph(nodes, "pairs", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, ["n", 10])], [helper.make_tensor_value_info(
            "out", TensorProto.FLOAT, ["n", 10])], initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    save(model, str(path))
    return path


@pytest.mark.parametrize("found", [SATURATING, EXACT_HERE], ids=["saturating", "exact"])
@pytest.mark.parametrize("scheme", ["s8s8", "u8u8"])
def test_products_of_two_activations_are_checked_where_onnxruntime_is_exact(
        tmp_path, monkeypatch, found, scheme):
    """Where even onnxruntime's precision mode saturates a product of two activations (no
    constant to move to uint8), the check says it leaves onnxruntime out; elsewhere it
    compares, and agrees."""
    inexact = frozenset((PAIRS, s) for s in ("s8s8", "u8u8")) if found is SATURATING else \
        frozenset()
    monkeypatch.setattr(ort_exactness, "probe", lambda: Exactness(inexact, inexact))
    x = np.random.default_rng(1).standard_normal((4, 10)).astype(np.float32)
    messages: list[str] = []
    import_model(two_activations_model(tmp_path / "pairs.onnx", scheme), tmp_path / "net", x,
                 messages.append)
    assert not any("warning" in m for m in messages), messages
    notes = [m for m in messages if m.startswith("note:")]
    if found is SATURATING:
        assert notes[-1] == (f"note: onnxruntime multiplies {scheme.upper()} activations by "
                             "activations inexactly on this CPU, even in its precision mode, so "
                             "the import check does not compare with it; dse's products are "
                             "exact")
    else:
        assert notes == []


def test_a_difference_from_exact_onnxruntime_is_still_a_warning(lenet, tmp_path, monkeypatch):
    """Where onnxruntime is exact, a runner that differs from it asks for a report."""
    path, x = lenet
    original = approx_runner.run

    def off_by_one(graph, feeds, table, kernels, *args, **kwargs):
        out = original(graph, feeds, table, kernels, *args, **kwargs)
        return {k: v + 1 if k == graph.outputs[0] else v for k, v in out.items()}

    monkeypatch.setattr(ort_exactness, "probe", lambda: EXACT_HERE)
    monkeypatch.setattr(approx_runner, "run", off_by_one)
    messages: list[str] = []
    import_model(path, tmp_path, x[:4], messages.append)
    assert [m for m in messages if m.startswith("warning:")] == [
        f"warning: {path}: with the exact table the approximate runner's outputs differ from "
        "onnxruntime's exact ones on 2 of 2 samples; please report this model"]


def test_reduce_range_makes_onnxruntimes_own_kernels_exact_on_an_avx2_cpu(lenet, tmp_path):
    """7-bit weights: onnxruntime's default U8S8 kernels give the exact products on an AVX2 CPU
    without VNNI, where with 8-bit weights they do not."""
    path, x = lenet
    models = {}
    for reduce_range in (False, True):
        models[reduce_range] = tmp_path / f"u8s8_{reduce_range}.onnx"
        quantize_int8(path, models[reduce_range], x, scheme="u8s8", reduce_range=reduce_range)
    np.save(tmp_path / "x.npy", x)
    run_on(AVX2, textwrap.dedent(f"""
        import numpy as np, onnxruntime as ort
        x = np.load({str(tmp_path / "x.npy")!r})
        for path in {[str(p) for p in models.values()]!r}:
            session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
            np.save(path + ".npy", session.run(None, {{session.get_inputs()[0].name: x}})[0])
    """))
    emulated = {k: np.load(f"{p}.npy") for k, p in models.items()}
    assert np.array_equal(emulated[True], exact_outputs(models[True], x))
    assert not np.array_equal(emulated[False], exact_outputs(models[False], x))
    graph = QGraph.from_onnx(models[True])
    weights = [graph.initializers[n.inputs[3]] for n in graph.nodes if n.op == "QLinearConv"]
    assert min(w.min() for w in weights) >= -64 and max(w.max() for w in weights) <= 64


SOFTMAX_SCRIPT = """
import sys
import numpy as np, onnxruntime as ort
from onnx import TensorProto, helper
from tests.evaluators.float_softmax import dse_softmax
cases = np.load(sys.argv[1])
out = {}
for key in cases.files:
    opset, axis = (int(v) for v in key.split("_")[1:])
    x = cases[key]
    model = helper.make_model(helper.make_graph(
        [helper.make_node("Softmax", ["x"], ["y"], axis=axis)], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, x.shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, x.shape)]),
        opset_imports=[helper.make_opsetid("", opset)])
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    out["dse" + key] = dse_softmax(x, opset, axis)
    out["ort" + key] = session.run(None, {"x": x})[0]
np.savez(sys.argv[2], **out)
"""


def test_dses_float_softmax_does_not_depend_on_the_cpu(tmp_path):
    """The same bits on an emulated AVX2 CPU as here, where onnxruntime's AVX2 kernel is
    another arithmetic than its AVX-512 one: within the documented arithmetic's bound."""
    cases = {f"case{i}_{opset}_{axis}": x for i, ((opset, _, axis, _), x)
             in enumerate(zip(SOFTMAX_CASES, softmax_inputs()))}
    np.savez(tmp_path / "cases.npz", **cases)
    run_on(AVX2, SOFTMAX_SCRIPT, args=[str(tmp_path / "cases.npz"), str(tmp_path / "out.npz")])
    emulated = np.load(tmp_path / "out.npz")
    differ = 0
    for key, x in cases.items():
        opset, axis = (int(v) for v in key.split("_")[1:])
        ours = dse_softmax(x, opset, axis)
        np.testing.assert_array_equal(emulated["dse" + key], ours)
        assert_documented_softmax(ours, x, opset, axis, emulated["ort" + key])
        differ += int(np.sum(emulated["ort" + key] != ours))
    assert differ > 0  # onnxruntime's AVX2 kernel is another arithmetic


@pytest.mark.slow
def test_importing_a_u8s8_model_on_an_avx2_cpu(lenet, tmp_path):
    """A whole import on an emulated AVX2 CPU without VNNI: onnxruntime's saturation is named
    in one line, the check against its precision mode passes, no report is asked for."""
    path, x = lenet
    np.save(tmp_path / "x.npy", x[:16])
    out = run_on(AVX2, textwrap.dedent(f"""
        from pathlib import Path
        import numpy as np
        from evaluators.networks.model_import import import_model
        x = np.load({str(tmp_path / "x.npy")!r})
        import_model(Path({str(path)!r}), Path({str(tmp_path / "net")!r}), x, scheme="u8s8")
    """))
    assert not any("warning" in line for line in out.splitlines()), out
    assert [line for line in out.splitlines() if line.startswith("note:")] == [
        "note: onnxruntime's default U8S8 qoperator kernels saturate on this CPU (uint8 x int8 "
        "pairs summed in int16 without AVX-512 VNNI); dse computes the exact products. "
        "onnxruntime recommends quantization.reduce_range: true (7-bit weights) or U8U8 on such "
        "CPUs"]
