"""Transformers run whole studies through the command line, in static and dynamic
quantization: the tests' two float transformer files (attention written out, and
``torch.nn.MultiheadAttention``) and the registry's ``vit_tiny``, with the attention products
among the approximated layers; the exact multiplier scores what onnxruntime's int8 model
scores on the same images, and a layer-wise study ties the layers by role."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml

import dse
from evaluators.data.preprocess import Preprocessing
from evaluators.networks.model_import import reference_session
from evaluators.runtime.qgraph import QGraph
from evaluators.runtime.roles import layer_roles
from tests.dse.test_networks_end_to_end import run_cli, small_study
from tests.evaluators.transformers import explicit_attention, export, fit, mha_attention

MODES = {"static": {"mode": "static"}, "dynamic": {"mode": "dynamic", "scheme": "u8s8"}}


@pytest.fixture(scope="module")
def float_transformers(tmp_path_factory, mnist) -> dict:
    """The two float transformer files, fitted a little on MNIST training digits."""
    train, _ = mnist
    x = torch.from_numpy(Preprocessing().apply(train.images[:2048]))
    y = torch.from_numpy(train.labels[:2048].astype(np.int64))
    folder = tmp_path_factory.mktemp("transformers")
    return {name: export(fit(build(), x, y), folder / f"{name}.onnx")
            for name, build in (("explicit", explicit_attention), ("mha", mha_attention))}


def exact_scores_onnxruntime(folder, test) -> None:
    """Every trial complete, and the exact baseline's accuracy onnxruntime's (its reference
    session) on the study's int8 model and images (one batch: as dse's passes of a dynamic
    graph)."""
    trials = dse.load_study(folder).trials
    assert set(trials["state"]) == {"COMPLETE"} and len(trials) == 3
    session = reference_session(folder / "network" / "int8.onnx")
    name = session.get_inputs()[0].name
    logits = session.run(None, {name: Preprocessing().apply(test.images[:64])})[0]
    baseline = trials[trials["role"] == "baseline"].iloc[0]
    assert baseline["accuracy"] == pytest.approx((logits.argmax(1) == test.labels[:64]).mean())


@pytest.mark.parametrize("mode", sorted(MODES))
@pytest.mark.parametrize("network", ["explicit", "mha", pytest.param("vit_tiny", marks=pytest.mark.slow)])
def test_a_transformer_runs_a_study_in_each_quantization_mode(network, mode, float_transformers,
                                                              tmp_path, mnist_dir, mnist, env):
    folder = tmp_path / network
    model = {"arch": "vit_tiny"} if network == "vit_tiny" else {"onnx": str(float_transformers[network])}
    data = small_study(folder, mnist_dir, model=model,
                       approximate=["projection", "attention", "mlp"])
    data["quantization"].update(MODES[mode])
    assert run_cli(tmp_path, data) == 0
    exact_scores_onnxruntime(folder, mnist[1])
    graph = QGraph.from_onnx(folder / "network" / "int8.onnx")
    ops = {n.op for n in graph.nodes}
    assert ("DynamicQuantizeLinear" in ops) == (mode == "dynamic")
    roles = {r.role for r in layer_roles(graph).values()}
    assert {"attention", "projection", "mlp"} <= roles
    frozen = yaml.safe_load((folder / "study.yaml").read_text())
    assert frozen["approximate"] == ["projection", "attention", "mlp"]


@pytest.mark.slow  # 20 s: the library's energy under 26 layers' workloads
def test_a_layerwise_study_ties_a_transformers_layers_by_role(float_transformers, tmp_path,
                                                              mnist_dir, env):
    """One library member per role, the roles' sensitivity measured first."""
    folder = tmp_path / "roles"
    data = small_study(folder, mnist_dir, model={"onnx": str(float_transformers["explicit"])},
                       approximate=["projection", "attention", "mlp"])
    data.update(space={"type": "layerwise", "tie": "per_role", "sensitivity": True,
                       "library": {"appaxo": [404750335, 68652367871]}},
                objectives=[{"metric": "accuracy"}, {"metric": "energy"}],
                hardware={"liberty": None})
    assert run_cli(tmp_path, data) == 0
    drops = (folder / "sensitivity.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in drops[1:]] == ["projection", "attention", "mlp"]
    trials = dse.load_study(folder).trials
    assert set(trials["state"]) == {"COMPLETE"}
    assignment = trials.iloc[-1]["assignment"]
    roles = layer_roles(QGraph.from_onnx(folder / "network" / "int8.onnx"))
    for role in ("embedding", "head"):  # not approximated: exact
        assert all(assignment[layer] == "exact" for layer, r in roles.items() if r.role == role)
