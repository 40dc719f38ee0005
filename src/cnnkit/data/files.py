"""Image files as networks take them: read (channels and size of a run), normalised, measured.

Shared by ``cnnkit predict`` (:mod:`cnnkit.inference`), the tasks that read files themselves
(segmentation predicts each image at its own size) and the ONNX path.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from cnnkit.errors import UserError


def load_image(path: str | os.PathLike, input_shape: Sequence[int], *, resize: bool = True) -> np.ndarray:
    """Read an image file as uint8 (C, H, W), converted to the run's channels and (``resize``) size."""
    from PIL import Image, UnidentifiedImageError

    p = Path(path)
    if not p.exists():
        raise UserError(f"image {str(p)!r} does not exist")
    if p.is_dir():
        raise UserError(f"{str(p)!r} is a folder; give image files (PNG or JPEG)")
    c, h, w = input_shape
    try:
        with Image.open(p) as im:
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16-bit grey: scaled to 8 bits, not clipped
                im = Image.fromarray(np.round(np.asarray(im, dtype=np.float64).clip(0, 65535) * 255 / 65535)
                                     .astype(np.uint8))
            im = im.convert("L" if c == 1 else "RGB")
            if resize and im.size != (w, h):
                im = im.resize((w, h), Image.Resampling.BILINEAR)
            arr = np.asarray(im, dtype=np.uint8)
    except Image.DecompressionBombError as e:
        raise UserError(f"refusing image {str(p)!r}: {e}") from None
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise UserError(f"cannot read image {str(p)!r}: not a readable PNG/JPEG image ({e})") from None
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1).copy()


def normalise(images: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """uint8 (N, C, H, W) -> float32, (x / 255 - mean) / std per channel, as in training."""
    m = np.asarray(mean, dtype=np.float32).reshape(1, -1, 1, 1)
    s = np.asarray(std, dtype=np.float32).reshape(1, -1, 1, 1)
    return ((images.astype(np.float32) / 255.0) - m) / s


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """``(H, W)`` of an image file (its header only), after :func:`load_image` has accepted it."""
    from PIL import Image

    with Image.open(path) as im:
        return im.size[1], im.size[0]
