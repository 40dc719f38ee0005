"""Sliding-window explanations: the course's worked example, the step arithmetic against the
reference engine (and torch as an independent oracle), geometry and user errors."""

from __future__ import annotations

import math
import zlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cnnkit.errors import UserError
from cnnkit.explain.ops import (course_example, explain_window_op, fmt_num, parse_matrix, parse_padding,
                                render_text, window_step)

COURSE_X = [[3, 3, 2, 1, 0], [0, 0, 1, 3, 1], [3, 1, 2, 2, 3], [2, 0, 0, 2, 2], [2, 0, 0, 0, 1]]
COURSE_OUT = [[1.7, 1.7, 1.7], [1.0, 1.2, 1.8], [1.1, 0.8, 1.3]]  # as printed in the course


# --------------------------------------------------------------------------- the course

def test_course_avgpool_reproduces_the_course_matrix():
    res = course_example("avgpool")
    assert res["input"].tolist() == COURSE_X
    assert (res["size"], res["stride"], res["pads"]) == (3, 1, (0, 0, 0, 0))
    assert np.array_equal(np.round(res["output"], 1), np.array(COURSE_OUT))
    assert res["output"][0, 0] == pytest.approx(15 / 9)
    assert res["steps"][0]["expression"] == "(3+3+2+0+0+1+3+1+2)/9 = 1.667"
    assert res["steps"][4]["expression"] == "(0+1+3+1+2+2+0+0+2)/9 = 1.222"


def test_course_conv_with_one_ninth_kernel_equals_the_average_pool():
    conv = course_example("conv")
    avg = course_example("avgpool")
    assert np.allclose(conv["kernel"], 1 / 9)
    assert np.max(np.abs(conv["output"] - avg["output"])) <= 1e-12
    assert conv["max_abs_diff_vs_avgpool"] <= 1e-12
    assert np.array_equal(np.round(conv["output"], 1), np.array(COURSE_OUT))
    first = conv["steps"][0]["expression"]
    assert first.startswith("3*0.111 + 3*0.111 + 2*0.111 + 0*0.111")
    assert first.endswith("= 1.667") and first.count("*0.111") == 9
    text = render_text(conv)
    assert "equals the 3x3 average pool" in text
    assert "max |conv - avgpool|" in text
    assert "  1.7 1.7 1.7\n  1.0 1.2 1.8\n  1.1 0.8 1.3" in text   # the final matrix, 1 decimal


@pytest.mark.parametrize("op", ["maxpool", "l2pool"])
def test_course_input_under_other_pools(op):
    res = course_example(op)
    x = np.array(COURSE_X, dtype=float)
    win = x[0:3, 0:3]
    expected = win.max() if op == "maxpool" else math.sqrt((win ** 2).sum())
    assert res["output"][0, 0] == pytest.approx(expected)
    if op == "l2pool":
        assert res["steps"][0]["expression"] == "sqrt(3² + 3² + 2² + 0² + 0² + 1² + 3² + 1² + 2²) = sqrt(37) = 6.083"
    else:
        assert res["steps"][0]["expression"] == "max(3, 3, 2, 0, 0, 1, 3, 1, 2) = 3"


# --------------------------------------------------------------------------- against the engine and torch

def _torch_oracle(op, x, pads, stride, kernel=None, size=None):
    t, b, l, r = pads
    fill = -math.inf if op == "maxpool" else 0.0
    xt = F.pad(torch.tensor(x)[None, None], (l, r, t, b), value=fill)
    if op == "conv":
        return F.conv2d(xt, torch.tensor(kernel)[None, None], stride=stride)[0, 0].numpy()
    if op == "maxpool":
        return F.max_pool2d(xt, size, stride)[0, 0].numpy()
    if op == "avgpool":
        return F.avg_pool2d(xt, size, stride)[0, 0].numpy()
    return torch.sqrt(F.avg_pool2d(xt * xt, size, stride) * size * size)[0, 0].numpy()


CASES = [  # (shape, k, stride, padding)
    ((5, 5), 3, 1, 0),
    ((6, 7), 3, 2, 1),
    ((6, 6), 3, 2, "same"),    # TF same with stride 2: asymmetric (0 top, 1 bottom)
    ((7, 5), 2, 2, "same"),
    ((8, 8), 3, 3, "valid"),
    ((5, 6), 4, 1, "same"),    # even window: the extra pixel bottom/right
    ((4, 4), 2, 1, 1),
]


