"""``cnnkit report``: the HTML is one self-contained document whose numbers are checked against
computations that do not go through the report: the confusion matrix and per-class figures from
predictions made here with plain torch and scikit-learn, Grad-CAM from autograd by hand, the shift
curve from ``cnnkit eval --shift``."""

from __future__ import annotations

import base64
import io
import json
import shutil
from html.parser import HTMLParser

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

from cnnkit.cli import main

LENET = "configs/lenet5_mnist5k.yaml"
MLP = "configs/mlp_mnist5k.yaml"


class Page(HTMLParser):
    """Section ids, images and tables (cell values, ``data-value`` when given) of a report."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.sections: dict[str, str] = {}
        self.images: list[tuple[str, str]] = []  # (section id, src)
        self.tables: dict[str, list[list[str]]] = {}
        self.external: list[str] = []
        self._section: str | None = None
        self._table: str | None = None
        self._row: list[str] | None = None
        self._cell: list[str] | None = None
        self._value: str | None = None
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "section":
            self._section = a["id"]
            self.sections[a["id"]] = ""
        elif tag == "img":
            self.images.append((self._section, a["src"]))
        elif tag == "table" and a.get("id"):
            self._table = a["id"]
            self.tables[a["id"]] = []
        elif tag == "tr" and self._table:
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._cell, self._value = [], a.get("data-value")
        if tag in ("link", "script", "iframe") or (tag == "img" and not a["src"].startswith("data:")):
            self.external.append(tag)

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self._row.append(self._value if self._value is not None else "".join(self._cell).strip())
            self._cell = None
        elif tag == "tr" and self._row is not None:
            if self._row:
                self.tables[self._table].append(self._row)
            self._row = None
        elif tag == "table":
            self._table = None
        elif tag == "section":
            self._section = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)
        if self._section:
            self.sections[self._section] += data


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("report")
    out = {}
    for name, cfg in (("lenet", LENET), ("mlp", MLP)):
        assert main(["train", cfg, "train.epochs=1", "train.device=cpu", "train.report=false",
                     f"train.runs_dir={tmp}", f"train.name={name}", "--quiet"]) == 0
        out[name] = next(p for p in tmp.iterdir() if p.name.split("-")[2] == name)
    return out


@pytest.fixture(scope="module")
def lenet_report(runs):
    from cnnkit.tools.report import build_report

    path = build_report(runs["lenet"], strict=True)
    return path, Page(path.read_text())


def held_out_predictions(run):
    """The run's held-out digits, normalised and scored here with plain torch (the split is cnnkit's)."""
    from cnnkit.config import load_config
    from cnnkit.data import load_data
    from cnnkit.models import create_model

    ckpt = torch.load(run / "checkpoints" / "best.pt", weights_only=True)
    meta = ckpt["meta"]
    cfg = load_config(str(run / "config.yaml"))
    val = load_data(cfg.data, task="classification").val
    x = (val.images.float() / 255 - meta["mean"][0]) / meta["std"][0]
    model = create_model(cfg.model, tuple(meta["input_shape"]), len(meta["classes"]))
    model.load_state_dict(ckpt["model"])
    model.eval()
    with torch.no_grad():
        logits = model(x)
    return model, x, val.labels.numpy(), logits.argmax(1).numpy()


def test_the_report_is_one_self_contained_page_with_every_section(lenet_report):
    path, page = lenet_report
    assert path.name == "report.html"
    for sid in ("run", "learning-curves", "architecture", "confusion", "per-class-precision-recall-and-f1",
                "most-confident-mistakes", "grad-cam", "first-layer-filters", "feature-maps", "robustness-to-shifts",
                "configuration"):
        assert sid in page.sections, sid
    assert page.external == []  # nothing fetched: it opens offline
    drawn = {sid for sid, _ in page.images}
    assert {"learning-curves", "architecture", "confusion", "grad-cam", "feature-maps"} <= drawn
    for _, src in page.images:
        head, data = src.split(",", 1)
        assert head == "data:image/png;base64"
        Image.open(io.BytesIO(base64.b64decode(data))).verify()
    assert "could not be drawn" not in path.read_text()


def test_confusion_matrix_and_per_class_figures_equal_an_independent_count(runs, lenet_report):
    _, page = lenet_report
    _, _, y, pred = held_out_predictions(runs["lenet"])
    expected = confusion_matrix(y, pred, labels=range(10))
    rows = page.tables["confusion-matrix"]
    assert rows[0][1:] == [str(c) for c in range(10)]
    got = np.array([[int(v) for v in r[1:]] for r in rows[1:]])
    np.testing.assert_array_equal(got, expected)
    p, r, f, s = precision_recall_fscore_support(y, pred, labels=range(10), zero_division=0)
    table = page.tables["per-class"]
    for i, row in enumerate(table[1:11]):
        np.testing.assert_allclose([float(v) for v in row[1:4]], [p[i], r[i], f[i]], atol=6e-5)
        assert int(row[4]) == s[i]
    assert table[11][0] == "macro mean"


def test_gradcam_equals_the_formula_computed_with_autograd(runs):
    """captum's maps against Grad-CAM by hand: channel weights = mean gradient of the class score over
    the positions of conv2's output, ReLU of the weighted sum, upsampled, divided by its maximum."""
    from cnnkit.tools.report.gradcam import gradcam, last_conv

    model, x, _, pred = held_out_predictions(runs["lenet"])
    x, target = x[:6], torch.as_tensor(pred[:6])
    name, layer = last_conv(model, x)
    assert name == "conv2"
    maps = gradcam(model, x, target)
    acts = {}
    h = layer.register_forward_hook(lambda m, i, o: acts.setdefault("a", o))
    score = model(x).gather(1, target.view(-1, 1)).sum()
    h.remove()
    grad, = torch.autograd.grad(score, acts["a"])
    cam = torch.relu((grad.mean((2, 3), keepdim=True) * acts["a"]).sum(1, keepdim=True))
    cam = torch.nn.functional.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    cam = cam / cam.flatten(1).amax(1).clamp_min(1e-12).view(-1, 1, 1)
    torch.testing.assert_close(maps, cam.detach(), atol=1e-5, rtol=1e-4)


