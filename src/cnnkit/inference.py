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
from cnnkit.data.files import image_size, load_image, normalise  # noqa: F401  (re-exported)
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
    if cfg.model.name in ("yolo_n", "yolo_s"):  # a run saved before the DFL head keeps its own head
        from cnnkit.models.detection.yolo import options_for_weights

        options = options_for_weights(cfg.model.options, ckpt["model"])
        cfg = cfg.model_copy(update={"model": cfg.model.model_copy(update={"options": options})})
    # The checkpoint holds the trained weights: never fetch model.pretrained / model.weights again.
    model = create_model(without_weights(cfg.model), tuple(meta["input_shape"]), len(meta["classes"]))
    model.load_state_dict(ckpt["model"])
    model.to(device).eval()
    task = create_task(cfg, meta["classes"], meta["input_shape"])
    task.attach(meta)  # a text run's tokeniser
    return model, {**meta, "config": cfg, "checkpoint": str(path), "epoch": ckpt.get("epoch"), "task": task}


def held_out_data(info: dict[str, Any], split: str = "val") -> Any:
    """The run's own held-out ``split`` (``val`` or ``test``), cut from its data as training cut it: for a
    fold of a cross-validation run (``PARENT/folds/foldNN``), that fold."""
    from cnnkit.data import load_data, load_folds

    cfg = info["config"]
    fold = _cv_fold(Path(info["checkpoint"]).parent.parent)
    if fold is not None and split == "val":
        index, k = fold
        return load_folds(cfg.data, k, task=cfg.task)[index - 1].val
    bundle = load_data(cfg.data, task=cfg.task)
    data = bundle.val if split == "val" else bundle.test
    if data is None:
        raise UserError(f"dataset {cfg.data.name!r} has no {split} split" + ("; use --split val" if split != "val"
                                                                            else ""))
    return data


def _cv_fold(run_dir: Path) -> tuple[int, int] | None:
    """``(fold, K)`` when ``run_dir`` is fold ``foldNN`` of a K-fold cross-validation run, else None."""
    from cnnkit.config import read_yaml

    parent = run_dir.parent.parent
    if run_dir.parent.name != "folds" or not run_dir.name.startswith("fold") or not run_dir.name[4:].isdigit() \
            or not (parent / "config.yaml").is_file():
        return None
    k = ((read_yaml(parent / "config.yaml") or {}).get("train") or {}).get("cv_folds")
    return (int(run_dir.name[4:]), int(k)) if isinstance(k, int) and 1 <= int(run_dir.name[4:]) <= k else None


def ordered_loader(info: dict[str, Any], data: Any, device: str | torch.device = "cpu",
                   batch_size: int | None = None) -> Any:
    """Batches of ``data`` in order, normalised as the run's inputs were, without augmentation."""
    from cnnkit.data.loaders import make_loader

    cfg, task = info["config"], info["task"]
    return make_loader(task.eval_split(data), batch_size=batch_size or cfg.data.eval_batch_size or 256,
                       mean=info["mean"], std=info["std"], shuffle=False, seed=0, device=device, augment=None,
                       collate=task.collate, transform=task.transform(train=False))


@torch.no_grad()
def sample_grid(model: nn.Module, gan: bool, n: int, seed: int, nrow: int | None = None) -> torch.Tensor:
    """``n`` images drawn by a generative run's model (a GAN's generator, a VAE's decoder) from noise seeded
    with ``seed``, a GAN's mapped to [0, 1], as one grid ``(3, H, W)`` of ``nrow`` per row (default: square)."""
    import math

    from torchvision.utils import make_grid

    images = model.sample(n, torch.Generator().manual_seed(seed))
    if gan:
        images = model.to_unit(images)
    images = images.float().clamp(0.0, 1.0).cpu()
    return make_grid(images, nrow=nrow or max(1, math.ceil(math.sqrt(n))), padding=2, pad_value=1.0)


@torch.no_grad()
def predict_files(model: nn.Module, info: dict[str, Any], files: Sequence[str], top_k: int = 5,
                  **options: Any) -> list[dict]:
    """The task's predictions for image files (``options``: a task's own, e.g. detection's conf and iou)."""
    task: Task = info.get("task") or create_task(info["config"], info["classes"], info["input_shape"])
    own = getattr(task, "predict_files", None)
    if own is not None:  # a task that reads the files itself (segmentation: each at its own size)
        return own(model, info, files, top_k, **options)
    images = np.stack([load_image(f, info["input_shape"]) for f in files])
    x = torch.from_numpy(normalise(images, info["mean"], info["std"]))
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    sizes = [image_size(f) for f in files]
    return task.predict(model, x.to(device), [str(f) for f in files], top_k, orig_sizes=sizes, **options)
