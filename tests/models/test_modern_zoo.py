"""The modern families (EfficientNet, MobileNet, ConvNeXt, RegNet) and stochastic depth.

Oracles: torchvision's own builders (parameter counts, stochastic depth rates, state dicts)
and its weights metadata (published parameter counts, crop sizes; read without any download);
torch's FlopCounterMode (MACs = FLOPs / 2); receptive fields summed by hand over the
convolutions in execution order (rf = 1 + sum (k - 1) * d * jump); stochastic depth's
linear rule (Huang et al., 2016) written out. Everything runs at 28-32 px on 2 threads.
"""

from __future__ import annotations

import contextlib
import json

import pytest
import torch
import torchvision
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import cnnkit.summary as summary_module
from cnnkit import cli
from cnnkit.errors import UserError
from cnnkit.models import MODELS, Classifier, get_model, list_models
from cnnkit.models.weights import load_state, map_torchvision_keys
from cnnkit.models.zoo.resnet import _create_wide_resnet
from cnnkit.summary import summarize

NEW = ["efficientnet_b0", "efficientnet_b1", "efficientnet_b2", "efficientnet_v2_s", "mobilenet_v2",
       "mobilenet_v3_small", "mobilenet_v3_large", "convnext_tiny", "regnet_x_400mf", "regnet_y_400mf",
       "regnet_x_800mf", "regnet_y_800mf"]
CHAINS = ["efficientnet_b0", "mobilenet_v2", "mobilenet_v3_small", "convnext_tiny"]  # no projection shortcuts


@pytest.fixture(autouse=True)
def _two_threads():
    n = torch.get_num_threads()
    torch.set_num_threads(min(n, 2))
    yield
    torch.set_num_threads(n)


def _n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _oracle(name: str, **kwargs) -> nn.Module:
    return torchvision.models.get_model(name, weights=None, **kwargs)


def _shapes_only(name: str):
    """The meta device (nothing allocated or initialised), except for RegNet, whose builder computes its
    widths with torch and reads them back (``.tolist()``), which the meta device cannot."""
    return contextlib.nullcontext() if name.startswith("regnet") else torch.device("meta")


def _min_size(name: str) -> int:
    return MODELS.entry(name).meta["min_input"][1]


# --------------------------------------------------------------------------- registration and building


def test_modern_families_are_registered_with_torchvisions_input_sizes():
    from torchvision.models import get_model_weights

    assert set(NEW) <= set(list_models(task="classification"))
    for name in NEW:
        meta = MODELS.entry(name).meta
        crop = get_model_weights(name).DEFAULT.transforms().crop_size[0]  # metadata only, nothing downloaded
        assert meta["default_input"] == (3, crop, crop), name
        assert meta["min_input"] == ((3, 32, 32) if name == "convnext_tiny" else (3, 28, 28)), name


def _chain_field(model: nn.Module, shape) -> int:
    """The hand rule on a network whose convolutions all lie on one path (shortcuts are identities):
    rf = 1 + sum over the convolutions, in execution order, of (k - 1) * d * jump; jump *= stride."""
    convs: list[nn.Conv2d] = []
    hs = [m.register_forward_hook(lambda m, i, o: convs.append(m)) for m in model.modules()
          if isinstance(m, nn.Conv2d)]
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, *shape))
    for h in hs:
        h.remove()
    rf, jump = 1, 1
    for c in convs:
        rf += (c.kernel_size[0] - 1) * c.dilation[0] * jump
        jump *= c.stride[0]
    return rf


def _flop_counter_macs(model: nn.Module, shape) -> int:
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, *shape))
    return counter.get_total_flops() // 2


