"""Declarative networks: a list of layers, as in the course's "Création d'une architecture CNN".

A layer is a bare name (``relu``), a one-key mapping with a shorthand value
(``maxpool: 2``, ``dense: 120``) or with its arguments
(``conv: {out: 6, kernel: 5, padding: valid}``). Any layer may be given a ``name``,
as a second key (``{conv: 64, name: enc1}``) or among its arguments; otherwise it is
named after its type and rank (``conv1``, ``relu2``). The name is the torch module's.
:func:`parse_layers` checks names and arguments and :func:`infer_shapes` walks the
shapes, failing on the first layer that does not fit (naming its index and the shapes).

Encoder-decoder networks (U-Net, Ronneberger et al., 2015) use ``conv_transpose``
(alias ``upconv``) or ``upsample`` to enlarge maps and ``concat: NAME`` to join the
current map with the output of the earlier layer NAME of the same list, along channels
(centre-cropping that output to the current size). A final ``conv`` with
``out: num_classes`` is a per-pixel classifier: the network then gives (N, K, H, W).

Text (Kim, 2014): the input shape is ``(V, L)``, a vocabulary of V tokens (the one-hot channels
of the sequence) and L tokens; the network takes token ids, a LongTensor (N, L) (0 = padding,
1 = unknown). The first layer must then be ``embedding: D`` (``{dim: D, padding_idx: 0, freeze:
false}``; nowhere else), which gives (D, L), channels first. Sequences (C, L) go through
``conv1d: {out, kernel: 3, stride: 1, padding: valid|same|int, dilation: 1, bias: true}``,
``maxpool1d`` / ``avgpool1d`` (``{kernel: 2, stride: kernel, padding: 0}``, shorthand kernel),
``globalmaxpool1d`` (max over time) / ``globalavgpool1d`` -> (C,); batchnorm, dropout, the
activations, flatten and residual work on them too. The 2-D layers refuse a sequence (and the 1-D
ones a feature map), naming the layer to use instead.

Time series (signals): an input shape (C, L) may also be C real values at each of L time steps;
:func:`infer_shapes` and the engines read it so with ``signal=True`` (without it, (V, L) is token
ids), and then no embedding comes first. ``conv1d`` takes ``causal: true`` (WaveNet, TCN): (kernel-1)*dilation zeros before
the sequence and none after, so output i reads inputs up to i*stride only, out = ceil(L / stride); it
takes no other padding. Recurrent layers ``lstm`` / ``gru`` (``{hidden: H, layers: 1, bidirectional:
false, return: sequence | last, dropout: 0}``, shorthand hidden) read a sequence (C, L) and give
(H*dirs, L) for ``return: sequence`` or (H*dirs,) for ``last`` (the last step; bidirectional: the
forward direction's last step and the backward direction's first, as torch's h_n); their dropout
acts between stacked layers (so it needs layers >= 2). A feature map or a vector is refused. An FCN::

    - conv1d: {out: 128, kernel: 8, padding: same}
    - batchnorm
    - relu
    - conv1d: {out: 256, kernel: 5, padding: same}
    - ...
    - globalavgpool1d
    - dense: num_classes

``parallel: [[branch 1 layers], [branch 2 layers], ...]`` (or ``{branches: [...]}``) feeds the same
input to every branch and joins their outputs along channels; they must agree on every other dim
(vectors (C,) give (sum C,)). Branch layers are named as residual bodies' are. Kim's CNN::

    - embedding: 128
    - parallel:
        - [{conv1d: {out: 100, kernel: 3}}, relu, globalmaxpool1d]
        - [{conv1d: {out: 100, kernel: 4}}, relu, globalmaxpool1d]
    - dropout: 0.5
    - dense: num_classes

Attention (:mod:`cnnkit.nn.attention`): ``se: {reduction: 16}`` (shorthand ``se: 16``; Hu et al., 2018),
``cbam: {reduction: 16, kernel: 7}`` (Woo et al., 2018), ``eca: {gamma: 2, b: 1, kernel: null}`` (Wang et al.,
2020; kernel null = the adaptive size from the channel count), ``nonlocal: {reduction: 2}`` (Wang et al., 2018,
embedded Gaussian) keep the shape; ``attention_pool`` gives (C, H, W) -> (C,), a softmax-weighted mean of the
positions. se and eca also gate a sequence (C, L); cbam, nonlocal and attention_pool need a feature map.
A reduction r gives a bottleneck of C // r channels (at least 1). An SE-ResNet block::

    - residual:
        layers: [{conv: {out: 64, padding: same, bias: false}}, batchnorm, relu,
                 {conv: {out: 64, padding: same, bias: false}}, batchnorm, {se: 16}]
        activation: relu

No torch here:
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

import math
import re
from dataclasses import dataclass, field
from typing import Any

from cnnkit.errors import SpecError, did_you_mean
from cnnkit.geometry import conv_output_size, pair, resolve_padding, same_padding

Shape = tuple[int, ...]  # (C, H, W) for feature maps, (C, L) for sequences ((V, L) token ids), (N,) for vectors

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
    # U-Net's decoder: stride defaults to 2 (kernel 2, stride 2 doubles H and W, as the paper's up-conv)
    "conv_transpose": {"out": _REQUIRED, "kernel": 2, "stride": 2, "padding": 0, "output_padding": 0,
                       "dilation": 1, "bias": True},
    "upsample": {"scale": None, "size": None, "mode": "nearest", "align_corners": False},  # scale 2 when neither
    "concat": {"from": _REQUIRED},
    # text: token ids -> (dim, L); sequences (C, L)
    "embedding": {"dim": _REQUIRED, "padding_idx": 0, "freeze": False},
    "conv1d": {"out": _REQUIRED, "kernel": 3, "stride": 1, "padding": "valid", "dilation": 1, "bias": True,
               "causal": False},
    "maxpool1d": {"kernel": 2, "stride": None, "padding": 0},
    "avgpool1d": {"kernel": 2, "stride": None, "padding": 0},
    "globalmaxpool1d": {},
    "globalavgpool1d": {},
    "parallel": {"branches": _REQUIRED},
    # recurrent layers on sequences (C, L) -> (H*dirs, L) or, with return: last, (H*dirs,)
    "lstm": {"hidden": _REQUIRED, "layers": 1, "bidirectional": False, "return": "sequence", "dropout": 0},
    "gru": {"hidden": _REQUIRED, "layers": 1, "bidirectional": False, "return": "sequence", "dropout": 0},
    # attention (cnnkit.nn.attention): the first four keep the shape; attention_pool: (C, H, W) -> (C,)
    "se": {"reduction": 16},
    "cbam": {"reduction": 16, "kernel": 7},
    "eca": {"gamma": 2, "b": 1, "kernel": None},
    "nonlocal": {"reduction": 2},
    "attention_pool": {},
}
SHORTHAND = {"conv": "out", "dense": "out", "maxpool": "kernel", "avgpool": "kernel", "l2pool": "kernel",
             "dropout": "p", "leaky_relu": "slope", "elu": "alpha", "maxout": "pieces", "residual": "layers",
             "conv_transpose": "out", "upsample": "scale", "concat": "from", "embedding": "dim", "conv1d": "out",
             "maxpool1d": "kernel", "avgpool1d": "kernel", "parallel": "branches", "lstm": "hidden",
             "gru": "hidden", "se": "reduction", "cbam": "reduction", "nonlocal": "reduction"}
ALIASES = {"conv2d": "conv", "linear": "dense", "fc": "dense", "max_pool": "maxpool", "avg_pool": "avgpool",
           "l2_pool": "l2pool", "global_avg_pool": "globalavgpool", "global_max_pool": "globalmaxpool",
           "gap": "globalavgpool", "bn": "batchnorm", "batch_norm": "batchnorm", "leakyrelu": "leaky_relu",
           "upconv": "conv_transpose", "conv_transpose2d": "conv_transpose", "upsampling": "upsample",
           "concatenate": "concat", "embed": "embedding", "max_pool1d": "maxpool1d", "avg_pool1d": "avgpool1d",
           "global_max_pool1d": "globalmaxpool1d", "global_avg_pool1d": "globalavgpool1d",
           "max_over_time": "globalmaxpool1d", "squeeze_excite": "se", "squeeze_excitation": "se",
           "non_local": "nonlocal", "attention_pooling": "attention_pool", "attnpool": "attention_pool"}
ACTIVATIONS = ("sigmoid", "tanh", "relu", "leaky_relu", "elu", "maxout")
POOLS = ("maxpool", "avgpool", "l2pool")
# attention blocks: se and eca gate channels (feature maps or sequences); the others need a feature map
CHANNEL_ATTENTION = ("se", "eca")
SPATIAL_ATTENTION = ("cbam", "nonlocal", "attention_pool")
ATTENTION = CHANNEL_ATTENTION + SPATIAL_ATTENTION
SPATIAL_ONLY = ("conv", "conv_transpose", "upsample", "concat") + POOLS + ("globalavgpool", "globalmaxpool") \
    + SPATIAL_ATTENTION
POOLS1D = ("maxpool1d", "avgpool1d")
SEQUENCE_ONLY = ("conv1d",) + POOLS1D + ("globalmaxpool1d", "globalavgpool1d")
RECURRENT = ("lstm", "gru")
RECURRENT_RETURNS = ("sequence", "last")
# the 1-D layer of each 2-D one (and back), for the error a layer on the wrong kind of input gives
AS_1D = {"conv": "conv1d", "maxpool": "maxpool1d", "avgpool": "avgpool1d", "globalmaxpool": "globalmaxpool1d",
         "globalavgpool": "globalavgpool1d"}
AS_2D = {v: k for k, v in AS_1D.items()}
UPSAMPLE_MODES = ("nearest", "bilinear")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class LayerSpec:
    """One parsed layer: its canonical ``type``, complete ``args`` and unique ``name``."""

    type: str
    args: dict[str, Any]
    name: str
    index: str  # "3", "5.2" inside a residual block, "1.0.2" in branch 0 of a parallel block, for error messages
    children: tuple["LayerSpec", ...] = field(default=())                 # a residual block's body
    branches: tuple[tuple["LayerSpec", ...], ...] = field(default=())     # a parallel block's branches

    def sublists(self) -> list[list["LayerSpec"]]:
        """The layer lists inside this layer: a residual body, or each branch of a parallel block."""
        if self.branches:
            return [list(b) for b in self.branches]
        return [list(self.children)] if self.children else []

    @property
    def where(self) -> str:
        """How error messages name the layer: ``layer 3 (conv)``, or ``layer 3 (conv 'enc1')``."""
        auto = re.fullmatch(re.escape(self.type) + r"\d+", self.name)
        return f"layer {self.index} ({self.type})" if auto else f"layer {self.index} ({self.type} {self.name!r})"


# --------------------------------------------------------------------------- parsing

def parse_layers(raw: list[Any], *, _prefix: str = "", _counts: dict[str, int] | None = None,
                 _names: dict[str, str] | None = None) -> list[LayerSpec]:
    """Check each layer's type, arguments and name, and fill in defaults."""
    if not isinstance(raw, list) or not raw:
        raise SpecError(f"model.layers must be a non-empty list of layers, got {raw!r}")
    top = _counts is None
    counts = _counts if _counts is not None else {}
    names = _names if _names is not None else {}   # every layer's name -> its index, residual bodies too
    out = []
    for i, item in enumerate(raw):
        index = f"{_prefix}{i}"
        out.append(_parse_one(item, index, counts, names))
    if top:
        _check_concat_sources(out, names)
        _check_embedding_first(out)
    return out