def test_the_shift_curve_equals_eval_shift(runs, lenet_report, capsys):
    _, page = lenet_report
    curve = {int(r[0]): float(r[1]) for r in page.tables["shift-accuracy"][1:]}
    assert sorted(curve) == list(range(7))
    saved = json.loads((runs["lenet"] / "robustness.json").read_text())
    assert saved["shift_px"] == list(range(7))
    for k in (0, 3):
        capsys.readouterr()
        assert main(["eval", str(runs["lenet"]), "--shift", str(k), "--format", "json"]) == 0
        acc = json.loads(capsys.readouterr().out)["accuracy"]
        assert curve[k] == pytest.approx(acc, abs=1e-4) and saved["accuracy"][k] == pytest.approx(acc, abs=1e-9)


def test_the_layer_table_is_the_summary(runs, lenet_report):
    _, page = lenet_report
    rows = page.tables["layers"]
    assert rows[0][:4] == ["layer", "type", "output", "params"]
    conv1 = next(r for r in rows if r[0] == "conv1")
    assert conv1[1:4] == ["Conv2d", "6x24x24", str(6 * 25 + 6)]


def test_an_mlp_report_says_what_it_cannot_show(runs):
    from cnnkit.tools.report import build_report

    page = Page(build_report(runs["mlp"], strict=True).read_text())
    assert "needs a convolution" in page.sections["grad-cam"]
    assert "no convolution" in page.sections["first-layer-filters"]
    assert "shift-accuracy" in page.tables and "confusion-matrix" in page.tables


def test_a_run_still_training_gets_curves_and_config(runs, tmp_path):
    from cnnkit.tools.report import build_report

    run = tmp_path / runs["lenet"].name
    shutil.copytree(runs["lenet"], run)
    (run / "final.json").unlink()
    shutil.rmtree(run / "checkpoints")
    page = Page(build_report(run, strict=True).read_text())
    assert {"run", "learning-curves", "model", "configuration"} <= set(page.sections)
    assert "no final.json yet (1 epochs logged)" in page.sections["run"]


