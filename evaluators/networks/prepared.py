"""The network under study, prepared once and cached: float and int8 ONNX models and a report.

Three routes lead to the int8 model the approximate runner scores:

- ``train``: a registry architecture (``evaluators.networks.zoo``) trained here, deterministically;
- ``checkpoint``: a registry architecture with a user's pretrained PyTorch weights;
- ``onnx``: a user's ONNX classifier, quantized here if float, used as it is if already
  quantized (``evaluators.networks.model_import``).

Registry networks are exported with batch norm folded (transformers with their shape
computations folded) and quantized by onnxruntime: statically, with calibration samples drawn
(seeded) from the training split, or dynamically (``quantization.mode``). The model is checked
against the data (sample shape, class count) before any training or quantization. A prepared
network is keyed by everything that determines it (route, architecture and training settings,
the checkpoint's sha256 or that of every file the ONNX model reads, its external data included,
preprocessing, seed, both splits' checksums, calibration size, quantization scheme, format and
mode, torch and onnxruntime versions), so a second study with the same settings reuses it. Each
cache entry records what it was built from and is reused only when that record is the key's;
a rebuild replaces only its own key's entry, by renames, so readers never see half of one.
Training shows a progress bar with rate and ETA on an interactive stderr, and one log line per
epoch otherwise.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from accel import cpu
from circuits.cache import cache_dir
from circuits.product_table import ProductTable
from evaluators.classification import logits_metrics
from evaluators.data import Split
from evaluators.data.preprocess import Preprocessing
from evaluators.errors import ModelError
from evaluators.networks import zoo
from evaluators.networks.model_import import (
    check_data,
    external_tensors,
    import_model,
    inspect_model,
)
from evaluators.networks.ort_exactness import session as ort_session
from evaluators.networks.quantization import (
    OPERANDS,
    operand_scheme,
    quantize_dynamic_int8,
    quantize_int8,
)
from evaluators.networks.training import augmentation, train_classifier
from evaluators.networks.zoo import architecture, build_model
from evaluators.runtime import approx_runner
from evaluators.runtime.ops import TABLE_OPS
from evaluators.runtime.qgraph import QGraph
from evaluators.runtime.workload import layer_macs

FLOAT_ONNX = "float.onnx"
INT8_ONNX = "int8.onnx"
REPORT = "network.json"
_FORMAT = 2  # of the cache key and report
_BATCH = 500  # samples per onnxruntime run when measuring (bounded memory for VGG-16)


@dataclass(frozen=True)
class TrainingSettings:
    """What determines a prepared network. ``checkpoint`` (with ``arch``) loads pretrained
    weights instead of training; ``onnx`` takes a user's model (``arch`` and the training
    fields are then unused)."""

    arch: str | None
    epochs: int
    batch_size: int
    learning_rate: float
    augment: bool
    seed: int
    calibration_size: int
    checkpoint: str | None = None
    onnx: str | None = None
    scheme: str = "s8s8"  # evaluators.networks.quantization.SCHEMES
    quant_format: str = "qoperator"
    reduce_range: bool = False  # 7-bit weights (onnxruntime's option)
    mode: str = "static"  # evaluators.networks.quantization.MODES

    @property
    def route(self) -> str:
        """``onnx``, ``checkpoint`` or ``train``."""
        return "onnx" if self.onnx else "checkpoint" if self.checkpoint else "train"


@dataclass(frozen=True)
class PreparedNetwork:
    """Paths of the float and int8 ONNX models and their report (``network.json``). A model
    that came quantized has no float model and no ``float`` metrics."""

    folder: Path
    key: str
    report: dict

    @property
    def float_onnx(self) -> Path:
        return self.folder / FLOAT_ONNX

    @property
    def int8_onnx(self) -> Path:
        return self.folder / INT8_ONNX


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def external_data(model_path: Path) -> list[str]:
    """The external-data files an ONNX model reads, by location (relative to its folder), each
    once, sorted; onnx's checker (``model_import.load_model``) has refused missing ones and
    locations outside the model's folder."""
    import onnx

    model = onnx.load(str(model_path), load_external_data=False)
    return sorted({info.location for _, info in external_tensors(model)})


def network_key(settings: TrainingSettings, train: Split, test: Split,
                preprocessing: Preprocessing) -> str:
    """Cache key of a prepared network: what its route depends on, nothing else (changing the
    epochs does not rebuild an imported ONNX model)."""
    return _digest(network_identity(settings, train, test, preprocessing))


def _digest(identity: dict) -> str:
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:20]


