"""The integer-graph steps on real MNIST images: after each, the model runs in onnxruntime with
the quantized model's predictions; the chain ends integer-only on the PyTorch MNIST example CNN
and on LeNet-5, and the approximate runner reproduces onnxruntime with the exact table."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from accel import cpu
from circuits import appaxo
from circuits.product_table import ProductTable
from dse.cli import build_parser
from evaluators.data.preprocess import default_preprocessing
from evaluators.errors import ModelError
from evaluators.networks import ort_exactness
from evaluators.networks.quantization import quantize_int8
from evaluators.networks.zoo import build_model, export_float_onnx
from evaluators.onnx.integer_graph import STEPS, feed, integer_only, run_steps
from evaluators.runtime import approx_runner
from evaluators.runtime.approx_network import ApproxNetworkEvaluator
from evaluators.runtime.qgraph import QGraph

PRE = default_preprocessing("mnist")
IMAGES = 300


def outputs(model: onnx.ModelProto, images: np.ndarray) -> np.ndarray:
    session = ort_exactness.session(model)
    return session.run(None, feed(model, images, PRE))[0]


def qdq_model(float_onnx: Path, folder: Path, calibration: np.ndarray,
              scheme: str = "s8s8") -> onnx.ModelProto:
    path = folder / f"qdq_{scheme}.onnx"
    quantize_int8(float_onnx, path, PRE.apply(calibration), quant_format="qdq", scheme=scheme)
    return onnx.load(str(path))


@pytest.fixture(scope="module")
def mnist_cnn_qdq(mnist, tmp_path_factory) -> onnx.ModelProto:
    """The PyTorch MNIST example CNN (seeded random weights) quantized to int8 QDQ."""
    folder = tmp_path_factory.mktemp("mnist_cnn")
    export_float_onnx(build_model("mnist_cnn", (1, 28, 28), 10, seed=0), (1, 28, 28),
                      folder / "float.onnx")
    return qdq_model(folder / "float.onnx", folder, mnist[0].images[:200])


@pytest.fixture(scope="module")
def lenet_qdq(lenet, mnist, tmp_path_factory) -> onnx.ModelProto:
    """The trained LeNet-5 of the test session, quantized to int8 QDQ."""
    return qdq_model(lenet.float_onnx, tmp_path_factory.mktemp("lenet"), mnist[0].images[:200])


def test_each_step_keeps_predictions_in_onnxruntime(mnist_cnn_qdq, mnist, tmp_path):
    images = mnist[1].images[:IMAGES]
    expected = outputs(mnist_cnn_qdq, images).argmax(1)
    differing = {}

    def after(step: str, model: onnx.ModelProto) -> None:
        differing[step] = int(np.sum(outputs(model, images).argmax(1) != expected))

    final = run_steps(mnist_cnn_qdq, list(STEPS), tmp_path / "steps", after)
    assert list(differing) == list(STEPS)
    # exact steps change nothing; the rescaling ones may move a code by one in rare ties
    assert all(differing[s] == 0 for s in ("add_rescaling", "embed_act", "prune_qdq",
                                           "split_bias_add", "integer_ops")), differing
    assert all(count <= 2 for count in differing.values()), differing
    assert sorted(p.name for p in (tmp_path / "steps").iterdir())[-1] == "07_scale_out.onnx"
    assert integer_only(final) == []
    assert integer_only(mnist_cnn_qdq)  # the QDQ model is not
    ops = {n.op_type for n in final.graph.node}
    assert {"ConvInteger", "MatMulInteger"} <= ops and not ops & {"Conv", "Gemm",
                                                                   "QuantizeLinear"}


def test_steps_that_change_nothing_say_so(mnist_cnn_qdq):
    model, changed = STEPS["embed_act"]().apply(mnist_cnn_qdq)  # symmetric: Relus are explicit
    assert not changed and model is mnist_cnn_qdq
    model = mnist_cnn_qdq
    for name, step in STEPS.items():  # each step, run twice, has nothing left to do
        model, changed = step().apply(model)
        assert changed != (name == "embed_act") and not step().apply(model)[1], name


def test_embed_act_makes_a_fused_relu_explicit(mnist, tmp_path):
    """uint8 activations (zero point 0 after a ReLU): onnxruntime's quantizer drops the Relu;
    embed_act puts it back, and predictions do not change."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    export_float_onnx(build_model("lenet5", (1, 28, 28), 10, seed=0), (1, 28, 28),
                      tmp_path / "float.onnx")
    calibration = PRE.apply(mnist[0].images[:100])

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([{"input": calibration}])

        def get_next(self):
            return next(self.batches, None)

    quantize_static(str(tmp_path / "float.onnx"), str(tmp_path / "u8.onnx"), Reader(),
                    quant_format=QuantFormat.QDQ, per_channel=True)
    model = onnx.load(str(tmp_path / "u8.onnx"))
    relus = sum(n.op_type == "Relu" for n in model.graph.node)
    embedded, changed = STEPS["embed_act"]().apply(model)
    assert changed and sum(n.op_type == "Relu" for n in embedded.graph.node) > relus
    images = mnist[1].images[:IMAGES]
    np.testing.assert_array_equal(outputs(embedded, images), outputs(model, images))


