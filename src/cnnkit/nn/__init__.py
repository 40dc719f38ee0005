"""The course's layers and initialisation schemes in torch."""

from cnnkit.nn.init import init_weights
from cnnkit.nn.layers import (
    Conv2d,
    GlobalAvgPool,
    GlobalMaxPool,
    L2Pool2d,
    Maxout,
    Residual,
    conv_out_size,
    pair,
    same_padding,
)

__all__ = ["Conv2d", "GlobalAvgPool", "GlobalMaxPool", "L2Pool2d", "Maxout", "Residual",
           "conv_out_size", "init_weights", "pair", "same_padding"]
