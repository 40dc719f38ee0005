"""The training loop and its run folder, on scikit-learn's 8x8 digits with tiny layer lists.

Oracles: the dataset's size from scikit-learn itself; accuracies recomputed here
from the checkpoints with the normalisation written out by hand; the schedule's
formula for the logged lr; one SGD step with the L2 term differentiated by hand
(d/dw l2 * w² = 2 l2 w); uninterrupted runs with the same seed for resumed ones.

Resume is checked three ways: extending a finished run, crash states built
deterministically (a stale temp file, a half-written metrics line, a metrics line
newer than last.pt), and real SIGKILLs of ``python -m cnnkit train`` subprocesses
at random moments and right after a checkpoint is written.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml

from cnnkit import cli, runs
from cnnkit.config import load_config, validate
from cnnkit.data import load_data
from cnnkit.models import build_torch, parse_layers
from cnnkit.runs import RunFolder
from cnnkit.train.callbacks import EarlyStopping
from cnnkit.train.setup import penalty
from cnnkit.train.trainer import Trainer
from cnnkit.api import train

TINY = "[{conv: {out: 4, kernel: 3}}, relu, flatten, {dense: 10}]"
TINY_LIST = [{"conv": {"out": 4, "kernel": 3}}, "relu", "flatten", {"dense": 10}]
# For the kill tests: dropout makes the RNG state matter, adam + cosine make the
# optimiser state and the schedule position matter.
KILL_LAYERS = ("[{conv: {out: 8, kernel: 3, padding: same}}, relu, maxpool, {dropout: 0.3}, flatten, "
               "{dense: 32}, relu, {dense: 10}]")
METRIC_KEYS = {"epoch", "train_loss", "val_loss", "val_accuracy", "lr", "epoch_time_s"}
FINAL_KEYS = {"val_accuracy", "val_loss", "best_epoch", "epochs", "n_train", "n_val", "num_classes"}


def digits_size() -> int:
    from sklearn.datasets import load_digits

    return len(load_digits().target)


def overrides(runs: Path, *extra: str, layers: str = TINY) -> list[str]:
    return ["data.name=digits", "model.input=null", f"model.layers={layers}", f"train.runs_dir={runs}",
            "train.device=cpu", "train.epochs=2", "data.batch_size=64", "optim.lr=0.01", *extra]


def cfg_for(runs: Path, *extra: str, layers: str = TINY):
    return load_config(None, overrides(runs, *extra, layers=layers))


def metrics_rows(run: Path) -> list[dict]:
    return [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]


def without_time(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "epoch_time_s"} for r in rows]


def read_final(run: Path) -> dict:
    return json.loads((run / "final.json").read_text())


def ckpt(run: Path, name: str) -> dict:
    return torch.load(run / "checkpoints" / name, map_location="cpu", weights_only=False)


def val_split_by_hand(run: Path):
    """The run's validation images normalised by hand with the run's own mean/std."""
    cfg = validate(yaml.safe_load((run / "config.yaml").read_text()))
    meta = json.loads((run / "meta.json").read_text())
    val = load_data(cfg.data).val
    mean = torch.tensor(meta["mean"]).view(1, -1, 1, 1)
    std = torch.tensor(meta["std"]).view(1, -1, 1, 1)
    x = (val.images.double() / 255.0 - mean.double()) / std.double()
    return cfg, x.float(), val.labels


def evaluate_by_hand(run: Path, state: dict) -> tuple[float, float, int]:
    cfg, x, y = val_split_by_hand(run)
    model = build_torch(parse_layers(cfg.model.layers), (1, 8, 8), 10)
    model.load_state_dict(state)
    model.eval()
    with torch.no_grad():
        logits = model(x)
    correct = int((logits.argmax(1) == y).sum())
    loss = float(F.cross_entropy(logits.double(), y))
    return correct / len(y), loss, len(y)


@pytest.fixture
def one_thread():
    """Identical float results across the processes compared below: one thread everywhere."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# --------------------------------------------------------------------------- a tiny run and its folder


