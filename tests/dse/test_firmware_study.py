"""Firmware studies (``space.firmware``): the joint space of AppAxO configurations and firmware
settings under every strategy, the study file's section and its one-line errors, and a study
end to end on the shared mini LeNet-5 (pruning, fine-tuning, costs, plots, resume)."""

from __future__ import annotations

import os

import numpy as np
import pytest

from circuits import appaxo
from dse.kinds.firmware import PLOT, SPAN, FirmwareSettings, FirmwareSpace, firmware_variables
from dse.loop import build_evaluator, resume_study, run_study
from dse.space import AppAxOSubspace
from dse.strategies import Evaluation, make_strategy
from dse.study_file import StudyFileError, parse_settings
from tests.conftest import MINI_FREE, mini_study
from tests.dse.test_strategies import STRATEGIES

LAYERS = ("conv1", "conv2", "fc1")
FREE_3 = "000000000000000000000000000000000111"  # the three LUTs of lowest weight


def space(per_layer: bool = False, **settings) -> FirmwareSpace:
    firmware = FirmwareSettings(**{"weight_bits": [4, 8], "activation_bits": [6, 8],
                                   "reuse_factor": [1, 4, 16], "sparsity": [0.0, 0.5],
                                   "per_layer_bits": per_layer, **settings})
    return FirmwareSpace(AppAxOSubspace(int(FREE_3, 2), appaxo.EXACT),
                         firmware_variables(firmware, LAYERS), LAYERS)


def test_every_point_is_a_configuration_and_back():
    s = space()
    assert s.size == 8 * 2 * 2 * 3 * 2
    assert s.cardinalities == (2, 2, 2, 2, 2, 3, 2)
    seen = set()
    for point in range(s.size):
        config = s.config(point)
        assert config in s and s.point(config) == point
        assert s.from_digits(s.digits(point)) == point
        seen.add(config)
    assert len(seen) == s.size and (s.size * SPAN) not in s
    rng = np.random.default_rng(0)
    assert all(s.config(int(p)) in s for p in s.sample_points(rng, 50))


def test_a_configuration_decodes_to_its_multiplier_recipe_and_reuse_factor():
    s = space()
    config, recipe, reuse = s.decode(s.exact)
    assert config == appaxo.EXACT and reuse == 1
    assert recipe.identity and recipe.weight_bits == (8, 8, 8) and recipe.sparsity == 0
    assert recipe.activation_bits == (8, 8, 8)
    digits = [1, 0, 1, 0, 1, 2, 1]  # LUT bits, weight 4, activation 8, reuse 16, sparsity 0.5
    config, recipe, reuse = s.decode(s.config(s.from_digits(digits)))
    assert config & 0b111 == 0b101 and config >> 3 == appaxo.EXACT >> 3
    assert recipe.weight_bits == (4, 4, 4) and recipe.activation_bits == (8, 8, 8)
    assert (reuse, recipe.sparsity) == (16, 0.5)
    params = s.params(s.config(s.from_digits(digits)))
    assert params["reuse_factor"][0] == 16 and params["sparsity"][0] == 0.5


def test_per_layer_bits_are_one_variable_per_layer_and_a_single_value_is_fixed():
    s = space(per_layer=True, activation_bits=[8])
    names = s.variable_names[3:]
    assert names == ("weight_bits:conv1", "weight_bits:conv2", "weight_bits:fc1", "reuse_factor",
                     "sparsity")
    digits = [0, 0, 0, 1, 0, 1, 0, 1]
    _, recipe, _ = s.decode(s.config(s.from_digits(digits)))
    assert recipe.weight_bits == (8, 4, 8) and recipe.activation_bits == (8, 8, 8)


