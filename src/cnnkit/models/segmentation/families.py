"""torchvision's segmentation heads and Mask R-CNN on cnnkit backbones.

torchvision writes the heads; cnnkit supplies the backbone (any zoo classifier or layer list, cut
into feature levels by :class:`~cnnkit.models.detection.backbone.FeatureLevels`, resnet18 by
default) exactly as for the detector families (:mod:`cnnkit.models.detection.families`)::

    deeplabv3   coarsest map -> ASPP (atrous convolutions at several rates + image pooling)
                -> 3x3 conv -> 1x1 conv to K -> bilinear upsampling to the input  (Chen et al. 2017)
    fcn         coarsest map -> 3x3 conv (channels / 4), BN, ReLU, dropout -> 1x1 conv to K
                -> bilinear upsampling to the input  (torchvision's FCNHead)
    mask_rcnn   Faster R-CNN with FPN (see faster_rcnn) plus a mask branch: RoIAlign 14x14 ->
                four 3x3 convs -> 2x2 up-convolution -> a 28x28 mask per class  (He et al. 2017)

torchvision's DeepLabV3 dilates the last ResNet stages to keep an output stride of 8; a cnnkit
backbone is used as it is (stride 32 for a zoo ResNet), so the atrous rates default to the
paper's rates for output stride 16 (6, 12, 18) scaled to the backbone's stride: (3, 6, 9) at 32.

``mask_rcnn`` serves ``task: instance``. It answers as the detectors do (cnnkit labels 0..C-1,
the background shift inside :class:`~cnnkit.models.detection.families.TorchvisionDetector`):
``model(images, targets)`` in training mode, each target with ``boxes`` (K, 4), ``labels`` (K,)
and ``masks`` (K, H, W) uint8, returns the dict of losses (``loss_mask`` among them);
``model(images)`` in eval mode returns per image ``{"boxes", "scores", "labels", "masks"}``, the
masks (K, 1, H, W) probabilities pasted into the input's pixels.
"""

from __future__ import annotations

from typing import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from cnnkit.errors import UserError
from cnnkit.models.detection.backbone import FeatureLevels
from cnnkit.models.detection.families import TorchvisionDetector, WithFPN, _levels, _transform_kw, anchor_sizes
from cnnkit.models.registry import register_model
from cnnkit.models.segmentation.base import Segmenter, stride_probe

#: DeepLabv3's atrous rates for an output stride of 16 (Chen et al. 2017, section 3.3).
DEEPLAB_RATES_AT_16 = (6, 12, 18)


class CoarsestHead(Segmenter):
    """``x -> head(the backbone's coarsest map)``, bilinearly upsampled to the input's size (any size)."""

    def __init__(self, name: str, features: FeatureLevels, head: nn.Module, num_classes: int) -> None:
        super().__init__(name, num_classes)
        self.features = features
        self.head = head

    def forward(self, x: Tensor) -> Tensor:
        y = self.head(self.features(x)["0"])
        return F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)


def deeplab_rates(stride: int) -> list[int]:
    """The paper's rates (6, 12, 18 at output stride 16) for a backbone of this stride: (3, 6, 9) at 32."""
    return [max(1, round(r * 16 / stride)) for r in DEEPLAB_RATES_AT_16]


@register_model("deeplabv3", "DeepLabv3 (Chen et al. 2017; torchvision's head) on a cnnkit backbone (model.backbone, "
                "default resnet18): ASPP on the coarsest map, upsampled to the input",
                default_input=(3, 256, 256), min_input=(1, 64, 64), task="segmentation")
def deeplabv3(num_classes: int = 21, in_chans: int = 3, input_size: int = 256, backbone: nn.Module | None = None,
              atrous_rates: Sequence[int] | None = None) -> CoarsestHead:
    """``atrous_rates``: the ASPP's three dilation rates (default: the paper's, scaled to the backbone's stride)."""
    from torchvision.models.segmentation.deeplabv3 import DeepLabHead

    feats = _levels(backbone, in_chans, stride_probe(input_size), levels=1, min_stride=1)
    if atrous_rates is None:
        atrous_rates = deeplab_rates(feats.strides[-1])
    if (isinstance(atrous_rates, (str, bytes)) or not isinstance(atrous_rates, Sequence) or not atrous_rates
            or not all(isinstance(r, int) and not isinstance(r, bool) and r >= 1 for r in atrous_rates)):
        raise UserError(f"deeplabv3: atrous_rates={atrous_rates!r} must be a list of positive integers, e.g. "
                        f"[3, 6, 9] (the default at stride 32)")
    head = DeepLabHead(feats.channels[-1], num_classes, list(atrous_rates))
    return CoarsestHead("deeplabv3", feats, head, num_classes)


