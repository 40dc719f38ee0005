"""Declarative networks: a list of layers, as in the course's "Création d'une architecture CNN".

A layer is a bare name (``relu``), a one-key mapping with a shorthand value
(``maxpool: 2``, ``dense: 120``) or with its arguments
(``conv: {out: 6, kernel: 5, padding: valid}``). :func:`parse_layers` checks
names and arguments and :func:`infer_shapes` walks the shapes, failing on the
first layer that does not fit (naming its index and the shapes). No torch here:
:func:`cnnkit.models.spec.build_torch` turns a parsed list into a torch network and
:class:`cnnkit.reference.network.ReferenceNet` into a NumPy one.

Example::

    >>> specs = parse_layers([{"conv": {"out": 6, "kernel": 5}}, "relu", {"maxpool": 2}, "flatten", {"dense": 10}])
    >>> [s.name for s in specs]
    ['conv1', 'relu1', 'maxpool1', 'flatten1', 'dense1']
    >>> infer_shapes(specs, (1, 28, 28))
    [(6, 24, 24), (6, 24, 24), (6, 12, 12), (864,), (10,)]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cnnkit.errors import SpecError, did_you_mean
from cnnkit.geometry import conv_output_size, pair, resolve_padding

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
        if not isinstance(a["groups"], int) or isinstance(a["groups"], bool) or a["groups"] < 1:
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
    if kind == "maxout" and not (isinstance(a["pieces"], int) and not isinstance(a["pieces"], bool)
                                 and a["pieces"] >= 2):
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
    """Padding (top, bottom, left, right) and output size of a conv or pooling layer on ``shape``.

    The output size is the formula's value, below 1 when the window does not fit.
    """
    _, h, w = shape
    kernel, stride = spec.args["kernel"], spec.args["stride"]
    dilation = spec.args.get("dilation", (1, 1))
    (pt, pb), (pl, pr) = resolve_padding(spec.args["padding"], (h, w), kernel, stride, dilation)
    out = (conv_output_size(h, kernel[0], stride[0], pt, pb, dilation[0], check=False),
           conv_output_size(w, kernel[1], stride[1], pl, pr, dilation[1], check=False))
    return {"pad": (pt, pb, pl, pr), "out": out}


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
        residual_shortcut(spec, shape, body_out)
        return body_out
    return shape  # elementwise layers: activations, dropout, batchnorm


def residual_shortcut(spec: LayerSpec, shape: Shape, body_out: Shape) -> int | None:
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
    if conv_output_size(shape[1], 1, s) != body_out[1] or conv_output_size(shape[2], 1, s) != body_out[2]:
        raise SpecError(f"{where}: no strided 1x1 shortcut maps {_fmt(shape)} to the body's {_fmt(body_out)}")
    return s


def infer_shapes(specs: list[LayerSpec], input_shape: Shape, num_classes: int | None = None) -> list[Shape]:
    """The output shape after each layer, failing on the first that does not fit."""
    shapes, shape = [], tuple(input_shape)
    for spec in specs:
        shape = layer_output_shape(spec, shape, num_classes)
        shapes.append(shape)
    return shapes


__all__ = ["ACTIVATIONS", "ALIASES", "LAYER_ARGS", "POOLS", "SHORTHAND", "LayerSpec", "Shape", "conv_geometry",
           "infer_shapes", "layer_output_shape", "parse_layers", "residual_shortcut"]
