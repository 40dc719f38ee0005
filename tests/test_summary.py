"""Per-layer summary: shapes, parameters, MACs, receptive field and cumulative stride.

Oracles: the course's LeNet-5 numbers (6x24x24 ... 10; 44,426 parameters;
281,640 MACs), the MAC formula per layer written out here, torch's own flop
counter (MACs = FLOPs / 2), and receptive fields computed by hand with
r_out = r_in + (k - 1) * d * j_in, j_out = j_in * s.
"""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from cnnkit import cli
from cnnkit.explain.shapes import explain_layer_list, explain_shapes
from cnnkit.models import build_torch, get_model, parse_layers
from cnnkit.summary import summarize, walk_model

LENET = [
    # name, type, output shape, params, MACs, receptive field, stride
    ("conv1", "Conv2d", [6, 24, 24], 156, 6 * 24 * 24 * 1 * 5 * 5, 5, 1),
    ("relu1", "ReLU", [6, 24, 24], 0, 0, 5, 1),
    ("maxpool1", "MaxPool2d", [6, 12, 12], 0, 0, 6, 2),
    ("conv2", "Conv2d", [16, 8, 8], 2416, 16 * 8 * 8 * 6 * 5 * 5, 14, 2),
    ("relu2", "ReLU", [16, 8, 8], 0, 0, 14, 2),
    ("maxpool2", "MaxPool2d", [16, 4, 4], 0, 0, 16, 4),
    ("flatten1", "Flatten", [256], 0, 0, 16, 4),          # each feature keeps its map position's field
    ("dense1", "Linear", [120], 30840, 256 * 120, 28, 4),   # sees all 4x4 positions: 16 + 3*4 = 28
    ("relu3", "ReLU", [120], 0, 0, 28, 4),
    ("dense2", "Linear", [84], 10164, 120 * 84, 28, 4),         # a vector's units already see it all
    ("relu4", "ReLU", [84], 0, 0, 28, 4),
    ("dense3", "Linear", [10], 850, 84 * 10, 28, 4),
]


def flop_counter_macs(model: nn.Module, shape) -> int:
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as c:
        model(torch.zeros(1, *shape))
    return c.get_total_flops() // 2


def hand_macs(model: nn.Module, shape) -> dict[str, int]:
    """out.numel() * (C_in / groups) * kh * kw for convolutions, out.numel() * in for dense."""
    names = {m: n for n, m in model.named_modules()}
    out: dict[str, int] = {}

    def hook(m, inp, y):
        if isinstance(m, nn.Conv2d):
            out[names[m]] = y[0].numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]
        elif isinstance(m, nn.Linear):
            out[names[m]] = y[0].numel() * m.in_features

    hs = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, *shape))
    for h in hs:
        h.remove()
    return out


# --------------------------------------------------------------------------- LeNet-5


@pytest.fixture(scope="module")
def lenet_summary():
    return summarize(get_model("lenet5"), (1, 28, 28))


def test_lenet5_totals(lenet_summary):
    s = lenet_summary
    assert s.total_params == 44_426 == s.trainable_params
    assert s.total_macs == 281_640
    assert s.output_shape == [10]
    assert s.input_shape == [1, 28, 28]
    assert flop_counter_macs(get_model("lenet5"), (1, 28, 28)) == 281_640


def test_lenet5_per_layer(lenet_summary):
    rows = lenet_summary.layers
    assert [r.name for r in rows] == [row[0] for row in LENET]
    for r, (name, typ, shape, params, macs, rf, stride) in zip(rows, LENET):
        assert r.type == typ, name
        assert r.output_shape == shape, name
        assert r.params == params, name
        assert r.macs == macs, name
        assert (r.receptive_field, r.stride) == (rf, stride), name
    assert sum(r.params for r in rows) == 44_426
    assert sum(r.macs for r in rows) == 281_640


def test_lenet5_params_are_the_formula():
    # (k*k*C_in + 1) * C_out for convolutions, (in + 1) * out for dense layers.
    assert (5 * 5 * 1 + 1) * 6 == 156
    assert (5 * 5 * 6 + 1) * 16 == 2416
    assert (256 + 1) * 120 == 30840
    assert (120 + 1) * 84 == 10164
    assert (84 + 1) * 10 == 850
    assert 156 + 2416 + 30840 + 10164 + 850 == 44_426


