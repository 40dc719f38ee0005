"""What the clip models share: the clip layout, the classifier interface and the option checks.

A clip is a float tensor ``(N, T, C, H, W)``: ``T`` frames of ``C`` channels, ``H x W`` pixels (the
data layer gives Moving MNIST frames scaled to [0, 1], see :mod:`cnnkit.data.video`). The models are
registered with an input shape ``(T, C, H, W)``; their builders are sized by one frame (``in_chans``
= C, ``input_size`` = H = W) and every one of them takes any number of frames.

A clip classifier (:class:`ClipClassifier`) has a dense head ``fc`` and timm's classifier interface,
as the image and series classifiers do.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from cnnkit.errors import UserError
from cnnkit.models.timeseries.base import SeriesClassifier, check_bool, check_dropout, check_positive, int_list

__all__ = ["ClipClassifier", "check_bool", "check_choice", "check_clip", "check_dropout", "check_frame_size",
           "check_positive", "int_list"]


def check_choice(model: str, option: str, value: Any, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise UserError(f"{model}: option {option} must be one of {', '.join(allowed)}, got {value!r}")
    return value


def check_frame_size(model: str, size: int, smallest: int, why: str, multiple: bool = False) -> None:
    """Frames of ``size`` pixels must have at least ``smallest`` (poolings) or, with ``multiple``, be a
    positive multiple of it (patches)."""
    if size < smallest or (multiple and size % smallest):
        need = f"a multiple of {smallest}" if multiple else f"at least {smallest}"
        raise UserError(f"model {model!r} needs frames whose side is {need} ({why}), got {size}; set "
                        f"data.image_size (the frame side) or change the options")


def check_clip(x: Tensor, model: str) -> None:
    if x.ndim != 5:
        raise ValueError(f"{model} reads clips (N, T, C, H, W), got a tensor of shape {tuple(x.shape)}")


class ClipClassifier(SeriesClassifier):
    """Base of the clip classifiers: ``forward_features(x (N, T, C, H, W))`` gives a feature vector
    ``(N, F)`` per clip and ``forward_head`` applies ``dropout`` and the dense head ``fc`` (the head
    and its timm-style methods are the series classifiers')."""
