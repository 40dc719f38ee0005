"""Reconstruction through the real commands: ``cnnkit train`` (a denoising conv_autoencoder and a vae),
``eval --format json``, ``predict --save`` and the encoder as a classifier backbone. The metrics are
recomputed by hand (NumPy) from the saved model's outputs and from the written PNGs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cnnkit.cli import main

REPO = Path(__file__).resolve().parents[2]
RECIPE = REPO / "configs" / "conv_autoencoder_mnist.yaml"
FAST = ["data.subset=96", "data.val_fraction=0.04", "train.epochs=2", "data.batch_size=32", "train.device=cpu",
        "model.options.width=8", "data.eval_batch_size=64"]


def only_run(root: Path) -> Path:
    (run_dir,) = [p for p in root.iterdir() if p.is_dir()]
    return run_dir


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ae")
    assert main(["train", str(RECIPE), *FAST, f"train.runs_dir={root}", "--quiet"]) == 0
    return only_run(root)


def psnr_by_hand(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of one image against another, both in [0, 1]."""
    return float(10.0 * np.log10(1.0 / np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)))


def val_images(run: Path) -> np.ndarray:
    from cnnkit.config import config_from, read_yaml
    from cnnkit.data import load_data

    cfg = config_from(read_yaml(run / "config.yaml"))
    return load_data(cfg.data, task=cfg.task).val.images.numpy().astype(np.float32) / 255.0


def test_final_json_holds_psnr_ssim_and_the_noisy_baseline(run):
    final = json.loads((run / "final.json").read_text())
    assert final["task"] == "reconstruction"
    for k in ("val_mse", "val_psnr", "val_ssim", "val_noisy_psnr", "best_val_psnr"):
        assert isinstance(final[k], float), k
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    best = max(range(len(rows)), key=lambda i: (rows[i]["val_psnr"], -i))
    assert final["best_epoch"] == best + 1
    # the validation noise is seeded: the noisy baseline is the same number every epoch
    assert rows[0]["val_noisy_psnr"] == rows[-1]["val_noisy_psnr"]


