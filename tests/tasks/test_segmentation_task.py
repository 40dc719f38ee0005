"""The segmentation task's parts against independent oracles: IoU and Dice counted by hand on small
masks, the losses against torch's own functions and their formulas, the U-Net border weight by hand,
and overlap-tile prediction equal to a whole-image pass."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cnnkit.tasks.segmentation import (IGNORE, SegmentationLoss, match_output, scores_from_confusion, segment,
                                       soft_dice_loss, unet_border_term)


def confusion(true: torch.Tensor, pred: torch.Tensor, k: int) -> torch.Tensor:
    valid = true != IGNORE
    cm = torch.zeros(k, k, dtype=torch.long)
    for t, p in zip(true[valid].tolist(), pred[valid].tolist()):
        cm[t, p] += 1
    return cm


def test_iou_and_dice_counted_by_hand():
    # 3 classes on a 4x4 mask. Class 1: true 4 px, predicted 6 px, 3 shared -> IoU 3/7, Dice 6/10.
    true = torch.tensor([[0, 0, 1, 1],
                         [0, 0, 1, 1],
                         [2, 2, 0, 0],
                         [2, 2, 0, IGNORE]])
    pred = torch.tensor([[0, 1, 1, 1],
                         [0, 1, 1, 0],
                         [2, 2, 0, 0],
                         [2, 0, 0, 2]])
    s = scores_from_confusion(confusion(true, pred, 3), ["bg", "a", "b"])
    # Counted pixels: 15 (one ignored); correct: bg 6 of 8 (4 true bg... see below), a 3, b 3.
    # bg: true {00,01,10,11,22,23,32,33(ign)} -> 7 counted; predicted bg at 00,10,22,23,32 + (13 true a) + (31 true b)
    tp = {"bg": 5, "a": 3, "b": 3}
    fp = {"bg": 2, "a": 2, "b": 0}  # bg predicted on a(1,3) and b(3,1); a predicted on bg (0,1), (1,1)
    fn = {"bg": 2, "a": 1, "b": 1}
    for c in ("bg", "a", "b"):
        assert math.isclose(s["per_class"][c]["iou"], tp[c] / (tp[c] + fp[c] + fn[c]))
        assert math.isclose(s["per_class"][c]["dice"], 2 * tp[c] / (2 * tp[c] + fp[c] + fn[c]))
    assert math.isclose(s["pixel_accuracy"], 11 / 15)
    assert math.isclose(s["miou"], (5 / 9 + 3 / 6 + 3 / 4) / 3)
    assert math.isclose(s["dice"], (6 / 9 + 6 / 7) / 2)  # foreground classes only


def test_a_class_absent_everywhere_counts_in_no_mean():
    cm = torch.tensor([[4, 0, 0], [0, 2, 0], [0, 0, 0]])
    s = scores_from_confusion(cm, ["bg", "a", "never"])
    assert s["per_class"]["never"] == {"iou": None, "dice": None}
    assert s["miou"] == 1.0 and s["dice"] == 1.0


def test_torchmetrics_confusion_matrix_agrees_with_counting():
    from torchmetrics.classification import MulticlassConfusionMatrix

    g = torch.Generator().manual_seed(0)
    true = torch.randint(0, 4, (2, 9, 7), generator=g)
    true[0, :2] = IGNORE
    pred = torch.randint(0, 4, (2, 9, 7), generator=g)
    m = MulticlassConfusionMatrix(4, ignore_index=IGNORE)
    m.update(pred, true)
    assert torch.equal(m.compute(), confusion(true.flatten(), pred.flatten(), 4))


def test_cross_entropy_with_weights_and_ignore_equals_torch():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 3, 5, 6, generator=g)
    masks = torch.randint(0, 3, (2, 5, 6), generator=g)
    masks[1, 0] = IGNORE
    weights = [0.2, 1.0, 3.0]
    got = SegmentationLoss("cross_entropy", weights)(logits, masks)
    want = F.cross_entropy(logits, masks, weight=torch.tensor(weights), ignore_index=IGNORE)
    torch.testing.assert_close(got, want)


def test_focal_loss_by_its_formula():
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(1, 2, 3, 3, generator=g)
    masks = torch.randint(0, 2, (1, 3, 3), generator=g)
    p = logits.softmax(1).gather(1, masks[:, None])[:, 0]
    want = (-(1 - p) ** 2 * p.log()).mean()
    torch.testing.assert_close(SegmentationLoss("focal")(logits, masks), want)


def test_soft_dice_by_hand_and_sums():
    logits = torch.zeros(1, 2, 1, 2)
    logits[0, 1, 0, 0] = 100.0  # pixel 0: class 1 for sure; pixel 1: 50/50
    masks = torch.tensor([[[1, 0]]])
    valid = masks != IGNORE
    # class 0: p = (0, .5), g = (0, 1): (2 * .5 + 1) / (.5 + 1 + 1); class 1: p = (1, .5), g = (1, 0): (2 + 1) / (1.5 + 1 + 1)
    want = 1 - ((2.0 / 2.5) + (3.0 / 3.5)) / 2
    assert math.isclose(float(soft_dice_loss(logits, masks, valid)), want, rel_tol=1e-5)
    both = SegmentationLoss("cross_entropy+dice")(logits, masks)
    ce = F.cross_entropy(logits, masks)
    assert math.isclose(float(both), float(ce) + want, rel_tol=1e-5)


def test_unet_border_term_by_hand():
    # Two objects (class 1) in a 1 x 9 strip with a gap of 3 background pixels between them.
    mask = np.array([[1, 1, 0, 0, 0, 1, 1, 0, 0]])
    w = unet_border_term(mask, w0=10.0, sigma=5.0)
    # Pixel 3: d1 = d2 = 2 (to pixel 1 and to pixel 5). Pixel 8: d1 = 2 (pixel 6), d2 = 7 (pixel 1).
    assert math.isclose(w[0, 3], 10 * math.exp(-(4 ** 2) / 50), rel_tol=1e-6)
    assert math.isclose(w[0, 8], 10 * math.exp(-(9 ** 2) / 50), rel_tol=1e-6)
    assert w[0, 0] == 0 and w[0, 5] == 0  # object pixels
    assert not unet_border_term(np.array([[1, 0, 0]]), 10.0, 5.0).any()  # one object: no gap to keep


class ValidNet(nn.Module):
    """Two valid 3x3 convolutions and a 2x2 pooling and up-sampling pair: output side = input - 8 for
    inputs with (side - 4) even, the geometry of a one-level U-Net with valid padding."""

    pad_multiple = 1

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.a = nn.Conv2d(1, 4, 3)
        self.b = nn.Conv2d(4, 4, 3)
        self.c = nn.Conv2d(4, 2, 3)
        self.d = nn.Conv2d(2, 2, 3)

    def output_size(self, side: int) -> int:
        return ((side - 4) // 2) * 2 - 4

    def input_size_for(self, out: int) -> int:
        return out + 8 + (out % 2)

    def forward(self, x):
        y = F.max_pool2d(self.b(self.a(x).relu()).relu(), 2)
        return self.d(self.c(F.interpolate(y, scale_factor=2.0)).relu())


def test_overlap_tile_equals_one_pass_over_the_mirrored_image():
    model = ValidNet().eval()
    g = torch.Generator().manual_seed(3)
    image = torch.randn(2, 1, 37, 50, generator=g)
    tiled = segment(model, image, tile=12)
    assert tiled.shape == (2, 2, 37, 50)
    # The same pixels from one pass: mirror the image by the margin (4) plus enough to make the
    # output whole and even (tiles of 12: 48 x 60 output -> 56 x 68 input), take the top-left 37 x 50.
    padded = F.pad(image, (4, 60 - 50 + 4, 4, 48 - 37 + 4), mode="reflect")
    whole = model(padded)[..., :37, :50]
    torch.testing.assert_close(tiled, whole, atol=1e-5, rtol=1e-5)


def test_same_padding_models_see_their_multiple_and_give_the_input_size():
    class Halving(nn.Module):
        pad_multiple = 4

        def forward(self, x):
            assert x.shape[-1] % 4 == 0 and x.shape[-2] % 4 == 0
            y = F.avg_pool2d(x, 4)
            return F.interpolate(y, scale_factor=4.0)

    x = torch.randn(1, 1, 10, 13)
    out = segment(Halving(), x)
    assert out.shape == (1, 1, 10, 13)
    # Tiles of 8 with 32 px of context each side: every output pixel's 4x4 cell lies inside its window.
    torch.testing.assert_close(segment(Halving(), x, tile=8), out)


def test_masks_are_centre_cropped_to_a_valid_output():
    masks = torch.arange(36).reshape(1, 6, 6)
    assert torch.equal(match_output(masks, torch.zeros(1, 3, 2, 2)), masks[:, 2:4, 2:4])
    with pytest.raises(ValueError, match="centred crop"):
        match_output(masks, torch.zeros(1, 3, 3, 3))
