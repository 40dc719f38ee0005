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


def register_model(name: str, description: str, *, default_input: tuple[int, ...],
                   min_input: tuple[int, ...] | None = None, task: str = "classification",
                   variable_length: bool = False):
    """Register a builder with its default and smallest valid input and the task it serves (a classifier's
    ``model(x)`` gives logits; a detector's gives boxes). Inputs are (C, H, W) images or, for text,
    (V, L): a vocabulary of V tokens (the one-hot channels of a token sequence) and L tokens.
    ``variable_length``: a text model that masks its padding, so its batches need not all be L long.
    Clips are (T, C, H, W): T frames of (C, H, W); their builders are sized by a frame and take any T."""
    return MODELS.register(name, description, default_input=tuple(default_input),
                           min_input=tuple(min_input or default_input), task=task, variable_length=variable_length)


def list_models(pattern: str | None = None, task: str | None = None) -> list[str]:
    """Registered model names, optionally filtered by a wildcard such as ``'resnet*'`` and by task."""
    _load_families()
    return [n for n in MODELS.names(pattern) if task is None or model_task(n) == task]


def model_task(name: str) -> str:
    """The task a registered model serves: ``classification``, ``detection``, ``segmentation``, ``instance``..."""
    _load_families()
    return MODELS.entry(name).meta.get("task", "classification")


def get_model(name: str, num_classes: int = 10, in_chans: int | None = None, input_size: int | None = None,
              backbone: nn.Module | None = None, **options: Any) -> nn.Module:
    """Build a registered model. Unknown names and options raise UserError. ``backbone``: the classifier
    a detector or segmentation model is built on (see :func:`create_backbone`)."""
    _load_families()
    entry = MODELS.entry(name)
    c, h = frame_shape(entry.meta["default_input"])
    builder = entry.obj
    params = inspect.signature(builder).parameters
    reserved = ("num_classes", "in_chans", "input_size", "backbone")
    for key in options:
        if key not in params or key in reserved:
            allowed = [p for p in params if p not in reserved]
            raise UserError(f"model {name!r} has no option {key!r}{did_you_mean(key, allowed)}; "
                            f"allowed options: {', '.join(allowed) or 'none'}")
    min_h = frame_shape(entry.meta["min_input"])[1]
    size = input_size if input_size is not None else h
    if size < min_h:
        if len(entry.meta["min_input"]) == 4:
            raise UserError(f"model {name!r} needs frames of at least {min_h}x{min_h} pixels, got {size}x{size}; "
                            f"set data.image_size={min_h} or more")
        if len(entry.meta["min_input"]) == 2:
            if entry.meta.get("task") == "text":
                raise UserError(f"model {name!r} needs sequences of at least {min_h} tokens, got {size}; "
                                f"set data.max_length={min_h} or more")
            raise UserError(f"model {name!r} needs series of at least {min_h} steps, got {size}; set "
                            f"data.series_length={min_h} or more (forecast: data.lookback)")
        raise UserError(f"model {name!r} needs inputs of at least {min_h}x{min_h} pixels, got {size}x{size}; "
                        f"set data.image_size={min_h} or pick a smaller network")
    if backbone is not None:
        if "backbone" not in params:
            raise UserError(f"model {name!r} has its own network and takes no backbone")
        options["backbone"] = backbone
    return builder(num_classes=num_classes, in_chans=in_chans if in_chans is not None else c,
                   input_size=size, **options)


def frame_shape(shape: tuple[int, ...]) -> tuple[int, int]:
    """``(channels, side)`` a builder is sized by: (C, H, W) images and (V, L) sequences by their first two
    values, (T, C, H, W) clips by one frame's (C, H)."""
    return (shape[1], shape[2]) if len(shape) == 4 else (shape[0], shape[1])


def default_input(name: str) -> tuple[int, ...]:
    _load_families()
    return MODELS.entry(name).meta["default_input"]


