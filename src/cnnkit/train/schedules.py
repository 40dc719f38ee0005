"""Learning-rate schedules as pure functions of progress (fastai's ``sched_*``, nanoGPT's ``get_lr``).

Each maps ``pct`` in [0, 1] (the fraction of training done) to a multiplier of
``optim.lr``; a linear warm-up can be put in front of any of them but
``onecycle``, which rises by itself.

Example::

    f = make_schedule(ScheduleConfig(name="cosine", warmup_epochs=1), epochs=10)
    [round(f(p), 3) for p in (0.0, 0.05, 0.1, 0.55, 1.0)]   # [0.0, 0.5, 1.0, 0.5, 0.0]
"""

from __future__ import annotations

import math
from typing import Callable

from cnnkit.config import ScheduleConfig

Schedule = Callable[[float], float]


def constant(pct: float) -> float:
    return 1.0


def step(pct: float, *, epochs: int, step_size: float, gamma: float) -> float:
    return gamma ** math.floor(pct * epochs / step_size + 1e-9)


def cosine(pct: float, *, min_factor: float = 0.0) -> float:
    return min_factor + (1 - min_factor) * 0.5 * (1 + math.cos(math.pi * min(max(pct, 0.0), 1.0)))


def linear(pct: float, *, min_factor: float = 0.0) -> float:
    return 1.0 - (1.0 - min_factor) * min(max(pct, 0.0), 1.0)


def onecycle(pct: float, *, pct_start: float = 0.25, min_factor: float = 0.0, start_factor: float = 0.04) -> float:
    """Smith's one-cycle: cosine rise from ``start_factor`` to 1, then cosine fall to ``min_factor``."""
    if pct < pct_start:
        p = pct / pct_start
        return start_factor + (1 - start_factor) * 0.5 * (1 - math.cos(math.pi * p))
    p = (pct - pct_start) / (1 - pct_start)
    return cosine(p, min_factor=min_factor)


def with_warmup(f: Schedule, warmup_pct: float) -> Schedule:
    """Linear warm-up from 0 over the first ``warmup_pct``; ``f`` runs on the rest of training."""
    if warmup_pct <= 0:
        return f

    def g(pct: float) -> float:
        if pct < warmup_pct:
            return pct / warmup_pct
        return f((pct - warmup_pct) / (1 - warmup_pct)) if warmup_pct < 1 else 1.0

    return g


def make_schedule(cfg: ScheduleConfig, epochs: int) -> Schedule:
    """The multiplier function for a ``schedule`` config section."""
    name = cfg.name
    if name == "constant":
        base: Schedule = constant
    elif name == "step":
        base = lambda p: step(p, epochs=epochs, step_size=cfg.step_size, gamma=cfg.gamma)  # noqa: E731
    elif name == "cosine":
        base = lambda p: cosine(p, min_factor=cfg.min_factor)  # noqa: E731
    elif name == "linear":
        base = lambda p: linear(p, min_factor=cfg.min_factor)  # noqa: E731
    elif name == "onecycle":
        return lambda p: onecycle(p, pct_start=cfg.pct_start, min_factor=cfg.min_factor)  # rises by itself
    else:  # pragma: no cover - pydantic rejects other names
        raise ValueError(name)
    return with_warmup(base, min(cfg.warmup_epochs / epochs, 1.0))
