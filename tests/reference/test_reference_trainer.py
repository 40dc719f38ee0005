"""train.engine=reference: the same run folder as the torch engine, loadable by it; resume; explain backprop."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from cnnkit.config import ModelConfig, validate
from cnnkit.errors import UserError
from cnnkit.models import create_model
from cnnkit.models.lenet import lenet5_layers
from cnnkit.runs import load_checkpoint, read_metrics
from cnnkit.explain.backprop import explain_backprop, render_backprop_text
from cnnkit.reference.trainer import build_reference_model, layer_list, train_reference

LAYERS = [
    {"conv": {"out": 6, "kernel": 3, "padding": "same"}}, "relu", {"maxpool": 2},
    {"conv": {"out": 8, "kernel": 3, "padding": "same", "bias": False}}, "batchnorm", "relu",
    "flatten", {"dropout": 0.2}, {"dense": 24}, "relu", {"dense": 10},
]
NO_DROPOUT = [layer for layer in LAYERS if not (isinstance(layer, dict) and "dropout" in layer)]


def config(tmp_path, engine="reference", layers=LAYERS, **train):
    return validate({
        "data": {"name": "digits", "batch_size": 64},
        "model": {"layers": layers},
        "optim": {"name": "adam", "lr": 0.01},
        "regularization": {"l2": 1e-4, "grad_clip": 5.0, "label_smoothing": 0.05},
        "train": {"epochs": 2, "seed": 3, "device": "cpu", "engine": engine, "runs_dir": str(tmp_path / "runs"),
                  **train},
    })


def files(run_dir):
    return sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*") if p.is_file())


def torch_eval_accuracy(cfg, state):
    """Load a checkpoint's model into the torch DeclarativeNet (strict) and measure val accuracy."""
    from cnnkit.data import load_data
    from cnnkit.data.loaders import make_loader
    bundle = load_data(cfg.data)
    model = create_model(cfg.model, bundle.input_shape, bundle.num_classes)
    model.load_state_dict(state, strict=True)
    loader = make_loader(bundle.val, batch_size=256, mean=bundle.mean, std=bundle.std, shuffle=False, seed=0,
                         device="cpu", augment=None)
    model.eval()
    with torch.no_grad():
        correct = sum(int((model(x).argmax(1) == y).sum()) for x, y in loader)
    return correct / len(bundle.val)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("engines")
    from cnnkit.api import train

    # no dropout here, so that both engines see exactly the same computation
    ref = train(config(tmp, layers=NO_DROPOUT), quiet=True)
    tor = train(config(tmp, engine="torch", layers=NO_DROPOUT), quiet=True)
    return ref, tor


def test_reference_run_folder_matches_torch(runs):
    ref, tor = runs
    assert files(ref.run_dir) == files(tor.run_dir)
    assert set(ref.final) == set(tor.final)
    assert ref.final["engine"] == "reference" and tor.final["engine"] == "torch"
    assert set(json.loads((ref.run_dir / "meta.json").read_text())) == set(
        json.loads((tor.run_dir / "meta.json").read_text()))
    rows = read_metrics(ref.run_dir / "metrics.jsonl")
    assert [r["epoch"] for r in rows] == [1, 2]
    assert [set(r) for r in rows] == [set(r) for r in read_metrics(tor.run_dir / "metrics.jsonl")]
    for name in ("last.pt", "best.pt"):
        a, b = load_checkpoint(ref.run_dir / "checkpoints" / name), load_checkpoint(tor.run_dir / "checkpoints" / name)
        assert set(b) <= set(a), set(b) - set(a)
        assert {k: tuple(v.shape) for k, v in a["model"].items()} == {k: tuple(v.shape) for k, v in b["model"].items()}
    # Same start, same batches, same rule: the two engines train alike.
    for r, t in zip(rows, read_metrics(tor.run_dir / "metrics.jsonl")):
        assert abs(r["train_loss"] - t["train_loss"]) < 1e-3 * t["train_loss"], (r, t)
        assert r["lr"] == t["lr"]


def test_reference_checkpoints_load_into_torch(runs, tmp_path):
    ref, _ = runs
    cfg = config(tmp_path, layers=NO_DROPOUT)
    best = load_checkpoint(ref.run_dir / "checkpoints" / "best.pt")
    assert torch_eval_accuracy(cfg, best["model"]) == best["metrics"]["val_accuracy"] == ref.final["best_val_accuracy"]
    last = load_checkpoint(ref.run_dir / "checkpoints" / "last.pt")
    assert torch_eval_accuracy(cfg, last["model"]) == ref.final["val_accuracy"]