def _check_embedding_first(specs: list[LayerSpec], nested: bool = False) -> None:
    """An embedding turns the network's token ids into vectors: it is the first layer, and only there."""
    for i, spec in enumerate(specs):
        if spec.type == "embedding" and (nested or i > 0):
            where = "inside a residual or parallel block" if nested else f"at layer {spec.index}"
            raise SpecError(f"{spec.where}: embedding must be the first layer of the network (it turns the token "
                            f"ids into vectors), not {where}; move it to layer 0")
        for sub in spec.sublists():
            _check_embedding_first(sub, nested=True)


def _parse_one(item: Any, index: str, counts: dict[str, int], names: dict[str, str]) -> LayerSpec:
    given_name = None
    if isinstance(item, dict) and len(item) == 2 and "name" in item:   # {conv: 64, name: enc1}
        given_name = item["name"]
        item = {k: v for k, v in item.items() if k != "name"}
    if isinstance(item, str):
        kind, value = item, None
    elif isinstance(item, dict) and len(item) == 1:
        kind, value = next(iter(item.items()))
    else:
        raise SpecError(f"layer {index}: {item!r} is not a layer; write a name (relu) or a one-key mapping "
                        f"(conv: {{out: 6, kernel: 5}}), optionally with a name key (name: enc1)")
    kind = ALIASES.get(str(kind), str(kind))
    if kind not in LAYER_ARGS:
        raise SpecError(f"layer {index}: unknown layer type {kind!r}{did_you_mean(kind, LAYER_ARGS)}; "
                        f"allowed: {', '.join(LAYER_ARGS)}")
    defaults = LAYER_ARGS[kind]
    if value is None:
        given: dict[str, Any] = {}
    elif isinstance(value, dict):
        given = dict(value)
        if "name" in given:
            if given_name is not None:
                raise SpecError(f"layer {index} ({kind}): name given twice ({given_name!r} and {given['name']!r}); "
                                f"give it once")
            given_name = given.pop("name")
    elif kind in SHORTHAND:
        given = {SHORTHAND[kind]: value}
    else:
        raise SpecError(f"layer {index} ({kind}): takes no value, got {value!r}")
    unknown = [k for k in given if k not in defaults]
    if unknown:
        raise SpecError(f"layer {index} ({kind}): unknown argument {unknown[0]!r}"
                        f"{did_you_mean(unknown[0], defaults)}; allowed: {', '.join(list(defaults) + ['name'])}")
    args = {k: given.get(k, v) for k, v in defaults.items()}
    missing = [k for k, v in args.items() if v is _REQUIRED]
    if missing:
        raise SpecError(f"layer {index} ({kind}): missing argument {missing[0]!r}")
    args = _check_args(kind, args, index)
    counts[kind] = counts.get(kind, 0) + 1   # a named layer keeps its rank: naming one renames no other
    if given_name is None:
        name = f"{kind}{counts[kind]}"
    else:
        name = _check_name(given_name, index, kind, names)
    names[name] = index
    children: tuple[LayerSpec, ...] = ()
    branches: tuple[tuple[LayerSpec, ...], ...] = ()
    if kind == "residual":
        children = tuple(parse_layers(args["layers"], _prefix=f"{index}.", _counts=counts, _names=names))
    if kind == "parallel":
        branches = tuple(tuple(parse_layers(b, _prefix=f"{index}.{j}.", _counts=counts, _names=names))
                         for j, b in enumerate(args["branches"]))
    return LayerSpec(kind, args, name, index, children, branches)


