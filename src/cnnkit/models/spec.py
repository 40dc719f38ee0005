"""Declarative networks: a list of layers, as in the course's "Création d'une architecture CNN".

A layer is a bare name (``relu``), a one-key mapping with a shorthand value
(``maxpool: 2``, ``dense: 120``) or with its arguments
(``conv: {out: 6, kernel: 5, padding: valid}``). :func:`parse_layers` checks
names and arguments, :func:`infer_shapes` walks the shapes and fails on the
first layer that does not fit (naming its index and the shapes), and
:func:`build_torch` turns the list into a :class:`DeclarativeNet`.

The same parsed list builds the NumPy reference network (``cnnkit.reference``).

Example::

    specs = parse_layers(["flatten", {"dense": 10}])
    net = build_torch(specs, (1, 28, 28), num_classes=10)
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from cnnkit.errors import SpecError, did_you_mean
from cnnkit.nn.layers import (Conv2d, GlobalAvgPool, GlobalMaxPool, L2Pool2d, Maxout, Residual,
                              conv_out_size, pair, same_padding)

Shape = tuple[int, ...]  # (C, H, W) for feature maps, (N,) for vectors

_REQUIRED = object()

# Arguments of each layer type, with defaults; the first-named shorthand key takes a bare value.
LAYER_ARGS: dict[str, dict[str, Any]] = {
    "conv": {"out": _REQUIRED, "kernel": 3, "stride": 1, "padding": "valid", "dilation": 1, "groups": 1, "bias": True},
    "dense": {"out": _REQUIRED, "bias": True},
    "flatten": {},
    "maxpool": {"kernel": 2, "stride": None, "padding": 0},
    "avgpool": {"kernel": 2, "stride": None, "padding": 0},
    "l2pool": {"kernel": 2, "stride": None, "padding": 0},
    "globalavgpool": {},
    "globalmaxpool": {},
    "dropout": {"p": 0.5},
    "batchnorm": {"momentum": 0.1, "eps": 1e-5, "affine": True},
    "sigmoid": {},
    "tanh": {},
    "relu": {},
    "leaky_relu": {"slope": 0.1},
    "elu": {"alpha": 1.0},
    "maxout": {"pieces": 2},
    "residual": {"layers": _REQUIRED, "shortcut": "auto", "activation": None},
}
SHORTHAND = {"conv": "out", "dense": "out", "maxpool": "kernel", "avgpool": "kernel", "l2pool": "kernel",
             "dropout": "p", "leaky_relu": "slope", "elu": "alpha", "maxout": "pieces", "residual": "layers"}
ALIASES = {"conv2d": "conv", "linear": "dense", "fc": "dense", "max_pool": "maxpool", "avg_pool": "avgpool",
           "l2_pool": "l2pool", "global_avg_pool": "globalavgpool", "global_max_pool": "globalmaxpool",
           "gap": "globalavgpool", "bn": "batchnorm", "batch_norm": "batchnorm", "leakyrelu": "leaky_relu"}
ACTIVATIONS = ("sigmoid", "tanh", "relu", "leaky_relu", "elu", "maxout")
POOLS = ("maxpool", "avgpool", "l2pool")


@dataclass(frozen=True)
class LayerSpec:
    """One parsed layer: its canonical ``type``, complete ``args`` and unique ``name``."""

    type: str
    args: dict[str, Any]
    name: str
    index: str  # "3" or "5.2" inside a residual block, for error messages
    children: tuple["LayerSpec", ...] = field(default=())


# --------------------------------------------------------------------------- parsing

def parse_layers(raw: list[Any], *, _prefix: str = "", _counts: dict[str, int] | None = None) -> list[LayerSpec]:
    """Check each layer's name and arguments and fill in defaults."""
    if not isinstance(raw, list) or not raw:
        raise SpecError(f"model.layers must be a non-empty list of layers, got {raw!r}")
    counts = _counts if _counts is not None else {}
    out = []
    for i, item in enumerate(raw):
        index = f"{_prefix}{i}"
        out.append(_parse_one(item, index, counts))
    return out


