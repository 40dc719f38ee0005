"""Detection through the real commands: ``cnnkit train``, ``eval --format json`` and ``predict`` on the
synthetic shapes set, checked against pycocotools' COCOeval run on the same model and held-out images,
and boxes mapped back to the original image's pixels by hand."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cnnkit.cli import main

REPO = Path(__file__).resolve().parents[2]
RECIPE = REPO / "configs" / "detect_shapes.yaml"
FAST = ["data.subset=48", "data.image_size=64", "train.epochs=2", "data.batch_size=16", "train.device=cpu"]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("det")
    assert main(["train", str(RECIPE), *FAST, f"train.runs_dir={root}", "--quiet"]) == 0
    (run_dir,) = [p for p in root.iterdir() if p.is_dir()]
    return run_dir


def test_train_writes_map_and_picks_best_on_map_50(run):
    final = json.loads((run / "final.json").read_text())
    assert final["task"] == "detection"
    for k in ("val_map", "val_map_50", "val_map_75", "best_val_map_50"):
        assert k in final
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all("val_map_50" in r for r in rows)
    best = max(range(2), key=lambda i: (rows[i]["val_map_50"] or -1.0, -i))
    assert final["best_epoch"] == best + 1


def test_eval_json_matches_cocoeval_on_the_same_images(run, capsys):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    from cnnkit.data import load_data
    from cnnkit.inference import load_run_model

    capsys.readouterr()
    assert main(["eval", str(run), "--format", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    for k in ("map", "map_50", "map_75", "per_class", "n_images", "n_boxes"):
        assert k in out
    model, info = load_run_model(run)
    cfg, task = info["config"], info["task"]
    assert set(out["per_class"]) == set(info["classes"])
    val = load_data(cfg.data).val
    tf = task.transform(train=False)
    images, anns, dets = [], [], []
    mean = torch.tensor(info["mean"]).view(3, 1, 1)
    std = torch.tensor(info["std"]).view(3, 1, 1)
    model.conf = 0.001
    for i in range(len(val)):
        x, t = tf(*val[i])
        images.append({"id": i, "width": x.shape[-1], "height": x.shape[-2]})
        for b, c in zip(t["boxes"].tolist(), t["labels"].tolist()):
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": int(c), "iscrowd": 0,
                         "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]], "area": (b[2] - b[0]) * (b[3] - b[1])})
        with torch.no_grad():
            p = model(((x.float() / 255 - mean) / std)[None])[0]
        for b, s, c in zip(p["boxes"].tolist(), p["scores"].tolist(), p["labels"].tolist()):
            dets.append({"image_id": i, "category_id": int(c), "score": s,
                         "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]]})
    assert out["n_images"] == len(val) and out["n_boxes"] == len(anns)
    coco = COCO()
    coco.dataset = {"images": images, "annotations": anns,
                    "categories": [{"id": i} for i in range(len(info["classes"]))]}
    coco.createIndex()
    if not dets:
        assert out["map_50"] in (0.0, None)
        return
    ev = COCOeval(coco, coco.loadRes(dets), "bbox")
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    assert out["map"] == pytest.approx(max(ev.stats[0], 0.0), abs=1e-3)
    assert out["map_50"] == pytest.approx(max(ev.stats[1], 0.0), abs=1e-3)


def test_predict_gives_boxes_in_the_original_pixels_and_draws_them(run, tmp_path, capsys):
    from cnnkit.inference import load_run_model, load_image, normalise
    from cnnkit.tasks.detection import detect

    rng = np.random.default_rng(0)
    arr = (rng.random((90, 150, 3)) * 60).astype(np.uint8)  # a dim, wide image (not the training size)
    arr[20:60, 30:80] = [250, 40, 40]
    f = tmp_path / "scene.png"
    Image.fromarray(arr).save(f)
    capsys.readouterr()
    assert main(["predict", str(run), str(f), "--format", "json", "--conf", "0.01", "--save",
                 str(tmp_path / "drawn")]) == 0
    (res,) = json.loads(capsys.readouterr().out)
    assert res["file"] == str(f)
    # By hand: the model on the resized image, boxes scaled by (150 / 64, 90 / 64).
    model, info = load_run_model(run)
    x = torch.from_numpy(normalise(load_image(f, info["input_shape"])[None], info["mean"], info["std"]))
    ref = detect(model, x, 0.01, 0.6)[0]
    got = torch.tensor([d["box"] for d in res["detections"]]).reshape(-1, 4)
    want = ref["boxes"] * torch.tensor([150 / 64, 90 / 64, 150 / 64, 90 / 64])
    assert got.shape == want.shape
    assert torch.allclose(got, want, atol=0.01)
    assert all(0 <= d["box"][0] <= d["box"][2] <= 150 and 0 <= d["box"][1] <= d["box"][3] <= 90
               for d in res["detections"])
    assert [d["class"] for d in res["detections"]] == [info["classes"][int(c)] for c in ref["labels"]]
    with Image.open(res["saved"]) as im:
        assert im.size == (150, 90)


def test_predict_thresholds_are_checked(run, tmp_path, capsys):
    f = tmp_path / "x.png"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(f)
    assert main(["predict", str(run), str(f), "--conf", "1.5"]) == 2
    assert "--conf" in capsys.readouterr().err


def test_onnx_export_carries_boxes_and_scores_and_predicts_the_same(run, tmp_path, capsys):
    import onnxruntime as ort

    from cnnkit.inference import load_run_model
    from cnnkit.models.detection.yolo import PreNMS

    out = tmp_path / "det.onnx"
    assert main(["export", str(run), "--format", "onnx", "--out", str(out)]) == 0
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [o.name for o in sess.get_outputs()] == ["boxes", "scores"]
    model, info = load_run_model(run)
    x = torch.randn(3, *info["input_shape"], generator=torch.Generator().manual_seed(0))
    boxes, scores = sess.run(None, {"input": x.numpy()})
    with torch.no_grad():
        ref_boxes, ref_scores = PreNMS(model)(x)
    assert np.abs(boxes - ref_boxes.numpy()).max() < 1e-3 and np.abs(scores - ref_scores.numpy()).max() < 1e-5
    rng = np.random.default_rng(1)
    f = tmp_path / "scene.png"
    arr = (rng.random((70, 110, 3)) * 255).astype(np.uint8)
    Image.fromarray(arr).save(f)
    capsys.readouterr()
    assert main(["predict", str(run), str(f), "--format", "json", "--conf", "0.01"]) == 0
    from_run = json.loads(capsys.readouterr().out)
    assert main(["predict", str(out), str(f), "--format", "json", "--conf", "0.01"]) == 0
    from_onnx = json.loads(capsys.readouterr().out)
    a, b = from_run[0]["detections"], from_onnx[0]["detections"]
    assert [d["class"] for d in a] == [d["class"] for d in b]
    assert np.allclose([d["box"] for d in a], [d["box"] for d in b], atol=0.05) if a else not b
    assert main(["export", str(run), "--format", "torchscript"]) == 2


def test_tune_searches_a_detector_on_its_own_metric(tmp_path, capsys):
    import optuna

    space = tmp_path / "space.yaml"
    space.write_text("optim.lr: [0.004, 0.001]\n")
    assert main(["tune", str(RECIPE), *FAST, "train.epochs=1", f"train.runs_dir={tmp_path / 'runs'}", "--space",
                 str(space), "--sampler", "grid", "--study", "det"]) == 0
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(tmp_path / "runs" / "det.journal")))
    study = optuna.load_study(study_name="det", storage=storage)
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert sorted(t.params["optim.lr"] for t in done) == [0.001, 0.004]
    for t in done:  # each trial's value is its run's best val_map_50
        final = json.loads((Path(t.user_attrs["run_dir"]) / "final.json").read_text())
        assert t.value == pytest.approx(final["best_val_map_50"])


def test_detection_only_augmentation_is_refused_for_classification(tmp_path, capsys):
    lenet = REPO / "configs" / "lenet5_mnist5k.yaml"
    assert main(["train", str(lenet), "augment.scale_jitter=0.2", "train.epochs=1", "data.subset=64",
                 f"train.runs_dir={tmp_path}", "--quiet"]) == 2
    assert "augment.scale_jitter=0.2 is a detection augmentation" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # refused before a run folder was made


def test_a_model_of_the_wrong_task_is_refused_before_training(tmp_path, capsys):
    assert main(["train", str(RECIPE), *FAST, "model.name=resnet20", f"train.runs_dir={tmp_path}", "--quiet"]) == 2
    assert "is a classification model" in capsys.readouterr().err
    assert main(["train", str(RECIPE), *FAST, "model.name=null", "model.layers=[{conv: {out: 4, kernel: 3}}, flatten,"
                 " {dense: 3}]", f"train.runs_dir={tmp_path}", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "task detection needs a detector: model.name=" in err and "yolo_n" in err and "faster_rcnn" in err
    assert "move it to model.backbone" in err
    assert not any(tmp_path.iterdir())


def test_lr_find_sweeps_a_detector_on_its_own_losses(tmp_path, capsys):
    """The range test trains the detector on the sum of its losses: at the smallest rates the loss is
    the untrained detector's (box + class, well above 1), and it falls before the sweep's end."""
    capsys.readouterr()
    assert main(["lr-find", str(RECIPE), *FAST, "--steps", "30", "--plot", str(tmp_path / "lr.png"),
                 "--format", "json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["losses"][0] > 1.0 and min(r["smoothed"]) < r["smoothed"][0]
    assert r["lrs"][0] <= r["suggestion"] <= r["lrs"][-1]


def test_compress_refuses_a_detection_run_with_exit_2(run, capsys):
    assert main(["compress", str(run), "--prune", "0.5"]) == 2
    assert "works on classification runs" in capsys.readouterr().err
