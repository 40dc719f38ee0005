"""Held-out splits shared by the datasets: a leaf, so that a family's reader (series, clips) draws
the same split as the data layer without importing :mod:`cnnkit.data` itself."""

from __future__ import annotations

import torch


def stratified_split(labels: torch.Tensor, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (train, val): ``fraction`` of every class goes to val, chosen by ``seed``."""
    g = torch.Generator().manual_seed(seed)
    train, val = [], []
    for c in torch.unique(labels).tolist():
        idx = torch.nonzero(labels == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        k = int(round(fraction * len(idx)))
        val.append(idx[:k])
        train.append(idx[k:])
    tr, va = torch.cat(train), torch.cat(val)
    return tr.sort().values, va.sort().values
