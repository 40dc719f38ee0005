"""A 1-D convolution on a short series, walked output by output: the positions each output reads,
the products and the sum.

For output i, tap p of the kernel reads the input position ``t = i*s + p*d - before``
(s the stride, d the dilation, ``before`` the zeros padded before the series), so

    y[i] = b + sum_p w[p] * x[i*s + p*d - before]

(a cross-correlation, as torch's ``F.conv1d``). Positions outside 0..L-1 read a padded zero.
Padding: ``valid`` (none), ``same`` (TF rule: out = ceil(L/s), the odd zero at the end), ``causal``
((k-1)*d zeros before, none after: output i reads positions i*s - (k-1)*d .. i*s, never a later one,
which is what a forecaster may use), or an int (that many zeros at both ends). Dilation d spaces the
taps d apart, skipping the positions between: a window of k taps spans d*(k-1) + 1 positions.

Each step's sum is computed by hand in plain Python; the output itself comes from the NumPy
reference engine's :func:`cnnkit.reference.conv1d` (the oracle of the torch engine), and the
result carries the largest difference between the two.

Example::

    >>> r = explain_conv1d("1,3,2,5", "1,0,-1", padding="causal")
    >>> r["steps"][0]["positions"], r["steps"][0]["expression"]
    ([-2, -1, 0], '1*0 + 0*0 + (-1)*1 = -1')
    >>> r["output"].tolist()
    [-1.0, -3.0, -1.0, -2.0]
"""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np

from cnnkit.errors import UserError, did_you_mean
from cnnkit.explain.ops import fmt_num
from cnnkit.geometry import conv_output_size, same_output_size, same_padding

# A short series with a rise, a dip and a jump, and a kernel that differences it (x[t] - x[t+2]).
DEFAULT_SERIES = "1,3,2,5,4,6,9,8"
DEFAULT_KERNEL = "1,0,-1"
PADDINGS = ("valid", "same", "causal")

_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")


# --------------------------------------------------------------------------- parsing

def _number(tok: str, what: str, example: str) -> float:
    t = tok.strip()
    if "/" in t:                                   # fractions such as 1/3
        num, _, den = t.partition("/")
        if _NUMBER.match(num) and _NUMBER.match(den) and float(den) != 0:
            return float(num) / float(den)
    elif _NUMBER.match(t):
        return float(t)
    raise UserError(f"{what}: {tok!r} is not a number; write values separated by commas or spaces, e.g. "
                    f"{example} (fractions like 1/3 are allowed)")


def parse_values(text: Any, what: str = "--series", example: str = "1,3,2,5") -> list[float]:
    """``"1,3,2,5"`` (commas or spaces) -> [1.0, 3.0, 2.0, 5.0]; empty or non-numbers: UserError."""
    if isinstance(text, (list, tuple, np.ndarray)):
        vals = []
        for v in np.asarray(text).ravel().tolist():
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise UserError(f"{what}: {v!r} is not a finite number")
            vals.append(float(v))
        if not vals:
            raise UserError(f"{what} is empty; give at least one value, e.g. {example}")
        return vals
    toks = [t for t in re.split(r"[\s,;]+", str(text if text is not None else "").strip()) if t]
    if not toks:
        raise UserError(f"{what} is empty; give at least one value, e.g. {example}")
    return [_number(t, what, example) for t in toks]


