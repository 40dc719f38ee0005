"""``cnnkit compress``: make a trained run smaller or better at its size, and measure what it cost.

Three methods, one per call, each writing a NEW run folder next to the source run
(``<source name>-pruned50``, ``-int8``, ``-distilled``) and printing a before/after
table of held-out accuracy, non-zero parameters, the size of the weights file and
CPU latency per image at batch 1:

- **pruning** (``--prune 0.5``): global magnitude pruning of all conv and dense
  weights together (``torch.nn.utils.prune.global_unstructured`` with
  ``L1Unstructured``), fine-tuning for ``--epochs`` (default 2) with the run's own
  training config through the ordinary :class:`~cnnkit.train.trainer.Trainer` while
  the masks keep pruned weights at zero, then ``prune.remove`` to make it permanent.
  The weights file stays dense (same bytes); the zeros only show in
  ``nonzero_params`` and in how well the file compresses (``gzip_bytes``).
- **int8 quantisation** (``--quantize int8``): post-training static quantisation on
  CPU, calibrated on ``--calibration-batches`` (default 32) training batches.
- **knowledge distillation** (``--distill-from TEACHER_RUN``): trains the student
  that RUN_DIR's config describes from scratch (fresh init, same seed) with
  ``train.distill.teacher=TEACHER_RUN`` (Hinton et al.: soft targets at temperature
  T, weight alpha, see :func:`cnnkit.train.trainer.distill_loss`) and compares it
  with RUN_DIR itself, the same student trained alone. The same thing works from
  ``cnnkit train cfg.yaml train.distill.teacher=runs/teacher``.

Which quantisation API, and why
-------------------------------
torch 2.14 no longer ships PT2E quantisation (``torch.ao.quantization.quantize_pt2e``
and ``X86InductorQuantizer`` moved to the separate ``torchao`` package, which is not
a cnnkit dependency), and PT2E only gives real int8 kernels after lowering through
inductor. The eager-mode API that torch still ships, ``torch.ao.quantization``
(marked deprecated), gives true int8 weights and int8 CPU kernels (x86/fbgemm, or
qnnpack on ARM) with no extra dependency, so that is what is used here:
``QuantWrapper`` (QuantStub/DeQuantStub around the net), fusion of conv(+bn)+relu and
dense+relu pairs by name, ``prepare``, calibration, ``convert``. Its deprecation
warnings are silenced inside this module only. Layers with no quantised kernel
(residual blocks, L2 pooling, global max pooling, maxout, a lone BatchNorm1d, a conv
with asymmetric 'same' padding) run in float inside a DeQuant/Quant "float island".
Only layer-list networks (:class:`~cnnkit.models.spec.DeclarativeNet`, which
includes ``lenet5``) are supported.

What the int8 folder holds, and eval/predict
--------------------------------------------
``config.yaml``, ``meta.json``, ``final.json``, ``weights.pt`` (the int8
``state_dict``, the file whose size is reported) and ``checkpoints/int8.pt``
(``{"model": int8 state_dict, "config", "meta", "quantization"}``). There is no
``checkpoints/best.pt``, so ``cnnkit eval``/``predict`` do not load it yet; use
:func:`load_quantized` (it rebuilds the float net from the config, applies the same
fusion and conversion, and loads the int8 state). Pruned and distilled folders are
ordinary run folders (``checkpoints/best.pt``): eval, predict and export work.

Example::

    result = compress("runs/20261130-101500-layers-mnist5k-1a2b3c", prune=0.5)
    result.run_dir, result.final["val_accuracy"], result.final["before"]["val_accuracy"]
"""

from __future__ import annotations

import contextlib
import copy
import io
import statistics
import time
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from cnnkit.errors import UserError
from cnnkit.runs import RunFolder, load_checkpoint

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch import nn

    from cnnkit.config import Config
    from cnnkit.data import DataBundle

__all__ = ["CompressResult", "compress", "prune_model", "quantize_int8", "load_quantized", "count_params",
           "weights_size_bytes", "measure_latency"]

