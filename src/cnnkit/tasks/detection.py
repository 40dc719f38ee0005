"""Object detection: boxes and classes per image, COCO mAP, detections in the original image's pixels.

A batch is ``(images uint8 -> normalised (N, 3, S, S), targets)``, targets a list of
``{"boxes" (K, 4) x1 y1 x2 y2 in the resized image, "labels" (K,), "orig_size", ...}``.
Images are resized to ``S x S`` (``data.image_size``) by the task's transform, so a box maps
back to the original image by the two scale factors.

The model computes its own losses from the targets (as torchvision's detectors do):
``model(images, targets) -> {"box": .., "cls": .., ...}`` in training mode, whose sum is the
training loss; ``model(images)`` in eval mode returns detections. Validation reports COCO's
mAP@[.5:.95], mAP@.5 and mAP@.75 (torchmetrics' MeanAveragePrecision, computed by pycocotools);
the best checkpoint is the one with the highest ``val_map_50``.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
from torch import nn

from cnnkit.errors import UserError
from cnnkit.nn.runtime import autocast
from cnnkit.tasks.base import Task, fmt_metric, register_task


@register_task("detection", "boxes and classes per image: COCO mAP, detections in image pixels")
class DetectionTask(Task):
    best_metric = "val_map_50"
    best_mode = "max"
    metric_names = ("map", "map_50", "map_75")

    def __init__(self, cfg, classes: list[str], input_shape: tuple[int, ...] | None = None) -> None:
        super().__init__(cfg, classes, input_shape)
        from cnnkit.data.detection.transforms import detection_collate

        self.collate = detection_collate
        if cfg.train.engine != "torch":
            raise UserError("task detection runs on the torch engine; remove train.engine=reference")

    @property
    def image_size(self) -> int:
        """The side S every image is resized to: the model's input, else data.image_size."""
        if self.input_shape is not None:
            return int(self.input_shape[-1])
        if self.cfg.data.image_size is not None:
            return int(self.cfg.data.image_size)
        raise UserError("task detection needs data.image_size (the side images are resized to)")

    def transform(self, train: bool) -> Callable[[Any, Any], tuple[Any, Any]]:
        from cnnkit.data.detection.transforms import detection_transforms

        return detection_transforms(self.cfg.augment if train else None, self.image_size, train)

    def train_data(self, dataset: Any) -> Any:
        aug = self.cfg.augment
        if not aug.mosaic:
            return dataset
        from cnnkit.data.detection.transforms import Mosaic

        # mosaic_off_epochs >= train.epochs is allowed: every epoch is then plain (a short trial of a
        # recipe, train.epochs=3, runs as the end of the full recipe would).
        return Mosaic(dataset, self.image_size, aug.mosaic, self.cfg.train.epochs, aug.mosaic_off_epochs,
                      repeats=self.cfg.data.epoch_repeats)

    # -- training

    def make_loss(self) -> Callable[[Any, Any], torch.Tensor]:
        def total(losses: dict[str, torch.Tensor], targets: Any) -> torch.Tensor:
            return sum(losses.values())
        return total

    def training_step(self, model: nn.Module, images: torch.Tensor, targets: list[dict],
                      loss_fn: Callable[[Any, Any], torch.Tensor]) -> tuple[Any, torch.Tensor]:
        losses = model(images, targets)
        return losses, loss_fn(losses, targets)

    # -- evaluation

    def map_metric(self, **kw: Any):
        """torchmetrics' MeanAveragePrecision (COCO's definitions, computed by pycocotools)."""
        from torchmetrics.detection import MeanAveragePrecision

        return MeanAveragePrecision(box_format="xyxy", iou_type="bbox", **kw)

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader, device: torch.device, precision: str = "fp32",
                 loss_fn: Callable | None = None) -> dict[str, float]:
        """COCO mAP of ``model`` over ``loader`` (``loss`` is None: a detector in eval mode returns
        detections, not losses); ``n`` is the number of images."""
        was_training = model.training
        model.eval()
        metric = self.map_metric().to(device)
        n = 0
        for images, targets in loader:
            if not len(targets):
                continue
            with autocast(device, precision):
                preds = model(images)
            metric.update(self.scored(preds), self.truth(targets))
            n += len(targets)
        model.train(was_training)
        if n == 0:
            return {"loss": None, **{k: None for k in self.metric_names}, "n": 0}
        return {"loss": None, **self.summary(metric.compute()), "n": n}

    # What evaluate scores (instance segmentation adds the masks).

    def scored(self, preds: list[dict[str, torch.Tensor]]) -> list[dict[str, torch.Tensor]]:
        """A batch's detections as MeanAveragePrecision takes them."""
        return _float(preds)

    def truth(self, targets: list[dict[str, Any]]) -> list[dict[str, torch.Tensor]]:
        """A batch's ground truth as MeanAveragePrecision takes it."""
        return _gt(targets)

    def per_class_metric(self):
        """The metric of ``eval``'s per-class figures: box mAP@.5 per class."""
        return self.map_metric(iou_thresholds=[0.5], class_metrics=True)

    def summary(self, r: dict[str, torch.Tensor]) -> dict[str, float | None]:
        """The task's metrics out of MeanAveragePrecision's result."""
        return {"map": _num(r["map"]), "map_50": _num(r["map_50"]), "map_75": _num(r["map_75"])}

    @torch.no_grad()
    def eval_report(self, model: nn.Module, loader, device: torch.device) -> dict[str, Any]:
        """mAP@.5 per class (``per_class``), and the numbers of images and ground-truth boxes."""
        was_training = model.training
        model.eval()
        per_class = self.per_class_metric().to(device)
        n_images = n_boxes = 0
        for images, targets in loader:
            if not len(targets):
                continue
            per_class.update(self.scored(model(images)), self.truth(targets))
            n_images += len(targets)
            n_boxes += sum(len(t["labels"]) for t in targets)
        model.train(was_training)
        out: dict[str, Any] = {"per_class": {}, "n_images": n_images, "n_boxes": n_boxes}
        if n_images:
            r = per_class.compute()
            classes = r["classes"].reshape(-1).tolist()
            values = r["map_per_class"].reshape(-1).tolist()
            ap = dict(zip(classes, values))
            out["per_class"] = {name: (round(ap[i], 4) if i in ap and ap[i] >= 0 else None)
                                for i, name in enumerate(self.classes)}
        return out

    # -- using a trained model

    @torch.no_grad()
    def predict(self, model: nn.Module, images: torch.Tensor, names: Sequence[str], top_k: int = 5,
                orig_sizes: Sequence[tuple[int, int]] | None = None, conf: float = 0.25,
                iou: float = 0.6, **_: Any) -> list[dict]:
        """Per image, its detections in the ORIGINAL image's pixels (``orig_sizes`` (H, W); the
        inputs' own size when not given), best first."""
        preds = detect(model, images, conf, iou)
        return format_detections(names, preds, self.classes, tuple(images.shape[-2:]), orig_sizes)

    def epoch_line(self, m: dict[str, Any]) -> str:
        f = fmt_metric
        return (f"train_loss {f(m.get('train_loss'))}  val_map {f(m.get('val_map'))}  "
                f"val_map_50 {f(m.get('val_map_50'))}  val_map_75 {f(m.get('val_map_75'))}")


