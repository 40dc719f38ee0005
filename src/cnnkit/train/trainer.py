"""The training loop, readable top to bottom (nanoGPT's train.py, airbench's main).

:class:`Trainer` turns a validated :class:`~cnnkit.config.Config` into a run folder:
set-up (:mod:`cnnkit.train.setup`) -> epochs of (schedule, forward, loss + L1/L2, backward,
clip, step) -> validation -> callbacks (metrics log, checkpoints, early stopping) -> final.json.
What a batch means (the loss, the metrics) is the task's (:mod:`cnnkit.tasks`); the loop never
looks inside a target. Speed switches (device, precision, channels_last, compile) cost nothing
when off.

Example::

    result = Trainer(load_config("configs/lenet5_mnist5k.yaml", ["train.epochs=2"])).fit()
    result.run_dir, result.final["val_accuracy"]
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from cnnkit.config import Config
from cnnkit.data import DataBundle
from cnnkit.errors import UserError
from cnnkit.nn.runtime import autocast, resolve_device, seed_everything, sync
from cnnkit.runs import RunFolder, rng_state, set_rng_state
from cnnkit.tasks import task_class
from cnnkit.train import distributed as dist_utils
from cnnkit.train.callbacks import Callback, standard_callbacks
from cnnkit.train.records import (RunResult, checkpoint_must_fit, create_run, final_record, load_last, locked_fit,
                                  restore_progress, run_meta, stop_if_diverged, val_of_epoch)
from cnnkit.train.setup import (backward_and_step, build_model, build_optimizer, build_schedule, data_init_images,
                                default_param_groups, load_task_data, make_loaders, penalty,
                                resolve_backbone)


class Trainer:
    """One run on the torch engine. Callbacks see ``epochs``, ``epoch``, ``steps_per_epoch``,
    ``should_stop``, ``model``, ``task``, ``run`` and the methods below."""

    engine = "torch"

    def __init__(self, cfg: Config, *, run_dir: Path | None = None, resume: bool = False, quiet: bool = False,
                 log: Callable[[str], None] | None = None, callbacks: list[Callback] | None = None,
                 model: nn.Module | None = None, bundle: DataBundle | None = None,
                 param_groups: Callable[[nn.Module], list[dict[str, Any]]] | None = None,
                 save_config: bool = False) -> None:
        self.cfg, self.quiet, self.resume = cfg, quiet, resume
        if task_class(cfg.task).owns_step and int(os.environ.get("WORLD_SIZE", "1")) > 1:
            # DDP synchronises the gradients of forward(); a task stepping its own players (a GAN's generator
            # runs outside forward) would train each rank apart. Refused before any process group is joined.
            raise UserError(f"task {cfg.task} updates the weights itself (its generator runs outside the model's "
                            f"forward), which DistributedDataParallel cannot synchronise; run it in one process, "
                            f"without torchrun (WORLD_SIZE={os.environ['WORLD_SIZE']})")
        self.dist = dist_utils.setup(cfg.train.device)
        self.is_main = self.dist.rank == 0
        self._log = log or (lambda s: print(s, flush=True))
        self.device = self.dist.device or resolve_device(cfg.train.device)
        self.epochs = cfg.train.epochs
        self.epoch = 0
        self.should_stop = False
        self.extra_callbacks = callbacks or []
        self._model_override, self._bundle_override, self._param_groups = model, bundle, param_groups
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.run: RunFolder | None = None
        self.history: list[dict[str, Any]] = []
        self.train_time = 0.0
        self.save_config = save_config  # a resume with overrides: write config.yaml once the state fits
        self._lock = None

    def log(self, text: str) -> None:
        if self.is_main and not self.quiet:
            self._log(text)

    def running_metrics(self) -> dict[str, float]:
        n = max(float(self._seen), 1.0)
        return {"loss": float(self._loss_sum) / n, **{k: float(v) / n for k, v in self._sums.items()}}

    # ---------------------------------------------------------------- the run

    def fit(self) -> RunResult:
        """Train; the run folder is locked meanwhile (a second process resuming it is refused)."""
        return locked_fit(self, self._fit)

    def _fit(self) -> RunResult:
        cfg, device = self.cfg, self.device
        self._prepare()
        model, task, loss_fn, optimizer = self.model, self.task, self.loss_fn, self.optimizer
        l1, l2, clip = cfg.regularization.l1, cfg.regularization.l2, cfg.regularization.grad_clip
        precision, bs, world = cfg.train.precision, cfg.data.batch_size, self.dist.world_size
        scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None
        base_lrs = [cfg.optim.lr * g["lr_mult"] for g in optimizer.param_groups]
        total_steps = self.steps_per_epoch * cfg.train.epochs
        step = (self.start_epoch - 1) * self.steps_per_epoch
        last_val, last_val_epoch = None, None
        for epoch in range(self.start_epoch, cfg.train.epochs + 1):
            if self.should_stop:
                break
            self.epoch = epoch
            for cb in self.callbacks:
                cb.on_epoch_begin(self, epoch)
            self.train_loader.set_epoch(epoch)
            if self._augment_set_epoch is not None:
                self._augment_set_epoch(epoch)
            sync(device)
            t0 = time.perf_counter()
            model.train()
            self._loss_sum = torch.zeros((), device=device, dtype=torch.float64)
            self._sums = {k: torch.zeros((), device=device, dtype=torch.float64) for k in task.train_sum_names}
            self._seen = 0
            first_bad = torch.full((), -1, device=device, dtype=torch.long)  # the first non-finite loss's step
            for i, (x, y) in enumerate(self.train_loader):
                factor = self.schedule(step / total_steps)
                for g, base in zip(optimizer.param_groups, base_lrs):
                    g["lr"] = base * factor
                if task.owns_step:  # the task updates the weights itself (a GAN's two players, in turn)
                    out, loss = task.optimize_step(self.step_fn, x, y, optimizer, precision=precision,
                                                   scaler=scaler, clip=clip)
                    n = task.batch_len(y)
                else:
                    with autocast(device, precision):
                        out, loss = task.training_step(self.step_fn, x, y, loss_fn)
                        if self.teacher is not None:
                            with torch.no_grad():
                                teacher_logits = self.teacher(x).float()
                            loss = distill_loss(loss, out.float(), teacher_logits, cfg.train.distill)
                        if l1 or l2:
                            loss = loss + penalty(model, l1, l2)
                    optimizer.zero_grad(set_to_none=True)
                    n = task.batch_len(y)
                    grad_loss = loss
                    if world > 1:
                        # DDP averages the ranks' gradients: weighting each rank's mean loss by its share of
                        # the global batch makes that the gradient of the global batch's mean loss, also when
                        # the last batch splits unevenly or leaves this rank nothing (its NaN loss then gets
                        # weight 0 and its gradients are zeros).
                        share = n * world / min(bs, self.n_train - i * bs)
                        if share != 1.0:
                            grad_loss = loss * share
                    backward_and_step(grad_loss, optimizer, model, scaler=scaler, clip=clip)
                if self._constrain is not None:  # e.g. Kim's max-norm on the classifier's weights
                    self._constrain()
                if self.ema is not None:
                    self.ema.update(model)
                if n:  # not this rank's empty slice of the last global batch
                    # Running sums stay on the device: no synchronisation inside the epoch.
                    self._loss_sum.add_(loss.detach(), alpha=n)
                    first_bad = torch.where((first_bad < 0) & ~torch.isfinite(loss.detach()), step, first_bad)
                    for k, v in task.train_sums(out, y).items():
                        self._sums[k].add_(v)
                    self._seen += n
                step += 1
                if self.lookahead is not None:
                    self.lookahead.step(step)
                    if step == total_steps:
                        self.lookahead.finish()
                for cb in self.callbacks:
                    cb.on_batch_end(self, step)
            if epoch == cfg.train.epochs or (cfg.train.eval_every and epoch % cfg.train.eval_every == 0):
                val = task.evaluate(self.eval_model, self.val_loader, device, precision, loss_fn)
                last_val, last_val_epoch = val, epoch
            else:
                val = {}
            sync(device)
            epoch_time = time.perf_counter() - t0
            self.train_time += epoch_time
            metrics = {"epoch": epoch, **self._train_metrics(), "val_loss": val.get("loss"),
                       **{f"val_{k}": val.get(k) for k in task.metric_names},
                       "lr": optimizer.param_groups[0]["lr"], "epoch_time_s": round(epoch_time, 4)}
            stop_if_diverged(metrics, epoch, int(first_bad) if not math.isfinite(metrics["train_loss"]) else None,
                             self.steps_per_epoch, optimizer.param_groups[0]["lr"])
            self.history.append(metrics)
            for cb in self.callbacks:  # ... early stopping, the metrics log, checkpoints
                cb.on_epoch_end(self, epoch, metrics)
        return self._finish(last_val if last_val_epoch == self.epoch else None)

    # ---------------------------------------------------------------- set-up and the end

    def _prepare(self) -> None:
        """Data, model, loss, optimiser, schedule, callbacks; the run folder, or the resumed run's state."""
        if not self.resume:
            self.cfg = resolve_backbone(self.cfg)
        cfg, device = self.cfg, self.device
        seed_everything(cfg.train.seed + self.dist.rank, cfg.train.deterministic)
        if cfg.train.cudnn_benchmark and not cfg.train.deterministic:
            torch.backends.cudnn.benchmark = True
        if cfg.train.eval_every != 1 and cfg.regularization.early_stopping is not None:
            raise UserError(f"regularization.early_stopping watches every epoch; it needs train.eval_every=1 "
                            f"(got {cfg.train.eval_every})")
        tokenizer = None
        if self.resume and self.run_dir is not None and (Path(self.run_dir) / "tokenizer.json").is_file():
            from cnnkit.data.text.tokenize import Tokenizer

            tokenizer = Tokenizer.load(Path(self.run_dir) / "tokenizer.json")  # the run's vocabulary, not a new one
        self.task, bundle, input_shape = load_task_data(cfg, self._bundle_override, tokenizer)
        self.bundle = bundle
        self.train_loader, self.val_loader = make_loaders(cfg, bundle, self.task, device, rank=self.dist.rank,
                                                          world_size=self.dist.world_size)
        self._augment_set_epoch = getattr(getattr(self.train_loader, "augment", None), "set_epoch", None)
        self.steps_per_epoch, self.n_train = len(self.train_loader), len(bundle.train)

        model = self._model_override
        if model is None:
            tok = (bundle.extra or {}).get("tokenizer")
            model = build_model(cfg, input_shape, bundle.num_classes, with_weights=not self.resume,
                                vocabulary=tok.vocabulary() if tok is not None else None)
        self.task.check_model(model)  # before any training: a model that cannot serve the task fails now
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
        self._constrain = getattr(model, "apply_constraints", None)
        self.loss_fn = self.task.make_loss()
        groups = self._param_groups(model) if self._param_groups else default_param_groups(model, cfg.optim)
        # A task that trains several parts with optimisers of their own (a GAN) gives the trainer one
        # object holding them all: scheduled, checkpointed and resumed as one.
        self.optimizer = self.task.make_optimizer(model) or build_optimizer(cfg, groups)
        self.schedule = build_schedule(cfg)
        self.teacher = self._load_teacher() if cfg.train.distill else None
        train_model: nn.Module = model
        if self.dist.world_size > 1:
            train_model = nn.parallel.DistributedDataParallel(
                model, device_ids=[device.index] if device.type == "cuda" else None)
        # After DDP, which gives every rank rank 0's initial weights: the EMA starts from those too.
        self.ema = EMA(model, cfg.train.ema) if cfg.train.ema else None
        total_steps = self.steps_per_epoch * cfg.train.epochs
        self.lookahead = Lookahead(model, cfg.train.lookahead, total_steps) if cfg.train.lookahead else None
        self.step_fn = train_model
        if cfg.train.compile != "off":
            self.step_fn = torch.compile(train_model, mode=None if cfg.train.compile == "default" else "max-autotune")
        self.callbacks, self.early, self.checkpointer = standard_callbacks(
            cfg, self.task, progress=None if not self.quiet and self.is_main else False, extra=self.extra_callbacks)

        self.start_epoch = 1
        if self.resume:
            if self.is_main:
                self._lock = RunFolder(self.run_dir).lock()
            self._restore()
        elif self.is_main:
            self.run = create_run(cfg, bundle, input_shape, model, self.run_dir)
            self._lock = self.run.lock()
        self.run_dir = self.dist.broadcast_path(self.run.path if self.run else self.run_dir)
        self.meta = run_meta(cfg, bundle, input_shape)
        self.log(f"training {cfg.model.name or 'layer list'} on {cfg.data.name} ({len(bundle.train)} train / "
                 f"{len(bundle.val)} val {self.task.unit}) for {cfg.train.epochs} epochs on {device}"
                 + (f" x{self.dist.world_size} processes" if self.dist.world_size > 1 else ""))
        if self.start_epoch == 1:  # a resumed run keeps the callbacks' restored state
            self.train_time += init_time
            for cb in self.callbacks:
                cb.on_train_begin(self)

    def _restore(self) -> None:
        """The state of the run being resumed, from its last.pt (a run killed before its first
        checkpoint starts again from epoch 1)."""
        run = RunFolder(self.run_dir)
        self.run = run if self.is_main else None
        ckpt = load_last(run, self.engine)
        if ckpt is not None:
            with checkpoint_must_fit(run):
                self.model.load_state_dict(ckpt["model"])
                self.optimizer.load_state_dict(ckpt["optimizer"])
                if self.ema is not None and ckpt.get("ema") is not None:
                    self.ema.load_state_dict(ckpt["ema"])
                if self.lookahead is not None:
                    if ckpt.get("lookahead") is not None:
                        self.lookahead.load_state_dict(ckpt["lookahead"])
                    else:  # lookahead switched on at resume: start from the loaded weights
                        self.lookahead.reset()
            rngs = ckpt.get("rng_ranks")  # each rank's own stream, from a DDP run of the same size
            set_rng_state(rngs[self.dist.rank] if rngs and len(rngs) == self.dist.world_size else ckpt["rng"])
            restore_progress(self, ckpt)
        if self.is_main:  # everything fits: now the folder may change
            if self.save_config:
                run.write_config(self.cfg.to_dict())
            run.remove_temp_files()
            run.repair_metrics(self.history)
        self.log(f"resuming {self.run_dir} at epoch {self.start_epoch}/{self.cfg.train.epochs}")

    def _finish(self, last_val: dict[str, Any] | None) -> RunResult:
        """The end: the run's result is its best checkpoint (what eval, predict and finetune use),
        unless early stopping was told not to restore it; then it is the last weights."""
        for cb in self.callbacks:
            cb.on_train_end(self)  # the checkpointer puts the best weights back
        task, history = self.task, self.history
        if self.lookahead is not None and not self.lookahead.finished:  # stopped before the last step
            self.lookahead.finish()
            last_val = None
        n_val = len(self.bundle.val)
        if self.checkpointer.restored:
            val = val_of_epoch(task, next(h for h in history if h["epoch"] == self.checkpointer.best_epoch), n_val)
        elif last_val is not None:
            val = last_val  # the last epoch's validation already measured these very weights
        else:
            val = task.evaluate(self.eval_model, self.val_loader, self.device, self.cfg.train.precision, self.loss_fn)
        if last_val is None and history:
            last_val = val_of_epoch(task, history[-1], n_val)
        sync(self.device)
        final = final_record(task, val=val, history=history, checkpointer=self.checkpointer, early=self.early,
                             last_val=last_val, bundle=self.bundle, train_time=self.train_time,
                             world_size=self.dist.world_size, device=str(self.device), engine=self.engine)
        if self.is_main:  # figures measured once on the result (a GAN's FID)
            final.update(task.final_metrics(self.eval_model, self.bundle, self.device))
        if self.run is not None:
            self.run.write_final(final)
        dist_utils.barrier()
        return RunResult(self.run_dir, final, history)

    # ---------------------------------------------------------------- for the callbacks

    @property
    def eval_model(self) -> nn.Module:
        """The weights that are evaluated and kept as best.pt: the EMA's when there is one."""
        return self.ema.model if self.ema is not None else self.model

    def _train_metrics(self) -> dict[str, float]:
        """This epoch's running loss and task metrics, summed over DDP ranks."""
        names = list(self._sums)
        seen = torch.tensor(float(self._seen), device=self.device, dtype=torch.float64)
        totals = dist_utils.all_reduce_sum(torch.stack([self._loss_sum, *[self._sums[k] for k in names], seen]))
        n = max(float(totals[-1]), 1.0)
        out = {"train_loss": float(totals[0]) / n}
        out.update({f"train_{k}": float(totals[1 + i]) / n for i, k in enumerate(names)})
        return out

    def checkpoint_state(self, full: bool) -> dict[str, Any]:
        """The state to checkpoint after this epoch; ``full`` adds all a resume needs. Collective under
        DDP when ``full`` (every rank's RNG state is gathered: their dropout masks differ)."""
        rngs = dist_utils.all_gather_object(rng_state()) if full and self.dist.world_size > 1 else None
        state: dict[str, Any] = {"model": self.model.state_dict(), "epoch": self.epoch, "config": self.cfg.to_dict(),
                                 "meta": self.meta, "metrics": self.history[-1], "engine": self.engine,
                                 "task": self.task.name}
        if self.ema is not None:
            state["eval_model"] = self.ema.model.state_dict()
        if full:
            state.update({"optimizer": self.optimizer.state_dict(),
                          "ema": self.ema.state_dict() if self.ema is not None else None,
                          "lookahead": self.lookahead.state_dict() if self.lookahead is not None else None,
                          "rng": rng_state(), **({"rng_ranks": rngs} if rngs else {}),
                          "history": self.history, "train_time_s": self.train_time, "stopped": self.should_stop,
                          "callbacks": {type(cb).__name__: cb.state_dict() for cb in self.callbacks}})
        return state

    def load_weights(self, state: dict[str, torch.Tensor]) -> None:
        """Put ``state`` into the model that is the run's result (the EMA's when there is one)."""
        self.eval_model.load_state_dict(state)

    def _load_teacher(self) -> nn.Module:
        from cnnkit.inference import load_run_model

        teacher, _ = load_run_model(self.cfg.train.distill.teacher, device=self.device)
        teacher.eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
        return teacher


