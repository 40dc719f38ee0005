"""``cnnkit lr-find``: the learning-rate range test (Smith, 2017, "Cyclical learning rates", section 3.3).

Train the config's model for up to ``steps`` mini-batches while the learning
rate grows exponentially from ``start`` to ``end``
(``lr_i = start * (end / start) ** (i / (steps - 1))``), recording the loss of
each batch. The curve is smoothed with a bias-corrected exponential moving
average (``beta = 1 - 10 / steps``, i.e. about a tenth of the sweep, at most
fastai's 0.98: a fixed 0.98 lags a 100-step sweep by tens of steps), and the
test stops early once the smoothed loss exceeds 4x its lowest value (or turns
non-finite).

The suggested rate is the **steepest descent** of the smoothed loss: the rate
where d(loss)/d(log10 lr), taken over a window of a twentieth of the curve on
either side, is most negative, searched between the first tenth of the curve
and the minimum.
The rate at the minimum divided by 10 (fastai's older rule) is printed too.
When the curve is too short to take a slope, the suggestion falls back to
min/10 and says so.

Nothing is saved but the plot: the model is built fresh (from
``model.pretrained``/``model.weights`` when set) and thrown away, and no run
folder is touched.

Example::

    result = lr_find(load_config("configs/lenet5_mnist5k.yaml"), start=1e-6, end=1.0, steps=80)
    result.suggestion, result.method     # e.g. 0.0032, 'steepest'
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from cnnkit.config import Config
from cnnkit.errors import UserError


@dataclass
class LRFindResult:
    lrs: list[float]
    losses: list[float]             # the raw loss of each batch
    smoothed: list[float]           # bias-corrected exponential moving average
    suggestion: float
    method: str                     # "steepest" or "min/10"
    min_lr: float                   # the rate at the smallest smoothed loss
    stopped: str                    # why the sweep ended
    start: float = 0.0
    end: float = 0.0
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"suggestion": self.suggestion, "method": self.method, "min_lr": self.min_lr,
                "min_lr_div_10": self.min_lr / 10, "steps": len(self.lrs), "start": self.start, "end": self.end,
                "stopped": self.stopped, "lrs": self.lrs, "losses": self.losses, "smoothed": self.smoothed}


def smooth(losses: list[float], beta: float = 0.98) -> list[float]:
    """Bias-corrected exponential moving average: ``avg_i / (1 - beta ** (i + 1))``."""
    out, avg = [], 0.0
    for i, v in enumerate(losses):
        avg = beta * avg + (1 - beta) * v
        out.append(avg / (1 - beta ** (i + 1)))
    return out


def suggest(lrs: list[float], smoothed: list[float]) -> tuple[float, str, float]:
    """(suggested lr, method, lr at the minimum).

    ``steepest``: the most negative slope of the smoothed loss against log10(lr),
    each slope taken over a window of about a twentieth of the curve on either
    side (so one noisy batch cannot make it), between the first tenth of the
    curve and the minimum. ``min/10`` when that stretch is too short.
    """
    lr = np.asarray(lrs, dtype=np.float64)
    sm = np.asarray(smoothed, dtype=np.float64)
    k = int(np.nanargmin(sm))
    min_lr = float(lr[k])
    n = len(sm)
    w = max(1, n // 20)
    lo = max(n // 10, w)
    hi = k - w  # centres whose window ends at or before the minimum
    if hi - lo >= 1:
        x = np.log10(lr)
        centres = np.arange(lo, hi + 1)
        slopes = (sm[centres + w] - sm[centres - w]) / (x[centres + w] - x[centres - w])
        return float(lr[centres[int(np.argmin(slopes))]]), "steepest", min_lr
    return min_lr / 10, "min/10", min_lr


def default_beta(steps: int) -> float:
    """Smoothing over about a tenth of the sweep (0.9 for 100 steps), at most fastai's 0.98."""
    return min(0.98, max(0.0, 1.0 - 10.0 / steps))


