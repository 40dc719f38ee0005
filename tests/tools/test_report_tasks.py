"""The task pages of ``report.html`` (text, timeseries, forecast, video, frames, reconstruction, gan, detection,
instance, segmentation) on the smallest real runs: the page parses, each section is there with an inlined PNG
that decodes, and one number per page equals one computed here, independently, from the run's own model."""

from __future__ import annotations

import base64
import io
import json
import random
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from cnnkit.cli import main
from cnnkit.inference import held_out_data, load_run_model, ordered_loader
from cnnkit.tools.report.build import build_report

REPO = Path(__file__).resolve().parents[2]


class Page(HTMLParser):
    """What the tests read back: per section its PNGs, per table id its rows of ``(text, data-value)``, and
    the ``--w`` weights of the n-gram spans."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.sections: dict[str, list[bytes]] = {}
        self.tables: dict[str, list[list[tuple[str, str | None]]]] = {}
        self.weights: list[float] = []
        self._section = self._table = None
        self._cell: list | None = None
        self.feed(text)
        self.close()

    def handle_starttag(self, tag: str, attrs: list) -> None:
        a = dict(attrs)
        if tag == "section":
            self._section = a["id"]
            assert self._section not in self.sections, f"section {self._section} twice"
            self.sections[self._section] = []
        elif tag == "img" and a.get("src", "").startswith("data:image/png;base64,"):
            self.sections[self._section].append(base64.b64decode(a["src"].split(",", 1)[1]))
        elif tag == "table" and "id" in a:
            self._table = a["id"]
            self.tables[self._table] = []
        elif tag == "tr" and self._table:
            self.tables[self._table].append([])
        elif tag in ("td", "th") and self._table and self.tables[self._table]:
            self._cell = ["", a.get("data-value")]
        elif tag == "span" and a.get("class", "").split()[:1] == ["ngram"]:
            push = float(a["title"].split()[-1])
            assert ("against" in a["class"].split()) == (push < 0)  # blue exactly where the word pushes away
            self.weights.append(float(a["style"].split("--w:")[1]))

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell[0] += data

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.tables[self._table][-1].append(tuple(self._cell))
            self._cell = None
        elif tag == "table":
            self._table = None

    def body(self, table_id: str) -> list[list[tuple[str, str | None]]]:
        """The rows of a table below its head."""
        return [r for r in self.tables[table_id][1:]]


def report(run: Path, *sections: str) -> Page:
    path = build_report(run, strict=True)
    assert path == run / "report.html"
    page = Page(path.read_text(encoding="utf-8"))
    for s in sections:
        assert page.sections.get(s), f"section {s!r} missing or without a figure; have {list(page.sections)}"
        for data in page.sections[s]:
            with Image.open(io.BytesIO(data)) as im:
                im.load()
                assert im.size[0] > 20 and im.size[1] > 20
    return page


def write_config(tmp: Path, cfg: dict) -> Path:
    path = tmp / f"cfg{len(list(tmp.glob('cfg*.yaml')))}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def train(tmp: Path, *args: str) -> Path:
    root = tmp / "runs"
    assert main(["train", *args, f"train.runs_dir={root}", "--quiet"]) == 0
    (run,) = [p for p in root.iterdir() if p.is_dir()]
    return run


def held_out(run: Path):
    """The run's model, info and held-out batches, as a user of the library gets them (not the report's code)."""
    model, info = load_run_model(run)
    return model, info, list(ordered_loader(info, held_out_data(info), "cpu", 64))


def confusion_table(page: Page) -> np.ndarray:
    return np.array([[int(v) for _, v in row[1:]] for row in page.body("confusion-matrix")])


def predictions(model, batches) -> tuple[np.ndarray, np.ndarray]:
    with torch.no_grad():
        pred = np.concatenate([model(x).argmax(1).numpy() for x, _ in batches])
    return np.concatenate([np.asarray(y) for _, y in batches]), pred


# --------------------------------------------------------------------------- text, timeseries, forecast


GOOD = ["good", "great", "charming", "fine", "lovely", "superb"]
BAD = ["bad", "awful", "dull", "boring", "tedious", "clumsy"]
FILLER = ["the", "film", "a", "story", "is", "and", "movie", "cast", "plot"]


def sentences(n: int, seed: int) -> list[tuple[int, str]]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        words = [rng.choice(FILLER) for _ in range(rng.randint(2, 8))]
        words.insert(rng.randint(0, len(words)), rng.choice(GOOD if i % 2 else BAD))
        out.append((i % 2, " ".join(words)))
    return out


def test_text_page_highlights_ngrams_and_its_confusion_matrix_is_sklearns(tmp_path):
    from sklearn.metrics import confusion_matrix

    data = tmp_path / "train.tsv"
    data.write_text("".join(f"{label}\t{text}\n" for label, text in sentences(160, 0)), encoding="utf-8")
    cfg = {"task": "text", "data": {"name": "text", "path": str(data), "batch_size": 16, "val_fraction": 0.25},
           "model": {"name": "kim_cnn", "options": {"embed_dim": 8, "filters": 6, "kernel_sizes": [1, 2]}},
           "optim": {"name": "torch.adam", "lr": 0.02}, "train": {"epochs": 3, "seed": 0, "device": "cpu"}}
    run = train(tmp_path, str(write_config(tmp_path, cfg)))
    page = report(run, "confusion")
    assert "ngrams" in page.sections and len(page.weights) >= 6
    assert all(0.0 <= w <= 1.0 for w in page.weights) and max(page.weights) == 1.0  # each sentence's strongest word

    model, info, batches = held_out(run)
    true, pred = predictions(model, batches)
    expected = confusion_matrix(true, pred, labels=range(len(info["classes"])))
    np.testing.assert_array_equal(confusion_table(page), expected)
    support = [int(row[4][1]) for row in page.body("per-class") if row[0][0] != "macro mean"]
    assert support == expected.sum(1).tolist()


def waves(n: int, length: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    t = np.linspace(0, 1, length)
    xs = [np.sin(2 * np.pi * rng.uniform(2, 4) * t + rng.uniform(0, 6)) for _ in range(n)]
    xs = [np.sign(x) if i % 2 else x for i, x in enumerate(xs)]
    return (np.asarray(xs)[:, None, :] + rng.normal(0, 0.1, (n, 1, length)),
            np.asarray(["square" if i % 2 else "sine" for i in range(n)]))


def test_timeseries_page_draws_series_and_its_confusion_matrix_is_sklearns(tmp_path):
    from sklearn.metrics import confusion_matrix

    x, y = waves(48, 48, 0)
    np.savez(tmp_path / "train.npz", X=x, y=y)
    cfg = {"task": "timeseries", "data": {"name": "series", "path": str(tmp_path / "train.npz"), "batch_size": 16,
                                          "val_fraction": 0.25},
           "model": {"name": "fcn1d", "options": {"filters": [4, 8, 4]}}, "optim": {"name": "torch.adam", "lr": 0.01},
           "train": {"epochs": 2, "seed": 0, "device": "cpu"}}
    run = train(tmp_path, str(write_config(tmp_path, cfg)))
    page = report(run, "series", "confusion")
    model, info, batches = held_out(run)
    true, pred = predictions(model, batches)
    np.testing.assert_array_equal(confusion_table(page), confusion_matrix(true, pred, labels=range(2)))


def test_forecast_page_mae_is_numpys_on_the_held_out_windows(tmp_path):
    t = np.arange(180)
    values = 10 + 3 * np.sin(2 * np.pi * t / 12) + np.random.default_rng(0).normal(0, 0.3, len(t))
    csv = tmp_path / "series.csv"
    csv.write_text("month,y\n" + "".join(f"2000-{i:04d},{float(v)!r}\n" for i, v in enumerate(values)))
    cfg = {"task": "forecast", "data": {"name": "forecast", "path": str(csv), "lookback": 24, "horizon": 3,
                                        "season": 12, "batch_size": 16, "val_fraction": 0.25},
           "model": {"name": "tcn", "options": {"channels": 4}}, "optim": {"name": "torch.adam", "lr": 0.01},
           "train": {"epochs": 3, "seed": 0, "device": "cpu"}}
    run = train(tmp_path, str(write_config(tmp_path, cfg)))
    page = report(run, "forecast")
    assert len(page.sections["forecast"]) == 3  # three held-out windows drawn by predict --plot's function

    model, info, batches = held_out(run)
    task = info["task"]
    errors = []
    for x, y in batches:  # the raw CSV values are the truth: the windows' targets unscaled must be them
        errors.append(task.forecast(model, x) - task.unscale(y.double().numpy()))
    e = np.abs(np.concatenate(errors))
    steps = len(values) - int(round(0.25 * len(values)))
    np.testing.assert_allclose(task.unscale(batches[-1][1].double().numpy())[-1, 0, -1], values[-1], rtol=1e-5)
    (row,) = page.body("forecast-mae-by-step")
    got = [float(v) for _, v in row[1:]]
    np.testing.assert_allclose(got, [e.mean(), *e.mean(axis=(0, 1))], rtol=1e-5)
    assert len(e) == len(values) - steps - 3 + 1
    final = json.loads((run / "final.json").read_text())
    model_row = page.body("forecast-metrics")[0]
    assert model_row[0][0] == "model" and float(model_row[1][1]) == final["val_mae"]
    np.testing.assert_allclose(final["val_mae"], e.mean(), rtol=1e-4)  # the best epoch's weights, scored again


# --------------------------------------------------------------------------- segmentation


def test_segmentation_page_iou_per_class_is_numpys_from_the_argmax_masks(tmp_path):
    from cnnkit.tasks.segmentation import IGNORE, segment

    run = train(tmp_path, str(REPO / "configs" / "segment_shapes.yaml"), "data.subset=24", "data.image_size=48",
                "train.epochs=1", "data.batch_size=8", "train.device=cpu", "model.options.width=4",
                "model.options.depth=2")
    page = report(run, "masks")
    model, info, batches = held_out(run)
    k = len(info["classes"])
    cm = np.zeros((k, k), dtype=np.int64)
    with torch.no_grad():
        for x, masks in batches:
            pred, truth = segment(model, x).argmax(1).numpy().ravel(), masks.numpy().ravel()
            keep = truth != IGNORE
            np.add.at(cm, (truth[keep], pred[keep]), 1)
    tp = np.diag(cm)
    union = cm.sum(0) + cm.sum(1) - tp
    rows = page.body("segmentation-per-class")
    assert [r[0][0] for r in rows] == list(info["classes"])
    for c, row in enumerate(rows):
        if union[c] == 0:
            assert row[1][1] is None
        else:
            np.testing.assert_allclose(float(row[1][1]), tp[c] / union[c], rtol=1e-9)
        assert int(row[3][1]) == cm[c].sum()


# --------------------------------------------------------------------------- video, frames, reconstruction


def test_video_page_draws_clips_and_its_confusion_matrix_is_sklearns(tmp_path):
    from sklearn.metrics import confusion_matrix

    cfg = {"task": "video", "data": {"name": "moving_mnist_clips", "clips": 32, "frames": 4, "digits": 2,
                                     "image_size": 32, "val_fraction": 0.25, "batch_size": 8},
           "model": {"name": "cnn_lstm_video"}, "optim": {"name": "adam", "lr": 0.003},
           "train": {"epochs": 1, "seed": 0, "device": "cpu"}}
    run = train(tmp_path, str(write_config(tmp_path, cfg)))
    page = report(run, "clips", "confusion")
    model, info, batches = held_out(run)
    true, pred = predictions(model, batches)
    np.testing.assert_array_equal(confusion_table(page), confusion_matrix(true, pred, labels=range(len(info["classes"]))))


def test_frames_page_mse_per_step_is_numpys(tmp_path):
    cfg = {"task": "frames", "data": {"name": "moving_mnist", "clips": 16, "frames": 4, "future": 2, "digits": 1,
                                      "image_size": 32, "val_fraction": 0.25, "batch_size": 4},
           "model": {"name": "convlstm_frames", "options": {"hidden": [4], "future": 2, "patch": 4}},
           "optim": {"name": "adam", "lr": 0.01}, "train": {"epochs": 1, "seed": 0, "device": "cpu"}}
    run = train(tmp_path, str(write_config(tmp_path, cfg)))
    page = report(run, "predicted-frames", "mse-per-step-section")
    model, _, batches = held_out(run)
    with torch.no_grad():
        out = np.concatenate([model(x).double().numpy() for x, _ in batches])
    truth = np.concatenate([y.double().numpy() for _, y in batches])
    last = np.concatenate([x[:, -1:].double().numpy() for x, _ in batches])
    model_row, base_row = page.body("mse-per-step")
    np.testing.assert_allclose([float(v) for _, v in model_row[1:]], ((out - truth) ** 2).mean(axis=(0, 2, 3, 4)),
                               atol=1e-6)  # eval_report rounds to 6 decimals
    np.testing.assert_allclose([float(v) for _, v in base_row[1:]], ((last - truth) ** 2).mean(axis=(0, 2, 3, 4)),
                               atol=1e-6)


def test_reconstruction_page_shows_the_models_reconstructions(tmp_path):
    run = train(tmp_path, str(REPO / "configs" / "conv_autoencoder_mnist.yaml"), "data.subset=64",
                "data.val_fraction=0.25", "train.epochs=1", "data.batch_size=32", "train.device=cpu",
                "model.options.width=4", "train.denoise=null")
    page = report(run, "reconstructions")
    model, _, batches = held_out(run)
    x = batches[0][0][:1].float()
    with torch.no_grad():
        expected = (model(x).clamp(0, 1)[0, 0] * 255 + 0.5).floor().numpy()
    with Image.open(io.BytesIO(page.sections["reconstructions"][0])) as im:
        grid = np.asarray(im.convert("L"), dtype=np.float64)
    h = x.shape[-1]
    shown = grid[2 + (h + 2):2 + (h + 2) + h, 2:2 + h]  # second row (no noise: input, reconstruction), first image
    np.testing.assert_allclose(shown, expected, atol=1)


# --------------------------------------------------------------------------- slow: detection, instance, gan


@pytest.mark.slow  # a detector's training and pycocotools: ~30 s
@pytest.mark.parametrize("task", ["detection", "instance"])
def test_detection_pages_ap_per_class_is_torchmetrics_on_the_models_boxes(tmp_path, task):
    from torchmetrics.detection import MeanAveragePrecision

    extra = (["task=instance", "model.name=mask_rcnn", "model.backbone=resnet18", "data.subset=16",
              "augment.scale_jitter=0", "train.epochs=1", "data.batch_size=8"] if task == "instance" else
             ["data.subset=32", "train.epochs=1", "data.batch_size=16"])
    run = train(tmp_path, str(REPO / "configs" / "detect_shapes.yaml"), "data.image_size=64", "train.device=cpu",
                *extra)
    page = report(run, "detections")
    model, info, batches = held_out(run)
    segm = task == "instance"
    metric = MeanAveragePrecision(iou_type="segm" if segm else "bbox", iou_thresholds=[0.5], class_metrics=True)
    with torch.no_grad():
        for x, targets in batches:
            preds = [{"boxes": p["boxes"], "scores": p["scores"], "labels": p["labels"],
                      **({"masks": p["masks"][:, 0] > 0.5} if segm else {})} for p in model(x)]
            truth = [{"boxes": t["boxes"], "labels": t["labels"], **({"masks": t["masks"].bool()} if segm else {})}
                     for t in targets]
            metric.update(preds, truth)
    r = metric.compute()
    ap = dict(zip(r["classes"].reshape(-1).tolist(), r["map_per_class"].reshape(-1).tolist()))
    for c, row in enumerate(page.body("per-class-ap")):
        want = ap.get(c, -1)
        assert (row[1][1] is None) if want < 0 else abs(float(row[1][1]) - round(want, 4)) < 1e-9


@pytest.mark.slow  # a classifier for the FID and a GAN: ~25 s
def test_gan_page_grid_is_cnnkit_generates(tmp_path):
    clf = train(tmp_path / "clf", "data.subset=64", "train.epochs=1", "train.device=cpu")
    run = train(tmp_path, str(REPO / "configs" / "dcgan_mnist.yaml"), "data.subset=64", "data.val_fraction=0.1",
                "train.epochs=1", "data.batch_size=16", "train.device=cpu",
                "model.options={latent_dim: 8, features_g: 4, features_d: 4}", f"train.fid_classifier={clf}")
    page = report(run, "samples")
    assert main(["generate", str(run), "--seed", "0", "--save", str(tmp_path / "grid.png")]) == 0
    with Image.open(tmp_path / "grid.png") as a, Image.open(io.BytesIO(page.sections["samples"][0])) as b:
        np.testing.assert_array_equal(np.asarray(a.convert("RGB")), np.asarray(b.convert("RGB")))
    final = json.loads((run / "final.json").read_text())
    fid = {row[0][0]: row[1][0] for row in page.tables["gan-fid"]}
    assert float(fid["fid"]) == pytest.approx(final["fid"], rel=1e-3)
