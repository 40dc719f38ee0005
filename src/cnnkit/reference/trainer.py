"""``train.engine: reference``: the training loop of :mod:`cnnkit.train.trainer`, run by the NumPy network.

The same config gives the same run folder as the torch engine (``config.yaml``, ``meta.json``,
``metrics.jsonl``, ``checkpoints/last.pt`` and ``best.pt``, ``summary.txt``, ``final.json``), and
the checkpoints hold a torch ``state_dict`` of the DeclarativeNet, so ``cnnkit eval`` and
``predict`` load a reference-trained run into the torch model. The weights start as the torch
engine's do (its network is built under the same seed and copied), the batches come from the
same loaders (augmentation included), and each step is:
schedule -> forward -> loss -> backward -> L1/L2 -> clip -> the course optimiser rule.

Example::

    result = train_reference(load_config("configs/lenet5_mnist5k.yaml", ["train.engine=reference"]))
    result.run_dir, result.final["val_accuracy"]
"""

from __future__ import annotations

import inspect
import math
import os
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from cnnkit.config import Config, ModelConfig, atomic_write_text, dump_yaml
from cnnkit.errors import UserError
from cnnkit.models.spec import LayerSpec, parse_layers
from cnnkit.reference import losses as L
from cnnkit.reference.activations import softmax, softmax_backward
from cnnkit.reference.network import ReferenceNet
from cnnkit.reference.optim import OPTIMIZERS, Optimizer
from cnnkit.rundir import append_jsonl, atomic_torch_save, load_checkpoint, new_run_dir, write_json

LossFn = Callable[[np.ndarray, np.ndarray], "tuple[float, np.ndarray]"]


# --------------------------------------------------------------------------- model

def layer_list(model_cfg: ModelConfig) -> list[Any]:
    """The declarative layer list of a model section: ``model.layers``, or LeNet-5's own list."""
    if model_cfg.layers is not None:
        return model_cfg.layers
    if model_cfg.name == "lenet5":
        from cnnkit.models.lenet import lenet5_layers

        allowed = ("n1", "n2", "activation")
        bad = [k for k in model_cfg.options if k not in allowed]
        if bad:
            raise UserError(f"model 'lenet5' has no option {bad[0]!r}; allowed options: {', '.join(allowed)}")
        return lenet5_layers(**model_cfg.options)
    raise UserError(f"train.engine=reference runs declarative layer lists; model {model_cfg.name!r} is a "
                    f"registered torch network; use model.layers (or model.name=lenet5), or train.engine=torch")


def reference_specs(model_cfg: ModelConfig, num_classes: int) -> list[LayerSpec]:
    """Parsed layers, with a last dense layer sized to the class count as ``create_model`` does."""
    specs = parse_layers(layer_list(model_cfg))
    last = specs[-1]
    if last.type == "dense" and isinstance(last.args["out"], int) and last.args["out"] != num_classes:
        specs[-1] = type(last)(last.type, {**last.args, "out": num_classes}, last.name, last.index)
    return specs


def build_reference_model(model_cfg: ModelConfig, input_shape: tuple[int, int, int], num_classes: int, *,
                          dtype=np.float32, rng: np.random.Generator | None = None):
    """``(ReferenceNet, torch DeclarativeNet)`` with the torch net's initial weights copied in.

    The torch net is built by :func:`cnnkit.models.create_model` from the current torch RNG, so a
    caller that seeds torch as the torch trainer does gets the very same initial weights.
    """
    from cnnkit.models import create_model

    specs = reference_specs(model_cfg, num_classes)
    net = ReferenceNet(specs, input_shape, num_classes, dtype=dtype, rng=rng)
    tmodel = create_model(model_cfg, input_shape, num_classes)
    net.load_state_dict(tmodel.state_dict())
    return net, tmodel


# --------------------------------------------------------------------------- loss and optimiser