@pytest.mark.parametrize("op", ["conv", "maxpool", "avgpool", "l2pool"])
@pytest.mark.parametrize("shape,k,stride,padding", CASES)
def test_step_arithmetic_equals_reference_engine_and_torch(op, shape, k, stride, padding):
    rng = np.random.default_rng(zlib.crc32(repr((op, shape, k, stride, padding)).encode()))
    x = rng.normal(size=shape)
    kernel = rng.normal(size=(k, k)) if op == "conv" else None
    if op != "conv" and padding not in ("same", "valid") and 2 * padding > k:
        pytest.skip("pool padding above half the window is refused")
    res = explain_window_op(op, x, kernel=kernel, size=None if op == "conv" else k, stride=stride,
                            padding=padding)
    by_steps = np.array([s["value"] for s in res["steps"]]).reshape(res["output"].shape)
    np.testing.assert_allclose(by_steps, res["output"], rtol=1e-12, atol=1e-12)
    assert res["max_abs_diff"] <= 1e-12
    np.testing.assert_allclose(res["output"], _torch_oracle(op, x, res["pads"], stride, kernel, k),
                               rtol=1e-9, atol=1e-9)
    # geometry: row-major positions, stride apart; 'same' gives ceil(in / stride)
    ho, wo = res["output"].shape
    assert [s["position"] for s in res["steps"]] == [[i * stride, j * stride] for i in range(ho) for j in range(wo)]
    if padding == "same":
        assert (ho, wo) == (-(-shape[0] // stride), -(-shape[1] // stride))
    # each window is the padded input under the window, and its expression ends with its value
    for s in res["steps"]:
        r0, c0 = s["position"]
        assert np.array_equal(s["window"], res["padded_input"][r0:r0 + k, c0:c0 + k])
        assert s["expression"].endswith("= " + fmt_num(s["value"]))


def test_same_padding_with_stride_two_is_asymmetric_and_shown():
    x = np.arange(36.0).reshape(6, 6)
    res = explain_window_op("avgpool", x, size=3, stride=2, padding="same")
    assert res["pads"] == (0, 1, 0, 1)
    assert res["padded_input"].shape == (7, 7)
    text = render_text(res)
    assert "padded input (7x7):" in text
    assert "total padding = max((3-1)*2 + (3-1) + 1 - 6, 0) = 1 -> 0 top, 1 bottom" in text


def test_negative_values_are_parenthesised_in_the_arithmetic():
    expr, value = window_step("conv", np.array([[1.0, -2.0]]), np.array([[-1.0, 0.5]]))
    assert expr == "1*(-1) + (-2)*0.5 = -2"
    assert value == -2.0
    expr, _ = window_step("avgpool", np.array([[1.0, -3.0]]))
    assert expr == "(1+(-3))/2 = -1"


# --------------------------------------------------------------------------- parsing and errors

def test_parse_matrix_accepts_spaces_commas_and_fractions():
    m = parse_matrix("1, 2 3; 4 5,6;")
    assert m.tolist() == [[1, 2, 3], [4, 5, 6]]
    assert parse_matrix("1/9 -2.5e1").tolist() == [[1 / 9, -25.0]]


@pytest.mark.parametrize("text,named", [("1 2; 3 x", "'x'"), ("1 2; 3", "2, 1"), ("", "empty"),
                                        ("1 2;; 3 4", "row 2")])
def test_bad_matrix_text_is_a_user_error_naming_the_value(text, named):
    with pytest.raises(UserError, match="--input") as e:
        parse_matrix(text, "--input")
    assert named in str(e.value)


def test_kernel_larger_than_input_is_a_user_error():
    with pytest.raises(UserError, match=r"kernel 3x3 is larger than the input 2x2"):
        explain_window_op("conv", np.ones((2, 2)), kernel=np.ones((3, 3)))
    with pytest.raises(UserError, match=r"window \(--size\) 4x4 is larger than the input 3x3"):
        explain_window_op("maxpool", np.ones((3, 3)), size=4)


def test_conv_without_kernel_asks_for_one():
    with pytest.raises(UserError, match="--kernel"):
        explain_window_op("conv", np.ones((3, 3)))


def test_bad_padding_op_and_stride_are_user_errors():
    with pytest.raises(UserError, match="'sam'.*did you mean 'same'"):
        parse_padding("sam")
    with pytest.raises(UserError, match="--padding 2 is too large for a 3x3 pooling window"):
        explain_window_op("maxpool", np.ones((5, 5)), size=3, padding=2)
    with pytest.raises(UserError, match="unknown operation 'minpool'"):
        explain_window_op("minpool", np.ones((3, 3)))
    with pytest.raises(UserError, match="--stride 0"):
        explain_window_op("avgpool", np.ones((3, 3)), stride=0)
