"""Every strategy through one table: determinism across interpreters, budget, failures, resume.
Plus each strategy's own contract."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from dse.loop import StudyRunner, build_evaluator, freeze
from dse.pareto import non_dominated
from dse.space import AppAxOSubspace
from dse.strategies import Evaluation, make_strategy
from dse.study import Study
from dse.study_file import parse_settings
from tests.conftest import mini_study

SPACE = AppAxOSubspace(free=0b1011, fixed=(1 << 36) - 1)
LOW16 = AppAxOSubspace(0xFFFF, 2**36 - 1)
DIRECTIONS = ["maximize", "minimize"]

STRATEGIES = {
    "grid": {"type": "grid"},
    "random": {"type": "random"},
    "sobol": {"type": "sobol"},
    "nsga2": {"type": "nsga2", "population": 8},
    "bayes-tpe": {"type": "bayes", "startup_trials": 5},
    "bayes-gp": {"type": "bayes", "sampler": "gp", "startup_trials": 4},
}


def synthetic(config: int) -> Evaluation:
    """A deterministic two-objective response (fewer kept LUTs: cheaper and less accurate)."""
    kept = bin(config).count("1")
    return Evaluation((kept / 36 - (config % 7) / 100, float(kept)), (0.0,))


def drain(strategy, limit=10_000):
    out = []
    while len(out) < limit and (p := strategy.ask()) is not None:
        out.append(p)
        strategy.tell(p, synthetic(p.config))
    return out


# --- the generic table -------------------------------------------------------------------------

SPACES = {  # as a fresh interpreter builds them, and how many proposals to compare
    "appaxo16": ("AppAxOSubspace(0xFFFF, 2**36 - 1)", 20),
    "layerwise": ("LayerwiseSpace(tuple((f'g{g}', (f'l{g}',)) for g in range(4)), tuple('abcde'))", 10),
}


# the GP sampler takes 20-30 s where the others take 1-5: its cases run with the slow ones
BY_NAME = [pytest.param(n, marks=pytest.mark.slow) if n == "bayes-gp" else n
           for n in sorted(STRATEGIES)]


def fresh_proposals(cases: list[tuple[str, str]]) -> list[dict[str, list[int]]]:
    """The proposals of each (strategy, space) case, drawn in each of two fresh interpreters
    (each with its own hash seed): one pair of interpreters for all the cases."""
    lines = ["import json", "from dse.space import AppAxOSubspace, LayerwiseSpace",
             "from dse.strategies import make_strategy", "from tests.dse.test_strategies import drain",
             "out = {}"]
    for name, space in cases:
        built, count = SPACES[space]
        lines += [f"s = make_strategy({STRATEGIES[name]!r}, {built}, ['maximize', 'minimize'], 1, 11)",
                  f"out[{name + '/' + space!r}] = [p.config for p in drain(s, {count})]"]
    code = "\n".join([*lines, "print(json.dumps(out))"])
    return [json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                      check=True).stdout) for _ in range(2)]


@pytest.fixture(scope="module")
def fresh() -> list[dict[str, list[int]]]:
    """Every case but the slow GP sampler's, from one pair of fresh interpreters."""
    return fresh_proposals([(n, s) for n in sorted(STRATEGIES) if n != "bayes-gp" for s in SPACES])


@pytest.mark.parametrize("space", sorted(SPACES))
@pytest.mark.parametrize("name", BY_NAME)
def test_same_seed_same_proposals_in_fresh_interpreters(name, space, request):
    runs = fresh_proposals([(name, space)]) if name == "bayes-gp" else request.getfixturevalue("fresh")
    first, second = (run[f"{name}/{space}"] for run in runs)
    assert first == second and len(first) == SPACES[space][1]


@pytest.fixture(scope="module")
def small_study_data(mnist_dir, session_cache, tmp_path_factory):
    import os

    os.environ["DSE_CACHE_DIR"] = str(session_cache)
    return mini_study(mnist_dir, name="strategies", seed=4, dataset={"test_size": 300},
                      constraints=["accuracy_drop <= 0.05"], budget={"trials": 20})


@pytest.fixture(scope="module")
def evaluator(small_study_data):
    data = {**small_study_data, "strategy": {"type": "random"}}
    return build_evaluator(parse_settings(data), lambda m: None)


class Interrupt(KeyboardInterrupt):
    """Ctrl-C in the middle of an evaluation."""


def run_study_with(folder, data, evaluator, *, stop_after=None, fail_every=None):
    """Run the real loop; ``stop_after`` n evaluations raises mid-study (a crash),
    ``fail_every`` k makes every k-th evaluation raise (a candidate that cannot be built)."""
    settings = parse_settings({**data, "output": str(folder)})
    freeze(settings, folder)
    real, calls = evaluator.evaluate, [0]

    def evaluate(config, *context):
        calls[0] += 1
        if stop_after is not None and calls[0] > stop_after:
            raise Interrupt
        if fail_every and calls[0] % fail_every == 0:
            raise RuntimeError("cannot synthesize")
        return real(config, *context)

    evaluator.evaluate = evaluate
    with Study(folder, settings, driver=True) as study:
        try:
            StudyRunner(study, evaluator, lambda m: None, progress=False).run()
        except Interrupt:
            pass
        finally:
            evaluator.evaluate = real
    return study


