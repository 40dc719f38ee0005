"""The ``forecast`` dataset (task ``forecast``): windows of ``data.lookback`` steps of a multivariate
series, each followed by the ``data.horizon`` steps of the target columns to predict.

The series comes from a CSV/TSV file (:func:`read_forecast_csv`: one row per time step, a header row
naming the columns) or from a data set bundled with statsmodels (``data.path: statsmodels:NAME``,
:data:`STATSMODELS_SETS`, read offline):

============================  =========  ======================================================
NAME                          steps      columns (time stamps)
============================  =========  ======================================================
``sunspots``                  yearly     SUNACTIVITY (1700-2008)
``nile``                      yearly     volume, the Nile's flow at Aswan (1871-1970)
``co2``                       weekly     co2 at Mauna Loa (1958-2001; 59 weeks missing)
``elnino``                    monthly    temperature, sea surface, El Nino region (1950-2010)
``elec_equip``                monthly    elec_equip, euro-area orders of electrical equipment
``macrodata``                 quarterly  realgdp, realcons, ... (12 US macro series, 1959-2009)
``danish_data``               quarterly  lrm, lry, lpy, ibo, ide (Danish money demand)
``interest_inflation``        quarterly  Dp, R (German inflation and interest rate)
============================  =========  ======================================================

How the windows are cut (time order, never shuffled across the split): the last ``data.val_fraction``
of the steps is the validation part. A training window lies wholly in the training part (its targets
too); a validation window's targets lie wholly in the validation part, its inputs may reach back into
the training part. So no training target is a validation target, and consecutive windows overlap
(stride 1). Every column is scaled by the mean and standard deviation of the *training* part alone;
items are ``(x float32 (C, lookback), y float32 (T, horizon))`` in those scaled units, ``T`` the
target columns. Missing values (empty cells, NaN) follow ``data.missing``. ``data.val_fraction`` must
be above 0: the trainer scores every epoch on the validation part and keeps the best one.

``data.window_norm`` (:data:`WINDOW_NORMS`, saved in the layout): per-window ("instance")
normalisation, as N-BEATS (Oreshkin et al. 2020) and RevIN (Kim et al. 2022) do it, location only.
With ``last`` every input window has each column's last value subtracted (:func:`window_offset`), the
network forecasts the change from there, and the target's last value is added back to its output;
``mean`` uses the window's mean instead. The items stay as above: the forecast task applies it around
the network (training, validation, eval, predict and the backtest alike), so a run's forecasts of a
series shifted by a constant ``c`` are its forecasts shifted by ``c``, a level the training part never
reached included, which global scaling alone cannot give.

The bundle's ``classes`` are the network's outputs, ``T * horizon`` of them, target-major
(``['y+1', 'y+2', 'z+1', ...]``): the trainer builds a network with one output per "class", and the
forecast task reshapes them to ``(T, horizon)``. What predicting needs (columns, targets, the
training scale, lookback, horizon, season, MASE's scale) is a :class:`ForecastLayout`, saved with the
run as ``extra["forecast_layout"]``.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from cnnkit.config import DataConfig
from cnnkit.data.base import DataBundle
from cnnkit.data.registry import register_dataset
from cnnkit.data.timeseries.formats import MISSING_CELLS
from cnnkit.data.timeseries.prepare import MISSING, fill_missing
from cnnkit.errors import UserError, did_you_mean

STATSMODELS_PREFIX = "statsmodels:"
#: The statsmodels data sets ``data.path: statsmodels:NAME`` reads, and how often they step.
STATSMODELS_SETS = {"sunspots": "yearly", "nile": "yearly", "co2": "weekly", "elnino": "monthly",
                    "elec_equip": "monthly", "macrodata": "quarterly", "danish_data": "quarterly",
                    "interest_inflation": "quarterly"}
#: Header names that make a numeric first column the time column when ``data.time_column`` is unset.
TIME_NAMES = ("time", "date", "datetime", "timestamp", "ds", "year", "period")
SHOWN = 40
FORECAST_OPTIONS = ("data.path, data.time_column, data.value_columns, data.target_columns, data.lookback, "
                    "data.horizon, data.season, data.val_fraction, data.missing and data.window_norm")
#: ``data.window_norm``: what each input window has subtracted (and its target gets back), :func:`window_offset`.
WINDOW_NORMS = ("none", "last", "mean")


@dataclass
class ForecastFrame:
    """A series read: ``values`` float64 (steps, C) (NaN where missing) of ``columns``; ``times`` the time
    stamps as text (None without a time column); ``rows`` each step's line in its file (None for a
    bundled set)."""

    values: np.ndarray
    columns: list[str]
    times: list[str] | None = None
    rows: list[int] | None = None
    source: str = ""

    def __len__(self) -> int:
        return len(self.values)


def _short(text: str) -> str:
    return repr(text if len(text) <= SHOWN else text[:SHOWN] + "...")


def _number(cell: str) -> float | None:
    """A cell's value (NaN for a missing one), or None when it is not a number."""
    cell = cell.strip()
    if cell.lower() in MISSING_CELLS or cell.lower() == "na":
        return math.nan
    try:
        return float(cell)
    except ValueError:
        return None


