"""The convolutional autoencoder, ``conv_autoencoder`` (``task: reconstruction``), and ``conv_encoder``, a
classifier whose body is such an encoder (``task: classification``).

::

    x (N, C, H, W) in [0, 1] ─ zero-pad right/bottom to a multiple of 2**depth
      ─ encoder: depth x [conv 3x3 stride 2, BN, ReLU]  (width, 2 width, 4 width, ...)
      ─ code: conv 1x1 to ``latent`` channels (bottleneck "conv": a map, H / 2**depth on a side)
              or flatten + dense to ``latent`` numbers (bottleneck "dense": a vector, fixed input size)
      ─ decoder: conv 1x1 (dense + reshape) back, then depth x [transposed conv 4x4 stride 2, BN, ReLU]
              (the last one to C channels, no BN or ReLU: logits)
      ─ crop to H x W ─ sigmoid ─ x̂ in [0, 1], the input's shape

The code is linear (no activation): an undercomplete bottleneck is what forces the network to
learn the data's structure; with bottleneck "conv" the code holds ``latent * (H / 2**depth)**2``
numbers (8 x 7 x 7 = 392 for MNIST by default, half the pixels), with "dense" exactly ``latent``.

A *denoising* autoencoder (Vincent et al. 2008) is the same network trained to map a corrupted
input to the clean image; :func:`corrupt` draws the corruption (Gaussian, masking or salt-and-pepper
noise), the task decides when to apply it.

``model.encoder`` maps an image to its code on its own, so a classifier can be built on it:
``conv_encoder`` (:class:`EncoderClassifier`) is the encoder with a global average pooling (or a
flatten) and a dense head, and takes ``backbone`` = a built autoencoder (or VAE) whose ``.encoder``
it reuses, trained weights included.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cnnkit.errors import UserError
from cnnkit.models.base import Classifier
from cnnkit.models.registry import register_model

BOTTLENECKS = ("conv", "dense")
NOISES = ("gaussian", "masking", "salt_pepper")
POOLS = ("avg", "flatten")


# --------------------------------------------------------------------------- option checks


def check_positive(model: str, **values: Any) -> None:
    for name, v in values.items():
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise UserError(f"{model}: option {name} must be a positive integer, got {v!r}")


def check_choice(model: str, option: str, value: Any, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise UserError(f"{model}: option {option} must be one of {', '.join(allowed)}, got {value!r}")
    return value


def check_bool(model: str, option: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise UserError(f"{model}: option {option} must be true or false, got {value!r}")
    return value


def padded_side(side: int, multiple: int) -> int:
    """``side`` rounded up to a multiple of ``multiple``."""
    return -(-int(side) // multiple) * multiple


def random_normal(shape: tuple[int, ...], generator: torch.Generator | None, like: Tensor | None = None,
                  device: torch.device | None = None) -> Tensor:
    """Standard normal numbers drawn on ``generator``'s device (so a CPU generator gives the same numbers
    whatever device the model is on), then moved to ``like``'s device and dtype (or ``device``)."""
    if generator is None:
        where = like.device if like is not None else device
        z = torch.randn(shape, device=where)
    else:
        z = torch.randn(shape, generator=generator, device=generator.device)
    if like is not None:
        return z.to(like.device, like.dtype)
    return z.to(device) if device is not None else z


# --------------------------------------------------------------------------- encoder and decoder


class ConvEncoder(nn.Module):
    """``x (N, C, H, W) -> code``: ``(N, latent, H', W')`` with bottleneck "conv" (``H' = ceil(H /
    2**depth)``), ``(N, latent)`` with "dense" (then H = W = ``input_size``, or at most as much padding).

    ``features(x)``: the last stage's map before the code, ``(N, width * 2**(depth-1), H', W')``.
    """

    def __init__(self, in_chans: int, width: int = 32, depth: int = 2, latent: int = 8, bottleneck: str = "conv",
                 input_size: int | None = None, norm: bool = True) -> None:
        super().__init__()
        self.multiple = 2 ** depth
        self.bottleneck = bottleneck
        self.flat = bottleneck == "dense"
        self.out_chans = latent
        chans = [in_chans] + [width * 2 ** i for i in range(depth)]
        stages: list[nn.Module] = []
        for c_in, c_out in zip(chans, chans[1:]):
            stages += [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1, bias=not norm)]
            stages += [nn.BatchNorm2d(c_out)] if norm else []
            stages += [nn.ReLU(inplace=True)]
        self.stages = nn.Sequential(*stages)
        self.stage_chans = chans[-1]
        if self.flat:
            if input_size is None:
                raise ValueError("a dense bottleneck needs the input size")
            self.code_side = padded_side(input_size, self.multiple) // self.multiple
            self.code = nn.Sequential(nn.Flatten(1), nn.Linear(chans[-1] * self.code_side ** 2, latent))
        else:
            self.code_side = None
            self.code = nn.Conv2d(chans[-1], latent, 1)

    def pad(self, x: Tensor) -> Tensor:
        """Zeros on the right and at the bottom up to a multiple of 2**depth (none when it already is)."""
        h, w = x.shape[-2:]
        return F.pad(x, (0, (-w) % self.multiple, 0, (-h) % self.multiple))

    def features(self, x: Tensor) -> Tensor:
        return self.stages(self.pad(x))

    def forward(self, x: Tensor) -> Tensor:
        maps = self.features(x)
        if self.flat and maps.shape[-1] != self.code_side:
            side = self.code_side * self.multiple
            raise ValueError(f"this encoder has a dense code for {side}x{side} inputs (after padding); got "
                             f"{x.shape[-2]}x{x.shape[-1]}")
        return self.code(maps)


