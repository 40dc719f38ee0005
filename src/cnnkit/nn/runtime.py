"""Where and how tensors run: device choice, seeding, mixed precision, honest clocks."""

from __future__ import annotations

import contextlib
import os
import random

import numpy as np
import torch
from torch import nn

from cnnkit.errors import UserError


def resolve_device(name: str) -> torch.device:
    """``auto`` picks cuda, then mps, then cpu; an unavailable device is a UserError."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"train.device={name!r} but no CUDA device is available; use cpu or auto")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise UserError("train.device='mps' but MPS is not available; use cpu or auto")
    return torch.device(name)


def seed_everything(seed: int, deterministic: bool = False) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


def sync(device: torch.device) -> None:
    """Wait for queued device work, so that a clock read after it is honest."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def autocast(device: torch.device, precision: str):
    """Mixed precision for ``bf16``/``fp16``; nothing for ``fp32``."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def backward_and_step(loss: torch.Tensor, optimizer: torch.optim.Optimizer, model: nn.Module, *,
                      scaler: torch.amp.GradScaler | None = None, clip: float | None = 0.0,
                      update_scaler: bool = True) -> None:
    """One optimiser step from ``loss``: backward (scaled by ``scaler`` for fp16, whose small gradients
    would underflow otherwise), clip the gradient norm of ``model``'s parameters to ``clip`` (0 / None:
    off), step. ``update_scaler=False`` leaves the scaler's update to the caller (a GAN steps two
    optimisers with one scaler, then updates it once)."""
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
    else:
        loss.backward()
    if clip:
        nn.utils.clip_grad_norm_(model.parameters(), clip)
    if scaler is not None:
        scaler.step(optimizer)
        if update_scaler:
            scaler.update()
    else:
        optimizer.step()