def test_lenet5_text_table(lenet_summary):
    text = lenet_summary.to_text()
    assert "44,426" in text and "281,640" in text
    lines = text.splitlines()
    conv1 = next(l for l in lines if l.startswith("conv1"))
    assert "6x24x24" in conv1 and "156" in conv1 and "86,400" in conv1


def test_lenet5_at_32px_input():
    # LeCun's original 32x32 input: 6x28x28, 16x10x10, 16*5*5 = 400 features.
    s = summarize(get_model("lenet5", input_size=32), (1, 32, 32))
    by = {r.name: r for r in s.layers}
    assert by["conv1"].output_shape == [6, 28, 28] and by["conv1"].macs == 6 * 28 * 28 * 25
    assert by["conv2"].output_shape == [16, 10, 10] and by["conv2"].macs == 16 * 10 * 10 * 150
    assert by["flatten1"].output_shape == [400]
    assert by["dense1"].params == 401 * 120
    assert s.total_params == 156 + 2416 + 401 * 120 + 10164 + 850


# --------------------------------------------------------------------------- other networks vs the flop counter


def test_resnet20_macs_match_the_flop_counter_and_the_formula():
    torch.manual_seed(0)
    model = get_model("resnet20", num_classes=10, in_chans=3, input_size=32)
    s = summarize(model, (3, 32, 32))
    assert s.total_params == 272_474 == sum(p.numel() for p in model.parameters())
    assert s.total_macs == flop_counter_macs(model, (3, 32, 32))
    hand = hand_macs(model, (3, 32, 32))
    by = {r.name: r for r in s.layers}
    assert set(hand) <= set(by)
    for name, macs in hand.items():
        assert by[name].macs == macs, name
    assert s.total_macs == sum(hand.values())
    # Receptive field by hand: stem 3; +2 for each of 6 convs -> 15; stage 2 starts with stride 2:
    # 17, then +4 five times -> 37; stage 3: 41, then +8 five times -> 81 at jump 4; the global
    # pool over 8x8 adds (8 - 1) * 4 = 28 -> 109.
    assert (by["body.stem.0"].receptive_field, by["body.stem.0"].stride) == (3, 1)
    assert (by["body.layer1.2.conv2"].receptive_field, by["body.layer1.2.conv2"].stride) == (15, 1)
    assert (by["body.layer2.2.conv2"].receptive_field, by["body.layer2.2.conv2"].stride) == (37, 2)
    assert (by["body.layer3.2.conv2"].receptive_field, by["body.layer3.2.conv2"].stride) == (81, 4)
    assert by["body.pool"].receptive_field == 109
    assert by["body.pool"].stride == 32       # a window of the whole 8x8 map, moved by 8: 4 * 8
    assert (by["head"].receptive_field, by["head"].stride) == (109, 32)  # on the pooled vector: unchanged


def test_declarative_residual_net_macs_and_receptive_field():
    layers = [{"conv": {"out": 8, "kernel": 3, "padding": "same"}}, "relu",
              {"residual": {"layers": [{"conv": {"out": 16, "kernel": 3, "stride": 2, "padding": "same"}}, "relu",
                                       {"conv": {"out": 16, "kernel": 3, "padding": "same"}}],
                            "activation": "relu"}},
              "globalavgpool", {"dense": 10}]
    model = build_torch(parse_layers(layers), (3, 15, 15))
    s = summarize(model, (3, 15, 15))
    assert s.total_macs == flop_counter_macs(model, (3, 15, 15))
    hand = hand_macs(model, (3, 15, 15))
    assert s.total_macs == sum(hand.values())
    # The 1x1 stride-2 projection is counted: 16 * 8 * 8 * 8.
    assert hand["residual1.shortcut"] == 16 * 8 * 8 * 8
    by = {r.name: r for r in s.layers}
    assert by["residual1.shortcut"].macs == 16 * 8 * 8 * 8
    # Layer names are counted over the whole list: the block's convolutions are conv2 and conv3.
    assert by["residual1.body.conv2"].output_shape == [16, 8, 8]  # ceil(15 / 2)
    # conv1: 3 ; body conv (k3 s2): 3 + 2 = 5, jump 2 ; body conv (k3): 5 + 2*2 = 9.
    assert (by["conv1"].receptive_field, by["conv1"].stride) == (3, 1)
    assert (by["residual1.body.conv2"].receptive_field, by["residual1.body.conv2"].stride) == (5, 2)
    assert (by["residual1.body.conv3"].receptive_field, by["residual1.body.conv3"].stride) == (9, 2)
    assert s.total_params == sum(p.numel() for p in model.parameters())


