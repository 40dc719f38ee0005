"""A convolutional front end followed by a recurrent layer over time (course VI.D): ``cnn_lstm``.

::

    x (N, C, L) ─ [conv k, F ─ BN ─ ReLU ─ max pool p] x len(filters)   (N, F, L / p^blocks)
                ─ as a sequence of L / p^blocks steps of F features ─ LSTM (units, layers)
                ─ last hidden state of the top layer ─ dropout ─ dense ─ logits

The convolutions turn the raw values into local pattern detectors (a shape over ``kernel_size``
steps) and the poolings shorten the sequence by ``pool`` per block, so the LSTM runs over fewer,
richer steps; its last hidden state summarises the whole series in order, which the global average
of the FCN family cannot (it forgets where things happened). The plain stack: no attention, no
bidirectional layer. 'Same' convolutions; the flooring poolings need at least ``pool ** blocks``
steps (4 with the defaults). With zero-padded series the LSTM reads the padding last: the mask
channel is what tells it the series has ended.
"""

from __future__ import annotations

from typing import Sequence

from torch import Tensor, nn

from cnnkit.models.registry import register_model
from cnnkit.models.timeseries.base import (ConvBlock, SeriesClassifier, check_dropout, check_length, check_positive,
                                           int_list)

FILTERS = (64, 64)


class CNNLSTM(SeriesClassifier):
    """``x (N, C, L) -> logits (N, num_classes)``; any L >= ``pool ** len(filters)``."""

    def __init__(self, num_classes: int, in_chans: int, filters: Sequence[int] = FILTERS, kernel_size: int = 5,
                 pool: int = 2, lstm_units: int = 64, lstm_layers: int = 1, dropout: float = 0.5) -> None:
        super().__init__()
        check_positive("cnn_lstm", num_classes=num_classes, in_chans=in_chans, kernel_size=kernel_size, pool=pool,
                       lstm_units=lstm_units, lstm_layers=lstm_layers)
        dropout = check_dropout("cnn_lstm", dropout)
        filters = int_list("cnn_lstm", "filters", filters, example="[64, 64]")
        self.filters, self.kernel_size, self.pool = filters, kernel_size, pool
        chans = (in_chans, *filters)
        layers: list[nn.Module] = []
        for i in range(len(filters)):
            layers.append(ConvBlock(chans[i], chans[i + 1], kernel_size))
            if pool > 1:
                layers.append(nn.MaxPool1d(pool))
        self.convs = nn.Sequential(*layers)
        # Between stacked LSTM layers the same dropout as before the head (torch warns for one layer).
        self.lstm = nn.LSTM(chans[-1], lstm_units, num_layers=lstm_layers, batch_first=True,
                            dropout=dropout if lstm_layers > 1 else 0.0)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(lstm_units, num_classes)

    @property
    def min_length(self) -> int:
        """The fewest steps the poolings leave one step of: ``pool ** len(filters)``."""
        return self.pool ** len(self.filters)

    def forward_features(self, x: Tensor) -> Tensor:
        """``(N, lstm_units)``: the top LSTM layer's last hidden state."""
        seq = self.convs(x).transpose(1, 2)  # (N, steps, F)
        _, (h, _) = self.lstm(seq)
        return h[-1]

    def extra_repr(self) -> str:
        return f"filters={self.filters}, kernel_size={self.kernel_size}, pool={self.pool}"


@register_model("cnn_lstm", "a CNN-LSTM stack: [conv 5, BN, ReLU, max pool 2] x 2 (64 filters), LSTM 64 over the "
                "remaining steps, last state, dropout, dense", default_input=(1, 128), min_input=(1, 4),
                task="timeseries", variable_length=False)
def cnn_lstm(num_classes: int = 2, in_chans: int = 1, input_size: int = 128, filters: Sequence[int] = FILTERS,
             kernel_size: int = 5, pool: int = 2, lstm_units: int = 64, lstm_layers: int = 1,
             dropout: float = 0.5) -> CNNLSTM:
    """``filters``: one convolutional block per value; ``pool``: each block's max-pooling width (1: none);
    ``lstm_units`` / ``lstm_layers``: the recurrent part; ``dropout``: before the head (and between
    stacked LSTM layers)."""
    model = CNNLSTM(num_classes, in_chans, filters=filters, kernel_size=kernel_size, pool=pool,
                    lstm_units=lstm_units, lstm_layers=lstm_layers, dropout=dropout)
    check_length("cnn_lstm", input_size, model.min_length, f"{len(model.filters)} poolings of {model.pool}")
    return model
