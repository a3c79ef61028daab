"""Layer-wise studies end to end: the real network, library, flow and store; every strategy,
resume, Ray, the homogeneous special case, sensitivity, and one-line errors."""

from __future__ import annotations

import os
import subprocess
import sys

import pandas as pd
import pytest
import yaml

from circuits import appaxo
from dse.kinds.layerwise import SEED_DROPS
from dse.loop import StudyRunner, build_evaluator, run_study
from dse.study import Study, load_study
from dse.study_file import parse_settings
from tests.conftest import mini_study
from tests.dse.test_strategies import STRATEGIES, run_study_with, search

CONFIGS = [68652367871, 29997662207, 404750335]
LIBRARY = {"appaxo": CONFIGS, "baselines": ["trunc_s_k6_c"]}


def layerwise(mnist_dir, **changes) -> dict:
    """A small layer-wise study of the shared mini LeNet-5 (Liberty-free estimate: fast)."""
    data = mini_study(mnist_dir, name="lw", dataset={"test_size": 300},
                      objectives=[{"metric": "accuracy"}, {"metric": "energy"}],
                      budget={"trials": 12})
    data["space"] = {"type": "layerwise", "library": LIBRARY}
    for key, value in changes.items():
        data[key] = {**data.get(key, {}), **value} if isinstance(value, dict) else value
    return data


@pytest.fixture(scope="module")
def study_data(mnist_dir, session_cache):
    os.environ["DSE_CACHE_DIR"] = str(session_cache)
    return layerwise(mnist_dir)


@pytest.fixture(scope="module")
def evaluator(study_data):
    return build_evaluator(parse_settings(study_data), lambda m: None)


