"""2-D convolution (cross-correlation, like torch) with im2col as a strided view; 1-D convolution
(on sequences (N, C, L)) is the 2-D one on a map of height 1.

Forward:  y[n, f, i, j] = b[f] + sum_{c, p, q} w[f, c, p, q] * xp[n, c, i*sh + p*dh, j*sw + q*dw]
Backward: dW = sum over (n, i, j) of dy * window;  dx = col2im(dy . W);  db = sum of dy.

Example::

    >>> x = np.random.randn(2, 3, 8, 8); w = np.random.randn(4, 3, 3, 3); b = np.zeros(4)
    >>> y, cache = conv2d(x, w, b, stride=2, padding="same")
    >>> y.shape
    (2, 4, 4, 4)
    >>> dx, dw, db = conv2d_backward(np.ones_like(y), cache)
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided

from cnnkit.geometry import conv_output_size, pair, resolve_padding


def pad2d(x, pads, value=0.0):
    """Pad the last two axes of x (N, C, H, W) by ``((top, bottom), (left, right))``."""
    (t, b), (l, r) = pads
    if t == b == l == r == 0:
        return x
    return np.pad(x, ((0, 0), (0, 0), (t, b), (l, r)), mode="constant", constant_values=value)


def unpad2d(xp, pads):
    """Crop what :func:`pad2d` added: xp (N, C, Hp, Wp) -> (N, C, H, W)."""
    (t, b), (l, r) = pads
    return xp[:, :, t : xp.shape[2] - b, l : xp.shape[3] - r]


def sliding_windows(xp, kernel, stride, dilation, out_hw):
    """im2col as a read-only view, no copy.

    xp: (N, C, Hp, Wp) -> windows: (N, C, H', W', KH, KW) with
    windows[n, c, i, j, p, q] = xp[n, c, i*sh + p*dh, j*sw + q*dw].
    """
    kh, kw = kernel
    sh, sw = stride
    dh, dw = dilation
    ho, wo = out_hw
    s_n, s_c, s_h, s_w = xp.strides
    return as_strided(
        xp,
        shape=(xp.shape[0], xp.shape[1], ho, wo, kh, kw),
        strides=(s_n, s_c, s_h * sh, s_w * sw, s_h * dh, s_w * dw),
        writeable=False,
    )


def scatter_windows(dwin, padded_shape, stride, dilation):
    """col2im: the adjoint of :func:`sliding_windows` (sums overlapping windows).

    dwin: (N, C, H', W', KH, KW) -> dxp: (N, C, Hp, Wp).
    Loops over the KH*KW kernel offsets only; each offset is one strided slice add.
    """
    _, _, ho, wo, kh, kw = dwin.shape
    sh, sw = stride
    dh, dw = dilation
    dxp = np.zeros(padded_shape, dtype=dwin.dtype)
    for p in range(kh):
        r0 = p * dh
        for q in range(kw):
            c0 = q * dw
            dxp[:, :, r0 : r0 + sh * (ho - 1) + 1 : sh, c0 : c0 + sw * (wo - 1) + 1 : sw] += dwin[
                :, :, :, :, p, q
            ]
    return dxp


def conv2d(x, w, b=None, stride=1, padding=0, dilation=1):
    """Convolution forward.

    x: (N, C, H, W), w: (F, C, KH, KW), b: (F,) or None -> y: (N, F, H', W').
    stride, dilation: int or pair; padding: int, pair, "valid" or "same" (TF rule).
    Returns ``(y, cache)``.
    """
    x = np.asarray(x)
    w = np.asarray(w)
    if x.ndim != 4 or w.ndim != 4 or x.shape[1] != w.shape[1]:
        raise ValueError(f"conv2d expects x (N,C,H,W), w (F,C,KH,KW); got {x.shape}, {w.shape}")
    stride = pair(stride, "stride")
    dilation = pair(dilation, "dilation")
    kernel = w.shape[2:]
    pads = resolve_padding(padding, x.shape[2:], kernel, stride, dilation)
    out_hw = (
        conv_output_size(x.shape[2], kernel[0], stride[0], *pads[0], dilation[0]),
        conv_output_size(x.shape[3], kernel[1], stride[1], *pads[1], dilation[1]),
    )
    xp = pad2d(x, pads)                                           # (N, C, Hp, Wp)
    cols = sliding_windows(xp, kernel, stride, dilation, out_hw)  # (N, C, H', W', KH, KW)
    y = np.tensordot(cols, w, axes=([1, 4, 5], [1, 2, 3]))        # (N, H', W', F)
    y = y.transpose(0, 3, 1, 2)                                   # (N, F, H', W')
    if b is not None:
        y = y + np.asarray(b).reshape(1, -1, 1, 1)
    y = np.ascontiguousarray(y, dtype=np.result_type(x, w))
    cache = (xp, w, b is not None, pads, stride, dilation, out_hw)
    return y, cache


def conv2d_backward(dy, cache):
    """Convolution backward: dy (N, F, H', W') -> (dx (N,C,H,W), dw (F,C,KH,KW), db (F,) or None)."""
    xp, w, has_bias, pads, stride, dilation, out_hw = cache
    dy = np.asarray(dy)
    cols = sliding_windows(xp, w.shape[2:], stride, dilation, out_hw)  # (N, C, H', W', KH, KW)
    # dw[f, c, p, q] = sum_{n, i, j} dy[n, f, i, j] * cols[n, c, i, j, p, q]
    dw = np.tensordot(dy, cols, axes=([0, 2, 3], [0, 2, 3]))           # (F, C, KH, KW)
    # dcols[n, c, i, j, p, q] = sum_f dy[n, f, i, j] * w[f, c, p, q]
    dcols = np.tensordot(dy, w, axes=([1], [0]))                        # (N, H', W', C, KH, KW)
    dcols = dcols.transpose(0, 3, 1, 2, 4, 5)                           # (N, C, H', W', KH, KW)
    dxp = scatter_windows(dcols, xp.shape, stride, dilation)            # (N, C, Hp, Wp)
    dx = np.ascontiguousarray(unpad2d(dxp, pads))                       # (N, C, H, W)
    db = dy.sum(axis=(0, 2, 3)) if has_bias else None                   # (F,)
    return dx, dw.astype(w.dtype, copy=False), db


# ----------------------------------------------------------------------------- 1-D convolution

def conv1d(x, w, b=None, stride=1, padding=0, dilation=1):
    """1-D convolution forward (Kim, 2014: a filter sliding over the words).

    x: (N, C, L), w: (F, C, K), b: (F,) or None -> y: (N, F, L') with
    y[n, f, i] = b[f] + sum_{c, p} w[f, c, p] * xp[n, c, i*s + p*d].
    padding: an int (both ends), a pair (before, after), "valid", "same" (TF rule, the odd position at
    the end) or "causal" ((K-1)*d zeros before, none after: y[i] reads x up to position i*s, never a
    later one; L' = ceil(L / s)).
    Computed as :func:`conv2d` on x (N, C, 1, L) with a (1, K) kernel. Returns ``(y, cache)``.
    """
    x, w = np.asarray(x), np.asarray(w)
    if x.ndim != 3 or w.ndim != 3 or x.shape[1] != w.shape[1]:
        raise ValueError(f"conv1d expects x (N,C,L), w (F,C,K); got {x.shape}, {w.shape}")
    if isinstance(padding, str) and padding == "causal":
        pad2 = ((0, 0), ((w.shape[2] - 1) * int(dilation), 0))
    elif isinstance(padding, (tuple, list)):
        before, after = padding
        pad2 = ((0, 0), (int(before), int(after)))
    else:
        pad2 = padding if isinstance(padding, str) else (0, int(padding))
    y, cache = conv2d(x[:, :, None, :], w[:, :, None, :], b, (1, stride), pad2, (1, dilation))
    return y[:, :, 0, :], cache


def conv1d_backward(dy, cache):
    """dy (N, F, L') -> (dx (N, C, L), dw (F, C, K), db (F,) or None)."""
    dx, dw, db = conv2d_backward(np.asarray(dy)[:, :, None, :], cache)
    return dx[:, :, 0, :], dw[:, :, 0, :], db


# ----------------------------------------------------------------------------- transposed convolution

def conv_transpose2d(x, w, b=None, stride=2, padding=0, output_padding=0, dilation=1):
    """Transposed convolution (U-Net's up-conv), the adjoint of :func:`conv2d` with respect to its input.

    x: (N, C, H, W), w: (C, F, KH, KW) (torch's ConvTranspose2d layout), b: (F,) or None
    -> y: (N, F, H', W'), H' = (H - 1) * sh - 2 ph + dh (KH - 1) + oph + 1.
    Each input pixel paints its kernel, scaled, onto the output at (i*sh + p*dh, j*sw + q*dw);
    overlaps add up; then ``padding`` rows/columns are cut from each side. Returns ``(y, cache)``.
    """
    x = np.asarray(x)
    w = np.asarray(w)
    if x.ndim != 4 or w.ndim != 4 or x.shape[1] != w.shape[0]:
        raise ValueError(f"conv_transpose2d expects x (N,C,H,W), w (C,F,KH,KW); got {x.shape}, {w.shape}")
    stride, dilation = pair(stride, "stride"), pair(dilation, "dilation")
    (ph, pw), (oph, opw) = pair(padding, "padding"), pair(output_padding, "output_padding")
    n, _, h, wd = x.shape
    f, kh, kw = w.shape[1:]
    full_hw = ((h - 1) * stride[0] + dilation[0] * (kh - 1) + 1 + oph,
               (wd - 1) * stride[1] + dilation[1] * (kw - 1) + 1 + opw)
    # dwin[n, f, i, j, p, q] = sum_c x[n, c, i, j] * w[c, f, p, q]: what pixel (i, j) paints at offset (p, q)
    dwin = np.tensordot(x, w, axes=([1], [0]))                   # (N, H, W, F, KH, KW)
    dwin = dwin.transpose(0, 3, 1, 2, 4, 5)                      # (N, F, H, W, KH, KW)
    full = scatter_windows(dwin, (n, f, *full_hw), stride, dilation)  # (N, F, Hf, Wf)
    pads = ((ph, ph), (pw, pw))
    y = unpad2d(full, pads)                                      # (N, F, H', W')
    if b is not None:
        y = y + np.asarray(b).reshape(1, -1, 1, 1)
    y = np.ascontiguousarray(y, dtype=np.result_type(x, w))
    cache = (x, w, b is not None, pads, full_hw, stride, dilation)
    return y, cache


def conv_transpose2d_backward(dy, cache):
    """dy (N, F, H', W') -> (dx (N, C, H, W), dw (C, F, KH, KW), db (F,) or None).

    The gradient reads back what the forward painted: pad dy to the full map, take its windows
    (im2col at the input's positions), then dx = windows . W and dW = x . windows.
    """
    x, w, has_bias, pads, full_hw, stride, dilation = cache
    dy = np.asarray(dy)
    dfull = pad2d(dy, pads)                                      # (N, F, Hf - oph, Wf - opw)
    if dfull.shape[2:] != full_hw:                               # the output_padding rows received nothing
        dfull = np.pad(dfull, ((0, 0), (0, 0), (0, full_hw[0] - dfull.shape[2]), (0, full_hw[1] - dfull.shape[3])))
    win = sliding_windows(dfull, w.shape[2:], stride, dilation, x.shape[2:])  # (N, F, H, W, KH, KW)
    # dx[n, c, i, j] = sum_{f, p, q} win[n, f, i, j, p, q] * w[c, f, p, q]
    dx = np.tensordot(win, w, axes=([1, 4, 5], [1, 2, 3]))        # (N, H, W, C)
    dx = np.ascontiguousarray(dx.transpose(0, 3, 1, 2))           # (N, C, H, W)
    # dw[c, f, p, q] = sum_{n, i, j} x[n, c, i, j] * win[n, f, i, j, p, q]
    dw = np.tensordot(x, win, axes=([0, 2, 3], [0, 2, 3]))        # (C, F, KH, KW)
    db = dy.sum(axis=(0, 2, 3)) if has_bias else None             # (F,)
    return dx, dw.astype(w.dtype, copy=False), db