def lr_find(cfg: Config, *, start: float = 1e-7, end: float = 10.0, steps: int = 100, beta: float | None = None,
            diverge: float = 4.0, log: Callable[[str], None] | None = None) -> LRFindResult:
    """Run the range test on ``cfg``'s data, model, optimiser and loss."""
    from cnnkit.models.weights import load_weights
    from cnnkit.nn.runtime import autocast, resolve_device, seed_everything
    from cnnkit.train.setup import (backward_and_step, build_model, build_optimizer, load_task_data,
                                    make_loaders, penalty)

    if not (start > 0 and end > start):
        raise UserError(f"--start and --end must satisfy 0 < start < end, got start={start:g} end={end:g}")
    if steps < 5:
        raise UserError(f"--steps must be at least 5, got {steps}")
    if cfg.train.engine != "torch":
        raise UserError("lr-find runs on the torch engine; remove train.engine=reference")
    say = log or (lambda s: print(s, file=sys.stderr))
    beta = default_beta(steps) if beta is None else beta
    seed_everything(cfg.train.seed, cfg.train.deterministic)
    device = resolve_device(cfg.train.device)
    task, bundle, shape = load_task_data(cfg)  # with the normalisation pretrained weights expect
    if cfg.model.backbone_weights is not None:  # a detector's backbone from a classification run
        model = build_model(cfg, shape, bundle.num_classes)
    else:
        model = build_model(cfg, shape, bundle.num_classes, with_weights=False)
        load_weights(model, cfg.model, log=lambda s: say(s))
    model.to(device).train()
    loader, _ = make_loaders(cfg, bundle, task, device)
    if cfg.train.channels_last:
        model = model.to(memory_format=torch.channels_last)
    loss_fn = task.make_loss()
    optimizer = build_optimizer(cfg, [{"params": [p for p in model.parameters() if p.requires_grad]}])
    scaler = torch.amp.GradScaler(device.type) if cfg.train.precision == "fp16" else None
    l1, l2, clip = cfg.regularization.l1, cfg.regularization.l2, cfg.regularization.grad_clip

    lrs: list[float] = []
    losses: list[float] = []
    smoothed: list[float] = []
    avg, best, stopped = 0.0, math.inf, f"reached --end {end:g}"
    epoch = 1
    loader.set_epoch(epoch)
    batches = iter(loader)
    ratio = end / start
    for i in range(steps):
        lr = start * ratio ** (i / (steps - 1))
        for g in optimizer.param_groups:
            g["lr"] = lr
        try:
            x, y = next(batches)
        except StopIteration:
            epoch += 1
            loader.set_epoch(epoch)
            batches = iter(loader)
            x, y = next(batches)
        with autocast(device, cfg.train.precision):
            _, loss = task.training_step(model, x, y, loss_fn)
            if l1 or l2:
                loss = loss + penalty(model, l1, l2)
        optimizer.zero_grad(set_to_none=True)
        backward_and_step(loss, optimizer, model, scaler=scaler, clip=clip)
        value = float(loss.detach())
        if not math.isfinite(value):
            stopped = f"the loss became {value} at lr {lr:.3g}"
            break
        avg = beta * avg + (1 - beta) * value
        s = avg / (1 - beta ** (i + 1))
        lrs.append(lr)
        losses.append(value)
        smoothed.append(s)
        best = min(best, s)
        if i > 0 and s > diverge * best:
            stopped = f"smoothed loss above {diverge:g}x its minimum at lr {lr:.3g}"
            break
    if len(lrs) < 2:
        raise UserError(f"the loss diverged at once (at lr {start:g}); lower --start")
    suggestion, method, min_lr = suggest(lrs, smoothed)
    result = LRFindResult(lrs, losses, smoothed, suggestion, method, min_lr, stopped, start, end)
    if min_lr / 10 < start:
        result.notes.append(f"the minimum is at the start of the sweep; min/10 ({min_lr / 10:.3g}) is below "
                            f"--start, so try a lower --start")
    return result


def plot(result: LRFindResult, path: str, title: str = "learning-rate range test") -> None:
    """Loss against learning rate (log x): the raw and smoothed losses, the suggestion and min/10 marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=100)
    ax.plot(result.lrs, result.losses, color="0.75", lw=0.8, label="loss per batch")
    ax.plot(result.lrs, result.smoothed, color="C0", lw=1.8, label="smoothed loss")
    idx = int(np.argmin(np.abs(np.log(result.lrs) - math.log(result.suggestion))))
    ax.scatter([result.lrs[idx]], [result.smoothed[idx]], color="C3", zorder=3,
               label=f"suggested {result.suggestion:.2g} ({result.method})")
    ax.axvline(result.min_lr / 10, color="C2", ls="--", lw=1, label=f"min/10 {result.min_lr / 10:.2g}")
    ax.set_xscale("log")
    lo = min(min(result.smoothed), min(result.losses))
    hi = max(result.smoothed[0], min(result.smoothed) * 2.0)
    ax.set_ylim(lo - 0.05 * abs(lo), hi * 1.15)
    ax.set_xlabel("learning rate (log scale)")
    ax.set_ylabel("training loss")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    try:
        fig.savefig(path)
    except OSError as e:
        raise UserError(f"cannot write the plot {path!r}: {e}") from None
    finally:
        plt.close(fig)
