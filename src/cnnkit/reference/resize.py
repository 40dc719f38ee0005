"""Upsampling (nearest and bilinear) and U-Net's crop-and-concatenate, each with its backward.

Resizing is linear and acts on each axis apart: y = A_h . x . A_w^T, with A_h (H', H) and
A_w (W', W) the interpolation matrices, so the backward is dx = A_h^T . dy . A_w. The
matrices follow torch's ``F.interpolate`` (``nearest``: source row floor(i * H / H') computed in
float32 as torch does; ``bilinear``: half-pixel centres, or ``align_corners``).

Example::

    >>> x = np.arange(4.0).reshape(1, 1, 2, 2)
    >>> y, cache = upsample2d(x, (4, 4), "nearest")
    >>> y[0, 0]
    array([[0., 0., 1., 1.],
           [0., 0., 1., 1.],
           [2., 2., 3., 3.],
           [2., 2., 3., 3.]])
    >>> dx = upsample2d_backward(np.ones_like(y), cache)    # each input pixel was copied 4 times
"""

from __future__ import annotations

import numpy as np


def interpolation_matrix(in_size: int, out_size: int, mode: str = "nearest", align_corners: bool = False,
                         dtype=np.float64) -> np.ndarray:
    """A (out_size, in_size) matrix whose row i holds the weights of output i on the inputs."""
    a = np.zeros((out_size, in_size), dtype=dtype)
    rows = np.arange(out_size)
    if mode == "nearest":
        scale = np.float32(in_size) / np.float32(out_size)
        src = np.minimum(np.floor(rows.astype(np.float32) * scale).astype(np.int64), in_size - 1)
        a[rows, src] = 1
        return a
    if mode != "bilinear":
        raise ValueError(f"mode must be 'nearest' or 'bilinear', got {mode!r}")
    if align_corners:
        scale = (in_size - 1) / (out_size - 1) if out_size > 1 else 0.0
        src = rows * scale
    else:  # pixel centres: output i sits at (i + 0.5) * in/out - 0.5 in input coordinates
        src = np.maximum((rows + 0.5) * (in_size / out_size) - 0.5, 0.0)
    i0 = np.floor(src).astype(np.int64)
    i0 = np.minimum(i0, in_size - 1)
    i1 = np.minimum(i0 + 1, in_size - 1)
    frac = src - i0
    np.add.at(a, (rows, i0), 1 - frac)
    np.add.at(a, (rows, i1), frac)
    return a


def upsample2d(x, size, mode="nearest", align_corners=False):
    """x (N, C, H, W) -> y (N, C, H', W') with (H', W') = ``size``. Returns ``(y, cache)``."""
    x = np.asarray(x)
    if x.ndim != 4:
        raise ValueError(f"upsample2d expects x of shape (N, C, H, W), got {x.shape}")
    ah = interpolation_matrix(x.shape[2], int(size[0]), mode, align_corners, x.dtype)   # (H', H)
    aw = interpolation_matrix(x.shape[3], int(size[1]), mode, align_corners, x.dtype)   # (W', W)
    y = ah @ x @ aw.T                                             # (N, C, H', W')
    return y, (ah, aw)


def upsample2d_backward(dy, cache):
    """dy (N, C, H', W') -> dx (N, C, H, W) = A_h^T . dy . A_w (each input collects its weighted outputs)."""
    ah, aw = cache
    return ah.T @ np.asarray(dy) @ aw


def center_crop(x, hw):
    """x (N, C, H, W) -> the centred (N, C, h, w) window (a view); the odd pixel is cut on the bottom/right."""
    h, w = int(hw[0]), int(hw[1])
    top, left = (x.shape[2] - h) // 2, (x.shape[3] - w) // 2
    if top < 0 or left < 0:
        raise ValueError(f"center_crop: cannot crop {x.shape[2:]} to the larger {(h, w)}")
    return x[:, :, top:top + h, left:left + w]


def crop_concat(x, skip):
    """U-Net's skip connection: x (N, C1, H, W), skip (N, C2, H2 >= H, W2 >= W) -> (N, C1 + C2, H, W),
    the channels of x first, then those of skip centre-cropped to (H, W). Returns ``(y, cache)``."""
    x, skip = np.asarray(x), np.asarray(skip)
    y = np.concatenate([x, center_crop(skip, x.shape[2:])], axis=1)
    return y, (x.shape[1], skip.shape)


def crop_concat_backward(dy, cache):
    """dy (N, C1 + C2, H, W) -> (dx (N, C1, H, W), dskip (N, C2, H2, W2), zero outside the crop)."""
    c1, skip_shape = cache
    dy = np.asarray(dy)
    dx = np.ascontiguousarray(dy[:, :c1])
    dskip = np.zeros(skip_shape, dtype=dy.dtype)
    center_crop(dskip, dy.shape[2:])[...] = dy[:, c1:]
    return dx, dskip
