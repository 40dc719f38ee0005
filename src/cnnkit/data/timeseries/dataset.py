"""The ``series`` dataset (task ``timeseries``: a class per whole series).

``data.path`` is a series file (:mod:`~cnnkit.data.timeseries.formats`: ``.ts``, ``.csv``, ``.tsv``,
``.npz``, ``.npy``) or a folder holding one ``NAME_TRAIN.<suffix>`` file and, optionally, its
``NAME_TEST.<suffix>`` (the UCR/UEA archive's layout). A test file is read only in that folder layout,
when the folder given holds it: naming ``GunPoint_TRAIN.ts`` itself never reads ``GunPoint_TEST.ts``.

Unlike the image datasets, this one cuts its held-out validation split itself (stratified:
``data.val_fraction`` of every class, chosen by ``data.split_seed``, as the data layer's own split
does), because the way series become arrays (:class:`~cnnkit.data.timeseries.prepare.SeriesLayout`:
the length, and a padding-mask channel when lengths differ) must be fixed on the training split
alone. The layout is in ``bundle.extra["series_layout"]`` (JSON) and is applied unchanged to the
validation and test series, and by eval / predict to new ones. ``data.val_fraction`` must be above 0:
the trainer scores every epoch on the validation series and keeps the best, and a folder's test file
is never used for that.

Items are ``(x float32 (C', L), label)``; ``input_shape`` is ``(C', L)``; the series are already
normalised (each on its own), so the bundle's ``mean`` / ``std`` are ``(0.0,)`` / ``(1.0,)``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import torch

from cnnkit.config import DataConfig
from cnnkit.data.base import DataBundle
from cnnkit.data.registry import register_dataset
from cnnkit.data.splits import stratified_split
from cnnkit.data.timeseries.formats import SUFFIXES, SeriesData, read_series
from cnnkit.data.timeseries.prepare import SeriesLayout, prepare_series
from cnnkit.errors import UserError

SERIES_OPTIONS = ("data.path, data.label_column, data.val_fraction, data.split_seed, data.znorm, data.missing, "
                  "data.unequal_length and data.series_length")


class SeriesTensors:
    """A split of prepared series: ``x`` float32 (N, C', L), ``targets[i]`` the class of series ``i``,
    ``lengths[i]`` its length before padding or resampling. Items ``(x[i], targets[i])``."""

    def __init__(self, x: torch.Tensor, targets: Sequence[int], lengths: Sequence[int] | None = None) -> None:
        if x.ndim != 3 or len(x) != len(targets):
            raise ValueError(f"series (N, C, L) and one target each, got {tuple(x.shape)} and {len(targets)}")
        self.x, self.targets = x, [int(t) for t in targets]
        self.lengths = [int(n) for n in lengths] if lengths is not None else [x.shape[2]] * len(x)

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.x[i], self.targets[i]

    def subset(self, index: Sequence[int] | torch.Tensor) -> "SeriesTensors":
        idx = torch.as_tensor(index, dtype=torch.long)
        return SeriesTensors(self.x[idx], [self.targets[i] for i in idx.tolist()],
                             [self.lengths[i] for i in idx.tolist()])


def stratified_indices(targets: Sequence[int], fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Indices (train, val), each sorted: ``round(fraction * n_c)`` series of every class ``c`` go to val,
    chosen by ``seed``: the data layer's :func:`~cnnkit.data.splits.stratified_split`, as lists."""
    if not len(targets):
        return [], []
    tr, va = stratified_split(torch.as_tensor(list(targets), dtype=torch.long), fraction, seed)
    return tr.tolist(), va.tolist()


def _reject_other_options(cfg: DataConfig) -> None:
    for key in ("image_size", "crop_size", "mask_values", "annotations", "class_names", "text_column", "max_vocab",
                "max_length", "time_column", "value_columns", "target_columns", "lookback", "season"):
        value = getattr(cfg, key)
        if value is not None:
            kind = "a forecast" if key in ("time_column", "value_columns", "target_columns", "lookback", "season") \
                else ("a text" if key in ("text_column", "max_vocab", "max_length") else "an image")
            raise UserError(f"data.{key}={value!r} is {kind} option; the series dataset takes {SERIES_OPTIONS}")
    defaults = {"tokenizer": "word", "min_freq": 1, "lowercase": True, "window_norm": "none"}
    for key, default in defaults.items():
        value = getattr(cfg, key)
        if value != default:
            kind = "a forecast" if key == "window_norm" else "a text"
            raise UserError(f"data.{key}={value!r} is {kind} option; the series dataset takes {SERIES_OPTIONS}")


def series_files(path: str | Path) -> tuple[Path, Path | None]:
    """``(training file, test file or None)`` of ``data.path``: the file itself, or a folder's
    ``NAME_TRAIN.<suffix>`` and its ``NAME_TEST.<suffix>`` if the folder holds it."""
    root = Path(path)
    if not root.exists():
        raise UserError(f"data.path {str(root)!r} does not exist")
    if root.is_file():
        return root, None
    trains = sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() in SUFFIXES
                    and p.stem.upper().endswith("_TRAIN"))
    if not trains:
        raise UserError(f"data.path {str(root)!r} is a folder without a NAME_TRAIN file ({', '.join(SUFFIXES)}); "
                        f"give a series file, or a folder holding NAME_TRAIN.ts (and NAME_TEST.ts)")
    if len(trains) > 1:
        names = ", ".join(p.name for p in trains[:6]) + (", ..." if len(trains) > 6 else "")
        raise UserError(f"data.path {str(root)!r} holds {len(trains)} training files ({names}); name one of them "
                        f"(data.path={str(trains[0])!r}) or a folder of one data set")
    train = trains[0]
    stem = train.stem[: -len("_TRAIN")]
    tests = [p for p in root.iterdir() if p.is_file() and p.suffix.lower() == train.suffix.lower()
             and p.stem.upper() == f"{stem}_TEST".upper()]
    return train, (tests[0] if tests else None)


