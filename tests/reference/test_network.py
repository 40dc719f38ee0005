"""ReferenceNet (the NumPy network) against the torch DeclarativeNet of the same layer list.

First step in float32: same weights, same batch -> the same loss and gradients (max|a-b|/max|b|
below 1e-5) for LeNet and for lists that together use every supported layer type (text too), with each
of the three losses. Then one step of each course optimiser in float64.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _helpers import nerr

from cnnkit.errors import UserError
from cnnkit.models.lenet import lenet5_layers
from cnnkit.models.spec import build_torch
from cnnkit.spec import parse_layers
from cnnkit.optim import create as torch_optimizer
from cnnkit.reference.network import SUPPORTED, ReferenceNet
from cnnkit.reference.optim import create as reference_optimizer
from cnnkit.reference.losses import classification_loss as make_reference_loss
from cnnkit.nn.losses import make_loss

FIRST_STEP_TOL = 1e-5

# Convolutions (same padding with stride 2, dilation, groups), L2/avg/max pooling, batchnorm 2-D,
# residual blocks with a projection and with identity, maxout, elu, leaky_relu, sigmoid, tanh,
# dropout p=0, global average pooling. Convs feeding a batchnorm have no bias (its gradient is 0).
SPATIAL = [
    {"conv": {"out": 8, "kernel": 3, "padding": "same", "stride": 2}}, "elu",
    {"conv": {"out": 8, "kernel": 3, "padding": 2, "dilation": 2, "groups": 2, "bias": False}}, "batchnorm",
    {"leaky_relu": 0.2},
    {"l2pool": {"kernel": 2, "stride": 1}},
    {"residual": {"layers": [{"conv": {"out": 12, "kernel": 3, "stride": 2, "padding": "same"}}, "tanh"],
                  "activation": "relu"}},
    {"residual": {"layers": [{"conv": {"out": 12, "kernel": 3, "padding": 1}}, "elu"]}},
    {"avgpool": {"kernel": 3, "stride": 2, "padding": 1}},
    {"conv": {"out": 16, "kernel": 1}}, {"maxout": 2}, "sigmoid",
    {"maxpool": {"kernel": 3, "stride": 1, "padding": 1}},
    {"dropout": 0.0}, "globalavgpool", {"dense": 20}, {"maxout": 2}, {"dense": 10},
]
# The rest: relu, max pooling, global max pooling, flatten, batchnorm 1-D, dropout with torch's mask.
VECTOR = [
    {"conv": {"out": 6, "kernel": 3, "padding": 1}}, "relu", {"maxpool": 2},
    {"conv": {"out": 12, "kernel": [3, 2], "stride": [1, 2], "padding": "same"}}, "relu", "globalmaxpool",
    "flatten", {"dense": {"out": 32, "bias": False}}, "batchnorm", "relu", {"dropout": 0.5}, {"dense": 10},
]
# U-Net's pieces: named layers, a transposed convolution, nearest and bilinear upsampling, concatenations
# (one of them fed by a layer whose output also goes on), then a classifier head for the losses.
UNET = [
    {"conv": {"out": 6, "kernel": 3, "padding": "same"}, "name": "enc1"}, "relu", {"maxpool": 2},
    {"conv": {"out": 8, "kernel": 3, "padding": 1}}, {"relu": {"name": "enc2"}}, {"maxpool": 2},
    {"upconv": {"out": 8, "kernel": 3, "stride": 2, "padding": 1, "output_padding": 1}}, {"concat": "enc2"},
    {"upsample": {"scale": 2, "mode": "bilinear"}}, {"concat": "enc1"}, "tanh",
    {"upsample": {"size": [9, 7]}}, "globalavgpool", {"dense": 10},
]
# Text (Kim, 2014): token ids through an embedding, conv1d (same, stride 2) with batchnorm on (C, L), 1-D max and
# average pooling, parallel branches ending in max- and average-over-time pooling, dropout with torch's mask.
TEXT = [
    {"embedding": 6}, {"conv1d": {"out": 8, "kernel": 4, "stride": 2, "padding": "same", "bias": False}},
    "batchnorm", "relu", {"maxpool1d": {"kernel": 3, "stride": 1, "padding": 1}},
    {"parallel": [[{"conv1d": {"out": 5, "kernel": 3, "dilation": 2}}, "relu", "globalmaxpool1d"],
                  [{"avgpool1d": 2}, "globalavgpool1d"]]},
    {"dropout": 0.5}, {"dense": 10},
]
RECURRENT = [
    {"embedding": 6}, {"conv1d": {"out": 5, "kernel": 3, "dilation": 2, "causal": True}},
    {"lstm": {"hidden": 4, "bidirectional": True}}, {"gru": {"hidden": 6, "return": "last"}}, {"dense": 10},
]
# Attention blocks: squeeze-and-excitation, CBAM (3x3 spatial kernel), ECA, a non-local block (its BN scale at 0,
# as initialised: the identity; test_attention_blocks_match_torch_in_float64 gives it a scale) and attention
# pooling. No ReLU and no biases before them: gates on zero-mean maps keep float32 within the tolerance.
ATTENTION = [
    {"conv": {"out": 12, "kernel": 3, "padding": "same", "bias": False}}, {"se": 4},
    {"cbam": {"reduction": 3, "kernel": 3}}, {"eca": {"kernel": 3}}, {"nonlocal": 2}, "attention_pool", {"dense": 10},
]
NETS = {"recurrent": (RECURRENT, (30, 9)), "lenet": (lenet5_layers(), (1, 28, 28)), "spatial": (SPATIAL, (3, 15, 14)),
        "vector": (VECTOR, (3, 12, 12)),
        "unet": (UNET, (3, 12, 12)), "text": (TEXT, (40, 14)), "attention": (ATTENTION, (3, 7, 6))}


def twins(layers, shape, seed=0, dtype=np.float32):
    torch.manual_seed(seed)
    specs = parse_layers(layers)
    tnet = build_torch(specs, shape, 10)
    net = ReferenceNet(specs, shape, 10, dtype=dtype)
    net.load_state_dict(tnet.state_dict())
    return tnet, net


def share_dropout_masks(tnet, net, x):
    """Run torch once to read its dropout masks and give them to the reference layers."""
    masks = {}

    def hook(mod, inp, out):
        masks[mod] = ((out != 0).to(out.dtype) / (1 - mod.p)).detach().numpy()

    handles = [m.register_forward_hook(hook) for m in tnet.modules() if isinstance(m, torch.nn.Dropout)]
    state, buffers = torch.get_rng_state(), {k: v.clone() for k, v in tnet.state_dict().items()}
    with torch.no_grad():
        tnet(x)
    torch.set_rng_state(state)  # the real forward draws the same masks again
    tnet.load_state_dict(buffers)  # and starts from the same running statistics
    for h in handles:
        h.remove()
    by_name = {name: masks[m] for name, m in tnet.named_modules() if m in masks}
    for layer in net.iter_layers():
        if layer.type == "dropout":
            layer.mask_override = by_name.get(layer.prefix.rstrip("."))


def test_supported_types_are_all_covered():
    used = set()

    def walk(specs):
        for s in specs:
            used.add(s.type)
            for sub in s.sublists():
                walk(sub)

    for layers, _ in NETS.values():
        walk(parse_layers(layers))
    assert used == set(SUPPORTED)


@pytest.mark.parametrize("loss", ["cross_entropy", "mse", "bce"])
@pytest.mark.parametrize("net_name", list(NETS))
def test_first_step_matches_torch(net_name, loss, record_error):
    layers, shape = NETS[net_name]
    tnet, net = twins(layers, shape)
    tnet.train()
    gen = torch.Generator().manual_seed(1)
    if len(shape) == 2:   # text: token ids (N, L)
        x = torch.randint(0, shape[0], (32, shape[1]), generator=gen)
    else:
        x = torch.randn(32, *shape, generator=gen)
    y = torch.randint(0, 10, (32,), generator=gen)
    share_dropout_masks(tnet, net, x)
    assert list(net.state_dict()) == list(tnet.state_dict())

    smoothing = 0.1 if loss != "mse" else 0.0
    t_loss = make_loss(loss, smoothing)(tnet(x), y)
    t_loss.backward()
    ref_loss_fn = make_reference_loss(loss, smoothing)
    logits = net.forward(x.numpy(), training=True)
    value, dlogits = ref_loss_fn(logits, y.numpy())
    grads = net.backward(dlogits)

    assert abs(value - t_loss.item()) / abs(t_loss.item()) < FIRST_STEP_TOL
    for name, p in tnet.named_parameters():
        e = record_error(f"first step {net_name} {loss}", nerr(grads[name], p.grad.numpy()))
        assert e < FIRST_STEP_TOL, f"{name}: normalised gradient error {e:.2e}"
    # batchnorm running statistics moved the same way
    t_state = tnet.state_dict()
    for name, v in net.state_dict().items():
        if "running" in name:
            assert nerr(v.numpy(), t_state[name].numpy()) < FIRST_STEP_TOL, name
        if "num_batches_tracked" in name:
            assert int(v) == int(t_state[name]) == 1


def test_eval_mode_and_float64_match_torch():
    tnet, net = twins(SPATIAL, (3, 15, 14), dtype=np.float64)
    tnet = tnet.double()
    x = torch.randn(8, 3, 15, 14, dtype=torch.float64)
    tnet.train()
    tnet(x)                                  # move the running stats once
    net.forward(x.numpy(), training=True)
    tnet.eval()
    with torch.no_grad():
        want = tnet(x).numpy()
    assert nerr(net.forward(x.numpy(), training=False), want) < 1e-12


def test_attention_blocks_match_torch_in_float64():
    """Every attention block, the non-local one switched on (BN scale != 0), after a ReLU (CBAM's max ties
    between dead channels), on a sequence (se, eca): loss, every gradient, the input's, train and eval."""
    layers = [{"conv": {"out": 8, "kernel": 3, "padding": 1}}, "relu", {"se": 2},
              {"cbam": {"reduction": 2, "kernel": 5}}, {"eca": {"gamma": 1, "b": 1}}, {"nonlocal": 2},
              {"conv": {"out": 6, "kernel": 1}}, "attention_pool", {"dense": 10}]
    tnet, net = twins(layers, (2, 6, 5), seed=3, dtype=np.float64)
    tnet = tnet.double()
    with torch.no_grad():
        tnet.nonlocal1.bn.weight.uniform_(0.5, 1.5)
    net.load_state_dict(tnet.state_dict())
    x = torch.randn(6, 2, 6, 5, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, 10, (6,))
    tnet.train()
    loss = make_loss("cross_entropy")(tnet(x), y)
    loss.backward()
    value, dlogits = make_reference_loss("cross_entropy")(net.forward(x.detach().numpy(), True), y.numpy())
    grads = net.backward(dlogits, need_input_grad=True)
    assert abs(value - loss.item()) < 1e-12
    for name, p in tnet.named_parameters():
        assert p.grad.abs().max() > 0, f"{name}: premise, a gradient that is not zero"
        assert nerr(grads[name], p.grad.numpy()) < 1e-10, name
    assert nerr(net.input_grad, x.grad.numpy()) < 1e-10
    tnet.eval()
    with torch.no_grad():
        assert nerr(net.forward(x.detach().numpy(), training=False), tnet(x).numpy()) < 1e-12

    seq = [{"conv1d": {"out": 6, "kernel": 3}}, {"se": 3}, {"eca": {"kernel": 3}}, "globalavgpool1d", {"dense": 10}]
    torch.manual_seed(1)
    tnet = build_torch(parse_layers(seq), (4, 9), 10, signal=True).double()
    net = ReferenceNet(parse_layers(seq), (4, 9), 10, dtype=np.float64, signal=True)
    net.load_state_dict(tnet.state_dict())
    xs = torch.randn(5, 4, 9, dtype=torch.float64)
    make_loss("cross_entropy")(tnet(xs), y[:5]).backward()
    grads = net.backward(make_reference_loss("cross_entropy")(net.forward(xs.numpy(), True), y[:5].numpy())[1])
    for name, p in tnet.named_parameters():
        assert nerr(grads[name], p.grad.numpy()) < 1e-10, name


