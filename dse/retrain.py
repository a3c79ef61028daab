"""Approximation-aware retraining of a study's designs, stored in the study beside them.

``python -m dse retrain runs/NAME --design D`` (or ``--front``) fine-tunes the study's int8
network through each design's product table(s) (``evaluators.recovery.retraining``), scores it with the
study's exact evaluator on the study's test images, and stores it as a trial of role
``retrained`` linked to its design (``design_trial``), so that the front, ``status``,
``compare`` and the plots show the accuracy before and after.

Scales kept, not recalibrated: only the weight and bias codes change, so the graph and the
operand ranges the multiplier sees stay the ones the study measured, and the design's hardware
figures (area, power under the study's workload, FPGA LUTs) remain its own. A retrained trial
therefore takes the design's configuration, parameters and costs, with the accuracy-type
metrics replaced by the retrained network's. It never counts as a search trial, no strategy is
told about it, and its ``fingerprint`` (the retrained network's) keeps it out of the study's
evaluation cache.
"""

from __future__ import annotations

import datetime as dt
import re
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import onnx
import pandas as pd
from optuna.trial import FrozenTrial, TrialState
from pydantic import ValidationError
from tqdm import tqdm

from dse.assembly import study_data
from dse.designs import DesignError, design_name, design_tables, find_design, front_designs
from dse.reports import write_reports
from dse.storage import JOURNAL, StorageError, constraint_dict
from dse.study import BASELINE, RETRAINED, Study, judge, read_frozen
from dse.study_file import RetrainOption, StudyFileError
from evaluators.recovery.retraining import RetrainSettings, retrain
from evaluators.runtime.approx_network import ApproxNetworkEvaluator

Log = Callable[[str], None]
FOLDER = "retrained"
# what a retrained network measures anew; every other metric is the design's own
ACCURACY_METRICS = ("accuracy", "precision_macro", "recall_macro", "f1_macro", "top5_accuracy")
# attributes of how a design was found or scored, which do not describe its retrained network
NOT_INHERITED = ("role", "strategy", "proposal_index", "parent_proposal_index", "generation",
                 "attempts", "cached", "fidelity", "eval_seconds", "screen_images",
                 "accuracy_upper_bound", "prefix_layers", "prefix_layers_skipped",
                 "accuracy_drop", "constraint_values", "feasible", "fingerprint")
OPTIONS = {"epochs": "--epochs", "gradient": "--gradient", "learning_rate": "--learning-rate",
           "batch_size": "--batch-size"}


class RetrainError(StudyFileError):
    """A retraining request that cannot be carried out; one line."""


def retrain_option(epochs: int | None = None, gradient: str | None = None,
                   learning_rate: float | None = None,
                   batch_size: int | None = None) -> RetrainOption:
    """The study file's ``retrain`` section from command-line values (None: the default),
    checked by the same schema; a bad value is one line naming its option."""
    given = {"epochs": epochs, "gradient": gradient, "learning_rate": learning_rate,
             "batch_size": batch_size}
    try:
        return RetrainOption(**{k: v for k, v in given.items() if v is not None})
    except ValidationError as err:
        issue = err.errors()[0]
        name = OPTIONS.get(str(issue["loc"][0]), str(issue["loc"][0]))
        raise RetrainError(f"{name} {issue['input']!r}: {issue['msg']}") from None


def model_folder(design: str, option: RetrainOption) -> str:
    """``<design>-<gradient>-e<epochs>``, with the learning rate and batch size where they are
    not the defaults: one folder (and one stored trial) per distinct retraining."""
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", design)
    text = f"{name}-{option.gradient}-e{option.epochs}"
    defaults = RetrainOption()
    if (option.learning_rate, option.batch_size) != (defaults.learning_rate, defaults.batch_size):
        text += f"-lr{option.learning_rate:g}-b{option.batch_size}"
    return text


def retrain_designs(folder: str | Path, designs: list[str] | None = None, *,
                    option: RetrainOption | None = None, log: Log = print,
                    progress: bool = True) -> pd.DataFrame:
    """Retrain the named designs of a study (``None``: every design of its front) as the
    study's driver, store each as a retrained trial, rewrite the study's reports; returns
    the before/after table (``retrain_study``)."""
    folder = Path(folder)
    settings = read_frozen(folder)
    if settings.storage is None and not (folder / JOURNAL).is_file():
        raise StorageError(f"{folder / JOURNAL}: the trial store is missing; nothing to retrain")
    for spec in designs or ():  # refused before the store is opened for writing
        find_design(Study(folder, settings), spec)
    with Study(folder, settings, driver=True, log=log) as study:
        table = retrain_study(study, designs, option or RetrainOption(), log=log,
                              progress=progress)
        write_reports(study)
    return table


