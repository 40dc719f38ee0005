"""Callbacks: small classes reacting to named events of the training loop
(Keras' callbacks, fastai's event list). All event names are declared once in
:data:`EVENTS`; a callback implements the ones it needs. Logging the metrics,
writing checkpoints and restoring the best weights are callbacks too.

Stopping is a flag: a callback sets ``trainer.should_stop = True``.

The trainer (either engine) offers callbacks: ``epochs``, ``steps_per_epoch``, ``should_stop``,
``model``, ``task``, ``run`` (the RunFolder; None on DDP ranks other than 0), ``is_main``,
``log(text)``, ``running_metrics()``, ``checkpoint_state(full)`` and ``load_weights(state)``.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

from cnnkit.runs import RunFolder

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
    return "max" if any(k in monitor for k in ("acc", "map", "iou", "dice")) else "min"


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
                trainer.log(f"early stopping at epoch {epoch}: {self.monitor} has not improved "
                            f"{'on' if self.min_delta == 0 else f'by more than {self.min_delta:g} on'} its best "
                            f"({self.best:.4f}) for {self.patience} epochs")

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "wait": self.wait, "stopped_epoch": self.stopped_epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.wait, self.stopped_epoch = state["best"], state["wait"], state["stopped_epoch"]


class ProgressBar(Callback):
    """A tqdm bar per epoch with the running loss and metrics; off when not on a terminal."""

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
                running = trainer.running_metrics()
                self.bar.set_postfix({k: f"{v:.4f}" for k, v in running.items()}, refresh=False)

    def on_epoch_end(self, trainer: Any, epoch: int, metrics: dict[str, float]) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class MetricsLogger(Callback):
    """Each epoch: one line on the console and one line in the run's metrics.jsonl (rank 0 only)."""

    def on_epoch_end(self, trainer: Any, epoch: int, metrics: dict[str, Any]) -> None:
        trainer.log(f"epoch {epoch:>3}/{trainer.epochs}  {trainer.task.epoch_line(metrics)}  lr {metrics['lr']:.3g}  "
                    f"{metrics['epoch_time_s']:.2f}s")
        if trainer.run is not None:
            trainer.run.append_metrics(metrics)


