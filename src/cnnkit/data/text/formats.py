"""Reading labelled texts: a TSV or CSV file with a label and a text column, or a folder per class
of ``.txt`` files (the IMDB layout), as the ``text`` dataset (``data.name: text``).

A file without ``data.text_column`` / ``data.label_column`` is read as ``label<TAB>text`` (or
``label,text``) without a header, the text being everything after the first separator. Naming a
column (by its header name, or by its 0-based index) reads the file with the csv module; a header
row is expected when a column is named. Every row must have a label and a non-empty text; blank
lines are skipped. Bytes that are not UTF-8 are an error naming the line.

Example::

    texts = read_table("train.tsv")            # TextData: .texts, .targets, .classes
    texts.texts[0], texts.classes[texts.targets[0]]
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from cnnkit.errors import UserError

TABLE_SUFFIXES = (".tsv", ".csv", ".txt", ".tab")
#: How many characters of a bad line a message shows.
SHOWN = 60


@dataclass
class TextData:
    """Labelled texts: ``texts[i]`` has class index ``targets[i]`` of ``classes``. A torch-style dataset
    (``len``, items ``(text, label)``), split by the data layer like any other."""

    texts: list[str]
    targets: list[int]
    classes: list[str]

    def __len__(self) -> int:
        return len(self.texts)

    def __getitem__(self, i: int) -> tuple[str, int]:
        return self.texts[i], self.targets[i]

    def subset(self, index: Sequence[int]) -> "TextData":
        return TextData([self.texts[i] for i in index], [self.targets[i] for i in index], self.classes)


def class_order(labels: Sequence[str]) -> list[str]:
    """The classes of these label strings: numerically sorted when all are integers (0, 1, 2, ..., 10),
    else alphabetically."""
    unique = set(labels)
    try:
        return sorted(unique, key=lambda s: (int(s), s))
    except ValueError:
        return sorted(unique)


def _decode(raw: bytes, path: Path) -> str:
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        raise UserError(f"{str(path)!r} is not UTF-8 text: line {line} has the byte 0x{raw[e.start]:02x} (at byte "
                        f"{e.start}); convert the file to UTF-8 (e.g. iconv -f latin1 -t utf-8)") from None


def _column_index(spec: str | int, header: list[str], what: str, path: Path) -> int:
    if isinstance(spec, int):
        if not 0 <= spec < len(header):
            raise UserError(f"data.{what}={spec}: {str(path)!r} has {len(header)} columns (0..{len(header) - 1})")
        return spec
    if spec in header:
        return header.index(spec)
    from cnnkit.errors import did_you_mean

    raise UserError(f"data.{what}={spec!r} is not a column of {str(path)!r}{did_you_mean(spec, header)}; its "
                    f"header has: {', '.join(repr(h) for h in header)}")


def _short(text: str) -> str:
    return repr(text if len(text) <= SHOWN else text[:SHOWN] + "...")


def read_rows(path: str | Path, text_column: str | int | None = None,
              label_column: str | int | None = None) -> tuple[list[str], list[str]]:
    """``(texts, labels)`` of a TSV/CSV file (see the module's docstring for the layout)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"data.path {str(path)!r} does not exist" if not path.exists()
                        else f"data.path {str(path)!r} is not a file")
    content = _decode(path.read_bytes(), path)
    sep = "," if path.suffix.lower() == ".csv" else "\t"
    texts: list[str] = []
    labels: list[str] = []
    if text_column is None and label_column is None:
        for n, line in enumerate(content.splitlines(), 1):
            if not line.strip():
                continue
            label, found, text = line.partition(sep)
            label, text = label.strip(), text.strip()
            if not found or not text:
                raise UserError(f"{str(path)!r} line {n} has no text: {_short(line)}; each line is "
                                f"label{'<TAB>' if sep == chr(9) else ','}text (or name the columns with "
                                f"data.text_column and data.label_column)")
            if not label:
                raise UserError(f"{str(path)!r} line {n} has no label: {_short(line)}")
            texts.append(text)
            labels.append(label)
    else:
        rows = list(csv.reader(io.StringIO(content), delimiter=sep))
        rows = [r for r in rows if any(c.strip() for c in r)]
        if not rows:
            raise UserError(f"{str(path)!r} holds no texts (it is empty)")
        header = [h.strip() for h in rows[0]]
        # the column the user named is checked first (the other one defaults to 'text' / 'label')
        if text_column is None:
            li = _column_index(label_column, header, "label_column", path)
            ti = _column_index("text", header, "text_column", path)
        else:
            ti = _column_index(text_column, header, "text_column", path)
            li = _column_index(label_column if label_column is not None else "label", header, "label_column", path)
        named = isinstance(text_column, str) or isinstance(label_column, str) or \
            text_column is None or label_column is None
        body = rows[1:] if named else rows
        first = 2 if named else 1
        for n, row in enumerate(body, first):
            if len(row) <= max(ti, li):
                raise UserError(f"{str(path)!r} row {n} has {len(row)} columns, the text and label need "
                                f"{max(ti, li) + 1}: {_short(sep.join(row))}")
            text, label = row[ti].strip(), row[li].strip()
            if not text:
                raise UserError(f"{str(path)!r} row {n} has no text: {_short(sep.join(row))}")
            if not label:
                raise UserError(f"{str(path)!r} row {n} has no label: {_short(sep.join(row))}")
            texts.append(text)
            labels.append(label)
    if not texts:
        raise UserError(f"{str(path)!r} holds no texts (it is empty)")
    return texts, labels


def read_folder(root: str | Path) -> tuple[list[str], list[str]]:
    """``(texts, labels)`` of a folder with a subfolder per class of ``.txt`` files, one text each."""
    root = Path(root)
    # IMDB's train/unsup holds unlabelled reviews: not a class.
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith(".") and d.name != "unsup")
    texts: list[str] = []
    labels: list[str] = []
    for c in classes:
        for f in sorted((root / c).glob("*.txt")):
            text = _decode(f.read_bytes(), f).strip()
            if not text:
                raise UserError(f"{str(f)!r} has no text (an empty file)")
            texts.append(text)
            labels.append(c)
    if not texts:
        raise UserError(f"data.path {str(root)!r} holds no texts: expected a subfolder per class with .txt files "
                        f"(e.g. pos/1.txt, neg/2.txt) or a .tsv/.csv file")
    return texts, labels


def read_texts(path: str | Path, text_column: str | int | None = None, label_column: str | int | None = None,
               classes: Sequence[str] | None = None) -> TextData:
    """The labelled texts at ``path`` (a file or a class-per-folder tree). ``classes``: the class list to
    index the labels by (a trained run's); a label outside it is an error. None: the file's own."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"data.path {str(path)!r} does not exist")
    if path.is_dir():
        if text_column is not None or label_column is not None:
            raise UserError(f"data.text_column / data.label_column name the columns of a file; {str(path)!r} is "
                            f"a folder (a subfolder per class of .txt files)")
        texts, labels = read_folder(path)
    else:
        texts, labels = read_rows(path, text_column, label_column)
    if classes is None:
        classes = class_order(labels)
    index = {c: i for i, c in enumerate(classes)}
    unknown = sorted(set(labels) - set(index))
    if unknown:
        raise UserError(f"{str(path)!r} has labels {unknown[:5]} that the run does not know; its classes are "
                        f"{list(classes)}")
    return TextData(texts, [index[label] for label in labels], list(classes))