@pytest.mark.parametrize("name", NEW)
def test_builds_without_weights_and_summarises(name):
    torch.manual_seed(0)
    model = get_model(name, num_classes=10, input_size=32)
    assert isinstance(model, Classifier) and model.head.out_features == 10
    with _shapes_only(name):
        assert _n_params(model) == _n_params(_oracle(name, num_classes=10))
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)

    # summary: totals, torch's own flop count, every field known, the head's the widest at stride 32
    shape = (3, 32, 32)
    s = summarize(model, shape)
    assert s.rf_method == "graph"
    assert s.total_params == _n_params(model) and s.output_shape == [10]
    assert s.total_macs == _flop_counter_macs(model, shape)
    assert s.layers[0].output_shape[1:] == ([8, 8] if name == "convnext_tiny" else [16, 16])
    assert all(r.receptive_field is not None for r in s.layers)
    assert s.layers[-1].name == "head" and s.layers[-1].stride == 32
    assert s.layers[-1].receptive_field == max(r.receptive_field for r in s.layers)
    if name in CHAINS:
        # The squeeze-and-excitation gates (1x1 convolutions on a pooled vector) add nothing to the hand sum
        # and, by the summary's gate rule, nothing to the field either.
        last_conv = [r for r in s.layers if r.type == "Conv2d"][-1]
        assert last_conv.receptive_field == s.layers[-1].receptive_field == _chain_field(model, shape)

    # 28x28 grey images (MNIST) where the registered smallest input allows them
    if _min_size(name) <= 28:
        grey = get_model(name, num_classes=10, in_chans=1, input_size=28).eval()
        stem = next(m for m in grey.modules() if isinstance(m, nn.Conv2d))
        first = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
        assert stem.in_channels == 1 and (stem.out_channels, stem.kernel_size, stem.stride, stem.padding) == (
            first.out_channels, first.kernel_size, first.stride, first.padding)
        with torch.no_grad():
            assert grey(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    else:
        with pytest.raises(UserError, match="32x32"):
            get_model(name, num_classes=10, in_chans=1, input_size=28)


def test_convnext_really_fails_below_32px():
    """Its min_input is honest: torchvision's ConvNeXt-T at 28 px reaches a 1x1 map before a 2x2 downsampling."""
    with torch.device("meta"):  # shapes are checked on the meta device too
        net = _oracle("convnext_tiny", num_classes=10).eval()
        assert net(torch.zeros(1, 3, 32, 32)).shape == (1, 10)
        with pytest.raises(RuntimeError, match="Kernel size"):
            net(torch.zeros(1, 3, 28, 28))


@pytest.mark.parametrize("name", ["efficientnet_b0", "mobilenet_v3_small", "convnext_tiny", "regnet_y_400mf"])
def test_published_parameter_counts_with_1000_classes(name):
    from torchvision.models import get_model_weights

    with _shapes_only(name):
        model = get_model(name, num_classes=1000)
    assert _n_params(model) == get_model_weights(name).DEFAULT.meta["num_params"]


@pytest.mark.parametrize("name", NEW)
def test_torchvision_keys_map_onto_body_and_head(name):
    """What model.pretrained would load (checked on shapes, as before a download): every key of
    torchvision's state dict maps onto the model with its shape, the last Linear onto the head."""
    with _shapes_only(name):
        state = _oracle(name, num_classes=1000).state_dict()
        model = get_model(name, num_classes=1000)
    mapped = map_torchvision_keys(state, model)
    target = model.state_dict()
    assert set(mapped) == set(target)
    assert all(mapped[k].shape == target[k].shape for k in target)
    assert {k for k in mapped if k.startswith("head.")} == {"head.weight", "head.bias"}


def test_a_torchvision_state_dict_loads_and_computes_the_same():
    torch.manual_seed(0)
    net = _oracle("mobilenet_v3_small", num_classes=10).eval()
    model = get_model("mobilenet_v3_small", num_classes=10, input_size=32).eval()
    report = load_state(model, net.state_dict())
    assert not report.skipped_head and not report.adapted
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), net(x))
    grey = get_model("mobilenet_v3_small", num_classes=10, in_chans=1, input_size=32).eval()
    assert load_state(grey, net.state_dict()).adapted == ["body.features.0.0.weight"]  # summed over colours
    with torch.no_grad():
        torch.testing.assert_close(grey(x[:, :1]), net(x[:, :1].expand(-1, 3, -1, -1)))


# --------------------------------------------------------------------------- options


def test_drop_path_is_torchvisions_stochastic_depth_prob_with_its_linear_rules():
    from torchvision.ops import StochasticDepth

    def rates(model):
        return [m.p for m in model.modules() if isinstance(m, StochasticDepth)]

    with torch.device("meta"):  # the rates only: nothing allocated
        eff = rates(get_model("efficientnet_b0", num_classes=10, drop_path=0.3))
        assert eff == rates(_oracle("efficientnet_b0", num_classes=10, stochastic_depth_prob=0.3))
        assert eff == pytest.approx([0.3 * i / 16 for i in range(16)])  # torchvision: p * i / n over 16 MBConvs
        assert rates(get_model("efficientnet_b0", num_classes=10))[-1] == pytest.approx(0.2 * 15 / 16)  # 0.2
        cnx = rates(get_model("convnext_tiny", num_classes=10))
        assert cnx == rates(_oracle("convnext_tiny", num_classes=10))
        assert cnx == pytest.approx([0.1 * i / 17 for i in range(18)])  # p * i / (n - 1), default 0.1
        assert get_model("efficientnet_b0", num_classes=10, dropout=0.4).body.classifier[0].p == 0.4


