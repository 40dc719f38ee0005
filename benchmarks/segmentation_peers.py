"""cnnkit's U-Net against segmentation-models-pytorch's ``Unet``, both trained from scratch on the ISBI 2012 slices.

The same training slices, the same random crops and augmentation, the same loss, optimiser, schedule,
batch size and torch threads, the same CPU wall-clock budget for each contender's training; both scored
the same way on the same whole held-out slices.

* Data: the 25 grey 512 x 512 slices of ``/work/shared/data/isbi2012_membrane/train`` (``image/N.png`` +
  ``label/N.png``; label 0 = membrane, 255 = cell). ``--val N`` of them (default 5;
  ``numpy.random.default_rng(--seed).permutation`` over the slices sorted by number) are held out; the
  rest train both contenders. Both folders are copied into the work folder::

      isbi/train/image/*.png   isbi/train/label/*.png      # the training slices only
      isbi/heldout/image/*.png isbi/heldout/label/*.png    # the held-out slices only

  Each contender's worker reads them with cnnkit's own reader (``read_masks`` with the recipe's
  ``data.mask_values {0: 1, 255: 0}`` and ``data.class_names [cell, membrane]``: membrane is class 1)
  and makes the DataBundle with ``segmentation_bundle`` (normalisation statistics from the training
  slices), as the ``masks`` reader does after its own random split. cnnkit's readers always hold a
  random ``data.val_fraction`` out and no config key names a fixed validation folder, so the benchmark
  builds the bundle itself and hands it to ``Trainer`` (as benchmarks/detection_peers.py does): cnnkit
  trains on exactly the training slices, and ``cnnkit eval RUN --data isbi/heldout`` scores the
  held-out ones.
* The recipe: configs/unet_isbi.yaml (``--config``): random 256 px crops, batch 4, 8 passes over the
  slices per epoch (``data.epoch_repeats``), flips, rotation 10, elastic 40 / sigma 6, brightness and
  contrast 0.1, loss ``cross_entropy+dice``, AdamW lr 0.002, weight decay 1e-4, cosine with one warm-up
  epoch; with ``data.path=isbi/train``, ``train.device=cpu``, ``train.precision=fp32``,
  ``train.eval_every=0`` and ``train.seed=--seed``. ``--set KEY=VALUE`` changes it FOR BOTH.
* cnnkit: the recipe's ``unet`` (width 16, depth 4, 'same' padding: 1.94M parameters) trained by
  cnnkit's ``Trainer``. With ``train.eval_every=0`` it validates once, after the last epoch, on the
  held-out slices (a number that chooses nothing).
* The peer: ``smp.Unet(encoder_name=--peer-encoder, encoder_weights=None, in_channels=1, classes=2)``,
  smp's default decoder (channels 256, 128, 64, 32, 16), trained by a plain PyTorch loop written here.
  The default encoder is ``tu-ghostnet_050`` (timm's GhostNet 0.5 through smp's ``tu-`` bridge): the
  one whose whole Unet is closest in parameters to cnnkit's unet (1.74M against 1.94M). Measured whole
  Unet sizes of other small encoders (``in_channels=1, classes=2``): tu-mobilenetv2_050 2.17M,
  tu-mnasnet_small 2.18M, tu-mobilenetv3_small_050 2.20M, tu-lcnet_050 2.43M, mit_b0 5.55M,
  efficientnet-b0 6.25M, mobilenet_v2 6.63M, resnet18 14.3M (smp's decoder is 1.5M to 3.2M of these,
  more for encoders with wider features). Both counts are measured and printed. What makes the loop "the same":

  - the batches come from cnnkit's own training loader (``make_loaders`` with the same config and
    bundle): its per-item transform is ``cnnkit.data.segmentation.segmentation_transforms`` built from
    the recipe's ``augment`` and ``data.crop_size``, seeded per ``(seed, epoch, item)``, so in epoch
    ``e`` the peer sees the very same crops, flips, rotations and deformations as cnnkit, normalised
    the same way, in the same order and batches;
  - the loss is ``cnnkit.tasks.segmentation.SegmentationLoss`` of the recipe's ``train.loss``;
  - the optimiser is torch's ``AdamW`` (looked up by the recipe's ``optim.name`` through
    ``cnnkit.train.optim.create``, with ``optim.lr`` and ``optim.weight_decay``); the learning rate of
    step ``s`` of ``S`` is ``optim.lr * f(s / S)``, ``f`` the recipe's schedule
    (``cnnkit.train.schedules.make_schedule``: cosine after one linear warm-up epoch), set before each
    step as cnnkit's Trainer does;
  - the seed (``torch.manual_seed`` etc. before the model is built) and the thread count.

  Options the plain loop does not implement (EMA, grad clip, L1/L2, mixed precision, ...) are refused.
* Budget: neither library has a wall-clock stop, and a cosine schedule must know its length, so both
  are treated alike. A probe (``--probe-epochs``, default 2, a fresh process each) measures the seconds
  of the first and of the later training passes, and the real run gets ``1 + floor((budget - first) /
  later)`` epochs (``--cnnkit-epochs`` / ``--peer-epochs`` skip a probe). ``x budget`` in the table says
  how well that filled the budget.
* Scoring, identical for both, in the worker after training: each held-out slice whole (512 x 512),
  normalised with the bundle's mean and std, through ``cnnkit.tasks.segmentation.segment`` (for both
  models just the forward pass: 512 is a multiple of 16 and of 32), argmax per pixel, one confusion
  matrix of pixels over the held-out slices -> ``scores_from_confusion``: membrane IoU (class 1), mean
  IoU over both classes, Dice (of the membrane, the only foreground class) and pixel accuracy. cnnkit's
  own ``cnnkit eval RUN --data isbi/heldout --checkpoint last --format json`` is printed as a
  cross-check (it should agree exactly).
* Times: ``train (s)`` runs from the start of the first training pass to the end of the last one
  (cnnkit's per-epoch checkpoint writes between passes count; its end-of-training validation does not);
  ``s/epoch`` is the median training pass (an epoch is the same number of crops for both);
  ``train img/s`` = crops through training / ``train (s)``.

Every contender (and every probe) runs in a fresh subprocess with ``--threads`` torch threads; each
process records any network connection or name lookup (a ``sys.addaudithook``) and the report says
whether any was tried (``HF_HUB_OFFLINE=1`` is set as well). The work folder (``--workdir``, default a
temporary one) holds the logs, the runs and the peer's weights.

    python benchmarks/segmentation_peers.py [--minutes 10] [--val 5] [--seed 0] [--threads N]
        [--peer-encoder tu-ghostnet_050] [--set KEY=VALUE ...] [--workdir DIR] [--json FILE]

segmentation-models-pytorch comes with ``pip install -e '.[bench]'`` (install it with a constraint that
keeps the installed torch and torchvision); without it cnnkit runs alone.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from peer_harness import fill_epochs, machine_note, watch_network, write_result  # noqa: E402  (benchmarks/)

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = (REPO / ".." / "shared" / "data" / "isbi2012_membrane" / "train").resolve()
DEFAULT_CONFIG = REPO / "configs" / "unet_isbi.yaml"
DEFAULT_ENCODER = "tu-ghostnet_050"  # the smp Unet closest in parameters to cnnkit's unet (see the docstring)
PEER = "smp"
CNNKIT = "cnnkit"
FOREGROUND = "membrane"  # the class of interest (class 1 in the recipe)


# --------------------------------------------------------------------------- shared helpers

def _slice_key(path: Path) -> tuple[int, Any]:
    return (0, int(path.stem)) if path.stem.isdigit() else (1, path.name)


# --------------------------------------------------------------------------- the data (parent)

def prepare_data(data: Path, workdir: Path, n_val: int, seed: int) -> dict[str, Any]:
    """Split the slices (sorted by number) with ``default_rng(seed)``; copy both parts into the work folder."""
    import numpy as np

    image_dir, label_dir = data / "image", data / "label"
    if not image_dir.is_dir() or not label_dir.is_dir():
        raise SystemExit(f"{data} must hold image/ and label/ (the ISBI 2012 membrane training slices)")
    images = sorted((p for p in image_dir.iterdir() if p.suffix.lower() == ".png"), key=_slice_key)
    if not 1 <= n_val < len(images):
        raise SystemExit(f"--val {n_val}: choose 1..{len(images) - 1} of the {len(images)} slices")
    perm = np.random.default_rng(seed).permutation(len(images))
    held = {int(i) for i in perm[:n_val]}
    root = workdir / "isbi"
    if root.exists():
        shutil.rmtree(root)
    names: dict[str, list[str]] = {"train": [], "heldout": []}
    for i, im in enumerate(images):
        split = "heldout" if i in held else "train"
        label = label_dir / im.name
        if not label.is_file():
            raise SystemExit(f"{im} has no label {label}")
        for sub, src in (("image", im), ("label", label)):
            (root / split / sub).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, root / split / sub / im.name)
        names[split].append(im.stem)
    return {"n_train": len(images) - n_val, "n_val": n_val, "train": names["train"], "heldout": names["heldout"]}


# --------------------------------------------------------------------------- the recipe and the bundle (workers)

def _config(args: argparse.Namespace, epochs: int, runs_dir: Path):
    from cnnkit.config import load_config

    return load_config(args.config, [
        f"data.path={Path(args.workdir) / 'isbi' / 'train'}", f"train.epochs={epochs}", "train.device=cpu",
        "train.precision=fp32", "train.eval_every=0", f"train.seed={args.seed}", f"train.runs_dir={runs_dir}",
        *(args.set or [])])


def _read(cfg, folder: Path):
    from cnnkit.data.segmentation import read_masks

    return read_masks(folder, cfg.data.mask_values, cfg.data.class_names)


def _bundle(cfg, workdir: Path, probe: bool):
    """Training slices: all of isbi/train; held-out: all of isbi/heldout (one training slice for a probe,
    so that no probe ever sees the held-out slices)."""
    from cnnkit.data.segmentation import segmentation_bundle

    train = _read(cfg, workdir / "isbi" / "train")
    val = train.subset([0]) if probe else _read(cfg, workdir / "isbi" / "heldout")
    assert train.classes == val.classes and train.channels == val.channels
    return segmentation_bundle(cfg.data, train, val, train.classes, train.channels, train.max_side,
                               f"ISBI {workdir / 'isbi'}: {len(train)} train / {len(val)} held-out slices")


def score_heldout(model, cfg, workdir: Path, mean, std) -> dict[str, Any]:
    """The pixel confusion matrix ``cm[true, predicted]`` of ``model`` over the whole held-out slices
    (the same code for both contenders), and the seconds per slice of that pass."""
    import torch

    from cnnkit.data.segmentation import IGNORE
    from cnnkit.tasks.segmentation import segment

    ds = _read(cfg, workdir / "isbi" / "heldout")
    k = len(ds.classes)
    c = len(mean)
    scale = 1.0 / (255.0 * torch.tensor(list(std), dtype=torch.float32).view(1, c, 1, 1))
    shift = -torch.tensor(list(mean), dtype=torch.float32).view(1, c, 1, 1) / torch.tensor(
        list(std), dtype=torch.float32).view(1, c, 1, 1)
    cm = torch.zeros(k * k, dtype=torch.int64)
    model.eval()
    seconds = []
    with torch.no_grad():
        for i in range(len(ds)):
            image, mask = ds[i]
            x = torch.addcmul(shift, image[None].float(), scale)  # as cnnkit's loaders normalise
            t0 = time.perf_counter()
            pred = segment(model, x).argmax(1)[0]
            seconds.append(time.perf_counter() - t0)
            m = mask.as_subclass(torch.Tensor)
            keep = m != IGNORE
            cm += torch.bincount(m[keep] * k + pred[keep], minlength=k * k)
    return {"confusion": cm.view(k, k).tolist(), "classes": ds.classes, "n_slices": len(ds),
            "slice_s": statistics.median(seconds), "slice_shape": list(ds[0][0].shape)}


# --------------------------------------------------------------------------- worker: cnnkit

def worker_cnnkit(args: argparse.Namespace) -> None:
    tried = watch_network()
    import torch

    torch.set_num_threads(args.threads)
    from cnnkit.train.callbacks import Callback
    from cnnkit.train.trainer import Trainer

    workdir = Path(args.workdir)
    probe = args.epochs is None
    epochs = args.probe_epochs if probe else args.epochs
    cfg = _config(args, epochs, workdir / ("cnnkit_probe" if probe else "cnnkit_runs"))
    bundle = _bundle(cfg, workdir, probe)

    class Passes(Callback):
        """Each epoch's training pass: its seconds (to the end of its last step) and crops."""

        def __init__(self) -> None:
            self.seconds: list[float] = []
            self.images: list[int] = []
            self.first_start: float | None = None
            self.last_end: float | None = None
            self.threads: set[int] = set()

        def on_epoch_begin(self, trainer, epoch) -> None:
            self.t0 = time.perf_counter()
            self.first_start = self.first_start or self.t0

        def on_batch_end(self, trainer, step) -> None:
            if step % trainer.steps_per_epoch == 0:  # the epoch's last step
                self.last_end = time.perf_counter()
                self.seconds.append(self.last_end - self.t0)
                self.images.append(int(trainer._seen))
                self.threads.add(torch.get_num_threads())

    passes = Passes()
    t0 = time.perf_counter()
    result = Trainer(cfg, quiet=True, bundle=bundle, callbacks=[passes]).fit()
    call_s = time.perf_counter() - t0
    out: dict[str, Any] = {
        "name": CNNKIT, "model": cfg.model.name, "epochs": len(result.history), "pass_s": passes.seconds,
        "train_s": passes.last_end - passes.first_start, "call_s": call_s,
        "trainer_train_time_s": result.final["train_time_s"], "images": sum(passes.images),
        "n_train": result.final["n_train"],
        "threads": sorted(passes.threads), "run_dir": str(result.run_dir), "torch": torch.__version__,
        "final_val_miou": result.final.get("val_miou"), "final_val_dice": result.final.get("val_dice")}
    if not probe:
        from cnnkit.inference import load_run_model

        last = Path(result.run_dir) / "checkpoints" / "last.pt"
        model, info = load_run_model(last)
        out["params"] = sum(p.numel() for p in model.parameters())
        assert all(abs(a - b) < 1e-6 for a, b in zip([*info["mean"], *info["std"]], [*bundle.mean, *bundle.std]))
        out.update(score_heldout(model, cfg, workdir, bundle.mean, bundle.std))
        ev = subprocess.run([sys.executable, "-m", "cnnkit", "eval", str(result.run_dir), "--data",
                             str(workdir / "isbi" / "heldout"), "--checkpoint", "last", "--format", "json"],
                            capture_output=True, text=True)
        if ev.returncode != 0:
            raise SystemExit(f"cnnkit eval failed:\n{ev.stdout[-2000:]}\n{ev.stderr[-2000:]}")
        own = json.loads(ev.stdout)
        out["own"] = {"miou": own["miou"], "dice": own["dice"], "pixel_accuracy": own["pixel_accuracy"],
                      "iou": own["per_class"][FOREGROUND]["iou"], "n": own["n"],
                      "confusion": own.get("confusion_matrix")}
    else:
        from cnnkit.train.setup import build_model

        out["params"] = sum(p.numel() for p in build_model(cfg, tuple(bundle.input_shape), len(bundle.classes),
                                                           with_weights=False).parameters())
    out["network"] = sorted(set(tried))
    write_result(args.out, out)


