"""The one interface every cnnkit classifier has (as in timm):
``forward_features``, ``forward_head``, ``get_classifier`` and ``reset_classifier``.
"""

from __future__ import annotations

import torch
from torch import nn


class Classifier(nn.Module):
    """A feature extractor ``body`` (image -> pooled feature vector) and a linear ``head``.

    Wraps torchvision's networks: their own classifier layer becomes ``head``
    and is replaced by ``nn.Identity`` in the body.
    """

    def __init__(self, body: nn.Module, head: nn.Linear) -> None:
        super().__init__()
        self.body = body
        self.head = head

    @property
    def num_classes(self) -> int:
        return self.head.out_features

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))

    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the head by a freshly initialised one with ``num_classes`` outputs."""
        w = self.head.weight
        self.head = nn.Linear(self.head.in_features, num_classes, bias=self.head.bias is not None).to(w.device, w.dtype)
