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
