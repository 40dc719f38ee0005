"""fastnet, the CIFAR-10 speed recipe, and the trainer options it brought.

Oracles: parameter counts by hand; the identity map for Dirac-initialised
convolutions; the covariance of whitened patches against the identity (and against
``diag(l / (l + eps))`` from the eigenvalues of patches cut by hand with NumPy);
``x.flip(-1)`` per sample for the alternating flip; NumPy's reflect padding for the
reflect crop; lookahead, the norm-parameter group and ``eval_every`` against
values worked out by hand. Everything runs on the CPU in well under a minute.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cnnkit.config import AugmentConfig, LookaheadConfig, OptimConfig, load_config
from cnnkit.data.augment import alternating_hflip, image_parity, make_batch_augment, make_transforms, random_crop
from cnnkit.errors import UserError
from cnnkit.models import get_model
from cnnkit.models.zoo.fastnet import FastNet, ScaleFreeBatchNorm, WhiteningConv
from cnnkit.train.setup import default_param_groups
from cnnkit.train.trainer import Lookahead, Trainer
from cnnkit.api import train

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "configs" / "cifar10_speed.yaml"
REAL_NPZ = REPO.parent / "shared" / "data" / "cifar10_jpeg_train.npz"


@pytest.fixture(autouse=True)
def _two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(min(2, before))
    yield
    torch.set_num_threads(before)


def _digits(runs: Path, *extra: str, layers: str = "[{conv: {out: 4, kernel: 3}}, relu, flatten, {dense: 10}]"):
    return load_config(None, ["data.name=digits", "model.input=null", f"model.layers={layers}",
                              f"train.runs_dir={runs}", "train.device=cpu", "train.epochs=2", "data.batch_size=64",
                              "optim.lr=0.01", *extra])


# --------------------------------------------------------------------------- the network


def test_fastnet_builds_and_trains_at_32px_with_the_hand_counted_parameters():
    torch.manual_seed(0)
    model = get_model("fastnet", num_classes=10)
    assert isinstance(model, FastNet)
    x = torch.randn(4, 3, 32, 32)
    logits = model(x)
    assert logits.shape == (4, 10)
    F.cross_entropy(logits, torch.tensor([0, 1, 2, 3])).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    # Trained: whitening bias (24), three groups of two bias-free 3x3 convs and two BN shifts, the head.
    whiten = 2 * 3 * 2 * 2
    groups = [(whiten, 64), (64, 256), (256, 256)]
    expected = whiten + sum(cin * cout * 9 + cout * cout * 9 + 2 * cout for cin, cout in groups) + 256 * 10
    assert sum(p.numel() for p in model.parameters()) == expected == 1_971_352
    # Frozen: the whitening filters and the BN scales are buffers, never parameters.
    assert "body.whiten.weight" in dict(model.named_buffers())
    bns = [m for m in model.modules() if isinstance(m, ScaleFreeBatchNorm)]
    assert len(bns) == 6 and all(torch.equal(m.weight, torch.ones_like(m.weight)) for m in bns)
    assert all(m.eps == 1e-12 and m.momentum == 0.4 for m in bns)
    assert model.head.bias is None


def test_identity_initialisation_of_the_convolutions():
    torch.manual_seed(0)
    model = get_model("fastnet", num_classes=10, widths=[8, 16, 16])
    x = torch.randn(2, 16, 9, 9)
    b2 = model.body.block2
    # conv2 is square: every filter starts as the identity, so the conv is the identity map.
    torch.testing.assert_close(b2.conv2(x), x)
    # conv1 (8 -> 16): its first 8 output channels copy the input, the rest are not zero.
    x8 = torch.randn(2, 8, 9, 9)
    out = b2.conv1(x8)
    torch.testing.assert_close(out[:, :8], x8)
    assert out[:, 8:].abs().sum() > 0
    plain = get_model("fastnet", num_classes=10, widths=[8, 16, 16], identity_init=False)
    assert not torch.allclose(plain.body.block2.conv2(x), x)


def _correlated_images(n: int = 64, seed: int = 0) -> torch.Tensor:
    """Smooth, channel-correlated images: neighbouring pixels and channels are far from independent."""
    g = torch.Generator().manual_seed(seed)
    low = torch.randn(n, 3, 8, 8, generator=g)
    x = F.interpolate(low, size=32, mode="bilinear", align_corners=False)
    mix = torch.tensor([[1.0, 0.6, 0.3], [0.5, 1.0, 0.4], [0.2, 0.7, 1.0]])
    x = torch.einsum("oc,nchw->nohw", mix, x)
    return x + 0.1 * torch.randn(x.shape, generator=g) + 0.3


def _patches_by_hand(x: torch.Tensor, k: int) -> np.ndarray:
    a = x.double().numpy()
    win = np.lib.stride_tricks.sliding_window_view(a, (k, k), axis=(2, 3))  # (N, C, H', W', k, k)
    return win.transpose(0, 2, 3, 1, 4, 5).reshape(-1, a.shape[1] * k * k)   # (C, kh, kw) order


def test_whitening_init_gives_whitened_patches():
    x = _correlated_images()
    p = _patches_by_hand(x, 2)
    cov_in = p.T @ p / len(p)
    assert np.abs(cov_in - np.diag(np.diag(cov_in))).max() > 0.3  # the premise: strongly correlated

    # eps -> 0: the first layer's outputs (without bias) have identity covariance over all patches.
    layer = WhiteningConv(3, 2, eps=1e-10)
    layer.init_from_data(x)
    out = F.conv2d(x.double(), layer.weight.double())                          # (N, 24, 31, 31)
    half = out[:, :12].permute(0, 2, 3, 1).reshape(-1, 12).numpy()
    cov = half.T @ half / len(half)
    np.testing.assert_allclose(cov, np.eye(12), atol=2e-3)
    torch.testing.assert_close(out[:, 12:], -out[:, :12])                     # both signs

    # The default eps: diag(l / (l + eps)) with l the eigenvalues of the hand-cut patches, decreasing.
    model = get_model("fastnet", num_classes=10)
    model.init_from_data(x)
    w = model.body.whiten.weight.double()
    out = F.conv2d(x.double(), w)[:, :12].permute(0, 2, 3, 1).reshape(-1, 12).numpy()
    lam = np.sort(np.linalg.eigvalsh(cov_in))[::-1]
    np.testing.assert_allclose(out.T @ out / len(out), np.diag(lam / (lam + 5e-4)), atol=2e-3)


def test_fastnet_state_dict_round_trips_the_whitening_filters():
    a = get_model("fastnet", num_classes=10, widths=[8, 16, 16])
    a.init_from_data(_correlated_images(16))
    b = get_model("fastnet", num_classes=10, widths=[8, 16, 16])
    assert not torch.equal(a.body.whiten.weight, b.body.whiten.weight)
    b.load_state_dict(a.state_dict())
    assert torch.equal(a.body.whiten.weight, b.body.whiten.weight)


# --------------------------------------------------------------------------- augmentation


def _asymmetric_batch(n: int = 64, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, 8, 8), generator=g).float()


def _flipped(out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Per sample: True if out is x mirrored, False if it is x; anything else fails."""
    mirrored = torch.tensor([torch.equal(o, s.flip(-1)) for o, s in zip(out, x)])
    same = torch.tensor([torch.equal(o, s) for o, s in zip(out, x)])
    assert bool((mirrored ^ same).all()), "every sample must be exactly itself or its mirror image"
    return mirrored


