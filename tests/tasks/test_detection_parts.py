"""The detection task's parts against independent oracles: mAP by hand and by pycocotools' COCOeval,
the task-aligned assignment on hand-made cases, NMS against torchvision, and a YOLO detector that
learns one image's boxes."""

from __future__ import annotations

import math

import pytest
import torch
from torchvision.ops import batched_nms, box_iou

from cnnkit.config import DEFAULT_CONFIG, load_config
from cnnkit.models import get_model
from cnnkit.models.detection.yolo import grid_points, task_aligned_assign
from cnnkit.tasks import create_task



def task():
    cfg = load_config(DEFAULT_CONFIG, ["task=detection", "data.image_size=64"])
    return create_task(cfg, ["cat", "dog"], (3, 64, 64))


# --------------------------------------------------------------------------- mAP


GT = [  # two images; class 0 twice in the first, class 1 once in the second
    {"boxes": torch.tensor([[0.0, 0, 10, 10], [20, 20, 30, 30]]), "labels": torch.tensor([0, 0])},
    {"boxes": torch.tensor([[5.0, 5, 25, 25]]), "labels": torch.tensor([1])},
]
PRED = [
    # d1 covers gt1 with IoU 0.81 (9x9 inside 10x10), d2 covers gt2 with IoU 0.6, d3 is a false positive
    {"boxes": torch.tensor([[0.0, 0, 9, 9], [20, 20, 30, 36], [50, 50, 60, 60]]),
     "scores": torch.tensor([0.9, 0.8, 0.7]), "labels": torch.tensor([0, 0, 0])},
    {"boxes": torch.tensor([[5.0, 5, 25, 25]]), "scores": torch.tensor([0.6]), "labels": torch.tensor([1])},
]


def test_the_fixture_ious_are_what_the_comments_say():
    assert box_iou(PRED[0]["boxes"][:1], GT[0]["boxes"][:1]).item() == pytest.approx(0.81)
    assert box_iou(PRED[0]["boxes"][1:2], GT[0]["boxes"][1:2]).item() == pytest.approx(0.625)


def test_map_by_hand():
    # Class 0 at IoU 0.5: d1, d2 true positives (recall 1 at precision 1), d3 after them: AP 1.
    # At IoU 0.75: d1 only (recall 0.5 at precision 1), then d2, d3 false: COCO's 101-point
    # interpolated precision is 1 for recall 0..0.5 (51 points), 0 above: AP 51/101.
    # Class 1: a perfect box, AP 1 at every threshold. mAP averages the classes.
    m = task().map_metric()
    m.update(PRED, GT)
    r = m.compute()
    assert float(r["map_50"]) == pytest.approx(1.0)
    assert float(r["map_75"]) == pytest.approx((51 / 101 + 1.0) / 2)
    # mAP@[.5:.95]: class 0's d1 (IoU 0.81) counts up to 0.8, d2 (IoU 0.625) up to 0.6.
    # thresholds .5 .55 .6: AP 1; .65 .7 .75 .8: 51/101; .85 .9 .95: 0. Class 1: 1 everywhere.
    ap0 = (3 * 1.0 + 4 * 51 / 101 + 3 * 0.0) / 10
    assert float(r["map"]) == pytest.approx((ap0 + 1.0) / 2, abs=1e-4)


