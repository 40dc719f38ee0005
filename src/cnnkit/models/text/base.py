"""What the text classifiers share: token ids in, logits out, and the classifier interface.

A text model takes a LongTensor ``ids (B, L)`` of token ids, where 0 is the padding token and 1
the unknown token, and returns logits ``(B, num_classes)``. Sentences are padded at the end, so a
sentence's length is the position of its last non-zero id plus one (:func:`sequence_lengths`).

Every model has a dense head ``fc`` and timm's classifier interface (``forward_features``,
``forward_head``, ``get_classifier``, ``reset_classifier``), as the image classifiers do, and a
class attribute ``variable_length``: True when any sequence length works and padding does not
change the logits, False when the model takes exactly ``max_length`` tokens (the task then pads or
truncates every batch to that length).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from cnnkit.errors import UserError, did_you_mean

PAD_ID = 0
"""The padding token's id: its embedding row is zero and padded positions never win a max."""
UNK_ID = 1
"""The unknown token's id."""


def sequence_lengths(ids: Tensor) -> Tensor:
    """``(B,)`` int64: the position of the last non-padding id plus one (0 for an all-padding row).

    Written without data-dependent Python so that ONNX export traces it with a dynamic length.
    """
    positions = torch.arange(1, ids.shape[1] + 1, device=ids.device, dtype=torch.long)
    return ((ids != PAD_ID).long() * positions).amax(dim=1)


def length_mask(lengths: Tensor, size: int | Tensor) -> Tensor:
    """``(B, size)`` bool: True at the positions below each row's length."""
    return torch.arange(size, device=lengths.device)[None, :] < lengths[:, None]


def check_choice(model: str, option: str, value: str, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise UserError(f"{model}: unknown {option} {value!r}{did_you_mean(value, allowed)}; "
                        f"allowed: {', '.join(allowed)}")


def check_positive(model: str, **values: int) -> None:
    for name, v in values.items():
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise UserError(f"{model}: option {name} must be a positive integer, got {v!r}")


def check_dropout(model: str, dropout: float) -> None:
    if not 0.0 <= float(dropout) < 1.0:
        raise UserError(f"{model}: option dropout must be in [0, 1), got {dropout!r}")


class TextClassifier(nn.Module):
    """Base of the text models: ``forward_features(ids)`` gives the pooled features (B, F) and
    ``forward_head`` applies the dropout and the dense head ``fc``."""

    variable_length: bool = True
    fc: nn.Linear
    dropout: nn.Module

    @property
    def num_classes(self) -> int:
        return self.fc.out_features

    def forward_features(self, ids: Tensor) -> Tensor:  # pragma: no cover - every model overrides it
        raise NotImplementedError

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        x = self.dropout(x)
        return x if pre_logits else self.fc(x)

    def forward(self, ids: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(ids))

    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the head by a freshly initialised one with ``num_classes`` outputs."""
        w = self.fc.weight
        self.fc = nn.Linear(self.fc.in_features, num_classes, bias=self.fc.bias is not None).to(w.device, w.dtype)
