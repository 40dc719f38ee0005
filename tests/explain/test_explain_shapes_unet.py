"""``cnnkit explain shapes`` on encoder-decoder layer lists (U-Net): names, conv_transpose, upsample,
concat and a per-pixel ``conv`` head with ``out: num_classes``; and ``model.init`` on transposed
convolutions.

Oracles: the torch network's real intermediate shapes (forward hooks on its top-level modules),
:func:`cnnkit.spec.infer_shapes`, ``cnnkit summary``'s receptive fields and strides ('-' past an
up-sampling), the transposed-convolution formula out = (in - 1)s - 2p + d(k - 1) + output_padding + 1
worked out by hand, U-Net's centre crop by hand, and torch's own fans
(``nn.init._calculate_fan_in_and_fan_out``) for the initialisation.
"""

from __future__ import annotations

import json
import math
import re

import pytest
import torch
import yaml
from torch import nn

from cnnkit.explain.shapes import explain_layer_list, render_text
from cnnkit.models.spec import build_torch
from cnnkit.nn.init import init_weights
from cnnkit.spec import infer_shapes, parse_layers
from cnnkit.summary import summarize


def unet_layers(padding: str, width: int = 4) -> list:
    """The depth-2 U-Net of tests/test_layer_lists_unet.py: two 3x3 convolutions per level, 2x2 max
    pooling, 2x2 up-convolutions, concatenation with enc1 / enc2 and a 1x1 classifier (out: num_classes)."""

    def double(n, name):
        conv = {"conv": {"out": n, "kernel": 3, "padding": padding}}
        return [conv, "relu", conv, {"relu": None, "name": name} if name else "relu"]

    return (double(width, "enc1") + [{"maxpool": 2}] + double(2 * width, "enc2") + [{"maxpool": 2}]
            + double(4 * width, None)
            + [{"upconv": 2 * width}, {"concat": "enc2"}] + double(2 * width, None)
            + [{"upconv": width}, {"concat": "enc1"}] + double(width, None)
            + [{"conv": {"out": "num_classes", "kernel": 1}}])


def hooked_shapes(net: nn.Module, input_shape) -> dict[str, tuple[tuple, tuple]]:
    """(input shape, output shape) without the batch axis of each top-level module, by name."""
    seen: dict[str, tuple[tuple, tuple]] = {}

    def hook(name):
        def record(module, inputs, output):
            seen[name] = (tuple(inputs[0].shape[1:]), tuple(output.shape[1:]))
        return record

    handles = [m.register_forward_hook(hook(n)) for n, m in net.named_children()]
    with torch.no_grad():
        net(torch.randn(2, *input_shape))
    for h in handles:
        h.remove()
    return seen


def _config(tmp_path, layers, input_shape) -> str:
    cfg = tmp_path / "unet.yaml"
    cfg.write_text(yaml.safe_dump({"model": {"input": list(input_shape), "layers": layers}}, sort_keys=False))
    return str(cfg)


LINE = re.compile(r"^(\S+): (.*)  (\d+(?:x\d+)*) -> (\d+(?:x\d+)*)$")


def _text_shapes(text: str) -> dict[str, tuple[tuple, tuple]]:
    """``name: description  CxHxW -> CxHxW`` lines of the text output, by name."""
    out = {}
    for line in text.splitlines():
        m = LINE.match(line)
        if m:
            out[m.group(1)] = (tuple(int(v) for v in m.group(3).split("x")),
                               tuple(int(v) for v in m.group(4).split("x")))
    return out


def _text_blocks(text: str) -> dict[str, list[str]]:
    """The lines under each ``name: ...`` line of the text output, by name."""
    blocks: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        m = LINE.match(line)
        if m:
            current = blocks.setdefault(m.group(1), [])
        elif current is not None and line.startswith("  "):
            current.append(line)
        else:
            current = None
    return blocks


@pytest.mark.parametrize("padding, side", [("same", 16), ("valid", 68)])
def test_unet_cli_shapes_are_the_torch_models_real_shapes(cli, tmp_path, padding, side):
    layers = unet_layers(padding)
    cfg = _config(tmp_path, layers, (1, side, side))
    specs = parse_layers(layers)
    torch.manual_seed(0)
    net = build_torch(specs, (1, side, side), 3)
    real = hooked_shapes(net, (1, side, side))
    inferred = dict(zip([s.name for s in specs], infer_shapes(specs, (1, side, side), 3)))
    assert list(real) == [s.name for s in specs]

    code, out = cli("shapes", cfg, "--num-classes", "3", "--format", "json")
    assert code == 0
    data = json.loads(out)
    assert [r["name"] for r in data["layers"]] == [s.name for s in specs]
    for r in data["layers"]:
        assert (tuple(r["input_shape"]), tuple(r["output_shape"])) == real[r["name"]], r["name"]
        assert tuple(r["output_shape"]) == inferred[r["name"]], r["name"]
        assert r["note"] is None, r["note"]
    assert data["total_params"] == sum(p.numel() for p in net.parameters())
    assert data["layers"][-1]["output_shape"] == [3, *real["conv11"][1][1:]]

    code, text = cli("shapes", cfg, "--num-classes", "3")
    assert code == 0
    assert _text_shapes(text) == real                 # every printed shape, every layer
    assert f"= {sum(p.numel() for p in net.parameters()):,}" in text.splitlines()[-1]
    assert "concat1: concat(from=enc2)" in text and "concat2: concat(from=enc1)" in text


