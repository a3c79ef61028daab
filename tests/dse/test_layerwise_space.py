"""The layer-wise search space (one library member per group of layers) and every strategy over
its integer variables; configurations beyond int64 through a real journal file and SQLite."""

from __future__ import annotations

import datetime as dt

import numpy as np
import optuna
import pytest
from optuna.distributions import CategoricalDistribution

from dse.space import AppAxOSubspace, ChoiceSpace, LayerwiseSpace
from dse.storage import TrialStore, stored_config
from dse.strategies import Evaluation, make_strategy
from dse.study import Study
from dse.study_file import parse_settings
from tests.dse.test_strategies import STRATEGIES

DIRECTIONS = ["maximize", "minimize"]
SMALL = LayerwiseSpace(tuple((f"g{g}", (f"conv{g}",)) for g in range(3)),
                       ("exact", "m1", "m2", "m3", "m4"))  # 5^3 = 125 configurations
HUGE = LayerwiseSpace(tuple((f"g{g}", (f"layer{g}",)) for g in range(20)),
                      tuple(f"m{i}" for i in range(20)))  # 20^20 > 2^86
TIED = LayerwiseSpace((("conv", ("conv1", "conv2")), ("fc", ("fc1",))), ("exact", "a", "b"))

SEQUENCES = ("grid", "random", "sobol")


def synthetic(space, config: int) -> Evaluation:
    """Higher member indices: cheaper and less accurate (a trade-off with a real front)."""
    digits = space.digits(space.point(config))
    cost = sum(card - 1 - d for card, d in zip(space.cardinalities, digits)) + (config % 3) / 10
    return Evaluation((1.0 - sum(digits) / (10 * len(digits)) - (config % 7) / 100, cost), (0.0,))


def drain(strategy, limit: int = 10_000):
    out = []
    while len(out) < limit and (p := strategy.ask()) is not None:
        out.append(p)
        strategy.tell(p, synthetic(strategy.space, p.config))
    return out


def strategy(name: str, space: LayerwiseSpace = SMALL, seed: int = 3, initial=(), **options):
    return make_strategy({**STRATEGIES[name], **options}, space, DIRECTIONS, 1, seed, initial)


# --- the space --------------------------------------------------------------------------------

def test_configurations_are_mixed_radix_member_indices_group_0_lowest():
    assert SMALL.size == 125 and SMALL.cardinalities == (5, 5, 5) and SMALL.exact == 0
    assert SMALL.variable_names == ("g0", "g1", "g2")
    assert SMALL.digits(1 + 2 * 5 + 4 * 25) == (1, 2, 4)
    for config in range(SMALL.size):
        assert config in SMALL and SMALL.point(config) == SMALL.config(config) == config
        assert SMALL.from_digits(SMALL.digits(config)) == config
    assert SMALL.size not in SMALL and -1 not in SMALL
    with pytest.raises(ValueError, match="outside the layer-wise space of 125"):
        SMALL.point(125)
    with pytest.raises(ValueError, match=r"member indices \[1, 5, 0\]: expected 3 values in 0 .. 4"):
        SMALL.from_digits((1, 5, 0))


def test_configurations_beyond_int64_round_trip_exactly():
    last = HUGE.size - 1
    assert last > 2**86 and HUGE.digits(last) == (19,) * 20
    config = HUGE.from_digits(range(20))
    assert config == sum(i * 20**i for i in range(20)) and config > 2**63
    assert HUGE.digits(config) == tuple(range(20)) and HUGE.point(config) == config


def test_uniform_samples_beyond_int64_are_python_ints():
    points = HUGE.sample_points(np.random.default_rng(0), 2000)
    assert points.dtype == object and all(isinstance(p, int) and p in HUGE for p in points)
    assert max(points) > 2**63 and len(set(points)) == 2000
    digits = np.array([HUGE.digits(p) for p in points])
    assert np.all(np.bincount(digits.ravel(), minlength=20) > 1500)  # every member, every group
    small = SMALL.sample_points(np.random.default_rng(0), 5000)
    assert small.dtype == np.int64 and set(small.tolist()) == set(range(125))


def test_assignment_maps_every_tied_layer_to_its_group_member():
    config = TIED.from_digits((1, 2))
    assert config == 1 + 2 * 3
    assert TIED.assignment(config) == {"conv1": "a", "conv2": "a", "fc1": "b"}
    assert list(TIED.assignment(config)) == ["conv1", "conv2", "fc1"]
    assert TIED.assignment(TIED.exact) == {"conv1": "exact", "conv2": "exact", "fc1": "exact"}


def test_params_name_each_groups_member_for_optuna_clients():
    params = TIED.params(TIED.from_digits((2, 0)))
    assert {k: v for k, (v, _) in params.items()} == {"conv": "b", "fc": "exact"}
    assert all(d == CategoricalDistribution(("exact", "a", "b")) for _, d in params.values())


