"""The training loop, readable top to bottom (nanoGPT's train.py, airbench's main).

:func:`train` turns a validated :class:`~cnnkit.config.Config` into a run folder:
data -> model -> optimiser -> epochs of (schedule, forward, loss + L1/L2,
backward, clip, step, metrics) -> validation -> metrics line -> checkpoint.
Speed switches (device, precision, channels_last, compile) cost nothing when off.

Example::

    result = train(load_config("configs/lenet5_mnist5k.yaml", ["train.epochs=2"]))
    result.run_dir, result.final["val_accuracy"]
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import cnnkit
from cnnkit.config import Config, dump_yaml, read_yaml, validate, apply_overrides, atomic_write_text
from cnnkit.data import DataBundle, load_data
from cnnkit.errors import UserError
from cnnkit.models import create_model
from cnnkit.rundir import (append_jsonl, atomic_torch_save, check_run_dir, git_revision, load_checkpoint,
                           new_run_dir, read_metrics, write_json)
from cnnkit.train import distributed as dist_utils
from cnnkit.train.callbacks import Callback, standard_callbacks
from cnnkit.train.losses import make_loss
from cnnkit.train.optim import create as create_optimizer
from cnnkit.train.schedules import make_schedule


# --------------------------------------------------------------------------- helpers

def resolve_device(name: str) -> torch.device:
    """``auto`` picks cuda, then mps, then cpu; an unavailable device is a UserError."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"train.device={name!r} but no CUDA device is available; use cpu or auto")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise UserError("train.device='mps' but MPS is not available; use cpu or auto")
    return torch.device(name)


def process_start_time() -> float:
    """Seconds on the ``time.time()`` clock at which this process started (for end-to-end timing)."""
    try:
        import psutil

        return psutil.Process().create_time()
    except Exception:  # pragma: no cover - psutil missing or no /proc
        return _IMPORT_TIME


_IMPORT_TIME = time.time()


def seed_everything(seed: int, deterministic: bool = False) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