# --------------------------------------------------------------------------- worker: segmentation-models-pytorch

def _unsupported(cfg) -> list[str]:
    """Recipe settings the peer's plain loop does not implement (so it cannot match cnnkit there)."""
    t, r, o = cfg.train, cfg.regularization, cfg.optim
    bad = {"train.precision": t.precision != "fp32", "train.ema": t.ema is not None,
           "train.lookahead": t.lookahead is not None, "train.distill": t.distill is not None,
           "train.channels_last": t.channels_last, "train.compile": t.compile != "off",
           "regularization.l1": bool(getattr(r, "l1", 0)), "regularization.l2": bool(getattr(r, "l2", 0)),
           "regularization.grad_clip": bool(r.grad_clip), "optim.norm_lr_mult": o.norm_lr_mult != 1.0,
           "optim.norm_weight_decay": o.norm_weight_decay is not None,
           "data.image_size": cfg.data.image_size is not None}
    return [k for k, v in bad.items() if v]


def worker_smp(args: argparse.Namespace) -> None:
    tried = watch_network()
    import torch

    torch.set_num_threads(args.threads)
    import segmentation_models_pytorch as smp

    from cnnkit.nn.runtime import seed_everything
    from cnnkit.tasks.segmentation import SegmentationLoss
    from cnnkit.train.optim import create as create_optimizer
    from cnnkit.train.schedules import make_schedule
    from cnnkit.train.setup import load_task_data, make_loaders

    workdir = Path(args.workdir)
    probe = args.epochs is None
    epochs = args.probe_epochs if probe else args.epochs
    cfg = _config(args, epochs, workdir / "unused_runs")
    bad = _unsupported(cfg)
    if bad:
        raise SystemExit(f"the peer's training loop does not implement {', '.join(bad)}; unset them")
    seed_everything(cfg.train.seed, cfg.train.deterministic)  # as cnnkit's Trainer, first
    bundle = _bundle(cfg, workdir, probe)
    task, bundle, input_shape = load_task_data(cfg, bundle)
    # cnnkit's training loader: the same crops, augmentation, normalisation, order and batches as cnnkit's run.
    loader, _ = make_loaders(cfg, bundle, task, torch.device("cpu"))
    model = smp.Unet(encoder_name=args.peer_encoder, encoder_weights=None, in_channels=input_shape[0],
                     classes=len(bundle.classes))
    model.pad_multiple = 32  # smp's Unet needs sides divisible by 32 (scoring pads to it through segment())
    params = sum(p.numel() for p in model.parameters())
    t = cfg.train
    loss_fn = SegmentationLoss(t.loss, t.class_weights, t.border_weight, t.border_sigma)
    optimizer = create_optimizer(cfg.optim.name, model.parameters(), lr=cfg.optim.lr, **cfg.optim.hyper())
    schedule = make_schedule(cfg.schedule, epochs)
    steps_per_epoch = len(loader)
    total_steps = steps_per_epoch * epochs
    base_lr = cfg.optim.lr

    pass_s: list[float] = []
    images = 0
    threads: set[int] = set()
    losses: list[float] = []
    first_start = last_end = None
    step = 0
    t_call = time.perf_counter()
    for epoch in range(1, epochs + 1):
        t0 = time.perf_counter()
        first_start = first_start or t0
        loader.set_epoch(epoch)
        model.train()
        loss_sum, seen = 0.0, 0
        for x, y in loader:
            for g in optimizer.param_groups:
                g["lr"] = base_lr * schedule(step / total_steps)
            loss = loss_fn(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            loss_sum += float(loss.detach()) * len(y)
            seen += len(y)
        last_end = time.perf_counter()
        pass_s.append(last_end - t0)
        images += seen
        threads.add(torch.get_num_threads())
        losses.append(loss_sum / max(seen, 1))
        if not math.isfinite(losses[-1]):
            raise SystemExit(f"the peer's loss is {losses[-1]} in epoch {epoch}")
    call_s = time.perf_counter() - t_call
    out: dict[str, Any] = {
        "name": PEER, "model": f"smp.Unet({args.peer_encoder})", "epochs": epochs, "pass_s": pass_s,
        "train_s": last_end - first_start, "call_s": call_s, "images": images, "n_train": len(bundle.train),
        "threads": sorted(threads), "params": params, "train_loss": losses, "torch": torch.__version__,
        "smp": smp.__version__}
    if not probe:
        peer_dir = workdir / "smp"
        peer_dir.mkdir(parents=True, exist_ok=True)
        torch.save(model.state_dict(), peer_dir / "last.pt")
        out.update(score_heldout(model, cfg, workdir, bundle.mean, bundle.std))
    out["network"] = sorted(set(tried))
    write_result(args.out, out)


# --------------------------------------------------------------------------- the parent

def run_worker(name: str, args: argparse.Namespace, epochs: int | None, tag: str) -> dict[str, Any]:
    workdir = Path(args.workdir)
    out = workdir / f"result-{tag}.json"
    log = workdir / f"log-{tag}.txt"
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads),
               PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1", HF_HOME=str(workdir / "hf_home"))
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", name, "--out", str(out),
           "--workdir", str(workdir), "--threads", str(args.threads), "--seed", str(args.seed),
           "--config", str(args.config), "--peer-encoder", args.peer_encoder,
           "--probe-epochs", str(args.probe_epochs)]
    if epochs is not None:
        cmd += ["--epochs", str(epochs)]
    for s in args.set or []:
        cmd += ["--set", s]
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        proc = subprocess.run(cmd, cwd=REPO, env=env, stdout=fh, stderr=subprocess.STDOUT)
    if proc.returncode != 0 or not out.is_file():
        raise RuntimeError(f"{name} failed (exit {proc.returncode}); its log {log} ends:\n"
                           f"{log.read_text(errors='replace')[-4000:]}")
    res = json.loads(out.read_text())
    res["process_s"] = time.perf_counter() - t0
    res["log"] = str(log)
    new_hf = [str(p) for p in (workdir / "hf_home").rglob("*") if p.is_file()] if (workdir / "hf_home").exists() else []
    res["new_files"] = new_hf
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the ISBI folder holding image/ and label/")
    ap.add_argument("--val", type=int, default=5, help="held-out slices (default 5 of 25)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the held-out split and of both trainings")
    ap.add_argument("--minutes", type=float, default=10.0, help="wall-clock training budget of EACH contender")
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                    else (os.cpu_count() or 1), help="torch threads of every contender (default: all cores)")
    ap.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="cnnkit recipe, for both contenders")
    ap.add_argument("--set", action="append", metavar="KEY=VALUE",
                    help="override the recipe for BOTH contenders (repeatable), e.g. data.crop_size=128")
    ap.add_argument("--peer-encoder", default=DEFAULT_ENCODER,
                    help=f"smp encoder of the peer Unet (default {DEFAULT_ENCODER}: closest in parameters; "
                         f"e.g. tu-mobilenetv2_050, efficientnet-b0, resnet18)")
    ap.add_argument("--cnnkit-epochs", type=int, default=None, help="fixed cnnkit epochs (skips its probe)")
    ap.add_argument("--peer-epochs", type=int, default=None, help="fixed peer epochs (skips its probe)")
    ap.add_argument("--probe-epochs", type=int, default=2, help="epochs of each timing probe (>= 2)")
    ap.add_argument("--no-cnnkit", action="store_true", help="skip cnnkit (the peer alone)")
    ap.add_argument("--no-peer", action="store_true", help="skip the smp peer")
    ap.add_argument("--workdir", type=Path, default=None, help="work folder, kept (default: a temporary one)")
    ap.add_argument("--json", type=Path, default=None, help="also write every contender's numbers here")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--out", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--epochs", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.worker:
        (worker_smp if args.worker == PEER else worker_cnnkit)(args)
        return 0

    if args.probe_epochs < 2:
        ap.error("--probe-epochs must be at least 2 (the first pass carries the warm-up)")
    if args.minutes <= 0:
        ap.error("--minutes must be positive")
    args.config = args.config.resolve()
    from cnnkit.config import load_config

    cfg = load_config(args.config, list(args.set or []))
    if cfg.task != "segmentation":
        ap.error(f"--config {args.config} is a {cfg.task} recipe; give a segmentation one")
    with_peer = not args.no_peer
    if with_peer and importlib.util.find_spec("segmentation_models_pytorch") is None:
        print("skipping segmentation-models-pytorch: not installed; install with  pip install -e '.[bench]'",
              file=sys.stderr)
        with_peer = False
    if with_peer:
        bad = _unsupported(cfg)
        if bad:
            ap.error(f"the peer's training loop does not implement {', '.join(bad)}; unset them")
        if not cfg.data.crop_size or cfg.data.crop_size % 32:
            ap.error(f"data.crop_size={cfg.data.crop_size}: smp's Unet needs crops whose side is a multiple of 32")
    if not with_peer and args.no_cnnkit:
        sys.exit("nothing to run")

    tmp = None
    if args.workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="segmentation_peers_")
        args.workdir = Path(tmp.name)
    args.workdir = args.workdir.resolve()
    args.workdir.mkdir(parents=True, exist_ok=True)
    budget = args.minutes * 60
    print(f"machine: {machine_note(args)}", flush=True)
    info = prepare_data(args.data.resolve(), args.workdir, args.val, args.seed)
    print(f"data: {args.data.resolve()}: {info['n_train']} training slices / {info['n_val']} held-out "
          f"({', '.join(info['heldout'])}), split seed {args.seed}; copies in {args.workdir / 'isbi'}", flush=True)
    d = cfg.data
    print(f"each contender: crops {d.crop_size}, batch {d.batch_size}, {d.epoch_repeats} pass(es) over the slices "
          f"per epoch, loss {cfg.train.loss}, {cfg.optim.name} lr {cfg.optim.lr:g} wd {cfg.optim.weight_decay:g}, "
          f"{cfg.schedule.name} schedule ({cfg.schedule.warmup_epochs:g} warm-up epoch(s)), {args.threads} "
          f"thread(s), training budget {args.minutes:g} min; scored on the whole held-out slices", flush=True)
    contenders = ([PEER] if with_peer else []) + ([] if args.no_cnnkit else [CNNKIT])
    fixed = {PEER: args.peer_epochs, CNNKIT: args.cnnkit_epochs}
    n_probes = sum(fixed[c] is None for c in contenders)
    print(f"expect roughly {len(contenders) * (args.minutes + 1) + 3 * n_probes:.0f} min in all ({len(contenders)} "
          f"trainings of {args.minutes:g} min, one after the other, plus {n_probes} timing probe(s), set-up and "
          f"scoring)", flush=True)
    results: dict[str, dict[str, Any]] = {}
    t_start = time.perf_counter()
    for c in contenders:
        probe = None
        epochs = fixed[c]
        if epochs is None:
            probe = run_worker(c, args, None, f"{c}-probe")
            epochs, _, _ = fill_epochs(probe, budget)
            print(f"  {c}: probe passes {' '.join(f'{s:.1f}' for s in probe['pass_s'])} s -> {epochs} epochs for "
                  f"{args.minutes:g} min", file=sys.stderr, flush=True)
        print(f"  {c}: training {epochs} epochs ...", file=sys.stderr, flush=True)
        res = run_worker(c, args, epochs, c)
        res["probe"] = probe
        results[c] = res
    from cnnkit.tasks.segmentation import scores_from_confusion
    import torch

    for res in results.values():
        s = scores_from_confusion(torch.tensor(res["confusion"], dtype=torch.float64), res["classes"])
        res["score"] = {"iou": s["per_class"][FOREGROUND]["iou"], "miou": s["miou"], "dice": s["dice"],
                        "pixel_accuracy": s["pixel_accuracy"], "per_class": s["per_class"]}
    total = time.perf_counter() - t_start
    report(results, info, args, cfg, total)
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "data": info,
                                         "results": results}, indent=2, default=str))
    if tmp is not None:
        tmp.cleanup()
    return 0