@pytest.mark.parametrize("groups, members, message", [
    ((), ("exact", "a"), "at least one group"),
    ((("g", ("l",)),), ("exact",), "at least two library members"),
    ((("g", ("l",)),), ("exact", "a", "exact"), "member names repeat"),
    ((("g", ("l1",)), ("g", ("l2",))), ("exact", "a"), "group names repeat"),
    ((("g", ("l1", "l2")), ("h", ("l2",))), ("exact", "a"), "layer 'l2' is in groups 'g' and 'h'"),
    ((("g", ()),), ("exact", "a"), "group 'g' covers no layer"),
    ((("config", ("l",)),), ("exact", "a"), "'config' names the configuration"),
])
def test_invalid_spaces_are_one_line_errors(groups, members, message):
    with pytest.raises(ValueError, match=message) as err:
        LayerwiseSpace(groups, members)
    assert "\n" not in str(err.value)


def test_bit_spaces_spell_points_as_their_free_bits_lowest_first():
    space = AppAxOSubspace(free=0b1011, fixed=(1 << 36) - 1)
    assert space.cardinalities == (2, 2, 2) and space.variable_names == ("b0", "b1", "b3")
    assert [space.digits(p) for p in (0, 5, 6)] == [(0, 0, 0), (1, 0, 1), (0, 1, 1)]
    assert all(space.from_digits(space.digits(p)) == p for p in range(space.size))
    choice = ChoiceSpace((("a", (1, 2, 3, 4)), ("b", (0, 1))))
    assert choice.cardinalities == (2, 2, 2) and choice.digits(6) == (0, 1, 1)


# --- every strategy on the layer-wise space ----------------------------------------------------

@pytest.mark.parametrize("name", SEQUENCES)
def test_sequences_cover_the_small_space_once(name):
    configs = [p.config for p in drain(strategy(name))]
    assert sorted(configs) == list(range(SMALL.size))
    if name == "grid":
        assert configs == list(range(SMALL.size))  # counting order, group 0 fastest


@pytest.mark.parametrize("name, count", [("grid", 50), ("random", 300), ("sobol", 300),
                                         ("nsga2", 24), ("bayes-tpe", 12)])
def test_the_huge_space_gets_valid_distinct_proposals(name, count):
    configs = [p.config for p in drain(strategy(name, HUGE, seed=1), count)]
    assert len(configs) == count == len(set(configs)) and all(c in HUGE for c in configs)
    if name in ("random", "sobol"):  # spread over all groups, not only the low ones
        assert sum(c > 2**63 for c in configs) > count // 2
        assert configs != [p.config for p in drain(strategy(name, HUGE, seed=2), count)]


@pytest.mark.parametrize("sampler", ["tpe", "gp"])
def test_bayes_samples_member_indices_without_repeats(sampler):
    s = strategy(f"bayes-{sampler}", SMALL, seed=2)
    configs = [p.config for p in drain(s, limit=12)]
    assert len(set(configs)) == 12 and all(c in SMALL for c in configs)
    assert set(s._study.trials[-1].params) == {"g0", "g1", "g2"}  # one categorical per group


def test_sobol_spreads_every_variable_over_all_members():
    digits = np.array([SMALL.digits(p.config) for p in drain(strategy("sobol"), 25)])
    assert all(set(digits[:, g]) == set(range(5)) for g in range(3))


def test_nsga2_integer_genome_evolves_over_numbered_generations():
    space = LayerwiseSpace(tuple((f"g{g}", (f"l{g}",)) for g in range(8)), tuple(f"m{i}" for i in range(6)))
    s = make_strategy({"type": "nsga2", "population": 12, "generations": 8}, space, ["minimize"], 0, 0)

    def distance(config: int) -> float:  # the optimum: group g on member g % 6
        return float(sum(d != g % 6 for g, d in enumerate(space.digits(config))))

    proposals = []
    while (p := s.ask()) is not None:
        proposals.append(p)
        s.tell(p, Evaluation((distance(p.config),)))
    assert [p.generation for p in proposals[::12]] == list(range(8)) and len(proposals) == 96
    best = [min(distance(p.config) for p in proposals[i:i + 12]) for i in (0, 84)]
    assert best[1] < best[0]
    genomes = np.array([space.digits(p.config) for p in proposals])
    assert genomes.min() == 0 and genomes.max() == 5  # every member reachable, none beyond


