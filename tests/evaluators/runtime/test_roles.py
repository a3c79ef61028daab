"""Roles and blocks of a transformer's table layers, read from the graph's structure."""

from __future__ import annotations

import numpy as np
import pytest

from evaluators.errors import AssignmentError
from evaluators.runtime.node import Node
from evaluators.runtime.qgraph import QGraph
from evaluators.runtime.roles import LayerRole, choose, layer_roles, select_layers


def _weight_layer(name: str, x: str, y: str, op: str = "QGemm") -> Node:
    return Node(op, name, (x, "s", "z", f"{name}.w", "s", "z", "", "s", "z"), (y,))


def _product(name: str, a: str, b: str, y: str) -> Node:
    return Node("QLinearMatMul", name, (a, "s", "z", b, "s", "z", "s", "z"), (y,))


def _block(i: int, x: str) -> tuple[list[Node], str]:
    """One pre-norm block: q/k/v projections, Q x K^T, softmax, x V, output projection, the
    residual and a two-layer MLP."""
    p = f"b{i}"
    nodes = [Node("DequantizeLinear", f"{p}.dq", (x, "s", "z"), (f"{p}.xf",)),
             Node("LayerNormalization", f"{p}.ln", (f"{p}.xf", "g", "b"), (f"{p}.n",)),
             Node("QuantizeLinear", f"{p}.quant", (f"{p}.n", "s", "z"), (f"{p}.nq",))]
    for part in "qkv":
        nodes.append(_weight_layer(f"{p}.{part}", f"{p}.nq", f"{p}.{part}y"))
    nodes += [Node("Transpose", f"{p}.t", (f"{p}.ky",), (f"{p}.kt",)),
              _product(f"{p}.qk", f"{p}.qy", f"{p}.kt", f"{p}.scores"),
              Node("QLinearSoftmax", f"{p}.softmax", (f"{p}.scores", "s", "z", "s", "z"),
                   (f"{p}.attn",)),
              _product(f"{p}.av", f"{p}.attn", f"{p}.vy", f"{p}.ctx"),
              _weight_layer(f"{p}.out", f"{p}.ctx", f"{p}.o"),
              Node("QLinearAdd", f"{p}.res", (x, "s", "z", f"{p}.o", "s", "z", "s", "z"),
                   (f"{p}.r",)),
              _weight_layer(f"{p}.fc1", f"{p}.r", f"{p}.h"),
              _weight_layer(f"{p}.fc2", f"{p}.h", f"{p}.m"),
              Node("QLinearAdd", f"{p}.res2", (f"{p}.r", "s", "z", f"{p}.m", "s", "z", "s", "z"),
                   (f"{p}.y",))]
    return nodes, f"{p}.y"


def transformer(blocks: int = 2) -> QGraph:
    """A ViT's table layers and the ops between them (what the roles read; not run)."""
    nodes = [Node("QuantizeLinear", "quant", ("x", "s", "z"), ("xq",)),
             _weight_layer("patches", "xq", "tokens", "QLinearConv")]
    x = "tokens"
    for i in range(blocks):
        block, x = _block(i, x)
        nodes += block
    nodes.append(_weight_layer("head", x, "logits"))
    weights = {f"{n.name}.w": np.zeros((4, 4), np.int8) for n in nodes
               if n.op in ("QGemm", "QLinearConv")}
    constants = {"s": np.float32(1), "z": np.int8(0), **weights}
    return QGraph(tuple(nodes), constants, ("x",), ("logits",))


def test_a_transformers_layers_have_roles_and_blocks():
    roles = layer_roles(transformer())
    assert roles["patches"] == LayerRole("embedding", None)
    assert roles["head"] == LayerRole("head", None)
    for i in range(2):
        for part in ("q", "k", "v", "out"):
            assert roles[f"b{i}.{part}"] == LayerRole("projection", i)
        assert roles[f"b{i}.qk"] == roles[f"b{i}.av"] == LayerRole("attention", i)
        assert roles[f"b{i}.fc1"] == roles[f"b{i}.fc2"] == LayerRole("mlp", i)
    assert list(roles) == [n.name for n in transformer().nodes if n.name in roles]


def test_roles_blocks_and_names_choose_layers_in_network_order():
    graph = transformer()
    assert select_layers(graph, ["attention"]) == ["b0.qk", "b0.av", "b1.qk", "b1.av"]
    assert select_layers(graph, ["head", "block1", "patches"]) == [
        "patches", "b1.q", "b1.k", "b1.v", "b1.qk", "b1.av", "b1.out", "b1.fc1", "b1.fc2", "head"]
    assert select_layers(graph, "all")[0] == "patches"
    with pytest.raises(AssignmentError, match=r"^approximate: 'block7' names no layer of the "
                       r"network \(its roles: embedding, projection, attention, mlp, head; its "
                       r"blocks: block0\.\.block1\)$"):
        select_layers(graph, ["block7"], "approximate: ")
    with pytest.raises(AssignmentError, match=r"^layer 'fc9' is not a table layer of the network "
                       r"nor a role \(embedding, projection, attention, mlp, head\) or block; "
                       r"its layers: patches, b0\.q"):
        select_layers(graph, ["fc9"])


def test_a_network_without_attention_has_no_roles():
    """A CNN's layers are chosen by name; a role names nothing there, and says why."""
    layers = ["conv1", "fc1"]
    assert choose(layers, {}, ["fc1"]) == ["fc1"]
    with pytest.raises(AssignmentError, match="'attention' names no layer of the network "
                       r"\(it multiplies no two activations, so its layers have no roles\)"):
        choose(layers, {}, ["attention"])
    with pytest.raises(AssignmentError, match=r"^layer 'conv9' is not a table layer of the "
                       r"network; its layers: conv1, fc1$"):
        choose(layers, {}, ["conv9"])