def test_a_study_stores_readable_assignments_and_their_costs(tmp_path, study_data):
    study = run_study(parse_settings({**study_data, "output": str(tmp_path / "s")}),
                      log=lambda m: None, progress=False)
    trials = study.trials
    layers = list(trials["assignment"].iloc[0])
    assert len(layers) == 5 and all(set(a) == set(layers) for a in trials["assignment"])
    baseline = trials[trials["role"] == "baseline"].iloc[0]
    assert baseline["design"] == "exact" and baseline["energy_saving"] == 0
    assert baseline["config"] == 0 and set(baseline["assignment"].values()) == {"exact"}
    searched = trials[trials["role"] == "search"]
    assert len(searched) == 12 and (searched["energy"] > 0).all()
    # the configuration decodes to the stored assignment: group g's member is digit g
    members = ["exact", *(appaxo.config_name(c) for c in CONFIGS), "trunc_s_k6_c"]
    for _, row in searched.iterrows():
        digits = [(int(row["config"]) // 5**g) % 5 for g in range(5)]
        assert [row["assignment"][layer] for layer in layers] == [members[d] for d in digits]
    # readable per-layer parameters for optuna clients
    params = study.store.trials()[1].params
    assert {params[layer] for layer in layers} <= set(members)
    # the library, per-layer costs and the front's assignments are kept with the study
    folder = tmp_path / "s"
    assert (folder / "library" / "library.csv").is_file()
    costs = pd.read_csv(folder / "layer_costs.csv", index_col=0)
    assert list(costs.index) == layers and (costs["macs"] > 0).all()
    exported = pd.read_csv(folder / "pareto" / "assignments.csv")
    assert set(exported["design"]) == set(study.pareto()["design"])


def test_energy_is_costed_under_each_layers_own_operands(evaluator):
    costs = evaluator.costs
    # one member's energy per multiplication differs between layers (operands differ)
    assert costs.energy.loc["trunc_s_k6_c"].nunique() > 1
    # the exact multiplier everywhere costs sum(MACs x energy) of the exact row
    exact = sum(costs.macs[layer] * costs.energy.loc["exact", layer] for layer in costs.layers)
    metrics = evaluator.evaluate(0)
    assert metrics["energy"] == pytest.approx(exact)


def test_tie_all_gives_exactly_the_homogeneous_appaxo_study(tmp_path, mnist_dir, session_cache):
    os.environ["DSE_CACHE_DIR"] = str(session_cache)
    objectives = [{"metric": "accuracy"}, {"metric": "area"}]
    tied = layerwise(mnist_dir, objectives=objectives, strategy={"type": "grid"},
                     budget={"trials": 4}, output=str(tmp_path / "tied"),
                     space={"type": "layerwise", "tie": "all", "library": {"appaxo": CONFIGS}})
    plain = mini_study(mnist_dir, name="plain", dataset={"test_size": 300}, objectives=objectives,
                       space={"type": "appaxo36", "free": "1" * 36},
                       strategy={"type": "grid", "configs": CONFIGS}, budget={"trials": 3},
                       output=str(tmp_path / "plain"))
    a = run_study(parse_settings(tied), log=lambda m: None, progress=False).trials
    b = run_study(parse_settings(plain), log=lambda m: None, progress=False).trials
    assert a["accuracy"].iloc[0] == b["accuracy"].iloc[0]  # the exact baselines
    # the searched members (the exact baseline's circuits differ: array vs AppAxO structure)
    a = a[a["design"] != "exact"].drop_duplicates("design").set_index("design")
    b = b[b["role"] == "search"].set_index("design")
    assert sorted(a.index) == sorted(b.index) and len(a) == 3
    for metric in ("accuracy", "precision_macro", "recall_macro", "f1_macro", "area", "delay",
                   "mae", "wce", "mred", "error_probability"):
        assert a[metric].to_dict() == pytest.approx(b.loc[a.index, metric].to_dict(), rel=1e-12), metric


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_every_strategy_resumes_a_layerwise_study(name, tmp_path, study_data, evaluator):
    data = {**study_data, "strategy": STRATEGIES[name], "budget": {"trials": 12}}
    straight = search(run_study_with(tmp_path / "straight", data, evaluator))
    assert len(straight) == 12 and straight["config"].map(int).is_unique
    first = search(run_study_with(tmp_path / "resumed", data, evaluator, stop_after=6))
    resumed = search(run_study_with(tmp_path / "resumed", data, evaluator))
    assert len(first) == 5 and len(resumed) == 12 and resumed["proposal_index"].is_unique
    if not name.startswith("bayes"):  # the samplers' randomness is consumed differently
        assert resumed["config"].tolist() == straight["config"].tolist()
        assert resumed["accuracy"].tolist() == straight["accuracy"].tolist()


def test_ray_workers_give_the_serial_results(tmp_path, study_data):
    data = {**study_data, "strategy": {"type": "random"}, "budget": {"trials": 6}}
    serial = run_study(parse_settings({**data, "output": str(tmp_path / "serial")}),
                       log=lambda m: None, progress=False).trials
    ray = run_study(parse_settings({**data, "output": str(tmp_path / "ray"),
                                    "executor": {"type": "ray", "workers": 2}}),
                    log=lambda m: None, progress=False).trials
    key = lambda t: t.sort_values("proposal_index")[["config", "accuracy", "energy"]]  # noqa: E731
    pd.testing.assert_frame_equal(key(serial).reset_index(drop=True), key(ray).reset_index(drop=True))


def test_sensitivity_seeds_the_first_proposals(tmp_path, study_data, mnist_dir):
    data = {**study_data, "output": str(tmp_path / "s"), "budget": {"trials": 6},
            "space": {**study_data["space"], "sensitivity": True},
            "strategy": {"type": "nsga2", "population": 8}}
    study = run_study(parse_settings(data), log=lambda m: None, progress=False)
    drops = pd.read_csv(tmp_path / "s" / "sensitivity.csv", index_col=0)
    assert drops.shape == (5, 5) and (drops["exact"] == 0).all()
    assert (tmp_path / "s" / "sensitivity.png").stat().st_size > 10_000
    # the first generation holds the ladder seeded from the table: tightest allowance first
    rebuilt = build_evaluator(parse_settings(data), lambda m: None, folder=tmp_path / "s")
    assert rebuilt.initial and set(rebuilt.initial) <= set(search(study)["config"].map(int))
    tightest = rebuilt.space.assignment(rebuilt.initial[0])
    for group, layers in rebuilt.space.groups:  # each member is within the tightest allowance
        assert drops.loc[group, tightest[layers[0]]] <= SEED_DROPS[0]
    # the same table from the CLI
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump({**study_data, "space": {**study_data["space"]}}))
    out = subprocess.run([sys.executable, "-m", "dse", "sensitivity", str(path), "-o",
                          str(tmp_path / "cli"), "--quiet"], capture_output=True, text=True,
                         env={**os.environ}, cwd=os.getcwd())
    assert out.returncode == 0, out.stderr
    again = pd.read_csv(tmp_path / "cli" / "sensitivity.csv", index_col=0)
    pd.testing.assert_frame_equal(again, drops)


def test_library_from_an_earlier_study_front(tmp_path, mnist_dir, session_cache):
    os.environ["DSE_CACHE_DIR"] = str(session_cache)
    earlier = mini_study(mnist_dir, name="earlier", dataset={"test_size": 300},
                         budget={"trials": 4}, output=str(tmp_path / "earlier"))
    front = run_study(parse_settings(earlier), log=lambda m: None, progress=False).pareto()
    data = layerwise(mnist_dir, space={"type": "layerwise", "tie": "all",
                                       "library": {"from_study": str(tmp_path / "earlier")}})
    names = build_evaluator(parse_settings(data), lambda m: None).library.names
    expected = {appaxo.config_name(int(c)) for c in front["config"] if c != appaxo.EXACT}
    assert set(names) == {"exact", *expected}


def cli_error(tmp_path, data) -> str:
    """The one error line of a ``dse run`` that must exit with code 2 (the log goes to stderr
    too), after checking that nothing was written."""
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(data))
    out = subprocess.run([sys.executable, "-m", "dse", "run", str(path), "-q", "--output",
                          str(tmp_path / "out")], capture_output=True, text=True)
    errors = [line for line in out.stderr.splitlines() if line.startswith("dse: error:")]
    assert out.returncode == 2 and len(errors) == 1 and "Traceback" not in out.stderr, out.stderr
    assert not (tmp_path / "out").exists()
    return errors[0]