@pytest.fixture(scope="module")
def run3(tmp_path_factory):
    """Three epochs of adam at a high constant lr (so the best epoch need not be the last)."""
    runs = tmp_path_factory.mktemp("runs3")
    cfg = cfg_for(runs, "train.epochs=3", "optim.lr=0.05", "schedule.name=constant")
    result = train(cfg, quiet=True)
    return result


def test_run_folder_has_every_file_with_the_contracts_keys(run3):
    run = run3.run_dir
    for name in ("config.yaml", "metrics.jsonl", "summary.txt", "final.json", "checkpoints/last.pt",
                 "checkpoints/best.pt"):
        assert (run / name).is_file(), name
    rows = metrics_rows(run)
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    for r in rows:
        assert METRIC_KEYS <= set(r), r
        assert 0.0 <= r["val_accuracy"] <= 1.0 and r["val_loss"] > 0 and r["epoch_time_s"] >= 0
    final = read_final(run)
    assert FINAL_KEYS <= set(final)
    assert final["epochs"] == 3 and final["num_classes"] == 10
    assert final == run3.final
    assert not list(run.rglob("*.tmp"))


def test_config_yaml_is_the_resolved_config(run3):
    run = run3.run_dir
    cfg = validate(yaml.safe_load((run / "config.yaml").read_text()))
    assert cfg.data.name == "digits" and cfg.train.epochs == 3 and cfg.optim.lr == 0.05
    assert cfg.model.layers == TINY_LIST


def test_n_train_plus_n_val_is_the_dataset_and_val_is_stratified(run3):
    final = read_final(run3.run_dir)
    assert final["n_train"] + final["n_val"] == digits_size() == 1797
    # data.val_fraction 0.1 of every class (stratified), rounded per class.
    from sklearn.datasets import load_digits

    counts = np.bincount(load_digits().target)
    assert final["n_val"] == sum(int(round(0.1 * c)) for c in counts)
    _, _, y = val_split_by_hand(run3.run_dir)
    np.testing.assert_array_equal(np.bincount(y.numpy(), minlength=10), [int(round(0.1 * c)) for c in counts])


def test_best_checkpoint_is_the_best_epoch(run3):
    run = run3.run_dir
    rows = metrics_rows(run)
    final = read_final(run)
    accs = [r["val_accuracy"] for r in rows]
    assert final["best_epoch"] == 1 + accs.index(max(accs))  # first epoch with the highest val_accuracy
    best = ckpt(run, "best.pt")
    assert best["epoch"] == final["best_epoch"]
    assert ckpt(run, "last.pt")["epoch"] == 3


def test_val_accuracy_recomputed_from_the_checkpoints(run3):
    run = run3.run_dir
    final = read_final(run)
    rows = {r["epoch"]: r for r in metrics_rows(run)}
    # final.json: the model at the end of training (no early stopping) = last.pt.
    acc, loss, n = evaluate_by_hand(run, ckpt(run, "last.pt")["model"])
    assert n == final["n_val"]
    assert final["val_accuracy"] == pytest.approx(acc, abs=1e-12)
    assert final["val_loss"] == pytest.approx(loss, rel=1e-5)
    assert rows[3]["val_accuracy"] == pytest.approx(acc, abs=1e-12)
    # best.pt: its epoch's logged metrics.
    best = ckpt(run, "best.pt")
    acc_b, loss_b, _ = evaluate_by_hand(run, best["model"])
    assert rows[best["epoch"]]["val_accuracy"] == pytest.approx(acc_b, abs=1e-12)
    assert rows[best["epoch"]]["val_loss"] == pytest.approx(loss_b, rel=1e-5)


def test_summary_txt_describes_the_model(run3):
    text = (run3.run_dir / "summary.txt").read_text()
    # conv 4x3x3 + 4 ; dense 4*6*6*10 + 10.
    n_params = 4 * 9 + 4 + 144 * 10 + 10
    assert f"total params: {n_params:,}" in text
    assert "4x6x6" in text and "digits" in text


