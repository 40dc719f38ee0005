"""Layer lists that spell a text CNN (Kim, 2014): embedding, conv1d, 1-D pooling, max-over-time
pooling and parallel branches joined along channels.

Oracles: a 1-D convolution and max over time worked out by hand on a tiny example; the length
formula out = floor((L + p_before + p_after - d(k-1) - 1)/s) + 1 and TF's 'same' rule by hand;
torch (nn.Embedding, nn.Conv1d, autograd) against the NumPy reference engine on the same weights;
torch's own parameter count.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cnnkit.config import validate
from cnnkit.errors import ConfigError, SpecError
from cnnkit.models import build_torch, create_model, infer_shapes, parse_layers
from cnnkit.reference import conv1d, conv1d_backward, embedding, embedding_backward, global_max_pool1d
from cnnkit.reference import global_max_pool1d_backward
from cnnkit.reference.network import ReferenceNet


def kim_layers(dim=128, filters=100, kernels=(3, 4, 5), p=0.5):
    """Kim's CNN for sentence classification as the brief spells it."""
    return ([{"embedding": dim},
             {"parallel": [[{"conv1d": {"out": filters, "kernel": k}}, "relu", "globalmaxpool1d"] for k in kernels]},
             {"dropout": p}, {"dense": "num_classes"}])


def shapes(layers, input_shape, num_classes=None):
    return infer_shapes(parse_layers(layers), input_shape, num_classes)


def nerr(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12))