def test_option_errors():
    with pytest.raises(UserError, match="drop_path"):
        get_model("mobilenet_v3_small", num_classes=10, drop_path=0.1)  # MobileNet has no stochastic depth
    with pytest.raises(UserError, match=r"\[0, 1\)"):
        get_model("efficientnet_b0", num_classes=10, drop_path=1.0)
    with pytest.raises(UserError, match=r"\[0, 1\)"):
        get_model("resnet20", drop_path=-0.1)


# --------------------------------------------------------------------------- summary


def test_squeeze_excitation_gate_keeps_the_field_of_the_map_it_scales():
    # By hand: stem 3x3/2 -> rf 3, jump 2; depthwise 3x3/2 -> 3 + 2*2 = 7, jump 4; the SE gate (a global pool
    # of the 8x8 map: 7 + 7*4 = 35, jump 32, on the gate's own rows) leaves the scaled map at 7 / 4.
    s = summarize(get_model("mobilenet_v3_small", num_classes=10, input_size=32), (3, 32, 32))
    rows = {r.name: r for r in s.layers}
    assert (rows["body.features.0.0"].receptive_field, rows["body.features.0.0"].stride) == (3, 2)
    assert (rows["body.features.1.block.0.0"].receptive_field, rows["body.features.1.block.0.0"].stride) == (7, 4)
    gate = rows["body.features.1.block.1.fc2"]
    assert (gate.receptive_field, gate.stride) == (35, 32)
    after = rows["body.features.1.block.2.0"]
    assert (after.receptive_field, after.stride) == (7, 4)

    class SE(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.fc, self.b = nn.Conv2d(1, 4, 3), nn.Conv2d(4, 4, 1), nn.Conv2d(4, 2, 3, stride=2)

        def forward(self, x):
            x = self.a(x)
            x = x * torch.sigmoid(self.fc(nn.functional.adaptive_avg_pool2d(x, 1)))
            return self.b(x)

    rows = {r.name: r for r in summarize(SE(), (1, 11, 11)).layers}
    assert [(rows[n].receptive_field, rows[n].stride) for n in ("a", "fc", "b")] == [(3, 1), (11, 9), (5, 2)]


def test_execution_order_fallback_agrees_on_a_squeeze_excitation_network(monkeypatch):
    model = get_model("regnet_y_400mf", num_classes=10, input_size=32)
    graph = summarize(model, (3, 32, 32))
    monkeypatch.setattr(summary_module, "_fields_graph", lambda *a: None)
    order = summarize(model, (3, 32, 32))
    assert order.rf_method == "execution order" and "execution order" in order.to_text()
    assert [(r.receptive_field, r.stride) for r in order.layers] == [(r.receptive_field, r.stride)
                                                                     for r in graph.layers]


def test_summary_cli_on_a_modern_model(capsys):
    assert cli.main(["summary", "efficientnet_b0", "--input", "1,28,28", "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    model = get_model("efficientnet_b0", num_classes=10, in_chans=1, input_size=28)
    assert data["total_params"] == _n_params(model)
    assert data["total_macs"] == _flop_counter_macs(model, (1, 28, 28))
    assert data["receptive_field_method"] == "graph" and data["output_shape"] == [10]
    assert data["layers"][0]["output_shape"] == [32, 14, 14]


# --------------------------------------------------------------------------- stochastic depth in cnnkit's ResNets


def _blocks(model: Classifier) -> list[nn.Module]:
    return [b for stage in (model.body.layer1, model.body.layer2, model.body.layer3) for b in stage]


def test_resnet_drop_rates_follow_the_linear_rule():
    # Huang et al. (2016): block l of L drops with probability l / L * p_L. ResNet-20 has L = 9 blocks.
    model = get_model("resnet20", drop_path=0.3)
    assert [b.drop_path for b in _blocks(model)] == pytest.approx(
        [0.1 / 3, 0.2 / 3, 0.1, 0.4 / 3, 0.5 / 3, 0.2, 0.7 / 3, 0.8 / 3, 0.3])
    assert all(b.drop_path == 0 for b in _blocks(get_model("resnet56")))  # off by default
    assert len(_blocks(get_model("resnet110", drop_path=0.5))) == 54
    assert _blocks(get_model("resnet110", drop_path=0.5))[26].drop_path == pytest.approx(0.5 * 27 / 54)
    wide = _create_wide_resnet(16, 1, num_classes=10, in_chans=3, dropout=0.0, drop_path=0.2)  # 6 blocks
    assert [b.drop_path for b in _blocks(wide)] == pytest.approx([0.2 / 6 * l for l in range(1, 7)])


def test_stochastic_depth_is_the_identity_in_eval():
    torch.manual_seed(0)
    plain = get_model("resnet20")
    dropped = get_model("resnet20", drop_path=0.5)
    dropped.load_state_dict(plain.state_dict())  # stochastic depth adds no parameter or buffer
    plain.eval(), dropped.eval()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(dropped(x), plain(x))
    # and the summary of a model left in training mode describes the same (eval) network
    dropped.train()
    s = summarize(dropped, (3, 32, 32))
    assert s.rf_method == "graph" and dropped.training
    assert [(r.receptive_field, r.stride) for r in s.layers] == [
        (r.receptive_field, r.stride) for r in summarize(plain, (3, 32, 32)).layers]


def test_a_dropped_branch_is_zero_and_a_kept_one_is_scaled_per_sample():
    """The last block of ResNet-20 (identity shortcut) with drop rate 0.5: each sample's output is
    relu(x) (branch dropped) or relu(branch / (1 - p) + x) (kept); both happen."""
    torch.manual_seed(0)
    block = _blocks(get_model("resnet20", drop_path=0.5))[-1]
    assert block.drop_path == 0.5 and isinstance(block.shortcut, nn.Identity)
    branch = {}
    block.bn2.register_forward_hook(lambda m, i, o: branch.update(out=o.detach().clone()))
    block.train()
    x = torch.randn(64, 64, 8, 8)
    with torch.no_grad():
        out = block(x)
    dropped = torch.relu(x)
    kept = torch.relu(branch["out"] / 0.5 + x)
    is_dropped = [torch.allclose(out[i], dropped[i]) for i in range(64)]
    is_kept = [torch.allclose(out[i], kept[i]) for i in range(64)]
    assert all(a != b for a, b in zip(is_dropped, is_kept))  # exactly one of the two, per sample
    assert 16 < sum(is_dropped) < 48  # Binomial(64, 0.5)
    block.eval()
    with torch.no_grad():
        assert not torch.equal(block(x), dropped)  # eval keeps every branch, unscaled


def test_expected_output_in_training_is_the_eval_output():
    """A pre-activation block is linear in its branch (out = branch * mask / (1 - p) + shortcut), so with
    batch norm frozen the mean over many draws is the eval output, even at p = 0.9 on the last block."""
    torch.manual_seed(0)
    wide = _create_wide_resnet(10, 1, num_classes=10, in_chans=3, dropout=0.0, drop_path=0.9).eval()
    block = _blocks(wide)[-1]
    assert block.drop_path == pytest.approx(0.9)
    grabbed = {}
    block.register_forward_pre_hook(lambda m, i: grabbed.update(x=i[0].detach().clone()))
    with torch.no_grad():
        wide(torch.randn(1, 3, 32, 32))
        x = grabbed["x"]
        expected = block(x)
        block.training = True  # the block only: its batch norms keep their running statistics
        draws = block(x.expand(2000, -1, -1, -1))
        shortcut = block.shortcut(block.relu1(block.bn1(x)))  # this block changes the shape: a projection
    branch = expected - shortcut
    kept = [not torch.allclose(d, shortcut[0]) for d in draws]
    for d, k in zip(draws, kept):  # each draw: the shortcut alone, or the branch scaled by 1 / (1 - 0.9)
        torch.testing.assert_close(d, (shortcut + branch * 10 if k else shortcut)[0], rtol=1e-4, atol=1e-4)
    assert 150 < sum(kept) < 250  # Binomial(2000, 0.1)
    scale = float(branch.abs().max())
    torch.testing.assert_close(draws.mean(0, keepdim=True), expected, atol=0.2 * scale, rtol=0)