def test_whole_chain_on_lenet5(lenet_qdq, mnist):
    images = mnist[1].images[:IMAGES]
    final = run_steps(lenet_qdq, list(STEPS))
    assert integer_only(final) == []
    expected = outputs(lenet_qdq, images).argmax(1)
    assert np.sum(outputs(final, images).argmax(1) != expected) <= 2


def test_approximate_scoring_equals_onnxruntime_with_the_exact_table(lenet_qdq, mnist, tmp_path):
    final = run_steps(lenet_qdq, list(STEPS))
    images = mnist[1].images[:IMAGES]
    feeds = feed(final, images, PRE)
    graph = QGraph.from_onnx(final)
    got = approx_runner.run(graph, feeds, ProductTable.exact(True), cpu)[graph.outputs[0]]
    np.testing.assert_array_equal(got, outputs(final, images))
    # through the evaluator, with an approximate table the products really go through it
    onnx.save(final, str(tmp_path / "integer.onnx"))
    evaluator = ApproxNetworkEvaluator(tmp_path / "integer.onnx", feeds[graph.inputs[0]],
                                       mnist[1].labels[:IMAGES])
    exact = evaluator.logits(ProductTable.exact(True))
    np.testing.assert_array_equal(exact, got)
    assert not np.array_equal(evaluator.logits(
        ProductTable(appaxo.product_table(404750335), True)), exact)


@pytest.mark.parametrize("scheme", ["u8s8", "u8u8"])
def test_whole_chain_with_zero_points(lenet, mnist, tmp_path, scheme):
    """uint8 activations with their zero points (and U8U8's uint8 weights around 128): the
    chain keeps the predictions, hands the zero points to ConvInteger / MatMulInteger, and
    the runner gives onnxruntime's outputs with exact tables of either signedness."""
    model = qdq_model(lenet.float_onnx, tmp_path, mnist[0].images[:200], scheme)
    images = mnist[1].images[:IMAGES]
    final = run_steps(model, list(STEPS))
    assert integer_only(final) == []
    assert np.sum(outputs(final, images).argmax(1) != outputs(model, images).argmax(1)) <= 2
    layers = [n for n in final.graph.node if n.op_type in ("ConvInteger", "MatMulInteger")]
    assert len(layers) == 5 and any(n.op_type == "Relu" for n in final.graph.node)
    if scheme == "u8u8":  # the weight zero point 128 is an input of every integer layer
        assert all(len(n.input) == 4 for n in layers)
    graph = QGraph.from_onnx(final)
    feeds = feed(final, images, PRE)
    expected = outputs(final, images)
    for signed in (True, False):
        got = approx_runner.run(graph, feeds, ProductTable.exact(signed), cpu)[graph.outputs[0]]
        np.testing.assert_array_equal(got, expected)


def test_a_node_the_step_cannot_rewrite_is_named(mnist_cnn_qdq):
    with pytest.raises(ModelError, match=r"^split_bias_add cannot rewrite node '/conv1/Conv' "
                                         r"\(Conv\): the bias must be a constant"):
        STEPS["split_bias_add"]().apply(mnist_cnn_qdq)  # its bias is dequantized
    with pytest.raises(ModelError, match=r"^integer_ops cannot rewrite node '/conv1/Conv' "
                                         r"\(Conv\): it must read two Casts"):
        STEPS["integer_ops"]().apply(mnist_cnn_qdq)
    with pytest.raises(ModelError, match="unknown integer-graph step 'fold'"):
        run_steps(mnist_cnn_qdq, ["fold"])


def test_cli_reports_differences_per_step(mnist_cnn_qdq, mnist_dir, tmp_path, capsys):
    onnx.save(mnist_cnn_qdq, str(tmp_path / "qdq.onnx"))
    parser = build_parser()
    args = parser.parse_args(["onnx", "integer", str(tmp_path / "qdq.onnx"), "-o",
                              str(tmp_path / "int.onnx"), "--save-steps", str(tmp_path / "s"),
                              "--dataset", "mnist", "--path", str(mnist_dir), "--images", "200"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "add_rescaling: 0 of 200 predictions differ" in out
    assert "scale_out:" in out and "integer operations only" in out
    assert len(list((tmp_path / "s").iterdir())) == len(STEPS)
    assert integer_only(onnx.load(str(tmp_path / "int.onnx"))) == []


def test_add_rescaling_per_channel_normalizes_as_the_study_does(tmp_path):
    """CIFAR statistics: per-channel scale 1/(255 std), zero point round(255 mean); the model's
    normalized input is the study's preprocessing up to the rounding of 255 mean."""
    from evaluators.data.preprocess import DATASET_PREPROCESSING

    cifar = DATASET_PREPROCESSING["cifar10"]
    export_float_onnx(build_model("lenet5", (3, 32, 32), 10, seed=0), (3, 32, 32),
                      tmp_path / "float.onnx")
    model, changed = STEPS["add_rescaling"](cifar).apply(onnx.load(str(tmp_path / "float.onnx")))
    assert changed
    model.graph.output.append(onnx.helper.make_empty_tensor_value_info("input"))
    images = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    session = ort_exactness.session(model)
    normalized = session.run(["input"], feed(model, images, cifar))[0]
    half_code = 0.5 / (255 * np.asarray(cifar.std)).reshape(1, 3, 1, 1)
    assert np.all(np.abs(normalized - cifar.apply(images)) <= half_code + 1e-6)
