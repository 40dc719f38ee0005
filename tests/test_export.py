"""``cnnkit export``: ONNX checked against torch in onnxruntime (batch 1 and 7, dynamic batch),
metadata in each format, ONNX prediction agreeing with run-folder prediction, and user errors."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from PIL import Image

from cnnkit.cli import main
from cnnkit.config import load_config
from cnnkit.errors import UserError
from cnnkit.tools.export import export, load_safetensors, load_torchscript, onnx_metadata, predict_onnx
from cnnkit.inference import load_run_model, predict_files
from cnnkit.api import train

# torch.jit.* and the TorchScript-based ONNX exporter warn that they are deprecated; the tests call them on purpose.
pytestmark = [pytest.mark.filterwarnings("ignore::FutureWarning"), pytest.mark.filterwarnings("ignore::DeprecationWarning")]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A LeNet-5 trained briefly on part of mnist5k (accuracy does not matter here)."""
    root = tmp_path_factory.mktemp("export-runs")
    cfg = load_config(None, ["train.epochs=1", "data.subset=1500", "train.device=cpu",
                             f"train.runs_dir={root}", "train.name=lenet"])
    return train(cfg, quiet=True).run_dir


@pytest.fixture(scope="module")
def val_batch(run):
    from cnnkit.data import load_data
    from cnnkit.data.loaders import make_loader

    model, info = load_run_model(run)
    bundle = load_data(info["config"].data)
    x, _ = next(iter(make_loader(bundle.val, batch_size=16, mean=info["mean"], std=info["std"], shuffle=False,
                                 seed=0, device=torch.device("cpu"), augment=None)))
    return model, info, x, bundle


@pytest.fixture(scope="module")
def onnx_path(run, tmp_path_factory):
    out = tmp_path_factory.mktemp("onnx") / "lenet.onnx"
    assert main(["export", str(run), "--format", "onnx", "--out", str(out)]) == 0
    return out


def test_onnx_matches_torch_at_batch_1_and_7(onnx_path, val_batch, capsys):
    model, _, x, _ = val_batch
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    assert sess.get_inputs()[0].name == "input"
    assert not isinstance(sess.get_inputs()[0].shape[0], int)  # the batch dimension is symbolic
    for n in (1, 7):
        got = sess.run(None, {"input": x[:n].numpy()})[0]
        with torch.no_grad():
            ref = model(x[:n]).numpy()
        assert got.shape == (n, 10)
        assert np.abs(got - ref).max() < 1e-4


def test_onnx_export_prints_its_check(run, tmp_path, capsys):
    assert main(["export", str(run), "--out", str(tmp_path)]) == 0  # a folder: model.onnx inside
    out = capsys.readouterr().out
    assert (tmp_path / "model.onnx").is_file()
    diff = float(out.split("max |diff| ")[1].split()[0])
    assert diff < 1e-4
    assert "validation images" in out and "batch 7" in out


def test_onnx_metadata(onnx_path, val_batch):
    _, info, _, _ = val_batch
    props = {p.key: p.value for p in onnx.load(str(onnx_path)).metadata_props}
    assert json.loads(props["classes"]) == [str(c) for c in info["classes"]]
    assert json.loads(props["input_shape"]) == [1, 28, 28]
    assert json.loads(props["mean"]) == pytest.approx(list(info["mean"]))
    assert json.loads(props["std"]) == pytest.approx(list(info["std"]))
    assert props["cnnkit_version"] == __import__("cnnkit").__version__
    assert json.loads(props["config"])["model"]["layers"]
    meta = onnx_metadata(onnx_path)
    assert meta["input_shape"] == [1, 28, 28] and len(meta["classes"]) == 10


def test_onnx_predict_agrees_with_run_folder_predict(run, onnx_path, val_batch, tmp_path, capsys):
    _, info, _, bundle = val_batch
    files = []
    for i in range(6):
        f = tmp_path / f"digit{i}.png"
        Image.fromarray(bundle.val.images[i, 0].numpy()).save(f)
        files.append(str(f))
    model, info = load_run_model(run)
    ref = predict_files(model, info, files, top_k=3)
    got = predict_onnx(onnx_path, files, top_k=3)
    assert [r["file"] for r in got] == files
    for a, b in zip(ref, got):
        assert [t["label"] for t in a["top"]] == [t["label"] for t in b["top"]]
        assert [t["class"] for t in a["top"]] == [t["class"] for t in b["top"]]
        assert np.abs(np.array(a["probabilities"]) - np.array(b["probabilities"])).max() < 1e-4
    # And through the command line: `cnnkit predict model.onnx ...` gives the same JSON shape.
    capsys.readouterr()
    assert main(["predict", str(onnx_path), *files[:2], "--format", "json", "--top-k", "2"]) == 0
    cli = json.loads(capsys.readouterr().out)
    assert [r["top"][0]["label"] for r in cli] == [r["top"][0]["label"] for r in ref[:2]]
    assert set(cli[0]) == {"file", "top", "probabilities"} and len(cli[0]["top"]) == 2


def test_torchscript_roundtrip(run, val_batch, tmp_path):
    model, info, x, _ = val_batch
    path = tmp_path / "m.torchscript.pt"
    assert main(["export", str(run), "--format", "torchscript", "--out", str(path)]) == 0
    files = {"cnnkit.json": ""}
    loaded = torch.jit.load(str(path), _extra_files=files)
    meta = json.loads(files["cnnkit.json"])
    assert json.loads(meta["classes"]) == [str(c) for c in info["classes"]]
    assert json.loads(meta["input_shape"]) == [1, 28, 28]
    with torch.no_grad():
        for n in (1, 7):
            assert torch.allclose(loaded(x[:n]), model(x[:n]), atol=1e-6)
    _, meta2 = load_torchscript(path)
    assert meta2["mean"] == pytest.approx(list(info["mean"]))


def test_safetensors_roundtrip(run, val_batch, tmp_path):
    from safetensors import safe_open

    model, info, x, _ = val_batch
    path = tmp_path / "m.safetensors"
    r = export(run, "safetensors", path)
    assert r.checks["tensors_equal"] and r.checks["max_abs_diff_batch_7"] == 0.0
    with safe_open(str(path), framework="pt") as f:
        header = f.metadata()
        for k, v in model.state_dict().items():
            assert torch.equal(f.get_tensor(k), v)
    assert {"classes", "input_shape", "mean", "std", "cnnkit_version", "config"} <= set(header)
    rebuilt, meta = load_safetensors(path)
    with torch.no_grad():
        assert torch.equal(rebuilt(x[:7]), model(x[:7]))
    assert meta["classes"] == [str(c) for c in info["classes"]]


def test_export_user_errors(run, tmp_path, capsys):
    assert main(["export", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["export", str(run), "--opset", "3"]) == 2
    assert main(["predict", str(tmp_path / "missing.onnx"), "x.png"]) == 2
    # An ONNX file that cnnkit did not write has no metadata to predict with.
    bare = tmp_path / "bare.onnx"
    torch.onnx.export(torch.nn.Linear(3, 2), (torch.randn(1, 3),), str(bare), dynamo=False)
    with pytest.raises(UserError, match="lacks cnnkit metadata"):
        predict_onnx(bare, [], top_k=1)
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a model")
    with pytest.raises(UserError, match="cannot load ONNX model"):
        onnx_metadata(garbage)
