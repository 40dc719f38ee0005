"""Declarative networks in torch: :func:`build_torch` turns a parsed layer list into a :class:`DeclarativeNet`.

Parsing, validation and shape inference live in :mod:`cnnkit.spec` (no torch); the same
parsed list builds the NumPy reference network (``cnnkit.reference``). A text network (input
shape (V, L), first layer ``embedding``) takes token ids, a LongTensor (N, L); a time-series network
(``signal=True``, input shape (C, L)) takes floats (N, C, L): conv1d (also causal), lstm, gru.

Example::

    specs = parse_layers(["flatten", {"dense": 10}])          # cnnkit.spec
    net = build_torch(specs, (1, 28, 28), num_classes=10)
"""

from __future__ import annotations

import math
from collections import OrderedDict

import torch
from torch import nn

from cnnkit.errors import SpecError
from cnnkit.nn.attention import CBAM, ECA, AttentionPool2d, NonLocal, SqueezeExcite
from cnnkit.nn.layers import (
    Concat,
    Conv1d,
    Conv2d,
    Embedding,
    GRU,
    LSTM,
    GlobalAvgPool,
    GlobalAvgPool1d,
    GlobalMaxPool,
    GlobalMaxPool1d,
    L2Pool2d,
    Maxout,
    Parallel,
    Residual,
    SkipSequential,
    run_with_skips,
)
from cnnkit.spec import (
    POOLS,
    POOLS1D,
    LayerSpec,
    Shape,
    conv_transpose_padding,
    infer_shapes,
    layer_output_shape,
    residual_shortcut,
)


