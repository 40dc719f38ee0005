"""Callbacks: small classes reacting to named events of the training loop
(Keras' callbacks, fastai's event list). All event names are declared once in
:data:`EVENTS`; a callback implements the ones it needs.

Stopping is a flag: a callback sets ``trainer.should_stop = True``.
"""

from __future__ import annotations

import math
import sys
from typing import Any

EVENTS = ("on_train_begin", "on_epoch_begin", "on_batch_end", "on_epoch_end", "on_train_end")


class Callback:
    """Base class; ``state_dict``/``load_state_dict`` let a resumed run continue its state."""

    def on_train_begin(self, trainer: Any) -> None: ...
    def on_epoch_begin(self, trainer: Any, epoch: int) -> None: ...
    def on_batch_end(self, trainer: Any, step: int) -> None: ...
    def on_epoch_end(self, trainer: Any, epoch: int, metrics: dict[str, float]) -> None: ...
    def on_train_end(self, trainer: Any) -> None: ...

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def monitor_mode(monitor: str, mode: str) -> str:
    if mode != "auto":
        return mode
    return "max" if "acc" in monitor else "min"


class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved by ``min_delta`` for ``patience`` epochs.

    With ``restore_best`` the trainer ends with the weights of the best epoch.
    """

    def __init__(self, monitor: str = "val_loss", mode: str = "auto", patience: int = 5, min_delta: float = 0.0,
                 restore_best: bool = True) -> None:
        self.monitor, self.mode = monitor, monitor_mode(monitor, mode)
        self.patience, self.min_delta, self.restore_best = patience, min_delta, restore_best
        self.on_train_begin(None)

    def on_train_begin(self, trainer: Any) -> None:
        self.best = math.inf if self.mode == "min" else -math.inf
        self.wait = 0
        self.stopped_epoch = 0

    def improved(self, value: float) -> bool:
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def on_epoch_end(self, trainer: Any, epoch: int, metrics: dict[str, float]) -> None:
        if self.monitor not in metrics:
            raise KeyError(f"early stopping monitors {self.monitor!r}, which is not among {sorted(metrics)}")
        value = metrics[self.monitor]
        if self.improved(value):
            self.best, self.wait = value, 0
        else:
            self.wait += 1
            if self.wait >= self.patience:
                self.stopped_epoch = epoch
                trainer.should_stop = True

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "wait": self.wait, "stopped_epoch": self.stopped_epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.wait, self.stopped_epoch = state["best"], state["wait"], state["stopped_epoch"]


class ProgressBar(Callback):
    """A tqdm bar per epoch with the running loss and accuracy; off when not on a terminal."""

    def __init__(self, enabled: bool | None = None, every: int = 10) -> None:
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self.every = every
        self.bar = None

    def on_epoch_begin(self, trainer: Any, epoch: int) -> None:
        if self.enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=trainer.steps_per_epoch, desc=f"epoch {epoch}/{trainer.epochs}",
                            leave=False, dynamic_ncols=True)

    def on_batch_end(self, trainer: Any, step: int) -> None:
        if self.bar is not None:
            self.bar.update(1)
            if self.bar.n % self.every == 0:
                loss, acc = trainer.running_metrics()
                self.bar.set_postfix(loss=f"{loss:.4f}", acc=f"{acc:.4f}", refresh=False)

    def on_epoch_end(self, trainer: Any, epoch: int, metrics: dict[str, float]) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def standard_callbacks(cfg, *, progress: bool | None, extra: list[Callback] | None = None
                       ) -> tuple[list[Callback], EarlyStopping | None, str, str]:
    """The callbacks every engine runs for a config: a progress bar, early stopping if configured,
    then ``extra``. Returns them with the early stopper and the (metric, mode) that picks best.pt."""
    callbacks: list[Callback] = [ProgressBar(enabled=progress)]
    early = None
    if cfg.regularization.early_stopping is not None:
        es = cfg.regularization.early_stopping
        early = EarlyStopping(es.monitor, es.mode, es.patience, es.min_delta, es.restore_best)
        callbacks.append(early)
    callbacks += extra or []
    return callbacks, early, (early.monitor if early else "val_accuracy"), (early.mode if early else "max")
