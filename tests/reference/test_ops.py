"""Every reference op and its backward against torch (float64) and finite differences."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _helpers import nerr

from cnnkit import reference as R

TORCH_TOL = 1e-9
FD_TOL = 1e-6


def t(x):
    return torch.from_numpy(np.array(x, dtype=np.float64)).requires_grad_(True)


def away_from_zero(rng, shape, gap=0.1):
    """Continuous values with |v| >= gap, so no kink (ReLU 0) is within an FD step."""
    v = rng.standard_normal(shape)
    return np.sign(v) * (gap + np.abs(v))


def check_torch(record, kind, mine, theirs, tol=TORCH_TOL):
    e = record(f"torch {kind}", nerr(mine, theirs.detach().numpy()))
    assert e < tol, f"{kind}: normalised error {e:.3e}"


def fd_check(record, kind, forward, arrays, analytic, dy):
    """Compare analytic gradients with central differences of L = sum(forward(*arrays) * dy)."""
    for idx, (a, g) in enumerate(zip(arrays, analytic)):
        def loss(_):
            return float((forward(*arrays) * dy).sum())

        num = R.numerical_gradient(loss, a)
        e = record(f"fd {kind}", nerr(g, num))
        assert e < FD_TOL, f"{kind} arg {idx}: normalised FD error {e:.3e}"


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


# ============================================================================= conv2d

# conv2d against torch (forward and backward, every padding kind): test_reference_properties.py.

@pytest.mark.parametrize(
    "stride, padding, dilation", [(1, 0, 1), (2, 1, 1), ((2, 1), "same", 1), (1, (1, 0), 2), (2, "same", 2)]
)
def test_conv2d_finite_differences(stride, padding, dilation, rng, record_error):
    x = rng.standard_normal((2, 2, 6, 5))
    w = rng.standard_normal((3, 2, 3, 2))
    b = rng.standard_normal(3)
    y, cache = R.conv2d(x, w, b, stride, padding, dilation)
    dy = rng.standard_normal(y.shape)
    grads = R.conv2d_backward(dy, cache)
    fd_check(
        record_error, "conv2d",
        lambda x_, w_, b_: R.conv2d(x_, w_, b_, stride, padding, dilation)[0],
        [x, w, b], grads, dy,
    )


def test_conv2d_by_hand():
    # 1 channel, 3x3 input, 2x2 ones kernel: each output is the sum of a 2x2 block.
    x = np.arange(9.0).reshape(1, 1, 3, 3)
    w = np.ones((1, 1, 2, 2))
    y, _ = R.conv2d(x, w, np.array([0.5]))
    np.testing.assert_array_equal(y[0, 0], [[8.5, 12.5], [20.5, 24.5]])


def test_conv2d_keeps_float32(rng):
    x = rng.standard_normal((2, 3, 6, 6)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32)
    y, cache = R.conv2d(x, w, b, stride=2, padding="same")
    y64, _ = R.conv2d(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64), 2, "same")
    assert y.dtype == np.float32
    assert nerr(y, y64) < 1e-5
    grads = R.conv2d_backward(np.ones_like(y), cache)
    assert all(g.dtype == np.float32 for g in grads)


def test_conv2d_rejects_bad_shapes(rng):
    with pytest.raises(ValueError):
        R.conv2d(np.zeros((1, 2, 5, 5)), np.zeros((1, 3, 3, 3)), None)
    with pytest.raises(ValueError):
        R.conv2d(np.zeros((1, 1, 2, 2)), np.zeros((1, 1, 3, 3)), None)
    with pytest.raises(ValueError):
        R.conv2d(np.zeros((1, 1, 5, 5)), np.zeros((1, 1, 3, 3)), None, padding="full")


# ============================================================================= pooling

POOL_CASES = [
    # (H, W, kernel, stride, padding)
    (6, 6, 2, None, 0),
    (7, 7, 3, 2, 1),
    (8, 7, (3, 2), (2, 1), (1, 1)),
    (5, 9, 3, 1, 0),
    (9, 8, 4, 3, 2),
]


@pytest.mark.parametrize("h, w_, kernel, stride, padding", POOL_CASES)
def test_max_pool_vs_torch(h, w_, kernel, stride, padding, rng, record_error):
    x = rng.standard_normal((2, 3, h, w_))
    y, cache = R.max_pool2d(x, kernel, stride, padding)
    tx = t(x)
    ty = F.max_pool2d(tx, kernel, stride, padding)
    check_torch(record_error, "max_pool2d forward", y, ty)
    dy = rng.standard_normal(y.shape)
    ty.backward(torch.from_numpy(dy))
    check_torch(record_error, "max_pool2d dx", R.max_pool2d_backward(dy, cache), tx.grad)


@pytest.mark.parametrize("h, w_, kernel, stride, padding", POOL_CASES)
def test_avg_pool_vs_torch(h, w_, kernel, stride, padding, rng, record_error):
    x = rng.standard_normal((2, 3, h, w_))
    y, cache = R.avg_pool2d(x, kernel, stride, padding)
    tx = t(x)
    ty = F.avg_pool2d(tx, kernel, stride, padding, count_include_pad=True)
    check_torch(record_error, "avg_pool2d forward", y, ty)
    dy = rng.standard_normal(y.shape)
    ty.backward(torch.from_numpy(dy))
    check_torch(record_error, "avg_pool2d dx", R.avg_pool2d_backward(dy, cache), tx.grad)


@pytest.mark.parametrize("h, w_, kernel, stride, padding", POOL_CASES)
def test_l2_pool_vs_torch(h, w_, kernel, stride, padding, rng, record_error):
    x = rng.standard_normal((2, 3, h, w_))
    y, cache = R.l2_pool2d(x, kernel, stride, padding)
    tx = t(x)
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    if padding == 0:
        ty = F.lp_pool2d(tx, 2, kernel, stride)
    else:   # lp_pool2d has no padding: sqrt of the zero-padded sum of squares
        ty = torch.sqrt(F.avg_pool2d(tx * tx, kernel, stride, padding, count_include_pad=True) * (kh * kw))
    check_torch(record_error, "l2_pool2d forward", y, ty)
    dy = rng.standard_normal(y.shape)
    ty.backward(torch.from_numpy(dy))
    check_torch(record_error, "l2_pool2d dx", R.l2_pool2d_backward(dy, cache), tx.grad)


@pytest.mark.parametrize("op", ["max", "avg", "l2"])
@pytest.mark.parametrize("kernel, stride, padding", [(2, None, 0), (3, 2, 1), ((2, 3), (1, 2), (1, 0))])
def test_pool_finite_differences(op, kernel, stride, padding, rng, record_error):
    fwd = {"max": R.max_pool2d, "avg": R.avg_pool2d, "l2": R.l2_pool2d}[op]
    bwd = {"max": R.max_pool2d_backward, "avg": R.avg_pool2d_backward, "l2": R.l2_pool2d_backward}[op]
    # a random permutation of well-separated values: no ties within an FD step
    x = (rng.permutation(2 * 2 * 6 * 5).reshape(2, 2, 6, 5) - 29.5) * 0.05
    y, cache = fwd(x, kernel, stride, padding)
    dy = rng.standard_normal(y.shape)
    fd_check(record_error, f"{op}_pool2d", lambda x_: fwd(x_, kernel, stride, padding)[0],
             [x], [bwd(dy, cache)], dy)


def test_max_pool_ties_go_to_first():
    x = np.array([[[[1.0, 3.0, 3.0, 0.0],
                    [3.0, 2.0, 0.0, 0.0],
                    [5.0, 5.0, 7.0, 7.0],
                    [5.0, 5.0, 7.0, 7.0]]]])
    y, cache = R.max_pool2d(x, 2)
    np.testing.assert_array_equal(y[0, 0], [[3.0, 3.0], [5.0, 7.0]])
    dx = R.max_pool2d_backward(np.array([[[[1.0, 2.0], [3.0, 4.0]]]]), cache)
    expected = np.array([[0.0, 1.0, 2.0, 0.0],
                         [0.0, 0.0, 0.0, 0.0],
                         [3.0, 0.0, 4.0, 0.0],
                         [0.0, 0.0, 0.0, 0.0]])
    np.testing.assert_array_equal(dx[0, 0], expected)


def test_max_pool_ties_match_torch(rng):
    x = rng.integers(0, 3, size=(2, 2, 6, 6)).astype(np.float64)   # many ties
    y, cache = R.max_pool2d(x, 3, 1, 1)
    tx = t(x)
    ty = F.max_pool2d(tx, 3, 1, 1)
    dy = rng.standard_normal(y.shape)
    ty.backward(torch.from_numpy(dy))
    np.testing.assert_array_equal(y, ty.detach().numpy())
    np.testing.assert_allclose(R.max_pool2d_backward(dy, cache), tx.grad.numpy(), rtol=0, atol=1e-12)


def test_l2_pool_zero_window_has_zero_gradient():
    x = np.zeros((1, 1, 4, 4))
    x[0, 0, 0, 0] = 3.0
    x[0, 0, 1, 1] = -4.0
    y, cache = R.l2_pool2d(x, 2)
    np.testing.assert_array_equal(y[0, 0], [[5.0, 0.0], [0.0, 0.0]])
    dx = R.l2_pool2d_backward(np.ones_like(y), cache)
    assert np.all(np.isfinite(dx))
    expected = np.zeros((4, 4))
    expected[0, 0], expected[1, 1] = 3.0 / 5.0, -4.0 / 5.0
    np.testing.assert_allclose(dx[0, 0], expected, rtol=0, atol=1e-15)


def test_pool_padding_fill_values():
    x = -np.ones((1, 1, 2, 2))
    y, _ = R.max_pool2d(x, 2, 1, 1)       # -inf padding: the max stays -1
    np.testing.assert_array_equal(y, -np.ones((1, 1, 3, 3)))
    y, _ = R.avg_pool2d(x, 2, 1, 1)       # zero padding counted: corner = -1/4
    assert y[0, 0, 0, 0] == -0.25 and y[0, 0, 1, 1] == -1.0
    with pytest.raises(ValueError):
        R.max_pool2d(x, 2, 1, 2)          # padding above half the kernel, as torch refuses


@pytest.mark.parametrize("op", ["avg", "max"])
def test_global_pools(op, rng, record_error):
    x = rng.standard_normal((3, 4, 5, 6))
    tx = t(x)
    if op == "avg":
        y, cache = R.global_avg_pool(x)
        ty = tx.mean(dim=(2, 3))
    else:
        y, cache = R.global_max_pool(x)
        ty = tx.flatten(2).max(dim=2).values
    check_torch(record_error, f"global_{op}_pool forward", y, ty)
    dy = rng.standard_normal(y.shape)
    ty.backward(torch.from_numpy(dy))
    bwd = R.global_avg_pool_backward if op == "avg" else R.global_max_pool_backward
    dx = bwd(dy, cache)
    check_torch(record_error, f"global_{op}_pool dx", dx, tx.grad)
    fwd = R.global_avg_pool if op == "avg" else R.global_max_pool
    fd_check(record_error, f"global_{op}_pool", lambda x_: fwd(x_)[0], [x], [dx], dy)


def test_global_max_pool_tie_goes_to_first():
    x = np.zeros((1, 1, 2, 2))
    x[0, 0, 0, 1] = x[0, 0, 1, 0] = 2.0
    y, cache = R.global_max_pool(x)
    dx = R.global_max_pool_backward(np.array([[5.0]]), cache)
    np.testing.assert_array_equal(dx[0, 0], [[0.0, 5.0], [0.0, 0.0]])


def test_pools_keep_float32(rng):
    x = rng.standard_normal((1, 2, 6, 6)).astype(np.float32)
    for fwd, bwd in [(R.max_pool2d, R.max_pool2d_backward), (R.avg_pool2d, R.avg_pool2d_backward),
                     (R.l2_pool2d, R.l2_pool2d_backward)]:
        y, cache = fwd(x, 3, 2, 1)
        assert y.dtype == np.float32
        assert bwd(np.ones_like(y), cache).dtype == np.float32


# ============================================================================= activations

ACTIVATIONS = {
    "sigmoid": (R.sigmoid, R.sigmoid_backward, {}, torch.sigmoid),
    "tanh": (R.tanh, R.tanh_backward, {}, torch.tanh),
    "relu": (R.relu, R.relu_backward, {}, torch.relu),
    "leaky_relu": (R.leaky_relu, R.leaky_relu_backward, {"slope": 0.1},
                   lambda v: F.leaky_relu(v, 0.1)),
    "leaky_relu_0.3": (R.leaky_relu, R.leaky_relu_backward, {"slope": 0.3},
                       lambda v: F.leaky_relu(v, 0.3)),
    "elu": (R.elu, R.elu_backward, {}, F.elu),
    "elu_0.7": (R.elu, R.elu_backward, {"alpha": 0.7}, lambda v: F.elu(v, 0.7)),
}


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_activation_vs_torch_and_fd(name, rng, record_error):
    fwd, bwd, kw, torch_fn = ACTIVATIONS[name]
    x = away_from_zero(rng, (3, 4, 5)) * 2
    y, cache = fwd(x, **kw)
    tx = t(x)
    ty = torch_fn(tx)
    check_torch(record_error, f"{name} forward", y, ty)
    dy = rng.standard_normal(y.shape)
    ty.backward(torch.from_numpy(dy))
    dx = bwd(dy, cache)
    check_torch(record_error, f"{name} dx", dx, tx.grad)
    xs = x[:1, :2]
    _, cs = fwd(xs, **kw)
    dys = dy[:1, :2]
    fd_check(record_error, name, lambda v: fwd(v, **kw)[0], [xs], [bwd(dys, cs)], dys)


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_activation_at_zero_and_extremes_match_torch(name):
    fwd, bwd, kw, torch_fn = ACTIVATIONS[name]
    x = np.array([-800.0, -30.0, -1e-3, 0.0, 1e-3, 30.0, 800.0])
    y, cache = fwd(x, **kw)
    assert np.all(np.isfinite(y))
    tx = t(x)
    ty = torch_fn(tx)
    ty.backward(torch.ones_like(ty))
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-12, atol=1e-300)
    np.testing.assert_allclose(bwd(np.ones_like(x), cache), tx.grad.numpy(), rtol=1e-12, atol=1e-300)


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_activation_keeps_float32(name, rng):
    fwd, bwd, kw, _ = ACTIVATIONS[name]
    x = rng.standard_normal((2, 3)).astype(np.float32)
    y, cache = fwd(x, **kw)
    assert y.dtype == np.float32
    assert bwd(np.ones_like(y), cache).dtype == np.float32


def test_derivative_helpers_match_backward(rng):
    x = away_from_zero(rng, (50,))
    ones = np.ones_like(x)
    pairs = [
        (R.sigmoid_derivative(x), R.sigmoid_backward(ones, R.sigmoid(x)[1])),
        (R.tanh_derivative(x), R.tanh_backward(ones, R.tanh(x)[1])),
        (R.relu_derivative(x), R.relu_backward(ones, R.relu(x)[1])),
        (R.leaky_relu_derivative(x, 0.2), R.leaky_relu_backward(ones, R.leaky_relu(x, 0.2)[1])),
        (R.elu_derivative(x, 0.5), R.elu_backward(ones, R.elu(x, 0.5)[1])),
    ]
    for d, b in pairs:
        np.testing.assert_allclose(d, b, rtol=1e-12, atol=0)


@pytest.mark.parametrize("shape, pieces", [((2, 6), 3), ((2, 4, 3, 3), 2), ((1, 5, 4), 5)])
def test_maxout_vs_torch_and_fd(shape, pieces, rng, record_error):
    x = rng.permutation(np.prod(shape)).reshape(shape) * 0.1 - 1.0   # distinct values
    y, cache = R.maxout(x, pieces)
    tx = t(x)
    n, cp = shape[0], shape[1]
    ty = tx.reshape((n, cp // pieces, pieces) + shape[2:]).max(dim=2).values
    check_torch(record_error, "maxout forward", y, ty)
    dy = rng.standard_normal(y.shape)
    ty.backward(torch.from_numpy(dy))
    dx = R.maxout_backward(dy, cache)
    check_torch(record_error, "maxout dx", dx, tx.grad)
    fd_check(record_error, "maxout", lambda v: R.maxout(v, pieces)[0], [x], [dx], dy)


def test_maxout_ties_go_to_first():
    x = np.array([[2.0, 2.0, 1.0, 0.0, 5.0, 5.0]])
    y, cache = R.maxout(x, 3)
    np.testing.assert_array_equal(y, [[2.0, 5.0]])
    np.testing.assert_array_equal(R.maxout_backward(np.array([[1.0, 1.0]]), cache),
                                  [[1.0, 0.0, 0.0, 0.0, 1.0, 0.0]])
    with pytest.raises(ValueError):
        R.maxout(np.zeros((1, 5)), 2)


@pytest.mark.parametrize("shape, axis", [((4, 7), -1), ((3, 5, 2), 1), ((2, 3, 4), 0)])
def test_softmax_vs_torch_and_fd(shape, axis, rng, record_error):
    x = rng.standard_normal(shape) * 3
    y, cache = R.softmax(x, axis)
    tx = t(x)
    ty = torch.softmax(tx, dim=axis)
    check_torch(record_error, "softmax forward", y, ty)
    dy = rng.standard_normal(shape)
    ty.backward(torch.from_numpy(dy))
    dx = R.softmax_backward(dy, cache)
    check_torch(record_error, "softmax dx", dx, tx.grad)
    fd_check(record_error, "softmax", lambda v: R.softmax(v, axis)[0], [x], [dx], dy)


def test_softmax_is_stable():
    y, _ = R.softmax(np.array([[1000.0, 1000.0, -1000.0]]))
    np.testing.assert_allclose(y, [[0.5, 0.5, 0.0]])


# ============================================================================= layers

@pytest.mark.parametrize("shape, out, bias", [((5, 4), 3, True), ((2, 3, 4), 6, True), ((5, 4), 2, False)])
def test_dense_vs_torch_and_fd(shape, out, bias, rng, record_error):
    x = rng.standard_normal(shape)
    w = rng.standard_normal((out, shape[-1]))
    b = rng.standard_normal(out) if bias else None
    y, cache = R.dense(x, w, b)
    tx, tw = t(x), t(w)
    tb = t(b) if bias else None
    ty = F.linear(tx, tw, tb)
    check_torch(record_error, "dense forward", y, ty)
    dy = rng.standard_normal(y.shape)
    ty.backward(torch.from_numpy(dy))
    dx, dw, db = R.dense_backward(dy, cache)
    check_torch(record_error, "dense dx", dx, tx.grad)
    check_torch(record_error, "dense dw", dw, tw.grad)
    if bias:
        check_torch(record_error, "dense db", db, tb.grad)
        fd_check(record_error, "dense", lambda a, b_, c: R.dense(a, b_, c)[0], [x, w, b], [dx, dw, db], dy)
    else:
        assert db is None
        fd_check(record_error, "dense", lambda a, b_: R.dense(a, b_, None)[0], [x, w], [dx, dw], dy)


def test_flatten_roundtrip(rng):
    x = rng.standard_normal((2, 3, 4, 5))
    y, cache = R.flatten(x)
    np.testing.assert_array_equal(y, torch.from_numpy(x).flatten(1).numpy())
    dy = rng.standard_normal(y.shape)
    dx = R.flatten_backward(dy, cache)
    assert dx.shape == x.shape
    np.testing.assert_array_equal(dx.reshape(2, -1), dy)


def test_dropout(rng):
    x = rng.standard_normal((200, 100)) + 3.0
    p = 0.3
    y, cache = R.dropout(x, p, np.random.default_rng(7))
    kept = y != 0
    np.testing.assert_allclose(y[kept], x[kept] / (1 - p), rtol=1e-15)
    assert abs(kept.mean() - (1 - p)) < 0.01
    dy = rng.standard_normal(x.shape)
    dx = R.dropout_backward(dy, cache)
    np.testing.assert_allclose(dx, np.where(kept, dy / (1 - p), 0.0), rtol=1e-15)
    # same seed, same mask
    y2, _ = R.dropout(x, p, np.random.default_rng(7))
    np.testing.assert_array_equal(y, y2)
    # eval and p == 0 are the identity
    for training, prob in [(False, 0.5), (True, 0.0)]:
        ye, ce = R.dropout(x, prob, rng, training=training)
        np.testing.assert_array_equal(ye, x)
        np.testing.assert_array_equal(R.dropout_backward(dy, ce), dy)
    y1, c1 = R.dropout(x, 1.0, rng)
    assert not y1.any() and not R.dropout_backward(dy, c1).any()
    yf, _ = R.dropout(x.astype(np.float32), p, rng)
    assert yf.dtype == np.float32


@pytest.mark.parametrize("shape", [(8, 3), (4, 3, 5, 2)])
@pytest.mark.parametrize("training", [True, False])
def test_batchnorm_vs_torch(shape, training, rng, record_error):
    c = shape[1]
    x = rng.standard_normal(shape) * 2 + 1
    gamma, beta = rng.standard_normal(c), rng.standard_normal(c)
    rm, rv = rng.standard_normal(c), rng.uniform(0.5, 2.0, c)
    rm_t, rv_t = torch.from_numpy(rm.copy()), torch.from_numpy(rv.copy())
    y, cache = R.batchnorm(x, gamma, beta, rm, rv, momentum=0.2, eps=1e-4, training=training)
    tx, tg, tb = t(x), t(gamma), t(beta)
    ty = F.batch_norm(tx, rm_t, rv_t, tg, tb, training=training, momentum=0.2, eps=1e-4)
    check_torch(record_error, "batchnorm forward", y, ty)
    check_torch(record_error, "batchnorm running_mean", rm, rm_t)
    check_torch(record_error, "batchnorm running_var", rv, rv_t)
    dy = rng.standard_normal(shape)
    ty.backward(torch.from_numpy(dy))
    dx, dg, db = R.batchnorm_backward(dy, cache)
    check_torch(record_error, "batchnorm dx", dx, tx.grad)
    check_torch(record_error, "batchnorm dgamma", dg, tg.grad)
    check_torch(record_error, "batchnorm dbeta", db, tb.grad)


def test_batchnorm_running_stats_by_hand():
    x = np.array([[1.0], [2.0], [6.0]])          # mean 3, biased var 14/3, unbiased 7
    rm, rv = np.array([0.0]), np.array([1.0])
    R.batchnorm(x, np.ones(1), np.zeros(1), rm, rv, momentum=0.1)
    np.testing.assert_allclose(rm, [0.3])
    np.testing.assert_allclose(rv, [0.9 + 0.7])
    with pytest.raises(ValueError):
        R.batchnorm(np.ones((1, 2)), None, None, None, None)


@pytest.mark.parametrize("shape", [(6, 2), (3, 2, 3, 2)])
@pytest.mark.parametrize("training", [True, False])
def test_batchnorm_finite_differences(shape, training, rng, record_error):
    c = shape[1]
    x = rng.standard_normal(shape)
    gamma, beta = rng.standard_normal(c), rng.standard_normal(c)
    rm0, rv0 = rng.standard_normal(c), rng.uniform(0.5, 2.0, c)

    def fwd(x_, g_, b_):
        return R.batchnorm(x_, g_, b_, rm0.copy(), rv0.copy(), training=training)[0]

    _, cache = R.batchnorm(x, gamma, beta, rm0.copy(), rv0.copy(), training=training)
    dy = rng.standard_normal(shape)
    fd_check(record_error, "batchnorm", fwd, [x, gamma, beta], R.batchnorm_backward(dy, cache), dy)


def test_batchnorm_keeps_float32(rng):
    x = rng.standard_normal((4, 3, 2, 2)).astype(np.float32)
    rm, rv = np.zeros(3, np.float32), np.ones(3, np.float32)
    y, cache = R.batchnorm(x, np.ones(3, np.float32), np.zeros(3, np.float32), rm, rv)
    assert y.dtype == np.float32 and rm.dtype == np.float32
    assert all(g.dtype == np.float32 for g in R.batchnorm_backward(np.ones_like(y), cache))


# ============================================================================= losses

def test_mse_vs_torch_and_fd(rng, record_error):
    pred, target = rng.standard_normal((4, 3)), rng.standard_normal((4, 3))
    loss, grad = R.mse(pred, target)
    tp = t(pred)
    tl = F.mse_loss(tp, torch.from_numpy(target))
    tl.backward()
    check_torch(record_error, "mse loss", loss, tl)
    check_torch(record_error, "mse grad", grad, tp.grad)
    fd_check(record_error, "mse", lambda p: np.asarray(R.mse(p, target)[0]), [pred], [grad], 1.0)
    # by hand: mean over all 4 elements
    assert R.mse(np.array([[1.0, 2.0], [3.0, 4.0]]), np.zeros((2, 2)))[0] == pytest.approx(30 / 4)


def test_bce_vs_torch_and_fd(rng, record_error):
    z = rng.standard_normal((5, 3)) * 3
    target = rng.uniform(0, 1, (5, 3))
    loss, grad = R.bce(z, target)
    tz = t(z)
    tl = F.binary_cross_entropy_with_logits(tz, torch.from_numpy(target))
    tl.backward()
    check_torch(record_error, "bce loss", loss, tl)
    check_torch(record_error, "bce grad", grad, tz.grad)
    fd_check(record_error, "bce", lambda v: np.asarray(R.bce(v, target)[0]), [z], [grad], 1.0)


def test_bce_is_stable_for_large_logits():
    z = np.array([-1000.0, 1000.0, 40.0])
    loss, grad = R.bce(z, np.array([1.0, 0.0, 1.0]))
    np.testing.assert_allclose(loss, (1000.0 + 1000.0 + np.log1p(np.exp(-40.0))) / 3)
    np.testing.assert_allclose(grad, [-1 / 3, 1 / 3, (1 / (1 + np.exp(-40.0)) - 1) / 3])


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.35])
def test_cross_entropy_vs_torch_and_fd(smoothing, rng, record_error):
    logits = rng.standard_normal((6, 4)) * 2
    labels = rng.integers(0, 4, 6)
    loss, grad = R.cross_entropy(logits, labels, label_smoothing=smoothing)
    tz = t(logits)
    tl = F.cross_entropy(tz, torch.from_numpy(labels), label_smoothing=smoothing)
    tl.backward()
    check_torch(record_error, "cross_entropy loss", loss, tl)
    check_torch(record_error, "cross_entropy grad", grad, tz.grad)
    fd_check(record_error, "cross_entropy",
             lambda v: np.asarray(R.cross_entropy(v, labels, smoothing)[0]), [logits], [grad], 1.0)


def test_cross_entropy_probability_targets(rng, record_error):
    logits = rng.standard_normal((5, 3))
    probs = rng.dirichlet(np.ones(3), 5)
    loss, grad = R.cross_entropy(logits, probs, label_smoothing=0.2)
    tz = t(logits)
    tl = F.cross_entropy(tz, torch.from_numpy(probs), label_smoothing=0.2)
    tl.backward()
    check_torch(record_error, "cross_entropy prob loss", loss, tl)
    check_torch(record_error, "cross_entropy prob grad", grad, tz.grad)


def test_cross_entropy_by_hand():
    logits = np.array([[0.0, np.log(3.0)]])     # softmax = [1/4, 3/4]
    loss, grad = R.cross_entropy(logits, np.array([1]))
    assert loss == pytest.approx(-np.log(0.75))
    np.testing.assert_allclose(grad, [[0.25, -0.25]])


def test_losses_keep_float32(rng):
    z = rng.standard_normal((4, 3)).astype(np.float32)
    assert R.mse(z, np.zeros((4, 3)))[1].dtype == np.float32
    assert R.bce(z, np.ones((4, 3)))[1].dtype == np.float32
    assert R.cross_entropy(z, np.array([0, 1, 2, 0]), 0.1)[1].dtype == np.float32


# ============================================================================= gradcheck helpers

def test_numerical_gradient_and_error_helper(rng):
    x = rng.standard_normal((3, 4))
    num = R.numerical_gradient(lambda v: float(np.sum(np.sin(v) * v ** 2)), x)
    exact = np.cos(x) * x ** 2 + 2 * x * np.sin(x)
    assert nerr(num, exact) < 1e-8
    x_before = x.copy()
    R.numerical_gradient(lambda v: float(v.sum()), x)
    np.testing.assert_array_equal(x, x_before)             # restored
    assert R.max_normalized_error(np.array([1.0, 2.5]), np.array([1.0, 2.0])) == pytest.approx(0.25)
    assert R.max_normalized_error(np.array([0.5, 0.0]), np.zeros(2)) == 0.5
