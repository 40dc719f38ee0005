"""The argparse wiring of ``cnnkit explain``: text and JSON output, saved frames and plots,
user errors, and the hand-off to the reference engine's backprop explainer."""

from __future__ import annotations

import json
import sys
import types

import numpy as np
import pytest
from PIL import Image

from cnnkit.errors import UserError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_avgpool_course_text(cli):
    code, out = cli("avgpool", "--example", "course")
    assert code == 0
    assert "step 1/9: window at (0, 0) -> output[0][0]" in out
    assert "(3+3+2+0+0+1+3+1+2)/9 = 1.667" in out
    assert "  1.7 1.7 1.7\n  1.0 1.2 1.8\n  1.1 0.8 1.3" in out
    assert "reproduced to 1 decimal" in out


def test_conv_course_text_says_it_equals_avgpool(cli):
    code, out = cli("conv", "--example", "course")
    assert code == 0
    assert "3*0.111 + 3*0.111 + 2*0.111" in out
    assert "equals the 3x3 average pool" in out
    assert "avgpool output (4 decimals):" in out and "conv output (4 decimals):" in out
    diff = float(out.split("max |conv - avgpool| = ")[1].split()[0])
    assert diff <= 1e-12


def test_window_json_structure(cli):
    code, out = cli("conv", "--input", "1 2 3 4; 5 6 7 8; 9 10 11 12; 13 14 15 16", "--kernel", "1 0; 0 -1",
                    "--stride", "2", "--format", "json")
    assert code == 0
    data = json.loads(out)
    assert {"op", "input", "kernel", "stride", "padding", "steps", "output"} <= set(data)
    assert data["op"] == "conv" and data["stride"] == 2 and data["kernel"] == [[1, 0], [0, -1]]
    assert [s["position"] for s in data["steps"]] == [[0, 0], [0, 2], [2, 0], [2, 2]]
    first = data["steps"][0]
    assert first["window"] == [[1, 2], [5, 6]]
    assert first["expression"] == "1*1 + 2*0 + 5*0 + 6*(-1) = -5"
    assert first["value"] == -5
    assert data["output"] == [[-5, -5], [-5, -5]]


def test_maxpool_same_json_has_null_padding_and_strict_json(cli):
    code, out = cli("maxpool", "--input", "1 2 3; 4 5 6; 7 8 9", "--size", "2", "--stride", "2",
                    "--padding", "same", "--format", "json")
    data = json.loads(out)
    assert data["pads"] == {"top": 0, "bottom": 1, "left": 0, "right": 1}
    assert data["padded_input"][3] == [None, None, None, None]     # -inf padding -> null
    assert data["output"] == [[5, 6], [8, 9]]
    assert "Infinity" not in out


def test_save_png_and_gif_frames(cli, tmp_path):
    png = tmp_path / "frames.png"
    code, out = cli("avgpool", "--example", "course", "--save", str(png))
    assert code == 0 and "saved 9 frames" in out
    assert png.read_bytes()[:8] == PNG_MAGIC
    with Image.open(png) as im:
        assert im.format == "PNG" and im.width > 300 and im.height > 200

    gif = tmp_path / "frames.gif"
    cli("maxpool", "--input", "1 2 3 4 5; 6 7 8 9 10; 1 1 1 1 1; 0 0 2 0 0", "--size", "2",
        "--stride", "2", "--padding", "same", "--save", str(gif))
    with Image.open(gif) as im:
        assert im.format == "GIF"
        assert im.n_frames == 6          # 2x3 output: one frame per window position


def test_save_with_other_extension_is_a_user_error(cli, tmp_path):
    with pytest.raises(UserError, match=r"--save .*frames\.jpg.*'\.jpg'.*\.png or \.gif"):
        cli("avgpool", "--example", "course", "--save", str(tmp_path / "frames.jpg"))
    assert not (tmp_path / "frames.jpg").exists()


def test_window_user_errors(cli):
    with pytest.raises(UserError, match="--kernel"):
        cli("conv", "--input", "1 2; 3 4")
    with pytest.raises(UserError, match="'abc'"):
        cli("avgpool", "--input", "1 2; abc 4")
    with pytest.raises(UserError, match="drop --input"):
        cli("avgpool", "--example", "course", "--input", "1 2; 3 4")
    with pytest.raises(UserError, match="--example 'lecture'"):
        cli("avgpool", "--example", "lecture")
    with pytest.raises(UserError, match="--input"):
        cli("maxpool")


