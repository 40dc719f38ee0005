"""The :class:`Task` interface and the task registry.

A task owns what differs between the course's applications; the trainer (either
engine), ``eval``, ``predict``, ``tune``, ``finetune`` and ``compress`` only ever
call these methods, so a new application is a new Task, not a new loop.

Names of metrics: a task reports metrics by short name (``accuracy``); the epoch
line and ``final.json`` prefix them with ``train_`` / ``val_`` (``val_accuracy``),
next to ``train_loss`` / ``val_loss`` which every task has.
"""

from __future__ import annotations

from typing import Any, Callable, ClassVar, Sequence

import torch
from torch import nn
from torchmetrics import MetricCollection

from cnnkit.errors import UserError, did_you_mean
from cnnkit.nn.runtime import autocast
from cnnkit.registry import Registry
from cnnkit.tasks.metrics import Ratio

TASKS: Registry[type["Task"]] = Registry("task")


def register_task(name: str, description: str) -> Callable[[type["Task"]], type["Task"]]:
    def deco(cls: type["Task"]) -> type["Task"]:
        cls.name = name
        TASKS.add(name, cls, description)
        return cls
    return deco


def list_tasks() -> list[str]:
    return TASKS.names()


def task_class(name: str) -> type["Task"]:
    if name not in TASKS:
        raise UserError(f"unknown task {name!r}{did_you_mean(name, TASKS.names())}; "
                        f"choose from {', '.join(TASKS.names())}")
    return TASKS.get(name)


def create_task(cfg, classes: Sequence[str] | None = None, input_shape: Sequence[int] | None = None) -> "Task":
    """The task the config names (``task``), for a dataset with these ``classes`` and the model's
    ``input_shape`` (tasks that resize their inputs, like detection, need it)."""
    return task_class(cfg.task)(cfg, list(classes or []), tuple(input_shape) if input_shape else None)


