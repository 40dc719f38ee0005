"""Weights as data: where pretrained weights come from and how a file's keys map into a cnnkit model.

Two config keys start a model from existing weights (set at most one):

* ``model.pretrained: imagenet`` loads torchvision's ImageNet weights for the
  zoo models that torchvision has weights for (:data:`TORCHVISION_WEIGHTS`),
  through torchvision's own download and cache (``$TORCH_HOME/hub/checkpoints``,
  with torch hub's progress bar). ``imagenet`` (or ``default``) is torchvision's
  ``DEFAULT`` weights; a torchvision tag such as ``IMAGENET1K_V2`` or
  ``ResNet50_Weights.IMAGENET1K_V2`` picks another set. Only torchvision is a
  source: cnnkit's own CIFAR networks have no published weights, and timm
  (``timm:NAME``) is not wired in (timm is not a dependency).
* ``model.weights: PATH`` loads a local file, so everything also works with no
  network: a cnnkit checkpoint (a dict with a ``model`` key, e.g. a run's
  ``checkpoints/best.pt``), a run folder (its best checkpoint), a plain state
  dict (``.pt``/``.pth``; a ``state_dict`` key is also understood) or a
  ``.safetensors`` file.

What each weight set is (:class:`WeightSpec`: input size, normalisation,
ImageNet class names, URL) is read from torchvision's weights enums
(``get_model_weights(name)``, ``.meta``, ``.transforms()``), not from hand tables.

Key mapping. Every zoo model is ``Classifier(body, head)``: ``body`` is the
torchvision network with its last ``nn.Linear`` replaced by ``nn.Identity`` and
``head`` is that Linear. A torchvision state dict (keys such as
``layer1.0.conv1.weight`` and ``fc.weight``) maps as ``k -> body.k`` for every
key the body has and ``<last linear>.* -> head.*`` (``fc`` for ResNets,
GoogLeNet and Inception, ``classifier`` for DenseNet, ``classifier.6`` for VGG).
Keys of modules the cnnkit body leaves out (GoogLeNet's ``aux1``/``aux2``,
Inception's ``AuxLogits``) are dropped with a note. ``module.`` and
``_orig_mod.`` prefixes (DDP, ``torch.compile``) are stripped.

A head whose class count differs from the file's is skipped with a note and
stays freshly initialised; a 1-channel model takes a 3-channel first
convolution by summing over the colour channels (as timm does). Any other
missing, unexpected or mismatched key is a :class:`~cnnkit.errors.UserError`
that lists a few of them.

GoogLeNet and Inception v3: torchvision runs their ImageNet weights with
``transform_input=True``, which turns ImageNet-normalised input into
``(x - 0.5) / 0.5``; cnnkit builds them without that transform, so their
:class:`WeightSpec` gives mean = std = 0.5, the normalisation the weights
actually expect.

Example::

    spec = weight_spec("resnet18")                 # torchvision's ResNet18_Weights.IMAGENET1K_V1
    spec.input_size, spec.mean, spec.classes[:2]   # 224, (0.485, 0.456, 0.406), ('tench', 'goldfish')
    model = get_model("resnet18", num_classes=1000)
    load_weights(model, ModelConfig(name="resnet18", weights="resnet18.pth"))
"""

from __future__ import annotations

import importlib.util
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import torch
from torch import nn

from cnnkit.errors import UserError, did_you_mean

if TYPE_CHECKING:
    from cnnkit.config import ModelConfig

# The zoo models torchvision publishes ImageNet weights for (cnnkit name = torchvision name).
TORCHVISION_WEIGHTS: tuple[str, ...] = (
    "resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnext50_32x4d", "wide_resnet50_2",
    "vgg11", "vgg13", "vgg16", "vgg19", "vgg11_bn", "vgg13_bn", "vgg16_bn", "vgg19_bn",
    "densenet121", "googlenet", "inception_v3",
    "efficientnet_b0", "efficientnet_b1", "efficientnet_b2", "efficientnet_v2_s", "mobilenet_v2", "mobilenet_v3_small",
    "mobilenet_v3_large", "convnext_tiny", "regnet_x_400mf", "regnet_y_400mf", "regnet_x_800mf", "regnet_y_800mf",
)
# torchvision runs these weights with transform_input=True (see the module docstring).
_TRANSFORM_INPUT = ("googlenet", "inception_v3")
_SHOW = 5  # keys listed in an error message


