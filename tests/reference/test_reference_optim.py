"""Each update rule over 5 steps against the course formula written out with scalars."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cnnkit import reference as R

GRADS = [0.5, -1.2, 0.3, 2.0, -0.7]
THETA0 = 1.5


def run(opt, grads=GRADS, theta0=THETA0):
    """Drive the optimiser on a 0-d parameter plus a second array param; return the 0-d history."""
    p = np.array(theta0)
    other = np.array([theta0, -theta0])
    hist = []
    for g in grads:
        opt.step([p, other], [np.array(g), np.array([g, -g])])
        hist.append(float(p))
    # the second parameter keeps its own state and sees the same (mirrored) updates
    assert other[0] == pytest.approx(hist[-1], rel=1e-12)
    assert other[1] == pytest.approx(-hist[-1], rel=1e-12)
    return hist


def test_sgd():
    lr, th, expected = 0.1, THETA0, []
    for g in GRADS:
        th = th - lr * g
        expected.append(th)
    assert run(R.create("sgd", lr=lr)) == pytest.approx(expected, rel=1e-12)


def test_momentum():
    lr, gamma, th, m, expected = 0.1, 0.8, THETA0, 0.0, []
    for g in GRADS:
        m = gamma * m + (1 - gamma) * g
        th = th - lr * m
        expected.append(th)
    assert run(R.create("momentum", lr=lr, gamma=gamma)) == pytest.approx(expected, rel=1e-12)


def test_adagrad():
    lr, eps, th, G, expected = 0.5, 1e-8, THETA0, 0.0, []
    for g in GRADS:
        G = G + g * g
        th = th - lr * g / (math.sqrt(G) + eps)
        expected.append(th)
    assert run(R.create("adagrad", lr=lr)) == pytest.approx(expected, rel=1e-12)


def test_adadelta():
    lr, b1, b2, eps = 1.0, 0.95, 0.95, 1e-6
    th, v, D, expected = THETA0, 0.0, 0.0, []
    for g in GRADS:
        v = b2 * v + (1 - b2) * g * g
        d = -lr * g * math.sqrt(D + eps) / math.sqrt(v + eps)
        D = b1 * D + (1 - b1) * (d / lr) ** 2
        th = th + d
        expected.append(th)
    assert run(R.create("adadelta")) == pytest.approx(expected, rel=1e-12)


def test_adadelta_with_lr_and_betas():
    lr, b1, b2, eps = 0.5, 0.9, 0.8, 1e-4
    th, v, D, expected = THETA0, 0.0, 0.0, []
    for g in GRADS:
        v = b2 * v + (1 - b2) * g * g
        d = -lr * g * math.sqrt(D + eps) / math.sqrt(v + eps)
        D = b1 * D + (1 - b1) * (d / lr) ** 2
        th = th + d
        expected.append(th)
    opt = R.create("adadelta", lr=lr, beta1=b1, beta2=b2, eps=eps)
    assert run(opt) == pytest.approx(expected, rel=1e-12)


def test_rmsprop():
    lr, b2, eps, th, v, expected = 0.01, 0.99, 1e-8, THETA0, 0.0, []
    for g in GRADS:
        v = b2 * v + (1 - b2) * g * g
        th = th - lr * g / (math.sqrt(v) + eps)
        expected.append(th)
    assert run(R.create("rmsprop", lr=lr)) == pytest.approx(expected, rel=1e-12)


def test_adam():
    lr, b1, b2, eps = 0.01, 0.9, 0.999, 1e-8
    th, m, v, expected = THETA0, 0.0, 0.0, []
    for t, g in enumerate(GRADS, start=1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        m_hat = m / (1 - b1 ** t)
        v_hat = v / (1 - b2 ** t)
        th = th - lr * m_hat / (math.sqrt(v_hat) + eps)
        expected.append(th)
    assert run(R.create("adam", lr=lr)) == pytest.approx(expected, rel=1e-12)


def test_adam_first_step_is_lr_times_sign():
    p = np.array([1.0, 1.0])
    R.Adam(lr=0.1).step([p], [np.array([3.0, -0.2])])
    np.testing.assert_allclose(p, [0.9, 1.1], rtol=1e-6)


def test_decoupled_weight_decay():
    lr, wd, th, expected = 0.1, 0.5, THETA0, []
    for g in GRADS:
        th = th - lr * wd * th      # decay first, from the current θ
        th = th - lr * g
        expected.append(th)
    assert run(R.create("sgd", lr=lr, weight_decay=wd)) == pytest.approx(expected, rel=1e-12)


def test_create_errors_and_dtype():
    with pytest.raises(ValueError):
        R.create("lbfgs", lr=0.1)
    with pytest.raises(ValueError):
        R.create("adam")
    p = np.ones(3, dtype=np.float32)
    R.create("rmsprop", lr=0.1).step([p], [np.ones(3, dtype=np.float32)])
    assert p.dtype == np.float32 and np.all(p < 1)
    assert sorted(R.OPTIMIZERS) == ["adadelta", "adagrad", "adam", "momentum", "rmsprop", "sgd"]
