"""A layer-wise space over a transformer: layers chosen and tied by role and by block."""

from __future__ import annotations

import pytest

from dse.kinds.layerwise import LayerwiseSpaceSettings, make_space
from evaluators.errors import AssignmentError
from evaluators.runtime.approx_runner import table_layers
from evaluators.runtime.roles import layer_roles
from tests.evaluators.runtime.test_roles import transformer

MEMBERS = ("exact", "m1", "m2")


def space(approximate="all", **fields):
    graph = transformer()
    settings = LayerwiseSpaceSettings(type="layerwise", library={"appaxo": [1]}, **fields)
    return make_space(settings, table_layers(graph), MEMBERS, layer_roles(graph), approximate)


def test_tie_per_block_gives_one_multiplier_per_block():
    groups = dict(space(tie="per_block").groups)
    assert list(groups) == ["embedding", "block0", "block1", "head"]
    assert groups["block1"] == ("b1.q", "b1.k", "b1.v", "b1.qk", "b1.av", "b1.out", "b1.fc1",
                                "b1.fc2")


def test_tie_per_role_over_the_approximated_roles():
    """``approximate`` and ``space.layers`` both narrow what is searched."""
    groups = dict(space(["projection", "attention", "mlp"], tie="per_role").groups)
    assert list(groups) == ["projection", "attention", "mlp"]
    assert groups["attention"] == ("b0.qk", "b0.av", "b1.qk", "b1.av")
    narrowed = dict(space(["attention", "mlp"], layers=["block0"], tie="per_role").groups)
    assert narrowed == {"attention": ("b0.qk", "b0.av"), "mlp": ("b0.fc1", "b0.fc2")}


def test_tie_groups_may_name_roles_and_blocks():
    groups = dict(space(layers=["block0", "head"], tie=[["attention"], ["head", "b0.out"]]).groups)
    assert groups == {"b0.q": ("b0.q",), "b0.k": ("b0.k",), "b0.v": ("b0.v",),
                      "b0.qk+b0.av": ("b0.qk", "b0.av"), "b0.out+head": ("b0.out", "head"),
                      "b0.fc1": ("b0.fc1",), "b0.fc2": ("b0.fc2",)}
    with pytest.raises(AssignmentError, match=r"^space: tie: 'b1.qk' is not among the searched "
                       "layers$"):
        space(layers=["block0"], tie=[["attention", "b1.qk"]])
    assert dict(space(layers=["block0"], tie=[["attention"]]).groups)["b0.qk+b0.av"]
    with pytest.raises(AssignmentError, match="^space: tie: layer 'b0.qk' is in two groups$"):
        space(tie=[["attention"], ["b0.qk"]])


def test_per_block_needs_a_transformer():
    settings = LayerwiseSpaceSettings(type="layerwise", library={"appaxo": [1]}, tie="per_block")
    with pytest.raises(AssignmentError, match="needs a transformer"):
        make_space(settings, ["conv1", "fc1"], MEMBERS, {})
