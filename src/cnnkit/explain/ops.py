"""Sliding-window operations explained step by step: convolution, max, average and L2 pooling.

:func:`explain_window_op` walks every window position in row-major order and
writes out the arithmetic done there (``3*0.111 + 3*0.111 + ... = 1.667``,
``max(3, 3, 2, ...) = 3``, ``(3+3+2+...)/9 = 1.667``, ``sqrt(3² + 3² + ...) = ...``),
computing each value by hand in plain Python. The output matrix itself comes
from the NumPy reference engine (:func:`cnnkit.reference.conv2d` and the pools),
and the result carries the largest difference between the two.

Example::

    >>> x = parse_matrix("3 3 2 1 0; 0 0 1 3 1; 3 1 2 2 3; 2 0 0 2 2; 2 0 0 0 1")
    >>> r = explain_window_op("avgpool", x, size=3, stride=1)
    >>> r["steps"][0]["expression"]
    '(3+3+2+0+0+1+3+1+2)/9 = 1.667'
    >>> np.round(r["output"], 1).tolist()[0]
    [1.7, 1.7, 1.7]

Padding is an int (symmetric), ``"valid"`` or ``"same"`` (TF/Keras rule, also for
stride > 1: out = ceil(in / stride), the odd pixel on the bottom/right). Padded
cells are 0 for conv, avg and L2 pooling (the average divides by k*k, like
torch's ``count_include_pad=True``) and -inf for max pooling.
"""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np

from cnnkit.errors import UserError, did_you_mean
from cnnkit.geometry import conv_output_size, same_output_size, same_padding

OPS = ("conv", "maxpool", "avgpool", "l2pool")

# The course's worked examples ("Opération de convolution" and the ReLU figure).
COURSE_INPUT = "3 3 2 1 0; 0 0 1 3 1; 3 1 2 2 3; 2 0 0 2 2; 2 0 0 0 1"
COURSE_AVGPOOL_OUTPUT = [[1.7, 1.7, 1.7], [1.0, 1.2, 1.8], [1.1, 0.8, 1.3]]
COURSE_SIZE = 3
COURSE_STRIDE = 1


# --------------------------------------------------------------------------- parsing

_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")


def _parse_value(tok: str, what: str) -> float:
    t = tok.strip()
    if "/" in t:  # fractions such as 1/9
        num, _, den = t.partition("/")
        if _NUMBER.match(num) and _NUMBER.match(den) and float(den) != 0:
            return float(num) / float(den)
    elif _NUMBER.match(t):
        return float(t)
    raise UserError(f"{what}: {tok!r} is not a number; write rows separated by ';' and values "
                    f"separated by spaces or commas, e.g. \"1 2 3; 4 5 6\" (fractions like 1/9 are allowed)")


def parse_matrix(text: str, what: str = "--input") -> np.ndarray:
    """``"3 3 2; 0 0 1"`` (rows by ``;``, values by spaces or commas) -> a 2-D float64 array."""
    if text is None or not str(text).strip():
        raise UserError(f"{what}: empty matrix; write rows separated by ';' and values separated by "
                        f"spaces or commas, e.g. \"1 2 3; 4 5 6\"")
    rows = []
    for i, row in enumerate(str(text).strip().strip(";").split(";")):
        toks = [t for t in re.split(r"[\s,]+", row.strip()) if t]
        if not toks:
            raise UserError(f"{what}: row {i + 1} of {text!r} is empty; remove the extra ';'")
        rows.append([_parse_value(t, what) for t in toks])
    widths = {len(r) for r in rows}
    if len(widths) > 1:
        lens = ", ".join(str(len(r)) for r in rows)
        raise UserError(f"{what}: rows of {text!r} have different lengths ({lens}); every row needs "
                        f"the same number of values")
    return np.array(rows, dtype=np.float64)


