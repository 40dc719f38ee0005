"""A single-stage, anchor-free detector of the YOLO family, written to be read part by part.

::

    image (3, S, S)
      └─ backbone: strided conv + CSP stages ─ P3 (stride 8), P4 (16), P5 (32, after SPPF)
           └─ neck: top-down fusion (FPN), then bottom-up (PAN) ─ N3, N4, N5
                └─ head, at every location of every level: C class logits and four
                   distances (left, top, right, bottom) from the location's centre to the box's sides,
                   each read as the expectation of a distribution over 0..reg_max-1 strides
    training:  each ground-truth box picks the locations that already score and fit it best
               (task-aligned assignment, TOOD: Feng et al. 2021, as in YOLOv8);
               loss = 0.5 BCE on the classes (soft, IoU-aware targets) + 7.5 CIoU on the boxes
                      + 1.5 distribution focal loss on the distances (GFL: Li et al. 2020)
    inference: boxes decoded from the distances, scores = sigmoid(logits), then per-class NMS

The same network answers three calls: ``model(images, targets)`` in training mode returns
its losses (``{"box": .., "cls": ..}``), ``model(images)`` in eval mode returns one
``{"boxes", "scores", "labels"}`` dict per image after NMS (boxes in input pixels, as
torchvision's detectors do), and :meth:`YOLODetector.raw` returns every location's
decoded box and class probabilities before NMS (what ONNX export carries).

Options (``model.options``): ``reg_max`` (16; 1 gives one softplus distance per side and no DFL),
``box_weight``, ``cls_weight``, ``dfl_weight``, ``topk`` (locations per box), ``conf``/``iou``/``max_det``.

Sizes: ``yolo_n`` (width 16, depth 1) and ``yolo_s`` (width 32, depth 1); the input side
must be a multiple of 32 so that every level's grid is exact. ``cspnet_n`` / ``cspnet_s`` are
the same backbones as classifiers: a run of one, given as ``model.backbone_weights``, starts
the detector's backbone from what it learnt.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import batched_nms, box_iou, complete_box_iou_loss

from cnnkit.errors import UserError
from cnnkit.models.registry import register_model

STRIDES = (8, 16, 32)


# --------------------------------------------------------------------------- building blocks


def conv_bn(c_in: int, c_out: int, k: int = 3, s: int = 1) -> nn.Sequential:
    """Convolution (no bias: the batch norm has one), batch norm, SiLU."""
    return nn.Sequential(nn.Conv2d(c_in, c_out, k, s, k // 2, bias=False), nn.BatchNorm2d(c_out), nn.SiLU())


class Bottleneck(nn.Module):
    """Two 3x3 convolutions, with the input added back when ``shortcut``."""

    def __init__(self, c: int, shortcut: bool = True) -> None:
        super().__init__()
        self.body = nn.Sequential(conv_bn(c, c), conv_bn(c, c))
        self.shortcut = shortcut

    def forward(self, x: Tensor) -> Tensor:
        y = self.body(x)
        return x + y if self.shortcut else y


class CSPBlock(nn.Module):
    """Cross-stage partial block: a 1x1 convolution splits the channels in two halves; one half goes
    through ``n`` bottlenecks, keeping every intermediate output; all of them are concatenated and
    mixed by a last 1x1 convolution. Cheap, and gradients reach early layers by short paths."""

    def __init__(self, c_in: int, c_out: int, n: int = 1, shortcut: bool = True) -> None:
        super().__init__()
        self.half = c_out // 2
        self.split = conv_bn(c_in, 2 * self.half, 1)
        self.blocks = nn.ModuleList(Bottleneck(self.half, shortcut) for _ in range(n))
        self.merge = conv_bn((2 + n) * self.half, c_out, 1)

    def forward(self, x: Tensor) -> Tensor:
        parts = list(self.split(x).chunk(2, 1))
        for block in self.blocks:
            parts.append(block(parts[-1]))
        return self.merge(torch.cat(parts, 1))


class SPPF(nn.Module):
    """Spatial pyramid pooling, fast: three chained 5x5 max pools (receptive fields 5, 9, 13) concatenated,
    so the last stage sees context at several scales at the cost of one layer."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        hidden = c_in // 2
        self.reduce = conv_bn(c_in, hidden, 1)
        self.pool = nn.MaxPool2d(5, 1, 2)
        self.merge = conv_bn(4 * hidden, c_out, 1)

    def forward(self, x: Tensor) -> Tensor:
        x = self.reduce(x)
        p1 = self.pool(x)
        p2 = self.pool(p1)
        return self.merge(torch.cat([x, p1, p2, self.pool(p2)], 1))


