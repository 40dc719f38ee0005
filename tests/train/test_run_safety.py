"""Issue 9, "state that must never be corrupted": a refused resume leaves the folder as it was, a run
being trained is locked, divergence stops the run with the earlier checkpoints intact, a full disk is
named, run files are strict JSON. Each test reproduces the reported defect."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cnnkit import cli
from cnnkit.api import train
from cnnkit.config import load_config
from cnnkit.errors import ConfigError, UserError
from cnnkit.runs import RunFolder, write_json

DIGITS = ["data.name=digits", "data.batch_size=64", "schedule.name=constant", "optim.name=adam", "optim.lr=0.01",
          "model.name=null", "model.input=null", "model.layers=[flatten, {dense: 32}, relu, {dense: 10}]"]


def snapshot(run: Path) -> dict[str, str]:
    return {str(p.relative_to(run)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(run.rglob("*")) if p.is_file()}


def cli_run(argv, capsys):
    rc = cli.main(argv)
    out = capsys.readouterr()
    return rc, out.out, out.err


@pytest.fixture
def one_epoch_run(tmp_path):
    return train(load_config(None, [*DIGITS, "train.epochs=1", f"train.runs_dir={tmp_path}"]), quiet=True).run_dir


@pytest.mark.parametrize("override, needle", [
    ("train.device=cuda", "CUDA"),
    ("model.layers=[flatten, {dense: 16}, relu, {dense: 10}]", "does not fit"),
    ("train.engine=reference", "torch engine"),
])
def test_a_refused_resume_leaves_the_run_folder_untouched(one_epoch_run, override, needle, capsys):
    if override == "train.device=cuda":
        import torch

        if torch.cuda.is_available():
            pytest.skip("this machine has CUDA: the override would be accepted")
    before = snapshot(one_epoch_run)
    rc, _, err = cli_run(["train", "--resume", str(one_epoch_run), override, "train.epochs=2", "--quiet"], capsys)
    assert rc == 2 and needle in err and "Traceback" not in err
    assert snapshot(one_epoch_run) == before
    # ... so a plain resume still works
    rc, _, err = cli_run(["train", "--resume", str(one_epoch_run), "train.epochs=2", "--quiet"], capsys)
    assert rc == 0, err
    assert [r["epoch"] for r in RunFolder(one_epoch_run).read_metrics()] == [1, 2]


def test_an_accepted_override_is_written_after_the_state_fits(one_epoch_run, capsys):
    rc, _, err = cli_run(["train", "--resume", str(one_epoch_run), "train.epochs=2", "optim.lr=0.005", "--quiet"],
                         capsys)
    assert rc == 0, err
    cfg = RunFolder(one_epoch_run).read_config()
    assert cfg["train"]["epochs"] == 2 and cfg["optim"]["lr"] == 0.005


def test_a_run_being_trained_is_locked(one_epoch_run, capsys):
    me = {"pid": os.getpid(), "host": socket.gethostname()}
    import psutil

    me["started"] = round(psutil.Process().create_time(), 2)
    lock = one_epoch_run / ".lock"
    lock.write_text(json.dumps(me))  # as if this very (live) process were training it
    before = snapshot(one_epoch_run)
    rc, _, err = cli_run(["train", "--resume", str(one_epoch_run), "train.epochs=2", "--quiet"], capsys)
    assert rc == 2 and f"process {os.getpid()}" in err and "being trained" in err
    assert snapshot(one_epoch_run) == before


def test_a_stale_lock_is_taken_over(one_epoch_run, capsys):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (one_epoch_run / ".lock").write_text(json.dumps({"pid": int(dead.stdout), "host": socket.gethostname(),
                                                     "started": 1.0}))
    rc, _, err = cli_run(["train", "--resume", str(one_epoch_run), "train.epochs=2", "--quiet"], capsys)
    assert rc == 0, err
    assert not (one_epoch_run / ".lock").exists()  # released at the end


def test_two_locks_on_one_folder_exclude_each_other(tmp_path):
    run = RunFolder(tmp_path)
    with run.lock():
        with pytest.raises(UserError, match="being trained"):
            run.lock()
    run.lock().release()  # free again


def test_divergence_stops_with_epoch_and_step_and_keeps_earlier_checkpoints(one_epoch_run, capsys):
    last = (one_epoch_run / "checkpoints" / "last.pt").read_bytes()
    best = (one_epoch_run / "checkpoints" / "best.pt").read_bytes()
    rc, _, err = cli_run(["train", "--resume", str(one_epoch_run), "train.epochs=3", "optim.lr=1e30", "--quiet"],
                         capsys)
    assert rc == 1 and "Traceback" not in err and err.count("error:") == 1
    assert "epoch 2, step" in err and "optim.lr" in err
    assert (one_epoch_run / "checkpoints" / "last.pt").read_bytes() == last
    assert (one_epoch_run / "checkpoints" / "best.pt").read_bytes() == best
    rows = [json.loads(line) for line in (one_epoch_run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1]


def test_divergence_on_the_reference_engine_names_the_step(tmp_path, capsys):
    rc, _, err = cli_run(["train", *DIGITS, "train.engine=reference", "optim.name=sgd", "optim.lr=1e30",
                          "train.epochs=2", f"train.runs_dir={tmp_path}", "--quiet"], capsys)
    assert rc == 1 and "epoch 1, step" in err


@pytest.mark.parametrize("value", [".inf", "-.inf", ".nan"])
def test_numeric_config_values_must_be_finite(value):
    with pytest.raises(ConfigError, match="optim.lr"):
        load_config(None, [f"optim.lr={value}"])


def test_run_files_are_strict_json(tmp_path):
    write_json(tmp_path / "final.json", {"val_loss": float("nan"), "x": [float("inf"), 1.0]})
    text = (tmp_path / "final.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"val_loss": None, "x": [None, 1.0]}


def test_a_full_disk_is_named_and_the_previous_checkpoint_kept(tmp_path, monkeypatch):
    import torch

    run = RunFolder(tmp_path)
    run.checkpoints.mkdir()
    run.save_checkpoint("last", {"epoch": 1})
    before = run.checkpoint_path("last").read_bytes()

    def full(obj, f, *args, **kwargs):
        f.write(b"partial")
        raise RuntimeError("[enforce fail at inline_container.cc:603] . unexpected pos") from OSError(
            errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(UserError, match=r"disk full while writing .*last\.pt"):
        run.save_checkpoint("last", {"epoch": 2})
    assert run.checkpoint_path("last").read_bytes() == before
    assert sorted(p.name for p in run.checkpoints.iterdir()) == ["last.pt"]  # no temp file left


def test_ctrl_c_says_how_to_resume(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "cnnkit", "train", *DIGITS, "train.epochs=100000",
                             f"train.runs_dir={tmp_path}", "--quiet"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env,
                            # as from a shell: pytest-xdist workers ignore SIGINT, and children inherit that
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 120
    while time.time() < deadline and not list(tmp_path.glob("*/metrics.jsonl")):
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert "Traceback" not in err
    run = next(tmp_path.iterdir())
    assert "interrupted at epoch" in err and f"cnnkit train --resume {run}" in err
    assert not (run / ".lock").exists()
