"""Weight initialisation schemes of the course: random, Xavier (Glorot) and He (Kaiming).

Applied to the weights of every convolution and dense layer; biases start at zero.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def init_weights(module: nn.Module, scheme: str = "default", distribution: str = "normal",
                 scale: float = 0.05) -> None:
    """Initialise conv and linear weights in place.

    - ``random``: N(0, scale^2) or U(-scale, scale)
    - ``xavier``: Glorot & Bengio (2010), std sqrt(2 / (fan_in + fan_out))
    - ``he``: He et al. (2015), std sqrt(2 / fan_in), for ReLU networks
    - ``default``: leave torch's own initialisation
    """
    if scheme == "default":
        return
    for m in module.modules():
        if not isinstance(m, (nn.Conv2d, nn.Conv1d, nn.Linear)):
            continue
        w = m.weight
        with torch.no_grad():
            if scheme == "random":
                if distribution == "normal":
                    w.normal_(0.0, scale)
                else:
                    w.uniform_(-scale, scale)
            elif scheme == "xavier":
                (nn.init.xavier_normal_ if distribution == "normal" else nn.init.xavier_uniform_)(w)
            elif scheme == "he":
                if distribution == "normal":
                    nn.init.kaiming_normal_(w, nonlinearity="relu")
                else:
                    nn.init.kaiming_uniform_(w, a=0.0, nonlinearity="relu")
            else:
                raise ValueError(f"unknown init scheme {scheme!r}")
            if m.bias is not None:
                m.bias.zero_()


def fans(shape: tuple[int, ...]) -> tuple[int, int]:
    """(fan_in, fan_out) of a conv (F, C, KH, KW) or dense (out, in) weight."""
    receptive = math.prod(shape[2:]) if len(shape) > 2 else 1
    return shape[1] * receptive, shape[0] * receptive
