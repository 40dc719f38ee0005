"""Semantic segmentation stored as files: the ``masks`` dataset.

``data.path`` holds an image folder and a mask folder: ``image/`` + ``label/`` (the layout of the
ISBI 2012 membrane set in many U-Net repositories) or ``images/`` + ``masks/`` (``labels/`` and
``mask/`` are read too). When it holds neither, its ``train/`` subfolder is used. An image and its
mask share their path inside their folders, less the suffix (``image/a/x.jpg`` <-> ``label/a/x.png``).
Images are PNG, JPEG, TIFF or BMP files; masks PNG, TIFF or BMP (JPEG's lossy compression would
invent class values at the region borders).

Masks are read with PIL as they are stored, a palette PNG by its palette indices (not its colours).
Their pixel values become class indices in one of three ways, chosen for the whole set:

* ``data.mask_values`` ``{pixel value: class}`` maps each value; class ``-1`` marks pixels to
  ignore (stored as :data:`~cnnkit.data.segmentation.common.IGNORE`, 255). A value it does not
  list is an error.
* Without it, a set whose masks hold only the values 0 and 255 is binary: 0 is class 0, 255 class 1.
* Otherwise each value is a class index (a mode ``L`` PNG of 0..K-1, or a palette PNG whose indices
  are the classes, as Pascal VOC's); values 0..254 are allowed.

Every mask is read once when the dataset is built, so that a value with no class, a mask whose size
is not its image's or a missing partner stops the run before the first step; the class-index masks
are kept in memory when they are small (:data:`MASK_CACHE_BYTES`). Images are decoded when an item
is read: RGB ``(3, H, W)``, or ``(1, H, W)`` when every image of the set has one channel (modes
``1``, ``L``, ``I;16``, ``I``: the ISBI slices are grayscale, and the U-Net paper feeds one channel).
16-bit images are scaled to 0..255 (``v * 255 / 65535``, rounded).

The classes are named by ``data.class_names`` (then masks must hold classes ``< len(class_names)``),
else ``K = max class + 1`` (at least 2) classes are named ``background``/``foreground`` for two
and ``class_0``, ``class_1``, ... otherwise.

Example::

    bundle = load_data(DataConfig(name="masks", path="../shared/data/isbi2012_membrane"))
    image, mask = bundle.train[0]     # uint8 (1, 512, 512); Mask (512, 512) int64 in {0, 1}
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors

from cnnkit.config import DataConfig
from cnnkit.data.base import DataBundle
from cnnkit.data.detection.common import STATS_SIDE, keep_subset, split_indices
from cnnkit.data.registry import register_dataset
from cnnkit.data.segmentation.common import (IGNORE, default_class_names, reject_classification_options,
                                             segmentation_bundle)
from cnnkit.errors import UserError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
MASK_SUFFIXES = (".png", ".tif", ".tiff", ".bmp")
#: Names of the image folder and of the mask folder, in the order they are looked for.
IMAGE_DIRS = ("image", "images")
MASK_DIRS = ("label", "labels", "mask", "masks")
#: PIL modes of single-channel images; a set of only these is read with one channel.
GRAY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N"})
#: PIL modes of 16- or 32-bit integer images, scaled to 0..255.
WIDE_MODES = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N"})
#: The class-index masks are kept in memory when they take at most this many bytes (one per pixel).
MASK_CACHE_BYTES = 256 << 20
#: How many file names a message about several files shows.
SHOWN = 5


# ------------------------------------------------------------------------------------------ the folders

def find_folders(root: Path | str) -> tuple[Path, Path]:
    """``(image folder, mask folder)`` of ``root``, or of ``root/train`` when ``root`` has neither pair."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"data.path {str(root)!r} of the masks dataset does not exist or is not a folder")
    for base in (root, root / "train"):
        pair = _pair_in(base)
        if pair is not None:
            return pair
    raise UserError(f"data.path {str(root)!r} holds no image folder and mask folder: the masks dataset needs "
                    f"image/ + label/ or images/ + masks/ (also labels/ or mask/), in data.path or in its train/ "
                    f"subfolder")


