"""Squeeze-and-excitation ResNets (Hu et al., 2018): the ResNets of :mod:`cnnkit.models.zoo.resnet` with an
SE gate (:class:`cnnkit.nn.attention.SqueezeExcite`) at the end of each residual branch, after its last batch
norm and before the addition (the paper's "SE-ResNet module", figure 3). Everything else is the plain
network's, so an SE variant differs from its ResNet by the gates' parameters only.

* ``se_resnet18/34/50``: torchvision's ResNets, reduction r = 16 (the paper's), the gate on the block's
  output width (planes * expansion); the same CIFAR stem for inputs under 64 px. SE-ResNet-50 with
  1000 classes has 28,088,024 parameters, +9.9% over ResNet-50's 25,557,032 (the paper: ~28.1M).
* ``se_resnet20/32/44/56/110``: the CIFAR ResNets (He et al., 2016, option-B shortcuts), reduction
  r = 8: their 16, 32 and 64 channels would leave r = 16 a bottleneck of 1, 2 and 4 units. A gate on C
  channels has 2 C (C / r) + C / r + C parameters: 82, 292 and 1,096 at 16, 32 and 64 channels, so
  ResNet-20's 3 blocks per stage get 3 * (82 + 292 + 1,096) = 4,410 more, 276,884 in all (+1.6%).

``reduction`` is an option of every builder (``model.options.reduction``).

Example::

    model = get_model("se_resnet20", num_classes=10)
    model.body.layer1[0].se          # SqueezeExcite(channels=16, reduction=8)
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Callable

import torchvision
from torch import Tensor, nn

from cnnkit.errors import UserError
from cnnkit.models.base import Classifier
from cnnkit.models.registry import register_model
from cnnkit.models.zoo.resnet import BasicBlock, _conv3x3, _create_resnet, _init_weights, _stage
from cnnkit.nn.attention import SqueezeExcite

_IMAGENET = (3, 224, 224)
_CIFAR = (3, 32, 32)


# --------------------------------------------------------------------------- blocks


class SEBasicBlock(BasicBlock):
    """The CIFAR basic block with an SE gate on its residual branch, before the addition."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1, reduction: int = 8) -> None:
        super().__init__(in_ch, out_ch, stride)
        self.se = SqueezeExcite(out_ch, reduction)

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.se(self.bn2(self.conv2(out)))
        return self.relu(out + self.shortcut(x))


class SEImageNetBasicBlock(torchvision.models.resnet.BasicBlock):
    """torchvision's basic block (ResNet-18/34) with an SE gate (``reduction``) before the addition."""

    reduction = 16  # torchvision's ResNet builds its blocks with its own arguments: the default reduction

    def __init__(self, *args, **kwargs) -> None:  # torchvision's own arguments, passed by its ResNet
        super().__init__(*args, **kwargs)
        self.se = SqueezeExcite(self.bn2.num_features, self.reduction)

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.se(self.bn2(self.conv2(out)))
        return self.relu(out + identity)


class SEBottleneck(torchvision.models.resnet.Bottleneck):
    """torchvision's bottleneck (ResNet-50) with an SE gate (``reduction``) before the addition."""

    reduction = 16  # torchvision's ResNet builds its blocks with its own arguments: the default reduction

    def __init__(self, *args, **kwargs) -> None:  # torchvision's own arguments, passed by its ResNet
        super().__init__(*args, **kwargs)
        self.se = SqueezeExcite(self.bn3.num_features, self.reduction)

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.se(self.bn3(self.conv3(out)))
        return self.relu(out + identity)


# --------------------------------------------------------------------------- model creation


def _check_reduction(reduction: int) -> int:
    if not isinstance(reduction, int) or isinstance(reduction, bool) or reduction < 1:
        raise UserError(f"reduction must be a positive int (the gate's bottleneck is channels // reduction), "
                        f"got {reduction!r}")
    return reduction


def _torchvision_builder(block: type, layers: list[int], reduction: int) -> Callable[..., nn.Module]:
    """A builder with torchvision's signature (``weights``, ``num_classes``, ``zero_init_residual``) for a
    ResNet of ``block``, its gates with ``reduction`` (the blocks are built with the class's, then re-gated)."""
    reduction = _check_reduction(reduction)

    def build(*, weights: None = None, num_classes: int, zero_init_residual: bool) -> nn.Module:
        net = torchvision.models.resnet.ResNet(block, layers, num_classes=num_classes,
                                               zero_init_residual=zero_init_residual)
        if reduction != block.reduction:
            for m in net.modules():
                if isinstance(m, block):
                    m.se = SqueezeExcite(m.se.channels, reduction)
        return net

    return build


def _create_cifar_se_resnet(depth: int, *, num_classes: int, in_chans: int, reduction: int) -> Classifier:
    """The CIFAR ResNet of ``depth`` (16/32/64 channels, option-B shortcuts) made of :class:`SEBasicBlock`."""
    if depth < 8 or (depth - 2) % 6:
        raise UserError(f"a CIFAR ResNet needs depth = 6n + 2 (20, 32, 44, 56, 110, ...), got {depth}")
    reduction = _check_reduction(reduction)
    n = (depth - 2) // 6
    w1, w2, w3 = 16, 32, 64
    body = nn.Sequential(OrderedDict(
        stem=nn.Sequential(_conv3x3(in_chans, w1), nn.BatchNorm2d(w1), nn.ReLU(inplace=True)),
        layer1=_stage(SEBasicBlock, w1, w1, n, stride=1, reduction=reduction),
        layer2=_stage(SEBasicBlock, w1, w2, n, stride=2, reduction=reduction),
        layer3=_stage(SEBasicBlock, w2, w3, n, stride=2, reduction=reduction),
        pool=nn.AdaptiveAvgPool2d(1),
        flatten=nn.Flatten(),
    ))
    head = nn.Linear(w3, num_classes)
    _init_weights(body)
    _init_weights(head)
    return Classifier(body, head)


