"""EMGAxO's flow: a sweep writes one approximate model per configuration, a folder of them is
scored into one table that resumes and records the files it cannot score."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from circuits import appaxo
from dse.cli import main

FREE = "000000000000000000000000000000000011"  # the two lowest-weight LUTs: 4 configurations


def test_sweep_then_evaluate_scores_each_file_as_the_evaluator(lenet, mnist, mnist_dir, tmp_path,
                                                               capsys):
    from evaluators.data.preprocess import Preprocessing
    from evaluators.runtime.approx_network import ApproxNetworkEvaluator

    models = tmp_path / "models"
    assert main(["onnx", "sweep", str(lenet.int8_onnx), "--free", FREE, "-o", str(models),
                 "-q"]) == 0
    files = sorted(models.glob("*.onnx"))
    configs = sorted(int(f.stem.rsplit("_", 1)[1]) for f in files)
    assert configs == sorted(appaxo.EXACT & ~0b11 | p for p in range(4))
    (models / "broken_appaxo_7.onnx").write_bytes(b"not a model")
    (models / "no_config.onnx").write_bytes((files[0]).read_bytes())
    results = tmp_path / "results.csv"
    args = ["onnx", "evaluate", str(models), "--path", str(mnist_dir), "--images", "300", "-o",
            str(results), "-q"]
    assert main(args) == 0
    assert "2 could not be scored" in capsys.readouterr().out
    table = pd.read_csv(results)
    assert len(table) == 6
    assert table.loc[table["file"] == "no_config.onnx", "error"].str.contains("file name").all()
    assert table.loc[table["file"] == "broken_appaxo_7.onnx", "error"].notna().all()
    scored = table[table["error"].isna()].set_index("config")
    images = Preprocessing().apply(mnist[1].images[:300])
    evaluator = ApproxNetworkEvaluator(lenet.int8_onnx, images, mnist[1].labels[:300])
    for config, row in scored.iterrows():
        expected = evaluator.evaluate(appaxo.table(int(config)))
        assert row["accuracy"] == pytest.approx(expected["accuracy"])
        assert row["f1_macro"] == pytest.approx(expected["f1_macro"])
        assert row["removed_luts"] == 36 - appaxo.kept_luts(int(config))
    # a second run scores nothing again; a new file is scored alone
    assert main(args) == 0
    assert "scored 0 models" in capsys.readouterr().out
    assert len(pd.read_csv(results)) == 6
    np.testing.assert_equal(len(list(models.glob("*.onnx"))), 6)


def test_a_space_too_large_to_sweep_whole_is_one_line(lenet, tmp_path, capsys):
    assert main(["onnx", "sweep", str(lenet.int8_onnx), "-o", str(tmp_path / "m")]) == 2
    assert "give --count N" in capsys.readouterr().err
    assert main(["onnx", "sweep", str(lenet.int8_onnx), "--free", "101", "-o",
                 str(tmp_path / "m")]) == 2
    assert "--free must be a 36-character string" in capsys.readouterr().err
