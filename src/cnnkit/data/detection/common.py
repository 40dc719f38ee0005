"""What every detection dataset shares: the item layout, box checks, the held-out split and the bundle.

An item is ``(image, target)``: ``image`` a uint8 tensor ``(3, H, W)`` at the image's own size
(grayscale and palette images converted to RGB) and ``target`` a dict with

* ``"boxes"``: :class:`torchvision.tv_tensors.BoundingBoxes` ``(K, 4)`` float32, XYXY, absolute
  pixel coordinates on the continuous 0..W x 0..H plane, ``canvas_size=(H, W)``;
* ``"labels"``: int64 ``(K,)`` in ``0..num_classes - 1``;
* ``"image_id"``: int; ``"file"``: str (the image's path, or a name for a generated image);
* ``"masks"`` (generated sets only): :class:`torchvision.tv_tensors.Mask` ``(K, H, W)`` uint8.

Every annotation is checked when the dataset is built (image sizes read from the file headers), so
that a bad box or a missing file stops the run before the first step, not in the middle of an epoch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors

from cnnkit.config import DataConfig
from cnnkit.data.base import DataBundle, channel_stats
from cnnkit.errors import UserError

#: How far (in pixels) a box may overshoot the image before it is an error; smaller overshoots are
#: clipped (annotation tools often write W or W + 1 for a box that touches the right edge).
BOX_TOLERANCE = 1.0
#: Side of the thumbnails the normalisation statistics are computed on (see :func:`detection_stats`).
STATS_SIDE = 64
#: At most this many training images enter the normalisation statistics.
STATS_IMAGES = 200


def make_target(boxes: torch.Tensor, labels: torch.Tensor, image_id: int, file: str,
                size: tuple[int, int], masks: torch.Tensor | None = None) -> dict:
    """The target dict of one item (see the module docstring); ``size`` is the image's ``(H, W)``."""
    target = {
        "boxes": tv_tensors.BoundingBoxes(boxes.reshape(-1, 4).to(torch.float32), format="XYXY",
                                          canvas_size=tuple(size)),
        "labels": labels.to(torch.int64),
        "image_id": int(image_id),
        "file": str(file),
    }
    if masks is not None:
        target["masks"] = tv_tensors.Mask(masks.to(torch.uint8))
    return target


def check_boxes(boxes: np.ndarray, width: int, height: int, where: Callable[[int], str]) -> np.ndarray:
    """Boxes ``(K, 4)`` XYXY in pixels, checked against a ``width`` x ``height`` image and clipped to it.

    A box with a non-finite coordinate, zero or negative width or height, or one that overshoots the
    image by more than :data:`BOX_TOLERANCE` pixels raises a UserError whose message starts with
    ``where(k)`` (the file, image and annotation of box ``k``). Smaller overshoots are clipped; a box
    left with no area by clipping is an error too.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    out = boxes.copy()
    for k, (x1, y1, x2, y2) in enumerate(boxes):
        shown = f"[{_num(x1)}, {_num(y1)}, {_num(x2)}, {_num(y2)}]"
        if not all(math.isfinite(v) for v in (x1, y1, x2, y2)):
            raise UserError(f"{where(k)}: box (x1, y1, x2, y2) = {shown} has a coordinate that is not a number")
        if x2 <= x1 or y2 <= y1:
            raise UserError(f"{where(k)}: box (x1, y1, x2, y2) = {shown} has zero or negative area "
                            f"(width {_num(x2 - x1)}, height {_num(y2 - y1)}); a box needs x2 > x1 and y2 > y1")
        tol = BOX_TOLERANCE
        if x1 < -tol or y1 < -tol or x2 > width + tol or y2 > height + tol:
            raise UserError(f"{where(k)}: box (x1, y1, x2, y2) = {shown} lies outside the {width}x{height} "
                            f"image by more than {tol:g} pixel; boxes must lie within 0..{width} x 0..{height}")
        cx1, cy1, cx2, cy2 = max(x1, 0.0), max(y1, 0.0), min(x2, float(width)), min(y2, float(height))
        if cx2 <= cx1 or cy2 <= cy1:
            raise UserError(f"{where(k)}: box (x1, y1, x2, y2) = {shown} has no area inside the "
                            f"{width}x{height} image")
        out[k] = (cx1, cy1, cx2, cy2)
    return out


def _num(v: float) -> str:
    return f"{v:g}"


def image_size_of(path: Path, where: str) -> tuple[int, int]:
    """``(W, H)`` of the image file ``path`` from its header (PIL reads no pixels for this).

    A missing or unreadable file raises a UserError that starts with ``where`` (who names the file).
    """
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise UserError(f"{where}: image file {str(path)!r} does not exist")
    try:
        with Image.open(path) as im:
            return im.size
    except (UnidentifiedImageError, OSError) as e:
        raise UserError(f"{where}: {str(path)!r} is not an image PIL can read ({e})") from None


def read_rgb(path: str, side: int | None = None) -> torch.Tensor:
    """The image at ``path`` as uint8 ``(3, H, W)`` RGB; with ``side``, shrunk to ``side`` x ``side``
    (JPEGs decoded at a reduced scale first, which is much faster on large photos)."""
    from PIL import Image

    with Image.open(path) as im:
        if side is not None:
            im.draft("RGB", (side, side))  # a JPEG decodes at 1/2, 1/4 or 1/8 scale; others ignore it
        im = im.convert("RGB")
        if side is not None:
            im = im.resize((side, side), Image.BILINEAR)
        return torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1).contiguous()


@dataclass(frozen=True)
class ImageRecord:
    """One annotated image file: its boxes (``(K, 4)`` XYXY pixels, checked), labels and size ``(H, W)``."""

    file: str
    size: tuple[int, int]
    boxes: torch.Tensor
    labels: torch.Tensor
    image_id: int


class DetectionDataset(Dataset):
    """Annotated image files (COCO, YOLO, VOC): each item decodes one image and returns ``(image, target)``.

    The annotations were read and checked when the dataset was built; an item only decodes its file.
    ``records`` holds them in order; :meth:`subset` keeps some of them.
    """

    def __init__(self, records: Sequence[ImageRecord], classes: Sequence[str]) -> None:
        self.records = list(records)
        self.classes = list(classes)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, dict]:
        r = self.records[i]
        image = read_rgb(r.file)
        if tuple(image.shape[1:]) != r.size:
            # The file was replaced after the dataset was built: its boxes no longer fit it.
            raise UserError(f"image {r.file!r} is {image.shape[2]}x{image.shape[1]} now but was "
                            f"{r.size[1]}x{r.size[0]} when its annotations were read; rebuild the dataset")
        return image, make_target(r.boxes, r.labels, r.image_id, r.file, r.size)

    def thumbnail(self, i: int, side: int = STATS_SIDE) -> torch.Tensor:
        """Image ``i`` shrunk to uint8 ``(3, side, side)`` (for the normalisation statistics)."""
        return read_rgb(self.records[i].file, side)

    def subset(self, index: Sequence[int]) -> "DetectionDataset":
        return DetectionDataset([self.records[int(i)] for i in index], self.classes)

    @property
    def num_boxes(self) -> int:
        return sum(len(r.labels) for r in self.records)


def reject_classification_options(cfg: DataConfig) -> None:
    """``data.classes`` and ``data.per_class`` pick classes of a classifier's labels: a UserError here."""
    for key in ("classes", "per_class"):
        value = getattr(cfg, key)
        if value is not None:
            raise UserError(f"data.{key}={value} is a classification option; detection dataset {cfg.name!r} "
                            f"keeps every class and every image (unset data.{key}; data.subset=N keeps N "
                            f"training images)")


