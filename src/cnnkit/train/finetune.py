"""``cnnkit finetune``: start from trained weights, give the network a new head, train on new data.

::

    cnnkit finetune --from runs/<digits-0-4-run> configs/lenet5_mnist5k.yaml \\
        'data.classes=[5,6,7,8,9]' data.per_class=20 finetune.freeze=backbone

What it does:

1. The config. ``CONFIG.yaml`` plus overrides, as for ``cnnkit train``. When the
   source is a run folder or a cnnkit checkpoint, CONFIG may be left out (the
   source run's own config.yaml is the base), and a CONFIG whose model section
   names no architecture (neither ``model.name`` nor ``model.layers``) takes the
   source run's model section, with any ``model.*`` keys it does give laid on
   top. A CONFIG that does name the model must name the source's architecture:
   a layer or shape that does not fit is an error listing the keys. Without
   ``--from`` the starting weights are the config's ``model.pretrained`` or
   ``model.weights``; with it, those must be unset.
2. The model is built for the new data's classes, every weight but the head is
   loaded, and the head is replaced by a fresh one (``reset_classifier``),
   whatever the source's class count. The new head starts at zero (weights and
   bias, as BiT does: Kolesnikov et al., 2020), so the first steps see uniform
   predictions instead of a random projection of good features; with a frozen
   backbone and a few dozen steps a randomly initialised head barely moves
   from its start. (``finetune(head_init="config")`` uses ``model.init``.)
3. Normalisation: the features were learnt on inputs normalised with the
   source's mean/std, so those are kept (a source run's meta, or a
   torchvision weight set's mean/std for 3-channel data); a plain weights file
   keeps the new data's own statistics. The run's meta.json records what was used.
4. ``finetune.freeze``: ``none``; ``backbone`` (every parameter but the
   head's); ``until:LAYER`` (every module up to and including LAYER, in module
   order, frozen). Batch-norm layers inside the frozen part keep their running
   statistics: they stay in eval mode during training (a forward pre-hook puts
   them back into eval mode whenever ``model.train()`` has switched them on).
5. ``finetune.lr_mult``: ``{backbone: 0.1, head: 1.0}`` or per layer name
   (``conv2: 0.5``, ``layer4: 0.3``, or dotted: ``body.layer4.1``); the most
   specific name wins (a layer over ``backbone``/``head``, a deeper module over
   its parent); unnamed parameters keep 1.0. Each group's lr is
   ``optim.lr * lr_mult * schedule``.
6. ``finetune.unfreeze_at``: ``{LAYER: EPOCH}``. At the start of EPOCH, LAYER and
   every module after it become trainable (``backbone: E`` unfreezes
   everything). Every parameter is in the optimiser from the start, frozen ones
   with ``requires_grad=False``, so unfreezing flips a flag; their optimiser
   state starts at the first step they train. It needs ``freeze`` to have
   frozen something.
7. Low data (:func:`low_data_defaults`): when the epochs would make fewer than
   ``finetune.min_steps`` (1000) optimiser steps, each epoch passes over the
   data several times (``data.epoch_repeats``), and ``finetune.augment=auto``
   adds light geometric augmentation when the config has none. These defaults
   were measured, not assumed: on the demo recipe (LeNet-5, digits 0-4 -> 5-9,
   20 images per class) training the whole network at the recipe's learning
   rate beat a head-only phase, a frozen backbone and a 0.1x backbone learning
   rate, and the schedule's length and augmentation were what the rest of the
   gain needed (``benchmarks/transfer_gain.py`` prints the curve).

Layer names are the model's module names: a layer list's ``conv1, relu1, ...,
dense3``; a zoo model's body modules with or without ``body.`` (``conv1``,
``layer3``, ``features.10``) and ``head``. ``backbone`` and ``head`` are the
two groups.

The run folder is an ordinary one (the Trainer writes it); meta.json and
final.json also hold ``finetune_from``: the source and the checkpoint file read.
"""

