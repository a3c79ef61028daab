"""A user's own ONNX classifier (float or already quantized) becomes the study's int8 network.

A float model takes the EMGAxO route: its shape computations folded for the study's sample shape
(``shape_folding.fold_shapes``: what a transformer's exporter computes from ``Shape(x)``),
onnxruntime's pre-processing (symbolic shape inference and graph optimization), then static
quantization with calibration inputs from the study's dataset
(``evaluators.networks.quantization.quantize_int8``, in the study's scheme and format) or
dynamic quantization (``quantize_dynamic_int8``, the calibration unused). An already
quantized model (QOperator or QDQ; S8S8, U8S8 or U8U8) is used as it is. Either way the int8
file is checked before any study work: onnxruntime runs it, the approximate runner supports
every op, with the exact table it gives onnxruntime's outputs, and its real output has one
score per class of the dataset (a symbolic class axis declares no count). Every refusal is one
line naming the file and what is expected.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import onnx
from onnx.external_data_helper import (
    ExternalDataInfo,
    _get_all_tensors,
    load_external_data_for_model,
    uses_external_data,
)

from accel import reference
from circuits.product_table import ProductTable
from evaluators.errors import ModelError
from evaluators.networks import ort_exactness
from evaluators.networks.quantization import (
    OPERANDS,
    activation_products,
    operand_scheme,
    quantize_dynamic_int8,
    quantize_int8,
    seven_bit_weights,
)
from evaluators.networks.shape_folding import fold_shapes, folding_summary
from evaluators.runtime import approx_runner
from evaluators.runtime.ops import TABLE_OPS
from evaluators.runtime.qgraph import QGraph
from evaluators.runtime.transforms import optimize

Format = Literal["float", "qoperator", "qdq"]
Log = Callable[[str], None]

FLOAT_ONNX = "float.onnx"
INT8_ONNX = "int8.onnx"

# ops that only exist in QOperator-format (or dynamically quantized) graphs
_QOPERATOR_OPS = {"QGemm", "ConvInteger", "MatMulInteger", "DynamicQuantizeLinear",
                  "MatMulIntegerToFloat", "DynamicQuantizeMatMul"}
# the float ops whose operands a QDQ graph dequantizes
_QDQ_TARGETS = {"Conv", "ConvTranspose", "Gemm", "MatMul"}
_VERIFY_SAMPLES = 2


@dataclass(frozen=True)
class ModelInfo:
    """What the study needs to know about a user's ONNX classifier."""

    path: Path
    format: Format
    input_name: str
    input_shape: tuple[int | None, ...]  # per sample (no batch axis); None = symbolic dim
    classes: int | None  # the output's last dim, if static


def inspect_model(path: Path, model: onnx.ModelProto | None = None) -> ModelInfo:
    """Read (unless ``model``, its proto as ``load_model`` read it, is given) and check a user's
    ONNX classifier: one float32 input (batch, ...), one output (batch, classes), and its
    format; ``ModelError`` (one line) when it cannot be used."""
    path = Path(path)
    model = model if model is not None else load_model(path)
    graph = model.graph
    initializers = {t.name for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initializers]
    if len(inputs) != 1 or len(graph.output) != 1:
        raise ModelError(
            f"{path}: the model has {len(inputs)} input(s) and {len(graph.output)} output(s); "
            "expected a classifier with one input (batch, ...) and one output (batch, classes)"
        )
    source, output = inputs[0], graph.output[0]
    if source.type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
        kind = onnx.TensorProto.DataType.Name(source.type.tensor_type.elem_type).lower()
        raise ModelError(
            f"{path}: input {source.name!r} is {kind}; expected float32 (a quantized model still "
            "takes float input and quantizes it itself)"
        )
    input_dims = _dims(source)
    if input_dims is None or len(input_dims) < 2:
        raise ModelError(f"{path}: input {source.name!r} has shape {_shape_text(input_dims)}; "
                         "expected (batch, ...) with at least one axis per sample")
    output_dims = _dims(output)
    if output_dims is not None and len(output_dims) != 2:
        raise ModelError(f"{path}: output {output.name!r} has shape {_shape_text(output_dims)}; "
                         "expected (batch, classes)")
    return ModelInfo(path, _format(graph), source.name, input_dims[1:],
                     output_dims[1] if output_dims is not None else None)


