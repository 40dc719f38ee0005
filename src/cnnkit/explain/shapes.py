"""Layer-by-layer shape, receptive-field and parameter arithmetic, written out with each layer's numbers.

For every layer:

* output size: ``out = floor((in + 2p - d(k-1) - 1) / s) + 1 = floor((28 + 0 - 1*(5-1) - 1)/1) + 1 = 24``
  and, for ``same`` padding, the padding it adds
  (``same: out = ceil(28/2) = 14, total padding = max((14-1)*2 + 1*(3-1) + 1 - 28, 0) = 1 -> 0 top, 1 bottom``);
* receptive field and cumulative stride (jump): ``rf = rf_prev + (k-1)*d*jump_prev``, ``jump = jump_prev*s``;
* parameters: ``(5*5*1 + 1)*6 = 156``.

Encoder-decoder lists (U-Net) add a transposed convolution
(``out = (in - 1)*s - 2p + d(k-1) + output_padding + 1 = (4 - 1)*2 - 2*0 + 1*(2-1) + 0 + 1 = 8``),
an upsampling (scale or size, and the interpolation mode) and a concatenation with an earlier named
layer's output (its channels, and the centre crop when that output is larger). Past an up-sampling
the cumulative stride becomes a fraction: the receptive field and stride show as ``-`` from there on,
as in ``cnnkit summary``.

Text lists (input (V, L), an ``embedding`` first) give the same arithmetic along the sequence: the
embedding's table (``V*D`` parameters), each ``conv1d`` / ``maxpool1d``'s length formula, the global
pooling over time, and a ``parallel`` block's branches (indented) joined along channels; the
receptive field counts tokens (worked out here, along the main path and the largest branch).

Sources: a declarative layer list (a config's ``model.layers``, or a registered model that is a
layer list such as ``lenet5``), or any other registered (torchvision-based) model, whose
conv/pool/linear modules are walked with forward hooks in execution order. Receptive fields and
strides come from :func:`cnnkit.summary.walk_model`, the walk ``cnnkit summary`` makes, so the two
commands agree; the arithmetic is :mod:`cnnkit.geometry`'s.

Example::

    >>> r = explain_shapes("lenet5")
    >>> [l["output_shape"] for l in r["layers"] if l["type"] == "conv"]
    [[6, 24, 24], [16, 8, 8]]
    >>> r["total_params"]
    44426
"""

from __future__ import annotations

import inspect
from typing import Any

from cnnkit.errors import UserError
from cnnkit.geometry import (ReceptiveField, adaptive_pool_window, conv_output_size, pair, same_output_size,
                             same_padding)
from cnnkit.spec import (POOLS, POOLS1D, RECURRENT, LayerSpec, center_crop_offsets, conv1d_geometry, conv_geometry,
                         conv_transpose_padding, infer_shapes, layer_output_shape, parse_layers)

# Shapes of the built-in datasets, so `explain shapes` needs no data on disk.
KNOWN_DATA = {
    "mnist5k": ((1, 28, 28), 10),
    "mnist": ((1, 28, 28), 10),
    "fashion_mnist": ((1, 28, 28), 10),
    "digits": ((1, 8, 8), 10),
    "cifar10": ((3, 32, 32), 10),
    "cifar10_jpeg": ((3, 32, 32), 10),
    "cifar100": ((3, 32, 32), 100),
    "imagenet": ((3, 224, 224), 1000),
}

SIZE_RULE = "out = floor((in + 2p - d(k-1) - 1) / s) + 1"
RF_RULE = "rf = rf_prev + (k-1)*d*jump_prev"
JUMP_RULE = "jump = jump_prev*s"
TRANSPOSED_RULE = "out = (in - 1)*s - 2p + d(k-1) + output_padding + 1"
UPSAMPLING = ("conv_transpose", "upsample")


def _layer_list_models() -> dict[str, Any]:
    """Registered models that are declarative layer lists: name -> function returning the list."""
    from cnnkit.models.lenet import LAYER_LISTS

    return dict(LAYER_LISTS)


# --------------------------------------------------------------------------- small helpers

def parse_input_shape(text: str | None, signal: bool = False) -> tuple[int, ...] | None:
    """``"1,28,28"`` (or ``1x28x28``) -> (1, 28, 28); for text ``"20000,400"`` -> (20000, 400) (V, L);
    with ``signal`` ``"1,128"`` -> (1, 128), a series (C, L); None stays None."""
    if text is None:
        return None
    parts = [p for p in str(text).replace("x", ",").replace(" ", ",").split(",") if p]
    try:
        shape = tuple(int(p) for p in parts)
    except ValueError:
        shape = ()
    if signal:
        if len(shape) != 2 or min(shape) < 1:
            raise UserError(f"--input {text!r} is not allowed with --signal; write C,L with two positive ints "
                            f"(channels, time steps), e.g. 1,128")
        return shape  # type: ignore[return-value]
    # text: a vocabulary holds at least <pad> (0) and <unk> (1)
    if len(shape) not in (2, 3) or min(shape) < 1 or (len(shape) == 2 and shape[0] < 2):
        raise UserError(f"--input {text!r} is not allowed; write C,H,W with three positive ints, e.g. 1,28,28 "
                        f"(or, for text, V,L: vocabulary size, at least 2 with <pad> and <unk>, and sequence length, "
                        f"e.g. 20000,400)")
    return shape  # type: ignore[return-value]


def _fmt_shape(shape) -> str:
    return "x".join(str(s) for s in shape)


def _thousands(n: int) -> str:
    return f"{n:,}"


def _pad_term(p0: int, p1: int) -> str:
    if p0 == p1 == 0:
        return "0"
    return f"2*{p0}" if p0 == p1 else f"{p0}+{p1}"