from __future__ import annotations

import copy
import os
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from cnnkit.config import Config, FinetuneConfig, apply_overrides, read_yaml, validate
from cnnkit.errors import UserError, did_you_mean
from cnnkit.train.callbacks import Callback

_GROUPS = ("backbone", "head")


# --------------------------------------------------------------------------- layer names and module order


class LayerIndex:
    """The modules of a model in registration (= forward) order, and the names a user may give them."""

    def __init__(self, model: nn.Module) -> None:
        from cnnkit.models.weights import head_prefix

        self.model = model
        self.names = [n for n, _ in model.named_modules()]
        self.index = {n: i for i, n in enumerate(self.names)}
        hp = head_prefix(model)
        self.head_name = hp[:-1] if hp else None
        self.body_prefix = "body." if isinstance(getattr(model, "body", None), nn.Module) else ""
        self.head_set = self._subtree(self.head_name) if self.head_name else set()
        self.backbone_set = set(range(len(self.names))) - self.head_set

    def _subtree(self, name: str) -> set[int]:
        return {i for i, n in enumerate(self.names) if n == name or n.startswith(name + ".")}

    def layer_names(self) -> list[str]:
        """The names worth listing in a message: top-level layers (a zoo model's body children) and groups."""
        if self.body_prefix:
            body = getattr(self.model, "body")
            names = [n for n, _ in body.named_children()] + ["head"]
        else:
            names = [n for n, _ in self.model.named_children()]
        return names + list(_GROUPS)

    def resolve(self, name: str, what: str) -> tuple[set[int], int]:
        """A name -> (its modules, depth); ``backbone``/``head`` have depth 0."""
        if name == "backbone":
            return self.backbone_set, 0
        if name == "head":
            if not self.head_name:
                raise UserError(f"{what}: this model has no classifier head (its last layer is not dense)")
            return self.head_set, 0
        for cand in (name, self.body_prefix + name if self.body_prefix else None):
            if cand and cand in self.index and cand != "":
                return self._subtree(cand), cand.count(".") + 1
        allowed = self.layer_names()
        raise UserError(f"{what}: no layer named {name!r}{did_you_mean(name, allowed + self.names[1:])}; "
                        f"layers: {', '.join(allowed)} (or any dotted module name, e.g. "
                        f"{self.names[min(3, len(self.names) - 1)]!r})")

    def owner(self, param_name: str) -> int:
        mod = param_name.rsplit(".", 1)[0] if "." in param_name else ""
        return self.index[mod]


# --------------------------------------------------------------------------- the plan


@dataclass
class _Unfreeze:
    name: str
    epoch: int
    start: int  # first module index that becomes trainable