def search(study):
    t = study.trials
    return t[t["role"] == "search"].sort_values("proposal_index")


@pytest.mark.parametrize("name", BY_NAME)
def test_budget_failures_and_resume(name, tmp_path, small_study_data, evaluator):
    data = {**small_study_data, "strategy": STRATEGIES[name]}
    straight = search(run_study_with(tmp_path / "straight", data, evaluator))
    assert len(straight) == 20 and straight["proposal_index"].is_unique

    # interrupted after 11 evaluations (the baseline and 10 search trials), then resumed
    first = search(run_study_with(tmp_path / "resumed", data, evaluator, stop_after=11))
    assert len(first) == 10
    resumed = search(run_study_with(tmp_path / "resumed", data, evaluator))
    assert len(resumed) == 20 and resumed["proposal_index"].is_unique  # nothing lost or repeated
    kept = resumed.set_index("trial").loc[first["trial"]]
    assert kept["config"].tolist() == first["config"].tolist()
    if not name.startswith("bayes"):  # the samplers' randomness is consumed differently
        assert resumed["config"].tolist() == straight["config"].tolist()
        assert resumed["accuracy"].tolist() == straight["accuracy"].tolist()
        front = lambda s: sorted(s.pareto()["config"].tolist())  # noqa: E731
        assert front(Study(tmp_path / "resumed", parse_settings({**data, "output": str(tmp_path / "resumed")}))) \
            == front(Study(tmp_path / "straight", parse_settings({**data, "output": str(tmp_path / "straight")})))

    # failed evaluations are failed trials; the strategy goes on and the budget holds
    failing = run_study_with(tmp_path / "failing", data, evaluator, fail_every=4)
    rows = search(failing)
    assert len(rows) == 20 and (rows["state"] == "FAIL").sum() == 5
    assert set(rows.loc[rows["state"] == "FAIL", "error"]) == {"RuntimeError: cannot synthesize"}


# --- each strategy's own contract --------------------------------------------------------------

def test_subspace_numbering_round_trip():
    assert SPACE.free_bits == (0, 1, 3) and SPACE.size == 8
    configs = [SPACE.config(i) for i in range(8)]
    assert len(set(configs)) == 8 and all(c in SPACE for c in configs)
    assert [SPACE.point(c) for c in configs] == list(range(8))
    with pytest.raises(ValueError):
        SPACE.point(0)  # fixed bits set to 0: outside the subspace


def strategy(settings, space=SPACE, seed=3):
    return make_strategy(settings, space, DIRECTIONS, 1, seed)


def test_grid_counts_over_the_free_bits_then_ends():
    assert [SPACE.point(p.config) for p in drain(strategy({"type": "grid"}))] == list(range(8))
    assert [SPACE.point(p.config) for p in drain(strategy({"type": "grid", "start": 5}))] == [5, 6, 7]
    listed = drain(strategy({"type": "grid", "configs": [9, 2**36 - 1, 404750335]}))
    assert [p.config for p in listed] == [9, 2**36 - 1, 404750335]


def test_random_and_sobol_cover_a_small_space_without_repeats():
    for kind in ("random", "sobol"):
        points = [SPACE.point(p.config) for p in drain(strategy({"type": kind}))]
        assert sorted(points) == list(range(8)), kind


def test_random_on_a_huge_space_is_distinct_and_seeded():
    space = AppAxOSubspace(free=(1 << 36) - 1, fixed=0)
    a = [p.config for p in drain(strategy({"type": "random"}, space, 1), limit=500)]
    assert len(set(a)) == 500 and a != [p.config for p in drain(strategy({"type": "random"}, space, 2), 500)]


def test_nsga2_numbers_generations_and_keeps_the_true_front():
    s = strategy({"type": "nsga2", "population": 10, "generations": 6}, LOW16, seed=0)
    proposals = drain(s)
    assert len(proposals) == 60 and [p.generation for p in proposals[::10]] == list(range(6))
    assert s.ask() is None  # the generations are spent
    # pymoo's elite (what it was told, signs undone) is the front of everything evaluated
    values = np.array([synthetic(p.config).values for p in proposals])
    elite = s._algorithm.opt.get("F") * np.array([-1.0, 1.0])
    expected = np.unique(values[non_dominated(values, DIRECTIONS)], axis=0)
    np.testing.assert_allclose(np.unique(elite, axis=0), expected)


@pytest.mark.parametrize("sampler", ["tpe", pytest.param("gp", marks=pytest.mark.slow)])
def test_bayes_never_proposes_a_known_configuration(sampler):
    s = strategy({"type": "bayes", "sampler": sampler, "startup_trials": 5}, LOW16, seed=2)
    configs = [p.config for p in drain(s, limit=40)]
    assert len(set(configs)) == 40


def test_strategy_options_are_validated():
    from dse.study_file import StudyFileError

    base = {"name": "x", "space": {"type": "appaxo36", "free": 255}, "budget": {"trials": 3}}
    for bad, message in [({"type": "nsga2", "population": 2}, "population"),
                         ({"type": "nsga2", "crossover": "one_point"}, "crossover"),
                         ({"type": "bayes", "sampler": "cma"}, "sampler"),
                         ({"type": "grid", "configs": []}, "non-empty")]:
        with pytest.raises(StudyFileError, match=message):
            parse_settings({**base, "strategy": bad})
