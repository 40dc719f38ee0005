"""The Moving MNIST datasets: ``moving_mnist`` (task ``frames``: predict the next frames) and
``moving_mnist_clips`` (task ``video``: a class per clip), both generated offline from the bundled
MNIST digits (:mod:`cnnkit.data.video.moving_mnist`).

**Held-out digits.** The 5,000 digits of the bundled subset are split first, by class
(``data.val_fraction`` of each class, drawn by ``data.split_seed``): training clips are made of
training digits only and validation clips of validation digits only, so no MNIST image is seen in
both. Then ``data.clips`` clips are drawn, ``round(clips * val_fraction)`` of them for validation, the
rest for training, each split from its own seed derived from ``data.split_seed``: the same config
gives the same clips, whatever the training seed.

**Options** (``data.*``): ``clips`` (int, default 2000, training + validation), ``frames`` (int,
default 10, the frames a model sees), ``future`` (int, default 10, ``moving_mnist`` only: the frames
after them to predict), ``digits`` (int, default 2), ``image_size`` (the frame side, default 64),
``val_fraction``, ``split_seed``. ``moving_mnist_clips`` also takes ``classes``, ``per_class`` and
``subset`` (the data layer applies them).

**Items.** ``moving_mnist``: ``(x, y)``, ``x`` float32 ``(frames, 1, S, S)`` and ``y`` float32
``(future, 1, S, S)``, pixel values scaled to [0, 1] (the bundle's mean 0 and std 1 say: nothing
more to normalise). ``moving_mnist_clips``: ``(clip float32 (frames, 1, S, S) in [0, 1], class)``.
Both splits also hold the whole clips as one uint8 tensor (``.clips``) for batching on the device
without a DataLoader: ``split.batch(index)`` gives the items of ``index`` stacked.

The bundle's ``input_shape`` is ``(frames, 1, S, S)``, its ``extra["task"]`` ``frames`` or ``video``;
``moving_mnist``'s ``classes`` are empty (a frame predictor has none) and its ``extra`` holds
``frames``, ``future``, ``digits``, ``copy_last_mse`` (the copy-the-last-frame baseline's MSE) and
``blank_mse`` (predicting empty frames), each ``{"train": ..., "val": ...}``: the numbers to beat. (The
digits move about their stroke width per frame, so copying the last frame is barely better than an
empty frame, even for the next frame alone.)
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from cnnkit.config import DataConfig
from cnnkit.data.base import DataBundle
from cnnkit.data.builtin import DIGIT_NAMES, _mnist5k_arrays
from cnnkit.data.registry import register_dataset
from cnnkit.data.timeseries.dataset import stratified_indices
from cnnkit.data.video.moving_mnist import PATCH, blank_mse, copy_last_mse, moving_mnist, moving_mnist_clips
from cnnkit.errors import UserError

#: The ``data.*`` keys of the two datasets with their defaults, read with ``getattr`` (they may be absent).
DEFAULTS = {"clips": 2000, "frames": 10, "future": 10, "digits": 2}
OPTIONS = ("data.clips, data.frames, data.future, data.digits, data.image_size (the frame side), data.val_fraction "
           "and data.split_seed")
_FOREIGN = ("path", "annotations", "mask_values", "class_names", "crop_size", "text_column", "label_column",
            "max_vocab", "max_length", "series_length", "time_column", "value_columns", "target_columns", "lookback",
            "season")
_FOREIGN_DEFAULTS = {"tokenizer": "word", "min_freq": 1, "lowercase": True, "unequal_length": "pad", "horizon": 1}


def _scaled(x: torch.Tensor) -> torch.Tensor:
    return x.float().div_(255.0)


class FrameClips:
    """Clips split in two along time: ``clips`` uint8 (N, frames + future, C, H, W); item ``i`` is the first
    ``frames`` frames and the ``future`` after them, float32 in [0, 1]."""

    def __init__(self, clips: torch.Tensor, frames: int) -> None:
        if clips.ndim != 5 or clips.dtype != torch.uint8 or not 0 < frames < clips.shape[1]:
            raise ValueError(f"clips uint8 (N, T + K, C, H, W) with 0 < frames < T + K, got {clips.dtype} "
                             f"{tuple(clips.shape)} and frames={frames}")
        self.clips, self.frames = clips, frames

    @property
    def future(self) -> int:
        return self.clips.shape[1] - self.frames

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        clip = self.clips[i]
        return _scaled(clip[:self.frames]), _scaled(clip[self.frames:])

    def batch(self, index: Sequence[int] | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x (n, frames, C, H, W), y (n, future, C, H, W))`` float32 in [0, 1], on the clips' device."""
        clips = self.clips[torch.as_tensor(index, dtype=torch.long, device=self.clips.device)]
        return _scaled(clips[:, :self.frames]), _scaled(clips[:, self.frames:])

    def subset(self, index: Sequence[int] | torch.Tensor) -> "FrameClips":
        return FrameClips(self.clips[torch.as_tensor(index, dtype=torch.long)], self.frames)

    def copy_last_mse(self) -> float:
        """The copy-the-last-frame baseline's MSE on this split (pixel values in [0, 1])."""
        c = self.clips.cpu().numpy()
        return copy_last_mse(c[:, :self.frames], c[:, self.frames:])

    def blank_mse(self) -> float:
        """The MSE of predicting empty frames on this split (pixel values in [0, 1])."""
        return blank_mse(self.clips[:, self.frames:].cpu().numpy())


