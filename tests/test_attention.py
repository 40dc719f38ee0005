"""Attention blocks: squeeze-and-excitation, ECA, CBAM, non-local, attention pooling.

Oracles: each block's formula computed by hand in NumPy with loops (SE's gate on a constant map, ECA's
adaptive kernel size from the paper's rule and its 1-D convolution, CBAM's spatial map on a 4x4 map, the
non-local softmax, attention pooling of a constant map); the NumPy reference ops against finite differences
in float64 and the reference network against torch for ``se`` in float32; the SE-ResNets' parameter counts
from the gate's formula 2 C (C / r) + C / r + C.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

import cnnkit.models.zoo.se_resnet  # noqa: F401  (registers the se_resnet* builders)
from cnnkit import reference as R
from cnnkit.errors import SpecError
from cnnkit.models import build_torch, get_model, list_models, parse_layers
from cnnkit.nn.attention import CBAM, ECA, AttentionPool2d, NonLocal, SqueezeExcite, attention_blocks
from cnnkit.reference.network import ReferenceNet
from cnnkit.spec import attention_parameters, eca_kernel_size, infer_shapes


def sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


def relu(v):
    return np.maximum(v, 0.0)


def params(m: nn.Module) -> dict[str, np.ndarray]:
    return {k: v.detach().double().numpy() for k, v in m.state_dict().items()}


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


# --------------------------------------------------------------------------- squeeze-and-excitation


def test_se_on_a_constant_map_gates_each_channel_by_the_formula():
    torch.manual_seed(0)
    se = SqueezeExcite(6, reduction=3).double()                      # 6 -> 2 -> 6
    c = np.array([0.5, -1.0, 2.0, 0.0, 3.0, -0.25])
    x = torch.from_numpy(c).reshape(1, 6, 1, 1).expand(2, 6, 4, 5).contiguous()
    p = params(se)
    w = np.zeros(6)
    for i in range(6):                                                # W2 relu(W1 c + b1) + b2, one row at a time
        hidden = [relu(sum(p["fc1.weight"][j, k] * c[k] for k in range(6)) + p["fc1.bias"][j]) for j in range(2)]
        w[i] = sigmoid(sum(p["fc2.weight"][i, j] * hidden[j] for j in range(2)) + p["fc2.bias"][i])
    assert se.last_attention == {}
    y = se(x)
    assert se.last_attention == {}                                   # record is off: nothing kept
    se.record = True
    assert torch.equal(se(x), y)
    np.testing.assert_allclose(se.last_attention["channel"].numpy(), np.stack([w, w]), rtol=1e-12)
    np.testing.assert_allclose(y.detach().numpy(), x.numpy() * w.reshape(1, 6, 1, 1), rtol=1e-12)
    assert not se.last_attention["channel"].requires_grad


def test_se_on_a_sequence_pools_over_time():
    torch.manual_seed(1)
    se = SqueezeExcite(4, reduction=2).double()
    se.record = True
    x = torch.randn(3, 4, 7, dtype=torch.float64)
    y = se(x)
    p = params(se)
    s = x.numpy().mean(axis=2)
    w = sigmoid(relu(s @ p["fc1.weight"].T + p["fc1.bias"]) @ p["fc2.weight"].T + p["fc2.bias"])
    np.testing.assert_allclose(y.detach().numpy(), x.numpy() * w[:, :, None], rtol=1e-12)


# --------------------------------------------------------------------------- ECA


@pytest.mark.parametrize("channels, gamma, b, k", [
    (1, 2, 1, 1), (16, 2, 1, 3), (64, 2, 1, 3), (128, 2, 1, 5), (256, 2, 1, 5), (512, 2, 1, 5), (1024, 2, 1, 5),
    (2048, 2, 1, 7), (64, 1, 1, 7), (64, 2, 0, 3), (100, 2, 1, 3),
])
def test_eca_kernel_size_is_the_papers_rule(channels, gamma, b, k):
    # t = int(|(log2 C + b) / gamma|), then odd: 2048 -> (11 + 1) / 2 = 6 -> 7; 100 -> (6.64 + 1) / 2 = 3.8 -> 3
    assert eca_kernel_size(channels, gamma, b) == k
    assert ECA(channels, gamma, b).kernel_size == k


def test_eca_is_a_sigmoid_of_a_1d_conv_over_the_channel_means():
    eca = ECA(5, kernel=3).double()
    with torch.no_grad():
        eca.conv.weight.copy_(torch.tensor([[[0.5, -1.0, 2.0]]]))
    eca.record = True
    x = torch.randn(2, 5, 3, 4, dtype=torch.float64)
    y = eca(x)
    s = x.numpy().mean(axis=(2, 3))
    padded = np.pad(s, ((0, 0), (1, 1)))                            # zero padding (k - 1) / 2 = 1 each side
    u = 0.5 * padded[:, 0:5] - 1.0 * padded[:, 1:6] + 2.0 * padded[:, 2:7]
    np.testing.assert_allclose(eca.last_attention["channel"].numpy(), sigmoid(u), rtol=1e-12)
    np.testing.assert_allclose(y.detach().numpy(), x.numpy() * sigmoid(u)[:, :, None, None], rtol=1e-12)
    assert n_params(eca) == 3
    with pytest.raises(ValueError, match="odd"):
        ECA(8, kernel=4)


# --------------------------------------------------------------------------- CBAM


def test_cbam_channel_then_spatial_attention_by_hand():
    torch.manual_seed(2)
    cbam = CBAM(3, reduction=1, kernel=3).double()
    cbam.record = True
    x = torch.randn(1, 3, 4, 4, dtype=torch.float64)
    y = cbam(x)
    p, xn = params(cbam), x.numpy()[0]

    def mlp(v):
        return p["fc2.weight"] @ relu(p["fc1.weight"] @ v + p["fc1.bias"]) + p["fc2.bias"]

    mc = sigmoid(mlp(xn.mean(axis=(1, 2))) + mlp(xn.max(axis=(1, 2))))
    x1 = xn * mc[:, None, None]
    pooled = np.stack([x1.mean(axis=0), x1.max(axis=0)])            # [mean; max] across channels: (2, 4, 4)
    padded = np.pad(pooled, ((0, 0), (1, 1), (1, 1)))
    k, b = p["spatial.weight"][0], p["spatial.bias"][0]
    ms = np.zeros((4, 4))
    for i in range(4):
        for j in range(4):
            ms[i, j] = sigmoid(b + sum(k[c, u, v] * padded[c, i + u, j + v]
                                       for c in range(2) for u in range(3) for v in range(3)))
    np.testing.assert_allclose(cbam.last_attention["channel"].numpy()[0], mc, rtol=1e-12)
    np.testing.assert_allclose(cbam.last_attention["spatial"].numpy()[0, 0], ms, rtol=1e-12)
    np.testing.assert_allclose(y.detach().numpy()[0], x1 * ms, rtol=1e-12)
    with pytest.raises(ValueError, match="odd"):
        CBAM(4, kernel=4)


# --------------------------------------------------------------------------- non-local


def test_nonlocal_is_the_identity_at_init_and_its_attention_rows_sum_to_one():
    torch.manual_seed(3)
    block = NonLocal(4, reduction=2).double()
    block.record = True
    x = torch.randn(2, 4, 3, 5, dtype=torch.float64)
    for train in (True, False):
        block.train(train)
        assert torch.equal(block(x), x)
    a = block.last_attention["matrix"].numpy()
    assert a.shape == (2, 15, 15)
    np.testing.assert_allclose(a.sum(axis=2), 1.0, rtol=1e-12)
    p, xf = params(block), x.numpy().reshape(2, 4, 15)
    theta = np.einsum("ic,ncm->nim", p["theta.weight"][:, :, 0, 0], xf) + p["theta.bias"][None, :, None]
    phi = np.einsum("ic,ncm->nim", p["phi.weight"][:, :, 0, 0], xf)
    f = np.einsum("nki,nkj->nij", theta, phi)
    want = np.exp(f - f.max(axis=2, keepdims=True))
    np.testing.assert_allclose(a, want / want.sum(axis=2, keepdims=True), rtol=1e-10)
    np.testing.assert_allclose(block.last_attention["spatial"].numpy().reshape(2, 15), a.mean(axis=1), rtol=1e-12)
    # switched on (a BN scale), it is no longer the identity: the zero scale is what made it one
    with torch.no_grad():
        block.bn.weight.fill_(1.0)
    assert not torch.allclose(block(x), x)


# --------------------------------------------------------------------------- attention pooling


def test_attention_pooling_of_a_constant_map_returns_the_constant():
    torch.manual_seed(4)
    pool = AttentionPool2d(3).double()
    with torch.no_grad():
        pool.score.weight.normal_(0, 3)
    pool.record = True
    const = torch.tensor([1.5, -2.0, 7.0], dtype=torch.float64).reshape(1, 3, 1, 1).expand(2, 3, 5, 4)
    np.testing.assert_allclose(pool(const).detach().numpy(), [[1.5, -2.0, 7.0]] * 2, rtol=1e-12)
    x = torch.randn(2, 3, 5, 4, dtype=torch.float64)
    y = pool(x).detach().numpy()
    s = np.einsum("c,ncm->nm", pool.score.weight.detach().numpy()[0, :, 0, 0], x.numpy().reshape(2, 3, 20))
    a = np.exp(s) / np.exp(s).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(y, np.einsum("ncm,nm->nc", x.numpy().reshape(2, 3, 20), a), rtol=1e-12)
    np.testing.assert_allclose(pool.last_attention["spatial"].numpy().reshape(2, 20), a, rtol=1e-12)


# --------------------------------------------------------------------------- layer lists


def test_layer_list_shapes_and_parameters():
    layers = [{"conv": {"out": 32, "kernel": 3, "padding": "same"}}, {"se": 8}, "cbam", {"eca": {"gamma": 2}},
              {"nonlocal": {"reduction": 4}}, "attention_pool", {"dense": 10}]
    specs = parse_layers(layers)
    assert [s.name for s in specs] == ["conv1", "se1", "cbam1", "eca1", "nonlocal1", "attention_pool1", "dense1"]
    assert specs[1].args == {"reduction": 8} and specs[2].args == {"reduction": 16, "kernel": 7}
    assert infer_shapes(specs, (3, 9, 7)) == [(32, 9, 7)] * 5 + [(32,), (10,)]
    net = build_torch(specs, (3, 9, 7), 10)
    assert net(torch.randn(2, 3, 9, 7)).shape == (2, 10)
    by_hand = {
        "se1": 2 * 32 * 4 + 4 + 32,                                   # C / r = 32 / 8 = 4
        "cbam1": 2 * 32 * 2 + 2 + 32 + 2 * 7 * 7 + 1,                  # 32 / 16 = 2, then the 2 -> 1 7x7 conv
        "eca1": 3,                                                     # k(32) = int((5 + 1) / 2) = 3
        "nonlocal1": (32 * 8 + 8) + 2 * 32 * 8 + 8 * 32 + 2 * 32,      # I = 32 / 4 = 8
        "attention_pool1": 32,
    }
    for spec in specs[1:6]:
        assert n_params(getattr(net, spec.name)) == by_hand[spec.name], spec.name
        count, text = attention_parameters(spec, 32)                  # what explain shapes can show
        assert count == by_hand[spec.name] and str(count) in text, spec.name
    assert [name for name, _ in attention_blocks(net)] == list(by_hand)


def test_layer_list_aliases_sequences_and_errors():
    assert parse_layers([{"squeeze_excite": 4}, "non_local", "attention_pooling"])[0].type == "se"
    # se and eca gate the channels of a sequence too
    seq = parse_layers([{"conv1d": {"out": 8, "kernel": 3}}, {"se": 2}, {"eca": {"kernel": 5}}, "globalavgpool1d"])
    assert infer_shapes(seq, (3, 20), signal=True) == [(8, 18), (8, 18), (8, 18), (8,)]
    cases = [
        ([{"conv1d": {"out": 8, "kernel": 3}}, "cbam"], (3, 20), "se and eca"),
        (["flatten", {"se": 2}], (3, 4, 4), "vector"),
        ([{"se": 0}], (3, 4, 4), "reduction must be a positive int"),
        ([{"cbam": {"kernel": 4}}], (3, 4, 4), "kernel must be odd"),
        ([{"eca": {"kernel": 2}}], (3, 4, 4), "kernel must be odd"),
        ([{"eca": {"gamma": 0}}], (3, 4, 4), "gamma must be positive"),
        ([{"eca": 3}], (3, 4, 4), "takes no value"),
        ([{"se": {"ratio": 4}}], (3, 4, 4), "unknown argument 'ratio'"),
        (["attention_pool", "attention_pool"], (3, 4, 4), "feature map"),
    ]
    for layers, shape, message in cases:
        with pytest.raises(SpecError, match=message):
            infer_shapes(parse_layers(layers), shape, signal=len(shape) == 2)


# --------------------------------------------------------------------------- the reference engine


def _fd(f, arrays, grads, dy, tol=1e-6):
    for k, (a, g) in enumerate(zip(arrays, grads)):
        num = R.numerical_gradient(lambda _: float((f(*arrays) * dy).sum()), a)
        assert np.abs(num).max() > 0, f"argument {k}: premise, a gradient that is not zero"
        err = np.abs(g - num).max() / np.abs(num).max()
        assert err < tol, f"argument {k}: normalised finite-difference error {err:.2e}"


def test_reference_attention_ops_against_finite_differences():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 4, 3, 3))
    w1, w2, b2 = (rng.standard_normal(s) for s in ((2, 4), (4, 2), (4,)))
    b1 = np.array([1.5, 2.0])                                        # both hidden units active: no ReLU kink near
    for op, back, args in [
        (R.squeeze_excite, R.squeeze_excite_backward, [x, w1, b1, w2, b2]),
        (R.squeeze_excite, R.squeeze_excite_backward, [rng.standard_normal((2, 4, 5)), w1, b1, w2, b2]),
        (R.eca, R.eca_backward, [x, rng.standard_normal((1, 1, 3))]),
        (R.cbam_channel, R.cbam_channel_backward, [x, w1, b1, w2, b2]),
        (R.cbam_spatial, R.cbam_spatial_backward, [x, rng.standard_normal((1, 2, 3, 3)), rng.standard_normal(1)]),
        (R.embedded_gaussian, R.embedded_gaussian_backward,
         [x, *(rng.standard_normal(s) for s in ((2, 4, 1, 1), (2,), (2, 4, 1, 1), (2, 4, 1, 1)))]),
        (R.attention_pool2d, R.attention_pool2d_backward, [x, rng.standard_normal((1, 4, 1, 1))]),
    ]:
        args = [np.ascontiguousarray(a) for a in args]
        y, cache = op(*args)
        dy = rng.standard_normal(y.shape)
        _fd(lambda *a: op(*a)[0], args, back(dy, cache), dy)


def test_reference_se_matches_torch_in_float32():
    layers = [{"conv": {"out": 16, "kernel": 3, "padding": 1}}, "relu", {"se": 4}, "globalavgpool", {"dense": 10}]
    specs = parse_layers(layers)
    torch.manual_seed(0)
    tnet = build_torch(specs, (3, 8, 8), 10)
    net = ReferenceNet(specs, (3, 8, 8), 10)
    net.load_state_dict(tnet.state_dict())
    x = torch.randn(16, 3, 8, 8, requires_grad=True)
    out = tnet(x)
    dout = torch.randn(16, 10)
    (out * dout).sum().backward()
    mine = net.forward(x.detach().numpy(), training=True)
    grads = net.backward(dout.numpy(), need_input_grad=True)

    def nerr(a, b):
        return np.abs(a - b).max() / np.abs(b).max()

    assert nerr(mine, out.detach().numpy()) < 1e-5
    assert nerr(net.input_grad, x.grad.numpy()) < 1e-5
    for name, p in tnet.named_parameters():
        assert nerr(grads[name], p.grad.numpy()) < 1e-5, name


# --------------------------------------------------------------------------- SE-ResNets


def _gate(c: int, r: int) -> int:
    """An SE gate's parameters: fc1 (C/r, C) + its bias, fc2 (C, C/r) + its bias."""
    return 2 * c * (c // r) + c // r + c


def test_se_resnets_are_registered():
    assert {"se_resnet18", "se_resnet34", "se_resnet50", "se_resnet20", "se_resnet32", "se_resnet44",
            "se_resnet56", "se_resnet110"} <= set(list_models("se_resnet*"))


def test_se_resnet20_is_resnet20_plus_its_gates():
    plain, se = get_model("resnet20", num_classes=10), get_model("se_resnet20", num_classes=10)
    gates = 3 * (_gate(16, 8) + _gate(32, 8) + _gate(64, 8))        # 3 blocks a stage, reduction 8
    assert gates == 3 * (82 + 292 + 1096) == 4410
    assert n_params(se) == n_params(plain) + gates == 272_474 + 4410
    assert gates / n_params(plain) < 0.05                           # the budget: under 5%
    blocks = attention_blocks(se)
    assert len(blocks) == 9 and blocks[0][0] == "body.layer1.0.se"
    assert n_params(get_model("se_resnet20", reduction=4)) == n_params(plain) + 3 * sum(_gate(c, 4) for c in (16, 32, 64))
    # the same layers otherwise: the plain network's weights load into the SE one, the gates aside
    missing = se.load_state_dict(plain.state_dict(), strict=False).missing_keys
    assert missing and all(".se." in k for k in missing)


def test_se_resnet50_is_resnet50_plus_its_gates():
    plain = get_model("resnet50", num_classes=1000, input_size=224)
    se = get_model("se_resnet50", num_classes=1000, input_size=224)
    gates = sum(n * _gate(c, 16) for n, c in ((3, 256), (4, 512), (6, 1024), (3, 2048)))
    assert n_params(se) == n_params(plain) + gates == 28_088_024     # the paper: 28.09M
    model = get_model("se_resnet18", num_classes=7, input_size=32)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 7)
    assert len(attention_blocks(model)) == 8
