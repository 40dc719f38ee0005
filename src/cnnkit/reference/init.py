"""The course's three weight initialisation schemes.

================  =============================  ==================================
scheme            normal                          uniform
================  =============================  ==================================
random            std = scale                     U[-scale, scale]
xavier / glorot   std = √(2 / (fan_in+fan_out))   bound = √(6 / (fan_in+fan_out))
he / kaiming      std = √(2 / fan_in)             bound = √(6 / fan_in)
================  =============================  ==================================

``scale`` defaults to 0.05 (only used by "random"). Fans: conv weight (F, C, KH, KW) ->
fan_in = C*KH*KW, fan_out = F*KH*KW; dense weight (out, in) -> fan_in = in, fan_out = out.

Example::

    >>> w = init_weight((16, 3, 3, 3), "he", "normal", np.random.default_rng(0))
"""

from __future__ import annotations

import math

import numpy as np

DEFAULT_SCALE = 0.05

_ALIASES = {
    "random": "random",
    "xavier": "xavier",
    "glorot": "xavier",
    "he": "he",
    "kaiming": "he",
}


def fans(shape):
    """``(fan_in, fan_out)`` of a weight shape (dense (out, in) or conv (F, C, KH, KW, ...))."""
    shape = tuple(int(s) for s in shape)
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return shape[0], shape[0]
    receptive = math.prod(shape[2:])
    return shape[1] * receptive, shape[0] * receptive


def init_std_bound(shape, scheme, distribution, scale=DEFAULT_SCALE):
    """The std (normal) or bound (uniform) a scheme uses for this shape."""
    key = _ALIASES.get(str(scheme).lower())
    if key is None:
        raise ValueError(f"unknown init scheme {scheme!r}; choose from {sorted(_ALIASES)}")
    if distribution not in ("normal", "uniform"):
        raise ValueError(f"distribution must be 'normal' or 'uniform', got {distribution!r}")
    fan_in, fan_out = fans(shape)
    if key == "random":
        return float(scale)
    numerator = 2.0 if distribution == "normal" else 6.0
    denominator = (fan_in + fan_out) if key == "xavier" else fan_in
    return math.sqrt(numerator / denominator)


def init_weight(shape, scheme="he", distribution="normal", rng=None, scale=DEFAULT_SCALE,
                dtype=np.float64):
    """A new weight array drawn with ``scheme`` ("random", "xavier"/"glorot", "he"/"kaiming").

    distribution: "normal" (zero mean, std as in the table) or "uniform" (in [-bound, bound]).
    rng: a ``numpy.random.Generator`` (a fresh default one if None).
    """
    rng = np.random.default_rng() if rng is None else rng
    s = init_std_bound(shape, scheme, distribution, scale)
    if distribution == "normal":
        w = rng.normal(0.0, s, size=shape)
    else:
        w = rng.uniform(-s, s, size=shape)
    return w.astype(dtype, copy=False)