@pytest.mark.parametrize("name", sorted(set(STRATEGIES) - {"bayes-gp"}))  # gp: 8 s, as tpe
def test_every_strategy_searches_the_joint_space(name):
    s = space()
    strategy = make_strategy(STRATEGIES[name], s, ["maximize", "minimize"], 0, seed=1)
    configs = []
    for _ in range(20):
        proposal = strategy.ask()
        if proposal is None:
            break
        assert proposal.config in s
        configs.append(proposal.config)
        _, recipe, reuse = s.decode(proposal.config)
        strategy.tell(proposal, Evaluation((-float(np.mean(recipe.weight_bits)), reuse)))
    assert len(configs) == 20
    # the search moves the firmware settings, not only the multiplier
    assert len({c // SPAN for c in configs}) > 1


def firmware_study(mnist_dir, **firmware) -> dict:
    """The mini study with a firmware section (8-bit widths unless given: no synthesis)."""
    data = mini_study(mnist_dir, name="fw", dataset={"test_size": 300},
                      objectives=[{"metric": "accuracy"}, {"metric": "fpga_luts"},
                                  {"metric": "latency_cycles"}],
                      budget={"trials": 5})
    data["space"] = {"type": "appaxo36", "free": MINI_FREE, "firmware": {
        "reuse_factor": [1, 64], "sparsity": [0.0, 0.5],
        "fine_tune": {"epochs": 1, "images": 300}, **firmware}}
    return data


def test_the_section_is_validated_and_its_absence_keeps_the_hash(mnist_dir):
    plain = parse_settings(mini_study(mnist_dir))
    assert "firmware" not in plain.canonical()["space"]
    data = firmware_study(mnist_dir)
    settings = parse_settings(data)
    assert settings.space.firmware.fine_tune.images == 300
    assert settings.sha256() != parse_settings({**data, "space": {
        **data["space"], "firmware": {**data["space"]["firmware"], "sparsity": [0.0]}}}).sha256()


@pytest.mark.parametrize(("change", "message"), [
    ({"objectives": [{"metric": "accuracy"}, {"metric": "area"}]}, "area is not measured"),
    ({"retrain": {}}, "retrain: not for space.firmware"),
    ({"evaluation": {"screening": {"images": 100}}}, "screening is not for the firmware model"),
    ({"quantization": {"scheme": "u8s8"}}, "must be s8s8"),
])
def test_settings_a_firmware_study_cannot_use_are_one_line_errors(mnist_dir, change, message):
    with pytest.raises(StudyFileError, match=message) as err:
        parse_settings({**firmware_study(mnist_dir), **change})
    assert "\n" not in str(err.value)


def test_firmware_metrics_need_the_section_and_lists_hold_distinct_values(mnist_dir):
    with pytest.raises(StudyFileError, match=r"bram is not measured for AppAxO configurations .*\(bram comes from the firmware model \(a space.firmware section\)\)"):
        parse_settings(mini_study(mnist_dir, objectives=[{"metric": "accuracy"},
                                                         {"metric": "bram"}]))
    data = firmware_study(mnist_dir, weight_bits=[4, 4])
    with pytest.raises(StudyFileError, match="space.firmware.weight_bits: .*lists a value twice"):
        parse_settings(data)
    data = firmware_study(mnist_dir, activation_bits=[1])
    with pytest.raises(StudyFileError, match="space.firmware.activation_bits.0"):
        parse_settings(data)


@pytest.fixture(scope="module")
def finished(mnist_dir, session_cache, tmp_path_factory):
    os.environ["DSE_CACHE_DIR"] = str(session_cache)
    data = {**firmware_study(mnist_dir), "output": str(tmp_path_factory.mktemp("fw") / "study")}
    return data, run_study(parse_settings(data), log=lambda m: None, progress=False)


def test_a_study_measures_accuracy_and_firmware_costs(finished):
    _, study = finished
    trials = study.trials
    assert len(trials) == 6 and (trials["state"] == "COMPLETE").all()
    baseline = trials[trials["role"] == "baseline"].iloc[0]
    assert (baseline["sparsity"], baseline["reuse_factor"], baseline["weight_bits"]) == (0, 1, 8)
    assert baseline["appaxo_config"] == appaxo.EXACT and baseline["bram"] == 0
    assert baseline["accuracy_drop"] == 0 and baseline["variant_accuracy"] == baseline["accuracy"]
    for _, row in trials.iterrows():
        layers = row["layer_costs"]
        assert len(layers) == 5 and row["fpga_luts"] == pytest.approx(
            sum(r["multiplier_luts"] + r["adder_luts"] + r["storage_luts"] for r in layers))
        assert row["multipliers"] == sum(np.ceil(np.array([r["multipliers"] for r in layers])))
        if row["sparsity"] == 0.5:
            assert row["weight_sparsity"] >= 0.5
        if row["reuse_factor"] == 64:  # deep enough for BRAM, and 64 cycles per pixel
            assert row["bram"] > 0 and row["latency_cycles"] > 64 * 784
    assert (study.folder / PLOT).is_file() and (study.folder / "pareto.png").is_file()
    designs = list((study.folder / "pareto").iterdir())
    assert designs and all((d / "int8.onnx").is_file() and (d / "layer_costs.csv").is_file()
                           for d in designs)


def test_a_resumed_study_and_a_new_evaluator_reuse_every_result(finished, capsys):
    data, study = finished
    before = study.trials
    resume_study(study.folder, log=print, progress=False)
    assert len(study.trials) == len(before)
    messages = []
    evaluator = build_evaluator(parse_settings(data), messages.append)
    for _, row in before.iterrows():
        evaluator.remember(row.to_dict())
    row = before[before["role"] == "search"].iloc[0]
    again = evaluator.evaluate(int(row["config"]))
    assert again["cached"] and again["accuracy"] == row["accuracy"]
    assert again["fpga_luts"] == pytest.approx(row["fpga_luts"])
    assert not any("fine-tuning" in m for m in messages)  # the variant came from the cache


@pytest.mark.slow
def test_searched_bit_widths_end_to_end(mnist_dir, session_cache, tmp_path):
    """NSGA-II over bits, reuse and sparsity: narrowed multipliers synthesized by Yosys."""
    os.environ["DSE_CACHE_DIR"] = str(session_cache)
    data = firmware_study(mnist_dir, weight_bits=[4, 8], activation_bits=[6, 8])
    data.update(output=str(tmp_path / "s"), strategy={"type": "nsga2", "population": 4},
                budget={"trials": 8})
    data["space"]["free"] = FREE_3
    trials = run_study(parse_settings(data), log=lambda m: None, progress=False).trials
    narrow = trials[trials["weight_bits"] < 8]
    assert not narrow.empty and (trials["state"] == "COMPLETE").all()
    per_multiplier = [r["multiplier_luts"] / r["multipliers"] for _, r in narrow.iterrows()]
    full = trials[(trials["weight_bits"] == 8) & (trials["activation_bits"] == 8)]
    assert max(per_multiplier) < max(r["multiplier_luts"] / r["multipliers"]
                                     for _, r in full.iterrows())


def test_commands_that_read_the_study_network_refuse_firmware_designs(finished, capsys):
    """retrain, analyze, export --format onnx and hls read the study's int8 network, not a
    design's variant: a firmware design is a one-line error (exit 2); the EMGAxO table lists
    each trial's multiplier, not its joint configuration."""
    from dse.cli import main
    from dse.export import emgaxo_table

    _, study = finished
    design = study.pareto().iloc[0]["trial"]
    for argv in (["retrain", str(study.folder), "--design", str(design)],
                 ["analyze", str(study.folder), "--design", str(design)]):
        assert main(argv) == 2
        last = capsys.readouterr().err.strip().splitlines()[-1]
        assert last.startswith("dse: error: ") and "precision/sparsity variant" in last
    table = emgaxo_table(study)
    done = study.trials[study.trials["state"] == "COMPLETE"]
    assert list(table["Config_int"]) == list(done["appaxo_config"].astype("int64"))
