"""Residual networks: torchvision's ImageNet ResNets and the CIFAR networks of the papers.

ImageNet-shaped (torchvision builders): ``resnet18/34/50/101/152``,
``resnext50_32x4d`` and ``wide_resnet50_2``. For inputs under 64 px (or with
``cifar_stem=True``) the 7x7 stride-2 stem and the 3x3 max pool are replaced by
a 3x3 stride-1 convolution and no pooling, so a 32x32 image reaches the last
stage at 4x4 instead of 1x1. ResNet-18 with 1000 classes at 224 px has
11,689,512 parameters and ResNet-50 25,557,032, as in torchvision.

CIFAR networks, written here (torchvision has none):

* ``resnet20/32/44/56/110``: He et al. (2016), section 4.2. A 3x3 convolution
  with 16 channels, then three stages of n = (depth - 2) / 6 basic blocks with
  16, 32 and 64 channels (the second and third start with stride 2), global
  average pooling and a linear layer. Where a block changes the shape, the
  shortcut is the paper's **option B**: a 1x1 stride-2 convolution followed by
  batch norm; every other shortcut is the identity. With 10 classes ResNet-20
  has 272,474 parameters: 269,722 in the convolutions, batch norms and the
  linear layer (the whole network with option A, the parameter-free zero-padded
  identity), plus 2,752 in the two projections, 16->32 (512 + 64 BN) and
  32->64 (2,048 + 128 BN). The paper's "0.27M" fits either.
* ``wrn28_10``: Zagoruyko & Komodakis (2016), Wide ResNet 28-10. A 3x3
  convolution with 16 channels, three stages of 4 pre-activation basic blocks
  (BN-ReLU-conv3x3-BN-ReLU-dropout-conv3x3) with 160, 320 and 640 channels, a
  final BN-ReLU, global average pooling and a linear layer; a shortcut that
  changes the shape is a bias-free 1x1 convolution of the pre-activated input.
  36,479,194 parameters with 10 classes, as in the authors' code.

Stochastic depth (Huang et al., 2016): ``drop_path`` of the CIFAR ResNets and of
WRN-28-10 (default 0, off). In training the residual branch of block l of L is
dropped, per sample, with probability ``drop_path * l / L`` (the paper's linear decay
rule: the last block gets ``drop_path``) and scaled by 1 / (1 - p) when kept
(:func:`torchvision.ops.stochastic_depth`), so evaluation, which keeps every branch,
needs no rescaling. Each block's rate is its ``drop_path`` attribute. The torchvision
ResNets above have no such option.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Callable

import torchvision
from torch import Tensor, nn
from torchvision.ops import stochastic_depth

from cnnkit.errors import UserError
from cnnkit.models.base import Classifier
from cnnkit.models.registry import register_model

_IMAGENET = (3, 224, 224)
_CIFAR = (3, 32, 32)


def _conv3x3(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, kernel_size=3, stride=stride, padding=1, bias=False)


def _init_weights(module: nn.Module) -> None:
    """He (fan-out) normal convolutions, unit BN scale, zero biases, as in torchvision's ResNet."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.zeros_(m.bias)


# --------------------------------------------------------------------------- blocks


class BasicBlock(nn.Module):
    """He et al.'s post-activation basic block, with an option-B projection shortcut."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1, drop_path: float = 0.0) -> None:
        super().__init__()
        self.drop_path = drop_path  # stochastic depth: the probability of dropping the branch in training
        self.conv1 = _conv3x3(in_ch, out_ch, stride)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(out_ch, out_ch)
        self.bn2 = nn.BatchNorm2d(out_ch)
        if stride != 1 or in_ch != out_ch:
            self.shortcut: nn.Module = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, kernel_size=1, stride=stride, bias=False), nn.BatchNorm2d(out_ch))
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = stochastic_depth(self.bn2(self.conv2(out)), self.drop_path, "row", self.training)
        return self.relu(out + self.shortcut(x))


class WideBasicBlock(nn.Module):
    """Zagoruyko & Komodakis' pre-activation block: BN-ReLU-conv-BN-ReLU-dropout-conv."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1, dropout: float = 0.0,
                 drop_path: float = 0.0) -> None:
        super().__init__()
        self.drop_path = drop_path  # stochastic depth: the probability of dropping the branch in training
        self.bn1 = nn.BatchNorm2d(in_ch)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = _conv3x3(in_ch, out_ch, stride)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.relu2 = nn.ReLU(inplace=True)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = _conv3x3(out_ch, out_ch)
        # A shape-changing shortcut projects the pre-activated input (as in the authors' code).
        self.shortcut = (nn.Conv2d(in_ch, out_ch, kernel_size=1, stride=stride, bias=False)
                         if stride != 1 or in_ch != out_ch else None)

    def forward(self, x: Tensor) -> Tensor:
        pre = self.relu1(self.bn1(x))
        shortcut = x if self.shortcut is None else self.shortcut(pre)
        out = self.conv1(pre)
        out = self.conv2(self.dropout(self.relu2(self.bn2(out))))
        return stochastic_depth(out, self.drop_path, "row", self.training) + shortcut