def test_alternating_flip_flips_complementary_halves_in_alternate_epochs():
    x = _asymmetric_batch()
    aug = make_batch_augment(AugmentConfig(hflip="alternating"))
    seen = []
    for epoch in range(1, 5):
        aug.set_epoch(epoch)
        seen.append(_flipped(aug(x.clone(), torch.Generator().manual_seed(epoch)), x))
    for a, b in zip(seen, seen[1:]):
        assert torch.equal(b, ~a)            # each image alternates, every epoch
    assert torch.equal(seen[0], seen[2])
    assert 16 <= int(seen[0].sum()) <= 48    # about half in each epoch (binomial(64, 1/2))
    # The rule: flipped in epoch e exactly when key + e is odd.
    assert torch.equal(seen[0], image_parity(x) ^ True)
    # A sample's fate depends only on its pixels: not on its batch, its position or the generator.
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(3))
    aug.set_epoch(1)
    assert torch.equal(_flipped(aug(x[perm], torch.Generator().manual_seed(99)), x[perm]), seen[0][perm])
    assert torch.equal(_flipped(aug(x[:5], torch.Generator()), x[:5]), seen[0][:5])
    assert torch.equal(_flipped(alternating_hflip(x, 2), x), seen[1])


def test_alternating_flip_key_is_taken_before_the_crop_and_the_per_sample_path_flips_at_random():
    x = _asymmetric_batch(32, seed=1)
    plain = make_batch_augment(AugmentConfig(hflip="alternating"))
    both = make_batch_augment(AugmentConfig(hflip="alternating", crop_padding=1))
    for aug in (plain, both):
        aug.set_epoch(3)
    flipped = _flipped(plain(x, torch.Generator().manual_seed(0)), x)
    # The same generator draws the same crop offsets; undo the flip decision by hand and compare.
    g = torch.Generator().manual_seed(0)
    cropped = random_crop(x, 1, g)
    expected = torch.where(flipped[:, None, None, None], cropped.flip(-1), cropped)
    assert torch.equal(both(x, torch.Generator().manual_seed(0)), expected)
    tf = make_transforms(AugmentConfig(hflip="alternating"))
    assert any(type(t).__name__ == "RandomHorizontalFlip" for t in tf.transforms)