DEFAULT_FINETUNE_EPOCHS = 2
DEFAULT_CALIBRATION_BATCHES = 32


@dataclass
class CompressResult:
    run_dir: Path
    final: dict[str, Any]


# --------------------------------------------------------------------------- measurements

def weights_size_bytes(state_dict: dict[str, Any]) -> int:
    """Bytes of ``torch.save(state_dict)``: weights only, the way both sides of the table are measured."""
    import torch

    buf = io.BytesIO()
    torch.save(state_dict, buf)
    return buf.getbuffer().nbytes


def _saved_bytes(state_dict: dict[str, Any]) -> bytes:
    import torch

    buf = io.BytesIO()
    torch.save(state_dict, buf)
    return buf.getvalue()


def _is_quantized_module(m: "nn.Module") -> bool:
    return type(m).__module__.startswith("torch.ao.nn.quantized") or \
        type(m).__module__.startswith("torch.ao.nn.intrinsic.quantized")


def count_params(model: "nn.Module") -> tuple[int, int]:
    """(total, non-zero) weights and biases; int8 weights count as their dequantised values."""
    total = nonzero = 0
    for m in model.modules():
        if _is_quantized_module(m) and callable(getattr(m, "weight", None)):
            tensors = [m.weight(), m.bias() if callable(getattr(m, "bias", None)) else None]
            tensors = [t.dequantize() if t is not None and t.is_quantized else t for t in tensors]
        else:
            tensors = list(m.parameters(recurse=False))
        for t in tensors:
            if t is None:
                continue
            total += t.numel()
            nonzero += int((t.detach() != 0).sum())
    return total, nonzero


def measure_latency(model: "nn.Module", input_shape: tuple[int, ...], *, threads: int = 1, warmup: int = 20,
                    runs: int = 200, max_seconds: float = 5.0) -> dict[str, Any]:
    """Median CPU milliseconds per image at batch 1, after warm-up, with ``threads`` torch threads, and
    the spread: ``latency_q1_ms`` / ``latency_q3_ms``, the quartiles of the timed runs."""
    import torch

    model = model.cpu().eval()
    x = torch.randn(1, *input_shape)
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    times: list[float] = []
    try:
        with torch.inference_mode():
            for _ in range(warmup):
                model(x)
            start = time.perf_counter()
            while len(times) < runs and (len(times) < 20 or time.perf_counter() - start < max_seconds):
                t0 = time.perf_counter()
                model(x)
                times.append(time.perf_counter() - t0)
    finally:
        torch.set_num_threads(old)
    q1, _, q3 = statistics.quantiles(times, n=4) if len(times) > 1 else (times[0],) * 3
    return {"latency_ms": round(statistics.median(times) * 1e3, 4), "latency_q1_ms": round(q1 * 1e3, 4),
            "latency_q3_ms": round(q3 * 1e3, 4), "runs": len(times), "threads": threads, "batch": 1}


def latency_change(before: dict[str, Any], after: dict[str, Any]) -> str:
    """``after / before`` of the median latencies, or "no measurable change" when each median lies
    within the other's interquartile range (two runs of one network differ by that much)."""
    a, b = before["latency_ms"], after["latency_ms"]
    within = (before.get("latency_q1_ms", a) <= b <= before.get("latency_q3_ms", a)
              or after.get("latency_q1_ms", b) <= a <= after.get("latency_q3_ms", b))
    return "no measurable change" if within else _ratio(a, b)


def _val_loader(cfg: "Config", bundle: "DataBundle"):
    import torch

    from cnnkit.data.loaders import make_loader

    return make_loader(bundle.val, batch_size=cfg.data.eval_batch_size or max(cfg.data.batch_size, 256),
                       mean=bundle.mean, std=bundle.std, shuffle=False, seed=0, device=torch.device("cpu"),
                       augment=None, num_workers=cfg.data.num_workers)