def test_logged_lr_follows_the_cosine_formula(tmp_path):
    runs = tmp_path / "runs"
    res = train(cfg_for(runs, "train.epochs=3", "schedule.name=cosine", "optim.lr=0.02"), quiet=True)
    steps = math.ceil(res.final["n_train"] / 64)
    total = 3 * steps
    for r in metrics_rows(res.run_dir):
        last_step = r["epoch"] * steps - 1  # lr of the last batch of the epoch
        want = 0.02 * 0.5 * (1 + math.cos(math.pi * last_step / total))
        assert r["lr"] == pytest.approx(want, rel=1e-12)


def test_class_subset_override_trains_on_those_classes_only(tmp_path):
    from sklearn.datasets import load_digits

    res = train(cfg_for(tmp_path / "runs", "train.epochs=1", "data.classes=[5,6]"), quiet=True)
    target = load_digits().target
    final = read_final(res.run_dir)
    assert final["num_classes"] == 2 and final["classes"] == ["5", "6"]
    assert final["n_train"] + final["n_val"] == int(((target == 5) | (target == 6)).sum())
    assert ckpt(res.run_dir, "last.pt")["model"]["dense1.weight"].shape == (2, 144)


# --------------------------------------------------------------------------- determinism


def test_same_seed_gives_identical_metrics_and_weights(tmp_path):
    a = train(cfg_for(tmp_path / "a", "train.seed=5"), quiet=True)
    b = train(cfg_for(tmp_path / "b", "train.seed=5"), quiet=True)
    assert without_time(metrics_rows(a.run_dir)) == without_time(metrics_rows(b.run_dir))
    for k, v in ckpt(a.run_dir, "last.pt")["model"].items():
        assert torch.equal(v, ckpt(b.run_dir, "last.pt")["model"][k]), k
    c = train(cfg_for(tmp_path / "c", "train.seed=6"), quiet=True)
    assert without_time(metrics_rows(c.run_dir)) != without_time(metrics_rows(a.run_dir))


def test_deterministic_switch_and_device_auto(tmp_path):
    from cnnkit.errors import UserError
    from cnnkit.nn.runtime import resolve_device

    was = torch.are_deterministic_algorithms_enabled()
    try:
        a = train(cfg_for(tmp_path / "a", "train.deterministic=true", "train.device=auto"), quiet=True)
        assert torch.are_deterministic_algorithms_enabled()
        b = train(cfg_for(tmp_path / "b", "train.deterministic=true", "train.device=auto"), quiet=True)
    finally:
        torch.use_deterministic_algorithms(was)
    assert without_time(metrics_rows(a.run_dir)) == without_time(metrics_rows(b.run_dir))
    if not torch.cuda.is_available():
        assert a.final["device"] == "cpu"
        assert resolve_device("auto") == torch.device("cpu") or resolve_device("auto").type == "mps"
        with pytest.raises(UserError, match="cuda"):
            resolve_device("cuda")


# --------------------------------------------------------------------------- early stopping


def test_early_stopping_counts_patience_epochs_without_improvement():
    """patience=2: stop after 2 epochs in a row without improvement (Keras' semantics and the docstring's)."""
    es = EarlyStopping(monitor="val_loss", mode="auto", patience=2)

    class T:  # what EarlyStopping uses of a trainer
        should_stop = False

        def log(self, text):
            pass

    t = T()
    values = [1.0, 0.8, 0.85, 0.9, 0.7, 0.6]
    stopped_at = None
    for epoch, v in enumerate(values, start=1):
        es.on_epoch_end(t, epoch, {"val_loss": v})
        if t.should_stop:
            stopped_at = epoch
            break
    # Epoch 2 is the best; epochs 3 and 4 do not improve -> stop at the end of epoch 4.
    assert stopped_at == 4
    assert es.stopped_epoch == 4


