"""The six update rules on 2-D functions: every rule makes progress, and the first step of
each equals the course's formula worked by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cnnkit.errors import UserError
from cnnkit.explain.optimizers import FUNCTIONS, RULES, run_optimizers


def test_every_rule_decreases_the_quadratic():
    res = run_optimizers("quadratic")
    assert [r["name"] for r in res["rules"]] == list(RULES)
    assert res["f_start"] == 28.0                     # 0.5*(16 + 10*4)
    for r in res["rules"]:
        assert r["steps_taken"] == 100
        assert r["f_values"][1] < r["f_start"], r["name"]      # the first step already helps
        assert r["f_final"] < r["f_start"], r["name"]
    by = {r["name"]: r["f_final"] for r in res["rules"]}
    assert by["sgd"] < 1e-6 and by["adam"] < 1e-3


def test_every_rule_decreases_the_rosenbrock_function():
    res = run_optimizers("rosenbrock")
    for r in res["rules"]:
        assert np.all(np.isfinite(r["trajectory"]))
        assert r["f_final"] < 0.5 * r["f_start"], r["name"]


def _first_step_by_hand(rule, lr, g):
    """Δθ of step t = 1 from zero states, straight from the course's table."""
    if rule == "sgd":
        return -lr * g
    if rule == "momentum":                      # m = (1 - γ) g
        return -lr * (1 - 0.9) * g
    if rule == "adagrad":                       # G = g²
        return -lr * g / (np.sqrt(g * g) + 1e-8)
    if rule == "adadelta":                      # v = (1 - β2) g², D_0 = 0 (+ε inside the roots)
        v = (1 - 0.95) * g * g
        return -lr * g * math.sqrt(1e-6) / np.sqrt(v + 1e-6)
    if rule == "rmsprop":                       # v = (1 - β2) g²
        return -lr * g / (np.sqrt((1 - 0.99) * g * g) + 1e-8)
    if rule == "adam":                          # m̂ = g, v̂ = g²
        m_hat = (1 - 0.9) * g / (1 - 0.9)
        v_hat = (1 - 0.999) * g * g / (1 - 0.999)
        return -lr * m_hat / (np.sqrt(v_hat) + 1e-8)
    raise AssertionError(rule)


@pytest.mark.parametrize("function", ["quadratic", "rosenbrock"])
def test_first_step_of_each_rule_equals_its_formula(function):
    fn = FUNCTIONS[function]
    res = run_optimizers(function, steps=3, show=2)
    g0 = fn.grad(np.array(fn.start))
    for r in res["rules"]:
        s = r["first_steps"][0]
        assert s["position"] == list(fn.start)
        np.testing.assert_allclose(s["gradient"], g0)
        expected = _first_step_by_hand(r["name"], r["lr"], g0)
        np.testing.assert_allclose(s["update"], expected, rtol=1e-10, err_msg=r["name"])
        np.testing.assert_allclose(s["new_position"], np.array(fn.start) + expected, rtol=1e-12)
        assert len(r["first_steps"]) == 2


def test_sgd_first_step_on_the_quadratic_by_hand():
    r = run_optimizers("quadratic", steps=1)["rules"][0]
    # g = (x, 10y) = (-4, 20); Δθ = -0.15 g = (0.6, -3) -> (-3.4, -1)
    np.testing.assert_allclose(r["first_steps"][0]["update"], [0.6, -3.0])
    np.testing.assert_allclose(r["final"], [-3.4, -1.0])


def test_bad_function_and_steps_are_user_errors():
    with pytest.raises(UserError, match="unknown function 'rosenbrok'.*did you mean 'rosenbrock'"):
        run_optimizers("rosenbrok")
    with pytest.raises(UserError, match="--steps 0"):
        run_optimizers("quadratic", steps=0)
