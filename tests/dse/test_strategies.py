from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from dse.pareto import non_dominated
from dse.space import AppAxOSubspace
from dse.strategies import GridStrategy, RandomStrategy, make_strategy

SPACE = AppAxOSubspace(free=0b1011, fixed=(1 << 36) - 1)


def drain(strategy, limit=10_000):
    out = []
    while (p := strategy.ask()) is not None and len(out) < limit:
        out.append(p)
        strategy.tell(p, [0.0, 0.0])
    return out


def test_subspace_numbering_round_trip():
    assert SPACE.free_bits == (0, 1, 3) and SPACE.size == 8
    configs = [SPACE.config(i) for i in range(8)]
    assert len(set(configs)) == 8 and all(c in SPACE for c in configs)
    assert [SPACE.point(c) for c in configs] == list(range(8))
    assert SPACE.config(0) == (1 << 36) - 1 - 0b1011
    with pytest.raises(ValueError):
        SPACE.point(0)  # fixed bits set to 0: outside the subspace


def test_grid_counts_over_the_free_bits_and_ends():
    proposals = drain(GridStrategy(SPACE))
    assert [SPACE.point(p.config) for p in proposals] == list(range(8))
    assert [p.index for p in proposals] == list(range(8))
    assert [SPACE.point(p.config) for p in drain(GridStrategy(SPACE, start=5))] == [5, 6, 7]


def test_random_never_repeats_and_covers_a_small_space():
    points = [SPACE.point(p.config) for p in drain(RandomStrategy(SPACE, seed=3))]
    assert sorted(points) == list(range(8))
    assert points != list(range(8))


def test_random_on_a_huge_space_is_seeded_and_distinct():
    space = AppAxOSubspace(free=(1 << 36) - 1, fixed=0)
    a = [p.config for p in drain(RandomStrategy(space, seed=1), limit=500)]
    b = [p.config for p in drain(RandomStrategy(space, seed=1), limit=500)]
    assert a == b and len(set(a)) == 500
    assert a != [p.config for p in drain(RandomStrategy(space, seed=2), limit=500)]


@pytest.mark.parametrize("kind", ["random", "grid"])
def test_same_seed_same_proposals_in_fresh_interpreters(kind):
    code = (
        "from dse.space import AppAxOSubspace; from dse.strategies import make_strategy;"
        f"s = make_strategy({{'type': '{kind}'}}, AppAxOSubspace(0xFFFF, 2**36 - 1), 11);"
        "print([s.ask().config for _ in range(20)])"
    )
    runs = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           check=True).stdout for _ in range(2)]
    assert runs[0] == runs[1] and runs[0].count(",") == 19


@pytest.mark.parametrize("kind", ["random", "grid"])
def test_replaying_told_trials_continues_the_same_sequence(kind):
    space = AppAxOSubspace(0xFFFF, 2**36 - 1)
    full = [p for p in drain(make_strategy({"type": kind}, space, 5), limit=30)]
    # a resumed strategy is told trials 0..11 except 7 (interrupted) in storage order
    resumed = make_strategy({"type": kind}, space, 5)
    for p in full[:12]:
        if p.index != 7:
            resumed.tell(p, [1.0, 1.0])
    rest = drain(resumed, limit=19)
    assert [p.index for p in rest] == [7] + list(range(12, 30))
    assert [p.config for p in rest] == [full[7].config] + [p.config for p in full[12:30]]


def test_pareto_front_against_brute_force():
    rng = np.random.default_rng(0)
    values = np.column_stack([rng.integers(0, 20, 300), rng.integers(0, 20, 300)]).astype(float)
    directions = ["maximize", "minimize"]
    mask = non_dominated(values, directions)
    for i, (acc, cost) in enumerate(values):
        dominated = np.any((values[:, 0] >= acc) & (values[:, 1] <= cost)
                           & ((values[:, 0] > acc) | (values[:, 1] < cost)))
        assert mask[i] == (not dominated)


def test_pareto_keeps_duplicates_and_handles_three_objectives():
    values = np.array([[1, 1, 1], [1, 1, 1], [0, 2, 0], [2, 2, 2]], dtype=float)
    mask = non_dominated(values, ["minimize"] * 3)
    assert mask.tolist() == [True, True, True, False]
    assert non_dominated(np.empty((0, 2)), ["minimize", "minimize"]).size == 0