class ConvDecoder(nn.Module):
    """``code -> logits (N, out_chans, H'', W'')`` at the padded size (``code side * 2**depth``); the
    caller crops. Mirrors :class:`ConvEncoder` with the same ``width``, ``depth``, ``latent``."""

    def __init__(self, out_chans: int, width: int = 32, depth: int = 2, latent: int = 8, bottleneck: str = "conv",
                 input_size: int | None = None, norm: bool = True) -> None:
        super().__init__()
        chans = [out_chans] + [width * 2 ** i for i in range(depth)]
        top = chans[-1]
        if bottleneck == "dense":
            if input_size is None:
                raise ValueError("a dense bottleneck needs the input size")
            side = padded_side(input_size, 2 ** depth) // 2 ** depth
            self.expand: nn.Module = nn.Sequential(nn.Linear(latent, top * side * side), nn.ReLU(inplace=True),
                                                   nn.Unflatten(1, (top, side, side)))
        else:
            layers: list[nn.Module] = [nn.Conv2d(latent, top, 1, bias=not norm)]
            layers += [nn.BatchNorm2d(top)] if norm else []
            self.expand = nn.Sequential(*layers, nn.ReLU(inplace=True))
        stages: list[nn.Module] = []
        for i in range(depth, 0, -1):
            last = i == 1
            stages += [nn.ConvTranspose2d(chans[i], chans[i - 1], 4, stride=2, padding=1, bias=last or not norm)]
            if not last:
                stages += [nn.BatchNorm2d(chans[i - 1])] if norm else []
                stages += [nn.ReLU(inplace=True)]
        self.stages = nn.Sequential(*stages)

    def forward(self, z: Tensor) -> Tensor:
        return self.stages(self.expand(z))


# --------------------------------------------------------------------------- the autoencoder


class ConvAutoencoder(nn.Module):
    """``x (N, C, H, W) in [0, 1] -> x̂ (N, C, H, W) in [0, 1]`` (sigmoid); any H, W with bottleneck
    "conv" (the input is zero-padded to a multiple of 2**depth and the output cropped back),
    ``input_size`` with "dense".

    ``logits(x)`` is the same before the sigmoid (for a BCE loss, which autocast needs on logits);
    ``encode(x)`` the code, ``decode(code)`` an image of ``input_size`` (or ``size``).
    """

    def __init__(self, in_chans: int = 1, input_size: int = 28, width: int = 32, depth: int = 2, latent: int = 8,
                 bottleneck: str = "conv", norm: bool = True) -> None:
        super().__init__()
        name = "conv_autoencoder"
        check_positive(name, in_chans=in_chans, input_size=input_size, width=width, depth=depth, latent=latent)
        check_choice(name, "bottleneck", bottleneck, BOTTLENECKS)
        check_bool(name, "norm", norm)
        self.in_chans, self.input_size = in_chans, input_size
        self.width, self.depth, self.latent, self.bottleneck = width, depth, latent, bottleneck
        self.encoder = ConvEncoder(in_chans, width, depth, latent, bottleneck, input_size, norm)
        self.decoder = ConvDecoder(in_chans, width, depth, latent, bottleneck, input_size, norm)

    def encode(self, x: Tensor) -> Tensor:
        return self.encoder(x)

    def decode_logits(self, code: Tensor, size: tuple[int, int] | None = None) -> Tensor:
        h, w = size if size is not None else (self.input_size, self.input_size)
        return self.decoder(code)[..., :h, :w]

    def decode(self, code: Tensor, size: tuple[int, int] | None = None) -> Tensor:
        return torch.sigmoid(self.decode_logits(code, size))

    def logits(self, x: Tensor) -> Tensor:
        return self.decode_logits(self.encoder(x), (x.shape[-2], x.shape[-1]))

    def forward(self, x: Tensor) -> Tensor:
        return torch.sigmoid(self.logits(x))

    def extra_repr(self) -> str:
        return f"width={self.width}, depth={self.depth}, latent={self.latent}, bottleneck={self.bottleneck!r}"


