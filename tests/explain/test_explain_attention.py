"""``cnnkit explain attention``: each attention block's channel weights and spatial map on one image.

A tiny run trained through the CLI on the bundled 8x8 digits, its layer list with ``se``, ``cbam`` and
``attention_pool``. Oracles: the gates recomputed from the trained weights and the blocks' inputs (caught
with forward hooks, the image normalised by hand), not from what the blocks recorded; the JSON parsed, the
PNG opened with PIL; a run without attention and bad arguments exit 2 with one error line.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from cnnkit import cli
from cnnkit.inference import load_run_model

LAYERS = [{"conv": {"out": 6, "kernel": 3, "padding": "same"}}, "relu", {"se": 2},
          {"cbam": {"reduction": 2, "kernel": 3}}, "attention_pool", {"dense": 10}]


def _train(root, layers) -> str:
    cfg = {"data": {"name": "digits", "batch_size": 64, "per_class": 20},
           "model": {"layers": layers},
           "train": {"epochs": 1, "device": "cpu", "seed": 0, "runs_dir": str(root / "runs")}}
    path = root / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert cli.main(["train", str(path), "--quiet"]) == 0
    (run,) = (root / "runs").iterdir()
    return str(run)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return _train(tmp_path_factory.mktemp("attention"), LAYERS)


@pytest.fixture(scope="module")
def plain_run(tmp_path_factory):
    return _train(tmp_path_factory.mktemp("plain"), ["flatten", {"dense": 10}])


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    from sklearn.datasets import load_digits

    pixels = np.rint(load_digits().images[7] * (255 / 16)).astype(np.uint8)     # a 7, 8x8, as the run's input
    path = tmp_path_factory.mktemp("img") / "seven.png"
    Image.fromarray(pixels).save(path)
    return str(path), pixels


def main_rc(argv, capsys):
    try:
        rc = cli.main(argv)
    except SystemExit as e:
        rc = e.code if isinstance(e.code, int) else 1
    out, err = capsys.readouterr()
    return rc, out, err


def _oracle(run, pixels):
    """The gates from the trained weights and each block's input (hooks), the image normalised by hand."""
    model, info = load_run_model(run)
    inputs = {}
    handles = [getattr(model, name).register_forward_hook(lambda m, i, o, name=name: inputs.__setitem__(name, i[0]))
               for name in ("se1", "cbam1", "attention_pool1")]
    mean, std = np.asarray(info["mean"]), np.asarray(info["std"])
    x = ((pixels.astype(np.float32) / 255.0 - mean[0]) / std[0])[None, None].astype(np.float32)
    with torch.no_grad():
        probs = torch.softmax(model(torch.from_numpy(x)), dim=1)[0].numpy()
    for h in handles:
        h.remove()
    sd = {k: v.double().numpy() for k, v in model.state_dict().items()}

    def sig(v):
        return 1 / (1 + np.exp(-v))

    def mlp(prefix, v):
        return sd[f"{prefix}.fc2.weight"] @ np.maximum(sd[f"{prefix}.fc1.weight"] @ v + sd[f"{prefix}.fc1.bias"], 0) \
            + sd[f"{prefix}.fc2.bias"]

    a = inputs["se1"][0].double().numpy()                                       # (6, 8, 8)
    se = sig(mlp("se1", a.mean(axis=(1, 2))))
    c = inputs["cbam1"][0].double().numpy()
    mc = sig(mlp("cbam1", c.mean(axis=(1, 2))) + mlp("cbam1", c.max(axis=(1, 2))))
    p = inputs["attention_pool1"][0].double().numpy()
    s = np.einsum("c,chw->hw", sd["attention_pool1.score.weight"][0, :, 0, 0], p)
    pool = np.exp(s - s.max()) / np.exp(s - s.max()).sum()
    return {"se": se, "cbam": mc, "pool": pool, "probs": probs, "classes": info["classes"]}