def test_map_equals_pycocotools_cocoeval():
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    g = torch.Generator().manual_seed(0)
    gts, preds = [], []
    for _ in range(6):  # random boxes and noisy detections of them, plus clutter
        k = int(torch.randint(1, 4, (1,), generator=g))
        xy = torch.rand(k, 2, generator=g) * 80
        wh = torch.rand(k, 2, generator=g) * 30 + 8
        boxes = torch.cat([xy, xy + wh], 1)
        labels = torch.randint(0, 2, (k,), generator=g)
        gts.append({"boxes": boxes, "labels": labels})
        noisy = boxes + torch.randn(k, 4, generator=g) * 3
        clutter = torch.cat([torch.rand(2, 2, generator=g) * 80, torch.rand(2, 2, generator=g) * 80 + 90], 1)
        preds.append({"boxes": torch.cat([noisy, clutter]), "scores": torch.rand(k + 2, generator=g),
                      "labels": torch.cat([labels, torch.randint(0, 2, (2,), generator=g)])})
    m = task().map_metric()
    m.update(preds, gts)
    ours = m.compute()

    images, anns, dets = [], [], []
    for i, (gt, p) in enumerate(zip(gts, preds)):
        images.append({"id": i, "width": 200, "height": 200})
        for b, c in zip(gt["boxes"].tolist(), gt["labels"].tolist()):
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": c, "iscrowd": 0,
                         "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]], "area": (b[2] - b[0]) * (b[3] - b[1])})
        for b, s, c in zip(p["boxes"].tolist(), p["scores"].tolist(), p["labels"].tolist()):
            dets.append({"image_id": i, "category_id": c, "score": s, "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]]})
    coco = COCO()
    coco.dataset = {"images": images, "annotations": anns, "categories": [{"id": 0}, {"id": 1}]}
    coco.createIndex()
    ev = COCOeval(coco, coco.loadRes(dets), "bbox")
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    assert float(ours["map"]) == pytest.approx(ev.stats[0], abs=1e-4)
    assert float(ours["map_50"]) == pytest.approx(ev.stats[1], abs=1e-4)
    assert float(ours["map_75"]) == pytest.approx(ev.stats[2], abs=1e-4)


# --------------------------------------------------------------------------- assignment


def test_task_aligned_assignment_on_a_hand_made_case():
    # Locations on a 4x4 grid of stride 8 (centres 4, 12, 20, 28). One box covers the centres
    # (12..20, 12..20): four candidate locations; the one predicting the box exactly wins the
    # best target score (its IoU, 1), no location outside the box is assigned, topk=2 keeps two.
    points, _ = grid_points([(4, 4)], (8,), "cpu", torch.float32)
    a = len(points)
    gt = torch.tensor([[[9.0, 9, 23, 23]]])
    pred = torch.cat([points - 6, points + 6], 1).unsqueeze(0)  # 12x12 boxes around each centre
    exact = int(((points - torch.tensor([12.0, 12.0])).abs().sum(1) == 0).nonzero())
    pred[0, exact] = gt[0, 0]
    scores = torch.full((1, a, 2), 0.5)
    t_boxes, t_scores, fg = task_aligned_assign(scores, pred, points, torch.tensor([[1]]), gt,
                                                torch.tensor([[True]]), topk=2)
    inside = ((points > 9) & (points < 23)).all(1)
    assert fg[0].sum() == 2 and bool((fg[0] <= inside).all())
    assert bool(fg[0, exact]) and t_scores[0, exact, 1].item() == pytest.approx(1.0)
    assert t_scores[0, :, 0].abs().sum() == 0  # only the box's class gets a target
    assert torch.equal(t_boxes[0, exact], gt[0, 0])
    other = next(i for i in fg[0].nonzero().flatten().tolist() if i != exact)
    iou_other = box_iou(pred[0, other:other + 1], gt[0]).item()
    assert 0 < t_scores[0, other, 1].item() < 1 and iou_other < 1


def test_a_location_claimed_by_two_boxes_serves_the_one_it_overlaps_most():
    points = torch.tensor([[10.0, 10.0]])
    gt = torch.tensor([[[0.0, 0, 20, 20], [5.0, 5, 40, 40]]])
    pred = torch.tensor([[[1.0, 1, 19, 19]]])  # overlaps the first box far more
    _, t_scores, fg = task_aligned_assign(torch.full((1, 1, 3), 0.5), pred, points, torch.tensor([[0, 2]]), gt,
                                          torch.tensor([[True, True]]), topk=1)
    assert bool(fg[0, 0]) and t_scores[0, 0, 0] > 0 and t_scores[0, 0, 2] == 0


def test_padding_boxes_and_empty_images_are_never_assigned():
    points, _ = grid_points([(4, 4)], (8,), "cpu", torch.float32)
    pred = torch.cat([points - 6, points + 6], 1).unsqueeze(0).repeat(2, 1, 1)
    gt = torch.tensor([[[0.0, 0, 32, 32]], [[0.0, 0, 32, 32]]])
    _, t_scores, fg = task_aligned_assign(torch.full((2, 16, 1), 0.5), pred, points, torch.zeros(2, 1, dtype=torch.long),
                                          gt, torch.tensor([[True], [False]]))
    assert fg[0].any() and not fg[1].any() and t_scores[1].sum() == 0


def test_a_predicted_box_of_no_area_next_to_padding_keeps_the_loss_finite():
    """Regression (a raccoon run died with a NaN loss at epoch 23): a padding box (all zeros) against a
    predicted box of zero area is IoU 0 / 0; the assignment must not spread that NaN to real boxes,
    and the detector's boxes never have zero width (CIoU's aspect term divides by it)."""
    points, _ = grid_points([(4, 4)], (8,), "cpu", torch.float32)
    pred = torch.cat([points - 6, points + 6], 1).unsqueeze(0).repeat(1, 1, 1)
    pred[0, 5] = torch.tensor([20.0, 12.0, 20.0, 12.0])  # a box of no area
    gt = torch.tensor([[[0.0, 0, 32, 32], [0.0, 0, 0, 0]]])  # one real box, one padding
    t_boxes, t_scores, fg = task_aligned_assign(torch.full((1, 16, 1), 0.5), pred, points,
                                                torch.zeros(1, 2, dtype=torch.long), gt, torch.tensor([[True, False]]))
    assert torch.isfinite(t_scores).all() and torch.isfinite(t_boxes).all() and fg.any()
    torch.manual_seed(0)
    model = get_model("yolo_n", num_classes=1, input_size=64)
    with torch.no_grad():  # distances far below zero: softplus underflows to 0 without the floor
        model.head.box[0][-1].bias.fill_(-40.0)
    boxes, _ = model.raw(torch.zeros(1, 3, 64, 64))
    assert ((boxes[..., 2] - boxes[..., 0]) > 0).all() and ((boxes[..., 3] - boxes[..., 1]) > 0).all()
    model.train()
    losses = model(torch.rand(2, 3, 64, 64), [{"boxes": torch.tensor([[8.0, 8.0, 40.0, 40.0]]), "labels": torch.tensor([0])},
                                             {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}])
    assert all(torch.isfinite(v) for v in losses.values())


# --------------------------------------------------------------------------- inference


def test_postprocess_is_threshold_then_torchvision_batched_nms():
    model = get_model("yolo_n", num_classes=3, input_size=64).eval()
    g = torch.Generator().manual_seed(1)
    xy = torch.rand(1, 40, 2, generator=g) * 50
    boxes = torch.cat([xy, xy + torch.rand(1, 40, 2, generator=g) * 20 + 2], -1)
    scores = torch.rand(1, 40, 3, generator=g)
    model.conf, model.iou = 0.3, 0.5
    out = model.postprocess(boxes, scores, (64, 64))[0]
    loc, cls = (scores[0] > 0.3).nonzero(as_tuple=True)
    b = boxes[0, loc].clamp(0, 64)
    keep = batched_nms(b, scores[0, loc, cls], cls, 0.5)[:100]
    assert torch.equal(out["boxes"], b[keep]) and torch.equal(out["labels"], cls[keep])
    assert torch.equal(out["scores"], scores[0, loc, cls][keep])


def test_yolo_learns_the_boxes_of_two_images():
    # Two 96 px images (a scene and its mirror image, boxes mirrored by hand): the training loss falls
    # and, in eval mode (batch norm on its running statistics), each box is found with IoU > 0.6.
    torch.manual_seed(0)
    model = get_model("yolo_n", num_classes=2, input_size=96)
    x = torch.zeros(1, 3, 96, 96)
    x[:, :, 12:42, 14:44] = 1.0   # a bright square (class 0)
    x[:, 1, 54:90, 50:86] = 1.0  # a green square (class 1)
    boxes = torch.tensor([[14.0, 12, 44, 42], [50.0, 54, 86, 90]])
    mirrored = torch.stack([96 - boxes[:, 2], boxes[:, 1], 96 - boxes[:, 0], boxes[:, 3]], 1)
    x = torch.cat([x, x.flip(-1)])
    labels = torch.tensor([0, 1])
    targets = [{"boxes": boxes, "labels": labels}, {"boxes": mirrored, "labels": labels}]
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    model.train()
    losses = []
    for _ in range(120):
        loss = sum(model(x, targets).values())
        losses.append(loss.item())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert sum(losses[-10:]) / 10 < losses[0] / 4, (losses[0], losses[-10:])
    model.eval()
    model.conf = 0.2
    with torch.no_grad():
        found = model(x)
    for out, t in zip(found, targets):
        for gt_box, gt_label in zip(t["boxes"], t["labels"]):
            mine = out["labels"] == gt_label
            assert mine.any(), out
            assert box_iou(out["boxes"][mine][:1], gt_box[None]).item() > 0.6, (out, gt_box)


def test_the_input_side_must_be_a_multiple_of_32():
    from cnnkit.errors import UserError

    with pytest.raises(UserError, match="divisible by 32"):
        get_model("yolo_n", num_classes=2, input_size=100)
    assert math.isclose(grid_points([(2, 2)], (32,), "cpu", torch.float32)[0][3, 0].item(), 48.0)


# --------------------------------------------------------------------------- distribution focal loss


def test_distribution_focal_loss_by_hand_and_its_expectation():
    from cnnkit.models.detection.yolo import Head, distribution_focal_loss

    reg_max = 4
    logits = torch.randn(3, 4 * reg_max)
    target = torch.tensor([[0.0, 1.25, 2.5, 2.99], [0.5, 1.0, 1.75, 0.0], [2.0, 0.1, 0.9, 2.2]])
    got = distribution_focal_loss(logits, target, reg_max)
    logp = logits.reshape(3, 4, reg_max).log_softmax(-1)
    want = torch.zeros(3)
    for k in range(3):
        for side in range(4):
            t = min(float(target[k, side]), reg_max - 1 - 0.01)
            left = math.floor(t)
            want[k] += -((left + 1 - t) * logp[k, side, left] + (t - left) * logp[k, side, left + 1]) / 4
    torch.testing.assert_close(got, want)
    # The mix of the two bins is the target: a head whose distribution is that mix has the target as
    # its expected distance (and is where the loss is smallest).
    head = Head((16, 32, 64), 1, reg_max)
    mix = torch.zeros(1, 1, 4, reg_max)
    t = torch.tensor([0.0, 1.25, 2.5, 2.9])
    for side, v in enumerate(t.tolist()):
        left = int(v)
        mix[0, 0, side, left] = left + 1 - v
        if left + 1 < reg_max:
            mix[0, 0, side, left + 1] = v - left
    d = head.distances(mix.clamp_min(1e-12).log().flatten(2))
    torch.testing.assert_close(d[0, 0], t.clamp_min(0.01), atol=1e-5, rtol=0)


def test_reg_max_1_is_one_softplus_distance_per_side():
    from cnnkit.errors import UserError

    model = get_model("yolo_n", num_classes=2, input_size=64, reg_max=1)
    assert model.head.box[0][-1].out_channels == 4
    assert "dfl" not in model(torch.zeros(1, 3, 64, 64), [{"boxes": torch.tensor([[4.0, 4, 30, 30]]),
                                                           "labels": torch.tensor([1])}])
    with pytest.raises(UserError, match="reg_max"):
        get_model("yolo_n", num_classes=2, input_size=64, reg_max=0)


def test_a_run_saved_before_the_dfl_head_still_loads(tmp_path):
    # A checkpoint of a yolo_n with one distance per side (the head before reg_max existed), whose
    # config does not name reg_max: load_run_model rebuilds that head and gives the same boxes.
    from cnnkit.config import DEFAULT_CONFIG, load_config
    from cnnkit.inference import load_run_model
    from cnnkit.runs import save_checkpoint

    torch.manual_seed(0)
    old = get_model("yolo_n", num_classes=2, input_size=64, reg_max=1).eval()
    cfg = load_config(DEFAULT_CONFIG, ["task=detection", "model.name=yolo_n", "data.name=shapes",
                                       "data.image_size=64"])
    meta = {"classes": ["a", "b"], "input_shape": [3, 64, 64], "mean": [0.5] * 3, "std": [0.25] * 3}
    path = tmp_path / "old.pt"
    save_checkpoint(path, {"model": old.state_dict(), "config": cfg.to_dict(), "meta": meta, "epoch": 1})
    model, _ = load_run_model(path)
    assert model.head.reg_max == 1
    x = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(model.raw(x)[0], old.raw(x)[0])