def test_eval_metrics_equal_numpy_on_the_models_outputs(run, capsys):
    from cnnkit.inference import load_run_model
    from cnnkit.models.generative import corrupt

    capsys.readouterr()
    assert main(["eval", str(run), "--format", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    model, info = load_run_model(run)
    cfg = info["config"]
    clean = val_images(run)
    # the validation noise, drawn as documented: batch by batch from a CPU generator seeded by train.seed
    gen = torch.Generator().manual_seed(cfg.train.seed)
    bs = cfg.data.eval_batch_size
    noisy = np.concatenate([corrupt(torch.from_numpy(clean[i:i + bs]), cfg.train.denoise.noise,
                                    cfg.train.denoise.amount, generator=gen).numpy()
                            for i in range(0, len(clean), bs)])
    with torch.no_grad():
        recon = model(torch.from_numpy(noisy)).numpy()
    mse = np.mean((recon.astype(np.float64) - clean) ** 2, axis=(1, 2, 3))
    np.testing.assert_allclose(out["mse"], mse.mean(), rtol=1e-5)
    np.testing.assert_allclose(out["loss"], mse.mean(), rtol=1e-4)  # the MSE loss is the same mean
    np.testing.assert_allclose(out["psnr"], np.mean([psnr_by_hand(r, c) for r, c in zip(recon, clean)]), rtol=1e-5)
    np.testing.assert_allclose(out["noisy_psnr"], np.mean([psnr_by_hand(n, c) for n, c in zip(noisy, clean)]),
                               rtol=1e-5)
    assert 0.0 < out["ssim"] <= 1.0
    assert out["n"] == len(clean) and out["denoise"] == {"noise": "gaussian", "amount": 0.5}


def test_predict_writes_side_by_side_pngs_whose_psnr_matches(run, tmp_path, capsys):
    clean = val_images(run)
    files = []
    for i in range(2):
        f = tmp_path / f"digit{i}.png"
        Image.fromarray((clean[i, 0] * 255).round().astype(np.uint8)).save(f)
        files.append(str(f))
    capsys.readouterr()
    assert main(["predict", str(run), *files, "--save", str(tmp_path / "out"), "--format", "json"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert [r["file"] for r in results] == files
    for r, f in zip(results, files):
        pair = np.asarray(Image.open(r["saved"]), dtype=np.float64) / 255.0
        assert Path(r["saved"]).name == Path(f).stem + "_recon.png"
        assert pair.shape == (28, 56)
        left, right = pair[:, :28], pair[:, 28:]
        np.testing.assert_array_equal(left, np.asarray(Image.open(f), dtype=np.float64) / 255.0)
        # the printed PSNR is the float reconstruction's; the PNG's is within its 8-bit rounding
        assert abs(psnr_by_hand(right, left) - r["psnr"]) < 0.2
        np.testing.assert_allclose(r["mse"], 10 ** (-r["psnr"] / 10), rtol=1e-6)
    capsys.readouterr()
    assert main(["predict", str(run), files[0]]) == 0
    assert "psnr" in capsys.readouterr().out


def test_the_encoder_of_a_run_becomes_a_classifiers_body(run, tmp_path):
    from cnnkit.config import load_config
    from cnnkit.train.setup import build_model, resolve_backbone

    trained = torch.load(run / "checkpoints" / "best.pt", weights_only=True)["model"]
    cfg = resolve_backbone(load_config(None, ["model.name=conv_encoder", f"model.backbone_weights={run}",
                                              "model.init=he_uniform"]))
    assert cfg.model.backbone.name == "conv_autoencoder"
    state = build_model(cfg, (1, 28, 28), 10).state_dict()
    encoder = {k.removeprefix("encoder."): v for k, v in trained.items() if k.startswith("encoder.")}
    assert encoder
    for k, v in encoder.items():  # model.init re-initialises the head, not the loaded encoder
        assert torch.equal(state["body.0." + k], v), k
    # and a whole classification run on it trains
    assert main(["train", "model.name=conv_encoder", f"model.backbone_weights={run}", "data.subset=64",
                 "train.epochs=1", "train.device=cpu", f"train.runs_dir={tmp_path}", "--quiet"]) == 0
    assert json.loads((only_run(tmp_path) / "final.json").read_text())["val_accuracy"] is not None
    # the encoder reads pixels as the autoencoder did: in [0, 1], not standardised
    meta = json.loads((only_run(tmp_path) / "meta.json").read_text())
    assert (meta["mean"], meta["std"]) == ([0.0], [1.0])


def test_a_classification_run_is_refused_as_an_encoder_backbone(tmp_path, capsys):
    assert main(["train", "data.subset=32", "train.epochs=1", "train.device=cpu", f"train.runs_dir={tmp_path}",
                 "--quiet"]) == 0
    capsys.readouterr()
    assert main(["train", "model.name=conv_encoder", f"model.backbone_weights={only_run(tmp_path)}",
                 "train.device=cpu"]) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "is a classification run" in err and "reconstruction run" in err


def test_vae_trains_on_its_elbo(tmp_path):
    from cnnkit.inference import load_run_model
    from cnnkit.models.generative import vae_loss

    assert main(["train", str(RECIPE), *FAST, "model.name=vae", "model.options={latent_dim: 4, width: 8}",
                 "train.denoise=null", f"train.runs_dir={tmp_path}", "--quiet"]) == 0
    run_dir = only_run(tmp_path)
    final = json.loads((run_dir / "final.json").read_text())
    assert final["val_noisy_psnr"] is None and final["val_psnr"] > 0
    model, _ = load_run_model(run_dir)
    x = torch.from_numpy(val_images(run_dir))
    with torch.no_grad():
        mu, logvar = model.encode(x)
        logits = model.decode_logits(mu)
    expected = vae_loss(x, logits, mu, logvar)[0]
    np.testing.assert_allclose(final["val_loss"], float(expected), rtol=1e-4)


@pytest.mark.parametrize("override, words", [
    ("train.denoise.amount=-0.1", "train.denoise.amount"),
    ("train.denoise.noise=blur", "train.denoise.noise"),
    ("train.loss=cross_entropy", "not a reconstruction loss"),
])
def test_bad_settings_exit_2_with_one_error_line(tmp_path, capsys, override, words):
    code = main(["train", str(RECIPE), override, "train.device=cpu", f"train.runs_dir={tmp_path}"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("error:") == 1 and words in err
    assert "Traceback" not in err
