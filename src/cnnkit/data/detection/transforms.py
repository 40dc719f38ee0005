"""Per-item transforms and the batch collate of detection: torchvision's v2 transforms move the boxes
(and instance masks) with the image, so no box arithmetic is written here.

The pipeline of one ``(image, target)`` item:

1. ``target["orig_size"] = (H0, W0)``, the image's own size (the task maps predicted boxes back to
   the original image by the two factors ``W0 / S`` and ``H0 / S``);
2. ``Resize((S, S))``, a plain stretch (no letterbox), antialiased; first, so that the
   augmentation works on S x S pixels, not on a full-size photo (20x cheaper on 500 px photos);
3. when training with ``augment`` active: ``augment.hflip`` -> ``RandomHorizontalFlip``;
   ``augment.scale_jitter`` s -> ``RandomAffine(scale=(1 - s, 1 + s), translate=(s / 2, s / 2))``;
   ``augment.brightness`` / ``augment.contrast`` -> ``ColorJitter``;
4. ``ClampBoundingBoxes`` then ``SanitizeBoundingBoxes``: boxes that left the image or became
   smaller than a pixel are dropped with their labels (and masks).

Why ``RandomAffine`` for the scale jitter: it zooms both ways, in and out, by a factor drawn from
``[1 - s, 1 + s]`` as the option says, keeps the canvas size, and works on images without boxes.
``RandomIoUCrop`` only zooms in and needs boxes; ``RandomZoomOut`` only zooms out and changes the
canvas. Where a zoom-out or shift uncovers the canvas it is filled with grey 114 (YOLO's letterbox
grey, close to the mean of natural images), masks with 0.

Example::

    tf = detection_transforms(cfg.augment, 320, train=True)
    image, target = tf(*dataset[0])         # uint8 (3, 320, 320); boxes in the 320 x 320 canvas
    images, targets = detection_collate([tf(*dataset[i]) for i in range(4)])
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from cnnkit.config import AugmentConfig
from cnnkit.errors import UserError

#: Fill of the image where a zoom-out or shift uncovers the canvas.
FILL = 114
#: Options of ``augment`` that detection does not implement (they would move pixels without the boxes
#: or, for ``hflip: alternating``, need the epoch, which a per-item transform does not see).
_UNSUPPORTED = ("crop_padding", "rotation", "cutout")


def _check_augment(augment: AugmentConfig) -> None:
    for key in _UNSUPPORTED:
        if getattr(augment, key):
            raise UserError(f"augment.{key}={getattr(augment, key)} is not available for detection; "
                            f"detection augments with augment.hflip, augment.scale_jitter, augment.brightness "
                            f"and augment.contrast")
    if augment.hflip == "alternating":
        raise UserError("augment.hflip=alternating is for classification; detection flips each image with "
                        "probability 0.5: set augment.hflip=true")


class DetectionTransform:
    """``(image, target) -> (image, target)``: the pipeline of the module docstring (picklable, so it
    runs in DataLoader workers)."""

    def __init__(self, augment: AugmentConfig | None, image_size: int, train: bool) -> None:
        steps: list[Any] = [v2.Resize((image_size, image_size), antialias=True)]
        if train and augment is not None and augment.active():
            _check_augment(augment)
            if augment.hflip:
                steps.append(v2.RandomHorizontalFlip(p=0.5))
            if augment.scale_jitter:
                s = augment.scale_jitter
                steps.append(v2.RandomAffine(degrees=0.0, translate=(s / 2, s / 2), scale=(1 - s, 1 + s),
                                             fill={tv_tensors.Image: FILL, tv_tensors.Mask: 0}))
            if augment.brightness or augment.contrast:
                steps.append(v2.ColorJitter(brightness=augment.brightness, contrast=augment.contrast))
        steps += [v2.ClampBoundingBoxes(), v2.SanitizeBoundingBoxes(labels_getter=_labels)]
        self.image_size = image_size
        self.pipeline = v2.Compose(steps)

    def __call__(self, image: torch.Tensor, target: dict) -> tuple[torch.Tensor, dict]:
        target = dict(target)
        target["orig_size"] = (int(image.shape[-2]), int(image.shape[-1]))
        # Wrapped as an Image, the picture is never mistaken for another plain tensor (the labels).
        out, target = self.pipeline(tv_tensors.Image(image), target)
        return out.as_subclass(torch.Tensor), target

    def __repr__(self) -> str:
        return f"DetectionTransform({self.pipeline})"


def _labels(inputs: Any) -> torch.Tensor:
    """The labels SanitizeBoundingBoxes drops with their boxes: ``target["labels"]`` of ``(image, target)``."""
    return inputs[1]["labels"]


def detection_transforms(augment: AugmentConfig | None, image_size: int,
                         train: bool) -> Callable[[torch.Tensor, dict], tuple[torch.Tensor, dict]]:
    """The per-item transform of a training (``train``) or evaluation loader; see the module docstring.

    The result keeps the image uint8 ``(3, image_size, image_size)``; the target keeps ``boxes`` (in
    the resized canvas), ``labels``, ``image_id``, ``file`` (and ``masks``) and gains ``orig_size``.
    """
    if image_size <= 0:
        raise ValueError(f"image_size must be positive, got {image_size}")
    return DetectionTransform(augment, image_size, train)


def detection_collate(items: list[tuple[torch.Tensor, dict]]) -> tuple[torch.Tensor, list[dict]]:
    """``(images uint8 (N, 3, S, S), targets)`` of transformed items; each target a dict of plain
    tensors and values: ``boxes`` float32 (K, 4), ``labels`` int64 (K,), ``image_id``, ``orig_size``
    ``(H0, W0)``, ``file`` (and ``masks`` uint8 (K, S, S) when the items have them)."""
    if not items:
        return torch.empty((0, 3, 0, 0), dtype=torch.uint8), []
    sizes = {tuple(x.shape) for x, _ in items}
    if len(sizes) > 1:
        raise ValueError(f"detection_collate needs images of one size (resize them in the transform); got "
                         f"{sorted(sizes)}")
    images = torch.stack([x.as_subclass(torch.Tensor) for x, _ in items])
    targets = []
    for _, t in items:
        out = {"boxes": t["boxes"].as_subclass(torch.Tensor).to(torch.float32).reshape(-1, 4),
               "labels": t["labels"].as_subclass(torch.Tensor).to(torch.int64),
               "image_id": t["image_id"], "orig_size": t.get("orig_size"), "file": t["file"]}
        if "masks" in t:
            out["masks"] = t["masks"].as_subclass(torch.Tensor)
        targets.append(out)
    return images, targets
