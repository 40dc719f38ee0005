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

import torch

from cnnkit.config import Config, ModelConfig
from cnnkit.errors import UserError
from cnnkit.spec import LayerSpec, parse_layers
from cnnkit.nn.runtime import seed_everything
from cnnkit.reference.network import ReferenceNet
from cnnkit.models.registry import is_signal
from cnnkit.reference.optim import OPTIMIZERS, Optimizer
from cnnkit.runs import RunFolder, rng_state, set_rng_state
from cnnkit.train.records import (RunResult, checkpoint_must_fit, create_run, final_record, load_last, locked_fit,
                                  restore_progress, run_meta, stop_if_diverged, val_of_epoch)

LossFn = Callable[[np.ndarray, np.ndarray], "tuple[float, np.ndarray]"]


# --------------------------------------------------------------------------- model

def layer_list(model_cfg: ModelConfig) -> list[Any]:
    """The declarative layer list of a model section: ``model.layers``, or that of a registered network
    that is one (``lenet5``, ``lenet_course``)."""
    if model_cfg.layers is not None:
        return model_cfg.layers
    from cnnkit.models.lenet import LAYER_LISTS

    if model_cfg.name in LAYER_LISTS:
        build = LAYER_LISTS[model_cfg.name]
        allowed = [p for p in inspect.signature(build).parameters]
        bad = [k for k in model_cfg.options if k not in allowed]
        if bad:
            raise UserError(f"model {model_cfg.name!r} has no option {bad[0]!r}; allowed options: "
                            f"{', '.join(allowed)}")
        return build(**model_cfg.options)
    raise UserError(f"train.engine=reference runs declarative layer lists; model {model_cfg.name!r} is a "
                    f"registered torch network; use model.layers (or model.name={' or '.join(LAYER_LISTS)}), or "
                    f"train.engine=torch")


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
    net = ReferenceNet(specs, input_shape, num_classes, dtype=dtype, rng=rng, signal=is_signal(specs, input_shape))
    tmodel = create_model(model_cfg, input_shape, num_classes)
    net.load_state_dict(tmodel.state_dict())
    return net, tmodel


# --------------------------------------------------------------------------- loss and optimiser

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
    """The optimiser's state as plain data: step count, lr and per-parameter tensors keyed by name
    (tensors, not NumPy arrays, so that the checkpoint loads with ``weights_only=True``)."""
    return {"name": opt.name, "t": opt.t, "lr": opt.lr,
            "state": {names[i]: {k: torch.from_numpy(np.array(v, copy=True)) for k, v in st.items()}
                      for i, st in opt.state.items()}}