def _check_name(name: Any, index: str, kind: str, names: dict[str, str]) -> str:
    """A layer's own name: an identifier, no layer type, not of the automatic form, not taken."""
    where = f"layer {index} ({kind})"
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise SpecError(f"{where}: name {name!r} is not allowed; use letters, digits and _ "
                        f"(not starting with a digit), e.g. enc1")
    if name in LAYER_ARGS or name in ALIASES:
        raise SpecError(f"{where}: name {name!r} is a layer type; pick another, e.g. {kind}_a or enc1")
    auto = next((t for t in LAYER_ARGS if re.fullmatch(re.escape(t) + r"\d+", name)), None)
    if auto is not None:
        raise SpecError(f"{where}: name {name!r} has the form of an automatic name (type + number, as "
                        f"{auto}1, {auto}2 ...); pick another, e.g. enc1 or up1")
    if name in names:
        raise SpecError(f"{where}: name {name!r} is already the name of layer {names[name]}; names must be unique")
    return name


def _check_concat_sources(specs: list[LayerSpec], names: dict[str, str]) -> None:
    """Each concat names an earlier layer of its own list (a residual body, a parallel branch: lists of their own)."""
    rank = {s.name: i for i, s in enumerate(specs)}
    for i, spec in enumerate(specs):
        if spec.type == "concat":
            src = spec.args["from"]
            if src in rank and rank[src] < i:
                pass
            elif src in rank:
                raise SpecError(f"{spec.where}: from {src!r} is layer {names[src]}, which comes after it; "
                                f"concat joins the output of an earlier layer")
            elif src in names:
                raise SpecError(f"{spec.where}: from {src!r} is layer {names[src]}, in another layer list; concat "
                                f"joins an earlier layer of its own list (a residual block's body, a parallel "
                                f"block's branch are lists of their own)")
            else:
                earlier = [s.name for s in specs[:i]]
                raise SpecError(f"{spec.where}: from {src!r} names no layer{did_you_mean(src, earlier)}; "
                                f"earlier layers of this list: {', '.join(earlier) or 'none'}")
        for sub in spec.sublists():
            _check_concat_sources(sub, names)


