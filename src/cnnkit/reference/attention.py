"""Attention blocks in NumPy, each ``f(x, params...) -> (y, cache)`` with its ``f_backward(dy, cache)``
next to it; built from the glass-box ops (dense, relu, sigmoid, softmax, conv1d, conv2d) so every step shows.

* :func:`squeeze_excite` (Hu et al., 2018): y = x * sigmoid(W2 relu(W1 mean(x) + b1) + b2).
* :func:`eca` (Wang et al., 2020): y = x * sigmoid(conv1d over the channels of mean(x)).
* :func:`cbam_channel` then :func:`cbam_spatial` (Woo et al., 2018): x' = x * Mc, y = x' * Ms.
* :func:`embedded_gaussian` (Wang et al., 2018): the non-local block's y_i = sum_j softmax_j(theta_i . phi_j) g_j
  (the block adds its 1x1 output convolution, a batch norm and the residual).
* :func:`attention_pool2d`: y = sum over positions of softmax(score) * x.

Maxima over positions or channels (CBAM's max pooling) share their gradient evenly between tied values,
as ``torch.amax`` does (ties are common after a ReLU: a dead channel is all zeros).

Example::

    >>> x = np.random.randn(2, 8, 4, 4); w1 = np.random.randn(2, 8); w2 = np.random.randn(8, 2)
    >>> y, cache = squeeze_excite(x, w1, np.zeros(2), w2, np.zeros(8))     # same shape as x
    >>> dx, dw1, db1, dw2, db2 = squeeze_excite_backward(np.ones_like(y), cache)
"""

from __future__ import annotations

import numpy as np

from cnnkit.reference.activations import relu, relu_backward, sigmoid, sigmoid_backward, softmax, softmax_backward
from cnnkit.reference.conv import conv1d, conv1d_backward, conv2d, conv2d_backward
from cnnkit.reference.layers import dense, dense_backward


def _positions(x: np.ndarray) -> tuple[int, ...]:
    """The axes after the channels: (2, 3) for a map (N, C, H, W), (2,) for a sequence (N, C, L)."""
    return tuple(range(2, x.ndim))


def _expand(v: np.ndarray, like: np.ndarray) -> np.ndarray:
    """(N, C) -> (N, C, 1, ...), broadcastable against ``like`` (N, C, ...)."""
    return v.reshape(v.shape + (1,) * (like.ndim - 2))


def _amax(x: np.ndarray, axis: tuple[int, ...] | int) -> tuple[np.ndarray, np.ndarray]:
    """The maximum over ``axis`` (kept as size-1 axes) and the share of the gradient each entry gets:
    1 / (number of tied maxima) at a maximum, 0 elsewhere (torch.amax's rule)."""
    m = x.max(axis=axis, keepdims=True)
    hit = (x == m).astype(x.dtype)
    return m, hit / hit.sum(axis=axis, keepdims=True)


# ----------------------------------------------------------------------------- squeeze-and-excitation

def _gate_mlp(v, w1, b1, w2, b2):
    """The excitation MLP on pooled vectors: v (N, C) -> u (N, C) = W2 relu(W1 v + b1) + b2 (no sigmoid)."""
    z, c1 = dense(v, w1, b1)                                      # (N, C/r)
    r, c2 = relu(z)
    u, c3 = dense(r, w2, b2)                                      # (N, C)
    return u, (c1, c2, c3)


def _gate_mlp_backward(du, cache):
    """du (N, C) -> (dv (N, C), dw1, db1, dw2, db2)."""
    c1, c2, c3 = cache
    dr, dw2, db2 = dense_backward(du, c3)
    dz = relu_backward(dr, c2)
    dv, dw1, db1 = dense_backward(dz, c1)
    return dv, dw1, db1, dw2, db2


