"""Shape arithmetic (cnnkit.geometry): output sizes, TF/Keras 'same' padding, receptive fields.

Oracles: the TF/Keras 'same' rule written out below and published examples, torch's own
``F.conv2d(padding='same')`` (stride 1) and the output sizes torch computes, and receptive
fields by hand (r_out = r_in + (k - 1) * d * j_in, j_out = j_in * s).
This is the one place the 'same' rule is checked; the layers that use it (the torch
``Conv2d``, the NumPy reference ``conv2d``, the layer-list parser) are checked against torch here
(Conv2d) or in their own tests, given the padding.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from cnnkit.geometry import (ReceptiveField, adaptive_pool_window, conv2d_output_shape, conv_output_size, pair,
                             receptive_field_step, resolve_padding, same_output_size, same_padding)
from cnnkit.nn.layers import Conv2d


def tf_same(n: int, k: int, s: int, d: int = 1) -> tuple[int, int, int]:
    """TF/Keras 'same' written out: out = ceil(n / s); total pad, odd pixel at the end."""
    out = math.ceil(n / s)
    total = max((out - 1) * s + d * (k - 1) + 1 - n, 0)
    return out, total // 2, total - total // 2


# --------------------------------------------------------------------------- 'same' padding


@pytest.mark.parametrize("n, k, s, d, expected", [
    (5, 3, 2, 1, (3, 1, 1)),     # odd size, stride 2: symmetric
    (6, 3, 2, 1, (3, 0, 1)),     # even size, stride 2: the odd pixel goes bottom/right
    (7, 3, 1, 1, (7, 1, 1)),
    (7, 4, 1, 1, (7, 1, 2)),     # even kernel
    (8, 4, 1, 1, (8, 1, 2)),
    (8, 1, 2, 1, (4, 0, 0)),
    (4, 1, 2, 1, (2, 0, 0)),
    (4, 5, 3, 1, (2, 2, 2)),
    (9, 4, 2, 1, (5, 1, 2)),
    (10, 3, 3, 1, (4, 1, 1)),    # (4-1)*3 + 3 - 10 = 2
    (7, 3, 2, 2, (4, 2, 2)),     # (4-1)*2 + 5 - 7 = 4
    (2, 5, 3, 1, (1, 1, 2)),     # 0*3 + 5 - 2 = 3
])
def test_same_padding_published_examples(n, k, s, d, expected):
    assert tf_same(n, k, s, d) == expected          # the rule this file uses as its oracle
    out, before, after = expected
    assert same_padding(n, k, s, d) == (before, after)
    assert same_output_size(n, s) == out
    assert conv_output_size(n, k, s, before, after, d) == out


@settings(max_examples=60, deadline=None, database=None)
@given(st.integers(1, 64), st.integers(1, 7), st.integers(1, 4), st.integers(1, 3))
def test_same_padding_rule(n, k, s, d):
    out, before, after = tf_same(n, k, s, d)
    assert same_padding(n, k, s, d) == (before, after)
    assert 0 <= before <= after <= before + 1
    assert conv_output_size(n, k, s, before, after, d) == same_output_size(n, s) == out


@pytest.mark.filterwarnings("ignore:Using padding='same'")
@settings(max_examples=40, deadline=None, database=None)
@given(n_h=st.integers(1, 12), n_w=st.integers(1, 12), k=st.integers(1, 5), d=st.integers(1, 3))
def test_same_padding_at_stride_one_is_torchs(n_h, n_w, k, d):
    """torch's own padding='same' (stride 1 only) pads the same pixels: same output, same values."""
    torch.manual_seed(0)
    x = torch.randn(1, 2, n_h, n_w, dtype=torch.float64)
    w = torch.randn(3, 2, k, k, dtype=torch.float64)
    (t, b), (l, r) = resolve_padding("same", (n_h, n_w), (k, k), 1, d)
    ours = F.conv2d(F.pad(x, (l, r, t, b)), w, dilation=d)
    torch.testing.assert_close(ours, F.conv2d(x, w, padding="same", dilation=d), rtol=0, atol=1e-12)


@settings(max_examples=40, deadline=None, database=None)
@given(n_h=st.integers(1, 13), n_w=st.integers(1, 13), k=st.integers(1, 5), s=st.integers(1, 4),
       d=st.integers(1, 3), c=st.integers(1, 3))
def test_conv2d_same_is_the_tf_rule_then_a_plain_conv(n_h, n_w, k, s, d, c):
    """cnnkit.nn.Conv2d(padding='same'), also with stride > 1 on odd and even sizes, is F.pad by the
    hand formula followed by torch's conv: ceil(n / s) outputs, the odd pixel bottom/right."""
    (out_h, pt, pb), (out_w, pl, pr) = tf_same(n_h, k, s, d), tf_same(n_w, k, s, d)
    torch.manual_seed(0)
    conv = Conv2d(c, 2, k, s, "same", d).double()
    x = torch.randn(2, c, n_h, n_w, dtype=torch.float64)
    expected = F.conv2d(F.pad(x, (pl, pr, pt, pb)), conv.weight, conv.bias, stride=s, dilation=d)
    got = conv(x)
    assert got.shape == expected.shape == (2, 2, out_h, out_w)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("n, k, s", [(5, 3, 2), (6, 3, 2), (7, 4, 1), (4, 5, 3), (9, 4, 2)])
