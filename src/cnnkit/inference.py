"""Using a trained run: rebuild its model from the run folder, evaluate it, predict images.

Example::

    model, info = load_run_model("runs/20261130-120000-lenet5-mnist5k-3fa2c1")
    results = predict_files(model, info, ["digit.png"], top_k=3)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from cnnkit.config import validate
from cnnkit.errors import UserError
from cnnkit.models import create_model
from cnnkit.models.weights import without_weights
from cnnkit.runs import find_checkpoint, load_checkpoint
from cnnkit.tasks import Task, create_task

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def load_run_model(source: str | os.PathLike, device: str | torch.device = "cpu",
                   which: str = "best") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the network of a run (or a cnnkit checkpoint file) with its trained weights.

    Returns the model in eval mode and ``info``: the checkpoint's ``meta``
    (classes, input_shape, mean, std), its ``config``, the ``checkpoint`` path and the ``task``.
    Checkpoints load as data only (``weights_only=True``); one that is not is refused.
    """
    path = find_checkpoint(source, which)
    ckpt = load_checkpoint(path)
    if not isinstance(ckpt, dict) or "model" not in ckpt or "config" not in ckpt or "meta" not in ckpt:
        raise UserError(f"{str(path)!r} is not a cnnkit checkpoint (it lacks model, config or meta)")
    cfg = validate(ckpt["config"])
    meta = ckpt["meta"]
    # The checkpoint holds the trained weights: never fetch model.pretrained / model.weights again.
    model = create_model(without_weights(cfg.model), tuple(meta["input_shape"]), len(meta["classes"]))
    model.load_state_dict(ckpt["model"])
    model.to(device).eval()
    task = create_task(cfg, meta["classes"], meta["input_shape"])
    return model, {**meta, "config": cfg, "checkpoint": str(path), "epoch": ckpt.get("epoch"), "task": task}


def load_image(path: str | os.PathLike, input_shape: Sequence[int]) -> np.ndarray:
    """Read an image file as uint8 (C, H, W), converted to the run's channels and size."""
    from PIL import Image, UnidentifiedImageError

    p = Path(path)
    if not p.exists():
        raise UserError(f"image {str(p)!r} does not exist")
    if p.is_dir():
        raise UserError(f"{str(p)!r} is a folder; give image files (PNG or JPEG)")
    c, h, w = input_shape
    try:
        with Image.open(p) as im:
            im = im.convert("L" if c == 1 else "RGB")
            if im.size != (w, h):
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


@torch.no_grad()
def predict_files(model: nn.Module, info: dict[str, Any], files: Sequence[str], top_k: int = 5,
                  **options: Any) -> list[dict]:
    """The task's predictions for image files (``options``: a task's own, e.g. detection's conf and iou)."""
    images = np.stack([load_image(f, info["input_shape"]) for f in files])
    x = torch.from_numpy(normalise(images, info["mean"], info["std"]))
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    task: Task = info.get("task") or create_task(info["config"], info["classes"], info["input_shape"])
    sizes = [image_size(f) for f in files]
    return task.predict(model, x.to(device), [str(f) for f in files], top_k, orig_sizes=sizes, **options)
