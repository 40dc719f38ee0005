"""What the time-series models share: a float series ``(N, C, L)`` in, logits ``(N, num_classes)`` out.

``C`` is the number of channels (1 for a univariate series; when the series of a data set have
different lengths and are zero-padded after their end, the data layer appends one more channel, 1
on the series and 0 on the padding: to these models it is an ordinary input channel, nothing reads
it specially) and ``L`` the series length.

Every model has a dense head ``fc`` and timm's classifier interface (``forward_features``,
``forward_head``, ``get_classifier``, ``reset_classifier``), as the image and text classifiers do,
and a class attribute ``variable_length``, False for all of them: the networks accept other lengths
than the one they were built for (global pooling, a recurrent layer or the last time step, never a
dense layer over time; ``lstm_fcn`` with its dimension shuffle is the exception), but none of them
masks the padding, so padding a series changes its logits and the task brings every batch to one
length (``data.series_length``).

The option checks raise :class:`~cnnkit.errors.UserError` naming the model and the option.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from cnnkit.errors import UserError


# --------------------------------------------------------------------------- option checks


def check_positive(model: str, **values: Any) -> None:
    for name, v in values.items():
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise UserError(f"{model}: option {name} must be a positive integer, got {v!r}")


def check_dropout(model: str, dropout: Any, option: str = "dropout") -> float:
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0.0 <= float(dropout) < 1.0:
        raise UserError(f"{model}: option {option} must be a number in [0, 1), got {dropout!r}")
    return float(dropout)


def check_bool(model: str, option: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise UserError(f"{model}: option {option} must be true or false, got {value!r}")
    return value


def int_list(model: str, option: str, value: Any, *, length: int | None = None, example: str = "") -> tuple[int, ...]:
    """``value`` (a list of positive ints, or one int) as a tuple; ``length``: the number it must have."""
    items = (value,) if isinstance(value, int) and not isinstance(value, bool) else value
    hint = f", e.g. {example}" if example else ""
    if isinstance(items, (str, bytes)) or not isinstance(items, Sequence) or not items:
        raise UserError(f"{model}: option {option} must be a non-empty list of positive integers{hint}; got {value!r}")
    for v in items:
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise UserError(f"{model}: option {option} must hold positive integers{hint}; got {value!r}")
    if length is not None and len(items) != length:
        raise UserError(f"{model}: option {option} needs {length} values (one per layer){hint}; got {list(items)}")
    return tuple(int(v) for v in items)


def check_length(model: str, length: int, smallest: int, why: str) -> None:
    """A series of ``length`` steps is too short for the network as configured: a UserError that says why."""
    if length < smallest:
        raise UserError(f"model {model!r} needs series of at least {smallest} steps ({why}), got {length}; "
                        f"set data.series_length (data.lookback for a forecast) to {smallest} or more, or change "
                        f"the options")


# --------------------------------------------------------------------------- layers


class SameConv1d(nn.Conv1d):
    """A stride-1 Conv1d whose output has the input's length ('same' padding): ``(k - 1) // 2`` zeros
    on the left and ``k // 2`` on the right, so an even kernel pads one more step on the right, as
    Keras does. (An odd kernel uses the convolution's own symmetric padding; an even one pads
    explicitly, which avoids torch's warning about ``padding='same'`` with even kernels.)"""

    def __init__(self, in_chans: int, out_chans: int, kernel_size: int, bias: bool = True) -> None:
        odd = kernel_size % 2 == 1
        super().__init__(in_chans, out_chans, kernel_size, padding=kernel_size // 2 if odd else 0, bias=bias)
        self.pads = None if odd else ((kernel_size - 1) // 2, kernel_size // 2)

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x if self.pads is None else F.pad(x, self.pads))


class ConvBlock(nn.Sequential):
    """A 'same' convolution (:class:`SameConv1d`), batch normalisation and ReLU: the block of the FCN
    and ResNet baselines."""

    def __init__(self, in_chans: int, out_chans: int, kernel_size: int, relu: bool = True) -> None:
        layers: list[nn.Module] = [SameConv1d(in_chans, out_chans, kernel_size), nn.BatchNorm1d(out_chans)]
        if relu:
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class SeriesClassifier(nn.Module):
    """Base of the time-series models: ``forward_features(x)`` gives a feature vector (N, F) per
    series and ``forward_head`` applies ``dropout`` (an Identity where the paper has none) and the
    dense head ``fc``."""

    variable_length: bool = False
    fc: nn.Linear
    dropout: nn.Module

    @property
    def num_classes(self) -> int:
        return self.fc.out_features

    def forward_features(self, x: Tensor) -> Tensor:  # pragma: no cover - every model overrides it
        raise NotImplementedError

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        x = self.dropout(x)
        return x if pre_logits else self.fc(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the head by a freshly initialised one with ``num_classes`` outputs."""
        w = self.fc.weight
        self.fc = nn.Linear(self.fc.in_features, num_classes, bias=self.fc.bias is not None).to(w.device, w.dtype)
