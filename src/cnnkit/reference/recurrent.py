"""Recurrent layers in NumPy: the LSTM (Hochreiter & Schmidhuber, 1997) and the GRU (Cho et al., 2014),
one direction of one layer, walked time step by time step; the backward is backpropagation through
time (BPTT): the same steps in reverse order, each handing the gradient of its state to the step before.

Shapes follow torch's ``batch_first``: x (N, L, I), time on axis 1; the weights have torch's layout
and gate order, so torch's ``weight_ih_l0`` etc. can be used as they are. The initial states are zero.

LSTM, gates stacked as (i, f, g, o): W_ih (4H, I), W_hh (4H, H), b_ih and b_hh (4H,)::

    a_t = W_ih x_t + b_ih + W_hh h_{t-1} + b_hh          (N, 4H), cut into four blocks of H
    i = sigmoid(a_i)   input gate        f = sigmoid(a_f)   forget gate
    g = tanh(a_g)      candidate         o = sigmoid(a_o)   output gate
    c_t = f * c_{t-1} + i * g            h_t = o * tanh(c_t)

GRU, gates stacked as (r, z, n): W_ih (3H, I), W_hh (3H, H), b_ih and b_hh (3H,)::

    r = sigmoid(W_ir x_t + b_ir + W_hr h_{t-1} + b_hr)  reset gate
    z = sigmoid(W_iz x_t + b_iz + W_hz h_{t-1} + b_hz)  update gate
    n = tanh(W_in x_t + b_in + r * (W_hn h_{t-1} + b_hn))
    h_t = (1 - z) * n + z * h_{t-1}

``reverse=True`` walks the sequence from its end (the backward direction of a bidirectional layer):
its output at t has read x_t .. x_{L-1}.

Example::

    >>> x = np.random.randn(2, 5, 3); H = 4
    >>> w_ih, w_hh = np.random.randn(4 * H, 3), np.random.randn(4 * H, H)
    >>> hs, cache = lstm(x, w_ih, w_hh, np.zeros(4 * H), np.zeros(4 * H))
    >>> hs.shape
    (2, 5, 4)
    >>> dx, dw_ih, dw_hh, db_ih, db_hh = lstm_backward(np.ones_like(hs), cache)
"""

from __future__ import annotations

import numpy as np

from cnnkit.reference.activations import sigmoid