def _column(spec: str | int, header: list[str], what: str, path: Path) -> int:
    if isinstance(spec, int) and not isinstance(spec, bool):
        if not 0 <= spec < len(header):
            raise UserError(f"data.{what}={spec}: {str(path)!r} has {len(header)} columns (0..{len(header) - 1})")
        return spec
    if spec in header:
        return header.index(spec)
    raise UserError(f"data.{what}: {spec!r} is not a column of {str(path)!r}{did_you_mean(spec, header)}; its "
                    f"columns are {', '.join(repr(h) for h in header)}")


def read_forecast_csv(path: str | Path, time_column: str | int | None = None,
                      value_columns: Sequence[str] | None = None) -> ForecastFrame:
    """A series from a CSV (``.tsv``: tab-separated) file of one row per time step.

    The first row is a header naming the columns unless every cell of it is a number (then the
    columns are named by their 0-based index: ``'0'``, ``'1'``, ...). ``time_column`` (a name or an
    index): the time stamps, kept as text; default the first column when it is not numeric or is
    named like a time (:data:`TIME_NAMES`), else none. ``value_columns``: the columns read, in that
    order; default every other column whose cells are all numbers. An empty cell (``nan``, ``NA``,
    ``?``) is a missing value."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"data.path {str(path)!r} does not exist" if not path.exists()
                        else f"data.path {str(path)!r} is not a file")
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise UserError(f"{str(path)!r} is not UTF-8 text (byte {e.start}); convert it to UTF-8") from None
    sep = "\t" if path.suffix.lower() == ".tsv" else ","
    reader = csv.reader(io.StringIO(text), delimiter=sep)
    rows = [(reader.line_num, r) for r in reader if any(c.strip() for c in r)]
    if not rows:
        raise UserError(f"{str(path)!r} is empty; a forecast file has a header row, then one row per time step")
    first_line, first = rows[0]
    has_header = any(_number(c) is None for c in first)
    header = [h.strip() for h in first] if has_header else [str(i) for i in range(len(first))]
    body = rows[1:] if has_header else rows
    for n, row in body:
        if len(row) != len(header):
            raise UserError(f"{str(path)!r} row {n} has {len(row)} cells, the {'header' if has_header else 'first row'}"
                            f" (row {first_line}) {len(header)}; every row holds one cell per column (empty for a "
                            f"missing value)")
    if len(body) < 2:
        raise UserError(f"{str(path)!r} has {len(body)} row{'s' if len(body) != 1 else ''} of values; a series to "
                        f"forecast needs many (at least data.lookback + data.horizon)")

    def numeric(i: int) -> bool:
        cells = [_number(row[i]) for _, row in body]
        return all(v is not None for v in cells) and any(v is not None and not math.isnan(v) for v in cells)

    if time_column is not None:
        ti: int | None = _column(time_column, header, "time_column", path)
    elif not numeric(0) or header[0].strip().lower() in TIME_NAMES:
        ti = 0
    else:
        ti = None
    if value_columns is not None:
        if not value_columns:
            raise UserError("data.value_columns is empty; name at least one column to forecast from")
        vi = [_column(c, header, "value_columns", path) for c in value_columns]
        if ti is not None and ti in vi:
            raise UserError(f"data.value_columns names {header[ti]!r}, the time column; name it in one of "
                            f"data.time_column and data.value_columns only")
        if len(set(vi)) != len(vi):
            raise UserError(f"data.value_columns={list(value_columns)} names a column twice")
    else:
        vi = [i for i in range(len(header)) if i != ti and numeric(i)]
        if not vi:
            raise UserError(f"{str(path)!r} has no numeric column besides the time column "
                            f"({header[ti]!r})" if ti is not None else f"{str(path)!r} has no numeric column")
    values = np.empty((len(body), len(vi)), dtype=np.float64)
    for r, (n, row) in enumerate(body):
        for k, i in enumerate(vi):
            v = _number(row[i])
            if v is None or math.isinf(v):
                raise UserError(f"{str(path)!r} row {n}, column {header[i]!r}: {_short(row[i].strip())} is not a "
                                f"{'finite ' if v is not None else ''}number; a value cell holds a number, or is "
                                f"empty for a missing value")
            values[r, k] = v
    times = [row[ti].strip() for _, row in body] if ti is not None else None
    return ForecastFrame(values, [header[i] for i in vi], times, [n for n, _ in body], str(path))


def read_statsmodels(name: str) -> ForecastFrame:
    """One of statsmodels' bundled series (:data:`STATSMODELS_SETS`), read offline."""
    if name not in STATSMODELS_SETS:
        raise UserError(f"data.path={STATSMODELS_PREFIX}{name}: no such statsmodels series"
                        f"{did_you_mean(name, STATSMODELS_SETS)}; allowed: {', '.join(STATSMODELS_PREFIX + k for k in STATSMODELS_SETS)}")
    try:
        import importlib

        module = importlib.import_module(f"statsmodels.datasets.{name}")
    except ImportError:
        raise UserError(f"data.path={STATSMODELS_PREFIX}{name} needs statsmodels: pip install 'cnnkit[timeseries]'") \
            from None
    df = module.load_pandas().data
    source = f"{STATSMODELS_PREFIX}{name}"
    if name == "elnino":
        months = list(df.columns[1:])
        values = df[months].to_numpy(dtype=np.float64).reshape(-1, 1)
        times = [f"{int(y)}-{m + 1:02d}" for y in df["YEAR"] for m in range(len(months))]
        return ForecastFrame(values, ["temperature"], times, None, source)
    if "year" in df.columns and "quarter" in df.columns:
        times = [f"{int(y)}Q{int(q)}" for y, q in zip(df["year"], df["quarter"])]
        cols = [c for c in df.columns if c not in ("year", "quarter")]
    elif "YEAR" in df.columns or "year" in df.columns:
        key = "YEAR" if "YEAR" in df.columns else "year"
        times = [str(int(y)) for y in df[key]]
        cols = [c for c in df.columns if c != key]
    else:  # a date index
        times = [str(t.date()) if hasattr(t, "date") else str(t) for t in df.index]
        cols = list(df.columns)
    names = ["elec_equip"] if name == "elec_equip" else [str(c) for c in cols]
    return ForecastFrame(df[cols].to_numpy(dtype=np.float64), names, times, None, source)


