"""Property-based checks of conv and pooling over random shapes, strides, paddings, dilations,
against torch (forward and backward) and finite differences.

'same' padding: torch's own ``padding='same'`` at stride 1; at stride > 1 torch has none, so the
input is padded by :func:`cnnkit.geometry.same_padding` (checked against the TF rule by hand in
tests/test_geometry.py) before torch's convolution.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _helpers import nerr
from hypothesis import example, given, settings
from hypothesis import strategies as st

from cnnkit import reference as R
from cnnkit.geometry import conv2d_output_shape, same_padding

TOL = 1e-9


@st.composite
def conv_configs(draw):
    n = draw(st.integers(1, 2))
    c = draw(st.integers(1, 3))
    f = draw(st.integers(1, 3))
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    dh, dw = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    kind = draw(st.sampled_from(["int", "pair", "valid", "same"]))
    if kind == "int":
        padding = draw(st.integers(0, 2))
        ph = pw = padding
    elif kind == "pair":
        padding = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
        ph, pw = padding
    else:
        padding, ph, pw = kind, 0, 0
    # input large enough for the dilated kernel ("same" pads whatever is missing)
    same = padding == "same"
    h = draw(st.integers(1 if same else max(1, dh * (kh - 1) + 1 - 2 * ph), 11))
    w = draw(st.integers(1 if same else max(1, dw * (kw - 1) + 1 - 2 * pw), 11))
    bias = draw(st.booleans())
    seed = draw(st.integers(0, 2**31 - 1))
    return n, c, f, h, w, (kh, kw), (sh, sw), padding, (dh, dw), bias, seed


# Fixed cases first: (N, C, F, H, W, kernel, stride, padding, dilation, bias, seed).
@pytest.mark.filterwarnings("ignore:Using padding='same'")
@settings(max_examples=40, deadline=None, database=None)
@given(conv_configs())
@example((2, 3, 4, 7, 6, (3, 3), (1, 1), 0, (1, 1), True, 0))
@example((2, 2, 3, 8, 8, (3, 3), (2, 2), 1, (1, 1), True, 1))
@example((1, 3, 2, 9, 7, (3, 2), (2, 1), (1, 2), (1, 1), False, 2))
@example((2, 2, 3, 9, 9, (3, 3), (1, 1), 2, (2, 2), True, 3))
@example((1, 2, 3, 10, 11, (2, 3), (1, 2), 0, (2, 1), True, 4))
@example((2, 1, 2, 5, 5, (5, 5), (1, 1), "valid", (1, 1), True, 5))
@example((1, 3, 2, 6, 6, (1, 1), (3, 3), 0, (1, 1), True, 6))
@example((2, 2, 3, 5, 5, (3, 3), (2, 2), "same", (1, 1), True, 7))    # odd size, stride 2: symmetric
@example((2, 2, 3, 6, 6, (3, 3), (2, 2), "same", (1, 1), True, 8))    # even size: 0 top, 1 bottom
@example((2, 2, 3, 7, 8, (4, 4), (2, 2), "same", (1, 1), True, 9))
@example((2, 2, 3, 9, 6, (3, 3), (3, 3), "same", (2, 2), True, 10))
@example((2, 2, 3, 6, 7, (2, 2), (1, 1), "same", (1, 1), True, 11))   # even kernel at stride 1: torch's rule
@example((2, 2, 3, 8, 8, (5, 5), (1, 1), "same", (2, 2), True, 12))
def test_conv2d_matches_torch(cfg):
    n, c, f, h, w_, (kh, kw), stride, padding, dilation, bias, seed = cfg
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c, h, w_))
    w = rng.standard_normal((f, c, kh, kw))
    b = rng.standard_normal(f) if bias else None
    y, cache = R.conv2d(x, w, b, stride=stride, padding=padding, dilation=dilation)

    tx = torch.from_numpy(x).requires_grad_()
    tw = torch.from_numpy(w).requires_grad_()
    tb = torch.from_numpy(b).requires_grad_() if bias else None
    if padding == "same" and stride == (1, 1):
        tin, tpad = tx, "same"                                        # torch's own rule
    elif padding == "same":
        top, bottom = same_padding(h, kh, stride[0], dilation[0])
        left, right = same_padding(w_, kw, stride[1], dilation[1])
        tin, tpad = F.pad(tx, (left, right, top, bottom)), 0
    else:
        tin, tpad = tx, (0 if padding == "valid" else padding)
    ty = F.conv2d(tin, tw, tb, stride=stride, padding=tpad, dilation=dilation)
    assert y.shape == tuple(ty.shape)
    assert y.shape[2:] == conv2d_output_shape((h, w_), (kh, kw), stride, padding, dilation)
    assert nerr(y, ty.detach().numpy()) < TOL

    dy = rng.standard_normal(y.shape)
    ty.backward(torch.from_numpy(dy))
    dx, dw, db = R.conv2d_backward(dy, cache)
    assert nerr(dx, tx.grad.numpy()) < TOL
    assert nerr(dw, tw.grad.numpy()) < TOL
    if bias:
        assert nerr(db, tb.grad.numpy()) < TOL
    else:
        assert db is None


@settings(max_examples=15, deadline=None, database=None)
@given(conv_configs())
def test_conv2d_finite_differences(cfg):
    n, c, f, h, w_, kernel, stride, padding, dilation, bias, seed = cfg
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((1, c, h, w_))
    w = rng.standard_normal((f, c) + kernel)
    b = rng.standard_normal(f)
    y, cache = R.conv2d(x, w, b, stride, padding, dilation)
    dy = rng.standard_normal(y.shape)
    grads = R.conv2d_backward(dy, cache)
    for i, a in enumerate((x, w, b)):
        def loss(_):
            return float((R.conv2d(x, w, b, stride, padding, dilation)[0] * dy).sum())
        assert nerr(grads[i], R.numerical_gradient(loss, a)) < 1e-6


@st.composite
def pool_configs(draw):
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    stride = draw(st.one_of(st.none(), st.tuples(st.integers(1, 3), st.integers(1, 3))))
    ph, pw = draw(st.integers(0, kh // 2)), draw(st.integers(0, kw // 2))
    h = draw(st.integers(max(1, kh - 2 * ph), 10))
    w = draw(st.integers(max(1, kw - 2 * pw), 10))
    seed = draw(st.integers(0, 2**31 - 1))
    return (kh, kw), stride, (ph, pw), h, w, seed


@settings(max_examples=40, deadline=None, database=None)
@given(pool_configs(), st.sampled_from(["max", "avg", "l2"]))
def test_pools_match_torch(cfg, op):
    kernel, stride, padding, h, w, seed = cfg
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, 2, h, w))
    fwd = {"max": R.max_pool2d, "avg": R.avg_pool2d, "l2": R.l2_pool2d}[op]
    bwd = {"max": R.max_pool2d_backward, "avg": R.avg_pool2d_backward, "l2": R.l2_pool2d_backward}[op]
    y, cache = fwd(x, kernel, stride, padding)

    tx = torch.from_numpy(x).requires_grad_()
    if op == "max":
        ty = F.max_pool2d(tx, kernel, stride, padding)
    elif op == "avg":
        ty = F.avg_pool2d(tx, kernel, stride, padding, count_include_pad=True)
    else:
        ty = torch.sqrt(F.avg_pool2d(tx * tx, kernel, stride, padding) * (kernel[0] * kernel[1]))
    assert y.shape == tuple(ty.shape)
    assert nerr(y, ty.detach().numpy()) < TOL
    dy = rng.standard_normal(y.shape)
    ty.backward(torch.from_numpy(dy))
    assert nerr(bwd(dy, cache), tx.grad.numpy()) < TOL
