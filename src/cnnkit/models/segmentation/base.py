"""What every semantic segmentation model answers, besides ``model(x) -> logits``.

The segmentation task pads, crops and tiles images without knowing which network it holds; it
asks the model three questions:

* ``pad_multiple``: input sides must be a multiple of it (``2 ** depth`` for a 'same' U-Net, 32
  for FCN-16s/8s, 1 for the heads that resize their output to the input); the task pads to it.
* ``output_size(side)``: the side of the logits for an input side (smaller than ``side`` only for
  the U-Net paper's 'valid' convolutions, whose masks the task centre-crops to the output).
* ``input_size_for(output_side)``: the input side whose output covers ``output_side`` pixels:
  ``output_side`` itself for the models whose output has the input's size (the task pads to
  ``pad_multiple`` and cuts the output back), the smallest valid input side with at least that
  output for a valid U-Net (overlap-tile).
"""

from __future__ import annotations

import torch
import torch.fx
from torch import Tensor, nn

from cnnkit.errors import UserError


class Segmenter(nn.Module):
    """Base of the semantic models: ``x (N, C, H, W) -> logits (N, K, h, w)``; ``h, w = H, W`` unless a
    subclass says otherwise through :meth:`output_size`."""

    pad_multiple: int = 1

    def __init__(self, name: str, num_classes: int) -> None:
        super().__init__()
        self.name = name
        self.num_classes = num_classes

    def output_size(self, side: int) -> int:
        """The output side for an input side: the same side here."""
        return int(side)

    def input_size_for(self, output_side: int) -> int:
        """The input side for an output of ``output_side`` pixels: the same side here."""
        return int(output_side)

    def check_input(self, x: Tensor) -> None:
        """A UserError unless both sides of ``x`` are multiples of :attr:`pad_multiple`."""
        if isinstance(x, torch.fx.Proxy):  # traced for its graph (receptive fields): no sizes to check
            return
        m = self.pad_multiple
        h, w = int(x.shape[-2]), int(x.shape[-1])
        if m > 1 and (h % m or w % m):
            raise UserError(f"{self.name} takes input sides that are multiples of {m}, got {h}x{w}; pad the "
                            f"image to {_round_up(h, m)}x{_round_up(w, m)} (the segmentation task does)")


def _round_up(v: int, m: int) -> int:
    return -(-v // m) * m


def stride_probe(input_size: int) -> int:
    """The side of the probe image on which a backbone's strides are measured: ``input_size`` rounded up
    to a multiple of 32, so that every stride up to 32 divides it (at 100 px a stride-16 map is 7 wide,
    which would read as stride 14)."""
    return _round_up(int(input_size), 32)
