"""Karim, Majumdar, Darabi & Chen (2018), "LSTM Fully Convolutional Networks for Time Series
Classification" (IEEE Access): ``lstm_fcn``, the plain (attention-less) LSTM-FCN.

::

                 ┌─ dimension shuffle (N, C steps, L features) ─ LSTM 8 ─ last state ─ dropout 0.8 ─┐
    x (N, C, L) ─┤                                                                                  ├─ concat ─ dense
                 └─ conv 8, 128 ─ BN ─ ReLU ─ conv 5, 256 ─ BN ─ ReLU ─ conv 3, 128 ─ BN ─ ReLU ─ GAP ─┘

Two branches see the same series. The fully convolutional branch is Wang et al.'s FCN
(:mod:`.fcn`). The recurrent branch, with the paper's *dimension shuffle* (``shuffle: true``, the
default), reads the series transposed: the LSTM runs over the C channels as its time steps and sees
the L values of a channel as one feature vector, so a univariate series is a single step of L
features. The paper finds this both much faster (C steps instead of L) and more accurate; the LSTM's
input width is then L, so the model takes exactly ``input_size`` steps (a longer or shorter series
is an error, which is why ``data.series_length`` must be set once for training and prediction
alike). ``shuffle: false`` is the usual reading, an LSTM over the L steps with C features each,
which works at any length. The LSTM's last hidden state (``lstm_units``, the paper's 8 cells), after
a dropout of 0.8 (the paper's), is concatenated with the convolutional branch's 128 averaged
features before the dense layer. The attention variant (ALSTM-FCN) and the multivariate paper's
squeeze-and-excitation blocks (MLSTM-FCN) are not included.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from cnnkit.errors import UserError
from cnnkit.models.registry import register_model
from cnnkit.models.timeseries.base import SeriesClassifier, check_bool, check_dropout, check_positive, int_list
from cnnkit.models.timeseries.fcn import FILTERS, KERNEL_SIZES, FCNBody


class LSTMFCN(SeriesClassifier):
    """``x (N, C, L) -> logits (N, num_classes)``; L must be ``input_size`` when ``shuffle`` is on."""

    def __init__(self, num_classes: int, in_chans: int, length: int, lstm_units: int = 8, dropout: float = 0.8,
                 shuffle: bool = True, filters: Sequence[int] = FILTERS, kernel_sizes: Sequence[int] = KERNEL_SIZES
                 ) -> None:
        super().__init__()
        check_positive("lstm_fcn", num_classes=num_classes, in_chans=in_chans, lstm_units=lstm_units)
        dropout = check_dropout("lstm_fcn", dropout)
        self.shuffle = check_bool("lstm_fcn", "shuffle", shuffle)
        filters = int_list("lstm_fcn", "filters", filters, example="[128, 256, 128]")
        kernel_sizes = int_list("lstm_fcn", "kernel_sizes", kernel_sizes, length=len(filters), example="[8, 5, 3]")
        self.length = int(length)
        self.lstm = nn.LSTM(self.length if shuffle else in_chans, lstm_units, batch_first=True)
        self.lstm_dropout = nn.Dropout(dropout)
        self.fcn = FCNBody(in_chans, filters, kernel_sizes)
        self.dropout = nn.Identity()
        self.fc = nn.Linear(lstm_units + self.fcn.out_chans, num_classes)

    def forward_features(self, x: Tensor) -> Tensor:
        """``(N, lstm_units + filters[-1])``: the LSTM's last state (after its dropout), then the FCN's
        averaged features."""
        if self.shuffle:
            if x.shape[-1] != self.length:
                raise UserError(f"lstm_fcn with shuffle: true takes series of exactly {self.length} steps (its "
                                 f"LSTM reads the {self.length} values of a channel as one input), got "
                                 f"{x.shape[-1]}; bring the series to that length (data.series_length)")
            seq = x  # (N, C, L): C steps of L features
        else:
            seq = x.transpose(1, 2)  # (N, L, C): L steps of C features
        _, (h, _) = self.lstm(seq)
        return torch.cat([self.lstm_dropout(h[-1]), self.fcn(x).mean(dim=2)], dim=1)

    def extra_repr(self) -> str:
        return f"shuffle={self.shuffle}, length={self.length}"


@register_model("lstm_fcn", "Karim et al. (2018)'s LSTM-FCN: an LSTM (8 cells, dimension shuffle, dropout 0.8) "
                "beside the FCN (conv 8/5/3 x 128/256/128, GAP), concatenated, dense", default_input=(1, 128),
                min_input=(1, 1), task="timeseries", variable_length=False)
def lstm_fcn(num_classes: int = 2, in_chans: int = 1, input_size: int = 128, lstm_units: int = 8,
             dropout: float = 0.8, shuffle: bool = True, filters: Sequence[int] = FILTERS,
             kernel_sizes: Sequence[int] = KERNEL_SIZES) -> LSTMFCN:
    """``input_size``: the series length, which the model then requires when ``shuffle`` is on (the
    paper's dimension shuffle: the LSTM runs over the channels, the L values its input); ``dropout``:
    after the LSTM; ``filters`` / ``kernel_sizes``: the FCN branch."""
    return LSTMFCN(num_classes, in_chans, input_size, lstm_units=lstm_units, dropout=dropout, shuffle=shuffle,
                   filters=filters, kernel_sizes=kernel_sizes)