def squeeze_excite(x, w1, b1, w2, b2):
    """Squeeze-and-excitation. x: (N, C, H, W) or (N, C, L); w1 (C/r, C), b1 (C/r,), w2 (C, C/r), b2 (C,)
    -> y like x, y = x * a with a = sigmoid(W2 relu(W1 s + b1) + b2), s = the mean of each channel.

    Returns ``(y, cache)``; ``cache["weights"]`` is a (N, C), the gate each channel got.
    """
    x = np.asarray(x)
    s = x.mean(axis=_positions(x))                                # squeeze: (N, C)
    u, mlp = _gate_mlp(s, w1, b1, w2, b2)
    a, sig = sigmoid(u)                                           # excite: (N, C)
    return x * _expand(a, x), {"x": x, "mlp": mlp, "sig": sig, "weights": a}


def squeeze_excite_backward(dy, cache):
    """dy like x -> (dx, dw1, db1, dw2, db2).

    da = sum over positions of dy * x; du = sigmoid'(u) da; back through the MLP to ds;
    dx = dy * a + ds / (number of positions) (the squeeze is a mean).
    """
    x, a = cache["x"], cache["weights"]
    axes = _positions(x)
    da = (dy * x).sum(axis=axes)                                  # (N, C)
    du = sigmoid_backward(da, cache["sig"])
    ds, dw1, db1, dw2, db2 = _gate_mlp_backward(du, cache["mlp"])
    count = int(np.prod([x.shape[i] for i in axes]))
    dx = dy * _expand(a, x) + _expand(ds * ds.dtype.type(1.0 / count), x)
    return dx, dw1, db1, dw2, db2


# ----------------------------------------------------------------------------- ECA