def parse_padding1d(value: Any) -> int | str:
    """valid, same, causal or a non-negative int (zeros at both ends); anything else: UserError."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        p = int(value)
    else:
        text = str(value).strip().lower()
        if text in PADDINGS:
            return text
        if not re.fullmatch(r"\d+", text):
            raise UserError(f"--padding {value!r} is not allowed; use valid, same, causal or a non-negative int"
                            f"{did_you_mean(text, PADDINGS)}")
        p = int(text)
    if p < 0:
        raise UserError(f"--padding {value!r} must be non-negative (or valid, same, causal)")
    return p


def _positive(value: Any, flag: str) -> int:
    if isinstance(value, bool):
        raise UserError(f"{flag} {value!r} is not allowed; use a positive int")
    try:
        v = int(str(value).strip()) if isinstance(value, str) else int(value)
    except (TypeError, ValueError):
        raise UserError(f"{flag} {value!r} is not an int; use a positive int") from None
    if v < 1 or (isinstance(value, float) and value != v):
        raise UserError(f"{flag} {value!r} is not allowed; use a positive int")
    return v


def _bias(value: Any) -> float:
    if value is None:
        return 0.0
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        b = float(value)
    else:
        b = _number(str(value), "--bias", "0.5")
    if not math.isfinite(b):
        raise UserError(f"--bias {value!r} is not a finite number")
    return b


# --------------------------------------------------------------------------- geometry

def pads_of(padding: int | str, length: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    """(before, after): the zeros each padding puts around a series of ``length``."""
    if padding == "valid":
        return 0, 0
    if padding == "same":
        return same_padding(length, kernel, stride, dilation)
    if padding == "causal":
        return (kernel - 1) * dilation, 0
    return int(padding), int(padding)


def _term(v: float, digits: int) -> str:
    s = fmt_num(v, digits)
    return f"({s})" if s.startswith("-") else s


# --------------------------------------------------------------------------- the walk

def explain_conv1d(series, kernel, stride: Any = 1, dilation: Any = 1, padding: Any = "valid", bias: Any = 0.0,
                   digits: int = 3) -> dict[str, Any]:
    """Every output of a 1-D convolution of ``series`` with ``kernel``, with its arithmetic.

    Returns a dict with ``series, kernel, bias, stride, dilation, padding, pads (before, after),
    padded_series, span, output_length, length_formula, steps`` (each: ``index, time`` (i*s),
    ``positions`` (the input position of each tap; outside 0..L-1 a padded zero), ``padded`` (which
    taps read padding), ``inputs, weights, products, sum, value, expression, ahead`` (how far past
    position i*s its last tap reads: 0 for causal)), ``output`` (from the reference engine),
    ``output_steps`` (from the steps) and ``max_abs_diff``.
    """
    x = parse_values(series, "--series", "1,3,2,5")
    w = parse_values(kernel, "--kernel", "1,0,-1")
    s, d = _positive(stride, "--stride"), _positive(dilation, "--dilation")
    pad = parse_padding1d(padding)
    b = _bias(bias)
    n, k = len(x), len(w)
    before, after = pads_of(pad, n, k, s, d)
    span = d * (k - 1) + 1
    padded_len = n + before + after
    if span > padded_len:
        what = "series" if not (before or after) else "padded series"
        raise UserError(f"the kernel of {k} taps with dilation {d} spans {span} positions, more than the {what} "
                        f"of {padded_len}; use a shorter kernel, a smaller --dilation, a longer --series or "
                        f"--padding same / causal")
    out_len = conv_output_size(n, k, s, before, after, d)
    xp = [0.0] * before + x + [0.0] * after

    steps, by_hand = [], []
    for i in range(out_len):
        positions = [i * s + p * d - before for p in range(k)]
        inputs = [xp[t + before] for t in positions]
        products, total = [], 0.0
        for wp, v in zip(w, inputs):
            products.append(wp * v)
            total += wp * v
        value = total + b
        terms = " + ".join(f"{_term(wp, digits)}*{_term(v, digits)}" for wp, v in zip(w, inputs))
        bias_txt = f" + {_term(b, digits)}" if b else ""
        steps.append({"index": i, "time": i * s, "positions": positions,
                      "padded": [not 0 <= t < n for t in positions], "inputs": inputs, "weights": list(w),
                      "products": products, "sum": total, "bias": b, "value": value,
                      "expression": f"{terms}{bias_txt} = {fmt_num(value, digits)}",
                      "ahead": max(positions) - i * s})
        by_hand.append(value)

    ref = reference_output(x, w, b, s, d, pad if isinstance(pad, str) else (before, after))
    by_hand_arr = np.array(by_hand, dtype=np.float64)
    if ref.shape != by_hand_arr.shape:  # pragma: no cover - a geometry bug
        raise AssertionError(f"reference output {ref.shape} != step output {by_hand_arr.shape}")
    diff = float(np.max(np.abs(ref - by_hand_arr))) if ref.size else 0.0
    return {"op": "conv1d", "series": x, "kernel": list(w), "bias": b, "stride": s, "dilation": d,
            "padding": pad, "pads": (before, after), "padded_series": xp, "span": span,
            "output_length": out_len, "length_formula": length_formula(n, k, s, d, pad, before, after),
            "steps": steps, "output": ref, "output_steps": by_hand_arr, "max_abs_diff": diff}


def reference_output(x, w, b: float, stride: int, dilation: int, padding) -> np.ndarray:
    """The output computed by the NumPy reference engine's conv1d (its own padding rule for
    valid / same / causal)."""
    from cnnkit.reference import conv1d

    x3 = np.asarray(x, dtype=np.float64)[None, None]
    w3 = np.asarray(w, dtype=np.float64)[None, None]
    y, _ = conv1d(x3, w3, np.array([b]), stride=stride, padding=padding, dilation=dilation)
    return y[0, 0]


def length_formula(n: int, k: int, s: int, d: int, padding, before: int, after: int) -> str:
    """How the output length follows, written out."""
    out = conv_output_size(n, k, s, before, after, d)
    rule = f"out = floor(({n} + {before}+{after} - {d}*({k}-1) - 1)/{s}) + 1 = {out}"
    if padding == "same":
        o = same_output_size(n, s)
        return (f"same: out = ceil({n}/{s}) = {o}, total padding = max(({o}-1)*{s} + {d}*({k}-1) + 1 - {n}, 0) = "
                f"{before + after} -> {before} before, {after} after; {rule}")
    if padding == "causal":
        return (f"causal: (k-1)*d = ({k}-1)*{d} = {before} zeros before, none after; {rule} "
                f"(= ceil({n}/{s}): one output per stride step)")
    return rule


def default_example(**options: Any) -> dict[str, Any]:
    """The walk on :data:`DEFAULT_SERIES` with :data:`DEFAULT_KERNEL` (unless ``kernel`` is given), with
    the other ``options`` of :func:`explain_conv1d` (valid padding, stride 1 by default)."""
    options.setdefault("kernel", DEFAULT_KERNEL)
    res = explain_conv1d(DEFAULT_SERIES, **options)
    res["example"] = "default"
    return res


# --------------------------------------------------------------------------- output

def to_json(res: dict[str, Any]) -> dict[str, Any]:
    """The JSON form: settings, each step (positions read, products, sum) and the output."""
    before, after = res["pads"]
    out: dict[str, Any] = {k: res[k] for k in ("op", "series", "kernel", "bias", "stride", "dilation", "padding")}
    out["pads"] = {"before": before, "after": after}
    out["padded_series"] = res["padded_series"]
    out["span"] = res["span"]
    out["output_length"] = res["output_length"]
    out["length_formula"] = res["length_formula"]
    out["steps"] = [dict(st) for st in res["steps"]]
    out["output"] = [float(v) for v in res["output"]]
    out["max_abs_diff_steps_vs_reference"] = res["max_abs_diff"]
    out["causal"] = all(st["ahead"] <= 0 for st in res["steps"])
    if "example" in res:
        out["example"] = res["example"]
    return out


def _offset_text(stride: int, offset: int) -> str:
    """``i*2``, ``i*2 + 1``, ``i*2 - 4``: the position a tap reads, for output i."""
    if offset == 0:
        return f"i*{stride}"
    return f"i*{stride} {'+' if offset > 0 else '-'} {abs(offset)}"


def _row(label: str, cells: list[str], width: int) -> str:
    return f"  {label:<6}" + " ".join(c.rjust(width) for c in cells)


def render_text(res: dict[str, Any], digits: int = 3) -> str:
    """Human-readable walk: settings, the series with its positions, every output, the check."""
    x, w, s, d, pad = res["series"], res["kernel"], res["stride"], res["dilation"], res["padding"]
    before, after = res["pads"]
    n, k = len(x), len(w)
    lines = ["1-D convolution (cross-correlation, like torch's conv1d)" +
             (" - the default example" if res.get("example") == "default" else "")]
    pad_desc = pad if isinstance(pad, str) else f"{pad}"
    lines.append(f"  series of {n}, kernel of {k} taps (weights {' '.join(fmt_num(v, digits) for v in w)})"
                 f"{', bias ' + fmt_num(res['bias'], digits) if res['bias'] else ''}, stride {s}, dilation {d}, "
                 f"padding {pad_desc} ({before} before, {after} after) -> output of {res['output_length']}")
    lines.append(f"  length: {res['length_formula']}")
    taps = ", ".join(_offset_text(s, p * d - before) for p in range(k))
    shift = f" - {before}" if before else ""
    lines.append(f"  y[i] = b + sum_p w[p] * x[i*s + p*d{shift}]: output i reads positions {taps}")
    if d > 1:
        lines.append(f"  dilation {d}: the taps are {d} apart, skipping the {d - 1} position"
                     f"{'s' if d > 2 else ''} between; the window spans d*(k-1) + 1 = {d}*({k}-1) + 1 = "
                     f"{res['span']} positions")
    if pad == "causal":
        lines.append(f"  causal: the last tap of output i is position i*{s}: it never reads a later one "
                     f"(the future of a time series)")
    lines.append("")
    cells = [fmt_num(v, digits) for v in res["padded_series"]]
    pos = [str(t) for t in range(-before, n + after)]
    width = max(len(c) for c in cells + pos)
    lines.append("series" + (f" ({before} zero{'s' if before != 1 else ''} before, {after} after: positions "
                             f"outside 0..{n - 1})" if before or after else "") + ":")
    lines.append(_row("t", pos, width))
    lines.append(_row("x[t]", cells, width))
    lines.append("")
    total = len(res["steps"])
    for st in res["steps"]:
        reads = ", ".join(f"x[{t}]={fmt_num(v, digits)}" + (" (pad)" if padded else "")
                          for t, v, padded in zip(st["positions"], st["inputs"], st["padded"]))
        where = "" if pad != "causal" and st["ahead"] <= 0 else (
            f"  (reads up to position {max(st['positions'])}" +
            (f", {st['ahead']} after i*s = {st['time']})" if st["ahead"] > 0 else f" = i*s: nothing later)"))
        lines.append(f"y[{st['index']}]  ({st['index'] + 1}/{total}) reads {reads}{where}")
        lines.append(f"      {st['expression']}")
    lines.append("")
    lines.append("output: " + " ".join(fmt_num(v, digits) for v in res["output"]))
    ahead = max((st["ahead"] for st in res["steps"]), default=0)
    if ahead <= 0:
        lines.append("no output reads a position after its own (i*s): causal")
    else:
        lines.append(f"not causal: some outputs read up to {ahead} position{'s' if ahead != 1 else ''} after their "
                     f"own (i*s); --padding causal never does")
    lines.append(f"the step arithmetic matches the reference engine (cnnkit.reference.conv1d): "
                 f"max |difference| = {res['max_abs_diff']:.1e}")
    return "\n".join(lines)


__all__ = ["DEFAULT_KERNEL", "DEFAULT_SERIES", "PADDINGS", "default_example", "explain_conv1d", "length_formula",
           "pads_of", "parse_padding1d", "parse_values", "reference_output", "render_text", "to_json"]
