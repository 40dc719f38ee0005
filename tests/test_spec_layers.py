"""Declarative layer lists: shape inference against torch, the error messages,
the DeclarativeNet interface, the course's layers against formulas by hand, and
the initialisation schemes against their published variances.

Oracles: torch's own F.conv2d / F.pad / pooling on explicitly padded inputs, loops
over windows in NumPy, and the Glorot (2010) / He (2015) formulas. The 'same' padding
rule itself (and cnnkit.nn.Conv2d's use of it) is checked in tests/test_geometry.py.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from cnnkit.errors import SpecError
from cnnkit.models import DeclarativeNet, build_torch, infer_shapes, parse_layers
from cnnkit.nn.init import init_weights
from cnnkit.nn.layers import Conv2d, L2Pool2d, Maxout, Residual


def shapes(layers, input_shape, num_classes=None):
    return infer_shapes(parse_layers(layers), input_shape, num_classes)


# --------------------------------------------------------------------------- shapes of every layer type


def test_lenet_shapes_as_in_the_course():
    layers = [{"conv": {"out": 6, "kernel": 5, "padding": "valid"}}, "relu", {"maxpool": 2},
              {"conv": {"out": 16, "kernel": 5, "padding": "valid"}}, "relu", {"maxpool": 2},
              "flatten", {"dense": 120}, "relu", {"dense": 84}, "relu", {"dense": 10}]
    assert shapes(layers, (1, 28, 28)) == [
        (6, 24, 24), (6, 24, 24), (6, 12, 12), (16, 8, 8), (16, 8, 8), (16, 4, 4),
        (256,), (120,), (120,), (84,), (84,), (10,)]


@pytest.mark.parametrize("layer, in_shape, out_shape", [
    ({"conv": {"out": 5, "kernel": 3}}, (2, 9, 7), (5, 7, 5)),
    ({"conv": {"out": 5, "kernel": 3, "padding": "same"}}, (2, 9, 7), (5, 9, 7)),
    ({"conv": {"out": 5, "kernel": 3, "stride": 2, "padding": "same"}}, (2, 9, 8), (5, 5, 4)),
    ({"conv": {"out": 5, "kernel": [3, 1], "padding": [1, 0]}}, (2, 9, 7), (5, 9, 7)),
    ({"conv": {"out": 4, "kernel": 3, "dilation": 2}}, (2, 9, 7), (4, 5, 3)),
    ({"conv": {"out": 4, "kernel": 3, "groups": 2}}, (2, 9, 7), (4, 7, 5)),
    ({"maxpool": 2}, (3, 9, 8), (3, 4, 4)),
    ({"maxpool": {"kernel": 3, "stride": 2, "padding": 1}}, (3, 9, 8), (3, 5, 4)),
    ({"avgpool": {"kernel": 2, "stride": 1}}, (3, 9, 8), (3, 8, 7)),
    ({"l2pool": 3}, (3, 9, 8), (3, 3, 2)),
    ("globalavgpool", (3, 9, 8), (3,)),
    ("globalmaxpool", (3, 9, 8), (3,)),
    ("flatten", (3, 9, 8), (216,)),
    ({"dense": 7}, (216,), (7,)),
    ({"dropout": 0.3}, (3, 9, 8), (3, 9, 8)),
    ("batchnorm", (3, 9, 8), (3, 9, 8)),
    ("batchnorm", (12,), (12,)),
    ("sigmoid", (3, 9, 8), (3, 9, 8)),
    ("tanh", (12,), (12,)),
    ("relu", (12,), (12,)),
    ("leaky_relu", (3, 9, 8), (3, 9, 8)),
    ({"elu": {"alpha": 0.5}}, (12,), (12,)),
    ({"maxout": 3}, (6, 9, 8), (2, 9, 8)),
    ({"maxout": 2}, (12,), (6,)),
    ({"residual": [{"conv": {"out": 3, "kernel": 3, "padding": "same"}}, "relu"]}, (3, 9, 8), (3, 9, 8)),
    ({"residual": [{"conv": {"out": 6, "kernel": 3, "stride": 2, "padding": "same"}}]}, (3, 9, 8), (6, 5, 4)),
])
def test_every_layer_type_shape_matches_the_built_torch_module(layer, in_shape, out_shape):
    assert shapes([layer], in_shape) == [out_shape]
    net = build_torch(parse_layers([layer]), in_shape)
    net.eval()
    with torch.no_grad():
        y = net(torch.randn(2, *in_shape))
    assert tuple(y.shape[1:]) == out_shape


def test_aliases_and_shorthands():
    specs = parse_layers(["bn", {"conv2d": 4}, {"fc": 3}, "gap", {"linear": 2}, "leakyrelu"])
    assert [s.type for s in specs] == ["batchnorm", "conv", "dense", "globalavgpool", "dense", "leaky_relu"]
    assert specs[1].args["out"] == 4 and specs[1].args["kernel"] == (3, 3)
    assert specs[5].args["slope"] == 0.1  # the course's default leak
    assert [s.name for s in specs] == ["batchnorm1", "conv1", "dense1", "globalavgpool1", "dense2", "leaky_relu1"]
    assert parse_layers([{"elu": 0.3}])[0].args["alpha"] == 0.3
    assert parse_layers(["elu"])[0].args["alpha"] == 1.0
    assert parse_layers([{"maxout": 4}])[0].args["pieces"] == 4


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n_h=st.integers(1, 13), n_w=st.integers(1, 13), k=st.integers(1, 5), s=st.integers(1, 4),
       d=st.integers(1, 3), c=st.integers(1, 3))
def test_same_padding_shapes_and_the_built_conv(n_h, n_w, k, s, d, c):
    """'same' keeps ceil(n / s), also with stride > 1; the built module is the TF-padding Conv2d."""
    spec = parse_layers([{"conv": {"out": 2, "kernel": k, "stride": s, "dilation": d, "padding": "same"}}])
    assert infer_shapes(spec, (c, n_h, n_w)) == [(2, math.ceil(n_h / s), math.ceil(n_w / s))]
    conv = build_torch(spec, (c, n_h, n_w)).conv1
    assert isinstance(conv, Conv2d) and conv.same
    assert conv(torch.zeros(1, c, n_h, n_w)).shape[-2:] == (math.ceil(n_h / s), math.ceil(n_w / s))


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 12), k=st.integers(1, 5), s=st.integers(1, 3), p=st.integers(0, 2), d=st.integers(1, 2))
def test_valid_and_int_padding_shapes_match_torch(n, k, s, p, d):
    want = (n + 2 * p - d * (k - 1) - 1) // s + 1
    layer = {"conv": {"out": 1, "kernel": k, "stride": s, "padding": p, "dilation": d}}
    if want < 1:
        with pytest.raises(SpecError):
            shapes([layer], (1, n, n))
        return
    assert shapes([layer], (1, n, n)) == [(1, want, want)]
    ref = F.conv2d(torch.zeros(1, 1, n, n), torch.zeros(1, 1, k, k), stride=s, padding=p, dilation=d)
    assert ref.shape[-1] == want


def test_pooling_matches_torch_on_the_same_tensor():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 9, 8)
    net = build_torch(parse_layers([{"maxpool": {"kernel": 3, "stride": 2, "padding": 1}}]), (3, 9, 8))
    torch.testing.assert_close(net(x), F.max_pool2d(x, 3, 2, 1))
    net = build_torch(parse_layers([{"avgpool": {"kernel": 2}}]), (3, 9, 8))
    torch.testing.assert_close(net(x), F.avg_pool2d(x, 2))
    net = build_torch(parse_layers(["globalavgpool"]), (3, 9, 8))
    torch.testing.assert_close(net(x), x.mean(dim=(2, 3)))
    net = build_torch(parse_layers(["globalmaxpool"]), (3, 9, 8))
    torch.testing.assert_close(net(x), x.flatten(2).max(dim=2).values)


def test_activations_match_their_formulas():
    x = torch.linspace(-3, 3, 13).reshape(1, 13)
    net = build_torch(parse_layers(["leaky_relu"]), (13,))
    torch.testing.assert_close(net(x), torch.where(x > 0, x, 0.1 * x))
    net = build_torch(parse_layers([{"elu": {"alpha": 0.7}}]), (13,))
    torch.testing.assert_close(net(x), torch.where(x > 0, x, 0.7 * (torch.exp(x) - 1)))
    net = build_torch(parse_layers(["sigmoid"]), (13,))
    torch.testing.assert_close(net(x), 1 / (1 + torch.exp(-x)))
    net = build_torch(parse_layers(["tanh"]), (13,))
    torch.testing.assert_close(net(x), (torch.exp(x) - torch.exp(-x)) / (torch.exp(x) + torch.exp(-x)))
    net = build_torch(parse_layers(["relu"]), (13,))
    torch.testing.assert_close(net(x), x.clamp_min(0))


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize("layers, in_shape, must_contain", [
    ([{"conv": {"out": 4, "kernel": 9}}], (1, 8, 8), ["layer 0", "conv", "1x8x8", "(9, 9)"]),
    (["flatten", {"conv": 4}], (1, 8, 8), ["layer 1", "conv", "64", "flatten"]),
    ([{"conv": 4}, {"dense": 10}], (1, 8, 8), ["layer 1", "dense", "4x6x6", "flatten"]),
    ([{"conv": 4}, "relu", {"maxpool": 8}], (1, 8, 8), ["layer 2", "maxpool", "4x6x6"]),
    ([{"conv": 5}, {"maxout": 2}], (1, 8, 8), ["layer 1", "maxout", "5", "pieces=2"]),
    ([{"conv": {"out": 4, "groups": 3}}], (2, 8, 8), ["layer 0", "groups=3", "(2)", "(4)"]),
    ([{"residual": {"layers": [{"conv": 4}], "shortcut": "identity"}}], (2, 8, 8),
     ["layer 0", "residual", "2x8x8", "4x6x6"]),
    ([{"residual": [{"conv": 2}, {"conv": {"out": 2, "kernel": 9}}]}], (2, 8, 8), ["layer 0.1", "conv", "2x6x6"]),
])
def test_shape_errors_name_the_layer_index_and_the_shapes(layers, in_shape, must_contain):
    with pytest.raises(SpecError) as e:
        build_torch(parse_layers(layers), in_shape)
    msg = str(e.value)
    for part in must_contain:
        assert part in msg, (part, msg)


@pytest.mark.parametrize("layers, must_contain", [
    ([{"conv": {"out": 4, "padding": "smae"}}], ["layer 0", "'smae'", "valid", "same"]),
    (["relu", {"convv": 4}], ["layer 1", "'convv'", "did you mean 'conv'"]),
    ([{"conv": {"out": 4, "kernal": 3}}], ["layer 0", "'kernal'", "did you mean 'kernel'", "stride"]),
    ([{"conv": {"kernel": 3}}], ["layer 0", "'out'"]),
    ([{"conv": {"out": 0}}], ["layer 0", "out", "0"]),
    ([{"conv": {"out": 4, "kernel": 0}}], ["layer 0", "kernel", "0"]),
    ([{"conv": {"out": 4, "stride": [1, 2, 3]}}], ["layer 0", "stride"]),
    ([{"dropout": 1.5}], ["layer 0", "dropout", "1.5"]),
    ([{"maxout": 1}], ["layer 0", "maxout", "pieces"]),
    ([{"elu": -1}], ["layer 0", "elu", "alpha"]),
    ([{"maxpool": {"kernel": 2, "padding": 2}}], ["layer 0", "padding", "half"]),
    ([{"relu": 3}], ["layer 0", "relu", "3"]),
    ([{"conv": 4, "relu": None}], ["layer 0"]),
    ([{"residual": {"layers": ["relu"], "shortcut": "projection"}}], ["layer 0", "'projection'", "identity"]),
    ([], ["non-empty"]),
])
def test_parse_errors_name_the_layer_and_the_bad_value(layers, must_contain):
    with pytest.raises(SpecError) as e:
        parse_layers(layers)
    msg = str(e.value)
    for part in must_contain:
        assert part in msg, (part, msg)


def test_dense_num_classes_needs_the_class_count():
    layers = ["flatten", {"dense": "num_classes"}]
    assert shapes(layers, (1, 4, 4), num_classes=7) == [(16,), (7,)]
    with pytest.raises(SpecError, match="num_classes"):
        shapes(layers, (1, 4, 4))


# --------------------------------------------------------------------------- DeclarativeNet


def _small_net():
    torch.manual_seed(0)
    layers = [{"conv": {"out": 4, "kernel": 3, "padding": "same"}}, "relu", {"maxpool": 2}, "flatten",
              {"dense": 8}, "relu", {"dense": 5}]
    return build_torch(parse_layers(layers), (1, 8, 8))


def test_module_names_follow_the_layers():
    net = _small_net()
    assert isinstance(net, DeclarativeNet)
    assert list(net._modules) == ["conv1", "relu1", "maxpool1", "flatten1", "dense1", "relu2", "dense2"]
    assert net.head_name == "dense2"
    assert net.get_classifier() is net.dense2


def test_forward_features_then_head_is_forward():
    net = _small_net().eval()
    x = torch.randn(3, 1, 8, 8)
    feats = net.forward_features(x)
    # The features are the input of the classifier: what the layers before it give.
    manual = x
    for name in ["conv1", "relu1", "maxpool1", "flatten1", "dense1", "relu2"]:
        manual = getattr(net, name)(manual)
    torch.testing.assert_close(feats, manual)
    assert feats.shape == (3, 8)
    torch.testing.assert_close(net.forward_head(feats), net(x))
    torch.testing.assert_close(net.forward_head(feats), feats @ net.dense2.weight.T + net.dense2.bias)
    assert net.forward_head(feats, pre_logits=True) is feats


def test_reset_classifier_replaces_only_the_head():
    net = _small_net().eval()
    x = torch.randn(3, 1, 8, 8)
    feats = net.forward_features(x).detach()
    conv_w = net.conv1.weight.detach().clone()
    net.reset_classifier(3)
    assert net(x).shape == (3, 3)
    assert net.get_classifier().out_features == 3 and net.get_classifier().in_features == 8
    torch.testing.assert_close(net.forward_features(x), feats)
    torch.testing.assert_close(net.conv1.weight, conv_w)
    assert any(p is net.get_classifier().weight for p in net.parameters())


def test_net_without_a_dense_head_has_identity_classifier():
    net = build_torch(parse_layers([{"conv": 4}, "globalavgpool"]), (1, 8, 8))
    x = torch.randn(2, 1, 8, 8)
    assert net.head_name is None
    torch.testing.assert_close(net.forward_features(x), net(x))
    assert isinstance(net.get_classifier(), nn.Identity)
    with pytest.raises(SpecError, match="classifier"):
        net.reset_classifier(3)


def test_residual_block_adds_the_shortcut():
    torch.manual_seed(0)
    net = build_torch(parse_layers([{"residual": {"layers": [{"conv": {"out": 3, "kernel": 3, "padding": "same"}}],
                                                   "activation": "relu"}}]), (3, 6, 6))
    block = net.residual1
    assert isinstance(block, Residual)
    x = torch.randn(2, 3, 6, 6)
    conv = block.body.conv1
    torch.testing.assert_close(net(x), torch.relu(F.conv2d(x, conv.weight, conv.bias, padding=1) + x))
    # A body that changes the shape gets a strided 1x1 projection.
    net = build_torch(parse_layers([{"residual": [{"conv": {"out": 6, "kernel": 3, "stride": 2, "padding": "same"}}]}]),
                      (3, 7, 7))
    sc = net.residual1.shortcut
    assert isinstance(sc, nn.Conv2d) and sc.kernel_size == (1, 1) and sc.stride == (2, 2)
    x = torch.randn(2, 3, 7, 7)
    body = net.residual1.body.conv1
    expected = F.conv2d(F.pad(x, (1, 1, 1, 1)), body.weight, body.bias, stride=2) + F.conv2d(x, sc.weight, stride=2)
    torch.testing.assert_close(net(x), expected)


# --------------------------------------------------------------------------- Maxout, L2 pooling by hand


def test_maxout_is_the_max_over_consecutive_groups():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 6, 3, 4)).astype(np.float32)
    y = Maxout(3)(torch.from_numpy(x)).numpy()
    assert y.shape == (2, 2, 3, 4)
    for n in range(2):
        for j in range(2):
            for h in range(3):
                for w in range(4):
                    assert y[n, j, h, w] == max(x[n, 3 * j + i, h, w] for i in range(3))
    v = rng.standard_normal((3, 8)).astype(np.float32)
    yv = Maxout(2)(torch.from_numpy(v)).numpy()
    np.testing.assert_array_equal(yv, np.maximum(v[:, 0::2], v[:, 1::2]))


def test_maxout_of_two_dense_pieces_is_max_of_two_affine_maps():
    torch.manual_seed(0)
    net = build_torch(parse_layers([{"dense": 6}, {"maxout": 2}]), (4,))
    x = torch.randn(5, 4)
    w, b = net.dense1.weight, net.dense1.bias
    z = x @ w.T + b
    torch.testing.assert_close(net(x), torch.maximum(z[:, 0::2], z[:, 1::2]))


def _l2pool_by_hand(x: np.ndarray, k: int, s: int, p: int) -> np.ndarray:
    n, c, h, w = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    oh, ow = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
    out = np.zeros((n, c, oh, ow))
    for i in range(oh):
        for j in range(ow):
            win = xp[:, :, i * s:i * s + k, j * s:j * s + k]
            out[:, :, i, j] = np.sqrt((win.astype(np.float64) ** 2).sum(axis=(2, 3)))
    return out


@pytest.mark.parametrize("k, s, p", [(2, 2, 0), (3, 1, 1), (3, 2, 1), (2, 1, 0)])
def test_l2pool_is_the_root_of_the_sum_of_squares(k, s, p):
    rng = np.random.default_rng(k * 10 + s)
    x = rng.standard_normal((2, 3, 7, 6)).astype(np.float32)
    y = L2Pool2d(k, s, p)(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(y, _l2pool_by_hand(x, k, s, p), rtol=1e-5, atol=1e-6)
    spec = parse_layers([{"l2pool": {"kernel": k, "stride": s, "padding": p}}])
    assert infer_shapes(spec, (3, 7, 6)) == [(3, *y.shape[2:])]


def test_l2pool_gradient_is_x_over_the_norm_and_finite_on_a_zero_window():
    # After a ReLU whole windows are zero; the L2 norm's (sub)gradient there is 0,
    # and it must not turn into NaN (which would poison every weight in one step).
    x = torch.tensor([[[[3.0, 4.0, 0.0, 0.0],
                        [0.0, 0.0, 0.0, 0.0]]]], requires_grad=True)
    y = L2Pool2d(2)(x)
    torch.testing.assert_close(y.detach(), torch.tensor([[[[5.0, 0.0]]]]))
    y.sum().backward()
    assert torch.isfinite(x.grad).all(), x.grad
    torch.testing.assert_close(x.grad[0, 0, :, :2], torch.tensor([[0.6, 0.8], [0.0, 0.0]]))


# --------------------------------------------------------------------------- initialisation


def _init(module: nn.Module, scheme: str, dist: str, scale: float = 0.05) -> nn.Module:
    torch.manual_seed(0)
    with torch.no_grad():
        for m in module.modules():
            if getattr(m, "bias", None) is not None:
                m.bias.fill_(1.0)  # so that "biases start at zero" is observable
    init_weights(module, scheme, dist, scale)
    return module


FAN_CASES = [
    (lambda: nn.Linear(300, 200), 300, 200),
    (lambda: nn.Conv2d(16, 32, 5), 16 * 25, 32 * 25),
]


@pytest.mark.parametrize("make, fan_in, fan_out", FAN_CASES)
def test_he_and_xavier_normal_std_match_the_formulas(make, fan_in, fan_out):
    w = _init(make(), "he", "normal").weight.detach()
    assert w.mean().abs().item() < 0.05 * math.sqrt(2 / fan_in)
    assert w.std().item() == pytest.approx(math.sqrt(2 / fan_in), rel=0.03)
    w = _init(make(), "xavier", "normal").weight.detach()
    assert w.std().item() == pytest.approx(math.sqrt(2 / (fan_in + fan_out)), rel=0.03)


@pytest.mark.parametrize("make, fan_in, fan_out", FAN_CASES)
def test_he_and_xavier_uniform_bounds_match_the_formulas(make, fan_in, fan_out):
    m = _init(make(), "he", "uniform")
    w = m.weight.detach()
    bound = math.sqrt(6 / fan_in)
    assert w.abs().max().item() <= bound
    assert w.abs().max().item() > 0.98 * bound
    assert w.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.03)  # U(-b, b) has std b / sqrt(3)
    assert torch.count_nonzero(m.bias) == 0
    w = _init(make(), "xavier", "uniform").weight.detach()
    bound = math.sqrt(6 / (fan_in + fan_out))
    assert bound * 0.98 < w.abs().max().item() <= bound
    assert w.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.03)


def test_random_init_uses_the_scale():
    m = _init(nn.Linear(300, 200), "random", "normal", scale=0.2)
    assert m.weight.std().item() == pytest.approx(0.2, rel=0.03)
    assert m.weight.mean().abs().item() < 0.01
    assert torch.count_nonzero(m.bias) == 0
    m = _init(nn.Linear(300, 200), "random", "uniform", scale=0.3)
    assert 0.29 < m.weight.abs().max().item() <= 0.3
    assert m.weight.std().item() == pytest.approx(0.3 / math.sqrt(3), rel=0.03)


def test_default_init_leaves_torchs_weights_and_init_reaches_every_layer():
    lin = nn.Linear(30, 20)
    before = lin.weight.detach().clone()
    init_weights(lin, "default")
    torch.testing.assert_close(lin.weight, before)
    net = build_torch(parse_layers([{"conv": {"out": 64, "kernel": 3}}, "flatten", {"dense": 400}, {"dense": 10}]),
                      (8, 10, 10))
    _init(net, "he", "normal")
    assert net.conv1.weight.std().item() == pytest.approx(math.sqrt(2 / (8 * 9)), rel=0.05)
    assert net.dense1.weight.std().item() == pytest.approx(math.sqrt(2 / (64 * 64)), rel=0.05)
    assert net.dense2.weight.std().item() == pytest.approx(math.sqrt(2 / 400), rel=0.1)
    for m in (net.conv1, net.dense1, net.dense2):
        assert torch.count_nonzero(m.bias) == 0
