"""Clip classifiers (task ``video``): ``cnn_lstm_video`` and ``convlstm_video``, a class per clip
``(N, T, C, H, W)`` -> logits ``(N, num_classes)``.

``cnn_lstm_video`` (:class:`CNNLSTMVideo`), a per-frame CNN feeding an LSTM (Donahue et al.'s LRCN
pattern)::

    each frame (C, H, W), one CNN for all frames (shared weights):
        [conv k ─ BN ─ ReLU ─ max pool 2] x len(filters) ─ average pool to grid x grid
        ─ flatten ─ dense features ─ ReLU                                     (N, T, features)
    ─ LSTM (units, layers) over the T frames ─ last hidden state of the top layer ─ dropout ─ dense

The frame features keep *where* things are (a ``grid x grid`` map flattened, not a global average):
what moves, and where to, is what the LSTM compares from frame to frame.

``convlstm_video`` (:class:`ConvLSTMVideo`), a ConvLSTM over the clip::

    each frame: [conv 3 ─ BN ─ ReLU ─ max pool 2] x downsample (stem_width channels)
    ─ ConvLSTM (hidden per layer, kernel) over the T frames ─ top layer's last hidden state
    ─ global average (or max) pooling ─ dropout ─ dense

The stem shrinks each frame by ``2 ** downsample`` (4 by default: 16 x 16 maps from 64 x 64 frames)
so that the recurrent convolutions, run T times, stay affordable; ``downsample: 0`` runs the ConvLSTM
on the frames themselves.
"""

from __future__ import annotations

from typing import Sequence

from torch import Tensor, nn

from cnnkit.errors import UserError
from cnnkit.models.registry import register_model
from cnnkit.models.video.base import (ClipClassifier, check_choice, check_clip, check_dropout, check_frame_size,
                                      check_positive, int_list)
from cnnkit.nn.recurrent_conv import ConvLSTM

FILTERS = (32, 64, 64)
HIDDEN = (32, 32)


def frame_block(in_ch: int, out_ch: int, kernel: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, kernel, padding=kernel // 2, bias=False), nn.BatchNorm2d(out_ch),
                         nn.ReLU(inplace=True), nn.MaxPool2d(2))


def per_frame(module: nn.Module, x: Tensor) -> Tensor:
    """``module`` applied to every frame of ``x (N, T, C, H, W)``: ``(N, T, ...)``."""
    n, t = x.shape[:2]
    y = module(x.reshape(n * t, *x.shape[2:]))
    return y.reshape(n, t, *y.shape[1:])


class CNNLSTMVideo(ClipClassifier):
    """``x (N, T, C, H, W) -> logits (N, num_classes)``; frames of at least ``2 ** len(filters)`` pixels."""

    def __init__(self, num_classes: int, in_chans: int = 1, filters: Sequence[int] = FILTERS, kernel_size: int = 3,
                 grid: int = 4, features: int = 256, lstm_units: int = 128, lstm_layers: int = 1,
                 dropout: float = 0.5) -> None:
        super().__init__()
        self.filters = tuple(filters)
        chans = (in_chans, *self.filters)
        self.cnn = nn.Sequential(*(frame_block(chans[i], chans[i + 1], kernel_size) for i in range(len(self.filters))),
                                 nn.AdaptiveAvgPool2d(grid), nn.Flatten(),
                                 nn.Linear(chans[-1] * grid * grid, features), nn.ReLU(inplace=True))
        self.lstm = nn.LSTM(features, lstm_units, num_layers=lstm_layers, batch_first=True,
                            dropout=dropout if lstm_layers > 1 else 0.0)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(lstm_units, num_classes)

    def forward_features(self, x: Tensor) -> Tensor:
        """``(N, lstm_units)``: the top LSTM layer's last hidden state."""
        check_clip(x, "cnn_lstm_video")
        _, (h, _) = self.lstm(per_frame(self.cnn, x))
        return h[-1]


