"""NSGA-II (pymoo) on the free bits: binary genome, bit-flip mutation, two-point or uniform
crossover.

pymoo's ask/tell interface proposes a whole generation; this strategy hands its members out
one by one (numbered in order), and tells pymoo the generation once every member has been
evaluated. A resumed study tells the stored trials again: asking pymoo generation by generation
with the same seed reproduces the same members, so the run continues exactly. A configuration
seen in an earlier generation is scored from the evaluation cache, not evaluated again.
"""

from __future__ import annotations

import numpy as np

from dse.strategies.base import Evaluation, Proposal, Strategy

FAILED = 1e12  # objective and constraint value of a failed evaluation: dominated by everything


class NSGA2Strategy(Strategy):
    name = "nsga2"

    def __init__(self, *args, population: int = 40, generations: int | None = None,
                 crossover: str = "two_point", mutation_rate: float | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        from pymoo.algorithms.moo.nsga2 import NSGA2
        from pymoo.core.problem import Problem
        from pymoo.operators.crossover.pntx import TwoPointCrossover
        from pymoo.operators.crossover.ux import UniformCrossover
        from pymoo.operators.mutation.bitflip import BitflipMutation
        from pymoo.operators.sampling.rnd import BinaryRandomSampling

        n_bits = len(self.space.free_bits)
        self._problem = Problem(n_var=n_bits, n_obj=len(self.directions),
                                n_ieq_constr=self.n_constraints, xl=0, xu=1, vtype=bool)
        self._algorithm = NSGA2(
            pop_size=population,
            sampling=BinaryRandomSampling(),
            crossover=TwoPointCrossover() if crossover == "two_point" else UniformCrossover(),
            mutation=BitflipMutation(prob=1.0, prob_var=mutation_rate or 1.0 / n_bits),
            eliminate_duplicates=True,
        )
        self._algorithm.setup(self._problem, termination=("n_gen", generations or 10**9),
                              seed=self.seed, verbose=False)
        self.generations = generations
        self._weights = 1 << np.arange(n_bits, dtype=np.int64)
        self._signs = np.array([-1.0 if d == "maximize" else 1.0 for d in self.directions])
        self._generation = 0
        self._next_index = 0
        self._batch: list[Proposal] = []
        self._population = None
        self._handed: set[int] = set()
        self._told: dict[int, Evaluation] = {}

    def _new_generation(self) -> None:
        self._population = self._algorithm.ask()
        points = self._population.get("X").astype(np.int64) @ self._weights
        self._batch = [Proposal(self.space.config(int(p)), self._next_index + i, self._generation)
                       for i, p in enumerate(points)]
        self._next_index += len(self._batch)

    def _finish_generation(self) -> None:
        from pymoo.core.evaluator import Evaluator
        from pymoo.problems.static import StaticProblem

        evaluations = [self._told[p.index] for p in self._batch]
        f = np.array([np.asarray(e.values) * self._signs if e.values is not None
                      else np.full(len(self.directions), FAILED) for e in evaluations])
        static = {"F": f}
        if self.n_constraints:
            static["G"] = np.array([e.constraints if e.values is not None
                                    else (FAILED,) * self.n_constraints for e in evaluations])
        Evaluator().eval(StaticProblem(self._problem, **static), self._population)
        self._algorithm.tell(infills=self._population)
        self._generation += 1
        self._batch = []

    def ask(self) -> Proposal | None:
        while True:
            if not self._batch:
                if self.generations is not None and self._generation >= self.generations:
                    return None
                self._new_generation()
            pending = [p for p in self._batch if p.index not in self._told]
            if not pending:
                self._finish_generation()
                continue
            for proposal in pending:
                if proposal.index not in self._handed:
                    self._handed.add(proposal.index)
                    return proposal
            return None  # every member is out being evaluated

    def tell(self, proposal: Proposal, evaluation: Evaluation) -> None:
        self._told[proposal.index] = evaluation
        if self._batch and all(p.index in self._told for p in self._batch):
            self._finish_generation()
