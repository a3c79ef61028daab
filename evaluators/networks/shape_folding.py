"""Shape folding at import: the shape subgraphs of an exported transformer become constants.

PyTorch's exporters compute every Reshape target, every expanded class token and every mask
from ``Shape(x)`` at run time (Shape, Gather, Slice, Concat, ConstantOfShape, Expand, Where,
Equal, Range, Split, Cast, ...). For a study the per-sample input shape is fixed, so onnxsim
(onnx-simplifier: shape inference plus constant folding, and onnx-optimizer's fusions such as
MatMul + Add into Gemm where the operands are 2-D) folds all of it that does not depend on the
batch axis, which stays symbolic: what still reads the batch size stays in the graph and the
runner computes it. Node names survive, so layer names in logs and study files stay the
exporter's.
"""

from __future__ import annotations

import contextlib
import io
from collections import Counter
from collections.abc import Sequence

import onnx

from evaluators.errors import ModelError

BATCH = "batch"


def fold_shapes(model: onnx.ModelProto, sample_shape: Sequence[int],
                source: str = "the model") -> onnx.ModelProto:
    """A copy of ``model`` with its shape subgraphs folded for samples of ``sample_shape``
    (no batch axis) and a symbolic batch axis; ``source`` names the file in the one-line
    ModelError raised when onnxsim cannot simplify it."""
    import onnxsim  # two seconds to import: only where a model is folded

    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    initializers = {t.name for t in fixed.graph.initializer}
    inputs = [i for i in fixed.graph.input if i.name not in initializers]
    for value in inputs:
        dims = value.type.tensor_type.shape.dim
        if len(dims) != len(sample_shape) + 1:
            raise ModelError(f"{source}: input {value.name!r} has {len(dims)} axes; expected "
                             f"(batch, {', '.join(map(str, sample_shape))})")
        if not dims[0].dim_param:
            dims[0].dim_param = BATCH
        for dim, size in zip(list(dims)[1:], sample_shape):
            dim.dim_value = int(size)
    try:
        # it prints its progress and a summary table; the caller logs what changed
        with contextlib.redirect_stdout(io.StringIO()):
            folded, _ = onnxsim.simplify(fixed, check_n=0, certify=False)
    except Exception as err:  # noqa: BLE001 - its C++ core and checks raise anything
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        reason = (lines[0] if lines else type(err).__name__)[:200]
        raise ModelError(f"{source}: onnxsim could not fold the model's shape computations "
                         f"({reason}); expected an ONNX model onnxruntime can run") from None
    return _unshare_float_constants(folded)


def _unshare_float_constants(model: onnx.ModelProto) -> onnx.ModelProto:
    """Every float initializer read by several nodes copied, one per node: exporters and
    onnxsim share equal tensors (the ones and zeros of fresh LayerNorms, equal biases), and
    onnxruntime's QDQ graph transformers then fail on the shared weight's quantized copies
    ("Attempt to replace the existing tensor")."""
    graph = model.graph
    floats = {t.name: t for t in graph.initializer if t.data_type == onnx.TensorProto.FLOAT}
    seen: set[str] = set()
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name not in floats:
                continue
            if name in seen:
                copy = onnx.TensorProto()
                copy.CopyFrom(floats[name])
                copy.name = f"{name}_{node.name or node.output[0]}"
                graph.initializer.append(copy)
                node.input[i] = copy.name
            seen.add(name)
    return model


def op_counts(model: onnx.ModelProto) -> Counter[str]:
    """Nodes of each op type in the main graph."""
    return Counter(n.op_type for n in model.graph.node)


def folding_summary(before: onnx.ModelProto, after: onnx.ModelProto) -> str:
    """What folding changed, op by op (``Shape 15 -> 2, ...``), for the import log."""
    old, new = op_counts(before), op_counts(after)
    changed = [f"{op} {old[op]} -> {new[op]}" for op in sorted(old.keys() | new.keys())
               if old[op] != new[op]]
    total = f"{sum(old.values())} -> {sum(new.values())} nodes"
    return f"{total} ({', '.join(changed)})" if changed else f"{total} (nothing to fold)"