def test_random_reset_mutation_moves_to_another_member_uniformly():
    from pymoo.core.problem import Problem

    from dse.strategies.nsga2 import _random_reset

    cards = np.array([5, 5, 5, 5])
    X = np.zeros((4000, 4), dtype=np.int64)
    rng = np.random.default_rng(0)
    problem = Problem(n_var=4, xl=0, xu=cards - 1, vtype=int)
    always = _random_reset(cards, 1.0)._do(problem, X, random_state=rng)
    assert np.all(always != 0) and np.all(always < 5)
    assert np.all(np.abs(np.bincount(always.ravel())[1:] / always.size - 0.25) < 0.02)
    sometimes = _random_reset(cards, 0.25)._do(problem, X, random_state=rng)
    assert abs((sometimes != 0).mean() - 0.25) < 0.02


@pytest.mark.parametrize("name", [*SEQUENCES, "nsga2"])
def test_a_fresh_strategy_told_the_history_proposes_the_same_next(name):
    space = SMALL if name == "grid" else HUGE  # grid only counts the lowest groups of HUGE
    initial = (space.from_digits([len(space.members) - 1] * len(space.groups)), space.exact)
    straight = strategy(name, space, seed=5, initial=initial)
    history = drain(straight, 20)
    following = [p.config for p in drain(straight, 20)]
    replayed = strategy(name, space, seed=5, initial=initial)
    for p in history:
        replayed.tell(p, synthetic(space, p.config))
    assert [p.config for p in drain(replayed, 20)] == following


LOW4 = AppAxOSubspace(free=0b1111, fixed=(1 << 36) - 1)


@pytest.mark.parametrize("space", [SMALL, LOW4], ids=["layerwise", "bits"])
@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_initial_configurations_are_proposed_first(name, space):
    initial = [space.config(p) for p in (space.size - 1, 7, 0)]
    configs = [p.config for p in drain(make_strategy(STRATEGIES[name], space, DIRECTIONS, 1, 3,
                                                     initial), 10)]
    assert configs[:3] == initial and len(set(configs)) == 10
    with pytest.raises(ValueError, match="initial configuration 125 is outside the search space"):
        strategy(name, initial=[125])


def test_sequences_after_the_initial_configurations_still_cover_the_space_once():
    for name in SEQUENCES:
        configs = [p.config for p in drain(strategy(name, initial=[7, 99]))]
        assert configs[:2] == [7, 99] and sorted(configs) == list(range(125)), name


# --- storage ----------------------------------------------------------------------------------

BIG = 10**89 + 12345  # a 90-digit configuration


def _store(folder, url=None) -> TrialStore:
    return TrialStore(folder, "s", DIRECTIONS, url, writable=True, log=lambda m: None)


@pytest.mark.parametrize("backend", ["journal", "sqlite"])
def test_configurations_beyond_the_config_param_round_trip_exactly(tmp_path, backend):
    url = f"sqlite:///{tmp_path / 'trials.db'}" if backend == "sqlite" else None
    store = _store(tmp_path, url)
    started = dt.datetime.now()
    huge = HUGE.from_digits([19] * 10 + [7] * 10)
    store.add(huge, [0.9, 3.0], {"role": "search"}, started, params=HUGE.params(huge))
    store.add(BIG, None, {"role": "search", "error": "E"}, started)
    store.add(7, [0.8, 1.0], {"role": "search"}, started, params=TIED.params(7))
    store.close()
    storage = url or optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(tmp_path / "trials.journal")))
    trials = optuna.load_study(study_name="s", storage=storage).trials  # a fresh reader
    assert len(str(BIG)) == 90
    assert [stored_config(t) for t in trials] == [huge, BIG, 7]
    assert "config" not in trials[0].params and trials[1].user_attrs["config"] == BIG
    assert trials[0].params["g0"] == "m19" and trials[0].params["g19"] == "m7"
    assert trials[2].params == {"config": 7, "conv": "a", "fc": "b"}  # fits: a param too
    assert trials[2].user_attrs["config"] == 7


def test_a_trial_without_a_configuration_is_refused_by_name():
    from dse.journal import StorageError

    trial = optuna.trial.create_trial(values=[1.0])
    with pytest.raises(StorageError, match="stores no configuration"):
        stored_config(trial)


def test_study_trials_show_layerwise_configs_and_members(tmp_path):
    settings = parse_settings({"name": "s", "space": {"type": "appaxo36", "free": 255},
                               "budget": {"trials": 3}, "strategy": {"type": "random"}})
    configs = [HUGE.size - 1, 0, HUGE.from_digits(range(20))]
    with Study(tmp_path, settings, driver=True) as study:
        for i, config in enumerate(configs):
            study.store.add(config, [0.9, float(i)], {"role": "search", "proposal_index": i},
                            dt.datetime.now(), params=HUGE.params(config))
    trials = Study(tmp_path, settings).trials
    assert trials["config"].tolist() == configs and trials["config"].dtype == object
    assert trials["g19"].tolist() == ["m19", "m0", "m19"] and trials["g1"].tolist() == ["m19", "m0", "m1"]