def distill_loss(hard_loss: torch.Tensor, student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                 cfg) -> torch.Tensor:
    """Knowledge distillation (Hinton et al., 2015): (1 - α) hard loss + α T² KL(teacher_T || student_T)."""
    t = cfg.temperature
    soft = F.kl_div(F.log_softmax(student_logits / t, dim=1), F.softmax(teacher_logits / t, dim=1),
                    reduction="batchmean") * (t * t)
    return (1 - cfg.alpha) * hard_loss + cfg.alpha * soft


class EMA:
    """An exponential moving average of the weights and of the floating-point buffers (batch-norm
    statistics), used for evaluation; integer buffers (batch counts) are copied.

    Update ``t`` (from 0) uses the decay ``min(decay, (1 + t) / (10 + t))``, as TensorFlow's
    ExponentialMovingAverage does with ``num_updates``: early on the average follows the model
    closely instead of staying near the random initial weights (which, with the live batch-norm
    statistics of the trained network, would give a broken network for the first thousands of
    steps). The statistics are averaged with the weights for the same reason: the averaged weights
    need statistics of the same age.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        import copy

        self.decay = decay
        self.updates = 0
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    def current_decay(self) -> float:
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        d = self.current_decay()
        ema_f, cur_f = [], []
        for (_, e), (_, c) in zip(self._tensors(self.model), self._tensors(model)):
            if e.dtype.is_floating_point:
                ema_f.append(e)
                cur_f.append(c.detach())
            else:
                e.copy_(c)
        torch._foreach_lerp_(ema_f, cur_f, 1 - d)
        self.updates += 1

    @staticmethod
    def _tensors(model: nn.Module):
        yield from model.named_parameters()
        yield from model.named_buffers()

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "model" in state and isinstance(state.get("updates"), int):
            self.model.load_state_dict(state["model"])
            self.updates = state["updates"]
        else:  # a checkpoint written before the update count was kept: the warm-up is long over
            self.model.load_state_dict(state)
            self.updates = 10 ** 9


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