# --------------------------------------------------------------------------- ImageNet-shaped builders


@register_model("se_resnet18", "SE-ResNet-18 (Hu et al., 2018): ResNet-18 with SE gates, reduction 16",
                default_input=_IMAGENET, min_input=_CIFAR)
def se_resnet18(num_classes: int = 1000, in_chans: int = 3, input_size: int = 224, cifar_stem: bool | None = None,
                zero_init_residual: bool = False, reduction: int = 16) -> Classifier:
    """SE-ResNet-18: an SE gate before each block's addition; ``cifar_stem`` as for the ResNets."""
    return _create_resnet(_torchvision_builder(SEImageNetBasicBlock, [2, 2, 2, 2], reduction),
                          num_classes=num_classes, in_chans=in_chans, input_size=input_size, cifar_stem=cifar_stem,
                          zero_init_residual=zero_init_residual)


@register_model("se_resnet34", "SE-ResNet-34 (Hu et al., 2018): ResNet-34 with SE gates, reduction 16",
                default_input=_IMAGENET, min_input=_CIFAR)
def se_resnet34(num_classes: int = 1000, in_chans: int = 3, input_size: int = 224, cifar_stem: bool | None = None,
                zero_init_residual: bool = False, reduction: int = 16) -> Classifier:
    """SE-ResNet-34: an SE gate before each block's addition; ``cifar_stem`` as for the ResNets."""
    return _create_resnet(_torchvision_builder(SEImageNetBasicBlock, [3, 4, 6, 3], reduction),
                          num_classes=num_classes, in_chans=in_chans, input_size=input_size, cifar_stem=cifar_stem,
                          zero_init_residual=zero_init_residual)


@register_model("se_resnet50", "SE-ResNet-50 (Hu et al., 2018): ResNet-50 with SE gates, reduction 16",
                default_input=_IMAGENET, min_input=_CIFAR)
def se_resnet50(num_classes: int = 1000, in_chans: int = 3, input_size: int = 224, cifar_stem: bool | None = None,
                zero_init_residual: bool = False, reduction: int = 16) -> Classifier:
    """SE-ResNet-50: an SE gate before each bottleneck's addition; ``cifar_stem`` as for the ResNets."""
    return _create_resnet(_torchvision_builder(SEBottleneck, [3, 4, 6, 3], reduction),
                          num_classes=num_classes, in_chans=in_chans, input_size=input_size, cifar_stem=cifar_stem,
                          zero_init_residual=zero_init_residual)


# --------------------------------------------------------------------------- CIFAR builders


@register_model("se_resnet20", "CIFAR SE-ResNet-20 (Hu et al., 2018): ResNet-20 with SE gates, reduction 8",
                default_input=_CIFAR, min_input=_CIFAR)
def se_resnet20(num_classes: int = 10, in_chans: int = 3, input_size: int = 32, reduction: int = 8) -> Classifier:
    """CIFAR SE-ResNet-20: ResNet-20 with an SE gate before each block's addition (+4,410 parameters, +1.6%)."""
    return _create_cifar_se_resnet(20, num_classes=num_classes, in_chans=in_chans, reduction=reduction)


@register_model("se_resnet32", "CIFAR SE-ResNet-32 (Hu et al., 2018): ResNet-32 with SE gates, reduction 8",
                default_input=_CIFAR, min_input=_CIFAR)
def se_resnet32(num_classes: int = 10, in_chans: int = 3, input_size: int = 32, reduction: int = 8) -> Classifier:
    """CIFAR SE-ResNet-32: ResNet-32 with an SE gate before each block's addition."""
    return _create_cifar_se_resnet(32, num_classes=num_classes, in_chans=in_chans, reduction=reduction)


@register_model("se_resnet44", "CIFAR SE-ResNet-44 (Hu et al., 2018): ResNet-44 with SE gates, reduction 8",
                default_input=_CIFAR, min_input=_CIFAR)
def se_resnet44(num_classes: int = 10, in_chans: int = 3, input_size: int = 32, reduction: int = 8) -> Classifier:
    """CIFAR SE-ResNet-44: ResNet-44 with an SE gate before each block's addition."""
    return _create_cifar_se_resnet(44, num_classes=num_classes, in_chans=in_chans, reduction=reduction)


@register_model("se_resnet56", "CIFAR SE-ResNet-56 (Hu et al., 2018): ResNet-56 with SE gates, reduction 8",
                default_input=_CIFAR, min_input=_CIFAR)
def se_resnet56(num_classes: int = 10, in_chans: int = 3, input_size: int = 32, reduction: int = 8) -> Classifier:
    """CIFAR SE-ResNet-56: ResNet-56 with an SE gate before each block's addition."""
    return _create_cifar_se_resnet(56, num_classes=num_classes, in_chans=in_chans, reduction=reduction)


@register_model("se_resnet110", "CIFAR SE-ResNet-110 (Hu et al., 2018): ResNet-110 with SE gates, reduction 8",
                default_input=_CIFAR, min_input=_CIFAR)
def se_resnet110(num_classes: int = 10, in_chans: int = 3, input_size: int = 32, reduction: int = 8) -> Classifier:
    """CIFAR SE-ResNet-110: ResNet-110 with an SE gate before each block's addition."""
    return _create_cifar_se_resnet(110, num_classes=num_classes, in_chans=in_chans, reduction=reduction)
