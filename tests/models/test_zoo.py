"""The model zoo: every registered model trains, has the classifier interface, and
the well-known networks have their published parameter counts.

The parametrised test runs over ``list_models()``, so a family registered later
is tested the moment it exists. Everything runs at each model's smallest valid
input with a batch of 2 (ImageNet-shaped networks at 32 px), on at most 2 threads.
"""

from __future__ import annotations


import pytest
import torch
from torch import nn

from cnnkit.errors import UserError
from cnnkit.models import MODELS, Classifier, get_model, list_models


def _n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _first_conv(model: nn.Module) -> nn.Conv2d:
    return next(m for m in model.modules() if isinstance(m, nn.Conv2d))


# --------------------------------------------------------------------------- every registered model


@pytest.mark.parametrize("name", list_models(task="classification"))
def test_model_trains_and_has_the_classifier_interface(name):
    c, h, w = MODELS.entry(name).meta["min_input"]
    torch.manual_seed(0)
    model = get_model(name, num_classes=7, in_chans=c, input_size=h)
    x = torch.randn(2, c, h, w)

    # One training step's forward and backward: plain logits, finite gradients everywhere.
    model.train()
    logits = model(x)
    assert isinstance(logits, torch.Tensor)  # no aux-logit tuples in training mode
    assert logits.shape == (2, 7)
    nn.functional.cross_entropy(logits, torch.tensor([1, 5])).backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, f"{name}: {pname} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{name}: {pname} has a non-finite gradient"
    head = model.get_classifier()
    assert isinstance(head, nn.Linear) and head.out_features == 7
    assert head.weight.grad.abs().sum() > 0

    # forward == forward_head(forward_features) in eval mode; features are flat vectors.
    model.eval()
    with torch.no_grad():
        out = model(x)
        feats = model.forward_features(x)
        assert feats.ndim == 2 and feats.shape[0] == 2
        assert head.in_features == feats.shape[1]
        torch.testing.assert_close(model.forward_head(feats), out)
        assert torch.equal(model.forward_head(feats, pre_logits=True), feats)

        model.reset_classifier(3)
        assert model.get_classifier().out_features == 3
        assert model(x).shape == (2, 3)


def test_zoo_registers_every_family():
    expected = {
        "vgg11", "vgg13", "vgg16", "vgg19", "vgg11_bn", "vgg13_bn", "vgg16_bn", "vgg19_bn",
        "resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnext50_32x4d", "wide_resnet50_2",
        "resnet20", "resnet32", "resnet44", "resnet56", "resnet110", "wrn28_10",
        "googlenet", "inception_v3", "densenet121",
    }
    assert expected <= set(list_models())
    for name in expected:
        entry = MODELS.entry(name)
        assert entry.description and "\n" not in entry.description
        assert entry.meta["min_input"][1] <= entry.meta["default_input"][1]
    assert MODELS.entry("inception_v3").meta["min_input"] == (3, 299, 299)
    assert MODELS.entry("wrn28_10").meta["default_input"] == (3, 32, 32)
    assert MODELS.entry("resnet50").meta["default_input"] == (3, 224, 224)


# --------------------------------------------------------------------------- published parameter counts


@pytest.mark.parametrize("name, expected", [
    ("resnet18", 11_689_512),
    ("resnet50", 25_557_032),
    ("vgg16", 138_357_544),
    ("densenet121", 7_978_856),
])
def test_imagenet_parameter_counts(name, expected):
    model = get_model(name, num_classes=1000, input_size=224)
    assert isinstance(model, Classifier)
    assert _n_params(model) == expected


def test_vgg16_imagenet_head_is_torchvisions_last_linear():
    model = get_model("vgg16", num_classes=1000, input_size=224)
    assert (model.head.in_features, model.head.out_features) == (4096, 1000)
    body_linears = [m for m in model.body.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in body_linears] == [(25088, 4096), (4096, 4096)]


def test_vgg_small_input_head_is_gap_plus_linear():
    model = get_model("vgg16", num_classes=10, input_size=32)
    assert (model.head.in_features, model.head.out_features) == (512, 10)
    assert not [m for m in model.body.modules() if isinstance(m, nn.Linear)]
    # 14,714,688 in torchvision's VGG-16 convolutions + 512 * 10 + 10.
    assert _n_params(model) == 14_714_688 + 5_130


def test_resnet20_parameter_count_with_option_b_shortcuts():
    model = get_model("resnet20", num_classes=10)
    # Convolutions + batch norms (weight and bias), counted by hand:
    stem = 3 * 16 * 9 + 2 * 16
    stage1 = 6 * (16 * 16 * 9 + 2 * 16)
    stage2 = (16 * 32 * 9 + 2 * 32) + 5 * (32 * 32 * 9 + 2 * 32)
    stage3 = (32 * 64 * 9 + 2 * 64) + 5 * (64 * 64 * 9 + 2 * 64)
    fc = 64 * 10 + 10
    option_a = stem + stage1 + stage2 + stage3 + fc
    assert option_a == 269_722  # the paper's "0.27M", with parameter-free option-A shortcuts
    projections = (16 * 32 + 2 * 32) + (32 * 64 + 2 * 64)  # option B: 1x1 conv + BN where the shape changes
    assert projections == 2_752
    assert sum(p.numel() for k, p in model.named_parameters() if "shortcut" in k) == projections
    assert _n_params(model) == option_a + projections == 272_474