class FinetunePlan:
    """What is frozen at each epoch, and the lr multiplier of each parameter, from a ``finetune`` section."""

    def __init__(self, model: nn.Module, cfg: FinetuneConfig, epochs: int | None = None) -> None:
        self.model = model
        self.cfg = cfg
        self.layers = LayerIndex(model)
        self.frozen0 = self._parse_freeze(cfg.freeze)
        self.unfreeze: list[_Unfreeze] = []
        for name, epoch in cfg.unfreeze_at.items():
            mods, _ = self.layers.resolve(name, f"finetune.unfreeze_at.{name}")
            if epoch < 1:
                raise UserError(f"finetune.unfreeze_at.{name}={epoch}: epochs count from 1")
            self.unfreeze.append(_Unfreeze(name, int(epoch), min(mods)))
        if self.unfreeze and not self.frozen0:
            raise UserError("finetune.unfreeze_at unfreezes layers that finetune.freeze froze, and freeze is "
                            f"{cfg.freeze!r}; set finetune.freeze=backbone or finetune.freeze=until:LAYER")
        self.notes: list[str] = []
        for u in self.unfreeze:
            if not any(i >= u.start for i in self.frozen0):
                self.notes.append(f"finetune.unfreeze_at.{u.name}: nothing from {u.name} on is frozen; no effect")
            if epochs is not None and u.epoch > epochs:
                self.notes.append(f"finetune.unfreeze_at.{u.name}={u.epoch} is after the last epoch ({epochs}); "
                                  f"it never happens")
        params = dict(model.named_parameters())
        trainable_end = [n for n in params if self.layers.owner(n) not in self.frozen_modules(epochs or 10**9)]
        if params and not trainable_end:
            raise UserError(f"finetune.freeze={cfg.freeze!r} freezes every parameter and nothing unfreezes them; "
                            f"freeze fewer layers")
        self.mults = self._parse_lr_mult(cfg.lr_mult)
        self._bn_hooks: dict[int, Any] = {}

    # ---------------------------------------------------------------- parsing

    def _parse_freeze(self, text: str) -> set[int]:
        t = text.strip()
        if t == "none":
            return set()
        if t == "backbone":
            if not self.layers.head_name:
                raise UserError("finetune.freeze=backbone: this model has no classifier head (its last layer is "
                                "not dense), so backbone means everything; use until:LAYER")
            return set(self.layers.backbone_set)
        if t.startswith("until:"):
            name = t[len("until:"):].strip()
            mods, _ = self.layers.resolve(name, f"finetune.freeze={text!r}")
            last = max(mods)
            return {i for i in range(len(self.layers.names)) if i <= last}
        raise UserError(f"finetune.freeze={text!r} is not allowed; use none, backbone or until:LAYER "
                        f"(LAYER one of {', '.join(self.layers.layer_names()[:-2])})")

    def _parse_lr_mult(self, spec: dict[str, float]) -> dict[str, tuple[float, str]]:
        """Parameter name -> (multiplier, the key it came from)."""
        resolved = []
        for key, mult in spec.items():
            if mult < 0:
                raise UserError(f"finetune.lr_mult.{key}={mult}: a multiplier must be >= 0")
            mods, depth = self.layers.resolve(key, f"finetune.lr_mult.{key}")
            resolved.append((key, float(mult), mods, depth))
        out: dict[str, tuple[float, str]] = {}
        for pname, _ in self.model.named_parameters():
            i = self.layers.owner(pname)
            best = None
            for key, mult, mods, depth in resolved:
                if i in mods and (best is None or depth >= best[2]):
                    best = (mult, key, depth)
            out[pname] = (best[0], best[1]) if best else (1.0, "rest")
        return out

    # ---------------------------------------------------------------- state per epoch

    def frozen_modules(self, epoch: int) -> set[int]:
        frozen = set(self.frozen0)
        for u in self.unfreeze:
            if epoch >= u.epoch:
                frozen = {i for i in frozen if i < u.start}
        return frozen

    def apply(self, epoch: int) -> list[str]:
        """Set ``requires_grad`` and batch-norm modes for ``epoch``; returns the names of parameters unfrozen."""
        frozen = self.frozen_modules(epoch)
        flipped = []
        for name, p in self.model.named_parameters():
            trainable = self.layers.owner(name) not in frozen
            if trainable and not p.requires_grad:
                flipped.append(name)
            p.requires_grad_(trainable)
        for name, m in self.model.named_modules():
            if not isinstance(m, nn.modules.batchnorm._BatchNorm):
                continue
            i = self.layers.index[name]
            if i in frozen and i not in self._bn_hooks:
                self._bn_hooks[i] = m.register_forward_pre_hook(_keep_eval)
                m.eval()
            elif i not in frozen and i in self._bn_hooks:
                self._bn_hooks.pop(i).remove()
                m.train(self.model.training)
        return flipped

    def param_groups(self, model: nn.Module) -> list[dict[str, Any]]:
        """Optimiser groups by lr multiplier, every parameter included (frozen ones too)."""
        groups: dict[str, dict[str, Any]] = {}
        for name, p in model.named_parameters():
            mult, key = self.mults.get(name, (1.0, "rest"))
            g = groups.setdefault(key, {"params": [], "lr_mult": mult, "name": key})
            g["params"].append(p)
        return list(groups.values())

    def describe(self, epoch: int = 1) -> list[str]:
        params = dict(self.model.named_parameters())
        frozen = self.frozen_modules(epoch)
        n_all = sum(p.numel() for p in params.values())
        n_frozen = sum(p.numel() for n, p in params.items() if self.layers.owner(n) in frozen)
        lines = [f"freeze {self.cfg.freeze}: {n_frozen:,} of {n_all:,} parameters frozen"]
        bn = [n for n, m in self.model.named_modules()
              if isinstance(m, nn.modules.batchnorm._BatchNorm) and self.layers.index[n] in frozen]
        if bn:
            lines.append(f"{len(bn)} batch-norm layer(s) in the frozen part keep their statistics (eval mode)")
        if self.cfg.lr_mult:
            by_key: dict[str, tuple[float, int]] = {}
            for n, (m, k) in self.mults.items():
                by_key[k] = (m, by_key.get(k, (m, 0))[1] + 1)
            lines.append("lr_mult: " + ", ".join(f"{k} x{m:g} ({c} tensors)" for k, (m, c) in by_key.items()))
        for u in sorted(self.unfreeze, key=lambda u: u.epoch):
            lines.append(f"unfreeze {u.name} and every layer after it at epoch {u.epoch}")
        return lines + self.notes


