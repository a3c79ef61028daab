"""The serial study loop: ask the strategy, evaluate, store each finished trial at once, tell.

Only this driver writes to the store. A study can be stopped at any moment (Ctrl-C, ``kill
-9``, a crash): finished trials are in the store, the interrupted one is not, and ``resume``
replays the store through the strategy and continues where it stopped without re-evaluating
anything or exceeding the budget.
"""

from __future__ import annotations

import datetime as dt
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import yaml
from tqdm import tqdm

from circuits.appaxo import EXACT
from dse.space import AppAxOSubspace
from dse.strategies import Proposal, make_strategy
from dse.study import BASELINE, FROZEN, FROZEN_HASH, SEARCH, Study, read_frozen
from dse.study_file import StudyFileError, StudySettings, settings_diff

Log = Callable[[str], None]


def check_folder(settings: StudySettings, folder: Path) -> bool:
    """Whether ``folder`` already holds this study; refuses a changed study file or a foreign
    folder. Writes nothing."""
    if (folder / FROZEN).is_file():
        old = read_frozen(folder)
        if old.sha256() != settings.sha256():
            changes = "; ".join(settings_diff(old.canonical(), settings.canonical()))
            raise StudyFileError(
                f"{folder}: the study file changed since this study started ({changes}); "
                "restore it, or give the study a new name or output folder"
            )
        return True
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise StudyFileError(f"{folder}: exists and is not a study folder; choose another output")
    return False


def freeze(settings: StudySettings, folder: Path) -> None:
    """Create the study folder with the frozen settings (nothing to do if it exists)."""
    if check_folder(settings, folder):
        return
    folder.mkdir(parents=True, exist_ok=True)
    frozen = folder / FROZEN
    tmp = folder / (FROZEN + ".tmp")
    tmp.write_text(yaml.safe_dump(settings.canonical(), sort_keys=False))
    tmp.rename(frozen)
    (folder / FROZEN_HASH).write_text(settings.sha256() + "\n")


def build_evaluator(settings: StudySettings, log: Log):
    """The AppAxO candidate evaluator described by the study settings."""
    from circuits.characterize import FlowSettings
    from evaluators.candidate import build_appaxo_evaluator
    from evaluators.network import TrainingSettings

    m, d = settings.model, settings.dataset
    training = TrainingSettings(
        arch=m.arch, epochs=m.epochs, batch_size=m.batch_size, learning_rate=m.learning_rate,
        augment=m.augment, seed=settings.seed,
        calibration_size=settings.quantization.calibration_size,
    )
    asic = None
    if settings.needs_asic:
        h = settings.hardware
        flow = FlowSettings(liberty=h.liberty, clock_period_ns=h.clock_period_ns,
                            vectors=h.vectors, seed=settings.seed, timeout_s=h.timeout_s)
        asic = (flow, h.power)
    return build_appaxo_evaluator(
        dataset=d.name, dataset_path=d.path, download=d.download, test_size=d.test_size,
        training=training, reuse_network=m.reuse_checkpoint, kernel=settings.evaluation.kernel,
        asic=asic, seed=settings.seed, log=log,
    )


class StudyRunner:
    """Runs one study to its budget, resuming from whatever the store already holds."""

    def __init__(self, study: Study, evaluator, log: Log = print, progress: bool = True) -> None:
        self.study = study
        self.settings = study.settings
        self.evaluator = evaluator
        self.log = log
        self.progress = progress
        space = AppAxOSubspace(self.settings.space.free, self.settings.space.fixed)
        self.strategy = make_strategy(self.settings.strategy.model_dump(), space, self.settings.seed)
        self._replay()

    def _replay(self) -> None:
        """Tell the strategy every stored search trial and warm the evaluation cache."""
        for t in self.study.store.trials():
            attrs = t.user_attrs
            if t.values is not None:
                self.evaluator.remember(attrs)
            if attrs.get("role") == SEARCH:
                self.strategy.tell(Proposal(t.params["config"], attrs["proposal_index"]), t.values)

    def _record(self, proposal: Proposal, role: str) -> None:
        started = dt.datetime.now()
        attrs = {"role": role, "strategy": self.strategy.name, "proposal_index": proposal.index}
        try:
            metrics = self.evaluator.evaluate(proposal.config)
        except Exception as err:  # a failed evaluation is a failed trial, not a failed study
            attrs["error"] = f"{type(err).__name__}: {err}"
            attrs["traceback"] = traceback.format_exc(limit=5)
            self.study.store.add(proposal.config, None, attrs, started)
            self.log(f"evaluation of configuration {proposal.config} failed: {attrs['error']}")
            return
        values = [float(metrics[k]) for k in self.study.objectives]
        self.study.store.add(proposal.config, values, {**attrs, **metrics}, started)
        if role == SEARCH:
            self.strategy.tell(proposal, values)

    def run(self) -> int:
        """Evaluate until the budget, the time limit or the strategy is exhausted; returns the
        number of trials evaluated in this run."""
        budget = self.settings.budget
        store = self.study.store
        if not any(t.user_attrs.get("role") == BASELINE for t in store.trials()):
            self._record(Proposal(EXACT, -1), BASELINE)
        done = self.study.search_trials_done()
        elapsed = float(store.get("elapsed_s", 0.0))
        start = time.monotonic()
        new = 0
        bar = tqdm(total=budget.trials, initial=min(done, budget.trials), unit="trial",
                   desc=self.settings.name, disable=not self.progress, dynamic_ncols=True)
        try:
            while done < budget.trials:
                if budget.time_limit_s is not None and elapsed + time.monotonic() - start >= budget.time_limit_s:
                    self.log(f"time limit of {budget.time_limit_s:g} s reached")
                    break
                proposal = self.strategy.ask()
                if proposal is None:
                    self.log("the strategy has no configuration left to propose")
                    break
                self._record(proposal, SEARCH)
                done += 1
                new += 1
                bar.update(1)
                store.set("elapsed_s", elapsed + time.monotonic() - start)
        finally:
            bar.close()
        return new


def run_study(
    settings: StudySettings, folder: Path | None = None, *, log: Log = print, progress: bool = True
) -> Study:
    """Start or continue the study a study file describes; write its reports at the end."""
    from dse.report import write_reports

    folder = Path(folder) if folder is not None else settings.output_dir
    check_folder(settings, folder)
    evaluator = build_evaluator(settings, log)  # bad data fails here, before anything is written
    freeze(settings, folder)
    evaluator.save_artifacts(folder)
    study = Study(folder, settings)
    runner = StudyRunner(study, evaluator, log, progress)
    try:
        runner.run()
    finally:
        write_reports(study)
        front = study.pareto()
        evaluator.export([int(c) for c in front["config"]] if not front.empty else [],
                         folder / "pareto")
    return study


def resume_study(folder: str | Path, *, log: Log = print, progress: bool = True) -> Study:
    """Continue a study from its folder with its frozen settings."""
    return run_study(read_frozen(Path(folder)), Path(folder), log=log, progress=progress)