def test_reflect_crop_is_a_window_of_the_reflect_padded_image():
    x = _asymmetric_batch(16)
    out = random_crop(x, 2, torch.Generator().manual_seed(0), mode="reflect")
    padded = np.pad(x.numpy(), ((0, 0), (0, 0), (2, 2), (2, 2)), mode="reflect")
    for i in range(len(x)):
        windows = [padded[i, :, dy:dy + 8, dx:dx + 8] for dy in range(5) for dx in range(5)]
        assert any(np.array_equal(out[i].numpy(), w) for w in windows)
    zeros = random_crop(x, 2, torch.Generator().manual_seed(0))
    assert torch.equal(random_crop(x, 2, torch.Generator().manual_seed(0), mode="zeros"), zeros)


def test_trainer_tells_the_augment_the_epoch(tmp_path, monkeypatch):
    import cnnkit.data.loaders as loaders

    calls = []
    real = loaders.make_batch_augment

    def spy(cfg):
        aug = real(cfg)
        if aug is not None:
            inner = aug.set_epoch
            aug.set_epoch = lambda e: (calls.append(e), inner(e))
        return aug

    monkeypatch.setattr(loaders, "make_batch_augment", spy)
    train(_digits(tmp_path, "train.epochs=3", "augment.hflip=alternating"), quiet=True)
    assert calls == [1, 2, 3]


# --------------------------------------------------------------------------- trainer options


def test_lookahead_by_hand():
    p = nn.Parameter(torch.zeros(1))
    model = nn.Module()
    model.p = p
    model.register_buffer("stat", torch.zeros(1))
    la = Lookahead(model, LookaheadConfig(k=2, alpha=0.5), total_steps=4)
    fast = []
    for step in range(1, 5):
        with torch.no_grad():
            p += 1.0          # one "optimiser step"
            model.stat += 10.0
        la.step(step)
        fast.append((float(p.detach()), float(model.stat)))
    # step 2: slow = 0 + 0.5 (2 - 0) = 1, fast reset to 1; step 4: slow = 1 + 0.5 (3 - 1) = 2.
    assert fast == [(1.0, 10.0), (1.0, 10.0), (2.0, 20.0), (2.0, 20.0)]
    with torch.no_grad():
        p += 5.0
    la.finish()
    assert float(p.detach()) == 2.0 and float(model.stat) == 20.0
    # The ramp: 1 - alpha_t = (1 - alpha) (t / T)^p.
    la = Lookahead(model, LookaheadConfig(k=5, alpha=0.2262, ramp=3), total_steps=400)
    assert la.alpha_at(0) == 1.0
    assert la.alpha_at(200) == pytest.approx(1 - 0.7738 * 0.125)
    assert la.alpha_at(400) == pytest.approx(0.2262)


def test_lookahead_in_the_trainer_ends_on_the_slow_weights(tmp_path):
    layers = "[{conv: {out: 4, kernel: 3}}, batchnorm, relu, flatten, {dense: 10}]"
    # k beyond the last step: the slow weights never move, so training ends where it began,
    # batch-norm statistics included (one epoch, so that no earlier epoch's checkpoint is the best).
    cfg = _digits(tmp_path / "a", "train.epochs=1", "train.lookahead={k: 1000}", "optim.name=torch.sgd",
                  layers=layers)
    torch.manual_seed(0)
    from cnnkit.data import load_data
    from cnnkit.models import create_model

    bundle = load_data(cfg.data)
    model = create_model(cfg.model, bundle.input_shape, bundle.num_classes)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    res = Trainer(cfg, quiet=True, model=model, bundle=bundle).fit()
    after = model.state_dict()
    for k, v in before.items():
        if v.is_floating_point():
            assert torch.equal(after[k], v), k
    # alpha = 1, k = 1: the slow weights follow the fast ones exactly: the run without lookahead.
    plain = train(_digits(tmp_path / "b", "optim.name=torch.sgd", layers=layers), quiet=True)
    same = train(_digits(tmp_path / "c", "optim.name=torch.sgd", "train.lookahead={k: 1, alpha: 1.0}",
                         layers=layers), quiet=True)
    assert same.final["val_accuracy"] == plain.final["val_accuracy"]
    assert same.final["val_loss"] == pytest.approx(plain.final["val_loss"], rel=1e-6)
    assert res.final["epochs"] == 1