def token_ids(n, length, vocab, seed=0):
    """Ids with padding (0) at the end of some rows and a few unknowns (1)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(2, vocab, (n, length), generator=g)
    x[0, -3:] = 0
    x[1, -1:] = 0
    x[2, 1] = 1
    return x


# --------------------------------------------------------------------------- parsing and shapes


def test_kim_parses_with_branch_names_continuing_the_count_and_shapes_by_hand():
    specs = parse_layers(kim_layers())
    assert [s.name for s in specs] == ["embedding1", "parallel1", "dropout1", "dense1"]
    assert [[s.name for s in b] for b in specs[1].branches] == [
        ["conv1d1", "relu1", "globalmaxpool1d1"], ["conv1d2", "relu2", "globalmaxpool1d2"],
        ["conv1d3", "relu3", "globalmaxpool1d3"]]
    assert specs[1].branches[2][0].index == "1.2.0"
    assert specs[0].args == {"dim": 128, "padding_idx": 0, "freeze": False}
    assert specs[3].args["out"] == "num_classes"
    assert infer_shapes(specs, (20000, 400), 5) == [(128, 400), (300,), (300,), (5,)]
    # the branch lengths before max over time: 400 - k + 1
    for k, length in ((3, 398), (4, 397), (5, 396)):
        assert shapes([{"embedding": 8}, {"conv1d": {"out": 100, "kernel": k}}], (50, 400))[-1] == (100, length)
    # the long form {branches: ...}, a name, and the auto names after the block
    specs = parse_layers([{"embed": {"dim": 4, "padding_idx": None}},
                          {"parallel": {"branches": [["relu"], ["tanh"]], "name": "par"}}, "relu"])
    assert [s.name for s in specs] == ["embedding1", "par", "relu2"]
    assert specs[0].args["padding_idx"] is None


def test_1d_length_arithmetic_by_hand():
    emb = {"embedding": 6}
    # valid, dilation 2: 10 - 2*(3-1) = 6
    assert shapes([emb, {"conv1d": {"out": 3, "kernel": 3, "dilation": 2}}], (9, 10))[-1] == (3, 6)
    # same, stride 2: ceil(7/2) = 4
    assert shapes([emb, {"conv1d": {"out": 3, "kernel": 4, "stride": 2, "padding": "same"}}], (9, 7))[-1] == (3, 4)
    # int padding 2, kernel 5: 7 + 4 - 4 = 7
    assert shapes([emb, {"conv1d": {"out": 3, "kernel": 5, "padding": 2}}], (9, 7))[-1] == (3, 7)
    # maxpool1d 3, stride 2, padding 1 on 10: floor((10 + 2 - 3)/2) + 1 = 5; shorthand: kernel = stride
    assert shapes([emb, {"maxpool1d": {"kernel": 3, "stride": 2, "padding": 1}}], (9, 10))[-1] == (6, 5)
    assert shapes([emb, {"avgpool1d": 3}], (9, 10))[-1] == (6, 3)
    # batchnorm, activations, dropout keep (C, L); flatten gives C*L; global pools give (C,)
    assert shapes([emb, "batchnorm", "relu", {"dropout": 0.1}, {"maxout": 2}, "flatten", {"dense": 4}], (9, 5)) == [
        (6, 5), (6, 5), (6, 5), (6, 5), (3, 5), (15,), (4,)]
    assert shapes([emb, "globalavgpool1d"], (9, 5))[-1] == (6,)
    # parallel on sequences: channels add up, the length must agree
    par = {"parallel": [[{"conv1d": {"out": 2, "kernel": 3, "padding": "same"}}],
                        [{"conv1d": {"out": 5, "kernel": 1}}], ["relu"]]}
    assert shapes([emb, par], (9, 11))[-1] == (2 + 5 + 6, 11)
    # a residual block on sequences with a strided 1-D projection: ceil(10/2) = 5
    res = {"residual": [{"conv1d": {"out": 8, "kernel": 3, "stride": 2, "padding": "same"}}]}
    assert shapes([emb, res], (9, 10))[-1] == (8, 5)


@pytest.mark.parametrize("layers, shape, words", [
    ([{"embedding": 8}, {"conv": 4}], (20, 10), ["layer 1 (conv)", "sequence [C, L]", "use conv1d"]),
    ([{"embedding": 8}, {"maxpool": 2}], (20, 10), ["layer 1 (maxpool)", "use maxpool1d"]),
    ([{"embedding": 8}, "globalmaxpool"], (20, 10), ["use globalmaxpool1d"]),
    ([{"embedding": 8}, {"upsample": 2}], (20, 10), ["no 1-D form"]),
    ([{"conv1d": 4}], (3, 16, 16), ["layer 0 (conv1d)", "feature map [C, H, W]", "use conv on feature maps"]),
    ([{"conv": 4}, {"maxpool1d": 2}], (3, 16, 16), ["layer 1 (maxpool1d)", "use maxpool on feature maps"]),
    ([{"conv1d": 4}], (20, 10), ["token sequence [V, L]", "first layer must be embedding", "layer 0 (conv1d)"]),
    (["relu", {"dense": 4}], (20, 10), ["layer 0 (relu)", "first layer must be embedding"]),
    ([{"embedding": 8}], (1, 28, 28), ["layer 0 (embedding)", "token ids", "[V, L]", "1x28x28"]),
    ([{"embedding": {"dim": 8, "padding_idx": 20}}], (20, 10), ["padding_idx 20", "vocabulary of 20"]),
    ([{"embedding": 8}, {"dense": 3}], (20, 10), ["layer 1 (dense)", "sequence 8x10", "flatten"]),
    ([{"embedding": 8}, "flatten", "globalmaxpool1d"], (20, 10), ["layer 2 (globalmaxpool1d)", "vector"]),
    ([{"embedding": 8}, {"conv1d": {"out": 4, "kernel": 11}}], (20, 10), ["layer 1 (conv1d)", "does not fit"]),
])
def test_wrong_kind_of_input_names_the_layer_and_the_layer_to_use(layers, shape, words):
    with pytest.raises(SpecError) as e:
        shapes(layers, shape)
    for w in words:
        assert w in str(e.value), (w, str(e.value))


def test_embedding_elsewhere_than_first_is_a_parse_error():
    with pytest.raises(SpecError, match=r"layer 2 \(embedding\): embedding must be the first layer.*at layer 2"):
        parse_layers([{"embedding": 8}, "relu", {"embedding": 8}])
    with pytest.raises(SpecError, match=r"layer 1\.0\.0 \(embedding\).*inside a residual or parallel block"):
        parse_layers([{"embedding": 8}, {"parallel": [[{"embedding": 4}], ["relu"]]}])
    with pytest.raises(SpecError, match=r"layer 0\.1\.0 \(embedding\)"):
        parse_layers([{"parallel": [["relu"], [{"embedding": 4}]]}])


def test_parallel_branches_must_agree_but_on_channels():
    layers = [{"embedding": 8},
              {"parallel": [[{"conv1d": {"out": 4, "kernel": 3}}], [{"conv1d": {"out": 6, "kernel": 4}}]]}]
    with pytest.raises(SpecError) as e:
        shapes(layers, (20, 10))
    msg = str(e.value)
    assert "layer 1 (parallel)" in msg and "branch 0: 4x8" in msg and "branch 1: 6x7" in msg
    # a vector branch against a sequence branch
    with pytest.raises(SpecError, match=r"branch 0: 8x10, branch 1: 8"):
        shapes([{"embedding": 8}, {"parallel": [["relu"], ["globalmaxpool1d"]]}], (20, 10))
    # vectors join into one vector
    assert shapes([{"embedding": 8}, {"parallel": [["globalmaxpool1d"], ["globalavgpool1d"]]}], (20, 10))[-1] == (16,)


@pytest.mark.parametrize("layer, words", [
    ({"parallel": [{"conv1d": 4}, "relu"]}, ["branch 0 must be a non-empty list of layers"]),
    ({"parallel": []}, ["non-empty list of branches"]),
    ({"parallel": [[]]}, ["branch 0 must be a non-empty list"]),
    ({"embedding": 0}, ["dim must be a positive int"]),
    ({"embedding": {"dim": 4, "freeze": "yes"}}, ["freeze must be true or false"]),
    ({"embedding": {"dim": 4, "padding_idx": -1}}, ["padding_idx must be a non-negative int"]),
    ({"conv1d": {"out": 4, "padding": "full"}}, ["padding 'full'", "'valid', 'same' or an int"]),
    ({"conv1d": {"out": 4, "kernel": [3, 3]}}, ["kernel must be a positive int"]),
    ({"maxpool1d": {"kernel": 2, "padding": 2}}, ["at most half the kernel"]),
    ({"conv1d": {"out": 4, "groups": 2}}, ["unknown argument 'groups'"]),
])
def test_bad_text_arguments(layer, words):
    with pytest.raises(SpecError) as e:
        parse_layers([layer] if "embedding" in layer else [{"embedding": 4}, layer])
    for w in words:
        assert w in str(e.value), (w, str(e.value))


# --------------------------------------------------------------------------- by hand


X = np.array([[1.0, 2.0, 0.0, -1.0, 3.0],
              [0.0, 1.0, 1.0, 2.0, -2.0]])     # (C=2, L=5)
W = np.array([[[1.0, -1.0], [2.0, 0.0]]])      # (F=1, C=2, K=2)
B = np.array([0.5])
# y[i] = x0[i] - x0[i+1] + 2 x1[i] + 0.5
Y = np.array([-0.5, 4.5, 3.5, 0.5])
# max over time: 4.5 at i = 1, so dL/dW = the window x[:, 1:3], dL/db = 1, dL/dx = W placed at 1..2
DW = np.array([[[2.0, 0.0], [1.0, 1.0]]])
DX = np.array([[0.0, 1.0, -1.0, 0.0, 0.0], [0.0, 2.0, 0.0, 0.0, 0.0]])


def test_conv1d_and_max_over_time_by_hand_glass_box():
    y, c1 = conv1d(X[None], W, B)
    np.testing.assert_allclose(y[0, 0], Y)
    m, c2 = global_max_pool1d(y)
    assert m.shape == (1, 1) and m[0, 0] == 4.5
    dx, dw, db = conv1d_backward(global_max_pool1d_backward(np.ones((1, 1)), c2), c1)
    np.testing.assert_allclose(dw, DW)
    np.testing.assert_allclose(db, [1.0])
    np.testing.assert_allclose(dx[0], DX)
    # 'same' with an even kernel pads 0 before and 1 after (TF rule): y has L = 5, the last is w0 . x[:, 4] + b
    y, _ = conv1d(X[None], W, B, padding="same")
    np.testing.assert_allclose(y[0, 0], list(Y) + [1 * 3.0 + 2 * -2.0 + 0.5])


def test_conv1d_and_max_over_time_by_hand_in_both_networks():
    # ids 1..5 pick the columns of X from an embedding table whose row t + 1 is X[:, t]
    layers = [{"embedding": 2}, {"conv1d": {"out": 1, "kernel": 2}}, "globalmaxpool1d"]
    specs = parse_layers(layers)
    table = np.zeros((6, 2))
    table[1:] = X.T
    state = {"embedding1.weight": torch.tensor(table), "conv1d1.weight": torch.tensor(W),
             "conv1d1.bias": torch.tensor(B)}
    ids = np.array([[1, 2, 3, 4, 5]])
    net = build_torch(specs, (6, 5)).double()
    net.load_state_dict(state)
    out = net(torch.from_numpy(ids))
    assert out.shape == (1, 1) and out.item() == 4.5
    out.sum().backward()
    np.testing.assert_allclose(net.conv1d1.weight.grad.numpy(), DW)
    ref = ReferenceNet(specs, (6, 5), dtype=np.float64)
    ref.load_state_dict(state)
    assert ref.forward(ids).tolist() == [[4.5]]
    grads = ref.backward(np.ones((1, 1)))
    np.testing.assert_allclose(grads["conv1d1.weight"], DW)
    np.testing.assert_allclose(grads["conv1d1.bias"], [1.0])
    # the embedding's gradient is dL/dx, column t going to row ids[t]; row 0 (padding) unused
    np.testing.assert_allclose(grads["embedding1.weight"][1:], DX.T)
    np.testing.assert_allclose(net.embedding1.weight.grad.numpy(), grads["embedding1.weight"])


# --------------------------------------------------------------------------- torch vs the reference engine


def copy_to_reference(specs, shape, net, dtype=np.float32):
    ref = ReferenceNet(specs, shape, net.num_classes, dtype=dtype)
    ref.load_state_dict(net.state_dict())
    return ref


def test_kim_torch_and_reference_agree_forward_and_backward():
    vocab, length, k = 40, 12, 3
    specs = parse_layers(kim_layers(dim=8, filters=4))
    torch.manual_seed(0)
    net = build_torch(specs, (vocab, length), k).eval()     # eval: dropout is the identity in both
    assert list(net.state_dict()) == [
        "embedding1.weight", "parallel1.branches.0.conv1d1.weight", "parallel1.branches.0.conv1d1.bias",
        "parallel1.branches.1.conv1d2.weight", "parallel1.branches.1.conv1d2.bias",
        "parallel1.branches.2.conv1d3.weight", "parallel1.branches.2.conv1d3.bias", "dense1.weight", "dense1.bias"]
    ref = copy_to_reference(specs, (vocab, length), net)
    x = token_ids(5, length, vocab)
    out = net(x)
    ref_out = ref.forward(x.numpy(), training=False)
    assert out.shape == (5, k)
    np.testing.assert_allclose(ref_out, out.detach().numpy(), atol=1e-5, rtol=0)
    y = torch.tensor([0, 1, 2, 1, 0])
    F.cross_entropy(out, y, reduction="sum").backward()
    dlogits = torch.softmax(out, 1).detach().numpy() - np.eye(k)[y.numpy()]
    grads = ref.backward(dlogits.astype(np.float32))
    assert set(grads) == {n for n, _ in net.named_parameters()}
    for name, p in net.named_parameters():
        assert nerr(grads[name], p.grad.numpy()) < 1e-5, name
    # the padding row gets no gradient in either
    assert not net.embedding1.weight.grad[0].any() and not grads["embedding1.weight"][0].any()


def test_richer_text_list_agrees_in_training_mode_with_batchnorm_pools_and_a_1d_residual():
    vocab, length = 30, 16
    layers = [{"embedding": {"dim": 6, "padding_idx": 0}},
              {"conv1d": {"out": 8, "kernel": 4, "stride": 2, "padding": "same", "bias": False}}, "batchnorm", "relu",
              {"residual": [{"conv1d": {"out": 10, "kernel": 3, "stride": 2, "padding": "same"}}, "tanh"]},
              {"parallel": [[{"maxpool1d": {"kernel": 3, "stride": 1, "padding": 1}}],
                            [{"avgpool1d": {"kernel": 2, "stride": 1}}, {"conv1d": {"out": 3, "kernel": 2, "padding": 1}}],
                            [{"conv1d": {"out": 2, "kernel": 2, "dilation": 2, "padding": "same", "bias": False}}]]},
              "elu", "flatten", {"dense": 7}, {"dense": "num_classes"}]
    specs = parse_layers(layers)
    # 16 -> ceil(16/2) = 8 -> ceil(8/2) = 4; the branches keep 4: (10 + 3 + 2) channels
    assert infer_shapes(specs, (vocab, length), 4)[5] == (15, 4)
    torch.manual_seed(1)
    net = build_torch(specs, (vocab, length), 4).double().train()
    ref = copy_to_reference(specs, (vocab, length), net, np.float64)
    x = token_ids(6, length, vocab, seed=3)
    out = net(x)
    ref_out = ref.forward(x.numpy(), training=True)
    assert nerr(ref_out, out.detach().numpy()) < 1e-10
    g = torch.randn_like(out)
    out.backward(g)
    grads = ref.backward(g.numpy())
    for name, p in net.named_parameters():
        assert nerr(grads[name], p.grad.numpy()) < 1e-9, name
    for name, b in net.state_dict().items():   # running statistics moved alike
        if "running" in name:
            np.testing.assert_allclose(ref.buffers[name], b.numpy(), rtol=1e-12)
    assert "residual1.shortcut.weight" in grads and grads["residual1.shortcut.weight"].shape == (10, 8, 1)


def test_parallel_on_images_concatenates_channels_in_both_networks():
    layers = [{"parallel": [[{"conv": {"out": 2, "kernel": 3, "padding": "same"}}],
                            [{"conv": {"out": 3, "kernel": 1}}, "relu"]]}, "globalavgpool", {"dense": 2}]
    specs = parse_layers(layers)
    assert infer_shapes(specs, (1, 6, 6)) == [(5, 6, 6), (5,), (2,)]
    torch.manual_seed(2)
    net = build_torch(specs, (1, 6, 6)).double()
    ref = copy_to_reference(specs, (1, 6, 6), net, np.float64)
    x = torch.randn(3, 1, 6, 6, dtype=torch.float64)
    out = net(x)
    assert nerr(ref.forward(x.numpy()), out.detach().numpy()) < 1e-12
    out.sum().backward()
    grads = ref.backward(np.ones((3, 2)), need_input_grad=True)
    for name, p in net.named_parameters():
        assert nerr(grads[name], p.grad.numpy()) < 1e-12, name


# --------------------------------------------------------------------------- embedding rules


def test_padding_row_is_zero_gets_no_gradient_and_stays_zero_after_a_step():
    specs = parse_layers([{"embedding": 5}, "globalmaxpool1d", {"dense": 2}])
    torch.manual_seed(0)
    net = build_torch(specs, (10, 6), 2)
    emb = net.embedding1
    assert isinstance(emb, nn.Embedding) and emb.padding_idx == 0
    assert not emb.weight[0].any() and emb.weight[1:].abs().sum() > 0
    x = torch.tensor([[3, 4, 0, 0, 0, 0], [1, 2, 5, 0, 0, 0]])
    out = net(x)
    assert net(x).shape == (2, 2) and emb(x).shape == (2, 5, 6)        # channels first
    out.sum().backward()
    g = emb.weight.grad
    assert not g[0].any() and not g[6:].any() and g[1:6].abs().sum(1).min() >= 0
    torch.optim.SGD(net.parameters(), lr=1.0).step()
    assert not emb.weight[0].any()
    # padding_idx: null makes row 0 an ordinary token
    net2 = build_torch(parse_layers([{"embedding": {"dim": 5, "padding_idx": None}}, "globalmaxpool1d"]), (10, 6))
    assert net2.embedding1.padding_idx is None and net2.embedding1.weight[0].abs().sum() > 0


def test_frozen_embedding_has_no_gradient_in_torch_nor_a_parameter_in_the_reference():
    specs = parse_layers([{"embedding": {"dim": 4, "freeze": True}}, "globalavgpool1d", {"dense": 2}])
    net = build_torch(specs, (9, 5), 2)
    assert not net.embedding1.weight.requires_grad
    assert "embedding1.weight" in net.state_dict()
    net(torch.tensor([[1, 2, 3, 0, 0]])).sum().backward()
    assert net.embedding1.weight.grad is None
    ref = copy_to_reference(specs, (9, 5), net)
    assert "embedding1.weight" not in ref.params and "embedding1.weight" in ref.buffers
    np.testing.assert_array_equal(ref.buffers["embedding1.weight"], net.embedding1.weight.detach().numpy())
    ref.forward(np.array([[1, 2, 3, 0, 0]]))
    assert set(ref.backward(np.ones((1, 2)))) == {"dense1.weight", "dense1.bias"}
    assert list(ref.state_dict()) == list(net.state_dict())


def test_one_hot_floats_give_the_same_as_ids_and_the_glass_box_embedding():
    specs = parse_layers([{"embedding": 3}])
    torch.manual_seed(0)
    net = build_torch(specs, (7, 4))
    ids = torch.tensor([[0, 3, 6, 1], [2, 2, 5, 0]])
    onehot = F.one_hot(ids, 7).transpose(1, 2).float()              # (N, V, L)
    torch.testing.assert_close(net(onehot), net(ids))
    w = net.embedding1.weight.detach().numpy()
    y, cache = embedding(ids.numpy(), w, padding_idx=0)
    np.testing.assert_array_equal(y, net(ids).detach().numpy())
    dy = np.random.default_rng(0).standard_normal(y.shape)
    dw = embedding_backward(dy, cache)
    # by hand: row 2 is used twice in sample 1 (positions 0 and 1); row 0 is padding
    np.testing.assert_allclose(dw[2], dy[1, :, 0] + dy[1, :, 1])
    np.testing.assert_allclose(dw[6], dy[0, :, 2])
    assert not dw[0].any() and not dw[4].any()
    ref = ReferenceNet(specs, (7, 4))
    ref.load_state_dict(net.state_dict())
    np.testing.assert_allclose(ref.forward(onehot.numpy()), ref.forward(ids.numpy()), atol=1e-6)
    with pytest.raises(ValueError, match="token ids must be in 0..6"):
        ref.forward(np.array([[7, 0, 0, 0]]))


def test_reference_init_keeps_the_padding_row_zero():
    specs = parse_layers([{"embedding": 4}, "globalmaxpool1d", {"dense": 2}])
    ref = ReferenceNet(specs, (50, 6))
    ref.init("xavier", rng=np.random.default_rng(0))
    table = ref.params["embedding1.weight"]
    assert not table[0].any() and 0.7 < table[1:].std() < 1.3      # torch's N(0, 1), not xavier's ~0.2


# --------------------------------------------------------------------------- config and the model factory


def test_config_input_takes_v_l_and_create_model_builds_kim():
    cfg = validate({"model": {"input": [60, 9], "layers": kim_layers(dim=8, filters=4, kernels=(2, 3))}})
    assert cfg.model.input == [60, 9]
    model = create_model(cfg.model, (60, 9), 3)
    assert model.head_name == "dense1" and model.dense1.out_features == 3
    assert model(token_ids(3, 9, 60)).shape == (3, 3)
    assert sum(p.numel() for p in model.parameters()) == 60 * 8 + (2 * 8 + 1) * 4 + (3 * 8 + 1) * 4 + (8 + 1) * 3
    for bad in ([1, 2, 3, 4, 5], [5], [0, 9]):
        with pytest.raises(ConfigError, match=r"model.input must be \[C, H, W\] .* or, for text, \[V, L\]"):
            validate({"model": {"input": bad, "layers": ["flatten", {"dense": 2}]}})


def test_a_conv1d_head_with_num_classes_scores_every_position_and_resets():
    specs = parse_layers([{"embedding": 4}, {"conv1d": {"out": "num_classes", "kernel": 3, "padding": "same"}}])
    net = build_torch(specs, (20, 7), 5)
    assert net.head_name == "conv1d1"
    assert net(token_ids(3, 7, 20)).shape == (3, 5, 7)
    net.reset_classifier(2)
    assert net(token_ids(3, 7, 20)).shape == (3, 2, 7)
