"""``cnnkit eval RUN --shift N``: the held-out images moved N pixels (image i right, down, left or up by
i mod 4), scored with the run's model; checked against images moved by NumPy slicing and the model's
own predictions."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from cnnkit.cli import main
from cnnkit.data.augment import shift_images


def numpy_shift(img: np.ndarray, dy: int, dx: int) -> np.ndarray:
    out = np.zeros_like(img)
    h, w = img.shape[-2:]
    ys, yd = (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (slice(-dy, h), slice(0, h + dy))
    xs, xd = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
    out[..., yd, xd] = img[..., ys, xs]
    return out


def test_shift_images_moves_each_image_its_way():
    rng = np.random.default_rng(0)
    images = torch.from_numpy(rng.integers(0, 255, (9, 1, 7, 7), dtype=np.uint8))
    moved = shift_images(images, 2).numpy()
    for i, (dy, dx) in enumerate(([(0, 2), (2, 0), (0, -2), (-2, 0)] * 3)[:9]):
        assert np.array_equal(moved[i], numpy_shift(images[i].numpy(), dy, dx)), i
    assert torch.equal(shift_images(images, 0), images)
    assert shift_images(images, 7).sum() == 0          # moved wholly out of the frame


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("shift")
    assert main(["train", "data.subset=300", "train.epochs=2", "train.device=cpu", f"train.runs_dir={tmp}",
                 "--quiet"]) == 0
    return next(p for p in tmp.iterdir() if p.is_dir())


def test_eval_shift_scores_the_moved_images(run, capsys):
    from cnnkit.data import load_data
    from cnnkit.inference import load_run_model

    capsys.readouterr()
    assert main(["eval", str(run), "--shift", "4", "--format", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    model, info = load_run_model(run)
    val = load_data(info["config"].data, task="classification").val
    images = val.images.numpy()
    moved = np.stack([numpy_shift(im, *[(0, 4), (4, 0), (0, -4), (-4, 0)][i % 4]) for i, im in enumerate(images)])
    x = (torch.from_numpy(moved).float() / 255 - torch.tensor(info["mean"]).view(1, -1, 1, 1)) \
        / torch.tensor(info["std"]).view(1, -1, 1, 1)
    with torch.no_grad():
        pred = model(x).argmax(1)
    assert out["shift"] == 4 and out["n"] == len(images)
    assert out["accuracy"] == pytest.approx(int((pred == val.labels).sum()) / len(images), abs=1e-12)


def test_eval_shift_refusals(run, capsys):
    capsys.readouterr()
    assert main(["eval", str(run), "--shift", "28"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "0 to 27" in err and err.count("\n") == 1
