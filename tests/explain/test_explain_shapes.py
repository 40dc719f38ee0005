"""Shape, receptive-field and parameter arithmetic: LeNet-5's published numbers, 'same' padding,
configs, residual layer lists and torchvision-based zoo models walked with hooks."""

from __future__ import annotations

from pathlib import Path

import pytest

from cnnkit.errors import UserError
from cnnkit.explain.shapes import explain_layer_list, explain_shapes, parse_input_shape, render_text

CONFIG = Path(__file__).resolve().parents[2] / "src" / "cnnkit" / "configs" / "lenet5_mnist5k.yaml"


def _by_name(res):
    return {r["name"]: r for r in res["layers"]}


def _check_lenet(res):
    L = _by_name(res)
    spatial = [L[n]["output_shape"] for n in ("conv1", "maxpool1", "conv2", "maxpool2")]
    assert spatial == [[6, 24, 24], [6, 12, 12], [16, 8, 8], [16, 4, 4]]
    assert [L[n]["receptive_field"] for n in ("conv1", "maxpool1", "conv2", "maxpool2")] == [5, 6, 14, 16]
    assert [L[n]["stride"] for n in ("conv1", "maxpool1", "conv2", "maxpool2")] == [1, 2, 2, 4]
    assert [L[n]["params"] for n in ("conv1", "conv2", "dense1", "dense2", "dense3")] == [156, 2416, 30840, 10164, 850]
    assert res["total_params"] == 44426
    assert L["conv1"]["formulas"][0].startswith(
        "out = floor((in + 2p - d(k-1) - 1) / s) + 1 = floor((28 + 0 - 1*(5-1) - 1)/1) + 1 = 24")
    assert L["maxpool1"]["formulas"][0].endswith("floor((24 + 0 - 1*(2-1) - 1)/2) + 1 = 12   (H and W)")
    assert L["conv2"]["formulas"][1] == "rf = rf_prev + (k-1)*d*jump_prev = 6 + (5-1)*1*2 = 14; jump = jump_prev*s = 2*1 = 2"
    assert L["conv1"]["params_formula"] == "(5*5*1 + 1)*6 = 156"
    assert L["conv2"]["params_formula"] == "(5*5*6 + 1)*16 = 2416"
    assert L["dense1"]["params_formula"] == "(256 + 1)*120 = 30840"
    assert res["total_params_formula"] == "156 + 2416 + 30840 + 10164 + 850 = 44,426"


def test_lenet5_by_name():
    res = explain_shapes("lenet5")
    assert res["input_shape"] == [1, 28, 28]
    _check_lenet(res)
    text = render_text(res)
    assert "total params = 156 + 2416 + 30840 + 10164 + 850 = 44,426" in text
    assert "params = (5*5*1 + 1)*6 = 156" in text


def test_lenet5_config_file():
    _check_lenet(explain_shapes(str(CONFIG)))


def test_same_padding_arithmetic_with_stride_two():
    res = explain_layer_list([{"conv": {"out": 4, "kernel": 3, "stride": 2, "padding": "same"}}], (1, 28, 28))
    f = res["layers"][0]["formulas"][0]
    assert f.startswith("same: out = ceil(28/2) = 14, total padding = max((14-1)*2 + 1*(3-1) + 1 - 28, 0) = 1 "
                        "-> 0 top, 1 bottom; ")
    assert f.endswith("floor((28 + 0+1 - 1*(3-1) - 1)/2) + 1 = 14   (H and W)")
    assert res["layers"][0]["output_shape"] == [4, 14, 14]


def test_dilation_and_non_square_inputs_are_written_per_axis():
    res = explain_layer_list([{"conv": {"out": 2, "kernel": 3, "dilation": 2, "padding": 1}}], (1, 20, 30))
    r = res["layers"][0]
    assert r["output_shape"] == [2, 18, 28]
    assert r["formulas"][0] == "H: out = floor((in + 2p - d(k-1) - 1) / s) + 1 = floor((20 + 2*1 - 2*(3-1) - 1)/1) + 1 = 18"
    assert r["formulas"][1].endswith("floor((30 + 2*1 - 2*(3-1) - 1)/1) + 1 = 28")
    assert r["receptive_field"] == 5      # 1 + (3-1)*2*1


def test_residual_layer_list_params_match_the_torch_network(tmp_path):
    from cnnkit.models.spec import build_torch
    from cnnkit.spec import parse_layers

    layers = [{"conv": {"out": 8, "kernel": 3, "stride": 2, "padding": "same"}}, "batchnorm", "relu",
              {"residual": {"layers": [{"conv": {"out": 16, "kernel": 3, "stride": 2, "padding": "same"}}, "relu",
                                       {"conv": {"out": 16, "kernel": 3, "padding": "same"}}], "activation": "relu"}},
              "globalavgpool", {"dense": "num_classes"}]
    cfg = tmp_path / "res.yaml"
    cfg.write_text("data: {name: cifar10}\nmodel:\n  layers: " + __import__("json").dumps(layers) + "\n")
    res = explain_shapes(str(cfg))
    assert res["input_shape"] == [3, 32, 32]         # the dataset's known shape, no data loaded
    net = build_torch(parse_layers(layers), (3, 32, 32), 10)
    assert res["total_params"] == sum(p.numel() for p in net.parameters()) == 4026
    L = _by_name(res)
    assert L["residual1"]["receptive_field"] == 15 and L["residual1"]["stride"] == 4
    assert L["residual1.shortcut"]["params_formula"] == "1*1*8*16 = 128"
    assert L["globalavgpool1"]["receptive_field"] == 15 + 7 * 4
    # a global pool is a window of the whole 8x8 map moved by 8: the text and the field agree on the jump
    assert L["globalavgpool1"]["stride"] == 4 * 8
    assert L["globalavgpool1"]["formulas"][1].endswith("jump = jump_prev*s = 4*8 = 32")


def test_zoo_model_walked_with_hooks_resnet18():
    import torch

    from cnnkit.models.registry import get_model

    res = explain_shapes("resnet18")                 # default input 3x224x224
    convs = [r for r in res["layers"] if r["type"] == "conv"]
    assert len(convs) == 20                          # 17 main-path convs + 3 downsample projections
    assert convs[0]["formulas"][0].startswith(
        "out = floor((in + 2p - d(k-1) - 1) / s) + 1 = floor((224 + 2*3 - 1*(7-1) - 1)/2) + 1 = 112")
    assert convs[0]["params_formula"] == "7*7*3*64 = 9408"
    last_main = [r for r in convs if "downsample" not in r["name"]][-1]
    assert (last_main["receptive_field"], last_main["stride"]) == (435, 32)   # ResNet-18's known field
    torch.manual_seed(0)
    model = get_model("resnet18", num_classes=10, in_chans=3, input_size=224)
    assert res["total_params"] == sum(p.numel() for p in model.parameters())
    assert any("main path" in n for n in res["notes"])
    assert all(r["note"] is None for r in res["layers"])   # every formula matched the observed shape


def test_bad_targets_and_inputs_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="unknown model 'lenet6'"):
        explain_shapes("lenet6")
    with pytest.raises(UserError, match="does not exist"):
        explain_shapes(str(tmp_path / "missing.yaml"))
    with pytest.raises(UserError, match="--input '1,28'"):
        parse_input_shape("1,28")
    assert parse_input_shape("3x32x32") == (3, 32, 32)
