"""Image classification: a class per input, cross-entropy (or MSE/BCE on the one-hot labels),
accuracy, and per-class figures with a confusion matrix for ``cnnkit eval``."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassConfusionMatrix

from cnnkit.errors import UserError
from cnnkit.nn.losses import make_loss
from cnnkit.reference.losses import classification_loss as reference_classification_loss
from cnnkit.tasks.base import Task, fmt_metric, register_task
from cnnkit.tasks.metrics import Ratio


@register_task("classification", "one class per image: cross-entropy, accuracy, top-k predictions")
class ClassificationTask(Task):
    best_metric = "val_accuracy"
    best_mode = "max"
    metric_names = ("accuracy",)
    train_sum_names = ("accuracy",)

    def __init__(self, cfg, classes: list[str], input_shape: tuple[int, ...] | None = None) -> None:
        super().__init__(cfg, classes, input_shape)
        if cfg.augment.scale_jitter:
            raise UserError(f"augment.scale_jitter={cfg.augment.scale_jitter} is a detection augmentation (boxes "
                            f"follow the zoom); for classification use augment.crop_padding or augment.rotation")
        seg_aug = [k for k in ("vflip", "elastic", "saturation", "hue") if getattr(cfg.augment, k)]
        if seg_aug:
            raise UserError(f"augment.{seg_aug[0]} is a detection/segmentation augmentation; for classification "
                            f"use augment.hflip, augment.crop_padding, augment.rotation, augment.brightness or "
                            f"augment.contrast")
        if cfg.train.loss not in ("cross_entropy", "mse", "bce"):
            kind = "forecasting" if cfg.train.loss in ("mae", "huber") else "segmentation"
            raise UserError(f"train.loss={cfg.train.loss} is a {kind} loss; classification takes "
                            f"cross_entropy, mse or bce")
        if cfg.augment.mosaic:
            raise UserError(f"augment.mosaic={cfg.augment.mosaic} is a detection augmentation (four images' boxes "
                            f"in one); for classification use augment.crop_padding, augment.cutout or "
                            f"regularization.mixup")

    # -- training

    def make_loss(self) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        return make_loss(self.cfg.train.loss, self.cfg.regularization.label_smoothing)

    def train_sums(self, logits: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"accuracy": (logits.detach().argmax(1) == y).sum()}

    def reference_loss(self) -> Callable[[np.ndarray, np.ndarray], tuple[float, np.ndarray]]:
        """The NumPy twin of :meth:`make_loss` for the glass-box engine: ``fn(logits, labels) -> (loss,
        dloss/dlogits)``."""
        return reference_classification_loss(self.cfg.train.loss, self.cfg.regularization.label_smoothing)

    # -- evaluation

    def metrics(self) -> MetricCollection:
        return MetricCollection({"loss": Ratio(), "accuracy": Ratio()})

    def update_metrics(self, metrics: MetricCollection, logits: torch.Tensor, y: torch.Tensor,
                       loss: torch.Tensor, inputs: Any = None) -> None:
        n = len(y)
        metrics["loss"].update(loss.detach().double() * n, n)
        metrics["accuracy"].update((logits.argmax(1) == y).sum(), n)

    def eval_forward(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return predict_logits(model, x, self.cfg.train.eval_tta)

    @torch.no_grad()
    def eval_report(self, model: nn.Module, loader, device: torch.device) -> dict[str, Any]:
        """Per-class accuracy, precision, recall and F1, and the confusion matrix (rows: true class)."""
        cm = MulticlassConfusionMatrix(num_classes=len(self.classes)).to(device)
        was_training = model.training
        model.eval()
        for x, y in loader:
            if len(y):
                cm.update(self.eval_forward(model, x).argmax(1), y)
        model.train(was_training)
        matrix = cm.compute().cpu().double()
        tp = matrix.diag()
        recall = (tp / matrix.sum(1).clamp_min(1)).tolist()
        precision = (tp / matrix.sum(0).clamp_min(1)).tolist()
        f1 = [2 * p * r / (p + r) if p + r else 0.0 for p, r in zip(precision, recall)]
        names = self.classes
        return {"per_class_accuracy": {c: round(a, 4) for c, a in zip(names, recall)},
                "per_class": {c: {"precision": round(p, 4), "recall": round(r, 4), "f1": round(f, 4),
                                  "support": int(s)}
                              for c, p, r, f, s in zip(names, precision, recall, f1, matrix.sum(1).tolist())},
                "confusion_matrix": matrix.long().tolist()}

    # -- using a trained model

    @torch.no_grad()
    def predict(self, model: nn.Module, x: torch.Tensor, names: Sequence[str], top_k: int = 5,
                **_: Any) -> list[dict]:
        probs = torch.softmax(model(x).float(), dim=1).cpu().numpy()
        return format_predictions(names, probs, self.classes, top_k)

    def epoch_line(self, m: dict[str, Any]) -> str:
        f = fmt_metric
        return (f"train_loss {f(m['train_loss'])}  train_acc {f(m['train_accuracy'])}  val_loss {f(m['val_loss'])}  "
                f"val_acc {f(m['val_accuracy'])}")


def predict_logits(model: nn.Module, x: torch.Tensor, tta: str = "none") -> torch.Tensor:
    """Logits, averaged over test-time views: ``flip`` adds the mirror image, ``flip_translate``
    also one-pixel shifts of both."""
    logits = model(x)
    if tta == "none":
        return logits
    views = [x.flip(-1)]
    if tta == "flip_translate":
        pad = F.pad(x, (1, 1, 1, 1), mode="reflect")
        shifted = [pad[..., :-2, :-2], pad[..., 2:, 2:]]
        views += shifted + [s.flip(-1) for s in shifted]
    for v in views:
        logits = logits + model(v)
    return logits / (1 + len(views))


def format_predictions(files: Sequence[str], probs: np.ndarray, classes: Sequence[str], top_k: int) -> list[dict]:
    """The JSON of ``cnnkit predict``: per image its top-k and every class's probability."""
    out = []
    k = min(top_k, len(classes))
    for f, p in zip(files, probs):
        order = np.argsort(-p, kind="stable")[:k]
        out.append({"file": str(f),
                    "top": [{"label": int(i), "class": str(classes[i]), "probability": float(p[i])} for i in order],
                    "probabilities": [float(v) for v in p]})
    return out