def test_early_stopping_mode_and_min_delta():
    es = EarlyStopping(monitor="val_accuracy", mode="auto", patience=0, min_delta=0.05)
    assert es.mode == "max"

    class T:  # what EarlyStopping uses of a trainer
        should_stop = False

        def log(self, text):
            pass

    t = T()
    es.on_epoch_end(t, 1, {"val_accuracy": 0.50})
    es.on_epoch_end(t, 2, {"val_accuracy": 0.56})  # +0.06 > min_delta: improves
    assert not t.should_stop and es.best == 0.56
    es.on_epoch_end(t, 3, {"val_accuracy": 0.60})  # +0.04 < min_delta: no improvement
    assert t.should_stop


def test_early_stopping_stops_and_restores_the_best_weights(tmp_path):
    # Monitoring train_loss in mode max: it falls every epoch at this small lr, so epoch 1
    # stays the best and training must stop early and end with epoch 1's weights.
    res = train(cfg_for(tmp_path / "runs", "train.epochs=8", "optim.lr=0.001", "schedule.name=constant",
                        "regularization.early_stopping={monitor: train_loss, mode: max, patience: 1}"), quiet=True)
    rows = metrics_rows(res.run_dir)
    losses = [r["train_loss"] for r in rows]
    assert losses == sorted(losses, reverse=True)  # the premise: strictly falling
    assert len(rows) < 8
    final = read_final(res.run_dir)
    assert final["stopped_early"] is True and final["best_epoch"] == 1 and final["epochs"] == len(rows)
    assert ckpt(res.run_dir, "best.pt")["epoch"] == 1
    # Restored: the final evaluation is epoch 1's, recomputed independently from best.pt.
    assert final["val_accuracy"] == rows[0]["val_accuracy"]
    assert final["val_loss"] == pytest.approx(rows[0]["val_loss"], rel=1e-9)
    acc, loss, _ = evaluate_by_hand(res.run_dir, ckpt(res.run_dir, "best.pt")["model"])
    assert final["val_accuracy"] == pytest.approx(acc, abs=1e-12)


def test_unknown_early_stopping_monitor_is_a_user_error_before_training(tmp_path):
    from cnnkit.errors import UserError

    runs = tmp_path / "runs"
    with pytest.raises(UserError) as e:
        train(cfg_for(runs, "regularization.early_stopping={monitor: val_acc}"), quiet=True)
    assert "'val_acc'" in str(e.value) and "val_accuracy" in str(e.value)
    assert not runs.exists() or not any(runs.iterdir())


# --------------------------------------------------------------------------- L1 / L2


def test_penalty_gradient_is_2_l2_w_and_l1_sign_w_on_weights_only():
    torch.manual_seed(0)
    model = build_torch(parse_layers(TINY_LIST), (1, 8, 8), 10)
    l1, l2 = 0.003, 0.01

    def grad(p):  # a bias the penalty does not touch gets no gradient at all
        return p.grad if p.grad is not None else torch.zeros_like(p)

    penalty(model, 0.0, l2).backward()
    for name, p in model.named_parameters():
        want = 2 * l2 * p.detach() if p.ndim > 1 else torch.zeros_like(p)
        torch.testing.assert_close(grad(p), want, rtol=1e-6, atol=0, msg=lambda m, name=name: f"{name}: {m}")
    model.zero_grad(set_to_none=True)
    penalty(model, l1, 0.0).backward()
    for name, p in model.named_parameters():
        want = l1 * torch.sign(p.detach()) if p.ndim > 1 else torch.zeros_like(p)
        torch.testing.assert_close(grad(p), want, msg=lambda m, name=name: f"{name}: {m}")
    assert penalty(model, 0.0, 0.0) == 0.0


