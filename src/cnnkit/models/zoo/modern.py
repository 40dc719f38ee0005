"""Modern ImageNet families, built by torchvision: EfficientNet, MobileNet, ConvNeXt and RegNet.

* ``efficientnet_b0/b1/b2`` (Tan & Le, 2019) and ``efficientnet_v2_s`` (Tan & Le,
  2021): MBConv blocks (inverted residuals with squeeze-and-excitation; V2 starts
  with fused MBConvs), SiLU, compound-scaled depth and width.
* ``mobilenet_v2`` (Sandler et al., 2018) and ``mobilenet_v3_small/large``
  (Howard et al., 2019): inverted residuals with linear bottlenecks; V3 adds
  squeeze-and-excitation, hard-swish and a two-layer classifier.
* ``convnext_tiny`` (Liu et al., 2022): a ResNet modernised towards vision
  transformers: a 4x4 stride-4 "patchify" stem, 7x7 depthwise convolutions,
  LayerNorm, inverted bottlenecks of per-position linear layers, GELU and layer scale.
* ``regnet_x_400mf/800mf`` and ``regnet_y_400mf/800mf`` (Radosavovic et al., 2020):
  ResNeXt-like bottlenecks whose widths and depths follow a quantised linear
  rule; the Y variants add squeeze-and-excitation.

Each is torchvision's network built with ``weights=None`` and ``num_classes``;
the body is that network with its last ``nn.Linear`` replaced by ``nn.Identity``
(``classifier.1`` for EfficientNet and MobileNetV2, ``classifier.3`` for
MobileNetV3, ``classifier.2`` for ConvNeXt, ``fc`` for RegNet) and the head is that
Linear, so a torchvision state dict maps into the model exactly as for the other
torchvision wrappers (:mod:`cnnkit.models.weights`). Parameter counts are
torchvision's: EfficientNet-B0 with 1000 classes has 5,288,548.

``in_chans != 3`` replaces the stem convolution by one with the same shape for the
new channel count, initialised as the family initialises its convolutions
(He fan-out normal; ConvNeXt: truncated normal, std 0.02).

``drop_path``: stochastic depth (Huang et al., 2016) where torchvision's builder
has it (``stochastic_depth_prob``): EfficientNet (default 0.2, torchvision's) and
ConvNeXt (default 0.1). Each residual branch is dropped per sample with a
probability that grows linearly with its index: torchvision's rules are
``drop_path * i / n`` for EfficientNet and ``drop_path * i / (n - 1)`` for ConvNeXt,
for blocks i = 0 .. n-1 (cnnkit's own ResNets use the paper's
``drop_path * l / L``, l = 1 .. L). MobileNet and RegNet have no stochastic depth.
``dropout`` is the dropout before the last linear layer (EfficientNet, MobileNet).

Default inputs are the crop sizes of torchvision's ImageNet weights (224 px;
EfficientNet-B1 240, B2 288, V2-S 384). Smallest inputs: every family but ConvNeXt
runs at 28x28 (MNIST) and is registered with it; at 28 and 32 px its last stage
works on a 1x1 map (total stride 32). ConvNeXt's 2x2 stride-2 downsampling layers
need at least a 2x2 map, so it needs 32 px (32 -> 8 -> 4 -> 2 -> 1; 28 px fails).
None of these swaps its stem for small inputs (unlike cnnkit's ResNet and DenseNet
wrappers): they are torchvision's networks as they are.
"""

from __future__ import annotations

from typing import Any, Callable

import torchvision
from torch import nn

from cnnkit.errors import UserError
from cnnkit.models.base import Classifier
from cnnkit.models.registry import register_model

_SMALL = (3, 28, 28)
_CONVNEXT_MIN = (3, 32, 32)


def _he_fan_out(conv: nn.Conv2d) -> None:
    # EfficientNet, MobileNet and RegNet initialise convolutions this way (RegNet as N(0, 2 / fan_out)).
    nn.init.kaiming_normal_(conv.weight, mode="fan_out")
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)


def _trunc_normal(conv: nn.Conv2d) -> None:
    # ConvNeXt's initialisation.
    nn.init.trunc_normal_(conv.weight, std=0.02)
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)


