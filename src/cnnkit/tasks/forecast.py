"""Forecasting (the course's VI.D): from a window of ``lookback`` steps, predict the next ``horizon``
values of the target columns.

A batch is ``(x float32 (N, C, lookback), y float32 (N, T, horizon))`` in the units the training
part of the series was scaled to (:mod:`cnnkit.data.timeseries.forecast`; windows are cut in time
order and never shuffled across the split). The network is any time-series model with ``T *
horizon`` outputs: its "classes" are the outputs' names (``target+step``), so every tool that builds
a model from a run (eval, export, summary) builds a forecaster unchanged, and this task reshapes the
output to ``(N, T, horizon)``.

Metrics are in the series' own units: MAE, RMSE, sMAPE (in %, ``200 |y - f| / (|y| + |f|)``, 0 when
both are 0) and MASE (MAE divided by the in-sample MAE of the one-step, or seasonal, naive forecast
on the training part; Hyndman & Koehler 2006), each also for two baselines on the same windows:
*naive* (the last value seen, held) and *seasonal naive* (the value one season before, with
``data.season``), so every figure comes with its yardstick: ``val_mase`` below ``val_naive_mase``
is a model better than doing nothing clever.

The run's result is the epoch of the lowest ``val_mae`` (``best_metric``): ``best.pt`` is put back at
the end, so the ``val_*`` figures in ``final.json`` (and ``cnnkit eval``'s) are that epoch's, measured
on the very windows that chose it; ``last_val_*`` are the last epoch's. For a figure no choice has
seen, train with ``train.eval_every=0`` (the validation windows are scored once, after the last epoch,
and the last weights are the result), as ``benchmarks/forecast.py`` does.

With ``data.window_norm`` (``last`` or ``mean``, saved in the run's layout; runs without it read
``none``) :meth:`ForecastTask.forward` subtracts each input window's offset
(:func:`~cnnkit.data.timeseries.forecast.window_offset`) before the network and adds the target's back
to its output, in training, evaluation, ``predict`` and its backtest alike.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MetricCollection

from cnnkit.data.timeseries.forecast import ForecastLayout, read_forecast, window_offset
from cnnkit.errors import UserError
from cnnkit.tasks.base import Task, fmt_metric, register_task
from cnnkit.tasks.metrics import Ratio
from cnnkit.tasks.timeseries import refuse_image_augment

MEASURES = ("mae", "rmse", "smape", "mase")
BASELINES = ("naive", "snaive")
LOSSES = ("mse", "mae", "huber")


def output_names(targets: Sequence[str], horizon: int) -> list[str]:
    """The forecaster's outputs, target-major: ``['y+1', 'y+2', ..., 'z+1', ...]``."""
    return [f"{t}+{h}" for t in targets for h in range(1, horizon + 1)]


# -- forecasts and errors, in NumPy (also used by the benchmark)

def naive_forecast(history: np.ndarray, horizon: int) -> np.ndarray:
    """``history (..., L)`` -> the last value held for ``horizon`` steps ``(..., horizon)``."""
    return np.repeat(history[..., -1:], horizon, axis=-1)


def seasonal_naive_forecast(history: np.ndarray, horizon: int, season: int) -> np.ndarray:
    """``history (..., L)`` -> each step's value one season earlier (``L >= season``): step h (1-based)
    repeats ``history[L - season + (h - 1) % season]``."""
    if history.shape[-1] < season:
        raise UserError(f"the seasonal-naive forecast needs a lookback of at least one season ({season} steps), "
                        f"got {history.shape[-1]}; raise data.lookback or lower data.season")
    idx = history.shape[-1] - season + (np.arange(horizon) % season)
    return history[..., idx]


def mase_scale(train_values: np.ndarray, season: int | None = None) -> np.ndarray:
    """Per column, the mean absolute difference of the training series at lag ``season`` (1 without
    one): the in-sample error of the (seasonal) naive forecast, MASE's denominator. ``train_values``
    is (T, n) or (n,)."""
    v = np.atleast_2d(np.asarray(train_values, dtype=np.float64))
    m = season or 1
    if v.shape[-1] <= m:
        raise UserError(f"MASE's scale needs more than {m} training steps, got {v.shape[-1]}")
    d = np.abs(v[:, m:] - v[:, :-m])
    scale = np.nanmean(d, axis=1)
    return np.where(scale > 0, scale, 1.0)