def corrupt(x: Tensor, noise: str = "gaussian", amount: float = 0.5, generator: torch.Generator | None = None
            ) -> Tensor:
    """A corrupted copy of images ``x`` in [0, 1], for a denoising autoencoder, clipped to [0, 1]:

    * ``gaussian``: ``x + amount * N(0, 1)`` per pixel;
    * ``masking``: each pixel set to 0 with probability ``amount`` (Vincent et al. 2008's masking noise);
    * ``salt_pepper``: each pixel set to 0 or 1 (even odds) with probability ``amount``.

    ``generator`` makes the noise reproducible (drawn on its device, then moved to ``x``'s).
    """
    check_choice("corrupt", "noise", noise, NOISES)
    if isinstance(amount, bool) or not isinstance(amount, (int, float)) or amount < 0:
        raise UserError(f"corrupt: the noise amount must be a number >= 0, got {amount!r}")
    if noise != "gaussian" and amount > 1:
        raise UserError(f"corrupt: {noise} noise takes a probability in [0, 1], got {amount!r}")

    def uniform() -> Tensor:
        if generator is None:
            return torch.rand(x.shape, device=x.device)
        return torch.rand(x.shape, generator=generator, device=generator.device).to(x.device)

    if noise == "gaussian":
        out = x + amount * random_normal(tuple(x.shape), generator, like=x)
    elif noise == "masking":
        out = x * (uniform() >= amount).to(x.dtype)
    else:
        hit = uniform() < amount
        salt = (uniform() < 0.5).to(x.dtype)
        out = torch.where(hit, salt, x)
    return out.clamp(0.0, 1.0)


@register_model("conv_autoencoder", "convolutional autoencoder: strided 3x3 convs, a linear conv (or dense) code, "
                "transposed convs, sigmoid; output = input's shape", default_input=(1, 28, 28), min_input=(1, 4, 4),
                task="reconstruction")
def conv_autoencoder(num_classes: int = 0, in_chans: int = 1, input_size: int = 28, width: int = 32, depth: int = 2,
                     latent: int = 8, bottleneck: str = "conv", norm: bool = True) -> ConvAutoencoder:
    """``width``: channels of the first stage (doubled at each of the ``depth`` stride-2 stages);
    ``latent``: the code's channels (bottleneck "conv") or size (bottleneck "dense", for
    ``input_size`` inputs only); ``norm``: batch normalisation after each hidden conv.
    ``num_classes`` is ignored (the output is the image)."""
    return ConvAutoencoder(in_chans, input_size, width=width, depth=depth, latent=latent, bottleneck=bottleneck,
                           norm=norm)


# --------------------------------------------------------------------------- an encoder as a classifier


class EncoderClassifier(Classifier):
    """An autoencoder's encoder as the body of a classifier: ``body = encoder + pooling`` (global average
    or flatten of the code map; nothing for a dense code), ``head`` a dense layer."""

    def __init__(self, encoder: nn.Module, num_classes: int, in_chans: int, input_size: int, pool: str = "avg"
                 ) -> None:
        flat = bool(getattr(encoder, "flat", False))
        layers: list[nn.Module] = [encoder]
        if not flat:
            layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(1)] if pool == "avg" else [nn.Flatten(1)]
        body = nn.Sequential(*layers)
        was = body.training
        body.eval()
        with torch.no_grad():
            p = next(body.parameters(), None)
            probe = torch.zeros(1, in_chans, input_size, input_size,
                                device=p.device if p is not None else None, dtype=p.dtype if p is not None else None)
            n_features = int(body(probe).shape[1])
        body.train(was)
        super().__init__(body, nn.Linear(n_features, num_classes))
        self.pool = "none" if flat else pool


@register_model("conv_encoder", "a conv_autoencoder's encoder (strided convs, code) with average pooling or flatten "
                "and a dense head; model.backbone: an autoencoder run", default_input=(1, 28, 28),
                min_input=(1, 4, 4))
def conv_encoder(num_classes: int = 10, in_chans: int = 1, input_size: int = 28, backbone: nn.Module | None = None,
                 width: int = 32, depth: int = 2, latent: int = 8, bottleneck: str = "conv", norm: bool = True,
                 pool: str = "avg") -> EncoderClassifier:
    """``backbone``: a built autoencoder (``conv_autoencoder`` or ``vae``) whose ``.encoder`` becomes the
    body, its weights kept; then ``width``, ``depth``, ``latent``, ``bottleneck`` and ``norm``, which
    describe a fresh encoder, are not used. ``pool``: ``avg`` (global average of the code map) or
    ``flatten`` (the whole code, for ``input_size`` inputs only)."""
    name = "conv_encoder"
    check_positive(name, num_classes=num_classes, in_chans=in_chans, input_size=input_size)
    check_choice(name, "pool", pool, POOLS)
    if backbone is not None:
        encoder = getattr(backbone, "encoder", None)
        if not isinstance(encoder, nn.Module):
            raise UserError(f"{name}: the backbone ({type(backbone).__name__}) has no encoder; give an autoencoder "
                            f"(conv_autoencoder or vae)")
    else:
        encoder = ConvAutoencoder(in_chans, input_size, width, depth, latent, bottleneck, norm).encoder
    return EncoderClassifier(encoder, num_classes, in_chans, input_size, pool=pool)
