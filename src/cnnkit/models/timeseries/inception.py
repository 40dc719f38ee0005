"""Ismail Fawaz et al. (2020), "InceptionTime: Finding AlexNet for Time Series Classification"
(Data Mining and Knowledge Discovery): ``inception_time``.

One inception module::

    x (N, C, L) ─┬─ bottleneck 1x1, 32 ─┬─ conv 39, 32 ─┐
                 │                      ├─ conv 19, 32 ─┤
                 │                      └─ conv  9, 32 ─┼─ concat (128) ─ BN ─ ReLU
                 └─ max pool 3 (stride 1) ─ conv 1x1, 32 ┘

The network::

    x ─┬─ module ─ module ─ module ─ + ─ ReLU ─┬─ module ─ module ─ module ─ + ─ ReLU ─ GAP ─ dense
       └──── shortcut: 1x1 conv ─ BN ─────────┘└──── shortcut: 1x1 conv ─ BN ─────────┘

Each module looks at the series through three kernel lengths at once (the paper's 40, 20 and 10,
made odd here, 39, 19 and 9, so that 'same' padding is symmetric) plus a max-pooled 1x1 branch;
the 1x1 bottleneck first cuts the channels to 32, which keeps the long kernels affordable (the
authors' code skips it when the module's input has a single channel, and so does this one). All
convolutions are stride 1 and bias-free (batch normalisation follows), so any L >= 1 works.
``depth`` (6) modules, with a residual connection around every 3 (``residual``; a depth that is
not a multiple of 3 leaves the last modules without one); global average pooling; dense.

``ensemble: 5`` is the paper's InceptionTime proper: five networks with independent random
initialisations whose predicted probabilities are averaged. Here the five are one model trained
jointly, with one optimiser, on one loss (the simplest way to fit the trainer, which calls
``model(x)`` once): ``model(x)`` returns ``log(mean_i softmax(z_i))``, the log of the averaged
probabilities, so that ``softmax(model(x))`` *is* the ensemble's averaged probabilities, its argmax
the ensemble's vote, and the cross-entropy the trainer applies to it the negative log-likelihood of
the averaged prediction. That differs from the paper, which trains the five separately (each on its
own cross-entropy): joint training optimises the average, so a member's gradient is weighted by
how much of the correct class's averaged probability it contributes. Members share nothing; each
has its own head (``heads[i]``, :meth:`InceptionTimeEnsemble.member_logits`).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cnnkit.errors import UserError
from cnnkit.models.registry import register_model
from cnnkit.models.timeseries.base import SameConv1d, SeriesClassifier, check_bool, check_positive, int_list

KERNEL_SIZES = (39, 19, 9)


class InceptionModule(nn.Module):
    """``(N, in_chans, L) -> (N, filters * (len(kernel_sizes) + 1), L)``."""

    def __init__(self, in_chans: int, filters: int = 32, kernel_sizes: Sequence[int] = KERNEL_SIZES,
                 bottleneck: int | None = 32) -> None:
        super().__init__()
        self.bottleneck: nn.Module = nn.Identity()
        branch_in = in_chans
        if bottleneck and in_chans > 1:
            self.bottleneck = nn.Conv1d(in_chans, bottleneck, 1, bias=False)
            branch_in = bottleneck
        self.convs = nn.ModuleList(SameConv1d(branch_in, filters, k, bias=False) for k in kernel_sizes)
        self.pool = nn.MaxPool1d(3, stride=1, padding=1)
        self.pool_conv = nn.Conv1d(in_chans, filters, 1, bias=False)
        self.out_chans = filters * (len(kernel_sizes) + 1)
        self.bn = nn.BatchNorm1d(self.out_chans)

    def forward(self, x: Tensor) -> Tensor:
        b = self.bottleneck(x)
        branches = [conv(b) for conv in self.convs] + [self.pool_conv(self.pool(x))]
        return F.relu(self.bn(torch.cat(branches, dim=1)))


class Shortcut(nn.Sequential):
    """The residual connection's 1x1 convolution and batch normalisation (always a convolution, as in
    the authors' code, even when the channels do not change)."""

    def __init__(self, in_chans: int, out_chans: int) -> None:
        super().__init__(nn.Conv1d(in_chans, out_chans, 1, bias=False), nn.BatchNorm1d(out_chans))


