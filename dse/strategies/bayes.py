"""Bayesian optimization with optuna's samplers: multi-objective TPE or the Gaussian-process
sampler, both with constraints (optuna samplers read a trial's constraint values directly).

The sampler works on an in-memory optuna study whose parameters are the free bits (one 0/1
categorical each). It is rebuilt on resume from the stored trials, so the strategy keeps no
state outside the trial store; a resumed run loses and repeats no trial, but its later proposals
may differ from an uninterrupted run's (the samplers' randomness is consumed differently).
"""

from __future__ import annotations

import numpy as np
import optuna
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState, create_trial

from dse.storage import constraint_dict
from dse.strategies.base import Evaluation, Proposal, Strategy


class BayesStrategy(Strategy):
    name = "bayes"
    RETRIES = 5

    def __init__(self, *args, sampler: str = "tpe", startup_trials: int = 10, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if sampler == "tpe":
            chosen = optuna.samplers.TPESampler(seed=self.seed, n_startup_trials=startup_trials,
                                                multivariate=True)
        else:
            chosen = optuna.samplers.GPSampler(seed=self.seed, n_startup_trials=startup_trials)
        self.sampler_name = sampler
        self._study = optuna.create_study(directions=self.directions, sampler=chosen)
        self._bits = self.space.free_bits
        self._distributions = {f"b{bit}": CategoricalDistribution((0, 1)) for bit in self._bits}
        self._pending: dict[int, optuna.Trial] = {}
        self._known: dict[int, Evaluation] = {}  # configuration -> its evaluation

    def _config(self, params: dict) -> int:
        point = sum(params[f"b{bit}"] << i for i, bit in enumerate(self._bits))
        return self.space.config(point)

    def ask(self) -> Proposal | None:
        """A configuration not evaluated yet. On a binary space the samplers often propose a
        known one again; that proposal is answered from what the strategy was told and the
        sampler asked again; after ``RETRIES`` repeats (a GP model that nothing new can move)
        a random unseen configuration is proposed instead."""
        if len(self._known) >= self.space.size:
            return None
        for _ in range(self.RETRIES):
            trial = self._study.ask(self._distributions)
            config = self._config(trial.params)
            if config not in self._known:
                break
            self._finish(trial, self._known[config])
        else:
            point = self._unseen_point()
            self._study.enqueue_trial({f"b{bit}": (point >> i) & 1 for i, bit in enumerate(self._bits)})
            trial = self._study.ask(self._distributions)
            config = self._config(trial.params)
        self._pending[trial.number] = trial
        return Proposal(config, trial.number)

    def _unseen_point(self) -> int:
        rng = np.random.default_rng([self.seed, len(self._study.trials)])
        while True:
            point = int(self.space.sample_points(rng, 1)[0])
            if self.space.config(point) not in self._known:
                return point

    def _finish(self, trial: optuna.Trial, evaluation: Evaluation) -> None:
        for key, value in constraint_dict(evaluation.constraints).items():
            trial.set_constraint(key, value)
        if evaluation.values is None:
            self._study.tell(trial, state=TrialState.FAIL)
        else:
            self._study.tell(trial, list(evaluation.values))

    def tell(self, proposal: Proposal, evaluation: Evaluation) -> None:
        self._known[proposal.config] = evaluation
        trial = self._pending.pop(proposal.index, None)
        if trial is None:  # replayed from the store: add it as a finished trial
            point = self.space.point(proposal.config)
            params = {f"b{bit}": (point >> i) & 1 for i, bit in enumerate(self._bits)}
            self._study.add_trial(create_trial(
                state=TrialState.COMPLETE if evaluation.values is not None else TrialState.FAIL,
                values=evaluation.values, params=params, distributions=self._distributions,
                constraints=constraint_dict(evaluation.constraints) or None,
            ))
            return
        self._finish(trial, evaluation)