def _positive_pair(kind: str, index: str, key: str, v: Any, allow_zero: bool = False) -> tuple[int, int]:
    try:
        p = pair(v)
    except (TypeError, ValueError):
        raise SpecError(f"layer {index} ({kind}): {key} must be an int or a pair of ints, got {v!r}") from None
    if isinstance(v, bool) or min(p) < (0 if allow_zero else 1):
        lo = "non-negative" if allow_zero else "positive"
        raise SpecError(f"layer {index} ({kind}): {key} must be {lo}, got {v!r}")
    return p


def _int_arg(kind: str, index: str, key: str, v: Any, allow_zero: bool = False) -> int:
    lo = 0 if allow_zero else 1
    if not isinstance(v, int) or isinstance(v, bool) or v < lo:
        raise SpecError(f"layer {index} ({kind}): {key} must be a {'non-negative' if allow_zero else 'positive'} "
                        f"int, got {v!r}")
    return v


def _check_args(kind: str, args: dict[str, Any], index: str) -> dict[str, Any]:
    a = dict(args)
    if kind in ("conv", "conv_transpose", "dense", "conv1d"):
        if not isinstance(a["out"], int) or isinstance(a["out"], bool) or a["out"] < 1:
            if a["out"] != "num_classes":
                raise SpecError(f"layer {index} ({kind}): out must be a positive int or 'num_classes' (the data's "
                                f"class count), got {a['out']!r}")
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
    if kind == "conv_transpose":
        for key in ("kernel", "stride", "dilation"):
            a[key] = _positive_pair(kind, index, key, a[key])
        if a["padding"] == "valid":
            a["padding"] = (0, 0)
        elif isinstance(a["padding"], str):
            if a["padding"] != "same":
                raise SpecError(f"layer {index} (conv_transpose): padding {a['padding']!r}"
                                f"{did_you_mean(a['padding'], ['valid', 'same'])} is not allowed; use 'valid', "
                                f"'same' (out = in * stride), an int or a pair of ints")
        else:
            a["padding"] = _positive_pair(kind, index, "padding", a["padding"], allow_zero=True)
        a["output_padding"] = _positive_pair(kind, index, "output_padding", a["output_padding"], allow_zero=True)
        if a["padding"] == "same" and a["output_padding"] != (0, 0):
            raise SpecError(f"layer {index} (conv_transpose): padding 'same' sets output_padding itself; "
                            f"remove output_padding {a['output_padding']} or give padding as numbers")
        for ax in range(2):
            if a["output_padding"][ax] >= max(a["stride"][ax], a["dilation"][ax]):
                raise SpecError(f"layer {index} (conv_transpose): output_padding {a['output_padding']} must be "
                                f"smaller than the stride {a['stride']} or the dilation {a['dilation']}")
        conv_transpose_padding(a, index)   # 'same' must be reachable
    if kind == "upsample":
        if a["scale"] is not None and a["size"] is not None:
            raise SpecError(f"layer {index} (upsample): give scale or size, not both "
                            f"(got scale {a['scale']!r} and size {a['size']!r})")
        if a["size"] is not None:
            a["size"] = _positive_pair(kind, index, "size", a["size"])
        else:
            a["scale"] = _positive_pair(kind, index, "scale", 2 if a["scale"] is None else a["scale"])
        if a["mode"] not in UPSAMPLE_MODES:
            raise SpecError(f"layer {index} (upsample): mode {a['mode']!r}{did_you_mean(a['mode'], UPSAMPLE_MODES)}"
                            f" is not allowed; use {' or '.join(UPSAMPLE_MODES)}")
        if not isinstance(a["align_corners"], bool):
            raise SpecError(f"layer {index} (upsample): align_corners must be true or false, "
                            f"got {a['align_corners']!r}")
        if a["align_corners"] and a["mode"] != "bilinear":
            raise SpecError(f"layer {index} (upsample): align_corners applies to mode bilinear only, "
                            f"got mode {a['mode']!r}")
    if kind == "conv1d":
        for key in ("kernel", "stride", "dilation"):
            a[key] = _int_arg(kind, index, key, a[key])
        if a["padding"] == "causal":
            raise SpecError(f"layer {index} (conv1d): padding 'causal' is written causal: true (it pads "
                            f"(kernel-1)*dilation positions before the sequence); remove padding")
        if isinstance(a["padding"], str):
            if a["padding"] not in ("valid", "same"):
                raise SpecError(f"layer {index} (conv1d): padding {a['padding']!r}"
                                f"{did_you_mean(a['padding'], ['valid', 'same'])} is not allowed; use 'valid', "
                                f"'same' or an int")
        else:
            a["padding"] = _int_arg(kind, index, "padding", a["padding"], allow_zero=True)
        if not isinstance(a["causal"], bool):
            raise SpecError(f"layer {index} (conv1d): causal must be true or false, got {a['causal']!r}")
        if a["causal"] and a["padding"] not in ("valid", 0):
            raise SpecError(f"layer {index} (conv1d): causal: true pads by itself ((kernel-1)*dilation positions "
                            f"before the sequence, none after), so it cannot take padding {a['padding']!r}; "
                            f"remove padding")
        if a["causal"]:
            a["padding"] = "valid"
    if kind in RECURRENT:
        a["hidden"] = _int_arg(kind, index, "hidden", a["hidden"])
        a["layers"] = _int_arg(kind, index, "layers", a["layers"])
        if not isinstance(a["bidirectional"], bool):
            raise SpecError(f"layer {index} ({kind}): bidirectional must be true or false, "
                            f"got {a['bidirectional']!r}")
        if a["return"] not in RECURRENT_RETURNS:
            raise SpecError(f"layer {index} ({kind}): return {a['return']!r}"
                            f"{did_you_mean(str(a['return']), RECURRENT_RETURNS)} is not allowed; use 'sequence' "
                            f"(every time step: (hidden, L)) or 'last' (the last step: (hidden,))")
        p = a["dropout"]
        if isinstance(p, bool) or not (isinstance(p, (int, float)) and 0 <= p < 1):
            raise SpecError(f"layer {index} ({kind}): dropout must be in [0, 1), got {p!r}")
        if p and a["layers"] == 1:
            raise SpecError(f"layer {index} ({kind}): dropout {p} acts between stacked layers (torch's rule), so "
                            f"with layers: 1 it would do nothing; set layers >= 2, or put a dropout layer after it")
    if kind in POOLS1D:
        a["kernel"] = _int_arg(kind, index, "kernel", a["kernel"])
        a["stride"] = a["kernel"] if a["stride"] is None else _int_arg(kind, index, "stride", a["stride"])
        a["padding"] = _int_arg(kind, index, "padding", a["padding"], allow_zero=True)
        if a["padding"] * 2 > a["kernel"]:
            raise SpecError(f"layer {index} ({kind}): padding {a['padding']} must be at most half the kernel "
                            f"{a['kernel']}")
    if kind == "embedding":
        a["dim"] = _int_arg(kind, index, "dim", a["dim"])
        if a["padding_idx"] is not None:
            a["padding_idx"] = _int_arg(kind, index, "padding_idx", a["padding_idx"], allow_zero=True)
        if not isinstance(a["freeze"], bool):
            raise SpecError(f"layer {index} (embedding): freeze must be true or false, got {a['freeze']!r}")
    if kind == "parallel":
        b = a["branches"]
        if not isinstance(b, list) or not b:
            raise SpecError(f"layer {index} (parallel): give a non-empty list of branches, each a list of layers "
                            f"(parallel: [[conv1d: 100, relu], [conv1d: 50, relu]]), got {b!r}")
        for j, branch in enumerate(b):
            if not isinstance(branch, list) or not branch:
                raise SpecError(f"layer {index} (parallel): branch {j} must be a non-empty list of layers, got "
                                f"{branch!r}; write parallel: [[layers of branch 0], [layers of branch 1], ...]")
    if kind in ("se", "cbam", "nonlocal"):
        a["reduction"] = _int_arg(kind, index, "reduction", a["reduction"])
    if kind == "cbam":
        a["kernel"] = _int_arg(kind, index, "kernel", a["kernel"])
        if a["kernel"] % 2 == 0:
            raise SpecError(f"layer {index} (cbam): kernel must be odd (the spatial map keeps its size with "
                            f"padding kernel // 2), got {a['kernel']}; the paper uses 7")
    if kind == "eca":
        for key in ("gamma", "b"):
            v = a[key]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise SpecError(f"layer {index} (eca): {key} must be a number, got {v!r}")
        if a["gamma"] <= 0:
            raise SpecError(f"layer {index} (eca): gamma must be positive, got {a['gamma']!r}")
        if a["kernel"] is not None:
            a["kernel"] = _int_arg(kind, index, "kernel", a["kernel"])
            if a["kernel"] % 2 == 0:
                raise SpecError(f"layer {index} (eca): kernel must be odd (each channel's weight reads the same "
                                f"number of neighbours on both sides), got {a['kernel']}; or null for the "
                                f"adaptive size")
    if kind == "concat" and not (isinstance(a["from"], str) and a["from"]):
        raise SpecError(f"layer {index} (concat): from must be the name of an earlier layer, got {a['from']!r}")
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