class DeclarativeNet(SkipSequential):
    """A network built from a layer list. Its classifier head is the last layer when that is a dense
    layer, or a conv / conv_transpose with ``out: num_classes`` (a per-pixel classifier: the network
    then gives (N, K, H, W) scores, as a segmentation network does).

    Module names follow the layers: ``conv1, relu1, maxpool1, ..., dense3`` (or the layers' own
    ``name``). ``concat`` layers get the output of the earlier layer they name (see SkipSequential).

    A text network (input (V, L), first layer ``embedding``) takes token ids (N, L); ``input_channels``
    is then the vocabulary size V.

    A network that gives feature maps answers the segmentation task's three questions (as
    :class:`cnnkit.models.segmentation.base.Segmenter` does), from the layer list's shape arithmetic:
    ``pad_multiple``, ``output_size(side)`` and ``input_size_for(output_side)``.
    """

    instance_attributes = ("head_name", "layer_specs", "input_channels", "num_classes")  # no layer may be named so

    def __init__(self, modules: "OrderedDict[str, nn.Module]", head_name: str | None,
                 specs: list[LayerSpec] | None = None, input_shape: Shape | None = None,
                 num_classes: int | None = None) -> None:
        super().__init__(modules)
        self.head_name = head_name
        self.layer_specs = list(specs) if specs is not None else None
        self.input_channels = int(input_shape[0]) if input_shape is not None else None
        self.num_classes = num_classes

    # -- geometry of a network that gives maps (U-Net), from the shape arithmetic of its layer list

    @property
    def pad_multiple(self) -> int:
        """Input sides should be multiples of the product of the strides (2 ** depth for a U-Net), so that
        every downsampling is exact and each upsampled map meets its skip."""
        if self.layer_specs is None:
            return 1
        return _total_stride(self.layer_specs)

    def output_size(self, side: int) -> int:
        """The output side for a square input of ``side`` (SpecError when the list gives a vector or the
        input is too small)."""
        if self.layer_specs is None:
            raise SpecError("this DeclarativeNet was built without its layer list; its output size is unknown")
        out = infer_shapes(self.layer_specs, (self.input_channels, int(side), int(side)), self.num_classes)[-1]
        if len(out) != 3:
            raise SpecError(f"this layer list gives a vector [{out[0]}], not a map, so it has no output side")
        return int(out[1])

    def input_size_for(self, output_side: int) -> int:
        """``output_side`` itself when the output has the input's size ('same' padding; the task pads to
        :attr:`pad_multiple`); otherwise ('valid' padding, the U-Net paper's) the smallest input side whose
        output has at least ``output_side`` pixels (exact pools: a larger side with the same output would
        lose pixels)."""
        m = self.pad_multiple
        probe = m * max(1, -(-64 // m))
        try:
            same = self.output_size(probe) == probe
        except SpecError:
            same = False
        if same:
            return int(output_side)
        for side in range(int(output_side), int(output_side) + 64 * m + 4096):
            try:
                if self.output_size(side) >= output_side:
                    return side
            except SpecError:
                continue
        raise SpecError(f"no input side up to {int(output_side) + 64 * m + 4096} gives an output of "
                        f"{output_side} pixels")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        items = list(self._modules.items())
        return run_with_skips(items[:-1] if self.head_name else items, x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if pre_logits or not self.head_name:
            return x
        return self._modules[self.head_name](x)

    def get_classifier(self) -> nn.Module:
        return self._modules[self.head_name] if self.head_name else nn.Identity()

    def reset_classifier(self, num_classes: int) -> None:
        if not self.head_name:
            raise SpecError("this layer list does not end with a dense layer (or a conv with out: num_classes), "
                            "so it has no classifier head to reset")
        old = self._modules[self.head_name]
        bias = old.bias is not None
        if isinstance(old, nn.Linear):
            new: nn.Module = nn.Linear(old.in_features, num_classes, bias=bias)
        elif isinstance(old, nn.Conv1d):
            new = Conv1d(old.in_channels, num_classes, old.kernel_size[0], old.stride[0],
                         "same" if old.same else old.padding[0], old.dilation[0], 1, bias,
                         causal=getattr(old, "causal", False))
        elif isinstance(old, nn.ConvTranspose2d):
            new = nn.ConvTranspose2d(old.in_channels, num_classes, old.kernel_size, old.stride, old.padding,
                                     old.output_padding, 1, bias, old.dilation)
        else:  # Conv2d
            if old.groups != 1 and num_classes % old.groups:
                raise SpecError(f"the head {self.head_name!r} has groups={old.groups}, which does not divide "
                                f"{num_classes} classes")
            new = Conv2d(old.in_channels, num_classes, old.kernel_size, old.stride,
                         "same" if old.same else old.padding, old.dilation, old.groups, bias)
        self._modules[self.head_name] = new.to(old.weight.device, old.weight.dtype)
        self.num_classes = num_classes


def _torch_layer(spec: LayerSpec, shape: Shape, out: Shape, num_classes: int | None = None) -> nn.Module:
    t, a = spec.type, spec.args
    if t == "conv":
        return Conv2d(shape[0], out[0], a["kernel"], a["stride"], a["padding"], a["dilation"], a["groups"], a["bias"])
    if t == "embedding":
        return Embedding(shape[0], a["dim"], a["padding_idx"], a["freeze"])
    if t == "conv1d":
        return Conv1d(shape[0], out[0], a["kernel"], a["stride"], a["padding"], a["dilation"], 1, a["bias"],
                      causal=a["causal"])
    if t in ("lstm", "gru"):
        rnn = LSTM if t == "lstm" else GRU
        return rnn(shape[0], a["hidden"], a["layers"], a["bidirectional"], a["dropout"], a["return"] == "sequence")
    if t == "maxpool1d":
        return nn.MaxPool1d(a["kernel"], a["stride"], a["padding"])
    if t == "avgpool1d":
        return nn.AvgPool1d(a["kernel"], a["stride"], a["padding"])
    if t == "globalmaxpool1d":
        return GlobalMaxPool1d()
    if t == "globalavgpool1d":
        return GlobalAvgPool1d()
    if t == "parallel":
        return Parallel([SkipSequential(_torch_sequence(b, shape, num_classes)[0]) for b in spec.sublists()])
    if t == "conv_transpose":
        padding, output_padding = conv_transpose_padding(a, spec.index)
        return nn.ConvTranspose2d(shape[0], out[0], a["kernel"], a["stride"], padding, output_padding, 1, a["bias"],
                                  a["dilation"])
    if t == "upsample":
        bilinear = a["mode"] == "bilinear"
        if a["size"] is not None:
            return nn.Upsample(size=a["size"], mode=a["mode"], align_corners=a["align_corners"] if bilinear else None)
        return nn.Upsample(scale_factor=tuple(float(v) for v in a["scale"]), mode=a["mode"],
                           align_corners=a["align_corners"] if bilinear else None)
    if t == "concat":
        return Concat(a["from"])
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
    if t == "se":
        return SqueezeExcite(shape[0], a["reduction"])
    if t == "cbam":
        return CBAM(shape[0], a["reduction"], a["kernel"])
    if t == "eca":
        return ECA(shape[0], a["gamma"], a["b"], a["kernel"])
    if t == "nonlocal":
        return NonLocal(shape[0], a["reduction"])
    if t == "attention_pool":
        return AttentionPool2d(shape[0])
    if t == "residual":
        body, s = _torch_sequence(list(spec.children), shape, num_classes)
        stride = residual_shortcut(spec, shape, out)
        conv = nn.Conv2d if len(shape) == 3 else nn.Conv1d
        shortcut = None if stride is None else conv(shape[0], out[0], 1, stride, bias=False)
        return Residual(SkipSequential(body), shortcut, nn.ReLU() if a["activation"] == "relu" else None)
    raise AssertionError(t)


def _torch_sequence(specs: list[LayerSpec], shape: Shape, num_classes: int | None = None) -> tuple["OrderedDict[str, nn.Module]", Shape]:
    mods: OrderedDict[str, nn.Module] = OrderedDict()
    named: dict[str, Shape] = {}
    for spec in specs:
        if hasattr(DeclarativeNet, spec.name) or spec.name in DeclarativeNet.instance_attributes:
            raise SpecError(f"{spec.where}: name {spec.name!r} is taken by the torch module's own attribute "
                            f"{spec.name!r}; pick another, e.g. {spec.name}_1")
        out = layer_output_shape(spec, shape, num_classes, named)
        mods[spec.name] = _torch_layer(spec, shape, out, num_classes)
        named[spec.name] = out
        shape = out
    return mods, shape


def _total_stride(specs: list[LayerSpec]) -> int:
    """The product of the strides of the strided convolutions and poolings (residual bodies included;
    parallel branches: the lcm of theirs)."""
    total = 1
    for spec in specs:
        if spec.type == "conv" or spec.type in POOLS:
            total *= math.lcm(*spec.args["stride"])
        if spec.type == "conv1d" or spec.type in POOLS1D:
            total *= spec.args["stride"]
        subs = spec.sublists()
        if subs:
            total *= math.lcm(*(_total_stride(sub) for sub in subs))
    return total


def head_layer(specs: list[LayerSpec]) -> str | None:
    """The classifier head's name: a last dense layer, or a last conv / conv1d / conv_transpose with
    out: num_classes."""
    last = specs[-1]
    if last.type == "dense" or (last.type in ("conv", "conv1d", "conv_transpose")
                                and last.args["out"] == "num_classes"):
        return last.name
    return None


def build_torch(specs: list[LayerSpec], input_shape: Shape, num_classes: int | None = None, *,
                signal: bool = False) -> DeclarativeNet:
    """Build the torch network of a parsed layer list (shapes are checked first).

    ``input_shape``: (C, H, W) for images, (V, L) for text (vocabulary size, sequence length; the
    network then takes token ids (N, L)), or with ``signal=True`` (C, L) for a real-valued signal (a time
    series of C channels, L steps; the network takes floats (N, C, L))."""
    infer_shapes(specs, input_shape, num_classes, signal=signal)
    mods, _ = _torch_sequence(specs, tuple(input_shape), num_classes)
    return DeclarativeNet(mods, head_layer(specs), specs, tuple(input_shape), num_classes)


__all__ = ["DeclarativeNet", "build_torch", "head_layer"]