def make_reference_loss(name: str, label_smoothing: float = 0.0) -> LossFn:
    """``fn(logits (N, K), labels (N,)) -> (loss, dL/dlogits)``, the NumPy twin of ``cnnkit.train.losses``.

    cross_entropy: softmax cross-entropy (label smoothing); mse: mean over N*K of
    (softmax(z) - onehot)^2 (no smoothing, as torch); bce: sigmoid BCE vs the (smoothed) one-hot.
    """
    def onehot(z, y):
        t = np.zeros_like(z)
        t[np.arange(len(y)), y] = 1
        return t

    if name == "cross_entropy":
        def ce(z, y):
            loss, dz = L.cross_entropy(z, y, label_smoothing)
            return float(loss), dz
        return ce
    if name == "mse":
        def mse(z, y):
            p, cache = softmax(z, axis=1)                                 # (N, K)
            loss, dp = L.mse(p, onehot(z, y))
            return float(loss), softmax_backward(dp, cache).astype(z.dtype, copy=False)
        return mse
    if name == "bce":
        def bce(z, y):
            t = onehot(z, y)
            if label_smoothing:
                t = t * z.dtype.type(1 - label_smoothing) + z.dtype.type(label_smoothing / z.shape[1])
            loss, dz = L.bce(z, t)
            return float(loss), dz
        return bce
    raise UserError(f"unknown loss {name!r}; choose from cross_entropy, mse, bce")


def create_reference_optimizer(name: str, lr: float, hyper: dict[str, Any]) -> Optimizer:
    """The course rule ``name`` from :mod:`cnnkit.reference.optim`; unknown names or arguments are UserErrors."""
    if name.startswith("torch."):
        raise UserError(f"optim.name={name!r} is one of torch's optimisers; train.engine=reference runs the "
                        f"course's rules: {', '.join(OPTIMIZERS)} (or use train.engine=torch)")
    if name not in OPTIMIZERS:
        raise UserError(f"unknown optimizer {name!r} for train.engine=reference; choose from {', '.join(OPTIMIZERS)}")
    cls = OPTIMIZERS[name]
    allowed = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "lr")]
    for k in hyper:
        if k not in allowed:
            raise UserError(f"optimizer {name!r} takes no {k!r}; it takes: lr, {', '.join(allowed)}")
    return cls(lr, **hyper)


def optimizer_state_dict(opt: Optimizer, names: list[str]) -> dict[str, Any]:
    """The optimiser's state as plain data: step count, lr and per-parameter arrays keyed by name."""
    return {"name": opt.name, "t": opt.t, "lr": opt.lr,
            "state": {names[i]: {k: np.array(v, copy=True) for k, v in st.items()} for i, st in opt.state.items()}}


def load_optimizer_state_dict(opt: Optimizer, state: dict[str, Any], names: list[str]) -> None:
    if state.get("name") != opt.name:
        raise UserError(f"the checkpoint's optimiser is {state.get('name')!r}, the config asks for {opt.name!r}")
    index = {n: i for i, n in enumerate(names)}
    opt.t, opt.lr = int(state["t"]), float(state["lr"])
    opt.state = {index[n]: {k: np.array(v, copy=True) for k, v in st.items()} for n, st in state["state"].items()}


# --------------------------------------------------------------------------- pieces of a step

def penalty(net: ReferenceNet, grads: dict[str, np.ndarray], l1: float, l2: float) -> float:
    """Add the L1/L2 terms' gradients to ``grads`` (weights with ndim > 1 only); return their value."""
    total = 0.0
    for k, p in net.params.items():
        if p.ndim > 1:
            if l1:
                total += l1 * float(np.abs(p).sum(dtype=np.float64))
                grads[k] = grads[k] + p.dtype.type(l1) * np.sign(p)
            if l2:
                total += l2 * float(np.square(p).sum(dtype=np.float64))
                grads[k] = grads[k] + p.dtype.type(2 * l2) * p
    return total


def clip_by_global_norm(grads: dict[str, np.ndarray], max_norm: float) -> float:
    """Scale every gradient by max_norm / (norm + 1e-6) when the global L2 norm is larger (as torch)."""
    norm = math.sqrt(sum(float(np.square(g, dtype=np.float64).sum()) for g in grads.values()))
    coef = max_norm / (norm + 1e-6)
    if coef < 1:
        for k in grads:
            grads[k] = grads[k] * grads[k].dtype.type(coef)
    return norm


def evaluate_reference(net: ReferenceNet, loader, loss_fn: LossFn) -> dict[str, float]:
    """Mean loss and accuracy of ``net`` (eval mode) over ``loader``."""
    loss_sum = correct = count = 0.0
    for x, y in loader:
        yb = y.numpy()
        logits = net.forward(x.numpy(), training=False)
        loss, _ = loss_fn(logits, yb)
        loss_sum += loss * len(yb)
        correct += float((logits.argmax(1) == yb).sum())
        count += len(yb)
    n = max(count, 1.0)
    return {"loss": loss_sum / n, "accuracy": correct / n, "n": int(count)}


