"""Layer lists for time series (signals (C, L), channels first): causal and dilated conv1d, lstm and gru.

Oracles: the length formula by hand (causal: ceil(L / stride)); torch (nn.Conv1d on a left-padded
input, nn.LSTM / nn.GRU with copied weights, autograd) against the NumPy reference engine; finite
differences for the glass-box BPTT; causality itself (an output never moves when only later inputs
change); an FCN's parameter count worked out by hand.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from torch import nn

from cnnkit.errors import SpecError
from cnnkit.models.spec import build_torch
from cnnkit.reference import conv1d, conv1d_backward, gru, gru_backward, lstm, lstm_backward
from cnnkit.reference.gradcheck import max_normalized_error, numerical_gradient
from cnnkit.reference.network import ReferenceNet
from cnnkit.spec import infer_shapes, parse_layers


def shapes(layers, input_shape, num_classes=None, signal=True):
    return infer_shapes(parse_layers(layers), input_shape, num_classes, signal=signal)


def nerr(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12))


def twins(layers, shape, num_classes=None, seed=0, dtype=torch.float64):
    """The torch network and the reference network of one layer list, with the same weights."""
    specs = parse_layers(layers)
    torch.manual_seed(seed)
    net = build_torch(specs, shape, num_classes, signal=True).to(dtype)
    ref = ReferenceNet(specs, shape, num_classes, dtype=np.float64 if dtype == torch.float64 else np.float32,
                       signal=True)
    ref.load_state_dict(net.state_dict())
    return net, ref


def series(n, c, length, seed=0, dtype=torch.float64):
    return torch.randn(n, c, length, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def compare(net, ref, x, tol, training=False):
    """Forward, then backward of a random upstream gradient: outputs, parameter and input gradients."""
    net.train(training)
    x = x.clone().requires_grad_(True)
    out = net(x)
    ref_out = ref.forward(x.detach().numpy(), training=training)
    assert nerr(ref_out, out.detach().numpy()) < tol
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(7), dtype=out.dtype)
    out.backward(g)
    grads = ref.backward(g.numpy(), need_input_grad=True)
    assert set(grads) == {n for n, _ in net.named_parameters()}
    for name, p in net.named_parameters():
        assert nerr(grads[name], p.grad.numpy()) < tol, name
    assert nerr(ref.input_grad, x.grad.numpy()) < tol
    return out


# --------------------------------------------------------------------------- parsing and shapes


def test_causal_length_is_the_input_length_over_the_stride_rounded_up():
    # left padding (k-1)*d: out = floor((L + (k-1)d - d(k-1) - 1)/s) + 1 = floor((L-1)/s) + 1 = ceil(L/s)
    for k, d, s, length, out in ((3, 1, 1, 10, 10), (3, 2, 1, 10, 10), (5, 4, 1, 7, 7), (2, 1, 2, 10, 5),
                                 (3, 2, 3, 10, 4), (4, 3, 4, 9, 3), (1, 1, 1, 6, 6), (7, 8, 1, 3, 3)):
        layer = {"conv1d": {"out": 2, "kernel": k, "dilation": d, "stride": s, "causal": True}}
        assert shapes([layer], (3, length)) == [(2, out)], (k, d, s, length)
    # the default stays non-causal and valid
    spec = parse_layers([{"conv1d": 4}])[0]
    assert spec.args["causal"] is False and spec.args["padding"] == "valid"
    assert shapes([{"conv1d": {"out": 4, "kernel": 3, "dilation": 2}}], (3, 10)) == [(4, 6)]


def test_recurrent_shapes_sequence_and_last_uni_and_bidirectional():
    assert parse_layers([{"lstm": 64}])[0].args == {"hidden": 64, "layers": 1, "bidirectional": False,
                                                   "return": "sequence", "dropout": 0}
    assert parse_layers([{"gru": 8}])[0].name == "gru1"
    for kind in ("lstm", "gru"):
        assert shapes([{kind: 16}], (3, 50)) == [(16, 50)]
        assert shapes([{kind: {"hidden": 16, "return": "last"}}], (3, 50)) == [(16,)]
        assert shapes([{kind: {"hidden": 16, "bidirectional": True}}], (3, 50)) == [(32, 50)]
        assert shapes([{kind: {"hidden": 16, "bidirectional": True, "return": "last", "layers": 3,
                               "dropout": 0.2}}], (3, 50)) == [(32,)]
    # stacked: conv1d -> lstm (sequence) -> gru (last) -> dense
    layers = [{"conv1d": {"out": 8, "kernel": 3, "causal": True}}, {"lstm": {"hidden": 6, "bidirectional": True}},
              {"gru": {"hidden": 5, "return": "last"}}, {"dense": "num_classes"}]
    assert shapes(layers, (2, 30), 4) == [(8, 30), (12, 30), (5,), (4,)]
    # a text list may use them too (embedding -> (D, L))
    assert shapes([{"embedding": 8}, {"lstm": {"hidden": 4, "return": "last"}}], (50, 12), signal=False) == [
        (8, 12), (4,)]
    # after a recurrent sequence the sequence layers still work
    assert shapes([{"gru": 6}, {"maxpool1d": 2}, "globalavgpool1d"], (1, 10)) == [(6, 10), (6, 5), (6,)]


@pytest.mark.parametrize("layers, shape, words", [
    ([{"conv": 4}, {"lstm": 8}], (3, 16, 16), ["layer 1 (lstm)", "feature map [C, H, W]", "use conv on feature maps"]),
    ([{"gru": 8}], (3, 16, 16), ["layer 0 (gru)", "recurrent layer for sequences [C, L]", "conv1d / gru"]),
    (["flatten", {"lstm": 8}], (2, 10), ["layer 1 (lstm)", "vector [20]", "move it before flatten"]),
    ([{"lstm": {"hidden": 8, "return": "last"}}, {"gru": 4}], (2, 10),
     ["layer 1 (gru)", "vector [8]", "return: sequence"]),
    ([{"conv1d": {"out": 4, "kernel": 3, "dilation": 6}}], (2, 10), ["layer 0 (conv1d)", "does not fit"]),
])
def test_wrong_input_names_the_layer_and_the_layer_to_use(layers, shape, words):
    with pytest.raises(SpecError) as e:
        shapes(layers, shape, signal=len(shape) == 2)
    for w in words:
        assert w in str(e.value), (w, str(e.value))


@pytest.mark.parametrize("layer, words", [
    ({"conv1d": {"out": 4, "causal": True, "padding": "same"}}, ["causal: true pads by itself", "remove padding"]),
    ({"conv1d": {"out": 4, "causal": True, "padding": 2}}, ["cannot take padding 2"]),
    ({"conv1d": {"out": 4, "padding": "causal"}}, ["written causal: true"]),
    ({"conv1d": {"out": 4, "causal": "yes"}}, ["causal must be true or false"]),
    ({"lstm": 0}, ["hidden must be a positive int"]),
    ({"lstm": {"layers": 2}}, ["missing argument 'hidden'"]),
    ({"gru": {"hidden": 4, "return": "final"}}, ["return 'final'", "'sequence'", "'last'"]),
    ({"gru": {"hidden": 4, "return": "lats"}}, ["did you mean 'last'"]),
    ({"lstm": {"hidden": 4, "bidirectional": 1}}, ["bidirectional must be true or false"]),
    ({"lstm": {"hidden": 4, "dropout": 0.3}}, ["dropout 0.3 acts between stacked layers", "layers: 1"]),
    ({"lstm": {"hidden": 4, "layers": 2, "dropout": 1.0}}, ["dropout must be in [0, 1)"]),
    ({"gru": {"hidden": 4, "layers": 0}}, ["layers must be a positive int"]),
    ({"lstm": {"hidden": 4, "cell": "peephole"}}, ["unknown argument 'cell'"]),
])
def test_bad_time_series_arguments(layer, words):
    with pytest.raises(SpecError) as e:
        parse_layers([layer])
    for w in words:
        assert w in str(e.value), (w, str(e.value))
    # the causal default padding written out is accepted
    assert parse_layers([{"conv1d": {"out": 4, "causal": True, "padding": 0}}])[0].args["padding"] == "valid"


def test_a_signal_input_is_explicit_and_takes_no_embedding():
    specs = parse_layers([{"conv1d": 4}, "globalavgpool1d"])
    with pytest.raises(SpecError, match=r"token sequence \[V, L\].*signal=True"):
        infer_shapes(specs, (3, 20))                       # (C, L) without signal: token ids, as for text
    assert infer_shapes(specs, (3, 20), signal=True) == [(4, 18), (4,)]
    with pytest.raises(SpecError, match=r"layer 0 \(embedding\).*signal \[C, L\] of real values"):
        infer_shapes(parse_layers([{"embedding": 4}]), (30, 20), signal=True)
    with pytest.raises(SpecError, match=r"signal input is \[C, L\]"):
        infer_shapes(specs, (3, 20, 20), signal=True)
    with pytest.raises(SpecError, match="signal=True"):
        build_torch(specs, (3, 20))
    with pytest.raises(SpecError, match="signal=True"):
        ReferenceNet(specs, (3, 20))


# --------------------------------------------------------------------------- torch layers


def test_torch_causal_conv1d_is_nn_conv1d_on_a_left_padded_input():
    specs = parse_layers([{"conv1d": {"out": 3, "kernel": 4, "dilation": 2, "stride": 2, "causal": True}}])
    net = build_torch(specs, (2, 11), signal=True).double()
    conv = net.conv1d1
    assert conv.causal and conv.padding == (0,)
    x = series(2, 2, 11)
    expected = F.conv1d(F.pad(x, (6, 0)), conv.weight, conv.bias, stride=2, dilation=2)
    torch.testing.assert_close(net(x), expected)
    assert net(x).shape == (2, 3, 6)                        # ceil(11/2)
    # a causal head keeps its padding rule when the classifier is reset
    net = build_torch(parse_layers([{"conv1d": {"out": "num_classes", "kernel": 3, "causal": True}}]), (2, 9), 4,
                      signal=True)
    net.reset_classifier(2)
    assert net.conv1d1.causal and net(series(1, 2, 9, dtype=torch.float32)).shape == (1, 2, 9)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_torch_recurrent_layers_are_channels_first_nn_rnns(kind):
    layers = [{kind: {"hidden": 5, "layers": 2, "bidirectional": True}}]
    net = build_torch(parse_layers(layers), (3, 7), signal=True).double()
    rnn = net._modules[f"{kind}1"]
    assert isinstance(rnn, nn.LSTM if kind == "lstm" else nn.GRU) and rnn.batch_first
    assert list(net.state_dict())[:4] == [f"{kind}1.weight_ih_l0", f"{kind}1.weight_hh_l0", f"{kind}1.bias_ih_l0",
                                         f"{kind}1.bias_hh_l0"]
    x = series(4, 3, 7)
    seq = net(x)
    plain = (nn.LSTM if kind == "lstm" else nn.GRU)(3, 5, 2, batch_first=True, bidirectional=True).double()
    plain.load_state_dict({k.split(".", 1)[1]: v for k, v in net.state_dict().items()})
    out, h = plain(x.transpose(1, 2))
    h_n = h[0] if kind == "lstm" else h
    torch.testing.assert_close(seq, out.transpose(1, 2))
    last = build_torch(parse_layers([{kind: {"hidden": 5, "layers": 2, "bidirectional": True, "return": "last"}}]),
                       (3, 7), signal=True).double()
    last.load_state_dict(net.state_dict())
    v = last(x)
    assert v.shape == (4, 10)
    torch.testing.assert_close(v, torch.cat([h_n[-2], h_n[-1]], dim=1))
    # torch's h_n is the forward direction's last step and the backward direction's first
    torch.testing.assert_close(v, torch.cat([out[:, -1, :5], out[:, 0, 5:]], dim=1))


# --------------------------------------------------------------------------- the glass-box ops


def _torch_rnn(kind, n_in, hidden, seed=0):
    torch.manual_seed(seed)
    rnn = (nn.LSTM if kind == "lstm" else nn.GRU)(n_in, hidden, batch_first=True, bidirectional=True).double()
    with torch.no_grad():                    # larger weights than torch's default: the gates leave their middles
        for p in rnn.parameters():
            p.mul_(3.0)
    return rnn


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_glass_box_ops_match_torch_forward_and_bptt_both_directions(kind):
    fwd, bwd = (lstm, lstm_backward) if kind == "lstm" else (gru, gru_backward)
    rnn = _torch_rnn(kind, 3, 4)
    x = series(2, 6, 3, seed=1).requires_grad_(True)          # (N, L, I): batch first
    out, _ = rnn(x)
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(2), dtype=out.dtype)
    out.backward(g)
    p = {k: v.detach().numpy() for k, v in rnn.named_parameters()}
    xn = x.detach().numpy()
    dx_total = np.zeros_like(xn)
    for d, sfx in enumerate(("_l0", "_l0_reverse")):
        hs, cache = fwd(xn, p["weight_ih" + sfx], p["weight_hh" + sfx], p["bias_ih" + sfx], p["bias_hh" + sfx],
                        reverse=d == 1)
        assert np.abs(hs - out[:, :, 4 * d:4 * (d + 1)].detach().numpy()).max() < 1e-12
        dx, dw_ih, dw_hh, db_ih, db_hh = bwd(g[:, :, 4 * d:4 * (d + 1)].numpy(), cache)
        grads = dict(zip(("weight_ih", "weight_hh", "bias_ih", "bias_hh"), (dw_ih, dw_hh, db_ih, db_hh)))
        for name, value in grads.items():
            assert nerr(value, getattr(rnn, name + sfx).grad.numpy()) < 1e-12, name + sfx
        dx_total += dx
    assert nerr(dx_total, x.grad.numpy()) < 1e-12


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_glass_box_bptt_against_finite_differences(kind):
    fwd, bwd = (lstm, lstm_backward) if kind == "lstm" else (gru, gru_backward)
    gates = 4 if kind == "lstm" else 3
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 5, 3))
    w_ih, w_hh = rng.standard_normal((gates * 4, 3)), rng.standard_normal((gates * 4, 4))
    b_ih, b_hh = rng.standard_normal(gates * 4), rng.standard_normal(gates * 4)
    dhs = rng.standard_normal((2, 5, 4))

    def loss(*_):
        return float((fwd(x, w_ih, w_hh, b_ih, b_hh, reverse=True)[0] * dhs).sum())

    _, cache = fwd(x, w_ih, w_hh, b_ih, b_hh, reverse=True)
    got = bwd(dhs, cache)
    for value, array in zip(got, (x, w_ih, w_hh, b_ih, b_hh)):
        assert max_normalized_error(value, numerical_gradient(loss, array)) < 1e-7


def test_glass_box_causal_conv1d_by_hand():
    # kernel (1, 0, -1), dilation 2, causal: y[i] = x[i-4] - x[i] (zeros before the series)
    x = np.array([[[1.0, 3.0, 2.0, 5.0, 4.0, 6.0]]])
    w = np.array([[[1.0, 0.0, -1.0]]])
    y, cache = conv1d(x, w, np.array([0.5]), dilation=2, padding="causal")
    np.testing.assert_allclose(y[0, 0], [-1 + 0.5, -3 + 0.5, -2 + 0.5, -5 + 0.5, 1 - 4 + 0.5, 3 - 6 + 0.5])
    # the gradient of y[5] reaches x[1] and x[5] only
    dy = np.zeros_like(y)
    dy[0, 0, 5] = 1.0
    dx, dw, db = conv1d_backward(dy, cache)
    np.testing.assert_allclose(dx[0, 0], [0, 1, 0, 0, 0, -1])
    np.testing.assert_allclose(dw[0, 0], [3.0, 5.0, 6.0])               # x[1], x[3], x[5]: what each tap read
    # a (before, after) pair is the same padding written out
    np.testing.assert_allclose(conv1d(x, w, np.array([0.5]), dilation=2, padding=(4, 0))[0], y)


# --------------------------------------------------------------------------- torch against the reference engine


def test_causal_dilated_conv1d_list_torch_vs_reference():
    layers = [{"conv1d": {"out": 6, "kernel": 3, "causal": True}}, "relu",
              {"conv1d": {"out": 5, "kernel": 3, "dilation": 2, "causal": True}}, "tanh",
              {"conv1d": {"out": 4, "kernel": 2, "dilation": 4, "stride": 2, "causal": True, "bias": False}},
              "batchnorm", "elu", {"conv1d": {"out": 3, "kernel": 5, "dilation": 3, "padding": "same"}},
              "globalmaxpool1d", {"dense": "num_classes"}]
    assert shapes(layers, (2, 19), 3) == [(6, 19), (6, 19), (5, 19), (5, 19), (4, 10), (4, 10), (4, 10), (3, 10),
                                         (3,), (3,)]
    for dtype, tol in ((torch.float64, 1e-10), (torch.float32, 1e-5)):
        net, ref = twins(layers, (2, 19), 3, dtype=dtype)
        compare(net, ref, series(5, 2, 19, dtype=dtype), tol, training=True)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("ret", ["sequence", "last"])
def test_recurrent_torch_vs_reference_forward_and_backward(kind, bidirectional, ret):
    layers = [{"conv1d": {"out": 4, "kernel": 3, "causal": True, "dilation": 2}},
              {kind: {"hidden": 5, "layers": 2, "bidirectional": bidirectional, "return": ret}}]
    out_shape = shapes(layers, (3, 9))[-1]
    dirs = 2 if bidirectional else 1
    assert out_shape == ((5 * dirs, 9) if ret == "sequence" else (5 * dirs,))
    # float32 as the brief asks (1e-5), float64 much tighter
    for dtype, tol in ((torch.float32, 1e-5), (torch.float64, 1e-10)):
        net, ref = twins(layers, (3, 9), dtype=dtype, seed=4)
        out = compare(net, ref, series(3, 3, 9, seed=5, dtype=dtype), tol)
        assert tuple(out.shape[1:]) == out_shape


def test_recurrent_list_trains_in_the_reference_engine_as_in_torch():
    """One SGD step on a cross-entropy loss moves both engines' weights alike (training mode, batchnorm too)."""
    layers = [{"conv1d": {"out": 6, "kernel": 3, "causal": True}}, "batchnorm", "relu",
              {"gru": {"hidden": 5, "bidirectional": True}}, {"lstm": {"hidden": 4, "return": "last"}},
              {"dense": "num_classes"}]
    net, ref = twins(layers, (2, 12), 3, seed=6)
    x = series(8, 2, 12, seed=8)
    y = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    net.train()
    loss = F.cross_entropy(net(x), y)
    loss.backward()
    logits = ref.forward(x.numpy(), training=True)
    e = np.exp(logits - logits.max(1, keepdims=True))
    dlogits = (e / e.sum(1, keepdims=True) - np.eye(3)[y.numpy()]) / len(y)
    grads = ref.backward(dlogits)
    with torch.no_grad():
        for name, p in net.named_parameters():
            p -= 0.1 * p.grad
            ref.params[name] -= 0.1 * grads[name]
    for name, p in net.named_parameters():
        assert nerr(ref.params[name], p.detach().numpy()) < 1e-10, name
    net.eval()
    assert nerr(ref.forward(x.numpy(), training=False), net(x).detach().numpy()) < 1e-10


