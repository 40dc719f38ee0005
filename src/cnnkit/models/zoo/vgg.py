"""VGG (Simonyan & Zisserman, 2015), with and without batch norm, built by torchvision.

Two heads, picked from the input size (or forced with ``cifar_head``):

* ImageNet-size inputs (64 px and up): torchvision's network unchanged: a 7x7
  adaptive average pool, then ``Linear(25088, 4096) - ReLU - Dropout -
  Linear(4096, 4096) - ReLU - Dropout`` in the body and the last
  ``Linear(4096, num_classes)`` as the head. VGG-16 with 1000 classes has
  138,357,544 parameters.
* Small inputs (under 64 px, e.g. 32x32 CIFAR): the five max pools already bring
  32 px down to 1x1, so blowing that up to 7x7 for a 102M-parameter classifier
  makes no sense. The body ends with global average pooling and a flatten
  (512 features) and the head is a single ``Linear(512, num_classes)``, as in
  the usual CIFAR VGGs. VGG-16 with 10 classes then has 14,719,818 parameters.

``in_chans != 3`` replaces the first convolution. ``dropout`` defaults to
torchvision's 0.5 inside the ImageNet classifier and to none for the small
head; an explicit value is used by whichever head is built (for the small head,
as a dropout layer before the final linear).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Callable

import torch
import torchvision
from torch import nn

from cnnkit.models.base import Classifier
from cnnkit.models.registry import register_model

_DEFAULT = (3, 224, 224)
_MIN = (3, 32, 32)


def _init_conv(conv: nn.Conv2d) -> None:
    # torchvision's VGG initialisation for convolutions.
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)


def _materialise_features(features: nn.Module) -> nn.Module:
    """Give a meta-device feature stack real storage, initialised as torchvision does."""
    features = features.to_empty(device=torch.get_default_device())
    for m in features.modules():
        if isinstance(m, nn.Conv2d):
            _init_conv(m)
        elif isinstance(m, nn.BatchNorm2d):
            m.reset_parameters()  # weight 1, bias 0, fresh running statistics
    return features


def _create_vgg(builder: Callable[..., nn.Module], *, num_classes: int, in_chans: int, input_size: int,
                cifar_head: bool | None, dropout: float | None) -> Classifier:
    small = input_size < 64 if cifar_head is None else cifar_head
    if small:
        # torchvision always builds the 25088x4096 classifier; building on the meta
        # device skips allocating and initialising ~120M parameters that would be
        # thrown away, and only the convolutional features are materialised.
        with torch.device("meta"):
            net = builder(weights=None, num_classes=num_classes)
        features = _materialise_features(net.features)
    else:
        net = builder(weights=None, num_classes=num_classes, dropout=0.5 if dropout is None else dropout)
        features = net.features
    if in_chans != 3:
        first = features[0]
        features[0] = nn.Conv2d(in_chans, first.out_channels, kernel_size=3, padding=1)
        _init_conv(features[0])
    if small:
        layers: OrderedDict[str, nn.Module] = OrderedDict(
            features=features, pool=nn.AdaptiveAvgPool2d(1), flatten=nn.Flatten())
        if dropout:
            layers["dropout"] = nn.Dropout(dropout)
        width = [m for m in features.modules() if isinstance(m, nn.Conv2d)][-1].out_channels  # 512
        head = nn.Linear(width, num_classes)
        nn.init.normal_(head.weight, 0, 0.01)
        nn.init.zeros_(head.bias)
        return Classifier(nn.Sequential(layers), head)
    head = net.classifier[-1]
    net.classifier[-1] = nn.Identity()
    return Classifier(net, head)


@register_model("vgg11", "VGG-11 (Simonyan & Zisserman, 2015); GAP + linear head for inputs under 64 px",
                default_input=_DEFAULT, min_input=_MIN)
def vgg11(num_classes: int = 1000, in_chans: int = 3, input_size: int = 224, cifar_head: bool | None = None,
          dropout: float | None = None) -> Classifier:
    """VGG-11; ``cifar_head`` forces (True) or forbids (False) the small head."""
    return _create_vgg(torchvision.models.vgg11, num_classes=num_classes, in_chans=in_chans,
                       input_size=input_size, cifar_head=cifar_head, dropout=dropout)


@register_model("vgg13", "VGG-13 (Simonyan & Zisserman, 2015); GAP + linear head for inputs under 64 px",
                default_input=_DEFAULT, min_input=_MIN)
def vgg13(num_classes: int = 1000, in_chans: int = 3, input_size: int = 224, cifar_head: bool | None = None,
          dropout: float | None = None) -> Classifier:
    """VGG-13; ``cifar_head`` forces (True) or forbids (False) the small head."""
    return _create_vgg(torchvision.models.vgg13, num_classes=num_classes, in_chans=in_chans,
                       input_size=input_size, cifar_head=cifar_head, dropout=dropout)


@register_model("vgg16", "VGG-16 (Simonyan & Zisserman, 2015); GAP + linear head for inputs under 64 px",
                default_input=_DEFAULT, min_input=_MIN)
def vgg16(num_classes: int = 1000, in_chans: int = 3, input_size: int = 224, cifar_head: bool | None = None,
          dropout: float | None = None) -> Classifier:
    """VGG-16; ``cifar_head`` forces (True) or forbids (False) the small head."""
    return _create_vgg(torchvision.models.vgg16, num_classes=num_classes, in_chans=in_chans,
                       input_size=input_size, cifar_head=cifar_head, dropout=dropout)


@register_model("vgg19", "VGG-19 (Simonyan & Zisserman, 2015); GAP + linear head for inputs under 64 px",
                default_input=_DEFAULT, min_input=_MIN)
def vgg19(num_classes: int = 1000, in_chans: int = 3, input_size: int = 224, cifar_head: bool | None = None,
          dropout: float | None = None) -> Classifier:
    """VGG-19; ``cifar_head`` forces (True) or forbids (False) the small head."""
    return _create_vgg(torchvision.models.vgg19, num_classes=num_classes, in_chans=in_chans,
                       input_size=input_size, cifar_head=cifar_head, dropout=dropout)


@register_model("vgg11_bn", "VGG-11 with batch norm (Simonyan & Zisserman, 2015); GAP + linear head for inputs under 64 px",
                default_input=_DEFAULT, min_input=_MIN)
def vgg11_bn(num_classes: int = 1000, in_chans: int = 3, input_size: int = 224, cifar_head: bool | None = None,
             dropout: float | None = None) -> Classifier:
    """VGG-11 with batch norm; ``cifar_head`` forces (True) or forbids (False) the small head."""
    return _create_vgg(torchvision.models.vgg11_bn, num_classes=num_classes, in_chans=in_chans,
                       input_size=input_size, cifar_head=cifar_head, dropout=dropout)


@register_model("vgg13_bn", "VGG-13 with batch norm (Simonyan & Zisserman, 2015); GAP + linear head for inputs under 64 px",
                default_input=_DEFAULT, min_input=_MIN)
def vgg13_bn(num_classes: int = 1000, in_chans: int = 3, input_size: int = 224, cifar_head: bool | None = None,
             dropout: float | None = None) -> Classifier:
    """VGG-13 with batch norm; ``cifar_head`` forces (True) or forbids (False) the small head."""
    return _create_vgg(torchvision.models.vgg13_bn, num_classes=num_classes, in_chans=in_chans,
                       input_size=input_size, cifar_head=cifar_head, dropout=dropout)


@register_model("vgg16_bn", "VGG-16 with batch norm (Simonyan & Zisserman, 2015); GAP + linear head for inputs under 64 px",
                default_input=_DEFAULT, min_input=_MIN)
def vgg16_bn(num_classes: int = 1000, in_chans: int = 3, input_size: int = 224, cifar_head: bool | None = None,
             dropout: float | None = None) -> Classifier:
    """VGG-16 with batch norm; ``cifar_head`` forces (True) or forbids (False) the small head."""
    return _create_vgg(torchvision.models.vgg16_bn, num_classes=num_classes, in_chans=in_chans,
                       input_size=input_size, cifar_head=cifar_head, dropout=dropout)


@register_model("vgg19_bn", "VGG-19 with batch norm (Simonyan & Zisserman, 2015); GAP + linear head for inputs under 64 px",
                default_input=_DEFAULT, min_input=_MIN)
def vgg19_bn(num_classes: int = 1000, in_chans: int = 3, input_size: int = 224, cifar_head: bool | None = None,
             dropout: float | None = None) -> Classifier:
    """VGG-19 with batch norm; ``cifar_head`` forces (True) or forbids (False) the small head."""
    return _create_vgg(torchvision.models.vgg19_bn, num_classes=num_classes, in_chans=in_chans,
                       input_size=input_size, cifar_head=cifar_head, dropout=dropout)
