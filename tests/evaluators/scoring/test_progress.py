"""Progress a user sees before the first trial: the training bar (rate and ETA) and a log line
before every long stage, on a real short training."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pytest

from circuits.characterize import FlowSettings
from evaluators.data import Split, load_split
from evaluators.networks.prepared import TrainingSettings, prepare_network
from evaluators.scoring.candidate import AppAxOEvaluator, build_evaluator
from tests.conftest import shared_path

SHORT = TrainingSettings(arch="lenet5", epochs=2, batch_size=64, learning_rate=0.003,
                         augment=False, seed=0, calibration_size=100)


@pytest.fixture(scope="module")
def small(mnist_dir: Path) -> tuple[Split, Split]:
    """500 training and 500 test images: a training of seconds."""
    train, test = (load_split("mnist", s, mnist_dir) for s in ("train", "test"))
    return (replace(train, images=train.images[:500], labels=train.labels[:500]),
            replace(test, images=test.images[:500], labels=test.labels[:500]))


def test_training_shows_a_bar_with_rate_and_eta(small, tmp_path, capsys):
    lines: list[str] = []
    prepare_network(SHORT, *small, cache=tmp_path, log=lines.append, progress=True)
    bar = capsys.readouterr().err.replace("\r", "\n")
    final = [line for line in bar.splitlines() if "training LeNet-5" in line][-1]
    assert re.search(r"training LeNet-5: 100%.*\| 2/2 \[\d\d:\d\d<00:00, +[\d.]+(s/epoch|epoch/s)"
                     r", loss=\d\.\d{4}\]", final), final
    assert re.search(r"1/2 \[\d\d:\d\d<\d\d:\d\d", bar), bar  # an ETA after the first epoch
    assert not any("epoch 1/2" in line for line in lines)  # the bar says it, not the log


@pytest.mark.slow  # a real training on 10k images and a power workload: 15-35 s
def test_every_long_stage_before_the_first_trial_is_announced(mnist_dir, tmp_path,
                                                              monkeypatch, capsys):
    """Without a terminal (as here) the bar gives way to a line per epoch."""
    monkeypatch.setenv("DSE_CACHE_DIR", str(tmp_path))
    liberty = str(shared_path("pdk", "nangate45_typ.lib.gz"))
    lines: list[str] = []
    build_evaluator(
        AppAxOEvaluator, dataset="mnist", dataset_path=str(mnist_dir), download=False,
        test_size=300, training=replace(SHORT, epochs=1), reuse_network=True, kernel="cpu",
        asic=(FlowSettings(liberty=liberty, vectors=256), "workload"), log=lines.append)
    assert "training LeNet-5" not in capsys.readouterr().err
    stages = [re.sub(r"[\d.]+", "N", line).split(":")[0] for line in lines
              if not line.startswith(("float", "int8"))]
    assert stages == [
        f"reading the Liberty library {re.sub(r'[0-9.]+', 'N', liberty)}",
        "loading the mnist training and test data",
        "training LeNet-N on N images for N epochs (CPU)",
        "  epoch N/N",
        "quantizing to N bits, SNSN qoperator (calibration on N training images)",
        "measuring the float and intN networks on N test images",
        "test accuracy",
        "approximate inference",
        "sampling the power workload",
    ], lines