def check_data(info: ModelInfo, input_shape: tuple[int, ...], classes: int) -> None:
    """Refuse data the model cannot read: the preprocessed per-sample shape (symbolic dims match
    anything) and the class count must be the model's."""
    expected = info.input_shape
    if not _matches(expected, input_shape):
        raise ModelError(
            f"{info.path}: the model reads samples of shape {_shape_text(expected)}, but the "
            f"preprocessed data has {_shape_text(input_shape)}{_shape_hint(expected, input_shape)}"
        )
    if info.classes is not None and info.classes != classes:
        raise _classes_error(info.path, info.classes, classes)


def _classes_error(path: Path, outputs: int, classes: int) -> ModelError:
    return ModelError(f"{path}: the model has {outputs} outputs, but the dataset has {classes} "
                      "classes; expected a classifier with one output per class")


def import_model(path: Path, folder: Path, calibration: np.ndarray, log: Log = print, *,
                 scheme: str = "s8s8", quant_format: str = "qoperator",
                 reduce_range: bool = False, classes: int | None = None,
                 mode: str = "static") -> ModelInfo:
    """Write ``folder/int8.onnx`` (and ``folder/float.onnx``, its shape computations folded,
    for a float model) from a user's model, quantizing a float one with ``calibration``
    (preprocessed float32 inputs (N, ...)) in ``scheme``, ``quant_format`` and with
    ``reduce_range`` (``quantize_int8``), or dynamically in ``mode`` "dynamic"
    (``quantize_dynamic_int8``: ``scheme`` u8s8 or u8u8, QOperator), and check
    that the study can run it, with one output per class of the dataset's ``classes`` when
    given; returns what ``inspect_model`` found."""
    path, folder = Path(path), Path(folder)
    calibration = np.ascontiguousarray(calibration, dtype=np.float32)
    model = load_model(path)  # read and checked once
    info = inspect_model(path, model)
    folder.mkdir(parents=True, exist_ok=True)
    if mode == "dynamic" and info.format == "float" and (
            scheme == "s8s8" or quant_format == "qdq"):
        raise ModelError(f"{path}: dynamic quantization writes uint8 activations "
                         f"(DynamicQuantizeLinear) in QOperator form; expected scheme u8s8 or "
                         f"u8u8 and format qoperator, got {scheme} {quant_format}")
    if _free_batch(model):
        log(f"{path}: the batch axis was fixed; importing it with a symbolic batch axis")
    int8 = folder / INT8_ONNX
    if info.format == "float":
        log(f"importing float ONNX model {path}: quantizing to int8 " + (
            "dynamically" if mode == "dynamic" else
            f"(calibration on {len(calibration)} samples)"))
        folded = fold_shapes(model, calibration.shape[1:], source=str(path))
        log(f"shape computations folded for samples of {_shape_text(calibration.shape[1:])}: "
            f"{folding_summary(model, folded)}")
        onnx.save(folded, str(folder / FLOAT_ONNX))
        _quantize(path, folder / FLOAT_ONNX, int8, calibration, log, scheme, quant_format,
                  reduce_range, mode)
    else:
        log(f"importing {info.format} ONNX model {path}: used as it is")
        onnx.save(model, str(int8))
    scores = _verify(info, int8, calibration[:_VERIFY_SAMPLES], log)
    if classes is not None:
        _check_classes(info, scores, classes)
    return info


