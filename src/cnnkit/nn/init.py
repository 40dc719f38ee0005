"""Weight initialisation schemes of the course: random, Xavier (Glorot) and He (Kaiming).

Applied to the weights of every convolution (1-D too), transposed convolution and dense layer; biases
start at zero. An embedding table keeps torch's N(0, 1) (its padding row zero) whatever the scheme, as the
NumPy reference network's ``init`` does: its rows are word vectors, not a layer's fan-scaled weights.

Fans follow torch's ``nn.init`` (and :func:`cnnkit.reference.init.fans`): dimension 1 of the weight
times the kernel area is fan_in, dimension 0 times it fan_out. A convolution's weight is
(out, in/groups, KH, KW): fan_in = in/groups*KH*KW. A transposed convolution's weight is
(in, out/groups, KH, KW), so its fan_in is out/groups*KH*KW and its fan_out in*KH*KW: the fans of
the convolution it transposes, as torch computes them for its own default initialisation of
``nn.ConvTranspose2d`` and as the NumPy reference network does for the same weight.
"""

from __future__ import annotations

import math

import torch
from torch import nn


_INITIALISED = (nn.Conv2d, nn.Conv1d, nn.ConvTranspose2d, nn.ConvTranspose1d, nn.Linear)


def init_weights(module: nn.Module, scheme: str = "default", distribution: str = "normal",
                 scale: float = 0.05) -> None:
    """Initialise conv, transposed conv and linear weights in place.

    - ``random``: N(0, scale^2) or U(-scale, scale)
    - ``xavier``: Glorot & Bengio (2010), std sqrt(2 / (fan_in + fan_out))
    - ``he``: He et al. (2015), std sqrt(2 / fan_in), for ReLU networks
    - ``default``: leave torch's own initialisation
    """
    if scheme == "default":
        return
    for m in module.modules():
        if not isinstance(m, _INITIALISED):
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
    """(fan_in, fan_out) of a conv (F, C, KH, KW), transposed conv (C, F, KH, KW) or dense (out, in) weight,
    as torch's ``nn.init`` computes them (dimension 1 is the fan_in side)."""
    receptive = math.prod(shape[2:]) if len(shape) > 2 else 1
    return shape[1] * receptive, shape[0] * receptive