def measure(model: "nn.Module", cfg: "Config", bundle: "DataBundle", input_shape: tuple[int, ...], *,
            threads: int = 1, loader=None) -> dict[str, Any]:
    """Held-out accuracy (CPU), parameters, weights-file size and latency of ``model``."""
    import torch

    from cnnkit.tasks import create_task

    model = model.cpu().eval()
    loader = loader or _val_loader(cfg, bundle)
    res = create_task(cfg, bundle.classes).evaluate(model, loader, torch.device("cpu"), "fp32")
    total, nonzero = count_params(model)
    blob = _saved_bytes(model.state_dict())
    lat = measure_latency(model, input_shape, threads=threads)
    return {"val_accuracy": res["accuracy"], "val_loss": res["loss"], "n_val": res["n"],
            "nonzero_params": nonzero, "params_total": total, "size_bytes": len(blob),
            "gzip_bytes": len(zlib.compress(blob, 6)), "latency_ms": lat["latency_ms"],
            "latency": lat}


# --------------------------------------------------------------------------- pruning

def _prunable(model: "nn.Module") -> list[tuple["nn.Module", str]]:
    from torch import nn

    return [(m, "weight") for m in model.modules()
            if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)) and m.weight is not None]


def prune_model(model: "nn.Module", sparsity: float) -> list[tuple["nn.Module", str]]:
    """Global L1 magnitude pruning of all conv and dense weights, in place, masks kept (reparametrised).

    Exactly ``round(sparsity * n)`` of the ``n`` weights get a zero mask. Call
    :func:`make_pruning_permanent` after fine-tuning.
    """
    from torch.nn.utils import prune

    if not 0.0 < sparsity < 1.0:
        raise UserError(f"--prune takes a sparsity strictly between 0 and 1 (e.g. 0.5), got {sparsity}")
    params = _prunable(model)
    if not params:
        raise UserError("the model has no conv or dense weights to prune")
    prune.global_unstructured(params, pruning_method=prune.L1Unstructured, amount=float(sparsity))
    return params


def make_pruning_permanent(model: "nn.Module") -> None:
    """Fold every pruning mask into its weight (``prune.remove``): plain parameters with zeros remain."""
    from torch.nn.utils import prune

    for m in model.modules():
        for name in [n[:-len("_orig")] for n, _ in m.named_parameters(recurse=False) if n.endswith("_orig")]:
            if prune.is_pruned(m) and hasattr(m, f"{name}_mask"):
                prune.remove(m, name)


def weight_sparsity(model: "nn.Module") -> float:
    """The fraction of zeros over all conv and dense weights."""
    params = _prunable(model)
    n = sum(m.weight.numel() for m, _ in params)
    zeros = sum(int((m.weight == 0).sum()) for m, _ in params)
    return zeros / max(n, 1)


# --------------------------------------------------------------------------- int8

