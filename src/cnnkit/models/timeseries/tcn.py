"""Bai, Kolter & Koltun (2018), "An Empirical Evaluation of Generic Convolutional and Recurrent Networks
for Sequence Modeling" (arXiv:1803.01271): the temporal convolutional network, ``tcn`` (forecaster)
and ``tcn_classifier``.

One residual block, dilation d::

    x ─┬─ causal conv k, dilation d ─ ReLU ─ dropout ─ causal conv k, dilation d ─ ReLU ─ dropout ─ + ─ ReLU
       └──────────────── identity (1x1 conv when the channels change) ────────────────────────────┘

The network: blocks with dilations 1, 2, 4, ..., 2^(levels-1), then the features of the *last* time
step, (N, F), go to a dense head::

    step:      t-8 t-7 t-6 t-5 t-4 t-3 t-2 t-1  t
    d = 4       ●───────────────●───────────────●     (k = 3: each output sees k inputs,
    d = 2                       ●───────●───────●      d steps apart, none after it)
    d = 1                               ●───●───●

A causal convolution pads ``(k - 1) * d`` zeros on the left only, so its output at step t depends on
the inputs at steps <= t alone and has the input's length: the whole stack
(:meth:`TCN.sequence_features`, ``(N, F, L)``) is causal. Each block holds two convolutions of
dilation d, each adding ``(k - 1) * d`` steps of history, so the receptive field of the last step
is ``1 + 2 (k - 1) (2^levels - 1)`` steps (:attr:`TCN.receptive_field`); the default ``levels: null``
takes the fewest levels whose receptive field covers ``input_size`` (the lookback or series length).

Weight normalisation of the convolutions (``weight_norm``, the paper's choice, on by default:
:func:`torch.nn.utils.parametrizations.weight_norm`) and the N(0, 0.01) initialisation of their
weights follow the paper; ``model.init`` schemes do not reach weight-normalised convolutions (their
weight is computed from a direction and a gain), so set ``weight_norm: false`` to use one.

Two heads:

* classification (``tcn_classifier``, or ``tcn`` with no ``horizon``): dense from the last step's
  features to ``num_classes`` logits;
* forecasting (``tcn`` with ``horizon`` set): dense from the last step's features to
  ``targets * horizon`` values, returned as ``(N, targets, horizon)``: the next ``horizon`` values
  of each of the ``targets`` predicted channels (by default every input channel). ``num_classes``
  is then ignored.

With zero-padded series (classification of series of different lengths) the last step may be
padding; the mask channel tells the network, but the receptive field must reach back to the series.
"""

from __future__ import annotations

from typing import Sequence

import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import weight_norm as apply_weight_norm

from cnnkit.errors import UserError
from cnnkit.models.registry import register_model
from cnnkit.models.timeseries.base import SeriesClassifier, check_bool, check_dropout, check_positive, int_list

INIT_STD = 0.01


def receptive_field(levels: int, kernel_size: int) -> int:
    """The steps the last output of ``levels`` blocks (two convolutions each) sees: ``1 + 2 (k - 1) (2^levels - 1)``."""
    return 1 + 2 * (kernel_size - 1) * (2 ** levels - 1)


def levels_for(length: int, kernel_size: int) -> int:
    """The fewest levels (at least one) whose receptive field covers ``length`` steps."""
    levels = 1
    while receptive_field(levels, kernel_size) < length:
        levels += 1
    return levels


class CausalConv1d(nn.Conv1d):
    """A dilated convolution padded with ``(kernel_size - 1) * dilation`` zeros on the left only:
    output step t sees inputs t - (k - 1) d, ..., t and the length is unchanged."""

    def __init__(self, in_chans: int, out_chans: int, kernel_size: int, dilation: int = 1) -> None:
        super().__init__(in_chans, out_chans, kernel_size, dilation=dilation)
        self.left = (kernel_size - 1) * dilation

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(F.pad(x, (self.left, 0)))


class TemporalBlock(nn.Module):
    """Two causal convolutions of one dilation with ReLU and dropout, and a residual connection."""

    def __init__(self, in_chans: int, out_chans: int, kernel_size: int, dilation: int, dropout: float = 0.0,
                 weight_norm: bool = True) -> None:
        super().__init__()
        self.conv1 = self._conv(in_chans, out_chans, kernel_size, dilation, weight_norm)
        self.conv2 = self._conv(out_chans, out_chans, kernel_size, dilation, weight_norm)
        self.dropout = nn.Dropout(dropout)
        self.downsample: nn.Module = nn.Identity()
        if in_chans != out_chans:
            self.downsample = nn.Conv1d(in_chans, out_chans, 1)
            nn.init.normal_(self.downsample.weight, 0.0, INIT_STD)

    @staticmethod
    def _conv(in_chans: int, out_chans: int, kernel_size: int, dilation: int, weight_norm: bool) -> nn.Module:
        conv = CausalConv1d(in_chans, out_chans, kernel_size, dilation)
        nn.init.normal_(conv.weight, 0.0, INIT_STD)
        return apply_weight_norm(conv) if weight_norm else conv

    def forward(self, x: Tensor) -> Tensor:
        h = self.dropout(F.relu(self.conv1(x)))
        h = self.dropout(F.relu(self.conv2(h)))
        return F.relu(h + self.downsample(x))