@dataclass(frozen=True)
class WeightSpec:
    """One published weight set, described as data."""

    name: str                      # cnnkit model name
    tag: str                       # the enum member, e.g. "IMAGENET1K_V1"
    source: str                    # "torchvision" (or "timm")
    builder_name: str              # torchvision builder, e.g. "resnet18"
    weights_name: str              # e.g. "ResNet18_Weights.IMAGENET1K_V1"
    input_size: int                # centre-crop size of the evaluation transform
    resize_size: int | None
    mean: tuple[float, ...]
    std: tuple[float, ...]
    classes: tuple[str, ...] = field(repr=False)
    url: str | None = None
    num_params: int | None = None

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def enum(self):
        """torchvision's weights enum member."""
        from torchvision.models import get_weight

        return get_weight(self.weights_name)


def list_weights() -> list[WeightSpec]:
    """The default weights of every zoo model torchvision has weights for."""
    return [weight_spec(n) for n in TORCHVISION_WEIGHTS]


def weight_spec(model_name: str, tag: str = "imagenet") -> WeightSpec:
    """The :class:`WeightSpec` of ``model_name``'s weights ``tag`` (``imagenet``/``default``, or a torchvision tag)."""
    source, _, rest = tag.partition(":") if ":" in tag else ("torchvision", "", tag)
    if source == "timm":
        if importlib.util.find_spec("timm") is None:
            raise UserError(f"model.pretrained={tag!r} asks for timm's weights, and timm is not installed "
                            f"(pip install timm); cnnkit itself loads torchvision's weights "
                            f"(model.pretrained=imagenet) or a local file (model.weights=PATH)")
        raise UserError(f"model.pretrained={tag!r}: cnnkit does not load timm's weights itself; save the timm "
                        f"model's state_dict() to a file and pass model.weights=PATH")
    if source != "torchvision":
        raise UserError(f"model.pretrained={tag!r}: unknown weights source {source!r}; "
                        f"use imagenet, a torchvision tag such as IMAGENET1K_V1, or model.weights=PATH")
    if model_name not in TORCHVISION_WEIGHTS:
        raise UserError(f"model {model_name!r} has no pretrained weights in torchvision (cnnkit only loads "
                        f"torchvision's); models with ImageNet weights: {', '.join(TORCHVISION_WEIGHTS)}. "
                        f"To start from other weights pass a local file with model.weights=PATH")
    from torchvision.models import get_model_weights

    enum = get_model_weights(model_name)
    key = rest.strip()
    if key.lower() in ("imagenet", "default", "true"):
        member = enum.DEFAULT
    else:
        short = key.split(".")[-1].upper()
        members = {m.name: m for m in enum}
        if short not in members:
            raise UserError(f"model.pretrained={tag!r}: {model_name} has no torchvision weights {short!r}"
                            f"{did_you_mean(short, members)}; known: imagenet (= {enum.DEFAULT.name}), "
                            f"{', '.join(members)}")
        member = members[short]
    t = member.transforms()
    crop = t.crop_size[0] if isinstance(t.crop_size, (list, tuple)) else int(t.crop_size)
    resize = getattr(t, "resize_size", None)
    resize = resize[0] if isinstance(resize, (list, tuple)) else resize
    mean, std = tuple(float(v) for v in t.mean), tuple(float(v) for v in t.std)
    if model_name in _TRANSFORM_INPUT:
        mean, std = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
    return WeightSpec(name=model_name, tag=member.name, source="torchvision", builder_name=model_name,
                      weights_name=f"{type(member).__name__}.{member.name}", input_size=int(crop),
                      resize_size=None if resize is None else int(resize), mean=mean, std=std,
                      classes=tuple(member.meta["categories"]), url=member.url,
                      num_params=member.meta.get("num_params"))


# --------------------------------------------------------------------------- reading weights


def download_state_dict(spec: WeightSpec, progress: bool = True) -> dict[str, torch.Tensor]:
    """torchvision's weights through its own download and cache; a failed download is a UserError."""
    from urllib.error import URLError

    member = spec.enum()
    try:
        return member.get_state_dict(progress=progress)
    except (URLError, OSError, RuntimeError) as e:
        cache = Path(torch.hub.get_dir()) / "checkpoints"
        file = spec.url.rsplit("/", 1)[-1] if spec.url else "the weights file"
        raise UserError(f"could not download torchvision's {spec.weights_name} weights for {spec.name} "
                        f"from {spec.url} ({type(e).__name__}: {e}). model.pretrained needs network access "
                        f"the first time; without it, fetch the file elsewhere and either pass it as a local "
                        f"file with model.weights=PATH (and drop model.pretrained) or put it in torch's cache "
                        f"as {cache / file}") from None