def load_optimizer_state_dict(opt: Optimizer, state: dict[str, Any], names: list[str]) -> None:
    if state.get("name") != opt.name:
        raise UserError(f"the checkpoint's optimiser is {state.get('name')!r}, the config asks for {opt.name!r}")
    index = {n: i for i, n in enumerate(names)}
    opt.t, opt.lr = int(state["t"]), float(state["lr"])
    opt.state = {index[n]: {k: (v.numpy() if isinstance(v, torch.Tensor) else np.asarray(v)).copy()
                            for k, v in st.items()} for n, st in state["state"].items()}


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
    """One run on the NumPy engine; callbacks see what they see of the torch :class:`Trainer`
    (``epochs``, ``epoch``, ``steps_per_epoch``, ``should_stop``, ``model``, ``task``, ``run`` ...)."""

    engine = "reference"
    is_main = True

    def __init__(self, cfg: Config, *, run_dir: Path | None = None, resume: bool = False, quiet: bool = False,
                 log: Callable[[str], None] | None = None, callbacks: list | None = None,
                 save_config: bool = False) -> None:
        self.cfg, self.quiet, self.resume, self.save_config = cfg, quiet, resume, save_config
        self._lock = None
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.run: RunFolder | None = None
        self._log = log or (lambda s: print(s, flush=True))
        self.epochs = cfg.train.epochs
        self.epoch = 0
        self.should_stop = False
        self.extra_callbacks = callbacks or []
        self.history: list[dict[str, Any]] = []
        self.train_time = 0.0
        self._loss_sum, self._seen, self._sums = 0.0, 0, {}

    def log(self, text: str) -> None:
        if not self.quiet:
            self._log(text)

    def running_metrics(self) -> dict[str, float]:
        n = max(self._seen, 1)
        return {"loss": self._loss_sum / n, **{k: v / n for k, v in self._sums.items()}}

    def fit(self) -> RunResult:
        """Train; the run folder is locked meanwhile."""
        return locked_fit(self, self._fit)

    def _fit(self) -> RunResult:
        cfg = self.cfg
        self._prepare()
        net, task, optimizer, names = self.model, self.task, self.optimizer, self.names
        l1, l2, clip = cfg.regularization.l1, cfg.regularization.l2, cfg.regularization.grad_clip
        total_steps = self.steps_per_epoch * cfg.train.epochs
        step = (self.start_epoch - 1) * self.steps_per_epoch
        for epoch in range(self.start_epoch, cfg.train.epochs + 1):
            if self.should_stop:
                break
            self.epoch = epoch
            for cb in self.callbacks:
                cb.on_epoch_begin(self, epoch)
            self.train_loader.set_epoch(epoch)
            augment_set_epoch = getattr(getattr(self.train_loader, "augment", None), "set_epoch", None)
            if augment_set_epoch is not None:  # alternating flip follows the epoch
                augment_set_epoch(epoch)
            t0 = time.perf_counter()
            self._loss_sum, self._seen = 0.0, 0
            self._sums = {k: 0.0 for k in task.train_sum_names}
            for x, y in self.train_loader:
                optimizer.lr = cfg.optim.lr * self.schedule(step / total_steps)
                logits = net.forward(x.numpy(), training=True)                # (N, K)
                loss, dlogits = self.loss_fn(logits, y.numpy())
                if not math.isfinite(loss):
                    stop_if_diverged({"train_loss": loss}, epoch, step, self.steps_per_epoch, optimizer.lr)
                grads = net.backward(dlogits)
                if l1 or l2:
                    loss += penalty(net, grads, l1, l2)
                if clip:
                    clip_by_global_norm(grads, clip)
                optimizer.step(net.parameters(), [grads[k] for k in names])
                n = task.batch_len(y)
                self._loss_sum += loss * n
                for k, v in task.train_sums(torch.from_numpy(logits), y).items():
                    self._sums[k] += float(v)
                self._seen += n
                step += 1
                for cb in self.callbacks:
                    cb.on_batch_end(self, step)
            val = self.evaluate()
            epoch_time = time.perf_counter() - t0
            self.train_time += epoch_time
            n = max(self._seen, 1)
            metrics = {"epoch": epoch, "train_loss": self._loss_sum / n,
                       **{f"train_{k}": v / n for k, v in self._sums.items()}, "val_loss": val["loss"],
                       **{f"val_{k}": val[k] for k in task.metric_names}, "lr": optimizer.lr,
                       "epoch_time_s": round(epoch_time, 4)}
            stop_if_diverged(metrics, epoch, None, self.steps_per_epoch, optimizer.lr)
            self.history.append(metrics)
            for cb in self.callbacks:  # ... early stopping, the metrics log, checkpoints
                cb.on_epoch_end(self, epoch, metrics)
        return self._finish()

    # ---------------------------------------------------------------- set-up and the end

    def _prepare(self) -> None:
        from cnnkit.train.callbacks import standard_callbacks
        from cnnkit.train.setup import build_schedule, load_task_data, make_loaders

        cfg = self.cfg
        check_reference_config(cfg)
        layer_list(cfg.model)  # a registered torch network fails here, before any data is loaded
        seed_everything(cfg.train.seed, cfg.train.deterministic)

        # Data: the torch engine's loaders, on the CPU; batches become NumPy arrays.
        self.task, bundle, input_shape = load_task_data(cfg)
        if not hasattr(self.task, "reference_loss"):
            raise UserError(f"train.engine=reference runs task classification; task {cfg.task!r} needs "
                            f"train.engine=torch")
        self.bundle = bundle
        self.train_loader, self.val_loader = make_loaders(cfg, bundle, self.task, "cpu")
        self.steps_per_epoch = len(self.train_loader)

        # Model (the torch engine's initial weights), loss, optimiser, schedule.
        net, tmodel = build_reference_model(cfg.model, input_shape, bundle.num_classes,
                                            rng=np.random.default_rng(cfg.train.seed))
        self.model, self.names = net, list(net.params)
        self.loss_fn = self.task.reference_loss()
        self.optimizer = create_reference_optimizer(cfg.optim.name, cfg.optim.lr, cfg.optim.hyper())
        self.schedule = build_schedule(cfg)
        self.callbacks, self.early, self.checkpointer = standard_callbacks(
            cfg, self.task, progress=None if not self.quiet else False, extra=self.extra_callbacks)

        self.start_epoch = 1
        if self.resume:
            if self.run_dir is None:
                raise UserError("resuming needs the run folder")
            self._lock = RunFolder(self.run_dir).lock()
            self._restore()
        else:
            self.run = create_run(cfg, bundle, input_shape, tmodel, self.run_dir)
            self._lock = self.run.lock()
        self.run_dir = self.run.path
        self.meta = run_meta(cfg, bundle, input_shape)
        self.log(f"training {cfg.model.name or 'layer list'} on {cfg.data.name} ({len(bundle.train)} train / "
                 f"{len(bundle.val)} val {self.task.unit}) for {cfg.train.epochs} epochs on cpu (NumPy reference engine)")
        if self.start_epoch == 1:
            for cb in self.callbacks:
                cb.on_train_begin(self)

    def _restore(self) -> None:
        if self.run_dir is None:
            raise UserError("resuming needs the run folder")
        self.run = run = RunFolder(self.run_dir)
        ckpt = load_last(run, self.engine)
        if ckpt is not None:
            with checkpoint_must_fit(run):
                self.model.load_state_dict(ckpt["model"])
                load_optimizer_state_dict(self.optimizer, ckpt["optimizer"], self.names)
            set_rng_state(ckpt["rng"])
            self.model.rng.bit_generator.state = ckpt["rng"]["reference"]
            restore_progress(self, ckpt)
        if self.save_config:  # everything fits: now the folder may change
            run.write_config(self.cfg.to_dict())
        run.remove_temp_files()
        run.repair_metrics(self.history)
        self.log(f"resuming {self.run_dir} at epoch {self.start_epoch}/{self.cfg.train.epochs}")

    def _finish(self) -> RunResult:
        """As the torch trainer: the result is the best checkpoint (what eval and predict use) unless
        early stopping was told not to restore it."""
        for cb in self.callbacks:
            cb.on_train_end(self)  # the checkpointer puts the best weights back
        n_val = len(self.bundle.val)
        if self.checkpointer.restored:
            row = next(h for h in self.history if h["epoch"] == self.checkpointer.best_epoch)
            val = val_of_epoch(self.task, row, n_val)
        else:
            val = self.evaluate()
        last = val_of_epoch(self.task, self.history[-1], n_val) if self.history else None
        final = final_record(self.task, val=val, history=self.history, checkpointer=self.checkpointer,
                             early=self.early, last_val=last, bundle=self.bundle, train_time=self.train_time,
                             world_size=1, device="cpu", engine=self.engine)
        self.run.write_final(final)
        return RunResult(self.run_dir, final, self.history)

    # ---------------------------------------------------------------- for the callbacks

    def evaluate(self) -> dict[str, float]:
        """The task's metrics of the network (eval mode) over the validation batches."""
        metrics = self.task.metrics()
        for x, y in self.val_loader:
            logits = self.model.forward(x.numpy(), training=False)
            loss, _ = self.loss_fn(logits, y.numpy())
            self.task.update_metrics(metrics, torch.from_numpy(logits), y, torch.tensor(loss))
        out = {k: float(v) for k, v in metrics.compute().items()}
        out["n"] = int(round(float(metrics["loss"].den)))
        return out

    def checkpoint_state(self, full: bool) -> dict[str, Any]:
        state: dict[str, Any] = {"model": self.model.state_dict(), "epoch": self.epoch, "config": self.cfg.to_dict(),
                                 "meta": self.meta, "metrics": self.history[-1], "engine": self.engine,
                                 "task": self.task.name}
        if full:
            state.update({"optimizer": optimizer_state_dict(self.optimizer, self.names), "ema": None,
                          "lookahead": None, "rng": {**rng_state(), "reference": self.model.rng.bit_generator.state},
                          "history": self.history, "train_time_s": self.train_time, "stopped": self.should_stop,
                          "callbacks": {type(cb).__name__: cb.state_dict() for cb in self.callbacks}})
        return state

    def load_weights(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state)


def train_reference(cfg: Config, *, quiet: bool = False, log: Callable[[str], None] | None = None,
                    run_dir: str | os.PathLike | None = None, resume: bool = False, callbacks: list | None = None):
    """Train (or, with ``resume``, continue ``run_dir``) on the NumPy engine; returns a ``RunResult``."""
    return ReferenceTrainer(cfg, run_dir=Path(run_dir) if run_dir is not None else None, resume=resume,
                            quiet=quiet, log=log, callbacks=callbacks).fit()