def test_recurrent_dropout_between_layers_is_eval_identity_and_a_mask_in_training():
    layers = [{"lstm": {"hidden": 6, "layers": 2, "dropout": 0.5, "return": "last"}}]
    net, ref = twins(layers, (3, 8))
    x = series(4, 3, 8)
    net.eval()
    assert nerr(ref.forward(x.numpy(), training=False), net(x).detach().numpy()) < 1e-10
    ref.rng = np.random.default_rng(0)
    a = ref.forward(x.numpy(), training=True)
    grads = ref.backward(np.ones_like(a))
    ref.rng = np.random.default_rng(0)
    b = ref.forward(x.numpy(), training=True)
    np.testing.assert_array_equal(a, b)                    # the mask comes from the net's rng
    assert np.abs(a - ref.forward(x.numpy(), training=False)).max() > 1e-3
    # with the same mask drawn again, the gradient is that of a fixed function: finite differences agree
    w = ref.params["lstm1.weight_ih_l1"]

    def loss(_):
        ref.rng = np.random.default_rng(0)
        return float(ref.forward(x.numpy(), training=True).sum())

    assert max_normalized_error(grads["lstm1.weight_ih_l1"], numerical_gradient(loss, w)) < 1e-6


def test_reference_init_draws_recurrent_weights_and_zero_biases():
    specs = parse_layers([{"lstm": {"hidden": 8, "bidirectional": True}}, "globalavgpool1d", {"dense": 2}])
    ref = ReferenceNet(specs, (3, 10), signal=True)
    ref.init("xavier", rng=np.random.default_rng(0))
    w = ref.params["lstm1.weight_hh_l0_reverse"]
    # xavier normal for a (4H, H) = (32, 8) matrix: std sqrt(2 / (8 + 32))
    assert w.shape == (32, 8) and 0.15 < w.std() < 0.30
    assert not ref.params["lstm1.bias_ih_l0"].any() and not ref.params["lstm1.bias_hh_l0_reverse"].any()
    ref.init("default", seed=3)                            # torch's own: U(-1/sqrt(H), 1/sqrt(H))
    torch.manual_seed(3)
    net = build_torch(specs, (3, 10), signal=True)
    np.testing.assert_array_equal(ref.params["lstm1.weight_ih_l0"], net.lstm1.weight_ih_l0.detach().numpy())
    assert list(ref.state_dict()) == list(net.state_dict())