def test_one_training_step_with_l2_is_w_minus_lr_times_grad_plus_2_l2_w(tmp_path):
    """Full-batch SGD for one step, by hand: w1 = w0 - lr (dCE/dw + 2 l2 w0)."""
    lr, l2 = 0.1, 0.05
    results = {}
    for reg in (0.0, l2):
        cfg = cfg_for(tmp_path / f"r{reg}", "train.epochs=1", "data.batch_size=4096", "optim.name=sgd",
                      f"optim.lr={lr}", "schedule.name=constant", f"regularization.l2={reg}")
        bundle = load_data(cfg.data)
        torch.manual_seed(0)
        model = build_torch(parse_layers(TINY_LIST), (1, 8, 8), 10)
        w0 = {k: v.detach().clone() for k, v in model.state_dict().items()}
        Trainer(cfg, quiet=True, model=model, bundle=bundle).fit()
        w1 = {k: v.detach().clone() for k, v in model.state_dict().items()}
        # By hand: full-batch cross-entropy on the normalised training images, plus l2 * sum(w²).
        ref = build_torch(parse_layers(TINY_LIST), (1, 8, 8), 10)
        ref.load_state_dict(w0)
        mean, std = bundle.mean[0], bundle.std[0]
        x = (bundle.train.images.float() / 255.0 - mean) / std
        loss = F.cross_entropy(ref(x), bundle.train.labels)
        loss.backward()
        for name, p in ref.named_parameters():
            g = p.grad + (2 * reg * w0[name] if p.ndim > 1 else 0.0)
            torch.testing.assert_close(w1[name], w0[name] - lr * g, rtol=1e-5, atol=1e-6, msg=lambda m, name=name: f"{name}: {m}")
        results[reg] = (w0, w1)
    # The L2 term alone moved each weight by exactly -lr * 2 * l2 * w0 (biases not at all).
    (w0, a), (_, b) = results[0.0], results[l2]
    for name in w0:
        want = -lr * 2 * l2 * w0[name] if w0[name].ndim > 1 else torch.zeros_like(w0[name])
        torch.testing.assert_close(b[name] - a[name], want, rtol=1e-4, atol=1e-7, msg=lambda m, name=name: f"{name}: {m}")


# --------------------------------------------------------------------------- unique run folders


