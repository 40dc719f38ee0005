"""Declarative networks in torch: :func:`build_torch` turns a parsed layer list into a :class:`DeclarativeNet`.

Parsing, validation and shape inference live in :mod:`cnnkit.spec` (no torch); the same
parsed list builds the NumPy reference network (``cnnkit.reference``).

Example::

    specs = parse_layers(["flatten", {"dense": 10}])          # cnnkit.spec
    net = build_torch(specs, (1, 28, 28), num_classes=10)
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from cnnkit.errors import SpecError
from cnnkit.nn.layers import Conv2d, GlobalAvgPool, GlobalMaxPool, L2Pool2d, Maxout, Residual
from cnnkit.spec import LayerSpec, Shape, infer_shapes, layer_output_shape, residual_shortcut


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
        stride = residual_shortcut(spec, shape, out)
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


__all__ = ["DeclarativeNet", "build_torch"]