# --------------------------------------------------------------------------- causality


CAUSAL_STACK = [{"conv1d": {"out": 4, "kernel": 3, "causal": True}}, "relu",
                {"conv1d": {"out": 4, "kernel": 3, "dilation": 2, "causal": True}}, "tanh",
                {"conv1d": {"out": 3, "kernel": 2, "dilation": 4, "causal": True}}, {"leaky_relu": 0.1},
                {"conv1d": {"out": 2, "kernel": 3, "dilation": 8, "causal": True}}]


@pytest.mark.parametrize("t0", [0, 1, 5, 13, 23])
def test_a_stack_of_causal_convs_never_looks_ahead(t0):
    net, ref = twins(CAUSAL_STACK, (2, 24), seed=t0)
    net.eval()
    x = series(2, 2, 24, seed=1)
    changed = x.clone()
    changed[:, :, t0:] = torch.randn(2, 2, 24 - t0, generator=torch.Generator().manual_seed(9), dtype=x.dtype) * 5
    for run in (lambda v: net(v).detach().numpy(), lambda v: ref.forward(v.numpy(), training=False)):
        before, after = run(x), run(changed)
        np.testing.assert_array_equal(before[:, :, :t0], after[:, :, :t0])
        assert np.abs(before[:, :, t0:] - after[:, :, t0:]).max() > 0     # the later outputs do move
    # the receptive field: 1 + 2*1 + 2*2 + 1*4 + 2*8 = 27 steps, reaching back 26
    x = torch.zeros(1, 2, 40, dtype=torch.float64, requires_grad=True)
    net(x)[0, :, 35].sum().backward()
    touched = x.grad[0].abs().sum(0).nonzero().flatten()
    assert int(touched.max()) == 35 and int(touched.min()) >= 35 - 26