def network_identity(settings: TrainingSettings, train: Split, test: Split,
                     preprocessing: Preprocessing) -> dict:
    """What the cache key hashes, as a cache entry records it (JSON values): every input the
    route reads, its source files' sha256 included."""
    import onnxruntime

    ident: dict = {
        "route": settings.route,
        "seed": settings.seed,
        "calibration_size": settings.calibration_size,
        "preprocessing": dataclasses.asdict(preprocessing),
        "train_md5": train.md5,
        "test_md5": test.md5,
        "classes": train.classes,
        "onnxruntime": onnxruntime.__version__,
        "format": _FORMAT,
    }
    if (settings.scheme, settings.quant_format) != ("s8s8", "qoperator"):
        ident["quantization"] = [settings.scheme, settings.quant_format]  # S8S8 keys unchanged
    if settings.reduce_range:
        ident["reduce_range"] = True
    if settings.mode != "static":
        ident["quantization_mode"] = settings.mode  # keys of static networks unchanged
    if settings.route == "onnx":
        model = Path(settings.onnx)
        ident["onnx_sha256"] = _sha256(model)
        if files := external_data(model):  # keys of models without external data unchanged
            ident["onnx_external_sha256"] = {f: _sha256(model.parent / f) for f in files}
    else:
        import torch

        ident.update(arch=settings.arch, torch=torch.__version__)
        if settings.route == "checkpoint":
            ident["checkpoint_sha256"] = _sha256(Path(settings.checkpoint))
        else:
            ident.update({k: getattr(settings, k)
                          for k in ("epochs", "batch_size", "learning_rate", "augment")})
    return json.loads(json.dumps(ident, sort_keys=True))  # as an entry's record reads back


def _folder_name(settings: TrainingSettings, key: str) -> str:
    if settings.route == "onnx":
        stem = re.sub(r"[^A-Za-z0-9_.]+", "_", Path(settings.onnx).stem)[:40]
        return f"onnx-{stem}-{key}"
    return f"{settings.arch}-{key}"


def _check(settings: TrainingSettings, train: Split, preprocessing: Preprocessing):
    """The model checked against the data before any work: the loaded checkpoint model, the
    ONNX model's info, or None for a registry network to train (one-line ModelError)."""
    input_shape = preprocessing.input_shape(train.images)
    if settings.route != "onnx" and preprocessing.layout != "NCHW" and len(input_shape) == 3:
        raise ModelError(f"model.preprocessing.layout {preprocessing.layout}: the registry "
                         f"architecture {settings.arch} reads NCHW images (the layout is for "
                         "a user's ONNX model)")
    if settings.route == "onnx":
        if settings.checkpoint:
            raise ModelError("model: give either onnx or checkpoint, not both")
        info = inspect_model(Path(settings.onnx))
        check_data(info, input_shape, train.classes)
        return info
    if settings.route == "checkpoint":
        return zoo.load_checkpoint(settings.arch, input_shape, train.classes,
                                   Path(settings.checkpoint))
    zoo.build_model(settings.arch, input_shape, train.classes)
    return None


def prepare_network(
    settings: TrainingSettings,
    train: Split,
    test: Split,
    *,
    preprocessing: Preprocessing | None = None,
    reuse: bool = True,
    cache: Path | None = None,
    log: Callable[[str], None] = print,
    progress: bool | None = None,
) -> PreparedNetwork:
    """Return the cached network for these settings, preparing it if needed (the cache folder
    appears whole or not at all). ``preprocessing`` turns samples into the network's inputs
    (default: [0, 1] pixels, NCHW); ``progress``: show the training bar (None: when stderr is a
    terminal)."""
    preprocessing = preprocessing or Preprocessing()
    checked = _check(settings, train, preprocessing)
    identity = network_identity(settings, train, test, preprocessing)
    key = _digest(identity)
    folder = (cache or cache_dir() / "networks") / _folder_name(settings, key)
    if reuse and (folder / REPORT).is_file():
        report = json.loads((folder / REPORT).read_text())
        if report.get("identity", identity) == identity:  # entries before the record: by key
            log(f"reusing prepared network {folder}" if settings.route == "onnx"
                else f"reusing trained network {folder}")
            return PreparedNetwork(folder, key, report)
        log(f"the cached network {folder} was built from other inputs than its key's; "
            "rebuilding it")
    folder.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".tmp-", dir=folder.parent))
    try:
        report = _build(settings, checked, train, test, preprocessing, work, log, progress)
        if network_identity(settings, train, test, preprocessing) != identity:
            raise ModelError(f"{settings.onnx or settings.checkpoint}: the model (or its "
                             "external data) changed while the network was prepared from it; "
                             "run again")
        text = json.dumps({**report, "key": key, "identity": identity}, indent=2)
        (work / REPORT).write_text(text)
        report = json.loads(text)  # as a later study reads it back
        _install(work, folder)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return PreparedNetwork(folder, key, report)