def _parse_one(item: Any, index: str, counts: dict[str, int]) -> LayerSpec:
    if isinstance(item, str):
        kind, value = item, None
    elif isinstance(item, dict) and len(item) == 1:
        kind, value = next(iter(item.items()))
    else:
        raise SpecError(f"layer {index}: {item!r} is not a layer; write a name (relu) or a one-key mapping "
                        f"(conv: {{out: 6, kernel: 5}})")
    kind = ALIASES.get(str(kind), str(kind))
    if kind not in LAYER_ARGS:
        raise SpecError(f"layer {index}: unknown layer type {kind!r}{did_you_mean(kind, LAYER_ARGS)}; "
                        f"allowed: {', '.join(LAYER_ARGS)}")
    defaults = LAYER_ARGS[kind]
    if value is None:
        given: dict[str, Any] = {}
    elif isinstance(value, dict):
        given = dict(value)
    elif kind in SHORTHAND:
        given = {SHORTHAND[kind]: value}
    else:
        raise SpecError(f"layer {index} ({kind}): takes no value, got {value!r}")
    unknown = [k for k in given if k not in defaults]
    if unknown:
        raise SpecError(f"layer {index} ({kind}): unknown argument {unknown[0]!r}"
                        f"{did_you_mean(unknown[0], defaults)}; allowed: {', '.join(defaults) or 'none'}")
    args = {k: given.get(k, v) for k, v in defaults.items()}
    missing = [k for k, v in args.items() if v is _REQUIRED]
    if missing:
        raise SpecError(f"layer {index} ({kind}): missing argument {missing[0]!r}")
    args = _check_args(kind, args, index)
    counts[kind] = counts.get(kind, 0) + 1
    name = f"{kind}{counts[kind]}"
    children: tuple[LayerSpec, ...] = ()
    if kind == "residual":
        children = tuple(parse_layers(args["layers"], _prefix=f"{index}.", _counts=counts))
    return LayerSpec(kind, args, name, index, children)


def _positive_pair(kind: str, index: str, key: str, v: Any, allow_zero: bool = False) -> tuple[int, int]:
    try:
        p = pair(v)
    except (TypeError, ValueError):
        raise SpecError(f"layer {index} ({kind}): {key} must be an int or a pair of ints, got {v!r}") from None
    if isinstance(v, bool) or min(p) < (0 if allow_zero else 1):
        lo = "non-negative" if allow_zero else "positive"
        raise SpecError(f"layer {index} ({kind}): {key} must be {lo}, got {v!r}")
    return p


def _check_args(kind: str, args: dict[str, Any], index: str) -> dict[str, Any]:
    a = dict(args)
    if kind in ("conv", "dense"):
        if not isinstance(a["out"], int) or isinstance(a["out"], bool) or a["out"] < 1:
            if not (kind == "dense" and a["out"] == "num_classes"):
                raise SpecError(f"layer {index} ({kind}): out must be a positive int, got {a['out']!r}")
    if kind == "conv":
        a["kernel"] = _positive_pair(kind, index, "kernel", a["kernel"])
        a["stride"] = _positive_pair(kind, index, "stride", a["stride"])
        a["dilation"] = _positive_pair(kind, index, "dilation", a["dilation"])
        if not isinstance(a["groups"], int) or a["groups"] < 1:
            raise SpecError(f"layer {index} (conv): groups must be a positive int, got {a['groups']!r}")
        if isinstance(a["padding"], str):
            if a["padding"] not in ("valid", "same"):
                raise SpecError(f"layer {index} (conv): padding {a['padding']!r}{did_you_mean(a['padding'], ['valid', 'same'])}"
                                f" is not allowed; use 'valid', 'same', an int or a pair of ints")
        else:
            a["padding"] = _positive_pair(kind, index, "padding", a["padding"], allow_zero=True)
    if kind in POOLS:
        a["kernel"] = _positive_pair(kind, index, "kernel", a["kernel"])
        a["stride"] = a["kernel"] if a["stride"] is None else _positive_pair(kind, index, "stride", a["stride"])
        a["padding"] = _positive_pair(kind, index, "padding", a["padding"], allow_zero=True)
        if a["padding"][0] * 2 > a["kernel"][0] or a["padding"][1] * 2 > a["kernel"][1]:
            raise SpecError(f"layer {index} ({kind}): padding {a['padding']} must be at most half the kernel {a['kernel']}")
    if kind == "dropout" and not (isinstance(a["p"], (int, float)) and 0 <= a["p"] < 1):
        raise SpecError(f"layer {index} (dropout): p must be in [0, 1), got {a['p']!r}")
    if kind == "leaky_relu" and not isinstance(a["slope"], (int, float)):
        raise SpecError(f"layer {index} (leaky_relu): slope must be a number, got {a['slope']!r}")
    if kind == "elu" and not (isinstance(a["alpha"], (int, float)) and a["alpha"] > 0):
        raise SpecError(f"layer {index} (elu): alpha must be a positive number, got {a['alpha']!r}")
    if kind == "maxout" and not (isinstance(a["pieces"], int) and a["pieces"] >= 2):
        raise SpecError(f"layer {index} (maxout): pieces must be an int >= 2, got {a['pieces']!r}")
    if kind == "residual":
        if a["shortcut"] not in ("auto", "identity", "conv"):
            raise SpecError(f"layer {index} (residual): shortcut {a['shortcut']!r} is not allowed; use auto, identity or conv")
        if a["activation"] not in (None, "relu", "none"):
            raise SpecError(f"layer {index} (residual): activation {a['activation']!r} is not allowed; use relu or none")
    return a


