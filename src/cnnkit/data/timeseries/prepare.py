"""From series as read (float64 (C, L_i), NaN where missing, lengths that may differ) to one float32
array ``(N, C', L)`` that a network takes.

Three steps, in this order, for every series on its own:

1. missing values (:func:`fill_missing`, ``data.missing``): interpolated linearly along time within each
   channel (the ends held at the first / last value known; a channel with no value at all becomes
   zeros), set to zero, or an error;
2. z-normalisation (:func:`znormalise`, ``data.znorm``): each channel of each series to mean 0 and
   standard deviation 1 (the population's, ``ddof=0``); a constant channel becomes zeros;
3. one length (:func:`to_array`, ``data.unequal_length``, ``data.series_length``):

   * ``pad``: every series zero-padded after its end up to ``L`` (a longer one cut to its first ``L``
     values). When the *training* series are of different lengths a mask channel is appended
     (1 where a value is real, 0 where padding), so ``C' = C + 1``; a training set of one length gets
     no mask (``C' = C``), even when ``data.series_length`` pads or cuts it;
   * ``resample``: every series whose length is not ``L`` linearly interpolated to ``L`` points
     (first and last value kept), so ``C' = C``.

   ``L`` is ``data.series_length``, else the longest training series.

Whether there is a mask and what ``L`` is are fixed once, on the training split, in a
:class:`SeriesLayout` (saved with the run as JSON), and applied unchanged to the validation and test
series and to new series at eval / predict time (:func:`prepare_series`): a series is never
prepared differently because of the other series it comes with.

Example::

    layout = SeriesLayout.fit(train.series, mode="pad")        # from the training split
    x = prepare_series(new.series, layout)                     # torch.float32 (N, C', L)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal, Sequence

import numpy as np

from cnnkit.errors import UserError

MODES = ("pad", "resample")
MISSING = ("interpolate", "zero", "error")


def fill_missing(x: np.ndarray, how: str = "interpolate", index: int | None = None,
                 source: str | None = None) -> np.ndarray:
    """``x`` (C, L) with its NaN replaced: ``interpolate`` (linear along time per channel, the ends held;
    a channel without any value becomes zeros), ``zero``, or ``error`` (a UserError naming series
    ``index`` of ``source``). A copy when anything changes; float64."""
    x = np.asarray(x, dtype=np.float64)
    if how not in MISSING:
        raise UserError(f"data.missing={how!r}; allowed: {', '.join(MISSING)}")
    nan = np.isnan(x)
    if not nan.any():
        return x
    if how == "error":
        channel, step = (int(v[0]) for v in np.nonzero(nan))
        where = f" of {source!r}" if source else ""
        which = f"series {index}" if index is not None else "a series"
        raise UserError(f"{which}{where} has a missing value (channel {channel}, step {step}); set data.missing to "
                        f"interpolate or zero to fill it")
    out = x.copy()
    if how == "zero":
        out[nan] = 0.0
        return out
    t = np.arange(x.shape[1], dtype=np.float64)
    for c in range(x.shape[0]):
        known = ~nan[c]
        if not known.any():
            out[c] = 0.0
        elif not known.all():
            out[c] = np.interp(t, t[known], x[c, known])  # np.interp holds the ends
    return out


def znormalise(x: np.ndarray) -> np.ndarray:
    """Each channel of ``x`` (C, L) to mean 0 and standard deviation 1 (ddof=0); a constant channel
    (standard deviation below 1e-12 of its scale) becomes zeros. float64, no NaN for NaN-free input."""
    x = np.asarray(x, dtype=np.float64)
    mean = x.mean(axis=1, keepdims=True)
    std = x.std(axis=1, keepdims=True)
    flat = std <= 1e-12 * np.maximum(1.0, np.abs(mean))
    return np.where(flat, 0.0, (x - mean) / np.where(flat, 1.0, std))


def resample(x: np.ndarray, length: int) -> np.ndarray:
    """``x`` (C, L_i) linearly interpolated to ``length`` points spread evenly from its first to its last
    value (a series of one value repeated)."""
    x = np.asarray(x, dtype=np.float64)
    n = x.shape[1]
    if n == length:
        return x
    if n == 1:
        return np.repeat(x, length, axis=1)
    pos = np.linspace(0.0, n - 1.0, length)
    t = np.arange(n, dtype=np.float64)
    return np.stack([np.interp(pos, t, row) for row in x])


def to_array(series: Sequence[np.ndarray], mode: str = "pad", length: int | None = None,
             mask: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Series (C, L_i) (filled and normalised) -> ``(X float32 (N, C', L), lengths int64 (N,))``, the
    lengths being the series' own. ``mode`` ``pad``: zeros after each end up to ``length`` (default:
    the longest), longer series cut; a mask channel (1 real, 0 padding) is appended when ``mask`` is
    True, or, with ``mask`` None, when the lengths differ. ``resample``: each series interpolated to
    ``length`` (default: the longest); never a mask."""
    if mode not in MODES:
        raise UserError(f"data.unequal_length={mode!r}; allowed: {', '.join(MODES)}")
    if not len(series):
        raise UserError("there are no series to prepare")
    lengths = np.array([s.shape[1] for s in series], dtype=np.int64)
    channels = series[0].shape[0]
    L = int(length) if length is not None else int(lengths.max())
    if L < 1:
        raise UserError(f"data.series_length={L} must be at least 1")
    if mode == "resample":
        if mask:
            raise ValueError("resampled series have no mask channel")
        out = np.stack([resample(s, L) for s in series]).astype(np.float32)
        return out, lengths
    if mask is None:
        mask = bool(len(set(lengths.tolist())) > 1)
    out = np.zeros((len(series), channels + int(mask), L), dtype=np.float32)
    for i, s in enumerate(series):
        n = min(int(s.shape[1]), L)
        out[i, :channels, :n] = s[:, :n]
        if mask:
            out[i, channels, :n] = 1.0
    return out, lengths