def sync(device: torch.device) -> None:
    """Wait for queued device work, so that a clock read after it is honest."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def autocast(device: torch.device, precision: str):
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def input_shape_for(cfg: Config, bundle: DataBundle) -> tuple[int, int, int]:
    shape = tuple(bundle.input_shape)
    if cfg.model.input is not None and tuple(cfg.model.input) != shape:
        raise UserError(f"model.input={list(cfg.model.input)} does not match the data's images "
                        f"{list(shape)} (dataset {cfg.data.name!r}); remove model.input or set data.image_size")
    return shape  # type: ignore[return-value]


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def penalty(model: nn.Module, l1: float, l2: float) -> torch.Tensor | float:
    """L1 and L2 penalty terms on the weights (not biases or norm parameters)."""
    total: torch.Tensor | float = 0.0
    if not (l1 or l2):
        return total
    for p in model.parameters():
        if p.ndim > 1 and p.requires_grad:
            if l1:
                total = total + l1 * p.abs().sum()
            if l2:
                total = total + l2 * p.pow(2).sum()
    return total


def data_init_images(bundle: DataBundle, n: int, device: torch.device) -> torch.Tensor:
    """``n`` training images spread evenly over the training set (all of them if it has fewer), float on
    ``device``, normalised as the loaders normalise them. Evenly spread, not the first ``n``: in a
    class-sorted archive the first ``n`` would be a single class."""
    from cnnkit.data import TensorData

    data = bundle.train
    index = torch.linspace(0, len(data) - 1, n).round().long().unique() if n < len(data) else torch.arange(len(data))
    if isinstance(data, TensorData):
        x = data.images[index]
    else:
        x = torch.stack([data[i][0] for i in index.tolist()])
    x = x.to(device).float()
    mean = torch.tensor(bundle.mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
    std = torch.tensor(bundle.std, dtype=torch.float32, device=device).view(1, -1, 1, 1)
    return (x / 255.0 - mean) / std


NORM_LAYERS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


def default_param_groups(model: nn.Module, optim_cfg) -> list[dict[str, Any]]:
    """One group of all parameters; with ``optim.norm_lr_mult`` / ``optim.norm_weight_decay`` set, the
    parameters of normalisation layers get a group of their own with that multiplier and decay."""
    params = list(model.parameters())
    if optim_cfg.norm_lr_mult == 1.0 and optim_cfg.norm_weight_decay is None:
        return [{"params": params}]
    norm_ids = {id(p) for m in model.modules() if isinstance(m, NORM_LAYERS) for p in m.parameters(recurse=False)}
    norm = [p for p in params if id(p) in norm_ids]
    other = [p for p in params if id(p) not in norm_ids]
    wd = optim_cfg.weight_decay if optim_cfg.norm_weight_decay is None else optim_cfg.norm_weight_decay
    groups: list[dict[str, Any]] = [{"params": other}] if other else []
    if norm:
        groups.append({"params": norm, "lr_mult": optim_cfg.norm_lr_mult, "weight_decay": wd})
    return groups


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.4f}"


@torch.no_grad()
def evaluate(model: nn.Module, loader, loss_fn, device: torch.device, precision: str = "fp32",
             tta: str = "none") -> dict[str, float]:
    """Mean loss and accuracy of ``model`` over ``loader`` (summed over DDP ranks)."""
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    correct = torch.zeros((), device=device, dtype=torch.float64)
    count = torch.zeros((), device=device, dtype=torch.float64)
    for x, y in loader:
        if len(y) == 0:  # this rank's empty slice of the last global batch (a mean over none is NaN)
            continue
        with autocast(device, precision):
            logits = predict_logits(model, x, tta)
        logits = logits.float()
        loss_sum += loss_fn(logits, y).double() * len(y)
        correct += (logits.argmax(1) == y).sum()
        count += len(y)
    totals = dist_utils.all_reduce_sum(torch.stack([loss_sum, correct, count]))
    model.train(was_training)
    n = max(float(totals[2]), 1.0)
    return {"loss": float(totals[0]) / n, "accuracy": float(totals[1]) / n, "n": int(totals[2])}


def predict_logits(model: nn.Module, x: torch.Tensor, tta: str = "none") -> torch.Tensor:
    """Logits, averaged over test-time views: ``flip`` adds the mirror image, ``flip_translate``
    also one-pixel shifts of both."""
    logits = model(x)
    if tta == "none":
        return logits
    views = [x.flip(-1)]
    if tta == "flip_translate":
        pad = F.pad(x, (1, 1, 1, 1), mode="reflect")
        shifted = [pad[..., :-2, :-2], pad[..., 2:, 2:]]
        views += shifted + [s.flip(-1) for s in shifted]
    for v in views:
        logits = logits + model(v)
    return logits / (1 + len(views))


# --------------------------------------------------------------------------- the run

@dataclass
class RunResult:
    run_dir: Path
    final: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)


class Trainer:
    """State the callbacks can see: ``epochs``, ``steps_per_epoch``, ``should_stop``, ``model``."""

    def __init__(self, cfg: Config, *, run_dir: Path | None = None, resume: bool = False, quiet: bool = False,
                 log: Callable[[str], None] | None = None, callbacks: list[Callback] | None = None,
                 model: nn.Module | None = None, bundle: DataBundle | None = None,
                 param_groups: Callable[[nn.Module], list[dict[str, Any]]] | None = None) -> None:
        self.cfg = cfg
        self.quiet = quiet
        self.dist = dist_utils.setup(cfg.train.device)
        self.is_main = self.dist.rank == 0
        self._log = log or (lambda s: print(s, flush=True))
        self.device = self.dist.device or resolve_device(cfg.train.device)
        self.epochs = cfg.train.epochs
        self.should_stop = False
        self.extra_callbacks = callbacks or []
        self._model_override = model
        self._bundle_override = bundle
        self._param_groups = param_groups
        self.run_dir = run_dir
        self.resume = resume

    def log(self, text: str) -> None:
        if self.is_main and not self.quiet:
            self._log(text)

    def running_metrics(self) -> tuple[float, float]:
        n = max(float(self._seen), 1.0)
        return float(self._loss_sum) / n, float(self._correct) / n

    def fit(self) -> RunResult:
        cfg, device = self.cfg, self.device
        seed_everything(cfg.train.seed + self.dist.rank, cfg.train.deterministic)
        if cfg.train.cudnn_benchmark and not cfg.train.deterministic:
            torch.backends.cudnn.benchmark = True
        if cfg.train.eval_every != 1 and cfg.regularization.early_stopping is not None:
            raise UserError(f"regularization.early_stopping watches every epoch; it needs train.eval_every=1 "
                            f"(got {cfg.train.eval_every})")

        # Data.
        bundle = self._bundle_override
        if bundle is None:
            bundle = load_data(cfg.data)
            from cnnkit.models.weights import normalisation_for

            norm = normalisation_for(cfg.model, bundle.input_shape[0])
            if norm is not None:  # pretrained weights expect the normalisation they were trained with
                bundle.mean, bundle.std = norm
        input_shape = input_shape_for(cfg, bundle)
        from cnnkit.data.loaders import make_loader

        bs = cfg.data.batch_size
        if bs % self.dist.world_size:
            raise UserError(f"data.batch_size={bs} must be divisible by the number of processes "
                            f"({self.dist.world_size})")
        train_loader = make_loader(bundle.train, batch_size=bs, mean=bundle.mean, std=bundle.std, shuffle=True,
                                   seed=cfg.train.seed, device=device, augment=cfg.augment,
                                   num_workers=cfg.data.num_workers, rank=self.dist.rank,
                                   world_size=self.dist.world_size, channels_last=cfg.train.channels_last)
        val_loader = make_loader(bundle.val, batch_size=cfg.data.eval_batch_size or max(bs, 256), mean=bundle.mean,
                                 std=bundle.std, shuffle=False, seed=0, device=device, augment=None,
                                 num_workers=cfg.data.num_workers, rank=self.dist.rank,
                                 world_size=self.dist.world_size, channels_last=cfg.train.channels_last)
        self.steps_per_epoch = len(train_loader)
        n_train = len(bundle.train)

        # Model, loss, optimiser, schedule.
        if self._model_override is not None:
            model = self._model_override
        else:  # a resumed run loads its own checkpoint instead of the starting weights
            from cnnkit.models.weights import without_weights

            model = create_model(without_weights(cfg.model) if self.resume else cfg.model, input_shape,
                                 bundle.num_classes)
        model = model.to(device)
        if cfg.train.channels_last:
            model = model.to(memory_format=torch.channels_last)
        init_time = 0.0
        if cfg.model.data_init and hasattr(model, "init_from_data"):
            # Data-dependent initialisation (fastnet's whitening layer): training work, so it is timed.
            sync(device)
            t_init = time.perf_counter()
            model.init_from_data(data_init_images(bundle, cfg.model.data_init, device))
            sync(device)
            init_time = time.perf_counter() - t_init
        self.model = model
        loss_fn = make_loss(cfg.train.loss, cfg.regularization.label_smoothing)
        groups = self._param_groups(model) if self._param_groups else default_param_groups(model, cfg.optim)
        optimizer = create_optimizer(cfg.optim.name, groups, lr=cfg.optim.lr, **cfg.optim.hyper())
        for g in optimizer.param_groups:
            g.setdefault("lr_mult", 1.0)
        schedule = make_schedule(cfg.schedule, cfg.train.epochs)
        total_steps = self.steps_per_epoch * cfg.train.epochs
        teacher = self._load_teacher(bundle) if cfg.train.distill else None

        train_model: nn.Module = model
        if self.dist.world_size > 1:
            train_model = nn.parallel.DistributedDataParallel(
                model, device_ids=[device.index] if device.type == "cuda" else None)
        # After DDP, which gives every rank rank 0's initial weights: the EMA starts from those too.
        ema = EMA(model, cfg.train.ema) if cfg.train.ema else None
        lookahead = Lookahead(model, cfg.train.lookahead, total_steps) if cfg.train.lookahead else None
        step_fn = train_model
        if cfg.train.compile != "off":
            step_fn = torch.compile(train_model, mode=None if cfg.train.compile == "default" else "max-autotune")

        # Callbacks.
        callbacks, early, best_monitor, best_mode = standard_callbacks(
            cfg, progress=None if not self.quiet and self.is_main else False, extra=self.extra_callbacks)

        # Run folder, or the state of the run being resumed.
        start_epoch, best_value, best_epoch, history = 1, (math.inf if best_mode == "min" else -math.inf), 0, []
        train_time = 0.0
        if self.resume:
            ckpt_path = self.run_dir / "checkpoints" / "last.pt"
            if ckpt_path.exists():
                ckpt = load_checkpoint(ckpt_path)
                model.load_state_dict(ckpt["model"])
                optimizer.load_state_dict(ckpt["optimizer"])
                if ema is not None and ckpt.get("ema") is not None:
                    ema.load_state_dict(ckpt["ema"])
                if lookahead is not None:
                    if ckpt.get("lookahead") is not None:
                        lookahead.load_state_dict(ckpt["lookahead"])
                    else:  # lookahead switched on at resume: start from the loaded weights
                        lookahead.reset()
                for cb in callbacks:
                    state = ckpt.get("callbacks", {}).get(type(cb).__name__)
                    if state:
                        cb.load_state_dict(state)
                rngs = ckpt.get("rng_ranks")  # each rank's own stream, from a DDP run of the same size
                set_rng_state(rngs[self.dist.rank] if rngs and len(rngs) == self.dist.world_size else ckpt["rng"])
                start_epoch = ckpt["epoch"] + 1
                best_value, best_epoch = ckpt["best_value"], ckpt["best_epoch"]
                history = ckpt["history"]
                train_time = ckpt.get("train_time_s", 0.0)
                self.should_stop = ckpt.get("stopped", False)
            if ckpt_path.exists() and ckpt.get("engine", "torch") != "torch":
                raise UserError(f"{str(ckpt_path)!r} was written by the {ckpt['engine']} engine; resume it with "
                                f"train.engine={ckpt['engine']}")
            if self.is_main:
                remove_temp_files(self.run_dir)
                repair_metrics(self.run_dir, history)
            self.log(f"resuming {self.run_dir} at epoch {start_epoch}/{cfg.train.epochs}")
        elif self.is_main:
            label = cfg.train.name or f"{cfg.model.name or 'layers'}-{cfg.data.name}"
            self.run_dir = self.run_dir or new_run_dir(cfg.train.runs_dir, label)
            atomic_write_text(self.run_dir / "config.yaml", dump_yaml(cfg.to_dict()))
            write_json(self.run_dir / "meta.json", run_meta(cfg, bundle, input_shape))
            atomic_write_text(self.run_dir / "summary.txt", summary_text(cfg, model, bundle, input_shape))
        self.run_dir = self.dist.broadcast_path(self.run_dir)
        meta = run_meta(cfg, bundle, input_shape)

        self.log(f"training {cfg.model.name or 'layer list'} on {cfg.data.name} ({len(bundle.train)} train / "
                 f"{len(bundle.val)} val images) for {cfg.train.epochs} epochs on {device}"
                 + (f" x{self.dist.world_size} processes" if self.dist.world_size > 1 else ""))
        if start_epoch == 1:  # a resumed run keeps the callbacks' restored state
            train_time += init_time
            for cb in callbacks:
                cb.on_train_begin(self)

        # Epochs.
        step = (start_epoch - 1) * self.steps_per_epoch
        l1, l2 = cfg.regularization.l1, cfg.regularization.l2
        clip = cfg.regularization.grad_clip
        precision = cfg.train.precision
        scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None
        base_lrs = [cfg.optim.lr * g["lr_mult"] for g in optimizer.param_groups]
        augment_set_epoch = getattr(getattr(train_loader, "augment", None), "set_epoch", None)
        every = cfg.train.eval_every
        last_val, last_val_epoch = None, None
        epoch = start_epoch - 1
        for epoch in range(start_epoch, cfg.train.epochs + 1):
            if self.should_stop:
                break
            for cb in callbacks:
                cb.on_epoch_begin(self, epoch)
            train_loader.set_epoch(epoch)
            if augment_set_epoch is not None:
                augment_set_epoch(epoch)
            sync(device)
            t0 = time.perf_counter()
            model.train()
            self._loss_sum = torch.zeros((), device=device, dtype=torch.float64)
            self._correct = torch.zeros((), device=device, dtype=torch.float64)
            self._seen = 0
            for i, (x, y) in enumerate(train_loader):
                factor = schedule(step / total_steps)
                for g, base in zip(optimizer.param_groups, base_lrs):
                    g["lr"] = base * factor
                with autocast(device, precision):
                    logits = step_fn(x)
                    loss = loss_fn(logits.float(), y)
                    if teacher is not None:
                        with torch.no_grad():
                            teacher_logits = teacher(x).float()
                        loss = distill_loss(loss, logits.float(), teacher_logits, cfg.train.distill)
                    if l1 or l2:
                        loss = loss + penalty(model, l1, l2)
                optimizer.zero_grad(set_to_none=True)
                grad_loss = loss
                if self.dist.world_size > 1:
                    # DDP averages the ranks' gradients: weighting each rank's mean loss by its share of
                    # the global batch makes that the gradient of the global batch's mean loss, also when
                    # the last batch splits unevenly or leaves this rank nothing (its NaN loss then gets
                    # weight 0 and its gradients are zeros).
                    share = len(y) * self.dist.world_size / min(bs, n_train - i * bs)
                    if share != 1.0:
                        grad_loss = loss * share
                if scaler is not None:
                    scaler.scale(grad_loss).backward()
                    scaler.unscale_(optimizer)
                else:
                    grad_loss.backward()
                if clip:
                    nn.utils.clip_grad_norm_(model.parameters(), clip)
                if scaler is not None:
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    optimizer.step()
                if ema is not None:
                    ema.update(model)
                n = len(y)
                if n:  # not this rank's empty slice of the last global batch
                    # Running sums stay on the device: no synchronisation inside the epoch.
                    self._loss_sum.add_(loss.detach(), alpha=n)
                    self._correct.add_((logits.detach().argmax(1) == y).sum())
                    self._seen += n
                step += 1
                if lookahead is not None:
                    lookahead.step(step)
                    if step == total_steps:
                        lookahead.finish()
                for cb in callbacks:
                    cb.on_batch_end(self, step)
            eval_model = ema.model if ema is not None else model
            if epoch == cfg.train.epochs or (every and epoch % every == 0):
                val = evaluate(eval_model, val_loader, loss_fn, device, precision, cfg.train.eval_tta)
                last_val, last_val_epoch = val, epoch
            else:
                val = {"loss": None, "accuracy": None}
            sync(device)
            epoch_time = time.perf_counter() - t0
            train_time += epoch_time

            seen = torch.tensor(float(self._seen), device=device, dtype=torch.float64)
            totals = dist_utils.all_reduce_sum(torch.stack([self._loss_sum, self._correct, seen]))
            n = max(float(totals[2]), 1.0)
            metrics = {"epoch": epoch, "train_loss": float(totals[0]) / n, "train_accuracy": float(totals[1]) / n,
                       "val_loss": val["loss"], "val_accuracy": val["accuracy"],
                       "lr": optimizer.param_groups[0]["lr"], "epoch_time_s": round(epoch_time, 4)}
            history.append(metrics)
            for cb in callbacks:
                cb.on_epoch_end(self, epoch, metrics)
            value = metrics[best_monitor]
            improved = value is not None and (value < best_value if best_mode == "min" else value > best_value)
            if improved:
                best_value, best_epoch = value, epoch
            self.log(f"epoch {epoch:>3}/{cfg.train.epochs}  train_loss {metrics['train_loss']:.4f}  "
                     f"train_acc {metrics['train_accuracy']:.4f}  val_loss {_fmt(val['loss'])}  "
                     f"val_acc {_fmt(val['accuracy'])}  lr {metrics['lr']:.3g}  {epoch_time:.2f}s")
            save_last = epoch % cfg.train.checkpoint_every == 0 or epoch == cfg.train.epochs or self.should_stop
            # Under DDP every rank's RNG state (their dropout masks differ), for an exact resume.
            rngs = dist_utils.all_gather_object(rng_state()) if save_last and self.dist.world_size > 1 else None
            if self.is_main:
                append_jsonl(self.run_dir / "metrics.jsonl", metrics)
                state = {"model": eval_model.state_dict(), "epoch": epoch, "config": cfg.to_dict(), "meta": meta,
                         "metrics": metrics}
                if improved:
                    atomic_torch_save(state, self.run_dir / "checkpoints" / "best.pt")
                if save_last:
                    atomic_torch_save({**state, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                       "ema": ema.state_dict() if ema is not None else None,
                                       "lookahead": lookahead.state_dict() if lookahead is not None else None,
                                       "rng": rng_state(), **({"rng_ranks": rngs} if rngs else {}),
                                       "best_value": best_value, "best_epoch": best_epoch,
                                       "history": history, "train_time_s": train_time, "stopped": self.should_stop,
                                       "callbacks": {type(cb).__name__: cb.state_dict() for cb in callbacks}},
                                      self.run_dir / "checkpoints" / "last.pt")

        # The end: the run's result is its best checkpoint (what eval, predict and finetune use),
        # unless early stopping was told not to restore it; then it is the last weights.
        for cb in callbacks:
            cb.on_train_end(self)
        final_model = ema.model if ema is not None else model
        if lookahead is not None and not lookahead.finished:  # stopped before the last step
            lookahead.finish()
            last_val = None
        last_epoch_val = last_val if last_val_epoch == epoch else None
        keep_last = early is not None and not early.restore_best
        if best_epoch and best_epoch != epoch and not keep_last:
            best = load_checkpoint(self.run_dir / "checkpoints" / "best.pt")
            final_model.load_state_dict(best["model"])
            row = next(h for h in history if h["epoch"] == best_epoch)
            val = {"loss": row["val_loss"], "accuracy": row["val_accuracy"], "n": len(bundle.val)}
        elif last_epoch_val is not None:
            val = last_epoch_val  # the last epoch's validation already measured these very weights
        else:
            val = evaluate(final_model, val_loader, loss_fn, device, precision, cfg.train.eval_tta)
        if last_epoch_val is None and history:
            last_epoch_val = {"loss": history[-1]["val_loss"], "accuracy": history[-1]["val_accuracy"]}
        sync(device)
        final = {
            "val_accuracy": val["accuracy"], "val_loss": val["loss"], "best_epoch": best_epoch,
            "best_val_accuracy": max((h["val_accuracy"] for h in history if h["val_accuracy"] is not None),
                                     default=None),
            "epochs": len(history), "n_train": len(bundle.train), "n_val": val["n"],
            "num_classes": bundle.num_classes, "classes": bundle.classes,
            "checkpoint": "last.pt" if keep_last or best_epoch in (0, epoch) else "best.pt",
            "last_val_accuracy": last_epoch_val["accuracy"] if last_epoch_val else None,
            "last_val_loss": last_epoch_val["loss"] if last_epoch_val else None,
            "train_time_s": round(train_time, 3), "end_to_end_s": round(time.time() - process_start_time(), 3),
            "world_size": self.dist.world_size, "device": str(device), "engine": "torch",
            "stopped_early": bool(early and early.stopped_epoch),
        }
        if self.is_main:
            write_json(self.run_dir / "final.json", final)
        dist_utils.barrier()
        return RunResult(self.run_dir, final, history)

    # ---------------------------------------------------------------- pieces

    def _load_teacher(self, bundle: DataBundle) -> nn.Module:
        from cnnkit.inference import load_run_model

        teacher, _ = load_run_model(self.cfg.train.distill.teacher, device=self.device)
        teacher.eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
        return teacher


def remove_temp_files(run_dir: Path) -> None:
    """Delete the temp files of atomic writes that a kill interrupted (only one process writes a run)."""
    for folder in (run_dir, run_dir / "checkpoints"):
        for tmp in folder.glob(".*.tmp"):
            tmp.unlink(missing_ok=True)


def repair_metrics(run_dir: Path, history: list[dict[str, Any]]) -> None:
    """Make metrics.jsonl hold each checkpointed epoch exactly once.

    Lines already there for those epochs are kept as they are (the first of any
    duplicates); lines of epochs after the checkpoint (written before a kill) are
    dropped, and an epoch the checkpoint knows but the file lacks is added back.
    """
    import json

    path = run_dir / "metrics.jsonl"
    done = {h["epoch"]: h for h in history}
    rows: dict[int, dict[str, Any]] = {}
    for r in read_metrics(path):
        if r.get("epoch") in done and r["epoch"] not in rows:
            rows[r["epoch"]] = r
    for e, h in done.items():
        rows.setdefault(e, h)
    text = "".join(json.dumps(rows[e]) + "\n" for e in sorted(rows))
    if not path.exists() or path.read_text() != text:
        atomic_write_text(path, text)


def run_meta(cfg: Config, bundle: DataBundle, input_shape: tuple[int, int, int]) -> dict[str, Any]:
    """What a run folder records besides its config: classes, normalisation, versions, seed, command."""
    return {"classes": bundle.classes, "input_shape": list(input_shape), "mean": list(bundle.mean),
            "std": list(bundle.std), "dataset": cfg.data.name, "cnnkit_version": cnnkit.__version__,
            "torch_version": torch.__version__, "git_revision": git_revision(), "seed": cfg.train.seed,
            "command": " ".join(sys.argv)}


def summary_text(cfg: Config, model: nn.Module, bundle: DataBundle, input_shape: tuple[int, int, int]) -> str:
    """The run folder's summary.txt: data, classes and the model's layer table."""
    from cnnkit.summary import summarize

    try:
        table = summarize(model, input_shape).to_text()
    except Exception as e:  # the summary must never stop a training run
        table = f"(summary unavailable: {e})"
    return (f"model: {cfg.model.name or 'layer list'}\ndataset: {cfg.data.name} ({bundle.description})\n"
            f"classes: {', '.join(bundle.classes)}\ntrain/val images: {len(bundle.train)}/{len(bundle.val)}\n\n"
            f"{table}\n")


def distill_loss(hard_loss: torch.Tensor, student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                 cfg) -> torch.Tensor:
    """Knowledge distillation (Hinton et al., 2015): (1 - α) hard loss + α T² KL(teacher_T || student_T)."""
    t = cfg.temperature
    soft = F.kl_div(F.log_softmax(student_logits / t, dim=1), F.softmax(teacher_logits / t, dim=1),
                    reduction="batchmean") * (t * t)
    return (1 - cfg.alpha) * hard_loss + cfg.alpha * soft


class EMA:
    """An exponential moving average of the weights (and a copy of the buffers), used for evaluation."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        import copy

        self.decay = decay
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        ema_p = [p for p in self.model.parameters()]
        cur_p = [p.detach() for p in model.parameters()]
        torch._foreach_lerp_(ema_p, cur_p, 1 - self.decay)
        for b_ema, b in zip(self.model.buffers(), model.buffers()):
            b_ema.copy_(b)

    def state_dict(self) -> dict[str, Any]:
        return self.model.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state)