def test_resume_continues_exactly(tmp_path):
    first = train_reference(config(tmp_path), quiet=True)
    # a crash after metrics.jsonl got a line the checkpoint does not know of, and a duplicated line
    with open(first.run_dir / "metrics.jsonl", "a") as f:
        f.write(json.dumps(first.history[1]) + "\n" + json.dumps({"epoch": 3, "train_loss": 9.9}) + "\n")
    resumed = train_reference(config(tmp_path, epochs=3), run_dir=first.run_dir, resume=True, quiet=True)
    rows = read_metrics(first.run_dir / "metrics.jsonl")
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert rows[1] == first.history[1]
    assert resumed.final["epochs"] == 3
    # the same as three epochs in one go (a constant schedule, so the lr does not depend on train.epochs)
    straight = train_reference(config(tmp_path, epochs=3), quiet=True)
    a = load_checkpoint(resumed.run_dir / "checkpoints" / "last.pt")["model"]
    b = load_checkpoint(straight.run_dir / "checkpoints" / "last.pt")["model"]
    for k in b:
        assert torch.allclose(a[k].double(), b[k].double(), rtol=0, atol=1e-6), k


def test_config_errors(tmp_path):
    cfg = config(tmp_path)
    with pytest.raises(UserError, match="model.layers"):
        train_reference(cfg.model_copy(update={"model": ModelConfig(name="resnet18")}), quiet=True)
    with pytest.raises(UserError, match="torch.adamw"):
        train_reference(validate({**cfg.to_dict(), "optim": {"name": "torch.adamw"}}), quiet=True)
    with pytest.raises(UserError, match="momentum"):
        train_reference(validate({**cfg.to_dict(), "optim": {"name": "adam", "momentum": 0.9}}), quiet=True)
    with pytest.raises(UserError, match="ema"):
        train_reference(validate({**cfg.to_dict(), "train": {**cfg.to_dict()["train"], "ema": 0.9}}), quiet=True)


def test_lenet5_is_a_layer_list():
    model_cfg = ModelConfig(name="lenet5", init="he")
    assert layer_list(model_cfg) == lenet5_layers()
    torch.manual_seed(0)
    net, _ = build_reference_model(model_cfg, (1, 28, 28), 10)
    torch.manual_seed(0)
    want = create_model(model_cfg, (1, 28, 28), 10).state_dict()
    got = net.state_dict()
    assert list(got) == list(want) and all(torch.equal(got[k], want[k]) for k in want)


def test_explain_backprop(tmp_path):
    cfg = validate({
        "data": {"name": "digits"},
        "model": {"layers": [
            {"conv": {"out": 4, "kernel": 3, "padding": "same"}}, "tanh", {"avgpool": 2},
            {"conv": {"out": 6, "kernel": 3, "bias": False}}, "batchnorm", "elu", {"dropout": 0.3},
            "flatten", {"dense": 10}]},
        "train": {"seed": 1},
    })
    result = explain_backprop(cfg, batch_size=8)
    layers = {r["name"]: r for r in result["layers"]}
    assert result["batch_shape"] == [8, 1, 8, 8]
    assert layers["conv1"]["activation_shape"] == [8, 4, 8, 8] == layers["conv1"]["grad_shape"]
    assert layers["avgpool1"]["activation_shape"] == [8, 4, 4, 4]
    assert layers["conv2"]["activation_shape"] == [8, 6, 2, 2]
    assert layers["flatten1"]["activation_shape"] == [8, 24]
    assert layers["dense1"]["activation_shape"] == [8, 10]
    assert set(layers["batchnorm1"]["param_grad_norms"]) == {"batchnorm1.weight", "batchnorm1.bias"}
    assert layers["conv1"]["checked"] == 5 and layers["tanh1"]["max_rel_error"] is None
    assert result["max_rel_error"] < 1e-6
    assert all(r["grad_norm"] > 0 for r in result["layers"])
    text = render_backprop_text(result)
    assert "conv1" in text and "grad check" in text and "8x4x8x8" in text
    assert result["chance_loss"] == pytest.approx(np.log(10))
    # The explanation of a high starting loss appears exactly when the loss is far above ln(10).
    high = {**result, "loss": 5 * result["chance_loss"]}
    low = {**result, "loss": result["chance_loss"]}
    assert "why the loss starts at" in render_backprop_text(high)
    assert "why the loss starts at" not in render_backprop_text(low)


def test_early_stopping_restores_best(tmp_path):
    cfg = validate({**config(tmp_path, epochs=4).to_dict(), "regularization": {
        "early_stopping": {"monitor": "val_accuracy", "patience": 0, "min_delta": 1.0, "restore_best": True}}})
    result = train_reference(cfg, quiet=True)
    assert result.final["stopped_early"] and result.final["epochs"] == 2
    assert result.final["val_accuracy"] == result.history[result.final["best_epoch"] - 1]["val_accuracy"]
    last = load_checkpoint(result.run_dir / "checkpoints" / "last.pt")
    assert last["epoch"] == 2 and last["stopped"]
