"""The course's layers and initialisation schemes in torch (their shape arithmetic: :mod:`cnnkit.geometry`)."""

from cnnkit.nn.init import init_weights
from cnnkit.nn.layers import (
    Conv2d,
    GlobalAvgPool,
    GlobalMaxPool,
    L2Pool2d,
    Maxout,
    Residual,
)

__all__ = ["Conv2d", "GlobalAvgPool", "GlobalMaxPool", "L2Pool2d", "Maxout", "Residual", "init_weights"]