def load_model(path: Path) -> onnx.ModelProto:
    """The model proto with its external data read in (so that what a command writes from it
    stands alone), after checking that every external tensor lies inside an existing file of
    the model's folder, that its opset is one onnx knows, and onnx's checker."""
    if not path.is_file():  # a device, a FIFO or a folder is never read
        raise ModelError(f"{path}: not a regular file; expected an ONNX model file" if
                         path.exists() else f"{path}: no such ONNX model file")
    if path.stat().st_size > MAX_MODEL_BYTES:
        raise ModelError(f"{path}: {path.stat().st_size:,} bytes; a protobuf ONNX file holds at "
                         f"most {MAX_MODEL_BYTES:,} (larger weights go in external data)")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as err:  # protobuf's DecodeError and friends: not an ONNX file
        raise ModelError(f"{path}: not a readable ONNX model ({_one_line(err)}); expected an "
                         "ONNX ModelProto file") from None
    _check_opset(path, model)
    _check_external_data(path, model)
    try:
        onnx.checker.check_model(str(path))
        load_external_data_for_model(model, str(path.parent))
    except Exception as err:
        raise ModelError(f"{path}: not a valid ONNX model ({_one_line(err)})") from None
    return model


MAX_MODEL_BYTES = 2 << 30  # protobuf's limit on one message
MAX_EXTERNAL_BYTES = 4 << 30  # more weights than any network dse scores on 2 cores


def external_tensors(model: onnx.ModelProto) -> list[tuple[onnx.TensorProto, ExternalDataInfo]]:
    """The tensors whose data lie in external files (initializers, Constant nodes, subgraphs),
    with where: ``ExternalDataInfo.location``, ``offset``, ``length``."""
    return [(t, ExternalDataInfo(t)) for t in _get_all_tensors(model) if uses_external_data(t)]


def _check_opset(path: Path, model: onnx.ModelProto) -> None:
    """Refuse an opset from the future (onnxruntime would fail on it after printing pages)."""
    known = onnx.defs.onnx_opset_version()
    for opset in model.opset_import:
        if opset.domain in ("", "ai.onnx") and opset.version > known:
            raise ModelError(f"{path}: opset {opset.version} of the default domain; this onnx "
                             f"({onnx.__version__}) knows opsets up to {known}")


def _check_external_data(path: Path, model: onnx.ModelProto) -> None:
    """Every external tensor: a file of the model's own folder (no path out of it), present,
    and its offset and length inside it, before a byte of it is read; in all at most
    ``MAX_EXTERNAL_BYTES``."""
    folder, total = path.parent.resolve(), 0
    for tensor, info in external_tensors(model):
        file = (folder / info.location).resolve()
        if not info.location or folder not in file.parents:
            raise ModelError(f"{path}: tensor {tensor.name!r} names external data "
                             f"{info.location!r} outside the model's folder")
        if not file.is_file():
            raise ModelError(f"{path}: external data file {info.location!r} of tensor "
                             f"{tensor.name!r} is missing; expected it in {path.parent}")
        size, offset = file.stat().st_size, int(info.offset or 0)
        length = int(info.length) if info.length else size - offset
        if offset < 0 or length < 0 or offset + length > size:
            raise ModelError(f"{path}: tensor {tensor.name!r} declares {length:,} bytes at offset "
                             f"{offset:,} of {info.location!r}, which holds {size:,}")
        total += length
    if total > MAX_EXTERNAL_BYTES:
        raise ModelError(f"{path}: {total:,} bytes of external data; at most "
                         f"{MAX_EXTERNAL_BYTES:,} are read")


def _dims(value: onnx.ValueInfoProto) -> tuple[int | None, ...] | None:
    """A tensor's declared dims (None for a symbolic or unknown one), None without a shape."""
    tensor = value.type.tensor_type
    if not tensor.HasField("shape"):
        return None
    return tuple(d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim)


