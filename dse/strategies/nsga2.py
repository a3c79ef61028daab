"""NSGA-II (pymoo) on the space's variables, two-point or uniform crossover: a binary genome
with bit-flip mutation on bit spaces; an integer genome with random-reset mutation otherwise
(a layer-wise gene is a library member, a category rather than an ordered number, so a mutated
gene becomes a uniformly random other member instead of a nearby index).

pymoo's ask/tell interface proposes a whole generation; this strategy hands its members out
one by one (numbered in order), and tells pymoo the generation once every member has been
evaluated. A resumed study tells the stored trials again: asking pymoo generation by generation
with the same seed reproduces the same members, so the run continues exactly. A configuration
seen in an earlier generation is scored from the evaluation cache, not evaluated again. The
initial configurations join the first population (random members fill it up to ``population``).
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
        from pymoo.operators.sampling.rnd import BinaryRandomSampling, IntegerRandomSampling

        cardinalities = np.array(self.space.cardinalities)
        n_var = len(cardinalities)
        self._binary = bool((cardinalities == 2).all())
        rate = mutation_rate or 1.0 / n_var
        if self._binary:
            self._problem = Problem(n_var=n_var, n_obj=len(self.directions),
                                    n_ieq_constr=self.n_constraints, xl=0, xu=1, vtype=bool)
            sampling, mutation = BinaryRandomSampling(), BitflipMutation(prob=1.0, prob_var=rate)
        else:
            self._problem = Problem(n_var=n_var, n_obj=len(self.directions),
                                    n_ieq_constr=self.n_constraints, xl=0, xu=cardinalities - 1,
                                    vtype=int)
            sampling, mutation = IntegerRandomSampling(), _random_reset(cardinalities, rate)
        self._algorithm = NSGA2(
            pop_size=population,
            sampling=self._first_population(population, cardinalities) if self.initial else sampling,
            crossover=TwoPointCrossover() if crossover == "two_point" else UniformCrossover(),
            mutation=mutation,
            eliminate_duplicates=True,
        )
        self._algorithm.setup(self._problem, termination=("n_gen", generations or 10**9),
                              seed=self.seed, verbose=False)
        self.generations = generations
        self._signs = np.array([-1.0 if d == "maximize" else 1.0 for d in self.directions])
        self._generation = 0
        self._converged = False
        self._next_index = 0
        self._batch: list[Proposal] = []
        self._population = None
        self._handed: set[int] = set()
        self._told: dict[int, Evaluation] = {}

    def _first_population(self, population: int, cardinalities: np.ndarray) -> np.ndarray:
        """The initial configurations' genomes, then uniform random ones up to ``population``
        (drawn from the seed, so a replay builds the same population)."""
        initial = np.array([self.space.digits(self.space.point(c)) for c in self.initial])
        fill = np.random.default_rng(self.seed).integers(
            0, cardinalities, size=(max(population - len(initial), 0), len(cardinalities)))
        genomes = np.vstack([initial, fill])
        return genomes.astype(bool) if self._binary else genomes

    def _new_generation(self) -> None:
        """Ask pymoo for the next generation; none when mating brings nothing new (a small
        space whose every genome the population already holds): the search has converged."""
        self._population = self._algorithm.ask()
        if self._population is None:
            self._converged = True
            return
        genomes = self._population.get("X").astype(np.int64).tolist()
        self._batch = [Proposal(self.space.config(self.space.from_digits(g)), self._next_index + i,
                                self._generation)
                       for i, g in enumerate(genomes)]
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
                if self._converged or (self.generations is not None
                                       and self._generation >= self.generations):
                    return None
                self._new_generation()
                if self._converged:
                    return None
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


def _random_reset(cardinalities: np.ndarray, rate: float):
    """A pymoo mutation that turns each gene, with probability ``rate``, into a uniformly random
    other value of its variable (members are categories: no value is nearer than another)."""
    from pymoo.core.mutation import Mutation

    class RandomResetMutation(Mutation):
        def _do(self, problem, X, *args, random_state=None, **kwargs):
            X = X.astype(np.int64)
            reset = random_state.random(X.shape) < self.get_prob_var(problem, size=(len(X), 1))
            other = (X + random_state.integers(1, cardinalities, size=X.shape)) % cardinalities
            return np.where(reset, other, X)

    return RandomResetMutation(prob=1.0, prob_var=rate)
