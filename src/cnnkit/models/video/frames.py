"""Frame prediction (task ``frames``): Shi et al.'s encoder-forecaster, ``convlstm_frames`` and
``convgru_frames``.

::

    x (N, T, C, H, W) ─ patches p x p to channels (N, T, C p^2, H/p, W/p)
      ─ encoder: stacked ConvLSTM (ConvGRU) layers read the T frames
      ─ forecaster: as many layers, started from the encoder's last states, run K steps
      ─ at each step all its layers' hidden states, concatenated ─ 1x1 conv ─ (C p^2, H/p, W/p)
      ─ channels back to p x p patches ─ sigmoid ─ (N, K, C, H, W) in [0, 1]

As in Shi et al. 2015 (section 4.1, Moving MNIST): each 64 x 64 frame is cut into non-overlapping
4 x 4 patches that become channels (``patch``: 4, a 16 x 16 x 16 tensor per frame; torch's
``pixel_unshuffle``), the encoder and the forecaster are separate stacks, layer ``l`` of the
forecaster starts from layer ``l`` of the encoder's last state, the forecaster reads no frames, and
the prediction is a 1 x 1 convolution of all the forecaster's states. ``feedback: true`` (not in the
paper) feeds the forecaster's first layer the previous frame instead: the last input frame, then its
own last prediction (free running, as at test time, also in training).

**Loss.** ``model(x)`` gives pixel values in [0, 1] (sigmoid), to compare with target frames scaled to
[0, 1] (what :mod:`cnnkit.data.video` gives): mean squared error on them, or per-pixel binary
cross-entropy (Shi et al.'s choice for Moving MNIST). For the cross-entropy use
``model.forward_logits(x)`` (the same before the sigmoid) with
``F.binary_cross_entropy_with_logits``: it is numerically stable and allowed under autocast, which
``F.binary_cross_entropy`` on the probabilities is not. The reference to beat is copying the last
input frame K times (:func:`cnnkit.data.video.copy_last_mse`).

``num_classes`` is accepted and ignored (a frame predictor has no classes); ``model.future`` is K.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cnnkit.errors import UserError
from cnnkit.models.registry import register_model
from cnnkit.models.video.base import check_bool, check_choice, check_clip, check_frame_size, check_positive, int_list
from cnnkit.nn.recurrent_conv import ConvGRU, ConvLSTM

HIDDEN = (64, 64)
CELLS = ("lstm", "gru")


class EncoderForecaster(nn.Module):
    """``x (N, T, C, H, W) -> (N, future, C, H, W)`` in [0, 1]; H and W multiples of ``patch``; any T >= 1.

    ``cell``: ``lstm`` (ConvLSTM, ``peephole`` allowed) or ``gru`` (ConvGRU). ``hidden``: one width per
    layer (encoder and forecaster alike)."""

    def __init__(self, in_chans: int = 1, hidden: Sequence[int] = HIDDEN, kernel: int = 3, future: int = 10,
                 patch: int = 4, cell: str = "lstm", feedback: bool = False, peephole: bool = False) -> None:
        super().__init__()
        self.in_chans, self.future, self.patch, self.cell = in_chans, future, patch, cell
        self.hidden, self.feedback = list(hidden), bool(feedback)
        pc = in_chans * patch * patch
        if cell == "lstm":
            self.encoder: nn.Module = ConvLSTM(pc, self.hidden, kernel, layers=len(self.hidden), peephole=peephole)
            self.forecaster: nn.Module = ConvLSTM(pc if feedback else 0, self.hidden, kernel, layers=len(self.hidden),
                                                  peephole=peephole)
        else:
            if peephole:
                raise ValueError("peepholes belong to the ConvLSTM cell; a ConvGRU has none")
            self.encoder = ConvGRU(pc, self.hidden, kernel, layers=len(self.hidden))
            self.forecaster = ConvGRU(pc if feedback else 0, self.hidden, kernel, layers=len(self.hidden))
        self.out = nn.Conv2d(sum(self.hidden), pc, 1)

    def _hidden(self, state) -> Tensor:
        return state[0] if self.cell == "lstm" else state

    def forward_logits(self, x: Tensor) -> Tensor:
        """The predicted frames before the sigmoid, ``(N, future, C, H, W)``."""
        check_clip(x, "an encoder-forecaster")
        n, t, c, h, w = x.shape
        p = self.patch
        if c != self.in_chans or h % p or w % p:
            raise ValueError(f"the encoder-forecaster takes {self.in_chans}-channel frames whose sides are multiples "
                             f"of {p}, got clips of shape {tuple(x.shape)}")
        seq = F.pixel_unshuffle(x.reshape(n * t, c, h, w), p).reshape(n, t, c * p * p, h // p, w // p)
        states = None
        for i in range(t):
            states = self.encoder.step(seq[:, i], states)
        prev = seq[:, -1]
        outs = []
        for _ in range(self.future):
            states = self.forecaster.step(prev if self.feedback else None, states)
            y = self.out(torch.cat([self._hidden(s) for s in states], dim=1))
            outs.append(y)
            if self.feedback:
                prev = torch.sigmoid(y)
        logits = torch.stack(outs, dim=1).reshape(n * self.future, c * p * p, h // p, w // p)
        return F.pixel_shuffle(logits, p).reshape(n, self.future, c, h, w)

    #: When True, ``forward`` gives the logits (what :func:`emitting_logits` sets for a loss on them, so
    #: that the call still goes through a DDP or compiled wrapper).
    emit_logits: bool = False

    def forward(self, x: Tensor) -> Tensor:
        logits = self.forward_logits(x)
        return logits if self.emit_logits else torch.sigmoid(logits)

    def extra_repr(self) -> str:
        return (f"cell={self.cell}, hidden={self.hidden}, future={self.future}, patch={self.patch}, "
                f"feedback={self.feedback}")


@contextmanager
def emitting_logits(model: nn.Module) -> Iterator[None]:
    """Within the block, every encoder-forecaster in ``model`` (itself, or wrapped in DDP or
    ``torch.compile``) returns logits from ``forward`` instead of pixel values."""
    inner = [m for m in model.modules() if isinstance(m, EncoderForecaster)]
    for m in inner:
        m.emit_logits = True
    try:
        yield
    finally:
        for m in inner:
            m.emit_logits = False


def _build(model: str, cell: str, in_chans: int, input_size: int, hidden, kernel: int, future: int, patch: int,
           feedback: bool, peephole: bool) -> EncoderForecaster:
    check_positive(model, in_chans=in_chans, kernel=kernel, future=future, patch=patch)
    hidden = int_list(model, "hidden", hidden, example="[64, 64]")
    check_bool(model, "feedback", feedback)
    check_bool(model, "peephole", peephole)
    check_choice(model, "cell", cell, CELLS)
    if kernel % 2 == 0:
        raise UserError(f"{model}: option kernel must be odd (same padding), got {kernel}")
    check_frame_size(model, input_size, patch, f"cut into {patch}x{patch} patches", multiple=True)
    return EncoderForecaster(in_chans, hidden, kernel, future, patch, cell, feedback, peephole)


@register_model("convlstm_frames", "Shi et al.'s ConvLSTM encoder-forecaster: 4x4 patches, 2 layers of 64, the next "
                "10 frames in [0, 1]", default_input=(10, 1, 64, 64), min_input=(1, 1, 4, 4), task="frames")
def convlstm_frames(num_classes: int = 0, in_chans: int = 1, input_size: int = 64, hidden: Sequence[int] = HIDDEN,
                    kernel: int = 3, future: int = 10, patch: int = 4, feedback: bool = False,
                    peephole: bool = False) -> EncoderForecaster:
    """``hidden``: the width of each layer (encoder and forecaster); ``kernel``: the convolutions' (odd);
    ``future``: the frames predicted (K); ``patch``: the side of the patches turned into channels (1:
    none); ``feedback``: feed the forecaster the previous frame; ``peephole``: the paper's peepholes
    (one weight per channel). ``num_classes`` is ignored."""
    return _build("convlstm_frames", "lstm", in_chans, input_size, hidden, kernel, future, patch, feedback, peephole)


@register_model("convgru_frames", "the encoder-forecaster with ConvGRU cells: 4x4 patches, 2 layers of 64, the next "
                "10 frames in [0, 1]", default_input=(10, 1, 64, 64), min_input=(1, 1, 4, 4), task="frames")
def convgru_frames(num_classes: int = 0, in_chans: int = 1, input_size: int = 64, hidden: Sequence[int] = HIDDEN,
                   kernel: int = 3, future: int = 10, patch: int = 4, feedback: bool = False) -> EncoderForecaster:
    """As :func:`convlstm_frames`, with ConvGRU cells (no peepholes)."""
    return _build("convgru_frames", "gru", in_chans, input_size, hidden, kernel, future, patch, feedback, False)
