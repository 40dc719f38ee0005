"""Clips through the real commands: ``task: frames`` (train, eval, ``predict --save``) and ``task: video``
(train, eval, predict), with every figure recomputed independently: the copy-last-frame and blank
baselines from the raw uint8 clips in NumPy, the model's MSE and PSNR from its own outputs, the
binary cross-entropy by its formula, the classifier's probabilities from a softmax of its logits."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml

from cnnkit.cli import main
from cnnkit.data.video import moving_mnist, moving_mnist_clips
from cnnkit.data.video.files import read_clip, write_clip


def write_config(tmp: Path, cfg: dict) -> Path:
    path = tmp / f"cfg{len(list(tmp.glob('cfg*.yaml')))}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def newest_run(runs: Path) -> Path:
    return max((p for p in runs.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime_ns)


FRAMES = {"task": "frames",
          "data": {"name": "moving_mnist", "clips": 24, "frames": 4, "future": 3, "digits": 1, "image_size": 32,
                   "val_fraction": 0.25, "batch_size": 6},
          "model": {"name": "convlstm_frames", "options": {"hidden": [8], "future": 3, "patch": 4}},
          "optim": {"name": "adam", "lr": 0.01},
          "train": {"epochs": 2, "seed": 0, "device": "cpu"}}


@pytest.fixture(scope="module")
def frames_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("frames")
    cfg = json.loads(json.dumps(FRAMES))
    cfg["train"]["runs_dir"] = str(tmp / "runs")
    assert main(["train", str(write_config(tmp, cfg)), "--quiet"]) == 0
    return tmp, newest_run(tmp / "runs")


def val_clips(cfg: dict) -> np.ndarray:
    """The validation clips of the config, rebuilt through the dataset (uint8 (N, T + K, 1, S, S))."""
    from cnnkit.config import config_from
    from cnnkit.data import load_data

    bundle = load_data(config_from(cfg).data, task="frames")
    return bundle.val.clips.numpy()


def test_frames_final_json_holds_the_figures_and_their_baselines(frames_run):
    _, run = frames_run
    final = json.loads((run / "final.json").read_text())
    for key in ("mse", "psnr", "ssim", "baseline_mse", "val_mse", "val_blank_mse"):
        assert key in final and final[key] is not None, key
    clips = val_clips(FRAMES).astype(np.float64) / 255.0
    x, y = clips[:, :4], clips[:, 4:]
    copy_last = np.repeat(x[:, -1:], 3, axis=1)
    assert final["baseline_mse"] == pytest.approx(((copy_last - y) ** 2).mean(), rel=1e-6)
    assert final["val_blank_mse"] == pytest.approx((y ** 2).mean(), rel=1e-6)
    assert final["val_baseline_psnr"] == pytest.approx(10 * math.log10(1 / final["baseline_mse"]), rel=1e-9)

    # the model's MSE and PSNR from its own outputs on the same clips
    from cnnkit.inference import load_run_model

    model, _ = load_run_model(run)
    with torch.no_grad():
        out = model(torch.from_numpy(clips[:, :4]).float()).double().numpy()
    mse = ((out - y) ** 2).mean()
    assert final["mse"] == pytest.approx(mse, rel=1e-5)
    assert final["psnr"] == pytest.approx(10 * math.log10(1 / mse), rel=1e-5)
    assert 0.0 < final["ssim"] <= 1.0


def test_frames_eval_per_step_mse_averages_to_the_mse(frames_run):
    _, run = frames_run
    import io
    from contextlib import redirect_stdout

    buf = io.StringIO()
    with redirect_stdout(buf):
        assert main(["eval", str(run), "--format", "json"]) == 0
    report = json.loads(buf.getvalue())
    assert len(report["mse_per_step"]) == 3
    assert np.mean(report["mse_per_step"]) == pytest.approx(report["mse"], rel=1e-4)
    assert np.mean(report["baseline_mse_per_step"]) == pytest.approx(report["baseline_mse"], rel=1e-4)
    clips = val_clips(FRAMES).astype(np.float64) / 255.0
    by_hand = ((clips[:, 4:] - clips[:, 3:4]) ** 2).mean(axis=(0, 2, 3, 4))
    assert report["baseline_mse_per_step"] == pytest.approx(by_hand.tolist(), abs=2e-6)


def test_frames_predict_scores_a_longer_clip_and_saves_its_strip(frames_run, capsys):
    tmp, run = frames_run
    clip = moving_mnist(1, 6, size=32, digits=1, seed=11)[0]            # 4 in + 2 of truth
    write_clip(tmp / "clip.npy", clip)
    out = tmp / "out"
    out.mkdir()
    capsys.readouterr()
    assert main(["predict", str(run), str(tmp / "clip.npy"), "--save", str(out), "--format", "json"]) == 0
    r = json.loads(capsys.readouterr().out)[0]
    assert (r["frames_in"], r["future"], r["truth_frames"]) == (4, 3, 2)
    from cnnkit.inference import load_run_model

    model, _ = load_run_model(run)
    with torch.no_grad():
        pred = model(torch.from_numpy(clip[None, :4]).float() / 255).double()[0].numpy()
    truth = clip[4:].astype(np.float64) / 255
    assert r["mse"] == pytest.approx(((pred[:2] - truth) ** 2).mean(), rel=1e-5)
    assert r["baseline_mse"] == pytest.approx(((truth - clip[3:4] / 255) ** 2).mean(), rel=1e-6)
    saved = np.load(r["frames_file"])
    assert saved.shape == (3, 1, 32, 32) and saved.dtype == np.uint8
    assert np.abs(saved / 255 - pred).max() <= 0.5 / 255 + 1e-6
    from PIL import Image

    with Image.open(r["saved"]) as im:       # three rows (inputs, predictions, truth) of four frames
        assert im.size == (4 * 34 + 2, 3 * 34 + 2)


def test_bce_is_computed_on_the_logits_through_the_wrapper():
    from cnnkit.config import config_from
    from cnnkit.models.video.frames import convlstm_frames
    from cnnkit.tasks import create_task

    cfg = config_from({**FRAMES, "train": {**FRAMES["train"], "loss": "bce"}})
    task = create_task(cfg)
    model = convlstm_frames(input_size=32, hidden=[4], future=3)
    x, y = torch.rand(2, 4, 1, 32, 32), torch.rand(2, 3, 1, 32, 32)
    out, loss = task.training_step(torch.nn.Sequential(model), x, y, task.make_loss())
    p = model(x).double()
    by_hand = -(y * torch.log(p) + (1 - y) * torch.log(1 - p)).mean()
    assert float(loss.detach()) == pytest.approx(float(by_hand), rel=1e-5)
    assert torch.allclose(out, p.float(), atol=1e-6)
    assert model.emit_logits is False


def test_frames_refusals(tmp_path, capsys):
    def refused(cfg: dict, *words: str) -> None:
        cfg["train"] = {**cfg.get("train", {}), "runs_dir": str(tmp_path / "runs")}
        capsys.readouterr()
        assert main(["train", str(write_config(tmp_path, cfg)), "--quiet"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error:") and err.count("\n") == 1, err
        for w in words:
            assert w in err, (w, err)

    base = json.loads(json.dumps(FRAMES))
    refused({**base, "model": {"name": "convlstm_frames", "options": {"hidden": [8], "future": 2}}},
            "future=2", "data.future=3")
    refused({**base, "train": {**base["train"], "loss": "cross_entropy"}}, "cross_entropy", "mse")
    refused({**base, "augment": {"hflip": True}}, "augment.hflip")
    refused({**base, "data": {"name": "mnist5k"}}, "task frames needs", "moving_mnist")
    refused({**base, "task": "video", "model": {"name": "cnn_lstm_video"}}, "task video needs", "moving_mnist_clips")
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


@pytest.fixture(scope="module")
def video_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("video")
    cfg = {"task": "video",
           "data": {"name": "moving_mnist_clips", "clips": 40, "frames": 4, "digits": 2, "image_size": 32,
                    "val_fraction": 0.25, "batch_size": 8},
           "model": {"name": "cnn_lstm_video"},
           "optim": {"name": "adam", "lr": 0.003},
           "train": {"epochs": 1, "seed": 0, "device": "cpu", "runs_dir": str(tmp / "runs")}}
    assert main(["train", str(write_config(tmp, cfg)), "--quiet"]) == 0
    return tmp, newest_run(tmp / "runs")


def test_video_predict_reads_npy_and_gif_alike_and_gives_the_softmax(video_run, capsys):
    tmp, run = video_run
    clips, _ = moving_mnist_clips(1, 5, size=32, digits=2, seed=3)
    clips[0, 2] = clips[0, 1]                            # a repeated frame, which a GIF writer merges
    write_clip(tmp / "c.npy", clips[0])
    write_clip(tmp / "c.gif", clips[0])
    assert np.array_equal(read_clip(tmp / "c.gif"), clips[0])
    capsys.readouterr()
    assert main(["predict", str(run), str(tmp / "c.npy"), str(tmp / "c.gif"), "--format", "json"]) == 0
    a, b = json.loads(capsys.readouterr().out)
    assert a["frames_used"] == 4 and a["frames_in_file"] == 5
    assert a["probabilities"] == pytest.approx(b["probabilities"], abs=1e-7)
    from cnnkit.inference import load_run_model

    model, _ = load_run_model(run)
    with torch.no_grad():
        probs = F.softmax(model(torch.from_numpy(clips[:1, :4]).float() / 255), 1)[0]
    assert a["probabilities"] == pytest.approx(probs.tolist(), abs=1e-6)
    assert a["top"][0]["label"] == int(probs.argmax())


def test_video_eval_recounts_accuracy_from_the_confusion_matrix(video_run, capsys):
    _, run = video_run
    capsys.readouterr()
    assert main(["eval", str(run), "--format", "json"]) == 0
    r = json.loads(capsys.readouterr().out)
    cm = np.asarray(r["confusion_matrix"])
    assert cm.shape == (10, 10) and cm.sum() == r["n"] == 10
    assert r["accuracy"] == pytest.approx(np.trace(cm) / cm.sum())


def test_clip_files_are_checked(video_run, capsys):
    tmp, run = video_run

    def refused(path, *words):
        capsys.readouterr()
        assert main(["predict", str(run), str(path)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error:") and err.count("\n") == 1, err
        for w in words:
            assert w in err, (w, err)

    np.save(tmp / "small.npy", np.zeros((4, 16, 16), np.uint8))
    refused(tmp / "small.npy", "16x16", "32x32")
    np.save(tmp / "short.npy", np.zeros((2, 32, 32), np.uint8))
    refused(tmp / "short.npy", "2 frames", "4")
    np.save(tmp / "rgb.npy", np.zeros((4, 3, 32, 32), np.uint8))
    refused(tmp / "rgb.npy", "3-channel")
    np.save(tmp / "hot.npy", np.full((4, 32, 32), 2.0))
    refused(tmp / "hot.npy", "[0, 1]")
    (tmp / "clip.txt").write_text("x")
    refused(tmp / "clip.txt", "unknown kind", ".npy")
    refused(tmp / "missing.npy", "does not exist")


def test_summary_of_clip_models(capsys):
    from cnnkit.models import get_model

    capsys.readouterr()
    assert main(["summary", "cnn_lstm_video", "--input", "4,1,32,32", "--format", "json"]) == 0
    s = json.loads(capsys.readouterr().out)
    model = get_model("cnn_lstm_video", num_classes=10, in_chans=1, input_size=32)
    assert s["total_params"] == sum(p.numel() for p in model.parameters())
    assert main(["summary", "cnn_lstm_video", "--input", "1,32,32"]) == 2
    assert "T,C,H,W" in capsys.readouterr().err