def test_run_folders_are_unique_within_one_second(tmp_path, monkeypatch):
    monkeypatch.setattr(runs.time, "strftime", lambda fmt, *a: "20260101-000000")
    made: list[Path] = []
    lock = threading.Lock()

    def make():
        p = RunFolder.create(tmp_path, "lenet5-digits").path
        with lock:
            made.append(p)

    threads = [threading.Thread(target=make) for _ in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(made) == 24 and len(set(made)) == 24
    assert all(p.is_dir() and (p / "checkpoints").is_dir() for p in made)
    assert all(p.name.startswith("20260101-000000-lenet5-digits-") for p in made)


def test_a_name_collision_is_retried(tmp_path, monkeypatch):
    monkeypatch.setattr(runs.time, "strftime", lambda fmt, *a: "20260101-000000")
    tokens = iter(["aaaaaa", "aaaaaa", "bbbbbb"])
    monkeypatch.setattr(runs.secrets, "token_hex", lambda n: next(tokens))
    a = RunFolder.create(tmp_path, "x").path
    b = RunFolder.create(tmp_path, "x").path
    assert a.name == "20260101-000000-x-aaaaaa" and b.name == "20260101-000000-x-bbbbbb"


def _cli_env() -> dict:
    return dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")


@pytest.mark.slow
def test_two_processes_started_together_get_different_folders_and_the_same_metrics(tmp_path):
    runs = tmp_path / "runs"
    args = [sys.executable, "-m", "cnnkit", "train", *overrides(runs, "train.seed=1"), "--quiet"]
    procs = [subprocess.Popen(args, cwd=tmp_path, env=_cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err
    dirs = [Path(out.strip().splitlines()[-1]) for out, _ in outs]  # the last line names the run folder
    assert dirs[0] != dirs[1]
    assert sorted(dirs) == sorted(runs.iterdir())
    assert without_time(metrics_rows(dirs[0])) == without_time(metrics_rows(dirs[1]))


# --------------------------------------------------------------------------- resume: extending a finished run


def test_resume_extends_a_finished_run_like_an_uninterrupted_one(tmp_path, capsys):
    extra = ("schedule.name=constant", "train.seed=2")
    short = train(cfg_for(tmp_path / "a", *extra), quiet=True)  # 2 epochs
    before = (short.run_dir / "metrics.jsonl").read_bytes()
    assert cli.main(["train", "--resume", str(short.run_dir), "train.epochs=4", "--quiet"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == str(short.run_dir)
    after = (short.run_dir / "metrics.jsonl").read_bytes()
    rows = metrics_rows(short.run_dir)
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]
    assert after.splitlines()[:2] == before.splitlines()  # lines 1-2 byte-identical
    final = read_final(short.run_dir)
    assert final["epochs"] == 4
    assert yaml.safe_load((short.run_dir / "config.yaml").read_text())["train"]["epochs"] == 4
    # With a constant schedule, 2 + 2 epochs are exactly 4 uninterrupted epochs.
    full = train(cfg_for(tmp_path / "b", *extra, "train.epochs=4"), quiet=True)
    assert without_time(rows) == without_time(metrics_rows(full.run_dir))
    assert final["val_accuracy"] == full.final["val_accuracy"]
    assert final["val_loss"] == full.final["val_loss"]


def test_resume_of_a_complete_run_without_final_json_only_writes_it(tmp_path, capsys):
    res = train(cfg_for(tmp_path / "a"), quiet=True)
    before = (res.run_dir / "metrics.jsonl").read_bytes()
    want = read_final(res.run_dir)
    (res.run_dir / "final.json").unlink()
    assert cli.main(["train", "--resume", str(res.run_dir), "--quiet"]) == 0
    assert (res.run_dir / "metrics.jsonl").read_bytes() == before
    got = read_final(res.run_dir)
    for k in ("val_accuracy", "val_loss", "best_epoch", "epochs", "n_train", "n_val", "num_classes"):
        assert got[k] == want[k], k


# --------------------------------------------------------------------------- resume: crash states built by hand


@pytest.fixture(scope="module")
def reference3(tmp_path_factory):
    """An uninterrupted 3-epoch run (constant lr) and a 2-epoch run with the same seed."""
    runs = tmp_path_factory.mktemp("ref3")
    extra = ("schedule.name=constant", "train.seed=4")
    full = train(cfg_for(runs / "full", *extra, "train.epochs=3"), quiet=True)
    two = train(cfg_for(runs / "two", *extra, "train.epochs=2"), quiet=True)
    return full, two


def _copy_run(src: Path, dst_root: Path) -> Path:
    dst = dst_root / src.name
    shutil.copytree(src, dst)
    return dst


def test_resume_after_a_kill_between_the_metrics_line_and_last_pt(tmp_path, reference3, capsys):
    full, two = reference3
    run = _copy_run(full.run_dir, tmp_path)
    # The state of a run killed after epoch 3's metrics line and best.pt, before its last.pt:
    # last.pt holds epoch 2 (identical to the 2-epoch run's, same seed and constant lr).
    shutil.copy(two.run_dir / "checkpoints" / "last.pt", run / "checkpoints" / "last.pt")
    (run / "final.json").unlink()
    lines_before = (run / "metrics.jsonl").read_bytes().splitlines()
    assert cli.main(["train", "--resume", str(run), "--quiet"]) == 0
    rows = metrics_rows(run)
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert (run / "metrics.jsonl").read_bytes().splitlines()[:2] == lines_before[:2]
    assert without_time(rows) == without_time(metrics_rows(full.run_dir))
    assert read_final(run)["val_accuracy"] == full.final["val_accuracy"]


def test_resume_drops_a_half_written_metrics_line(tmp_path, reference3, capsys):
    _, two = reference3
    run = _copy_run(two.run_dir, tmp_path)
    (run / "final.json").unlink()
    good = (run / "metrics.jsonl").read_bytes()
    with open(run / "metrics.jsonl", "ab") as f:
        f.write(b'{"epoch": 3, "train_loss": 0.12')  # killed mid-append
    assert cli.main(["train", "--resume", str(run), "train.epochs=3", "--quiet"]) == 0
    text = (run / "metrics.jsonl").read_bytes()
    assert text.startswith(good)
    rows = metrics_rows(run)  # every line parses
    assert [r["epoch"] for r in rows] == [1, 2, 3]


def test_resume_removes_temp_files_left_by_a_kill_during_a_write(tmp_path, reference3, capsys):
    _, two = reference3
    run = _copy_run(two.run_dir, tmp_path)
    # What SIGKILL in the middle of atomic_torch_save / atomic_write_text leaves behind.
    (run / "checkpoints" / ".last.pt.k2j3h4.tmp").write_bytes(b"PK\x03\x04partial")
    (run / ".final.json.x8y9z0.tmp").write_text('{"val_acc')
    assert cli.main(["train", "--resume", str(run), "train.epochs=3", "--quiet"]) == 0
    assert [r["epoch"] for r in metrics_rows(run)] == [1, 2, 3]
    assert sorted(str(p.relative_to(run)) for p in run.rglob("*.tmp")) == []


def test_resume_of_a_missing_or_foreign_folder_is_a_user_error(tmp_path, capsys):
    assert cli.main(["train", "--resume", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "does not exist" in err and "nope" in err
    (tmp_path / "empty").mkdir()
    assert cli.main(["train", "--resume", str(tmp_path / "empty")]) == 2
    assert "config.yaml" in capsys.readouterr().err


# --------------------------------------------------------------------------- resume: real SIGKILLs

KILL_EPOCHS = 6


def kill_overrides(runs: Path) -> list[str]:
    return overrides(runs, f"train.epochs={KILL_EPOCHS}", "data.batch_size=8", "train.seed=3", "optim.lr=0.003",
                     "schedule.name=cosine", layers=KILL_LAYERS)


@pytest.fixture(scope="module")
def kill_reference(tmp_path_factory):
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        runs = tmp_path_factory.mktemp("killref")
        res = train(load_config(None, kill_overrides(runs)), quiet=True)
    finally:
        torch.set_num_threads(before)
    return res


def _start(args: list[str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "cnnkit", "train", *args, "--quiet"], cwd=cwd, env=_cli_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _wait(pred, proc: subprocess.Popen, timeout: float = 600.0, poll: float = 0.002):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = pred()
        if v:
            return v
        if proc.poll() is not None:
            return pred()
        time.sleep(poll)
    raise AssertionError("timed out")


def _kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, (
        f"the process ended (rc {proc.returncode}) before it could be killed: {proc.stderr.read()}")
    proc.stderr.close()


def _run_dir(runs: Path) -> Path | None:
    dirs = [p for p in runs.iterdir() if p.is_dir()] if runs.exists() else []
    return dirs[0] if dirs else None


def _last_pt_replacements(run: Path, count: int):
    """A predicate true once checkpoints/last.pt has been (re)written ``count`` times."""
    seen: set[tuple[int, int]] = set()

    def pred():
        try:
            st = os.stat(run / "checkpoints" / "last.pt")  # each os.replace: a new (inode, mtime)
            seen.add((st.st_ino, st.st_mtime_ns))
        except FileNotFoundError:
            pass
        return len(seen) >= count

    return pred


def _checkpointed_lines(run: Path) -> list[bytes]:
    """metrics.jsonl lines of epochs the last checkpoint covers: resume must keep them byte for byte."""
    try:
        epoch = ckpt(run, "last.pt")["epoch"]
    except FileNotFoundError:
        return []
    lines = (run / "metrics.jsonl").read_bytes().splitlines() if (run / "metrics.jsonl").exists() else []
    return [l for l in lines if l.strip() and json.loads(l)["epoch"] <= epoch]


@pytest.mark.slow
@pytest.mark.parametrize("case", ["random-1", "random-2", "after-checkpoint-1", "after-checkpoint-4",
                                  "twice"])
def test_resume_after_sigkill_finishes_like_an_uninterrupted_run(case, tmp_path, kill_reference, one_thread,
                                                                 capsys):
    runs = tmp_path / "runs"
    rng = random.Random(f"cnnkit-kill-{case}")
    proc = _start(kill_overrides(runs), tmp_path)
    run = _wait(lambda: _run_dir(runs), proc)
    assert run is not None
    # The folder is made a few milliseconds before its config.yaml; a kill inside that
    # window leaves a folder --resume cannot use (reported separately), so the clock
    # starts once the folder is a run folder.
    _wait(lambda: (run / "config.yaml").exists(), proc)
    if case.startswith("random"):
        # Anywhere from the run folder's first moments to the middle of the last epochs.
        time.sleep(rng.uniform(0.05, 1.2))
    elif case.startswith("after-checkpoint"):
        _wait(_last_pt_replacements(run, int(case.rsplit("-", 1)[1])), proc)
    else:  # twice: once right after the first checkpoint, then again while resuming
        _wait(_last_pt_replacements(run, 1), proc)
    _kill(proc)
    if case == "twice":
        proc = subprocess.Popen([sys.executable, "-m", "cnnkit", "train", "--resume", str(run), "--quiet"],
                                cwd=tmp_path, env=_cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        _wait(_last_pt_replacements(run, 2), proc)  # at least one epoch of the resumed process
        time.sleep(rng.uniform(0.0, 0.3))
        _kill(proc)

    kept = _checkpointed_lines(run)
    assert cli.main(["train", "--resume", str(run), "--quiet"]) == 0, capsys.readouterr().err
    assert capsys.readouterr().out.strip().splitlines()[-1] == str(run)

    lines = (run / "metrics.jsonl").read_bytes().splitlines()
    rows = [json.loads(l) for l in lines]
    assert [r["epoch"] for r in rows] == list(range(1, KILL_EPOCHS + 1))  # each epoch exactly once
    assert lines[:len(kept)] == kept  # lines already there are untouched
    assert (run / "final.json").is_file()
    assert sorted(str(p.relative_to(run)) for p in run.rglob("*.tmp")) == []
    # Deterministic CPU set-up: the same numbers as the uninterrupted run.
    ref = kill_reference
    assert without_time(rows) == without_time(metrics_rows(ref.run_dir))
    final = read_final(run)
    for k in ("val_accuracy", "val_loss", "best_epoch", "epochs", "n_train", "n_val"):
        assert final[k] == ref.final[k], k
    a, b = ckpt(run, "last.pt")["model"], ckpt(ref.run_dir, "last.pt")["model"]
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert ckpt(run, "best.pt")["epoch"] == ref.final["best_epoch"]


def test_ema_averages_weights_and_batch_norm_statistics_with_a_warm_up():
    """By hand: update t blends with decay min(decay, (1 + t) / (10 + t)); float buffers (running
    mean/var) are averaged like the weights, the integer batch count is copied."""
    from torch import nn

    from cnnkit.train.trainer import EMA

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    ema = EMA(model, 0.9)
    expected = {k: v.clone().double() for k, v in model.state_dict().items()}
    for t in range(12):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        model.train()
        model(torch.randn(8, 3) * (t + 1))  # moves the batch-norm statistics
        ema.update(model)
        d = min(0.9, (1 + t) / (10 + t))
        for k, v in model.state_dict().items():
            expected[k] = d * expected[k] + (1 - d) * v.double() if v.dtype.is_floating_point else v.double()
    got = ema.model.state_dict()
    for k in expected:
        torch.testing.assert_close(got[k].double(), expected[k], rtol=1e-5, atol=1e-6)
    assert int(got["1.num_batches_tracked"]) == 12
    # The update count travels with the checkpoint, so a resumed run continues the same schedule.
    again = EMA(model, 0.9)
    again.load_state_dict(ema.state_dict())
    assert again.updates == 12 and again.current_decay() == ema.current_decay()