def test_cifar_resnet_depths():
    for name, blocks in [("resnet20", 3), ("resnet32", 5), ("resnet44", 7), ("resnet56", 9), ("resnet110", 18)]:
        body = get_model(name, num_classes=10).body
        assert [len(body.layer1), len(body.layer2), len(body.layer3)] == [blocks] * 3
        convs = [m for m in body.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
        assert len(convs) + 1 == int(name[len("resnet"):])  # 3x3 convs plus the linear layer


def test_wrn28_10_parameter_count_and_dropout_option():
    model = get_model("wrn28_10", num_classes=10)
    assert _n_params(model) == 36_479_194
    assert (model.head.in_features, model.head.out_features) == (640, 10)
    assert all(m.p == 0.0 for m in model.modules() if isinstance(m, nn.Dropout))
    model = get_model("wrn28_10", num_classes=10, dropout=0.3)
    assert {m.p for m in model.modules() if isinstance(m, nn.Dropout)} == {0.3}


# --------------------------------------------------------------------------- stems and feature-map sizes


def _final_map(model: Classifier, module: nn.Module, size: int) -> tuple[int, ...]:
    seen = []
    handle = module.register_forward_hook(lambda m, i, o: seen.append(tuple(o.shape)))
    model.eval()
    with torch.no_grad():
        model(torch.randn(1, 3, size, size))
    handle.remove()
    return seen[0]


def test_resnet18_cifar_stem_gives_a_4x4_final_map_at_32px():
    model = get_model("resnet18", num_classes=10, input_size=32)
    assert model.body.conv1.kernel_size == (3, 3) and model.body.conv1.stride == (1, 1)
    assert isinstance(model.body.maxpool, nn.Identity)
    assert _final_map(model, model.body.layer4, 32) == (1, 512, 4, 4)


def test_resnet18_imagenet_stem_from_64px_and_the_cifar_stem_override():
    model = get_model("resnet18", num_classes=10, input_size=64)
    assert model.body.conv1.kernel_size == (7, 7) and isinstance(model.body.maxpool, nn.MaxPool2d)
    assert _final_map(model, model.body.layer4, 64) == (1, 512, 2, 2)
    forced = get_model("resnet18", num_classes=10, input_size=64, cifar_stem=True)
    assert forced.body.conv1.kernel_size == (3, 3) and isinstance(forced.body.maxpool, nn.Identity)


def test_densenet121_cifar_stem_gives_a_4x4_final_map_at_32px():
    model = get_model("densenet121", num_classes=10, input_size=32)
    assert model.body.features.conv0.kernel_size == (3, 3)
    assert isinstance(model.body.features.pool0, nn.Identity)
    assert _final_map(model, model.body.features, 32) == (1, 1024, 4, 4)


def test_cifar_resnet_and_wrn_final_maps_are_8x8_at_32px():
    model = get_model("resnet20", num_classes=10)
    assert _final_map(model, model.body.layer3, 32) == (1, 64, 8, 8)
    wrn = get_model("wrn28_10", num_classes=10)
    assert _final_map(wrn, wrn.body.layer3, 32) == (1, 640, 8, 8)


# --------------------------------------------------------------------------- options and input channels


@pytest.mark.parametrize("name", ["vgg11", "vgg11_bn", "resnet18", "resnext50_32x4d", "resnet20", "wrn28_10",
                                  "googlenet", "inception_v3", "densenet121"])
def test_in_chans_replaces_the_first_conv(name):
    _, h, _ = MODELS.entry(name).meta["min_input"]
    model = get_model(name, num_classes=5, in_chans=1, input_size=h)
    assert _first_conv(model).in_channels == 1
    assert all(m.in_channels != 3 for m in model.modules() if isinstance(m, nn.Conv2d))
    if h <= 64:  # a forward pass at 299 px is already covered by the main test
        model.eval()
        with torch.no_grad():
            assert model(torch.randn(1, 1, h, h)).shape == (1, 5)


def test_inception_family_has_no_auxiliary_heads():
    assert get_model("googlenet", num_classes=10, input_size=32).body.aux1 is None
    assert get_model("inception_v3", num_classes=10, input_size=299).body.AuxLogits is None


def test_too_small_inputs_and_unknown_options_are_user_errors():
    with pytest.raises(UserError, match="299"):
        get_model("inception_v3", num_classes=10, input_size=224)
    with pytest.raises(UserError, match="32"):
        get_model("resnet18", num_classes=10, input_size=16)
    with pytest.raises(UserError, match="dropout"):
        get_model("wrn28_10", num_classes=10, dropot=0.3)
    with pytest.raises(UserError, match="aux_logits"):
        get_model("googlenet", num_classes=10, aux_logits=True)


def test_vgg_dropout_option():
    small = get_model("vgg11", num_classes=10, input_size=32)
    assert not [m for m in small.modules() if isinstance(m, nn.Dropout)]
    small = get_model("vgg11", num_classes=10, input_size=32, dropout=0.2)
    assert {m.p for m in small.modules() if isinstance(m, nn.Dropout)} == {0.2}
    forced = get_model("vgg11", num_classes=10, input_size=64, cifar_head=True)
    assert forced.head.in_features == 512


def test_lenet_course_is_the_figure_two_dense_layers():
    """The course's figure: Conv_1 5x5 (n1) -> pool -> Conv_2 5x5 (n2) -> pool -> fc_3 (ReLU) -> fc_4."""
    import torch

    from cnnkit.models import get_model

    net = get_model("lenet_course", num_classes=10, n1=4, n2=8, n3=32)
    linears = [m for m in net.modules() if isinstance(m, torch.nn.Linear)]
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size, c.padding) for c in convs] == [
        (1, 4, (5, 5), (0, 0)), (4, 8, (5, 5), (0, 0))]
    assert [(m.in_features, m.out_features) for m in linears] == [(8 * 4 * 4, 32), (32, 10)]
    # parameters by hand: conv 1*4*25+4, conv 4*8*25+8, fc_3 128*32+32, fc_4 32*10+10
    assert sum(p.numel() for p in net.parameters()) == 104 + 808 + 4128 + 330
    assert net(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
