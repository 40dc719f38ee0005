"""Instance segmentation: boxes, classes and a mask per object (Mask R-CNN); box and mask mAP.

Everything of :mod:`cnnkit.tasks.detection` holds (the batch, the resize to ``S x S``, the model
computing its own losses from the targets, ``predict``'s boxes in the original image's pixels);
targets also carry ``masks`` (K, S, S) uint8, and in eval mode the model returns ``masks``
(D, 1, S, S) probabilities per image, thresholded at 0.5. Validation reports COCO's box mAP and
mask mAP (torchmetrics' MeanAveragePrecision with ``iou_type=("bbox", "segm")``); ``best.pt`` is
the epoch with the best ``val_mask_map_50``.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from cnnkit.tasks.base import fmt_metric, register_task
from cnnkit.tasks.detection import DetectionTask, _float, _gt, _num, detect, format_detections

#: A predicted mask pixel belongs to the object from this probability on.
MASK_THRESHOLD = 0.5


@register_task("instance", "a mask per object (Mask R-CNN): box and mask mAP")
class InstanceTask(DetectionTask):
    best_metric = "val_mask_map_50"
    best_mode = "max"
    metric_names = ("map", "map_50", "mask_map", "mask_map_50")

    def map_metric(self, **kw: Any):
        from torchmetrics.detection import MeanAveragePrecision

        return MeanAveragePrecision(box_format="xyxy", iou_type=("bbox", "segm"), **kw)

    def scored(self, preds: list[dict[str, torch.Tensor]]) -> list[dict[str, torch.Tensor]]:
        return _with_masks(preds)

    def truth(self, targets: list[dict[str, Any]]) -> list[dict[str, torch.Tensor]]:
        return _gt_with_masks(targets)

    def summary(self, r: dict[str, torch.Tensor]) -> dict[str, float | None]:
        return {"map": _num(r["bbox_map"]), "map_50": _num(r["bbox_map_50"]),
                "mask_map": _num(r["segm_map"]), "mask_map_50": _num(r["segm_map_50"])}

    def per_class_metric(self):
        """Mask mAP@.5 per class."""
        from torchmetrics.detection import MeanAveragePrecision

        return MeanAveragePrecision(iou_type="segm", iou_thresholds=[0.5], class_metrics=True)

    @torch.no_grad()
    def predict(self, model: nn.Module, images: torch.Tensor, names: Sequence[str], top_k: int = 5,
                orig_sizes: Sequence[tuple[int, int]] | None = None, conf: float = 0.25,
                iou: float = 0.6, **_: Any) -> list[dict]:
        """Detections as :class:`DetectionTask` gives them, each with the pixel ``area`` of its mask
        (in the resized image) next to its box."""
        preds = detect(model, images, conf, iou)
        out = format_detections(names, preds, self.classes, tuple(images.shape[-2:]), orig_sizes)
        for result, p in zip(out, preds):
            masks = p.get("masks")
            if masks is None:
                continue
            for det, m in zip(result["detections"], masks):
                det["area"] = int((m[0] > MASK_THRESHOLD).sum())
        return out

    def epoch_line(self, m: dict[str, Any]) -> str:
        f = fmt_metric
        return (f"train_loss {f(m.get('train_loss'))}  val_map {f(m.get('val_map'))}  "
                f"val_map_50 {f(m.get('val_map_50'))}  val_mask_map {f(m.get('val_mask_map'))}  "
                f"val_mask_map_50 {f(m.get('val_mask_map_50'))}")


def _with_masks(preds: list[dict[str, torch.Tensor]]) -> list[dict[str, torch.Tensor]]:
    out = _float(preds)
    for o, p in zip(out, preds):
        m = p.get("masks")
        if m is None:
            raise ValueError("an instance-segmentation model must return masks with its boxes")
        o["masks"] = (m[:, 0] if m.ndim == 4 else m) > MASK_THRESHOLD
    return out


def _gt_with_masks(targets: list[dict[str, Any]]) -> list[dict[str, torch.Tensor]]:
    out = _gt(targets)
    for o, t in zip(out, targets):
        o["masks"] = t["masks"].bool()
    return out
