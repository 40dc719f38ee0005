"""A fold of a cross-validation run (``PARENT/folds/foldNN``) is evaluated, and reported, on its own
held-out fold: ``cnnkit eval`` gives the accuracy the fold's training measured, not that of the
dataset's default split (which overlaps the fold's training items)."""

from __future__ import annotations

import json

import pytest

from cnnkit.cli import main


def test_eval_of_a_fold_scores_that_fold(tmp_path, capsys):
    assert main(["train", "data.subset=300", "train.epochs=1", "train.device=cpu", "train.cv_folds=2",
                 "train.report=false", f"train.runs_dir={tmp_path}", "--quiet"]) == 0
    (parent,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    for fold in sorted((parent / "folds").iterdir()):
        final = json.loads((fold / "final.json").read_text())
        capsys.readouterr()
        assert main(["eval", str(fold), "--checkpoint", "last", "--format", "json"]) == 0
        out = json.loads(capsys.readouterr().out)
        assert out["n"] == final["n_val"]
        assert out["accuracy"] == pytest.approx(final["last_val_accuracy"], abs=1e-6)
