"""Frame prediction (the course's VII, recurrent CNNs): from T frames of a clip, predict the K after them.

A batch is ``(x float32 (N, T, C, H, W), y float32 (N, K, C, H, W))``, pixel values in [0, 1] (the
``moving_mnist`` dataset gives them so). A model maps ``x`` to ``(N, K, C, H, W)`` in [0, 1]
(``convlstm_frames``, ``convgru_frames``: Shi et al. 2015's encoder-forecaster).

**Loss.** ``train.loss``: ``mse`` (the default for this task), ``mae``, or ``bce``: per-pixel binary
cross-entropy, Shi et al.'s choice for Moving MNIST, computed on the model's ``forward_logits`` (stable,
and allowed under autocast).

**Metrics**, over every predicted pixel of the validation clips, each next to what a model must beat:

* ``mse``: the mean squared error; ``psnr`` = ``10 log10(1 / mse)`` dB, from that pooled MSE (so a
  perfectly predicted empty frame does not make it infinite); ``ssim``: the mean structural similarity
  of the predicted frames to the true ones (torchmetrics, Gaussian window);
* ``baseline_mse`` / ``baseline_psnr``: copying the last input frame K times;
* ``blank_mse``: predicting empty (black) frames. On Moving MNIST the digits move about their stroke
  width per frame, so copying the last frame is barely better than a blank one: a model has to do
  clearly better than both.

``final.json`` holds each as ``val_<name>`` and, unprefixed, ``mse``, ``psnr``, ``ssim``,
``baseline_mse``; ``cnnkit eval`` adds the MSE of each step ahead (``mse_per_step``, next to the
baseline's). ``cnnkit predict RUN clip.npy [--save DIR]`` continues clip files
(:mod:`cnnkit.data.video.files`) and, with ``--save``, draws inputs, predictions and (when the file
holds them) the true frames as one PNG per clip.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MetricCollection

from cnnkit.errors import UserError
from cnnkit.tasks.base import Task, fmt_metric, register_task
from cnnkit.tasks.image_metrics import ssim
from cnnkit.tasks.metrics import Ratio
from cnnkit.tasks.video import clip_name, load_clips, model_device, refuse_augment

LOSSES = ("mse", "mae", "bce")


def psnr_of(mse: float | None) -> float | None:
    """PSNR in dB of pixel values in [0, 1] with this mean squared error (inf for 0)."""
    if mse is None:
        return None
    return math.inf if mse <= 0 else 10.0 * math.log10(1.0 / mse)


def copy_last(x: torch.Tensor, future: int) -> torch.Tensor:
    """The copy-the-last-frame forecast: ``x (N, T, C, H, W)`` -> its last frame K times ``(N, K, C, H, W)``."""
    return x[:, -1:].expand(-1, future, *x.shape[2:])


def stack_pairs(items: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = zip(*items)
    return torch.stack([torch.as_tensor(x, dtype=torch.float32) for x in xs]), \
        torch.stack([torch.as_tensor(y, dtype=torch.float32) for y in ys])


@register_task("frames", "the next frames of a clip (Moving MNIST): ConvLSTM / ConvGRU encoder-forecasters; MSE, "
                         "PSNR, SSIM next to copying the last frame")
class FramesTask(Task):
    best_metric = "val_mse"
    best_mode = "min"
    metric_names = ("mse", "psnr", "ssim", "baseline_mse", "baseline_psnr", "blank_mse")
    unit = "clips"

    def __init__(self, cfg, classes: list[str], input_shape: tuple[int, ...] | None = None) -> None:
        super().__init__(cfg, classes, input_shape)
        refuse_augment(cfg, "frames")
        if cfg.train.loss not in LOSSES:
            raise UserError(f"train.loss={cfg.train.loss} is not a frame-prediction loss; task frames takes "
                            f"{', '.join(LOSSES)} (default mse)")
        if cfg.regularization.label_smoothing:
            raise UserError(f"regularization.label_smoothing={cfg.regularization.label_smoothing} smooths class "
                            f"labels; task frames predicts pixels: set it to 0")
        self.loss_name = cfg.train.loss
        self.collate = stack_pairs
        self.future: int | None = None

    def attach(self, extra: dict[str, Any]) -> None:
        self.future = (extra or {}).get("future")

    def check_model(self, model: nn.Module) -> None:
        k = getattr(model, "future", None)
        if self.future is not None and k is not None and k != self.future:
            raise UserError(f"model option future={k} predicts {k} frames but the data asks for data.future="
                            f"{self.future}; set model.options.future={self.future} (or data.future={k})")

    # -- training

    def make_loss(self) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        if self.loss_name == "mae":
            return F.l1_loss
        return F.mse_loss  # for bce too: what validation's loss reports (training uses the logits)

    def training_step(self, model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor,
                      loss_fn) -> tuple[Any, torch.Tensor]:
        if self.loss_name != "bce":
            return super().training_step(model, inputs, targets, loss_fn)
        from cnnkit.models.video.frames import EncoderForecaster, emitting_logits

        if not any(isinstance(m, EncoderForecaster) for m in model.modules()):
            raise UserError("train.loss=bce is computed on an encoder-forecaster's logits (convlstm_frames, "
                            "convgru_frames); use train.loss=mse for this model")
        with emitting_logits(model):
            logits = model(inputs)
        return torch.sigmoid(logits.detach()), F.binary_cross_entropy_with_logits(logits.float(), targets)

    def batch_len(self, targets: Any) -> int:
        return len(targets)

    # -- evaluation

    def metrics(self) -> MetricCollection:
        return MetricCollection({k: Ratio() for k in ("loss", "mse", "ssim", "baseline_mse", "blank_mse")})

    def update_metrics(self, metrics: MetricCollection, outputs: torch.Tensor, targets: torch.Tensor,
                       loss: torch.Tensor, inputs: Any = None) -> None:
        """The batch's loss, MSE and SSIM, and the MSE of its two baselines: copying the last input frame
        (``inputs``) and an empty frame."""
        _check_output(outputs, targets)
        n, pixels = len(targets), targets.numel()
        metrics["loss"].update(loss.detach().double() * n, n)
        metrics["mse"].update((outputs - targets).double().pow(2).sum(), pixels)
        metrics["baseline_mse"].update((copy_last(inputs, targets.shape[1]) - targets).double().pow(2).sum(), pixels)
        metrics["blank_mse"].update(targets.double().pow(2).sum(), pixels)
        frames = outputs.reshape(-1, *outputs.shape[2:])
        metrics["ssim"].update(ssim(frames.clamp(0, 1), targets.reshape(-1, *targets.shape[2:]),
                                    reduction="none").double().sum(), len(frames))

    def evaluate(self, model: nn.Module, loader, device: torch.device, precision: str = "fp32",
                 loss_fn: Callable | None = None) -> dict[str, float]:
        """The shared loop's figures, with PSNR from the pooled MSE (a perfectly predicted empty frame would
        otherwise be infinite)."""
        result: dict[str, Any] = super().evaluate(model, loader, device, precision, loss_fn)
        result["psnr"] = psnr_of(result["mse"])
        result["baseline_psnr"] = psnr_of(result["baseline_mse"])
        return result

    @torch.no_grad()
    def eval_report(self, model: nn.Module, loader, device: torch.device) -> dict[str, Any]:
        """The MSE of each step ahead (1..K), the model's and copying the last frame's."""
        was_training = model.training
        model.eval()
        sq = base = None
        count = 0
        for x, y in loader:
            if len(y) == 0:
                continue
            out = model(x).float()
            per = (out - y).double().pow(2).flatten(2).sum(2).sum(0)
            per_base = (copy_last(x, y.shape[1]) - y).double().pow(2).flatten(2).sum(2).sum(0)
            sq = per if sq is None else sq + per
            base = per_base if base is None else base + per_base
            count += len(y) * y[0, 0].numel()
        model.train(was_training)
        if sq is None:
            return {}
        return {"mse_per_step": [round(float(v) / count, 6) for v in sq],
                "baseline_mse_per_step": [round(float(v) / count, 6) for v in base]}

    def epoch_line(self, m: dict[str, Any]) -> str:
        f = fmt_metric
        return (f"train_loss {f(m.get('train_loss'))}  val_mse {f(m.get('val_mse'))} (copy-last "
                f"{f(m.get('val_baseline_mse'))})  val_psnr {f(m.get('val_psnr'))}  val_ssim {f(m.get('val_ssim'))}")

    # -- using a trained model

    @torch.no_grad()
    def predict_paths(self, model: nn.Module, paths: Sequence[str], save: str | None = None, **_: Any) -> list[dict]:
        """``cnnkit predict`` for clip files: the K frames after each clip's first T (T: the run's). A clip
        that holds more frames is scored on them (``mse``, ``psnr``, next to copying the last frame);
        ``save``: a folder to draw each clip's inputs, predictions and truth into (one PNG per clip) and
        to keep the predicted frames (``.npy``, uint8)."""
        t = int(self.input_shape[0]) if self.input_shape else 0
        clips = load_clips(paths, self.input_shape)
        if save is not None:
            folder = Path(save)
            if not folder.is_dir():
                raise UserError(f"--save {save!r}: folder does not exist" if not folder.exists() else
                                f"--save {save!r} is not a folder")
        device = model_device(model)
        was_training = model.training
        model.eval()
        out = []
        for name, clip in clips:
            x = torch.from_numpy(clip[:t]).float().div_(255.0)[None].to(device)
            pred = model(x).float().clamp_(0, 1)[0].cpu()
            k = pred.shape[0]
            result: dict[str, Any] = {"clip": name, "frames_in": t, "future": k}
            truth = torch.from_numpy(clip[t:t + k]).float().div_(255.0)
            if len(truth):
                n = len(truth)
                mse = float((pred[:n] - truth).double().pow(2).mean())
                base = float((x[0, -1:].cpu().expand(n, *truth.shape[1:]) - truth).double().pow(2).mean())
                result.update({"truth_frames": n, "mse": mse, "psnr": psnr_of(mse), "baseline_mse": base,
                               "baseline_psnr": psnr_of(base)})
            if save is not None:
                stem = Path(save) / f"{clip_name(name)}_frames"
                result["saved"] = str(save_strip(stem.with_suffix(".png"), x[0].cpu(), pred, truth))
                pred_u8 = (pred * 255.0).round().to(torch.uint8).numpy()
                from cnnkit.atomic import atomic_write

                atomic_write(stem.with_suffix(".npy"), lambda f: np.save(f, pred_u8))
                result["frames_file"] = str(stem.with_suffix(".npy"))
            out.append(result)
        model.train(was_training)
        return out


def save_strip(path: Path, inputs: torch.Tensor, pred: torch.Tensor, truth: torch.Tensor) -> Path:
    """One PNG: the input frames on the first row, the predicted ones on the second, the true ones (if
    any) on the third; frames ``(T, C, H, W)`` in [0, 1]. Written atomically."""
    from torchvision.utils import make_grid, save_image

    from cnnkit.atomic import atomic_write

    cols = max(len(inputs), len(pred))
    rows = [inputs, pred] + ([truth] if len(truth) else [])
    blank = torch.zeros_like(inputs[:1])
    grid = torch.cat([torch.cat([r, blank.expand(cols - len(r), *r.shape[1:])]) if len(r) < cols else r for r in rows])
    image = make_grid(grid, nrow=cols, padding=2, pad_value=0.5)
    atomic_write(path, lambda f: save_image(image, f, format="png"))
    return path


def _check_output(out: torch.Tensor, y: torch.Tensor) -> None:
    if out.shape != y.shape:
        raise UserError(f"the model predicts frames of shape {tuple(out.shape[1:])} but the data's targets are "
                        f"{tuple(y.shape[1:])} (data.future frames); set the model's future option to data.future")
