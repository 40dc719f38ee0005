"""Wang, Yan & Oates (2017), "Time Series Classification from Scratch with Deep Neural Networks: A
Strong Baseline" (IJCNN): the residual network, ``resnet1d``.

::

    x (N, C, L) ─┬─ conv 8 ─ BN ─ ReLU ─ conv 5 ─ BN ─ ReLU ─ conv 3 ─ BN ─ + ─ ReLU ─  block 1 (64)
                 └──────────── shortcut: 1x1 conv ─ BN (channels change) ──┘
                 ─ block 2 (128) ─ block 3 (128) ─ global average pooling ─ dense ─ logits

Three residual blocks of three 'same' convolutions (kernels 8, 5, 3; stride 1, so the length never
changes), each followed by batch normalisation, ReLU after the first two and after the addition.
The shortcut is a 1x1 convolution with batch normalisation when the block changes the number of
channels (blocks 1 and 2) and the identity otherwise (block 3; the Keras code of Ismail Fawaz et
al.'s review puts a lone batch normalisation there). Convolutions keep their bias, as in the
authors' Keras code. Any L >= 1.

(``resnet18`` ... are the image networks; this one is ``resnet1d``.)
"""

from __future__ import annotations

from typing import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from cnnkit.models.registry import register_model
from cnnkit.models.timeseries.base import ConvBlock, SeriesClassifier, check_positive, int_list

FILTERS = (64, 128, 128)
KERNEL_SIZES = (8, 5, 3)


class ResidualBlock(nn.Module):
    """``len(kernel_sizes)`` 'same' convolutions with batch normalisation and a shortcut."""

    def __init__(self, in_chans: int, out_chans: int, kernel_sizes: Sequence[int] = KERNEL_SIZES) -> None:
        super().__init__()
        chans = (in_chans, *([out_chans] * len(kernel_sizes)))
        last = len(kernel_sizes) - 1
        self.convs = nn.Sequential(*(ConvBlock(chans[i], chans[i + 1], k, relu=i < last)
                                     for i, k in enumerate(kernel_sizes)))
        self.shortcut: nn.Module = nn.Identity()
        if in_chans != out_chans:
            self.shortcut = nn.Sequential(nn.Conv1d(in_chans, out_chans, 1), nn.BatchNorm1d(out_chans))

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.convs(x) + self.shortcut(x))


class ResNet1d(SeriesClassifier):
    """``x (N, C, L) -> logits (N, num_classes)``; any L >= 1."""

    def __init__(self, num_classes: int, in_chans: int, filters: Sequence[int] = FILTERS,
                 kernel_sizes: Sequence[int] = KERNEL_SIZES) -> None:
        super().__init__()
        check_positive("resnet1d", num_classes=num_classes, in_chans=in_chans)
        filters = int_list("resnet1d", "filters", filters, example="[64, 128, 128]")
        kernel_sizes = int_list("resnet1d", "kernel_sizes", kernel_sizes, example="[8, 5, 3]")
        self.filters, self.kernel_sizes = filters, kernel_sizes
        chans = (in_chans, *filters)
        self.blocks = nn.Sequential(*(ResidualBlock(chans[i], chans[i + 1], kernel_sizes)
                                      for i in range(len(filters))))
        self.dropout = nn.Identity()
        self.fc = nn.Linear(chans[-1], num_classes)

    def feature_maps(self, x: Tensor) -> Tensor:
        """``(N, filters[-1], L)``: the last block's output, before the average."""
        return self.blocks(x)

    def forward_features(self, x: Tensor) -> Tensor:
        return self.blocks(x).mean(dim=2)

    def extra_repr(self) -> str:
        return f"filters={self.filters}, kernel_sizes={self.kernel_sizes}"


@register_model("resnet1d", "Wang et al. (2017)'s time-series ResNet: 3 residual blocks of conv 8/5/3 (64/128/128 "
                "filters), BN, shortcuts, global average pooling, dense", default_input=(1, 128), min_input=(1, 1),
                task="timeseries", variable_length=False)
def resnet1d(num_classes: int = 2, in_chans: int = 1, input_size: int = 128, filters: Sequence[int] = FILTERS,
             kernel_sizes: Sequence[int] = KERNEL_SIZES) -> ResNet1d:
    """``filters``: the channels of each residual block (one block per value); ``kernel_sizes``: the
    convolutions inside every block."""
    return ResNet1d(num_classes, in_chans, filters=filters, kernel_sizes=kernel_sizes)
