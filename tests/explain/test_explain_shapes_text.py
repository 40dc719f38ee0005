"""``cnnkit explain shapes`` on text layer lists (Kim, 2014): a config with ``model.input: [V, L]``,
an embedding, conv1d / 1-D pooling and parallel branches.

Oracles: the torch network's real shapes (forward hooks) and parameter count; the length formula
worked out by hand; the receptive field as the span of input positions that get a non-zero
gradient from one interior output unit (torch autograd through one-hot inputs, positive weights).
"""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
import yaml

from cnnkit.errors import SpecError, UserError
from cnnkit.explain.shapes import explain_layer_list, parse_input_shape, render_text
from cnnkit.models.spec import build_torch
from cnnkit.spec import parse_layers

KIM = [{"embedding": 128},
       {"parallel": [[{"conv1d": {"out": 100, "kernel": k}}, "relu", "globalmaxpool1d"] for k in (3, 4, 5)]},
       {"dropout": 0.5}, {"dense": "num_classes"}]


def _config(tmp_path, layers, shape):
    path = tmp_path / "text.yaml"
    path.write_text(yaml.safe_dump({"model": {"input": list(shape), "layers": layers}}))
    return str(path)


def test_kim_config_prints_the_table_with_shapes_params_and_branches(cli, tmp_path):
    cfg = _config(tmp_path, KIM, (5000, 50))
    net = build_torch(parse_layers(KIM), (5000, 50), 4)
    code, out = cli("shapes", cfg, "--num-classes", "4", "--format", "json")
    assert code == 0
    data = json.loads(out)
    assert data["input_shape"] == [5000, 50]
    rows = {r["name"]: r for r in data["layers"]}
    assert [r["name"] for r in data["layers"] if r["depth"] == 0] == ["embedding1", "parallel1", "dropout1", "dense1"]
    assert [r["name"] for r in data["layers"] if r["depth"] == 1] == [
        f"{t}{i}" for i in (1, 2, 3) for t in ("conv1d", "relu", "globalmaxpool1d")]
    # the shapes the torch network really gives
    real = {}
    hooks = [m.register_forward_hook(lambda m, i, o, n=n: real.__setitem__(n.split(".")[-1], tuple(o.shape[1:])))
             for n, m in net.named_modules() if n and not list(m.children())]
    net.eval()(torch.randint(0, 5000, (2, 50)))
    for h in hooks:
        h.remove()
    for name, shape in real.items():
        assert tuple(rows[name]["output_shape"]) == shape, name
    assert tuple(rows["parallel1"]["output_shape"]) == (300,)
    assert data["total_params"] == sum(p.numel() for p in net.parameters()) == 795104
    assert rows["embedding1"]["params_formula"] == "5000*128 = 640000"
    assert rows["conv1d2"]["params_formula"] == "(4*128 + 1)*100 = 51300"
    assert rows["parallel1"]["params"] == 38500 + 51300 + 64100
    # max over time sees the whole sentence: rf = 1 + (k - 1) + (50 - k + 1 - 1) = 50 tokens
    assert [rows[f"globalmaxpool1d{i}"]["receptive_field"] for i in (1, 2, 3)] == [50, 50, 50]
    assert rows["conv1d3"]["receptive_field"] == 5

    code, text = cli("shapes", cfg, "--num-classes", "4")
    assert code == 0
    assert "embedding1: embedding(dim=128, padding_idx=0)  5000x50 -> 128x50" in text
    assert "parallel1: parallel(3 branches)  128x50 -> 300" in text
    assert "out channels = 100 + 100 + 100 = 300" in text
    assert "floor((50 + 0 - 1*(4-1) - 1)/1) + 1 = 47" in text
    assert "\n  conv1d1: conv1d(out=100, kernel=3, stride=1, padding=valid)  128x50 -> 100x48" in text
    assert text.splitlines()[-1] == "total params = 640000 + 153900 + 1204 = 795,104"


def test_input_option_takes_v_l():
    assert parse_input_shape("20000,400") == (20000, 400)
    assert parse_input_shape("1x28x28") == (1, 28, 28)
    with pytest.raises(UserError, match="V,L"):
        parse_input_shape("1,2,3,4")


def test_same_padding_and_the_receptive_field_against_autograd():
    layers = [{"embedding": {"dim": 2, "padding_idx": None}},
              {"conv1d": {"out": 3, "kernel": 3, "stride": 2, "padding": "same"}},
              {"avgpool1d": 2}, {"conv1d": {"out": 2, "kernel": 2, "dilation": 2}}]
    res = explain_layer_list(layers, (7, 40), 2)
    rows = {r["name"]: r for r in res["layers"]}
    # same, stride 2: ceil(40/2) = 20, total padding max((20-1)*2 + 3 - 40, 0) = 1 -> 0 left, 1 right
    assert rows["conv1d1"]["output_shape"] == [3, 20]
    assert "same: out = ceil(40/2) = 20, total padding = max((20-1)*2 + 1*(3-1) + 1 - 40, 0) = 1 -> 0 left, " \
           "1 right" in rows["conv1d1"]["formulas"][0]
    assert rows["avgpool1d1"]["output_shape"] == [3, 10]
    assert rows["conv1d2"]["output_shape"] == [2, 8]
    # rf: 3 (jump 2) -> 3 + 1*2 = 5 (jump 4) -> 5 + 1*2*4 = 13 (jump 4)
    assert [(rows[n]["receptive_field"], rows[n]["stride"]) for n in ("conv1d1", "avgpool1d1", "conv1d2")] == [
        (3, 2), (5, 4), (13, 4)]
    # autograd: the positions one interior output unit depends on
    net = build_torch(parse_layers(layers), (7, 40))
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.rand_like(p) + 0.1)
    x = F.one_hot(torch.randint(0, 7, (1, 40)), 7).transpose(1, 2).float().requires_grad_(True)
    net(x)[0, 0, 4].backward()
    touched = x.grad[0].abs().sum(0).nonzero().flatten()
    assert int(touched.max() - touched.min()) + 1 == 13


def test_text_list_errors_name_the_layer(tmp_path):
    with pytest.raises(SpecError, match=r"first layer must be embedding.*layer 0 \(conv1d\)"):
        explain_layer_list([{"conv1d": 4}, "globalmaxpool1d"], (100, 20), 2)
    with pytest.raises(SpecError, match=r"layer 1 \(conv\).*use conv1d"):
        explain_layer_list([{"embedding": 8}, {"conv": 4}], (100, 20), 2)
    text = render_text(explain_layer_list([{"embedding": 8}, "flatten", {"dense": 2}], (100, 20), 2))
    assert "flatten1: flatten  8x20 -> 160" in text and "out = 8*20 = 160" in text
