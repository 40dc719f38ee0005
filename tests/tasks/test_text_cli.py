"""Text classification through the real commands: ``cnnkit train`` (and ``--resume``), ``eval --data
FILE.tsv --format json``, ``predict --text`` and ``predict FILE.txt``, ``train.cv_folds``; the figures
recomputed independently from the saved model's own outputs, a hand-computed tiny network, and the
NumPy reference engine as the oracle of the torch one."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from cnnkit.cli import main

GOOD = ["good", "great", "charming", "fine", "lovely", "superb", "moving", "witty"]
BAD = ["bad", "awful", "dull", "boring", "tedious", "clumsy", "flat", "weak"]
FILLER = ["the", "film", "a", "story", "is", "and", "movie", "cast", "plot", "very"]


def sentences(n: int, seed: int) -> list[tuple[int, str]]:
    """Short sentences whose label is told by their adjectives (1: GOOD words, 0: BAD words)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        label = i % 2
        words = [rng.choice(FILLER) for _ in range(rng.randint(2, 9))]
        for _ in range(rng.randint(1, 2)):
            words.insert(rng.randint(0, len(words)), rng.choice(GOOD if label else BAD))
        out.append((label, " ".join(words)))
    return out


def write_tsv(path: Path, rows) -> Path:
    path.write_text("".join(f"{label}\t{text}\n" for label, text in rows), encoding="utf-8")
    return path


def config(tmp: Path, data: Path, **over) -> Path:
    cfg = {"task": "text",
           "data": {"name": "text", "path": str(data), "batch_size": 16, "val_fraction": 0.25},
           "model": {"name": "kim_cnn", "options": {"embed_dim": 16, "filters": 8, "kernel_sizes": [1, 2],
                                                    "dropout": 0.1}},
           "optim": {"name": "torch.adam", "lr": 0.02},
           "train": {"epochs": 4, "seed": 0, "device": "cpu", "runs_dir": str(tmp / "runs")}}
    for k, v in over.items():
        section, key = k.split(".")
        cfg[section][key] = v
    path = tmp / f"cfg{len(list(tmp.glob('cfg*.yaml')))}.yaml"
    import yaml

    path.write_text(yaml.safe_dump(cfg))
    return path


