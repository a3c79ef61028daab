"""The serial study loop: ask the strategy, evaluate, store each finished trial at once, tell.

Only this driver writes to the store. A study can be stopped at any moment (Ctrl-C, ``kill
-9``, a crash): finished trials are in the store, the interrupted one is not, and ``resume``
replays the store through the strategy and continues where it stopped without re-evaluating
anything or exceeding the budget.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import yaml
from tqdm import tqdm

from dse import executors
from dse.executors import Executor, Outcome, SerialExecutor, make_executor
from dse.indicators import hypervolume
from dse.journal import scan
from dse.lock import holder as lock_holder
from dse.pareto import non_dominated, to_minimization
from dse.reports import write_reports
from dse.retrain import retrain_study
from dse.storage import JOURNAL, StorageError, check_storage, constraint_dict, stored_config
from dse.strategies import Evaluation, Proposal, make_strategy
from dse.study import (
    BASELINE,
    DESIGN_POINT,
    FROZEN,
    FROZEN_HASH,
    REFERENCE_POINT,
    RETRAINED,
    SEARCH,
    Study,
    judge,
    read_frozen,
)
from dse.study_file import StudyFileError, StudySettings, settings_diff
from evaluators.scoring.screening import FrontContext

Log = Callable[[str], None]


def check_folder(settings: StudySettings, folder: Path) -> bool:
    """Whether ``folder`` already holds this study; refuses a changed study file, a damaged
    frozen one, a missing trial store or a foreign folder. Writes nothing."""
    if (folder / FROZEN).is_file():
        old = read_frozen(folder)
        if old.sha256() != settings.sha256():
            changes = "; ".join(settings_diff(old.identity(), settings.identity()))
            raise StudyFileError(
                f"{folder}: the study file changed since this study started ({changes}); "
                "restore it, or give the study a new name or output folder"
            )
        if settings.storage is None and not (folder / JOURNAL).is_file():
            raise StorageError(
                f"{folder / JOURNAL}: the trial store is missing next to {FROZEN}; restore it "
                "from a backup, or delete the folder to start the study over")
        return True
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise StudyFileError(f"{folder}: exists and is not a study folder; choose another output")
    return False


def preflight(settings: StudySettings, folder: Path) -> None:
    """Everything a run needs from outside, checked in seconds before anything is loaded,
    trained or written: the folder, the trial store, the lock, the executor's resources."""
    existing = check_folder(settings, folder)
    target = folder if existing else next(p for p in [folder, *folder.parents] if p.exists())
    if not os.access(target, os.W_OK):
        raise StorageError(f"{target}: not writable (a driver writes the study there)")
    if settings.storage:
        check_storage(settings.storage)
    elif existing:
        scan(folder / JOURNAL)  # damage is reported now, not after training
    who = lock_holder(folder) if existing else None
    if who:
        raise StorageError(f"{folder}: another driver is running this study ({who}); wait for it "
                           "to finish or stop it, then resume")
    executors.preflight(settings.executor, folder)


def freeze(settings: StudySettings, folder: Path) -> None:
    """Create the study folder with the frozen settings (nothing to do if it exists). The
    trial store exists before ``study.yaml`` does, so a folder with ``study.yaml`` and no
    journal has lost its journal."""
    if check_folder(settings, folder):
        return
    folder.mkdir(parents=True, exist_ok=True)
    if settings.storage is None:
        (folder / JOURNAL).touch()
    (folder / FROZEN_HASH).write_text(settings.sha256() + "\n")
    tmp = folder / (FROZEN + ".tmp")
    tmp.write_text(yaml.safe_dump(settings.canonical(), sort_keys=False))
    tmp.rename(folder / FROZEN)


def build_evaluator(settings: StudySettings, log: Log, progress: bool | None = None,
                    folder: Path | None = None):
    """The evaluator of the study's kind behind its space (what an earlier run left in the
    study ``folder``, such as a layer-wise library, is read back). ``progress``: the training
    bar (None: on a terminal)."""
    return settings.kind.build_evaluator(settings, log, progress, folder)


class HypervolumeTracker:
    """The hypervolume of the feasible front, updated one evaluation at a time."""

    def __init__(self, reference: dict[str, float], study: Study) -> None:
        self.directions = study.directions
        self.reference = to_minimization(np.array([[reference[k] for k in study.objectives]]),
                                         self.directions)[0]
        done = study.feasible()
        self.front = to_minimization(done[study.objectives].to_numpy(dtype=float), self.directions) \
            if not done.empty else np.empty((0, len(self.directions)))
        self.value = hypervolume(self.front, self.reference)

    def add(self, evaluation: Evaluation, full: bool = True) -> float:
        """Add an evaluation (screened ones never join the front)."""
        if evaluation.feasible and full:
            point = to_minimization(np.array([evaluation.values]), self.directions)
            self.front = np.vstack([self.front, point])
            self.front = self.front[non_dominated(self.front, ["minimize"] * len(self.directions))]
            self.value = hypervolume(self.front, self.reference)
        return self.value


