"""The course's loss functions, each returning ``(loss, gradient w.r.t. the first argument)``.

Example::

    >>> logits = np.array([[2.0, 0.5, -1.0]]); labels = np.array([0])
    >>> loss, dlogits = cross_entropy(logits, labels)
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from cnnkit.errors import UserError
from cnnkit.reference.activations import softmax, softmax_backward


def _log_softmax(z, axis=-1):
    shifted = z - z.max(axis=axis, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))


def mse(pred, target):
    """Mean squared error: mean over ALL elements (batch and features) of (pred - target)^2.

    L = (1 / pred.size) * sum (y - yhat)^2;  dL/dpred = 2 (pred - target) / pred.size.
    Same as ``torch.nn.functional.mse_loss`` with reduction="mean".
    """
    pred = np.asarray(pred)
    diff = pred - np.asarray(target, dtype=pred.dtype)
    loss = np.mean(diff * diff)
    return loss, (2.0 / diff.size) * diff


def bce(logits, target):
    """Binary cross-entropy on sigmoid(logits), mean over all elements, computed stably.

    L = mean(-t log s - (1 - t) log(1 - s)), s = sigmoid(z)
      = mean(max(z, 0) - z t + log(1 + exp(-|z|)));  dL/dz = (s - t) / z.size.
    Same as ``torch.nn.functional.binary_cross_entropy_with_logits``.
    """
    z = np.asarray(logits)
    t = np.asarray(target, dtype=z.dtype)
    loss = np.mean(np.maximum(z, 0) - z * t + np.log1p(np.exp(-np.abs(z))))
    e = np.exp(-np.abs(z))
    s = np.where(z >= 0, 1 / (1 + e), e / (1 + e))
    return loss, ((s - t) / z.size).astype(z.dtype, copy=False)


def cross_entropy(logits, labels, label_smoothing=0.0):
    """Categorical cross-entropy of softmax(logits): L = -(1/n) sum_i sum_j y_ij log softmax(z)_ij.

    logits: (N, K); labels: int class indices (N,) or probabilities (N, K).
    With label smoothing eps the target is y = (1 - eps) * onehot + eps / K, as in
    ``torch.nn.functional.cross_entropy(..., label_smoothing=eps)``.
    dL/dz = (softmax(z) - y) / N.
    """
    z = np.asarray(logits)
    if z.ndim != 2:
        raise ValueError(f"cross_entropy expects logits of shape (N, K), got {z.shape}")
    n, k = z.shape
    labels = np.asarray(labels)
    if labels.ndim == 1:
        y = np.zeros_like(z)
        y[np.arange(n), labels] = 1
    elif labels.shape == z.shape:
        y = labels.astype(z.dtype)
    else:
        raise ValueError(f"labels must be (N,) ints or (N, K) probabilities, got {labels.shape}")
    if label_smoothing:
        y = (1 - label_smoothing) * y + label_smoothing / k
    logp = _log_softmax(z, axis=1)                                # (N, K)
    loss = -(y * logp).sum() / n
    return loss, ((np.exp(logp) - y) / n).astype(z.dtype, copy=False)


def classification_loss(name: str, label_smoothing: float = 0.0) -> Callable[[np.ndarray, np.ndarray], tuple[float, np.ndarray]]:
    """``fn(logits (N, K), labels (N,)) -> (loss, dL/dlogits)``, the NumPy twin of :mod:`cnnkit.nn.losses` (the classification task's losses).

    cross_entropy: softmax cross-entropy (label smoothing); mse: mean over N*K of
    (softmax(z) - onehot)^2 (no smoothing, as torch); bce: sigmoid BCE vs the (smoothed) one-hot.
    """
    def onehot(z, y):
        t = np.zeros_like(z)
        t[np.arange(len(y)), y] = 1
        return t

    if name == "cross_entropy":
        def ce(z, y):
            loss, dz = cross_entropy(z, y, label_smoothing)
            return float(loss), dz
        return ce
    if name == "mse":
        def mse_of_softmax(z, y):
            p, cache = softmax(z, axis=1)                                 # (N, K)
            loss, dp = mse(p, onehot(z, y))
            return float(loss), softmax_backward(dp, cache).astype(z.dtype, copy=False)
        return mse_of_softmax
    if name == "bce":
        def bce_of_onehot(z, y):
            t = onehot(z, y)
            if label_smoothing:
                t = t * z.dtype.type(1 - label_smoothing) + z.dtype.type(label_smoothing / z.shape[1])
            loss, dz = bce(z, t)
            return float(loss), dz
        return bce_of_onehot
    raise UserError(f"unknown loss {name!r}; choose from cross_entropy, mse, bce")