# --------------------------------------------------------------------------- summary and explain shapes agree


def assert_summary_and_explain_agree(summary, explained):
    """Every layer ``explain shapes`` lists has the summary's output shape, receptive field and stride."""
    rows = {r.name: r for r in summary.layers}
    by_leaf = {name.rsplit(".", 1)[-1]: r for name, r in rows.items()}   # layer-list names are unique
    checked = 0
    for rec in explained["layers"]:
        name = rec["name"]
        row = rows.get(f"{name}.post") if rec["type"] == "residual" else rows.get(name) or by_leaf.get(name)
        assert row is not None, name
        assert row.output_shape == rec["output_shape"], name
        assert (row.receptive_field, row.stride) == (rec["receptive_field"], rec["stride"]), name
        checked += 1
    assert checked == len(explained["layers"]) > 0


@pytest.mark.parametrize("name, shape", [
    ("lenet5", (1, 28, 28)),       # a layer list: explain walks the list, summary the built network
    ("resnet20", (3, 32, 32)),     # skip connections
    ("googlenet", (3, 64, 64)),    # parallel branches and concatenations
    ("vgg11", (3, 32, 32)),        # an adaptive pool that upsamples 1x1 to 7x7
])
def test_summary_and_explain_shapes_agree_on_zoo_models(name, shape):
    torch.manual_seed(0)
    model = get_model(name, num_classes=10, in_chans=shape[0], input_size=shape[1])
    assert_summary_and_explain_agree(summarize(model, shape), explain_shapes(name, input_shape=shape))


def test_summary_and_explain_shapes_agree_on_a_layer_list():
    layers = [{"conv": {"out": 8, "kernel": 3, "stride": 2, "padding": "same"}}, "batchnorm", "relu",
              {"residual": {"layers": [{"conv": {"out": 16, "kernel": 3, "stride": 2, "padding": "same"}}, "relu",
                                       {"conv": {"out": 16, "kernel": [3, 1], "padding": "same"}}],
                            "activation": "relu"}},
              {"maxout": 2}, {"l2pool": 2}, "globalavgpool", {"dense": 20}, "batchnorm", "dropout", {"dense": 10}]
    shape = (3, 33, 30)
    explained = explain_layer_list(layers, shape)
    assert_summary_and_explain_agree(summarize(build_torch(parse_layers(layers), shape, 10), shape), explained)
    by = {r["name"]: r for r in explained["layers"]}
    # By hand, per axis (H, W): conv k3 s2 -> 3, jump 2; body conv k3 s2 -> 3 + 2*2 = 7, jump 4;
    # body conv k(3, 1) -> (7 + 2*4, 7) = (15, 7); l2pool 2/2 -> (19, 11), jump 8; the global pool
    # over the 4x4 map: (19 + 3*8, 11 + 3*8) = (43, 35), jump 32. Dense layers on that vector: unchanged.
    assert (by["residual1"]["receptive_field"], by["residual1"]["stride"]) == ([15, 7], 4)
    assert (by["l2pool1"]["receptive_field"], by["l2pool1"]["stride"]) == ([19, 11], 8)
    assert (by["globalavgpool1"]["receptive_field"], by["globalavgpool1"]["stride"]) == ([43, 35], 32)
    assert [by[n]["receptive_field"] for n in ("dense1", "batchnorm2", "dropout1", "dense2")] == [[43, 35]] * 4


def test_walk_falls_back_to_execution_order_when_fx_cannot_trace():
    class Branchy(nn.Module):   # data-dependent control flow: torch.fx cannot trace it
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv2d(1, 2, 3), nn.Conv2d(2, 2, 3, stride=2)

        def forward(self, x):
            x = self.a(x)
            if x.sum() > -1e9:
                x = self.b(x)
            return x

    walk = walk_model(Branchy(), (1, 11, 11))
    assert walk.rf_method == "execution order"
    assert [(c.name, c.field.value("rf"), c.field.value("jump")) for c in walk.calls] == [("a", 3, 1), ("b", 5, 2)]
    assert "execution order" in summarize(Branchy(), (1, 11, 11)).to_text()


