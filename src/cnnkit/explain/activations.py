"""The course's activation functions applied to a small matrix, value by value.

Outputs come from the NumPy reference engine (``cnnkit.reference.relu`` and friends),
derivatives from its ``*_derivative`` helpers (maxout: its backward pass with a gradient
of ones). Each element also gets its arithmetic written out.

Maxout: the course writes max(w1ᵀx + b1, w2ᵀx + b2). Here each row of the input is one
sample's pre-activations and maxout keeps the largest of every group of ``pieces``
consecutive values: the row ``z1 z2 z3 z4`` with pieces=2 gives ``max(z1, z2) max(z3, z4)``,
where z_k = w_kᵀx + b_k are the pieces' linear outputs (the reference engine's channel maxout).

Example::

    >>> r = explain_activation("relu", parse_matrix(COURSE_RELU_INPUT))
    >>> r["output"].tolist()
    [[0.0, 0.0, 0.0], [250.0, 0.0, 101.0], [27.0, 61.0, 0.0]]
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from cnnkit.errors import UserError, did_you_mean
from cnnkit.explain.ops import fmt_num, format_matrix, parse_matrix  # noqa: F401 - re-exported

NAMES = ("sigmoid", "tanh", "relu", "leaky_relu", "elu", "maxout")
ALIASES = {"leakyrelu": "leaky_relu", "leaky-relu": "leaky_relu", "lrelu": "leaky_relu", "sigmoïde": "sigmoid"}

COURSE_RELU_INPUT = "-249 -91 -37; 250 -134 101; 27 61 -153"
COURSE_RELU_OUTPUT = [[0, 0, 0], [250, 0, 101], [27, 61, 0]]
DEFAULT_INPUT = "-3 -1 -0.5 0 0.5 1 2 3"

# The illustrative 2-piece maxout of the plot: max(w1 x + b1, w2 x + b2) on a scalar x.
MAXOUT_PLOT_PIECES = ((1.0, 0.0), (-0.5, 0.5))


def canonical_name(name: str) -> str:
    key = str(name).strip().lower()
    key = ALIASES.get(key, key)
    if key not in NAMES:
        raise UserError(f"unknown activation {name!r}{did_you_mean(key, NAMES)}; allowed: {', '.join(NAMES)}")
    return key


def _check_params(name: str, slope: float, alpha: float, pieces: int) -> None:
    if name == "elu" and not alpha > 0:
        raise UserError(f"--alpha {alpha!r} is not allowed for elu; use a positive number")
    if name == "maxout" and (int(pieces) != pieces or pieces < 2):
        raise UserError(f"--pieces {pieces!r} is not allowed for maxout; use an int >= 2")
    if name == "leaky_relu" and not math.isfinite(slope):
        raise UserError(f"--slope {slope!r} is not allowed for leaky_relu; use a finite number such as 0.1")


def formula(name: str, slope: float = 0.1, alpha: float = 1.0, pieces: int = 2) -> str:
    """The course's formula with this call's parameters."""
    s, a = fmt_num(slope, 4), fmt_num(alpha, 4)
    return {
        "sigmoid": "sigmoid(x) = 1 / (1 + e^(-x))",
        "tanh": "tanh(x) = (e^x - e^(-x)) / (e^x + e^(-x))",
        "relu": "relu(x) = max(0, x)",
        "leaky_relu": (f"leaky_relu(x) = max({s}x, x)" if 0 <= slope <= 1
                       else f"leaky_relu(x) = x if x > 0 else {s}x"),
        "elu": f"elu(x) = x if x >= 0 else {a}*(e^x - 1)",
        "maxout": (f"maxout(z) = max({'z_1, z_2' if pieces == 2 else f'z_1, ..., z_{pieces}'}) over each group "
                   f"of {pieces} consecutive values of a row,"
                   f" z_k = w_kᵀx + b_k (the course: max(w1ᵀx + b1, w2ᵀx + b2))"),
    }[name]


def derivative_formula(name: str, slope: float = 0.1, alpha: float = 1.0, pieces: int = 2) -> str:
    s, a = fmt_num(slope, 4), fmt_num(alpha, 4)
    return {
        "sigmoid": "sigmoid'(x) = sigmoid(x) * (1 - sigmoid(x))",
        "tanh": "tanh'(x) = 1 - tanh(x)^2",
        "relu": "relu'(x) = 1 if x > 0 else 0 (0 at x = 0, like torch)",
        "leaky_relu": f"leaky_relu'(x) = 1 if x > 0 else {s}",
        "elu": f"elu'(x) = 1 if x > 0 else {a}*e^x",
        "maxout": "d maxout / d z_k = 1 for the largest value of its group (the first on ties), 0 for the others",
    }[name]


def _forward(name: str, x: np.ndarray, slope: float, alpha: float, pieces: int):
    """(output, derivative) from the reference engine."""
    from cnnkit import reference as ref

    if name == "sigmoid":
        return ref.sigmoid(x)[0], ref.sigmoid_derivative(x)
    if name == "tanh":
        return ref.tanh(x)[0], ref.tanh_derivative(x)
    if name == "relu":
        return ref.relu(x)[0], ref.relu_derivative(x)
    if name == "leaky_relu":
        return ref.leaky_relu(x, slope)[0], ref.leaky_relu_derivative(x, slope)
    if name == "elu":
        return ref.elu(x, alpha)[0], ref.elu_derivative(x, alpha)
    y, cache = ref.maxout(x, pieces)  # rows are samples, values are channels
    return y, ref.maxout_backward(np.ones_like(y), cache)


def _element_expression(name: str, v: float, y: float, slope: float, alpha: float) -> str:
    xs, ys = fmt_num(v, 4), fmt_num(y, 4)
    neg = f"({xs})" if v < 0 else xs
    if name == "sigmoid":
        return f"sigmoid({xs}) = 1/(1 + e^({fmt_num(-v, 4)})) = {ys}"
    if name == "tanh":
        return f"tanh({xs}) = {ys}"
    if name == "relu":
        return f"max(0, {xs}) = {ys}"
    if name == "leaky_relu":
        if 0 <= slope <= 1:
            return f"max({fmt_num(slope, 4)}*{neg}, {xs}) = {ys}"
        return f"{xs} > 0: {ys}" if v > 0 else f"{fmt_num(slope, 4)}*{neg} = {ys}"
    if name == "elu":
        if v >= 0:
            return f"{xs} >= 0: elu = {ys}"
        return f"{fmt_num(alpha, 4)}*(e^{neg} - 1) = {ys}"
    raise AssertionError(name)


def explain_activation(name: str, x=None, slope: float = 0.1, alpha: float = 1.0, pieces: int = 2) -> dict[str, Any]:
    """Apply activation ``name`` to the matrix ``x`` (default: a sample row) with the reference engine.

    Returns ``name, formula, derivative_formula, params, input, output, derivative, expressions``.
    """
    name = canonical_name(name)
    _check_params(name, slope, alpha, pieces)
    pieces = int(pieces)
    x = parse_matrix(DEFAULT_INPUT) if x is None else np.atleast_2d(np.asarray(x, dtype=np.float64))
    if x.ndim != 2:
        raise UserError(f"--input must be a 2-D matrix, got shape {x.shape}")
    if name == "maxout" and x.shape[1] % pieces:
        raise UserError(f"maxout with --pieces {pieces} needs rows whose length is a multiple of {pieces}; "
                        f"the input rows have {x.shape[1]} values")
    y, dy = _forward(name, x, slope, alpha, pieces)
    exprs = []
    if name == "maxout":
        for r in range(x.shape[0]):
            for g in range(y.shape[1]):
                zs = x[r, g * pieces:(g + 1) * pieces]
                exprs.append(f"max({', '.join(fmt_num(v, 4) for v in zs)}) = {fmt_num(y[r, g], 4)}")
    else:
        for v, o in zip(x.ravel(), np.asarray(y).ravel()):
            exprs.append(_element_expression(name, float(v), float(o), slope, alpha))
    params = {"leaky_relu": {"slope": slope}, "elu": {"alpha": alpha}, "maxout": {"pieces": pieces}}.get(name, {})
    return {"name": name, "formula": formula(name, slope, alpha, pieces),
            "derivative_formula": derivative_formula(name, slope, alpha, pieces), "params": params,
            "input": x, "output": np.asarray(y, dtype=float), "derivative": np.asarray(dy, dtype=float),
            "expressions": exprs}


def course_example(name: str = "relu", **params) -> dict[str, Any]:
    """The course's ReLU figure input (3x3); for relu it also carries the course's output."""
    res = explain_activation(name, parse_matrix(COURSE_RELU_INPUT), **params)
    res["example"] = "course"
    if res["name"] == "relu":
        res["course_output"] = COURSE_RELU_OUTPUT
    return res


def curve(name: str, xs, slope: float = 0.1, alpha: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """(f(xs), f'(xs)) for plotting; maxout uses the illustrative 2-piece example MAXOUT_PLOT_PIECES."""
    name = canonical_name(name)
    xs = np.asarray(xs, dtype=float)
    if name == "maxout":
        (w1, b1), (w2, b2) = MAXOUT_PLOT_PIECES
        z = np.stack([w1 * xs + b1, w2 * xs + b2], axis=1)          # (n, 2): channels = pieces
        from cnnkit import reference as ref

        y, cache = ref.maxout(z, 2)
        gz = ref.maxout_backward(np.ones_like(y), cache)             # (n, 2)
        return y[:, 0], gz[:, 0] * w1 + gz[:, 1] * w2                # chain rule through z_k = w_k x + b_k
    y, dy = _forward(name, xs, slope, alpha, 2)
    return np.asarray(y, dtype=float), np.asarray(dy, dtype=float)


def to_json(res: dict[str, Any]) -> dict[str, Any]:
    out = {"activation": res["name"], "formula": res["formula"], "derivative_formula": res["derivative_formula"],
           "params": res["params"], "input": res["input"].tolist(), "output": res["output"].tolist(),
           "derivative": res["derivative"].tolist(), "expressions": res["expressions"]}
    for k in ("example", "course_output"):
        if k in res:
            out[k] = res[k]
    return out


def render_text(res: dict[str, Any], max_expressions: int = 36) -> str:
    lines = [f"{res['name']}" + (" - the course's example input" if res.get("example") == "course" else ""),
             f"  {res['formula']}",
             f"  {res['derivative_formula']}",
             "", "input:", format_matrix(res["input"], 4),
             "output:", format_matrix(res["output"], 4),
             "derivative at each input value:", format_matrix(res["derivative"], 4)]
    if res["name"] == "maxout":
        lines.append("  (each row's values are the pieces z_k = w_kᵀx + b_k; groups of "
                     f"{res['params']['pieces']} consecutive values share one output)")
    if res["expressions"]:
        lines.append("")
        lines.append("value by value:")
        for e in res["expressions"][:max_expressions]:
            lines.append(f"  {e}")
        if len(res["expressions"]) > max_expressions:
            lines.append(f"  ... ({len(res['expressions']) - max_expressions} more)")
    if "course_output" in res:
        same = np.array_equal(res["output"], np.array(res["course_output"], dtype=float))
        lines.append("")
        lines.append("course's output: " + "; ".join(" ".join(str(v) for v in row) for row in res["course_output"])
                     + f" -> {'reproduced exactly' if same else 'NOT reproduced'}")
    return "\n".join(lines)


__all__ = ["NAMES", "COURSE_RELU_INPUT", "COURSE_RELU_OUTPUT", "DEFAULT_INPUT", "MAXOUT_PLOT_PIECES",
           "canonical_name", "formula", "derivative_formula", "explain_activation", "course_example",
           "curve", "to_json", "render_text"]
