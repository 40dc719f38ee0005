"""From a config to a ready run: task, data, normalisation, loaders, model, param groups,
optimiser, schedule. Built here once and used by the trainer, finetune, lr-find, eval,
compress and explain, so that a fix reaches all of them.

Example::

    task, bundle, shape = load_task_data(cfg)
    train_loader, val_loader = make_loaders(cfg, bundle, task, device="cpu")
    model = build_model(cfg, shape, bundle.num_classes)
    optimizer = build_optimizer(cfg, default_param_groups(model, cfg.optim))
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from cnnkit.config import Config
from cnnkit.data import DataBundle, TensorData, load_data
from cnnkit.data.loaders import make_loader
from cnnkit.errors import UserError
from cnnkit.models import create_model
from cnnkit.models.weights import normalisation_for, without_weights
from cnnkit.nn.runtime import backward_and_step  # noqa: F401  (the trainer's and lr_find's step, re-exported)
from cnnkit.tasks import Task, create_task, task_class
from cnnkit.train.optim import create as create_optimizer
from cnnkit.train.schedules import make_schedule

NORM_LAYERS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


#: Tasks whose models read (and write) pixel values in [0, 1]: their images are not standardised.
UNIT_PIXEL_TASKS = ("reconstruction", "gan")


def load_task_data(cfg: Config, bundle: DataBundle | None = None, tokenizer: Any = None
                   ) -> tuple[Task, DataBundle, tuple[int, ...]]:
    """The config's task (checked first: an unknown one fails before any data is read), its data with
    the normalisation pretrained weights expect, and the model's input shape. Texts (task text) are
    encoded here, after the held-out split: with ``tokenizer`` (a resumed run's own) or one fitted on
    the training split."""
    task_class(cfg.task)
    if cfg.model.name is None and cfg.task == "detection":
        from cnnkit.models.registry import list_models, models_with_backbone

        raise UserError(f"a layer list builds a classifier; task detection needs a detector: model.name="
                        f"{' or '.join(list_models(task='detection'))} (a layer list can be the backbone of "
                        f"{', '.join(models_with_backbone(task='detection'))}: move it to model.backbone)")
    if cfg.model.name is not None:
        from cnnkit.models.registry import MODELS, model_task

        # a series classifier forecasts too: its head gives targets x horizon values instead of classes
        serves = {"forecast": ("forecast", "timeseries")}.get(cfg.task, (cfg.task,))
        if cfg.model.name in MODELS and model_task(cfg.model.name) not in serves:
            raise UserError(f"model {cfg.model.name!r} is a {model_task(cfg.model.name)} model and the config's "
                            f"task is {cfg.task!r}; set task: {model_task(cfg.model.name)} or pick a "
                            f"{cfg.task} model ('cnnkit models' lists both)")
    if bundle is None:
        bundle = load_data(cfg.data, task=cfg.task)
        norm = normalisation_for(cfg.model, bundle.input_shape[0])
        if norm is not None:  # pretrained weights expect the normalisation they were trained with
            bundle.mean, bundle.std = norm
        from cnnkit.models.registry import AUTOENCODER_BACKBONES

        # generative models read and write pixels in [0, 1]; so does a classifier on an autoencoder's encoder
        if cfg.task in UNIT_PIXEL_TASKS or (cfg.model.name in AUTOENCODER_BACKBONES and cfg.model.backbone_weights):
            channels = len(bundle.mean)
            bundle.mean, bundle.std = (0.0,) * channels, (1.0,) * channels
    if cfg.task == "text" and "tokenizer" not in (bundle.extra or {}):
        from cnnkit.data.text.dataset import tokenize_bundle

        bundle = tokenize_bundle(bundle, cfg.data, tokenizer)
    if cfg.task == "forecast":  # a forecaster's "classes" are its outputs: each target at each step ahead
        from cnnkit.tasks.forecast import output_names

        layout = bundle.extra["forecast_layout"]
        bundle.classes = output_names(layout["targets"], layout["horizon"])
    input_shape = input_shape_for(cfg, bundle)
    task = create_task(cfg, bundle.classes, input_shape)
    task.attach(bundle.extra)
    return task, bundle, input_shape


def resolve_backbone(cfg: Config) -> Config:
    """``cfg`` with ``model.backbone`` filled in from ``model.backbone_weights``' run when only the latter
    is set, so that the run's config.yaml says which network the detector is built on (eval, predict and
    resume rebuild it from there, without needing the backbone's run again)."""
    if cfg.model.backbone_weights is None or cfg.model.backbone is not None:
        return cfg
    from cnnkit.models.registry import backbone_config

    model = cfg.model.model_copy(update={"backbone": backbone_config(cfg.model)})
    return cfg.model_copy(update={"model": model})


def input_shape_for(cfg: Config, bundle: DataBundle) -> tuple[int, ...]:
    shape = tuple(bundle.input_shape)
    if cfg.model.input is not None and tuple(cfg.model.input) != shape:
        raise UserError(f"model.input={list(cfg.model.input)} does not match the data's images "
                        f"{list(shape)} (dataset {cfg.data.name!r}); remove model.input or set data.image_size")
    return shape


def eval_loader(cfg: Config, data: Any, mean, std, task: Task, device, *, rank: int = 0, world_size: int = 1,
                channels_last: bool = False):
    """Batches of ``data`` in order, without augmentation (validation, eval, calibration)."""
    return make_loader(data, batch_size=cfg.data.eval_batch_size or max(cfg.data.batch_size, 256), mean=mean,
                       std=std, shuffle=False, seed=0, device=device, augment=None,
                       num_workers=cfg.data.num_workers, rank=rank, world_size=world_size,
                       channels_last=channels_last, collate=task.collate, transform=task.transform(train=False))


def make_loaders(cfg: Config, bundle: DataBundle, task: Task, device, *, rank: int = 0, world_size: int = 1):
    """``(train_loader, val_loader)``: shuffled and augmented per epoch from the seed / in order."""
    bs = cfg.data.batch_size
    if bs % world_size:
        raise UserError(f"data.batch_size={bs} must be divisible by the number of processes ({world_size})")
    train = make_loader(task.train_data(bundle.train), batch_size=bs, mean=bundle.mean, std=bundle.std, shuffle=True,
                        seed=cfg.train.seed, device=device, augment=cfg.augment, num_workers=cfg.data.num_workers,
                        rank=rank, world_size=world_size, channels_last=cfg.train.channels_last,
                        collate=task.collate, repeats=cfg.data.epoch_repeats, transform=task.transform(train=True))
    val = eval_loader(cfg, bundle.val, bundle.mean, bundle.std, task, device, rank=rank, world_size=world_size,
                      channels_last=cfg.train.channels_last)
    return train, val


def build_model(cfg: Config, input_shape: tuple[int, ...], num_classes: int, *, with_weights: bool = True,
                vocabulary: list[str] | None = None) -> nn.Module:
    """The config's network; ``with_weights=False`` skips model.pretrained / model.weights /
    model.embeddings (a resumed or rebuilt run loads its own checkpoint instead). ``vocabulary``: the
    token of each id, for the word vectors of ``model.embeddings``."""
    model = create_model(cfg.model if with_weights else without_weights(cfg.model), input_shape, num_classes)
    if with_weights and cfg.model.embeddings is not None:
        load_word_vectors(model, cfg.model.embeddings, vocabulary)
    return model


def load_word_vectors(model: nn.Module, path: str, vocabulary: list[str] | None) -> None:
    """Fill the model's embedding tables with the vectors of ``path`` for the vocabulary's tokens (the
    others keep their random start); says on stderr how many were found."""
    import sys

    from cnnkit.models.text.embeddings import fill_embeddings, fill_model_embeddings, read_vectors

    if vocabulary is None:
        raise UserError(f"model.embeddings={path!r} gives word vectors to a text model's vocabulary; set task: text")
    tables = [m for m in model.modules() if isinstance(m, nn.Embedding)]
    if not tables:
        raise UserError(f"model.embeddings={path!r}: model {type(model).__name__} has no embedding table to fill")
    words, vectors = read_vectors(path)
    if getattr(model, "embeddings", None) is not None:  # a text model: its tables start equal (multichannel)
        report = fill_model_embeddings(model, vocabulary, words, vectors)
    else:  # a layer list's embedding layer
        for table in tables:
            report = fill_embeddings(table, vocabulary, words, vectors)
    print(f"note: model.embeddings: {report['found']} of {len(vocabulary) - 2} vocabulary tokens found in {path} "
          f"({report['dim']}-d vectors; the others start at random)", file=sys.stderr)


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


def build_optimizer(cfg: Config, groups: list[dict[str, Any]]) -> torch.optim.Optimizer:
    """The config's optimiser over ``groups``; every group gets an ``lr_mult`` (1 unless set)."""
    optimizer = create_optimizer(cfg.optim.name, groups, lr=cfg.optim.lr, **cfg.optim.hyper())
    for g in optimizer.param_groups:
        g.setdefault("lr_mult", 1.0)
    return optimizer


def build_schedule(cfg: Config) -> Callable[[float], float]:
    """The learning-rate multiplier as a function of training progress in [0, 1]."""
    return make_schedule(cfg.schedule, cfg.train.epochs)


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
