"""Issue 9, "raw exit-1 tracebacks": paths and files a user hands over fail with one error line."""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnnkit import cli
from cnnkit.api import train
from cnnkit.config import load_config

ROOT = Path(__file__).resolve().parents[2]
TINY = ["data.name=digits", "train.epochs=1", "model.name=null", "model.input=null",
        "model.layers=[flatten, {dense: 10}]"]


def run_cli(argv, capsys):
    try:
        rc = cli.main(argv)
    except SystemExit as e:
        rc = e.code
    out = capsys.readouterr()
    return rc, out.out, out.err


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    return train(load_config(None, [*TINY, f"train.runs_dir={tmp_path_factory.mktemp('runs')}"]), quiet=True).run_dir


@pytest.mark.parametrize("name", ["../escape", "a/b", "..", "."])
def test_a_run_name_cannot_leave_the_runs_folder(name, tmp_path, capsys):
    rc, _, err = run_cli(["train", *TINY, f"train.name={name}", f"train.runs_dir={tmp_path / 'runs'}"], capsys)
    assert rc == 2 and "train.name" in err and "Traceback" not in err
    assert not (tmp_path / "escape").exists()


def test_export_into_a_folder_and_with_the_mode_of_run_files(tiny_run, tmp_path, capsys):
    rc, _, err = run_cli(["export", str(tiny_run), "--out", f"{tmp_path / 'new'}/"], capsys)
    assert rc == 0, err
    made = tmp_path / "new" / "model.onnx"
    assert made.is_file()
    assert stat.S_IMODE(made.stat().st_mode) == stat.S_IMODE((tiny_run / "config.yaml").stat().st_mode)


def test_a_path_that_cannot_be_written_is_exit_2(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")  # a file where a folder is needed: fails for root too
    rc, _, err = run_cli(["explain", "activation", "relu", "--plot", str(blocker / "relu.png")], capsys)
    assert rc == 2 and "Traceback" not in err and str(blocker) in err


def test_a_decompression_bomb_is_refused(tiny_run, tmp_path, capsys):
    bomb = tmp_path / "bomb.png"
    Image.new("L", (20000, 20000)).save(bomb)  # 4e8 pixels: over PIL's 2 x 89.5M-pixel limit
    rc, _, err = run_cli(["predict", str(tiny_run), str(bomb)], capsys)
    assert rc == 2 and "bomb.png" in err and "Traceback" not in err


def test_the_overhead_benchmark_explains_too_few_epochs():
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "trainer_overhead.py"), "--epochs", "1"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "--epochs must be at least 2" in proc.stderr and "Traceback" not in proc.stderr


def test_early_stopping_says_when_and_why(tmp_path, capsys):
    lines = []
    result = train(load_config(None, [*TINY, "train.epochs=30", "regularization.early_stopping.patience=2",
                                      "regularization.early_stopping.min_delta=10.0", f"train.runs_dir={tmp_path}"]),
                   log=lines.append)
    best = result.history[0]["val_loss"]  # epoch 1 sets the best; no later epoch beats it by 10
    assert [line for line in lines if line.startswith("early stopping")] == [
        f"early stopping at epoch 3: val_loss has not improved by more than 10 on its best ({best:.4f}) for 2 epochs"]
    assert result.final["stopped_early"] and result.final["epochs"] == 3