def _replace(net: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, last = path.rpartition(".")
    setattr(net.get_submodule(parent) if parent else net, last, module)


def _new_stem(old: nn.Conv2d, in_chans: int, init: Callable[[nn.Conv2d], None]) -> nn.Conv2d:
    """The stem convolution ``old`` for ``in_chans`` input channels: same kernel, stride, padding, bias."""
    conv = nn.Conv2d(in_chans, old.out_channels, kernel_size=old.kernel_size, stride=old.stride,
                     padding=old.padding, dilation=old.dilation, bias=old.bias is not None,
                     padding_mode=old.padding_mode)
    init(conv)
    return conv


def _check_rate(name: str, value: float) -> None:
    if not 0.0 <= value < 1.0:
        raise UserError(f"{name} must be in [0, 1), got {value}")


def _create(builder: Callable[..., nn.Module], *, num_classes: int, in_chans: int, stem: str, head: str,
            init: Callable[[nn.Conv2d], None], **kwargs: Any) -> Classifier:
    """torchvision's ``builder`` with ``weights=None``; ``stem``/``head``: paths of its first conv and last Linear."""
    for key in ("stochastic_depth_prob", "dropout"):
        if key in kwargs:
            _check_rate("drop_path" if key == "stochastic_depth_prob" else key, kwargs[key])
    net = builder(weights=None, num_classes=num_classes, **kwargs)
    if in_chans != 3:
        _replace(net, stem, _new_stem(net.get_submodule(stem), in_chans, init))
    linear = net.get_submodule(head)
    _replace(net, head, nn.Identity())
    return Classifier(net, linear)


# --------------------------------------------------------------------------- EfficientNet


def _efficientnet(builder, *, num_classes: int, in_chans: int, dropout: float, drop_path: float) -> Classifier:
    return _create(builder, num_classes=num_classes, in_chans=in_chans, stem="features.0.0", head="classifier.1",
                   init=_he_fan_out, dropout=dropout, stochastic_depth_prob=drop_path)


@register_model("efficientnet_b0", "EfficientNet-B0 (Tan & Le, 2019), MBConv + squeeze-excitation, 5.3M params",
                default_input=(3, 224, 224), min_input=_SMALL)
def efficientnet_b0(num_classes: int = 1000, in_chans: int = 3, input_size: int = 224, dropout: float = 0.2,
                    drop_path: float = 0.2) -> Classifier:
    """EfficientNet-B0; ``dropout`` before the classifier, ``drop_path`` the stochastic depth rate."""
    return _efficientnet(torchvision.models.efficientnet_b0, num_classes=num_classes, in_chans=in_chans,
                         dropout=dropout, drop_path=drop_path)


@register_model("efficientnet_b1", "EfficientNet-B1 (Tan & Le, 2019), B0 scaled to 1.1x depth, 240 px",
                default_input=(3, 240, 240), min_input=_SMALL)
def efficientnet_b1(num_classes: int = 1000, in_chans: int = 3, input_size: int = 240, dropout: float = 0.2,
                    drop_path: float = 0.2) -> Classifier:
    """EfficientNet-B1; ``dropout`` before the classifier, ``drop_path`` the stochastic depth rate."""
    return _efficientnet(torchvision.models.efficientnet_b1, num_classes=num_classes, in_chans=in_chans,
                         dropout=dropout, drop_path=drop_path)


@register_model("efficientnet_b2", "EfficientNet-B2 (Tan & Le, 2019), B0 scaled to 1.1x width, 1.2x depth",
                default_input=(3, 288, 288), min_input=_SMALL)
def efficientnet_b2(num_classes: int = 1000, in_chans: int = 3, input_size: int = 288, dropout: float = 0.3,
                    drop_path: float = 0.2) -> Classifier:
    """EfficientNet-B2; ``dropout`` before the classifier, ``drop_path`` the stochastic depth rate."""
    return _efficientnet(torchvision.models.efficientnet_b2, num_classes=num_classes, in_chans=in_chans,
                         dropout=dropout, drop_path=drop_path)


@register_model("efficientnet_v2_s", "EfficientNetV2-S (Tan & Le, 2021), fused and plain MBConv blocks",
                default_input=(3, 384, 384), min_input=_SMALL)
def efficientnet_v2_s(num_classes: int = 1000, in_chans: int = 3, input_size: int = 384, dropout: float = 0.2,
                      drop_path: float = 0.2) -> Classifier:
    """EfficientNetV2-S; ``dropout`` before the classifier, ``drop_path`` the stochastic depth rate."""
    return _efficientnet(torchvision.models.efficientnet_v2_s, num_classes=num_classes, in_chans=in_chans,
                         dropout=dropout, drop_path=drop_path)


# --------------------------------------------------------------------------- MobileNet


@register_model("mobilenet_v2", "MobileNetV2 (Sandler et al., 2018), inverted residuals, linear bottlenecks",
                default_input=(3, 224, 224), min_input=_SMALL)
def mobilenet_v2(num_classes: int = 1000, in_chans: int = 3, input_size: int = 224,
                 dropout: float = 0.2) -> Classifier:
    """MobileNetV2 (width 1.0); ``dropout`` before the classifier."""
    return _create(torchvision.models.mobilenet_v2, num_classes=num_classes, in_chans=in_chans, stem="features.0.0",
                   head="classifier.1", init=_he_fan_out, dropout=dropout)


@register_model("mobilenet_v3_small", "MobileNetV3-Small (Howard et al., 2019), squeeze-excitation, hard-swish",
                default_input=(3, 224, 224), min_input=_SMALL)
def mobilenet_v3_small(num_classes: int = 1000, in_chans: int = 3, input_size: int = 224,
                       dropout: float = 0.2) -> Classifier:
    """MobileNetV3-Small; ``dropout`` between the two classifier layers."""
    return _create(torchvision.models.mobilenet_v3_small, num_classes=num_classes, in_chans=in_chans,
                   stem="features.0.0", head="classifier.3", init=_he_fan_out, dropout=dropout)


@register_model("mobilenet_v3_large", "MobileNetV3-Large (Howard et al., 2019), squeeze-excitation, hard-swish",
                default_input=(3, 224, 224), min_input=_SMALL)
def mobilenet_v3_large(num_classes: int = 1000, in_chans: int = 3, input_size: int = 224,
                       dropout: float = 0.2) -> Classifier:
    """MobileNetV3-Large; ``dropout`` between the two classifier layers."""
    return _create(torchvision.models.mobilenet_v3_large, num_classes=num_classes, in_chans=in_chans,
                   stem="features.0.0", head="classifier.3", init=_he_fan_out, dropout=dropout)


# --------------------------------------------------------------------------- ConvNeXt


@register_model("convnext_tiny", "ConvNeXt-T (Liu et al., 2022), 7x7 depthwise convs, LayerNorm, GELU; 32 px min",
                default_input=(3, 224, 224), min_input=_CONVNEXT_MIN)
def convnext_tiny(num_classes: int = 1000, in_chans: int = 3, input_size: int = 224,
                  drop_path: float = 0.1) -> Classifier:
    """ConvNeXt-T (3/3/9/3 blocks, 96-768 channels); ``drop_path`` the stochastic depth rate."""
    return _create(torchvision.models.convnext_tiny, num_classes=num_classes, in_chans=in_chans, stem="features.0.0",
                   head="classifier.2", init=_trunc_normal, stochastic_depth_prob=drop_path)


# --------------------------------------------------------------------------- RegNet


def _regnet(builder, *, num_classes: int, in_chans: int) -> Classifier:
    return _create(builder, num_classes=num_classes, in_chans=in_chans, stem="stem.0", head="fc", init=_he_fan_out)


@register_model("regnet_x_400mf", "RegNetX-400MF (Radosavovic et al., 2020), grouped-conv bottlenecks",
                default_input=(3, 224, 224), min_input=_SMALL)
def regnet_x_400mf(num_classes: int = 1000, in_chans: int = 3, input_size: int = 224) -> Classifier:
    """RegNetX-400MF: 0.4 GFLOPs at 224 px."""
    return _regnet(torchvision.models.regnet_x_400mf, num_classes=num_classes, in_chans=in_chans)


@register_model("regnet_y_400mf", "RegNetY-400MF (Radosavovic et al., 2020), bottlenecks with squeeze-excitation",
                default_input=(3, 224, 224), min_input=_SMALL)
def regnet_y_400mf(num_classes: int = 1000, in_chans: int = 3, input_size: int = 224) -> Classifier:
    """RegNetY-400MF: 0.4 GFLOPs at 224 px."""
    return _regnet(torchvision.models.regnet_y_400mf, num_classes=num_classes, in_chans=in_chans)


@register_model("regnet_x_800mf", "RegNetX-800MF (Radosavovic et al., 2020), grouped-conv bottlenecks",
                default_input=(3, 224, 224), min_input=_SMALL)
def regnet_x_800mf(num_classes: int = 1000, in_chans: int = 3, input_size: int = 224) -> Classifier:
    """RegNetX-800MF: 0.8 GFLOPs at 224 px."""
    return _regnet(torchvision.models.regnet_x_800mf, num_classes=num_classes, in_chans=in_chans)


@register_model("regnet_y_800mf", "RegNetY-800MF (Radosavovic et al., 2020), bottlenecks with squeeze-excitation",
                default_input=(3, 224, 224), min_input=_SMALL)
def regnet_y_800mf(num_classes: int = 1000, in_chans: int = 3, input_size: int = 224) -> Classifier:
    """RegNetY-800MF: 0.8 GFLOPs at 224 px."""
    return _regnet(torchvision.models.regnet_y_800mf, num_classes=num_classes, in_chans=in_chans)
