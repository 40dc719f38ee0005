"""``train.log: [tensorboard]``: the event files hold each epoch's scalars, equal to metrics.jsonl, read
back with tensorboard's own reader; the graph is there for an image model."""

from __future__ import annotations

import json

import pytest

from cnnkit.cli import main


def test_tensorboard_scalars_match_the_metrics_log(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    assert main(["train", "data.subset=200", "train.epochs=3", "train.device=cpu", "train.log=[tensorboard]",
                 f"train.runs_dir={tmp_path}", "--quiet"]) == 0
    run = next(p for p in tmp_path.iterdir() if p.is_dir())
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    for key, tag in (("train_loss", "train/loss"), ("val_accuracy", "val/accuracy"), ("lr", "lr")):
        scalars = events.Scalars(tag)
        assert [s.step for s in scalars] == [r["epoch"] for r in rows]
        assert [s.value for s in scalars] == pytest.approx([r[key] for r in rows], rel=1e-6)
    assert events.Graph() is not None


def test_unknown_log_is_refused(tmp_path, capsys):
    capsys.readouterr()
    assert main(["train", "train.log=[wandb]", f"train.runs_dir={tmp_path}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "tensorboard" in err and "wandb" in err


def test_tensorboard_images_are_the_filters_and_feature_maps(tmp_path):
    """The filter image of the last epoch is the saved model's first convolution, stretched per filter;
    feature maps are logged for each epoch."""
    import io

    import numpy as np
    import torch
    from PIL import Image
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    assert main(["train", "data.subset=200", "train.epochs=2", "train.device=cpu", "train.log=[tensorboard]",
                 "train.report=false", f"train.runs_dir={tmp_path}", "--quiet"]) == 0
    run = next(p for p in tmp_path.iterdir() if p.is_dir())
    events = EventAccumulator(str(run / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    tags = events.Tags()["images"]
    assert "filters/conv1" in tags and "feature_maps/conv1" in tags and "feature_maps/conv2" in tags
    assert [e.step for e in events.Images("feature_maps/conv2")] == [1, 2]
    last = events.Images("filters/conv1")[-1]
    grid = np.asarray(Image.open(io.BytesIO(last.encoded_image_string)).convert("L"), dtype=np.float64) / 255
    w = torch.load(run / "checkpoints" / "last.pt", weights_only=True)["model"]["conv1.weight"][:, 0].double()
    assert grid.shape == (1 + 5 + 1, 1 + 6 * (5 + 1))  # one row of 6 filters of 5x5, a pixel of padding each
    for i, f in enumerate(w):
        lo, hi = f.min(), f.max()
        expected = ((f - lo) / (hi - lo)).numpy()
        np.testing.assert_allclose(grid[1:6, 1 + 6 * i:6 + 6 * i], expected, atol=1 / 255 + 1e-9)