def conv_transpose_padding(args: dict[str, Any], index: str = "?") -> tuple[tuple[int, int], tuple[int, int]]:
    """``(padding, output_padding)`` pairs of a conv_transpose, with ``padding: same`` resolved.

    Transposed convolution: out = (in - 1) * s - 2 p + d (k - 1) + output_padding + 1.
    'same' (out = in * s) takes p = ceil(t / 2) and output_padding = 2 p - t with t = d (k - 1) + 1 - s
    (t < 0: p = 0, output_padding = -t), as torch only pads symmetrically.
    """
    if args["padding"] != "same":
        return args["padding"], args["output_padding"]
    pads, extra = [], []
    for k, s, d in zip(args["kernel"], args["stride"], args["dilation"]):
        t = d * (k - 1) + 1 - s
        p = (t + 1) // 2 if t >= 0 else 0
        op = 2 * p - t
        if op >= max(s, d):
            raise SpecError(f"layer {index} (conv_transpose): padding 'same' with kernel {args['kernel']} and "
                            f"stride {args['stride']} needs an odd number of padded pixels, which torch cannot "
                            f"place; use an odd kernel with stride 1, or give padding as numbers")
        pads.append(p)
        extra.append(op)
    return (pads[0], pads[1]), (extra[0], extra[1])