def _keep_eval(module: nn.Module, args) -> None:
    # A frozen batch norm uses (and keeps) its running statistics, whatever model.train() said.
    if module.training:
        module.train(False)


class FinetuneCallback(Callback):
    """Applies a :class:`FinetunePlan` at each epoch start and records ``finetune_from`` in meta.json."""

    def __init__(self, plan: FinetunePlan, finetune_from: dict[str, Any] | None = None) -> None:
        self.plan = plan
        self.finetune_from = finetune_from

    def on_train_begin(self, trainer: Any) -> None:
        if self.finetune_from is not None and trainer.run is not None:
            trainer.run.write_meta({**trainer.run.read_meta(), "finetune_from": self.finetune_from})

    def on_epoch_begin(self, trainer: Any, epoch: int) -> None:
        flipped = self.plan.apply(epoch)
        if flipped and hasattr(trainer, "log"):
            n = sum(p.numel() for name, p in self.plan.model.named_parameters() if name in set(flipped))
            trainer.log(f"epoch {epoch}: unfroze {len(flipped)} tensors ({n:,} parameters)")


# --------------------------------------------------------------------------- low data


def low_data_defaults(cfg: Config, n_train: int, input_shape: tuple[int, ...]) -> list[str]:
    """Make a small training set train long enough, and augmented, before the epochs run out.

    A hundred images at batch 32 are four optimiser steps an epoch: the
    recipe's 20 epochs are 80 steps, too few for a new head and the layers
    under it to settle. When ``train.epochs`` passes make fewer than
    ``finetune.min_steps`` steps, ``data.epoch_repeats`` is raised so that each
    epoch passes over the data several times (the epoch count, the schedule's
    shape, evaluation and checkpoints per epoch stay as configured). In that
    case, and when the config augments nothing, ``finetune.augment=auto`` adds
    light geometric augmentation (rotation up to 10 degrees, shifts up to 1/14 of
    the side), since every image is now seen dozens of times. Both are written
    into the run's config.yaml, so a resume sees the same. Returns what was done,
    in words.
    """
    import math

    ft = cfg.finetune
    bs, epochs = cfg.data.batch_size, cfg.train.epochs
    planned = math.ceil(n_train * cfg.data.epoch_repeats / bs) * epochs
    if ft.min_steps == 0 or planned >= ft.min_steps or n_train == 0:
        return []
    # The passes of an epoch are cut into batches together: R passes make ceil(n R / bs) steps.
    per_epoch = math.ceil(ft.min_steps / epochs)
    repeats = (per_epoch - 1) * bs // n_train + 1
    steps = math.ceil(n_train * repeats / bs) * epochs
    lines = [f"low data: {n_train} training images make {planned} step(s) in {epochs} epoch(s); each epoch now "
             f"passes over them {repeats} times ({steps} steps; finetune.min_steps={ft.min_steps}, 0 to keep the "
             f"epochs as they are)"]
    cfg.data.epoch_repeats = repeats
    if ft.augment == "auto" and not cfg.augment.active():
        side = min(input_shape[1:]) if len(input_shape) >= 3 else 0
        cfg.augment.rotation = 10.0
        cfg.augment.crop_padding = max(1, round(side / 14)) if side else 0
        lines.append(f"low data: light augmentation added (augment.rotation=10, augment.crop_padding="
                     f"{cfg.augment.crop_padding}; finetune.augment=off to train without)")
    return lines