def parse_padding(value: Any) -> int | str:
    """``"1"``/1 -> 1; ``"valid"``/``"same"`` as they are; anything else is a UserError."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        p = int(value)
    else:
        text = str(value).strip().lower()
        if text in ("valid", "same"):
            return text
        if not re.fullmatch(r"\d+", text):
            raise UserError(f"--padding {value!r} is not allowed; use a non-negative int, 'valid' or 'same'"
                            f"{did_you_mean(text, ['valid', 'same'])}")
        p = int(text)
    if p < 0:
        raise UserError(f"--padding {value!r} must be non-negative (or 'valid' / 'same')")
    return p


def _positive(value: Any, flag: str) -> int:
    try:
        v = int(value)
    except (TypeError, ValueError):
        raise UserError(f"{flag} {value!r} is not an int; use a positive int") from None
    if v < 1 or (isinstance(value, float) and value != v):
        raise UserError(f"{flag} {value!r} is not allowed; use a positive int")
    return v


# --------------------------------------------------------------------------- number formatting

def fmt_num(v: float, digits: int = 3) -> str:
    """A compact number: ``3``, ``0.111``, ``1.667``, ``-inf``, ``2.5e-05``."""
    v = float(v)
    if math.isinf(v):
        return "-inf" if v < 0 else "inf"
    if math.isnan(v):
        return "nan"
    if v == int(v) and abs(v) < 1e15:
        return str(int(v))
    if abs(v) < 10 ** (-digits):
        return f"{v:.{digits}g}"
    s = f"{v:.{digits}f}".rstrip("0").rstrip(".")
    return "0" if s in ("-0", "") else s


def _term(v: float, digits: int = 3) -> str:
    """A number as a factor or term: negatives in parentheses."""
    s = fmt_num(v, digits)
    return f"({s})" if s.startswith("-") else s


def format_matrix(m, digits: int = 3, indent: str = "  ", fixed: int | None = None) -> str:
    """Right-aligned columns; ``fixed`` decimals (e.g. 1 as the course prints) or compact numbers."""
    m = np.atleast_2d(np.asarray(m, dtype=float))
    if fixed is not None:
        cells = [[("-inf" if np.isneginf(v) else f"{v:.{fixed}f}") for v in row] for row in m]
    else:
        cells = [[fmt_num(v, digits) for v in row] for row in m]
    width = max(len(c) for row in cells for c in row)
    return "\n".join(indent + " ".join(c.rjust(width) for c in row) for row in cells)


# --------------------------------------------------------------------------- geometry

def _geometry(op: str, in_hw, k_hw, stride: int, padding) -> tuple[int, int, int, int]:
    """Padding (top, bottom, left, right) of this op; UserError if a pool pads too much."""
    if padding == "valid":
        return (0, 0, 0, 0)
    if padding == "same":
        t, b = same_padding(in_hw[0], k_hw[0], stride)
        l, r = same_padding(in_hw[1], k_hw[1], stride)
        return (t, b, l, r)
    p = int(padding)
    if op != "conv" and (2 * p > k_hw[0] or 2 * p > k_hw[1]):
        raise UserError(f"--padding {p} is too large for a {k_hw[0]}x{k_hw[1]} pooling window; "
                        f"use at most {min(k_hw) // 2} (half the window), or 'same'")
    return (p, p, p, p)


def _pad_fill(op: str) -> float:
    return -np.inf if op == "maxpool" else 0.0


# --------------------------------------------------------------------------- one window

def window_step(op: str, window: np.ndarray, kernel: np.ndarray | None = None, digits: int = 3) -> tuple[str, float]:
    """The arithmetic of one window, computed by hand: ``(expression, value)``."""
    vals = [float(v) for v in np.asarray(window, dtype=float).ravel()]
    if op == "conv":
        ws = [float(w) for w in np.asarray(kernel, dtype=float).ravel()]
        value = 0.0
        for a, b in zip(vals, ws):
            value += a * b
        expr = " + ".join(f"{_term(a, digits)}*{_term(b, digits)}" for a, b in zip(vals, ws))
    elif op == "maxpool":
        value = max(vals)
        expr = "max(" + ", ".join(fmt_num(a, digits) for a in vals) + ")"
    elif op == "avgpool":
        total = 0.0
        for a in vals:
            total += a
        value = total / len(vals)
        expr = "(" + "+".join(_term(a, digits) for a in vals) + f")/{len(vals)}"
    elif op == "l2pool":
        total = 0.0
        for a in vals:
            total += a * a
        value = math.sqrt(total)
        expr = "sqrt(" + " + ".join(f"{_term(a, digits)}²" for a in vals) + f") = sqrt({fmt_num(total, digits)})"
    else:
        raise UserError(f"unknown operation {op!r}{did_you_mean(op, OPS)}; allowed: {', '.join(OPS)}")
    return f"{expr} = {fmt_num(value, digits)}", value


# --------------------------------------------------------------------------- reference engine

def reference_output(op: str, x: np.ndarray, pads, stride: int, kernel=None, size=None) -> np.ndarray:
    """The output matrix computed by the NumPy reference engine."""
    from cnnkit.reference import avg_pool2d, conv2d, l2_pool2d, max_pool2d

    x4 = np.asarray(x, dtype=np.float64)[None, None]
    t, b, l, r = pads
    if op == "conv":
        w4 = np.asarray(kernel, dtype=np.float64)[None, None]
        y, _ = conv2d(x4, w4, None, stride=stride, padding=((t, b), (l, r)))
        return y[0, 0]
    fn = {"maxpool": max_pool2d, "avgpool": avg_pool2d, "l2pool": l2_pool2d}[op]
    if t == b == l == r and 2 * t <= size:
        y, _ = fn(x4, size, stride, t)              # the engine's own symmetric padding
    else:                                           # asymmetric 'same' padding: pad first
        xp = np.pad(x4, ((0, 0), (0, 0), (t, b), (l, r)), constant_values=_pad_fill(op))
        y, _ = fn(xp, size, stride, 0)
    return y[0, 0]


# --------------------------------------------------------------------------- the whole walk

def explain_window_op(op: str, x, kernel=None, size: int | None = None, stride: int | None = None,
                      padding: int | str = 0, digits: int = 3) -> dict[str, Any]:
    """Every window position of ``op`` on the 2-D input ``x``, with its arithmetic.

    op: conv (needs ``kernel``, a 2-D array), maxpool, avgpool, l2pool (window ``size``, default 2).
    stride: default 1 for conv, the window size for pools (as torch). padding: int, 'valid', 'same'.

    Returns a dict with ``op, input, kernel (conv), size (pools), stride, padding, pads
    (top, bottom, left, right), padded_input, steps [{position, window, expression, value,
    output_cell}], output`` (from the reference engine), ``output_steps`` (from the steps)
    and ``max_abs_diff`` between the two.
    """
    if op not in OPS:
        raise UserError(f"unknown operation {op!r}{did_you_mean(op, OPS)}; allowed: {', '.join(OPS)}")
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.size == 0:
        raise UserError(f"--input must be a 2-D matrix, got shape {x.shape}")
    padding = parse_padding(padding)
    if op == "conv":
        if kernel is None:
            raise UserError("conv needs a kernel: pass --kernel \"1 0 -1; 1 0 -1; 1 0 -1\" "
                            "(rows by ';'), or use --example course")
        kernel = np.asarray(kernel, dtype=np.float64)
        if kernel.ndim != 2 or kernel.size == 0:
            raise UserError(f"--kernel must be a 2-D matrix, got shape {kernel.shape}")
        k_hw = kernel.shape
        stride = 1 if stride is None else _positive(stride, "--stride")
    else:
        size = 2 if size is None else _positive(size, "--size")
        k_hw = (size, size)
        stride = size if stride is None else _positive(stride, "--stride")
    pads = _geometry(op, x.shape, k_hw, stride, padding)
    t, b, l, r = pads
    hp, wp = x.shape[0] + t + b, x.shape[1] + l + r
    if k_hw[0] > hp or k_hw[1] > wp:
        what = "kernel" if op == "conv" else "window (--size)"
        raise UserError(f"the {what} {k_hw[0]}x{k_hw[1]} is larger than the "
                        f"{'padded ' if (t or b or l or r) else ''}input {hp}x{wp}; use a smaller "
                        f"{'kernel' if op == 'conv' else 'size'} or more padding")
    xp = np.pad(x, ((t, b), (l, r)), constant_values=_pad_fill(op))
    ho = conv_output_size(x.shape[0], k_hw[0], stride, t, b)
    wo = conv_output_size(x.shape[1], k_hw[1], stride, l, r)

    steps, by_hand = [], np.zeros((ho, wo))
    for i in range(ho):
        for j in range(wo):
            r0, c0 = i * stride, j * stride
            win = xp[r0:r0 + k_hw[0], c0:c0 + k_hw[1]]
            expr, value = window_step(op, win, kernel, digits)
            by_hand[i, j] = value
            steps.append({"position": [r0, c0], "output_cell": [i, j], "window": win.copy(),
                          "expression": expr, "value": value})
    ref = reference_output(op, x, pads, stride, kernel=kernel, size=size)
    if ref.shape != by_hand.shape:  # pragma: no cover - a geometry bug
        raise AssertionError(f"reference output {ref.shape} != step output {by_hand.shape}")
    diff = float(np.max(np.abs(ref - by_hand))) if ref.size else 0.0
    out: dict[str, Any] = {"op": op, "input": x, "stride": stride, "padding": padding, "pads": pads,
                           "padded_input": xp, "steps": steps, "output": ref, "output_steps": by_hand,
                           "max_abs_diff": diff}
    if op == "conv":
        out["kernel"] = kernel
    else:
        out["size"] = size
    return out


def course_example(op: str) -> dict[str, Any]:
    """The course's worked example for ``op``: its 5x5 input, a 3x3 window, stride 1.

    conv uses the 3x3 kernel of 1/9, which is exactly the 3x3 average pool; the result
    then also carries ``avgpool_output`` and ``max_abs_diff_vs_avgpool``.
    """
    x = parse_matrix(COURSE_INPUT)
    if op == "conv":
        res = explain_window_op("conv", x, kernel=np.full((3, 3), 1.0 / 9.0), stride=COURSE_STRIDE, padding=0)
        avg = explain_window_op("avgpool", x, size=COURSE_SIZE, stride=COURSE_STRIDE, padding=0)
        res["avgpool_output"] = avg["output"]
        res["max_abs_diff_vs_avgpool"] = float(np.max(np.abs(res["output"] - avg["output"])))
    else:
        res = explain_window_op(op, x, size=COURSE_SIZE, stride=COURSE_STRIDE, padding=0)
    res["example"] = "course"
    if op in ("conv", "avgpool"):
        res["course_output"] = COURSE_AVGPOOL_OUTPUT
    return res


# --------------------------------------------------------------------------- rendering

def _json_value(v: float):
    v = float(v)
    return None if math.isinf(v) or math.isnan(v) else v


def _json_matrix(m) -> list:
    return [[_json_value(v) for v in row] for row in np.atleast_2d(np.asarray(m, dtype=float))]


def to_json(res: dict[str, Any]) -> dict[str, Any]:
    """The JSON form: op, input, kernel?, stride, padding, steps, output (-inf padding as null)."""
    t, b, l, r = res["pads"]
    out: dict[str, Any] = {"op": res["op"], "input": _json_matrix(res["input"])}
    if "kernel" in res:
        out["kernel"] = _json_matrix(res["kernel"])
    if "size" in res:
        out["size"] = res["size"]
    out["stride"] = res["stride"]
    out["padding"] = res["padding"]
    out["pads"] = {"top": t, "bottom": b, "left": l, "right": r}
    if t or b or l or r:
        out["padded_input"] = _json_matrix(res["padded_input"])
    out["steps"] = [{"position": s["position"], "output_cell": s["output_cell"],
                     "window": _json_matrix(s["window"]), "expression": s["expression"],
                     "value": _json_value(s["value"])} for s in res["steps"]]
    out["output"] = _json_matrix(res["output"])
    out["max_abs_diff_steps_vs_reference"] = res["max_abs_diff"]
    if "avgpool_output" in res:
        out["avgpool_output"] = _json_matrix(res["avgpool_output"])
        out["max_abs_diff_vs_avgpool"] = res["max_abs_diff_vs_avgpool"]
    if "course_output" in res:
        out["course_output"] = res["course_output"]
    if "example" in res:
        out["example"] = res["example"]
    return out


_OP_TITLES = {"conv": "convolution", "maxpool": "max pooling", "avgpool": "average pooling", "l2pool": "L2 pooling"}


def _window_line(win: np.ndarray, digits: int) -> str:
    return " | ".join(" ".join(fmt_num(v, digits) for v in row) for row in win)


def render_text(res: dict[str, Any], decimals: int = 1, digits: int = 3) -> str:
    """Human-readable walk: settings, (padded) input, every step, the output matrix."""
    op, x = res["op"], res["input"]
    t, b, l, r = res["pads"]
    k_hw = res["kernel"].shape if op == "conv" else (res["size"], res["size"])
    ho, wo = res["output"].shape
    lines = []
    title = _OP_TITLES[op]
    if res.get("example") == "course":
        title += " - the course's worked example"
    lines.append(title)
    pad_desc = res["padding"] if isinstance(res["padding"], str) else f"{res['padding']}"
    lines.append(f"  input {x.shape[0]}x{x.shape[1]}, {'kernel' if op == 'conv' else 'window'} "
                 f"{k_hw[0]}x{k_hw[1]}, stride {res['stride']}, padding {pad_desc} "
                 f"({t} top, {b} bottom, {l} left, {r} right) -> output {ho}x{wo}")
    for axis, n, k, (p0, p1), o in (("rows", x.shape[0], k_hw[0], (t, b), ho),
                                     ("cols", x.shape[1], k_hw[1], (l, r), wo)):
        same = ""
        if res["padding"] == "same":
            s = res["stride"]
            o_same, total = same_output_size(n, s), p0 + p1
            same = (f"same: out = ceil({n}/{s}) = {o_same}, total padding = max(({o_same}-1)*{s} + "
                    f"({k}-1) + 1 - {n}, 0) = {total} -> {p0} {'top' if axis == 'rows' else 'left'}, "
                    f"{p1} {'bottom' if axis == 'rows' else 'right'}; ")
        lines.append(f"  {axis}: {same}out = floor(({n} + {p0}+{p1} - {k})/{res['stride']}) + 1 = {o}")
    if op == "maxpool" and (t or b or l or r):
        lines.append("  padded cells are -inf for max pooling (they never win)")
    if op == "avgpool" and (t or b or l or r):
        lines.append(f"  padded zeros count in the mean (divide by {k_hw[0] * k_hw[1]}), like torch's "
                     f"count_include_pad=True")
    lines.append("")
    lines.append("input:")
    lines.append(format_matrix(x, digits))
    if t or b or l or r:
        lines.append(f"padded input ({res['padded_input'].shape[0]}x{res['padded_input'].shape[1]}):")
        lines.append(format_matrix(res["padded_input"], digits))
    if op == "conv":
        lines.append("kernel:")
        lines.append(format_matrix(res["kernel"], digits))
    lines.append("")
    padded = " of the padded input" if (t or b or l or r) else ""
    lines.append(f"each window is named by its top-left cell (row, col){padded}, in row-major order:")
    n = len(res["steps"])
    for k, s in enumerate(res["steps"], 1):
        (r0, c0), (i, j) = s["position"], s["output_cell"]
        lines.append(f"step {k}/{n}: window at ({r0}, {c0}) -> output[{i}][{j}]")
        lines.append(f"  window: {_window_line(s['window'], digits)}")
        lines.append(f"  {s['expression']}")
    lines.append("")
    lines.append(f"output ({decimals} decimal{'s' if decimals != 1 else ''}"
                 f"{', as the course prints it' if decimals == 1 else ''}):")
    lines.append(format_matrix(res["output"], fixed=decimals))
    if not np.allclose(np.round(res["output"], decimals), res["output"], rtol=0, atol=1e-12):
        lines.append("output (4 decimals):")
        lines.append(format_matrix(res["output"], fixed=4))
    lines.append(f"the step arithmetic matches the reference engine "
                 f"(cnnkit.reference): max |difference| = {res['max_abs_diff']:.1e}")
    if "course_output" in res:
        same = np.array_equal(np.round(res["output"], 1), np.array(res["course_output"]))
        lines.append(f"course's matrix: {'; '.join(' '.join(f'{v:.1f}' for v in row) for row in res['course_output'])}"
                     f" -> {'reproduced' if same else 'NOT reproduced'} to 1 decimal")
    if "avgpool_output" in res:
        lines.append("")
        lines.append("a 3x3 kernel of 1/9 multiplies each value by 1/9 and sums: that is the mean of the window,")
        lines.append("so this convolution equals the 3x3 average pool (stride 1) of the same input.")
        lines.append("conv output (4 decimals):")
        lines.append(format_matrix(res["output"], fixed=4))
        lines.append("avgpool output (4 decimals):")
        lines.append(format_matrix(res["avgpool_output"], fixed=4))
        lines.append(f"max |conv - avgpool| = {res['max_abs_diff_vs_avgpool']:.1e}  (equal up to rounding)")
    return "\n".join(lines)


__all__ = ["OPS", "COURSE_INPUT", "COURSE_AVGPOOL_OUTPUT", "parse_matrix", "parse_padding", "fmt_num",
           "format_matrix", "window_step", "reference_output", "explain_window_op", "course_example",
           "to_json", "render_text"]