def read_forecast(path: str, time_column: str | int | None = None,
                  value_columns: Sequence[str] | None = None) -> ForecastFrame:
    """``data.path`` as a series: ``statsmodels:NAME`` or a CSV/TSV file (:func:`read_forecast_csv`)."""
    if not str(path).startswith(STATSMODELS_PREFIX):
        return read_forecast_csv(path, time_column, value_columns)
    if time_column is not None:
        raise UserError(f"data.time_column={time_column!r} names a column of a CSV file; {path} has its own time "
                        f"stamps")
    frame = read_statsmodels(str(path)[len(STATSMODELS_PREFIX):])
    if value_columns is not None:
        missing = [c for c in value_columns if c not in frame.columns]
        if missing:
            raise UserError(f"data.value_columns: {missing[0]!r} is not a column of {path}"
                            f"{did_you_mean(missing[0], frame.columns)}; its columns are "
                            f"{', '.join(repr(c) for c in frame.columns)}")
        idx = [frame.columns.index(c) for c in value_columns]
        frame = ForecastFrame(frame.values[:, idx], list(value_columns), frame.times, None, frame.source)
    return frame


def fill_frame(frame: ForecastFrame, how: str) -> np.ndarray:
    """The frame's values (steps, C) with missing ones filled as ``data.missing`` says (interpolated along
    time, ends held; zero; or an error naming the row and column). A column without any value is an
    error."""
    if how not in MISSING:
        raise UserError(f"data.missing={how!r}; allowed: {', '.join(MISSING)}")
    values = frame.values
    nan = np.isnan(values)
    if not nan.any():
        return values
    empty = [frame.columns[c] for c in range(values.shape[1]) if nan[:, c].all()]
    if empty:
        raise UserError(f"{frame.source}: column {empty[0]!r} has no values")
    if how == "error":
        r, c = (int(v[0]) for v in np.nonzero(nan))
        row = f"row {frame.rows[r]}" if frame.rows else f"step {r}" + (f" ({frame.times[r]})" if frame.times else "")
        raise UserError(f"{frame.source} {row}, column {frame.columns[c]!r}, is missing; set data.missing to "
                        f"interpolate or zero to fill it")
    return fill_missing(values.T, how).T


