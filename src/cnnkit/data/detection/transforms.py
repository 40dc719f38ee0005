"""Per-item transforms and the batch collate of detection: torchvision's v2 transforms move the boxes
(and instance masks) with the image, so no box arithmetic is written here.

The pipeline of one ``(image, target)`` item:

1. ``target["orig_size"] = (H0, W0)``, the image's own size (the task maps predicted boxes back to
   the original image by the two factors ``W0 / S`` and ``H0 / S``);
2. ``Resize((S, S))``, a plain stretch (no letterbox), antialiased; first, so that the
   augmentation works on S x S pixels, not on a full-size photo (20x cheaper on 500 px photos);
3. when training with ``augment`` active: ``augment.hflip`` -> ``RandomHorizontalFlip``
   (``augment.vflip`` -> ``RandomVerticalFlip``);
   ``augment.scale_jitter`` s -> ``RandomAffine(scale=(1 - s, 1 + s), translate=(s / 2, s / 2))``;
   ``augment.brightness`` / ``contrast`` / ``saturation`` / ``hue`` -> ``ColorJitter``;
4. ``ClampBoundingBoxes`` then ``SanitizeBoundingBoxes``: boxes that left the image or became
   smaller than a pixel are dropped with their labels (and masks).

Why ``RandomAffine`` for the scale jitter: it zooms both ways, in and out, by a factor drawn from
``[1 - s, 1 + s]`` as the option says, keeps the canvas size, and works on images without boxes.
``RandomIoUCrop`` only zooms in and needs boxes; ``RandomZoomOut`` only zooms out and changes the
canvas. Where a zoom-out or shift uncovers the canvas it is filled with grey 114 (YOLO's letterbox
grey, close to the mean of natural images), masks with 0.

Mosaic (``augment.mosaic`` p > 0, training only) comes before all of this, as a dataset wrapper
(:class:`Mosaic`): with probability p an item becomes four images, each resized to S x S, tiled
around a random centre, of which the central S x S window is kept. Objects keep their scale, are
seen in new company and at the image border, and four images' boxes make one step's targets: the
augmentation YOLOv4 made standard, and what small sets like the 160 raccoon photos need most.
``augment.mosaic_off_epochs`` N trains the last N epochs on plain images (YOLOv8's "close mosaic"),
so the network ends on pictures like those it will be shown.

Example::

    tf = detection_transforms(cfg.augment, 320, train=True)
    image, target = tf(*dataset[0])         # uint8 (3, 320, 320); boxes in the 320 x 320 canvas
    images, targets = detection_collate([tf(*dataset[i]) for i in range(4)])
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from cnnkit.config import AugmentConfig
from cnnkit.errors import UserError

#: Fill of the image where a zoom-out or shift uncovers the canvas.
FILL = 114
#: Options of ``augment`` that detection does not implement (they would move pixels without the boxes
#: or, for ``hflip: alternating``, need the epoch, which a per-item transform does not see).
_UNSUPPORTED = ("crop_padding", "rotation", "cutout", "elastic")


def _check_augment(augment: AugmentConfig) -> None:
    for key in _UNSUPPORTED:
        if getattr(augment, key):
            raise UserError(f"augment.{key}={getattr(augment, key)} is not available for detection; "
                            f"detection augments with augment.hflip, augment.vflip, augment.scale_jitter, "
                            f"augment.mosaic and colour (augment.brightness, contrast, saturation, hue)")
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
            if augment.vflip:
                steps.append(v2.RandomVerticalFlip(p=0.5))
            if augment.scale_jitter:
                s = augment.scale_jitter
                steps.append(v2.RandomAffine(degrees=0.0, translate=(s / 2, s / 2), scale=(1 - s, 1 + s),
                                             fill={tv_tensors.Image: FILL, tv_tensors.Mask: 0}))
            if augment.brightness or augment.contrast or augment.saturation or augment.hue:
                steps.append(v2.ColorJitter(brightness=augment.brightness, contrast=augment.contrast,
                                            saturation=augment.saturation, hue=augment.hue))
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


#: A box cut by the mosaic window is kept when at least this share of its area stays visible.
MIN_VISIBLE = 0.25


class Mosaic(Dataset):
    """Training items of ``dataset``, each with probability ``p`` a mosaic of four (see the module
    docstring), until the last ``off_epochs`` of ``epochs``; then plain items.

    Randomness comes from torch's generator, which the loader seeds per ``(seed, epoch, index)``: the
    same run draws the same mosaics. The loader passes the epoch through :meth:`item_at_epoch` (its key
    is ``epoch * repeats + pass`` when ``data.epoch_repeats`` > 1).
    """

    def __init__(self, dataset: Dataset, image_size: int, p: float, epochs: int, off_epochs: int = 0,
                 repeats: int = 1) -> None:
        self.dataset, self.size, self.p = dataset, image_size, p
        self.last_epoch = epochs - off_epochs  # the last (1-based) epoch that uses mosaics
        self.repeats = max(1, repeats)
        self.resize = v2.Resize((image_size, image_size), antialias=True)
        # Resized items, kept: a mosaic reads four images, and decoding four photos per item would
        # cost a CPU step about a third of its time. Bounded by CACHE_BYTES (per loader process).
        self._cache: dict[int, tuple[tv_tensors.Image, dict]] = {}
        self._cache_items = self.CACHE_BYTES // (3 * image_size * image_size)

    #: Memory the resized items may take (uint8 pixels); items beyond it are read again each time.
    CACHE_BYTES = 2 << 30

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict]:
        return self.item_at_epoch(index, self.repeats)  # epoch 1

    def item_at_epoch(self, index: int, key: int) -> tuple[torch.Tensor, dict]:
        epoch = key // self.repeats
        if epoch > self.last_epoch or float(torch.rand(())) >= self.p:
            image, target = self._tile(index)  # already S x S: the transform's resize leaves it as it is
            return image.as_subclass(torch.Tensor), dict(target)
        others = torch.randint(len(self), (3,)).tolist()
        return self.combine([self._tile(i) for i in [index, *others]])

    def _tile(self, i: int) -> tuple[tv_tensors.Image, dict]:
        if i in self._cache:
            return self._cache[i]
        image, target = self.dataset[i]
        tile = self.resize(tv_tensors.Image(image), target)
        if len(self._cache) < self._cache_items:
            self._cache[i] = tile
        return tile

    def combine(self, tiles: list[tuple[tv_tensors.Image, dict]],
                centre: tuple[int, int] | None = None) -> tuple[torch.Tensor, dict]:
        """Four ``S x S`` tiles (top-left, top-right, bottom-left, bottom-right) around a centre drawn
        from the middle half of the 2S x 2S canvas; the S x S window at the canvas centre is returned,
        with the boxes (and masks) of each tile moved, clipped and kept when :data:`MIN_VISIBLE` of
        them stays inside. ``centre`` (x, y) in window pixels, 0..S, is drawn when not given."""
        s = self.size
        # The centre in window coordinates: the canvas' [S/2, 3S/2] is the window's [0, S].
        cx, cy = centre if centre is not None else (int(v) for v in torch.randint(0, s + 1, (2,)))
        corners = [(cx - s, cy - s), (cx, cy - s), (cx - s, cy), (cx, cy)]
        canvas = torch.zeros((tiles[0][0].shape[0], s, s), dtype=torch.uint8)
        boxes, labels, masks = [], [], []
        for (image, target), (left, top) in zip(tiles, corners):
            # Cropping the tile at (-top, -left) places it at (left, top) in the window: torchvision
            # moves and clips boxes and masks with it, and fills what lies outside the tile with 0.
            canvas += F.crop(image, -top, -left, s, s).as_subclass(torch.Tensor)
            moved = F.crop(target["boxes"], -top, -left, s, s)
            before = _area(target["boxes"])
            keep = _area(moved) >= MIN_VISIBLE * before.clamp_min(1e-6)
            boxes.append(moved.as_subclass(torch.Tensor)[keep])
            labels.append(target["labels"][keep])
            if "masks" in target:
                masks.append(F.crop(target["masks"], -top, -left, s, s).as_subclass(torch.Tensor)[keep])
        first = tiles[0][1]
        out = {"boxes": tv_tensors.BoundingBoxes(torch.cat(boxes), format="XYXY", canvas_size=(s, s)),
               "labels": torch.cat(labels), "image_id": first["image_id"], "file": first["file"]}
        if masks and len(masks) == len(tiles):
            out["masks"] = tv_tensors.Mask(torch.cat(masks))
        return canvas, out


def _area(boxes: torch.Tensor) -> torch.Tensor:
    b = boxes.as_subclass(torch.Tensor)
    return (b[:, 2] - b[:, 0]).clamp_min(0) * (b[:, 3] - b[:, 1]).clamp_min(0)


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
