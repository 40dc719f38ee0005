"""Init schemes (empirical std / bounds) and the shape helpers (hand-checked cases)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cnnkit import reference as R


@pytest.mark.parametrize(
    "shape, fan_in, fan_out",
    [((64, 32, 3, 3), 32 * 9, 64 * 9), ((200, 300), 300, 200), ((8, 4, 5, 1), 20, 40)],
)
def test_fans(shape, fan_in, fan_out):
    assert R.fans(shape) == (fan_in, fan_out)


CASES = [
    # scheme, distribution, expected std/bound as a function of (fan_in, fan_out)
    ("random", "normal", lambda i, o: 0.05),
    ("random", "uniform", lambda i, o: 0.05),
    ("xavier", "normal", lambda i, o: math.sqrt(2 / (i + o))),
    ("glorot", "uniform", lambda i, o: math.sqrt(6 / (i + o))),
    ("he", "normal", lambda i, o: math.sqrt(2 / i)),
    ("kaiming", "uniform", lambda i, o: math.sqrt(6 / i)),
]


@pytest.mark.parametrize("shape", [(128, 64, 3, 3), (400, 500)])
@pytest.mark.parametrize("scheme, dist, formula", CASES)
def test_init_statistics(shape, scheme, dist, formula):
    w = R.init_weight(shape, scheme, dist, np.random.default_rng(0))
    assert w.shape == shape and w.dtype == np.float64
    if len(shape) == 4:
        fi, fo = shape[1] * shape[2] * shape[3], shape[0] * shape[2] * shape[3]
    else:
        fi, fo = shape[1], shape[0]
    s = formula(fi, fo)
    assert abs(w.mean()) < 0.02 * s
    if dist == "normal":
        assert w.std() == pytest.approx(s, rel=0.02)
    else:
        assert np.abs(w).max() <= s
        assert np.abs(w).max() == pytest.approx(s, rel=0.01)
        assert w.std() == pytest.approx(s / math.sqrt(3), rel=0.02)   # std of U[-a, a]


def test_init_scale_dtype_and_errors():
    w = R.init_weight((300, 300), "random", "normal", np.random.default_rng(1), scale=0.2,
                      dtype=np.float32)
    assert w.dtype == np.float32 and w.std() == pytest.approx(0.2, rel=0.02)
    with pytest.raises(ValueError):
        R.init_weight((3, 3), "lecun", "normal", np.random.default_rng(0))
    with pytest.raises(ValueError):
        R.init_weight((3, 3), "he", "laplace", np.random.default_rng(0))


@pytest.mark.parametrize(
    "size, k, s, d, out, pads",
    [
        (5, 3, 2, 1, 3, (1, 1)),
        (6, 3, 2, 1, 3, (0, 1)),
        (7, 3, 1, 1, 7, (1, 1)),
        (8, 4, 1, 1, 8, (1, 2)),
        (10, 3, 3, 1, 4, (1, 1)),   # (4-1)*3 + 3 - 10 = 2
        (7, 3, 2, 2, 4, (2, 2)),    # (4-1)*2 + 5 - 7 = 4
        (4, 1, 2, 1, 2, (0, 0)),
        (2, 5, 3, 1, 1, (1, 2)),    # 0*3 + 5 - 2 = 3
    ],
)
def test_same_padding_by_hand(size, k, s, d, out, pads):
    assert R.same_padding(size, k, s, d) == pads
    assert R.same_output_size(size, s) == out
    assert R.conv_output_size(size, k, s, pads[0], pads[1], d) == out


def test_conv_output_size_and_resolve():
    assert R.conv_output_size(28, 5) == 24
    assert R.conv_output_size(32, 3, 2, 1, 1) == 16
    assert R.conv_output_size(7, 3, 1, 0, 0, dilation=2) == 3
    assert R.conv2d_output_shape((6, 5), (3, 3), 2, "same") == (3, 3)
    assert R.conv2d_output_shape((6, 5), (3, 3), 1, "valid") == (4, 3)
    assert R.resolve_padding((1, 2), (8, 8), (3, 3)) == ((1, 1), (2, 2))
    assert R.resolve_padding("same", (6, 5), (3, 3), 2) == ((0, 1), (1, 1))
    with pytest.raises(ValueError):
        R.conv_output_size(2, 3)