class StudyRunner:
    """Runs one study to its budget, resuming from whatever the store already holds."""

    def __init__(self, study: Study, evaluator, log: Log = print, progress: bool = True,
                 executor: Executor | None = None) -> None:
        if not study.store.writable:
            raise ValueError("StudyRunner needs the study opened as its driver (Study(..., driver=True))")
        self.study = study
        self.settings = study.settings
        self.evaluator = evaluator
        self.executor = executor or SerialExecutor(evaluator)
        self.log = log
        self.progress = progress
        self.constraints = self.settings.parsed_constraints
        self.space = self.settings.kind.space(self.settings, evaluator)
        self.strategy = make_strategy(self.settings.strategy.model_dump(), self.space,
                                      study.directions, len(self.constraints), self.settings.seed,
                                      initial=getattr(evaluator, "initial", ()))
        self.baseline: dict | None = None
        self._stored_points: set[tuple] = set()  # (parent_proposal_index, design) in the store
        self.prefix = [0, 0]  # table-layer computations of this run: computed, total
        self._replay()

    def _replay(self) -> None:
        """Tell the strategy every stored search trial and warm the evaluation cache (retrained
        trials are neither: they were scored with other weights, and no strategy proposed them)."""
        for t in self.study.store.trials():
            attrs = t.user_attrs
            if attrs.get("role") == RETRAINED:
                continue
            if attrs.get("role") == DESIGN_POINT:
                self._stored_points.add((attrs["parent_proposal_index"], attrs["design"]))
            if t.values is not None:
                self.evaluator.remember(attrs)
            if attrs.get("role") == BASELINE and t.values is not None:
                self.baseline = attrs
            if attrs.get("role") == SEARCH:
                proposal = Proposal(stored_config(t), attrs["proposal_index"], attrs.get("generation"))
                values = tuple(t.values) if t.values is not None else None
                self.strategy.tell(proposal, Evaluation(values, tuple(attrs.get("constraint_values", ()))))

    def _store(self, outcome: Outcome) -> tuple[Evaluation, list[Evaluation]]:
        """Store a finished evaluation at once; a failure becomes a failed trial. A trial that
        yielded several design points (a generator run) stores each other point first, as a
        trial of role ``design_point`` linked to it by ``parent_proposal_index``, then itself:
        a run killed in between re-evaluates the trial on resume (from the caches) and stores
        only the points still missing. The points' evaluations come back second (they join the
        front; the strategy is told only the trial)."""
        proposal, role = outcome.proposal, outcome.role
        attrs = {"role": role, "strategy": self.strategy.name, "proposal_index": proposal.index,
                 "attempts": outcome.attempts, **outcome.info}
        if proposal.generation is not None:
            attrs["generation"] = proposal.generation
        if outcome.metrics is None:
            attrs.update(error=outcome.error, traceback=outcome.traceback)
            self.study.store.add(proposal.config, None, attrs, outcome.started,
                                 params=self.space.params(proposal.config))
            self.log(f"evaluation of configuration {proposal.config} failed: {outcome.error}")
            return Evaluation(None), []
        metrics = dict(outcome.metrics)
        if "prefix_layers" in metrics:  # layer-wise evaluations: computed and total layers
            self.prefix[0] += metrics["prefix_layers"] - metrics["prefix_layers_skipped"]
            self.prefix[1] += metrics["prefix_layers"]
        linked = {"role": DESIGN_POINT, "strategy": self.strategy.name,
                  "parent_proposal_index": proposal.index}
        points = []
        for point in metrics.pop("design_points", []):
            key = (proposal.index, point["design"])
            if key not in self._stored_points:
                points.append(self._add(proposal.config, {**linked, **point}, outcome.started))
                self._stored_points.add(key)
        evaluation = self._add(proposal.config, {**attrs, **metrics}, outcome.started)
        if role == BASELINE:
            self.baseline = metrics
        return evaluation, points

    def _add(self, config: int, row: dict, started) -> Evaluation:
        """Store one measured row with its accuracy drop, constraint values and feasibility."""
        self.evaluator.remember(row)
        baseline = self.baseline or row  # the exact multiplier is evaluated first
        violations = judge(row, baseline["accuracy"], self.constraints)
        values = tuple(float(row[k]) for k in self.study.objectives)
        self.study.store.add(config, values, row, started, constraint_dict(violations),
                             self.space.params(config))
        return Evaluation(values, violations)

    def _reference_point(self) -> dict[str, float]:
        """Fixed once: the study file's, or 10% worse than the exact multiplier in each objective."""
        stored = self.study.reference_point
        if stored is None:
            stored = self.settings.reference_point or {
                k: self.baseline[k] - 0.1 * abs(self.baseline[k]) if d == "maximize"
                else self.baseline[k] + 0.1 * abs(self.baseline[k])
                for k, d in zip(self.study.objectives, self.study.directions)}
            self.study.store.set(REFERENCE_POINT, stored)
        return stored

    def _stagnated(self, history: list[float]) -> bool:
        rule = self.settings.budget.stagnation
        if rule is None or len(history) <= rule.window:
            return False
        gain = history[-1] - history[-1 - rule.window]
        return gain <= rule.tolerance * abs(history[-1])

    def _front_context(self, tracker: HypervolumeTracker) -> FrontContext:
        """The front so far and the lowest feasible accuracy, for screening."""
        signs = np.array([-1.0 if d == "maximize" else 1.0 for d in self.study.directions])
        floors = [self.baseline["accuracy"] - c.bound for c in self.constraints
                  if c.metric == "accuracy_drop" and c.op == "<="]
        floors += [c.bound for c in self.constraints if c.metric == "accuracy" and c.op == ">="]
        return FrontContext(tuple(self.study.objectives), tuple(self.study.directions),
                            tracker.front * signs, max(floors) if floors else None)

    def _stop_reason(self, history: list[float], elapsed: float) -> str | None:
        budget = self.settings.budget
        if budget.time_limit_s is not None and elapsed >= budget.time_limit_s:
            return f"time limit of {budget.time_limit_s:g} s reached"
        if self._stagnated(history):
            return f"hypervolume stagnated over the last {budget.stagnation.window} trials"
        return None

    def run(self) -> int:
        """Evaluate until the budget, the time limit, stagnation or the end of the strategy;
        returns the number of trials evaluated in this run."""
        budget = self.settings.budget
        store = self.study.store
        executor = self.executor
        if self.baseline is None:
            self.log("evaluating the exact multiplier (the first evaluation also compiles the kernels)")
            executor.submit(Proposal(self.space.exact, -1), BASELINE)
            self._store(executor.next_outcome())
            if self.baseline is None:
                raise RuntimeError("the exact multiplier could not be evaluated; see the failed trial")
        tracker = HypervolumeTracker(self._reference_point(), self.study)
        history = self.study.hypervolume_history()["hypervolume"].tolist()
        done = len(history)
        elapsed = float(store.get("elapsed_s", 0.0))
        start = time.monotonic()
        new, exhausted, stop = 0, False, None
        bar = tqdm(total=budget.trials, initial=min(done, budget.trials), unit="trial",
                   desc=self.settings.name, disable=not self.progress, dynamic_ncols=True)
        try:
            while True:
                stop = stop or self._stop_reason(history, elapsed + time.monotonic() - start)
                while (not stop and not exhausted and executor.in_flight < executor.slots
                       and done + executor.in_flight < budget.trials):
                    proposal = self.strategy.ask()
                    if proposal is None:
                        exhausted = executor.in_flight == 0  # else: waiting for results
                        break
                    executor.submit(proposal, SEARCH, self._front_context(tracker))
                if executor.in_flight == 0:
                    break
                outcome = executor.next_outcome()
                evaluation, points = self._store(outcome)
                self.strategy.tell(outcome.proposal, evaluation)
                full = outcome.metrics is None or outcome.metrics.get("fidelity") != "screened"
                for point in points:
                    tracker.add(point)
                history.append(tracker.add(evaluation, full))
                done += 1
                new += 1
                bar.update(1)
                bar.set_postfix(hypervolume=f"{history[-1]:.4g}")
                store.set("elapsed_s", elapsed + time.monotonic() - start)
        finally:
            bar.close()
            # the time this run spent, up to the moment it decided to stop (so a resumed
            # study sees a time limit as reached exactly when this run did)
            store.set("elapsed_s", elapsed + time.monotonic() - start)
        if self.prefix[1]:
            self.log(f"prefix reuse: {self.prefix[1] - self.prefix[0]} of {self.prefix[1]} "
                     f"table-layer computations of this run read stored activations "
                     f"({1 - self.prefix[0] / self.prefix[1]:.0%} skipped)")
        if stop:
            self.log(stop)
        elif exhausted:
            self.log("the strategy has no configuration left to propose")
        return new


def run_study(
    settings: StudySettings, folder: Path | None = None, *, log: Log = print, progress: bool = True
) -> Study:
    """Start or continue the study a study file describes, as its only driver; retrain the
    final front when the study file's ``retrain`` section asks (designs retrained before are
    skipped); write its reports at the end."""
    folder = Path(folder) if folder is not None else settings.output_dir
    preflight(settings, folder)
    # bad data fails here, before anything is written
    evaluator = build_evaluator(settings, log, None if progress else False, folder)
    freeze(settings, folder)
    with Study(folder, settings, driver=True, log=log) as study:
        evaluator.save_artifacts(folder)
        executor = make_executor(settings.executor, evaluator, folder, log)
        try:
            with contextlib.closing(executor):
                StudyRunner(study, evaluator, log, progress, executor).run()
            if settings.retrain is not None and settings.retrain.front:
                retrain_study(study, None, settings.retrain, log=log, progress=progress)
        finally:
            write_reports(study)
            evaluator.export(study.pareto(), folder / "pareto")
    return study


def resume_study(folder: str | Path, *, log: Log = print, progress: bool = True) -> Study:
    """Continue a study from its folder with its frozen settings."""
    return run_study(read_frozen(Path(folder)), Path(folder), log=log, progress=progress)