def _install(work: Path, folder: Path) -> None:
    """Make the built entry ``work`` the cache entry ``folder`` by renames: a reader sees the
    old entry whole or the new one whole. Where a concurrent build of the same key got there
    first, its entry stays (the same inputs give the same network)."""
    trash = Path(tempfile.mkdtemp(prefix=".old-", dir=folder.parent))
    old = trash / folder.name
    try:
        if folder.exists():
            folder.rename(old)
        try:
            work.rename(folder)
        except OSError:
            if (folder / REPORT).is_file():
                return
            if old.exists():  # the old entry back rather than none
                old.rename(folder)
            raise
    finally:
        shutil.rmtree(trash, ignore_errors=True)


def train_model(settings: TrainingSettings, inputs: np.ndarray, labels: np.ndarray,
                classes: int, progress: Callable[[int, float], None] | None = None):
    """The registry network of ``settings`` trained on preprocessed ``inputs`` (seeded
    initialization and training: the same call gives the same weights)."""
    model = build_model(settings.arch, inputs.shape[1:], classes, seed=settings.seed)
    return train_classifier(model, inputs, labels, epochs=settings.epochs,
                            batch_size=settings.batch_size, learning_rate=settings.learning_rate,
                            augment=settings.augment, seed=settings.seed,
                            l1=architecture(settings.arch).l1,
                            weight_decay=architecture(settings.arch).weight_decay,
                            progress=progress)


def _train(settings: TrainingSettings, train: Split, inputs: np.ndarray, log,
           progress: bool | None):
    title = architecture(settings.arch).title
    log(f"training {title} on {len(train.labels)} images for {settings.epochs} epochs (CPU)")
    with tqdm(total=settings.epochs, desc=f"training {title}", unit="epoch", file=sys.stderr,
              disable=None if progress is None else not progress, dynamic_ncols=True) as bar:

        def epoch_done(epoch: int, loss: float) -> None:
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}")
            if bar.disable:  # no bar to show it: a line per epoch
                log(f"  epoch {epoch}/{settings.epochs}: loss {loss:.4f}")

        return train_model(settings, inputs, train.labels, train.classes, epoch_done)


def _build(settings: TrainingSettings, checked, train: Split, test: Split,
           preprocessing: Preprocessing, work: Path, log, progress: bool | None) -> dict:
    """Write float.onnx (unless the model came quantized) and int8.onnx into ``work``; the
    report."""
    inputs = preprocessing.apply(train.images)
    rng = np.random.default_rng(settings.seed)
    pick = np.sort(rng.choice(len(train.labels), replace=False,
                              size=min(settings.calibration_size, len(train.labels))))
    calibration = inputs[pick]
    if settings.route == "onnx":
        del inputs
        report = _import(settings, work, calibration, train.classes, log)
    else:
        if settings.route == "checkpoint":
            log(f"using {settings.arch} weights from {settings.checkpoint} (no training)")
            model = checked
        else:
            model = _train(settings, train, inputs, log, progress)
        del inputs
        report = _quantize(settings, model, work, calibration, log)
    report.update({
        "settings": dataclasses.asdict(settings),
        "preprocessing": dataclasses.asdict(preprocessing),
        "input_shape": list(calibration.shape[1:]),
        "classes": train.classes,
        "train_images": len(train.labels),
        "train_md5": train.md5,
        "test_images": len(test.labels),
        "test_md5": test.md5,
        "calibration_images": len(pick),
        "operand_scheme": operand_scheme(QGraph.from_onnx(work / INT8_ONNX)),
    })
    report.update(_measure(work, preprocessing.apply(test.images), test.labels, train.classes,
                           log))
    return report


def _import(settings: TrainingSettings, work: Path, calibration: np.ndarray, classes: int,
            log) -> dict:
    """The onnx route: the user's model imported (quantized if float) and its outputs counted
    against the dataset's ``classes``; its MACs and parameters read from the int8 graph."""
    info = import_model(Path(settings.onnx), work, calibration, log, scheme=settings.scheme,
                        quant_format=settings.quant_format, reduce_range=settings.reduce_range,
                        classes=classes, mode=settings.mode)
    layers = int8_layer_macs(work / INT8_ONNX, calibration[:1])
    return {"route": "onnx", "arch": None, "source": str(Path(settings.onnx).resolve()),
            "format": info.format, "parameters": layer_parameters(work / INT8_ONNX),
            "macs_per_image": sum(layers.values()), "layer_macs": layers}


