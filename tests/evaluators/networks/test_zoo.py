"""The model zoo: every architecture builds for MNIST- and CIFAR-shaped data, exports without
batch norm, quantizes, and runs through the approximate runner bit for bit as onnxruntime does;
deterministic training; checkpoints; MAC counts; the network preparation's routes and refusals."""

from __future__ import annotations

import hashlib
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import numpy_helper

from accel import cpu
from circuits.product_table import ProductTable
from evaluators.data import Split, load_split
from evaluators.data.preprocess import Preprocessing, default_preprocessing
from evaluators.errors import ModelError
from evaluators.networks import zoo
from evaluators.networks.prepared import (
    TrainingSettings,
    int8_layer_macs,
    prepare_network,
    train_model,
)
from evaluators.networks.quantization import quantize_int8
from evaluators.networks.training import CROP_FLIP, SHIFT, augmentation
from evaluators.runtime import approx_runner
from evaluators.runtime.qgraph import QGraph
from tests.conftest import dataset_dir
from tests.evaluators.data.test_npz import npy, refused_in_one_line, run_dse, write_zip
from tests.evaluators.networks.test_prepared import ort_with_every_tensor

EXACT = ProductTable.exact(True)
SHAPES = [((1, 28, 28), 10), ((3, 32, 32), 10), ((3, 32, 32), 100)]
HEAVY = {"vgg16", "alexnet_cifar"}  # 15M+ weights: 25-60 s each on 2 cores
CIFAR = default_preprocessing("cifar10")


def shape_id(value) -> str:
    return "x".join(map(str, value)) if isinstance(value, tuple) else str(value)


@pytest.fixture(scope="module")
def gray_images(mnist) -> np.ndarray:
    """Four real MNIST and four real Fashion-MNIST test images, uint8 (8, 28, 28, 1)."""
    fashion = load_split("fashion_mnist", "test", dataset_dir("fashion_mnist"))
    return np.concatenate([mnist[1].images[:4], fashion.images[:4]])


def inputs_for(shape: tuple[int, ...], gray_images: np.ndarray) -> np.ndarray:
    """Network inputs: the real gray images, or random CIFAR-shaped uint8 images standardized
    as CIFAR-10 is."""
    if shape[0] == 1:
        return Preprocessing().apply(gray_images)
    rng = np.random.default_rng(0)
    return CIFAR.apply(rng.integers(0, 256, (8, *shape[1:], shape[0]), dtype=np.uint8))


def params(archs):
    return [pytest.param(a, marks=pytest.mark.slow) if a in HEAVY else a for a in archs]


@pytest.mark.parametrize("shape, classes", SHAPES, ids=shape_id)
@pytest.mark.parametrize("arch", list(zoo.ARCHITECTURES))
def test_every_architecture_exports_a_float_graph_without_batch_norm(arch, shape, classes,
                                                                    tmp_path):
    model = zoo.build_model(arch, shape, classes, seed=0)
    zoo.export_float_onnx(model, shape, tmp_path / "f.onnx")
    graph = onnx.load(str(tmp_path / "f.onnx")).graph
    ops = {n.op_type for n in graph.node}
    assert "BatchNormalization" not in ops and ops & {"Conv", "Gemm"}, ops
    assert [i.name for i in graph.input] == ["input"] and [o.name for o in graph.output] == ["logits"]
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_param  # a symbolic batch axis
    x = torch.randn(3, *shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = model.eval()(x).numpy()
    got = ort.InferenceSession(str(tmp_path / "f.onnx")).run(None, {"input": x.numpy()})[0]
    assert got.shape == (3, classes)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5 * np.abs(expected).max())


@pytest.mark.parametrize("shape, classes", SHAPES, ids=shape_id)
@pytest.mark.parametrize("arch", params(zoo.ARCHITECTURES))
def test_exact_runner_equals_onnxruntime_on_every_tensor(arch, shape, classes, gray_images,
                                                         tmp_path):
    """Random weights, real images for the 28x28x1 shape: every tensor of the quantized graph,
    int8 codes and float logits, equals onnxruntime's; the graph's MACs are the zoo's."""
    x = inputs_for(shape, gray_images)
    model = zoo.build_model(arch, shape, classes, seed=0)
    zoo.export_float_onnx(model, shape, tmp_path / "f.onnx")
    quantize_int8(tmp_path / "f.onnx", tmp_path / "q.onnx", x)
    session, names = ort_with_every_tensor(tmp_path / "q.onnx")
    expected = dict(zip(names, session.run(None, {"input": x})))
    got = approx_runner.run(QGraph.from_onnx(tmp_path / "q.onnx"), {"input": x}, EXACT, cpu,
                            capture=names)
    for name in names:
        assert got[name].dtype == expected[name].dtype, name
        np.testing.assert_array_equal(got[name], expected[name], err_msg=name)
    layers = int8_layer_macs(tmp_path / "q.onnx", x[:1])
    assert sorted(layers.values()) == sorted(zoo.layer_macs(arch, shape, classes).values())


