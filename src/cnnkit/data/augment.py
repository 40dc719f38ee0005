"""Data augmentation: batched on the device for in-memory data, per sample for files.

Both paths do the same things, in this order: random crop after zero padding
(``crop_padding``; ``crop_pad_mode: reflect`` pads with the mirrored border
instead), random rotation (``rotation`` degrees either way), horizontal flip
(``hflip``, p=0.5), brightness and contrast jitter, and cutout (a square of side
``cutout`` set to zero, clipped at the borders).

``hflip: alternating`` (Jordan, 2024, "94% on CIFAR-10 in 3.29 seconds", section
3.6) flips every image in every other epoch instead of at random: in epoch ``e``
an image is flipped exactly when ``key(image) + e`` is odd, where ``key`` is a
fixed pseudo-random bit computed from the image's own pixels (see
:func:`image_parity`), so half of the images are flipped in odd epochs and the
other half in even ones, whatever the batch order. The batched augment learns the
epoch from its ``set_epoch(e)`` (the trainer calls it each epoch); the per-sample
path, which never sees the epoch, flips at random instead.

* :func:`make_batch_augment` works on a float batch ``(N, C, H, W)`` on the 0..255
  scale, before normalisation, on whatever device the batch lives; every random
  number is drawn from the CPU generator it is given, so a result depends only on
  the generator's seed, not on the device.
* :func:`make_transforms` gives a ``torchvision.transforms.v2.Compose`` for uint8
  ``(C, H, W)`` tensors, applied per sample inside a dataset (the file-based path).

Example::

    aug = make_batch_augment(AugmentConfig(crop_padding=4, hflip=True))
    g = torch.Generator().manual_seed(0)
    x = aug(images.float(), g)            # same shape, still on the 0..255 scale
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from cnnkit.config import AugmentConfig

BatchAugment = Callable[[torch.Tensor, torch.Generator], torch.Tensor]

__all__ = ["BatchAugment", "Cutout", "RandomTranslate", "make_batch_augment", "make_transforms",
           "random_crop", "random_rotation", "random_hflip", "random_brightness", "random_contrast",
           "random_cutout", "alternating_hflip", "image_parity"]


# --------------------------------------------------------------------------- batched ops


def _to(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Random numbers drawn on the CPU, moved to ``device``; to CUDA through pinned memory without waiting
    (a plain copy from pageable memory would stall the host until the GPU had finished all queued work)."""
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def _uniform(n: int, lo: float, hi: float, g: torch.Generator, device: torch.device) -> torch.Tensor:
    return _to(lo + (hi - lo) * torch.rand(n, generator=g), device)


def random_crop(x: torch.Tensor, padding: int, g: torch.Generator, mode: str = "zeros") -> torch.Tensor:
    """Random crop of the original size after padding by ``padding`` on every side.

    Equivalently, every sample is translated by its own ``(dy, dx)`` in
    ``[-padding, padding]`` and the uncovered border is filled with 0 (``mode="zeros"``)
    or with the mirror image of the border (``mode="reflect"``). The batch is padded
    once and each sample's window is gathered by advanced indexing.
    """
    if padding <= 0:
        return x
    n, c, h, w = x.shape
    off = _to(torch.randint(0, 2 * padding + 1, (2, n), generator=g), x.device)
    pad = (padding, padding, padding, padding)
    padded = F.pad(x, pad, mode="reflect") if mode == "reflect" else F.pad(x, pad)
    rows = off[0, :, None] + torch.arange(h, device=x.device)  # (N, H)
    cols = off[1, :, None] + torch.arange(w, device=x.device)  # (N, W)
    n_idx = torch.arange(n, device=x.device)[:, None, None, None]
    c_idx = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[n_idx, c_idx, rows[:, None, :, None], cols[:, None, None, :]]


def random_rotation(x: torch.Tensor, degrees: float, g: torch.Generator) -> torch.Tensor:
    """Rotate every sample about its centre by its own angle in ``[-degrees, degrees]``.

    Bilinear sampling; pixels from outside the image are 0. The rotation is a true
    rotation in pixel space for non-square images too.
    """
    if degrees <= 0:
        return x
    n, _, h, w = x.shape
    angle = _uniform(n, -degrees, degrees, g, torch.device("cpu")) * (math.pi / 180.0)
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.zeros(n, 2, 3, dtype=torch.float32)
    # Normalised coordinates scale x by 2/W and y by 2/H; undo that around the rotation.
    theta[:, 0, 0] = cos
    theta[:, 0, 1] = -sin * (h / w)
    theta[:, 1, 0] = sin * (w / h)
    theta[:, 1, 1] = cos
    theta = _to(theta.to(dtype=x.dtype if x.is_floating_point() else torch.float32), x.device)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def random_hflip(x: torch.Tensor, g: torch.Generator, p: float = 0.5) -> torch.Tensor:
    """Flip each sample left-right with probability ``p``."""
    flip = _to(torch.rand(x.shape[0], generator=g) < p, x.device)
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


_PARITY_WEIGHTS: dict[tuple[int, str], torch.Tensor] = {}


