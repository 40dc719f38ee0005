"""Dense, flatten, dropout, batch normalisation and embedding, each with its backward.

Example::

    >>> x = np.random.randn(4, 3); w = np.random.randn(2, 3); b = np.zeros(2)
    >>> y, cache = dense(x, w, b)                    # (4, 3) -> (4, 2), like torch.nn.Linear
    >>> dx, dw, db = dense_backward(np.ones_like(y), cache)
"""

from __future__ import annotations

import numpy as np


# ----------------------------------------------------------------------------- dense

def dense(x, w, b=None):
    """Fully connected layer: x (..., in), w (out, in), b (out,) or None -> y (..., out) = x W^T + b."""
    x = np.asarray(x)
    w = np.asarray(w)
    y = x @ w.T                                                   # (..., out)
    if b is not None:
        y = y + b
    return y, (x, w, b is not None)


def dense_backward(dy, cache):
    """dy (..., out) -> dx (..., in) = dy W, dw (out, in) = dy^T x, db (out,) = sum of dy (or None)."""
    x, w, has_bias = cache
    dy = np.asarray(dy)
    dy2 = dy.reshape(-1, w.shape[0])                              # (M, out)
    x2 = x.reshape(-1, w.shape[1])                                # (M, in)
    dx = dy @ w                                                   # (..., in)
    dw = dy2.T @ x2                                               # (out, in)
    db = dy2.sum(axis=0) if has_bias else None                    # (out,)
    return dx, dw, db


# ----------------------------------------------------------------------------- flatten

def flatten(x):
    """x (N, d1, d2, ...) -> y (N, d1*d2*...)."""
    x = np.asarray(x)
    return x.reshape(x.shape[0], -1), x.shape


def flatten_backward(dy, cache):
    """dy (N, D) -> dx with the input's shape."""
    return np.asarray(dy).reshape(cache)


# ----------------------------------------------------------------------------- dropout

def dropout(x, p, rng, training=True):
    """Inverted dropout: zero each element with probability p and scale the rest by 1/(1-p).

    Identity when ``training`` is False or p == 0. ``rng`` is a ``numpy.random.Generator``.
    """
    x = np.asarray(x)
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability must be in [0, 1], got {p}")
    if not training or p == 0.0:
        return x, None
    if p == 1.0:
        mask = np.zeros(x.shape, dtype=x.dtype)
    else:
        keep = rng.random(x.shape) >= p
        mask = (keep / (1.0 - p)).astype(x.dtype)                 # 0 or 1/(1-p)
    return x * mask, mask


def dropout_backward(dy, cache):
    """dx = dy * mask (the same mask and scale as the forward pass)."""
    mask = cache
    return np.asarray(dy) if mask is None else dy * mask


# ----------------------------------------------------------------------------- batch norm

def _bn_axes(x):
    if x.ndim == 2:                                               # (N, C)
        return (0,), (1, -1)
    if x.ndim == 3:                                               # (N, C, L)
        return (0, 2), (1, -1, 1)
    if x.ndim == 4:                                               # (N, C, H, W)
        return (0, 2, 3), (1, -1, 1, 1)
    raise ValueError(f"batchnorm expects (N, C), (N, C, L) or (N, C, H, W), got shape {x.shape}")


def batchnorm(x, gamma, beta, running_mean, running_var, momentum=0.1, eps=1e-5, training=True):
    """Batch normalisation over N (and L, or H and W): y = gamma * (x - mean) / sqrt(var + eps) + beta.

    x: (N, C), (N, C, L) or (N, C, H, W); gamma, beta, running_mean, running_var: (C,) (gamma/beta may be None).
    Training uses the batch mean and *biased* variance and updates the running stats in place
    like torch: r = (1 - momentum) r + momentum * stat, with the *unbiased* variance for r_var.
    Eval uses the running stats.
    """
    x = np.asarray(x)
    axes, bshape = _bn_axes(x)
    if training:
        m = x.size // x.shape[1]                                  # elements per channel
        if m < 2:
            raise ValueError("batchnorm in training needs more than one value per channel")
        mean = x.mean(axis=axes)                                  # (C,)
        var = x.var(axis=axes)                                    # (C,) biased
        if running_mean is not None:
            running_mean *= 1 - momentum
            running_mean += momentum * mean
        if running_var is not None:
            running_var *= 1 - momentum
            running_var += momentum * var * (m / (m - 1))         # unbiased
    else:
        mean = np.asarray(running_mean)
        var = np.asarray(running_var)
    inv_std = (1.0 / np.sqrt(var + eps)).astype(x.dtype, copy=False)  # (C,)
    xhat = (x - mean.reshape(bshape)) * inv_std.reshape(bshape)       # like x
    y = xhat if gamma is None else xhat * np.asarray(gamma).reshape(bshape)
    if beta is not None:
        y = y + np.asarray(beta).reshape(bshape)
    cache = (xhat, inv_std, gamma, beta is not None, axes, bshape, training)
    return y.astype(x.dtype, copy=False), cache


def batchnorm_backward(dy, cache):
    """dy like x -> (dx, dgamma (C,) or None, dbeta (C,) or None).

    Training: dx = inv_std / m * (m * g - sum(g) - xhat * sum(g * xhat)), g = dy * gamma.
    Eval: the statistics are constants, so dx = dy * gamma * inv_std.
    """
    xhat, inv_std, gamma, has_beta, axes, bshape, training = cache
    dy = np.asarray(dy)
    dgamma = None if gamma is None else (dy * xhat).sum(axis=axes)
    dbeta = dy.sum(axis=axes) if has_beta else None
    g = dy if gamma is None else dy * np.asarray(gamma).reshape(bshape)
    if training:
        m = xhat.size // xhat.shape[1]
        dx = (inv_std.reshape(bshape) / m) * (
            m * g
            - g.sum(axis=axes).reshape(bshape)
            - xhat * (g * xhat).sum(axis=axes).reshape(bshape)
        )
    else:
        dx = g * inv_std.reshape(bshape)
    return dx, dgamma, dbeta


# ----------------------------------------------------------------------------- embedding

def embedding(ids, w, padding_idx=None):
    """Token ids (N, L), table w (V, D) -> y (N, D, L) with y[n, :, t] = w[ids[n, t]] (channels first).

    Row ``padding_idx`` is expected to be zero (torch keeps it so). Returns ``(y, cache)``.
    """
    ids, w = np.asarray(ids), np.asarray(w)
    if ids.dtype.kind not in "iu" or ids.ndim != 2:
        raise ValueError(f"embedding expects integer token ids (N, L), got {ids.dtype} {ids.shape}")
    if ids.size and (ids.min() < 0 or ids.max() >= w.shape[0]):
        raise ValueError(f"token ids must be in 0..{w.shape[0] - 1}, got {ids.min()}..{ids.max()}")
    return w[ids].transpose(0, 2, 1), (ids, w.shape, padding_idx)


def embedding_backward(dy, cache):
    """dy (N, D, L) -> dw (V, D): dw[v] = sum of dy[n, :, t] over the positions with ids[n, t] == v;
    row ``padding_idx`` gets no gradient."""
    ids, shape, padding_idx = cache
    dy = np.asarray(dy)
    dw = np.zeros(shape, dtype=dy.dtype)
    np.add.at(dw, ids.reshape(-1), dy.transpose(0, 2, 1).reshape(-1, shape[1]))
    if padding_idx is not None:
        dw[padding_idx] = 0
    return dw
