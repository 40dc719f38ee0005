"""``cnnkit export`` of text runs (``task: text``): int64 token ids in, a dynamic length axis for a model
that masks its padding (kim_cnn) and a static one otherwise (a layer list with a dense layer on the
flattened sequence), the tokeniser in the file's metadata, and prediction from the ONNX file alone
agreeing with the run folder's torch prediction, through the API and ``cnnkit predict --text``.

The oracles are the torch model itself (run on ids built by hand from the run's own ``tokenizer.json``)
and onnxruntime called directly, not the export module's helpers."""

from __future__ import annotations

import json
import random

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from cnnkit.api import train
from cnnkit.cli import main
from cnnkit.config import validate
from cnnkit.errors import UserError
from cnnkit.inference import load_run_model
from cnnkit.tools.export import (ExportCheckError, _check_inputs, export, export_onnx, load_safetensors,
                                 load_torchscript, onnx_metadata, onnx_task, predict_onnx, predict_onnx_texts)

pytestmark = [pytest.mark.filterwarnings("ignore::FutureWarning"),
              pytest.mark.filterwarnings("ignore::DeprecationWarning")]

POSITIVE = ["good", "great", "lovely", "superb", "fine"]
NEGATIVE = ["bad", "awful", "dull", "poor", "boring"]
FILLER = ["the", "film", "was", "a", "plot", "and", "very", "story", "this", "really"]

# Texts of different lengths: short, one longer than any training text (cut to max_length), one of only
# unknown words, one with nothing a word tokeniser keeps, and one with upper case and punctuation.
TEXTS = ["good", "the film was great", "awful awful plot " * 12, "zzz qqq xyzzy", "", "A REALLY Bad, dull story!"]


