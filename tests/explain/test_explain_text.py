"""``cnnkit explain text``: the n-grams that won Kim's max-over-time pooling and their push, and the
occlusion fallback for the other text models.

Oracles: a Kim CNN whose weights are set by hand, so that the winning n-gram of every filter and its
push are known in advance; the exact decomposition ``bias + pushes = logit`` against ``model(ids)``
on a trained run; occlusion against the probabilities recomputed with torch one token at a time;
the HTML page read back with :mod:`html.parser` and the PNG with PIL.
"""

from __future__ import annotations

import json
import random
from html.parser import HTMLParser

import pytest
import torch
from PIL import Image

from cnnkit import cli
from cnnkit.api import train
from cnnkit.config import load_config, validate
from cnnkit.data.text.tokenize import Tokenizer
from cnnkit.errors import UserError
from cnnkit.explain.text import explain_text, load_text_run, render_html, render_text, token_colour
from cnnkit.models import create_model, get_model
from cnnkit.tasks import create_task

SENTENCES = ["the film was really great", "this movie is awful", "good", "bad , bad , bad",
             "It was great but the plot felt awful to me overall , really very bad and then great again"]


def _tsv(path) -> None:
    rng = random.Random(0)
    lines = []
    for i in range(120):
        label = i % 2
        adj = rng.choice(["good", "great"] if label else ["bad", "awful"])
        lines.append(f"{label}\t{rng.choice(['the film', 'this movie', 'the plot', 'it'])} "
                     f"{rng.choice(['was', 'is', 'felt'])} {rng.choice(['really ', 'very ', ''])}{adj}"
                     f"{rng.choice(['', ' overall', ' to me'])}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


@pytest.fixture(scope="module")
def text_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("text")
    _tsv(root / "reviews.tsv")
    cfg = validate({
        "task": "text",
        "data": {"name": "text", "path": str(root / "reviews.tsv"), "batch_size": 32, "val_fraction": 0.2},
        "model": {"name": "kim_cnn", "options": {"embed_dim": 16, "filters": 8, "kernel_sizes": [2, 3]}},
        "optim": {"name": "torch.adam", "lr": 0.01},
        "train": {"epochs": 1, "seed": 0, "device": "cpu", "runs_dir": str(root / "runs")},
    })
    return train(cfg, quiet=True).run_dir


@pytest.fixture(scope="module")
def loaded(text_run):
    return load_text_run(text_run)


@pytest.fixture(scope="module")
def image_run(tmp_path_factory):
    overrides = ["data.name=digits", "train.epochs=1", "model.name=null", "model.input=null",
                 "model.layers=[flatten, {dense: 10}]", f"train.runs_dir={tmp_path_factory.mktemp('img')}"]
    return train(load_config(None, overrides), quiet=True).run_dir


# --------------------------------------------------------------------------- a Kim CNN set by hand

VOCAB = ["<pad>", "<unk>", "good", "bad", "film", "very"]


def _text_task(model_cfg: dict, length: int = 20, classes=("neg", "pos")):
    cfg = validate({"task": "text", "model": model_cfg, "data": {"name": "text", "path": "unused.tsv"}})
    task = create_task(cfg, list(classes), (len(VOCAB), length))
    task.attach({"tokenizer": Tokenizer.from_dict({"kind": "word", "vocab": VOCAB})})
    return task


def _hand_kim():
    """Embeddings: good (1,0,0), bad (0,1,0), very (0,0,1), the rest 0. Widths 1 and 2, 3 filters each:

    * width 1: f0 detects bad (1), f1 detects good (x0.5), f2 detects good (x1);
    * width 2: f3 detects "very good" (very then good: 2), f4 never fires (bias -1: silent),
      f5 detects "very good" at half strength (1).
    """
    model = get_model("kim_cnn", num_classes=2, in_chans=len(VOCAB), input_size=20, embed_dim=3,
                      kernel_sizes=[1, 2], filters=3, dropout=0.5)
    with torch.no_grad():
        emb = torch.zeros(len(VOCAB), 3)
        emb[2, 0] = emb[3, 1] = emb[5, 2] = 1.0
        model.embeddings[0].weight.copy_(emb)
        w1 = torch.zeros(3, 3, 1)
        w1[0, 1, 0], w1[1, 0, 0], w1[2, 0, 0] = 1.0, 0.5, 1.0
        model.convs[0].weight.copy_(w1)
        model.convs[0].bias.zero_()
        w2 = torch.zeros(3, 3, 2)
        w2[0, 2, 0], w2[0, 0, 1] = 1.0, 1.0  # very at the first place, good at the second
        w2[2, 2, 0], w2[2, 0, 1] = 0.5, 0.5
        model.convs[1].weight.copy_(w2)
        model.convs[1].bias.copy_(torch.tensor([0.0, -1.0, 0.0]))
        model.fc.weight.copy_(torch.tensor([[2.0, -1.0, 0.0, -0.5, 1.0, 0.0],    # neg
                                            [-1.0, 2.0, 0.5, 1.5, 3.0, 1.0]]))   # pos
        model.fc.bias.copy_(torch.tensor([0.1, -0.2]))
    return model.train()  # explain_text must switch dropout off itself


def test_a_hand_built_kim_cnn_reports_the_winning_ngrams_and_their_exact_push():
    model = _hand_kim()
    task = _text_task({"name": "kim_cnn"})
    res = explain_text(model, task, "Film very good, bad", top=None)
    assert model.training  # put back as it was
    assert res["method"] == "max-over-time" and res["model"] == "KimCNN"
    assert res["tokens"] == ["film", "very", "good", ",", "bad"]
    assert res["pieces"] == ["Film", "very", "good", ",", "bad"] and res["unknown"] == [3]
    # features: f0 = 1 (bad, 4), f1 = 0.5 and f2 = 1 (good, 2), f3 = 2 and f5 = 1 (very good, 1), f4 = 0
    # logit(pos) = -1*1 + 2*0.5 + 0.5*1 + 1.5*2 + 3*0 + 1*1 - 0.2 = 4.3; logit(neg) = 2 - 0.5 - 1 + 0.1 = 0.6
    assert res["prediction"]["class"] == "pos" and res["prediction"]["label"] == 1
    assert res["logits"] == pytest.approx([0.6, 4.3], abs=1e-6)
    p = torch.softmax(torch.tensor([0.6, 4.3], dtype=torch.double), 0)
    assert res["prediction"]["probability"] == pytest.approx(float(p[1]), abs=1e-6)
    assert res["bias"] == pytest.approx(-0.2) and res["margin_bias"] == pytest.approx(-0.3)
    assert res["rival"] == {"label": 0, "class": "neg"}

    w1, w2 = res["widths"]
    assert (w1["width"], w1["filters"], w1["silent"], w1["ngrams_won"]) == (1, 3, 0, 2)
    good, bad = w1["ngrams"]  # sorted by |push|: 1.5 then -1
    assert (good["ngram"], good["start"], good["tokens"], good["filters"]) == ("good", 2, ["good"], 2)
    assert good["push"] == pytest.approx(2 * 0.5 + 0.5 * 1)
    assert good["push_by_class"] == pytest.approx({"neg": -0.5, "pos": 1.5})
    assert good["margin"] == pytest.approx(2.0)
    assert (bad["ngram"], bad["start"], bad["filters"]) == ("bad", 4, 1)
    assert bad["push"] == pytest.approx(-1.0) and bad["margin"] == pytest.approx(-3.0)
    assert (w2["width"], w2["filters"], w2["silent"], w2["ngrams_won"]) == (2, 3, 1, 1)
    (vg,) = w2["ngrams"]
    assert (vg["ngram"], vg["start"], vg["end"], vg["tokens"], vg["filters"]) == \
        ("very good", 1, 3, ["very", "good"], 2)
    assert vg["push"] == pytest.approx(1.5 * 2 + 1.0 * 1) and vg["margin"] == pytest.approx(5.0)
    assert vg["push_by_class"] == pytest.approx({"neg": -1.0, "pos": 4.0})
    # token push: each n-gram's push shared evenly by its tokens
    assert res["token_push"] == pytest.approx([0.0, 2.0, 1.5 + 2.0, 0.0, -1.0])
    assert res["bias"] + sum(res["token_push"]) == pytest.approx(4.3)
    assert res["check"]["error"] < 1e-6

    cut = explain_text(model, task, "Film very good, bad", top=1)
    assert [g["ngram"] for g in cut["widths"][0]["ngrams"]] == ["good"] and cut["widths"][0]["more"] == 1
    assert cut["widths"][0]["total_push"] == pytest.approx(0.5)  # every n-gram still counted


def test_a_sentence_shorter_than_the_filter_reads_its_window_into_the_padding():
    res = explain_text(_hand_kim(), _text_task({"name": "kim_cnn"}), "good", top=None)
    w2 = res["widths"][1]
    assert w2["silent"] == 3 and w2["ngrams"] == []  # one token: no "very good"
    w1 = res["widths"][0]
    assert [(g["ngram"], g["padded"]) for g in w1["ngrams"]] == [("good", 0)]
    res = explain_text(_hand_kim(), _text_task({"name": "kim_cnn"}), "very", top=None)
    (g,) = res["widths"][1]["ngrams"]  # f3 and f5 fire on "very" + padding
    assert (g["ngram"], g["start"], g["end"], g["padded"], g["filters"]) == ("very", 0, 1, 1, 2)
    assert res["token_push"] == pytest.approx([1.5 * 1 + 1.0 * 0.5])


# --------------------------------------------------------------------------- a trained run

@pytest.mark.parametrize("sentence", SENTENCES)
def test_pushes_and_bias_add_up_to_the_models_logit(loaded, sentence):
    model, task, _ = loaded
    res = explain_text(model, task, sentence, top=None)
    with torch.no_grad():
        logits = model(task.encode_texts([sentence]))[0].double()
    pred = res["prediction"]["label"]
    assert pred == int(logits.argmax())
    pushes = sum(g["push"] for w in res["widths"] for g in w["ngrams"])
    assert res["bias"] + pushes == pytest.approx(float(logits[pred]), abs=1e-5)
    assert res["bias"] + sum(res["token_push"]) == pytest.approx(float(logits[pred]), abs=1e-5)
    for c, name in enumerate(res["classes"]):
        per_class = sum(g["push_by_class"][name] for w in res["widths"] for g in w["ngrams"])
        assert float(model.fc.bias.detach()[c]) + per_class == pytest.approx(float(logits[c]), abs=1e-5)
    rival = res["rival"]["label"]
    margins = sum(g["margin"] for w in res["widths"] for g in w["ngrams"])
    assert res["margin_bias"] + margins == pytest.approx(float(logits[pred] - logits[rival]), abs=1e-5)
    assert res["check"]["error"] < 1e-5
    assert sum(w["filters"] for w in res["widths"]) == 16
    assert all(g["filters"] >= 1 for w in res["widths"] for g in w["ngrams"])
    assert sum(g["filters"] for w in res["widths"] for g in w["ngrams"]) + sum(w["silent"] for w in res["widths"]) \
        == 16
    json.dumps(res, allow_nan=False)  # JSON-able as it is


def test_a_long_sentence_is_cut_where_the_run_cuts_it(loaded):
    model, task, _ = loaded
    res = explain_text(model, task, SENTENCES[-1])
    assert res["truncated"] == len(task.tokenizer.tokens(SENTENCES[-1])) - task.max_length > 0
    assert len(res["tokens"]) == len(res["token_push"]) == task.max_length
    assert "cut" in render_text(res)


# --------------------------------------------------------------------------- occlusion

def _occlusion_by_hand(model, ids: torch.Tensor, n: int) -> tuple[int, list[float]]:
    with torch.no_grad():
        p0 = torch.softmax(model(ids).double(), 1)[0]
        pred = int(p0.argmax())
        drops = []
        for i in range(n):
            x = ids.clone()
            x[0, i] = 1
            drops.append(float(p0[pred] - torch.softmax(model(x).double(), 1)[0, pred]))
    return pred, drops


def test_occlusion_fallback_for_a_model_without_max_over_time(loaded):
    _, task, _ = loaded
    torch.manual_seed(0)
    dpcnn = create_model(validate({"task": "text", "model": {"name": "dpcnn", "options": {"embed_dim": 8,
                                                                                     "filters": 8}}}).model,
                         (task.tokenizer.vocab_size, task.max_length), len(task.classes)).eval()
    sentence = "this movie is really awful"
    res = explain_text(dpcnn, task, sentence, top=None)
    assert res["method"] == "occlusion" and res["bias"] is None and res["widths"] == []
    ids = torch.tensor([task.tokenizer.encode(sentence)])
    pred, drops = _occlusion_by_hand(dpcnn, ids, ids.shape[1])
    assert res["prediction"]["label"] == pred
    assert res["token_push"] == pytest.approx(drops, abs=1e-7)
    by_position = {r["position"]: r for r in res["occlusion"]}
    assert len(by_position) == ids.shape[1]
    for i, d in enumerate(drops):
        assert by_position[i]["push"] == pytest.approx(d, abs=1e-7)
        assert by_position[i]["probability_after"] == pytest.approx(res["prediction"]["probability"] - d, abs=1e-7)
    assert [abs(r["push"]) for r in res["occlusion"]] == pytest.approx(sorted((abs(d) for d in drops), reverse=True),
                                                                       abs=1e-7)
    assert "method occlusion" in render_text(res)
    with pytest.raises(UserError, match="max-over-time.*DPCNN"):
        explain_text(dpcnn, task, sentence, method="max-over-time")


def test_occlusion_on_a_fixed_length_layer_list_only_touches_the_tokens(loaded):
    _, run_task, _ = loaded
    layers = [{"embedding": 8}, {"conv1d": {"out": 4, "kernel": 2}}, "relu", "flatten", {"dense": "num_classes"}]
    task = _text_task({"layers": layers}, length=12)
    task.attach({"tokenizer": run_task.tokenizer})
    torch.manual_seed(1)
    model = create_model(validate({"model": {"layers": layers}}).model, (run_task.tokenizer.vocab_size, 12), 2).eval()
    sentence = "the plot was good"
    res = explain_text(model, task, sentence, top=2)
    assert res["method"] == "occlusion" and len(res["occlusion"]) == 2 and res["more"] == 2
    ids = torch.zeros((1, 12), dtype=torch.long)
    enc = run_task.tokenizer.encode(sentence)
    ids[0, :len(enc)] = torch.tensor(enc)  # padded to the run's length by hand
    _, drops = _occlusion_by_hand(model, ids, len(enc))
    assert res["token_push"] == pytest.approx(drops, abs=1e-7)


def test_occlusion_can_be_asked_for_on_kim(loaded):
    model, task, _ = loaded
    res = explain_text(model, task, "the film was good", method="occlusion", top=0)
    ids = task.encode_texts(["the film was good"])
    _, drops = _occlusion_by_hand(model, ids, ids.shape[1])
    assert res["method"] == "occlusion" and res["token_push"] == pytest.approx(drops, abs=1e-7)


def test_bad_arguments_are_user_errors(loaded):
    model, task, _ = loaded
    for text in ("", "   \n"):
        with pytest.raises(UserError, match="empty"):
            explain_text(model, task, text)
    with pytest.raises(UserError, match="method"):
        explain_text(model, task, "good", method="gradients")
    with pytest.raises(UserError, match="top"):
        explain_text(model, task, "good", top=-1)


def test_colours_go_from_red_through_white_to_green():
    assert token_colour(0.0, 1.0) == (255, 255, 255)
    r, g, b = token_colour(1.0, 1.0)
    assert g > r and g > b
    r, g, b = token_colour(-1.0, 1.0)
    assert r > g and r > b
    assert token_colour(-0.5, 1.0)[1] > token_colour(-1.0, 1.0)[1]  # weaker push, paler


# --------------------------------------------------------------------------- the command line

def run_cli(argv, capsys):
    rc = cli.main(argv)
    out = capsys.readouterr()
    return rc, out.out, out.err


class _Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.data, self.tags = [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)

    def handle_data(self, data):
        self.data.append(data)


def test_cli_text_and_json(text_run, capsys):
    rc, out, err = run_cli(["explain", "text", str(text_run), "the film was really great"], capsys)
    assert rc == 0, err
    assert "method max-over-time" in out and "width 2:" in out and "width 3:" in out
    assert '"really great"' in out or '"was really great"' in out or '"film was"' in out
    assert "prediction:" in out and "token push" in out
    rc, out, err = run_cli(["explain", "text", str(text_run), "the film was really great", "--format", "json",
                            "--top", "2"], capsys)
    assert rc == 0, err
    res = json.loads(out)
    assert res["method"] == "max-over-time" and res["run"] == str(text_run)
    assert res["tokens"] == ["the", "film", "was", "really", "great"]
    assert res["prediction"]["class"] in res["classes"]
    assert all(len(w["ngrams"]) <= 2 for w in res["widths"])
    assert abs(res["bias"] + sum(res["token_push"]) - res["logits"][res["prediction"]["label"]]) < 1e-5
    rc, out, err = run_cli(["explain", "text", str(text_run), "the film was really great", "--format", "json",
                            "--method", "occlusion"], capsys)
    assert rc == 0 and json.loads(out)["method"] == "occlusion"


def test_cli_saves_an_html_page_and_a_png(text_run, tmp_path, capsys):
    sentence = "This movie was awful & <bad>"
    page = tmp_path / "why.html"
    rc, out, err = run_cli(["explain", "text", str(text_run), sentence, "--save", str(page)], capsys)
    assert rc == 0, err
    assert str(page) in out
    parser = _Page()
    parser.feed(page.read_text(encoding="utf-8"))
    parser.close()
    text = "".join(parser.data)
    assert {"html", "table", "span", "style"} <= set(parser.tags)
    for piece in ["This", "movie", "was", "awful", "&", "<", "bad", ">"]:
        assert piece in text
    assert "max-over-time" in text and "against" in text and "toward" in text
    assert not list(tmp_path.glob(".why.html.*"))  # the temp file of the atomic write is gone

    picture = tmp_path / "why.png"
    rc, out, err = run_cli(["explain", "text", str(text_run), sentence, "--save", str(picture), "--format", "json",
                            "--method", "occlusion"], capsys)
    assert rc == 0, err
    assert json.loads(out)["saved"] == str(picture)
    with Image.open(picture) as im:
        assert im.format == "PNG" and im.size[0] > 200 and im.size[1] > 50


def test_render_html_escapes_and_marks_the_method(loaded):
    model, task, _ = loaded
    res = explain_text(model, task, "bad <script>alert(1)</script>", method="occlusion")
    page = render_html(res)
    assert "<script" not in page and "&lt;/script&gt;" in page and "occlusion" in page
    parser = _Page()
    parser.feed(page)
    assert "script" not in parser.tags


def test_cli_bad_inputs_exit_2(text_run, image_run, tmp_path, capsys):
    rc, _, err = run_cli(["explain", "text", str(image_run), "good"], capsys)
    assert rc == 2 and "classification" in err and "text run" in err and "Traceback" not in err
    rc, _, err = run_cli(["explain", "text", str(text_run), "   "], capsys)
    assert rc == 2 and "empty" in err
    rc, _, err = run_cli(["explain", "text", str(text_run), "good", "--save", str(tmp_path / "why.jpg")], capsys)
    assert rc == 2 and ".html" in err and ".png" in err and not (tmp_path / "why.jpg").exists()
    rc, _, err = run_cli(["explain", "text", str(text_run), "good", "--save", str(tmp_path / "no" / "a.png")],
                         capsys)
    assert rc == 2 and "does not exist" in err
    rc, _, err = run_cli(["explain", "text", str(tmp_path / "missing"), "good"], capsys)
    assert rc == 2 and "Traceback" not in err
    rc, _, err = run_cli(["explain", "text", str(text_run), "good", "--top", "-1"], capsys)
    assert rc == 2 and "--top" in err
    with pytest.raises(SystemExit) as e:
        cli.main(["explain", "text", str(text_run), "good", "--method", "saliency"])
    assert e.value.code == 2