@dataclass
class SeriesLayout:
    """How series become a network's input, fixed on the training split: ``channels`` read (C),
    ``length`` (L), ``mode`` (pad / resample), ``mask`` (a padding-mask channel appended), ``znorm``,
    ``missing``. JSON-able (:meth:`to_dict` / :meth:`from_dict`)."""

    channels: int
    length: int
    mode: Literal["pad", "resample"] = "pad"
    mask: bool = False
    znorm: bool = True
    missing: Literal["interpolate", "zero", "error"] = "interpolate"

    @property
    def input_channels(self) -> int:
        """The channels a network sees: C, plus one with the mask."""
        return self.channels + int(self.mask)

    @property
    def input_shape(self) -> tuple[int, int]:
        return (self.input_channels, self.length)

    @classmethod
    def fit(cls, series: Sequence[np.ndarray], mode: str = "pad", length: int | None = None, znorm: bool = True,
            missing: str = "interpolate") -> "SeriesLayout":
        """The layout of these (training) series: ``length`` or the longest; a mask in ``pad`` mode when
        their lengths differ."""
        if mode not in MODES:
            raise UserError(f"data.unequal_length={mode!r}; allowed: {', '.join(MODES)}")
        if missing not in MISSING:
            raise UserError(f"data.missing={missing!r}; allowed: {', '.join(MISSING)}")
        if not len(series):
            raise UserError("the training split holds no series")
        lengths = {int(s.shape[1]) for s in series}
        if length is not None and length < 2:
            raise UserError(f"data.series_length={length} must be at least 2")
        return cls(channels=int(series[0].shape[0]), length=int(length) if length is not None else max(lengths),
                   mode=mode, mask=mode == "pad" and len(lengths) > 1, znorm=bool(znorm), missing=missing)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SeriesLayout":
        known = {"channels", "length", "mode", "mask", "znorm", "missing"}
        unknown = sorted(set(d) - known)
        missing = sorted({"channels", "length"} - set(d))
        if unknown or missing:
            raise UserError(f"a series layout has keys {sorted(d)}; it needs channels and length, and may have "
                            f"{', '.join(sorted(known - {'channels', 'length'}))}")
        out = cls(**{k: d[k] for k in known if k in d})
        if out.mode not in MODES or out.missing not in MISSING or out.channels < 1 or out.length < 1:
            raise UserError(f"a series layout has bad values: {d}")
        out.channels, out.length, out.mask, out.znorm = int(out.channels), int(out.length), bool(out.mask), \
            bool(out.znorm)
        return out


def prepare_series(series: Sequence[np.ndarray], layout: SeriesLayout, source: str | None = None,
                   index: Sequence[int] | None = None):
    """Series (C, L_i) as read -> ``torch.float32 (N, C', L)``, prepared as ``layout`` says (filled,
    normalised, padded with the layout's mask or resampled to its length). ``source`` and ``index``
    (each series' position in its file) name a bad series in messages."""
    import torch

    if not len(series):
        return torch.zeros((0, layout.input_channels, layout.length), dtype=torch.float32)
    where = f" of {source!r}" if source else ""
    ready = []
    for k, s in enumerate(series):
        i = index[k] if index is not None else k
        if s.ndim != 2 or s.shape[0] != layout.channels:
            got = s.shape[0] if s.ndim == 2 else f"shape {tuple(s.shape)}"
            raise UserError(f"series {i}{where} has {got} channels; the run was trained on series of "
                            f"{layout.channels}")
        s = fill_missing(s, layout.missing, i, source)
        ready.append(znormalise(s) if layout.znorm else s)
    x, _ = to_array(ready, layout.mode, layout.length, mask=layout.mask if layout.mode == "pad" else None)
    return torch.from_numpy(x)
