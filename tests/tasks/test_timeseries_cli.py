"""Time series through the real commands: ``task: timeseries`` (train, ``eval --data --format json``,
``predict``, export) and ``task: forecast`` (train, eval, ``predict --plot``), with the figures
recomputed independently: accuracy and F1 recounted from the model's own outputs, and MAE / MASE /
the naive baselines computed by hand from the raw CSV values."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from cnnkit.cli import main


def waves(n: int, length: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Noisy sines (class 'sine') and square waves (class 'square') of random phase and frequency."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0, 1, length)
    xs, ys = [], []
    for i in range(n):
        f, phase = rng.uniform(2, 4), rng.uniform(0, 2 * np.pi)
        s = np.sin(2 * np.pi * f * t + phase)
        x = np.sign(s) if i % 2 else s
        xs.append(x + rng.normal(0, 0.1, length))
        ys.append("square" if i % 2 else "sine")
    return np.asarray(xs, dtype=np.float64)[:, None, :], np.asarray(ys)


def write_config(tmp: Path, cfg: dict) -> Path:
    path = tmp / f"cfg{len(list(tmp.glob('cfg*.yaml')))}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def newest_run(runs: Path) -> Path:
    return max((p for p in runs.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime_ns)


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ts")
    x, y = waves(60, 64, seed=0)
    np.savez(tmp / "train.npz", X=x, y=y)
    xt, yt = waves(24, 64, seed=1)
    np.savez(tmp / "held.npz", X=xt, y=yt)
    cfg = {"task": "timeseries",
           "data": {"name": "series", "path": str(tmp / "train.npz"), "batch_size": 16, "val_fraction": 0.25},
           "model": {"name": "fcn1d", "options": {"filters": [8, 16, 8]}},
           "optim": {"name": "torch.adam", "lr": 0.01},
           "train": {"epochs": 6, "seed": 0, "device": "cpu", "runs_dir": str(tmp / "runs")}}
    assert main(["train", str(write_config(tmp, cfg)), "--quiet"]) == 0
    return tmp, newest_run(tmp / "runs")


def test_timeseries_trains_and_records_its_layout(classifier):
    _, run = classifier
    final = json.loads((run / "final.json").read_text())
    meta = json.loads((run / "meta.json").read_text())
    assert final["task"] == "timeseries" and final["classes"] == ["sine", "square"]
    assert final["n_train"] + final["n_val"] == 60 and final["n_val"] in (15, 16)
    assert final["val_accuracy"] >= 0.8
    assert meta["input_shape"] == [1, 64]
    assert meta["series_layout"]["length"] == 64 and meta["series_layout"]["mask"] is False


def test_eval_data_json_recounted_from_the_model(classifier, capsys):
    from cnnkit.inference import load_run_model

    tmp, run = classifier
    capsys.readouterr()
    assert main(["eval", str(run), "--data", str(tmp / "held.npz"), "--format", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["n_series"] == 24 and out["task"] == "timeseries"
    model, info = load_run_model(run)
    held = np.load(tmp / "held.npz")
    x = held["X"]  # z-normalised by hand, per series: the run's layout says znorm
    x = (x - x.mean(-1, keepdims=True)) / x.std(-1, keepdims=True)
    with torch.no_grad():
        pred = model(torch.as_tensor(x, dtype=torch.float32)).argmax(1).numpy()
    truth = np.array([info["classes"].index(c) for c in held["y"]])
    assert out["accuracy"] == pytest.approx((pred == truth).mean())
    for c, name in enumerate(info["classes"]):
        tp = ((pred == c) & (truth == c)).sum()
        precision, recall = tp / max((pred == c).sum(), 1), tp / (truth == c).sum()
        f1 = 2 * precision * recall / (precision + recall) if tp else 0.0
        assert out["per_class"][name]["f1"] == pytest.approx(f1, abs=1e-4)


def test_predict_series_file_json(classifier, capsys):
    tmp, run = classifier
    capsys.readouterr()
    assert main(["predict", str(run), str(tmp / "held.npz"), "--format", "json", "--top-k", "1"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out) == 24 and out[0]["series"] == "held.npz[0]"
    assert set(out[0]) == {"series", "top", "probabilities"}
    assert sum(out[0]["probabilities"]) == pytest.approx(1.0, abs=1e-5)


def test_timeseries_bad_inputs_are_one_clear_message(classifier, tmp_path, capsys):
    tmp, run = classifier
    x, _ = waves(4, 64, seed=2)
    np.savez(tmp_path / "odd.npz", X=x, y=np.array(["sine", "triangle", "sine", "sine"]))
    assert main(["eval", str(run), "--data", str(tmp_path / "odd.npz")]) == 2
    err = capsys.readouterr().err
    assert "triangle" in err and "Traceback" not in err
    ragged = tmp_path / "ragged.csv"
    ragged.write_text("a,1,2,3,4\nb,1,2,3\n")  # a row of another length: no trailing empty cells
    cfg = {"task": "timeseries", "data": {"name": "series", "path": str(ragged)},
           "model": {"name": "fcn1d"}, "train": {"epochs": 1, "device": "cpu", "runs_dir": str(tmp_path)}}
    assert main(["train", str(write_config(tmp_path, cfg)), "--quiet"]) == 2
    assert "row" in capsys.readouterr().err
    good = {**cfg, "data": {"name": "series", "path": str(tmp / "train.npz")}, "augment": {"hflip": True}}
    assert main(["train", str(write_config(tmp_path, good)), "--quiet"]) == 2
    assert "augment.hflip" in capsys.readouterr().err


# -- forecasting

SEASON = 12


def seasonal_series(n: int = 240) -> np.ndarray:
    t = np.arange(n)
    rng = np.random.default_rng(0)
    return 10 + 0.02 * t + 3 * np.sin(2 * np.pi * t / SEASON) + rng.normal(0, 0.3, n)


@pytest.fixture(scope="module")
def forecaster(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fc")
    values = seasonal_series()
    csv = tmp / "series.csv"
    csv.write_text("month,y\n" + "".join(f"2000-{i:04d},{float(v)!r}\n" for i, v in enumerate(values)))
    cfg = {"task": "forecast",
           "data": {"name": "forecast", "path": str(csv), "lookback": 24, "horizon": 3, "season": SEASON,
                    "batch_size": 16, "val_fraction": 0.25},
           "model": {"name": "tcn", "options": {"channels": 8}},
           "optim": {"name": "torch.adam", "lr": 0.01},
           "train": {"epochs": 8, "seed": 0, "device": "cpu", "runs_dir": str(tmp / "runs")}}
    assert main(["train", str(write_config(tmp, cfg)), "--quiet"]) == 0
    return tmp, newest_run(tmp / "runs"), values, csv


def test_forecast_metrics_and_baselines_by_hand(forecaster, capsys):
    from cnnkit.data import load_data
    from cnnkit.inference import load_run_model

    tmp, run, values, _ = forecaster
    final = json.loads((run / "final.json").read_text())
    assert final["task"] == "forecast" and final["classes"] == ["y+1", "y+2", "y+3"]
    model, info = load_run_model(run)
    task, cfg = info["task"], info["config"]
    bundle = load_data(cfg.data, task=cfg.task)
    val = bundle.val
    train_steps = bundle.extra["train_steps"]
    assert min(val.target_steps(0)) >= train_steps  # validation targets come after the training part
    h = 3
    preds, truths, naive, snaive = [], [], [], []
    for i in range(len(val)):
        x, _ = val[i]
        preds.append(task.forecast(model, x[None])[0, 0])
        steps = list(val.target_steps(i))
        truths.append(values[steps])
        end = steps[0]  # the window's inputs stop just before its first target
        naive.append(np.repeat(values[end - 1], h))
        snaive.append(values[[end - SEASON + (k % SEASON) for k in range(h)]])
    preds, truths, naive, snaive = map(np.asarray, (preds, truths, naive, snaive))
    scale = np.abs(values[SEASON:train_steps] - values[:train_steps - SEASON]).mean()
    capsys.readouterr()
    assert main(["eval", str(run), "--format", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    for name, f in (("", preds), ("naive_", naive), ("snaive_", snaive)):
        assert out[f"{name}mae"] == pytest.approx(np.abs(f - truths).mean(), rel=1e-4)
        assert out[f"{name}rmse"] == pytest.approx(np.sqrt(((f - truths) ** 2).mean()), rel=1e-4)
        assert out[f"{name}mase"] == pytest.approx(np.abs(f - truths).mean() / scale, rel=1e-4)
        smape = (200 * np.abs(f - truths) / (np.abs(f) + np.abs(truths))).mean()
        assert out[f"{name}smape"] == pytest.approx(smape, rel=1e-4)
    assert out["n_windows"] == len(val)
    # the seasonal series is easy: the trained network beats holding the last value
    assert out["mase"] < out["naive_mase"]


def test_forecast_predict_continues_the_file_and_plots(forecaster, capsys, tmp_path):
    from PIL import Image

    _, run, values, csv = forecaster
    png = tmp_path / "f.png"
    capsys.readouterr()
    assert main(["predict", str(run), str(csv), "--format", "json", "--plot", str(png)]) == 0
    out = json.loads(capsys.readouterr().out)[0]
    assert len(out["forecast"]["y"]) == 3 and out["horizon"] == 3
    assert len(out["backtest"]["y"]["truth"]) == 3
    assert out["backtest"]["y"]["truth"] == pytest.approx(values[-3:].tolist())
    assert Image.open(png).size[0] > 100
    assert main(["predict", str(run), str(csv), "--plot", str(tmp_path / "f.jpg")]) == 2
    assert ".png" in capsys.readouterr().err


def test_forecast_bad_inputs(tmp_path, capsys):
    csv = tmp_path / "s.csv"
    csv.write_text("t,y\n" + "".join(f"{i},{i % 5}\n" for i in range(30)))
    base = {"task": "forecast", "data": {"name": "forecast", "path": str(csv), "lookback": 8, "horizon": 40},
            "model": {"name": "tcn"}, "train": {"epochs": 1, "device": "cpu", "runs_dir": str(tmp_path)}}
    assert main(["train", str(write_config(tmp_path, base)), "--quiet"]) == 2
    assert "horizon" in capsys.readouterr().err
    nolook = {**base, "data": {**base["data"], "horizon": 2, "lookback": None}}
    assert main(["train", str(write_config(tmp_path, nolook)), "--quiet"]) == 2
    assert "lookback" in capsys.readouterr().err
    short = {**base, "data": {**base["data"], "horizon": 2, "season": 12}}
    assert main(["train", str(write_config(tmp_path, short)), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "data.lookback=8" in err and "data.season=12" in err
    assert not list(tmp_path.glob("*/final.json")) and not list(tmp_path.glob("2*"))  # refused before any run folder
    ce = {**base, "data": {**base["data"], "horizon": 2}, "train": {**base["train"], "loss": "cross_entropy"}}
    assert main(["train", str(write_config(tmp_path, ce)), "--quiet"]) == 2
    assert "mse" in capsys.readouterr().err


# -- data.window_norm: per-window normalisation around the network


def write_series(path: Path, values: np.ndarray) -> Path:
    path.write_text("month,y\n" + "".join(f"2000-{i:04d},{float(v)!r}\n" for i, v in enumerate(values)))
    return path


def train_forecaster(tmp: Path, csv: Path, window_norm: str, epochs: int = 2, lookback: int = 24,
                     batch_size: int = 16) -> Path:
    runs = tmp / f"runs_{window_norm}"
    cfg = {"task": "forecast",
           "data": {"name": "forecast", "path": str(csv), "lookback": lookback, "horizon": 3, "season": SEASON,
                    "batch_size": batch_size, "val_fraction": 0.25, "window_norm": window_norm},
           "model": {"name": "tcn", "options": {"channels": 8}},
           "optim": {"name": "torch.adam", "lr": 0.01},
           "train": {"epochs": epochs, "seed": 0, "device": "cpu", "runs_dir": str(runs)}}
    assert main(["train", str(write_config(tmp, cfg)), "--quiet"]) == 0
    return newest_run(runs)


@pytest.fixture(scope="module")
def normed_forecaster(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fcn")
    values = seasonal_series()
    csv = write_series(tmp / "series.csv", values)
    return tmp, train_forecaster(tmp, csv, "last"), values, csv


def test_window_norm_forward_and_eval_by_hand(normed_forecaster, capsys):
    from cnnkit.data import load_data
    from cnnkit.inference import load_run_model

    tmp, run, values, _ = normed_forecaster
    meta = json.loads((run / "meta.json").read_text())
    assert meta["forecast_layout"]["window_norm"] == "last"
    model, info = load_run_model(run)
    task, cfg = info["task"], info["config"]
    assert task.window_norm == "last"
    x = torch.randn(5, 1, 24, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        by_hand = model(x - x[:, :, -1:]).reshape(5, 1, 3) + x[:, :, -1:]  # the network sees x minus its last step
        torch.testing.assert_close(task.shaped(task.forward(model, x)), by_hand)
        # equivariance: a window shifted by c is forecast shifted by c
        torch.testing.assert_close(task.forward(model, x + 7.5), task.forward(model, x) + 7.5, rtol=0, atol=1e-4)
    # cnnkit eval's MAE and MASE, recomputed from the raw values with the by-hand normalisation
    bundle = load_data(cfg.data, task=cfg.task)
    mean, std = bundle.extra["scale"]["mean"][0], bundle.extra["scale"]["std"][0]
    train_steps, val = bundle.extra["train_steps"], bundle.val
    errors = []
    for i in range(len(val)):
        steps = list(val.target_steps(i))
        window = values[steps[0] - 24:steps[0]]
        xw = torch.tensor((window - window[-1]) / std, dtype=torch.float32)[None, None]
        with torch.no_grad():
            f = model(xw).reshape(3).double().numpy() * std + window[-1]
        errors.append(np.abs(f - values[steps]))
    scale = np.abs(values[SEASON:train_steps] - values[:train_steps - SEASON]).mean()
    capsys.readouterr()
    assert main(["eval", str(run), "--format", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["mae"] == pytest.approx(np.mean(errors), rel=1e-4)
    assert out["mase"] == pytest.approx(np.mean(errors) / scale, rel=1e-4)
    assert mean != 0  # (the global scale's mean cancels: x - last is the same in any level)


def test_window_norm_predict_of_a_shifted_series_is_shifted(normed_forecaster, forecaster, capsys, tmp_path):
    """The oracle: with window_norm=last, a series 1000 higher (far outside the training range) is
    forecast exactly 1000 higher, backtest included; without it (the plain run) it is not."""
    _, run, values, csv = normed_forecaster
    shifted = write_series(tmp_path / "shifted.csv", values + 1000.0)

    def predict(r: Path, path: Path) -> dict:
        capsys.readouterr()
        assert main(["predict", str(r), str(path), "--format", "json"]) == 0
        return json.loads(capsys.readouterr().out)[0]

    base, moved = predict(run, csv), predict(run, shifted)
    np.testing.assert_allclose(np.asarray(moved["forecast"]["y"]) - base["forecast"]["y"], 1000.0, atol=2e-3)
    np.testing.assert_allclose(np.asarray(moved["backtest"]["y"]["forecast"]) - base["backtest"]["y"]["forecast"],
                               1000.0, atol=2e-3)
    plain_run = forecaster[1]
    plain, plain_moved = predict(plain_run, csv), predict(plain_run, shifted)
    assert np.abs(np.asarray(plain_moved["forecast"]["y"]) - plain["forecast"]["y"] - 1000.0).max() > 10


@pytest.mark.parametrize("window_norm", ["last", pytest.param("mean", marks=pytest.mark.slow)])
def test_window_norm_follows_a_trend_out_of_the_training_range(tmp_path, window_norm):
    """A pure linear trend: validation levels lie above everything the training part held. Windows
    normalised by their last value (or mean) are all alike, so the network learns one mapping and
    extrapolates; with global scaling alone it cannot reach the new levels."""
    values = 5.0 + 2.0 * np.arange(100)
    csv = write_series(tmp_path / "trend.csv", values)
    normed = json.loads((train_forecaster(tmp_path, csv, window_norm, epochs=15, lookback=12, batch_size=32)
                         / "final.json").read_text())
    plain = json.loads((train_forecaster(tmp_path, csv, "none", epochs=15, lookback=12, batch_size=32)
                        / "final.json").read_text())
    # MASE's scale is |y[t] - y[t-12]| = 24; the naive forecast's error is 2, 4, 6: MASE 1/6
    assert normed["val_naive_mase"] == pytest.approx(4 / 24)
    assert normed["val_mase"] < 0.2 * normed["val_naive_mase"]
    assert plain["val_mase"] > normed["val_naive_mase"]