def newest_run(runs: Path) -> Path:
    return max((p for p in runs.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime_ns)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("text")
    data = write_tsv(tmp / "train.tsv", sentences(240, seed=0))
    held = write_tsv(tmp / "held.tsv", sentences(60, seed=1))
    assert main(["train", str(config(tmp, data)), "--quiet"]) == 0
    return tmp, newest_run(tmp / "runs"), held


def test_train_learns_the_adjectives_and_saves_the_vocabulary(trained):
    tmp, run, _ = trained
    final = json.loads((run / "final.json").read_text())
    meta = json.loads((run / "meta.json").read_text())
    assert final["task"] == "text" and final["classes"] == ["0", "1"]
    assert final["n_train"] == 180 and final["n_val"] == 60
    assert final["val_accuracy"] >= 0.9  # the task is separable by single words
    tok = json.loads((run / "tokenizer.json").read_text())
    assert meta["tokenizer"]["vocab_size"] == meta["input_shape"][0]
    # every token of the vocabulary comes from the training split (special tokens aside)
    from cnnkit.data.text.tokenize import Tokenizer

    t = Tokenizer.from_dict(tok)
    vocab = set(t.vocabulary()[2:])
    assert vocab <= set(GOOD + BAD + FILLER)


def test_eval_data_json_equals_metrics_counted_from_the_predictions(trained, capsys):
    from cnnkit.data.text.formats import read_texts
    from cnnkit.inference import load_run_model

    tmp, run, held = trained
    capsys.readouterr()
    assert main(["eval", str(run), "--data", str(held), "--format", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    model, info = load_run_model(run)
    data = read_texts(held, classes=info["classes"])
    with torch.no_grad():
        pred = model(info["task"].encode_texts(data.texts)).argmax(1).numpy()
    truth = np.array(data.targets)
    cm = np.zeros((2, 2), dtype=int)
    for t, p in zip(truth, pred):
        cm[t, p] += 1
    assert out["confusion_matrix"] == cm.tolist()
    assert out["accuracy"] == pytest.approx((pred == truth).mean())
    for c in (0, 1):
        precision = cm[c, c] / max(cm[:, c].sum(), 1)
        recall = cm[c, c] / cm[c].sum()
        assert out["per_class"][str(c)]["precision"] == pytest.approx(precision, abs=1e-6)
        assert out["per_class"][str(c)]["recall"] == pytest.approx(recall, abs=1e-6)
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        assert out["per_class"][str(c)]["f1"] == pytest.approx(f1, abs=1e-6)


def test_predict_text_and_file_give_the_json_of_the_issue(trained, capsys, tmp_path):
    from cnnkit.inference import load_run_model

    _, run, _ = trained
    texts = ["a charming and witty film", "dull boring plot", "zzz unknown qqq"]
    capsys.readouterr()
    assert main(["predict", str(run), *sum((["--text", t] for t in texts), []), "--format", "json",
                 "--top-k", "1"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [r["text"] for r in out] == texts
    for r in out:
        assert set(r) == {"text", "top", "probabilities"} and len(r["top"]) == 1
        assert set(r["top"][0]) == {"label", "class", "probability"}
        assert sum(r["probabilities"]) == pytest.approx(1.0, abs=1e-5)
    assert out[0]["top"][0]["class"] == "1" and out[1]["top"][0]["class"] == "0"
    # the probabilities are the model's softmax on the tokenised text
    model, info = load_run_model(run)
    with torch.no_grad():
        probs = torch.softmax(model(info["task"].encode_texts(texts)), 1).numpy()
    assert np.allclose([r["probabilities"] for r in out], probs, atol=1e-6)
    # one text per line from a file (blank lines skipped), the same answers
    f = tmp_path / "reviews.txt"
    f.write_text("\n".join(texts[:2]) + "\n\n", encoding="utf-8")
    assert main(["predict", str(run), str(f), "--format", "json", "--top-k", "1"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again == out[:2]
    assert main(["predict", str(run), "--text", "a fine cast"]) == 0
    assert "'a fine cast': 1 (" in capsys.readouterr().out


@pytest.mark.parametrize("content, needle", [
    (b"", "holds no text"),
    (b"\xff\xfe bad\n", "not UTF-8"),
])
def test_predict_bad_text_files_exit_2(trained, tmp_path, capsys, content, needle):
    _, run, _ = trained
    f = tmp_path / "x.txt"
    f.write_bytes(content)
    assert main(["predict", str(run), str(f)]) == 2
    assert needle in capsys.readouterr().err


def test_bad_inputs_are_one_clear_message(trained, tmp_path, capsys):
    tmp, run, held = trained
    assert main(["predict", str(run)]) == 2
    assert "--text" in capsys.readouterr().err
    assert main(["predict", str(run), "--text", "  "]) == 2
    assert "empty" in capsys.readouterr().err
    unknown = write_tsv(tmp_path / "u.tsv", [(7, "a good film")])
    assert main(["eval", str(run), "--data", str(unknown)]) == 2
    assert "7" in capsys.readouterr().err
    empty = tmp_path / "e.tsv"
    empty.write_text("")
    assert main(["train", str(config(tmp_path, empty)), "--quiet"]) == 2
    assert "empty" in capsys.readouterr().err.lower()
    bad_col = write_tsv(tmp_path / "b.tsv", sentences(20, 3))
    assert main(["train", str(config(tmp_path, bad_col)), "data.label_column=sentiment", "--quiet"]) == 2
    assert "sentiment" in capsys.readouterr().err
    no_text = tmp_path / "n.tsv"
    no_text.write_text("1\tgood\n0\t\n", encoding="utf-8")
    assert main(["train", str(config(tmp_path, no_text)), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "line 2" in err and "Traceback" not in err
    assert main(["train", str(config(tmp_path, held)), "augment.hflip=true", "--quiet"]) == 2
    assert "augment.hflip" in capsys.readouterr().err


def test_resume_continues_to_the_same_weights_as_one_run(tmp_path):
    data = write_tsv(tmp_path / "d.tsv", sentences(80, seed=4))
    cfg = config(tmp_path, data, **{"train.epochs": 2})
    assert main(["train", str(cfg), "--quiet"]) == 0
    whole = newest_run(tmp_path / "runs")
    assert main(["train", str(cfg), "train.epochs=1", "--quiet"]) == 0
    part = newest_run(tmp_path / "runs")
    assert part != whole
    assert main(["train", "--resume", str(part), "train.epochs=2", "--quiet"]) == 0
    a = torch.load(whole / "checkpoints" / "last.pt", weights_only=True)["model"]
    b = torch.load(part / "checkpoints" / "last.pt", weights_only=True)["model"]
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6), k


def test_cv_folds_write_mean_and_spread_of_disjoint_covering_folds(tmp_path, capsys):
    rows = sentences(60, seed=5)
    data = write_tsv(tmp_path / "d.tsv", rows)
    cfg = config(tmp_path, data, **{"train.epochs": 2})
    assert main(["train", str(cfg), "train.cv_folds=3"]) == 0
    out = capsys.readouterr().out
    assert "3-fold cross-validation: accuracy" in out
    parent = newest_run(tmp_path / "runs")
    final = json.loads((parent / "final.json").read_text())
    assert final["cv_folds"] == 3 and len(final["folds"]) == 3
    # each fold is scored on its last epoch: its best checkpoint was chosen on that very fold
    children = [json.loads((parent / "folds" / f"fold{i:02d}" / "final.json").read_text()) for i in (1, 2, 3)]
    accs = [c["last_val_accuracy"] for c in children]
    assert final["scored"] == "last epoch"
    assert final["best_val_accuracy_mean"] == pytest.approx(np.mean([c["val_accuracy"] for c in children]))
    assert final["val_accuracy_mean"] == pytest.approx(np.mean(accs))
    assert final["val_accuracy_std"] == pytest.approx(np.std(accs, ddof=1), abs=1e-9)  # the sample deviation
    # the validation folds are disjoint and together are the whole file
    sizes = [json.loads((parent / "folds" / f"fold{i:02d}" / "final.json").read_text())["n_val"] for i in (1, 2, 3)]
    assert sum(sizes) == len(rows) and final["n_val"] == len(rows)
    # a second resume finds every fold finished and rewrites the same summary
    assert main(["train", "--resume", str(parent), "--quiet"]) == 0
    assert json.loads((parent / "final.json").read_text())["val_accuracy_mean"] == final["val_accuracy_mean"]


def test_a_hand_computed_kim_network(tmp_path):
    """Vocabulary [pad, unk, good, bad], one filter of width 1 per word, weights set by hand: the logits
    follow from max-over-time pooling by hand."""
    from cnnkit.models.text.kim import KimCNN

    model = KimCNN(num_classes=2, vocab_size=4, max_length=4, embed_dim=2, kernel_sizes=(1,), filters=2, dropout=0.0,
                   max_norm=None).eval()
    with torch.no_grad():
        model.embeddings[0].weight.copy_(torch.tensor([[0.0, 0.0], [0.0, 0.0], [1.0, 0.0], [0.0, 1.0]]))
        model.convs[0].weight.copy_(torch.tensor([[[2.0], [0.0]], [[0.0], [3.0]]]))  # filter 0: good, 1: bad
        model.convs[0].bias.zero_()
        model.fc.weight.copy_(torch.tensor([[-1.0, 1.0], [1.0, -1.0]]))  # class 1 likes 'good'
        model.fc.bias.copy_(torch.tensor([0.5, 0.0]))
    ids = torch.tensor([[2, 1, 3, 2], [3, 3, 0, 0], [1, 0, 0, 0]])  # good unk bad good / bad bad / unk
    # features by hand: max over time of ReLU(2*good), ReLU(3*bad)
    feats = torch.tensor([[2.0, 3.0], [0.0, 3.0], [0.0, 0.0]])
    expected = feats @ torch.tensor([[-1.0, 1.0], [1.0, -1.0]]).T + torch.tensor([0.5, 0.0])
    with torch.no_grad():
        assert torch.allclose(model(ids), expected)
        pooled, starts, widths = model.pooled(ids)
    assert torch.allclose(pooled, feats)
    assert starts[0].tolist() == [0, 2] and widths.tolist() == [1, 1]


def test_reference_engine_trains_text_layer_lists_as_torch_does(tmp_path):
    """Kim's network spelled as a layer list: the NumPy glass-box engine and torch give the same losses."""
    data = write_tsv(tmp_path / "d.tsv", sentences(64, seed=6))
    layers = [{"embedding": 6},
              {"parallel": [[{"conv1d": {"out": 3, "kernel": 2}}, "relu", "globalmaxpool1d"],
                            [{"conv1d": {"out": 3, "kernel": 3}}, "relu", "globalmaxpool1d"]]},
              {"dense": "num_classes"}]
    finals = []
    for engine in ("reference", "torch"):
        cfg = config(tmp_path, data, **{"model.layers": layers, "model.name": None, "model.options": {},
                                        "optim.name": "sgd", "optim.lr": 0.1, "train.engine": engine,
                                        "train.epochs": 2})
        assert main(["train", str(cfg), "--quiet"]) == 0
        run = newest_run(tmp_path / "runs")
        finals.append([json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()])
    for ref, fast in zip(*finals):
        assert ref["train_loss"] == pytest.approx(fast["train_loss"], abs=1e-4)
        assert ref["val_loss"] == pytest.approx(fast["val_loss"], abs=1e-4)