def _pair_in(base: Path) -> tuple[Path, Path] | None:
    if not base.is_dir():
        return None
    images = [base / n for n in IMAGE_DIRS if (base / n).is_dir()]
    masks = [base / n for n in MASK_DIRS if (base / n).is_dir()]
    if not images or not masks:
        return None
    if len(images) > 1 or len(masks) > 1:
        found = ", ".join(f"{d.name}/" for d in images + masks)
        raise UserError(f"{str(base)!r} holds {found}: keep one image folder ({' or '.join(IMAGE_DIRS)}) and one "
                        f"mask folder ({' or '.join(MASK_DIRS)}), so that it is clear which to read")
    return images[0], masks[0]


def _files(folder: Path, suffixes: Sequence[str], what: str) -> dict[Path, Path]:
    """The files of ``folder`` (recursively) with one of ``suffixes``, by relative path less the suffix."""
    found: dict[Path, Path] = {}
    for f in sorted(folder.rglob("*")):
        if not f.is_file() or f.name.startswith("."):
            continue
        suffix = f.suffix.lower()
        if what == "mask" and suffix in (".jpg", ".jpeg"):
            raise UserError(f"mask {str(f)!r} is a JPEG file: its lossy compression changes pixel values at the "
                            f"region borders; save masks as {', '.join(MASK_SUFFIXES)}")
        if suffix not in suffixes:
            continue
        key = f.relative_to(folder).with_suffix("")
        if key in found:
            raise UserError(f"{what} files {str(found[key])!r} and {str(f)!r} share the name {key}, so it is not "
                            f"clear which one pairs with the other folder; rename or remove one")
        found[key] = f
    return found


def _names(keys: Sequence[Path], files: dict[Path, Path], folder: Path) -> str:
    shown = ", ".join(str(files[k].relative_to(folder)) for k in keys[:SHOWN])
    return shown + (f" and {len(keys) - SHOWN} more" if len(keys) > SHOWN else "")


