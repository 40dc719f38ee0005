"""Segmentation models: U-Net's geometry against the paper's numbers, the FCN heads and torchvision's
heads computed again by hand from the backbone's own stages, the bilinear start of the learned
upsampling against ``F.interpolate``, Mask R-CNN's two answers, a tiny U-Net that learns two
images, and the mistakes a user can make."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from cnnkit.config import ModelConfig
from cnnkit.errors import UserError
from cnnkit.models import create_model, get_model, list_models
from cnnkit.models.registry import model_task, models_with_backbone
from cnnkit.models.segmentation.fcn import BilinearUp2, bilinear_kernel
from cnnkit.models.spec import build_torch
from cnnkit.spec import parse_layers


def conv_relu_pool(*widths: int) -> list:
    """A layer-list classifier: a 3x3 conv + ReLU + 2x2 max pool per width, then its head."""
    layers: list = []
    for w in widths:
        layers += [{"conv": {"out": w, "kernel": 3, "padding": 1}}, "relu", {"maxpool": 2}]
    return layers + ["flatten", {"dense": 10}]


FIVE_POOLS = conv_relu_pool(8, 8, 16, 16, 16)   # strides 2 .. 32
FOUR_POOLS = conv_relu_pool(8, 8, 16, 16)       # strides 2 .. 16


def layer_list(layers: list, size: int = 32) -> torch.nn.Module:
    return build_torch(parse_layers(layers), (3, size, size), 10)


# --------------------------------------------------------------------------- registry and listing


def test_registered_with_their_tasks_and_backbones(capsys):
    assert set(list_models(task="segmentation")) >= {"unet", "fcn32s", "fcn16s", "fcn8s", "deeplabv3", "fcn"}
    assert model_task("mask_rcnn") == "instance" and model_task("unet") == "segmentation"
    takes = set(models_with_backbone())
    assert {"fcn8s", "deeplabv3", "fcn", "mask_rcnn", "faster_rcnn"} <= takes and "unet" not in takes
    assert set(models_with_backbone("segmentation")) == {"fcn32s", "fcn16s", "fcn8s", "deeplabv3", "fcn"}
    from cnnkit.cli import main

    assert main(["models", "*"]) == 0
    rows = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()}
    assert rows["unet"][1:3] == ["1x256x256", "segmentation"]
    assert rows["mask_rcnn"][1:3] == ["3x320x320", "instance"]


# --------------------------------------------------------------------------- U-Net


@pytest.mark.parametrize("up", ["transpose", "bilinear"])
@pytest.mark.parametrize("size", [32, 48])
def test_unet_same_padding_keeps_the_input_size(size, up):
    model = get_model("unet", num_classes=3, in_chans=2, input_size=size, width=4, depth=3, up=up,
                      batch_norm=up == "transpose")
    assert model.pad_multiple == 8 and model.output_size(size) == size and model.input_size_for(size) == size
    assert model(torch.randn(2, 2, size, size)).shape == (2, 3, size, size)


# Each row: the paper's figure 1, by hand: a level's two valid 3x3 convolutions take 4 pixels of side,
# a pooling halves it, an up-convolution doubles it.
PAPER = [572, 568, 284, 280, 140, 136, 68, 64, 32, 28,   # contracting path and bottom
         56, 52, 104, 100, 200, 196, 392, 388]          # expanding path


def test_unet_valid_padding_has_the_papers_geometry():
    sides = [PAPER[0]]
    for _ in range(4):
        sides += [sides[-1] - 4, (sides[-1] - 4) // 2]
    sides.append(sides[-1] - 4)
    for _ in range(4):
        sides += [2 * sides[-1], 2 * sides[-1] - 4]
    assert sides == PAPER
    model = get_model("unet", num_classes=2, in_chans=1, input_size=572, width=1, depth=4, padding="valid",
                      batch_norm=False, dropout=0.0)
    assert model.output_size(572) == 388 and model.input_size_for(388) == 572
    with torch.no_grad():
        assert model(torch.zeros(1, 1, 572, 572)).shape == (1, 2, 388, 388)
    # Valid sides: every pooling meets an even side, i.e. S + 4 divisible by 2**4, and the bottom map
    # big enough for the expanding path (4 output pixels at S = 12 * 16 - 4 = 188).
    for s in range(150, 620):
        valid = (s + 4) % 16 == 0 and s >= 188
        if valid:
            assert model.output_size(s) == s - 184  # the border: 572 - 388
        else:
            with pytest.raises(UserError):
                model.output_size(s)
    # input_size_for: the smallest valid input whose output covers the request.
    for out in range(1, 420):
        s = model.input_size_for(out)
        assert (s + 4) % 16 == 0 and model.output_size(s) >= out
        assert s == 188 or model.output_size(s - 16) < out
    assert [model.input_size_for(o) for o in (1, 4, 5, 388, 389)] == [188, 188, 204, 572, 588]


def test_unet_valid_output_is_the_window_of_a_larger_input_and_skips_are_centred():
    torch.manual_seed(0)
    model = get_model("unet", num_classes=2, in_chans=1, input_size=76, width=2, depth=2, padding="valid",
                      dropout=0.0).eval()
    assert model.output_size(76) == 76 - 40 and model.output_size(44) == 4  # border 12 * 4 - 8
    x = torch.randn(1, 1, 76, 76)
    with torch.no_grad():
        # Valid convolutions see only their window: the output for an input crop at an offset that
        # every pooling divides (a multiple of 2**depth) is the same crop of the whole output
        # (what makes overlap-tile exact).
        whole = model(x)
        for top, left in [(0, 0), (8, 16), (32, 32)]:
            part = model(x[..., top:top + 44, left:left + 44])
            torch.testing.assert_close(part, whole[..., top:top + 4, left:left + 4])
        # With left-right symmetric filters the network commutes with a mirror only if each skip is
        # cropped at its centre (the margins on both sides equal): a corner crop breaks it.
        for m in model.modules():
            if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
                m.weight.copy_((m.weight + m.weight.flip(-1)) / 2)
        torch.testing.assert_close(model(x.flip(-1)), model(x).flip(-1))


def test_unet_learns_two_images():
    # Two 32x32 images whose foreground is a checkerboard texture on flat grey of the same mean: no
    # single pixel tells the class, the neighbourhood does. A small U-Net overfits both.
    torch.manual_seed(0)
    yy, xx = torch.meshgrid(torch.arange(32), torch.arange(32), indexing="ij")
    disc = ((yy - 12) ** 2 + (xx - 18) ** 2 < 64)
    box = (yy >= 16) & (yy < 28) & (xx >= 4) & (xx < 24)
    masks = torch.stack([disc, box]).long()
    checker = ((yy + xx) % 2).float()
    images = torch.where(masks.bool(), checker, torch.full_like(checker, 0.5))[:, None]
    images = images + 0.05 * torch.randn_like(images)
    model = get_model("unet", num_classes=2, in_chans=1, input_size=32, width=8, depth=2, dropout=0.0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(80):
        loss = F.cross_entropy(model(images), masks)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        pred = model.eval()(images).argmax(1)
    for k in (0, 1):
        iou = ((pred == k) & (masks == k)).sum() / ((pred == k) | (masks == k)).sum()
        assert iou > 0.9, (k, float(iou), float(loss))


def test_unet_mistakes_are_user_errors():
    build = lambda size=64, **kw: get_model("unet", num_classes=2, in_chans=1, input_size=size, **kw)  # noqa: E731
    with pytest.raises(UserError, match=r"padding='smae'.*same, valid.*did you mean 'same'"):
        build(padding="smae")
    with pytest.raises(UserError, match=r"up='nearest'.*transpose, bilinear"):
        build(up="nearest")
    with pytest.raises(UserError, match=r"dropout=1.5"):
        build(dropout=1.5)
    with pytest.raises(UserError, match=r"depth 4 .*at least 16x16 .*got 8x8"):
        build(8)
    with pytest.raises(UserError, match=r"at least 188 .*got 100"):
        build(100, padding="valid")
    with pytest.raises(UserError, match=r"got 500; the nearest are 492 or 508"):
        build(500, padding="valid")
    model = build(64, width=2)
    with pytest.raises(UserError, match=r"multiples of 16, got 50x64; pad the image to 64x64"):
        model(torch.zeros(1, 1, 50, 64))
    valid = build(188, width=1, padding="valid")
    with pytest.raises(UserError, match=r"got 190; the nearest are 188 or 204"):
        valid(torch.zeros(1, 1, 190, 190))
    with pytest.raises(UserError, match=r"no option 'widht'.*did you mean 'width'"):
        build(widht=4)


# --------------------------------------------------------------------------- FCN


def test_bilinear_upsampling_starts_as_interpolation():
    assert bilinear_kernel(2).tolist() == (torch.tensor([0.25, 0.75, 0.75, 0.25])[:, None]
                                           * torch.tensor([0.25, 0.75, 0.75, 0.25])).tolist()
    torch.manual_seed(0)
    x = torch.randn(2, 3, 7, 9)
    up = BilinearUp2(3)
    y = up(x)
    ref = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
    assert y.shape == ref.shape == (2, 3, 14, 18)
    # Inside, a pixel mixes its two nearest source pixels 3:1 in either case; at the border the
    # transposed convolution mixes with zero padding, interpolation repeats the edge.
    torch.testing.assert_close(y[..., 1:-1, 1:-1], ref[..., 1:-1, 1:-1])
    assert not torch.allclose(y[..., 0, :], ref[..., 0, :])
    # The same rule at factor 4 (an 8-tap kernel, stride 4, padding 2).
    w = torch.zeros(3, 3, 8, 8)
    for k in range(3):
        w[k, k] = bilinear_kernel(4)
    y4 = F.conv_transpose2d(x, w, stride=4, padding=2)
    ref4 = F.interpolate(x, scale_factor=4, mode="bilinear", align_corners=False)
    torch.testing.assert_close(y4[..., 2:-2, 2:-2], ref4[..., 2:-2, 2:-2])


def test_fcn8s_on_resnet18_is_the_papers_sum_of_scores():
    torch.manual_seed(0)
    classifier = get_model("resnet18", num_classes=10, input_size=64)
    model = get_model("fcn8s", num_classes=3, input_size=64, backbone=classifier).eval()
    assert model.features.strides == [8, 16, 32] and model.pad_multiple == 32
    assert all(torch.count_nonzero(s.weight) == 0 for s in model.skip_scores)  # skips start at zero (paper)
    for s in model.skip_scores:  # give the skips something to add, to see that they are added
        torch.nn.init.normal_(s.weight)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        net = classifier.body  # by hand: the ResNet's stages, the scores, two 2x steps, x8
        c2 = net.layer2(net.layer1(net.maxpool(net.relu(net.bn1(net.conv1(x))))))
        c3 = net.layer3(c2)
        c4 = net.layer4(c3)
        y = model.up2[0](model.score(c4)) + model.skip_scores[0](c3)
        y = model.up2[1](y) + model.skip_scores[1](c2)
        expected = F.interpolate(y, size=(64, 64), mode="bilinear", align_corners=False)
        torch.testing.assert_close(model(x), expected)
        assert model(torch.randn(1, 3, 96, 96)).shape == (1, 3, 96, 96)


@pytest.mark.parametrize("name,skips", [("fcn32s", 0), ("fcn16s", 1), ("fcn8s", 2)])
def test_fcn_heads_on_a_layer_list(name, skips):
    model = get_model(name, num_classes=4, input_size=64, backbone=layer_list(FIVE_POOLS))
    assert model.features.names == ["relu4", "relu5", "maxpool5"][2 - skips:]
    assert model.features.strides == [8, 16, 32][2 - skips:]
    assert len(model.up2) == skips and model.pad_multiple == (32 if skips else 1)
    for size in (64, 96):
        assert model(torch.randn(2, 3, size, size)).shape == (2, 4, size, size)
    if skips:
        with pytest.raises(UserError, match=rf"{name} takes input sides that are multiples of 32, got 80x80"):
            model(torch.randn(1, 3, 80, 80))
    else:
        assert model(torch.randn(1, 3, 80, 80)).shape == (1, 4, 80, 80)


def test_fcn_needs_a_backbone_that_reaches_stride_32():
    with pytest.raises(UserError, match=r"fcn8s needs backbone feature maps at strides 8, 16, 32; .* have "
                                        r"strides 8, 16\. Use a backbone with five stride-2 steps"):
        get_model("fcn8s", num_classes=2, input_size=64, backbone=layer_list(FOUR_POOLS))
    with pytest.raises(UserError, match=r"fcn32s needs backbone feature maps at strides 32; .* strides 16\."):
        get_model("fcn32s", num_classes=2, input_size=64, backbone=layer_list(FOUR_POOLS))


def test_segmentation_model_from_a_config_with_a_layer_list_backbone():
    cfg = ModelConfig(name="fcn16s", backbone={"layers": FIVE_POOLS}, num_classes=3)
    model = create_model(cfg, (3, 64, 64), 3)
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 3, 64, 64)
    with pytest.raises(UserError, match=r"apply to the models built on a classifier \(.*fcn8s.*\); model 'unet'"):
        create_model(ModelConfig(name="unet", backbone="resnet18"), (3, 64, 64), 2)


# --------------------------------------------------------------------------- torchvision's heads


@pytest.mark.parametrize("name", ["deeplabv3", "fcn"])
def test_torchvision_heads_on_a_zoo_backbone(name):
    torch.manual_seed(0)
    classifier = get_model("resnet18", num_classes=10, input_size=64)
    model = get_model(name, num_classes=5, input_size=64, backbone=classifier)
    assert model.pad_multiple == 1 and model.output_size(70) == 70
    assert model(torch.randn(2, 3, 64, 64)).shape == (2, 5, 64, 64)  # training mode, batch 2
    model.eval()
    x = torch.randn(1, 3, 70, 70)  # any size: the head's answer is resized to the input
    with torch.no_grad():
        net = classifier.body  # by hand: the end of layer4, torchvision's head, bilinear resizing
        c4 = net.layer4(net.layer3(net.layer2(net.layer1(net.maxpool(net.relu(net.bn1(net.conv1(x))))))))
        expected = F.interpolate(model.head(c4), size=(70, 70), mode="bilinear", align_corners=False)
        torch.testing.assert_close(model(x), expected)
    if name == "deeplabv3":  # the paper's rates at output stride 16 (6, 12, 18), halved at stride 32
        dilations = [m.dilation[0] for m in model.head[0].convs.modules()
                     if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3)]
        assert dilations == [3, 6, 9]


def test_deeplabv3_rates_option():
    model = get_model("deeplabv3", num_classes=2, input_size=64, backbone=layer_list(FIVE_POOLS),
                      atrous_rates=[2, 4])
    assert [m.dilation[0] for m in model.head[0].convs.modules()
            if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3)] == [2, 4]
    with pytest.raises(UserError, match=r"atrous_rates=\[0, 4\] must be a list of positive integers"):
        get_model("deeplabv3", num_classes=2, input_size=64, backbone=layer_list(FIVE_POOLS), atrous_rates=[0, 4])


# --------------------------------------------------------------------------- Mask R-CNN


def test_mask_rcnn_losses_and_masks():
    torch.manual_seed(0)
    model = get_model("mask_rcnn", num_classes=2, input_size=64, backbone=layer_list(FOUR_POOLS, 64),
                      fpn_channels=16, mask_channels=8)
    assert model.net.roi_heads.box_predictor.cls_score.out_features == 3  # two classes + background
    assert model.net.roi_heads.mask_predictor.mask_fcn_logits.out_channels == 3
    images = torch.rand(2, 3, 64, 64)
    targets = []
    for top, label in [(8, 0), (24, 1)]:
        masks = torch.zeros(1, 64, 64, dtype=torch.uint8)
        masks[0, top:top + 24, 10:40] = 1
        targets.append({"boxes": torch.tensor([[10.0, top, 40.0, top + 24]]), "labels": torch.tensor([label]),
                        "masks": masks})
    model.train()
    losses = model(images, targets)
    assert {"loss_classifier", "loss_box_reg", "loss_mask", "loss_objectness", "loss_rpn_box_reg"} == set(losses)
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert model.net.roi_heads.mask_predictor.mask_fcn_logits.weight.grad.abs().sum() > 0
    model.eval()
    model.conf = 0.0
    with torch.no_grad():
        out = model(images)
    assert len(out) == 2
    for o in out:
        k = len(o["boxes"])
        assert k > 0 and set(o) == {"boxes", "scores", "labels", "masks"}
        assert o["masks"].shape == (k, 1, 64, 64) and o["masks"].dtype == torch.float32
        assert 0.0 <= float(o["masks"].min()) and float(o["masks"].max()) <= 1.0
        assert int(o["labels"].min()) >= 0 and int(o["labels"].max()) <= 1  # cnnkit's labels, no background
    with torch.no_grad():  # another size: the masks are pasted into the input's own pixels
        assert model(torch.rand(1, 3, 96, 96))[0]["masks"].shape[1:] == (1, 96, 96)


def test_mask_rcnn_overfits_one_image_with_two_shapes():
    # A red disc (class 1) and a blue triangle (class 0): each is found with its own label, and the
    # mask of its best detection, thresholded at 0.5, covers the true shape (pixel IoU).
    torch.manual_seed(0)
    yy, xx = torch.meshgrid(torch.arange(64), torch.arange(64), indexing="ij")
    disc = (yy - 22) ** 2 + (xx - 34) ** 2 < 14 ** 2
    triangle = (yy >= 40) & (yy < 60) & (xx >= 4) & (xx - 4 <= yy - 40)
    image = torch.zeros(1, 3, 64, 64)
    image[0, 0][disc] = 1.0
    image[0, 2][triangle] = 1.0
    masks = torch.stack([disc, triangle])
    boxes = torch.tensor([[21.0, 9.0, 48.0, 36.0], [4.0, 40.0, 24.0, 60.0]])  # x1, y1, x2, y2 around each shape
    target = [{"boxes": boxes, "labels": torch.tensor([1, 0]), "masks": masks.to(torch.uint8)}]
    model = get_model("mask_rcnn", num_classes=2, input_size=64, backbone=layer_list(FOUR_POOLS, 64),
                      fpn_channels=32, mask_channels=16, proposals=100, rois_per_image=64)
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    model.train()
    for _ in range(80):
        loss = sum(model(image, target).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    model.conf = 0.2
    with torch.no_grad():
        (out,) = model(image)
    for mask, label in zip(masks, (1, 0)):
        hits = torch.where(out["labels"] == label)[0]
        assert len(hits), out["labels"]
        found = out["masks"][hits[0], 0] > 0.5  # detections come sorted by score
        iou = (found & mask).sum() / (found | mask).sum()
        assert iou > 0.7, float(iou)
