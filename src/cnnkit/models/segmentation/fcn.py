"""Fully convolutional networks (Long, Shelhamer & Darrell 2015): FCN-32s, FCN-16s and FCN-8s on any
cnnkit backbone.

A classifier's trunk already computes class evidence everywhere; FCN reads it out at every
location with a 1x1 convolution ("score" layer) and brings the coarse score map back to the
image. The coarser the map, the blurrier the masks, so FCN-16s and FCN-8s add the scores of
finer maps (skips)::

    backbone (cut into feature levels by FeatureLevels): maps at strides 8, 16 and 32
    FCN-32s:  score(map/32)                                            -> upsample x32 -> logits
    FCN-16s:  up2(score(map/32)) + score(map/16)                       -> upsample x16
    FCN-8s:   up2(up2(score(map/32)) + score(map/16)) + score(map/8)   -> upsample x8

* ``score``: a 1x1 convolution to the K classes. The skip scores start at zero, as in the paper,
  so a fresh FCN-8s begins where FCN-32s would and learns what the finer maps add.
* ``up2``: a 2x learned upsampling, a transposed convolution (kernel 4, stride 2, padding 1)
  initialised to bilinear interpolation, one filter per class (:func:`bilinear_kernel`).
* the final upsampling to the input size is fixed bilinear interpolation (the paper fixes its
  last deconvolution to bilinear too); ``F.interpolate`` computes the same thing on interior
  pixels and repeats the edge instead of fading to zero at the borders.

The backbone is ``model.backbone`` (a zoo classifier or a layer list; resnet18 by default). It
must reach stride 32 with maps at 16 and 8 on the way (five stride-2 steps: a zoo ResNet from
64 px, a VGG, a layer list with five poolings). For FCN-16s and FCN-8s the input sides must be
multiples of 32 (``pad_multiple``), so that each upsampled map meets its skip exactly; FCN-32s
takes any size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cnnkit.errors import UserError
from cnnkit.models.detection.backbone import FeatureLevels
from cnnkit.models.detection.families import _levels
from cnnkit.models.registry import register_model
from cnnkit.models.segmentation.base import Segmenter, stride_probe

COARSEST = 32


# --------------------------------------------------------------------------- building blocks


def bilinear_kernel(factor: int) -> Tensor:
    """The 2-D filter with which a stride-``factor`` transposed convolution does bilinear interpolation:
    the outer product of a triangle ``1 - |i - centre| / factor`` with itself, ``2 factor - factor % 2``
    taps wide (factor 2: ``[0.25, 0.75, 0.75, 0.25]``)."""
    size = 2 * factor - factor % 2
    centre = factor - 1 if size % 2 else factor - 0.5
    taps = 1 - (torch.arange(size, dtype=torch.float32) - centre).abs() / factor
    return taps[:, None] * taps[None, :]


class BilinearUp2(nn.ConvTranspose2d):
    """``(N, K, h, w) -> (N, K, 2h, 2w)``: a learned upsampling that starts as bilinear interpolation of each
    class's map (filter k -> k bilinear, k -> j zero)."""

    def __init__(self, channels: int) -> None:
        super().__init__(channels, channels, kernel_size=4, stride=2, padding=1, bias=False)
        with torch.no_grad():
            self.weight.zero_()
            kernel = bilinear_kernel(2)
            for k in range(channels):
                self.weight[k, k] = kernel


# --------------------------------------------------------------------------- the model


class FCN(Segmenter):
    """``x (N, C, H, W) -> logits (N, K, H, W)`` from the scores of the backbone's last ``skips + 1`` levels."""

    def __init__(self, name: str, features: FeatureLevels, num_classes: int, skips: int) -> None:
        super().__init__(name, num_classes)
        self.features = features
        channels = features.channels  # finest first: strides 8, 16, 32 for FCN-8s
        self.score = nn.Conv2d(channels[-1], num_classes, kernel_size=1)
        self.skip_scores = nn.ModuleList(nn.Conv2d(channels[-2 - i], num_classes, kernel_size=1)
                                         for i in range(skips))  # stride 16, then 8
        for conv in self.skip_scores:
            nn.init.zeros_(conv.weight)
            nn.init.zeros_(conv.bias)
        self.up2 = nn.ModuleList(BilinearUp2(num_classes) for _ in range(skips))
        self.pad_multiple = COARSEST if skips else 1

    def forward(self, x: Tensor) -> Tensor:
        self.check_input(x)
        maps = list(self.features(x).values())
        y = self.score(maps[-1])
        for i, (up, score) in enumerate(zip(self.up2, self.skip_scores)):
            y = up(y) + score(maps[-2 - i])
        return F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)


def _create_fcn(name: str, skips: int, num_classes: int, in_chans: int, input_size: int,
                backbone: nn.Module | None) -> FCN:
    wanted = [COARSEST // 2 ** i for i in range(skips, -1, -1)]  # e.g. [8, 16, 32], finest first
    probe = stride_probe(input_size)
    feats = _levels(backbone, in_chans, probe, levels=skips + 1, min_stride=wanted[0])
    if list(feats.strides) != wanted:
        kind = type(backbone).__name__ if backbone is not None else "resnet18"
        raise UserError(f"{name} needs backbone feature maps at strides {', '.join(map(str, wanted))}; the last "
                        f"levels of backbone {kind} at {probe} px have strides "
                        f"{', '.join(map(str, feats.strides))}. Use a backbone with five stride-2 steps (a zoo "
                        f"ResNet at 64 px or more, a VGG, a layer list with five poolings)")
    return FCN(name, feats, num_classes, skips)


_BACKBONE_NOTE = "on a cnnkit backbone (model.backbone, default resnet18)"


@register_model("fcn32s", f"FCN-32s (Long et al. 2015) {_BACKBONE_NOTE}: scores on the stride-32 map, "
                "upsampled x32", default_input=(3, 256, 256), min_input=(1, 64, 64), task="segmentation")
def fcn32s(num_classes: int = 21, in_chans: int = 3, input_size: int = 256,
           backbone: nn.Module | None = None) -> FCN:
    return _create_fcn("fcn32s", 0, num_classes, in_chans, input_size, backbone)


@register_model("fcn16s", f"FCN-16s (Long et al. 2015) {_BACKBONE_NOTE}: stride-32 scores upsampled x2 "
                "(learned) + stride-16 scores, upsampled x16", default_input=(3, 256, 256), min_input=(1, 64, 64),
                task="segmentation")
def fcn16s(num_classes: int = 21, in_chans: int = 3, input_size: int = 256,
           backbone: nn.Module | None = None) -> FCN:
    return _create_fcn("fcn16s", 1, num_classes, in_chans, input_size, backbone)


@register_model("fcn8s", f"FCN-8s (Long et al. 2015) {_BACKBONE_NOTE}: scores at strides 32, 16 and 8 fused "
                "by learned x2 upsamplings, upsampled x8", default_input=(3, 256, 256), min_input=(1, 64, 64),
                task="segmentation")
def fcn8s(num_classes: int = 21, in_chans: int = 3, input_size: int = 256,
          backbone: nn.Module | None = None) -> FCN:
    return _create_fcn("fcn8s", 2, num_classes, in_chans, input_size, backbone)
