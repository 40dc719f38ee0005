"""The course's six update rules, schedules and losses, each against its formula
written out by hand in plain Python floats (no torch in the oracle).

Optimiser table (course, "Optimiseurs"), g the gradient, alpha the learning rate:
  sgd       dθ = -α g
  momentum  m = γ m + (1-γ) g ;                       dθ = -α m
  adagrad   G = G + g² ;                              dθ = -α g / (√G + ε)
  adadelta  v = β2 v + (1-β2) g² ; dθ = -α g √(D+ε) / √(v+ε) ; D = β1 D + (1-β1)(dθ/α)²   (D0 = 0)
  rmsprop   v = β2 v + (1-β2) g² ;                    dθ = -α g / (√v + ε)
  adam      m = β1 m + (1-β1) g ; v = β2 v + (1-β2) g² ; m̂ = m/(1-β1ᵗ) ; v̂ = v/(1-β2ᵗ) ; dθ = -α m̂ / (√v̂ + ε)
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import cnnkit.optim
from cnnkit.config import ScheduleConfig, validate
from cnnkit.errors import UserError
from cnnkit.nn.losses import make_loss
from cnnkit.train.schedules import make_schedule

THETA0 = [0.5, -1.0, 2.0, 0.0]
# Five steps of gradients per element: signs change, one element sees a zero gradient.
GRADS = [
    [0.3, -0.2, 1.5, 0.0],
    [0.1, -0.4, -0.5, 0.0],
    [-0.2, 0.3, 0.8, 1.0],
    [0.5, 0.0, -1.2, -0.3],
    [0.05, -0.1, 0.4, 0.2],
]


def run_rule(name: str, lr: float, steps=GRADS, **hyper) -> list[list[float]]:
    """Apply ``create(name)`` for len(steps) steps with the given gradients; the trajectory."""
    p = torch.tensor(THETA0, dtype=torch.float64, requires_grad=True)
    opt = cnnkit.optim.create(name, [p], lr=lr, **hyper)
    out = []
    for g in steps:
        p.grad = torch.tensor(g, dtype=torch.float64)
        opt.step()
        out.append(p.detach().tolist())
    return out


def by_hand(update, steps=GRADS, wd_lr: float = 0.0) -> list[list[float]]:
    """Run ``update(theta, g, state, t)`` element by element; ``wd_lr`` = α λ for decoupled decay."""
    out = []
    thetas = list(THETA0)
    states = [dict() for _ in THETA0]
    for t, g in enumerate(steps, start=1):
        for i in range(len(thetas)):
            thetas[i] = thetas[i] * (1 - wd_lr)
            thetas[i] = update(thetas[i], g[i], states[i], t)
        out.append(list(thetas))
    return out


def assert_traj(got, want):
    np.testing.assert_allclose(np.array(got), np.array(want), rtol=1e-12, atol=1e-14)


# --------------------------------------------------------------------------- the six rules


def test_sgd():
    lr = 0.1

    def upd(th, g, s, t):
        return th - lr * g

    assert_traj(run_rule("sgd", lr), by_hand(upd))


def test_momentum_is_the_course_ema_form():
    lr, gamma = 0.1, 0.8

    def upd(th, g, s, t):
        s["m"] = gamma * s.get("m", 0.0) + (1 - gamma) * g
        return th - lr * s["m"]

    assert_traj(run_rule("momentum", lr, gamma=gamma), by_hand(upd))
    # Not torch's m = γ m + g: after one step the move is α (1-γ) g, not α g.
    one = run_rule("momentum", lr, steps=GRADS[:1], gamma=gamma)[0]
    assert one[0] == pytest.approx(THETA0[0] - lr * (1 - gamma) * GRADS[0][0], abs=1e-15)


def test_adagrad_eps_outside_the_root():
    lr, eps = 0.5, 1e-3

    def upd(th, g, s, t):
        s["G"] = s.get("G", 0.0) + g * g
        return th - lr * g / (math.sqrt(s["G"]) + eps)

    assert_traj(run_rule("adagrad", lr, eps=eps), by_hand(upd))


def test_adadelta_eps_inside_both_roots_and_D_starts_at_zero():
    lr, b1, b2, eps = 1.0, 0.9, 0.8, 1e-4

    def upd(th, g, s, t):
        v, D = s.get("v", 0.0), s.get("D", 0.0)
        v = b2 * v + (1 - b2) * g * g
        dtheta = -lr * g * math.sqrt(D + eps) / math.sqrt(v + eps)
        D = b1 * D + (1 - b1) * (dtheta / lr) ** 2
        s["v"], s["D"] = v, D
        return th + dtheta

    assert_traj(run_rule("adadelta", lr, beta1=b1, beta2=b2, eps=eps), by_hand(upd))
    # With lr != 1 the D accumulator sees dθ/α, so the trajectory scales exactly with α.
    lr = 0.3
    assert_traj(run_rule("adadelta", lr, beta1=b1, beta2=b2, eps=eps), by_hand(upd))


def test_rmsprop_beta2():
    lr, b2, eps = 0.01, 0.9, 1e-6

    def upd(th, g, s, t):
        s["v"] = b2 * s.get("v", 0.0) + (1 - b2) * g * g
        return th - lr * g / (math.sqrt(s["v"]) + eps)

    assert_traj(run_rule("rmsprop", lr, beta2=b2, eps=eps), by_hand(upd))


def test_adam_bias_corrected():
    lr, b1, b2, eps = 0.01, 0.8, 0.95, 1e-6

    def upd(th, g, s, t):
        s["m"] = b1 * s.get("m", 0.0) + (1 - b1) * g
        s["v"] = b2 * s.get("v", 0.0) + (1 - b2) * g * g
        m_hat = s["m"] / (1 - b1 ** t)
        v_hat = s["v"] / (1 - b2 ** t)
        return th - lr * m_hat / (math.sqrt(v_hat) + eps)

    assert_traj(run_rule("adam", lr, beta1=b1, beta2=b2, eps=eps), by_hand(upd))
    # First step of bias-corrected Adam moves every element with a gradient by ≈ α.
    first = run_rule("adam", lr, steps=GRADS[:1], beta1=b1, beta2=b2, eps=1e-12)[0]
    for th0, th1, g in zip(THETA0[:3], first[:3], GRADS[0][:3]):
        assert th0 - th1 == pytest.approx(lr * math.copysign(1, g), rel=1e-9)


def test_adam_matches_torch_adam_over_the_same_steps():
    # A second oracle: torch.optim.Adam implements the same bias-corrected rule.
    lr, b1, b2, eps = 0.01, 0.8, 0.95, 1e-6
    q = torch.tensor(THETA0, dtype=torch.float64, requires_grad=True)
    ref = torch.optim.Adam([q], lr=lr, betas=(b1, b2), eps=eps)
    want = []
    for g in GRADS:
        q.grad = torch.tensor(g, dtype=torch.float64)
        ref.step()
        want.append(q.detach().tolist())
    assert_traj(run_rule("adam", lr, beta1=b1, beta2=b2, eps=eps), want)


def test_a_parameter_without_gradient_is_left_alone():
    a = torch.tensor([1.0, 2.0], requires_grad=True)
    b = torch.tensor([3.0], requires_grad=True)
    opt = cnnkit.optim.create("adam", [a, b], lr=0.1)
    a.grad = torch.tensor([0.5, -0.5])
    opt.step()
    assert b.tolist() == [3.0]
    assert a.tolist() != [1.0, 2.0]


# --------------------------------------------------------------------------- decoupled weight decay


@pytest.mark.parametrize("name, hyper", [("sgd", {}), ("momentum", {"gamma": 0.7}),
                                         ("adam", {"beta1": 0.8, "beta2": 0.999, "eps": 1e-8}),
                                         ("rmsprop", {"beta2": 0.9, "eps": 1e-8}), ("adagrad", {"eps": 1e-8})])
def test_weight_decay_is_decoupled(name, hyper):
    """θ ← θ (1 - α λ), then the rule on the raw gradient (Loshchilov & Hutter, 2019)."""
    lr, wd = 0.05, 0.1
    got = run_rule(name, lr, weight_decay=wd, **hyper)

    # The rule's own update on the raw g, evaluated on the decayed θ.
    def rule(th, g, s, t):
        if name == "sgd":
            return th - lr * g
        if name == "momentum":
            s["m"] = 0.7 * s.get("m", 0.0) + 0.3 * g
            return th - lr * s["m"]
        if name == "adam":
            s["m"] = 0.8 * s.get("m", 0.0) + 0.2 * g
            s["v"] = 0.999 * s.get("v", 0.0) + 0.001 * g * g
            return th - lr * (s["m"] / (1 - 0.8 ** t)) / (math.sqrt(s["v"] / (1 - 0.999 ** t)) + 1e-8)
        if name == "rmsprop":
            s["v"] = 0.9 * s.get("v", 0.0) + 0.1 * g * g
            return th - lr * g / (math.sqrt(s["v"]) + 1e-8)
        s["G"] = s.get("G", 0.0) + g * g
        return th - lr * g / (math.sqrt(s["G"]) + 1e-8)

    assert_traj(got, by_hand(rule, wd_lr=lr * wd))


def test_weight_decay_alone_shrinks_geometrically():
    lr, wd = 0.1, 0.5
    zeros = [[0.0] * 4] * 5
    got = run_rule("sgd", lr, steps=zeros, weight_decay=wd)
    for t, row in enumerate(got, start=1):
        np.testing.assert_allclose(row, [th * (1 - lr * wd) ** t for th in THETA0], rtol=1e-13)
    # Adam: a zero gradient leaves m = v = 0 and only the decay acts (no coupled λθ in m).
    got = run_rule("adam", lr, steps=zeros, weight_decay=wd)
    for t, row in enumerate(got, start=1):
        np.testing.assert_allclose(row, [th * (1 - lr * wd) ** t for th in THETA0], rtol=1e-13)


# --------------------------------------------------------------------------- names


def test_torch_optimisers_are_reachable():
    p = torch.nn.Parameter(torch.tensor(THETA0, dtype=torch.float64))
    opt = cnnkit.optim.create("torch.adamw", [p], lr=0.01, weight_decay=0.1, beta1=0.8, beta2=0.99)
    assert type(opt) is torch.optim.AdamW
    g = opt.param_groups[0]
    assert g["betas"] == (0.8, 0.99) and g["weight_decay"] == 0.1 and g["lr"] == 0.01
    # Same steps as torch.optim.AdamW built directly.
    q = torch.nn.Parameter(torch.tensor(THETA0, dtype=torch.float64))
    ref = torch.optim.AdamW([q], lr=0.01, weight_decay=0.1, betas=(0.8, 0.99))
    for grads in GRADS:
        p.grad = torch.tensor(grads, dtype=torch.float64)
        q.grad = torch.tensor(grads, dtype=torch.float64)
        opt.step()
        ref.step()
    torch.testing.assert_close(p, q, rtol=0, atol=0)
    r = cnnkit.optim.create("torch.rmsprop", [p], lr=0.01, gamma=0.9)
    assert type(r) is torch.optim.RMSprop and r.param_groups[0]["alpha"] == 0.9
    s = cnnkit.optim.create("torch.sgd", [p], lr=0.01, momentum=0.9, nesterov=True)
    assert type(s) is torch.optim.SGD and s.param_groups[0]["nesterov"] is True
    for n in ("sgd", "momentum", "adagrad", "adadelta", "rmsprop", "adam", "torch.adamw"):
        assert n in cnnkit.optim.names()


@pytest.mark.parametrize("name, hint", [("adamm", "did you mean 'adam'"), ("torch.adamx", "torch.adamw"),
                                        ("lbfgs", "sgd")])
def test_unknown_optimiser_name_is_a_user_error_listing_the_names(name, hint):
    with pytest.raises(UserError) as e:
        cnnkit.optim.create(name, [torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    msg = str(e.value)
    assert repr(name) in msg and hint in msg
    assert "rmsprop" in msg and "torch.adamw" in msg


@pytest.mark.parametrize("name, key, allowed", [
    ("sgd", "momentum", "weight_decay"),
    ("momentum", "momentum", "gamma"),
    ("adam", "betas", "beta1"),
    ("rmsprop", "beta1", "beta2"),
    ("torch.sgd", "beta1", "momentum"),
])
def test_unknown_hyperparameter_is_a_user_error_naming_it(name, key, allowed):
    with pytest.raises(UserError) as e:
        cnnkit.optim.create(name, [torch.nn.Parameter(torch.zeros(1))], lr=0.1, **{key: 0.9})
    msg = str(e.value)
    assert repr(name) in msg and allowed in msg
    assert (repr(key) in msg) or ("'betas'" in msg and key.startswith("beta"))


# --------------------------------------------------------------------------- schedules


def sched(epochs=10, **kw):
    return make_schedule(ScheduleConfig(**kw), epochs)


def test_constant():
    f = sched(name="constant")
    assert [f(p) for p in (0.0, 0.3, 1.0)] == [1.0, 1.0, 1.0]


def test_cosine_known_points():
    f = sched(name="cosine")
    assert f(0.0) == pytest.approx(1.0)
    assert f(0.5) == pytest.approx(0.5)
    assert f(0.25) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))
    assert f(1.0) == pytest.approx(0.0, abs=1e-15)
    g = sched(name="cosine", min_factor=0.1)
    assert g(1.0) == pytest.approx(0.1)
    assert g(0.5) == pytest.approx(0.55)


def test_linear_warmup_then_cosine():
    f = sched(epochs=10, name="cosine", warmup_epochs=1)
    assert [round(f(p), 12) for p in (0.0, 0.025, 0.05, 0.1)] == [0.0, 0.25, 0.5, 1.0]
    assert f(0.55) == pytest.approx(0.5)
    assert f(1.0) == pytest.approx(0.0, abs=1e-15)


def test_linear_warmup_then_constant():
    f = sched(epochs=8, name="constant", warmup_epochs=2)
    for p in np.linspace(0, 0.25, 6)[:-1]:
        assert f(p) == pytest.approx(p / 0.25)
    assert f(0.25) == 1.0 and f(0.9) == 1.0


def test_step_decays_by_gamma_every_step_size_epochs():
    f = sched(epochs=10, name="step", step_size=3, gamma=0.1)
    assert f(0.0) == 1.0 and f(0.29) == 1.0
    assert f(0.3) == pytest.approx(0.1) and f(0.59) == pytest.approx(0.1)
    assert f(0.6) == pytest.approx(0.01)
    assert f(0.95) == pytest.approx(0.001)


def test_linear_decay():
    f = sched(name="linear", min_factor=0.2)
    assert f(0.0) == 1.0
    assert f(0.5) == pytest.approx(0.6)
    assert f(1.0) == pytest.approx(0.2)


def test_onecycle_peaks_at_pct_start():
    f = sched(name="onecycle", pct_start=0.3)
    grid = np.linspace(0, 1, 1001)
    vals = np.array([f(p) for p in grid])
    assert f(0.3) == pytest.approx(1.0)
    assert grid[vals.argmax()] == pytest.approx(0.3)
    assert np.all(np.diff(vals[grid <= 0.3]) >= 0)
    assert np.all(np.diff(vals[grid >= 0.3]) <= 0)
    assert f(1.0) == pytest.approx(0.0, abs=1e-12)
    assert f(0.0) < 0.1
    # Half way down the cosine fall: 0.3 + 0.35.
    assert f(0.65) == pytest.approx(0.5)


def test_warmup_in_front_of_onecycle_is_refused_not_ignored():
    # onecycle has its own rising phase; a warm-up in front of it would be silently
    # ignored or jump from 1 down to the start factor, so the config refuses it.
    from cnnkit.errors import ConfigError

    with pytest.raises(ConfigError, match="warmup_epochs"):
        validate({"schedule": {"name": "onecycle", "warmup_epochs": 2}})


def test_schedules_are_pure_functions_of_progress():
    for name in ("constant", "step", "cosine", "onecycle", "linear"):
        f = sched(name=name, warmup_epochs=0 if name == "onecycle" else 1)
        a = [f(p) for p in np.linspace(0, 1, 17)]
        b = [f(p) for p in np.linspace(0, 1, 17)[::-1]][::-1]
        assert a == b


# --------------------------------------------------------------------------- losses


def _softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


LOGITS = np.array([[2.0, -1.0, 0.5, 0.0, 1.0],
                   [-0.3, 0.2, 3.0, -2.0, 0.1],
                   [0.0, 0.0, 0.0, 0.0, 0.0],
                   [1.5, 2.5, -0.5, 0.3, -1.2]])
Y = np.array([0, 2, 4, 3])


def _t(a, dtype=torch.float64):
    return torch.tensor(a, dtype=dtype)


def test_mse_on_softmax_against_one_hot():
    p = _softmax(LOGITS)
    onehot = np.eye(5)[Y]
    want = ((p - onehot) ** 2).sum() / (4 * 5)
    got = make_loss("mse")(_t(LOGITS), _t(Y, torch.long))
    assert got.item() == pytest.approx(want, rel=1e-12)


def test_bce_of_sigmoid_against_one_hot():
    s = 1 / (1 + np.exp(-LOGITS))
    t = np.eye(5)[Y]
    want = -(t * np.log(s) + (1 - t) * np.log(1 - s)).sum() / (4 * 5)
    got = make_loss("bce")(_t(LOGITS), _t(Y, torch.long))
    assert got.item() == pytest.approx(want, rel=1e-12)


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.3])
def test_cross_entropy_with_label_smoothing(eps):
    logp = np.log(_softmax(LOGITS))
    target = (1 - eps) * np.eye(5)[Y] + eps / 5
    want = -(target * logp).sum() / 4
    got = make_loss("cross_entropy", eps)(_t(LOGITS), _t(Y, torch.long))
    assert got.item() == pytest.approx(want, rel=1e-12)
    ref = F.cross_entropy(_t(LOGITS), _t(Y, torch.long), label_smoothing=eps)
    assert got.item() == pytest.approx(ref.item(), rel=1e-12)


def test_unknown_loss_is_a_user_error():
    with pytest.raises(UserError, match="cross_entropy"):
        make_loss("hinge")