def image_parity(x: torch.Tensor) -> torch.Tensor:
    """A fixed pseudo-random bit per image of a batch on the 0..255 scale, from its pixels alone (bool, (N,)).

    Bit 8 of ``sum_i round(x_i) * w_i`` with fixed random integer weights ``w_i`` in
    ``[1, 2^16)``: integer arithmetic, so the same image gets the same bit on any
    device, in any batch, at any position.
    """
    n = x.shape[0]
    flat = x.reshape(n, -1)
    key = (flat.shape[1], str(x.device))
    w = _PARITY_WEIGHTS.get(key)
    if w is None:
        gen = torch.Generator().manual_seed(0x5EED)
        w = _PARITY_WEIGHTS[key] = torch.randint(1, 1 << 16, (flat.shape[1],), generator=gen).to(x.device)
    s = (flat.round().to(torch.int64) * w).sum(1)
    return ((s >> 8) & 1).bool()


def alternating_hflip(x: torch.Tensor, epoch: int, key: torch.Tensor | None = None) -> torch.Tensor:
    """Flip sample ``i`` left-right exactly when ``key[i] + epoch`` is odd (``key`` defaults to :func:`image_parity`)."""
    key = image_parity(x) if key is None else key.to(x.device)
    flip = key ^ bool(epoch % 2)
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


def random_brightness(x: torch.Tensor, amount: float, g: torch.Generator) -> torch.Tensor:
    """Multiply each sample by its own factor in ``[1 - amount, 1 + amount]``, clamp to 0..255."""
    if amount <= 0:
        return x
    f = _uniform(x.shape[0], 1.0 - amount, 1.0 + amount, g, x.device).to(x.dtype)
    return (x * f[:, None, None, None]).clamp_(0.0, 255.0)