class ConvLSTMVideo(ClipClassifier):
    """``x (N, T, C, H, W) -> logits (N, num_classes)``; frames of at least ``2 ** downsample`` pixels."""

    def __init__(self, num_classes: int, in_chans: int = 1, hidden: Sequence[int] = HIDDEN, kernel: int = 3,
                 downsample: int = 2, stem_width: int = 32, pool: str = "avg", dropout: float = 0.5) -> None:
        super().__init__()
        chans = (in_chans, *([stem_width] * downsample))
        self.stem = nn.Sequential(*(frame_block(chans[i], chans[i + 1], 3) for i in range(downsample)))
        self.convlstm = ConvLSTM(chans[-1], list(hidden), kernel, layers=len(hidden), return_sequence=False)
        self.pool = pool
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(hidden[-1], num_classes)

    def forward_features(self, x: Tensor) -> Tensor:
        """``(N, hidden[-1])``: the top ConvLSTM layer's last hidden state, pooled over positions."""
        check_clip(x, "convlstm_video")
        h = self.convlstm(per_frame(self.stem, x))
        return h.amax(dim=(-2, -1)) if self.pool == "max" else h.mean(dim=(-2, -1))


@register_model("cnn_lstm_video", "a per-frame CNN ([conv 3, BN, ReLU, max pool 2] x 3, 4x4 grid, dense 256) "
                "feeding an LSTM 128: last state, dropout, dense", default_input=(10, 1, 64, 64),
                min_input=(1, 1, 8, 8), task="video")
def cnn_lstm_video(num_classes: int = 10, in_chans: int = 1, input_size: int = 64, filters: Sequence[int] = FILTERS,
                   kernel_size: int = 3, grid: int = 4, features: int = 256, lstm_units: int = 128,
                   lstm_layers: int = 1, dropout: float = 0.5) -> CNNLSTMVideo:
    """``filters``: one per-frame block per value; ``grid``: the side of the feature map kept per frame;
    ``features``: the per-frame vector the LSTM reads; ``lstm_units`` / ``lstm_layers``: the recurrent
    part; ``dropout``: before the head (and between stacked LSTM layers)."""
    name = "cnn_lstm_video"
    check_positive(name, num_classes=num_classes, in_chans=in_chans, kernel_size=kernel_size, grid=grid,
                   features=features, lstm_units=lstm_units, lstm_layers=lstm_layers)
    filters = int_list(name, "filters", filters, example="[32, 64, 64]")
    dropout = check_dropout(name, dropout)
    check_frame_size(name, input_size, 2 ** len(filters), f"{len(filters)} poolings of 2")
    return CNNLSTMVideo(num_classes, in_chans, filters, kernel_size, grid, features, lstm_units, lstm_layers,
                        dropout)


@register_model("convlstm_video", "a ConvLSTM over the clip: stem [conv 3, BN, ReLU, max pool 2] x 2, ConvLSTM 32-32, "
                "last state, global average pooling, dense", default_input=(10, 1, 64, 64), min_input=(1, 1, 4, 4),
                task="video")
def convlstm_video(num_classes: int = 10, in_chans: int = 1, input_size: int = 64, hidden: Sequence[int] = HIDDEN,
                   kernel: int = 3, downsample: int = 2, stem_width: int = 32, pool: str = "avg",
                   dropout: float = 0.5) -> ConvLSTMVideo:
    """``hidden``: the ConvLSTM's width per layer; ``kernel``: its convolutions' (odd); ``downsample``: the
    stem's blocks (each halves the frame; 0: no stem); ``stem_width``: their channels; ``pool``: avg or
    max over the last state's positions; ``dropout``: before the head."""
    name = "convlstm_video"
    check_positive(name, num_classes=num_classes, in_chans=in_chans, kernel=kernel, stem_width=stem_width)
    hidden = int_list(name, "hidden", hidden, example="[32, 32]")
    if isinstance(downsample, bool) or not isinstance(downsample, int) or downsample < 0:
        raise UserError(f"{name}: option downsample must be an integer >= 0, got {downsample!r}")
    if kernel % 2 == 0:
        raise UserError(f"{name}: option kernel must be odd (same padding), got {kernel}")
    check_choice(name, "pool", pool, ("avg", "max"))
    dropout = check_dropout(name, dropout)
    check_frame_size(name, input_size, 2 ** downsample, f"{downsample} poolings of 2")
    return ConvLSTMVideo(num_classes, in_chans, hidden, kernel, downsample, stem_width, pool, dropout)
