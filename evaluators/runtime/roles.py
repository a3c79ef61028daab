"""What each table layer of a transformer does: its role and its block.

A study chooses what the approximate multipliers replace by role (``approximate: [projection,
attention, mlp]``) and a layer-wise study ties its layers per block or per role; both read the
roles from the quantized graph itself, so any exporter's node names serve:

- ``attention``: a layer multiplying two activations (neither operand a constant): an
  attention's Q x K^T and its softmax(..) x V;
- ``projection``: a weight layer feeding an attention product (the Q/K/V projections) or fed by
  one (the output projection), through ops that multiply nothing;
- ``embedding``: a weight layer before the first attention product that is not a projection
  (the patch embedding);
- ``head``: a weight layer after the last attention product whose result reaches the output
  without another table layer (the classifier);
- ``mlp``: every other weight layer (the feed-forward layers of the blocks).

Attention products connected through ops that multiply nothing (Q x K^T -> softmax -> x V)
form one block; blocks are numbered in execution order. A projection belongs to the block of
the products it feeds or is fed by, an MLP layer to the last block before it. A network with
no attention product has no roles (its layers are chosen by name).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from evaluators.errors import AssignmentError
from evaluators.runtime.node import Node
from evaluators.runtime.ops import TABLE_OPS
from evaluators.runtime.qgraph import QGraph

ROLES = ("embedding", "projection", "attention", "mlp", "head")

# the input index of each table op's second operand (the weights of a weight layer)
_SECOND_OPERAND = {"QLinearConv": 3, "QGemm": 3, "QLinearMatMul": 3, "ConvInteger": 1,
                   "MatMulInteger": 1, "ApproxQLinearConv": 3, "ApproxQGemm": 3,
                   "ApproxQLinearMatMul": 3, "ApproxMatMulInteger": 1}


@dataclass(frozen=True)
class LayerRole:
    """A table layer's role (``ROLES``) and block (0, 1, ...; None outside the blocks)."""

    role: str
    block: int | None

    @property
    def group(self) -> str:
        """The name of the layer's block as layer-wise ties read it (``block0``, ...), or its
        role outside the blocks (``embedding``, ``head``)."""
        return self.role if self.block is None else f"block{self.block}"


def multiplies_activations(graph: QGraph, node: Node) -> bool:
    """Whether a table layer multiplies two activations (its second operand is computed)."""
    index = _SECOND_OPERAND.get(node.op)
    return index is not None and node.inputs[index] not in graph.initializers


def layer_roles(graph: QGraph) -> dict[str, LayerRole]:
    """Every table layer's role and block, in execution order; empty for a network without
    products of two activations."""
    table = [n for n in graph.nodes if n.op in TABLE_OPS]
    attention = [n.name for n in table if multiplies_activations(graph, n)]
    if not attention:
        return {}
    above = _table_inputs(graph)
    below: dict[str, set[str]] = {n.name: set() for n in table}
    for layer, sources in above.items():
        for source in sources:
            below[source].add(layer)
    blocks = _blocks(attention, above)
    roles: dict[str, LayerRole] = {}
    current: int | None = None
    seen_attention = False
    for node in table:
        name = node.name
        if name in blocks:
            current, seen_attention = blocks[name], True
            roles[name] = LayerRole("attention", current)
        elif fed := [blocks[a] for a in below[name] | above[name] if a in blocks]:
            roles[name] = LayerRole("projection", min(fed))
        elif not seen_attention:
            roles[name] = LayerRole("embedding", None)
        elif not below[name]:
            roles[name] = LayerRole("head", None)
        else:
            roles[name] = LayerRole("mlp", current)
    return roles


def select_layers(graph: QGraph, names: Sequence[str] | str, where: str = "") -> list[str]:
    """The table layers of ``graph`` that ``names`` choose (``choose``)."""
    return choose([n.name for n in graph.nodes if n.op in TABLE_OPS], layer_roles(graph), names,
                  where)


def choose(layers: Sequence[str], roles: Mapping[str, LayerRole], names: Sequence[str] | str,
           where: str = "") -> list[str]:
    """The ``layers`` that ``names`` choose, in their order: ``all``, or a list of roles,
    blocks (``block0``, ...) and layer names, ``roles`` giving each layer's; anything else is
    refused in one line, prefixed with ``where`` (the setting that named it)."""
    if names == "all":
        return list(layers)
    chosen: set[str] = set()
    for name in names:
        if name in layers:
            chosen.add(name)
        elif name in ROLES or name.startswith("block"):
            matched = {layer for layer, r in roles.items() if name in (r.role, r.group)}
            if not matched:
                raise AssignmentError(f"{where}{name!r} names no layer of the network ("
                                      f"{_roles_text(roles)})")
            chosen |= matched
        else:
            also = f" nor a role ({', '.join(ROLES)}) or block" if roles else ""
            raise AssignmentError(f"{where}layer {name!r} is not a table layer of the network"
                                  f"{also}; its layers: {', '.join(layers)}")
    return [layer for layer in layers if layer in chosen]


def _roles_text(roles: Mapping[str, LayerRole]) -> str:
    if not roles:
        return "it multiplies no two activations, so its layers have no roles"
    found = sorted({r.role for r in roles.values()}, key=ROLES.index)
    blocks = sorted({r.block for r in roles.values() if r.block is not None})
    return f"its roles: {', '.join(found)}; its blocks: block0..block{blocks[-1]}"


def _table_inputs(graph: QGraph) -> dict[str, set[str]]:
    """For each table layer, the table layers whose results reach its inputs through ops that
    multiply nothing."""
    reaching: dict[str, set[str]] = {}  # tensor -> table layers it carries results of
    above: dict[str, set[str]] = {}
    for node in graph.nodes:
        sources = set().union(*(reaching.get(t, set()) for t in node.inputs))
        if node.op in TABLE_OPS:
            above[node.name] = sources
            sources = {node.name}
        for i, out in enumerate(node.outputs):
            # a dynamic quantization's scale and zero point describe its codes: the layers
            # that scale them by it are not fed by whatever computed its input
            reaching[out] = set() if i and node.op == "DynamicQuantizeLinear" else sources
    return above


def _blocks(attention: Iterable[str], above: dict[str, set[str]]) -> dict[str, int]:
    """Attention products joined through ops that multiply nothing, numbered in order."""
    block: dict[str, int] = {}
    count = 0
    for layer in attention:
        joined = [block[a] for a in above[layer] if a in block]
        if joined:
            block[layer] = min(joined)
        else:
            block[layer], count = count, count + 1
    return block
