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
from cnnkit.rundir import check_run_dir, load_checkpoint

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def find_checkpoint(source: str | os.PathLike, which: str = "best") -> Path:
    """A checkpoint file from a run folder (best.pt, else last.pt) or a path to a .pt file."""
    p = Path(source)
    if p.is_file():
        return p
    run = check_run_dir(p)
    for name in ((f"{which}.pt", "last.pt") if which == "best" else (f"{which}.pt", "best.pt")):
        ckpt = run / "checkpoints" / name
        if ckpt.exists():
            return ckpt
    raise UserError(f"run folder {str(p)!r} has no checkpoint")  # pragma: no cover - check_run_dir caught it


def load_run_model(source: str | os.PathLike, device: str | torch.device = "cpu",
                   which: str = "best") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the network of a run (or a cnnkit checkpoint file) with its trained weights.

    Returns the model in eval mode and ``info``: the checkpoint's ``meta``
    (classes, input_shape, mean, std), its ``config`` and the ``checkpoint`` path.
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
    return model, {**meta, "config": cfg, "checkpoint": str(path), "epoch": ckpt.get("epoch")}


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
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise UserError(f"cannot read image {str(p)!r}: not a readable PNG/JPEG image ({e})") from None
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1).copy()


def normalise(images: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """uint8 (N, C, H, W) -> float32, (x / 255 - mean) / std per channel, as in training."""
    m = np.asarray(mean, dtype=np.float32).reshape(1, -1, 1, 1)
    s = np.asarray(std, dtype=np.float32).reshape(1, -1, 1, 1)
    return ((images.astype(np.float32) / 255.0) - m) / s


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


@torch.no_grad()
def predict_files(model: nn.Module, info: dict[str, Any], files: Sequence[str], top_k: int = 5) -> list[dict]:
    images = np.stack([load_image(f, info["input_shape"]) for f in files])
    x = torch.from_numpy(normalise(images, info["mean"], info["std"]))
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    probs = torch.softmax(model(x.to(device)).float(), dim=1).cpu().numpy()
    return format_predictions(files, probs, info["classes"], top_k)