class Checkpointer(Callback):
    """Writes ``best.pt`` when ``monitor`` improves and ``last.pt`` (everything a resume needs) every
    ``every`` epochs, at the last one and when training stops; at the end, puts the best weights back
    into the model unless ``keep_last`` (early stopping with ``restore_best: false``).

    ``best_epoch`` / ``best_value`` are what ``final.json`` reports; ``restored`` says whether the
    final weights are the best epoch's rather than the last's.
    """

    def __init__(self, monitor: str, mode: str, every: int = 1, keep_last: bool = False) -> None:
        self.monitor, self.mode, self.every, self.keep_last = monitor, monitor_mode(monitor, mode), every, keep_last
        self.on_train_begin(None)

    def on_train_begin(self, trainer: Any) -> None:
        self.best_value = math.inf if self.mode == "min" else -math.inf
        self.best_epoch = 0
        self.restored = False

    def on_epoch_end(self, trainer: Any, epoch: int, metrics: dict[str, Any]) -> None:
        value = metrics[self.monitor]
        improved = value is not None and (value < self.best_value if self.mode == "min" else value > self.best_value)
        if improved:
            self.best_value, self.best_epoch = value, epoch
        save_last = epoch % self.every == 0 or epoch == trainer.epochs or trainer.should_stop
        state = trainer.checkpoint_state(full=save_last)  # collective under DDP: every rank calls it
        run: RunFolder | None = trainer.run
        if run is None:
            return
        light = {k: state[k] for k in ("model", "epoch", "config", "meta", "metrics", "engine", "task")}
        if "eval_model" in state:  # the EMA's weights are what best.pt keeps
            light["model"] = state["eval_model"]
        if improved:
            run.save_checkpoint("best", light)
        if save_last:
            full = {k: v for k, v in state.items() if k != "eval_model"}
            run.save_checkpoint("last", {**full, "best_value": self.best_value, "best_epoch": self.best_epoch})

    def on_train_end(self, trainer: Any) -> None:
        last_epoch = trainer.epoch
        if self.best_epoch and self.best_epoch != last_epoch and not self.keep_last:
            trainer.load_weights(RunFolder(trainer.run_dir).load_checkpoint("best")["model"])
            self.restored = True

    @property
    def checkpoint_name(self) -> str:
        """The checkpoint that holds the run's result: best.pt, or last.pt when that is the same epoch."""
        return "best.pt" if self.restored else "last.pt"

    def state_dict(self) -> dict[str, Any]:
        return {"best_value": self.best_value, "best_epoch": self.best_epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best_value, self.best_epoch = state["best_value"], state["best_epoch"]


class TensorBoardLogger(Callback):
    """``train.log: [tensorboard]``: each epoch's numbers as TensorBoard scalars (``train/loss``,
    ``val/accuracy``, ``lr``, ...) in ``RUN/tensorboard``, the model's graph where torch can trace it, and
    for image models images per epoch: the first convolution's filters (``filters/...``) and one held-out
    image's feature maps after the first convolutions (``feature_maps/...``), to watch them form.
    Only the main process writes. A resumed run adds a new event file to the same folder."""

    #: Convolutions whose feature maps are logged, and channels shown of each.
    MAP_LAYERS, MAP_CHANNELS = 3, 16

    def __init__(self) -> None:
        self.writer = None
        self.probe = None  # one held-out image (normalised), the same every epoch
        self.images = True

    def on_train_begin(self, trainer: Any) -> None:
        self._open(trainer)

    def _open(self, trainer: Any) -> None:
        if self.writer is not None or not getattr(trainer, "is_main", True) or trainer.run_dir is None:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # torch's writer needs the tensorboard package
            from cnnkit.errors import UserError

            raise UserError("train.log: [tensorboard] needs the tensorboard package: pip install "
                            "'cnnkit[tensorboard]' (or remove tensorboard from train.log)") from None
        self.writer = SummaryWriter(log_dir=str(Path(trainer.run_dir) / "tensorboard"))
        self._graph(trainer)

    def _graph(self, trainer: Any) -> None:
        import warnings

        import torch

        meta = getattr(trainer, "meta", None)
        shape = meta.get("input_shape") if isinstance(meta, dict) else None
        model = getattr(trainer, "model", None)
        if not isinstance(model, torch.nn.Module) or not shape or getattr(getattr(trainer, "task", None), "collate",
                                                                            None) is not None:
            return  # images only: other inputs (tokens, clips, boxes) need more than a zero tensor
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
        was_training = model.training
        model.eval()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self.writer.add_graph(model, torch.zeros(1, *shape, device=device))
        except Exception:  # noqa: BLE001  (a model torch's tracer cannot follow: scalars only)
            pass
        finally:
            model.train(was_training)

    def on_epoch_end(self, trainer: Any, epoch: int, metrics: dict[str, Any]) -> None:
        self._open(trainer)  # a resumed run skips on_train_begin
        if self.writer is None:
            return
        for key, value in metrics.items():
            if key == "epoch" or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            name = key.replace("train_", "train/", 1).replace("val_", "val/", 1)
            self.writer.add_scalar(name, value, epoch)
        if self.images:
            try:
                self._images(trainer, epoch)
            except Exception as e:  # noqa: BLE001 - pictures are a bonus: never stop a run for them
                self.images = False
                print(f"warning: TensorBoard images turned off ({type(e).__name__}: {e}); scalars go on",
                      file=sys.stderr)
        self.writer.flush()

    def _images(self, trainer: Any, epoch: int) -> None:
        """The first convolution's filters and one image's feature maps, each a grid (image models only)."""
        import torch
        from torchvision.utils import make_grid

        model = getattr(trainer, "model", None)
        if not isinstance(model, torch.nn.Module) or getattr(getattr(trainer, "task", None), "collate", None):
            return
        convs = [(n, m) for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)]
        if not convs:
            return
        name, first = convs[0]
        w = first.weight.detach().float().cpu()
        w = w if w.shape[1] == 3 else w.mean(1, keepdim=True)  # colour filters as RGB, others as grey
        self.writer.add_image(f"filters/{name}", make_grid(_stretch(w), nrow=8, padding=1, pad_value=1.0), epoch)
        if self.probe is None:
            try:
                x = next(iter(trainer.val_loader))[0]
            except (StopIteration, AttributeError, TypeError, IndexError):
                return
            if not isinstance(x, torch.Tensor) or x.dim() != 4:
                return
            self.probe = x[:1].detach().clone()
        maps: list[tuple[str, torch.Tensor]] = []
        hooks = [m.register_forward_hook(lambda _m, _i, out, n=n: maps.append((n, out.detach())))
                 for n, m in convs[: self.MAP_LAYERS]]
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                model(self.probe.to(next(model.parameters()).device))
        finally:
            model.train(was_training)
            for h in hooks:
                h.remove()
        for n, out in maps:
            if out.dim() == 4:
                grid = make_grid(_stretch(out[0, : self.MAP_CHANNELS, None].float().cpu()), nrow=8, padding=1,
                                 pad_value=1.0)
                self.writer.add_image(f"feature_maps/{n}", grid, epoch)

    def on_train_end(self, trainer: Any) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def _stretch(t: Any) -> Any:
    """Each item of ``t`` (N, C, H, W) stretched to [0, 1] on its own range: a picture of its pattern."""
    flat = t.flatten(1)
    lo, hi = flat.amin(1).view(-1, 1, 1, 1), flat.amax(1).view(-1, 1, 1, 1)
    return (t - lo) / (hi - lo).clamp_min(1e-12)


def standard_callbacks(cfg, task, *, progress: bool | None, extra: list[Callback] | None = None
                       ) -> tuple[list[Callback], EarlyStopping | None, Checkpointer]:
    """The callbacks every engine runs for a config, in order: a progress bar, early stopping if
    configured, ``extra``, the metrics log and the checkpointer (which watches early stopping's
    metric, else the task's best metric)."""
    callbacks: list[Callback] = [ProgressBar(enabled=progress)]
    early = None
    if cfg.regularization.early_stopping is not None:
        es = cfg.regularization.early_stopping
        early = EarlyStopping(es.monitor, es.mode, es.patience, es.min_delta, es.restore_best)
        callbacks.append(early)
    monitor, mode = (early.monitor, early.mode) if early else (task.best_metric, task.best_mode)
    checkpointer = Checkpointer(monitor, mode, cfg.train.checkpoint_every,
                                keep_last=early is not None and not early.restore_best)
    if "tensorboard" in getattr(cfg.train, "log", ()):
        callbacks.append(TensorBoardLogger())
    callbacks += [*(extra or []), MetricsLogger(), checkpointer]
    return callbacks, early, checkpointer