def test_macs_counted_by_hand():
    lenet = {"conv1": 28 * 28 * 6 * 25, "conv2": 10 * 10 * 16 * 6 * 25, "fc1": 400 * 120,
             "fc2": 120 * 84, "fc3": 84 * 10}
    assert zoo.layer_macs("lenet5", (1, 28, 28), 10) == lenet
    assert zoo.macs("lenet5", (1, 28, 28), 10) == 416_520
    stage = {32: 16, 16: 32, 8: 64}  # map size -> channels
    resnet20 = 32 * 32 * 16 * 27 + 6 * 32 * 32 * 16 * 144  # stem, stage 1
    for size in (16, 8):
        c = stage[size]
        resnet20 += size * size * c * (c // 2 * 9 + 5 * c * 9 + c // 2)  # strided, 5 more, 1x1
    resnet20 += 64 * 10
    assert zoo.macs("resnet20", (3, 32, 32), 10) == resnet20 == 40_813_184
    assert zoo.parameters("fcnn", (784,), 10) == 784 * 128 + 128 + 128 * 64 + 64 + 64 * 10 + 10


def test_vit_tiny_counts_its_attention_products():
    """17 tokens (16 patches of 7x7 or 8x8, the class token) of width 64, 4 heads of 16: per
    block QKV, q @ k^T, attn @ v, the projection and the MLP; the patch Conv and the head."""
    block = {"attn.qkv": 17 * 192 * 64, "attn.scores": 4 * 17 * 17 * 16,
             "attn.context": 4 * 17 * 17 * 16, "attn.proj": 17 * 64 * 64,
             "fc1": 17 * 128 * 64, "fc2": 17 * 64 * 128}
    expected = {"patch_embed": 16 * 64 * 49, "head": 64 * 10}
    expected.update({f"blocks.{i}.{name}": n for i in range(4) for name, n in block.items()})
    assert zoo.layer_macs("vit_tiny", (1, 28, 28), 10) == expected
    assert zoo.macs("vit_tiny", (3, 32, 32), 10) == zoo.macs("vit_tiny", (1, 28, 28), 10) + \
        16 * 64 * (3 * 64 - 49)


def test_vit_tiny_exports_attention_as_matmuls_with_its_shapes_folded(tmp_path):
    """Both attention products of every block are MatMuls of two activations, and what is
    left of the shape computations reads the batch size only."""
    model = zoo.build_model("vit_tiny", (1, 28, 28), 10, seed=0)
    zoo.export_float_onnx(model, (1, 28, 28), tmp_path / "f.onnx")
    graph = onnx.load(str(tmp_path / "f.onnx")).graph
    constants = {t.name for t in graph.initializer} | {
        o for n in graph.node if n.op_type == "Constant" for o in n.output}
    products = [n.name for n in graph.node if n.op_type == "MatMul"
                and not constants & set(n.input)]
    assert len(products) == 8, products
    assert [n.op_type for n in graph.node].count("Shape") <= 2
    session = ort.InferenceSession(str(tmp_path / "f.onnx"))
    for batch in (1, 4):
        x = torch.randn(batch, 1, 28, 28, generator=torch.Generator().manual_seed(batch))
        with torch.no_grad():
            expected = model.eval()(x).numpy()
        np.testing.assert_allclose(session.run(None, {"input": x.numpy()})[0], expected,
                                   rtol=1e-4, atol=1e-5)


def test_impossible_combinations_are_refused_with_one_line():
    cases = [
        (("resnet20", (784,), 10), r"resnet20 is a convolutional network .* \(784,\) .*fcnn"),
        (("lenet5", (1, 8, 8), 10), "lenet5 needs images of at least 12x12 pixels, got 8x8"),
        (("mnist_cnn", (1, 5, 5), 10), "mnist_cnn needs images of at least 6x6"),
        (("vgg16", (3, 32, 32), 1), "at least 2 classes"),
        (("resnet18", (3, 32, 32), 10), "unknown architecture 'resnet18' .*lenet5, fcnn"),
    ]
    for args, message in cases:
        with pytest.raises(ModelError, match=message) as err:
            zoo.build_model(*args)
        assert "\n" not in str(err.value)
    assert zoo.build_model("fcnn", (784,), 10)(torch.zeros(2, 784)).shape == (2, 10)


def test_small_inputs_skip_pools_that_would_empty_the_map():
    vgg = zoo.build_model("vgg16", (1, 28, 28), 10)
    assert sum(isinstance(m, torch.nn.MaxPool2d) for m in vgg.modules()) == 4
    assert vgg.classifier[1].in_features == 512
    alexnet = zoo.build_model("alexnet_cifar", (3, 32, 32), 10)
    assert alexnet.classifier[1].in_features == 256 * 2 * 2


def test_batch_norm_folds_into_the_convolutions():
    model = zoo.build_model("resnet8", (3, 32, 32), 10, seed=0)
    for m in model.modules():  # batch statistics a trained network would have
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)
    folded = zoo.fold_batch_norm(model)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())  # a copy
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model.eval()(x), rtol=1e-4, atol=1e-4)


