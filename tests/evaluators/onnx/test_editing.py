"""The one ModelProto editing helper: edits land in a copy, initializers are edited in place
and added once, and the graph editor drops what nothing reads."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from evaluators.errors import ModelError
from evaluators.onnx.editing import (
    Initializers,
    ModelEditor,
    copy_model,
    ensure_opset,
    insert_after,
    label,
)


def small_model() -> onnx.ModelProto:
    """y = relu(x + b), plus a dead node reading x."""
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "b"], ["s"], name="add"),
         helper.make_node("Relu", ["s"], ["y"], name="relu"),
         helper.make_node("Neg", ["x"], ["unused"], name="dead")],
        "small",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
        [numpy_helper.from_array(np.array([1, -3], np.float32), "b")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_copy_initializers_and_opsets_edit_the_copy_only():
    model = small_model()
    before = model.SerializeToString()
    out = copy_model(model)
    inits = Initializers(out)
    assert inits.array("b").tolist() == [1, -3]
    inits.set("b", np.array([2, 2], np.float32))
    assert inits.add("c", lambda: np.zeros(3, np.int8)) == "c"
    assert inits.add("c", lambda: pytest.fail("added twice")) == "c"
    inits.set("c", np.ones(3, np.int8))  # an added initializer is the model's own tensor
    ensure_opset(out, "ai.dse.approx")
    ensure_opset(out, "ai.dse.approx")
    insert_after(out, "add", helper.make_node("Identity", ["s"], ["s2"], name="copy"))
    assert model.SerializeToString() == before
    assert {t.name: numpy_helper.to_array(t).tolist() for t in out.graph.initializer} == \
        {"b": [2, 2], "c": [1, 1, 1]}
    assert [o.domain for o in out.opset_import] == ["", "ai.dse.approx"]
    assert [n.name for n in out.graph.node] == ["add", "copy", "relu", "dead"]


def test_the_editor_finishes_a_topologically_ordered_live_graph():
    model = small_model()
    editor = ModelEditor(model)
    relu = editor.producer("y")
    assert label(relu) == "'relu' (Relu)" and editor.consumers("x")[0].name == "add"
    scale = editor.const("scale", np.float32(2))
    doubled = editor.fresh("s")
    editor.insert(relu, helper.make_node("Mul", ["s", scale], [doubled], name=editor.fresh("mul")))
    relu.input[0] = doubled
    out = editor.finish()
    assert [n.op_type for n in out.graph.node] == ["Add", "Mul", "Relu"]  # the dead Neg dropped
    assert sorted(t.name for t in out.graph.initializer) == ["b", scale]
    assert [n.op_type for n in model.graph.node] == ["Add", "Relu", "Neg"]
    onnx.checker.check_model(out)
    with pytest.raises(ModelError, match="node 'relu' \\(Relu\\): input 'x' must be a constant"):
        editor.array("x", relu)