def check_reference_config(cfg: Config) -> None:
    """Settings the NumPy engine cannot honour are UserErrors (speed switches are ignored)."""
    t = cfg.train
    problems = []
    if t.precision != "fp32":
        problems.append(f"train.precision={t.precision!r} (it computes in float32)")
    if t.ema is not None:
        problems.append("train.ema")
    if t.distill is not None:
        problems.append("train.distill")
    if t.eval_tta != "none":
        problems.append(f"train.eval_tta={t.eval_tta!r}")
    if cfg.model.pretrained or cfg.model.weights:
        problems.append("model.pretrained / model.weights")
    f = cfg.finetune
    if f.freeze != "none" or f.lr_mult or f.unfreeze_at:
        problems.append("finetune settings")
    if t.lookahead is not None:
        problems.append("train.lookahead")
    if t.eval_every != 1:
        problems.append(f"train.eval_every={t.eval_every}")
    if cfg.optim.norm_lr_mult != 1.0 or cfg.optim.norm_weight_decay is not None:
        problems.append("optim.norm_lr_mult / optim.norm_weight_decay")
    if cfg.model.data_init and cfg.model.name == "fastnet":
        problems.append("model.data_init")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        problems.append("several processes (torchrun)")
    if problems:
        raise UserError(f"train.engine=reference does not support {', '.join(problems)}; "
                        f"remove them or use train.engine=torch")


# --------------------------------------------------------------------------- the run