def test_a_unidirectional_recurrent_sequence_is_causal_and_same_padding_is_not():
    x = series(1, 2, 16, seed=2)
    changed = x.clone()
    changed[:, :, 10:] += 1.0
    for layers, causal in (([{"gru": 4}], True), ([{"lstm": {"hidden": 4, "layers": 2}}], True),
                           ([{"lstm": {"hidden": 4, "bidirectional": True}}], False),
                           ([{"conv1d": {"out": 3, "kernel": 3, "padding": "same"}}], False)):
        net, ref = twins(layers, (2, 16))
        a, b = ref.forward(x.numpy(), training=False), ref.forward(changed.numpy(), training=False)
        assert np.array_equal(a[:, :, :10], b[:, :, :10]) == causal, layers


# --------------------------------------------------------------------------- a whole network in YAML


FCN_YAML = """
model:
  layers:
    - conv1d: {out: 128, kernel: 8, padding: same}
    - batchnorm
    - relu
    - conv1d: {out: 256, kernel: 5, padding: same}
    - batchnorm
    - relu
    - conv1d: {out: 128, kernel: 3, padding: same}
    - batchnorm
    - relu
    - globalavgpool1d
    - dense: num_classes
"""


def test_fcn_spelled_in_yaml_builds_with_the_parameter_count_by_hand():
    """Wang, Yan & Oates (2017)'s FCN for time-series classification, on a 1-channel series of 96, 5 classes."""
    layers = yaml.safe_load(FCN_YAML)["model"]["layers"]
    specs = parse_layers(layers)
    assert infer_shapes(specs, (1, 96), 5, signal=True) == [
        (128, 96), (128, 96), (128, 96), (256, 96), (256, 96), (256, 96), (128, 96), (128, 96), (128, 96),
        (128,), (5,)]
    by_hand = ((8 * 1 + 1) * 128 + 2 * 128          # conv 8x1 -> 128 with biases; batchnorm gamma and beta
               + (5 * 128 + 1) * 256 + 2 * 256
               + (3 * 256 + 1) * 128 + 2 * 128
               + (128 + 1) * 5)
    assert by_hand == 265_349
    net = build_torch(specs, (1, 96), 5, signal=True)
    assert sum(p.numel() for p in net.parameters()) == by_hand
    assert net.head_name == "dense1"
    assert net(torch.randn(3, 1, 96)).shape == (3, 5)
    ref = ReferenceNet(specs, (1, 96), 5, signal=True)
    assert sum(p.size for p in ref.parameters()) == by_hand
    # the even kernel 8 under 'same' pads 3 before and 4 after (TF rule); both engines agree in eval
    ref.load_state_dict(net.state_dict())
    x = torch.randn(2, 1, 96)
    net.eval()
    assert nerr(ref.forward(x.numpy(), training=False), net(x).detach().numpy()) < 1e-5


def test_explain_shapes_counts_recurrent_parameters_as_torch():
    from cnnkit.explain.shapes import explain_layer_list, render_text

    layers = [{"conv1d": {"out": 6, "kernel": 4, "dilation": 2, "causal": True}},
              {"lstm": {"hidden": 5, "layers": 2, "bidirectional": True}},
              {"gru": {"hidden": 3, "return": "last"}}, {"dense": 2}]
    res = explain_layer_list(layers, (2, 20), 2, signal=True)
    net = build_torch(parse_layers(layers), (2, 20), 2, signal=True)
    for r in res["layers"]:
        assert r["params"] == sum(p.numel() for p in net._modules[r["name"]].parameters()), r["name"]
    assert res["total_params"] == sum(p.numel() for p in net.parameters())
    text = render_text(res)
    assert "causal: (k-1)*d = (4-1)*2 = 6 zeros before" in text
    assert "lstm1: lstm(hidden=5, layers=2, bidirectional=True)  6x20 -> 10x20" in text
    assert "gru1: gru(hidden=3, return=last)  10x20 -> 3" in text
    assert any("signal" in n for n in res["notes"])