# --------------------------------------------------------------------------- the CLI


def test_summary_json_via_the_cli(capsys):
    assert cli.main(["summary", "lenet5", "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["total_params"] == 44_426 and data["total_macs"] == 281_640
    assert data["input_shape"] == [1, 28, 28] and data["output_shape"] == [10]
    layers = data["layers"]
    for item in layers:
        assert set(item) >= {"name", "type", "output_shape", "params", "macs", "receptive_field", "stride"}
    got = [(l["name"], l["type"], l["output_shape"], l["params"], l["macs"]) for l in layers]
    assert got == [row[:5] for row in LENET]
    rf = {l["name"]: (l["receptive_field"], l["stride"]) for l in layers}
    assert [rf[n] for n in ("conv1", "maxpool1", "conv2", "maxpool2")] == [(5, 1), (6, 2), (14, 2), (16, 4)]


def test_summary_of_the_demo_config_is_lenet5(capsys):
    from pathlib import Path

    cfg = Path(__file__).resolve().parents[1] / "configs" / "lenet5_mnist5k.yaml"
    assert cli.main(["summary", str(cfg), "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["total_params"] == 44_426 and data["total_macs"] == 281_640
    assert [l["output_shape"] for l in data["layers"] if l["type"] in ("Conv2d", "MaxPool2d", "Linear")] == [
        [6, 24, 24], [6, 12, 12], [16, 8, 8], [16, 4, 4], [120], [84], [10]]


def test_summary_text_and_input_option(capsys):
    assert cli.main(["summary", "resnet20", "--input", "3,40,40", "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["input_shape"] == [3, 40, 40]
    stem = next(l for l in data["layers"] if l["name"] == "body.stem.0")
    assert stem["output_shape"] == [16, 40, 40] and stem["macs"] == 16 * 40 * 40 * 3 * 9
    assert cli.main(["summary", "lenet5"]) == 0
    out = capsys.readouterr().out
    assert "total params: 44,426" in out and "total MACs: 281,640" in out


@pytest.mark.parametrize("argv, needle", [
    (["summary", "lenet6"], "'lenet6'"),
    (["summary", "lenet5", "--input", "1,28"], "'1,28'"),
])
def test_summary_user_errors(capsys, argv, needle):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    lines = [l for l in err.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], err


def test_receptive_fields_equal_the_gradient_footprint_of_a_unit():
    """The oracle: the input pixels that get a non-zero gradient from one output unit (the centre one of
    a feature map, any one of a dense layer) span exactly the receptive field the walker reports. Average
    pooling and tanh keep every gradient non-zero, so the footprint is the whole field."""
    import torch

    from cnnkit.models.spec import build_torch
    from cnnkit.spec import parse_layers
    from cnnkit.summary import walk_model

    layers = [{"conv": {"out": 3, "kernel": 5}}, "tanh", {"avgpool": 2}, {"conv": {"out": 4, "kernel": 3,
              "dilation": 2}}, "tanh", {"avgpool": 2}, "flatten", {"dense": 6}, "tanh", {"dense": 5}]
    torch.manual_seed(0)
    net = build_torch(parse_layers(layers), (1, 32, 32), 5).eval()
    walk = walk_model(net, (1, 32, 32))
    modules = dict(net.named_modules())
    checked = 0
    for call in walk.calls:
        if call.field is None or not isinstance(call.module, (torch.nn.Conv2d, torch.nn.AvgPool2d, torch.nn.Linear)):
            continue
        grabbed = {}
        handle = modules[call.name].register_forward_hook(lambda m, i, o: grabbed.update(out=o))
        x = torch.randn(1, 1, 32, 32, requires_grad=True)
        net(x)
        handle.remove()
        out = grabbed["out"]
        unit = out[0, 0, out.shape[2] // 2, out.shape[3] // 2] if out.ndim == 4 else out[0, 0]
        (grad,) = torch.autograd.grad(unit, x)
        rows, cols = torch.nonzero(grad[0, 0].abs() > 0, as_tuple=True)
        footprint = (int(rows.max() - rows.min()) + 1, int(cols.max() - cols.min()) + 1)
        assert footprint == tuple(call.field.rf), (call.name, footprint, call.field.rf)
        checked += 1
    assert checked == 6  # conv, pool, conv, pool, dense, dense
