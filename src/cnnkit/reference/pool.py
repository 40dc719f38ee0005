"""2-D pooling: max, average and L2, plus global average/max pooling; 1-D pooling over time
(sequences (N, C, L): max, average, and Kim's max-over-time ``global_max_pool1d``).

All window ops share the im2col view of :mod:`cnnkit.reference.conv`:
x (N, C, H, W) -> windows (N, C, H', W', KH, KW) -> reduce the last two axes.
Padding is symmetric like torch: -inf for max pooling, zeros for avg and L2
(avg divides by KH*KW, i.e. torch's ``count_include_pad=True``).

Example::

    >>> x = np.arange(16.0).reshape(1, 1, 4, 4)
    >>> y, cache = max_pool2d(x, 2)
    >>> y[0, 0]
    array([[ 5.,  7.],
           [13., 15.]])
    >>> dx = max_pool2d_backward(np.ones_like(y), cache)
"""

from __future__ import annotations

import numpy as np

from cnnkit.geometry import conv_output_size, pair
from cnnkit.reference.conv import pad2d, scatter_windows, sliding_windows, unpad2d


def _windows(x, kernel, stride, padding, fill):
    """x: (N, C, H, W) -> (windows (N, C, H', W', KH, KW), geometry)."""
    x = np.asarray(x)
    if x.ndim != 4:
        raise ValueError(f"pooling expects x of shape (N, C, H, W), got {x.shape}")
    kernel = pair(kernel, "kernel")
    stride = kernel if stride is None else pair(stride, "stride")
    ph, pw = pair(padding, "padding")
    if ph > kernel[0] // 2 or pw > kernel[1] // 2 or ph < 0 or pw < 0:
        raise ValueError(f"pool padding {(ph, pw)} must be between 0 and half the kernel {kernel}")
    pads = ((ph, ph), (pw, pw))
    out_hw = (
        conv_output_size(x.shape[2], kernel[0], stride[0], ph, ph),
        conv_output_size(x.shape[3], kernel[1], stride[1], pw, pw),
    )
    xp = pad2d(x, pads, value=fill)
    win = sliding_windows(xp, kernel, stride, (1, 1), out_hw)
    geom = (xp.shape, pads, stride, kernel)
    return win, geom


def _scatter(dwin, geom):
    """dwin (N, C, H', W', KH, KW) -> dx (N, C, H, W): sum into the padded input, crop."""
    padded_shape, pads, stride, _ = geom
    return np.ascontiguousarray(unpad2d(scatter_windows(dwin, padded_shape, stride, (1, 1)), pads))


# ----------------------------------------------------------------------------- max

def max_pool2d(x, kernel, stride=None, padding=0):
    """Max pooling. x: (N, C, H, W) -> y: (N, C, H', W'). Padded cells are -inf."""
    win, geom = _windows(x, kernel, stride, padding, -np.inf)      # (N, C, H', W', KH, KW)
    flat = win.reshape(win.shape[:4] + (-1,))                       # (N, C, H', W', KH*KW)
    arg = flat.argmax(axis=-1)                                      # first max, row-major
    y = np.take_along_axis(flat, arg[..., None], axis=-1)[..., 0]   # (N, C, H', W')
    return y, (arg, geom)


def max_pool2d_backward(dy, cache):
    """dy: (N, C, H', W') -> dx: (N, C, H, W); each window's gradient goes to its first max."""
    arg, geom = cache
    kh, kw = geom[3]
    onehot = arg[..., None] == np.arange(kh * kw)                   # (N, C, H', W', KH*KW)
    dwin = (onehot * np.asarray(dy)[..., None]).reshape(arg.shape + (kh, kw))
    return _scatter(dwin, geom)


# ----------------------------------------------------------------------------- average

def avg_pool2d(x, kernel, stride=None, padding=0):
    """Average pooling. x: (N, C, H, W) -> y: (N, C, H', W'); padded zeros count (divide by KH*KW)."""
    win, geom = _windows(x, kernel, stride, padding, 0.0)
    y = win.mean(axis=(-2, -1))                                     # (N, C, H', W')
    return y, geom


def avg_pool2d_backward(dy, cache):
    """dy: (N, C, H', W') -> dx: (N, C, H, W); every window cell gets dy / (KH*KW)."""
    geom = cache
    kh, kw = geom[3]
    dy = np.asarray(dy) / (kh * kw)
    dwin = np.broadcast_to(dy[..., None, None], dy.shape + (kh, kw))
    return _scatter(dwin, geom)


# ----------------------------------------------------------------------------- L2