@pytest.mark.parametrize("padding, side", [("same", 16), ("valid", 68)])
def test_unet_receptive_fields_agree_with_the_summary_and_are_dashes_past_the_upconv(padding, side):
    layers = unet_layers(padding)
    res = explain_layer_list(layers, (1, side, side), 3)
    rows = {r.name: r for r in summarize(build_torch(parse_layers(layers), (1, side, side), 3), (1, side, side)).layers}
    for r in res["layers"]:
        assert (r["receptive_field"], r["stride"]) == (rows[r["name"]].receptive_field, rows[r["name"]].stride), \
            r["name"]
    L = {r["name"]: r for r in res["layers"]}
    # the contracting path: 3x3 convs 3, 5; pool 6 (jump 2); convs 10, 14; pool 16 (jump 4); convs 24, 32
    assert [L[n]["receptive_field"] for n in ("conv1", "conv2", "maxpool1", "conv4", "maxpool2", "conv6")] == \
        [3, 5, 6, 14, 16, 32]
    assert L["maxpool2"]["stride"] == 4
    assert L["conv5"]["formulas"][-1] == "rf = rf_prev + (k-1)*d*jump_prev = 16 + (3-1)*1*4 = 24; jump = jump_prev*s = 4*1 = 4"
    past = [r for r in res["layers"] if list(L).index(r["name"]) >= list(L).index("conv_transpose1")]
    assert all(r["receptive_field"] is None and r["stride"] is None for r in past)
    assert all(any(f.startswith("rf -, jump -") for f in r["formulas"]) for r in past)
    assert L["conv7"]["formulas"][-1] == "rf -, jump - (unknown past the up-sampling conv_transpose1)"
    assert any("up-sampling conv_transpose1" in n for n in res["notes"])
    blocks = _text_blocks(render_text(res))
    assert "  rf 32, jump 4 (unchanged)" in blocks["relu6"]      # the last known field
    for name in ("conv_transpose1", "concat1", "conv7", "relu7", "conv_transpose2", "conv11"):
        assert any(line.startswith("  rf -, jump -") for line in blocks[name]), name
        assert not any("(unchanged)" in line for line in blocks[name]), name


def test_valid_unet_explains_the_upconv_the_crop_and_the_head_with_the_numbers():
    res = explain_layer_list(unet_layers("valid"), (1, 68, 68), 3)
    L = {r["name"]: r for r in res["layers"]}
    up = L["conv_transpose1"]
    assert up["type"] == "conv_transpose" and up["description"] == "conv_transpose(out=8, kernel=2, stride=2, padding=0)"
    assert up["formulas"][0] == ("out = (in - 1)*s - 2p + d(k-1) + output_padding + 1 = (10 - 1)*2 - 2*0 + 1*(2-1) + 0 "
                                 "+ 1 = 20   (H and W)")
    assert up["params"] == 2 * 2 * 16 * 8 + 8 and up["params_formula"] == "(2*2*16 + 1)*8 = 520"
    assert up["layer_stride"] == 2
    assert L["conv_transpose2"]["formulas"][0].endswith("= (16 - 1)*2 - 2*0 + 1*(2-1) + 0 + 1 = 32   (H and W)")
    # concat: which layer, the channels it adds, and U-Net's centre crop (28 -> 20: 4 rows off each side)
    cat1, cat2 = L["concat1"], L["concat2"]
    assert cat1["description"] == "concat(from=enc2)" and cat2["description"] == "concat(from=enc1)"
    assert cat1["formulas"][0] == "out channels = 8 (this path) + 8 (from enc2, 8x28x28) = 16; H x W stay 20x20"
    assert cat1["formulas"][1] == ("centre crop of enc2's 28x28 to 20x20: rows 4..23 (4 cut on top, 4 at the bottom), "
                                   "columns 4..23 (4 cut on the left, 4 on the right)")
    assert cat2["formulas"][1].startswith("centre crop of enc1's 64x64 to 32x32: rows 16..47")
    assert cat1["params"] == 0
    # the per-pixel head: out = num_classes
    head = L["conv11"]
    assert head["output_shape"] == [3, 28, 28] and head["params"] == (1 * 1 * 4 + 1) * 3
    assert head["params_formula"] == "(1*1*4 + 1)*3 = 15"
    assert "out = 3 channels (num_classes: one score map per class)" in head["formulas"]
    text = render_text(res)
    assert "concat1: concat(from=enc2)  8x20x20 -> 16x20x20" in text
    assert "conv11: conv(out=num_classes, kernel=1, stride=1, padding=valid)  4x28x28 -> 3x28x28" in text