@register_model("fcn", "torchvision's FCN head on a cnnkit backbone (model.backbone, default resnet18): 3x3 conv, "
                "BN, ReLU, dropout, 1x1 conv on the coarsest map, upsampled to the input",
                default_input=(3, 256, 256), min_input=(1, 64, 64), task="segmentation")
def fcn(num_classes: int = 21, in_chans: int = 3, input_size: int = 256,
        backbone: nn.Module | None = None) -> CoarsestHead:
    from torchvision.models.segmentation.fcn import FCNHead

    feats = _levels(backbone, in_chans, stride_probe(input_size), levels=1, min_stride=1)
    return CoarsestHead("fcn", feats, FCNHead(feats.channels[-1], num_classes), num_classes)


@register_model("mask_rcnn", "Mask R-CNN with FPN (torchvision) on a cnnkit backbone (model.backbone, default "
                "resnet18): Faster R-CNN plus a 28x28 mask per detected object", default_input=(3, 320, 320),
                min_input=(1, 64, 64), task="instance")
def mask_rcnn(num_classes: int = 80, in_chans: int = 3, input_size: int = 320, backbone: nn.Module | None = None,
              fpn_channels: int = 128, levels: int = 3, mask_channels: int = 128, conf: float = 0.05,
              iou: float = 0.5, max_det: int = 100, proposals: int = 500,
              rois_per_image: int = 256) -> TorchvisionDetector:
    """``conf`` defaults to torchvision's 0.05 (not the detectors' 0.001): each detection carries an
    H x W mask, and a hundred near-zero-score masks per image cost memory and change no mask AP."""
    from torchvision.models.detection import MaskRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
    from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
    from torchvision.ops import MultiScaleRoIAlign
    from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

    if mask_channels < 1 or fpn_channels < 1:
        raise UserError(f"mask_rcnn: fpn_channels={fpn_channels} and mask_channels={mask_channels} must be >= 1")
    feats = _levels(backbone, in_chans, input_size, levels, min_stride=4)
    body = WithFPN(feats, fpn_channels, LastLevelMaxPool())
    n_maps = len(feats.channels) + 1
    anchors = AnchorGenerator(tuple((s,) for s in anchor_sizes(input_size, n_maps)), ((0.5, 1.0, 2.0),) * n_maps)
    names = [str(i) for i in range(len(feats.channels))]
    box_roi = MultiScaleRoIAlign(names, output_size=7, sampling_ratio=2)
    mask_roi = MultiScaleRoIAlign(names, output_size=14, sampling_ratio=2)
    # torchvision's heads, spelt out to size the mask branch (its own default is 256 channels): the box
    # head is its default (two 1024-wide dense layers); the mask head four 3x3 convolutions, then a
    # 2x2 up-convolution and a 1x1 convolution giving a 28x28 mask per class, background included.
    box_head = TwoMLPHead(fpn_channels * 7 * 7, 1024)
    box_predictor = FastRCNNPredictor(1024, num_classes + 1)
    mask_head = MaskRCNNHeads(fpn_channels, [mask_channels] * 4, 1)
    mask_predictor = MaskRCNNPredictor(mask_channels, mask_channels, num_classes + 1)
    net = MaskRCNN(body, num_classes=None, rpn_anchor_generator=anchors, box_roi_pool=box_roi, box_head=box_head,
                   box_predictor=box_predictor, mask_roi_pool=mask_roi, mask_head=mask_head,
                   mask_predictor=mask_predictor,
                   box_score_thresh=conf, box_nms_thresh=iou, box_detections_per_img=max_det,
                   rpn_pre_nms_top_n_train=2 * proposals, rpn_post_nms_top_n_train=proposals,
                   rpn_pre_nms_top_n_test=proposals, rpn_post_nms_top_n_test=proposals,
                   box_batch_size_per_image=rois_per_image, **_transform_kw(in_chans, input_size))
    return TorchvisionDetector(net, "mask_rcnn", background=True, num_classes=num_classes)