def error_sums(y: np.ndarray, f: np.ndarray, scale: np.ndarray) -> dict[str, float]:
    """Sums over every value of ``y`` and ``f`` (N, T, H) of the four measures' terms, and the count."""
    e = f - y
    denom = np.abs(y) + np.abs(f)
    smape = np.where(denom > 0, 200.0 * np.abs(e) / np.where(denom > 0, denom, 1.0), 0.0)
    return {"abs": float(np.abs(e).sum()), "sq": float((e ** 2).sum()), "smape": float(smape.sum()),
            "scaled": float((np.abs(e) / scale[None, :, None]).sum()), "n": float(e.size)}


#: The sums of :func:`error_sums` each forecaster (the model, each baseline) accumulates over its values.
TERMS = ("abs", "sq", "smape", "scaled")


def measures(sums: dict[str, float]) -> dict[str, float]:
    """MAE, RMSE, sMAPE and MASE from the sums of :data:`TERMS` over ``sums["n"]`` forecast values."""
    n = max(sums["n"], 1.0)
    return {"mae": sums["abs"] / n, "rmse": math.sqrt(sums["sq"] / n), "smape": sums["smape"] / n,
            "mase": sums["scaled"] / n}


@register_task("forecast", "the next values of a series (CSV columns): 1-D CNNs, TCN, CNN-LSTM; MAE, RMSE, sMAPE, "
                           "MASE against naive baselines")
