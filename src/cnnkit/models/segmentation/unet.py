"""U-Net (Ronneberger, Fischer & Brox 2015), written to be read part by part.

::

    contracting path                                      expanding path
    x ─ [3x3 conv, ReLU] x2, width ───── crop, concat ──> [3x3 conv, ReLU] x2, width ─ 1x1 conv ─ logits
          │ 2x2 max pool                                      ↑ 2x2 up-convolution, channels / 2
        [3x3 conv, ReLU] x2, 2 width ─── crop, concat ──> [3x3 conv, ReLU] x2, 2 width
          │ 2x2 max pool                                      ↑
         ...  (depth poolings)                               ...
          │ 2x2 max pool                                      ↑
        bottom: [3x3 conv, ReLU] x2, 2**depth width, dropout ─┘

Each skip (a level's last map) is centre-cropped to the upsampled map it meets (with 'valid'
padding it is larger) and concatenated to it; the logits have K channels, one per class.

Padding ('padding' option):

* ``same`` (default): every 3x3 convolution pads by one pixel, so the output has the input's
  size. Sides must be multiples of ``2 ** depth`` (each pooling halves them exactly); the
  segmentation task pads images to that multiple.
* ``valid``: the paper's geometry. Each 3x3 convolution eats one pixel on every side (a
  level's two of them: 4 pixels of side), so the output is smaller than the input: 572 -> 388
  with depth 4. The skips are centre-cropped to the upsampled map before the concatenation,
  and the input side must let every pooling meet an even size (for depth 4: 188, 204, 220, ...,
  572, ...). The border lost is the context the network sees around each output pixel: tiling a
  large image with input tiles overlapping by that border gives the whole-image answer (the
  paper's overlap-tile strategy; :meth:`UNet.input_size_for` sizes the tiles).

Options (``model.options``): ``width`` (channels of the first level; paper 64, default 16 so
that a CPU trains it), ``depth`` (number of poolings; paper 4), ``padding``, ``batch_norm``
(after every 3x3 convolution; the paper predates it), ``up`` ('transpose': the paper's learned
2x2 up-convolution; 'bilinear': bilinear upsampling then a 1x1 convolution halving the
channels, which avoids checkerboard artefacts), ``dropout`` (at the end of the contracting
path, as the paper does; 0 turns it off).
"""

from __future__ import annotations

import torch
import torch.fx
from torch import Tensor, nn

from cnnkit.errors import UserError, did_you_mean
from cnnkit.models.registry import register_model
from cnnkit.models.segmentation.base import Segmenter

PADDINGS = ("same", "valid")
UPSAMPLINGS = ("transpose", "bilinear")


# --------------------------------------------------------------------------- building blocks