def test_same_unet_concat_has_no_crop():
    res = explain_layer_list(unet_layers("same"), (1, 16, 16), 3)
    L = {r["name"]: r for r in res["layers"]}
    assert L["concat1"]["formulas"][1] == "enc2's output is already 8x8: no crop"
    assert L["concat2"]["output_shape"] == [8, 16, 16]


def test_the_yaml_unet_with_a_named_head_by_config_file(cli, tmp_path):
    layers = [{"conv": {"out": 8, "padding": "same"}}, {"relu": {"name": "enc1"}}, {"maxpool": 2},
              {"conv": {"out": 16, "padding": "same"}}, "relu",
              {"upconv": 8}, {"concat": "enc1"}, {"conv": {"out": 8, "padding": "same"}}, "relu",
              {"conv": {"out": "num_classes", "kernel": 1}, "name": "classify"}]
    cfg = _config(tmp_path, layers, (1, 32, 32))
    code, out = cli("shapes", cfg, "--num-classes", "2", "--format", "json")
    data = json.loads(out)
    assert data["layers"][-1]["name"] == "classify" and data["layers"][-1]["output_shape"] == [2, 32, 32]
    net = build_torch(parse_layers(layers), (1, 32, 32), 2)
    assert {r["name"]: tuple(r["output_shape"]) for r in data["layers"]} == \
        {k: v[1] for k, v in hooked_shapes(net, (1, 32, 32)).items()}


def test_upsample_layers_explain_scale_size_and_mode():
    layers = [{"conv": {"out": 2, "padding": "same"}, "name": "a"}, {"maxpool": 2},
              {"upsample": {"scale": 2, "mode": "bilinear"}}, {"concat": "a"},
              {"upsample": [3, 2]}, {"upsample": {"size": [7, 10], "mode": "bilinear", "align_corners": True}},
              {"conv_transpose": {"out": 3, "kernel": 3, "stride": 2, "padding": "same"}},
              {"conv_transpose": {"out": 2, "kernel": [3, 2], "stride": [1, 3], "padding": [1, 0],
                                  "output_padding": [0, 2], "dilation": [2, 1]}}]
    res = explain_layer_list(layers, (1, 6, 6), 3)
    net = build_torch(parse_layers(layers), (1, 6, 6), 3)
    real = hooked_shapes(net, (1, 6, 6))
    assert {r["name"]: (tuple(r["input_shape"]), tuple(r["output_shape"])) for r in res["layers"]} == real
    L = {r["name"]: r for r in res["layers"]}
    assert L["upsample1"]["description"] == "upsample(scale=2, mode=bilinear)"
    assert L["upsample1"]["formulas"][0] == "out = in*scale = 3*2 = 6   (H and W)"
    assert "align_corners=False" in L["upsample1"]["formulas"][1]
    assert L["concat1"]["formulas"][1] == "a's output is already 6x6: no crop"
    assert L["concat1"]["receptive_field"] is None        # one branch is past the up-sampling
    assert L["upsample2"]["formulas"][:3] == ["H: out = in*scale = 6*3 = 18", "W: out = in*scale = 6*2 = 12",
                                              "mode nearest: each pixel is repeated in a 3x2 block"]
    assert L["upsample3"]["description"] == "upsample(size=7x10, mode=bilinear, align_corners=True)"
    assert L["upsample3"]["formulas"][0] == "out = size = 7x10 (fixed, whatever the input): scale H 7/18, W 10/12"
    assert "align_corners=True" in L["upsample3"]["formulas"][1]
    assert all(L[n]["params"] == 0 for n in ("upsample1", "upsample2", "upsample3", "concat1"))
    # padding 'same' of a transposed convolution: out = in*s, and the padding it takes
    same = L["conv_transpose1"]["formulas"]
    assert same[0].startswith("H: same: out = in*s = 7*2 = 14; t = d(k-1) + 1 - s = 1*(3-1) + 1 - 2 = 1 -> "
                              "p = ceil(t/2) = 1, output_padding = 2p - t = 1; ")
    assert same[0].endswith("= (7 - 1)*2 - 2*1 + 1*(3-1) + 1 + 1 = 14")
    per_axis = L["conv_transpose2"]["formulas"]
    assert per_axis[0] == "H: out = (in - 1)*s - 2p + d(k-1) + output_padding + 1 = (14 - 1)*1 - 2*1 + 2*(3-1) + 0 + 1 = 16"
    assert per_axis[1] == "W: out = (in - 1)*s - 2p + d(k-1) + output_padding + 1 = (20 - 1)*3 - 2*0 + 1*(2-1) + 2 + 1 = 61"
    assert L["conv_transpose2"]["layer_stride"] == [1, 3]
    assert res["total_params"] == sum(p.numel() for p in net.parameters())


