"""Activation functions, each ``f(x, ...) -> (y, cache)`` and ``f_backward(dy, cache) -> dx``.

Element-wise (any shape): sigmoid, tanh, relu, leaky_relu, elu.
Channel groups: maxout (axis 1). Normalising: softmax (any axis).
``*_derivative(x)`` give f'(x) directly, for plotting.

Example::

    >>> y, cache = relu(np.array([-1.0, 2.0]))
    >>> relu_backward(np.ones(2), cache)
    array([0., 1.])
"""

from __future__ import annotations

import numpy as np


def _float(x):
    """As an array; integers and bools become float64, float32/float64 stay as they are."""
    x = np.asarray(x)
    return x if np.issubdtype(x.dtype, np.floating) else x.astype(np.float64)


def _sigmoid(x):
    """Stable logistic: never calls exp on a large positive number."""
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e)).astype(x.dtype, copy=False)


# ----------------------------------------------------------------------------- sigmoid

def sigmoid(x):
    """y = 1 / (1 + exp(-x))."""
    y = _sigmoid(_float(x))
    return y, y


def sigmoid_backward(dy, cache):
    """dx = dy * y * (1 - y)."""
    y = cache
    return dy * y * (1 - y)


# ----------------------------------------------------------------------------- tanh

def tanh(x):
    """y = tanh(x)."""
    y = np.tanh(_float(x))
    return y, y


def tanh_backward(dy, cache):
    """dx = dy * (1 - y^2)."""
    y = cache
    return dy * (1 - y * y)


# ----------------------------------------------------------------------------- ReLU family

def relu(x):
    """y = max(x, 0)."""
    x = _float(x)
    mask = x > 0
    return np.where(mask, x, 0).astype(x.dtype, copy=False), mask


def relu_backward(dy, cache):
    """dx = dy where x > 0 else 0 (0 at x == 0, like torch)."""
    mask = cache
    return dy * mask


def leaky_relu(x, slope=0.1):
    """y = x if x > 0 else slope * x."""
    x = _float(x)
    mask = x > 0
    return np.where(mask, x, slope * x).astype(x.dtype, copy=False), (mask, slope)


def leaky_relu_backward(dy, cache):
    """dx = dy if x > 0 else slope * dy (slope at x == 0, like torch)."""
    mask, slope = cache
    dy = np.asarray(dy)
    return np.where(mask, dy, slope * dy).astype(dy.dtype, copy=False)


def elu(x, alpha=1.0):
    """y = x if x > 0 else alpha * (exp(x) - 1)."""
    x = _float(x)
    neg = alpha * np.expm1(np.minimum(x, 0))
    y = np.where(x > 0, x, neg).astype(x.dtype, copy=False)
    return y, (x, alpha)


def elu_backward(dy, cache):
    """dx = dy if x > 0 else dy * alpha * exp(x)."""
    x, alpha = cache
    dy = np.asarray(dy)
    return np.where(x > 0, dy, dy * alpha * np.exp(np.minimum(x, 0))).astype(dy.dtype, copy=False)


# ----------------------------------------------------------------------------- maxout

def maxout(x, pieces):
    """Max over groups of ``pieces`` consecutive channels.

    x: (N, C*pieces, ...) -> y: (N, C, ...); y[:, c] = max_k x[:, c*pieces + k]; ties to the first.
    """
    x = _float(x)
    if x.shape[1] % pieces:
        raise ValueError(f"maxout: {x.shape[1]} channels is not a multiple of pieces={pieces}")
    g = x.reshape((x.shape[0], x.shape[1] // pieces, pieces) + x.shape[2:])  # (N, C, pieces, ...)
    arg = g.argmax(axis=2)                                                   # (N, C, ...)
    y = np.take_along_axis(g, arg[:, :, None], axis=2)[:, :, 0]
    return y, (arg, pieces, x.shape)


def maxout_backward(dy, cache):
    """dy: (N, C, ...) -> dx: (N, C*pieces, ...), dy routed to each group's first max."""
    arg, pieces, shape = cache
    dy = np.asarray(dy)
    k = np.arange(pieces).reshape((1, 1, pieces) + (1,) * (arg.ndim - 2))
    dg = (arg[:, :, None] == k) * dy[:, :, None]                             # (N, C, pieces, ...)
    return dg.reshape(shape)


# ----------------------------------------------------------------------------- softmax

def softmax(x, axis=-1):
    """y = exp(x - max) / sum exp(x - max) along ``axis``."""
    x = _float(x)
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    y = e / e.sum(axis=axis, keepdims=True)
    return y, (y, axis)


def softmax_backward(dy, cache):
    """dx = y * (dy - sum(dy * y, axis)) (the Jacobian diag(y) - y y^T applied to dy)."""
    y, axis = cache
    return y * (dy - (dy * y).sum(axis=axis, keepdims=True))


# ----------------------------------------------------------------------------- plain derivatives

def sigmoid_derivative(x):
    """sigma'(x) = sigma(x) (1 - sigma(x))."""
    s = _sigmoid(np.asarray(x, dtype=float))
    return s * (1 - s)


def tanh_derivative(x):
    """tanh'(x) = 1 - tanh(x)^2."""
    return 1 - np.tanh(np.asarray(x, dtype=float)) ** 2


def relu_derivative(x):
    """1 where x > 0 else 0."""
    return (np.asarray(x) > 0).astype(float)


def leaky_relu_derivative(x, slope=0.1):
    """1 where x > 0 else slope."""
    return np.where(np.asarray(x) > 0, 1.0, slope)


def elu_derivative(x, alpha=1.0):
    """1 where x > 0 else alpha * exp(x)."""
    x = np.asarray(x, dtype=float)
    return np.where(x > 0, 1.0, alpha * np.exp(np.minimum(x, 0)))
