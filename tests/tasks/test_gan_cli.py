"""GAN training through the real commands: ``cnnkit train`` of a tiny dcgan, its validation losses
against BCE computed by hand (NumPy) on the discriminator's logits, the FID against a Fréchet distance
computed with SciPy's sqrtm, resume, the two-optimiser object, and the refusals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from cnnkit.cli import main

REPO = Path(__file__).resolve().parents[2]
RECIPE = REPO / "configs" / "dcgan_mnist.yaml"
FAST = ["data.subset=64", "data.val_fraction=0.05", "train.epochs=2", "data.batch_size=16", "train.device=cpu",
        "data.eval_batch_size=256", "model.options={latent_dim: 8, features_g: 4, features_d: 4}"]


def only_run(root: Path) -> Path:
    (run_dir,) = [p for p in root.iterdir() if p.is_dir()]
    return run_dir


def runs_of(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir())


@pytest.fixture(scope="module")
def classifier_run(tmp_path_factory) -> Path:
    """A small LeNet-5 classification run: the FID's feature extractor (train.fid_classifier)."""
    root = tmp_path_factory.mktemp("clf")
    assert main(["train", "data.subset=64", "train.epochs=1", "train.device=cpu", f"train.runs_dir={root}",
                 "--quiet"]) == 0
    return only_run(root)


@pytest.fixture(scope="module")
def run(tmp_path_factory, classifier_run) -> Path:
    root = tmp_path_factory.mktemp("gan")
    assert main(["train", str(RECIPE), *FAST, f"train.fid_classifier={classifier_run}", f"train.runs_dir={root}",
                 "--quiet"]) == 0
    return only_run(root)


def bce_by_hand(logits: np.ndarray, label: float) -> float:
    """Mean binary cross-entropy of sigmoid(logits) against a constant label, in float64."""
    p = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
    return float(np.mean(-(label * np.log(p) + (1.0 - label) * np.log(1.0 - p))))


def val_unit_images(run: Path) -> torch.Tensor:
    from cnnkit.config import config_from, read_yaml
    from cnnkit.data import load_data

    cfg = config_from(read_yaml(run / "config.yaml"))
    return load_data(cfg.data, task=cfg.task).val.images.float() / 255.0