def l2_pool2d(x, kernel, stride=None, padding=0):
    """L2 pooling: y = sqrt(sum of x^2 over the window). x: (N, C, H, W) -> y: (N, C, H', W')."""
    win, geom = _windows(x, kernel, stride, padding, 0.0)
    y = np.sqrt(np.einsum("nchwpq,nchwpq->nchw", win, win))        # (N, C, H', W')
    return y, (win, y, geom)


def l2_pool2d_backward(dy, cache):
    """dy: (N, C, H', W') -> dx: (N, C, H, W); d y / d x = x / y, and 0 where y == 0."""
    win, y, geom = cache
    safe = np.where(y > 0, y, 1.0)
    scale = np.where(y > 0, np.asarray(dy) / safe, 0.0).astype(y.dtype, copy=False)
    dwin = win * scale[..., None, None]                             # (N, C, H', W', KH, KW)
    return _scatter(dwin, geom)


# ----------------------------------------------------------------------------- 1-D (sequences)

def max_pool1d(x, kernel, stride=None, padding=0):
    """Max pooling over time: x (N, C, L) -> y (N, C, L'); :func:`max_pool2d` with a (1, K) window."""
    stride = kernel if stride is None else stride
    y, cache = max_pool2d(np.asarray(x)[:, :, None, :], (1, kernel), (1, stride), (0, padding))
    return y[:, :, 0, :], cache


def max_pool1d_backward(dy, cache):
    """dy (N, C, L') -> dx (N, C, L); each window's gradient goes to its first max."""
    return max_pool2d_backward(np.asarray(dy)[:, :, None, :], cache)[:, :, 0, :]


def avg_pool1d(x, kernel, stride=None, padding=0):
    """Average pooling over time: x (N, C, L) -> y (N, C, L'); padded zeros count (divide by K)."""
    stride = kernel if stride is None else stride
    y, cache = avg_pool2d(np.asarray(x)[:, :, None, :], (1, kernel), (1, stride), (0, padding))
    return y[:, :, 0, :], cache


def avg_pool1d_backward(dy, cache):
    """dy (N, C, L') -> dx (N, C, L); every window cell gets dy / K."""
    return avg_pool2d_backward(np.asarray(dy)[:, :, None, :], cache)[:, :, 0, :]


def global_max_pool1d(x):
    """Max over time (Kim, 2014): x (N, C, L) -> y (N, C); ties go to the first position."""
    x = np.asarray(x)
    arg = x.argmax(axis=2)                                          # (N, C)
    return np.take_along_axis(x, arg[..., None], axis=2)[..., 0], (arg, x.shape)


def global_max_pool1d_backward(dy, cache):
    """dy (N, C) -> dx (N, C, L), nonzero only at each channel's first max."""
    arg, shape = cache
    return (arg[..., None] == np.arange(shape[2])) * np.asarray(dy)[..., None]


def global_avg_pool1d(x):
    """Mean over time: x (N, C, L) -> y (N, C)."""
    x = np.asarray(x)
    return x.mean(axis=2), x.shape


def global_avg_pool1d_backward(dy, cache):
    """dy (N, C) -> dx (N, C, L) = dy / L everywhere."""
    shape = cache
    return np.ascontiguousarray(np.broadcast_to((np.asarray(dy) / shape[2])[:, :, None], shape))


# ----------------------------------------------------------------------------- global

def global_avg_pool(x):
    """Mean over the spatial axes: x (N, C, H, W) -> y (N, C)."""
    x = np.asarray(x)
    return x.mean(axis=(2, 3)), x.shape


def global_avg_pool_backward(dy, cache):
    """dy: (N, C) -> dx: (N, C, H, W) = dy / (H*W) everywhere."""
    shape = cache
    dy = np.asarray(dy) / (shape[2] * shape[3])
    return np.ascontiguousarray(np.broadcast_to(dy[:, :, None, None], shape))


def global_max_pool(x):
    """Max over the spatial axes: x (N, C, H, W) -> y (N, C); ties go to the first (row-major)."""
    x = np.asarray(x)
    flat = x.reshape(x.shape[0], x.shape[1], -1)                    # (N, C, H*W)
    arg = flat.argmax(axis=-1)                                      # (N, C)
    y = np.take_along_axis(flat, arg[..., None], axis=-1)[..., 0]
    return y, (arg, x.shape)


def global_max_pool_backward(dy, cache):
    """dy: (N, C) -> dx: (N, C, H, W), nonzero only at each channel's first max."""
    arg, shape = cache
    onehot = arg[..., None] == np.arange(shape[2] * shape[3])       # (N, C, H*W)
    return (onehot * np.asarray(dy)[..., None]).reshape(shape)