def _gray_mean(x: torch.Tensor) -> torch.Tensor:
    """Per-sample mean of the grayscale image (ITU-R 601 weights for RGB), shape (N, 1, 1, 1)."""
    if x.shape[1] == 3:
        wts = torch.tensor([0.299, 0.587, 0.114], dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        gray = (x * wts).sum(dim=1, keepdim=True)
    else:
        gray = x.mean(dim=1, keepdim=True)
    return gray.mean(dim=(1, 2, 3), keepdim=True)


def random_contrast(x: torch.Tensor, amount: float, g: torch.Generator) -> torch.Tensor:
    """Blend each sample toward its grayscale mean: ``f * x + (1 - f) * mean``, ``f`` in ``[1 - amount, 1 + amount]``.

    The same definition as torchvision's ``adjust_contrast``; clamped to 0..255.
    """
    if amount <= 0:
        return x
    f = _uniform(x.shape[0], 1.0 - amount, 1.0 + amount, g, x.device).to(x.dtype)[:, None, None, None]
    return (f * x + (1.0 - f) * _gray_mean(x)).clamp_(0.0, 255.0)


def random_cutout(x: torch.Tensor, size: int, g: torch.Generator) -> torch.Tensor:
    """Set a ``size`` x ``size`` square to 0 in every sample, centred on a random pixel, clipped at the borders.

    The square covers rows ``[cy - size // 2, cy - size // 2 + size)`` (and likewise
    columns) with the centre ``(cy, cx)`` uniform over all pixels.
    """
    if size <= 0:
        return x
    n, _, h, w = x.shape
    cy = _to(torch.randint(0, h, (n,), generator=g), x.device)
    cx = _to(torch.randint(0, w, (n,), generator=g), x.device)
    top, left = cy - size // 2, cx - size // 2
    r = torch.arange(h, device=x.device)[None, :]
    c = torch.arange(w, device=x.device)[None, :]
    in_r = (r >= top[:, None]) & (r < top[:, None] + size)  # (N, H)
    in_c = (c >= left[:, None]) & (c < left[:, None] + size)  # (N, W)
    mask = in_r[:, None, :, None] & in_c[:, None, None, :]
    return x.masked_fill(mask, 0.0)


#: The directions of :func:`shift_images`, as (rows, columns) steps: right, down, left, up.
SHIFT_DIRECTIONS = ((0, 1), (1, 0), (0, -1), (-1, 0))


def shift_images(images: torch.Tensor, pixels: int) -> torch.Tensor:
    """Each image of ``images`` (N, C, H, W) moved ``pixels`` pixels, image ``i`` in direction ``i mod 4``
    of :data:`SHIFT_DIRECTIONS` (right, down, left, up); what leaves the frame is lost and what comes in
    is 0 (the background of digits). The course's argument for convolutions made measurable: how
    accuracy falls as the same digits move (``cnnkit eval RUN --shift N``)."""
    if pixels < 0:
        raise ValueError(f"pixels must be >= 0, got {pixels}")
    out = torch.zeros_like(images)
    h, w = images.shape[-2:]
    if pixels == 0:
        return images.clone()
    for k, (dy, dx) in enumerate(SHIFT_DIRECTIONS):
        idx = torch.arange(k, len(images), len(SHIFT_DIRECTIONS))
        sy, sx = dy * pixels, dx * pixels
        if abs(sy) >= h or abs(sx) >= w:
            continue  # moved wholly out of the frame: blank
        src = images[idx][..., max(0, -sy):h - max(0, sy), max(0, -sx):w - max(0, sx)]
        out[idx, ..., max(0, sy):h - max(0, -sy), max(0, sx):w - max(0, -sx)] = src
    return out


def make_batch_augment(cfg: AugmentConfig | None) -> BatchAugment | None:
    """A function ``(x, generator) -> x`` doing the augmentations of ``cfg`` on a float batch.

    ``x`` is ``(N, C, H, W)`` on the 0..255 scale, on any device; random numbers come
    from ``generator`` (a CPU ``torch.Generator``) and are moved to ``x.device``.
    Returns None when no augmentation is active.
    """
    if cfg is None or not cfg.active():
        return None
    cfg = cfg.model_copy()
    state = {"epoch": 0}
    alternating = cfg.hflip == "alternating"

    def augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        if x.shape[0] == 0:
            return x
        key = image_parity(x) if alternating else None  # of the image as stored, before any change
        if cfg.crop_padding:
            x = random_crop(x, cfg.crop_padding, g, cfg.crop_pad_mode)
        if cfg.rotation:
            x = random_rotation(x, cfg.rotation, g)
        if alternating:
            x = alternating_hflip(x, state["epoch"], key)
        elif cfg.hflip:
            x = random_hflip(x, g)
        if cfg.brightness:
            x = random_brightness(x, cfg.brightness, g)
        if cfg.contrast:
            x = random_contrast(x, cfg.contrast, g)
        if cfg.cutout:
            x = random_cutout(x, cfg.cutout, g)
        return x

    def set_epoch(epoch: int) -> None:
        state["epoch"] = epoch

    augment.config = cfg  # type: ignore[attr-defined]
    augment.set_epoch = set_epoch  # type: ignore[attr-defined]
    return augment


# --------------------------------------------------------------------------- per-sample transforms

def _image_size(flat_inputs: list[Any]) -> tuple[int, int]:
    h, w = TF.get_size(flat_inputs[0])
    return int(h), int(w)


class RandomTranslate(v2.Transform):
    """Random crop of the input's own size after zero padding by ``padding`` pixels (v2 transform).

    Unlike ``v2.RandomCrop`` it needs no output size, so one instance serves any image size.
    """

    def __init__(self, padding: int, padding_mode: str = "constant") -> None:
        super().__init__()
        self.padding = int(padding)
        self.padding_mode = padding_mode

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        h, w = _image_size(flat_inputs)
        top, left = torch.randint(0, 2 * self.padding + 1, (2,)).tolist()
        return {"top": top, "left": left, "height": h, "width": w}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        p = self.padding
        if p <= 0:
            return inpt
        out = TF.pad(inpt, [p, p, p, p], fill=0, padding_mode=self.padding_mode)
        return TF.crop(out, params["top"], params["left"], params["height"], params["width"])


class Cutout(v2.Transform):
    """Set a ``size`` x ``size`` square to 0, centred on a random pixel, clipped at the borders (v2 transform).

    Works on tensors ``(..., C, H, W)``; the same square as :func:`random_cutout`.
    """

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = int(size)

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        h, w = _image_size(flat_inputs)
        cy = int(torch.randint(0, h, ()).item())
        cx = int(torch.randint(0, w, ()).item())
        top, left = max(cy - self.size // 2, 0), max(cx - self.size // 2, 0)
        bottom, right = min(cy - self.size // 2 + self.size, h), min(cx - self.size // 2 + self.size, w)
        return {"top": top, "left": left, "bottom": bottom, "right": right}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if not isinstance(inpt, torch.Tensor):
            raise TypeError(f"Cutout works on image tensors, got {type(inpt).__name__}")
        out = inpt.clone()
        out[..., params["top"]:params["bottom"], params["left"]:params["right"]] = 0
        return out


def make_transforms(cfg: AugmentConfig | None) -> v2.Compose | None:
    """Per-sample ``v2.Compose`` for uint8 ``(C, H, W)`` tensors doing what ``cfg`` asks; None when inactive.

    Example::

        tf = make_transforms(AugmentConfig(crop_padding=4, hflip=True, cutout=8))
        y = tf(torch.zeros(3, 32, 32, dtype=torch.uint8))   # uint8 (3, 32, 32)
    """
    if cfg is None or not cfg.active():
        return None
    ops: list[Any] = []
    if cfg.crop_padding:
        ops.append(RandomTranslate(cfg.crop_padding, "reflect" if cfg.crop_pad_mode == "reflect" else "constant"))
    if cfg.rotation:
        ops.append(v2.RandomRotation(cfg.rotation, interpolation=v2.InterpolationMode.BILINEAR, fill=0))
    if cfg.hflip:  # 'alternating' too: a per-sample transform does not know the epoch
        ops.append(v2.RandomHorizontalFlip(0.5))
    if cfg.brightness or cfg.contrast:
        ops.append(v2.ColorJitter(brightness=cfg.brightness or None, contrast=cfg.contrast or None))
    if cfg.cutout:
        ops.append(Cutout(cfg.cutout))
    return v2.Compose(ops)