def _stage(block: Callable[..., nn.Module], in_ch: int, out_ch: int, blocks: int, stride: int,
           **block_args) -> nn.Sequential:
    layers = [block(in_ch, out_ch, stride, **block_args)]
    layers += [block(out_ch, out_ch, 1, **block_args) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


def _set_drop_path(body: nn.Module, drop_path: float) -> None:
    """Stochastic depth's linear decay rule (Huang et al., 2016): block l of L (in order) drops its
    residual branch with probability ``drop_path * l / L``."""
    if not 0.0 <= drop_path < 1.0:
        raise UserError(f"drop_path must be in [0, 1), got {drop_path}")
    blocks = [m for m in body.modules() if isinstance(m, (BasicBlock, WideBasicBlock))]
    for l, block in enumerate(blocks, 1):
        block.drop_path = drop_path * l / len(blocks)


# --------------------------------------------------------------------------- model creation


def _create_resnet(builder: Callable[..., nn.Module], *, num_classes: int, in_chans: int, input_size: int,
                   cifar_stem: bool | None, zero_init_residual: bool) -> Classifier:
    """A torchvision ResNet/ResNeXt/Wide ResNet; body is the network with ``fc`` replaced by Identity."""
    net = builder(weights=None, num_classes=num_classes, zero_init_residual=zero_init_residual)
    small = input_size < 64 if cifar_stem is None else cifar_stem
    if small:
        net.conv1 = nn.Conv2d(in_chans, net.conv1.out_channels, kernel_size=3, stride=1, padding=1, bias=False)
        net.maxpool = nn.Identity()
        _init_weights(net.conv1)
    elif in_chans != 3:
        net.conv1 = nn.Conv2d(in_chans, net.conv1.out_channels, kernel_size=7, stride=2, padding=3, bias=False)
        _init_weights(net.conv1)
    head = net.fc
    net.fc = nn.Identity()
    return Classifier(net, head)


def _create_cifar_resnet(depth: int, *, num_classes: int, in_chans: int,
                         widths: tuple[int, int, int] = (16, 32, 64), drop_path: float = 0.0) -> Classifier:
    if depth < 8 or (depth - 2) % 6:
        raise UserError(f"a CIFAR ResNet needs depth = 6n + 2 (20, 32, 44, 56, 110, ...), got {depth}")
    n = (depth - 2) // 6
    w1, w2, w3 = widths
    body = nn.Sequential(OrderedDict(
        stem=nn.Sequential(_conv3x3(in_chans, w1), nn.BatchNorm2d(w1), nn.ReLU(inplace=True)),
        layer1=_stage(BasicBlock, w1, w1, n, stride=1),
        layer2=_stage(BasicBlock, w1, w2, n, stride=2),
        layer3=_stage(BasicBlock, w2, w3, n, stride=2),
        pool=nn.AdaptiveAvgPool2d(1),
        flatten=nn.Flatten(),
    ))
    head = nn.Linear(w3, num_classes)
    _set_drop_path(body, drop_path)
    _init_weights(body)
    _init_weights(head)
    return Classifier(body, head)


def _create_wide_resnet(depth: int, widen_factor: int, *, num_classes: int, in_chans: int,
                        dropout: float, drop_path: float = 0.0) -> Classifier:
    if depth < 10 or (depth - 4) % 6:
        raise UserError(f"a Wide ResNet needs depth = 6n + 4 (16, 22, 28, 40, ...), got {depth}")
    n = (depth - 4) // 6
    w1, w2, w3 = 16 * widen_factor, 32 * widen_factor, 64 * widen_factor
    body = nn.Sequential(OrderedDict(
        stem=_conv3x3(in_chans, 16),
        layer1=_stage(WideBasicBlock, 16, w1, n, stride=1, dropout=dropout),
        layer2=_stage(WideBasicBlock, w1, w2, n, stride=2, dropout=dropout),
        layer3=_stage(WideBasicBlock, w2, w3, n, stride=2, dropout=dropout),
        norm=nn.BatchNorm2d(w3),
        relu=nn.ReLU(inplace=True),
        pool=nn.AdaptiveAvgPool2d(1),
        flatten=nn.Flatten(),
    ))
    head = nn.Linear(w3, num_classes)
    _set_drop_path(body, drop_path)
    _init_weights(body)
    _init_weights(head)
    return Classifier(body, head)


# --------------------------------------------------------------------------- ImageNet-shaped builders


@register_model("resnet18", "ResNet-18 (He et al., 2016); CIFAR stem for inputs under 64 px",
                default_input=_IMAGENET, min_input=_CIFAR)
def resnet18(num_classes: int = 1000, in_chans: int = 3, input_size: int = 224, cifar_stem: bool | None = None,
             zero_init_residual: bool = False) -> Classifier:
    """ResNet-18; ``cifar_stem`` forces (True) or forbids (False) the 3x3 stride-1 stem."""
    return _create_resnet(torchvision.models.resnet18, num_classes=num_classes, in_chans=in_chans,
                          input_size=input_size, cifar_stem=cifar_stem, zero_init_residual=zero_init_residual)


@register_model("resnet34", "ResNet-34 (He et al., 2016); CIFAR stem for inputs under 64 px",
                default_input=_IMAGENET, min_input=_CIFAR)
def resnet34(num_classes: int = 1000, in_chans: int = 3, input_size: int = 224, cifar_stem: bool | None = None,
             zero_init_residual: bool = False) -> Classifier:
    """ResNet-34; ``cifar_stem`` forces (True) or forbids (False) the 3x3 stride-1 stem."""
    return _create_resnet(torchvision.models.resnet34, num_classes=num_classes, in_chans=in_chans,
                          input_size=input_size, cifar_stem=cifar_stem, zero_init_residual=zero_init_residual)


@register_model("resnet50", "ResNet-50 (He et al., 2016); CIFAR stem for inputs under 64 px",
                default_input=_IMAGENET, min_input=_CIFAR)
def resnet50(num_classes: int = 1000, in_chans: int = 3, input_size: int = 224, cifar_stem: bool | None = None,
             zero_init_residual: bool = False) -> Classifier:
    """ResNet-50; ``cifar_stem`` forces (True) or forbids (False) the 3x3 stride-1 stem."""
    return _create_resnet(torchvision.models.resnet50, num_classes=num_classes, in_chans=in_chans,
                          input_size=input_size, cifar_stem=cifar_stem, zero_init_residual=zero_init_residual)


@register_model("resnet101", "ResNet-101 (He et al., 2016); CIFAR stem for inputs under 64 px",
                default_input=_IMAGENET, min_input=_CIFAR)
def resnet101(num_classes: int = 1000, in_chans: int = 3, input_size: int = 224, cifar_stem: bool | None = None,
              zero_init_residual: bool = False) -> Classifier:
    """ResNet-101; ``cifar_stem`` forces (True) or forbids (False) the 3x3 stride-1 stem."""
    return _create_resnet(torchvision.models.resnet101, num_classes=num_classes, in_chans=in_chans,
                          input_size=input_size, cifar_stem=cifar_stem, zero_init_residual=zero_init_residual)


@register_model("resnet152", "ResNet-152 (He et al., 2016); CIFAR stem for inputs under 64 px",
                default_input=_IMAGENET, min_input=_CIFAR)
def resnet152(num_classes: int = 1000, in_chans: int = 3, input_size: int = 224, cifar_stem: bool | None = None,
              zero_init_residual: bool = False) -> Classifier:
    """ResNet-152; ``cifar_stem`` forces (True) or forbids (False) the 3x3 stride-1 stem."""
    return _create_resnet(torchvision.models.resnet152, num_classes=num_classes, in_chans=in_chans,
                          input_size=input_size, cifar_stem=cifar_stem, zero_init_residual=zero_init_residual)


@register_model("resnext50_32x4d", "ResNeXt-50 32x4d (Xie et al., 2017); CIFAR stem for inputs under 64 px",
                default_input=_IMAGENET, min_input=_CIFAR)
def resnext50_32x4d(num_classes: int = 1000, in_chans: int = 3, input_size: int = 224,
                    cifar_stem: bool | None = None, zero_init_residual: bool = False) -> Classifier:
    """ResNeXt-50 (32 groups of width 4); ``cifar_stem`` as for the ResNets."""
    return _create_resnet(torchvision.models.resnext50_32x4d, num_classes=num_classes, in_chans=in_chans,
                          input_size=input_size, cifar_stem=cifar_stem, zero_init_residual=zero_init_residual)


@register_model("wide_resnet50_2",
                "Wide ResNet-50-2 (Zagoruyko & Komodakis, 2016), ImageNet bottleneck version; "
                "CIFAR stem for inputs under 64 px",
                default_input=_IMAGENET, min_input=_CIFAR)
def wide_resnet50_2(num_classes: int = 1000, in_chans: int = 3, input_size: int = 224,
                    cifar_stem: bool | None = None, zero_init_residual: bool = False) -> Classifier:
    """ResNet-50 with bottlenecks twice as wide; ``cifar_stem`` as for the ResNets."""
    return _create_resnet(torchvision.models.wide_resnet50_2, num_classes=num_classes, in_chans=in_chans,
                          input_size=input_size, cifar_stem=cifar_stem, zero_init_residual=zero_init_residual)


# --------------------------------------------------------------------------- CIFAR builders


@register_model("resnet20", "CIFAR ResNet-20 (He et al., 2016), 16/32/64 channels, option-B shortcuts",
                default_input=_CIFAR, min_input=_CIFAR)
def resnet20(num_classes: int = 10, in_chans: int = 3, input_size: int = 32,
             drop_path: float = 0.0) -> Classifier:
    """CIFAR ResNet-20: 3 stages of 3 basic blocks; projection (option B) shortcuts;
    ``drop_path``: stochastic depth, the last block's drop rate."""
    return _create_cifar_resnet(20, num_classes=num_classes, in_chans=in_chans, drop_path=drop_path)


@register_model("resnet32", "CIFAR ResNet-32 (He et al., 2016), 16/32/64 channels, option-B shortcuts",
                default_input=_CIFAR, min_input=_CIFAR)
def resnet32(num_classes: int = 10, in_chans: int = 3, input_size: int = 32,
             drop_path: float = 0.0) -> Classifier:
    """CIFAR ResNet-32: 3 stages of 5 basic blocks; projection (option B) shortcuts;
    ``drop_path``: stochastic depth, the last block's drop rate."""
    return _create_cifar_resnet(32, num_classes=num_classes, in_chans=in_chans, drop_path=drop_path)


@register_model("resnet44", "CIFAR ResNet-44 (He et al., 2016), 16/32/64 channels, option-B shortcuts",
                default_input=_CIFAR, min_input=_CIFAR)
def resnet44(num_classes: int = 10, in_chans: int = 3, input_size: int = 32,
             drop_path: float = 0.0) -> Classifier:
    """CIFAR ResNet-44: 3 stages of 7 basic blocks; projection (option B) shortcuts;
    ``drop_path``: stochastic depth, the last block's drop rate."""
    return _create_cifar_resnet(44, num_classes=num_classes, in_chans=in_chans, drop_path=drop_path)


@register_model("resnet56", "CIFAR ResNet-56 (He et al., 2016), 16/32/64 channels, option-B shortcuts",
                default_input=_CIFAR, min_input=_CIFAR)
def resnet56(num_classes: int = 10, in_chans: int = 3, input_size: int = 32,
             drop_path: float = 0.0) -> Classifier:
    """CIFAR ResNet-56: 3 stages of 9 basic blocks; projection (option B) shortcuts;
    ``drop_path``: stochastic depth, the last block's drop rate."""
    return _create_cifar_resnet(56, num_classes=num_classes, in_chans=in_chans, drop_path=drop_path)


@register_model("resnet110", "CIFAR ResNet-110 (He et al., 2016), 16/32/64 channels, option-B shortcuts",
                default_input=_CIFAR, min_input=_CIFAR)
def resnet110(num_classes: int = 10, in_chans: int = 3, input_size: int = 32,
              drop_path: float = 0.0) -> Classifier:
    """CIFAR ResNet-110: 3 stages of 18 basic blocks; projection (option B) shortcuts;
    ``drop_path``: stochastic depth, the last block's drop rate."""
    return _create_cifar_resnet(110, num_classes=num_classes, in_chans=in_chans, drop_path=drop_path)


@register_model("wrn28_10", "Wide ResNet 28-10 (Zagoruyko & Komodakis, 2016) for CIFAR, pre-activation blocks",
                default_input=_CIFAR, min_input=_CIFAR)
def wrn28_10(num_classes: int = 10, in_chans: int = 3, input_size: int = 32, dropout: float = 0.0,
             drop_path: float = 0.0) -> Classifier:
    """WRN-28-10: 3 stages of 4 pre-activation blocks, 160/320/640 channels; ``dropout`` between the convs
    of each block (the paper uses 0.3 in some runs); ``drop_path``: stochastic depth, the last block's rate."""
    return _create_wide_resnet(28, 10, num_classes=num_classes, in_chans=in_chans, dropout=dropout,
                               drop_path=drop_path)
