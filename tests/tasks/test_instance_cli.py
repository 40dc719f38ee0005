"""Instance segmentation through the real commands (Mask R-CNN on a small backbone, the shapes set):
the mask mAP of ``eval`` recomputed with pycocotools' COCOeval on the same predictions."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from cnnkit.cli import main

REPO = Path(__file__).resolve().parents[2]
RECIPE = REPO / "configs" / "detect_shapes.yaml"
FAST = ["task=instance", "model.name=mask_rcnn", "model.backbone=resnet18", "data.subset=16", "data.image_size=64",
        "train.epochs=1", "data.batch_size=8", "train.device=cpu", "augment.scale_jitter=0"]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("inst")
    assert main(["train", str(RECIPE), *FAST, f"train.runs_dir={root}", "--quiet"]) == 0
    (run_dir,) = [p for p in root.iterdir() if p.is_dir()]
    return run_dir


def test_final_json_and_eval_hold_mask_map(run, capsys):
    final = json.loads((run / "final.json").read_text())
    assert final["task"] == "instance"
    for k in ("mask_map", "mask_map_50", "map", "map_50", "best_val_mask_map_50"):
        assert k in final
    capsys.readouterr()
    assert main(["eval", str(run), "--format", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    for k in ("map", "map_50", "mask_map", "mask_map_50", "per_class", "n_images", "n_boxes"):
        assert k in out


def test_mask_map_equals_cocoeval_segm(run):
    from pycocotools import mask as mask_utils
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    from cnnkit.data import load_data
    from cnnkit.inference import load_run_model

    model, info = load_run_model(run)
    cfg, task = info["config"], info["task"]
    val = load_data(cfg.data, task=cfg.task).val
    tf = task.transform(train=False)
    mean = torch.tensor(info["mean"]).view(3, 1, 1)
    std = torch.tensor(info["std"]).view(3, 1, 1)
    images, anns, dets = [], [], []
    model.eval()
    model.conf = 0.0  # every detection the one-epoch model makes, so that there is something to score
    for i in range(len(val)):
        image, target = tf(*val[i])
        x = ((image.float() / 255 - mean) / std)[None]
        with torch.no_grad():
            p = model(x)[0]
        h, w = image.shape[-2:]
        images.append({"id": i, "height": h, "width": w})
        for m, label in zip(target["masks"], target["labels"]):
            rle = mask_utils.encode(np.asfortranarray(m.numpy().astype(np.uint8)))
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": int(label), "segmentation": rle,
                         "area": float(m.sum()), "bbox": list(mask_utils.toBbox(rle)), "iscrowd": 0})
        for m, s, label in zip(p["masks"], p["scores"], p["labels"]):
            rle = mask_utils.encode(np.asfortranarray((m[0] > 0.5).numpy().astype(np.uint8)))
            dets.append({"image_id": i, "category_id": int(label), "segmentation": rle, "score": float(s)})
    gt = COCO()
    gt.dataset = {"images": images, "annotations": anns,
                  "categories": [{"id": c} for c in range(len(info["classes"]))]}
    gt.createIndex()
    assert dets
    e = COCOeval(gt, gt.loadRes(dets), "segm")
    e.evaluate(), e.accumulate(), e.summarize()
    ours = task.evaluate(model, _loader(val, info, task), torch.device("cpu"))
    assert ours["mask_map"] == pytest.approx(max(e.stats[0], 0.0), abs=1e-4)
    assert ours["mask_map_50"] == pytest.approx(max(e.stats[1], 0.0), abs=1e-4)


def _loader(data, info, task):
    from cnnkit.data.loaders import make_loader

    return make_loader(data, batch_size=8, mean=info["mean"], std=info["std"], shuffle=False, seed=0,
                       device=torch.device("cpu"), augment=None, collate=task.collate,
                       transform=task.transform(train=False))


def test_predict_gives_boxes_with_mask_areas(run, tmp_path, capsys):
    from PIL import Image

    rng = np.random.default_rng(0)
    f = tmp_path / "a.png"
    Image.fromarray(rng.integers(0, 255, (80, 100, 3), dtype=np.uint8)).save(f)
    capsys.readouterr()
    assert main(["predict", str(run), str(f), "--format", "json", "--conf", "0.0"]) == 0
    (out,) = json.loads(capsys.readouterr().out)
    for d in out["detections"]:
        assert set(d) >= {"label", "class", "score", "box", "area"} and d["area"] >= 0