class Lookahead:
    """Lookahead (Zhang et al., 2019) over the weights and float buffers (batch-norm statistics) of a model.

    Every ``k`` steps the slow copy moves ``alpha_t`` of the way to the fast weights
    (``slow += alpha_t (fast - slow)``) and the fast weights restart from it; ``finish``
    leaves the model on the slow weights. ``alpha_t = 1 - (1 - alpha) (t / T)^ramp``
    with ``ramp > 0`` (no averaging at the start, ``alpha`` at the end), else ``alpha``.
    """

    def __init__(self, model: nn.Module, cfg, total_steps: int) -> None:
        self.k, self.alpha, self.ramp = cfg.k, cfg.alpha, cfg.ramp
        self.total_steps = max(total_steps, 1)
        self.tensors = [t for t in list(model.parameters()) + list(model.buffers()) if t.is_floating_point()]
        self.slow = [t.detach().clone() for t in self.tensors]
        self.finished = False

    @torch.no_grad()
    def reset(self) -> None:
        """Make the slow weights the model's current ones."""
        torch._foreach_copy_(self.slow, [t.detach() for t in self.tensors])
        self.finished = False

    def alpha_at(self, step: int) -> float:
        if not self.ramp:
            return self.alpha
        return 1.0 - (1.0 - self.alpha) * min(step / self.total_steps, 1.0) ** self.ramp

    @torch.no_grad()
    def step(self, step: int) -> None:
        if step % self.k:
            return
        fast = [t.detach() for t in self.tensors]
        torch._foreach_lerp_(self.slow, fast, self.alpha_at(step))
        torch._foreach_copy_(fast, self.slow)

    @torch.no_grad()
    def finish(self) -> None:
        torch._foreach_copy_([t.detach() for t in self.tensors], self.slow)
        self.finished = True

    def state_dict(self) -> dict[str, Any]:
        return {"slow": self.slow, "finished": self.finished}

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, Any]) -> None:
        for mine, saved in zip(self.slow, state["slow"]):
            mine.copy_(saved)
        self.finished = state.get("finished", False)