def size_formula(n: int, k: int, s: int, p0: int, p1: int, d: int = 1, ceil_mode: bool = False,
                 same: bool = False, axis: str = "H") -> tuple[int, str]:
    """Output length along one axis and its arithmetic written out."""
    if n + p0 + p1 < d * (k - 1) + 1:
        raise UserError(f"a window of {k} (dilation {d}) does not fit an input of {n} with padding {p0}+{p1}")
    rule = SIZE_RULE if p0 == p1 else "out = floor((in + p_before + p_after - d(k-1) - 1) / s) + 1"
    inner = f"({n} + {_pad_term(p0, p1)} - {d}*({k}-1) - 1)/{s}"
    prefix = ""
    if same:
        o, total = same_output_size(n, s), sum(same_padding(n, k, s, d))
        before, after = ("top", "bottom") if axis == "H" else ("left", "right")
        prefix = (f"same: out = ceil({n}/{s}) = {o}, total padding = max(({o}-1)*{s} + {d}*({k}-1) + 1 - {n}, 0)"
                  f" = {total} -> {p0} {before}, {p1} {after}; ")
    if ceil_mode:
        rounded_up = -(-(n + p0 + p1 - d * (k - 1) - 1) // s) + 1
        out = conv_output_size(n, k, s, p0, p1, d, ceil_mode=True)
        text = f"{rule.replace('floor', 'ceil')} = ceil({inner}) + 1 = {rounded_up}"
        if out < rounded_up:
            text += f", minus 1 (the last window would start in the padding) = {out}"
        return out, prefix + text
    out = conv_output_size(n, k, s, p0, p1, d)
    return out, f"{prefix}{rule} = floor({inner}) + 1 = {out}"


def _both_axes(in_hw, k, s, pads, d, ceil_mode=False, same=False) -> tuple[tuple[int, int], list[str]]:
    (kh, kw), (sh, sw), (dh, dw) = k, s, d
    pt, pb, pl, pr = pads
    oh, th = size_formula(in_hw[0], kh, sh, pt, pb, dh, ceil_mode, same, "H")
    ow, tw = size_formula(in_hw[1], kw, sw, pl, pr, dw, ceil_mode, same, "W")
    if (in_hw[0], kh, sh, pt, pb, dh) == (in_hw[1], kw, sw, pl, pr, dw):
        return (oh, ow), [f"{th}   (H and W)"]
    return (oh, ow), [f"H: {th}", f"W: {tw}"]


def transposed_size_formula(n: int, k: int, s: int, p: int, op: int, d: int = 1,
                            same: bool = False) -> tuple[int, str]:
    """Output length of a transposed convolution along one axis and its arithmetic written out."""
    out = (n - 1) * s - 2 * p + d * (k - 1) + op + 1
    prefix = ""
    if same:
        t = d * (k - 1) + 1 - s
        how = (f"p = ceil(t/2) = {p}, output_padding = 2p - t = {op}" if t >= 0
               else f"p = 0, output_padding = -t = {op}")
        prefix = (f"same: out = in*s = {n}*{s} = {n * s}; t = d(k-1) + 1 - s = {d}*({k}-1) + 1 - {s} = {t} -> "
                  f"{how}; ")
    return out, f"{prefix}{TRANSPOSED_RULE} = ({n} - 1)*{s} - 2*{p} + {d}*({k}-1) + {op} + 1 = {out}"


def _transposed_both_axes(in_hw, a) -> tuple[tuple[int, int], list[str]]:
    (ph, pw), (oph, opw) = conv_transpose_padding(a)
    (kh, kw), (sh, sw), (dh, dw) = a["kernel"], a["stride"], a["dilation"]
    same = a["padding"] == "same"
    oh, th = transposed_size_formula(in_hw[0], kh, sh, ph, oph, dh, same)
    ow, tw = transposed_size_formula(in_hw[1], kw, sw, pw, opw, dw, same)
    if (in_hw[0], kh, sh, ph, oph, dh) == (in_hw[1], kw, sw, pw, opw, dw):
        return (oh, ow), [f"{th}   (H and W)"]
    return (oh, ow), [f"H: {th}", f"W: {tw}"]


def _upsample_formulas(shape, new_shape, a) -> list[str]:
    """Upsampling: the output size (scale or size) and what the mode does."""
    (ih, iw), (oh, ow) = tuple(shape[1:]), tuple(new_shape[1:])
    def ratio(o: int, i: int) -> str:
        return f"{o}/{i}" + ("" if o % i else f" = {o // i}")

    if a["size"] is not None:
        size = [f"out = size = {oh}x{ow} (fixed, whatever the input): scale " +
                (ratio(oh, ih) + "   (H and W)" if (ih, oh) == (iw, ow)
                 else f"H {ratio(oh, ih)}, W {ratio(ow, iw)}")]
    else:
        sh, sw = a["scale"]
        size = ([f"out = in*scale = {ih}*{sh} = {oh}   (H and W)"] if (ih, sh) == (iw, sw)
                else [f"H: out = in*scale = {ih}*{sh} = {oh}", f"W: out = in*scale = {iw}*{sw} = {ow}"])
    if a["mode"] == "nearest":
        if a["size"] is None:
            mode = f"mode nearest: each pixel is repeated in a {a['scale'][0]}x{a['scale'][1]} block"
        else:
            mode = "mode nearest: output pixel i copies input pixel floor(i*in/out)"
    elif a["align_corners"]:
        mode = ("mode bilinear (align_corners=True): output pixel i samples the input at i*(in-1)/(out-1), "
                "the corner pixels meet, and mixes its 2x2 nearest input pixels")
    else:
        mode = ("mode bilinear (align_corners=False): output pixel i samples the input at (i + 0.5)*in/out - 0.5 "
                "(pixel centres) and mixes its 2x2 nearest input pixels")
    return size + [mode, "no parameters"]


def _concat_formulas(shape, new_shape, src: str, other) -> list[str]:
    """Concatenation with the (centre-cropped) output of the earlier layer ``src``."""
    h, w = shape[1], shape[2]
    texts = [f"out channels = {shape[0]} (this path) + {other[0]} (from {src}, {_fmt_shape(other)}) = "
             f"{new_shape[0]}; H x W stay {h}x{w}"]
    if tuple(other[1:]) == (h, w):
        texts.append(f"{src}'s output is already {h}x{w}: no crop")
    else:
        top, left = center_crop_offsets(tuple(other[1:]), (h, w))
        texts.append(f"centre crop of {src}'s {other[1]}x{other[2]} to {h}x{w}: rows {top}..{top + h - 1} "
                     f"({top} cut on top, {other[1] - h - top} at the bottom), columns {left}..{left + w - 1} "
                     f"({left} cut on the left, {other[2] - w - left} on the right)")
    return texts


def _rf_unknown(up: str | None) -> str:
    return f"rf -, jump - (unknown past the up-sampling {up})" if up else "rf -, jump - (unknown)"


def _rf_step(field: ReceptiveField, k, s, d) -> tuple[ReceptiveField, str]:
    """The field after a window and its arithmetic written out (one text when H and W agree)."""
    new = field.step(k, s, d)
    texts = [f"{RF_RULE} = {field.rf[a]} + ({k[a]}-1)*{d[a]}*{field.jump[a]} = {new.rf[a]}; "
             f"{JUMP_RULE} = {field.jump[a]}*{s[a]} = {new.jump[a]}" for a in range(2)]
    return new, texts[0] if texts[0] == texts[1] else f"H: {texts[0]}; W: {texts[1]}"


class _TextCall:
    """What :func:`_dense_field_text` reads of a walk's call, for a text list (no torch walk)."""

    def __init__(self, field_in: ReceptiveField, field: ReceptiveField) -> None:
        self.field_in, self.field = field_in, field


def _record(name, kind, desc, in_shape, out_shape, formulas, rf: ReceptiveField | None, params=0, params_formula=None,
            depth=0, layer_stride=None, note=None) -> dict[str, Any]:
    return {"name": name, "type": kind, "description": desc, "input_shape": list(in_shape),
            "output_shape": list(out_shape), "formulas": formulas,
            "receptive_field": rf.value("rf") if rf is not None else None,
            "stride": rf.value("jump") if rf is not None else None,
            "layer_stride": layer_stride, "params": int(params), "params_formula": params_formula,
            "depth": depth, "note": note}


# --------------------------------------------------------------------------- layer lists

def _describe(spec) -> str:
    a = spec.args
    if not a or spec.type == "residual":
        extra = f"shortcut={a['shortcut']}" if spec.type == "residual" else ""
        return f"{spec.type}({extra})" if extra else spec.type

    def show(v):
        if isinstance(v, tuple) and len(v) == 2 and v[0] == v[1]:
            return str(v[0])
        return "x".join(str(x) for x in v) if isinstance(v, tuple) else str(v)

    if spec.type == "parallel":
        return f"parallel({len(spec.branches)} branches)"
    defaults = {"dilation": (1, 1), "groups": 1, "bias": True}
    if spec.type == "conv1d":
        defaults.update(dilation=1, causal=False)
    if spec.type in RECURRENT:
        defaults.update(layers=1, bidirectional=False, dropout=0, **{"return": "sequence"})
    if spec.type == "embedding":
        defaults.update(padding_idx=None, freeze=False)
    if spec.type == "conv_transpose":
        defaults["output_padding"] = (0, 0)
    if spec.type == "upsample":
        defaults.update(size=None, scale=None, align_corners=False)
    shown = {k: v for k, v in a.items() if not (k in defaults and v == defaults[k])}
    return f"{spec.type}(" + ", ".join(f"{k}={show(v)}" for k, v in shown.items()) + ")"


def _dense_field_text(call) -> list[str]:
    """How a dense unit's receptive field follows: all positions of the flattened map at once."""
    f_in = call.field_in if call is not None else None
    if f_in is None or f_in.extent is None or call.field is None:
        return []
    texts = [f"a unit sees all {f_in.extent[a]} positions: {RF_RULE} = {f_in.rf[a]} + ({f_in.extent[a]}-1)*"
             f"{f_in.jump[a]} = {call.field.rf[a]}" for a in range(2)]
    return [texts[0] if texts[0] == texts[1] else f"H: {texts[0]}; W: {texts[1]}"]


def _text_field(spec, shape, field_in: ReceptiveField) -> ReceptiveField:
    """The field (in tokens) after a layer of a text list, on an input with ``field_in`` (both axes the same)."""
    t, a = spec.type, spec.args
    if t == "conv1d" or t in POOLS1D:
        k, st, d = a["kernel"], a["stride"], a.get("dilation", 1)
        return field_in.step((k, k), (st, st), (d, d))
    if t in ("globalmaxpool1d", "globalavgpool1d") or t in RECURRENT:
        return field_in.step((shape[1], shape[1]), (1, 1))
    if t == "flatten" and len(shape) == 2:
        return field_in.flattened((shape[1], shape[1]))
    if t == "dense":
        return field_in.dense()
    return field_in


def _recurrent_record(spec, shape, new_shape, field_in, rf, up, depth) -> dict[str, Any]:
    """An lstm / gru: its output shape, its parameters layer by layer, and its receptive field."""
    t, a = spec.type, spec.args
    hid, dirs, n_layers = a["hidden"], 2 if a["bidirectional"] else 1, a["layers"]
    gates = 4 if t == "lstm" else 3
    names = "i, f, g, o" if t == "lstm" else "r, z, n"
    length = shape[1]
    if a["return"] == "sequence":
        formulas = [f"out = hidden*directions x L = {hid}*{dirs} x {length} = {_fmt_shape(new_shape)} (the state at "
                    f"every time step)"]
    else:
        which = ("the forward direction's last step and the backward direction's first, concatenated"
                 if dirs == 2 else "the state after the last time step")
        formulas = [f"out = hidden*directions = {hid}*{dirs} = {new_shape[0]} ({which})"]
    if n_layers > 1:
        formulas.append(f"{n_layers} stacked layers: layer 2 on reads layer 1's {hid * dirs} outputs"
                        + (f", through dropout {a['dropout']} in training" if a["dropout"] else ""))
    if field_in is not None:
        reach = ("every step of the sequence (one direction reads it from each end)" if dirs == 2
                 else "every step up to t (the state carries the whole past)")
        formulas.append(f"a recurrent state at step t has read {reach}: the window is the whole sequence of "
                        f"{length}: {_rf_step(field_in, (length, length), (1, 1), (1, 1))[1]}")
    else:
        formulas.append(_rf_unknown(up))
    parts, params = [], 0
    for layer in range(n_layers):
        n_in = shape[0] if layer == 0 else hid * dirs
        one = gates * (hid * n_in + hid * hid + 2 * hid)
        params += one * dirs
        parts.append(f"{dirs}*{gates}*({hid}*{n_in} + {hid}*{hid} + 2*{hid})" if dirs == 2
                     else f"{gates}*({hid}*{n_in} + {hid}*{hid} + 2*{hid})")
    pf = (" + ".join(parts) + f" = {params}  ({gates} gates {names}: W_ih, W_hh and the biases b_ih, b_hh, as "
          f"torch)")
    return _record(spec.name, t, _describe(spec), shape, new_shape, formulas, rf, params, pf, depth, layer_stride=1)


def _field(calls, name: str) -> ReceptiveField | None:
    call = calls.get(name)
    return call.field if call is not None else None


def _walk_specs(specs, shape, calls, num_classes, depth, out: list, prefix: str = "",
                state: dict[str, Any] | None = None) -> tuple:
    """Records of each layer; receptive fields from ``calls`` (the walk's first call of each module, by name).

    ``state["up"]``: the first up-sampling layer met (past it, fields and strides are unknown: ``-``);
    ``state["field"]``: the field after the previous layer (the input's: rf 1, jump 1).
    """
    state = state if state is not None else {"up": None, "field": ReceptiveField()}
    named: dict[str, tuple] = {}          # output shapes of this list's layers, for a concat
    fields: dict[str, ReceptiveField | None] = {}
    for spec in specs:
        t, a = spec.type, spec.args
        name = prefix + spec.name
        new_shape = tuple(layer_output_shape(spec, tuple(shape), num_classes, named))
        named[spec.name] = new_shape
        desc = _describe(spec)
        call = calls.get(name)
        rf = _field(calls, name)
        field_in = call.field_in if call is not None else None
        if state.get("text"):   # no torch walk: the field along the sequence is worked out here
            field_in = state["field"]
            rf = _text_field(spec, shape, field_in)
            if t == "dense":
                call = _TextCall(field_in, rf)
        if t in UPSAMPLING and state["up"] is None:
            state["up"] = spec.name
        unknown = rf is None and state["up"] is not None    # past an up-sampling: shown as '-'
        if t == "conv" or t in POOLS:
            geo = conv_geometry(spec, shape)
            k, s = a["kernel"], a["stride"]
            d = a.get("dilation", (1, 1))
            (oh, ow), formulas = _both_axes(shape[1:], k, s, geo["pad"], d, same=a["padding"] == "same")
            assert (oh, ow) == tuple(new_shape[1:]), (spec.name, (oh, ow), new_shape)
            if t == "conv" and a["out"] == "num_classes":
                formulas.append(f"out = {new_shape[0]} channels (num_classes: one score map per class)")
            formulas.append(_rf_step(field_in, k, s, d)[1] if field_in is not None else _rf_unknown(state["up"]))
            params, pf = 0, None
            if t == "conv":
                cin, cout, g = shape[0], new_shape[0], a["groups"]
                cin_txt = str(cin) if g == 1 else f"({cin}/{g})"
                params = (k[0] * k[1] * (cin // g) + (1 if a["bias"] else 0)) * cout
                pf = (f"({k[0]}*{k[1]}*{cin_txt} + 1)*{cout} = {params}" if a["bias"]
                      else f"{k[0]}*{k[1]}*{cin_txt}*{cout} = {params}")
            out.append(_record(spec.name, t, desc, shape, new_shape, formulas, rf, params, pf, depth,
                               layer_stride=list(s) if s[0] != s[1] else s[0]))
        elif t == "embedding":
            v, dim = shape[0], new_shape[0]
            formulas = [f"out = dim x L = {dim}x{shape[1]}: each of the {shape[1]} token ids (0..{v - 1}) picks its "
                        f"row of the {v}x{dim} table; channels first, as conv1d wants"]
            if a["padding_idx"] is not None:
                formulas.append(f"padding_idx {a['padding_idx']}: that row is zero and gets no gradient")
            formulas.append("rf 1, jump 1 (one token per position)")
            params = v * dim
            pf = f"{v}*{dim} = {params}" + (" (frozen: not trained)" if a["freeze"] else "")
            out.append(_record(spec.name, t, desc, shape, new_shape, formulas, rf, params, pf, depth, layer_stride=1))
        elif t == "conv1d" or t in POOLS1D:
            geo = conv1d_geometry(spec, shape)
            k, st, d = a["kernel"], a["stride"], a.get("dilation", 1)
            n_out, text = size_formula(shape[1], k, st, *geo["pad"], d, same=a["padding"] == "same", axis="L")
            assert n_out == new_shape[1], (spec.name, n_out, new_shape)
            formulas = [f"{text}   (L)"]
            if a.get("causal"):
                formulas.insert(0, f"causal: (k-1)*d = ({k}-1)*{d} = {geo['pad'][0]} zeros before, none after: "
                                   f"output i reads positions up to i*{st}, never a later one")
            if t == "conv1d" and a["out"] == "num_classes":
                formulas.append(f"out = {new_shape[0]} channels (num_classes: one score per class and position)")
            formulas.append(_rf_step(field_in, (k, k), (st, st), (d, d))[1] if field_in is not None
                            else _rf_unknown(state["up"]))
            params, pf = 0, None
            if t == "conv1d":
                cin, cout = shape[0], new_shape[0]
                params = (k * cin + (1 if a["bias"] else 0)) * cout
                pf = f"({k}*{cin} + 1)*{cout} = {params}" if a["bias"] else f"{k}*{cin}*{cout} = {params}"
            out.append(_record(spec.name, t, desc, shape, new_shape, formulas, rf, params, pf, depth, layer_stride=st))
        elif t in RECURRENT:
            out.append(_recurrent_record(spec, shape, new_shape, field_in, rf, state["up"], depth))
        elif t in ("globalmaxpool1d", "globalavgpool1d"):
            what = "max" if t == "globalmaxpool1d" else "mean"
            rf_text = (_rf_step(field_in, (shape[1],) * 2, (1, 1), (1, 1))[1] if field_in is not None
                       else _rf_unknown(state["up"]))
            formulas = [f"out = C = {shape[0]} (the {what} of each channel over the {shape[1]} positions)",
                        f"the window is the whole sequence of {shape[1]}: {rf_text}"]
            out.append(_record(spec.name, t, desc, shape, new_shape, formulas, rf, depth=depth))
        elif t == "parallel":
            head = _record(spec.name, t, desc, shape, new_shape, [], None, depth=depth)
            out.append(head)
            start = len(out)
            ends, branch_fields, texts = [], [], []
            for j, branch in enumerate(spec.sublists()):
                state["field"] = field_in
                first = len(out)
                end = _walk_specs(branch, shape, calls, num_classes, depth + 1, out,
                                  prefix=f"{name}.branches.{j}.", state=state)
                ends.append(end)
                branch_fields.append(state["field"])
                texts.append(f"branch {j}: {' -> '.join(r['name'] for r in out[first:] if r['depth'] == depth + 1)}"
                             f" gives {_fmt_shape(end)}")
            rest = f"; the other dims stay {_fmt_shape(new_shape[1:])}" if len(new_shape) > 1 else ""
            head["formulas"] = (texts + [f"every branch gets the same input {_fmt_shape(shape)}; out channels = "
                                         f"{' + '.join(str(e[0]) for e in ends)} = {new_shape[0]}{rest}"])
            own = [r for r in out[start:] if r["depth"] == depth + 1]
            head["params"] = sum(r["params"] for r in own)
            parts = [str(r["params"]) for r in own if r["params"]]
            head["params_formula"] = (" + ".join(parts) + f" = {head['params']}") if parts else "0"
            if state.get("text") and all(f is not None for f in branch_fields):
                rf = branch_fields[0]
                for f in branch_fields[1:]:
                    rf = rf.merge(f)
                head["formulas"].append(f"rf = the largest of the branches' = max("
                                        f"{', '.join(str(f.value('rf')) for f in branch_fields)}) = {rf.value('rf')}; "
                                        f"jump = max({', '.join(str(f.value('jump')) for f in branch_fields)}) = "
                                        f"{rf.value('jump')}")
            else:
                rf = None
            head["receptive_field"] = rf.value("rf") if rf is not None else None
            head["stride"] = rf.value("jump") if rf is not None else None
        elif t == "conv_transpose":
            (oh, ow), formulas = _transposed_both_axes(shape[1:], a)
            assert (oh, ow) == tuple(new_shape[1:]), (spec.name, (oh, ow), new_shape)
            k, s = a["kernel"], a["stride"]
            cin, cout = shape[0], new_shape[0]
            if a["out"] == "num_classes":
                formulas.append(f"out = {cout} channels (num_classes: one score map per class)")
            up = f"{s[0]}" if s[0] == s[1] else f"{s[0]}x{s[1]}"
            formulas.append(f"rf -, jump -: a transposed convolution of stride {up} divides the cumulative stride "
                            f"by {up} (a fraction in general), which {RF_RULE} does not follow; unknown from here on")
            params = (k[0] * k[1] * cin + (1 if a["bias"] else 0)) * cout
            pf = (f"({k[0]}*{k[1]}*{cin} + 1)*{cout} = {params}" if a["bias"]
                  else f"{k[0]}*{k[1]}*{cin}*{cout} = {params}")
            out.append(_record(spec.name, t, desc, shape, new_shape, formulas, rf, params, pf, depth,
                               layer_stride=list(s) if s[0] != s[1] else s[0]))
        elif t == "upsample":
            formulas = _upsample_formulas(shape, new_shape, a)
            formulas.insert(-1, "rf -, jump -: upsampling divides the cumulative stride (a fraction in general), "
                                f"which {RF_RULE} does not follow; unknown from here on")
            out.append(_record(spec.name, t, desc, shape, new_shape, formulas, rf, depth=depth))
        elif t == "concat":
            src = a["from"]
            formulas = _concat_formulas(shape, new_shape, src, named[src])
            f_path, f_src = state["field"], fields.get(src)
            if rf is not None and f_path is not None and f_src is not None:
                formulas.append(
                    f"rf = the larger of the two branches' = max({f_path.value('rf')}, {f_src.value('rf')}) = "
                    f"{rf.value('rf')}; jump = max({f_path.value('jump')}, {f_src.value('jump')}) = "
                    f"{rf.value('jump')}")
            elif rf is None:
                formulas.append(_rf_unknown(state["up"]))
            formulas.append("no parameters")
            out.append(_record(spec.name, t, desc, shape, new_shape, formulas, rf, depth=depth))
        elif t in ("globalavgpool", "globalmaxpool"):
            (kh, sh), (kw, sw) = adaptive_pool_window(shape[1], 1), adaptive_pool_window(shape[2], 1)
            rf_text = (_rf_step(field_in, (kh, kw), (sh, sw), (1, 1))[1] if field_in is not None
                       else _rf_unknown(state["up"]))
            formulas = [f"out = C = {shape[0]} (one value per feature map)",
                        f"the window is the whole {shape[1]}x{shape[2]} map: {rf_text}"]
            out.append(_record(spec.name, t, desc, shape, new_shape, formulas, rf, depth=depth))
        elif t == "flatten":
            formulas = [f"out = {'*'.join(str(v) for v in shape)} = {new_shape[0]}"]
            if unknown:
                formulas.append(_rf_unknown(state["up"]))
            out.append(_record(spec.name, t, desc, shape, new_shape, formulas, rf, depth=depth))
        elif t == "dense":
            n_in, n_out = shape[0], new_shape[0]
            params = (n_in + (1 if a["bias"] else 0)) * n_out
            pf = f"({n_in} + 1)*{n_out} = {params}" if a["bias"] else f"{n_in}*{n_out} = {params}"
            src = " (num_classes)" if a["out"] == "num_classes" else ""
            formulas = [f"out = {n_out}{src}"] + _dense_field_text(call)
            if unknown:
                formulas.append(_rf_unknown(state["up"]))
            out.append(_record(spec.name, t, desc, shape, new_shape, formulas, rf, params, pf, depth))
        elif t == "batchnorm":
            c = shape[0]
            params = 2 * c if a["affine"] else 0
            pf = f"2*{c} = {params} (γ and β per channel)" if a["affine"] else "0 (affine=False)"
            formulas = ["shape unchanged"] + ([_rf_unknown(state["up"])] if unknown else [])
            out.append(_record(spec.name, t, desc, shape, new_shape, formulas, rf, params, pf, depth))
        elif t == "maxout":
            formulas = [f"out = {shape[0]}/{a['pieces']} = {new_shape[0]} {'channels' if len(shape) == 3 else 'features'}"]
            if unknown:
                formulas.append(_rf_unknown(state["up"]))
            out.append(_record(spec.name, t, desc, shape, new_shape, formulas, rf, depth=depth))
        elif t == "residual":
            head = _record(spec.name, t, desc, shape, new_shape, [], None, depth=depth)
            out.append(head)
            start = len(out)
            body_shape = _walk_specs(list(spec.children), shape, calls, num_classes, depth + 1, out,
                                     prefix=f"{name}.body.", state=state)
            params = sum(r["params"] for r in out[start:] if r["depth"] == depth + 1)
            parts = [str(r["params"]) for r in out[start:] if r["depth"] == depth + 1 and r["params"]]
            needs_proj = tuple(body_shape) != tuple(shape) or a["shortcut"] == "conv"
            if needs_proj:
                sp = shape[0] * new_shape[0]
                sh = max(1, -(-shape[1] // new_shape[1])) if len(shape) in (2, 3) else 1
                kind = "conv1d" if len(shape) == 2 else "conv"
                out.append(_record(f"{spec.name}.shortcut", kind, f"shortcut {kind}(out={new_shape[0]}, kernel=1, "
                                   f"stride={sh}, bias=False)", shape, new_shape,
                                   ["1x1 projection so the shortcut matches the body's shape"],
                                   _field(calls, f"{name}.shortcut"), sp, f"1*1*{shape[0]}*{new_shape[0]} = {sp}",
                                   depth + 1))
                params += sp
                parts.append(str(sp))
            head["params"] = params
            head["params_formula"] = (" + ".join(parts) + f" = {params}") if parts else "0"
            head["formulas"] = [f"y = body(x) + shortcut(x): {_fmt_shape(shape)} -> {_fmt_shape(new_shape)}"
                                + ("" if needs_proj else " (identity shortcut)"),
                                "receptive field along the main path (the body); the shortcut adds no larger one"]
            after = _field(calls, f"{name}.post")   # the block's output: the larger of body and shortcut
            if state.get("text") and state["field"] is not None and field_in is not None:
                after = state["field"].merge(field_in)
            head["receptive_field"] = after.value("rf") if after is not None else None
            head["stride"] = after.value("jump") if after is not None else None
            if after is None and state["up"] is not None:
                head["formulas"][1] = _rf_unknown(state["up"])
            rf = after
        else:  # activations, dropout
            formulas = ["shape unchanged"] + ([_rf_unknown(state["up"])] if unknown else [])
            out.append(_record(spec.name, t, desc, shape, new_shape, formulas, rf, depth=depth))
        fields[spec.name] = rf
        state["field"] = rf
        shape = new_shape
    return shape


def explain_layer_list(layers, input_shape, num_classes: int = 10, source: str = "layer list",
                       signal: bool = False) -> dict[str, Any]:
    """The arithmetic of a declarative layer list (raw YAML-like list or parsed LayerSpecs).

    Shapes and parameters follow the list; receptive fields come from walking the torch network
    it builds (:func:`cnnkit.summary.walk_model`), as ``cnnkit summary`` does. A sequence input
    (V, L) of token ids, or with ``signal`` a series (C, L), has its fields worked out here instead.
    """
    from cnnkit.models.spec import build_torch
    from cnnkit.summary import walk_model

    specs = layers if layers and isinstance(layers[0], LayerSpec) else parse_layers(list(layers))
    shape = tuple(int(v) for v in input_shape)
    text = len(shape) == 2
    if text:   # token ids (V, L): the fields along the sequence are worked out in _walk_specs, no torch walk
        infer_shapes(specs, shape, num_classes, signal=signal)   # the text input's rules (an embedding first)
        calls: dict[str, Any] = {}
    else:
        net = build_torch(specs, shape, num_classes)
        calls = {c.name: c for c in walk_model(net, shape).calls if c.first_call}
    records: list[dict[str, Any]] = []
    state: dict[str, Any] = {"up": None, "field": ReceptiveField(), "text": text}
    _walk_specs(specs, shape, calls, num_classes, 0, records, state=state)
    top = [r for r in records if r["depth"] == 0]
    for r in top:   # the list's arithmetic against the shapes the torch network really gives
        call = calls.get(r["name"])
        if call is not None and list(call.output_shape) != r["output_shape"]:
            r["note"] = (f"observed output {_fmt_shape(call.output_shape)} differs from the formula's "
                         f"{_fmt_shape(r['output_shape'])}")
    total = sum(r["params"] for r in top)
    parts = [str(r["params"]) for r in top if r["params"]]
    notes = []
    if signal:
        notes.append("signal: the input is a series of L time steps with C values each (shape [C, L]); receptive "
                     "field and stride count time steps, along the main path (a parallel block: its largest branch)")
    elif text:
        notes.append("text: the input is V token ids of a sequence of L (shape [V, L]: vocabulary size, length); "
                     "receptive field and stride count tokens, along the main path (a parallel block: its largest "
                     "branch)")
    if state["up"] is not None:
        notes.append(f"receptive field and stride: '-' from the up-sampling {state['up']} on (and where its branch "
                     f"is joined): the cumulative stride becomes a fraction, which the integer arithmetic does not "
                     f"follow (as in cnnkit summary)")
    return {"source": source, "kind": "layer list", "input_shape": list(shape), "num_classes": num_classes,
            "layers": records, "total_params": total,
            "total_params_formula": (" + ".join(parts) + f" = {_thousands(total)}") if parts else "0",
            "notes": notes}


# --------------------------------------------------------------------------- torch models (hooks)

def _torch_kinds():
    from torch import nn

    from cnnkit.nn.layers import GlobalAvgPool, GlobalMaxPool, L2Pool2d

    return nn, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.Linear,
                L2Pool2d, GlobalAvgPool, GlobalMaxPool)


def _conv_pads(m, in_hw, k, s, d) -> tuple[tuple[int, int, int, int], bool]:
    """(top, bottom, left, right) padding of a torch conv, and whether it is a 'same' rule."""
    if getattr(m, "same", False):  # cnnkit.nn.layers.Conv2d: TF 'same', also for stride > 1
        (t, b), (l, r) = same_padding(in_hw[0], k[0], s[0], d[0]), same_padding(in_hw[1], k[1], s[1], d[1])
        return (t, b, l, r), True
    p = m.padding
    if isinstance(p, str):
        if p == "valid":
            return (0, 0, 0, 0), False
        # torch 'same' (stride 1 only): the TF rule at stride 1, extra pixel after
        (t, b), (l, r) = same_padding(in_hw[0], k[0], 1, d[0]), same_padding(in_hw[1], k[1], 1, d[1])
        return (t, b, l, r), True
    ph, pw = pair(p)
    return (ph, ph, pw, pw), False


def explain_torch_model(model, input_shape, source: str = "model") -> dict[str, Any]:
    """Walk the conv/pool/linear modules of a torch model with forward hooks, in execution order."""
    from cnnkit.summary import walk_model

    nn, kinds = _torch_kinds()
    from cnnkit.nn.layers import GlobalAvgPool, GlobalMaxPool, L2Pool2d

    try:
        walk = walk_model(model, tuple(input_shape))
    except RuntimeError as e:
        raise UserError(f"the model does not run on input {_fmt_shape(input_shape)}: {str(e).splitlines()[0]}; "
                        f"try another --input C,H,W") from None

    records = []
    for call in walk.calls:
        m, qname, first_call = call.module, call.name, call.first_call
        in_shape, out_shape = tuple(call.input_shape), tuple(call.output_shape)
        if not isinstance(m, kinds):
            continue
        params, pf, note = 0, None, None
        if isinstance(m, nn.Linear):
            n_in, n_out = m.in_features, m.out_features
            has_b = m.bias is not None
            params = (n_in + (1 if has_b else 0)) * n_out if first_call else 0
            pf = (f"({n_in} + 1)*{n_out} = {params}" if has_b else f"{n_in}*{n_out} = {params}") if first_call \
                else "0 (shared module, counted once)"
            records.append(_record(qname, "linear", f"Linear({n_in}, {n_out})", in_shape, out_shape,
                                   [f"out = {n_out}"] + _dense_field_text(call), call.field, params, pf))
            continue
        if len(in_shape) != 3:
            continue
        in_hw = in_shape[1:]
        formulas: list[str]
        if isinstance(m, nn.Conv2d):
            k, s, d = pair(m.kernel_size), pair(m.stride), pair(m.dilation)
            pads, same = _conv_pads(m, in_hw, k, s, d)
            (oh, ow), formulas = _both_axes(in_hw, k, s, pads, d, same=same)
            cout, cin_g, kh, kw = m.weight.shape
            has_b = m.bias is not None
            if first_call:
                params = (kh * kw * cin_g + (1 if has_b else 0)) * cout
                g = m.groups
                cin_txt = str(cin_g) if g == 1 else f"({cin_g * g}/{g})"
                pf = (f"({kh}*{kw}*{cin_txt} + 1)*{cout} = {params}" if has_b
                      else f"{kh}*{kw}*{cin_txt}*{cout} = {params}")
            else:
                pf = "0 (shared module, counted once)"
            kind = "conv"
            desc = (f"Conv2d({m.in_channels}, {m.out_channels}, kernel={_fmt_shape(k)}, stride={_fmt_shape(s)}, "
                    f"padding={'same' if same else _fmt_shape(pads[::2])}" + (f", groups={m.groups}" if m.groups > 1 else "")
                    + (", bias=False" if not has_b else "") + ")")
        elif isinstance(m, (nn.MaxPool2d, nn.AvgPool2d, L2Pool2d)):
            k = pair(m.kernel_size)
            s = pair(m.stride if m.stride is not None else m.kernel_size)
            d = pair(getattr(m, "dilation", 1))
            ph, pw = pair(m.padding)
            pads = (ph, ph, pw, pw)
            ceil_mode = bool(getattr(m, "ceil_mode", False))
            (oh, ow), formulas = _both_axes(in_hw, k, s, pads, d, ceil_mode=ceil_mode)
            kind = {nn.MaxPool2d: "maxpool", nn.AvgPool2d: "avgpool"}.get(type(m), "l2pool")
            desc = (f"{type(m).__name__}(kernel={_fmt_shape(k)}, stride={_fmt_shape(s)}, padding={ph}"
                    + (", ceil_mode=True" if ceil_mode else "") + ")")
        elif isinstance(m, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, GlobalAvgPool, GlobalMaxPool)):
            o = tuple(out_shape[-2:]) if len(out_shape) == 3 else (1, 1)
            (kh, sh), (kw, sw) = adaptive_pool_window(in_hw[0], o[0]), adaptive_pool_window(in_hw[1], o[1])
            k, s = (kh, kw), (sh, sw)
            d, oh, ow = (1, 1), o[0], o[1]
            exact = all(in_hw[a] % o[a] == 0 for a in range(2))
            formulas = [f"adaptive: out = {_fmt_shape(o)} (fixed); window = in/out = "
                        f"{in_hw[0]}/{o[0]} = {k[0]}" + ("" if k[0] == k[1] else f", {in_hw[1]}/{o[1]} = {k[1]}")
                        + ("" if exact else " (rounded up; windows overlap, rf approximate)")]
            kind = "globalpool" if o == (1, 1) else "adaptivepool"
            desc = f"{type(m).__name__}({_fmt_shape(o)})"
        else:  # pragma: no cover - kinds and branches agree
            continue
        if (oh, ow) != tuple(out_shape[-2:]) and len(out_shape) == 3:
            note = f"observed output {_fmt_shape(out_shape)} differs from the formula's {oh}x{ow}"
        if call.field_in is not None:
            formulas.append(_rf_step(call.field_in, k, s, d)[1])
        records.append(_record(qname, kind, desc, in_shape, out_shape, formulas, call.field, params, pf,
                               layer_stride=s[0] if s[0] == s[1] else list(s), note=note))
    total = sum(p.numel() for p in model.parameters())
    listed = sum(r["params"] for r in records)
    parts = [str(r["params"]) for r in records if r["params"]]
    if walk.rf_method == "graph":
        notes = ["receptive field along the main path: each conv/pool continues from the largest receptive field "
                 "among its inputs in the traced graph (torch.fx); skip connections and parallel branches are not "
                 "added up (a sum or concat has its largest branch's field)"]
    else:
        notes = ["receptive field along the main path: each conv/pool continues from the largest receptive field "
                 "seen so far on a feature map of its input's shape (or spatial size); skip connections and "
                 "parallel branches are not added up (a sum or concat has its largest branch's field)"]
    if total != listed:
        notes.append(f"the model has {_thousands(total)} parameters: {_thousands(listed)} in the conv and linear "
                     f"layers listed, {_thousands(total - listed)} in other layers (batch norm, ...)")
    formula = " + ".join(parts) if len(parts) <= 12 else f"sum of the {len(parts)} layers"
    return {"source": source, "kind": "torch modules (forward hooks)", "input_shape": list(input_shape),
            "num_classes": None, "layers": records, "total_params": total, "listed_params": listed,
            "total_params_formula": f"{formula} = {_thousands(listed)}" + (
                f" (+ {_thousands(total - listed)} in other layers = {_thousands(total)})" if total != listed else ""),
            "notes": notes}


# --------------------------------------------------------------------------- entry point

def _data_shape(cfg) -> tuple[tuple[int, int, int] | None, int | None]:
    known = KNOWN_DATA.get(cfg.data.name)
    if known is None:
        return None, None
    (c, h, w), classes = known
    if cfg.data.image_size:
        h = w = cfg.data.image_size
    if cfg.data.classes:
        classes = len(cfg.data.classes)
    return (c, h, w), classes


def _layer_list_of(name: str, options: dict[str, Any]):
    fn = _layer_list_models()[name]
    allowed = [p for p in inspect.signature(fn).parameters]
    bad = [k for k in options if k not in allowed]
    if bad:
        raise UserError(f"model {name!r} has no option {bad[0]!r}; allowed options: {', '.join(allowed)}")
    return fn(**options), f"{fn.__module__}.{fn.__name__}({', '.join(f'{k}={v!r}' for k, v in options.items())})"


def explain_shapes(target: str, input_shape: tuple[int, int, int] | None = None, num_classes: int | None = None,
                   overrides: list[str] | None = None, signal: bool = False) -> dict[str, Any]:
    """Shapes of a registered model name or a YAML config (its ``model.layers`` or ``model.name``).

    ``signal``: a two-number input (C, L) is a real-valued series, not token ids (a config's layer list)."""
    from cnnkit.config import is_config_path, load_config
    from cnnkit.models.registry import MODELS, default_input, list_models

    if is_config_path(target):
        cfg = load_config(target, overrides or [])
        data_shape, data_classes = _data_shape(cfg)
        shape = input_shape or (tuple(cfg.model.input) if cfg.model.input else None) or data_shape
        if shape is None:
            raise UserError(f"cannot tell the input shape of {target!r}: set model.input [C, H, W] (for text, "
                            f"[V, L]) in the config or pass --input C,H,W (or V,L) (data.name {cfg.data.name!r} "
                            f"has no known shape)")
        classes = num_classes or cfg.model.num_classes or data_classes or 10
        if cfg.model.layers is not None:
            res = explain_layer_list(cfg.model.layers, shape, classes, source=f"{target} (model.layers)",
                                     signal=signal)
        elif cfg.model.name in _layer_list_models():
            layers, how = _layer_list_of(cfg.model.name, dict(cfg.model.options))
            res = explain_layer_list(layers, shape, classes, source=f"{target} (model.name {cfg.model.name}: {how})")
        else:
            res = _zoo(cfg.model.name, shape, classes, dict(cfg.model.options), f"{target} (model.name {cfg.model.name})")
        return res
    if overrides:
        raise UserError(f"overrides {overrides!r} only apply to a config file; {target!r} is a model name")
    list_models()  # imports every family, registering its models
    if target not in MODELS:
        MODELS.entry(target)  # raises the registry's UserError listing the known models
    shape = input_shape or default_input(target)
    classes = num_classes or 10
    if target in _layer_list_models():
        layers, how = _layer_list_of(target, {})
        return explain_layer_list(layers, shape, classes, source=f"{target} ({how})")
    return _zoo(target, shape, classes, {}, target)


def _zoo(name: str, shape, classes: int, options: dict[str, Any], source: str) -> dict[str, Any]:
    from cnnkit.models.registry import get_model

    c, h = shape[0], shape[1]   # (C, H, W), or (V, L) for text: input_size is then the length
    model = get_model(name, num_classes=classes, in_chans=c, input_size=h, **options)
    res = explain_torch_model(model, shape, source=source)
    res["num_classes"] = classes
    return res


# --------------------------------------------------------------------------- rendering

def render_text(res: dict[str, Any]) -> str:
    lines = [f"shapes of {res['source']} on input {_fmt_shape(res['input_shape'])}"
             + (f", {res['num_classes']} classes" if res.get("num_classes") else ""),
             f"  {SIZE_RULE};  {RF_RULE};  {JUMP_RULE}   (input: rf 1, jump 1)"]
    for n in res["notes"]:
        lines.append(f"  note: {n}")
    lines.append("")
    for r in res["layers"]:
        ind = "  " * r["depth"]
        lines.append(f"{ind}{r['name']}: {r['description']}  {_fmt_shape(r['input_shape'])} -> "
                     f"{_fmt_shape(r['output_shape'])}")
        for f in r["formulas"]:
            lines.append(f"{ind}  {f}")
        if r["type"] not in ("conv", "maxpool", "avgpool", "l2pool", "globalpool", "adaptivepool",
                             "globalavgpool", "globalmaxpool", "conv_transpose", "upsample", "concat", "embedding",
                             "conv1d", "maxpool1d", "avgpool1d", "globalmaxpool1d", "globalavgpool1d", "parallel",
                             "lstm", "gru") \
                and r["receptive_field"] is not None \
                and r["type"] != "residual":
            lines.append(f"{ind}  rf {r['receptive_field']}, jump {r['stride']} (unchanged)")
        if r["type"] in ("residual", "parallel") and r["receptive_field"] is not None:
            lines.append(f"{ind}  rf {r['receptive_field']}, jump {r['stride']} after the block")
        if r["params_formula"]:
            lines.append(f"{ind}  params = {r['params_formula']}")
        if r.get("note"):
            lines.append(f"{ind}  note: {r['note']}")
    lines.append("")
    lines.append(f"total params = {res['total_params_formula']}")
    return "\n".join(lines)


def to_json(res: dict[str, Any]) -> dict[str, Any]:
    return {k: res[k] for k in ("source", "kind", "input_shape", "num_classes", "layers", "total_params",
                                "total_params_formula", "notes") if k in res}


__all__ = ["KNOWN_DATA", "SIZE_RULE", "RF_RULE", "JUMP_RULE", "TRANSPOSED_RULE", "parse_input_shape", "size_formula",
           "transposed_size_formula",
           "explain_layer_list", "explain_torch_model", "explain_shapes", "render_text", "to_json"]
