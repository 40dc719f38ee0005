"""Init schemes: empirical std / bounds against the published formulas (shapes: tests/test_geometry.py)."""

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