def test_data_init_images_are_spread_evenly_and_normalised_by_hand():
    from cnnkit.data import DataBundle, TensorData
    from cnnkit.train.setup import data_init_images

    images = torch.randint(0, 256, (10, 3, 4, 4), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    bundle = DataBundle(TensorData(images, torch.arange(10)), None, None, [str(i) for i in range(10)], (3, 4, 4),
                        (0.5, 0.4, 0.3), (0.2, 0.25, 0.3))
    x = data_init_images(bundle, 5, torch.device("cpu"))
    # linspace(0, 9, 5) = 0, 2.25, 4.5, 6.75, 9, rounded half to even: 0, 2, 4, 7, 9.
    mean, std = torch.tensor([0.5, 0.4, 0.3]).view(1, 3, 1, 1), torch.tensor([0.2, 0.25, 0.3]).view(1, 3, 1, 1)
    torch.testing.assert_close(x, (images[[0, 2, 4, 7, 9]].float() / 255 - mean) / std)
    assert data_init_images(bundle, 50, torch.device("cpu")).shape[0] == 10


def test_norm_parameters_get_their_own_learning_rate_and_weight_decay():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(2 * 36, 3))
    assert len(default_param_groups(model, OptimConfig())) == 1
    groups = default_param_groups(model, OptimConfig(weight_decay=0.1, norm_lr_mult=64.0, norm_weight_decay=0.01))
    assert [len(g["params"]) for g in groups] == [4, 2]
    assert {id(p) for p in groups[1]["params"]} == {id(model[1].weight), id(model[1].bias)}
    assert groups[1]["lr_mult"] == 64.0 and groups[1]["weight_decay"] == 0.01
    # One plain torch SGD step, as the trainer sets it up (lr = optim.lr * lr_mult): by hand,
    # p <- p - lr_g (grad + wd_g p).
    from cnnkit.train.optim import create

    opt = create("torch.sgd", groups, lr=0.5, weight_decay=0.1)
    for g in opt.param_groups:
        g["lr"] = 0.5 * g.get("lr_mult", 1.0)
    x, y = torch.randn(4, 1, 8, 8), torch.tensor([0, 1, 2, 0])
    F.cross_entropy(model(x), y).backward()
    old = {id(p): (p.detach().clone(), p.grad.clone()) for p in model.parameters()}
    opt.step()
    for p in model.parameters():
        w, g = old[id(p)]
        lr, wd = (32.0, 0.01) if id(p) in {id(model[1].weight), id(model[1].bias)} else (0.5, 0.1)
        torch.testing.assert_close(p.detach(), w - lr * (g + wd * w))


def test_the_trainer_uses_the_norm_group(tmp_path):
    layers = "[{conv: {out: 4, kernel: 3}}, batchnorm, relu, flatten, {dense: 10}]"
    res = train(_digits(tmp_path, "train.epochs=1", "optim.name=torch.sgd", "optim.lr=0.02",
                        "optim.norm_lr_mult=8", "optim.norm_weight_decay=0.003", "schedule.name=constant",
                        layers=layers), quiet=True)
    state = torch.load(res.run_dir / "checkpoints" / "last.pt", map_location="cpu", weights_only=False)
    groups = state["optimizer"]["param_groups"]
    assert [len(g["params"]) for g in groups] == [4, 2]
    assert groups[1]["lr"] == pytest.approx(0.16) and groups[1]["weight_decay"] == 0.003
    assert groups[0]["lr"] == pytest.approx(0.02) and groups[0]["weight_decay"] == 0.0