def test_a_concat_before_any_upsampling_keeps_a_known_field():
    layers = [{"conv": {"out": 2, "padding": "same"}, "name": "a"}, {"conv": {"out": 2, "padding": "same"}},
              {"concat": "a"}, {"maxpool": 2}]
    res = explain_layer_list(layers, (1, 6, 6))
    L = {r["name"]: r for r in res["layers"]}
    assert (L["concat1"]["receptive_field"], L["concat1"]["stride"]) == (5, 1)
    assert "rf = the larger of the two branches' = max(5, 3) = 5; jump = max(1, 1) = 1" in L["concat1"]["formulas"]
    assert L["maxpool1"]["receptive_field"] == 6 and res["notes"] == []
    rows = {r.name: r for r in summarize(build_torch(parse_layers(layers), (1, 6, 6)), (1, 6, 6)).layers}
    assert rows["concat1"].receptive_field == 5 and rows["maxpool1"].receptive_field == 6


# --------------------------------------------------------------------------- model.init on transposed convolutions


def _filled(m: nn.Module) -> nn.Module:
    with torch.no_grad():
        m.bias.fill_(1.0)   # so that "biases start at zero" is observable
    return m


@pytest.mark.parametrize("make", [lambda: nn.ConvTranspose2d(64, 32, 4, stride=2),
                                  lambda: nn.ConvTranspose2d(64, 32, 4, stride=2, groups=2)])
def test_init_schemes_reach_transposed_convolutions_with_torchs_fans(make):
    from cnnkit.reference.init import fans

    m = make()
    w_shape = tuple(m.weight.shape)                      # (in, out/groups, KH, KW)
    fan_in = w_shape[1] * 16                             # out/groups * KH*KW: torch's fan_in for the transposed conv
    fan_out = w_shape[0] * 16                            # in * KH*KW
    assert nn.init._calculate_fan_in_and_fan_out(m.weight) == (fan_in, fan_out) == fans(w_shape)
    torch.manual_seed(0)
    init_weights(_filled(m), "he", "normal")
    w = m.weight.detach()
    assert w.std().item() == pytest.approx(math.sqrt(2 / fan_in), rel=0.03)
    assert w.mean().abs().item() < 0.05 * math.sqrt(2 / fan_in)
    assert torch.count_nonzero(m.bias) == 0
    torch.manual_seed(0)
    init_weights(_filled(m), "he", "uniform")
    bound = math.sqrt(6 / fan_in)
    assert 0.98 * bound < m.weight.abs().max().item() <= bound and torch.count_nonzero(m.bias) == 0
    torch.manual_seed(0)
    init_weights(_filled(m), "xavier", "normal")
    assert m.weight.std().item() == pytest.approx(math.sqrt(2 / (fan_in + fan_out)), rel=0.03)
    torch.manual_seed(0)
    init_weights(_filled(m), "xavier", "uniform")
    bound = math.sqrt(6 / (fan_in + fan_out))
    assert 0.98 * bound < m.weight.abs().max().item() <= bound
    torch.manual_seed(0)
    init_weights(_filled(m), "random", "normal", scale=0.2)
    assert m.weight.std().item() == pytest.approx(0.2, rel=0.03) and torch.count_nonzero(m.bias) == 0
    init_weights(_filled(m), "random", "uniform", scale=0.3)
    assert 0.29 < m.weight.abs().max().item() <= 0.3


def test_model_init_reaches_the_unets_upconvs():
    from cnnkit.config import ModelConfig
    from cnnkit.models.registry import create_model

    torch.manual_seed(0)
    default = build_torch(parse_layers(unet_layers("same", width=32)), (1, 16, 16), 3)
    cfg = ModelConfig(layers=unet_layers("same", width=32), init={"scheme": "he", "distribution": "normal"})
    torch.manual_seed(0)
    net = create_model(cfg, (1, 16, 16), 3)
    for name in ("conv_transpose1", "conv_transpose2"):
        up, before = getattr(net, name), getattr(default, name)
        fan_in = up.weight.shape[1] * up.weight.shape[2] * up.weight.shape[3]
        assert up.weight.std().item() == pytest.approx(math.sqrt(2 / fan_in), rel=0.05), name
        assert before.weight.std().item() < 0.8 * math.sqrt(2 / fan_in)   # torch's default is narrower
        assert torch.count_nonzero(up.bias) == 0