@contextlib.contextmanager
def _quiet_quantization():
    """torch.ao.quantization's deprecation and observer warnings, silenced here only."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", message=".*reduce_range will be deprecated.*")
        warnings.filterwarnings("ignore", message=".*quantized tensor creation functions.*")
        warnings.filterwarnings("ignore", message=".*must run observer before calling calculate_qparams.*")
        warnings.filterwarnings("ignore", message=".*torch.ao.quantization is deprecated.*")
        warnings.filterwarnings("ignore", message=".*TypedStorage is deprecated.*")  # loading int8 tensors
        yield


def _engine() -> str:
    import torch

    engines = torch.backends.quantized.supported_engines
    for name in ("x86", "fbgemm", "qnnpack"):
        if name in engines:
            return name
    raise UserError(f"this torch build has no int8 CPU backend (supported engines: {engines})")


def _float_island(module: "nn.Module") -> "nn.Module":
    """Run ``module`` in float between a DeQuantStub and a QuantStub."""
    from torch import nn
    import torch.ao.quantization as tq

    class FloatIsland(nn.Module):
        def __init__(self, body: nn.Module) -> None:
            super().__init__()
            self.dequant = tq.DeQuantStub()
            self.body = body
            self.body.qconfig = None  # stays float
            self.quant = tq.QuantStub()

        def forward(self, x):
            return self.quant(self.body(self.dequant(x)))

    return FloatIsland(module)


def _layer_inputs(model: "nn.Module", input_shape: tuple[int, ...]) -> dict[int, tuple[int, ...]]:
    """Input shape seen by every module (by id) on one forward pass."""
    import torch

    shapes: dict[int, tuple[int, ...]] = {}
    def record(mod, args) -> None:
        shapes.setdefault(id(mod), tuple(args[0].shape))

    hooks = [m.register_forward_pre_hook(record) for m in model.modules()]
    try:
        with torch.no_grad():
            model(torch.zeros(1, *input_shape))
    finally:
        for h in hooks:
            h.remove()
    return shapes


def _quantizable_net(model: "nn.Module", input_shape: tuple[int, ...]) -> "nn.Module":
    """A copy of a layer-list net, made ready for eager int8: plain convs, fused pairs, float islands,
    wrapped in QuantStub/DeQuantStub. Not yet prepared."""
    import torch.ao.quantization as tq
    from torch import nn

    from cnnkit.models.spec import DeclarativeNet
    from cnnkit.nn.layers import Conv2d, GlobalAvgPool, same_padding

    if not isinstance(model, DeclarativeNet):
        raise UserError(f"int8 quantisation supports layer-list networks (model.layers, or lenet5); "
                        f"this run's model is a {type(model).__name__}")
    net = copy.deepcopy(model).cpu().eval()
    shapes = _layer_inputs(net, input_shape)

    # cnnkit's Conv2d (a subclass, which eager mode does not map) -> nn.Conv2d where the padding is symmetric.
    for name, m in list(net.named_children()):
        if type(m) is Conv2d:
            pad = m.padding
            if m.same:
                h, w = shapes[id(m)][-2:]
                ph = same_padding(h, m.kernel_size[0], m.stride[0], m.dilation[0])
                pw = same_padding(w, m.kernel_size[1], m.stride[1], m.dilation[1])
                if ph[0] != ph[1] or pw[0] != pw[1]:
                    continue  # becomes a float island below
                pad = (ph[0], pw[0])
            conv = nn.Conv2d(m.in_channels, m.out_channels, m.kernel_size, m.stride, pad, m.dilation, m.groups,
                             m.bias is not None)
            conv.load_state_dict(m.state_dict())
            setattr(net, name, conv.eval())

    # Fuse conv(+bn)(+relu), bn+relu, dense(+bn1d) and dense+relu runs, by name.
    names = list(net._modules)
    kinds = [type(net._modules[n]) for n in names]
    patterns = [(nn.Conv2d, nn.BatchNorm2d, nn.ReLU), (nn.Conv2d, nn.BatchNorm2d), (nn.Conv2d, nn.ReLU),
                (nn.BatchNorm2d, nn.ReLU), (nn.Linear, nn.BatchNorm1d), (nn.Linear, nn.ReLU)]
    groups, i = [], 0
    while i < len(names):
        for pat in patterns:
            if tuple(kinds[i:i + len(pat)]) == pat:
                groups.append(names[i:i + len(pat)])
                i += len(pat)
                break
        else:
            i += 1
    if groups:
        net = tq.fuse_modules(net, groups)

    # Everything without an int8 kernel runs in float.
    passthrough = (nn.MaxPool2d, nn.AvgPool2d, nn.Flatten, nn.Dropout, nn.Identity, nn.ReLU, nn.Sigmoid,
                   nn.Tanh, nn.ELU, nn.LeakyReLU, nn.BatchNorm2d, nn.Conv2d, nn.Linear, GlobalAvgPool)
    fused_prefix = "torch.ao.nn.intrinsic"
    for name, m in list(net.named_children()):
        if type(m) in passthrough or type(m).__module__.startswith(fused_prefix):
            continue
        setattr(net, name, _float_island(m))
    return tq.QuantWrapper(net)


def _prepare(model: "nn.Module", input_shape: tuple[int, ...]) -> tuple["nn.Module", str]:
    import torch
    import torch.ao.quantization as tq

    engine = _engine()
    torch.backends.quantized.engine = engine
    q = _quantizable_net(model, input_shape)
    q.qconfig = tq.get_default_qconfig(engine)
    tq.prepare(q, inplace=True)
    return q, engine


def quantize_int8(model: "nn.Module", calibration: Callable[[], Any], input_shape: tuple[int, ...]) -> tuple[
        "nn.Module", dict[str, Any]]:
    """Post-training static int8 (eager ``torch.ao.quantization``): prepare, run ``calibration()``
    (an iterable of input batches) through the observers, convert. Returns the int8 model and details."""
    import torch
    import torch.ao.quantization as tq

    with _quiet_quantization():
        q, engine = _prepare(model, input_shape)
        n = 0
        with torch.no_grad():
            for x in calibration():
                q(x.cpu().float())
                n += len(x)
        if n == 0:
            raise UserError("no calibration images: the training split is empty")
        tq.convert(q, inplace=True)
    islands = [n for n, m in q.named_modules() if type(m).__name__ == "FloatIsland"]
    return q.eval(), {"api": "torch.ao.quantization (eager, static post-training)", "engine": engine,
                      "qconfig": f"get_default_qconfig({engine!r})", "calibration_images": n,
                      "float_islands": islands}


def load_quantized(source: str | Path) -> tuple["nn.Module", dict[str, Any]]:
    """Reload an int8 run folder written by ``cnnkit compress --quantize int8`` (or its int8.pt).

    Returns the int8 model (CPU, eval) and ``info`` like :func:`cnnkit.inference.load_run_model`'s.
    """
    import torch.ao.quantization as tq

    from cnnkit.config import validate
    from cnnkit.models import create_model

    p = Path(source)
    path = p if p.is_file() else p / "checkpoints" / "int8.pt"
    if not path.exists():
        raise UserError(f"{str(p)!r} holds no int8 model (checkpoints/int8.pt); make one with "
                        f"'cnnkit compress RUN_DIR --quantize int8'")
    with _quiet_quantization():
        ckpt = load_checkpoint(path)
    if not isinstance(ckpt, dict) or not {"model", "config", "meta", "quantization"} <= set(ckpt):
        raise UserError(f"{str(path)!r} is not a cnnkit int8 checkpoint")
    cfg = validate(ckpt["config"])
    meta = ckpt["meta"]
    shape = tuple(meta["input_shape"])
    from cnnkit.models.weights import without_weights

    model = create_model(without_weights(cfg.model), shape, len(meta["classes"]))
    with _quiet_quantization():
        q, _ = _prepare(model, shape)
        tq.convert(q, inplace=True)
        q.load_state_dict(ckpt["model"])
    return q.eval(), {**meta, "config": cfg, "checkpoint": str(path), "quantization": ckpt["quantization"]}


# --------------------------------------------------------------------------- the command

def _load_source(run_dir: str | Path):
    from cnnkit.data import load_data
    from cnnkit.inference import load_run_model

    src = RunFolder.open(run_dir).path
    model, info = load_run_model(src)
    cfg = info["config"]
    if cfg.task != "classification":
        raise UserError(f"cnnkit compress works on classification runs (it scores accuracy); run {str(src)!r} "
                        f"is a {cfg.task} run. Its weights are in checkpoints/best.pt; for a smaller detector "
                        f"train a smaller model (for example yolo_n instead of yolo_s)")
    bundle = load_data(cfg.data, task=cfg.task)
    if list(bundle.classes) != list(info["classes"]) or list(bundle.input_shape) != list(info["input_shape"]):
        raise UserError(f"the data of run {str(src)!r} ({cfg.data.name}) no longer matches its checkpoint's "
                        f"classes or input shape")
    return src, model.cpu().eval(), info, cfg, bundle


def _scalar_metrics(m: dict[str, Any]) -> dict[str, Any]:
    keys = ("val_accuracy", "nonzero_params", "size_bytes", "latency_ms", "params_total", "gzip_bytes",
            "val_loss", "n_val", "latency")
    return {k: m[k] for k in keys if k in m}


def compress(run_dir: str | Path, *, prune: float | None = None, quantize: str | None = None,
             distill_from: str | Path | None = None, epochs: int | None = None,
             calibration_batches: int | None = None, temperature: float | None = None,
             alpha: float | None = None, threads: int = 1, quiet: bool = False,
             log: Callable[[str], None] | None = None) -> CompressResult:
    """Prune, quantise or distil the run in ``run_dir`` into a new run folder; see the module docstring."""
    chosen = [n for n, v in (("--prune", prune), ("--quantize", quantize), ("--distill-from", distill_from))
              if v is not None]
    if len(chosen) != 1:
        raise UserError("give exactly one of --prune SPARSITY, --quantize int8 or --distill-from TEACHER_RUN"
                        + (f" (got {' and '.join(chosen)})" if chosen else ""))
    if prune is not None and not 0.0 < prune < 1.0:
        raise UserError(f"--prune takes a sparsity strictly between 0 and 1 (e.g. 0.5), got {prune}")
    if quantize is not None and quantize != "int8":
        raise UserError(f"--quantize {quantize!r} is not supported; use int8")
    if epochs is not None and epochs < 1:
        raise UserError(f"--epochs must be at least 1, got {epochs}")
    if epochs is not None and quantize is not None:
        raise UserError("--epochs applies to --prune (fine-tuning) and --distill-from (training), not --quantize")
    if calibration_batches is not None and quantize is None:
        raise UserError("--calibration-batches applies only to --quantize int8")
    if calibration_batches is not None and calibration_batches < 1:
        raise UserError(f"--calibration-batches must be at least 1, got {calibration_batches}")
    if (temperature is not None or alpha is not None) and distill_from is None:
        raise UserError("--temperature and --alpha apply only to --distill-from")
    if temperature is not None and temperature <= 0:
        raise UserError(f"--temperature must be positive, got {temperature}")
    if alpha is not None and not 0.0 <= alpha <= 1.0:
        raise UserError(f"--alpha must be in [0, 1], got {alpha}")
    if threads < 1:
        raise UserError(f"--threads must be at least 1, got {threads}")
    say = (lambda s: None) if quiet else (log or (lambda s: print(s, flush=True)))

    src, model, info, cfg, bundle = _load_source(run_dir)
    if distill_from is not None:
        _check_teacher(Path(distill_from), info)  # before any measuring or training
    shape = tuple(info["input_shape"])
    loader = _val_loader(cfg, bundle)
    say(f"measuring {src.name} ...")
    before = measure(model, cfg, bundle, shape, threads=threads, loader=loader)

    if prune is not None:
        out, after, method, new_model = _do_prune(src, model, cfg, bundle, prune,
                                                  epochs or DEFAULT_FINETUNE_EPOCHS, quiet, log)
    elif quantize is not None:
        out, after, method, new_model = _do_quantize(src, model, info, cfg, bundle,
                                                     calibration_batches or DEFAULT_CALIBRATION_BATCHES)
    else:
        out, after, method, new_model = _do_distill(src, cfg, bundle, info, Path(distill_from), epochs,
                                                    temperature, alpha, quiet, log)
    if after is None:
        after = measure(new_model, cfg, bundle, shape, threads=threads, loader=loader)
    # The weights file in the new folder is the one whose size is reported.
    blob = _saved_bytes(new_model.state_dict())
    (out / "weights.pt").write_bytes(blob)
    after["size_bytes"] = (out / "weights.pt").stat().st_size


    run = RunFolder(out)
    training = None
    if (out / "final.json").exists():  # the trainer's own summary of fine-tuning / distillation
        training = run.read_final()
    final = {**_scalar_metrics(after), "before": {**_scalar_metrics(before), "run_dir": str(src)},
             "method": method, "source_run": str(src),
             "classes": list(info["classes"]), "num_classes": len(info["classes"]),
             "training": training, "history": run.read_metrics() or None}
    final = {k: v for k, v in final.items() if v is not None}
    run.write_final(final)
    say(format_table(final))
    say(str(out))
    return CompressResult(out, final)


def _do_prune(src, model, cfg, bundle, sparsity, epochs, quiet, log):
    from cnnkit.config import validate
    from cnnkit.train.trainer import Trainer

    out = RunFolder.next_to(src, f"pruned{sparsity * 100:g}".replace(".", "p")).path
    net = copy.deepcopy(model)
    prune_model(net, sparsity)
    raw = cfg.to_dict()
    raw["train"]["epochs"] = epochs
    ft_cfg = validate(raw)
    Trainer(ft_cfg, run_dir=out, model=net, bundle=bundle, quiet=quiet, log=log).fit()
    # The trainer's best checkpoint (by its usual rule) still has weight_orig/weight_mask: load it into the
    # reparametrised net, fold the masks in, and rewrite it as a plain checkpoint.
    run = RunFolder(out)
    best = run.load_checkpoint("best")
    net.load_state_dict(best["model"])
    net = net.cpu().eval()
    make_pruning_permanent(net)
    run.save_checkpoint("best", {**best, "model": net.state_dict()})
    (out / "checkpoints" / "last.pt").unlink(missing_ok=True)  # masked, with optimiser state: not resumable
    method = {"name": "prune", "sparsity": sparsity, "scope": "global, all conv and dense weights",
              "criterion": "L1 magnitude (torch.nn.utils.prune.L1Unstructured)", "finetune_epochs": epochs,
              "best_epoch": best.get("epoch"), "weight_sparsity": round(weight_sparsity(net), 6)}
    return out, None, method, net


def _do_quantize(src, model, info, cfg, bundle, batches):
    import torch

    from cnnkit.data.loaders import make_loader

    loader = make_loader(bundle.train, batch_size=cfg.data.batch_size, mean=bundle.mean, std=bundle.std,
                         shuffle=True, seed=cfg.train.seed, device=torch.device("cpu"), augment=None,
                         num_workers=cfg.data.num_workers)
    loader.set_epoch(0)

    def calibration():
        for i, (x, _) in enumerate(loader):
            if i >= batches:
                break
            yield x

    q, details = quantize_int8(model, calibration, tuple(info["input_shape"]))
    out = RunFolder.next_to(src, "int8").path
    meta = {k: v for k, v in info.items() if k not in ("config", "checkpoint", "epoch", "task")}
    run = RunFolder(out)
    run.write_config(cfg.to_dict())
    run.write_meta({**meta, "quantization": details})
    run.save_checkpoint("int8", {"model": q.state_dict(), "config": cfg.to_dict(), "meta": meta,
                                 "quantization": details, "source_checkpoint": info["checkpoint"]})
    method = {"name": "quantize", "dtype": "int8", "calibration_batches": batches, **details,
              "reload": "cnnkit.tools.compress.load_quantized(run_dir); eval/predict do not load int8 folders yet"}
    return out, None, method, q


def _do_distill(src, cfg, bundle, info, teacher, epochs, temperature, alpha, quiet, log):
    from cnnkit.config import validate
    from cnnkit.inference import load_run_model
    from cnnkit.train.trainer import Trainer

    tdir = _check_teacher(teacher, info)
    old = cfg.train.distill
    dist = {"teacher": str(tdir.resolve()),
            "temperature": temperature if temperature is not None else (old.temperature if old else 4.0),
            "alpha": alpha if alpha is not None else (old.alpha if old else 0.7)}
    raw = cfg.to_dict()
    raw["train"]["distill"] = dist
    raw["train"]["epochs"] = epochs or cfg.train.epochs
    new_cfg = validate(raw)
    out = RunFolder.next_to(src, "distilled").path
    Trainer(new_cfg, run_dir=out, bundle=bundle, quiet=quiet, log=log).fit()
    student, _ = load_run_model(out)
    method = {"name": "distill", "teacher": dist["teacher"], "temperature": dist["temperature"],
              "alpha": dist["alpha"], "epochs": new_cfg.train.epochs, "seed": new_cfg.train.seed,
              "teacher_val_accuracy": _teacher_accuracy(tdir),
              "compared_with": "the source run: the same student config trained without a teacher"}
    return out, None, method, student


def _check_teacher(teacher: Path, info: dict[str, Any]) -> Path:
    """The teacher run folder, refused unless it is a float run for the student's classes and input size."""
    from cnnkit.inference import load_run_model

    tdir = Path(teacher)
    if (tdir / "checkpoints" / "int8.pt").exists() and not (tdir / "checkpoints" / "best.pt").exists():
        raise UserError(f"teacher {str(tdir)!r} is an int8 run; distil from a float run")
    tdir = RunFolder.open(tdir).path
    _, tinfo = load_run_model(tdir)
    if list(tinfo["classes"]) != list(info["classes"]):
        raise UserError(f"teacher {str(tdir)!r} predicts classes {tinfo['classes']} but the student's data has "
                        f"{info['classes']}; they must be the same classes in the same order")
    if list(tinfo["input_shape"]) != list(info["input_shape"]):
        raise UserError(f"teacher {str(tdir)!r} takes inputs {tinfo['input_shape']} but the student's data is "
                        f"{info['input_shape']}")
    return tdir


