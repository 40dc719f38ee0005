"""Clip classification (the course's VII, recurrent CNNs): a class per clip of frames, from a per-frame
CNN feeding an LSTM (``cnn_lstm_video``), a ConvLSTM (``convlstm_video``) or a layer list.

Scoring is classification's (cross-entropy, accuracy, per-class figures and the confusion matrix).
What differs: a batch is ``(clips float32 (N, T, C, H, W) in [0, 1], labels)`` (the ``moving_mnist_clips``
dataset gives them so), image augmentations are refused (a flip or a crop drawn per frame would
break the motion a clip is classified by), and ``cnnkit predict`` reads clip files
(:mod:`cnnkit.data.video.files`: ``.npy``, ``.npz``, animated ``.gif`` or a folder of frames).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from cnnkit.errors import UserError
from cnnkit.tasks.base import Task, register_task
from cnnkit.tasks.classification import ClassificationTask, format_predictions
from cnnkit.tasks.timeseries import IMAGE_AUGMENT


def refuse_augment(cfg, task: str) -> None:
    """Clip tasks take no augmentation: image ones drawn per frame would break the motion, series ones
    have no meaning on frames."""
    on = [k for k in IMAGE_AUGMENT if getattr(cfg.augment, k)]
    if on or cfg.augment.series_active():
        name = on[0] if on else "jitter / scaling / window_slice / window_warp"
        raise UserError(f"augment.{name}: task {task} takes no augmentation (a flip or crop drawn per frame would "
                        f"break the motion in a clip); set it off")
    if cfg.train.eval_tta != "none":
        raise UserError(f"train.eval_tta={cfg.train.eval_tta}: task {task} has no test-time augmentation (set it to "
                        f"none)")


def stack_clips(items: list[tuple[torch.Tensor, Any]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Items ``(clip (T, C, H, W) float, label)`` -> ``(clips (N, T, C, H, W), labels (N,))``."""
    xs, ys = zip(*items)
    return torch.stack([torch.as_tensor(x, dtype=torch.float32) for x in xs]), torch.as_tensor(ys)


def load_clips(paths: Sequence[str], input_shape: Sequence[int] | None, *, at_least: int | None = None
               ) -> list[tuple[str, np.ndarray]]:
    """``(name, uint8 clip (T', C, H, W))`` per file, checked against the run's ``input_shape`` (T, C, H, W):
    the frames' channels and size must match and a clip needs at least ``at_least`` frames (default T)."""
    from cnnkit.data.video.files import read_clip

    if not paths:
        raise UserError("give the clip files to predict (.npy, .npz, an animated .gif or a folder of frames)")
    if input_shape is None or len(input_shape) != 4:
        raise UserError("this run has no clip shape (it was not trained on clips)")
    t, c, h, w = (int(v) for v in input_shape)
    need = t if at_least is None else at_least
    out = []
    for p in paths:
        clip = read_clip(p, channels=c)
        if clip.shape[2:] != (h, w):
            raise UserError(f"clip {str(p)!r} has {clip.shape[2]}x{clip.shape[3]} frames; the run was trained on "
                            f"{h}x{w}")
        if len(clip) < need:
            raise UserError(f"clip {str(p)!r} has {len(clip)} frames; the run reads {need}")
        out.append((str(p), clip))
    return out


def model_device(model: nn.Module) -> torch.device:
    return next((p.device for p in model.parameters()), torch.device("cpu"))


@register_task("video", "a class per clip of frames (Moving MNIST clips): CNN-LSTM, ConvLSTM; accuracy, "
                        "per-class F1")
class VideoTask(ClassificationTask):
    unit = "clips"

    def __init__(self, cfg, classes: list[str], input_shape: tuple[int, ...] | None = None) -> None:
        Task.__init__(self, cfg, classes, input_shape)
        refuse_augment(cfg, "video")
        if cfg.train.loss not in ("cross_entropy", "mse", "bce"):
            raise UserError(f"train.loss={cfg.train.loss} is not a classification loss; task video takes "
                            f"cross_entropy, mse or bce")
        self.collate = stack_clips

    def eval_forward(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return model(x)

    @torch.no_grad()
    def predict_paths(self, model: nn.Module, paths: Sequence[str], top_k: int = 5, **_: Any) -> list[dict]:
        """``cnnkit predict``'s JSON for clip files: the first T frames of each (T: the run's), its top-k
        classes and every class's probability."""
        t = int(self.input_shape[0]) if self.input_shape else 0
        clips = load_clips(paths, self.input_shape)
        was_training = model.training
        model.eval()
        x = torch.stack([torch.from_numpy(c[:t]).float().div_(255.0) for _, c in clips]).to(model_device(model))
        probs = torch.softmax(model(x).float(), 1).cpu().numpy()
        model.train(was_training)
        out = []
        for (name, clip), r in zip(clips, format_predictions([n for n, _ in clips], probs, self.classes, top_k)):
            out.append({"clip": r.pop("file"), "frames_used": t, "frames_in_file": len(clip), **r})
        return out


def clip_name(path: str) -> str:
    p = Path(path)
    return p.stem if p.suffix else p.name