def eca(x, w):
    """Efficient channel attention. x: (N, C, H, W) or (N, C, L), w: (1, 1, k) (k odd) -> y like x.

    s = the mean of each channel (N, C); u = conv1d over the channel axis of s (zero padding (k-1)/2, no
    bias): u[n, c] = sum_p w[p] s[n, c + p - (k-1)/2]; a = sigmoid(u); y = x * a.
    """
    x = np.asarray(x)
    k = np.asarray(w).shape[-1]
    s = x.mean(axis=_positions(x))                                # (N, C)
    u, conv = conv1d(s[:, None, :], w, None, padding=(k - 1) // 2)   # (N, 1, C)
    a, sig = sigmoid(u[:, 0, :])                                  # (N, C)
    return x * _expand(a, x), {"x": x, "conv": conv, "sig": sig, "weights": a}


def eca_backward(dy, cache):
    """dy like x -> (dx, dw (1, 1, k)): as :func:`squeeze_excite_backward`, the MLP replaced by the conv1d."""
    x, a = cache["x"], cache["weights"]
    axes = _positions(x)
    du = sigmoid_backward((dy * x).sum(axis=axes), cache["sig"])  # (N, C)
    ds, dw, _ = conv1d_backward(du[:, None, :], cache["conv"])    # (N, 1, C), (1, 1, k)
    count = int(np.prod([x.shape[i] for i in axes]))
    dx = dy * _expand(a, x) + _expand(ds[:, 0, :] * ds.dtype.type(1.0 / count), x)
    return dx, dw


# ----------------------------------------------------------------------------- CBAM

def cbam_channel(x, w1, b1, w2, b2):
    """CBAM's channel attention. x: (N, C, H, W) -> x' = x * Mc, Mc = sigmoid(MLP(avg) + MLP(max)) (N, C).

    One MLP (w1 (C/r, C), b1, w2 (C, C/r), b2) on both the average- and the max-pooled vector.
    """
    x = np.asarray(x)
    avg = x.mean(axis=(2, 3))                                     # (N, C)
    mx, share = _amax(x, (2, 3))                                  # (N, C, 1, 1), (N, C, H, W)
    u_avg, mlp_avg = _gate_mlp(avg, w1, b1, w2, b2)
    u_max, mlp_max = _gate_mlp(mx[:, :, 0, 0], w1, b1, w2, b2)
    mc, sig = sigmoid(u_avg + u_max)                              # (N, C)
    cache = {"x": x, "share": share, "mlp": (mlp_avg, mlp_max), "sig": sig, "weights": mc}
    return x * mc[:, :, None, None], cache


def cbam_channel_backward(dy, cache):
    """dy (N, C, H, W) -> (dx, dw1, db1, dw2, db2); the two MLP branches' gradients add up."""
    x, mc, share = cache["x"], cache["weights"], cache["share"]
    du = sigmoid_backward((dy * x).sum(axis=(2, 3)), cache["sig"])   # (N, C), the same for both branches
    davg, *g_avg = _gate_mlp_backward(du, cache["mlp"][0])
    dmax, *g_max = _gate_mlp_backward(du, cache["mlp"][1])
    dw1, db1, dw2, db2 = (ga + gm for ga, gm in zip(g_avg, g_max))
    h, w = x.shape[2:]
    dx = dy * mc[:, :, None, None] + davg[:, :, None, None] * dy.dtype.type(1.0 / (h * w)) \
        + dmax[:, :, None, None] * share
    return dx, dw1, db1, dw2, db2


def cbam_spatial(x, w, b):
    """CBAM's spatial attention. x: (N, C, H, W), w: (1, 2, k, k), b: (1,) -> y = x * Ms.

    p = [mean over channels; max over channels] (N, 2, H, W); Ms = sigmoid(conv2d(p, w, b)) (N, 1, H, W),
    zero padding k // 2 so the map keeps its size.
    """
    x = np.asarray(x)
    k = np.asarray(w).shape[-1]
    mx, share = _amax(x, 1)                                       # (N, 1, H, W), (N, C, H, W)
    p = np.concatenate([x.mean(axis=1, keepdims=True), mx], axis=1)   # (N, 2, H, W)
    u, conv = conv2d(p, w, b, padding=k // 2)                     # (N, 1, H, W)
    ms, sig = sigmoid(u)
    return x * ms, {"x": x, "share": share, "conv": conv, "sig": sig, "weights": ms}


def cbam_spatial_backward(dy, cache):
    """dy (N, C, H, W) -> (dx, dw (1, 2, k, k), db (1,))."""
    x, ms, share = cache["x"], cache["weights"], cache["share"]
    du = sigmoid_backward((dy * x).sum(axis=1, keepdims=True), cache["sig"])   # (N, 1, H, W)
    dp, dw, db = conv2d_backward(du, cache["conv"])               # (N, 2, H, W)
    dx = dy * ms + dp[:, :1] * dy.dtype.type(1.0 / x.shape[1]) + dp[:, 1:] * share
    return dx, dw, db


# ----------------------------------------------------------------------------- non-local

def _conv1x1(x, w, b=None):
    """A 1x1 convolution on flattened positions: x (N, C, M), w (K, C, 1, 1), b (K,) or None -> (N, K, M)."""
    y = np.einsum("kc,ncm->nkm", w[:, :, 0, 0], x)
    return y if b is None else y + b[None, :, None]


def _conv1x1_backward(dy, x, w):
    """dy (N, K, M) -> (dx (N, C, M), dw (K, C, 1, 1), db (K,))."""
    dw = np.einsum("nkm,ncm->kc", dy, x)[:, :, None, None]
    return np.einsum("kc,nkm->ncm", w[:, :, 0, 0], dy), dw, dy.sum(axis=(0, 2))


def embedded_gaussian(x, w_theta, b_theta, w_phi, w_g):
    """The non-local block's attention (embedded Gaussian). x: (N, C, H, W); each w (I, C, 1, 1), b_theta (I,)
    -> y (N, I, H, W).

    theta, phi, g = 1x1 convolutions of x (only theta with a bias: see :class:`cnnkit.nn.attention.NonLocal`),
    flattened to (N, I, M), M = H*W; f[i, j] = theta_i . phi_j
    (N, M, M); A = softmax over j (each row sums to 1); y_i = sum_j A[i, j] g_j.
    ``cache["attention"]`` is A.
    """
    x = np.asarray(x)
    n, _, h, w = x.shape
    xf = x.reshape(n, x.shape[1], h * w)                          # (N, C, M)
    q = _conv1x1(xf, w_theta, b_theta)                            # (N, I, M)
    k = _conv1x1(xf, w_phi)
    v = _conv1x1(xf, w_g)
    f = np.einsum("nci,ncj->nij", q, k)                           # (N, M, M)
    a, sm = softmax(f, axis=-1)
    y = np.einsum("nij,ncj->nci", a, v)                           # (N, I, M)
    cache = {"x": xf, "shape": x.shape, "qkv": (q, k, v), "w": (w_theta, w_phi, w_g), "sm": sm, "attention": a}
    return y.reshape(n, -1, h, w), cache


def embedded_gaussian_backward(dy, cache):
    """dy (N, I, H, W) -> (dx (N, C, H, W), dw_theta, db_theta, dw_phi, dw_g).

    dA[i, j] = dy_i . g_j; dg_j = sum_i A[i, j] dy_i; df = softmax'(dA); dtheta_i = sum_j df[i, j] phi_j;
    dphi_j = sum_i df[i, j] theta_i; each goes back through its 1x1 convolution, and the three dx add up.
    """
    xf, (q, k, v), a = cache["x"], cache["qkv"], cache["attention"]
    dyf = dy.reshape(dy.shape[0], dy.shape[1], -1)                # (N, I, M)
    da = np.einsum("nci,ncj->nij", dyf, v)                        # (N, M, M)
    dv = np.einsum("nij,nci->ncj", a, dyf)                        # (N, I, M)
    df = softmax_backward(da, cache["sm"])
    dq = np.einsum("nij,ncj->nci", df, k)
    dk = np.einsum("nij,nci->ncj", df, q)
    w_theta, w_phi, w_g = cache["w"]
    dx_q, dw_theta, db_theta = _conv1x1_backward(dq, xf, w_theta)
    dx_k, dw_phi, _ = _conv1x1_backward(dk, xf, w_phi)
    dx_v, dw_g, _ = _conv1x1_backward(dv, xf, w_g)
    return (dx_q + dx_k + dx_v).reshape(cache["shape"]), dw_theta, db_theta, dw_phi, dw_g


# ----------------------------------------------------------------------------- attention pooling

def attention_pool2d(x, w):
    """Attention pooling. x: (N, C, H, W), w: (1, C, 1, 1) (no bias: the softmax ignores it) -> y (N, C).

    s = the 1x1 convolution's score of each position (N, M), M = H*W; a = softmax over the M positions;
    y_c = sum_m a_m x_cm. ``cache["weights"]`` is a (N, M).
    """
    x = np.asarray(x)
    xf = x.reshape(x.shape[0], x.shape[1], -1)                    # (N, C, M)
    s = _conv1x1(xf, w)[:, 0, :]                                  # (N, M)
    a, sm = softmax(s, axis=-1)
    y = np.einsum("ncm,nm->nc", xf, a)                            # (N, C)
    return y, {"x": xf, "shape": x.shape, "w": w, "sm": sm, "weights": a}


def attention_pool2d_backward(dy, cache):
    """dy (N, C) -> (dx (N, C, H, W), dw (1, C, 1, 1)).

    da_m = dy . x_m; ds = softmax'(da); dx_cm = a_m dy_c + w_c ds_m (through the score)."""
    xf, a = cache["x"], cache["weights"]
    da = np.einsum("nc,ncm->nm", dy, xf)
    ds = softmax_backward(da, cache["sm"])                        # (N, M)
    dxs, dw, _ = _conv1x1_backward(ds[:, None, :], xf, cache["w"])
    dx = np.einsum("nc,nm->ncm", dy, a) + dxs
    return dx.reshape(cache["shape"]), dw


__all__ = ["attention_pool2d", "attention_pool2d_backward", "cbam_channel", "cbam_channel_backward",
           "cbam_spatial", "cbam_spatial_backward", "eca", "eca_backward", "embedded_gaussian",
           "embedded_gaussian_backward", "squeeze_excite", "squeeze_excite_backward"]