def _teacher_accuracy(tdir: Path) -> float | None:
    try:
        return RunFolder(tdir).read_final().get("val_accuracy")
    except UserError:  # no final.json yet, or not JSON
        return None


def _ratio(a: float, b: float) -> str:
    return f"{b / a:.2f}x" if a else "-"


def format_table(final: dict[str, Any]) -> str:
    """The before/after table printed by ``cnnkit compress``."""
    b, m = final["before"], final["method"]
    if m["name"] == "prune":
        title = f"pruned {m['sparsity']:.0%} of conv/dense weights (global L1), fine-tuned {m['finetune_epochs']} epochs"
    elif m["name"] == "quantize":
        title = f"int8 post-training static quantisation ({m['engine']}), {m['calibration_images']} calibration images"
    else:
        title = f"distilled from {Path(m['teacher']).name} (T={m['temperature']:g}, alpha={m['alpha']:g}, " \
                f"{m['epochs']} epochs) vs the same student trained alone"
    rows = [
        ("held-out accuracy", f"{b['val_accuracy']:.4f}", f"{final['val_accuracy']:.4f}",
         f"{(final['val_accuracy'] - b['val_accuracy']) * 100:+.2f} pt"),
        ("parameters (non-zero)", f"{b['nonzero_params']:,}", f"{final['nonzero_params']:,}",
         _ratio(b["nonzero_params"], final["nonzero_params"])),
        ("weights file (bytes)", f"{b['size_bytes']:,}", f"{final['size_bytes']:,}",
         _ratio(b["size_bytes"], final["size_bytes"])),
        ("weights gzip (bytes)", f"{b['gzip_bytes']:,}", f"{final['gzip_bytes']:,}",
         _ratio(b["gzip_bytes"], final["gzip_bytes"])),
        (f"CPU ms/image (batch 1, {b['latency']['threads']} thr)", f"{b['latency_ms']:.4f}",
         f"{final['latency_ms']:.4f}", latency_change(b["latency"], final["latency"])),
    ]
    w = max(len(r[0]) for r in rows)
    lines = [title, f"{'':<{w}}  {'before':>12}  {'after':>12}  {'change':>12}"]
    lines += [f"{r[0]:<{w}}  {r[1]:>12}  {r[2]:>12}  {r[3]:>12}" for r in rows]
    lat = b["latency"], final["latency"]
    lines.append(f"{'':<{w}}  latency: median of {lat[0]['runs']} / {lat[1]['runs']} timed runs after warm-up; "
                 f"quartiles {lat[0].get('latency_q1_ms', 0):.4f}-{lat[0].get('latency_q3_ms', 0):.4f} / "
                 f"{lat[1].get('latency_q1_ms', 0):.4f}-{lat[1].get('latency_q3_ms', 0):.4f} ms")
    return "\n".join(lines)