def train(cfg: Config, *, quiet: bool = False, log: Callable[[str], None] | None = None,
          callbacks: list[Callback] | None = None) -> RunResult:
    """Train a new run from a config; returns the run folder and final metrics."""
    if cfg.train.engine == "reference":
        from cnnkit.reference.trainer import train_reference

        return train_reference(cfg, quiet=quiet, log=log)
    return Trainer(cfg, quiet=quiet, log=log, callbacks=callbacks).fit()


def resume(run_dir: str | os.PathLike, overrides: list[str] | None = None, *, quiet: bool = False,
           log: Callable[[str], None] | None = None) -> RunResult:
    """Continue a run from ``checkpoints/last.pt`` (model, optimiser, schedule position, RNG, epoch)."""
    path = check_run_dir(run_dir, need_checkpoint=False)
    raw = apply_overrides(read_yaml(path / "config.yaml"), overrides or [])
    cfg = validate(raw)
    if overrides and dist_utils.is_main_process():  # under torchrun only rank 0 writes
        atomic_write_text(path / "config.yaml", dump_yaml(cfg.to_dict()))
    if cfg.train.engine == "reference":
        from cnnkit.reference.trainer import train_reference

        return train_reference(cfg, quiet=quiet, log=log, run_dir=path, resume=True)
    f = cfg.finetune
    if f.freeze != "none" or f.lr_mult or f.unfreeze_at:
        # A fine-tuned run resumes with its freezing, learning-rate groups and unfreezing schedule.
        from cnnkit.finetune import FinetuneCallback, FinetunePlan

        callback = FinetuneCallback(None)  # type: ignore[arg-type]

        def groups(model: nn.Module) -> list[dict[str, Any]]:
            callback.plan = FinetunePlan(model, f, cfg.train.epochs)
            return callback.plan.param_groups(model)

        return Trainer(cfg, run_dir=path, resume=True, quiet=quiet, log=log, param_groups=groups,
                       callbacks=[callback]).fit()
    return Trainer(cfg, run_dir=path, resume=True, quiet=quiet, log=log).fit()