def _check(name: str, x, w_ih, w_hh, gates: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    x, w_ih, w_hh = np.asarray(x), np.asarray(w_ih), np.asarray(w_hh)
    hidden = w_hh.shape[-1] if w_hh.ndim == 2 else -1
    if (x.ndim != 3 or w_ih.ndim != 2 or w_hh.ndim != 2 or w_ih.shape != (gates * hidden, x.shape[2])
            or w_hh.shape != (gates * hidden, hidden)):
        raise ValueError(f"{name} expects x (N, L, I), w_ih ({gates}H, I), w_hh ({gates}H, H); got {x.shape}, "
                         f"{w_ih.shape}, {w_hh.shape}")
    return x, w_ih, w_hh, hidden


def _time_order(length: int, reverse: bool) -> range:
    return range(length - 1, -1, -1) if reverse else range(length)


# ----------------------------------------------------------------------------- LSTM

def lstm(x, w_ih, w_hh, b_ih=None, b_hh=None, reverse=False):
    """One LSTM direction over a sequence: x (N, L, I) -> hs (N, L, H), ``hs[:, t]`` = h_t.

    Returns ``(hs, cache)``; the last state is ``hs[:, -1]`` (``hs[:, 0]`` when ``reverse``).
    """
    x, w_ih, w_hh, hid = _check("lstm", x, w_ih, w_hh, 4)
    n, length, _ = x.shape
    dtype = np.result_type(x, w_ih)
    h = np.zeros((n, hid), dtype=dtype)
    c = np.zeros((n, hid), dtype=dtype)
    hs = np.empty((n, length, hid), dtype=dtype)
    steps = []
    for t in _time_order(length, reverse):
        a = x[:, t] @ w_ih.T + h @ w_hh.T                     # (N, 4H): the four gates' pre-activations
        if b_ih is not None:
            a = a + b_ih + b_hh
        i = sigmoid(a[:, :hid])[0]
        f = sigmoid(a[:, hid:2 * hid])[0]
        g = np.tanh(a[:, 2 * hid:3 * hid])
        o = sigmoid(a[:, 3 * hid:])[0]
        c_new = f * c + i * g
        tanh_c = np.tanh(c_new)
        h_new = o * tanh_c
        steps.append((t, h, c, i, f, g, o, tanh_c))           # what the step's backward needs
        h, c = h_new, c_new
        hs[:, t] = h
    return hs, (x, w_ih, w_hh, b_ih is not None, steps)


def lstm_backward(dhs, cache):
    """BPTT: dhs (N, L, H), the loss's gradient at every output h_t (zeros where unused)
    -> ``(dx (N, L, I), dw_ih, dw_hh, db_ih, db_hh)`` (the biases' gradients are None without biases).

    At each step, in reverse order: dh = dhs[:, t] + (the gradient from step t+1);
    do = dh * tanh(c_t); dc = (from step t+1) + dh * o * (1 - tanh(c_t)^2);
    di = dc * g, df = dc * c_{t-1}, dg = dc * i, and to step t-1: dc * f;
    through the gate functions to da; dW_ih += da^T x_t, dW_hh += da^T h_{t-1}, db += sum of da;
    dx_t = da W_ih and, to step t-1, dh = da W_hh.
    """
    x, w_ih, w_hh, has_bias, steps = cache
    dhs = np.asarray(dhs)
    hid = w_hh.shape[1]
    dx = np.zeros(x.shape, dtype=dhs.dtype)
    dw_ih, dw_hh = np.zeros_like(w_ih), np.zeros_like(w_hh)
    db = np.zeros(4 * hid, dtype=w_ih.dtype)
    dh_next = np.zeros((x.shape[0], hid), dtype=dhs.dtype)
    dc_next = np.zeros_like(dh_next)
    for t, h_prev, c_prev, i, f, g, o, tanh_c in reversed(steps):
        dh = dhs[:, t] + dh_next
        do = dh * tanh_c
        dc = dc_next + dh * o * (1 - tanh_c * tanh_c)
        di, df, dg = dc * g, dc * c_prev, dc * i
        dc_next = dc * f
        da = np.concatenate([di * i * (1 - i), df * f * (1 - f), dg * (1 - g * g), do * o * (1 - o)], axis=1)
        dw_ih += da.T @ x[:, t]
        dw_hh += da.T @ h_prev
        db += da.sum(axis=0)
        dx[:, t] = da @ w_ih
        dh_next = da @ w_hh
    if not has_bias:
        return dx, dw_ih, dw_hh, None, None
    return dx, dw_ih, dw_hh, db, db.copy()        # b_ih and b_hh enter a_t alike: the same gradient


# ----------------------------------------------------------------------------- GRU

def gru(x, w_ih, w_hh, b_ih=None, b_hh=None, reverse=False):
    """One GRU direction over a sequence: x (N, L, I) -> hs (N, L, H), ``hs[:, t]`` = h_t.

    Returns ``(hs, cache)``.
    """
    x, w_ih, w_hh, hid = _check("gru", x, w_ih, w_hh, 3)
    n, length, _ = x.shape
    dtype = np.result_type(x, w_ih)
    h = np.zeros((n, hid), dtype=dtype)
    hs = np.empty((n, length, hid), dtype=dtype)
    steps = []
    for t in _time_order(length, reverse):
        ai = x[:, t] @ w_ih.T                                  # (N, 3H): the input's share of r, z, n
        ah = h @ w_hh.T                                        # (N, 3H): the previous state's share
        if b_ih is not None:
            ai = ai + b_ih
            ah = ah + b_hh
        r = sigmoid(ai[:, :hid] + ah[:, :hid])[0]
        z = sigmoid(ai[:, hid:2 * hid] + ah[:, hid:2 * hid])[0]
        hn = ah[:, 2 * hid:]                                   # W_hn h_{t-1} + b_hn, which r scales
        cand = np.tanh(ai[:, 2 * hid:] + r * hn)
        h_new = (1 - z) * cand + z * h
        steps.append((t, h, r, z, cand, hn))
        h = h_new
        hs[:, t] = h
    return hs, (x, w_ih, w_hh, b_ih is not None, steps)


def gru_backward(dhs, cache):
    """BPTT: dhs (N, L, H) -> ``(dx (N, L, I), dw_ih, dw_hh, db_ih, db_hh)`` (biases' None without biases).

    At each step, in reverse order: dh = dhs[:, t] + (the gradient from step t+1);
    dn = dh * (1 - z), dz = dh * (h_{t-1} - n), and to step t-1 directly dh * z;
    da_n = dn * (1 - n^2); dr = da_n * (W_hn h_{t-1} + b_hn); the hidden side of n gets da_n * r;
    through the sigmoids to da_r, da_z. The input side's gradient is (da_r, da_z, da_n), the hidden
    side's (da_r, da_z, da_n * r): dW_ih += gi^T x_t, dW_hh += gh^T h_{t-1}, dx_t = gi W_ih, and
    step t-1 gets gh W_hh on top of dh * z.
    """
    x, w_ih, w_hh, has_bias, steps = cache
    dhs = np.asarray(dhs)
    hid = w_hh.shape[1]
    dx = np.zeros(x.shape, dtype=dhs.dtype)
    dw_ih, dw_hh = np.zeros_like(w_ih), np.zeros_like(w_hh)
    db_ih, db_hh = np.zeros(3 * hid, dtype=w_ih.dtype), np.zeros(3 * hid, dtype=w_ih.dtype)
    dh_next = np.zeros((x.shape[0], hid), dtype=dhs.dtype)
    for t, h_prev, r, z, cand, hn in reversed(steps):
        dh = dhs[:, t] + dh_next
        dn = dh * (1 - z)
        dz = dh * (h_prev - cand)
        da_n = dn * (1 - cand * cand)
        dr = da_n * hn
        da_r = dr * r * (1 - r)
        da_z = dz * z * (1 - z)
        gi = np.concatenate([da_r, da_z, da_n], axis=1)        # (N, 3H) input side
        gh = np.concatenate([da_r, da_z, da_n * r], axis=1)    # (N, 3H) hidden side
        dw_ih += gi.T @ x[:, t]
        dw_hh += gh.T @ h_prev
        db_ih += gi.sum(axis=0)
        db_hh += gh.sum(axis=0)
        dx[:, t] = gi @ w_ih
        dh_next = dh * z + gh @ w_hh
    if not has_bias:
        return dx, dw_ih, dw_hh, None, None
    return dx, dw_ih, dw_hh, db_ih, db_hh


RECURRENT_OPS = {"lstm": (lstm, lstm_backward, 4), "gru": (gru, gru_backward, 3)}

__all__ = ["RECURRENT_OPS", "gru", "gru_backward", "lstm", "lstm_backward"]