def retrain_study(study: Study, designs: list[str] | None, option: RetrainOption, *,
                  log: Log = print, progress: bool = True) -> pd.DataFrame:
    """Retrain designs of a study opened as its driver: one row per design, the row of
    ``Study.retrained`` of its retrained trial (accuracy before and after, the share of the
    drop won back) and ``reused``: whether that retraining was stored already."""
    if not study.store.writable:
        raise ValueError("retrain_study needs the study opened as its driver")
    rows = front_designs(study) if designs is None else \
        pd.DataFrame([find_design(study, d) for d in designs])
    if rows.empty:
        log(f"study {study.name}: no design to retrain (its front holds only the exact multiplier)")
        return study.retrained().assign(reused=pd.Series(dtype=bool)).iloc[:0]
    exact = next((t for t in study.store.trials()
                  if t.user_attrs.get("role") == BASELINE and t.state == TrialState.COMPLETE), None)
    if exact is None:
        raise DesignError(f"study {study.name}: the exact multiplier has no completed trial; "
                          "resume the study first")
    job = _Job(study, option, exact.user_attrs["accuracy"], log, progress)
    done: dict[int, bool] = {}  # retrained trial -> reused
    for n, (_, row) in enumerate(rows.iterrows(), 1):
        log(f"design {n}/{len(rows)}: {design_name(row)} (trial {int(row['trial'])}, accuracy "
            f"{row['accuracy']:.4f})")
        trial, reused = job.retrain(row)
        done[trial] = reused
    table = study.retrained().set_index("trial").loc[list(done)].reset_index()
    return table.assign(reused=list(done.values()))


class _Job:
    """One retraining request over a study: the data, loaded once when first needed."""

    def __init__(self, study: Study, option: RetrainOption, exact_accuracy: float, log: Log,
                 progress: bool) -> None:
        self.study = study
        self.option = option
        self.exact_accuracy = exact_accuracy
        self.log = log
        self.progress = progress
        self._data = None

    @property
    def data(self):
        if self._data is None:
            self._data = study_data(self.study, self.log)
        return self._data

    def retrain(self, row: pd.Series) -> tuple[int, bool]:
        """Retrain one design (a row of ``Study.trials``) and store it, unless that retraining
        is stored already; (the retrained trial's number, whether it was reused)."""
        name = design_name(row)
        relative = f"{FOLDER}/{model_folder(name, self.option)}/int8.onnx"
        stored = next((t for t in self.study.store.trials()
                       if t.user_attrs.get("role") == RETRAINED and t.state == TrialState.COMPLETE
                       and t.user_attrs.get("model") == relative), None)
        if stored is not None:
            self.log(f"  reused: trial {stored.number} already holds {name} retrained this way "
                     f"({relative}); not retrained again")
            return stored.number, True
        design = self.study.store.trials()[int(row["trial"])]
        started = dt.datetime.now()
        attrs = self._retrained(design, row, relative)
        values = tuple(float(attrs[k]) for k in self.study.objectives)
        violations = tuple(attrs["constraint_values"])
        params = {k: (v, design.distributions[k]) for k, v in design.params.items()}
        self.study.store.add(attrs["config"], values, attrs, started,
                             constraint_dict(violations), params)
        number = self.study.store.trials()[-1].number
        self.log(f"  accuracy {attrs['accuracy_before']:.4f} -> {attrs['accuracy']:.4f} (exact "
                 f"{self.exact_accuracy:.4f}) in {attrs['retrain_seconds']:.0f} s; stored as "
                 f"trial {number}")
        return number, False

    def _retrained(self, design: FrozenTrial, row: pd.Series, relative: str) -> dict:
        """Retrain, write and score one design's network; the trial's attributes."""
        study, option, data = self.study, self.option, self.data
        kernel, device = study.settings.evaluation.kernel, study.settings.evaluation.device
        name = design_name(row)
        tables = design_tables(study, row)
        settings = RetrainSettings(epochs=option.epochs, gradient=option.gradient,
                                   batch_size=option.batch_size,
                                   learning_rate=option.learning_rate, seed=study.settings.seed)
        start = time.perf_counter()
        batches = -(-len(data.train_labels) // option.batch_size)
        with tqdm(total=option.epochs * batches, unit="batch", disable=not self.progress,
                  desc=f"retrain {name} ({option.gradient})", dynamic_ncols=True) as bar:
            def epoch_done(epoch: int, loss: float) -> None:
                bar.set_postfix(epoch=epoch, loss=f"{loss:.4g}")
                if not self.progress:  # the bar shows it otherwise
                    self.log(f"  epoch {epoch}/{option.epochs}: loss {loss:.4f}")

            model = retrain(data.int8_onnx, tables, data.train_inputs, data.train_labels,
                            settings, kernel=kernel, device=device, progress=epoch_done,
                            batch_done=partial(bar.update, 1))
        seconds = time.perf_counter() - start
        path = study.folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        onnx.save(model, str(path.with_suffix(".tmp")))
        path.with_suffix(".tmp").replace(path)  # a file there is always a whole model
        network = ApproxNetworkEvaluator(path, data.test_inputs, data.test_labels, kernel, device,
                                         classes=data.classes)
        attrs = {k: v for k, v in design.user_attrs.items()
                 if k not in NOT_INHERITED and k not in ACCURACY_METRICS}
        attrs.update(network.evaluate(tables))
        attrs.update(role=RETRAINED, design_trial=design.number, design=name,
                     epochs=option.epochs, gradient=option.gradient,
                     learning_rate=option.learning_rate, batch_size=option.batch_size,
                     scales="kept", accuracy_before=design.user_attrs["accuracy"],
                     model=relative, fingerprint=network.fingerprint, retrain_seconds=seconds)
        judge(attrs, self.exact_accuracy, study.settings.parsed_constraints)
        return attrs