# --------------------------------------------------------------------------- backbone, neck, head


class Backbone(nn.Module):
    """Five stride-2 steps; the last three stages' outputs are the pyramid P3, P4, P5."""

    def __init__(self, in_chans: int, width: int, depth: int) -> None:
        super().__init__()
        w = [width, 2 * width, 4 * width, 8 * width, 16 * width]
        self.stem = conv_bn(in_chans, w[0], 3, 2)
        self.stage2 = nn.Sequential(conv_bn(w[0], w[1], 3, 2), CSPBlock(w[1], w[1], depth))
        self.stage3 = nn.Sequential(conv_bn(w[1], w[2], 3, 2), CSPBlock(w[2], w[2], 2 * depth))
        self.stage4 = nn.Sequential(conv_bn(w[2], w[3], 3, 2), CSPBlock(w[3], w[3], 2 * depth))
        self.stage5 = nn.Sequential(conv_bn(w[3], w[4], 3, 2), CSPBlock(w[4], w[4], depth), SPPF(w[4], w[4]))
        self.channels = (w[2], w[3], w[4])

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        p3 = self.stage3(self.stage2(self.stem(x)))
        p4 = self.stage4(p3)
        return p3, p4, self.stage5(p4)


class Neck(nn.Module):
    """PAN: deep, semantic features flow down to the fine levels (upsample + concatenate), then the
    fine levels' localisation flows back up (strided convolution + concatenate)."""

    def __init__(self, channels: tuple[int, int, int], depth: int) -> None:
        super().__init__()
        c3, c4, c5 = channels
        self.top_down4 = CSPBlock(c5 + c4, c4, depth, shortcut=False)
        self.top_down3 = CSPBlock(c4 + c3, c3, depth, shortcut=False)
        self.down3 = conv_bn(c3, c3, 3, 2)
        self.bottom_up4 = CSPBlock(c3 + c4, c4, depth, shortcut=False)
        self.down4 = conv_bn(c4, c4, 3, 2)
        self.bottom_up5 = CSPBlock(c4 + c5, c5, depth, shortcut=False)

    def forward(self, p3: Tensor, p4: Tensor, p5: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        t4 = self.top_down4(torch.cat([F.interpolate(p5, scale_factor=2.0, mode="nearest"), p4], 1))
        n3 = self.top_down3(torch.cat([F.interpolate(t4, scale_factor=2.0, mode="nearest"), p3], 1))
        n4 = self.bottom_up4(torch.cat([self.down3(n3), t4], 1))
        n5 = self.bottom_up5(torch.cat([self.down4(n4), p5], 1))
        return n3, n4, n5


class Head(nn.Module):
    """Decoupled, per level: a box branch and a class branch (C logits).

    The box branch gives, for each of the four sides, either one number (``reg_max`` 1: a distance
    in strides, through a softplus) or ``reg_max`` logits of a distribution over the distances
    0, 1, .., reg_max - 1 strides, whose expectation is the distance (the distribution focal loss of
    Li et al. 2020, GFL, as in YOLOv8): a side the network is unsure of can spread its mass over two
    bins instead of averaging to a wrong value.
    """

    PRIOR = 0.01  # the class bias starts every score at 1%: the many background locations do not
    #               swamp the first steps' loss (Lin et al. 2017, RetinaNet)

    def __init__(self, channels: tuple[int, ...], num_classes: int, reg_max: int = 16) -> None:
        super().__init__()
        self.reg_max = reg_max
        cb = max(16, channels[0] // 4, 4 * reg_max if reg_max > 1 else 0)
        cc = max(channels[0], min(num_classes, 100))
        out = 4 * reg_max if reg_max > 1 else 4
        self.box = nn.ModuleList(nn.Sequential(conv_bn(c, cb), conv_bn(cb, cb), nn.Conv2d(cb, out, 1))
                                 for c in channels)
        self.cls = nn.ModuleList(nn.Sequential(conv_bn(c, cc), conv_bn(cc, cc), nn.Conv2d(cc, num_classes, 1))
                                 for c in channels)
        for branch in self.cls:
            nn.init.constant_(branch[-1].bias, -math.log((1 - self.PRIOR) / self.PRIOR))
        for branch in self.box:
            nn.init.zeros_(branch[-1].bias)

    def forward(self, feats: tuple[Tensor, ...]) -> tuple[Tensor, Tensor]:
        """``(box outputs (N, A, 4 or 4 * reg_max), logits (N, A, C))``, the A locations of all levels in order."""
        dist = [b(f).flatten(2).transpose(1, 2) for b, f in zip(self.box, feats)]
        cls = [c(f).flatten(2).transpose(1, 2) for c, f in zip(self.cls, feats)]
        return torch.cat(dist, 1), torch.cat(cls, 1)

    def distances(self, out: Tensor) -> Tensor:
        """The four distances (left, top, right, bottom) of every location, in strides ``(N, A, 4)``."""
        if self.reg_max == 1:
            # At least 1% of a stride: a box of zero width (softplus underflows near -20) has an
            # undefined aspect ratio in the CIoU loss.
            return F.softplus(out).clamp_min(0.01)
        bins = torch.arange(self.reg_max, device=out.device, dtype=out.dtype)
        probs = out.unflatten(-1, (4, self.reg_max)).softmax(-1)
        return (probs @ bins).clamp_min(0.01)


def distribution_focal_loss(out: Tensor, target: Tensor, reg_max: int) -> Tensor:
    """DFL per location ``(K,)``: ``out`` (K, 4 * reg_max) bin logits, ``target`` (K, 4) distances in strides.

    A target between bins ``l`` and ``l + 1`` is the mix ``(l + 1 - t)`` of bin l and ``(t - l)`` of bin
    l + 1, whose expectation is exactly t; the loss is the cross-entropy to that mix, averaged over the
    four sides.
    """
    t = target.clamp(0, reg_max - 1 - 0.01)
    left = t.floor().long()
    w_right = t - left
    logp = out.unflatten(-1, (4, reg_max)).log_softmax(-1)
    loss = -(logp.gather(-1, left.unsqueeze(-1)).squeeze(-1) * (1 - w_right)
             + logp.gather(-1, (left + 1).unsqueeze(-1)).squeeze(-1) * w_right)
    return loss.mean(-1)


def grid_points(sizes: list[tuple[int, int]], strides: tuple[int, ...], device, dtype) -> tuple[Tensor, Tensor]:
    """The centre of every location, in input pixels ``(A, 2)``, and its level's stride ``(A, 1)``."""
    points, steps = [], []
    for (h, w), s in zip(sizes, strides):
        ys = (torch.arange(h, device=device, dtype=dtype) + 0.5) * s
        xs = (torch.arange(w, device=device, dtype=dtype) + 0.5) * s
        yy, xx = torch.meshgrid(ys, xs, indexing="ij")
        points.append(torch.stack([xx, yy], -1).reshape(-1, 2))
        steps.append(torch.full((h * w, 1), float(s), device=device, dtype=dtype))
    return torch.cat(points), torch.cat(steps)


# --------------------------------------------------------------------------- training targets


@torch.no_grad()
def task_aligned_assign(scores: Tensor, boxes: Tensor, points: Tensor, gt_labels: Tensor, gt_boxes: Tensor,
                        gt_mask: Tensor, topk: int = 10, alpha: float = 0.5, beta: float = 6.0,
                        eps: float = 1e-9) -> tuple[Tensor, Tensor, Tensor]:
    """Which location learns which ground-truth box, and how strongly (TOOD's task-aligned assigner).

    ``scores`` (N, A, C) predicted probabilities and ``boxes`` (N, A, 4) predicted boxes (both detached),
    ``points`` (A, 2) location centres; ground truth padded to M per image: ``gt_labels`` (N, M),
    ``gt_boxes`` (N, M, 4), ``gt_mask`` (N, M) true for real boxes.

    1. A location may serve a box only if its centre lies inside the box.
    2. Alignment ``t = score(box's class) ** alpha * IoU(prediction, box) ** beta``: high where the
       location already classifies *and* localises the box well.
    3. Each box takes its ``topk`` best-aligned locations; a location claimed by several boxes
       keeps the one it overlaps most.
    4. The class target of a location is its alignment, rescaled so that each box's best location
       gets that box's best IoU: the score learns to predict localisation quality.

    Returns ``(target_boxes (N, A, 4), target_scores (N, A, C), foreground (N, A) bool)``.
    """
    n, a, c = scores.shape
    m = gt_boxes.shape[1]
    if m == 0:
        return boxes.new_zeros(n, a, 4), scores.new_zeros(n, a, c), torch.zeros(n, a, dtype=torch.bool,
                                                                                   device=scores.device)
    x, y = points[:, 0], points[:, 1]
    g = gt_boxes.unsqueeze(2)  # (N, M, 1, 4)
    inside = ((x > g[..., 0]) & (y > g[..., 1]) & (x < g[..., 2]) & (y < g[..., 3]))  # (N, M, A)
    inside &= gt_mask.unsqueeze(-1)
    ious = torch.stack([box_iou(gt_boxes[i], boxes[i]) for i in range(n)])  # (N, M, A)
    # A padding box (all zeros) against a predicted box of no area is 0 / 0: zero it, or the NaN
    # would reach every alignment through the multiplication by the mask.
    ious = torch.where(gt_mask.unsqueeze(-1), torch.nan_to_num(ious, nan=0.0), 0.0).clamp_(0)
    labels = gt_labels.clamp(0, c - 1).unsqueeze(-1).expand(n, m, a)
    cls_score = scores.transpose(1, 2).gather(1, labels)  # (N, M, A): each box's class score at each location
    align = cls_score.pow(alpha) * ious.pow(beta) * inside
    k = min(topk, a)
    top = align.topk(k, dim=-1).indices
    chosen = torch.zeros_like(inside).scatter_(-1, top, True) & inside
    # A location claimed by more than one box serves the one it overlaps most.
    multi = chosen.sum(1, keepdim=True) > 1  # (N, 1, A)
    best = torch.zeros_like(chosen).scatter_(1, (ious * chosen).argmax(1, keepdim=True), True)
    chosen = torch.where(multi, best & inside, chosen)
    foreground = chosen.any(1)  # (N, A)
    gt_index = chosen.float().argmax(1)  # (N, A)
    target_boxes = gt_boxes.gather(1, gt_index.unsqueeze(-1).expand(n, a, 4))
    target_labels = gt_labels.gather(1, gt_index).clamp(0, c - 1)
    align = align * chosen
    norm = (align * (ious * chosen).amax(-1, keepdim=True) / (align.amax(-1, keepdim=True) + eps)).amax(1)
    target_scores = F.one_hot(target_labels, c).to(scores.dtype) * (norm * foreground).unsqueeze(-1)
    return target_boxes, target_scores, foreground


def pad_targets(targets: list[dict[str, Tensor]], device) -> tuple[Tensor, Tensor, Tensor]:
    """A batch's per-image boxes and labels as padded ``(N, M, 4)``, ``(N, M)`` and a mask ``(N, M)``."""
    m = max((len(t["labels"]) for t in targets), default=0)
    n = len(targets)
    boxes = torch.zeros(n, m, 4, device=device)
    labels = torch.zeros(n, m, dtype=torch.long, device=device)
    mask = torch.zeros(n, m, dtype=torch.bool, device=device)
    for i, t in enumerate(targets):
        k = len(t["labels"])
        if k:
            boxes[i, :k] = t["boxes"].to(device, torch.float32)
            labels[i, :k] = t["labels"].to(device)
            mask[i, :k] = True
    return boxes, labels, mask


# --------------------------------------------------------------------------- the detector


class YOLODetector(nn.Module):
    """Backbone, neck and head, with the loss (training) and the post-processing (inference)."""

    def __init__(self, num_classes: int, in_chans: int = 3, input_size: int = 320, width: int = 16,
                 depth: int = 1, conf: float = 0.001, iou: float = 0.6, max_det: int = 100,
                 box_weight: float = 7.5, cls_weight: float = 0.5, dfl_weight: float = 1.5, topk: int = 10,
                 reg_max: int = 16, backbone: "Backbone | None" = None) -> None:
        super().__init__()
        if input_size % 32:
            raise UserError(f"a yolo detector needs data.image_size divisible by 32 (its coarsest grid has "
                            f"stride 32), got {input_size}; try {max(32, round(input_size / 32) * 32)}")
        if not (isinstance(reg_max, int) and 1 <= reg_max <= 64):
            raise UserError(f"model.options.reg_max must be an integer in 1..64 (1: one distance per side, "
                            f"more: a distribution over that many bins), got {reg_max!r}")
        self.num_classes = num_classes
        self.input_size = input_size
        self.backbone = backbone if backbone is not None else Backbone(in_chans, width, depth)
        self.neck = Neck(self.backbone.channels, depth)
        self.head = Head(self.backbone.channels, num_classes, reg_max)
        # Post-processing settings: plain attributes, not state (predict sets conf/iou per call).
        self.conf, self.iou, self.max_det = conf, iou, max_det
        self.box_weight, self.cls_weight, self.dfl_weight, self.topk = box_weight, cls_weight, dfl_weight, topk

    # -- the network

    def _outputs(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """``(boxes (N, A, 4) in input pixels, class logits (N, A, C), box outputs of the head,
        location centres (A, 2), strides (A, 1))``."""
        feats = self.neck(*self.backbone(images))
        out, logits = self.head(feats)
        points, strides = grid_points([f.shape[-2:] for f in feats], STRIDES, images.device, out.dtype)
        ltrb = self.head.distances(out) * strides
        boxes = torch.cat([points - ltrb[..., :2], points + ltrb[..., 2:]], -1)
        return boxes, logits, out, points, strides

    def raw(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """Every location's box ``(N, A, 4)`` (x1, y1, x2, y2 in input pixels) and class logits ``(N, A, C)``."""
        boxes, logits, *_ = self._outputs(images)
        return boxes, logits

    def forward(self, images: Tensor, targets: list[dict[str, Tensor]] | None = None) -> Any:
        boxes, logits, out, points, strides = self._outputs(images)
        if targets is not None:
            return self.loss(boxes, logits, targets, out, points, strides)
        if self.training:
            return boxes, logits
        return self.postprocess(boxes, logits.sigmoid(), images.shape[-2:])

    # -- training

    def loss(self, boxes: Tensor, logits: Tensor, targets: list[dict[str, Tensor]], out: Tensor,
             points: Tensor, strides: Tensor) -> dict[str, Tensor]:
        """``{"box": CIoU loss, "cls": BCE loss[, "dfl": DFL]}``, already weighted; their sum is the training loss.

        Every term is normalised by the sum of the class targets, and the box terms of a location are
        weighted by its class target: the locations that align best with their box teach the most.
        """
        boxes, logits, out, points = boxes.float(), logits.float(), out.float(), points.float()
        gt_boxes, gt_labels, gt_mask = pad_targets(targets, boxes.device)
        t_boxes, t_scores, fg = task_aligned_assign(logits.detach().sigmoid(), boxes.detach(), points,
                                                    gt_labels, gt_boxes, gt_mask, topk=self.topk)
        total = t_scores.sum().clamp_min(1.0)
        cls = F.binary_cross_entropy_with_logits(logits, t_scores, reduction="sum") / total
        losses = {"cls": self.cls_weight * cls}
        if fg.any():
            weight = t_scores.sum(-1)[fg]
            box = (complete_box_iou_loss(boxes[fg], t_boxes[fg], reduction="none") * weight).sum() / total
        else:
            box = boxes.sum() * 0.0
        losses["box"] = self.box_weight * box
        if self.head.reg_max > 1:
            if fg.any():
                # The target distances of each foreground location, in its level's strides.
                p = points.expand_as(boxes[..., :2])[fg]
                s = strides.float().expand(boxes.shape[0], -1, 1)[fg]
                t = t_boxes[fg]
                target = torch.cat([p - t[:, :2], t[:, 2:] - p], -1) / s
                dfl = (distribution_focal_loss(out[fg], target, self.head.reg_max) * weight).sum() / total
            else:
                dfl = out.sum() * 0.0
            losses["dfl"] = self.dfl_weight * dfl
        return losses

    # -- inference

    @torch.no_grad()
    def postprocess(self, boxes: Tensor, scores: Tensor, size: tuple[int, int]) -> list[dict[str, Tensor]]:
        return postprocess(boxes, scores, size, self.conf, self.iou, self.max_det)


class PreNMS(nn.Module):
    """A detector up to NMS: ``(boxes (N, A, 4) in input pixels, class probabilities (N, A, C))``, the
    part ONNX export carries (NMS then runs as :func:`postprocess`, the same code as in torch)."""

    output_names = ("boxes", "scores")

    def __init__(self, detector: YOLODetector) -> None:
        super().__init__()
        self.detector = detector

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        boxes, logits = self.detector.raw(images)
        return boxes, logits.sigmoid()


@torch.no_grad()
def postprocess(boxes: Tensor, scores: Tensor, size: tuple[int, int], conf: float, iou: float,
                max_det: int = 100, max_candidates: int = 3000) -> list[dict[str, Tensor]]:
    """Per image: candidates above ``conf`` (at most ``max_candidates``, best first), boxes clipped to
    the image, per-class NMS at ``iou`` (torchvision's batched_nms), the best ``max_det`` kept."""
    h, w = int(size[0]), int(size[1])
    out = []
    for b, s in zip(boxes.float(), scores.float()):
        loc, cls = (s > conf).nonzero(as_tuple=True)
        sc = s[loc, cls]
        if sc.numel() > max_candidates:
            sc, order = sc.topk(max_candidates)
            loc, cls = loc[order], cls[order]
        bx = b[loc].clone()
        bx[:, 0::2] = bx[:, 0::2].clamp(0, w)
        bx[:, 1::2] = bx[:, 1::2].clamp(0, h)
        keep = batched_nms(bx, sc, cls, iou)[:max_det]
        out.append({"boxes": bx[keep], "scores": sc[keep], "labels": cls[keep]})
    return out


def options_for_weights(options: dict[str, Any], state: dict[str, Tensor]) -> dict[str, Any]:
    """``model.options`` that rebuild the network a yolo state dict was saved from: runs trained before
    the distribution focal loss (one distance per side, 4 box outputs) get their old ``reg_max`` 1 and
    ``cls_weight`` 1.0 back, so that they still load, evaluate and predict."""
    w = state.get("head.box.0.2.weight")
    if "reg_max" not in options and w is not None and w.shape[0] == 4:
        return {**options, "reg_max": 1, "cls_weight": options.get("cls_weight", 1.0)}
    return options


def _create(width: int, depth: int, num_classes: int, in_chans: int, input_size: int,
            backbone: nn.Module | None = None, **kw: Any) -> YOLODetector:
    return YOLODetector(num_classes, in_chans, input_size, width=width, depth=depth,
                        backbone=_own_backbone(backbone, width, depth), **kw)


def _own_backbone(classifier: nn.Module | None, width: int, depth: int) -> Backbone | None:
    """The detector's backbone out of a ``cspnet_*`` classifier of the same width (``model.backbone_weights``
    from a cspnet run pretrains it); any other classifier is refused with the name to use."""
    if classifier is None:
        return None
    body = getattr(getattr(classifier, "body", None), "backbone", None)
    name = {16: "cspnet_n", 32: "cspnet_s"}.get(width, f"a cspnet of width {width}")
    if not isinstance(body, Backbone) or body.channels != Backbone(3, width, depth).channels:
        raise UserError(f"a yolo detector of width {width} takes its backbone from {name} (the same CSP "
                        f"network as a classifier); got {type(classifier).__name__}: train {name} and pass "
                        f"its run as model.backbone_weights")
    return body


class CSPClassifierBody(nn.Module):
    """The YOLO backbone as a classifier's body: P5, globally average-pooled."""

    def __init__(self, in_chans: int, width: int, depth: int) -> None:
        super().__init__()
        self.backbone = Backbone(in_chans, width, depth)

    def forward(self, x: Tensor) -> Tensor:
        return self.backbone(x)[2].mean((2, 3))


def _classifier(width: int, depth: int, num_classes: int, in_chans: int) -> nn.Module:
    from cnnkit.models.base import Classifier

    body = CSPClassifierBody(in_chans, width, depth)
    return Classifier(body, nn.Linear(body.backbone.channels[-1], num_classes))


@register_model("cspnet_n", "the yolo_n backbone (CSP stages + SPPF) as a classifier: pretrain it, then "
                "model.backbone_weights gives yolo_n its weights", default_input=(3, 32, 32), min_input=(1, 32, 32))
def cspnet_n(num_classes: int = 10, in_chans: int = 3, input_size: int = 32) -> nn.Module:
    return _classifier(16, 1, num_classes, in_chans)


@register_model("cspnet_s", "the yolo_s backbone as a classifier (pretraining for yolo_s)",
                default_input=(3, 32, 32), min_input=(1, 32, 32))
def cspnet_s(num_classes: int = 10, in_chans: int = 3, input_size: int = 32) -> nn.Module:
    return _classifier(32, 1, num_classes, in_chans)


@register_model("yolo_n", "YOLO-style anchor-free detector, nano (width 16): CSP backbone, PAN neck, "
                "task-aligned assignment, CIoU loss, NMS", default_input=(3, 320, 320),
                min_input=(1, 64, 64), task="detection")
def yolo_n(num_classes: int = 80, in_chans: int = 3, input_size: int = 320, conf: float = 0.001, iou: float = 0.6,
           max_det: int = 100, box_weight: float = 7.5, cls_weight: float = 0.5, dfl_weight: float = 1.5,
           topk: int = 10, reg_max: int = 16, backbone: nn.Module | None = None) -> YOLODetector:
    return _create(16, 1, num_classes, in_chans, input_size, backbone, conf=conf, iou=iou, max_det=max_det,
                   box_weight=box_weight, cls_weight=cls_weight, dfl_weight=dfl_weight, topk=topk, reg_max=reg_max)


@register_model("yolo_s", "YOLO-style anchor-free detector, small (width 32)",
                default_input=(3, 320, 320), min_input=(1, 64, 64), task="detection")
def yolo_s(num_classes: int = 80, in_chans: int = 3, input_size: int = 320, conf: float = 0.001, iou: float = 0.6,
           max_det: int = 100, box_weight: float = 7.5, cls_weight: float = 0.5, dfl_weight: float = 1.5,
           topk: int = 10, reg_max: int = 16, backbone: nn.Module | None = None) -> YOLODetector:
    return _create(32, 1, num_classes, in_chans, input_size, backbone, conf=conf, iou=iou, max_det=max_det,
                   box_weight=box_weight, cls_weight=cls_weight, dfl_weight=dfl_weight, topk=topk, reg_max=reg_max)