def test_nonlocal_starts_as_the_identity_in_every_init_scheme():
    layers = [{"conv": {"out": 4, "kernel": 1}}, {"nonlocal": 2}, "flatten", {"dense": 10}]
    specs = parse_layers(layers)
    for scheme in ("default", "he", "xavier"):
        net = ReferenceNet(specs, (3, 4, 4), 10, dtype=np.float64)
        net.init(scheme, np.random.default_rng(0), seed=0)
        assert not net.params["nonlocal1.bn.weight"].any(), scheme
        x = np.random.default_rng(1).standard_normal((3, 3, 4, 4))
        conv = net.layers[0].forward(x, training=True)
        assert np.allclose(net.layers[1].forward(conv, training=True), conv, atol=1e-12)


@pytest.mark.parametrize("name,hyper", [
    ("sgd", {}), ("momentum", {"gamma": 0.8}), ("adagrad", {}), ("adadelta", {"beta1": 0.9}),
    ("rmsprop", {"beta2": 0.9}), ("adam", {"weight_decay": 0.1}),
])
def test_one_optimizer_step_matches_torch_course_optimizers(name, hyper):
    tnet, net = twins(lenet5_layers(), (1, 28, 28), dtype=np.float64)
    tnet = tnet.double().train()
    x = torch.randn(16, 1, 28, 28, dtype=torch.float64)
    y = torch.randint(0, 10, (16,))
    lr = 1.0 if name == "adadelta" else 0.01
    opt_t = torch_optimizer(name, tnet.parameters(), lr=lr, **hyper)
    opt_r = reference_optimizer(name, lr, **hyper)
    for _ in range(2):  # two steps: the state is used too
        opt_t.zero_grad()
        make_loss("cross_entropy")(tnet(x), y).backward()
        opt_t.step()
        value, d = make_reference_loss("cross_entropy")(net.forward(x.numpy(), True), y.numpy())
        grads = net.backward(d)
        opt_r.step(net.parameters(), [grads[k] for k in net.params])
    for k, p in tnet.named_parameters():
        assert nerr(net.params[k], p.detach().numpy()) < 1e-10, k