def _quantize(settings: TrainingSettings, model, work: Path, calibration: np.ndarray,
              log) -> dict:
    """A registry network (trained or loaded) exported with batch norm folded and quantized.
    A transformer's layers are counted in the int8 graph, by the runner's node names: its
    attention products are no modules to hook."""
    shape = calibration.shape[1:]
    zoo.export_float_onnx(model, shape, work / FLOAT_ONNX)
    weights = ", 7-bit weights" if settings.reduce_range else ""
    if settings.mode == "dynamic":
        log(f"quantizing to 8 bits dynamically, {settings.scheme.upper()}{weights}")
        quantize_dynamic_int8(work / FLOAT_ONNX, work / INT8_ONNX, scheme=settings.scheme,
                              reduce_range=settings.reduce_range)
    else:
        log(f"quantizing to 8 bits, {settings.scheme.upper()} {settings.quant_format}{weights} "
            f"(calibration on {len(calibration)} training images)")
        quantize_int8(work / FLOAT_ONNX, work / INT8_ONNX, calibration,
                      quant_format=settings.quant_format, scheme=settings.scheme,
                      reduce_range=settings.reduce_range)
    layers = int8_layer_macs(work / INT8_ONNX, calibration[:1]) if zoo.is_transformer(model) \
        else zoo.model_layer_macs(model, shape)
    report = {"route": settings.route, "arch": settings.arch,
              "source": settings.checkpoint and str(Path(settings.checkpoint).resolve()),
              "parameters": zoo.count_parameters(model),
              "macs_per_image": sum(layers.values()), "layer_macs": layers}
    if settings.route == "train":
        report["augmentation"] = augmentation(shape) if settings.augment else None
    return report


def _measure(work: Path, x: np.ndarray, labels: np.ndarray, classes: int, log) -> dict:
    """Test metrics of the float (when there is one) and int8 models, run by onnxruntime."""
    has_float = (work / FLOAT_ONNX).is_file()
    log(f"measuring the {'float and int8 networks' if has_float else 'int8 network'} on "
        f"{len(labels)} test images")
    out = {}
    if has_float:
        out["float"] = logits_metrics(_onnx_logits(work / FLOAT_ONNX, x), labels, classes)
    else:
        out["float_absent"] = "the model came quantized: there is no float model to measure"
    out["int8"] = logits_metrics(_onnx_logits(work / INT8_ONNX, x), labels, classes)
    float_text = f"float {out['float']['accuracy']:.4f}, " if has_float else \
        "float not measured (the model came quantized), "
    log(f"test accuracy: {float_text}int8 {out['int8']['accuracy']:.4f}")
    return out


def int8_layer_macs(int8_onnx: Path, sample: np.ndarray) -> dict[str, int]:
    """Multiplications per sample of each table-multiplying layer of a quantized model (as the
    approximate runner reads it, QDQ included), by node name, from one run on ``sample``
    (1, ...): each output times the products summed into it (a convolution's kernel volume,
    a product's inner dimension; two activations multiplied included)."""
    graph = QGraph.from_onnx(int8_onnx)
    layers = [n for n in graph.nodes if n.op in OPERANDS]
    captured = approx_runner.run(graph, {graph.inputs[0]: sample}, ProductTable.exact(True), cpu,
                                 capture=[t for n in layers for t in (n.inputs[0], n.outputs[0])])
    return {node.name: layer_macs(graph, node, captured) for node in layers}


def layer_parameters(int8_onnx: Path) -> int:
    """Weights and biases of the table-multiplying layers of a quantized model."""
    graph = QGraph.from_onnx(int8_onnx)
    total = 0
    for node in (n for n in graph.nodes if n.op in TABLE_OPS):
        bias = {"QLinearConv": 8, "QGemm": 6}.get(node.op)
        for i in (3, bias) if bias is not None else (3,):
            if i < len(node.inputs) and node.inputs[i] in graph.initializers:
                total += graph.initializers[node.inputs[i]].size
    return total


def _onnx_logits(model: Path, x: np.ndarray) -> np.ndarray:
    """The outputs of an ONNX model run by onnxruntime (in its precision mode: exact integer
    products wherever it has them on this CPU), a batch of samples at a time."""
    session = ort_session(model)
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: x[i : i + _BATCH]})[0]
                           for i in range(0, len(x), _BATCH)])