@dataclass
class WeightsFile:
    """A local weights file, read: its tensors and, for a cnnkit checkpoint, the run's config and meta."""

    path: Path
    state: dict[str, torch.Tensor]
    config: dict[str, Any] | None = None
    meta: dict[str, Any] | None = None
    epoch: int | None = None


def open_weights(path: str | os.PathLike, what: str = "model.weights") -> WeightsFile:
    """Read a cnnkit checkpoint, a run folder (its best checkpoint), a plain state dict or a safetensors file."""
    p = Path(path)
    if not p.exists():
        raise UserError(f"{what}: {str(p)!r} does not exist; give a run folder or a .pt/.pth/.safetensors file")
    if p.is_dir():
        from cnnkit.runs import find_checkpoint

        p = find_checkpoint(p)
    if p.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError:  # pragma: no cover - safetensors is a dependency
            raise UserError("reading .safetensors files needs the safetensors package (pip install safetensors)")
        try:
            return WeightsFile(p, load_file(str(p), device="cpu"))
        except Exception as e:
            raise UserError(f"cannot read safetensors file {str(p)!r}: {e}") from None
    from cnnkit.runs import load_checkpoint

    obj = load_checkpoint(p)  # data only (weights_only=True): a file that would run code is refused
    state = state_dict_of(obj, repr(str(p)))
    if isinstance(obj, Mapping) and isinstance(obj.get("config"), Mapping) and isinstance(obj.get("meta"), Mapping):
        return WeightsFile(p, state, dict(obj["config"]), dict(obj["meta"]), obj.get("epoch"))
    return WeightsFile(p, state)


