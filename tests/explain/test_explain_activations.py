"""Activation explanations: the course's ReLU example, each function's values and derivatives."""

from __future__ import annotations

import numpy as np
import pytest

from cnnkit.errors import UserError
from cnnkit.explain.activations import course_example, curve, explain_activation


def test_course_relu_example_is_exact():
    res = course_example("relu")
    assert res["input"].tolist() == [[-249, -91, -37], [250, -134, 101], [27, 61, -153]]
    assert res["output"].tolist() == [[0, 0, 0], [250, 0, 101], [27, 61, 0]]
    assert res["derivative"].tolist() == [[0, 0, 0], [1, 0, 1], [1, 1, 0]]
    assert res["expressions"][0] == "max(0, -249) = 0"
    assert res["expressions"][3] == "max(0, 250) = 250"


def test_leaky_relu_is_the_courses_max_of_tenth_x_and_x():
    x = np.array([[-10.0, -1.0, 0.0, 2.0]])
    res = explain_activation("leaky_relu", x)
    assert res["formula"] == "leaky_relu(x) = max(0.1x, x)"
    np.testing.assert_allclose(res["output"], np.maximum(0.1 * x, x))
    np.testing.assert_allclose(res["derivative"], [[0.1, 0.1, 0.1, 1.0]])
    assert res["expressions"][0] == "max(0.1*(-10), -10) = -1"
    res = explain_activation("leaky_relu", x, slope=0.2)
    np.testing.assert_allclose(res["output"], [[-2.0, -0.2, 0.0, 2.0]])


@pytest.mark.parametrize("name,f", [
    ("sigmoid", lambda x: 1 / (1 + np.exp(-x))),
    ("tanh", np.tanh),
    ("elu", lambda x: np.where(x >= 0, x, 1.5 * (np.exp(x) - 1))),
])
def test_smooth_activations_values_and_derivatives(name, f):
    x = np.array([[-3.0, -0.5, 0.25, 2.0]])
    res = explain_activation(name, x, alpha=1.5)
    np.testing.assert_allclose(res["output"], f(x), rtol=1e-12)
    h = 1e-6
    np.testing.assert_allclose(res["derivative"], (f(x + h) - f(x - h)) / (2 * h), rtol=1e-6, atol=1e-8)


def test_maxout_takes_the_max_of_consecutive_groups_and_routes_the_derivative():
    x = np.array([[1.0, -2.0, 3.0, 0.0], [-1.0, -1.0, 2.0, 5.0]])
    res = explain_activation("maxout", x, pieces=2)
    assert res["output"].tolist() == [[1, 3], [-1, 5]]
    assert res["derivative"].tolist() == [[1, 0, 1, 0], [1, 0, 0, 1]]  # ties go to the first
    assert res["expressions"] == ["max(1, -2) = 1", "max(3, 0) = 3", "max(-1, -1) = -1", "max(2, 5) = 5"]
    res = explain_activation("maxout", x, pieces=4)
    assert res["output"].tolist() == [[3], [5]]


def test_maxout_plot_curve_is_the_two_piece_example():
    xs = np.array([-4.0, 4.0])
    y, dy = curve("maxout", xs)
    np.testing.assert_allclose(y, [2.5, 4.0])       # max(x, -0.5x + 0.5)
    np.testing.assert_allclose(dy, [-0.5, 1.0])


def test_default_input_is_used_without_one():
    res = explain_activation("relu")
    assert res["input"].shape == (1, 8)
    assert res["output"].min() == 0


def test_activation_errors_name_the_bad_value():
    with pytest.raises(UserError, match="unknown activation 'relux'.*did you mean 'relu'"):
        explain_activation("relux", np.ones((1, 2)))
    with pytest.raises(UserError, match="--pieces 2.*3 values"):
        explain_activation("maxout", np.ones((2, 3)), pieces=2)
    with pytest.raises(UserError, match="--alpha -1"):
        explain_activation("elu", np.ones((1, 2)), alpha=-1)
