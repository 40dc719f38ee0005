"""torchvision's detector families on cnnkit backbones: Faster R-CNN, RetinaNet, FCOS, SSD, SSDlite.

torchvision writes the detectors; cnnkit supplies the backbone (any zoo classifier or layer list,
cut into feature levels by :class:`~cnnkit.models.detection.backbone.FeatureLevels`), sizes the
anchors to the image side, and adapts the conventions:

* images arrive already normalised and resized to ``S x S`` by the detection task, so each
  network's own transform is told ``mean 0, std 1, min_size = max_size = S`` (it does nothing);
* cnnkit's labels are 0..K-1; Faster R-CNN and SSD reserve 0 for the background, so their labels
  are shifted by one on the way in and out;
* ``conf``, ``iou`` and ``max_det`` map to each family's own score threshold, NMS threshold and
  detections per image (``cnnkit predict --conf/--iou`` set them per call).

Two stages or one::

    faster_rcnn   backbone -> FPN (+ max-pool level) -> region proposals (RPN) -> RoIAlign -> box head
    retinanet     backbone -> FPN (+ P6, P7) -> per-anchor class (focal loss) and box regression
    fcos          backbone -> FPN (+ P6, P7) -> per-location class, box distances and centre-ness
    ssd, ssdlite  backbone levels + up to two extra stride-2 blocks -> default boxes at every level
"""

from __future__ import annotations

from collections import OrderedDict
from functools import partial
from typing import Any

import torch
from torch import Tensor, nn

from cnnkit.models.detection.backbone import FeatureLevels
from cnnkit.models.registry import register_model

DEFAULT_BACKBONE = "resnet18"


class TorchvisionDetector(nn.Module):
    """A torchvision detector answering as every cnnkit detector does (see :mod:`cnnkit.models.detection`)."""

    def __init__(self, net: nn.Module, family: str, background: bool, num_classes: int) -> None:
        super().__init__()
        self.net = net
        self.family = family
        self.offset = 1 if background else 0
        self.num_classes = num_classes

    # -- thresholds: the same names as the YOLO detector's

    def _post(self) -> Any:
        return self.net.roi_heads if hasattr(self.net, "roi_heads") else self.net

    @property
    def conf(self) -> float:
        p = self._post()
        return p.score_thresh

    @conf.setter
    def conf(self, v: float) -> None:
        self._post().score_thresh = float(v)

    @property
    def iou(self) -> float:
        return self._post().nms_thresh

    @iou.setter
    def iou(self, v: float) -> None:
        self._post().nms_thresh = float(v)

    @property
    def max_det(self) -> int:
        return self._post().detections_per_img

    @max_det.setter
    def max_det(self, v: int) -> None:
        self._post().detections_per_img = int(v)

    def forward(self, images: Tensor, targets: list[dict[str, Tensor]] | None = None) -> Any:
        batch = list(images)
        if targets is not None:
            shifted = []
            for t in targets:
                s = {"boxes": t["boxes"].to(images.device, torch.float32),
                     "labels": t["labels"].to(images.device, torch.int64) + self.offset}
                if "masks" in t:  # Mask R-CNN: one (H, W) mask per object
                    s["masks"] = t["masks"].to(images.device, torch.uint8)
                shifted.append(s)
            return self.net(batch, shifted)
        was = self.net.training
        self.net.eval()  # without targets there is nothing to learn from: detections
        try:
            out = self.net(batch)
        finally:
            self.net.train(was)
        # Mask R-CNN adds "masks" (K, 1, H, W), each object's probabilities; they pass through.
        return [{**o, "labels": o["labels"] - self.offset} for o in out]


class WithFPN(nn.Module):
    """Feature levels, then a feature pyramid (top-down fusion, ``out_channels`` at every level)."""

    def __init__(self, levels: FeatureLevels, out_channels: int, extra: nn.Module | None) -> None:
        super().__init__()
        from torchvision.ops import FeaturePyramidNetwork

        self.body = levels
        self.fpn = FeaturePyramidNetwork(levels.channels, out_channels, extra_blocks=extra)
        self.out_channels = out_channels

    def forward(self, x: Tensor) -> "OrderedDict[str, Tensor]":
        return self.fpn(self.body(x))