def test_json_gives_each_blocks_weights_as_recomputed(run, image, capsys):
    path, pixels = image
    rc, out, err = main_rc(["explain", "attention", run, path, "--format", "json", "--top", "3"], capsys)
    assert rc == 0, err
    res = json.loads(out)
    want = _oracle(run, pixels)
    blocks = {b["name"]: b for b in res["blocks"]}
    assert list(blocks) == ["se1", "cbam1", "attention_pool1"]
    assert [blocks[n]["type"] for n in blocks] == ["se", "cbam", "attention_pool"]

    se = blocks["se1"]["channel"]
    np.testing.assert_allclose(se["weights"], want["se"], rtol=1e-5)
    assert se["max"] == pytest.approx(want["se"].max(), rel=1e-5)
    assert se["min"] == pytest.approx(want["se"].min(), rel=1e-5)
    assert [t["channel"] for t in se["top"]] == list(np.argsort(-want["se"], kind="stable")[:3])
    np.testing.assert_allclose(blocks["cbam1"]["channel"]["weights"], want["cbam"], rtol=1e-5)
    spatial = blocks["cbam1"]["spatial"]
    assert spatial["shape"] == [8, 8] and 0 < spatial["min"] <= spatial["max"] < 1
    pool = blocks["attention_pool1"]["spatial"]
    np.testing.assert_allclose(pool["map"], want["pool"], rtol=1e-5, atol=1e-9)
    assert pool["sum"] == pytest.approx(1.0, abs=1e-5)
    assert "channel" not in blocks["attention_pool1"]
    k = int(np.argmax(want["probs"]))
    assert res["prediction"]["class"] == str(want["classes"][k])
    assert res["prediction"]["probability"] == pytest.approx(float(want["probs"][k]), rel=1e-5)


def test_text_and_png(run, image, tmp_path, capsys):
    path, _ = image
    png = tmp_path / "attention.png"
    rc, out, err = main_rc(["explain", "attention", run, path, "--save", str(png)], capsys)
    assert rc == 0, err
    for needle in ("se1 (se, 6 channels)", "cbam1 (cbam, 6 channels)", "attention_pool1 (attention_pool",
                   "top channels: #", "spatial map 8x8", "predicted ", str(png)):
        assert needle in out, needle
    with Image.open(png) as im:
        assert im.format == "PNG" and im.size[0] > 300 and im.size[1] > 200
        colours = np.asarray(im.convert("RGB"))
    assert len(np.unique(colours.reshape(-1, 3), axis=0)) > 50          # drawn, not blank
    # the panels: the image, cbam1's map, attention_pool1's map, se1's and cbam1's channel weights
    rc, out, _ = main_rc(["explain", "attention", run, path, "--save", str(png), "--format", "json"], capsys)
    assert json.loads(out)["saved"] == {"path": str(png), "panels": 5, "total_panels": 5}


def test_recording_is_off_again_after_the_explanation(run, image):
    from cnnkit.explain.attention import explain_attention
    from cnnkit.nn.attention import attention_blocks

    model, info = load_run_model(run)
    explain_attention(model, info, image[0])
    assert all(not m.record and m.last_attention == {} for _, m in attention_blocks(model))
    assert not model.training


def test_user_errors_exit_2(run, plain_run, image, tmp_path, capsys):
    path, _ = image
    cases = [
        ([plain_run, path], "no attention block"),
        ([run, str(tmp_path / "missing.png")], "does not exist"),
        ([run, path, "--top", "-1"], "--top"),
        ([run, path, "--save", str(tmp_path / "out.gif")], ".png"),
        ([run, path, "--save", str(tmp_path / "nowhere" / "out.png")], "does not exist"),
    ]
    for argv, needle in cases:
        rc, _, err = main_rc(["explain", "attention", *argv], capsys)
        assert rc == 2, (argv, err)
        errors = [line for line in err.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and needle in errors[0] and "Traceback" not in err, (argv, err)