def test_eval_every_validates_only_the_chosen_epochs_and_the_last(tmp_path):
    res = train(_digits(tmp_path / "a", "train.epochs=3", "train.eval_every=2", "train.cudnn_benchmark=true"),
                quiet=True)
    rows = [json.loads(line) for line in (res.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["val_accuracy"] is None for r in rows] == [True, False, False]
    assert res.final["val_accuracy"] == rows[-1]["val_accuracy"] and res.final["best_epoch"] in (2, 3)
    only_last = train(_digits(tmp_path / "b", "train.epochs=2", "train.eval_every=0"), quiet=True)
    assert [r["val_loss"] is None for r in only_last.history] == [True, False]
    with pytest.raises(UserError, match="eval_every"):
        train(_digits(tmp_path / "c", "train.eval_every=0", "regularization.early_stopping={monitor: val_loss}"),
              quiet=True)


# --------------------------------------------------------------------------- the recipe


def _small_cifar_npz(path: Path, per_class: int = 60) -> Path:
    """A small archive in the cifar10_jpeg format: a class-balanced slice of the real one, or random JPEGs."""
    if REAL_NPZ.is_file():
        z = np.load(REAL_NPZ)
        jpeg, offs, labels, classes = z["jpeg"], z["offsets"], z["labels"], z["classes"]
        idx = np.sort(np.concatenate([np.nonzero(labels == c)[0][:per_class] for c in range(10)]))
        blobs = [jpeg[offs[i]:offs[i + 1]] for i in idx]
        labels = labels[idx]
    else:  # pragma: no cover - without the shared data
        from PIL import Image

        rng = np.random.default_rng(0)
        blobs, labels = [], np.repeat(np.arange(10), per_class // 2)
        for c in labels:
            img = np.clip(rng.normal(25 * c, 40, (32, 32, 3)), 0, 255).astype(np.uint8)
            buf = io.BytesIO()
            Image.fromarray(img).save(buf, format="JPEG", quality=75)
            blobs.append(np.frombuffer(buf.getvalue(), dtype=np.uint8))
        classes = np.array([str(i) for i in range(10)])
    offsets = np.concatenate([[0], np.cumsum([len(b) for b in blobs])]).astype(np.int64)
    np.savez(path, jpeg=np.concatenate(blobs), offsets=offsets, labels=labels.astype(np.int64), classes=classes)
    return path


def test_recipe_validates_as_written():
    cfg = load_config(RECIPE)
    assert (cfg.model.name, cfg.data.name, cfg.data.batch_size, cfg.train.epochs) == ("fastnet", "cifar10_jpeg",
                                                                                       1024, 10)
    assert cfg.augment.hflip == "alternating" and cfg.augment.crop_pad_mode == "reflect"
    assert cfg.train.lookahead.k == 5 and cfg.train.eval_tta == "flip_translate" and cfg.train.eval_every == 0
    assert cfg.optim.name == "torch.sgd" and cfg.optim.nesterov and cfg.optim.norm_lr_mult == 64.0
    # lr * weight decay is airbench's decay per step, the same in both groups.
    assert cfg.optim.lr * cfg.optim.weight_decay == pytest.approx(0.0153 * 1024 / (1024 * (1 + 1 / 0.15)), rel=1e-4)
    assert cfg.optim.lr * cfg.optim.norm_lr_mult * cfg.optim.norm_weight_decay == pytest.approx(
        cfg.optim.lr * cfg.optim.weight_decay, rel=1e-3)


def test_recipe_trains_one_epoch_on_a_small_archive_on_the_cpu(tmp_path):
    npz = _small_cifar_npz(tmp_path / "small.npz")
    cfg = load_config(RECIPE, [f"data.path={npz}", f"train.runs_dir={tmp_path / 'runs'}", "train.epochs=1",
                               "data.batch_size=128", "model.options={widths: [8, 16, 16]}", "model.data_init=256",
                               f"data.cache_dir={tmp_path / 'cache'}"])
    assert cfg.train.device == "auto"  # the GPU path, which falls back to the CPU here
    res = train(cfg, quiet=True)
    final = json.loads((res.run_dir / "final.json").read_text())
    n = 10 * 60 if REAL_NPZ.is_file() else 10 * 30
    assert final["n_train"] + final["n_val"] == n and final["n_val"] == n // 10
    assert final["epochs"] == 1 and 0.0 <= final["val_accuracy"] <= 1.0 and final["train_time_s"] > 0
    if not torch.cuda.is_available():
        assert final["device"] == "cpu"
    # The whitening layer was set from the data (not left at its identity-covariance default).
    state = torch.load(res.run_dir / "checkpoints" / "last.pt", map_location="cpu", weights_only=False)["model"]
    default = WhiteningConv(3, 2).weight
    assert not torch.allclose(state["body.whiten.weight"].float(), default)
    assert (res.run_dir / "metrics.jsonl").read_text().count("\n") == 1
