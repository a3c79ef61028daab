"""A study assembled from its settings: the training settings of its network, the preprocessing,
the ASIC flow's settings, what every evaluator is built from, and the study's data as it was
scored. Run, resume, the design read-back, retrain, analyze, hls and ``zoo export`` all take
them from here, so a study is put together one way.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from circuits.characterize import FlowSettings
from dse.study import Study
from dse.study_file import ModelSettings, QuantizationSettings, StudyFileError, StudySettings
from evaluators.data import study_splits
from evaluators.data.preprocess import Preprocessing, default_preprocessing
from evaluators.networks.prepared import TrainingSettings

Log = Callable[[str], None]


def training_settings(model: ModelSettings, quantization: QuantizationSettings,
                      seed: int) -> TrainingSettings:
    """What determines the prepared network: the ``model`` and ``quantization`` sections."""
    return TrainingSettings(
        arch=model.architecture, epochs=model.epochs, batch_size=model.batch_size,
        learning_rate=model.learning_rate, augment=model.augment, seed=seed,
        calibration_size=quantization.calibration_size, checkpoint=model.checkpoint,
        onnx=model.onnx, scheme=quantization.scheme, quant_format=quantization.format,
        reduce_range=quantization.reduce_range, mode=quantization.mode)


def preprocessing(settings: StudySettings) -> Preprocessing:
    """The study file's ``model.preprocessing``, or the dataset's default."""
    p = settings.model.preprocessing
    if p is None:
        return default_preprocessing(settings.dataset.source)
    return Preprocessing(scale=p.scale, mean=tuple(p.mean), std=tuple(p.std), layout=p.layout)


def flow_settings(settings: StudySettings) -> FlowSettings:
    """The study file's ``hardware`` section as the ASIC flow's settings."""
    h = settings.hardware
    return FlowSettings(liberty=h.liberty, clock_period_ns=h.clock_period_ns, vectors=h.vectors,
                        seed=settings.seed, timeout_s=h.timeout_s)


def evaluator_inputs(settings: StudySettings, log: Log, progress: bool | None,
                     flow: bool = False) -> dict[str, Any]:
    """The keyword arguments every evaluator is built from (``evaluators.scoring.candidate.
    build_evaluator``): data, network, kernel and, where an objective or constraint needs it
    or ``flow`` says the kind always costs its multipliers, the ASIC flow with its power."""
    d = settings.dataset
    asic = (flow_settings(settings), settings.hardware.power) \
        if settings.needs_asic or flow else None
    return dict(dataset=d.source, dataset_path=d.location, download=d.download,
                train_size=d.train_size, test_size=d.test_size,
                training=training_settings(settings.model, settings.quantization, settings.seed),
                preprocessing=preprocessing(settings), reuse_network=settings.model.reuse_checkpoint,
                kernel=settings.evaluation.kernel, device=settings.evaluation.device,
                asic=asic, seed=settings.seed, approximate=settings.approximate, log=log,
                progress=progress)


@dataclass(frozen=True)
class StudyData:
    """The study's network and data as it was scored: the int8 (and float, where the study
    had one) ONNX models kept in ``network/``, and the preprocessed training and test samples."""

    int8_onnx: Path
    float_onnx: Path | None
    train_inputs: np.ndarray
    train_labels: np.ndarray
    test_inputs: np.ndarray
    test_labels: np.ndarray
    test_images: np.ndarray  # the raw test samples (uint8 images), for thumbnails
    classes: int


def study_data(study: Study, log: Log = print) -> StudyData:
    """The study's data exactly as its evaluator scored them (same sizes, same
    preprocessing), with the network its run kept in the study folder."""
    settings, folder = study.settings, study.folder
    network = folder / "network"
    int8 = network / "int8.onnx"
    if not int8.is_file():
        raise StudyFileError(f"{int8}: the study's int8 network is missing; "
                             f"`python -m dse resume {folder}` writes it again")
    d = settings.dataset
    log(f"loading the {d.source} training and test data")
    train, test = study_splits(d.source, d.location, d.download, d.train_size, d.test_size)
    scored = test.head(d.test_size)
    prepare = preprocessing(settings)
    float_onnx = network / "float.onnx"
    return StudyData(int8, float_onnx if float_onnx.is_file() else None,
                     prepare.apply(train.images), train.labels, prepare.apply(scored.images),
                     scored.labels, scored.images, test.classes)