class ReferenceTrainer:
    """What callbacks see (``epochs``, ``steps_per_epoch``, ``should_stop``, ``model``), as the torch Trainer."""

    def __init__(self, cfg: Config, *, run_dir: Path | None = None, resume: bool = False, quiet: bool = False,
                 log: Callable[[str], None] | None = None, callbacks: list | None = None) -> None:
        self.cfg, self.quiet, self.resume = cfg, quiet, resume
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self._log = log or (lambda s: print(s, flush=True))
        self.epochs = cfg.train.epochs
        self.should_stop = False
        self.extra_callbacks = callbacks or []
        self._loss_sum = self._correct = self._seen = 0.0

    def log(self, text: str) -> None:
        if not self.quiet:
            self._log(text)

    def running_metrics(self) -> tuple[float, float]:
        n = max(self._seen, 1.0)
        return self._loss_sum / n, self._correct / n

    def fit(self):
        from cnnkit.data import load_data
        from cnnkit.data.loaders import make_loader
        from cnnkit.train.callbacks import standard_callbacks
        from cnnkit.train.schedules import make_schedule
        from cnnkit.train.trainer import (RunResult, input_shape_for, process_start_time, remove_temp_files,
                                          repair_metrics, rng_state,
                                          run_meta, seed_everything, set_rng_state, summary_text)

        cfg = self.cfg
        check_reference_config(cfg)
        layer_list(cfg.model)  # a registered torch network fails here, before any data is loaded
        seed_everything(cfg.train.seed, cfg.train.deterministic)

        # Data: the torch engine's loaders, on the CPU; batches become NumPy arrays.
        bundle = load_data(cfg.data)
        input_shape = input_shape_for(cfg, bundle)
        bs = cfg.data.batch_size
        train_loader = make_loader(bundle.train, batch_size=bs, mean=bundle.mean, std=bundle.std, shuffle=True,
                                   seed=cfg.train.seed, device="cpu", augment=cfg.augment,
                                   num_workers=cfg.data.num_workers)
        val_loader = make_loader(bundle.val, batch_size=cfg.data.eval_batch_size or max(bs, 256), mean=bundle.mean,
                                 std=bundle.std, shuffle=False, seed=0, device="cpu", augment=None,
                                 num_workers=cfg.data.num_workers)
        self.steps_per_epoch = len(train_loader)

        # Model (the torch engine's initial weights), loss, optimiser, schedule.
        net, tmodel = build_reference_model(cfg.model, input_shape, bundle.num_classes,
                                            rng=np.random.default_rng(cfg.train.seed))
        self.model = net
        names = list(net.params)
        loss_fn = make_reference_loss(cfg.train.loss, cfg.regularization.label_smoothing)
        optimizer = create_reference_optimizer(cfg.optim.name, cfg.optim.lr, cfg.optim.hyper())
        schedule = make_schedule(cfg.schedule, cfg.train.epochs)
        total_steps = self.steps_per_epoch * cfg.train.epochs

        # Callbacks.
        callbacks, early, best_monitor, best_mode = standard_callbacks(
            cfg, progress=None if not self.quiet else False, extra=self.extra_callbacks)

        # Run folder, or the state of the run being resumed (the same helpers as the torch trainer).
        start_epoch, best_value, best_epoch, history = 1, (math.inf if best_mode == "min" else -math.inf), 0, []
        train_time = 0.0
        if self.resume:
            if self.run_dir is None:
                raise UserError("resuming needs the run folder")
            ckpt_path = self.run_dir / "checkpoints" / "last.pt"
            if ckpt_path.exists():
                ckpt = load_checkpoint(ckpt_path)
                if ckpt.get("engine", "torch") != "reference":
                    raise UserError(f"{str(ckpt_path)!r} was written by the torch engine; resume it with "
                                    f"train.engine=torch")
                net.load_state_dict(ckpt["model"])
                load_optimizer_state_dict(optimizer, ckpt["optimizer"], names)
                for cb in callbacks:
                    state = ckpt.get("callbacks", {}).get(type(cb).__name__)
                    if state:
                        cb.load_state_dict(state)
                set_rng_state(ckpt["rng"])
                net.rng.bit_generator.state = ckpt["rng"]["reference"]
                start_epoch = ckpt["epoch"] + 1
                best_value, best_epoch = ckpt["best_value"], ckpt["best_epoch"]
                history = ckpt["history"]
                train_time = ckpt.get("train_time_s", 0.0)
                self.should_stop = ckpt.get("stopped", False)
            remove_temp_files(self.run_dir)
            repair_metrics(self.run_dir, history)
            self.log(f"resuming {self.run_dir} at epoch {start_epoch}/{cfg.train.epochs}")
        else:
            label = cfg.train.name or f"{cfg.model.name or 'layers'}-{cfg.data.name}"
            self.run_dir = self.run_dir or new_run_dir(cfg.train.runs_dir, label)
            (self.run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.run_dir / "config.yaml", dump_yaml(cfg.to_dict()))
            write_json(self.run_dir / "meta.json", run_meta(cfg, bundle, input_shape))
            atomic_write_text(self.run_dir / "summary.txt", summary_text(cfg, tmodel, bundle, input_shape))
        meta = run_meta(cfg, bundle, input_shape)

        self.log(f"training {cfg.model.name or 'layer list'} on {cfg.data.name} ({len(bundle.train)} train / "
                 f"{len(bundle.val)} val images) for {cfg.train.epochs} epochs on cpu (NumPy reference engine)")
        for cb in callbacks:
            cb.on_train_begin(self) if start_epoch == 1 else None

        # Epochs.
        step = (start_epoch - 1) * self.steps_per_epoch
        l1, l2 = cfg.regularization.l1, cfg.regularization.l2
        clip = cfg.regularization.grad_clip
        base_lr = cfg.optim.lr
        epoch = start_epoch - 1
        for epoch in range(start_epoch, cfg.train.epochs + 1):
            if self.should_stop:
                break
            for cb in callbacks:
                cb.on_epoch_begin(self, epoch)
            train_loader.set_epoch(epoch)
            augment_set_epoch = getattr(getattr(train_loader, "augment", None), "set_epoch", None)
            if augment_set_epoch is not None:  # alternating flip follows the epoch
                augment_set_epoch(epoch)
            t0 = time.perf_counter()
            self._loss_sum = self._correct = self._seen = 0.0
            for x, y in train_loader:
                optimizer.lr = base_lr * schedule(step / total_steps)
                yb = y.numpy()
                logits = net.forward(x.numpy(), training=True)                # (N, K)
                loss, dlogits = loss_fn(logits, yb)
                grads = net.backward(dlogits)
                if l1 or l2:
                    loss += penalty(net, grads, l1, l2)
                if clip:
                    clip_by_global_norm(grads, clip)
                optimizer.step(net.parameters(), [grads[k] for k in names])
                self._loss_sum += loss * len(yb)
                self._correct += float((logits.argmax(1) == yb).sum())
                self._seen += len(yb)
                step += 1
                for cb in callbacks:
                    cb.on_batch_end(self, step)
            val = evaluate_reference(net, val_loader, loss_fn)
            epoch_time = time.perf_counter() - t0
            train_time += epoch_time

            n = max(self._seen, 1.0)
            metrics = {"epoch": epoch, "train_loss": self._loss_sum / n, "train_accuracy": self._correct / n,
                       "val_loss": val["loss"], "val_accuracy": val["accuracy"], "lr": optimizer.lr,
                       "epoch_time_s": round(epoch_time, 4)}
            history.append(metrics)
            for cb in callbacks:
                cb.on_epoch_end(self, epoch, metrics)
            value = metrics[best_monitor]
            improved = value < best_value if best_mode == "min" else value > best_value
            if improved:
                best_value, best_epoch = value, epoch
            self.log(f"epoch {epoch:>3}/{cfg.train.epochs}  train_loss {metrics['train_loss']:.4f}  "
                     f"train_acc {metrics['train_accuracy']:.4f}  val_loss {val['loss']:.4f}  "
                     f"val_acc {val['accuracy']:.4f}  lr {metrics['lr']:.3g}  {epoch_time:.2f}s")
            append_jsonl(self.run_dir / "metrics.jsonl", metrics)
            state = {"model": net.state_dict(), "epoch": epoch, "config": cfg.to_dict(), "meta": meta,
                     "metrics": metrics, "engine": "reference"}
            if improved:
                atomic_torch_save(state, self.run_dir / "checkpoints" / "best.pt")
            if epoch % cfg.train.checkpoint_every == 0 or epoch == cfg.train.epochs or self.should_stop:
                atomic_torch_save({**state, "optimizer": optimizer_state_dict(optimizer, names), "ema": None, "lookahead": None,
                                   "rng": {**rng_state(), "reference": net.rng.bit_generator.state},
                                   "best_value": best_value, "best_epoch": best_epoch, "history": history,
                                   "train_time_s": train_time, "stopped": self.should_stop,
                                   "callbacks": {type(cb).__name__: cb.state_dict() for cb in callbacks}},
                                  self.run_dir / "checkpoints" / "last.pt")

        # The end, as in the torch trainer: the result is the best checkpoint (what eval and predict
        # use) unless early stopping was told not to restore it.
        for cb in callbacks:
            cb.on_train_end(self)
        last = history[-1] if history else None
        keep_last = early is not None and not early.restore_best
        if best_epoch and best_epoch != epoch and not keep_last:
            net.load_state_dict(load_checkpoint(self.run_dir / "checkpoints" / "best.pt")["model"])
            row = next(h for h in history if h["epoch"] == best_epoch)
            val = {"loss": row["val_loss"], "accuracy": row["val_accuracy"], "n": len(bundle.val)}
        else:
            val = evaluate_reference(net, val_loader, loss_fn)
        final = {
            "val_accuracy": val["accuracy"], "val_loss": val["loss"], "best_epoch": best_epoch,
            "best_val_accuracy": max((h["val_accuracy"] for h in history), default=None),
            "epochs": len(history), "n_train": len(bundle.train), "n_val": val["n"],
            "num_classes": bundle.num_classes, "classes": bundle.classes,
            "checkpoint": "last.pt" if keep_last or best_epoch in (0, epoch) else "best.pt",
            "last_val_accuracy": last["val_accuracy"] if last else None,
            "last_val_loss": last["val_loss"] if last else None,
            "train_time_s": round(train_time, 3), "end_to_end_s": round(time.time() - process_start_time(), 3),
            "world_size": 1, "device": "cpu", "engine": "reference",
            "stopped_early": bool(early and early.stopped_epoch),
        }
        write_json(self.run_dir / "final.json", final)
        return RunResult(self.run_dir, final, history)


def train_reference(cfg: Config, *, quiet: bool = False, log: Callable[[str], None] | None = None,
                    run_dir: str | os.PathLike | None = None, resume: bool = False, callbacks: list | None = None):
    """Train (or, with ``resume``, continue ``run_dir``) on the NumPy engine; returns a ``RunResult``."""
    return ReferenceTrainer(cfg, run_dir=Path(run_dir) if run_dir is not None else None, resume=resume,
                            quiet=quiet, log=log, callbacks=callbacks).fit()