class WithExtras(nn.Module):
    """Feature levels, then ``n`` extra stride-2 blocks (1x1 squeeze, 3x3 stride 2) for SSD's coarse maps
    (two at most, while the map is larger than 2x2)."""

    def __init__(self, levels: FeatureLevels, n: int = 2, channels: int = 256) -> None:
        super().__init__()
        self.body = levels
        c = levels.channels[-1]
        blocks = []
        for _ in range(n):
            # No batch norm: the coarsest maps are 1x1, where one image's statistics are undefined.
            blocks.append(nn.Sequential(nn.Conv2d(c, channels // 2, 1), nn.ReLU(inplace=True),
                                        nn.Conv2d(channels // 2, channels, 3, 2, 1), nn.ReLU(inplace=True)))
            c = channels
        self.extras = nn.ModuleList(blocks)
        self.channels = list(levels.channels) + [channels] * n

    def forward(self, x: Tensor) -> "OrderedDict[str, Tensor]":
        feats = self.body(x)
        last = next(reversed(feats.values()))
        for block in self.extras:
            last = block(last)
            feats[str(len(feats))] = last
        return feats


def _levels(backbone: nn.Module | None, in_chans: int, input_size: int, levels: int, min_stride: int) -> FeatureLevels:
    if backbone is None:
        from cnnkit.models.registry import get_model

        backbone = get_model(DEFAULT_BACKBONE, num_classes=10, in_chans=in_chans, input_size=input_size)
    return FeatureLevels(backbone, (in_chans, input_size, input_size), levels=levels, min_stride=min_stride)


def _fpn_p6p7(feats: FeatureLevels, fpn_channels: int) -> WithFPN:
    """The pyramid of the one-stage families: the levels, then P6 and P7 from P5 (RetinaNet's extras)."""
    from torchvision.ops.feature_pyramid_network import LastLevelP6P7

    return WithFPN(feats, fpn_channels, LastLevelP6P7(fpn_channels, fpn_channels))


def anchor_sizes(input_size: int, n: int) -> list[float]:
    """One anchor side per pyramid level, doubling from ``S / 16``: objects from a sixteenth of the
    image to the whole of it, whatever the backbone's strides."""
    return [input_size / 16 * 2 ** i for i in range(n)]


def _transform_kw(in_chans: int, input_size: int) -> dict[str, Any]:
    return {"min_size": input_size, "max_size": input_size, "image_mean": [0.0] * in_chans,
            "image_std": [1.0] * in_chans}


@register_model("faster_rcnn", "Faster R-CNN with FPN (torchvision) on a cnnkit backbone (model.backbone, "
                "default resnet18): region proposals, RoIAlign, box head", default_input=(3, 320, 320),
                min_input=(1, 64, 64), task="detection")
def faster_rcnn(num_classes: int = 80, in_chans: int = 3, input_size: int = 320, backbone: nn.Module | None = None,
                fpn_channels: int = 128, levels: int = 3, conf: float = 0.001, iou: float = 0.5,
                max_det: int = 100, proposals: int = 500, rois_per_image: int = 256) -> TorchvisionDetector:
    from torchvision.models.detection import FasterRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.ops import MultiScaleRoIAlign
    from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

    feats = _levels(backbone, in_chans, input_size, levels, min_stride=4)
    body = WithFPN(feats, fpn_channels, LastLevelMaxPool())
    n_maps = len(feats.channels) + 1
    anchors = AnchorGenerator(tuple((s,) for s in anchor_sizes(input_size, n_maps)), ((0.5, 1.0, 2.0),) * n_maps)
    roi = MultiScaleRoIAlign([str(i) for i in range(len(feats.channels))], output_size=7, sampling_ratio=2)
    net = FasterRCNN(body, num_classes=num_classes + 1, rpn_anchor_generator=anchors, box_roi_pool=roi,
                     box_score_thresh=conf, box_nms_thresh=iou, box_detections_per_img=max_det,
                     rpn_pre_nms_top_n_train=2 * proposals, rpn_post_nms_top_n_train=proposals,
                     rpn_pre_nms_top_n_test=proposals, rpn_post_nms_top_n_test=proposals,
                     box_batch_size_per_image=rois_per_image, **_transform_kw(in_chans, input_size))
    return TorchvisionDetector(net, "faster_rcnn", background=True, num_classes=num_classes)


@register_model("retinanet", "RetinaNet (torchvision) on a cnnkit backbone: FPN with P6/P7, focal loss, "
                "anchors at 3 scales x 3 ratios", default_input=(3, 320, 320), min_input=(1, 64, 64),
                task="detection")
def retinanet(num_classes: int = 80, in_chans: int = 3, input_size: int = 320, backbone: nn.Module | None = None,
              fpn_channels: int = 128, levels: int = 3, conf: float = 0.001, iou: float = 0.5,
              max_det: int = 100) -> TorchvisionDetector:
    from torchvision.models.detection import RetinaNet
    from torchvision.models.detection.anchor_utils import AnchorGenerator

    feats = _levels(backbone, in_chans, input_size, levels, min_stride=4)
    body = _fpn_p6p7(feats, fpn_channels)
    n_maps = len(feats.channels) + 2
    sizes = tuple(tuple(s * 2 ** (k / 3) for k in range(3)) for s in anchor_sizes(input_size, n_maps))
    anchors = AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * n_maps)
    net = RetinaNet(body, num_classes=num_classes, anchor_generator=anchors, score_thresh=conf, nms_thresh=iou,
                    detections_per_img=max_det, **_transform_kw(in_chans, input_size))
    return TorchvisionDetector(net, "retinanet", background=False, num_classes=num_classes)


@register_model("fcos", "FCOS (torchvision) on a cnnkit backbone: anchor-free, per-location boxes and "
                "centre-ness, FPN with P6/P7", default_input=(3, 320, 320), min_input=(1, 128, 128),
                task="detection")
def fcos(num_classes: int = 80, in_chans: int = 3, input_size: int = 320, backbone: nn.Module | None = None,
         fpn_channels: int = 128, levels: int = 3, conf: float = 0.001, iou: float = 0.6,
         max_det: int = 100) -> TorchvisionDetector:
    from torchvision.models.detection import FCOS
    from torchvision.models.detection.anchor_utils import AnchorGenerator

    feats = _levels(backbone, in_chans, input_size, levels, min_stride=4)
    body = _fpn_p6p7(feats, fpn_channels)
    strides = list(feats.strides) + [feats.strides[-1] * 2, feats.strides[-1] * 4]
    # FCOS reads its "anchors" as one point per location, sized like the level's stride.
    anchors = AnchorGenerator(tuple((float(s),) for s in strides), ((1.0,),) * len(strides))
    net = FCOS(body, num_classes=num_classes, anchor_generator=anchors, score_thresh=conf, nms_thresh=iou,
               detections_per_img=max_det, **_transform_kw(in_chans, input_size))
    return TorchvisionDetector(net, "fcos", background=False, num_classes=num_classes)


def _ssd(lite: bool, num_classes: int, in_chans: int, input_size: int, backbone: nn.Module | None, levels: int,
         extra_channels: int, conf: float, iou: float, max_det: int) -> TorchvisionDetector:
    from torchvision.models.detection.ssd import SSD
    from torchvision.models.detection.anchor_utils import DefaultBoxGenerator
    from torchvision.models.detection.ssdlite import SSDLiteHead

    feats = _levels(backbone, in_chans, input_size, levels, min_stride=8)
    side, extras = -(-input_size // feats.strides[-1]), 0
    while extras < 2 and side > 2:  # coarser maps down to 2x2 (a 1x1 map has no batch-norm statistics)
        side, extras = -(-side // 2), extras + 1
    body = WithExtras(feats, extras, extra_channels)
    n_maps = len(body.channels)
    boxes = DefaultBoxGenerator([[2]] + [[2, 3]] * (n_maps - 1), min_ratio=0.1, max_ratio=0.9)
    head = None
    if lite:
        head = SSDLiteHead(body.channels, boxes.num_anchors_per_location(), num_classes + 1,
                           partial(nn.BatchNorm2d, eps=0.001, momentum=0.03))
    net = SSD(body, boxes, (input_size, input_size), num_classes + 1, image_mean=[0.0] * in_chans,
              image_std=[1.0] * in_chans, head=head, score_thresh=conf, nms_thresh=iou, detections_per_img=max_det)
    return TorchvisionDetector(net, "ssdlite" if lite else "ssd", background=True, num_classes=num_classes)


@register_model("ssd", "SSD (torchvision) on a cnnkit backbone: default boxes on the backbone's last levels "
                "and two extra ones", default_input=(3, 320, 320), min_input=(1, 64, 64), task="detection")
def ssd(num_classes: int = 80, in_chans: int = 3, input_size: int = 320, backbone: nn.Module | None = None,
        levels: int = 3, extra_channels: int = 256, conf: float = 0.001, iou: float = 0.45,
        max_det: int = 100) -> TorchvisionDetector:
    return _ssd(False, num_classes, in_chans, input_size, backbone, levels, extra_channels, conf, iou, max_det)


@register_model("ssdlite", "SSDlite (torchvision): SSD with depthwise-separable heads, on a cnnkit backbone",
                default_input=(3, 320, 320), min_input=(1, 64, 64), task="detection")
def ssdlite(num_classes: int = 80, in_chans: int = 3, input_size: int = 320, backbone: nn.Module | None = None,
            levels: int = 3, extra_channels: int = 256, conf: float = 0.001, iou: float = 0.45,
            max_det: int = 100) -> TorchvisionDetector:
    return _ssd(True, num_classes, in_chans, input_size, backbone, levels, extra_channels, conf, iou, max_det)