def _load_families() -> None:
    """The families register themselves when :mod:`cnnkit.models` is imported (its ``__init__``
    imports them), which Python always does before any of its submodules; nothing to do here."""


def is_signal(specs: list, input_shape: tuple[int, ...]) -> bool:
    """Whether a layer list on a 2-value input reads a real-valued series (C, L) rather than token ids
    (V, L): text networks start with an ``embedding``."""
    return len(input_shape) == 2 and not (specs and specs[0].type == "embedding")


def create_model(cfg: "ModelConfig", input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
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

    if len(input_shape) == 4 and cfg.layers is not None:
        raise UserError(f"a layer list reads images (C, H, W) or sequences; clips {list(input_shape)} (T, C, H, W) "
                        f"need a named clip model ('cnnkit models' lists those of tasks video and frames)")
    # (T, C, H, W) clips: a frame sizes the builder, which takes any T; (V, L) text: square
    c, h, w = input_shape[1:] if len(input_shape) == 4 else \
        input_shape if len(input_shape) == 3 else (*input_shape, input_shape[-1])
    if cfg.layers is not None:
        specs = parse_layers(cfg.layers)
        last = specs[-1]
        if last.type == "dense" and isinstance(last.args["out"], int) and last.args["out"] != num_classes:
            print(f"note: the last dense layer has {last.args['out']} outputs but the data has {num_classes} "
                  f"classes; sizing it to {num_classes}", file=sys.stderr)
            specs[-1] = type(last)(last.type, {**last.args, "out": num_classes}, last.name, last.index)
        # (V, L) token ids when the list starts with an embedding; else (C, L) is a real-valued signal
        model = build_torch(specs, input_shape, num_classes, signal=is_signal(specs, input_shape))
    else:
        if h != w:
            raise UserError(f"model {cfg.name!r} expects square inputs, got {h}x{w}; set data.image_size")
        if "backbone" in cfg.options:
            raise UserError(f"model {cfg.name!r} takes its backbone from model.backbone (a classifier name or "
                            f"layer list), not model.options.backbone")
        backbone = None
        if cfg.backbone is not None or cfg.backbone_weights is not None:
            backbone = create_backbone(cfg, c, h)
        model = get_model(cfg.name, num_classes=num_classes, in_chans=c, input_size=h, backbone=backbone,
                          **cfg.options)
    # model.init is for the new parts: a backbone loaded from model.backbone_weights keeps its trained weights
    kept = None
    if cfg.layers is None and cfg.backbone_weights is not None and backbone is not None:
        kept = {k: v.clone() for k, v in backbone.state_dict().items()}
    init_weights(model, cfg.init.scheme, cfg.init.distribution, cfg.init.scale)
    if kept is not None:
        backbone.load_state_dict(kept)
    if cfg.pretrained is not None or cfg.weights is not None:
        from cnnkit.models.weights import load_weights

        load_weights(model, cfg)
    return model


#: Models built on an autoencoder's encoder: their model.backbone(_weights) is a reconstruction model (run).
AUTOENCODER_BACKBONES = ("conv_encoder",)


def backbone_task(name: str | None) -> str:
    """The task of the models (and runs) that ``name``'s backbone comes from: ``reconstruction`` for a model
    built on an autoencoder's encoder (:data:`AUTOENCODER_BACKBONES`), else ``classification``."""
    return "reconstruction" if name in AUTOENCODER_BACKBONES else "classification"


def takes_backbone(name: str) -> bool:
    """Whether the registered model ``name`` is built on a replaceable backbone (``model.backbone``)."""
    _load_families()
    return "backbone" in inspect.signature(MODELS.entry(name).obj).parameters


def backbone_config(cfg: "ModelConfig") -> "ModelConfig":
    """The classifier a model's backbone is: ``model.backbone`` or, when only ``model.backbone_weights``
    names a cnnkit run or checkpoint, that run's own model section (its input size and classes too)."""
    return _backbone_source(cfg)[0]


def _backbone_source(cfg: "ModelConfig") -> tuple["ModelConfig", Any]:
    """``(backbone config, the opened model.backbone_weights file or None)``: the file is read once."""
    from cnnkit.config import ModelConfig

    if cfg.name is None or cfg.name not in MODELS or not takes_backbone(cfg.name):
        raise UserError(f"model.backbone / model.backbone_weights apply to the models built on a classifier "
                        f"({', '.join(models_with_backbone())}); model {cfg.name or 'layers'!r} has its own network")
    wf = None
    if cfg.backbone_weights is not None:
        from cnnkit.models.weights import open_weights

        wf = open_weights(cfg.backbone_weights, "model.backbone_weights")
    if cfg.backbone is not None:
        return cfg.backbone, wf
    if wf.config is None or not isinstance(wf.config.get("model"), dict):
        raise UserError(f"model.backbone_weights: {str(wf.path)!r} is a plain weights file, which does not say "
                        f"which network it belongs to; also set model.backbone (a classifier name or layer list)")
    task, want = wf.config.get("task", "classification"), backbone_task(cfg.name)
    if task != want:
        raise UserError(f"model.backbone_weights: {str(wf.path)!r} is a {task} run; a backbone of {cfg.name} comes "
                        f"from a {want} run")
    raw = {k: v for k, v in wf.config["model"].items() if k not in ("pretrained", "weights")}
    meta = wf.meta or {}
    if meta.get("input_shape"):
        raw["input"] = list(meta["input_shape"])
    if meta.get("classes"):
        raw["num_classes"] = len(meta["classes"])
    try:
        return ModelConfig(**raw), wf
    except Exception as e:
        raise UserError(f"model.backbone_weights: the model section of {str(wf.path)!r} is not valid: {e}") from None


def models_with_backbone(task: str | None = None) -> list[str]:
    """The models (of ``task``, or of every task) that take ``model.backbone`` / ``model.backbone_weights``:
    detectors and segmentation models built on a classifier."""
    return [n for n in list_models(task=task) if takes_backbone(n)]


def create_backbone(cfg: "ModelConfig", in_chans: int, input_size: int) -> nn.Module:
    """The classifier a detector or segmentation model is built on (:func:`backbone_config`), with
    ``model.backbone_weights`` loaded (its head, which the model drops, may have any class count)."""
    import sys

    bcfg, wf = _backbone_source(cfg)
    want = backbone_task(cfg.name)
    if bcfg.name is not None and bcfg.name in MODELS and model_task(bcfg.name) != want:
        raise UserError(f"model.backbone {bcfg.name!r} is a {model_task(bcfg.name)} model; a backbone of "
                        f"{cfg.name} is a {want} model ('cnnkit models' lists them)")
    shape = tuple(bcfg.input) if bcfg.input is not None else (in_chans, input_size, input_size)
    if shape[0] != in_chans:
        # A grey classifier on colour images (or the reverse): its first convolution is adapted on loading.
        if not {shape[0], in_chans} <= {1, 3}:
            raise UserError(f"the backbone takes {shape[0]}-channel images (model.backbone input {list(shape)}) "
                            f"but the data has {in_chans} channels")
        shape = (in_chans, *shape[1:])
        bcfg = bcfg.model_copy(update={"input": list(shape)})
    classifier = create_model(bcfg, shape, bcfg.num_classes or 10)
    if wf is not None:
        from cnnkit.models.weights import load_state

        report = load_state(classifier, wf.state, source=f"model.backbone_weights {str(wf.path)!r}", skip_head=True)
        print(f"note: backbone {bcfg.name or 'layers'} loaded from {wf.path} ({len(report.loaded)} tensors)",
              file=sys.stderr)
        for note in report.notes:
            print(f"note: {note}", file=sys.stderr)
    return classifier