class DoubleConv(nn.Sequential):
    """Two 3x3 convolutions, each followed by batch norm (optional) and ReLU: one level's work.
    With 'valid' padding each convolution loses one pixel on every side."""

    def __init__(self, c_in: int, c_out: int, pad: int, batch_norm: bool) -> None:
        layers: list[nn.Module] = []
        for c in (c_in, c_out):
            layers.append(nn.Conv2d(c, c_out, 3, padding=pad, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm2d(c_out))
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


def centre_crop(x: Tensor, h: int, w: int) -> Tensor:
    """The central ``h x w`` window of ``x`` (..., H, W): the paper's cropping of the skips."""
    top, left = (x.shape[-2] - h) // 2, (x.shape[-1] - w) // 2
    return x[..., top:top + h, left:left + w]


class UpStep(nn.Module):
    """One level of the expanding path: upsample 2x with half the channels, concatenate the skip
    (centre-cropped to the upsampled size), two 3x3 convolutions."""

    def __init__(self, c_in: int, c_out: int, pad: int, batch_norm: bool, up: str) -> None:
        super().__init__()
        if up == "transpose":  # the paper's "2x2 up-convolution that halves the number of channels"
            self.up = nn.ConvTranspose2d(c_in, c_out, kernel_size=2, stride=2)
        else:
            self.up = nn.Sequential(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                                    nn.Conv2d(c_in, c_out, kernel_size=1))
        self.conv = DoubleConv(2 * c_out, c_out, pad, batch_norm)

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        x = self.up(x)
        skip = centre_crop(skip, x.shape[-2], x.shape[-1])
        return self.conv(torch.cat([skip, x], dim=1))


# --------------------------------------------------------------------------- the model


class UNet(Segmenter):
    """``x (N, C, S, S) -> logits (N, K, s, s)``, ``s = output_size(S)``."""

    def __init__(self, num_classes: int, in_chans: int, width: int = 16, depth: int = 4, padding: str = "same",
                 batch_norm: bool = True, up: str = "transpose", dropout: float = 0.5) -> None:
        super().__init__("unet", num_classes)
        _check_options(width, depth, padding, up, dropout)
        self.depth = depth
        self.padding = padding
        self.pad_multiple = 2 ** depth
        pad = 1 if padding == "same" else 0
        widths = [width * 2 ** i for i in range(depth + 1)]  # channels per level, bottom last
        # Contracting path: a double convolution per level, its output kept for the skip, then pooling.
        self.down = nn.ModuleList(DoubleConv(c_in, c_out, pad, batch_norm)
                                  for c_in, c_out in zip([in_chans] + widths[:-2], widths[:-1]))
        self.pool = nn.MaxPool2d(2)
        self.bottom = DoubleConv(widths[-2], widths[-1], pad, batch_norm)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        # Expanding path, from the bottom up: each step halves the channels.
        self.up = nn.ModuleList(UpStep(widths[i + 1], widths[i], pad, batch_norm, up)
                                for i in reversed(range(depth)))
        self.classify = nn.Conv2d(width, num_classes, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        self.check_input(x)
        skips = []
        for level in self.down:
            x = level(x)
            skips.append(x)
            x = self.pool(x)
        x = self.dropout(self.bottom(x))
        for step, skip in zip(self.up, reversed(skips)):
            x = step(x, skip)
        return self.classify(x)

    # -- geometry

    def _walk(self, side: int) -> int | None:
        """The output side for an input side, following each layer; None where a pooling meets an odd
        side or a map vanishes."""
        lost = 0 if self.padding == "same" else 4  # two 3x3 convolutions per level
        for _ in range(self.depth):
            side -= lost
            if side < 2 or side % 2:
                return None
            side //= 2
        side -= lost  # the bottom
        for _ in range(self.depth):
            side = 2 * side - lost
            if side < 1:
                return None
        return side

    def smallest_input(self) -> int:
        """The smallest input side this U-Net takes."""
        side = 1
        while self._walk(side) is None:
            side += 1
        return side

    def valid_sides_near(self, side: int) -> list[int]:
        """The valid input sides next to ``side``: the one below (if any) and the one above."""
        low = self.smallest_input()
        step = self.pad_multiple  # valid sides are evenly spaced, one per 2**depth pixels
        if side <= low:
            return [low]
        below = low + (side - low) // step * step
        return [below] if below == side else [below, below + step]

    def output_size(self, side: int) -> int:
        """The output side for input side ``side`` ('same': ``side``; 'valid': smaller, 572 -> 388 at depth 4)."""
        if self.padding == "same":
            return int(side)
        out = self._walk(int(side))
        if out is None:
            raise UserError(self._bad_side_message(int(side)))
        return out

    def input_size_for(self, output_side: int) -> int:
        """The input side whose output covers ``output_side`` pixels ('same': ``output_side``; 'valid': the
        smallest valid side with at least that output, e.g. 388 -> 572 at depth 4)."""
        if self.padding == "same":
            return int(output_side)
        # Convolutions do not care where they are: one more pooling-step of input (2**depth pixels)
        # gives 2**depth more pixels of output, so the valid sides lose a constant border.
        low = self.smallest_input()
        border = low - self._walk(low)
        step = self.pad_multiple
        need = max(0, int(output_side) - (low - border))
        return low + -(-need // step) * step

    def check_input(self, x: Tensor) -> None:
        if self.padding == "same" or isinstance(x, torch.fx.Proxy):
            return super().check_input(x)
        for side in (int(x.shape[-2]), int(x.shape[-1])):
            if self._walk(side) is None:
                raise UserError(self._bad_side_message(side))

    def _bad_side_message(self, side: int) -> str:
        low = self.smallest_input()
        near = " or ".join(map(str, self.valid_sides_near(side)))
        if side < low:
            return (f"unet with padding 'valid' and depth {self.depth} needs input sides of at least {low} "
                    f"(its output is then {self._walk(low)}), got {side}; use {low} or more, or padding 'same'")
        return (f"unet with padding 'valid' and depth {self.depth} takes the input sides where every 2x2 "
                f"pooling meets an even size ({low}, {low + self.pad_multiple}, {low + 2 * self.pad_multiple}, "
                f"... every {self.pad_multiple}), got {side}; the nearest are {near}")


def _check_options(width: int, depth: int, padding: str, up: str, dropout: float) -> None:
    if padding not in PADDINGS:
        raise UserError(f"unet: padding={padding!r} is not one of {', '.join(PADDINGS)}"
                        f"{did_you_mean(padding, PADDINGS)}")
    if up not in UPSAMPLINGS:
        raise UserError(f"unet: up={up!r} is not one of {', '.join(UPSAMPLINGS)}{did_you_mean(up, UPSAMPLINGS)}")
    if not isinstance(width, int) or width < 1:
        raise UserError(f"unet: width={width!r} must be a positive integer (channels of the first level; paper 64)")
    if not isinstance(depth, int) or depth < 1:
        raise UserError(f"unet: depth={depth!r} must be a positive integer (number of poolings; paper 4)")
    if not 0.0 <= dropout < 1.0:
        raise UserError(f"unet: dropout={dropout!r} must be in [0, 1) (0 turns it off; paper 0.5)")


@register_model("unet", "U-Net (Ronneberger et al. 2015): contracting and expanding paths with skips; "
                "options width, depth, padding same|valid, batch_norm, up transpose|bilinear, dropout",
                default_input=(1, 256, 256), min_input=(1, 2, 2), task="segmentation")
def unet(num_classes: int = 2, in_chans: int = 1, input_size: int = 256, width: int = 16, depth: int = 4,
         padding: str = "same", batch_norm: bool = True, up: str = "transpose", dropout: float = 0.5) -> UNet:
    """A U-Net for ``input_size`` x ``input_size`` images; ``padding='valid'`` is the paper's geometry::

        unet(num_classes=2, in_chans=1, input_size=572, width=64, padding="valid").output_size(572)  # 388
    """
    model = UNet(num_classes, in_chans, width, depth, padding, batch_norm, up, dropout)
    if padding == "valid":
        if model._walk(input_size) is None:
            raise UserError(model._bad_side_message(input_size))
    elif input_size < model.pad_multiple:
        raise UserError(f"unet with depth {depth} halves the image {depth} times and needs inputs of at least "
                        f"{model.pad_multiple}x{model.pad_multiple} pixels, got {input_size}x{input_size}; "
                        f"set data.image_size={model.pad_multiple} or more, or a smaller depth")
    return model