def write_tsv(path, n: int = 120, seed: int = 0):
    rng = random.Random(seed)
    lines = []
    for i in range(n):
        label = i % 2
        words = [rng.choice(FILLER) for _ in range(rng.randint(2, 8))]
        words.insert(rng.randint(0, len(words)), rng.choice(POSITIVE if label else NEGATIVE))
        lines.append(f"{label}\t{' '.join(words)}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def text_config(tsv, runs, model: dict, **data) -> dict:
    return {"task": "text",
            "data": {"name": "text", "path": str(tsv), "batch_size": 32, "val_fraction": 0.2, **data},
            "model": model,
            "optim": {"name": "torch.adam", "lr": 0.01},
            "train": {"epochs": 1, "seed": 0, "device": "cpu", "runs_dir": str(runs)}}


@pytest.fixture(scope="module")
def tsv(tmp_path_factory):
    return write_tsv(tmp_path_factory.mktemp("text-data") / "reviews.tsv")


@pytest.fixture(scope="module")
def kim_run(tsv, tmp_path_factory):
    runs = tmp_path_factory.mktemp("text-runs")
    model = {"name": "kim_cnn", "options": {"embed_dim": 16, "filters": 8, "kernel_sizes": [2, 3]}}
    return train(validate(text_config(tsv, runs, model)), quiet=True).run_dir


@pytest.fixture(scope="module")
def kim_onnx(kim_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("text-onnx") / "kim.onnx"
    return export(kim_run, "onnx", out)


@pytest.fixture(scope="module")
def fixed_run(tsv, tmp_path_factory):
    """A layer list whose dense layer sees the whole flattened sequence: it takes exactly L tokens."""
    runs = tmp_path_factory.mktemp("text-runs-fixed")
    model = {"layers": [{"embedding": 8}, {"conv1d": {"out": 4, "kernel": 3}}, "relu", "flatten", {"dense": 2}]}
    return train(validate(text_config(tsv, runs, model, max_length=12)), quiet=True).run_dir


def hand_ids(run_dir, texts: list[str], length: int | None) -> torch.Tensor:
    """Token ids built without cnnkit's encoder: lower-cased whitespace words (the test texts hold no
    punctuation) looked up in the run's saved vocabulary, 1 for an unknown word, cut to ``length`` (if
    set) and padded with 0 to the longest text."""
    vocab = json.loads((run_dir / "tokenizer.json").read_text(encoding="utf-8"))["vocab"]
    index = {tok: i for i, tok in enumerate(vocab)}
    rows = [[index.get(w, 1) for w in t.lower().split()][:length] or [1] for t in texts]
    width = length if length is not None else max(len(r) for r in rows)
    out = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        out[i, :len(r)] = torch.tensor(r)
    return out


def torch_probs(model, ids: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return torch.softmax(model(ids), dim=1).numpy()


# --------------------------------------------------------------------------- a variable-length model


def test_kim_export_checks_and_dynamic_batch_and_length(kim_run, kim_onnx):
    c = kim_onnx.checks
    assert c["ok"] and c["max_abs_diff"] <= 1e-4 and c["length"] == "dynamic"
    assert c["inputs"].endswith("validation texts")
    # batches of another length than the traced one were checked too
    assert [k for k in c if k.startswith("max_abs_diff_length_")]
    sess = ort.InferenceSession(str(kim_onnx.path), providers=["CPUExecutionProvider"])
    (inp,) = sess.get_inputs()
    assert inp.name == "input" and inp.type == "tensor(int64)"
    assert all(isinstance(d, str) for d in inp.shape)  # batch and length are both symbolic
    assert [o.name for o in sess.get_outputs()] == ["logits"]
    # onnxruntime itself on lengths the trace never saw, against torch on the same ids
    model, info = load_run_model(kim_run)
    vocab_size = info["input_shape"][0]
    g = torch.Generator().manual_seed(1)
    for n, length in ((1, 1), (3, 2), (5, 31)):
        ids = torch.randint(2, vocab_size, (n, length), generator=g)
        ids[-1, length // 2 + 1:] = 0  # one row padded
        got = sess.run(["logits"], {"input": ids.numpy()})[0]
        with torch.no_grad():
            ref = model(ids).numpy()
        assert got.shape == (n, 2) and np.abs(got - ref).max() <= 1e-4


def test_kim_metadata_round_trips_the_tokenizer(kim_run, kim_onnx):
    props = {p.key: p.value for p in onnx.load(str(kim_onnx.path)).metadata_props}
    saved = json.loads((kim_run / "tokenizer.json").read_text(encoding="utf-8"))
    assert json.loads(props["tokenizer"]) == saved
    run_meta = json.loads((kim_run / "meta.json").read_text())
    assert props["task"] == "text"
    assert int(props["max_length"]) == run_meta["input_shape"][1] == run_meta["max_length"]
    assert json.loads(props["variable_length"]) is True
    assert json.loads(props["mean"]) == [0.0] and json.loads(props["std"]) == [1.0]
    assert json.loads(props["input_shape"]) == run_meta["input_shape"]
    meta = onnx_metadata(kim_onnx.path)
    assert meta["tokenizer"] == saved and meta["max_length"] == run_meta["max_length"]
    assert meta["variable_length"] is True and meta["classes"] == ["0", "1"]
    assert onnx_task(kim_onnx.path) == "text"


def test_kim_onnx_predictions_equal_torch(kim_run, kim_onnx):
    model, info = load_run_model(kim_run)
    task = info["task"]
    ref = task.predict_texts(model, TEXTS, top_k=2)
    got = predict_onnx_texts(kim_onnx.path, TEXTS, top_k=2)
    assert len(got) == len(TEXTS)
    for r, g, text in zip(ref, got, TEXTS):
        assert list(g) == ["text", "top", "probabilities"] and g["text"] == text
        assert np.abs(np.array(g["probabilities"]) - np.array(r["probabilities"])).max() <= 1e-5
        assert [t["label"] for t in g["top"]] == [t["label"] for t in r["top"]]
        assert [t["class"] for t in g["top"]] == [t["class"] for t in r["top"]]
        assert len(g["top"]) == 2 and set(g["top"][0]) == {"label", "class", "probability"}
    # an independent oracle: ids made by hand from the saved vocabulary, run by the torch model
    plain = ["good", "the film was great", "awful awful plot " * 12, "zzz qqq xyzzy"]
    probs = torch_probs(model, hand_ids(kim_run, plain, task.max_length))
    assert np.abs(np.array([g["probabilities"] for g in got[:4]]) - probs).max() <= 1e-5
    # the long text was cut to max_length, the unknown words are one id: both still classified
    assert hand_ids(kim_run, [plain[2]], None).shape[1] > task.max_length
    assert predict_onnx_texts(kim_onnx.path, [], top_k=2) == []


def test_cli_predict_onnx_text_json(kim_run, kim_onnx, tmp_path, capsys):
    model, info = load_run_model(kim_run)
    ref = info["task"].predict_texts(model, ["a great film", "awful"], top_k=1)
    capsys.readouterr()
    assert main(["predict", str(kim_onnx.path), "--text", "a great film", "--text", "awful",
                 "--format", "json", "--top-k", "1"]) == 0
    cli = json.loads(capsys.readouterr().out)
    assert [set(r) for r in cli] == [{"text", "top", "probabilities"}] * 2
    assert [r["text"] for r in cli] == ["a great film", "awful"]
    for a, b in zip(cli, ref):
        assert len(a["top"]) == 1 and a["top"][0]["label"] == b["top"][0]["label"]
        assert np.abs(np.array(a["probabilities"]) - np.array(b["probabilities"])).max() <= 1e-5
    # a .txt file of one text per line goes the same way
    f = tmp_path / "reviews.txt"
    f.write_text("a great film\nawful\n", encoding="utf-8")
    assert main(["predict", str(kim_onnx.path), str(f), "--format", "json", "--top-k", "1"]) == 0
    assert json.loads(capsys.readouterr().out) == cli


def test_image_and_text_predictors_refuse_each_other(kim_onnx, tmp_path):
    with pytest.raises(UserError, match="--text"):
        predict_onnx(kim_onnx.path, ["digit.png"], top_k=1)
    image = tmp_path / "image.onnx"
    torch.onnx.export(torch.nn.Linear(3, 2), (torch.randn(1, 3),), str(image), dynamo=False,
                      input_names=["input"], output_names=["logits"])
    assert onnx_task(image) == "classification"  # no cnnkit metadata at all
    proto = onnx.load(str(image))
    for k, v in {"classes": '["a", "b"]', "input_shape": "[3]", "mean": "[0.0]", "std": "[1.0]",
                 "cnnkit_version": "0", "task": "classification"}.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v
    onnx.save(proto, str(image))
    with pytest.raises(UserError, match="not a text classifier"):
        predict_onnx_texts(image, ["good"], top_k=1)
    with pytest.raises(UserError, match="does not exist"):
        onnx_task(tmp_path / "missing.onnx")


def test_text_check_inputs_are_token_ids(kim_run, monkeypatch):
    _, info = load_run_model(kim_run)
    vocab_size, length = info["input_shape"]
    x, source = _check_inputs(info)
    assert x.dtype == torch.long and source.endswith("validation texts")
    assert int(x.min()) >= 0 and int(x.max()) < vocab_size and len(x) >= 7

    def gone(*_, **__):
        raise FileNotFoundError("reviews.tsv")

    monkeypatch.setattr("cnnkit.data.load_data", gone)
    x, source = _check_inputs(info, n=9)
    assert x.dtype == torch.long and x.shape == (9, length) and "random token sequences" in source
    assert int(x.max()) < vocab_size and int(x[0].min()) >= 2  # the first row is all real ids
    assert bool((x == 0).any())  # others are padded


def test_kim_export_without_data_still_checks(kim_run, tmp_path, monkeypatch):
    def gone(*_, **__):
        raise FileNotFoundError("reviews.tsv")

    monkeypatch.setattr("cnnkit.data.load_data", gone)
    r = export(kim_run, "onnx", tmp_path / "m.onnx")
    assert r.checks["ok"] and "random token sequences" in r.checks["inputs"]


def test_a_failed_parity_check_leaves_no_file(kim_run, tmp_path):
    model, info = load_run_model(kim_run)
    path = tmp_path / "bad.onnx"
    with pytest.raises(ExportCheckError):
        export_onnx(model, info, path, tolerance=-1.0)
    assert not path.exists() and not list(tmp_path.iterdir())


def test_kim_torchscript_and_safetensors(kim_run, tmp_path):
    model, info = load_run_model(kim_run)
    ts = export(kim_run, "torchscript", tmp_path / "m.torchscript.pt")
    assert ts.checks["ok"] and [k for k in ts.checks if k.startswith("max_abs_diff_length_")]
    loaded, meta = load_torchscript(ts.path)
    assert meta["tokenizer"] == json.loads((kim_run / "tokenizer.json").read_text(encoding="utf-8"))
    ids = hand_ids(kim_run, ["good film", "awful plot and a very dull story indeed"], None)
    with torch.no_grad():
        assert torch.allclose(loaded(ids), model(ids), atol=1e-6)
    st = export(kim_run, "safetensors", tmp_path / "m.safetensors")
    assert st.checks["ok"]
    rebuilt, meta = load_safetensors(st.path)
    assert meta["variable_length"] is True and meta["max_length"] == info["input_shape"][1]
    with torch.no_grad():
        assert torch.equal(rebuilt(ids), model(ids))


# --------------------------------------------------------------------------- a fixed-length model


def test_fixed_length_model_exports_with_a_static_length(fixed_run, tmp_path, capsys):
    out = tmp_path / "fixed.onnx"
    assert main(["export", str(fixed_run), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "validation texts" in printed and "max |diff|" in printed
    model, info = load_run_model(fixed_run)
    assert info["task"].variable_length is False and info["input_shape"][1] == 12
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (inp,) = sess.get_inputs()
    assert inp.type == "tensor(int64)" and isinstance(inp.shape[0], str) and inp.shape[1] == 12
    meta = onnx_metadata(out)
    assert meta["max_length"] == 12 and meta["variable_length"] is False
    ids = hand_ids(fixed_run, ["good", "the film was great", "awful awful plot " * 12], 12)
    got = sess.run(["logits"], {"input": ids.numpy()})[0]
    with torch.no_grad():
        assert np.abs(got - model(ids).numpy()).max() <= 1e-4
    with pytest.raises(Exception):  # another length does not fit the static input
        sess.run(["logits"], {"input": ids[:, :5].numpy()})
    ref = info["task"].predict_texts(model, TEXTS, top_k=2)
    pred = predict_onnx_texts(out, TEXTS, top_k=2)
    for r, g in zip(ref, pred):
        assert np.abs(np.array(g["probabilities"]) - np.array(r["probabilities"])).max() <= 1e-5
        assert [t["label"] for t in g["top"]] == [t["label"] for t in r["top"]]
    probs = torch_probs(model, ids)
    assert np.abs(np.array([g["probabilities"] for g in pred[:3]]) - probs).max() <= 1e-5
