"""Segmentation through the real commands: ``cnnkit train``, ``eval --format json``, ``predict`` (JSON and
saved masks), ``export --format onnx`` and predict with the ONNX file, on the generated shapes set and
on a mask folder; the metrics recomputed independently from the saved model's own predictions."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cnnkit.cli import main

REPO = Path(__file__).resolve().parents[2]
RECIPE = REPO / "configs" / "segment_shapes.yaml"
FAST = ["data.subset=24", "data.image_size=64", "train.epochs=2", "data.batch_size=8", "train.device=cpu",
        "model.options.width=8", "model.options.depth=2"]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("seg")
    assert main(["train", str(RECIPE), *FAST, f"train.runs_dir={root}", "--quiet"]) == 0
    (run_dir,) = [p for p in root.iterdir() if p.is_dir()]
    return run_dir


def test_train_writes_miou_and_dice_and_picks_best_on_miou(run):
    final = json.loads((run / "final.json").read_text())
    assert final["task"] == "segmentation"
    assert final["classes"] == ["background", "circle", "square", "triangle"]
    for k in ("miou", "dice", "val_miou", "val_dice", "val_pixel_accuracy", "best_val_miou"):
        assert k in final
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    best = max(range(len(rows)), key=lambda i: (rows[i]["val_miou"], -i))
    assert final["best_epoch"] == best + 1
    assert final["miou"] == rows[best]["val_miou"]


def test_eval_json_equals_a_confusion_matrix_counted_from_the_predictions(run, capsys):
    from cnnkit.data import load_data
    from cnnkit.inference import load_run_model
    from cnnkit.tasks.segmentation import segment

    capsys.readouterr()
    assert main(["eval", str(run), "--format", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    for k in ("pixel_accuracy", "miou", "dice", "per_class", "n_images", "confusion_matrix"):
        assert k in out
    model, info = load_run_model(run)
    cfg, task = info["config"], info["task"]
    val = load_data(cfg.data, task=cfg.task).val
    tf = task.transform(train=False)
    mean = torch.tensor(info["mean"]).view(-1, 1, 1)
    std = torch.tensor(info["std"]).view(-1, 1, 1)
    k = len(info["classes"])
    cm = np.zeros((k, k), dtype=np.int64)
    model.eval()
    for i in range(len(val)):
        image, mask = tf(*val[i])
        x = ((image.float() / 255 - mean) / std)[None]
        with torch.no_grad():
            pred = segment(model, x).argmax(1)[0].numpy()
        m = mask.numpy()
        np.add.at(cm, (m[m != 255], pred[m != 255]), 1)
    assert out["confusion_matrix"] == cm.tolist()
    assert out["n_images"] == len(val)
    tp = np.diag(cm)
    union = cm.sum(0) + cm.sum(1) - tp
    iou = tp[union > 0] / union[union > 0]
    assert out["miou"] == pytest.approx(iou.mean(), abs=1e-9)
    assert out["pixel_accuracy"] == pytest.approx(tp.sum() / cm.sum(), abs=1e-12)
    names = info["classes"]
    for c in range(k):
        if union[c]:
            assert out["per_class"][names[c]]["iou"] == pytest.approx(tp[c] / union[c], abs=1e-9)
            assert out["per_class"][names[c]]["dice"] == pytest.approx(2 * tp[c] / (union[c] + tp[c]), abs=1e-9)


def test_predict_saves_masks_at_the_images_own_size_and_onnx_agrees(run, tmp_path, capsys):
    rng = np.random.default_rng(0)
    files = []
    for name, (h, w) in {"a.png": (50, 90), "b.png": (64, 64)}.items():
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(tmp_path / name)
        files.append(str(tmp_path / name))
    capsys.readouterr()
    assert main(["predict", str(run), *files, "--format", "json", "--save", str(tmp_path / "out")]) == 0
    torch_out = json.loads(capsys.readouterr().out)
    for r, (h, w) in zip(torch_out, [(50, 90), (64, 64)]):
        mask = np.asarray(Image.open(r["mask"]))
        assert mask.shape == (h, w) and r["size"] == [h, w]
        assert Image.open(r["overlay"]).size == (w, h)
        shares = np.bincount(mask.ravel(), minlength=4) / mask.size
        assert list(r["shares"].values()) == pytest.approx(shares.tolist(), abs=1e-6)
    assert main(["export", str(run), "--format", "onnx", "--out", str(tmp_path / "m.onnx")]) == 0
    capsys.readouterr()
    assert main(["predict", str(tmp_path / "m.onnx"), *files, "--format", "json", "--save",
                 str(tmp_path / "onnx")]) == 0
    onnx_out = json.loads(capsys.readouterr().out)
    for a, b in zip(torch_out, onnx_out):
        ma, mb = np.asarray(Image.open(a["mask"])), np.asarray(Image.open(b["mask"]))
        assert (ma == mb).mean() > 0.999  # the same network; float rounding may flip a near-tie pixel


def _mask_folder(root: Path, values: list[int]) -> Path:
    (root / "image").mkdir(parents=True)
    (root / "label").mkdir()
    rng = np.random.default_rng(1)
    for i in range(6):
        Image.fromarray(rng.integers(0, 255, (32, 32), dtype=np.uint8)).save(root / "image" / f"{i}.png")
        label = np.full((32, 32), values[0], dtype=np.uint8)
        label[8:24, 8:24] = values[1]
        Image.fromarray(label).save(root / "label" / f"{i}.png")
    return root


def test_a_mask_folder_trains_and_a_bad_mask_value_is_exit_2(tmp_path, capsys):
    data = _mask_folder(tmp_path / "ok", [0, 255])
    args = ["train", str(RECIPE), "data.name=masks", f"data.path={data}", "data.image_size=null", "data.subset=null",
            "train.epochs=1", "model.options.width=4", "model.options.depth=2", "data.batch_size=4",
            "augment.vflip=false", f"train.runs_dir={tmp_path / 'runs'}", "--quiet"]
    assert main(args) == 0
    (run_dir,) = list((tmp_path / "runs").iterdir())
    assert json.loads((run_dir / "final.json").read_text())["classes"] == ["background", "foreground"]
    # Values 0 and 7 with two named classes: 7 has no class.
    bad = _mask_folder(tmp_path / "bad", [0, 7])
    capsys.readouterr()
    code = main([*args[:3], f"data.path={bad}", "data.class_names=[bg,fg]", *args[4:]])
    err = capsys.readouterr().err
    assert code == 2 and "7" in err and "Traceback" not in err


def test_segmentation_options_are_refused_elsewhere_and_bad_ones_named(tmp_path, capsys):
    capsys.readouterr()
    assert main(["train", str(RECIPE), "train.loss=mse", f"train.runs_dir={tmp_path}", "--quiet"]) == 2
    assert "not a segmentation loss" in capsys.readouterr().err
    assert main(["train", str(REPO / "configs" / "lenet5_mnist5k.yaml"), "train.loss=dice", f"train.runs_dir={tmp_path}", "--quiet"]) == 2
    assert "segmentation loss" in capsys.readouterr().err
    assert main(["train", str(RECIPE), "data.name=mnist5k", f"train.runs_dir={tmp_path}", "--quiet"]) == 2
    assert "task segmentation needs masks" in capsys.readouterr().err