def _fmt(v: float | None, spec: str) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def report(results: dict[str, dict[str, Any]], info: dict[str, Any], args: argparse.Namespace, cfg,
           total: float) -> None:
    budget = args.minutes * 60
    peer = results.get(PEER)
    any_r = next(iter(results.values()))
    print(f"\nISBI 2012 membrane segmentation, from scratch: {info['n_train']} training / {info['n_val']} held-out "
          f"slices, crops {cfg.data.crop_size}, batch {cfg.data.batch_size}, {args.threads} thread(s), "
          f"{args.minutes:g} min budget each; torch {any_r['torch']}" + (f", smp {peer['smp']}" if peer else ""))
    print(f"scores on the whole held-out slices ({'x'.join(str(v) for v in any_r['slice_shape'][1:])}), one "
          f"confusion matrix, the same code for both; IoU/Dice of the {FOREGROUND}; 'own' = cnnkit eval's mIoU")
    head = (f"{'contender':<30}{'params':>8}{'epochs':>7}{'train (s)':>10}{'x budget':>9}{'s/epoch':>8}"
            f"{'img/s':>7}{'memb IoU':>9}{'mIoU':>7}{'Dice':>7}{'pix acc':>8}{'own mIoU':>9}")
    if peer:
        head += f"{'IoU x':>7}{'mIoU x':>7}{'img/s x':>8}{'s/ep x':>7}"
    print(head)

    def per_epoch(r):
        return statistics.median(r["pass_s"])

    for name, r in results.items():
        label = (f"smp Unet {args.peer_encoder}" if name == PEER else f"cnnkit {r['model']}")
        ips = r["images"] / r["train_s"] if r["train_s"] else float("nan")
        s = r["score"]
        own = r.get("own", {}).get("miou")
        line = (f"{label:<30}{r['params'] / 1e6:>7.2f}M{r['epochs']:>7}{r['train_s']:>10.1f}"
                f"{r['train_s'] / budget:>9.2f}{per_epoch(r):>8.1f}{ips:>7.1f}{_fmt(s['iou'], '.4f'):>9}"
                f"{_fmt(s['miou'], '.4f'):>7}{_fmt(s['dice'], '.4f'):>7}{_fmt(s['pixel_accuracy'], '.4f'):>8}"
                f"{_fmt(own, '.4f'):>9}")
        if peer:
            p_ips = peer["images"] / peer["train_s"]
            ratio = lambda a, b: "-" if a is None or not b else f"{a / b:.2f}"  # noqa: E731
            line += (f"{ratio(s['iou'], peer['score']['iou']):>7}{ratio(s['miou'], peer['score']['miou']):>7}"
                     f"{ratio(ips, p_ips):>8}{ratio(per_epoch(r), per_epoch(peer)):>7}")
        print(line)
    if peer:
        print("ratios are contender / peer: above 1 is better for IoU, mIoU and img/s; below 1 is faster for s/epoch")
    for name, r in results.items():
        label = f"smp Unet {args.peer_encoder}" if name == PEER else f"cnnkit {r['model']}"
        bits = [f"threads seen during training {r['threads']}",
                f"passes {' '.join(f'{x:.1f}' for x in r['pass_s'])} s", f"{r['slice_s']:.2f} s per held-out slice"]
        if r.get("probe"):
            p = r["probe"]
            bits.append(f"probe passes {' '.join(f'{x:.1f}' for x in p['pass_s'])} s ({p['process_s']:.0f} s process)")
        if name == CNNKIT:
            own = r["own"]
            agree = own.get("confusion") == r["confusion"]
            bits.append(f"cnnkit eval: mIoU {own['miou']:.4f}, {FOREGROUND} IoU {own['iou']:.4f}, Dice "
                        f"{own['dice']:.4f}, pixel acc {own['pixel_accuracy']:.4f} on {own['n']} slices "
                        f"(confusion matrix {'identical' if agree else 'DIFFERS'}); final.json val mIoU "
                        f"{_fmt(r['final_val_miou'], '.4f')}")
        bits.append(f"process {r['process_s']:.0f} s")
        net = r.get("network", []) + [f"new file {f}" for f in r.get("new_files", [])]
        if r.get("probe"):
            net += r["probe"].get("network", []) + [f"new file {f}" for f in r["probe"].get("new_files", [])]
        bits.append("network/downloads: none" if not net else f"NETWORK/DOWNLOADS: {'; '.join(net[:5])}")
        print(f"  {label}: " + "; ".join(bits))
    load = " ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    print(f"whole benchmark {total / 60:.1f} min; load average at the end {load}")


if __name__ == "__main__":
    sys.exit(main())