def test_eval_losses_equal_bce_by_hand_on_the_logits(run, capsys):
    from cnnkit.inference import load_run_model

    capsys.readouterr()
    assert main(["eval", str(run), "--format", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    model, info = load_run_model(run)
    cfg = info["config"]
    real = val_unit_images(run)
    gen = torch.Generator().manual_seed(cfg.train.seed)  # the documented validation noise, batch by batch
    bs = cfg.data.eval_batch_size
    real_logits, fake_logits = [], []
    with torch.no_grad():
        for i in range(0, len(real), bs):
            x = real[i:i + bs]
            z = torch.randn((len(x), model.latent_dim), generator=gen)
            fake_logits.append(model.discriminator(model.generator(z)).numpy())
            real_logits.append(model.discriminator(x * 2 - 1).numpy())  # tanh generator: images in [-1, 1]
    r, f = np.concatenate(real_logits), np.concatenate(fake_logits)
    smooth = 1.0 - cfg.regularization.label_smoothing
    d = bce_by_hand(r, smooth) + bce_by_hand(f, 0.0)
    g = bce_by_hand(f, 1.0)
    # one batch here: the batch means are the means
    assert len(real) <= bs
    np.testing.assert_allclose(out["d_loss"], d, rtol=1e-5)
    np.testing.assert_allclose(out["g_loss"], g, rtol=1e-5)
    np.testing.assert_allclose(out["loss"], d + g, rtol=1e-5)
    np.testing.assert_allclose(out["d_real"], np.mean(1 / (1 + np.exp(-r))), rtol=1e-5)
    np.testing.assert_allclose(out["d_fake"], np.mean(1 / (1 + np.exp(-f))), rtol=1e-5)


@pytest.mark.filterwarnings("ignore::scipy.linalg.LinAlgWarning")  # tiny runs: near-singular covariances
def test_final_fid_equals_a_frechet_distance_by_scipy(run, classifier_run):
    from scipy import linalg

    from cnnkit.inference import load_run_model
    from cnnkit.tasks.image_metrics import classifier_features, features_of

    final = json.loads((run / "final.json").read_text())
    assert final["fid_features"] == str(classifier_run)
    assert final["fid"] > 0 and final["fid_real"] >= 0
    gan, _ = load_run_model(run, which="last")
    clf, info = load_run_model(classifier_run)
    extractor = classifier_features(clf, info["mean"], info["std"])
    real = val_unit_images(run)
    n = len(real) // 2
    assert final["fid_n"] == n
    # as documented: n images from z seeded with 0, against one half of the real images shuffled with seed 0
    fake = (gan.sample(n, torch.Generator().manual_seed(0)) + 1) / 2
    order = torch.randperm(len(real), generator=torch.Generator().manual_seed(0))
    a, b = real[order[:n]], real[order[n:2 * n]]

    def fd(x: torch.Tensor, y: torch.Tensor) -> float:
        fx, fy = features_of(extractor, x).numpy(), features_of(extractor, y).numpy()
        m1, m2 = fx.mean(0), fy.mean(0)
        s1, s2 = np.cov(fx, rowvar=False), np.cov(fy, rowvar=False)
        root = linalg.sqrtm(s1 @ s2).real
        return float(np.sum((m1 - m2) ** 2) + np.trace(s1 + s2 - 2 * root))

    np.testing.assert_allclose(final["fid"], fd(fake, b), rtol=1e-3, atol=1e-6)
    np.testing.assert_allclose(final["fid_real"], fd(a, b), rtol=1e-3, atol=1e-6)


def test_generate_draws_the_same_grid_for_the_same_seed(run, tmp_path, capsys):
    from PIL import Image

    paths = [tmp_path / name for name in ("a.png", "b.png", "c.png")]
    for p, seed in zip(paths, (5, 5, 6)):
        assert main(["generate", str(run), "--n", "9", "--save", str(p), "--seed", str(seed)]) == 0
    assert paths[0].read_bytes() == paths[1].read_bytes()
    assert paths[0].read_bytes() != paths[2].read_bytes()
    # 3 x 3 images of 28 pixels with 2-pixel padding
    assert Image.open(paths[0]).size == (3 * 30 + 2, 3 * 30 + 2)


@pytest.mark.slow  # three small trainings: ~25 s
def test_resume_gives_the_weights_of_an_uninterrupted_run(tmp_path, classifier_run):
    common = [str(RECIPE), *FAST, f"train.fid_classifier={classifier_run}", f"train.runs_dir={tmp_path}", "--quiet"]
    assert main(["train", *common]) == 0
    (whole,) = runs_of(tmp_path)
    assert main(["train", *common, "train.epochs=1"]) == 0
    (part,) = [p for p in runs_of(tmp_path) if p != whole]
    assert main(["train", "--resume", str(part), "train.epochs=2", "--quiet"]) == 0
    a = torch.load(whole / "checkpoints" / "last.pt", weights_only=True)
    b = torch.load(part / "checkpoints" / "last.pt", weights_only=True)
    assert a["model"].keys() == b["model"].keys()
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert set(b["optimizer"]) == {"generator", "discriminator"}
    fa, fb = (json.loads((p / "final.json").read_text()) for p in (whole, part))
    assert fa["fid"] == fb["fid"]


def test_the_optimiser_object_holds_two_adams_and_round_trips():
    from cnnkit.config import load_config
    from cnnkit.models import get_model
    from cnnkit.tasks import create_task

    cfg = load_config(RECIPE, ["optim.lr=0.001"])
    task = create_task(cfg)
    model = get_model("dcgan", latent_dim=4, features_g=4, features_d=4)
    opt = task.make_optimizer(model)
    assert len(opt.param_groups) == 2 and all(g["lr"] == 0.001 and g["betas"] == (0.5, 0.999)
                                              for g in opt.param_groups)
    assert {id(p) for p in opt.generator.param_groups[0]["params"]} == {id(p) for p in model.generator.parameters()}
    x = torch.rand(4, 1, 28, 28)
    out, loss = task.optimize_step(model, x, torch.zeros(4), opt, precision="fp32", scaler=None, clip=None)
    assert torch.isfinite(loss) and set(out) == {"d_loss", "g_loss", "d_real", "d_fake"}
    again = task.make_optimizer(model)
    again.load_state_dict(opt.state_dict())
    s1, s2 = opt.state_dict(), again.state_dict()
    for part in ("generator", "discriminator"):
        for k, st in s1[part]["state"].items():
            assert torch.equal(st["exp_avg"], s2[part]["state"][k]["exp_avg"])
    opt.param_groups[1]["lr"] = 0.5  # the trainer's schedule writes through param_groups
    assert opt.discriminator.param_groups[0]["lr"] == 0.5


def test_gan_under_torchrun_exits_2_before_joining_a_process_group(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["train", str(RECIPE), "train.device=cpu", f"train.runs_dir={tmp_path}"]) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "DistributedDataParallel" in err and "Traceback" not in err
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("override, words", [
    ("optim.name=sgd", "optim.name=adam"),
    ("train.denoise.amount=0.3", "train.denoise corrupts the inputs of task reconstruction"),
    ("model.name=conv_autoencoder", "reconstruction model"),
])
def test_bad_settings_exit_2_with_one_error_line(tmp_path, capsys, override, words):
    code = main(["train", str(RECIPE), override, "train.device=cpu", f"train.runs_dir={tmp_path}"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("error:") == 1 and words in err, err