class Task:
    """How a batch becomes loss, metrics and predictions. Subclasses register with :func:`register_task`.

    A batch is ``(inputs, targets)``: whatever :meth:`collate` makes of a list of dataset items.
    """

    name: ClassVar[str] = ""
    best_metric: ClassVar[str] = "val_loss"     # the metrics-line key that picks best.pt
    best_mode: ClassVar[str] = "min"            # "min" or "max"
    metric_names: ClassVar[tuple[str, ...]] = ()      # validation metrics besides "loss"
    train_sum_names: ClassVar[tuple[str, ...]] = ()   # the keys :meth:`train_sums` returns
    unit: ClassVar[str] = "images"                    # what the data items are called in messages

    def __init__(self, cfg, classes: list[str], input_shape: tuple[int, ...] | None = None) -> None:
        self.cfg = cfg
        self.classes = classes
        self.input_shape = input_shape

    def attach(self, extra: dict[str, Any]) -> None:
        """Take what the data gave beyond classes and shape (``DataBundle.extra``, or a checkpoint's
        ``meta``): the text task's tokeniser. Nothing for most tasks."""

    def check_model(self, model: nn.Module) -> None:
        """Refuse (:class:`UserError`) a built model that cannot serve this task's data, before training:
        a frame predictor's number of predicted frames against the data's. Nothing for most tasks."""

    # -- batches

    collate: Callable[[list[Any]], tuple[Any, Any]] | None = None
    """Dataset items -> ``(inputs, targets)``. None: items are ``(uint8 image (C, H, W), int label)``,
    batched and normalised by the loaders (in-memory sets on the device). A task whose items are
    sequences, clips or structured targets (boxes, masks) defines it."""

    def transform(self, train: bool) -> Callable[[Any, Any], tuple[Any, Any]] | None:
        """With :attr:`collate`: the per-item ``(input, target) -> (input, target)`` of the training
        (``train``) or evaluation loader, augmentation included. None: the loaders' own (``augment``)."""
        return None

    def train_data(self, dataset: Any) -> Any:
        """The training set as the training loader reads it: ``dataset`` itself, or a wrapper that
        draws items from several (detection's mosaic)."""
        return dataset

    def training_step(self, model: nn.Module, inputs: Any, targets: Any,
                      loss_fn: Callable[[Any, Any], torch.Tensor]) -> tuple[Any, torch.Tensor]:
        """``(outputs, loss)`` of one training batch, under the trainer's autocast. A model that computes
        its own losses from the targets (a detector) overrides this to pass them in."""
        out = self.forward(model, inputs)
        return out, loss_fn(self.to_float(out), targets)

    #: True for a task that updates the weights itself in :meth:`optimize_step` (a GAN: two optimisers,
    #: two losses per batch); the trainer then neither backpropagates nor steps.
    owns_step: ClassVar[bool] = False

    def make_optimizer(self, model: nn.Module) -> Any:
        """The task's own optimiser (an object with ``param_groups``, ``state_dict`` and
        ``load_state_dict``, e.g. several torch optimisers in one), or None for the config's."""
        return None

    def optimize_step(self, model: nn.Module, inputs: Any, targets: Any, optimizer: Any, *, precision: str,
                      scaler: Any, clip: float | None) -> tuple[Any, torch.Tensor]:
        """With :attr:`owns_step`: one batch's updates; returns ``(outputs, loss)`` for the running metrics."""
        raise NotImplementedError

    def batch_len(self, targets: Any) -> int:
        """How many examples a batch's targets hold (means are weighted by it)."""
        return len(targets)

    # -- training

    def make_loss(self) -> Callable[[Any, Any], torch.Tensor]:
        """``loss(outputs, targets) -> scalar tensor`` (a mean over the batch)."""
        raise NotImplementedError

    def forward(self, model: nn.Module, inputs: Any) -> Any:
        return model(inputs)

    def train_sums(self, outputs: Any, targets: Any) -> dict[str, torch.Tensor]:
        """Per-batch sums for the running training metrics (``train_<name> = sum / examples``); on the
        device, no synchronisation."""
        return {}

    # -- evaluation

    def metrics(self) -> MetricCollection:
        """Fresh validation metrics (torchmetrics, reduced across DDP ranks by ``compute``)."""
        return MetricCollection({"loss": Ratio()})

    def update_metrics(self, metrics: MetricCollection, outputs: Any, targets: Any, loss: torch.Tensor,
                       inputs: Any = None) -> None:
        """Add one batch to ``metrics``; ``inputs`` for a metric that needs them (a frame predictor's
        copy-the-last-frame baseline)."""
        n = self.batch_len(targets)
        metrics["loss"].update(loss.detach().double() * n, n)

    def eval_forward(self, model: nn.Module, inputs: Any) -> Any:
        """The forward pass used for evaluation (test-time augmentation lives here)."""
        return self.forward(model, inputs)

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader, device: torch.device, precision: str = "fp32",
                 loss_fn: Callable | None = None) -> dict[str, float]:
        """Metrics of ``model`` over ``loader``: ``loss``, the task's metrics and ``n`` (all DDP ranks)."""
        loss_fn = loss_fn or self.make_loss()
        was_training = model.training
        model.eval()
        metrics = self.metrics().to(device)
        for x, y in loader:
            if self.batch_len(y) == 0:  # this rank's empty slice of the last global batch (a mean over none is NaN)
                continue
            with autocast(device, precision):
                out = self.eval_forward(model, x)
            out = self.to_float(out)
            self.update_metrics(metrics, out, y, loss_fn(out, y), inputs=x)
        model.train(was_training)
        result = {k: float(v) for k, v in metrics.compute().items() if v.ndim == 0}
        result["n"] = int(round(float(metrics["loss"].den)))
        return result

    @staticmethod
    def to_float(outputs: Any) -> Any:
        return outputs.float() if isinstance(outputs, torch.Tensor) else outputs

    # -- using a trained model

    def eval_split(self, data: Any) -> Any:
        """A held-out split (or ``eval --data``'s set) as the evaluation loader reads it: the text task
        encodes its texts with the run's tokeniser. ``data`` itself for most tasks."""
        return data

    def eval_dataset(self, path: Any) -> Any:
        """``cnnkit eval --data PATH`` for a task that reads files its own way (texts, series), with the
        run's classes indexing the file's labels; None: the run's dataset reads PATH."""
        return None

    def predict(self, model: nn.Module, inputs: Any, names: Sequence[str], top_k: int = 5,
                **options: Any) -> list[dict]:
        """The JSON that ``cnnkit predict`` prints, one dict per input (``names``: the inputs' file names).
        ``options``: ``orig_sizes`` (each input's original (H, W)) and a task's own (detection: ``conf``,
        ``iou``); a task ignores the ones it has no use for."""
        raise NotImplementedError

    def eval_report(self, model: nn.Module, loader, device: torch.device) -> dict[str, Any]:
        """What ``cnnkit eval`` adds to the metrics (per-class figures, a confusion matrix ...)."""
        return {}

    def final_metrics(self, model: nn.Module, bundle: Any, device: torch.device) -> dict[str, Any]:
        """Figures measured once, at the end of training, on the run's result ``model`` and data ``bundle``
        (a GAN's FID); added to ``final.json``. Nothing for most tasks."""
        return {}

    def epoch_line(self, m: dict[str, Any]) -> str:
        """The metrics of one epoch, as the trainer prints them."""
        parts = [f"train_loss {fmt_metric(m.get('train_loss'))}"]
        parts += [f"train_{k} {fmt_metric(m.get('train_' + k))}" for k in self.metric_names if "train_" + k in m]
        parts += [f"val_loss {fmt_metric(m.get('val_loss'))}"]
        parts += [f"val_{k} {fmt_metric(m.get('val_' + k))}" for k in self.metric_names]
        return "  ".join(parts)


def fmt_metric(v: float | None) -> str:
    """A metric as the epoch lines print it: four decimals, ``-`` when it was not measured."""
    return "-" if v is None else f"{v:.4f}"