# --------------------------------------------------------------------------- the command


@dataclass
class _Source:
    label: str                     # what the user gave
    kind: str                      # run | checkpoint | file | pretrained | weights
    state: dict[str, torch.Tensor] | None
    config: dict[str, Any] | None
    meta: dict[str, Any] | None
    checkpoint: str | None


def _open_source(source: str, what: str = "--from") -> _Source:
    from cnnkit.models.weights import open_weights

    p = Path(source)
    if not p.exists():
        raise UserError(f"{what} {source!r} does not exist; give a run folder, a cnnkit checkpoint (.pt) or a "
                        f"weights file (.pt/.pth/.safetensors)")
    wf = open_weights(p, what=what)
    kind = "run" if p.is_dir() else ("checkpoint" if wf.config is not None else "file")
    return _Source(source, kind, wf.state, wf.config, wf.meta, str(Path(wf.path).resolve()))


def build_config(source: _Source | None, config: str | None, overrides: list[str]) -> Config:
    """The fine-tuning config: CONFIG (or the source run's config) + overrides; the model from the source if unset."""
    if config is not None:
        raw = read_yaml(config)
    elif source is not None and source.config is not None:
        raw = copy.deepcopy(source.config)
        raw.get("train", {}).pop("name", None)
        for k in ("pretrained", "weights"):  # the source run's own starting point, not this one's
            raw.get("model", {}).pop(k, None)
    else:
        raise UserError("give a CONFIG.yaml: --from is a plain weights file, which carries no config")
    raw = apply_overrides(raw, overrides)
    model_raw = raw.get("model") or {}
    if not isinstance(model_raw, dict):
        raise UserError(f"the model section must be a mapping, got {model_raw!r}")
    if source is not None and source.config is not None and "name" not in model_raw and "layers" not in model_raw:
        merged = copy.deepcopy(source.config.get("model", {}))
        for k in ("pretrained", "weights"):
            merged.pop(k, None)
        merged.update(model_raw)
        raw["model"] = merged
    return validate(raw)