@pytest.mark.parametrize("space, expected", [
    ({"layers": ["/conv1/Conv_quant", "conv9"]},
     "space: layer 'conv9' is not a table layer of the network; its layers: /conv1/Conv_quant, "
     "/conv2/Conv_quant, /fc1/Gemm_quant, /fc2/Gemm_quant, /fc3/Gemm_quant"),
    ({"tie": [["/fc1/Gemm_quant", "fc9"]]},
     "space: layer 'fc9' is not a table layer of the network"),
])
def test_unknown_layers_are_one_line_errors(tmp_path, study_data, space, expected):
    data = {**study_data, "space": {**study_data["space"], **space}}
    assert expected in cli_error(tmp_path, data)


def test_a_member_that_cannot_load_is_one_line(tmp_path, study_data):
    bad = tmp_path / "bad.v"
    bad.write_text("module bad (input [7:0] a, output [3:0] p); assign p = a[3:0]; endmodule\n")
    data = {**study_data, "space": {**study_data["space"],
                                    "library": {"verilog": [str(bad)]}}}
    assert str(bad) in cli_error(tmp_path, data)


def test_resumed_study_keeps_its_library(tmp_path, study_data):
    folder = tmp_path / "s"
    data = {**study_data, "output": str(folder), "budget": {"trials": 4}}
    run_study(parse_settings(data), log=lambda m: None, progress=False)
    names = pd.read_csv(folder / "library" / "library.csv")["name"].tolist()
    settings = parse_settings({**data, "budget": {"trials": 4}})
    with Study(folder, settings, driver=True) as study:
        rebuilt = build_evaluator(settings, lambda m: None, folder=folder)
        assert list(rebuilt.library.names) == names
        assert StudyRunner(study, rebuilt, lambda m: None, progress=False).run() == 0
    assert len(load_study(folder).trials) == 5  # the baseline and 4 search trials