def read_weights_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The state dict in a local file (see :func:`open_weights`)."""
    return open_weights(path).state


def state_dict_of(obj: Any, where: str = "weights") -> dict[str, torch.Tensor]:
    """The tensors of a loaded object: a cnnkit checkpoint (``model``), ``state_dict`` or a plain state dict."""
    if isinstance(obj, nn.Module):
        obj = obj.state_dict()
    if isinstance(obj, Mapping):
        for key in ("model", "state_dict", "model_state_dict"):
            inner = obj.get(key)
            if isinstance(inner, Mapping) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
                return dict(inner)
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return dict(obj)
    raise UserError(f"{where} holds no state dict: expected a cnnkit checkpoint (a dict with a 'model' key), "
                    f"a dict of tensors (.pt/.pth) or a .safetensors file; got {type(obj).__name__}"
                    + (f" with keys {', '.join(map(str, list(obj)[:_SHOW]))}" if isinstance(obj, Mapping) else ""))


# --------------------------------------------------------------------------- key mapping


def head_prefix(model: nn.Module) -> str | None:
    """``'head.'`` for a Classifier, ``'dense3.'`` for a layer list; None when the model has no head."""
    get = getattr(model, "get_classifier", None)
    if get is None:
        return None
    try:
        clf = get()
    except Exception:
        return None
    if isinstance(clf, nn.Identity):
        return None
    for name, m in model.named_modules():
        if m is clf and name:
            return name + "."
    return None


def _strip_prefixes(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    for prefix in ("module.", "_orig_mod."):
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def map_torchvision_keys(state: dict[str, torch.Tensor], model: nn.Module,
                         notes: list[str] | None = None) -> dict[str, torch.Tensor]:
    """Map a torchvision network's state dict into ``Classifier(body, head)`` keys.

    ``k -> body.k`` for the keys the body has; the one remaining module with a
    weight and bias (torchvision's last Linear) -> ``head``; keys of modules
    the body leaves out (``aux1``, ``AuxLogits``) are dropped. Anything else is
    kept as is, to be reported as unexpected.
    """
    body = getattr(model, "body", None)
    if body is None or not hasattr(model, "head"):
        return state
    if any(k.startswith(("body.", "head.")) for k in state):
        return state  # already cnnkit's keys
    target = model.state_dict()
    out: dict[str, torch.Tensor] = {}
    rest: dict[str, torch.Tensor] = {}
    dropped: set[str] = set()
    for k, v in state.items():
        if f"body.{k}" in target:
            out[f"body.{k}"] = v
            continue
        top = k.split(".", 1)[0]
        if hasattr(body, top) and getattr(body, top) is None:
            dropped.add(top)
            continue
        rest[k] = v
    prefixes = sorted({k.rsplit(".", 1)[0] for k in rest})
    head_like = [p for p in prefixes if isinstance(rest.get(f"{p}.weight"), torch.Tensor)
                 and rest[f"{p}.weight"].ndim == 2]
    if len(head_like) >= 1:
        hp = head_like[-1] if len(head_like) == 1 else _last_in_order(head_like, list(state))
        for k in list(rest):
            if k.startswith(hp + ".") and k.count(".") == hp.count(".") + 1:
                out["head." + k[len(hp) + 1:]] = rest.pop(k)
    out.update(rest)
    if dropped and notes is not None:
        notes.append(f"dropped the weights of {', '.join(sorted(dropped))} (auxiliary parts cnnkit's "
                     f"{type(body).__name__} leaves out)")
    return out


def _last_in_order(prefixes: list[str], keys: list[str]) -> str:
    last = {p: max(i for i, k in enumerate(keys) if k.startswith(p + ".")) for p in prefixes}
    return max(prefixes, key=lambda p: last[p])


def _shape(t: torch.Tensor) -> str:
    return "x".join(map(str, t.shape)) or "scalar"


@dataclass
class LoadReport:
    """What :func:`load_state` did."""

    loaded: list[str] = field(default_factory=list)
    skipped_head: list[str] = field(default_factory=list)
    adapted: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def load_state(model: nn.Module, state: Mapping[str, torch.Tensor], *, source: str = "weights",
               skip_head: bool = False, hint: str = "") -> LoadReport:
    """Copy ``state`` into ``model`` after mapping keys; strict except for the head.

    ``skip_head`` leaves the head as it is (fine-tuning gives it new classes).
    Otherwise a head of another class count is skipped with a note.
    """
    report = LoadReport()
    state = _strip_prefixes({str(k): v for k, v in state.items()})
    state = map_torchvision_keys(state, model, report.notes)
    target = model.state_dict()
    hp = head_prefix(model)
    is_head = (lambda k: hp is not None and k.startswith(hp))
    take: dict[str, torch.Tensor] = {}
    unexpected, mismatched = [], []
    for k, v in state.items():
        if k not in target:
            unexpected.append(k)
            continue
        if skip_head and is_head(k):
            report.skipped_head.append(k)
            continue
        t = target[k]
        if tuple(v.shape) != tuple(t.shape):
            if is_head(k):
                report.skipped_head.append(k)
                continue
            adapted = _adapt_input_conv(v, t)
            if adapted is not None:
                take[k] = adapted
                report.adapted.append(k)
                continue
            mismatched.append(f"{k} (file {_shape(v)}, model {_shape(t)})")
            continue
        take[k] = v
    missing = [k for k in target if k not in state and not k.endswith("num_batches_tracked")
               and not is_head(k)]
    if unexpected or mismatched or missing:
        parts = []
        for label, keys in (("shapes that do not fit", mismatched), ("missing from the file", missing),
                            ("not in the model", unexpected)):
            if keys:
                more = f" and {len(keys) - _SHOW} more" if len(keys) > _SHOW else ""
                parts.append(f"{len(keys)} {label}: {', '.join(keys[:_SHOW])}{more}")
        raise UserError(f"the weights in {source} do not fit this model ({type(model).__name__}): "
                        + "; ".join(parts) + (f". {hint}" if hint else ""))
    missing_head = [k for k in target if is_head(k) and k not in state]
    model.load_state_dict(take, strict=False)
    report.loaded = list(take)
    if report.skipped_head and not skip_head:
        t = target[report.skipped_head[0]]
        v = state[report.skipped_head[0]]
        report.notes.append(f"the head in {source} has {v.shape[0]} outputs but the model has {t.shape[0]}; "
                            f"the head was not loaded and stays freshly initialised")
    elif missing_head and not skip_head:
        report.notes.append(f"{source} has no head weights; the head stays freshly initialised")
    if report.adapted:
        how = "summed" if target[report.adapted[0]].shape[1] == 1 else "spread"
        report.notes.append(f"{how} {', '.join(report.adapted)} over its input channels for a "
                            f"{target[report.adapted[0]].shape[1]}-channel input")
    return report


def _adapt_input_conv(v: torch.Tensor, t: torch.Tensor) -> torch.Tensor | None:
    """A 3-channel first convolution for a 1-channel model: the sum over colour channels; a 1-channel one
    for a 3-channel model: the same filter on each colour, divided by 3 (a grey image gives the same output)."""
    if v.ndim == 4 and t.ndim == 4 and v.shape[0] == t.shape[0] and v.shape[2:] == t.shape[2:]:
        if v.shape[1] == 3 and t.shape[1] == 1:
            return v.sum(dim=1, keepdim=True)
        if v.shape[1] == 1 and t.shape[1] == 3:
            return v.repeat(1, 3, 1, 1) / 3
    return None


# --------------------------------------------------------------------------- the config hook


def without_weights(cfg: "ModelConfig") -> "ModelConfig":
    """A copy of a model section with ``pretrained``, ``weights``, ``backbone_weights`` and ``embeddings``
    unset, its backbone's too (for rebuilding a trained run, whose own checkpoint holds every weight)."""
    backbone = without_weights(cfg.backbone) if cfg.backbone is not None else None
    return cfg.model_copy(update={"pretrained": None, "weights": None, "backbone_weights": None, "backbone": backbone,
                                  "embeddings": None})


def normalisation_for(cfg: "ModelConfig", channels: int) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """The mean/std that ``cfg.pretrained``'s weights expect, for 3-channel data; None otherwise."""
    if cfg.pretrained is None or cfg.name is None or channels != 3:
        return None
    spec = weight_spec(cfg.name, str(cfg.pretrained))
    return spec.mean, spec.std


def check_pretrained_fits(model: nn.Module, spec: WeightSpec) -> None:
    """Compare shapes with torchvision's network (built on the meta device) before anything is downloaded."""
    import torchvision

    extra = {"init_weights": False} if spec.builder_name in _TRANSFORM_INPUT else {}
    try:
        with torch.device("meta"):
            net = torchvision.models.get_model(spec.builder_name, weights=None, num_classes=spec.num_classes, **extra)
    except (NotImplementedError, RuntimeError):  # RegNet reads tensor values while it builds: build it for real
        net = torchvision.models.get_model(spec.builder_name, weights=None, num_classes=spec.num_classes, **extra)
    shapes = {k: torch.empty(v.shape, device="meta") for k, v in net.state_dict().items()}
    _check_shapes(model, shapes, spec)


def _check_shapes(model: nn.Module, state: dict[str, torch.Tensor], spec: WeightSpec) -> None:
    notes: list[str] = []
    mapped = map_torchvision_keys(_strip_prefixes(state), model, notes)
    target = model.state_dict()
    hp = head_prefix(model) or "\0"
    bad = [f"{k} (weights {_shape(v)}, model {_shape(target[k])})" for k, v in mapped.items()
           if k in target and not k.startswith(hp) and tuple(v.shape) != tuple(target[k].shape)
           and _adapt_input_conv(torch.empty(v.shape, device="meta"), torch.empty(target[k].shape, device="meta"))
           is None]
    extra = [f"{k} (not in the model)" for k in mapped if k not in target]
    if bad or extra:
        keys = bad + extra
        more = f" and {len(keys) - _SHOW} more" if len(keys) > _SHOW else ""
        raise UserError(f"torchvision's {spec.weights_name} weights do not fit this {spec.name}: "
                        f"{', '.join(keys[:_SHOW])}{more}. {_pretrained_hint(spec)}")


def _pretrained_hint(spec: WeightSpec) -> str:
    return (f"ImageNet weights need the ImageNet-shaped network: inputs of {spec.input_size} px (set "
            f"data.image_size={spec.input_size}; the small-input stem/head is used under 64 px, or force it off "
            f"with model.options.cifar_stem=false / cifar_head=false)")


def load_weights(model: nn.Module, cfg: "ModelConfig", *, skip_head: bool = False, progress: bool = True,
                 log=None) -> LoadReport | None:
    """Load ``cfg.pretrained`` or ``cfg.weights`` into ``model`` (built from ``cfg``); None when neither is set.

    Notes (skipped head, dropped auxiliary weights) are printed to stderr, or
    passed to ``log``.
    """
    if cfg.pretrained is not None and cfg.weights is not None:
        raise UserError(f"set model.pretrained ({cfg.pretrained!r}) or model.weights ({cfg.weights!r}), not both")
    if cfg.pretrained is None and cfg.weights is None:
        return None
    say = log or (lambda s: print(s, file=sys.stderr))
    if cfg.weights is not None:
        state = read_weights_file(cfg.weights)
        report = load_state(model, state, source=repr(str(cfg.weights)), skip_head=skip_head)
    else:
        if cfg.name is None:
            raise UserError("model.pretrained needs a registered model (model.name), not a layer list; "
                            "load a layer list's weights with model.weights=PATH")
        spec = weight_spec(cfg.name, str(cfg.pretrained))
        check_pretrained_fits(model, spec)
        state = download_state_dict(spec, progress=progress)
        report = load_state(model, state, source=f"torchvision's {spec.weights_name}", skip_head=skip_head,
                            hint=_pretrained_hint(spec))
    for note in report.notes:
        say(f"note: {note}")
    return report