def finetune(source: str | None, config: str | None, overrides: list[str] | None = None, *, quiet: bool = False,
             log: Callable[[str], None] | None = None, head_init: str = "zero",
             callbacks: list[Callback] | None = None):
    """Fine-tune from ``source`` (run folder / checkpoint / weights file; None: the config's own weights)."""
    from cnnkit.data import load_data
    from cnnkit.models.weights import load_state, load_weights, normalisation_for
    from cnnkit.nn.init import init_weights
    from cnnkit.nn.runtime import seed_everything
    from cnnkit.runs import RunFolder
    from cnnkit.train.setup import build_model, input_shape_for
    from cnnkit.train.trainer import Trainer

    say = log or (lambda s: print(s, flush=True))
    note = (lambda s: None) if quiet else (lambda s: print(f"note: {s}", file=sys.stderr))
    src = _open_source(source) if source is not None else None
    cfg = build_config(src, config, list(overrides or []))
    if src is not None and (cfg.model.pretrained is not None or cfg.model.weights is not None):
        raise UserError("--from gives the starting weights; remove model.pretrained / model.weights from the "
                        "config (or leave out --from to start from them)")
    if src is None and cfg.model.weights is not None:
        src = _open_source(cfg.model.weights, "model.weights")  # the same as --from
    if src is None and cfg.model.pretrained is None:
        raise UserError("finetune needs starting weights: --from RUN_DIR|FILE, or model.pretrained=imagenet "
                        "or model.weights=PATH in the config")
    if cfg.train.engine != "torch":
        raise UserError("finetune runs on the torch engine; remove train.engine=reference")
    if cfg.finetune.unfreeze_at and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise UserError("finetune.unfreeze_at does not work with several processes (DDP only synchronises the "
                        "parameters that were trainable when it started); run on one process or drop unfreeze_at")

    # Data, normalised as the source's features expect.
    bundle = load_data(cfg.data, task=cfg.task)
    input_shape = input_shape_for(cfg, bundle)
    channels = input_shape[0]
    norm_from = "the new data"
    if src is not None and src.meta and len(src.meta.get("mean") or ()) == channels:
        bundle = replace(bundle, mean=tuple(src.meta["mean"]), std=tuple(src.meta["std"]))
        norm_from = "the source run"
        if list(src.meta.get("input_shape", input_shape)) != list(input_shape):
            note(f"the source was trained on {src.meta['input_shape']} inputs, the new data has {list(input_shape)}")
    elif src is None and normalisation_for(cfg.model, channels) is not None:
        mean, std = normalisation_for(cfg.model, channels)
        bundle = replace(bundle, mean=mean, std=std)
        norm_from = f"torchvision's {cfg.model.name} weights"

    low_data = low_data_defaults(cfg, len(bundle.train), input_shape)

    # Model: everything but the head from the source, then a fresh head for the new classes.
    seed_everything(cfg.train.seed, cfg.train.deterministic)
    model = build_model(cfg, input_shape, bundle.num_classes, with_weights=False)
    if src is not None:
        report = load_state(model, src.state, source=repr(src.checkpoint), skip_head=True)
        for n in report.notes:
            note(n)
    else:
        load_weights(model, cfg.model, skip_head=True, log=note)
    if not hasattr(model, "reset_classifier"):
        raise UserError(f"{type(model).__name__} has no classifier head to replace")
    model.reset_classifier(bundle.num_classes)
    head = model.get_classifier()
    if head_init == "zero":
        with torch.no_grad():
            for p in head.parameters():
                p.zero_()
    else:
        init_weights(head, cfg.model.init.scheme, cfg.model.init.distribution, cfg.model.init.scale)

    plan = FinetunePlan(model, cfg.finetune, cfg.train.epochs)
    plan.apply(1)
    if cfg.train.name is None:
        cfg.train.name = f"finetune-{cfg.model.name or 'layers'}-{cfg.data.name}"
    finetune_from = {"source": src.label if src is not None else cfg.model.pretrained,
                     "kind": src.kind if src is not None else "pretrained",
                     "checkpoint": src.checkpoint if src is not None else None,
                     "source_classes": (src.meta or {}).get("classes") if src is not None else None,
                     "normalisation": norm_from}
    if not quiet:
        say(f"fine-tuning from {finetune_from['source']} ({finetune_from['kind']}): "
            f"new head for {bundle.num_classes} classes; normalisation of {norm_from}")
        for line in plan.describe(1) + low_data:
            say("  " + line)
    trainer = Trainer(cfg, quiet=quiet, log=log, model=model, bundle=bundle, param_groups=plan.param_groups,
                      callbacks=[FinetuneCallback(plan, finetune_from), *(callbacks or [])])
    result = trainer.fit()
    if result.run_dir is not None and trainer.is_main:
        result.final.update(RunFolder(result.run_dir).update_final(finetune_from=finetune_from))
    return result