def window_offset(x: torch.Tensor, how: str) -> torch.Tensor:
    """``x (N, C, L) -> (N, C, 1)``: what ``data.window_norm=how`` subtracts from each window, per
    column: zeros (``none``), the last step (``last``) or the mean over the window (``mean``).

    >>> window_offset(torch.tensor([[[1.0, 2.0, 6.0]]]), "last").flatten().tolist()
    [6.0]
    """
    if how == "none":
        return torch.zeros_like(x[..., -1:])
    if how == "last":
        return x[..., -1:]
    if how == "mean":
        return x.mean(dim=-1, keepdim=True)
    raise UserError(f"data.window_norm={how!r}; allowed: {', '.join(WINDOW_NORMS)}")


@dataclass
class ForecastLayout:
    """What a forecaster's training fixed and predicting needs (JSON-able): the ``columns`` it reads
    (in order) and the ``targets`` it predicts, each column's training ``mean`` / ``std``, ``lookback``,
    ``horizon``, ``season``, ``missing``, ``time_column``, per target MASE's scale (``mase_scale``:
    the mean absolute difference of the training part at lag ``season``, or 1) and ``window_norm``
    (:data:`WINDOW_NORMS`; ``none`` in runs saved before it existed)."""

    columns: list[str]
    targets: list[str]
    mean: list[float]
    std: list[float]
    lookback: int
    horizon: int
    season: int | None = None
    missing: str = "interpolate"
    time_column: str | int | None = None
    mase_scale: list[float] = field(default_factory=list)
    window_norm: str = "none"

    @property
    def target_index(self) -> list[int]:
        return [self.columns.index(t) for t in self.targets]

    def scale(self, values: np.ndarray) -> np.ndarray:
        """Values (steps, C) in the series' units -> scaled units."""
        return (np.asarray(values, dtype=np.float64) - np.asarray(self.mean)) / np.asarray(self.std)

    def unscale_targets(self, y: np.ndarray) -> np.ndarray:
        """Scaled target values (..., T, H) -> the series' units."""
        idx = self.target_index
        mean, std = np.asarray(self.mean)[idx], np.asarray(self.std)[idx]
        return np.asarray(y, dtype=np.float64) * std[:, None] + mean[:, None]

    def window(self, values: np.ndarray) -> torch.Tensor:
        """The last ``lookback`` steps of ``values`` (steps, C; NaN filled as ``missing`` says), scaled:
        the input ``(1, C, lookback)`` whose forecast follows them."""
        values = np.asarray(values, dtype=np.float64)
        if values.ndim != 2 or values.shape[1] != len(self.columns):
            raise UserError(f"a forecast window needs the columns {self.columns}; got values of shape "
                            f"{tuple(values.shape)}")
        if len(values) < self.lookback:
            raise UserError(f"the series has {len(values)} steps; the model reads windows of data.lookback="
                            f"{self.lookback}")
        values = fill_missing(values[-self.lookback:].T, self.missing).T
        return torch.as_tensor(self.scale(values).T[None], dtype=torch.float32)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ForecastLayout":
        need = {"columns", "targets", "mean", "std", "lookback", "horizon"}
        known = need | {"season", "missing", "time_column", "mase_scale", "window_norm"}
        if not need <= set(d) or not set(d) <= known:
            raise UserError(f"a forecast layout has keys {sorted(d)}; it needs {', '.join(sorted(need))} and may "
                            f"have {', '.join(sorted(known - need))}")
        if d.get("window_norm", "none") not in WINDOW_NORMS:
            raise UserError(f"a forecast layout has window_norm={d['window_norm']!r}; allowed: "
                            f"{', '.join(WINDOW_NORMS)}")
        return cls(**{k: d[k] for k in known if k in d})