def _counts(data: SeriesData, targets: Sequence[int]) -> str:
    counts = torch.bincount(torch.as_tensor(list(targets), dtype=torch.long), minlength=len(data.classes)).tolist()
    shown = ", ".join(f"{c} {n}" for c, n in list(zip(data.classes, counts))[:6])
    return shown + (", ..." if len(data.classes) > 6 else "")


@register_dataset("series", "time-series classification (task timeseries): a UCR/UEA .ts file, a .csv/.tsv of one "
                            "series per row (label first), an .npz (X, y) or .npy (+ STEM_labels.npy), or a folder "
                            "with NAME_TRAIN.* (and NAME_TEST.*); data.path")
def series(cfg: DataConfig) -> DataBundle:
    _reject_other_options(cfg)
    if not cfg.path:
        raise UserError("data.name=series needs data.path: a .ts, .csv, .tsv, .npz or .npy file of labelled series, "
                        "or a folder holding NAME_TRAIN.ts (and NAME_TEST.ts)")
    train_path, test_path = series_files(cfg.path)
    data = read_series(train_path, cfg.label_column)
    test = read_series(test_path, cfg.label_column, classes=data.classes) if test_path is not None else None
    if cfg.val_fraction <= 0:
        # The trainer scores every epoch on a validation split and keeps the best epoch; the test file
        # (when the folder has one) must not be it: nothing may be chosen on the test series.
        most = max(torch.bincount(torch.as_tensor(list(data.targets), dtype=torch.long)).tolist())
        smallest = math.floor(1000 * 0.5 / most) / 1000 + 0.001  # round(f * most) >= 1
        raise UserError(f"data.val_fraction={cfg.val_fraction}: task timeseries needs validation series (the "
                        f"trainer scores every epoch on them and keeps the best as best.pt), held out of "
                        f"{str(train_path)!r}; set data.val_fraction > 0 (e.g. 0.2; the smallest that holds out a "
                        f"series, of the largest class, is {smallest:g}), with train.eval_every=0 to score them "
                        f"once, after the last epoch, and keep the last weights")
    tr, va = stratified_indices(data.targets, cfg.val_fraction, cfg.split_seed)
    if not tr:
        raise UserError(f"the training split of {str(train_path)!r} is empty; lower data.val_fraction "
                        f"(got {cfg.val_fraction})")
    layout = SeriesLayout.fit([data.series[i] for i in tr], cfg.unequal_length, cfg.series_length, cfg.znorm,
                              cfg.missing)

    def split(d: SeriesData, index: list[int], source: Path) -> SeriesTensors:
        x = prepare_series([d.series[i] for i in index], layout, str(source), index)
        return SeriesTensors(x, [d.targets[i] for i in index], [d.series[i].shape[1] for i in index])

    train = split(data, tr, train_path)
    val = split(data, va, train_path)
    test_split = split(test, list(range(len(test))), test_path) if test is not None else None
    lengths = sorted(set(data.lengths))
    shown_len = str(lengths[0]) if len(lengths) == 1 else f"{lengths[0]}-{lengths[-1]}"
    how = {True: f"padded to {layout.length} + mask", False: f"to {layout.length}"}[layout.mask] \
        if layout.mode == "pad" else f"resampled to {layout.length}"
    description = (f"series {cfg.path}: {len(data)} series, {data.channels} channel{'s' if data.channels > 1 else ''}, "
                   f"length {shown_len} ({how}), {len(data.classes)} classes ({_counts(data, data.targets)})"
                   + (f", {len(test)} test" if test is not None else ""))
    return DataBundle(train=train, val=val, test=test_split, classes=list(data.classes),
                      input_shape=layout.input_shape, mean=(0.0,), std=(1.0,), description=description,
                      extra={"task": "timeseries", "series_layout": layout.to_dict()})