def test_train_writes_the_report_unless_told_not_to(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CNNKIT_REPORT", "1")
    for name, flag in (("with", "train.report=true"), ("without", "train.report=false")):
        capsys.readouterr()
        assert main(["train", "data.subset=300", "train.epochs=1", "train.device=cpu", f"train.runs_dir={tmp_path}",
                     f"train.name={name}", flag, "--quiet"]) == 0
        out = capsys.readouterr().out.strip().splitlines()
        run = tmp_path / out[-1].split("/")[-1]  # the last line stays the run folder
        assert (run / "report.html").is_file() == (name == "with")
        assert any(line.startswith("report: ") for line in out) == (name == "with")


def test_report_refusals(runs, tmp_path, capsys):
    for argv, words in ((["report", str(tmp_path / "nope")], "does not exist"),
                        (["report", str(runs["lenet"]), "--out", str(tmp_path / "r.txt")], ".html"),
                        (["report", str(runs["lenet"]), "--out", str(tmp_path / "no" / "r.html")], "does not exist"),
                        (["report", str(runs["lenet"]), "--max-items", "0"], "positive")):
        capsys.readouterr()
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("error:") and words in err and err.count("\n") == 1, err


def test_the_overlay_blends_by_the_heat():
    from cnnkit.tools.report.gradcam import overlay

    image = np.full((2, 2, 3), 0.5)
    heat = np.array([[0.0, 1.0], [0.5, 0.0]])
    out = overlay(image, heat, strength=0.8)
    assert out.dtype == np.uint8 and out.shape == (2, 2, 3)
    assert out[0, 0].tolist() == [128, 128, 128]            # no heat: the grey image
    np.testing.assert_allclose(out[0, 1], [255 * (0.2 * 0.5 + 0.8 * c) for c in (0.5, 0, 0)], atol=0.51)  # jet(1)


def test_a_section_that_fails_leaves_the_others(runs, tmp_path, monkeypatch, capsys):
    """Grad-CAM raising and robustness.json unwritable: both are said in their own section; the confusion
    matrix, the mistakes and the filters are still drawn, and the report is written."""
    from cnnkit.tools.report import build_report, classification

    def broken(*_a, **_k):
        raise RuntimeError("boom")

    def unwritable(*_a, **_k):
        raise PermissionError("read-only folder")

    monkeypatch.setattr(classification, "gradcam_section", broken)
    monkeypatch.setattr(classification, "atomic_write_text", unwritable)
    out = build_report(runs["lenet"], tmp_path / "r.html")
    page = Page(out.read_text())
    assert "could not be drawn: RuntimeError: boom" in page.sections["grad-cam"]
    assert "could not be saved" in page.sections["robustness-to-shifts"] and "shift-accuracy" in page.tables
    assert {"confusion", "most-confident-mistakes", "first-layer-filters"} <= set(page.sections)
    assert "confusion-matrix" in page.tables
    assert "warning: report section 'Grad-CAM' left out" in capsys.readouterr().err


def test_a_report_that_fails_does_not_fail_training(tmp_path, monkeypatch, capsys):
    import cnnkit.tools.report as report

    def broken(*_a, **_k):
        raise RuntimeError("no figures today")

    monkeypatch.setenv("CNNKIT_REPORT", "1")
    monkeypatch.setattr(report, "build_report", broken)
    capsys.readouterr()
    assert main(["train", "data.subset=200", "train.epochs=1", "train.device=cpu", f"train.runs_dir={tmp_path}",
                 "--quiet"]) == 0
    out, err = capsys.readouterr()
    run = tmp_path / out.strip().splitlines()[-1].split("/")[-1]
    assert (run / "final.json").is_file() and not (run / "report.html").exists()
    assert "warning: report.html not written (RuntimeError: no figures today)" in err
