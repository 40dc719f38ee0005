"""``cnnkit generate``: a seeded grid of new images from a gan or a vae run, written atomically; other runs
and bad options exit 2 with one ``error:`` line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cnnkit.cli import main

REPO = Path(__file__).resolve().parents[2]
TINY = ["data.subset=32", "data.val_fraction=0.02", "train.epochs=1", "data.batch_size=16", "train.device=cpu",
        "--quiet"]


def train_one(root: Path, *args: str) -> Path:
    assert main(["train", *args, *TINY, f"train.runs_dir={root}"]) == 0
    (run_dir,) = [p for p in root.iterdir() if p.is_dir()]
    return run_dir


@pytest.fixture(scope="module")
def vae_run(tmp_path_factory) -> Path:
    return train_one(tmp_path_factory.mktemp("vae"), str(REPO / "configs" / "conv_autoencoder_mnist.yaml"),
                     "model.name=vae", "model.options={latent_dim: 4, width: 4}", "train.denoise=null")


@pytest.fixture(scope="module")
def gan_run(tmp_path_factory) -> Path:
    return train_one(tmp_path_factory.mktemp("gan"), str(REPO / "configs" / "dcgan_mnist.yaml"),
                     "model.options={latent_dim: 8, features_g: 4, features_d: 4}")


@pytest.mark.parametrize("which", ["vae_run", "gan_run"])
def test_same_seed_same_file_and_the_grid_holds_the_models_samples(which, request, tmp_path, capsys):
    from cnnkit.inference import load_run_model

    run = request.getfixturevalue(which)
    a, b, c = tmp_path / "a.png", tmp_path / "b.png", tmp_path / "c.png"
    assert main(["generate", str(run), "--n", "6", "--nrow", "3", "--seed", "7", "--save", str(a)]) == 0
    assert main(["generate", str(run), "--n", "6", "--nrow", "3", "--seed", "7", "--save", str(b)]) == 0
    assert main(["generate", str(run), "--n", "6", "--nrow", "3", "--seed", "8", "--save", str(c)]) == 0
    assert str(a) in capsys.readouterr().out
    assert a.read_bytes() == b.read_bytes() and a.read_bytes() != c.read_bytes()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp file left behind
    grid = np.asarray(Image.open(a).convert("L"), dtype=np.float64) / 255.0
    assert grid.shape == (2 * 30 + 2, 3 * 30 + 2)  # 2 rows of 3 images of 28 px, 2 px padding
    # the second image of the first row is the model's second sample for that seed, in [0, 1]
    model, _ = load_run_model(run)
    with torch.no_grad():
        samples = model.sample(6, torch.Generator().manual_seed(7))
    if which == "gan_run":
        samples = model.to_unit(samples)
    expected = samples[1, 0].clamp(0, 1).numpy()
    np.testing.assert_allclose(grid[2:30, 32:60], expected, atol=1 / 255 + 1e-6)


def test_a_classification_run_is_refused(tmp_path, capsys):
    run = train_one(tmp_path / "runs")
    capsys.readouterr()
    assert main(["generate", str(run), "--save", str(tmp_path / "g.png")]) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "is a classification run" in err and "gan run" in err
    assert not (tmp_path / "g.png").exists()


def test_an_autoencoder_run_cannot_sample(tmp_path, capsys):
    run = train_one(tmp_path / "runs", str(REPO / "configs" / "conv_autoencoder_mnist.yaml"),
                    "model.options={width: 4}")
    capsys.readouterr()
    assert main(["generate", str(run), "--save", str(tmp_path / "g.png")]) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "reconstruction run of conv_autoencoder" in err


@pytest.mark.parametrize("args, words", [
    (["--n", "0"], "--n must be at least 1"),
    (["--nrow", "0"], "--nrow must be at least 1"),
    (["--save", "grid.txt"], "give a .png or .jpg file"),
    (["--save", "no/such/folder/grid.png"], "does not exist"),
])
def test_bad_options_exit_2(gan_run, tmp_path, capsys, monkeypatch, args, words):
    monkeypatch.chdir(tmp_path)
    argv = ["generate", str(gan_run)] + (args if "--save" in args else [*args, "--save", "g.png"])
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and words in err