class InceptionBody(nn.Module):
    """``depth`` inception modules with a shortcut around every 3: ``(N, C, L) -> (N, out_chans, L)``."""

    def __init__(self, in_chans: int, depth: int = 6, filters: int = 32, kernel_sizes: Sequence[int] = KERNEL_SIZES,
                 bottleneck: int | None = 32, residual: bool = True) -> None:
        super().__init__()
        self.residual = residual
        self.out_chans = filters * (len(kernel_sizes) + 1)
        self.blocks = nn.ModuleList()
        self.shortcuts = nn.ModuleList()
        chans, res_chans = in_chans, in_chans
        for d in range(depth):
            self.blocks.append(InceptionModule(chans, filters, kernel_sizes, bottleneck))
            chans = self.out_chans
            if residual and d % 3 == 2:
                self.shortcuts.append(Shortcut(res_chans, chans))
                res_chans = chans

    def forward(self, x: Tensor) -> Tensor:
        res = x
        for d, module in enumerate(self.blocks):
            x = module(x)
            if self.residual and d % 3 == 2:
                x = F.relu(x + self.shortcuts[d // 3](res))
                res = x
        return x


class InceptionTime(SeriesClassifier):
    """One network: ``x (N, C, L) -> logits (N, num_classes)``; any L >= 1."""

    def __init__(self, num_classes: int, in_chans: int, depth: int = 6, filters: int = 32,
                 kernel_sizes: Sequence[int] = KERNEL_SIZES, bottleneck: int | None = 32, residual: bool = True
                 ) -> None:
        super().__init__()
        self.body = InceptionBody(in_chans, depth, filters, kernel_sizes, bottleneck, residual)
        self.dropout = nn.Identity()
        self.fc = nn.Linear(self.body.out_chans, num_classes)

    def forward_features(self, x: Tensor) -> Tensor:
        return self.body(x).mean(dim=2)


class InceptionTimeEnsemble(nn.Module):
    """``ensemble`` independent networks: ``x (N, C, L) -> log(mean_i softmax(z_i)) (N, num_classes)``.

    ``forward_features`` stacks the members' pooled features ``(N, members, F)``; ``forward_head``
    applies each member's head and averages the probabilities. ``get_classifier()`` is the
    ModuleList of the heads.
    """

    variable_length = False

    def __init__(self, num_classes: int, in_chans: int, members: int, **options) -> None:
        super().__init__()
        self.bodies = nn.ModuleList(InceptionBody(in_chans, **options) for _ in range(members))
        out = self.bodies[0].out_chans
        self.heads = nn.ModuleList(nn.Linear(out, num_classes) for _ in range(members))

    @property
    def num_classes(self) -> int:
        return self.heads[0].out_features

    @property
    def members(self) -> int:
        return len(self.bodies)

    def forward_features(self, x: Tensor) -> Tensor:
        return torch.stack([body(x).mean(dim=2) for body in self.bodies], dim=1)

    def member_logits(self, x: Tensor) -> Tensor:
        """``(members, N, num_classes)``: each network's own logits."""
        features = self.forward_features(x)
        return torch.stack([head(features[:, i]) for i, head in enumerate(self.heads)])

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        if pre_logits:
            return x
        logits = torch.stack([head(x[:, i]) for i, head in enumerate(self.heads)])
        return torch.logsumexp(F.log_softmax(logits, dim=-1), dim=0) - math.log(len(self.heads))

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.heads

    def reset_classifier(self, num_classes: int) -> None:
        """Replace every member's head by a freshly initialised one with ``num_classes`` outputs."""
        w = self.heads[0].weight
        self.heads = nn.ModuleList(nn.Linear(h.in_features, num_classes).to(w.device, w.dtype) for h in self.heads)

    def extra_repr(self) -> str:
        return f"members={self.members}"


@register_model("inception_time", "Ismail Fawaz et al. (2020)'s InceptionTime: 6 inception modules (bottleneck 32, "
                "conv 39/19/9 + max-pool branch, 128 channels), residual every 3, GAP, dense; ensemble: 5 averages "
                "five networks", default_input=(1, 128), min_input=(1, 1), task="timeseries", variable_length=False)
def inception_time(num_classes: int = 2, in_chans: int = 1, input_size: int = 128, depth: int = 6, filters: int = 32,
                   kernel_sizes: Sequence[int] = KERNEL_SIZES, bottleneck: int | None = 32, residual: bool = True,
                   ensemble: int = 1) -> InceptionTime | InceptionTimeEnsemble:
    """``filters``: the channels of each branch (a module outputs ``filters * (len(kernel_sizes) + 1)``);
    ``bottleneck``: the 1x1 reduction's channels, null for none; ``residual``: a shortcut around every
    3 modules; ``ensemble``: the number of independently initialised networks whose probabilities
    are averaged (1: a single network returning logits; the paper's ensemble is 5)."""
    check_positive("inception_time", num_classes=num_classes, in_chans=in_chans, depth=depth, filters=filters,
                   ensemble=ensemble)
    kernel_sizes = int_list("inception_time", "kernel_sizes", kernel_sizes, example="[39, 19, 9]")
    if bottleneck is not None and (isinstance(bottleneck, bool) or not isinstance(bottleneck, int) or bottleneck < 1):
        raise UserError(f"inception_time: option bottleneck must be a positive integer or null (no bottleneck), "
                        f"got {bottleneck!r}")
    residual = check_bool("inception_time", "residual", residual)
    options = dict(depth=depth, filters=filters, kernel_sizes=kernel_sizes, bottleneck=bottleneck,
                   residual=residual)
    if ensemble == 1:
        return InceptionTime(num_classes, in_chans, **options)
    return InceptionTimeEnsemble(num_classes, in_chans, ensemble, **options)
