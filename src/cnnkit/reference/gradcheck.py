"""Finite-difference gradient checks.

Example::

    >>> f = lambda x: float((x ** 2).sum())
    >>> g = numerical_gradient(f, np.array([1.0, -2.0]))   # ≈ [2, -4]
    >>> max_normalized_error(g, np.array([2.0, -4.0])) < 1e-8
    True
"""

from __future__ import annotations

import numpy as np


def numerical_gradient(f, x, eps=1e-6):
    """Central differences (f(x + eps e_i) - f(x - eps e_i)) / (2 eps) for every element of x.

    f takes the array and returns a scalar. x is perturbed in place and restored; use float64.
    """
    x = np.asarray(x)
    grad = np.zeros(x.shape, dtype=np.float64)
    flat = x.reshape(-1)                   # a view for contiguous x
    if not np.shares_memory(flat, x):
        raise ValueError("numerical_gradient needs a contiguous array")
    gflat = grad.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + eps
        fp = float(f(x))
        flat[i] = old - eps
        fm = float(f(x))
        flat[i] = old
        gflat[i] = (fp - fm) / (2 * eps)
    return grad


def max_normalized_error(a, b):
    """max|a - b| / max|b|; if b is all zero, the plain max|a - b|."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} vs {b.shape}")
    if a.size == 0:
        return 0.0
    err = float(np.max(np.abs(a - b)))
    scale = float(np.max(np.abs(b)))
    return err / scale if scale > 0 else err