class ForecastWindows:
    """Windows of a scaled series ``values`` (C, steps): item ``i`` is ``(values[:, s:s + lookback],
    values[targets, s + lookback:s + lookback + horizon])`` with ``s = starts[i]``."""

    def __init__(self, values: torch.Tensor, targets: Sequence[int], lookback: int, horizon: int,
                 starts: Sequence[int]) -> None:
        self.values, self.target_index = values, list(targets)
        self.lookback, self.horizon, self.starts = lookback, horizon, list(starts)
        last = max(self.starts, default=0) + lookback + horizon
        if self.starts and (min(self.starts) < 0 or last > values.shape[1]):
            raise ValueError(f"windows from {min(self.starts)} to {last} do not fit {values.shape[1]} steps")

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        s = self.starts[i]
        x = self.values[:, s:s + self.lookback]
        y = self.values[self.target_index, s + self.lookback:s + self.lookback + self.horizon]
        return x, y

    def target_steps(self, i: int) -> range:
        """The steps (rows of the series) window ``i`` predicts."""
        s = self.starts[i] + self.lookback
        return range(s, s + self.horizon)


def window_starts(steps: int, train_steps: int, lookback: int, horizon: int) -> tuple[list[int], list[int]]:
    """First steps of the training windows (all inside ``[0, train_steps)``) and of the validation ones
    (targets inside ``[train_steps, steps)``, inputs reaching back as far as they need)."""
    train = list(range(0, train_steps - lookback - horizon + 1))
    val = list(range(max(train_steps - lookback, 0), steps - lookback - horizon + 1))
    return train, val


def mase_scale(train_values: np.ndarray, season: int | None) -> list[float]:
    """Per row of ``train_values`` (T, steps): the mean absolute difference at lag ``season`` (1 without
    one), 1.0 where that is 0."""
    m = season or 1
    d = np.abs(train_values[:, m:] - train_values[:, :-m]).mean(axis=1)
    return [float(v) if v > 0 else 1.0 for v in d]


def _reject_other_options(cfg: DataConfig) -> None:
    for key in ("image_size", "crop_size", "mask_values", "annotations", "class_names", "text_column", "max_vocab",
                "max_length", "label_column", "series_length", "classes", "per_class", "subset"):
        value = getattr(cfg, key)
        if value is not None:
            raise UserError(f"data.{key}={value!r} is not a forecast option; the forecast dataset takes "
                            f"{FORECAST_OPTIONS}")
    for key, default in {"tokenizer": "word", "min_freq": 1, "lowercase": True, "unequal_length": "pad"}.items():
        value = getattr(cfg, key)
        if value != default:
            raise UserError(f"data.{key}={value!r} is not a forecast option; the forecast dataset takes "
                            f"{FORECAST_OPTIONS}")


@register_dataset("forecast", "forecasting (task forecast): windows of data.lookback steps of a CSV series (one row "
                              "per step) or statsmodels:NAME (sunspots, co2, elnino, macrodata, ...), then "
                              "data.horizon steps of data.target_columns; the last data.val_fraction validates")