def test_state_dict_round_trip_and_errors():
    tnet, net = twins(VECTOR, (3, 12, 12))
    sd = net.state_dict()
    assert all(isinstance(v, torch.Tensor) for v in sd.values())
    fresh = build_torch(parse_layers(VECTOR), (3, 12, 12), 10)
    fresh.load_state_dict(sd, strict=True)
    bad = dict(sd)
    bad.pop("conv1.weight")
    with pytest.raises(UserError, match="conv1.weight"):
        net.load_state_dict(bad)
    with pytest.raises(UserError, match="shape"):
        net.load_state_dict({**sd, "dense2.weight": torch.zeros(3, 3)})


def test_init_schemes():
    specs = parse_layers(lenet5_layers())
    net = ReferenceNet(specs, (1, 28, 28), 10)
    net.init("he", np.random.default_rng(0))
    w = net.params["dense1.weight"]
    assert w.dtype == np.float32 and abs(w.std() - np.sqrt(2 / 256)) < 0.01
    assert not net.params["dense1.bias"].any()
    a, b = ReferenceNet(specs, (1, 28, 28), 10), ReferenceNet(specs, (1, 28, 28), 10)
    a.init("default", seed=3)
    b.init("default", seed=3)
    torch.manual_seed(3)
    want = build_torch(specs, (1, 28, 28), 10).state_dict()
    for k in want:
        assert torch.equal(a.state_dict()[k], want[k]) and torch.equal(b.state_dict()[k], want[k])


def test_unsupported_layer_is_a_user_error(monkeypatch):
    import cnnkit.reference.network as network

    monkeypatch.setattr(network, "SUPPORTED", tuple(t for t in SUPPORTED if t != "l2pool"))
    with pytest.raises(UserError, match="l2pool1"):
        ReferenceNet(parse_layers([{"l2pool": 2}, "flatten"]), (1, 4, 4))
