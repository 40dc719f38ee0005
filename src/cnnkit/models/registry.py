"""The model registry and the function that builds a model from a config.

Every builder takes ``num_classes``, ``in_chans`` and ``input_size`` and lists
its other parameters explicitly; ``model.options`` in a config are checked
against that list before anything is built.
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any, Callable

from torch import nn

from cnnkit.errors import UserError, did_you_mean
from cnnkit.registry import Registry

if TYPE_CHECKING:
    from cnnkit.config import ModelConfig

MODELS: Registry[Callable[..., nn.Module]] = Registry("model")


def register_model(name: str, description: str, *, default_input: tuple[int, int, int],
                   min_input: tuple[int, int, int] | None = None, task: str = "classification"):
    """Register a builder with its default and smallest valid input (C, H, W) and the task it serves
    (a classifier's ``model(x)`` gives logits; a detector's gives boxes)."""
    return MODELS.register(name, description, default_input=tuple(default_input),
                           min_input=tuple(min_input or default_input), task=task)


def list_models(pattern: str | None = None, task: str | None = None) -> list[str]:
    """Registered model names, optionally filtered by a wildcard such as ``'resnet*'`` and by task."""
    _load_families()
    return [n for n in MODELS.names(pattern) if task is None or model_task(n) == task]


def model_task(name: str) -> str:
    """The task a registered model serves: ``classification`` or ``detection``."""
    _load_families()
    return MODELS.entry(name).meta.get("task", "classification")


def get_model(name: str, num_classes: int = 10, in_chans: int | None = None, input_size: int | None = None,
              **options: Any) -> nn.Module:
    """Build a registered model. Unknown names and options raise UserError."""
    _load_families()
    entry = MODELS.entry(name)
    c, h, _ = entry.meta["default_input"]
    builder = entry.obj
    params = inspect.signature(builder).parameters
    for key in options:
        if key not in params or key in ("num_classes", "in_chans", "input_size"):
            allowed = [p for p in params if p not in ("num_classes", "in_chans", "input_size")]
            raise UserError(f"model {name!r} has no option {key!r}{did_you_mean(key, allowed)}; "
                            f"allowed options: {', '.join(allowed) or 'none'}")
    min_c, min_h, min_w = entry.meta["min_input"]
    size = input_size if input_size is not None else h
    if size < min_h:
        raise UserError(f"model {name!r} needs inputs of at least {min_h}x{min_w} pixels, got {size}x{size}; "
                        f"set data.image_size={min_h} or pick a smaller network")
    return builder(num_classes=num_classes, in_chans=in_chans if in_chans is not None else c,
                   input_size=size, **options)


def default_input(name: str) -> tuple[int, int, int]:
    _load_families()
    return MODELS.entry(name).meta["default_input"]


def _load_families() -> None:
    """The families register themselves when :mod:`cnnkit.models` is imported (its ``__init__``
    imports them), which Python always does before any of its submodules; nothing to do here."""


def create_model(cfg: "ModelConfig", input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    """Build the network a ``model`` config section describes, for this input and class count.

    A layer list whose final dense layer has a different width than the data's
    class count gets its head sized to the data (and says so on stderr).
    ``model.pretrained`` / ``model.weights`` are loaded last (see :mod:`cnnkit.models.weights`);
    rebuilding a trained run passes ``without_weights(cfg)`` instead.
    """
    import sys

    from cnnkit.models.spec import build_torch
    from cnnkit.spec import parse_layers
    from cnnkit.nn.init import init_weights

    c, h, w = input_shape
    if cfg.layers is not None:
        specs = parse_layers(cfg.layers)
        last = specs[-1]
        if last.type == "dense" and isinstance(last.args["out"], int) and last.args["out"] != num_classes:
            print(f"note: the last dense layer has {last.args['out']} outputs but the data has {num_classes} "
                  f"classes; sizing it to {num_classes}", file=sys.stderr)
            specs[-1] = type(last)(last.type, {**last.args, "out": num_classes}, last.name, last.index)
        model = build_torch(specs, input_shape, num_classes)
    else:
        if h != w:
            raise UserError(f"model {cfg.name!r} expects square inputs, got {h}x{w}; set data.image_size")
        model = get_model(cfg.name, num_classes=num_classes, in_chans=c, input_size=h, **cfg.options)
    init_weights(model, cfg.init.scheme, cfg.init.distribution, cfg.init.scale)
    if cfg.pretrained is not None or cfg.weights is not None:
        from cnnkit.models.weights import load_weights

        load_weights(model, cfg)
    return model
