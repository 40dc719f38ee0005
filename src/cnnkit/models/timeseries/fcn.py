"""Wang, Yan & Oates (2017), "Time Series Classification from Scratch with Deep Neural Networks: A
Strong Baseline" (IJCNN): the fully convolutional network, ``fcn1d``.

::

    x (N, C, L) ─ conv 8, 128 ─ BN ─ ReLU ─ conv 5, 256 ─ BN ─ ReLU ─ conv 3, 128 ─ BN ─ ReLU
                ─ global average pooling over time (N, 128) ─ dense ─ logits

Three convolutional blocks with 'same' padding and stride 1, so the length never changes and no
pooling is needed before the global average, which makes the network length-agnostic (any
L >= 1) and its class activation maps line up with the input steps. No dropout, no pooling
inside. The convolutions keep their bias, as in the authors' Keras code (it is redundant before
a batch normalisation but counts in the parameter total: 264,962 for a univariate series and two
classes).

The same body is the convolutional branch of ``lstm_fcn`` (:mod:`.lstm_fcn`). (``fcn`` is the
image segmentation network of Long et al.; this one is ``fcn1d``.)
"""

from __future__ import annotations

from typing import Sequence

from torch import Tensor, nn

from cnnkit.models.registry import register_model
from cnnkit.models.timeseries.base import ConvBlock, SeriesClassifier, check_positive, int_list

FILTERS = (128, 256, 128)
KERNEL_SIZES = (8, 5, 3)


class FCNBody(nn.Sequential):
    """The convolutional blocks, ``(N, C, L) -> (N, filters[-1], L)``."""

    def __init__(self, in_chans: int, filters: Sequence[int] = FILTERS, kernel_sizes: Sequence[int] = KERNEL_SIZES
                 ) -> None:
        chans = (in_chans, *filters)
        super().__init__(*(ConvBlock(chans[i], chans[i + 1], k) for i, k in enumerate(kernel_sizes)))
        self.out_chans = chans[-1]


class FCN1d(SeriesClassifier):
    """``x (N, C, L) -> logits (N, num_classes)``; any L >= 1."""

    def __init__(self, num_classes: int, in_chans: int, filters: Sequence[int] = FILTERS,
                 kernel_sizes: Sequence[int] = KERNEL_SIZES) -> None:
        super().__init__()
        check_positive("fcn1d", num_classes=num_classes, in_chans=in_chans)
        filters = int_list("fcn1d", "filters", filters, example="[128, 256, 128]")
        kernel_sizes = int_list("fcn1d", "kernel_sizes", kernel_sizes, length=len(filters), example="[8, 5, 3]")
        self.filters, self.kernel_sizes = filters, kernel_sizes
        self.body = FCNBody(in_chans, filters, kernel_sizes)
        self.dropout = nn.Identity()
        self.fc = nn.Linear(self.body.out_chans, num_classes)

    def feature_maps(self, x: Tensor) -> Tensor:
        """``(N, filters[-1], L)``: the last block's output, before the average (its class activation
        map for class k is ``fc.weight[k] @ maps``)."""
        return self.body(x)

    def forward_features(self, x: Tensor) -> Tensor:
        """``(N, filters[-1])``: the average over time of the last block's output."""
        return self.body(x).mean(dim=2)

    def extra_repr(self) -> str:
        return f"filters={self.filters}, kernel_sizes={self.kernel_sizes}"


@register_model("fcn1d", "Wang et al. (2017)'s time-series FCN: conv 8/5/3 x 128/256/128 filters, BN, ReLU, "
                "global average pooling, dense", default_input=(1, 128), min_input=(1, 1), task="timeseries",
                variable_length=False)
def fcn1d(num_classes: int = 2, in_chans: int = 1, input_size: int = 128, filters: Sequence[int] = FILTERS,
          kernel_sizes: Sequence[int] = KERNEL_SIZES) -> FCN1d:
    """``in_chans``: the channels of the series (the mask channel included); ``input_size``: its length
    (any other length works too). ``filters`` / ``kernel_sizes``: one per block."""
    return FCN1d(num_classes, in_chans, filters=filters, kernel_sizes=kernel_sizes)