def pair_files(image_dir: Path, mask_dir: Path) -> list[tuple[Path, Path]]:
    """``(image file, mask file)`` pairs of the two folders, sorted by name; an image without a mask or a
    mask without an image is an error that names the first few."""
    images = _files(image_dir, IMAGE_SUFFIXES, "image")
    if not images:
        raise UserError(f"image folder {str(image_dir)!r} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    masks = _files(mask_dir, MASK_SUFFIXES, "mask")
    lonely_images = [k for k in images if k not in masks]
    if lonely_images:
        raise UserError(f"{len(lonely_images)} image(s) of {str(image_dir)!r} have no mask in {str(mask_dir)!r}: "
                        f"{_names(lonely_images, images, image_dir)} (a mask has its image's name with the suffix "
                        f"{', '.join(MASK_SUFFIXES)})")
    lonely_masks = [k for k in masks if k not in images]
    if lonely_masks:
        raise UserError(f"{len(lonely_masks)} mask(s) of {str(mask_dir)!r} have no image in {str(image_dir)!r}: "
                        f"{_names(lonely_masks, masks, mask_dir)} (an image has its mask's name with the suffix "
                        f"{', '.join(IMAGE_SUFFIXES)})")
    return [(images[k], masks[k]) for k in sorted(images)]


# -------------------------------------------------------------------------------------------- the masks

def read_mask_pixels(path: Path | str) -> np.ndarray:
    """The stored pixel values of the mask file ``path``, 2-D (uint8, or uint16 / int32 for 16- and
    32-bit masks): palette indices for a palette PNG, 0/1 for a 1-bit image, the gray value of an RGB
    mask whose three channels are equal. A colour mask or an unreadable file is a UserError."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            mode = im.mode
            if mode in ("L", "P") or mode in WIDE_MODES:
                return np.asarray(im)
            if mode == "1":
                return np.asarray(im, dtype=np.uint8)
            if mode in ("RGB", "RGBA", "LA"):
                a = np.asarray(im)
                colour = a[..., :3] if mode != "LA" else a[..., :1]
                if (colour == colour[..., :1]).all():
                    return np.ascontiguousarray(colour[..., 0])
                raise UserError(f"mask {str(path)!r} is a colour image (mode {mode}) whose channels differ; save "
                                f"masks with one value per pixel (a mode L PNG of class indices or a palette PNG), "
                                f"then map values to classes with data.mask_values if needed")
    except (UnidentifiedImageError, OSError) as e:
        raise UserError(f"mask {str(path)!r} is not an image PIL can read ({e})") from None
    raise UserError(f"mask {str(path)!r} has PIL mode {mode}; masks must be 1-, 8- or 16-bit images of class values "
                    f"(modes 1, L, P, I;16, or gray RGB)")


def pixel_values(a: np.ndarray) -> np.ndarray:
    """The distinct values of an integer array, sorted (a histogram for 8- and 16-bit arrays: fast)."""
    if a.dtype == np.uint8:
        return np.flatnonzero(np.bincount(a.ravel(), minlength=256))
    if a.dtype.kind == "u" and a.dtype.itemsize == 2:
        return np.flatnonzero(np.bincount(a.ravel().astype(np.int64), minlength=1 << 16))
    return np.unique(a)


@dataclass(frozen=True)
class MaskCoding:
    """How the pixel values of a set's masks become class indices: ``mapping`` value -> class index
    (or :data:`IGNORE`), and the number of classes ``num_classes``."""

    mapping: dict[int, int]
    num_classes: int

    def apply(self, pixels: np.ndarray, file: str) -> np.ndarray:
        """The class-index mask uint8 ``(H, W)`` of a mask's stored ``pixels``."""
        if pixels.dtype == np.uint8 or (pixels.dtype.kind == "u" and pixels.dtype.itemsize == 2):
            lut = np.full(256 if pixels.dtype == np.uint8 else 1 << 16, -1, dtype=np.int16)
            for v, c in self.mapping.items():
                if 0 <= v < len(lut):
                    lut[v] = c
            out = lut[pixels]
        else:
            values, inverse = np.unique(pixels, return_inverse=True)
            classes = np.asarray([self.mapping.get(int(v), -1) for v in values], dtype=np.int16)
            out = classes[inverse].reshape(pixels.shape)
        if (out < 0).any():
            bad = sorted(set(pixel_values(pixels).tolist()) - set(self.mapping))
            raise UserError(f"mask {file!r} holds pixel value(s) {bad[:SHOWN]} that it did not hold when the dataset "
                            f"was built (the file changed); rebuild the dataset")
        return out.astype(np.uint8)


def mask_coding(values: Sequence[tuple[str, np.ndarray]], mask_values: dict[int, int] | None,
                class_names: Sequence[str] | None) -> MaskCoding:
    """The :class:`MaskCoding` of a set whose masks hold ``values`` (``(file, distinct values)`` each).

    See the module docstring for the three codings. A value with no class is a UserError naming the
    first mask that holds it, the value, the values allowed and ``data.mask_values``.
    """
    k_given = len(class_names) if class_names is not None else None
    if k_given is not None and k_given < 2:
        raise UserError(f"data.class_names={list(class_names)} names {k_given} class; segmentation needs at least 2 "
                        f"(e.g. [background, foreground])")
    if k_given is not None and k_given > IGNORE:
        raise UserError(f"data.class_names names {k_given} classes; masks hold at most {IGNORE} (class indices "
                        f"0..{IGNORE - 1}, {IGNORE} marks pixels to ignore)")
    top = (k_given or IGNORE) - 1  # the largest class index allowed
    seen = sorted(set().union(*(v.tolist() for _, v in values))) if values else []
    hint = "data.mask_values (pixel value -> class index, -1 to ignore)"
    if mask_values:
        for v, c in mask_values.items():
            if not (c == -1 or 0 <= c <= top):
                allowed = f"0..{top} ({k_given} classes in data.class_names)" if k_given else f"0..{top}"
                raise UserError(f"data.mask_values maps pixel value {v} to class {c}; a class is -1 (ignore) or "
                                f"{allowed}")
        mapping = {int(v): (IGNORE if c == -1 else int(c)) for v, c in mask_values.items()}
        allowed = f"the values data.mask_values lists: {sorted(mapping)}"
        fix = f"add it to {hint}"
    elif seen and set(seen) <= {0, 255} and 255 in seen:
        mapping = {0: 0, 255: 1}  # binary masks (0 = background, 255 = foreground)
        allowed, fix = "0 and 255", hint
    else:
        mapping = {v: v for v in seen if 0 <= v <= top}
        allowed = (f"class indices 0..{top} ({k_given} classes in data.class_names)" if k_given else
                   f"class indices 0..{top}, or only 0 and 255 in every mask (read as 0/1)")
        fix = f"map the values to classes with {hint}"
    for file, vals in values:
        bad = [int(v) for v in vals.tolist() if int(v) not in mapping]
        if bad:
            more = f" (and {len(bad) - 1} more value(s): {bad[1:1 + SHOWN]})" if len(bad) > 1 else ""
            raise UserError(f"mask {file!r} has pixel value {bad[0]}{more}, which is no class: allowed are {allowed}; "
                            f"{fix}")
    if k_given is not None:
        k = k_given
    else:
        classes = [c for c in mapping.values() if c != IGNORE]
        k = max(2, max(classes, default=0) + 1)
    return MaskCoding(mapping, k)


# ------------------------------------------------------------------------------------------- the images

def read_image(path: Path | str, channels: int, side: int | None = None) -> torch.Tensor:
    """The image at ``path`` as uint8 ``(channels, H, W)`` (1: gray, 3: RGB); 16-bit images scaled to
    0..255; with ``side``, shrunk to ``side`` x ``side`` (for the normalisation statistics)."""
    from PIL import Image

    with Image.open(path) as im:
        if im.mode in WIDE_MODES:
            wide = np.asarray(im).astype(np.int64).clip(0, 65535)
            im = Image.fromarray(((wide * 255 + 32767) // 65535).astype(np.uint8), mode="L")
        im = im.convert("L" if channels == 1 else "RGB")
        if side is not None:
            im = im.resize((side, side), Image.BILINEAR)
        a = torch.from_numpy(np.asarray(im).copy())
    return a.unsqueeze(0) if channels == 1 else a.permute(2, 0, 1).contiguous()


def _image_header(path: Path) -> tuple[tuple[int, int], str]:
    """``((W, H), PIL mode)`` of an image file, from its header."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            size, mode = im.size, im.mode
    except (UnidentifiedImageError, OSError) as e:
        raise UserError(f"image {str(path)!r} is not an image PIL can read ({e})") from None
    if mode == "F":
        raise UserError(f"image {str(path)!r} holds floating-point pixels (PIL mode F); save images as 8- or 16-bit "
                        f"(gray or RGB)")
    return size, mode


# ------------------------------------------------------------------------------------------ the dataset

@dataclass(frozen=True)
class MaskRecord:
    """One image file and its mask file, of size ``(H, W)``."""

    image: str
    mask: str
    size: tuple[int, int]


class MaskDataset(Dataset):
    """Image files with their mask files: item ``i`` is ``(image uint8 (C, H, W), Mask (H, W) int64)``.

    The masks were read and checked when the dataset was built (see the module docstring); the
    class-index masks are kept in ``masks`` (one uint8 array per record) when they are small, else
    read again with ``coding`` when an item is read. :meth:`subset` keeps some of the records.
    """

    def __init__(self, records: Sequence[MaskRecord], classes: Sequence[str], channels: int, coding: MaskCoding,
                 masks: Sequence[np.ndarray] | None = None) -> None:
        self.records = list(records)
        self.classes = list(classes)
        self.channels = channels
        self.coding = coding
        self.masks = list(masks) if masks is not None else None

    def __len__(self) -> int:
        return len(self.records)

    def class_mask(self, i: int) -> np.ndarray:
        """The class-index mask uint8 ``(H, W)`` of item ``i`` (:data:`IGNORE` where ignored)."""
        if self.masks is not None:
            return self.masks[i]
        r = self.records[i]
        mask = self.coding.apply(read_mask_pixels(r.mask), r.mask)
        if mask.shape != r.size:
            raise UserError(f"mask {r.mask!r} is {mask.shape[1]}x{mask.shape[0]} now but was {r.size[1]}x{r.size[0]} "
                            f"when the dataset was built; rebuild the dataset")
        return mask

    def __getitem__(self, i: int) -> tuple[torch.Tensor, tv_tensors.Mask]:
        r = self.records[i]
        image = read_image(r.image, self.channels)
        if tuple(image.shape[1:]) != r.size:
            raise UserError(f"image {r.image!r} is {image.shape[2]}x{image.shape[1]} now but was "
                            f"{r.size[1]}x{r.size[0]} when the dataset was built; rebuild the dataset")
        mask = torch.from_numpy(self.class_mask(i)).to(torch.int64)  # a copy: the kept mask is never changed
        return image, tv_tensors.Mask(mask)

    def thumbnail(self, i: int, side: int = STATS_SIDE) -> torch.Tensor:
        """Image ``i`` shrunk to uint8 ``(C, side, side)`` (for the normalisation statistics)."""
        return read_image(self.records[i].image, self.channels, side)

    def subset(self, index: Sequence[int]) -> "MaskDataset":
        index = [int(i) for i in index]
        masks = [self.masks[i] for i in index] if self.masks is not None else None
        return MaskDataset([self.records[i] for i in index], self.classes, self.channels, self.coding, masks)

    @property
    def max_side(self) -> int:
        """The largest height or width of the images."""
        return max((max(r.size) for r in self.records), default=0)


def read_masks(root: Path | str, mask_values: dict[int, int] | None = None,
               class_names: Sequence[str] | None = None) -> MaskDataset:
    """Every image of ``root`` (see :func:`find_folders`) with its mask, checked (see the module docstring).

    Example::

        ds = read_masks("../shared/data/isbi2012_membrane/train")
        ds.classes, ds.channels        # ['background', 'foreground'], 1
    """
    image_dir, mask_dir = find_folders(root)
    pairs = pair_files(image_dir, mask_dir)
    records, modes, values, pixels = [], set(), [], []
    kept = 0
    for image_file, mask_file in pairs:
        (w, h), mode = _image_header(image_file)
        modes.add(mode)
        raw = read_mask_pixels(mask_file)
        if raw.shape != (h, w):
            raise UserError(f"mask {str(mask_file)!r} is {raw.shape[1]}x{raw.shape[0]} but its image "
                            f"{str(image_file)!r} is {w}x{h}; a mask has its image's width and height")
        records.append(MaskRecord(str(image_file), str(mask_file), (h, w)))
        values.append((str(mask_file), pixel_values(raw)))
        kept += raw.size
        pixels.append(raw if kept <= MASK_CACHE_BYTES else None)
    coding = mask_coding(values, mask_values, class_names)
    masks = None
    if all(p is not None for p in pixels):
        masks = [coding.apply(p, r.mask) for p, r in zip(pixels, records)]
    classes = list(class_names) if class_names is not None else default_class_names(coding.num_classes)
    channels = 1 if modes <= GRAY_MODES else 3
    return MaskDataset(records, classes, channels, coding, masks)


@register_dataset("masks", "semantic segmentation: image/ + label/ (or images/ + masks/) files paired by name "
                           "(data.path, or its train/); masks of class indices, binary 0/255, or mapped by "
                           "data.mask_values")
def masks(cfg: DataConfig) -> DataBundle:
    reject_classification_options(cfg)
    if not cfg.path:
        raise UserError("data.name=masks needs data.path=FOLDER (with image/ + label/ or images/ + masks/)")
    dataset = read_masks(cfg.path, cfg.mask_values, cfg.class_names)
    tr, va = split_indices(len(dataset), cfg.val_fraction, cfg.split_seed, cfg.name)
    train, val = dataset.subset(tr), dataset.subset(va)
    train = train.subset(keep_subset(len(train), cfg.subset, cfg.split_seed))
    description = (f"masks {cfg.path}: {len(dataset)} images ({dataset.channels} channel"
                   f"{'s' if dataset.channels > 1 else ''}), {len(dataset.classes)} classes "
                   f"({', '.join(dataset.classes[:6])}{', ...' if len(dataset.classes) > 6 else ''}); "
                   f"{len(train)} train / {len(val)} val")
    return segmentation_bundle(cfg, train, val, dataset.classes, dataset.channels, dataset.max_side, description)