# --------------------------------------------------------------------------- shapes

def _fmt(shape: Shape) -> str:
    return "x".join(str(s) for s in shape)


def conv_geometry(spec: LayerSpec, shape: Shape) -> dict[str, Any]:
    """Padding (top, bottom, left, right) and output size of a conv or pooling layer on ``shape``."""
    _, h, w = shape
    (kh, kw), (sh, sw) = spec.args["kernel"], spec.args["stride"]
    dh, dw = spec.args.get("dilation", (1, 1))
    pad = spec.args["padding"]
    if pad == "same":
        (pt, pb), (pl, pr) = same_padding(h, kh, sh, dh), same_padding(w, kw, sw, dw)
    elif pad == "valid":
        pt = pb = pl = pr = 0
    else:
        pt = pb = pad[0]
        pl = pr = pad[1]
    return {"pad": (pt, pb, pl, pr), "out": (conv_out_size(h, kh, sh, pt, pb, dh), conv_out_size(w, kw, sw, pl, pr, dw))}


def layer_output_shape(spec: LayerSpec, shape: Shape, num_classes: int | None = None) -> Shape:
    """Output shape of one layer, or SpecError naming the layer and the shapes."""
    where = f"layer {spec.index} ({spec.type})"
    t, a = spec.type, spec.args
    spatial = len(shape) == 3
    if t in ("conv",) + POOLS + ("globalavgpool", "globalmaxpool") and not spatial:
        raise SpecError(f"{where}: needs a feature map [C, H, W] but gets a vector [{_fmt(shape)}]; "
                        f"move it before flatten")
    if t == "conv":
        c = shape[0]
        if c % a["groups"] or a["out"] % a["groups"]:
            raise SpecError(f"{where}: groups={a['groups']} must divide both the input channels ({c}) "
                            f"and out ({a['out']})")
        g = conv_geometry(spec, shape)
        if min(g["out"]) < 1:
            raise SpecError(f"{where}: kernel {a['kernel']} (dilation {a['dilation']}) does not fit the input "
                            f"{_fmt(shape)} with padding {a['padding']}; the output would be {g['out'][0]}x{g['out'][1]}")
        return (a["out"], *g["out"])
    if t in POOLS:
        g = conv_geometry(spec, shape)
        if min(g["out"]) < 1:
            raise SpecError(f"{where}: window {a['kernel']} does not fit the input {_fmt(shape)}")
        return (shape[0], *g["out"])
    if t in ("globalavgpool", "globalmaxpool"):
        return (shape[0],)
    if t == "flatten":
        n = 1
        for s in shape:
            n *= s
        return (n,)
    if t == "dense":
        if spatial:
            raise SpecError(f"{where}: needs a vector but gets a feature map {_fmt(shape)}; add 'flatten' "
                            f"(or a global pooling layer) before it")
        out = a["out"]
        if out == "num_classes":
            if num_classes is None:
                raise SpecError(f"{where}: out 'num_classes' needs the data's class count")
            out = num_classes
        return (out,)
    if t == "maxout":
        if shape[0] % a["pieces"]:
            raise SpecError(f"{where}: {shape[0]} {'channels' if spatial else 'features'} are not divisible "
                            f"by pieces={a['pieces']}")
        return (shape[0] // a["pieces"], *shape[1:])
    if t == "residual":
        inner = infer_shapes(list(spec.children), shape, num_classes)
        body_out = inner[-1] if inner else shape
        _residual_shortcut(spec, shape, body_out)
        return body_out
    return shape  # elementwise layers: activations, dropout, batchnorm


def _residual_shortcut(spec: LayerSpec, shape: Shape, body_out: Shape) -> int | None:
    """Stride of the 1x1 projection the shortcut needs, or None for identity."""
    where = f"layer {spec.index} (residual)"
    mode = spec.args["shortcut"]
    if body_out == shape and mode != "conv":
        return None
    if mode == "identity":
        raise SpecError(f"{where}: identity shortcut needs the body to keep the shape {_fmt(shape)}, "
                        f"but it gives {_fmt(body_out)}; use shortcut: auto")
    if len(shape) != 3 or len(body_out) != 3:
        raise SpecError(f"{where}: a projection shortcut needs feature maps, got {_fmt(shape)} -> {_fmt(body_out)}")
    s = max(1, -(-shape[1] // body_out[1]))
    if conv_out_size(shape[1], 1, s, 0, 0) != body_out[1] or conv_out_size(shape[2], 1, s, 0, 0) != body_out[2]:
        raise SpecError(f"{where}: no strided 1x1 shortcut maps {_fmt(shape)} to the body's {_fmt(body_out)}")
    return s


def infer_shapes(specs: list[LayerSpec], input_shape: Shape, num_classes: int | None = None) -> list[Shape]:
    """The output shape after each layer, failing on the first that does not fit."""
    shapes, shape = [], tuple(input_shape)
    for spec in specs:
        shape = layer_output_shape(spec, shape, num_classes)
        shapes.append(shape)
    return shapes


# --------------------------------------------------------------------------- torch

class DeclarativeNet(nn.Sequential):
    """A network built from a layer list; its last dense layer is the classifier head.

    Module names follow the layers: ``conv1, relu1, maxpool1, ..., dense3``.
    """

    def __init__(self, modules: "OrderedDict[str, nn.Module]", head_name: str | None) -> None:
        super().__init__(modules)
        self.head_name = head_name

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        mods = list(self._modules.values())
        for m in mods[:-1] if self.head_name else mods:
            x = m(x)
        return x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if pre_logits or not self.head_name:
            return x
        return self._modules[self.head_name](x)

    def get_classifier(self) -> nn.Module:
        return self._modules[self.head_name] if self.head_name else nn.Identity()

    def reset_classifier(self, num_classes: int) -> None:
        if not self.head_name:
            raise SpecError("this layer list does not end with a dense layer, so it has no classifier head to reset")
        old = self._modules[self.head_name]
        new = nn.Linear(old.in_features, num_classes, bias=old.bias is not None)
        self._modules[self.head_name] = new.to(old.weight.device, old.weight.dtype)


def _torch_layer(spec: LayerSpec, shape: Shape, out: Shape) -> nn.Module:
    t, a = spec.type, spec.args
    if t == "conv":
        return Conv2d(shape[0], a["out"], a["kernel"], a["stride"], a["padding"], a["dilation"], a["groups"], a["bias"])
    if t == "dense":
        return nn.Linear(shape[0], out[0], bias=a["bias"])
    if t == "flatten":
        return nn.Flatten()
    if t == "maxpool":
        return nn.MaxPool2d(a["kernel"], a["stride"], a["padding"])
    if t == "avgpool":
        return nn.AvgPool2d(a["kernel"], a["stride"], a["padding"])
    if t == "l2pool":
        return L2Pool2d(a["kernel"], a["stride"], a["padding"])
    if t == "globalavgpool":
        return GlobalAvgPool()
    if t == "globalmaxpool":
        return GlobalMaxPool()
    if t == "dropout":
        return nn.Dropout(a["p"])
    if t == "batchnorm":
        bn = nn.BatchNorm2d if len(shape) == 3 else nn.BatchNorm1d
        return bn(shape[0], eps=a["eps"], momentum=a["momentum"], affine=a["affine"])
    if t == "sigmoid":
        return nn.Sigmoid()
    if t == "tanh":
        return nn.Tanh()
    if t == "relu":
        return nn.ReLU()
    if t == "leaky_relu":
        return nn.LeakyReLU(a["slope"])
    if t == "elu":
        return nn.ELU(a["alpha"])
    if t == "maxout":
        return Maxout(a["pieces"])
    if t == "residual":
        body, s = _torch_sequence(list(spec.children), shape)
        stride = _residual_shortcut(spec, shape, out)
        shortcut = None if stride is None else nn.Conv2d(shape[0], out[0], 1, stride, bias=False)
        return Residual(nn.Sequential(body), shortcut, nn.ReLU() if a["activation"] == "relu" else None)
    raise AssertionError(t)


def _torch_sequence(specs: list[LayerSpec], shape: Shape, num_classes: int | None = None) -> tuple["OrderedDict[str, nn.Module]", Shape]:
    mods: OrderedDict[str, nn.Module] = OrderedDict()
    for spec in specs:
        out = layer_output_shape(spec, shape, num_classes)
        mods[spec.name] = _torch_layer(spec, shape, out)
        shape = out
    return mods, shape


def build_torch(specs: list[LayerSpec], input_shape: Shape, num_classes: int | None = None) -> DeclarativeNet:
    """Build the torch network of a parsed layer list (shapes are checked first)."""
    infer_shapes(specs, input_shape, num_classes)
    mods, _ = _torch_sequence(specs, tuple(input_shape), num_classes)
    head = specs[-1].name if specs[-1].type == "dense" else None
    return DeclarativeNet(mods, head)