def split_indices(n: int, val_fraction: float, seed: int, name: str) -> tuple[list[int], list[int]]:
    """Indices ``(train, val)`` of ``n`` images: ``round(val_fraction * n)`` random images (seeded by
    ``seed``) held out, at least one image in each split."""
    if n < 2:
        raise UserError(f"dataset {name!r} has {n} image(s); a training and a validation split need at least 2")
    k = min(n - 1, max(1, int(round(val_fraction * n))))
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n, generator=g)
    return sorted(perm[k:].tolist()), sorted(perm[:k].tolist())


def keep_subset(n: int, subset: int | None, seed: int) -> list[int]:
    """``subset`` of ``n`` training indices drawn at random (seeded), or all of them."""
    if subset is None or subset >= n:
        return list(range(n))
    g = torch.Generator().manual_seed(seed + 29)
    return sorted(torch.randperm(n, generator=g)[:subset].tolist())


def detection_stats(dataset, seed: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std (0..1 scale) of up to :data:`STATS_IMAGES` training images.

    Each image is shrunk to :data:`STATS_SIDE` squared first: the task resizes every image to one
    square size, so every image weighs the same in what the network sees, whatever its file size.
    """
    n = len(dataset)
    g = torch.Generator().manual_seed(seed + 41)
    pick = torch.randperm(n, generator=g)[:STATS_IMAGES].tolist()
    thumbs = torch.stack([dataset.thumbnail(i) for i in pick])
    return channel_stats(thumbs)


def detection_bundle(cfg: DataConfig, train, val, classes: Sequence[str], default_size: int,
                     description: str) -> DataBundle:
    """The DataBundle of a detection dataset (its own validation split, ``extra["task"]="detection"``)."""
    mean, std = detection_stats(train, cfg.split_seed)
    size = cfg.image_size or default_size
    return DataBundle(train=train, val=val, test=None, classes=list(classes), input_shape=(3, size, size),
                      mean=mean, std=std, description=description, extra={"task": "detection"})


def split_and_bundle(cfg: DataConfig, dataset: DetectionDataset, default_size: int, what: str) -> DataBundle:
    """Cut the held-out split of an annotated-file dataset, apply ``data.subset`` and make the bundle."""
    tr, va = split_indices(len(dataset), cfg.val_fraction, cfg.split_seed, cfg.name)
    train, val = dataset.subset(tr), dataset.subset(va)
    train = train.subset(keep_subset(len(train), cfg.subset, cfg.split_seed))
    description = (f"{what}: {len(dataset)} images, {dataset.num_boxes} boxes, {len(dataset.classes)} "
                   f"classes; {len(train)} train / {len(val)} val")
    return detection_bundle(cfg, train, val, dataset.classes, default_size, description)