def center_crop_offsets(big: tuple[int, int], small: tuple[int, int]) -> tuple[int, int]:
    """(top, left) of the centred ``small`` window in a ``big`` map (the odd pixel is cut on the bottom/right)."""
    return (big[0] - small[0]) // 2, (big[1] - small[1]) // 2


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


def conv1d_geometry(spec: LayerSpec, shape: Shape) -> dict[str, Any]:
    """Padding (before, after) and output length of a conv1d or 1-D pooling layer on a sequence (C, L).

    A causal conv1d pads (kernel-1)*dilation positions before the sequence and none after, so output i
    reads inputs up to i*stride only: out = floor((L - 1)/s) + 1 = ceil(L/s).
    The output length is the formula's value, below 1 when the window does not fit.
    """
    n = shape[1]
    a = spec.args
    k, s, d = a["kernel"], a["stride"], a.get("dilation", 1)
    if a.get("causal"):
        before, after = (k - 1) * d, 0
    elif a["padding"] == "same":
        before, after = same_padding(n, k, s, d)
    elif a["padding"] == "valid":
        before = after = 0
    else:
        before = after = a["padding"]
    return {"pad": (before, after), "out": conv_output_size(n, k, s, before, after, d, check=False)}


def out_channels(spec: LayerSpec, num_classes: int | None) -> int:
    """A conv, conv1d, conv_transpose or dense layer's ``out``, with ``num_classes`` resolved."""
    out = spec.args["out"]
    if out == "num_classes":
        if num_classes is None:
            raise SpecError(f"{spec.where}: out 'num_classes' needs the data's class count")
        return num_classes
    return out


def conv_transpose_output_size(in_hw: tuple[int, int], args: dict[str, Any]) -> tuple[int, int]:
    """out = (in - 1) * s - 2 p + d (k - 1) + output_padding + 1 on each axis (below 1 when it does not fit)."""
    (ph, pw), (oh, ow) = conv_transpose_padding(args)
    (kh, kw), (sh, sw), (dh, dw) = args["kernel"], args["stride"], args["dilation"]
    return ((in_hw[0] - 1) * sh - 2 * ph + dh * (kh - 1) + oh + 1,
            (in_hw[1] - 1) * sw - 2 * pw + dw * (kw - 1) + ow + 1)