class TCN(SeriesClassifier):
    """``x (N, C, L) -> logits (N, num_classes)``, or ``(N, targets, horizon)`` when ``horizon`` is set;
    any L >= 1."""

    def __init__(self, num_classes: int, in_chans: int, length: int, levels: int | None = None,
                 channels: int | Sequence[int] = 64, kernel_size: int = 3, dropout: float = 0.1,
                 weight_norm: bool = True, horizon: int | None = None, targets: int | None = None,
                 name: str = "tcn") -> None:
        super().__init__()
        check_positive(name, in_chans=in_chans, kernel_size=kernel_size)
        if kernel_size < 2:
            raise UserError(f"{name}: option kernel_size must be at least 2 (a width-1 convolution sees a single "
                            f"step, so the network would see only the last one), got {kernel_size}")
        dropout = check_dropout(name, dropout)
        weight_norm = check_bool(name, "weight_norm", weight_norm)
        if levels is not None:
            check_positive(name, levels=levels)
        if isinstance(channels, int) and not isinstance(channels, bool):
            check_positive(name, channels=channels)
            levels = levels if levels is not None else levels_for(length, kernel_size)
            widths = (channels,) * levels
        else:
            widths = int_list(name, "channels", channels, example="64 or [32, 32, 64, 64]")
            if levels is not None and levels != len(widths):
                raise UserError(f"{name}: option channels lists {len(widths)} levels but option levels is {levels}; "
                                f"give one channel count per level, or a single count")
            levels = len(widths)
        if horizon is None:
            if targets is not None:
                raise UserError(f"{name}: option targets ({targets!r}) needs option horizon (a forecast); a "
                                f"classifier's outputs are its num_classes")
            check_positive(name, num_classes=num_classes)
        else:
            targets = in_chans if targets is None else targets
            check_positive(name, horizon=horizon, targets=targets)
        self.levels, self.channels, self.kernel_size = levels, widths, kernel_size
        self.horizon, self.targets = horizon, targets
        chans = (in_chans, *widths)
        self.blocks = nn.Sequential(*(TemporalBlock(chans[i], chans[i + 1], kernel_size, 2 ** i, dropout, weight_norm)
                                      for i in range(levels)))
        self.dropout = nn.Identity()
        self.fc = nn.Linear(widths[-1], num_classes if horizon is None else targets * horizon)

    @property
    def receptive_field(self) -> int:
        """The input steps the last step's features depend on."""
        return receptive_field(self.levels, self.kernel_size)

    @property
    def forecasting(self) -> bool:
        return self.horizon is not None

    def sequence_features(self, x: Tensor) -> Tensor:
        """``(N, channels[-1], L)``: the causal stack's features at every step (step t from inputs <= t)."""
        return self.blocks(x)

    def forward_features(self, x: Tensor) -> Tensor:
        """``(N, channels[-1])``: the features of the last step."""
        return self.blocks(x)[..., -1]

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        if pre_logits:
            return x
        y = self.fc(x)
        return y.unflatten(1, (self.targets, self.horizon)) if self.forecasting else y

    def reset_classifier(self, num_classes: int) -> None:
        if self.forecasting:
            raise UserError(f"a forecasting TCN's head has targets x horizon = {self.targets} x {self.horizon} "
                            f"outputs, set by options targets and horizon; it has no classes to reset")
        super().reset_classifier(num_classes)

    def extra_repr(self) -> str:
        head = f"horizon={self.horizon}, targets={self.targets}" if self.forecasting else f"classes={self.num_classes}"
        return f"levels={self.levels}, kernel_size={self.kernel_size}, receptive_field={self.receptive_field}, {head}"


@register_model("tcn", "Bai et al. (2018)'s temporal convolutional network: residual blocks of two dilated causal "
                "convs (dilations 1, 2, 4...; weight norm, ReLU, dropout), last step, dense to targets x horizon",
                default_input=(1, 64), min_input=(1, 1), task="forecast", variable_length=False)
def tcn(num_classes: int = 1, in_chans: int = 1, input_size: int = 64, levels: int | None = None,
        channels: int | Sequence[int] = 64, kernel_size: int = 3, dropout: float = 0.1, weight_norm: bool = True,
        horizon: int | None = None, targets: int | None = None) -> TCN:
    """``input_size``: the lookback; ``levels``: the residual blocks (null: the fewest whose receptive
    field covers ``input_size``); ``channels``: each block's width, one count or one per level;
    ``horizon``: the steps forecast (null: a classifier head of ``num_classes`` logits); ``targets``:
    the channels forecast (default ``in_chans``)."""
    return TCN(num_classes, in_chans, input_size, levels=levels, channels=channels, kernel_size=kernel_size,
               dropout=dropout, weight_norm=weight_norm, horizon=horizon, targets=targets, name="tcn")


@register_model("tcn_classifier", "Bai et al. (2018)'s temporal convolutional network as a series classifier: "
                "dilated causal residual blocks, the last step's features, dense", default_input=(1, 128),
                min_input=(1, 1), task="timeseries", variable_length=False)
def tcn_classifier(num_classes: int = 2, in_chans: int = 1, input_size: int = 128, levels: int | None = None,
                   channels: int | Sequence[int] = 64, kernel_size: int = 3, dropout: float = 0.1,
                   weight_norm: bool = True) -> TCN:
    """``tcn`` with a classification head (the registry gives a model one task; ``tcn`` is the forecaster)."""
    return TCN(num_classes, in_chans, input_size, levels=levels, channels=channels, kernel_size=kernel_size,
               dropout=dropout, weight_norm=weight_norm, name="tcn_classifier")
