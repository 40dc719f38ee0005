"""Metric objects (torchmetrics) that the tasks share."""

from __future__ import annotations

import torch
from torchmetrics import Metric


class Ratio(Metric):
    """``sum(numerator) / sum(denominator)`` over all batches (and DDP ranks), kept in float64.

    A weighted mean: the mean loss is ``Ratio`` fed ``(loss * n, n)``, accuracy ``(correct, n)``.
    float64 sums make the result exactly the fraction a count would give (0.98, not 0.9800000190734863).
    """

    full_state_update = False
    higher_is_better = None

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("num", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("den", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, numerator: torch.Tensor | float, denominator: torch.Tensor | float) -> None:
        self.num += torch.as_tensor(numerator, dtype=torch.float64, device=self.num.device)
        self.den += torch.as_tensor(denominator, dtype=torch.float64, device=self.den.device)

    def compute(self) -> torch.Tensor:
        return self.num / self.den.clamp_min(1.0)
