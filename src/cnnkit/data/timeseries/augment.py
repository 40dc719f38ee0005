"""Augmentations of time series, on whole batches ``(N, C, L)`` on the batch's device (Um et al. 2017;
Le Guennec, Malinowski & Tavenard 2016), each series drawing its own:

* ``window_slice`` s: a window of ``1 - s`` of the series, at a random place, stretched back to the
  series' length (linear interpolation);
* ``window_warp`` r: a window of ``r`` of the series, at a random place, slowed down (stretched to 2x
  its duration) or sped up (squeezed to 0.5x), the whole series then brought back to its length;
* ``scaling`` σ: each channel multiplied by a factor drawn from N(1, σ²);
* ``jitter`` σ: Gaussian noise of standard deviation σ added to each value.

Each is off at 0; with all off the batch is returned as it came. The two warps come first, then
scaling, then jitter.

A padded batch (:mod:`~cnnkit.data.timeseries.prepare`) carries its padding mask as the last channel
(``mask_channel=True``): the mask is left as it is, and each series is warped within its real length
(the mask's ones) with its padding kept at zero, so data and mask still agree; jitter is added only
where the mask is 1.

Example::

    aug = SeriesAugment(jitter=0.03, window_warp=0.1)
    x = aug(x, torch.Generator().manual_seed(0))    # same shape, same device
"""

from __future__ import annotations

import torch


def _uniform(n: int, g: torch.Generator | None, device: torch.device) -> torch.Tensor:
    where = g.device if g is not None else device
    return torch.rand(n, generator=g, device=where).to(device)


def _normal(shape: tuple[int, ...], g: torch.Generator | None, device: torch.device) -> torch.Tensor:
    where = g.device if g is not None else device
    return torch.randn(shape, generator=g, device=where).to(device)


def sample_at(x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """``x`` (N, C, L) read at fractional time positions ``pos`` (N, L') by linear interpolation
    (positions clamped to ``[0, L - 1]``) -> (N, C, L')."""
    n, c, length = x.shape
    pos = pos.clamp(0, length - 1)
    lo = pos.floor().long().clamp(max=length - 1)
    hi = (lo + 1).clamp(max=length - 1)
    w = (pos - lo.to(pos.dtype)).unsqueeze(1)
    lo = lo.unsqueeze(1).expand(n, c, -1)
    hi = hi.unsqueeze(1).expand(n, c, -1)
    return torch.gather(x, 2, lo) * (1 - w) + torch.gather(x, 2, hi) * w


class SeriesAugment:
    """A callable ``(x (N, C, L), generator=None) -> (N, C, L)`` (see the module's docstring).
    ``mask_channel``: the last channel is a padding mask, left alone."""

    def __init__(self, jitter: float = 0.0, scaling: float = 0.0, window_slice: float = 0.0,
                 window_warp: float = 0.0, mask_channel: bool = False) -> None:
        for name, v in (("jitter", jitter), ("scaling", scaling)):
            if v < 0:
                raise ValueError(f"augment.{name} must be >= 0, got {v}")
        for name, v in (("window_slice", window_slice), ("window_warp", window_warp)):
            if not 0 <= v < 1:
                raise ValueError(f"augment.{name} is a fraction of the series in [0, 1), got {v}")
        self.jitter, self.scaling = float(jitter), float(scaling)
        self.window_slice, self.window_warp = float(window_slice), float(window_warp)
        self.mask_channel = bool(mask_channel)

    @property
    def active(self) -> bool:
        return bool(self.jitter or self.scaling or self.window_slice or self.window_warp)

    def __repr__(self) -> str:
        return (f"SeriesAugment(jitter={self.jitter}, scaling={self.scaling}, window_slice={self.window_slice}, "
                f"window_warp={self.window_warp}, mask_channel={self.mask_channel})")

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if not self.active or x.numel() == 0:
            return x
        if x.ndim != 3:
            raise ValueError(f"SeriesAugment takes a batch (N, C, L), got shape {tuple(x.shape)}")
        dtype, device = x.dtype, x.device
        x = x.float()
        if self.mask_channel:
            data, mask = x[:, :-1], x[:, -1:]
            lengths = mask[:, 0].sum(1).round().clamp(min=1)
        else:
            data, mask = x, None
            lengths = torch.full((len(x),), float(x.shape[2]), device=device)
        n, c, length = data.shape
        if self.window_slice:
            data = sample_at(data, self._slice_positions(lengths, length, generator, device))
        if self.window_warp:
            data = sample_at(data, self._warp_positions(lengths, length, generator, device))
        if self.scaling:
            data = data * (1 + self.scaling * _normal((n, c, 1), generator, device))
        if self.jitter:
            noise = self.jitter * _normal((n, c, length), generator, device)
            data = data + (noise * mask if mask is not None else noise)
        out = torch.cat([data, mask], 1) if mask is not None else data
        return out.to(dtype)

    def _slice_positions(self, lengths: torch.Tensor, length: int, g: torch.Generator | None,
                         device: torch.device) -> torch.Tensor:
        """Where each output step reads: a window of ``1 - window_slice`` of the real length, spread
        over the real length; padding steps read themselves (zeros)."""
        u = _uniform(len(lengths), g, device)
        keep = ((1 - self.window_slice) * lengths).round().clamp(min=2)
        keep = torch.minimum(keep, lengths)
        start = (u * (lengths - keep + 1)).floor().clamp(max=lengths - keep).clamp(min=0)
        j = torch.arange(length, device=device, dtype=torch.float32).unsqueeze(0)
        step = (keep - 1) / (lengths - 1).clamp(min=1)
        pos = start.unsqueeze(1) + j * step.unsqueeze(1)
        return torch.where(j < lengths.unsqueeze(1), pos, j)

    def _warp_positions(self, lengths: torch.Tensor, length: int, g: torch.Generator | None,
                        device: torch.device) -> torch.Tensor:
        """Where each output step reads: the series with a window of ``window_warp`` of its real length
        stretched 2x or squeezed 0.5x, resampled back to the real length; padding steps read themselves."""
        u = _uniform(len(lengths), g, device)
        up = _uniform(len(lengths), g, device) < 0.5
        k = torch.where(up, torch.full_like(u, 0.5), torch.full_like(u, 2.0)).unsqueeze(1)
        w = (self.window_warp * lengths).round().clamp(min=1)
        w = torch.minimum(w, lengths).unsqueeze(1)
        start = (u * (lengths - w[:, 0] + 1)).floor().clamp(min=0).unsqueeze(1)
        start = torch.minimum(start, lengths.unsqueeze(1) - w)
        n_real = lengths.unsqueeze(1)
        warped = n_real + w * (k - 1)  # the warped series' duration
        j = torch.arange(length, device=device, dtype=torch.float32).unsqueeze(0)
        t = j * (warped - 1) / (n_real - 1).clamp(min=1)  # output step -> warped time
        inside = start + (t - start) / k
        after = t - w * (k - 1)
        src = torch.where(t < start, t, torch.where(t < start + w * k, inside, after))
        src = torch.minimum(src, n_real - 1)
        return torch.where(j < n_real, src, j)