class LabelledClips:
    """Clips with a class each: ``clips`` uint8 (N, T, C, H, W), ``labels`` int64 (N,); item ``i`` is
    ``(clip float32 in [0, 1], class)``."""

    def __init__(self, clips: torch.Tensor, labels: torch.Tensor) -> None:
        if clips.ndim != 5 or clips.dtype != torch.uint8 or labels.shape != (len(clips),):
            raise ValueError(f"clips uint8 (N, T, C, H, W) and N labels, got {clips.dtype} {tuple(clips.shape)} and "
                             f"{tuple(labels.shape)}")
        self.clips, self.labels = clips, labels.long()

    @property
    def targets(self) -> list[int]:
        return self.labels.tolist()

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return _scaled(self.clips[i]), int(self.labels[i])

    def batch(self, index: Sequence[int] | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(clips (n, T, C, H, W) float32 in [0, 1], labels (n,))``, on the clips' device."""
        idx = torch.as_tensor(index, dtype=torch.long, device=self.clips.device)
        return _scaled(self.clips[idx]), self.labels.to(self.clips.device)[idx]

    def subset(self, index: Sequence[int] | torch.Tensor) -> "LabelledClips":
        idx = torch.as_tensor(index, dtype=torch.long)
        return LabelledClips(self.clips[idx], self.labels[idx])


def option(cfg: DataConfig, key: str) -> int:
    """``data.<key>`` (one of :data:`DEFAULTS`), its default when the config has no such key or it is unset;
    a positive integer."""
    value = getattr(cfg, key, None)
    value = DEFAULTS[key] if value is None else value
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UserError(f"data.{key} must be a positive integer, got {value!r}")
    return value


def _reject_other_options(cfg: DataConfig, name: str, also: tuple[str, ...] = ()) -> None:
    takes = OPTIONS + (", data.classes, data.per_class and data.subset" if name == "moving_mnist_clips" else "")
    for key in (*_FOREIGN, *also):
        value = getattr(cfg, key, None)
        if value is not None:
            raise UserError(f"data.{key}={value!r} is not an option of {name}; it takes {takes}")
    for key, default in _FOREIGN_DEFAULTS.items():
        value = getattr(cfg, key, default)
        if value != default:
            hint = "; the frames to predict are data.future" if key == "horizon" else ""
            raise UserError(f"data.{key}={value!r} is not an option of {name}{hint}; it takes {takes}")


def digit_split(cfg: DataConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The bundled digits split by class (``data.val_fraction`` of each, drawn by ``data.split_seed``):
    ``(train images, train labels, val images, val labels)``, images uint8 (M, 28, 28)."""
    images, labels = _mnist5k_arrays(cfg)
    train, val = stratified_indices(labels.tolist(), cfg.val_fraction, cfg.split_seed)
    return images[train, 0], labels[train], images[val, 0], labels[val]


def _sizes(cfg: DataConfig, name: str) -> tuple[int, int, int, int]:
    """``(training clips, validation clips, frame side, digits)``, checked."""
    if cfg.val_fraction <= 0:
        raise UserError(f"{name} validates on clips of held-out digits; set data.val_fraction > 0 (got "
                        f"{cfg.val_fraction})")
    clips, digits = option(cfg, "clips"), option(cfg, "digits")
    n_val = int(round(clips * cfg.val_fraction))
    if n_val < 1 or n_val >= clips:
        raise UserError(f"data.clips={clips} with data.val_fraction={cfg.val_fraction} leaves {n_val} validation "
                        f"and {clips - n_val} training clips; each split needs at least one")
    size = cfg.image_size if cfg.image_size is not None else 64
    if size < PATCH:
        raise UserError(f"data.image_size={size}: a Moving MNIST frame must hold a 28x28 digit (64 is the usual "
                        f"side)")
    return clips - n_val, n_val, size, digits


def _seed(cfg: DataConfig, part: int) -> int:
    return (cfg.split_seed % 2 ** 32) * 2 + part


@register_dataset("moving_mnist", "Moving MNIST for frame prediction (task frames): digits bouncing in 64x64 frames, "
                                  "data.frames in, the next data.future out; made offline from the bundled digits, "
                                  "validation clips from held-out digits")
def moving_mnist_frames(cfg: DataConfig) -> DataBundle:
    name = "moving_mnist"
    _reject_other_options(cfg, name, also=("classes", "per_class", "subset"))
    n_train, n_val, size, digits = _sizes(cfg, name)
    frames, future = option(cfg, "frames"), option(cfg, "future")
    tr_images, _, va_images, _ = digit_split(cfg)
    splits = []
    for part, (n, pool) in enumerate(((n_train, tr_images), (n_val, va_images))):
        clips = moving_mnist(n, frames + future, size=size, digits=digits, seed=_seed(cfg, part), images=pool)
        splits.append(FrameClips(torch.from_numpy(clips), frames))
    train, val = splits
    baseline = {"train": train.copy_last_mse(), "val": val.copy_last_mse()}
    blank = {"train": train.blank_mse(), "val": val.blank_mse()}
    description = (f"moving_mnist: {n_train} training and {n_val} validation clips of {frames} + {future} frames "
                   f"{size}x{size}, {digits} digit{'s' if digits > 1 else ''} each (digits {len(tr_images)} / "
                   f"{len(va_images)}, disjoint); val MSE of copying the last frame {baseline['val']:.4f}, of an empty "
                   f"frame {blank['val']:.4f}")
    extra = {"task": "frames", "frames": frames, "future": future, "digits": digits, "copy_last_mse": baseline,
             "blank_mse": blank}
    return DataBundle(train=train, val=val, test=None, classes=[], input_shape=(frames, 1, size, size),
                      mean=(0.0,), std=(1.0,), description=description, extra=extra)


@register_dataset("moving_mnist_clips", "Moving MNIST clips to classify (task video): of data.digits digits one "
                                        "moves; the class is that digit's (0-9); offline, validation clips from "
                                        "held-out digits")
def moving_mnist_classes(cfg: DataConfig) -> DataBundle:
    name = "moving_mnist_clips"
    _reject_other_options(cfg, name)
    n_train, n_val, size, digits = _sizes(cfg, name)
    frames = option(cfg, "frames")
    if frames < 2:
        raise UserError(f"data.frames={frames}: which digit moves shows in 2 frames or more")
    if digits > len(DIGIT_NAMES):
        raise UserError(f"data.digits={digits}: the digits of a clip are of distinct classes, at most 10")
    tr_images, tr_labels, va_images, va_labels = digit_split(cfg)
    splits = []
    for part, (n, pool, classes) in enumerate(((n_train, tr_images, tr_labels), (n_val, va_images, va_labels))):
        clips, labels = moving_mnist_clips(n, frames, size=size, digits=digits, seed=_seed(cfg, part), images=pool,
                                           labels=classes)
        splits.append(LabelledClips(torch.from_numpy(clips), torch.from_numpy(labels)))
    train, val = splits
    description = (f"moving_mnist_clips: {n_train} training and {n_val} validation clips of {frames} frames "
                   f"{size}x{size}, {digits} digits each, one moving; class: the moving digit (digits "
                   f"{len(tr_images)} / {len(va_images)}, disjoint)")
    extra = {"task": "video", "frames": frames, "digits": digits, "rule": "the class of the one digit that moves"}
    return DataBundle(train=train, val=val, test=None, classes=list(DIGIT_NAMES), input_shape=(frames, 1, size, size),
                      mean=(0.0,), std=(1.0,), description=description, extra=extra)
