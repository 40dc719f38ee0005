"""Reading labelled series: UCR/UEA ``.ts`` files, CSV/TSV tables of one series per row, and NumPy
arrays (``.npz`` with ``X`` and ``y``, or ``.npy`` with a labels file beside it), as the ``series``
dataset (``data.name: series``, task ``timeseries``).

The formats:

* ``.ts`` (the UCR/UEA archive's): read by aeon (``pip install 'cnnkit[timeseries]'``), univariate or
  multivariate, of one length or of many; ``?`` marks a missing value. aeon lower-cases every data
  line, so labels come back lower-cased (``Badminton`` -> ``badminton``).
* ``.csv`` / ``.tsv``: one univariate series per row, its label in ``data.label_column`` (a header
  name, or a 0-based index; default: the first column) and its values in the other cells, in order.
  The first row is a header when ``data.label_column`` is a name, or when one of its value cells is
  not a number. An empty cell (or ``nan``, ``?``) inside a row is a missing value; empty cells at the
  end of a row end its series early (the UCR archive's ``.tsv`` files pad shorter series that way),
  so every row has the same number of cells: a ragged table is an error.
* ``.npz``: arrays ``X`` (N, C, L) or (N, L) (a number per value, NaN for a missing one) and ``y``
  (N,), labels of any dtype (numbers or strings; not a pickled object array).
* ``.npy``: the array ``X`` as above; the labels in a sibling file ``<stem>_labels.npy`` (or
  ``<stem>_y.npy``): ``GunPoint_TRAIN.npy`` + ``GunPoint_TRAIN_labels.npy``.

Classes are ordered numerically when every label is a number (``'1', '2', '10'``; ``'0.0', '1.0'``),
else alphabetically (:func:`class_order`).

Example::

    data = read_series("GunPoint_TRAIN.ts")   # SeriesData: .series (C, L_i) arrays, .labels, .classes
    data.series[0].shape, data.classes          # (1, 150), ['1', '2']
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from cnnkit.errors import UserError, did_you_mean

#: The file suffixes the readers take (a folder's ``NAME_TRAIN.*`` files are looked for with these).
SUFFIXES = (".ts", ".csv", ".tsv", ".npz", ".npy")
#: The sibling label files of an ``.npy`` array ``<stem>.npy``, looked for in this order.
LABEL_SUFFIXES = ("_labels.npy", "_y.npy")
#: Cells read as a missing value in a CSV/TSV table (besides an empty cell), lower-cased.
MISSING_CELLS = ("", "nan", "?")
#: How many characters of a bad cell or line a message shows.
SHOWN = 40


@dataclass
class SeriesData:
    """Labelled series: ``series[i]`` (float64 (C, L_i), NaN where a value is missing) has the label
    ``labels[i]``, class index ``targets[i]`` of ``classes``."""

    series: list[np.ndarray]
    labels: list[str]
    classes: list[str]
    targets: list[int]

    def __len__(self) -> int:
        return len(self.series)

    def subset(self, index: Sequence[int]) -> "SeriesData":
        index = [int(i) for i in index]
        return SeriesData([self.series[i] for i in index], [self.labels[i] for i in index], self.classes,
                          [self.targets[i] for i in index])

    @property
    def channels(self) -> int:
        return int(self.series[0].shape[0]) if self.series else 0

    @property
    def lengths(self) -> list[int]:
        return [int(s.shape[1]) for s in self.series]


def class_order(labels: Sequence[str]) -> list[str]:
    """The classes of these label strings: sorted by value when every one is a number (``'1', '2',
    '10'``; ``'0.0', '1.0'``), else alphabetically."""
    unique = set(labels)
    try:
        return sorted(unique, key=lambda s: (float(s), s))
    except ValueError:
        return sorted(unique)


def _label_text(value: Any) -> str:
    """A label of an array as text: ``1`` -> '1', ``1.0`` -> '1.0', ``b'a'`` -> 'a'."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace").strip()
    return str(value).strip()


def _short(text: str) -> str:
    return repr(text if len(text) <= SHOWN else text[:SHOWN] + "...")


# --------------------------------------------------------------------------------------------
# .ts (UCR/UEA), through aeon
# --------------------------------------------------------------------------------------------