def test_activation_course_json_and_plot(cli, tmp_path):
    code, out = cli("activation", "relu", "--example", "course", "--format", "json")
    data = json.loads(out)
    assert data["input"] == [[-249, -91, -37], [250, -134, 101], [27, 61, -153]]
    assert data["output"] == [[0, 0, 0], [250, 0, 101], [27, 61, 0]]
    assert data["derivative"] == [[0, 0, 0], [1, 0, 1], [1, 1, 0]]
    code, out = cli("activation", "relu", "--example", "course")
    assert "reproduced exactly" in out and "relu(x) = max(0, x)" in out
    plot = tmp_path / "elu.png"
    code, out = cli("activation", "elu", "--alpha", "0.5", "--plot", str(plot))
    assert code == 0 and plot.read_bytes()[:8] == PNG_MAGIC
    plot = tmp_path / "maxout.png"
    cli("activation", "maxout", "--plot", str(plot))
    assert plot.read_bytes()[:8] == PNG_MAGIC
    with pytest.raises(UserError, match="unknown activation 'softplus'"):
        cli("activation", "softplus")


def test_shapes_text_and_json(cli):
    code, out = cli("shapes", "lenet5")
    assert code == 0 and "floor((28 + 0 - 1*(5-1) - 1)/1) + 1 = 24" in out and "44,426" in out
    code, out = cli("shapes", "lenet5", "--format", "json")
    data = json.loads(out)
    assert data["total_params"] == 44426
    conv1 = data["layers"][0]
    assert {"name", "type", "input_shape", "output_shape", "formulas", "receptive_field", "stride",
            "params"} <= set(conv1)
    assert (conv1["input_shape"], conv1["output_shape"], conv1["params"]) == ([1, 28, 28], [6, 24, 24], 156)
    with pytest.raises(UserError, match="--input 'a,b,c'"):
        cli("shapes", "lenet5", "--input", "a,b,c")


def test_optimizers_json_and_plot(cli, tmp_path):
    plot = tmp_path / "opt.png"
    code, out = cli("optimizers", "--steps", "5", "--show", "2", "--format", "json", "--plot", str(plot))
    data = json.loads(out)
    assert [r["name"] for r in data["rules"]] == ["sgd", "momentum", "adagrad", "adadelta", "rmsprop", "adam"]
    assert all(len(r["trajectory"]) == 6 and len(r["first_steps"]) == 2 for r in data["rules"])
    assert plot.read_bytes()[:8] == PNG_MAGIC
    code, out = cli("optimizers", "--function", "quadratic", "--steps", "3")
    assert "Δθ_t = -α g_t" in out and "t=1: θ = (-4, 2), g = (-4, 20), Δθ = (0.6, -3)" in out
    with pytest.raises(UserError, match="--plot .*'\\.svg'"):
        cli("optimizers", "--plot", str(tmp_path / "opt.svg"))


def test_backprop_is_wired_to_the_reference_explainer(cli, monkeypatch, tmp_path):
    calls = {}

    def explain_backprop(cfg, batch_size=8):
        calls["cfg"], calls["batch_size"] = cfg, batch_size
        return {"layers": [{"name": "conv1", "grad_norm": np.float64(0.5)}], "loss": 2.3}

    def render_backprop_text(result):
        return f"backprop of {len(result['layers'])} layers, loss {result['loss']}"

    fake = types.ModuleType("cnnkit.explain.backprop")
    fake.explain_backprop, fake.render_backprop_text = explain_backprop, render_backprop_text
    monkeypatch.setitem(sys.modules, "cnnkit.explain.backprop", fake)
    import cnnkit.reference as reference_pkg
    monkeypatch.setattr(reference_pkg, "backprop", fake, raising=False)

    cfg = tmp_path / "c.yaml"
    cfg.write_text("model: {name: lenet5}\ntrain: {epochs: 1}\n")
    code, out = cli("backprop", str(cfg), "optim.lr=0.5", "--batch-size", "3")
    assert code == 0 and out.strip() == "backprop of 1 layers, loss 2.3"
    assert calls["batch_size"] == 3 and calls["cfg"].optim.lr == 0.5 and calls["cfg"].model.name == "lenet5"
    code, out = cli("backprop", str(cfg), "--format", "json")
    assert json.loads(out) == {"layers": [{"name": "conv1", "grad_norm": 0.5}], "loss": 2.3}
    assert calls["batch_size"] == 8
    with pytest.raises(UserError, match="does not exist"):
        cli("backprop", str(tmp_path / "nope.yaml"))


def test_help_has_examples_and_a_subcommand_is_required(capsys, make_parser):
    p = make_parser()
    with pytest.raises(SystemExit) as e:
        p.parse_args(["explain", "conv", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "examples:" in out and "cnnkit explain conv --example course" in out
    with pytest.raises(SystemExit) as e:
        p.parse_args(["explain"])
    assert e.value.code == 2
