"""Helpers shared by the reference-engine tests (imported as ``from _helpers import nerr``)."""

from __future__ import annotations

import numpy as np


def nerr(a, b) -> float:
    """max|a - b| / max|b| (independent of the library's own helper); the shapes must agree."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    scale = np.abs(b).max()
    return float(np.abs(a - b).max() / (scale if scale > 0 else 1.0))