def _format(graph: onnx.GraphProto) -> Format:
    """QOperator when quantized ops are present, QDQ when DequantizeLinear feeds a float
    Conv/Gemm/MatMul, float otherwise."""
    ops = {n.op_type for n in graph.node}
    if any(op.startswith("QLinear") or op in _QOPERATOR_OPS for op in ops):
        return "qoperator"
    dequantized = {o for n in graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    if "QuantizeLinear" in ops and any(
            n.op_type in _QDQ_TARGETS and dequantized & set(n.input) for n in graph.node):
        return "qdq"
    return "float"


def _free_batch(model: onnx.ModelProto) -> bool:
    """Make a fixed batch axis of the input and output symbolic, so that the study can feed
    batches of any size; intermediate shapes are dropped (inferred again). True if changed."""
    initializers = {t.name for t in model.graph.initializer}
    changed = False
    for value in [*model.graph.input, *model.graph.output]:
        dims = value.type.tensor_type.shape.dim
        if value.name not in initializers and dims and dims[0].HasField("dim_value"):
            dims[0].dim_param = "batch"
            changed = True
    if changed:
        del model.graph.value_info[:]
    return changed


def _quantize(origin: Path, float_onnx: Path, int8: Path, calibration: np.ndarray,
              log: Log, scheme: str, quant_format: str, reduce_range: bool, mode: str) -> None:
    """onnxruntime's pre-processing (or the plain model where it fails), then static or
    dynamic int8 quantization."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory(dir=int8.parent) as tmp:
        source = Path(tmp).resolve() / "preprocessed.onnx"
        try:
            with _working_in(Path(tmp)):  # its symbolic shape inference writes into the cwd
                quant_pre_process(str(float_onnx.resolve()), str(source))
        except Exception as err:  # its failures are many and varied; the plain model may do
            log(f"onnxruntime's pre-processing failed ({_one_line(err)}); quantizing the plain model")
            source = float_onnx
        try:
            if mode == "dynamic":
                quantize_dynamic_int8(source, int8, scheme=scheme, reduce_range=reduce_range)
            else:
                quantize_int8(source, int8, calibration, quant_format=quant_format,
                              scheme=scheme, reduce_range=reduce_range)
        except Exception as err:
            raise ModelError(f"{origin}: onnxruntime could not quantize the model "
                             f"({_one_line(err)})") from None


@contextlib.contextmanager
def _working_in(folder: Path):
    """Run the block with ``folder`` as the current directory (``contextlib.chdir`` is 3.11+)."""
    previous = os.getcwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(previous)


def _verify(info: ModelInfo, int8: Path, samples: np.ndarray, log: Log) -> np.ndarray:
    """onnxruntime runs the int8 model; the approximate runner supports it and multiplies int8
    operands; with the exact table it gives the exact products' outputs. These are
    onnxruntime's in its precision mode wherever that is exact on this CPU for the model's
    scheme (``ort_exactness``): a difference there is a warning. Where onnxruntime's default
    kernels saturate, one informational line says so. Returns onnxruntime's outputs."""
    try:
        reference_run = reference_session(int8)
        expected = reference_run.run(None, {info.input_name: samples})[0]
    except Exception as err:
        raise ModelError(f"{info.path}: onnxruntime cannot run the int8 model "
                         f"({_one_line(err)})") from None
    try:
        graph = QGraph.from_onnx(int8)
    except ModelError as err:  # the runner's UnsupportedOpError included
        raise ModelError(f"{info.path}: {err}") from None
    _check_table_layers(info.path, graph)
    scheme, fmt = operand_scheme(graph), _format(onnx.load(str(int8)).graph)
    products = activation_products(graph)
    exactness = ort_exactness.probe()
    if not (exactness.exact(scheme, fmt, precise=False, activation_products=products)
            or seven_bit_weights(graph) and not products):
        log(f"note: onnxruntime's default {scheme.upper()} {fmt} kernels saturate on this CPU "
            "(uint8 x int8 pairs summed in int16 without AVX-512 VNNI); dse computes the exact "
            "products. onnxruntime recommends quantization.reduce_range: true (7-bit weights) "
            "or U8U8 on such CPUs")
    try:
        graph = optimize(graph)
        got = approx_runner.run(graph, {info.input_name: samples}, ProductTable.exact(True),
                                reference)[graph.outputs[0]]
    except ModelError as err:  # the runner's UnsupportedOpError included
        raise ModelError(f"{info.path}: {err}") from None
    if not exactness.exact(scheme, fmt, precise=reference_run.precise,
                           activation_products=products):
        log(f"note: onnxruntime multiplies {scheme.upper()} activations by activations "
            "inexactly on this CPU, even in its precision mode, so the import check does not "
            "compare with it; dse's products are exact")
    elif not np.array_equal(got, expected):
        differ = int((got != expected).reshape(len(samples), -1).any(axis=1).sum())
        log(f"warning: {info.path}: with the exact table the approximate runner's outputs differ "
            f"from onnxruntime's exact ones on {differ} of {len(samples)} samples; please "
            "report this model")
    return expected


def reference_session(int8: Path):
    """onnxruntime's session to compare the runner with: its precision mode
    (``ort_exactness.session``), at its basic optimization level for a dynamically quantized
    graph, whose DynamicQuantizeLinear - MatMulInteger - Cast - Mul its extended level fuses
    into MatMulIntegerToFloat, a kernel that scales the same accumulators in another float
    order (a last-bit difference in the logits)."""
    import onnxruntime as ort

    if any(n.op_type == "DynamicQuantizeLinear" for n in onnx.load(str(int8)).graph.node):
        return ort_exactness.session(
            int8, graph_optimization_level=ort.GraphOptimizationLevel.ORT_ENABLE_BASIC)
    return ort_exactness.session(int8)


def _check_classes(info: ModelInfo, scores: np.ndarray, classes: int) -> None:
    """Refuse an int8 model whose output on a real batch (``scores``, from the check) is not
    (batch, classes): a symbolic or wrongly declared class axis passes ``check_data`` but
    scores with the wrong classes."""
    if scores.ndim != 2:
        raise ModelError(f"{info.path}: the model's output on {len(scores)} samples has shape "
                         f"{_shape_text(scores.shape)}; expected (batch, classes)")
    if scores.shape[1] != classes:
        raise _classes_error(info.path, scores.shape[1], classes)


def _check_table_layers(path: Path, graph: QGraph) -> None:
    """Refuse a graph where nothing multiplies through the product table."""
    if not any(node.op in TABLE_OPS for node in graph.nodes):
        raise ModelError(f"{path}: no layer of the int8 model multiplies int8 codes (no "
                         f"{'/'.join(sorted(OPERANDS))}); expected a quantized "
                         "Conv/Gemm/MatMul for the multipliers to replace")


def _matches(expected: tuple[int | None, ...], actual: tuple[int, ...]) -> bool:
    return len(expected) == len(actual) and all(e is None or e == a for e, a in zip(expected, actual))


def _shape_hint(expected: tuple[int | None, ...], actual: tuple[int, ...]) -> str:
    """How to make the data fit where the difference is only the layout or a flattening."""
    if len(actual) == 3 and _matches(expected, (actual[1], actual[2], actual[0])):
        return "; the model takes channels-last images: declare `model.preprocessing.layout: NHWC`"
    if len(actual) == 3 and _matches(expected, (actual[2], actual[0], actual[1])):
        return ("; the model takes channels-first images: declare "
                "`model.preprocessing.layout: NCHW`")
    if len(expected) == 1 and expected[0] == int(np.prod(actual)):
        return (f"; the model reads flat vectors of {expected[0]} values: give the data as "
                "float feature vectors (npz x_train/x_test of shape (N, F))")
    return ""


def _shape_text(dims: tuple[int | None, ...] | None) -> str:
    if dims is None:
        return "unknown"
    return "(" + ", ".join("?" if d is None else str(d) for d in dims) + ("," if len(dims) == 1 else "") + ")"


def _one_line(err: BaseException) -> str:
    """An exception's message on one short line (parsers and checkers write paragraphs)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    text = lines[0] if lines else type(err).__name__
    return text if len(text) <= 200 else text[:197] + "..."