def test_same_padding_counts_the_real_pixels_under_the_first_window(n, k, s):
    # A kernel of ones on an image of ones: the top-left output counts the real pixels
    # under the window, (k - before) along each axis (at most n).
    _, before, _ = tf_same(n, k, s)
    conv = Conv2d(1, 1, k, s, "same", bias=False)
    with torch.no_grad():
        conv.weight.fill_(1.0)
        y = conv(torch.ones(1, 1, n, n))
    assert y.shape[-2:] == (math.ceil(n / s),) * 2
    assert y[0, 0, 0, 0].item() == min(k - before, n) ** 2


# --------------------------------------------------------------------------- output sizes


def test_conv_output_size_by_hand():
    assert conv_output_size(28, 5) == 24
    assert conv_output_size(32, 3, 2, 1, 1) == 16
    assert conv_output_size(7, 3, 1, 0, 0, dilation=2) == 3
    with pytest.raises(ValueError, match="kernel span 3"):
        conv_output_size(2, 3)
    assert conv_output_size(2, 5, check=False) == -2     # the formula's value, for error messages


@settings(max_examples=60, deadline=None, database=None)
@given(n=st.integers(1, 14), k=st.integers(1, 5), s=st.integers(1, 4), p=st.integers(0, 2), d=st.integers(1, 3))
def test_output_size_matches_torch(n, k, s, p, d):
    want = (n + 2 * p - d * (k - 1) - 1) // s + 1
    if want < 1:
        with pytest.raises(ValueError):
            conv_output_size(n, k, s, p, p, d)
        return
    assert conv_output_size(n, k, s, p, p, d) == want
    x = torch.zeros(1, 1, n, n)
    assert F.conv2d(x, torch.zeros(1, 1, k, k), stride=s, padding=p, dilation=d).shape[-1] == want
    if 2 * p <= k:   # torch's pools: padding at most half the window
        for ceil_mode in (False, True):
            y = F.max_pool2d(x, k, s, p, dilation=d, ceil_mode=ceil_mode)
            assert conv_output_size(n, k, s, p, p, d, ceil_mode=ceil_mode) == y.shape[-1], ceil_mode


def test_resolve_padding_and_2d_shapes():
    assert resolve_padding(2, (8, 8), (3, 3)) == ((2, 2), (2, 2))
    assert resolve_padding((1, 2), (8, 8), (3, 3)) == ((1, 1), (2, 2))
    assert resolve_padding(((0, 1), (2, 3)), (8, 8), (3, 3)) == ((0, 1), (2, 3))
    assert resolve_padding("valid", (8, 8), (3, 3)) == ((0, 0), (0, 0))
    assert resolve_padding("same", (6, 5), (3, 3), 2) == ((0, 1), (1, 1))
    with pytest.raises(ValueError, match="'smae'"):
        resolve_padding("smae", (6, 5), (3, 3))
    assert conv2d_output_shape((6, 5), (3, 3), 2, "same") == (3, 3)
    assert conv2d_output_shape((6, 5), (3, 3), 1, "valid") == (4, 3)


def test_pair():
    assert pair(3) == (3, 3) and pair([2, 1]) == (2, 1) and pair((4, 5)) == (4, 5)
    with pytest.raises(ValueError, match="expected an int or a pair, got"):
        pair((1, 2, 3))
    with pytest.raises(ValueError, match="stride must be an int or a pair, got"):
        pair((1, 2, 3), "stride")


# --------------------------------------------------------------------------- receptive fields


def test_receptive_field_of_lenet_by_hand():
    # conv 5 -> 5; maxpool 2/2 -> 6, jump 2; conv 5 -> 6 + 4*2 = 14; maxpool 2/2 -> 16, jump 4.
    f = ReceptiveField()
    seen = []
    for k, s in ((5, 1), (2, 2), (5, 1), (2, 2)):
        f = f.step((k, k), (s, s))
        seen.append((f.value("rf"), f.value("jump")))
    assert seen == [(5, 1), (6, 2), (14, 2), (16, 4)]
    # a global pool is a window over the whole 4x4 map: 16 + 3*4 = 28
    k, s = adaptive_pool_window(4, 1)
    assert f.step((k, k), (s, s)) == ReceptiveField((28, 28), (16, 16))


def test_receptive_field_per_axis_dilation_and_merge():
    assert receptive_field_step(1, 1, 3, 2, 2) == (5, 2)
    f = ReceptiveField().step((3, 1), (2, 1), (2, 1))
    assert f == ReceptiveField((5, 1), (2, 1))
    assert f.value("rf") == [5, 1] and f.value("jump") == [2, 1]
    assert f.merge(ReceptiveField((3, 7), (1, 4))) == ReceptiveField((5, 7), (2, 4))


@pytest.mark.parametrize("n, out, expected", [(8, 1, (8, 8)), (14, 7, (2, 2)), (7, 7, (1, 1)), (5, 2, (3, 3))])
def test_adaptive_pool_window(n, out, expected):
    assert adaptive_pool_window(n, out) == expected