class ForecastTask(Task):
    best_metric = "val_mae"
    best_mode = "min"
    metric_names = MEASURES + tuple(f"{b}_{m}" for b in BASELINES for m in MEASURES)
    unit = "windows"

    def __init__(self, cfg, classes: list[str], input_shape: tuple[int, ...] | None = None) -> None:
        super().__init__(cfg, classes, input_shape)
        refuse_image_augment(cfg, "forecast")
        if cfg.augment.series_active():
            raise UserError("task forecast takes no augmentation (jitter or warping would change the future the "
                            "model must predict); set augment.jitter / scaling / window_slice / window_warp to 0")
        loss = cfg.train.loss
        if loss not in LOSSES:
            raise UserError(f"train.loss={loss} is a classification/segmentation loss; task forecast takes "
                            f"{', '.join(LOSSES)} (default mse)")
        self.loss_name = loss
        if cfg.train.eval_tta != "none":
            raise UserError(f"train.eval_tta={cfg.train.eval_tta}: task forecast has no test-time augmentation")
        self.layout: dict[str, Any] | None = None
        self.collate = _stack_windows

    def attach(self, extra: dict[str, Any]) -> None:
        layout = (extra or {}).get("forecast_layout")
        if layout is not None:
            self.layout = dict(layout)

    # -- shapes and units

    @property
    def targets(self) -> list[str]:
        return list(self._need("targets"))

    @property
    def horizon(self) -> int:
        return int(self._need("horizon"))

    def _need(self, key: str) -> Any:
        if self.layout is None or key not in self.layout:
            raise UserError("this run has no forecast layout (it was not trained with task forecast)")
        return self.layout[key]

    @property
    def window_norm(self) -> str:
        """The layout's ``data.window_norm`` (``none`` before there was one, or without a layout)."""
        return str((self.layout or {}).get("window_norm", "none"))

    def forward(self, model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
        """The network on windows ``(N, C, L)`` -> ``(N, T * horizon)`` (or the network's own shape), with
        ``window_norm``: ``model(x - offset)`` plus the targets' offsets."""
        how = self.window_norm
        if how == "none":
            return model(inputs)
        offset = window_offset(inputs, how)  # (N, C, 1)
        out = model(inputs - offset)
        tidx = [list(self._need("columns")).index(t) for t in self.targets]
        return (self.shaped(out) + offset[:, tidx].to(out.dtype)).reshape(out.shape)

    def shaped(self, out: torch.Tensor) -> torch.Tensor:
        """The network's ``(N, T * horizon)`` as ``(N, T, horizon)``."""
        return out.reshape(len(out), len(self.targets), self.horizon)

    def _target_stats(self) -> tuple[np.ndarray, np.ndarray]:
        cols = list(self._need("columns"))
        mean, std = np.asarray(self._need("mean"), np.float64), np.asarray(self._need("std"), np.float64)
        idx = [cols.index(t) for t in self.targets]
        return mean[idx], std[idx]

    def unscale(self, v: np.ndarray) -> np.ndarray:
        """Scaled target values (N, T, H) back to the series' units."""
        mean, std = self._target_stats()
        return v * std[None, :, None] + mean[None, :, None]

    def history(self, x: np.ndarray) -> np.ndarray:
        """The target columns' part of input windows (N, C, L), in the series' units (N, T, L)."""
        cols = list(self._need("columns"))
        mean, std = np.asarray(self._need("mean"), np.float64), np.asarray(self._need("std"), np.float64)
        idx = [cols.index(t) for t in self.targets]
        return x[:, idx, :] * std[idx][None, :, None] + mean[idx][None, :, None]

    # -- training

    def make_loss(self) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        fn = {"mse": F.mse_loss, "mae": F.l1_loss, "huber": F.smooth_l1_loss}[self.loss_name]
        return lambda out, y: fn(self.shaped(out), y)

    # -- evaluation

    def _forecasters(self) -> tuple[str, ...]:
        """The model and the baselines this series has (seasonal naive only with a season)."""
        season = self.layout.get("season") if self.layout else None
        return ("model", "naive") + (("snaive",) if season else ())

    def metrics(self) -> MetricCollection:
        """The loss, and each forecaster's mean of each error term (torchmetrics: summed over DDP ranks)."""
        return MetricCollection({"loss": Ratio(), **{f"{name}_{t}": Ratio() for name in self._forecasters()
                                                     for t in TERMS}})

    def update_metrics(self, metrics: MetricCollection, outputs: torch.Tensor, targets: torch.Tensor,
                       loss: torch.Tensor, inputs: Any = None) -> None:
        """The batch's errors in the series' units: the model's, and those of the naive forecasts made from
        its input windows (``inputs``)."""
        n = len(targets)
        metrics["loss"].update(loss.detach().double() * n, n)
        scale = np.asarray(self._need("mase_scale"), np.float64)
        truth = self.unscale(targets.double().cpu().numpy())
        hist = self.history(inputs.double().cpu().numpy())
        forecasts = {"model": self.unscale(self.shaped(outputs).double().cpu().numpy()),
                     "naive": naive_forecast(hist, self.horizon)}
        if "snaive" in self._forecasters():
            forecasts["snaive"] = seasonal_naive_forecast(hist, self.horizon, self.layout["season"])
        for name, f in forecasts.items():
            sums = error_sums(truth, f, scale)
            for t in TERMS:
                metrics[f"{name}_{t}"].update(sums[t], sums["n"])

    def evaluate(self, model: nn.Module, loader, device: torch.device, precision: str = "fp32",
                 loss_fn: Callable | None = None) -> dict[str, float]:
        """The shared loop's sums turned into the four measures per forecaster (None where a baseline does
        not apply, or there was nothing to score)."""
        raw = super().evaluate(model, loader, device, precision, loss_fn)
        result: dict[str, Any] = {"loss": raw["loss"], "n": raw["n"]}
        for name in ("model",) + BASELINES:
            prefix = "" if name == "model" else f"{name}_"
            scored = raw["n"] > 0 and f"{name}_abs" in raw
            means = {t: raw[f"{name}_{t}"] for t in TERMS}  # each term's mean: its sum over one value
            values = measures({**means, "n": 1.0}) if scored else dict.fromkeys(MEASURES)
            result.update({prefix + k: v for k, v in values.items()})
        return result

    def eval_report(self, model: nn.Module, loader, device: torch.device) -> dict[str, Any]:
        return {"horizon": self.horizon, "targets": self.targets,
                "season": self.layout.get("season") if self.layout else None}

    def epoch_line(self, m: dict[str, Any]) -> str:
        f = fmt_metric
        return (f"train_loss {f(m.get('train_loss'))}  val_loss {f(m.get('val_loss'))}  val_mae {f(m.get('val_mae'))}"
                f"  val_mase {f(m.get('val_mase'))} (naive {f(m.get('val_naive_mase'))})")

    # -- using a trained model

    @torch.no_grad()
    def forecast(self, model: nn.Module, x: torch.Tensor) -> np.ndarray:
        """Windows (N, C, lookback), scaled -> forecasts (N, T, horizon) in the series' units."""
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
        was_training = model.training
        model.eval()
        out = self.shaped(self.forward(model, x.to(device)).float()).double().cpu().numpy()
        model.train(was_training)
        return self.unscale(out)

    def predict_paths(self, model: nn.Module, paths: Sequence[str], plot: str | None = None, **_: Any) -> list[dict]:
        """``cnnkit predict`` for CSV series: the forecast of the ``horizon`` steps after each file's
        last row; with ``plot`` also the last ``horizon`` known steps forecast from the window before
        them, drawn against their truth."""
        self._need("columns")
        layout = ForecastLayout.from_dict(self.layout)
        lookback, cols = layout.lookback, list(layout.columns)
        cfg = self.cfg.data
        out = []
        for path in paths:
            data = read_forecast(path, cfg.time_column if not str(path).startswith("statsmodels:") else None, cols)
            values = np.asarray(data.values, np.float64)  # (n, C), NaN where missing
            if len(values) < lookback:
                raise UserError(f"{str(path)!r} has {len(values)} rows; the model reads windows of "
                                f"data.lookback={lookback} rows")
            future = self.forecast(model, layout.window(values))[0]
            result: dict[str, Any] = {"file": str(path), "horizon": self.horizon, "last_time": _last(data.times),
                                      "forecast": {t: [float(v) for v in future[i]] for i, t in enumerate(self.targets)}}
            if len(values) >= lookback + self.horizon:
                start = len(values) - self.horizon
                past = self.forecast(model, layout.window(values[:start]))[0]
                truth = values[start:, [cols.index(t) for t in self.targets]].T
                result["backtest"] = {t: {"forecast": [float(v) for v in past[i]], "truth": [float(v) for v in truth[i]],
                                          "mae": float(np.abs(past[i] - truth[i]).mean())}
                                      for i, t in enumerate(self.targets)}
            if plot is not None:
                result["plot"] = str(plot_forecast(values[:, [cols.index(t) for t in self.targets]].T, self.targets,
                                                   future, result.get("backtest"), plot, title=str(path)))
            out.append(result)
        return out


def plot_forecast(history: np.ndarray, targets: Sequence[str], future: np.ndarray, backtest: dict | None,
                  path: str, title: str = "") -> str:
    """One panel per target: the history, the forecast past its end, and (``backtest``) the last known
    steps forecast from the window before them against their truth. Written atomically (PNG, SVG or PDF
    by the suffix)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cnnkit.atomic import figure_path, save_figure

    p = figure_path(path, "--plot")
    n = history.shape[1]
    h = future.shape[1]
    fig, axes = plt.subplots(len(targets), 1, figsize=(9, 2.6 * len(targets)), squeeze=False)
    for i, (ax, t) in enumerate(zip(axes[:, 0], targets)):
        shown = max(0, n - max(4 * h, 60))
        ax.plot(range(shown, n), history[i, shown:], color="0.3", lw=1.2, label="history (truth)")
        ax.plot(range(n, n + h), future[i], color="tab:blue", lw=2, marker="o", ms=3, label="forecast")
        if backtest is not None:
            ax.plot(range(n - h, n), backtest[t]["forecast"], color="tab:orange", lw=2, ls="--", marker="o", ms=3,
                    label=f"forecast of the last {h} known steps (MAE {backtest[t]['mae']:.3g})")
        ax.axvline(n - 0.5, color="0.7", lw=0.8)
        ax.set_ylabel(t)
        ax.legend(loc="upper left", fontsize=8)
    axes[0, 0].set_title(title)
    axes[-1, 0].set_xlabel("step")
    fig.tight_layout()
    save_figure(fig, p)
    plt.close(fig)
    return str(p)


def _last(times: Any) -> Any:
    if times is None or len(times) == 0:
        return None
    v = times[-1]
    return v.item() if hasattr(v, "item") else str(v)


def _stack_windows(items: list[tuple[Any, Any]]) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = zip(*items)
    return (torch.stack([torch.as_tensor(x, dtype=torch.float32) for x in xs]),
            torch.stack([torch.as_tensor(y, dtype=torch.float32) for y in ys]))