def forecast(cfg: DataConfig) -> DataBundle:
    _reject_other_options(cfg)
    if not cfg.path:
        raise UserError(f"data.name=forecast needs data.path: a CSV file of one row per time step, or "
                        f"{STATSMODELS_PREFIX}NAME ({', '.join(STATSMODELS_SETS)})")
    if cfg.lookback is None:
        raise UserError("data.name=forecast needs data.lookback: the steps of history each window shows the model "
                        "(e.g. 24 for two years of monthly data)")
    lookback, horizon = int(cfg.lookback), int(cfg.horizon)
    if cfg.season is not None and lookback < cfg.season:
        # the seasonal-naive baseline every validation scores against reads one season of each window
        raise UserError(f"data.lookback={lookback} is shorter than data.season={cfg.season}: the seasonal-naive "
                        f"baseline needs a window of at least one season; raise data.lookback to {cfg.season} or "
                        f"more, or unset data.season")
    frame = read_forecast(cfg.path, cfg.time_column, cfg.value_columns)
    targets = list(cfg.target_columns) if cfg.target_columns is not None else list(frame.columns)
    if not targets:
        raise UserError("data.target_columns is empty; name at least one column to predict")
    for t in targets:
        if t not in frame.columns:
            raise UserError(f"data.target_columns: {t!r} is not a value column of {frame.source}"
                            f"{did_you_mean(t, frame.columns)}; the value columns are "
                            f"{', '.join(repr(c) for c in frame.columns)} (data.value_columns)")
    if len(set(targets)) != len(targets):
        raise UserError(f"data.target_columns={targets} names a column twice")
    values = fill_frame(frame, cfg.missing)
    steps = len(values)
    if horizon >= steps:
        raise UserError(f"data.horizon={horizon} is longer than the series allows: {frame.source} has {steps} steps, "
                        f"and a window needs history (data.lookback) before its horizon")
    if lookback + horizon > steps:
        raise UserError(f"data.lookback={lookback} + data.horizon={horizon} is more than the {steps} steps of "
                        f"{frame.source}; lower data.lookback")
    if cfg.val_fraction <= 0:
        smallest = math.ceil(1000 * horizon / steps) / 1000
        raise UserError(f"data.val_fraction={cfg.val_fraction}: task forecast needs a validation part (the trainer "
                        f"scores every epoch on it and keeps the best as best.pt); set data.val_fraction > 0: the "
                        f"smallest that holds one horizon of {horizon} steps of the {steps} is {smallest:g} (add "
                        f"train.eval_every=0 to score it once, after the last epoch, and keep the last weights)")
    val_steps = int(round(cfg.val_fraction * steps))
    if val_steps < horizon:
        raise UserError(f"the validation part (the last data.val_fraction={cfg.val_fraction} of {steps} steps: "
                        f"{val_steps}) is shorter than data.horizon={horizon}; raise data.val_fraction or lower "
                        f"data.horizon")
    train_steps = steps - val_steps
    train_starts, val_starts = window_starts(steps, train_steps, lookback, horizon)
    if not train_starts:
        raise UserError(f"the training part ({train_steps} of {steps} steps) is shorter than a window "
                        f"(data.lookback={lookback} + data.horizon={horizon}); lower data.lookback or "
                        f"data.val_fraction")
    season = cfg.season
    if season is not None and train_steps <= season:
        raise UserError(f"data.season={season} needs more training steps than a season; the training part has "
                        f"{train_steps}")
    part = values[:train_steps]
    mean = part.mean(axis=0)
    std = part.std(axis=0)
    std = np.where(std > 1e-12 * np.maximum(1.0, np.abs(mean)), std, 1.0)
    scaled = torch.as_tensor(((values - mean) / std).T, dtype=torch.float32).contiguous()
    tidx = [frame.columns.index(t) for t in targets]
    train_values = part[:, tidx].T
    time_column = cfg.time_column
    layout = ForecastLayout(columns=list(frame.columns), targets=targets, mean=[float(v) for v in mean],
                            std=[float(v) for v in std], lookback=lookback, horizon=horizon, season=season,
                            missing=cfg.missing, time_column=time_column,
                            mase_scale=mase_scale(train_values, season), window_norm=cfg.window_norm)
    train = ForecastWindows(scaled, tidx, lookback, horizon, train_starts)
    val = ForecastWindows(scaled, tidx, lookback, horizon, val_starts)
    classes = [f"{t}+{h}" for t in targets for h in range(1, horizon + 1)]
    span = f" ({frame.times[0]} to {frame.times[-1]})" if frame.times else ""
    description = (f"forecast {cfg.path}: {steps} steps{span}, {len(frame.columns)} column"
                   f"{'s' if len(frame.columns) > 1 else ''}, predicting {', '.join(targets)} {horizon} step"
                   f"{'s' if horizon > 1 else ''} from {lookback}; {len(train)} training windows, "
                   f"{len(val)} validation windows (the last {val_steps} steps)"
                   + (f"; window_norm {cfg.window_norm}" if cfg.window_norm != "none" else ""))
    extra = {"task": "forecast", "columns": list(frame.columns), "targets": targets,
             "scale": {"mean": layout.mean, "std": layout.std}, "season": season,
             "train_values": train_values.tolist(), "times": frame.times, "lookback": lookback, "horizon": horizon,
             "train_steps": train_steps, "forecast_layout": layout.to_dict()}
    return DataBundle(train=train, val=val, test=None, classes=classes, input_shape=(len(frame.columns), lookback),
                      mean=(0.0,), std=(1.0,), description=description, extra=extra)
