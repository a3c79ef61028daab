"""Bayesian optimization with optuna's samplers: multi-objective TPE or the Gaussian-process
sampler, both with constraints (optuna samplers read a trial's constraint values directly).

The sampler works on an in-memory optuna study whose parameters are the space's variables, one
categorical each (``b<bit>`` with values 0/1 for a free bit, a group's member index for a
layer-wise space); the initial configurations are enqueued before the sampler runs. It is
rebuilt on resume from the stored trials, so the strategy keeps no state outside the trial
store; a resumed run loses and repeats no trial, but its later proposals may differ from an
uninterrupted run's (the samplers' randomness is consumed differently).
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
        self._distributions = {name: CategoricalDistribution(tuple(range(card)))
                               for name, card in zip(self.space.variable_names, self.space.cardinalities)}
        self._pending: dict[int, optuna.Trial] = {}
        self._known: dict[int, Evaluation] = {}  # configuration -> its evaluation
        self._queue = list(self.initial)  # initial configurations not proposed yet

    def _config(self, params: dict) -> int:
        digits = [params[name] for name in self.space.variable_names]
        return self.space.config(self.space.from_digits(digits))

    def _params(self, point: int) -> dict[str, int]:
        return dict(zip(self.space.variable_names, self.space.digits(point)))

    def _enqueued(self, point: int) -> optuna.Trial:
        """A trial of the in-memory study fixed to ``point``, outside the sampler's choice."""
        self._study.enqueue_trial(self._params(point))
        return self._study.ask(self._distributions)

    def ask(self) -> Proposal | None:
        """A configuration not evaluated yet: the initial ones first, then the sampler's. On a
        small space the samplers often propose a known one again; that proposal is answered from
        what the strategy was told and the sampler asked again; after ``RETRIES`` repeats (a GP
        model that nothing new can move) a random unseen configuration is proposed instead."""
        if len(self._known) >= self.space.size:
            return None
        while self._queue:
            config = self._queue.pop(0)
            if config not in self._known:
                trial = self._enqueued(self.space.point(config))
                self._pending[trial.number] = trial
                return Proposal(config, trial.number)
        for _ in range(self.RETRIES):
            trial = self._study.ask(self._distributions)
            config = self._config(trial.params)
            if config not in self._known:
                break
            self._finish(trial, self._known[config])
        else:
            trial = self._enqueued(self._unseen_point())
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
            self._study.add_trial(create_trial(
                state=TrialState.COMPLETE if evaluation.values is not None else TrialState.FAIL,
                values=evaluation.values, params=self._params(self.space.point(proposal.config)),
                distributions=self._distributions,
                constraints=constraint_dict(evaluation.constraints) or None,
            ))
            return
        self._finish(trial, evaluation)
