"""The course's losses for classification, on logits.

- ``cross_entropy``: -(1/n) Σ_i Σ_j y_ij log ŷ_ij with ŷ = softmax(logits) (optional label smoothing)
- ``mse``: (1/(n C)) Σ (y_ij - ŷ_ij)² between the one-hot labels and ŷ = softmax(logits)
- ``bce``: binary cross-entropy of sigmoid(logits) against the one-hot labels, mean over n C
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from cnnkit.registry import Registry

LOSSES: Registry[Callable[..., Callable[[torch.Tensor, torch.Tensor], torch.Tensor]]] = Registry("loss")


@LOSSES.register("cross_entropy", "categorical cross-entropy on softmax(logits), with optional label smoothing")
def cross_entropy(label_smoothing: float = 0.0):
    def loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, y, label_smoothing=label_smoothing)
    return loss


@LOSSES.register("mse", "mean squared error between softmax(logits) and the one-hot labels")
def mse(label_smoothing: float = 0.0):
    def loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        target = F.one_hot(y, logits.shape[1]).to(logits.dtype)
        return F.mse_loss(logits.softmax(dim=1), target)
    return loss


@LOSSES.register("bce", "binary cross-entropy of sigmoid(logits) against the one-hot labels")
def bce(label_smoothing: float = 0.0):
    def loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        target = F.one_hot(y, logits.shape[1]).to(logits.dtype)
        if label_smoothing:
            target = target * (1 - label_smoothing) + label_smoothing / logits.shape[1]
        return F.binary_cross_entropy_with_logits(logits, target)
    return loss


def make_loss(name: str, label_smoothing: float = 0.0):
    return LOSSES.get(name)(label_smoothing=label_smoothing)