def format_detections(names: Sequence[str], preds: list[dict[str, torch.Tensor]], classes: Sequence[str],
                      size: tuple[int, int], orig_sizes: Sequence[tuple[int, int]] | None = None) -> list[dict]:
    """The JSON of ``cnnkit predict`` for a detector: per file, its detections with boxes scaled from
    the model's ``size`` (H, W) input back to the original image (``orig_sizes``; ``size`` if None)."""
    out = []
    for i, (name, p) in enumerate(zip(names, preds)):
        h0, w0 = orig_sizes[i] if orig_sizes is not None else (int(size[0]), int(size[1]))
        scale = torch.tensor([w0 / size[1], h0 / size[0]] * 2, device=p["boxes"].device)
        boxes = (p["boxes"].float() * scale).tolist()
        out.append({"file": str(name), "detections": [
            {"label": int(c), "class": str(classes[int(c)]), "score": round(float(s), 5),
             "box": [round(v, 2) for v in b]}
            for b, s, c in zip(boxes, p["scores"].tolist(), p["labels"].tolist())]})
    return out


def detect(model: nn.Module, images: torch.Tensor, conf: float, iou: float) -> list[dict[str, torch.Tensor]]:
    """``model(images)`` in eval mode with these thresholds (a detector's ``conf``/``iou`` attributes)."""
    old = (getattr(model, "conf", None), getattr(model, "iou", None))
    if hasattr(model, "conf"):
        model.conf, model.iou = conf, iou
    try:
        was = model.training
        model.eval()
        preds = model(images)
        model.train(was)
    finally:
        if old[0] is not None:
            model.conf, model.iou = old
    return preds


def _float(preds: list[dict[str, torch.Tensor]]) -> list[dict[str, torch.Tensor]]:
    return [{"boxes": p["boxes"].float(), "scores": p["scores"].float(), "labels": p["labels"].long()}
            for p in preds]


def _gt(targets: list[dict[str, Any]]) -> list[dict[str, torch.Tensor]]:
    return [{"boxes": t["boxes"].float(), "labels": t["labels"].long()} for t in targets]


def _num(v: torch.Tensor) -> float | None:
    x = float(v)
    return None if x < 0 else x  # torchmetrics says -1 when there is nothing to score


def save_drawn(result: dict[str, Any], folder: str, width: int = 2) -> "Path":
    """Write ``result["file"]`` with its detections drawn (torchvision's draw_bounding_boxes) to
    ``folder/<stem>.png``, atomically; returns the path written."""
    import io
    from pathlib import Path

    import numpy as np
    from PIL import Image
    from torchvision.utils import draw_bounding_boxes

    from cnnkit.atomic import atomic_write

    out_dir = Path(folder)
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"--save {folder!r} is a file; give a folder to write the drawn images into")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create --save folder {folder!r}: {e.strerror or e}") from None
    with Image.open(result["file"]) as im:
        image = torch.from_numpy(np.asarray(im.convert("RGB"), dtype=np.uint8).copy()).permute(2, 0, 1)
    dets = result["detections"]
    if dets:
        boxes = torch.tensor([d["box"] for d in dets], dtype=torch.float32)
        labels = [f"{d['class']} {d['score']:.2f}" for d in dets]
        palette = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#bfef45"]
        colors = [palette[d["label"] % len(palette)] for d in dets]
        image = draw_bounding_boxes(image, boxes, labels=labels, colors=colors, width=width)
    target = out_dir / (Path(result["file"]).stem + ".png")
    buf = io.BytesIO()
    Image.fromarray(image.permute(1, 2, 0).numpy()).save(buf, format="PNG")
    atomic_write(target, lambda f: f.write(buf.getvalue()))
    return target
