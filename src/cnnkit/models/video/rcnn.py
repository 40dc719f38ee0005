"""``rcnn`` (task ``classification``, images): Liang & Hu 2015's recurrent convolutional network, and
with ``recurrent: false`` its feed-forward twin of the same parameter count, for a fair comparison.

The network, its layers and how the twin's count is matched: :class:`cnnkit.nn.recurrent_conv.RCNN`
and :class:`~cnnkit.nn.recurrent_conv.RecurrentConv2d`. In short: a 5x5 convolution, four recurrent
convolutional layers (each a feed-forward and a recurrent 3x3 convolution, unrolled ``steps`` times),
max pooling after the first convolution and the second RCL, dropout, global max pooling, dense; the
twin replaces each RCL by two feed-forward 3x3 convolutions with the same weights' shapes, so the two
counts differ only by normalisation parameters (0.2% for the defaults).
"""

from __future__ import annotations

from cnnkit.errors import UserError
from cnnkit.models.registry import register_model
from cnnkit.models.video.base import check_bool, check_choice, check_dropout, check_positive
from cnnkit.nn.recurrent_conv import NORMS, RCNN


@register_model("rcnn", "Liang & Hu's recurrent CNN (RCNN-96): conv 5x5, 4 recurrent conv layers (3 iterations), "
                "global max pooling, dense; recurrent=false: the feed-forward twin of equal parameter count",
                default_input=(3, 32, 32), min_input=(3, 8, 8))
def rcnn(num_classes: int = 10, in_chans: int = 3, input_size: int = 32, width: int = 96, steps: int = 3,
         kernel: int = 3, blocks: int = 4, dropout: float = 0.5, norm: str = "batch", pool: str = "max",
         recurrent: bool = True) -> RCNN:
    """``width``: the feature maps of every layer (the paper's K: 96, 128, 160); ``steps``: the RCL's
    iterations after the feed-forward pass (the paper's T = 3; 0 makes each RCL one convolution);
    ``kernel``: the RCL's convolutions' (odd); ``blocks``: the RCLs; ``dropout``: after each RCL but the
    last; ``norm``: batch (one batch norm per iteration) or lrn (the paper's local response
    normalisation); ``pool``: the global pooling, max (the paper's) or avg; ``recurrent``: false for the
    feed-forward twin."""
    name = "rcnn"
    check_positive(name, num_classes=num_classes, in_chans=in_chans, width=width, kernel=kernel, blocks=blocks)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise UserError(f"{name}: option steps must be an integer >= 0, got {steps!r}")
    if kernel % 2 == 0:
        raise UserError(f"{name}: option kernel must be odd (same padding), got {kernel}")
    dropout = check_dropout(name, dropout)
    check_choice(name, "norm", norm, NORMS)
    check_choice(name, "pool", pool, ("max", "avg"))
    check_bool(name, "recurrent", recurrent)
    return RCNN(num_classes, in_chans, width=width, steps=steps, kernel=kernel, blocks=blocks, dropout=dropout,
                norm=norm, pool=pool, recurrent=recurrent)