def layer_output_shape(spec: LayerSpec, shape: Shape, num_classes: int | None = None,
                       named: dict[str, Shape] | None = None) -> Shape:
    """Output shape of one layer, or SpecError naming the layer and the shapes.

    ``named``: the output shapes of the earlier layers of the same list, by name (a concat needs them).
    """
    where = spec.where
    t, a = spec.type, spec.args
    spatial = len(shape) == 3
    sequence = len(shape) == 2
    if t in SPATIAL_ONLY and not spatial:
        if sequence:
            alt = AS_1D.get(t)
            if alt:
                hint = f"use {alt} on sequences"
            elif t in SPATIAL_ATTENTION:
                hint = "it has no 1-D form; se and eca (channel attention) work on sequences"
            else:
                hint = ("it has no 1-D form; use conv1d, maxpool1d, avgpool1d, globalmaxpool1d, globalavgpool1d or "
                        "parallel on sequences")
            raise SpecError(f"{where}: is a 2-D layer for feature maps [C, H, W], but gets a sequence [C, L] "
                            f"({_fmt(shape)}); {hint}")
        raise SpecError(f"{where}: needs a feature map [C, H, W] but gets a vector [{_fmt(shape)}]; "
                        f"move it before flatten")
    if t in RECURRENT:
        if not sequence:
            if spatial:
                raise SpecError(f"{where}: is a recurrent layer for sequences [C, L] (C features at each of L time "
                                f"steps), but gets a feature map [C, H, W] ({_fmt(shape)}); use conv on feature "
                                f"maps, or conv1d / {t} on sequences")
            raise SpecError(f"{where}: is a recurrent layer for sequences [C, L] but gets a vector [{_fmt(shape)}]; "
                            f"move it before flatten or the global pooling (to stack recurrent layers, give the "
                            f"one before it return: sequence)")
        dirs = 2 if a["bidirectional"] else 1
        return (a["hidden"] * dirs, shape[1]) if a["return"] == "sequence" else (a["hidden"] * dirs,)
    if t in SEQUENCE_ONLY and not sequence:
        if spatial:
            raise SpecError(f"{where}: is a 1-D layer for sequences [C, L], but gets a feature map [C, H, W] "
                            f"({_fmt(shape)}); use {AS_2D[t]} on feature maps")
        raise SpecError(f"{where}: needs a sequence [C, L] but gets a vector [{_fmt(shape)}]; move it before flatten")
    if t == "embedding":
        if not sequence:
            raise SpecError(f"{where}: takes token ids: its input must be [V, L] (vocabulary size, sequence "
                            f"length), got [{_fmt(shape)}]")
        if a["padding_idx"] is not None and a["padding_idx"] >= shape[0]:
            raise SpecError(f"{where}: padding_idx {a['padding_idx']} is not a token of the vocabulary of "
                            f"{shape[0]} (ids 0..{shape[0] - 1})")
        return (a["dim"], shape[1])
    if t == "conv1d":
        g = conv1d_geometry(spec, shape)
        if g["out"] < 1:
            raise SpecError(f"{where}: kernel {a['kernel']} (dilation {a['dilation']}) does not fit the sequence "
                            f"{_fmt(shape)} with padding {a['padding']}; the output length would be {g['out']}")
        return (out_channels(spec, num_classes), g["out"])
    if t in POOLS1D:
        g = conv1d_geometry(spec, shape)
        if g["out"] < 1:
            raise SpecError(f"{where}: window {a['kernel']} does not fit the sequence {_fmt(shape)}")
        return (shape[0], g["out"])
    if t in ("globalmaxpool1d", "globalavgpool1d"):
        return (shape[0],)
    if t in CHANNEL_ATTENTION and not (spatial or sequence):
        raise SpecError(f"{where}: gates the channels of a feature map [C, H, W] or a sequence [C, L], but gets a "
                        f"vector [{_fmt(shape)}]; move it before flatten or the global pooling")
    if t == "attention_pool":
        return (shape[0],)
    if t == "parallel":
        outs = [_list_shapes(b, shape, num_classes)[-1] for b in spec.sublists()]
        if len({o[1:] for o in outs}) > 1:
            got = ", ".join(f"branch {j}: {_fmt(o)}" for j, o in enumerate(outs))
            raise SpecError(f"{where}: the branches' outputs are joined along channels, so they must agree on every "
                            f"other dim; they give {got}")
        return (sum(o[0] for o in outs), *outs[0][1:])
    if t == "conv":
        c, out = shape[0], out_channels(spec, num_classes)
        if c % a["groups"] or out % a["groups"]:
            raise SpecError(f"{where}: groups={a['groups']} must divide both the input channels ({c}) "
                            f"and out ({out})")
        g = conv_geometry(spec, shape)
        if min(g["out"]) < 1:
            raise SpecError(f"{where}: kernel {a['kernel']} (dilation {a['dilation']}) does not fit the input "
                            f"{_fmt(shape)} with padding {a['padding']}; the output would be {g['out'][0]}x{g['out'][1]}")
        return (out, *g["out"])
    if t == "conv_transpose":
        hw = conv_transpose_output_size(shape[1:], a)
        if min(hw) < 1:
            raise SpecError(f"{where}: padding {a['padding']} is too large for the input {_fmt(shape)}; "
                            f"the output would be {hw[0]}x{hw[1]}")
        return (out_channels(spec, num_classes), *hw)
    if t == "upsample":
        if a["size"] is not None:
            return (shape[0], *a["size"])
        return (shape[0], shape[1] * a["scale"][0], shape[2] * a["scale"][1])
    if t == "concat":
        src = a["from"]
        if named is None or src not in named:
            raise SpecError(f"{where}: the output shape of {src!r} is not known here; infer the shapes of the "
                            f"whole list (cnnkit.spec.infer_shapes)")
        other = named[src]
        if len(other) != 3:
            raise SpecError(f"{where}: {src!r} gives a vector [{_fmt(other)}]; concat joins feature maps [C, H, W]")
        if other[1] < shape[1] or other[2] < shape[2]:
            raise SpecError(f"{where}: the output of {src!r} ({_fmt(other)}) is smaller than the current map "
                            f"({_fmt(shape)}); it can be centre-cropped to the current size, not enlarged; "
                            f"use 'same' padding or upsample less")
        return (shape[0] + other[0], shape[1], shape[2])
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
        if sequence:
            raise SpecError(f"{where}: needs a vector but gets a sequence {_fmt(shape)}; add 'flatten' "
                            f"(or globalmaxpool1d) before it")
        return (out_channels(spec, num_classes),)
    if t == "maxout":
        if shape[0] % a["pieces"]:
            raise SpecError(f"{where}: {shape[0]} {'channels' if len(shape) > 1 else 'features'} are not divisible "
                            f"by pieces={a['pieces']}")
        return (shape[0] // a["pieces"], *shape[1:])
    if t == "residual":
        inner = _list_shapes(list(spec.children), shape, num_classes)
        body_out = inner[-1] if inner else shape
        residual_shortcut(spec, shape, body_out)
        return body_out
    return shape  # elementwise layers (activations, dropout, batchnorm) and se, eca, cbam, nonlocal


def reduced_channels(channels: int, reduction: int) -> int:
    """The bottleneck width C // r of an se / cbam gate or a nonlocal block, at least 1."""
    return max(1, int(channels) // int(reduction))


def eca_kernel_size(channels: int, gamma: float = 2, b: float = 1) -> int:
    """ECA's adaptive kernel size (Wang et al., 2020, eq. 12): k = |log2(C) / gamma + b / gamma|, made odd.

    The integer part t of |(log2(C) + b) / gamma|, plus one when it is even: C = 16 -> 3, 64 -> 3, 256 -> 5.
    """
    t = int(abs((math.log2(channels) + b) / gamma))
    return t if t % 2 else t + 1


def attention_parameters(spec: LayerSpec, channels: int) -> tuple[int, str]:
    """The parameter count of an attention layer (se, cbam, eca, nonlocal, attention_pool) on ``channels``
    channels, and its arithmetic as text (as :mod:`cnnkit.nn.attention` builds the blocks)."""
    t, a, c = spec.type, spec.args, int(channels)
    if t in ("se", "cbam"):
        h = reduced_channels(c, a["reduction"])
        mlp = 2 * c * h + h + c
        text = f"2*{c}*{h} + {h} + {c} = {mlp} (fc1 {c}->{h} and fc2 {h}->{c} with biases; {h} = {c} // {a['reduction']})"
        if t == "se":
            return mlp, text
        k = a["kernel"]
        total = mlp + 2 * k * k + 1
        return total, f"{text} + 2*{k}*{k} + 1 (the {k}x{k} spatial conv on [mean, max]) = {total}"
    if t == "eca":
        if a["kernel"] is not None:
            return a["kernel"], f"{a['kernel']} (a 1-D kernel over the channels, no bias)"
        k = eca_kernel_size(c, a["gamma"], a["b"])
        return k, (f"{k} (a 1-D kernel over the channels, no bias; k = int(|(log2 {c} + {a['b']}) / {a['gamma']}|), "
                   f"made odd)")
    if t == "nonlocal":
        i = reduced_channels(c, a["reduction"])
        total = c * i + i + 2 * c * i + i * c + 2 * c
        return total, (f"{c}*{i} + {i} (theta) + 2*{c}*{i} (phi, g) + {i}*{c} (out) + 2*{c} (bn) = {total}; "
                       f"{i} = {c} // {a['reduction']}")
    if t == "attention_pool":
        return c, f"{c} (the 1x1 score conv {c}->1, no bias)"
    raise ValueError(f"{spec.where}: not an attention layer")


def residual_shortcut(spec: LayerSpec, shape: Shape, body_out: Shape) -> int | None:
    """Stride of the 1x1 projection the shortcut needs (a 1x1 conv, or a kernel-1 conv1d on sequences),
    or None for identity."""
    where = spec.where
    mode = spec.args["shortcut"]
    if body_out == shape and mode != "conv":
        return None
    if mode == "identity":
        raise SpecError(f"{where}: identity shortcut needs the body to keep the shape {_fmt(shape)}, "
                        f"but it gives {_fmt(body_out)}; use shortcut: auto")
    if len(shape) not in (2, 3) or len(body_out) != len(shape):
        raise SpecError(f"{where}: a projection shortcut needs feature maps or sequences on both sides, got "
                        f"{_fmt(shape)} -> {_fmt(body_out)}")
    s = max(1, -(-shape[1] // body_out[1]))
    if any(conv_output_size(shape[ax], 1, s) != body_out[ax] for ax in range(1, len(shape))):
        raise SpecError(f"{where}: no strided 1x1 shortcut maps {_fmt(shape)} to the body's {_fmt(body_out)}")
    return s


def infer_shapes(specs: list[LayerSpec], input_shape: Shape, num_classes: int | None = None, *,
                 signal: bool = False) -> list[Shape]:
    """The output shape after each layer, failing on the first that does not fit.

    An input of two numbers (V, L) is a token sequence (text): the first layer must be an embedding.
    With ``signal=True`` it is instead a real-valued signal (C, L), a time series of C channels and
    L steps, which the sequence layers (conv1d, lstm, gru, ...) take as it is: no embedding.
    """
    shape = tuple(input_shape)
    check_input_kind(specs, shape, signal)
    return _list_shapes(specs, shape, num_classes)


def check_input_kind(specs: list[LayerSpec], input_shape: Shape, signal: bool = False) -> None:
    """A (V, L) token input needs an embedding first; a (C, L) signal (``signal=True``) none."""
    shape = tuple(input_shape)
    if signal:
        if len(shape) != 2:
            raise SpecError(f"a signal input is [C, L] (channels, time steps), got [{_fmt(shape)}]")
        if specs and specs[0].type == "embedding":
            raise SpecError(f"{specs[0].where}: the input [{_fmt(shape)}] is a signal [C, L] of real values, but "
                            f"embedding takes token ids; remove it (a signal goes straight into conv1d, lstm, gru)")
        return
    if len(shape) == 2 and specs and specs[0].type != "embedding":
        raise SpecError(f"the input [{_fmt(shape)}] is a token sequence [V, L] (vocabulary size, sequence length), "
                        f"so the first layer must be embedding (token ids -> vectors), but {specs[0].where} is "
                        f"first; add '- embedding: 128' before it (for a real-valued signal [C, L], a time series, "
                        f"build with signal=True)")


def _list_shapes(specs: list[LayerSpec], input_shape: Shape, num_classes: int | None = None) -> list[Shape]:
    """infer_shapes of a list inside the network (a residual body, a parallel branch)."""
    shapes, shape = [], tuple(input_shape)
    named: dict[str, Shape] = {}
    for spec in specs:
        shape = layer_output_shape(spec, shape, num_classes, named)
        named[spec.name] = shape
        shapes.append(shape)
    return shapes


__all__ = ["ACTIVATIONS", "ALIASES", "AS_1D", "AS_2D", "ATTENTION", "CHANNEL_ATTENTION", "SPATIAL_ATTENTION",
           "LAYER_ARGS", "POOLS", "POOLS1D", "SEQUENCE_ONLY", "SHORTHAND",
           "SPATIAL_ONLY", "UPSAMPLE_MODES", "RECURRENT", "RECURRENT_RETURNS", "LayerSpec", "Shape", "attention_parameters",
           "center_crop_offsets",
           "check_input_kind", "conv1d_geometry",
           "conv_geometry", "conv_transpose_output_size", "conv_transpose_padding", "eca_kernel_size",
           "infer_shapes", "layer_output_shape", "out_channels", "parse_layers", "reduced_channels", "residual_shortcut"]