def test_augmentation_follows_the_samples():
    assert augmentation((1, 28, 28)) == SHIFT
    assert augmentation((3, 32, 32)) == CROP_FLIP
    assert augmentation((3, 16, 16)) == SHIFT
    assert augmentation((784,)) is None


def settings(arch: str, **changes) -> TrainingSettings:
    base = TrainingSettings(arch=arch, epochs=1, batch_size=32, learning_rate=0.003,
                            augment=True, seed=5, calibration_size=64)
    return replace(base, **changes)


@pytest.mark.parametrize("arch, shape", [("resnet8", (3, 32, 32)), ("mnist_cnn", (1, 28, 28)),
                                         ("vit_tiny", (1, 28, 28))])
def test_training_is_deterministic(arch, shape):
    """Batch norm, dropout and per-sample crop/flip augmentation: the same weights twice, and
    the caller's random state untouched."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((97, *shape)).astype(np.float32)  # 97 = 3 x 32 + 1: a lone sample
    y = rng.integers(0, 10, 97)
    state = torch.get_rng_state()
    runs = [train_model(settings(arch), x, y, 10) for _ in range(2)]
    assert torch.equal(torch.get_rng_state(), state)
    other = train_model(settings(arch, seed=6), x, y, 10)
    for a, b in zip(*(r.state_dict().values() for r in runs)):
        assert torch.equal(a, b)
    assert not all(torch.equal(a, c) for a, c in zip(runs[0].state_dict().values(),
                                                     other.state_dict().values()))


# --- prepare_network: the three routes, checkpoints and refusals ------------------------------


@pytest.fixture(scope="module")
def small(mnist) -> tuple[Split, Split]:
    """300 training and 200 test MNIST images."""
    train, test = mnist
    return (replace(train, images=train.images[:300], labels=train.labels[:300]),
            replace(test, images=test.images[:200], labels=test.labels[:200]))


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("networks")


@pytest.fixture(scope="module")
def trained(small, cache):
    """ResNet-8 (batch norm to fold, a residual graph) trained one epoch here."""
    return prepare_network(settings("resnet8"), *small, cache=cache, log=lambda s: None)


def int8_weights(path: Path) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer}


def test_the_report_of_a_trained_network(trained, small):
    report, (train, test) = trained.report, small
    assert report["route"] == "train" and report["arch"] == "resnet8" and report["source"] is None
    assert report["settings"]["epochs"] == 1 and report["augmentation"] == SHIFT
    assert (report["train_images"], report["test_images"]) == (300, 200)
    assert (report["train_md5"], report["test_md5"]) == (train.md5, test.md5)
    assert report["input_shape"] == [1, 28, 28] and report["classes"] == 10
    assert report["parameters"] == zoo.parameters("resnet8", (1, 28, 28), 10)
    assert report["layer_macs"] == zoo.layer_macs("resnet8", (1, 28, 28), 10)
    assert report["macs_per_image"] == zoo.macs("resnet8", (1, 28, 28), 10) == 9_345_920
    assert report["preprocessing"]["scale"] == pytest.approx(1 / 255)
    for kind in ("float", "int8"):
        assert set(report[kind]) == {"accuracy", "precision_macro", "recall_macro", "f1_macro"}
    assert trained.folder.name.startswith("resnet8-")
    assert {p.name for p in trained.folder.iterdir()} == {"float.onnx", "int8.onnx", "network.json"}


def test_a_checkpoint_gives_the_same_int8_model_without_training(trained, small, cache,
                                                                  tmp_path):
    """The state dict of the same deterministic training, saved the way training scripts do,
    loads through ``model.checkpoint`` into the very same int8 model."""
    train = small[0]
    model = train_model(settings("resnet8"), Preprocessing().apply(train.images), train.labels, 10)
    path = tmp_path / "resnet8.pt"
    torch.save({"epoch": 1, "state_dict": model.state_dict()}, path)
    lines: list[str] = []
    loaded = prepare_network(settings("resnet8", checkpoint=str(path)), *small, cache=cache,
                             log=lines.append)
    assert not any(line.startswith("training") for line in lines), lines
    assert any("from " + str(path) in line for line in lines)
    assert loaded.folder != trained.folder
    assert loaded.report["route"] == "checkpoint" and loaded.report["source"] == str(path.resolve())
    assert loaded.report["int8"] == trained.report["int8"]
    a, b = int8_weights(trained.int8_onnx), int8_weights(loaded.int8_onnx)
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    torch.save({k: v * 1.01 for k, v in model.state_dict().items()}, path)  # other weights
    changed = prepare_network(settings("resnet8", checkpoint=str(path)), *small, cache=cache,
                              log=lines.append)
    assert changed.key != loaded.key


def saved(tmp_path: Path, obj) -> Path:
    path = tmp_path / f"weights{len(list(tmp_path.glob('weights*.pt')))}.pt"
    torch.save(obj, path)
    return path


def bombed(tmp_path: Path, state: dict, record: str, zeros: int) -> Path:
    """``state`` saved by torch.save, its ``data/<record>`` (a tensor's storage) replaced by
    ``zeros`` zero bytes deflated: a zip bomb torch.load would unpack whole."""
    saved_path = saved(tmp_path, state)
    with zipfile.ZipFile(saved_path) as archive:
        members = {i.filename: (archive.read(i), 0) for i in archive.infolist()}
    name = next(n for n in members if n.endswith(f"/data/{record}"))
    return write_zip(tmp_path / f"bomb{zeros}.pt", {**members, name: (b"", zeros)})


def checkpoint_cases(tmp_path: Path) -> list[tuple[Path, str]]:
    lenet = zoo.build_model("lenet5", (1, 28, 28), 10).state_dict()
    nan = {**lenet, "conv2.weight": lenet["conv2.weight"].clone()}
    nan["conv2.weight"][3, 2, 1, 0] = float("nan")
    beyond = {k: v.double() for k, v in lenet.items()}  # float64 beyond float32: inf once loaded
    beyond["fc1.bias"][7] = 1e300
    legacy = tmp_path / "legacy.pt"
    torch.save(lenet, legacy, _use_new_zipfile_serialization=False)
    with legacy.open("r+b") as f:
        f.truncate(100 << 20)  # padded (sparse) past what a lenet5 state dict can be
    limit = r"expected at most 17764512 for the 61706 values of a lenet5 state dict"
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(hashlib.sha256(b"x").digest() * 100)
    module = tmp_path / "module.pt"
    torch.save(torch.nn.Linear(2, 2), module)  # a pickled module: code, not a state dict
    return [
        (tmp_path / "absent.pt", "no such file"),
        (garbage, "not a readable PyTorch state dict"),
        (module, "not a readable PyTorch state dict .*Weights only load failed"),
        (saved(tmp_path, [1, 2]), "expected a state dict .*got list"),
        (saved(tmp_path, {"fc1.weight": torch.zeros(3)} | {"x": 1}), "expected a state dict"),
        (saved(tmp_path, {**lenet, "conv3.weight": torch.zeros(1)}),
         r"does not fit lenet5 for inputs \(1, 28, 28\) and 10 classes: 1 unexpected keys "
         r"\(conv3.weight\)"),
        (saved(tmp_path, zoo.build_model("resnet8", (1, 28, 28), 10).state_dict()),
         r"does not fit lenet5 .*: 9 missing keys \(conv1.bias, conv2.weight, conv2.bias, "
         r"\.\.\.\); \d+ unexpected keys .*; 1 mis-shaped tensors \(conv1.weight"),
        (saved(tmp_path, zoo.build_model("lenet5", (3, 32, 32), 10).state_dict()),
         r"2 mis-shaped tensors \(conv1.weight \(6, 3, 5, 5\) instead of \(6, 1, 5, 5\), "
         r"fc1.weight \(120, 576\) instead of \(120, 400\)\)"),
        (saved(tmp_path, {"model": zoo.build_model("lenet5", (1, 28, 28), 100).state_dict()}),
         r"its lenet5 has 100 outputs \(fc3.weight\), the data has 10 classes"),
        (saved(tmp_path, nan), "conv2.weight has 1 of 2400 values NaN or infinite .*expected "
                               "finite weights"),
        (saved(tmp_path, {"epoch": 3, "state_dict": beyond}),
         r"fc1.bias has 1 of 120 values NaN or infinite \(as float32\)"),
        (saved(tmp_path, {**lenet, "fc3.bias": lenet["fc3.bias"].to_sparse()}),
         "its tensors cannot be loaded into lenet5 .*fc3.bias"),
        (bombed(tmp_path, lenet, "4", 64 << 20),
         f"its zip entries unpack to 67\\d{{6}} bytes, {limit} \\(a zip bomb"),
        (legacy, f": 104857600 bytes, {limit}$"),
    ]


def test_checkpoint_errors_are_one_line_before_any_work(small, tmp_path):
    cache = tmp_path / "cache"
    for path, message in checkpoint_cases(tmp_path):
        with pytest.raises(ModelError, match=f"model.checkpoint {path}.*{message}") as err:
            prepare_network(settings("lenet5", checkpoint=str(path)), *small, cache=cache,
                            log=pytest.fail)
        assert "\n" not in str(err.value), str(err.value)
    assert not cache.exists()


def test_negative_batch_norm_variances_are_refused(tmp_path):
    """Folded into the convolution they give NaN weights, which the quantizer fails on later."""
    state = zoo.build_model("resnet8", (1, 28, 28), 10).state_dict()
    state["layer1.0.bn2.running_var"][5] = -0.5
    path = saved(tmp_path, state)
    with pytest.raises(ModelError, match=f"^model.checkpoint {path}: layer1.0.bn2.running_var "
                                         "holds negative variances, expected values >= 0$"):
        zoo.load_checkpoint("resnet8", (1, 28, 28), 10, path)


def test_the_command_line_refuses_a_checkpoint_zip_bomb(tmp_path):
    """A 2.4 MB checkpoint unpacking to 2.35 GB (torch.load took 24 s and 2.5 GB on it): exit 2
    and one ``dse: error:`` line before torch.load, nothing written, far under 1 GiB."""
    bomb = bombed(tmp_path, zoo.build_model("lenet5", (1, 28, 28), 10).state_dict(), "4",
                  2_350_000_000)
    assert bomb.stat().st_size < 3_000_000
    rng = np.random.default_rng(0)
    data = write_zip(tmp_path / "digits.npz", {f"{k}.npy": (npy(v), 0) for k, v in {
        "x_train": rng.integers(0, 256, (20, 28, 28), dtype=np.uint8),
        "y_train": np.arange(20) % 10, "x_test": rng.integers(0, 256, (10, 28, 28), dtype=np.uint8),
        "y_test": np.arange(10)}.items()})
    out = tmp_path / "out.onnx"
    done = run_dse(tmp_path, "zoo", "export", "lenet5", "--npz", str(data), "--checkpoint",
                   str(bomb), "-o", str(out))
    line = refused_in_one_line(done)
    assert line.startswith(f"model.checkpoint {bomb}: its zip entries unpack to 2350")
    assert not out.exists() and not (tmp_path / "cache").exists()


def test_a_data_parallel_checkpoint_loads(tmp_path):
    model = zoo.build_model("lenet5", (1, 28, 28), 10, seed=3)
    path = saved(tmp_path, {"module." + k: v for k, v in model.state_dict().items()})
    loaded = zoo.load_checkpoint("lenet5", (1, 28, 28), 10, path)
    for a, b in zip(model.state_dict().values(), loaded.state_dict().values()):
        assert torch.equal(a, b)


def test_the_model_is_checked_against_the_data_before_training(small, tmp_path):
    train, test = small
    features = [replace(s, images=Preprocessing().apply(s.images).reshape(len(s.labels), -1))
                for s in small]
    with pytest.raises(ModelError, match=r"resnet8 is a convolutional network .*\(784,\)"):
        prepare_network(settings("resnet8"), *features, cache=tmp_path, log=pytest.fail)
    assert not any(tmp_path.iterdir())
    with pytest.raises(ModelError, match="layout NHWC: the registry architecture lenet5 reads "
                                         "NCHW images"):
        prepare_network(settings("lenet5"), train, test, preprocessing=Preprocessing(layout="NHWC"),
                        cache=tmp_path, log=pytest.fail)
    assert not any(tmp_path.iterdir())
    fcnn = prepare_network(settings("fcnn"), *features, cache=tmp_path, log=lambda s: None)
    assert fcnn.report["input_shape"] == [784] and fcnn.report["augmentation"] is None


def test_a_user_float_onnx_model_and_its_quantized_form(small, cache, tmp_path):
    """The onnx route: a float model is quantized here (float and int8 metrics), an already
    quantized one is used as it is (no float metrics); MACs and parameters from the graph."""
    fcnn = prepare_network(settings("fcnn"), *small, cache=cache, log=lambda s: None)
    user = tmp_path / "my model.onnx"
    user.write_bytes(fcnn.float_onnx.read_bytes())
    imported = prepare_network(settings(None, onnx=str(user)), *small, cache=cache,
                               log=lambda s: None)
    report = imported.report
    assert imported.folder.name.startswith("onnx-my_model-")
    assert report["route"] == "onnx" and report["format"] == "float" and report["arch"] is None
    assert report["int8"] == fcnn.report["int8"] and report["float"] == fcnn.report["float"]
    assert report["macs_per_image"] == zoo.macs("fcnn", (1, 28, 28), 10)
    assert report["parameters"] == zoo.parameters("fcnn", (1, 28, 28), 10)
    quantized = tmp_path / "quantized.onnx"
    quantized.write_bytes(fcnn.int8_onnx.read_bytes())
    lines: list[str] = []
    used = prepare_network(settings(None, onnx=str(quantized)), *small, cache=cache,
                           log=lines.append)
    assert "float" not in used.report and "came quantized" in used.report["float_absent"]
    assert used.report["int8"] == fcnn.report["int8"] and not used.float_onnx.exists()
    assert any("float not measured" in line for line in lines)
    again = prepare_network(settings(None, onnx=str(quantized), epochs=7), *small, cache=cache,
                            log=lines.append)
    assert again.folder == used.folder and "reusing" in lines[-1]  # training fields unused


def test_a_user_model_with_other_classes_is_refused_before_any_work(small, tmp_path):
    model = zoo.build_model("fcnn", (1, 28, 28), 100, seed=0)
    zoo.export_float_onnx(model, (1, 28, 28), tmp_path / "m.onnx")
    with pytest.raises(ModelError, match="100 outputs.*10 classes"):
        prepare_network(settings(None, onnx=str(tmp_path / "m.onnx")), *small,
                        cache=tmp_path / "cache", log=pytest.fail)
    assert not (tmp_path / "cache").exists()


def test_hundred_classes_report_top5_and_cifar_preprocessing_is_part_of_the_key(tmp_path):
    rng = np.random.default_rng(0)

    def split(n: int) -> Split:
        images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
        labels = np.arange(n) % 100
        return Split(images, labels, (), hashlib.md5(images.tobytes()).hexdigest(), 100)

    data = split(300), split(200)
    cifar = prepare_network(settings("fcnn"), *data, preprocessing=CIFAR, cache=tmp_path,
                            log=lambda s: None)
    assert "top5_accuracy" in cifar.report["int8"] and "top5_accuracy" in cifar.report["float"]
    assert cifar.report["preprocessing"]["mean"] == list(CIFAR.mean)
    plain = prepare_network(settings("fcnn"), *data, cache=tmp_path, log=lambda s: None)
    assert plain.key != cifar.key


def test_a_trained_residual_network_equals_onnxruntime_on_real_images(trained, small):
    """Trained weights (real post-ReLU sparsity), real images: every tensor bit for bit."""
    x = Preprocessing().apply(small[1].images)
    session, names = ort_with_every_tensor(trained.int8_onnx)
    expected = dict(zip(names, session.run(None, {"input": x})))
    got = approx_runner.run(QGraph.from_onnx(trained.int8_onnx), {"input": x}, EXACT, cpu,
                            capture=names)
    for name in names:
        np.testing.assert_array_equal(got[name], expected[name], err_msg=name)
    assert (got["logits"].argmax(1) == small[1].labels).mean() == trained.report["int8"]["accuracy"]
