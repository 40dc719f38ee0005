"""Time-series classification (the course's VI.D): a class per whole series, from 1-D CNNs (FCN,
ResNet, InceptionTime), CNN-LSTM hybrids or layer lists.

Scoring is classification's (cross-entropy, accuracy, per-class precision / recall / F1 and the
confusion matrix). What differs: a batch is ``(x float32 (N, C, L), labels)``, prepared by the
data layer (:mod:`cnnkit.data.timeseries`: missing values filled, each series z-normalised,
unequal lengths padded with a mask channel or resampled) with a *layout* fitted on the training
split and saved with the run, so that ``eval --data`` and ``predict`` read new series exactly as
the training ones were read; and the augmentations are the series' own (jitter, scaling, window
slicing and warping), applied to whole batches on the device in :meth:`training_step`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from cnnkit.errors import UserError
from cnnkit.tasks.base import Task, register_task
from cnnkit.tasks.classification import ClassificationTask, format_predictions

IMAGE_AUGMENT = ("crop_padding", "rotation", "hflip", "brightness", "contrast", "cutout", "scale_jitter", "mosaic",
                 "vflip", "elastic", "saturation", "hue")


def refuse_image_augment(cfg, task: str) -> None:
    on = [k for k in IMAGE_AUGMENT if getattr(cfg.augment, k)]
    if on:
        raise UserError(f"augment.{on[0]} is an image augmentation; task {task} takes augment.jitter, "
                        f"augment.scaling, augment.window_slice and augment.window_warp")


def stack_series(items: list[tuple[torch.Tensor, Any]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Items ``(x (C, L), label)`` of one length -> ``(x (N, C, L), labels (N,))``."""
    xs, ys = zip(*items)
    return torch.stack([torch.as_tensor(x, dtype=torch.float32) for x in xs]), torch.as_tensor(ys)


@register_task("timeseries", "a class per series (UCR/UEA .ts, CSV, .npz): FCN, ResNet, InceptionTime, LSTM-FCN")
class TimeSeriesTask(ClassificationTask):
    unit = "series"

    def __init__(self, cfg, classes: list[str], input_shape: tuple[int, ...] | None = None) -> None:
        Task.__init__(self, cfg, classes, input_shape)
        refuse_image_augment(cfg, "timeseries")
        if cfg.train.loss not in ("cross_entropy", "mse", "bce"):
            raise UserError(f"train.loss={cfg.train.loss} is not a classification loss; task timeseries takes "
                            f"cross_entropy, mse or bce")
        if cfg.train.eval_tta != "none":
            raise UserError(f"train.eval_tta={cfg.train.eval_tta} flips images; task timeseries has none "
                            f"(set it to none)")
        self.layout: dict[str, Any] | None = None
        self.augment = None
        self.collate = stack_series

    def attach(self, extra: dict[str, Any]) -> None:
        """Take the series layout the training split fixed (channels, length, padding mask, z-norm)."""
        layout = (extra or {}).get("series_layout")
        if layout is not None:
            self.layout = dict(layout)
        a = self.cfg.augment
        if a.series_active() and self.augment is None:
            from cnnkit.data.timeseries.augment import SeriesAugment

            self.augment = SeriesAugment(a.jitter, a.scaling, a.window_slice, a.window_warp,
                                         mask_channel=bool((self.layout or {}).get("mask")))

    def training_step(self, model: nn.Module, inputs: torch.Tensor, targets: Any, loss_fn) -> tuple[Any, torch.Tensor]:
        if self.augment is not None:
            with torch.no_grad():
                inputs = self.augment(inputs)
        return super().training_step(model, inputs, targets, loss_fn)

    def eval_forward(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return model(x)

    # -- new data: eval --data, predict

    def read_series(self, path: str | Path, labelled: bool = True) -> tuple[torch.Tensor, list[int] | None, list[str]]:
        """A file of series read and prepared as the training ones were: ``(x (N, C, L), targets, names)``.
        ``labelled``: the file's labels must be classes of the run (eval); else they are ignored (predict)."""
        from cnnkit.data.timeseries.formats import read_series
        from cnnkit.data.timeseries.prepare import SeriesLayout, prepare_series

        if self.layout is None:
            raise UserError("this run has no series layout (it was not trained with task timeseries)")
        data = read_series(path, label_column=self.cfg.data.label_column, classes=self.classes if labelled else None,
                           labelled=labelled)
        x = prepare_series(data.series, SeriesLayout.from_dict(self.layout))
        names = [f"{Path(path).name}[{i}]" for i in range(len(data.series))]
        return x, (list(data.targets) if labelled else None), names

    def eval_dataset(self, path: str | Path) -> Any:
        from torch.utils.data import TensorDataset

        x, targets, _ = self.read_series(path, labelled=True)
        ds = TensorDataset(x, torch.as_tensor(targets))
        ds.targets = list(targets)  # type: ignore[attr-defined]
        return ds

    @torch.no_grad()
    def predict_paths(self, model: nn.Module, paths: Sequence[str], top_k: int = 5, **_: Any) -> list[dict]:
        """``cnnkit predict``'s JSON for files of series: per series its top-k classes and probabilities."""
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
        out: list[dict] = []
        for path in paths:
            x, _, names = self.read_series(path, labelled=False)
            probs = torch.cat([torch.softmax(model(x[i:i + 256].to(device)).float(), 1).cpu()
                               for i in range(0, len(x), 256)]).numpy()
            for r in format_predictions(names, probs, self.classes, top_k):
                out.append({"series": r.pop("file"), **r})
        return out