def _diagnose_ts(path: Path) -> str | None:
    """The first data line of a ``.ts`` file that is not ``v,v,...:v,v,...:label``, described, or None."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        return f"it cannot be read as UTF-8 text ({e})"
    in_data, width, labelled = False, None, True
    for n, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if not in_data:
            low = line.lower()
            if low.startswith("@classlabel"):
                labelled = len(low.split()) > 1 and low.split()[1] == "true"
            if low.startswith("@data"):
                in_data = True
            continue
        parts = line.split(":")
        channels = parts[:-1] if labelled else parts
        if labelled and (len(parts) < 2 or not parts[-1].strip()):
            return f"line {n} has no class label after the last ':': {_short(line)}"
        sizes = []
        for ch in channels:
            cells = ch.split(",")
            for cell in cells:
                cell = cell.strip()
                if cell in ("?", "") or cell.lower() == "nan":
                    continue
                try:
                    float(cell)
                except ValueError:
                    return f"line {n} has the value {_short(cell)}, not a number (or '?' for a missing one)"
            sizes.append(len(cells))
        if len(set(sizes)) > 1:
            return f"line {n} has channels of different lengths ({', '.join(map(str, sizes))} values)"
        if width is not None and len(channels) != width:
            return f"line {n} has {len(channels)} channels, the lines before it {width}"
        width = len(channels)
    if not in_data:
        return "it has no '@data' line (a .ts file has its header lines, then '@data', then one series per line)"
    if width is None:
        return "it holds no series after '@data'"
    return None


def read_ts(path: str | Path, labelled: bool = True) -> tuple[list[np.ndarray], list[str]]:
    """``(series, labels)`` of a UCR/UEA ``.ts`` file, read by aeon. ``labelled`` False: a file without
    class labels (``@classLabel false``) gives empty labels."""
    path = Path(path)
    try:
        from aeon.datasets import load_from_ts_file
    except ImportError:
        raise UserError("reading .ts files needs aeon: pip install 'cnnkit[timeseries]'") from None
    try:
        x, y = load_from_ts_file(str(path), replace_missing_vals_with="NaN")
    except Exception as e:  # aeon raises OSError, ValueError, IndexError ... without the line
        problem = _diagnose_ts(path)
        detail = problem or f"aeon could not read it: {e}"
        raise UserError(f"{str(path)!r} is not a readable .ts file: {detail}; a .ts data line is "
                        f"v1,v2,...:label (channels separated by ':', '?' for a missing value)") from None
    if isinstance(x, np.ndarray):
        if x.ndim == 2:
            x = x[:, None, :]
        series = [np.asarray(s, dtype=np.float64) for s in x]
    else:
        series = [np.atleast_2d(np.asarray(s, dtype=np.float64)) for s in x]
    labels = [] if y is None else [_label_text(v) for v in np.asarray(y).ravel()]
    if not labels and series:
        if labelled:
            raise UserError(f"{str(path)!r} has no class labels (its header says @classLabel false); the series "
                            f"dataset needs a label after the last ':' of every line")
        labels = [""] * len(series)
    if len(labels) != len(series):
        raise UserError(f"{str(path)!r}: aeon read {len(series)} series but {len(labels)} labels; check that every "
                        f"data line ends with ':label'")
    return series, labels


# --------------------------------------------------------------------------------------------
# .csv / .tsv: one univariate series per row
# --------------------------------------------------------------------------------------------


def _decode(raw: bytes, path: Path) -> str:
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        raise UserError(f"{str(path)!r} is not UTF-8 text: line {line} has the byte 0x{raw[e.start]:02x}; convert "
                        f"the file to UTF-8 (e.g. iconv -f latin1 -t utf-8)") from None


def _is_missing(cell: str) -> bool:
    return cell.strip().lower() in MISSING_CELLS


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _label_index(spec: str | int | None, header: list[str] | None, width: int, path: Path) -> int:
    if spec is None:
        return 0
    if isinstance(spec, int):
        if not 0 <= spec < width:
            raise UserError(f"data.label_column={spec}: {str(path)!r} has {width} columns (0..{width - 1})")
        return spec
    if header is None:
        raise UserError(f"data.label_column={spec!r} names a column, but {str(path)!r} has no header row (its first "
                        f"row is all numbers); give the column's 0-based index instead")
    if spec in header:
        return header.index(spec)
    raise UserError(f"data.label_column={spec!r} is not a column of {str(path)!r}{did_you_mean(spec, header)}; its "
                    f"header has: {', '.join(repr(h) for h in header[:12])}{', ...' if len(header) > 12 else ''}")


def read_table(path: str | Path, label_column: str | int | None = None) -> tuple[list[np.ndarray], list[str]]:
    """``(series (1, L_i) each, labels)`` of a CSV/TSV table of one series per row (see the module's
    docstring for the layout)."""
    path = Path(path)
    sep = "\t" if path.suffix.lower() == ".tsv" else ","
    reader = csv.reader(io.StringIO(_decode(path.read_bytes(), path)), delimiter=sep)
    rows: list[tuple[int, list[str]]] = []
    for row in reader:
        if any(c.strip() for c in row):
            rows.append((reader.line_num, row))
    if not rows:
        raise UserError(f"{str(path)!r} holds no series (it is empty)")
    first_line, first = rows[0]
    width = len(first)
    guess = _label_index(label_column if isinstance(label_column, int) else None, None, width, path)
    has_header = isinstance(label_column, str) or any(
        not _is_missing(c) and not _is_number(c.strip()) for i, c in enumerate(first) if i != guess)
    header = [h.strip() for h in first] if has_header else None
    li = _label_index(label_column, header, width, path)
    body = rows[1:] if has_header else rows
    if not body:
        raise UserError(f"{str(path)!r} holds no series, only its header row")
    if width < 2:
        raise UserError(f"{str(path)!r} line {first_line} has {width} column; each row is a label and the series' "
                        f"values (separated by {'tabs' if sep == chr(9) else 'commas'})")
    series: list[np.ndarray] = []
    labels: list[str] = []
    for n, row in body:
        if len(row) != width:
            raise UserError(f"{str(path)!r} row {n} has {len(row)} cells, row {first_line} has {width}: every row of "
                            f"a table holds the same number of cells; for series of different lengths fill the "
                            f"shorter rows with empty cells at the end (they end the series there), or use a .ts file")
        label = row[li].strip()
        if not label:
            raise UserError(f"{str(path)!r} row {n} has no label (column {li})")
        cells = [c for i, c in enumerate(row) if i != li]
        end = len(cells)
        while end and _is_missing(cells[end - 1]):
            end -= 1
        if end == 0:
            raise UserError(f"{str(path)!r} row {n} (label {label!r}) has no values")
        values = np.empty(end, dtype=np.float64)
        for j, cell in enumerate(cells[:end]):
            if _is_missing(cell):
                values[j] = np.nan
                continue
            try:
                v = float(cell)
            except ValueError:
                col = j if j < li else j + 1
                raise UserError(f"{str(path)!r} row {n}, column {col}: {_short(cell.strip())} is not a number; a "
                                f"value cell holds a number, or is empty (or nan, ?) for a missing value") from None
            if not math.isfinite(v):
                col = j if j < li else j + 1
                raise UserError(f"{str(path)!r} row {n}, column {col}: {cell.strip()!r} is not a finite number")
            values[j] = v
        series.append(values[None, :])
        labels.append(label)
    return series, labels


# --------------------------------------------------------------------------------------------
# .npz / .npy
# --------------------------------------------------------------------------------------------


def _load_npy(path: Path, what: str) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except ValueError:
        raise UserError(f"{str(path)!r}: {what} is an array of Python objects, which cnnkit does not unpickle; save "
                        f"it as a numeric or string array (np.asarray(values, dtype=str))") from None
    except Exception as e:
        raise UserError(f"{str(path)!r} is not a NumPy array file: {e}") from None


def _array_series(x: np.ndarray, path: Path) -> list[np.ndarray]:
    if x.dtype.kind not in "biuf":
        raise UserError(f"{str(path)!r}: X has dtype {x.dtype}; it must hold numbers (NaN for a missing value)")
    if x.ndim == 2:
        x = x[:, None, :]
    if x.ndim != 3 or x.shape[2] == 0 or x.shape[1] == 0:
        raise UserError(f"{str(path)!r}: X has shape {tuple(x.shape)}; it must be (N, C, L) series of C channels "
                        f"and L time steps, or (N, L) univariate ones")
    return [np.asarray(s, dtype=np.float64) for s in x]


def _array_labels(y: np.ndarray | None, n: int, path: Path, labelled: bool, where: str) -> list[str]:
    if y is None:
        if labelled:
            raise UserError(f"{str(path)!r} has no labels: {where}")
        return [""] * n
    if y.ndim == 2 and 1 in y.shape:
        y = y.ravel()
    if y.ndim != 1 or len(y) != n:
        raise UserError(f"{str(path)!r}: the labels have shape {tuple(y.shape)}; they must be one per series, ({n},)")
    labels = [_label_text(v) for v in y]
    empty = next((i for i, s in enumerate(labels) if not s), None)
    if empty is not None:
        raise UserError(f"{str(path)!r}: label {empty} is empty")
    return labels


def read_npz(path: str | Path, labelled: bool = True) -> tuple[list[np.ndarray], list[str]]:
    """``(series, labels)`` of an ``.npz`` holding ``X`` (N, C, L) or (N, L) and ``y`` (N,)."""
    path = Path(path)
    try:
        archive = np.load(path, allow_pickle=False)
    except Exception as e:
        raise UserError(f"{str(path)!r} is not a NumPy .npz archive: {e}") from None
    with archive:
        keys = list(archive.files)
        xkey = next((k for k in ("X", "x") if k in keys), None)
        ykey = next((k for k in ("y", "Y") if k in keys), None)
        if xkey is None:
            raise UserError(f"{str(path)!r} has no array 'X' (it holds {', '.join(map(repr, keys)) or 'nothing'}); "
                            f"save the series as X (N, C, L) and the labels as y (N,): np.savez(path, X=X, y=y)")
        try:
            x = archive[xkey]
            y = archive[ykey] if ykey is not None else None
        except ValueError:
            raise UserError(f"{str(path)!r} holds an array of Python objects, which cnnkit does not unpickle; save X "
                            f"as numbers and y as numbers or strings (np.asarray(labels, dtype=str))") from None
    series = _array_series(x, path)
    return series, _array_labels(y, len(series), path, labelled,
                                 "save them as the array 'y' (N,): np.savez(path, X=X, y=y)")


def labels_file(path: str | Path) -> Path | None:
    """The labels of an ``.npy`` array ``<stem>.npy``: ``<stem>_labels.npy`` or ``<stem>_y.npy``, if present."""
    path = Path(path)
    for suffix in LABEL_SUFFIXES:
        candidate = path.with_name(path.stem + suffix)
        if candidate.is_file():
            return candidate
    return None


def read_npy(path: str | Path, labelled: bool = True) -> tuple[list[np.ndarray], list[str]]:
    """``(series, labels)`` of an ``.npy`` array ``X`` with its labels in ``<stem>_labels.npy`` (or
    ``<stem>_y.npy``) beside it."""
    path = Path(path)
    series = _array_series(_load_npy(path, "X"), path)
    lab = labels_file(path)
    y = _load_npy(lab, "the labels") if lab is not None else None
    names = " or ".join(repr(path.stem + s) for s in LABEL_SUFFIXES)
    return series, _array_labels(y, len(series), path, labelled, f"put them beside it as {names} (one per series)")


# --------------------------------------------------------------------------------------------
# Any of them
# --------------------------------------------------------------------------------------------


def read_series(path: str | Path, label_column: str | int | None = None, classes: Sequence[str] | None = None,
                labelled: bool = True) -> SeriesData:
    """The labelled series of a file (``.ts``, ``.csv``, ``.tsv``, ``.npz``, ``.npy``). ``classes``: the
    class list to index the labels by (a trained run's); a label outside it is an error. None: the
    file's own (:func:`class_order`). ``labelled`` False (predicting): a ``.ts`` / ``.npz`` / ``.npy``
    without labels is read with empty labels and targets -1 (a table always has its label column)."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"data.path {str(path)!r} does not exist")
    if not path.is_file():
        raise UserError(f"{str(path)!r} is not a file")
    suffix = path.suffix.lower()
    if label_column is not None and suffix not in (".csv", ".tsv"):
        raise UserError(f"data.label_column={label_column!r} names a column of a .csv/.tsv table; {str(path)!r} is "
                        f"a {suffix} file")
    if suffix == ".ts":
        series, labels = read_ts(path, labelled)
    elif suffix in (".csv", ".tsv"):
        series, labels = read_table(path, label_column)
    elif suffix == ".npz":
        series, labels = read_npz(path, labelled)
    elif suffix == ".npy":
        series, labels = read_npy(path, labelled)
    else:
        raise UserError(f"{str(path)!r}: a {suffix or 'suffix-less'} file is not a series file; the series dataset "
                        f"reads {', '.join(SUFFIXES)}")
    if not series:
        raise UserError(f"{str(path)!r} holds no series")
    channels = series[0].shape[0]
    for i, s in enumerate(series):
        if s.shape[0] != channels:
            raise UserError(f"{str(path)!r}: series {i} has {s.shape[0]} channels, series 0 has {channels}")
        if s.shape[1] == 0:
            raise UserError(f"{str(path)!r}: series {i} has no values")
        if np.isinf(s).any():
            raise UserError(f"{str(path)!r}: series {i} holds an infinite value; values must be finite numbers "
                            f"(NaN for a missing one)")
    if not any(labels):  # only when not labelled: a file without labels, read for predicting
        return SeriesData(series, labels, list(classes or []), [-1] * len(series))
    if classes is None:
        classes = class_order(labels)
    index = {c: i for i, c in enumerate(classes)}
    unknown = sorted(set(labels) - set(index), key=str)
    if unknown:
        raise UserError(f"{str(path)!r} has labels {unknown[:5]} that the run does not know; its classes are "
                        f"{list(classes)}")
    return SeriesData(series, labels, list(classes), [index[label] for label in labels])
