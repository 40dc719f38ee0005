"""Image reconstruction: an autoencoder maps an image to itself (``conv_autoencoder``, ``vae``).

A batch is ``(x (N, C, H, W) float in [0, 1], labels)``: the data layer does not standardise the
pixels of this task (``UNIT_PIXEL_TASKS``), and the labels are ignored. The target is always the
clean image ``x``.

* Loss: ``train.loss`` ``mse`` (the default for this task) or ``bce`` (per pixel, on the
  autoencoder's logits) for ``conv_autoencoder``; ``vae`` trains on its own negative ELBO
  (``model.loss(x, out)``: reconstruction BCE + beta KL).
* Denoising (Vincent et al. 2008): with ``train.denoise: {noise, amount}`` the training inputs are
  corrupted with :func:`~cnnkit.models.generative.corrupt` (fresh noise from the run's RNG each
  step) and so are the validation inputs, with noise seeded by ``train.seed`` so that every
  evaluation (and ``cnnkit eval``) sees the same noisy images.
* Metrics (validation): ``mse``, ``psnr`` (dB, the mean of per-image PSNRs, capped at 100 dB for an
  exact copy) and ``ssim`` of the reconstruction against the clean image; for a denoising run also
  ``noisy_psnr``, the PSNR of the corrupted input itself: the baseline a denoiser must beat.
  ``best.pt`` is the epoch of highest ``val_psnr``.
* ``cnnkit predict RUN a.png --save DIR`` reconstructs the files as given (no noise added) and writes
  ``<stem>_recon.png``: the input and its reconstruction side by side.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MetricCollection

from cnnkit.errors import UserError
from cnnkit.models.generative import corrupt
from cnnkit.nn.runtime import autocast
from cnnkit.tasks.base import Task, fmt_metric, register_task
from cnnkit.tasks.image_metrics import mse as image_mse
from cnnkit.tasks.image_metrics import psnr as image_psnr
from cnnkit.tasks.image_metrics import ssim as image_ssim
from cnnkit.tasks.metrics import Ratio

MODELS = ("conv_autoencoder", "vae")
LOSSES = ("mse", "bce")
PSNR_CAP = 100.0  # dB: an exact copy's PSNR is infinite; a mean needs a number


def unwrap(model: nn.Module) -> nn.Module:
    """The module under ``torch.compile``'s wrapper (its own methods, e.g. a VAE's ``loss``)."""
    return getattr(model, "_orig_mod", model)


@register_task("reconstruction", "an image mapped to itself (conv_autoencoder, vae), optionally from a noisy copy "
                                 "(train.denoise); MSE, PSNR, SSIM")
class ReconstructionTask(Task):
    best_metric = "val_psnr"
    best_mode = "max"
    metric_names = ("mse", "psnr", "ssim", "noisy_psnr")

    def __init__(self, cfg, classes: list[str], input_shape: tuple[int, ...] | None = None) -> None:
        super().__init__(cfg, classes, input_shape)
        name = cfg.model.name
        if name not in MODELS:
            raise UserError(f"task reconstruction needs model.name {' or '.join(MODELS)}, got "
                            f"{'a layer list' if name is None else repr(name)}")
        self.vae = name == "vae"
        loss = cfg.train.loss
        if loss not in LOSSES:
            raise UserError(f"train.loss={loss} is not a reconstruction loss; task reconstruction takes "
                            f"{', '.join(LOSSES)} (default mse)")
        if self.vae and loss != "mse":
            raise UserError(f"train.loss={loss}: model vae trains on its own loss, the negative ELBO (BCE + beta "
                            f"KL; model.options.beta, model.options.reduction); leave train.loss unset")
        if loss == "bce" and int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise UserError("train.loss=bce reads the autoencoder's logits outside forward(), which "
                            "DistributedDataParallel does not synchronise; use train.loss=mse under torchrun")
        if cfg.train.eval_tta != "none":
            raise UserError(f"train.eval_tta={cfg.train.eval_tta}: task reconstruction has no test-time "
                            f"augmentation")
        self.loss_name = loss
        self.denoise = cfg.train.denoise

    # -- training

    def corrupt(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """The model's input for clean images ``x``: ``x`` itself, or a corrupted copy (``train.denoise``)."""
        if self.denoise is None:
            return x
        return corrupt(x, self.denoise.noise, self.denoise.amount, generator=generator)

    def make_loss(self) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """``loss(reconstruction, clean)`` for the autoencoder's MSE (BCE and the VAE's loss need the
        model's logits: see :meth:`reconstruct`)."""
        return lambda out, x: F.mse_loss(out.float(), x.float())

    def reconstruct(self, model: nn.Module, x_in: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(reconstruction in [0, 1], loss)`` of inputs ``x_in`` against clean targets ``x``."""
        if self.vae:
            out = model(x_in)
            return out, unwrap(model).loss(x, out)
        if self.loss_name == "bce":
            logits = unwrap(model).logits(x_in)
            loss = F.binary_cross_entropy_with_logits(logits.float(), x.float())
            return torch.sigmoid(logits), loss
        out = model(x_in)
        return out, F.mse_loss(out.float(), x.float())

    def training_step(self, model: nn.Module, inputs: torch.Tensor, targets: Any,
                      loss_fn: Callable[[Any, Any], torch.Tensor]) -> tuple[Any, torch.Tensor]:
        return self.reconstruct(model, self.corrupt(inputs), inputs)

    def train_sums(self, outputs: Any, targets: Any) -> dict[str, torch.Tensor]:
        return {}

    # -- evaluation

    def metrics(self) -> MetricCollection:
        return MetricCollection({k: Ratio() for k in ("loss", "mse", "psnr", "ssim", "noisy_psnr")})

    def val_generator(self) -> torch.Generator:
        """The validation noise's generator (CPU, seeded by ``train.seed``): the same noisy images at every
        evaluation and on any device."""
        return torch.Generator().manual_seed(int(self.cfg.train.seed))

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader, device: torch.device, precision: str = "fp32",
                 loss_fn: Callable | None = None) -> dict[str, float]:
        was_training = model.training
        model.eval()
        metrics = self.metrics().to(device)
        generator = self.val_generator()
        for x, y in loader:
            n = len(x)
            if n == 0:
                continue
            x = x.float()
            x_in = self.corrupt(x, generator)
            with autocast(device, precision):
                out, loss = self.reconstruct(model, x_in, x)
            out = out.float().clamp(0.0, 1.0)
            metrics["loss"].update(loss.detach().double() * n, n)
            metrics["mse"].update(image_mse(out, x, reduction="none").sum(), n)
            metrics["psnr"].update(image_psnr(out, x, reduction="none").clamp(max=PSNR_CAP).sum(), n)
            metrics["ssim"].update(image_ssim(out, x, reduction="none").sum(), n)
            if self.denoise is not None:
                metrics["noisy_psnr"].update(image_psnr(x_in, x, reduction="none").clamp(max=PSNR_CAP).sum(), n)
        model.train(was_training)
        result: dict[str, Any] = {k: float(v) for k, v in metrics.compute().items()}
        if self.denoise is None:
            result["noisy_psnr"] = None
        result["n"] = int(round(float(metrics["loss"].den)))
        return result

    def eval_report(self, model: nn.Module, loader, device: torch.device) -> dict[str, Any]:
        d = self.denoise
        return {"denoise": None if d is None else {"noise": d.noise, "amount": d.amount}}

    def epoch_line(self, m: dict[str, Any]) -> str:
        f = fmt_metric
        line = (f"train_loss {f(m.get('train_loss'))}  val_loss {f(m.get('val_loss'))}  val_mse {f(m.get('val_mse'))}  "
                f"val_psnr {f(m.get('val_psnr'))}  val_ssim {f(m.get('val_ssim'))}")
        if self.denoise is not None:
            line += f" (noisy input {f(m.get('val_noisy_psnr'))} dB)"
        return line

    # -- using a trained model

    @torch.no_grad()
    def predict(self, model: nn.Module, x: torch.Tensor, names: Sequence[str], top_k: int = 5,
                **options: Any) -> list[dict]:
        """Per file its reconstruction's ``mse`` and ``psnr`` against the file itself; with ``save`` (a
        folder) also ``saved``: ``<stem>_recon.png``, the input and the reconstruction side by side."""
        was_training = model.training
        model.eval()
        x = x.float()
        out = model(x).float().clamp(0.0, 1.0)
        model.train(was_training)
        mses = image_mse(out, x, reduction="none").tolist()
        psnrs = image_psnr(out, x, reduction="none").tolist()
        save = options.get("save")
        results = []
        for i, name in enumerate(names):
            r: dict[str, Any] = {"file": str(name), "mse": mses[i], "psnr": psnrs[i]}
            if save is not None:
                r["saved"] = str(save_pair(x[i].cpu(), out[i].cpu(), str(name), save))
            results.append(r)
        return results


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """``(C, H, W)`` in [0, 1] -> ``(H, W)`` (grey) or ``(H, W, C)`` uint8, rounded."""
    a = (image.clamp(0.0, 1.0) * 255.0).round().to(torch.uint8).numpy()
    return a[0] if a.shape[0] == 1 else np.ascontiguousarray(a.transpose(1, 2, 0))


def save_pair(image: torch.Tensor, reconstruction: torch.Tensor, file: str, folder: str) -> Path:
    """Write ``<stem>_recon.png`` into ``folder`` (created if missing), atomically: ``image`` (left half)
    and ``reconstruction`` (right half), both ``(C, H, W)`` in [0, 1], side by side, no border."""
    from PIL import Image

    from cnnkit.atomic import atomic_write

    out_dir = Path(folder)
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"--save {folder!r} is a file; give a folder to write the reconstructions into")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create --save folder {folder!r}: {e.strerror or e}") from None
    pair = np.concatenate([to_uint8(image), to_uint8(reconstruction)], axis=1)
    buf = io.BytesIO()
    Image.fromarray(pair).save(buf, format="PNG")
    path = out_dir / f"{Path(file).stem}_recon.png"
    atomic_write(path, lambda f: f.write(buf.getvalue()))
    return path
