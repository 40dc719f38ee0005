"""Pretrained word vectors: reading word2vec and GloVe files, and copying them into embedding tables.

:func:`read_vectors` reads the three usual formats and tells them apart by themselves:

* word2vec text: a header line ``N D``, then ``word v1 ... vD`` per line;
* word2vec binary: the header line ``N D\\n``, then per word its UTF-8 bytes, a space, D
  little-endian float32 and (usually) a newline. Chosen when the file name ends in ``.bin`` or
  when the bytes after the header are not text;
* GloVe text: no header, ``word v1 ... vD`` per line (D is the first line's count of numbers).

Text lines may end with spaces (word2vec's C tool writes one) and ``\\r\\n``; blank lines are
skipped; a word may contain spaces (GloVe 840B has a few: the last D fields are the numbers).
The numbers of a block of lines are parsed in one call (pandas' C parser when it is installed,
else ``numpy.fromstring``), so a 400,000 x 300 file takes seconds, not minutes. Every problem (a
missing or empty file, a line with the wrong count of numbers, a field that is not a number, a
truncated binary file) is a :class:`~cnnkit.errors.UserError` naming the file and the line.

:func:`fill_embeddings` copies the vectors into the rows of an ``nn.Embedding`` whose tokens are
found (the exact token, else its lower-case form, else a word differing only in case), draws the
other rows from U(-a, a) with a chosen so that their variance matches the vectors' (Kim 2014), and
keeps the padding row 0 zero.
:func:`fill_model_embeddings` does it for a text model's ``embeddings`` (for ``kim_cnn``'s
multichannel variant both tables start from the same values).
"""

from __future__ import annotations

import codecs
import csv
import io
import mmap
import os
import re
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from cnnkit.errors import UserError
from cnnkit.models.text.base import PAD_ID

_HEADER = re.compile(rb"^\s*(\d+)\s+(\d+)\s*$")
_BLOCK_BYTES = 32 << 20  # lines are parsed in blocks of about this many bytes
_PEEK = 1 << 16


def read_vectors(path: str | os.PathLike) -> tuple[list[str], np.ndarray]:
    """``(words, vectors)``: the N words of a word2vec (text or binary) or GloVe file and their
    vectors, a float32 array (N, D). Raises UserError for a missing, empty or malformed file."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"word vectors file {str(path)!r} does not exist")
    if not path.is_file():
        raise UserError(f"word vectors file {str(path)!r} is not a file")
    if path.stat().st_size == 0:
        raise UserError(f"word vectors file {str(path)!r} is empty")
    with open(path, "rb") as f:
        first = f.readline(4096)
        peek = f.read(_PEEK)
    m = _HEADER.match(first)
    header = (int(m.group(1)), int(m.group(2))) if m else None
    if header is not None and header[1] < 1:
        raise UserError(f"{str(path)!r}: line 1: the header says vectors of {header[1]} dimensions")
    binary = path.name.lower().endswith(".bin") or (header is not None and not _looks_like_text(peek))
    if binary:
        if header is None:
            raise UserError(f"{str(path)!r}: line 1: a binary word2vec file starts with a line 'N D' "
                            f"(the count of words and their dimension), got {first[:60]!r}")
        return _read_binary(path, *header)
    return _read_text(path, header)


def _looks_like_text(chunk: bytes) -> bool:
    """Whether ``chunk`` is UTF-8 text without control characters (other than tab, CR and LF)."""
    if re.search(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]", chunk):
        return False
    try:
        codecs.getincrementaldecoder("utf-8")().decode(chunk, final=False)  # a cut character at the end is fine
    except UnicodeDecodeError:
        return False
    return True


# --------------------------------------------------------------------------- binary


def _read_binary(path: Path, count: int, dim: int) -> tuple[list[str], np.ndarray]:
    where = str(path)
    words: list[str] = []
    vectors = np.empty((count, dim), dtype=np.float32)
    nbytes = 4 * dim
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        size = len(mm)
        pos = mm.find(b"\n") + 1
        for i in range(count):
            while pos < size and mm[pos] in b"\n\r":  # a newline left before the word
                pos += 1
            space = mm.find(b" ", pos, min(size, pos + 4096))
            if space < 0 or space + 1 + nbytes > size:
                got = "its end" if pos >= size else "an incomplete entry"
                raise UserError(f"{where!r}: word {i + 1} of {count} (byte {pos}): the binary file reaches {got}; "
                                f"the header announces {count} words of {dim} float32 (truncated file?)")
            words.append(mm[pos:space].decode("utf-8", errors="replace"))
            vectors[i] = np.frombuffer(mm, dtype="<f4", count=dim, offset=space + 1)
            pos = space + 1 + nbytes
        rest = mm[pos:pos + 64]
        if rest.strip():
            raise UserError(f"{where!r}: bytes remain after the {count} vectors of {dim} float32 the header "
                            f"announces (byte {pos}): the header 'N D' does not match the vectors")
    if not np.isfinite(vectors).all():
        bad = int(np.flatnonzero(~np.isfinite(vectors).all(axis=1))[0])
        raise UserError(f"{where!r}: word {bad + 1} ({words[bad]!r}) has a value that is not a finite number: "
                        f"is the file really a word2vec binary file?")
    return words, vectors


# --------------------------------------------------------------------------- text


def _read_text(path: Path, header: tuple[int, int] | None) -> tuple[list[str], np.ndarray]:
    where = str(path)
    dim = header[1] if header else None
    words: list[str] = []
    blocks: list[np.ndarray] = []
    lineno = 0
    with open(path, "rb") as f:
        if header:
            f.readline()
            lineno = 1
        while True:
            raw = f.readlines(_BLOCK_BYTES)
            if not raw:
                break
            rests: list[str] = []
            numbers: list[int] = []  # the line number of each entry of the block
            for line_bytes in raw:
                lineno += 1
                line = line_bytes.decode("utf-8", errors="replace").rstrip()
                if not line:
                    continue
                if dim is None:  # GloVe: the first line fixes the dimension
                    dim = line.count(" ")
                    if dim < 1:
                        raise UserError(f"{where!r}: line {lineno}: expected a word and its numbers, got {line[:60]!r}")
                spaces = line.count(" ")
                if spaces == dim:
                    cut = line.index(" ")
                elif spaces > dim:  # a word with spaces in it: the last dim fields are the numbers
                    word = line.rsplit(" ", dim)[0]
                    if _is_number(word.rsplit(" ", 1)[-1]):  # 'cat 0.1 ... 0.5': one number too many
                        raise UserError(f"{where!r}: line {lineno}: {len(line.split())} fields where a word and "
                                        f"{dim} numbers are expected (word {line.split(' ', 1)[0][:40]!r})")
                    cut = len(word)
                else:
                    said = "the header says" if header else "the first line has"
                    raise UserError(f"{where!r}: line {lineno}: {spaces} numbers where {said} {dim} "
                                    f"(word {line.split(' ', 1)[0][:40]!r})")
                words.append(line[:cut])
                rests.append(line[cut + 1:])
                numbers.append(lineno)
            if rests:
                blocks.append(_parse_numbers(rests, numbers, dim, where))
    if not words:
        raise UserError(f"{where!r} holds no word vectors" + (" (only its header line)" if header else ""))
    if header and len(words) != header[0]:
        raise UserError(f"{where!r}: the header announces {header[0]} vectors but the file holds {len(words)}"
                        f"{' (truncated file?)' if len(words) < header[0] else ''}")
    return words, np.concatenate(blocks) if len(blocks) > 1 else blocks[0]


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _parse_numbers(rests: list[str], lines: list[int], dim: int, where: str) -> np.ndarray:
    """The numbers of a block of lines (each ``dim`` fields separated by single spaces), as float32."""
    out = _parse_pandas(rests)
    if out is None or out.shape != (len(rests), dim):
        out = _parse_numpy(rests, dim)
    if out is None:
        _raise_bad_number(rests, lines, dim, where)
    return np.ascontiguousarray(out, dtype=np.float32)


def _parse_pandas(rests: list[str]) -> np.ndarray | None:
    try:
        import pandas as pd  # a dependency of mlxtend; its C parser is about 4x faster than numpy's
    except ImportError:
        return None
    try:
        return pd.read_csv(io.StringIO("\n".join(rests)), sep=" ", header=None, dtype=np.float32, engine="c",
                           quoting=csv.QUOTE_NONE, na_filter=False).to_numpy()
    except Exception:
        return None


def _parse_numpy(rests: list[str], dim: int) -> np.ndarray | None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = np.fromstring(" ".join(rests), dtype=np.float32, sep=" ")
    except ValueError:
        return None
    return out.reshape(-1, dim) if out.size == len(rests) * dim else None


def _raise_bad_number(rests: list[str], lines: list[int], dim: int, where: str) -> None:
    """Find the first field of the block that is not a number (the slow path, only on errors)."""
    for rest, lineno in zip(rests, lines):
        fields = rest.split()
        if len(fields) != dim:
            raise UserError(f"{where!r}: line {lineno}: {len(fields)} numbers where {dim} are expected")
        for column, field in enumerate(fields, 1):
            try:
                float(field)
            except ValueError:
                raise UserError(f"{where!r}: line {lineno}: value {column} {field[:40]!r} is not a number") from None
    raise UserError(f"{where!r}: lines {lines[0]}-{lines[-1]} could not be read as numbers")


# --------------------------------------------------------------------------- filling tables


def fill_embeddings(table: nn.Embedding, vocab_tokens: Sequence[str], words: Sequence[str],
                    vectors: np.ndarray) -> dict:
    """Copy ``vectors`` into the rows of ``table`` whose token (``vocab_tokens[i]`` is row i) is among
    ``words``: the exact token first, else its lower-case form, else a word differing only in case.
    The other rows (not row 0, the padding, which is set to zero) are drawn from U(-a, a),
    a = sqrt(3 var), var the vectors' mean per-dimension variance, so that they look like the
    pretrained ones (Kim 2014). Rows past ``len(vocab_tokens)`` are left as they are.

    Returns ``{"found": n, "missing": m, "dim": D}`` (counted over the tokens other than padding).
    """
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or len(vectors) != len(words):
        raise UserError(f"word vectors: {len(words)} words but vectors of shape {tuple(vectors.shape)}")
    dim = vectors.shape[1]
    if dim != table.embedding_dim:
        raise UserError(f"the word vectors have {dim} dimensions but the embedding table has {table.embedding_dim}; "
                        f"set model.options.embed_dim={dim}")
    if len(vocab_tokens) > table.num_embeddings:
        raise UserError(f"the vocabulary has {len(vocab_tokens)} tokens but the embedding table only "
                        f"{table.num_embeddings} rows")
    exact: dict[str, int] = {}
    for i, w in enumerate(words):
        exact.setdefault(w, i)
    folded: dict[str, int] = {}  # case-insensitive, for a token whose lower-case form is not a word either
    for i, w in enumerate(words):
        folded.setdefault(w.lower(), i)
    rows, sources, missing = [], [], []
    for r, token in enumerate(vocab_tokens):
        if r == PAD_ID:
            continue
        i = exact.get(token)
        if i is None:
            i = exact.get(token.lower())
        if i is None:
            i = folded.get(token.lower())
        if i is None:
            missing.append(r)
        else:
            rows.append(r)
            sources.append(i)
    weight = table.weight
    with torch.no_grad():
        if rows:
            weight[torch.tensor(rows, device=weight.device)] = torch.from_numpy(vectors[sources]).to(weight)
        if missing:
            var = float(vectors.var(axis=0, dtype=np.float64).mean()) if len(vectors) > 1 else 0.0
            a = float(np.sqrt(3.0 * var)) if var > 0 else 0.25
            fresh = torch.empty(len(missing), dim, dtype=weight.dtype).uniform_(-a, a)
            weight[torch.tensor(missing, device=weight.device)] = fresh.to(weight.device)
        if table.num_embeddings > PAD_ID:
            weight[PAD_ID].zero_()
    return {"found": len(rows), "missing": len(missing), "dim": dim}


def fill_model_embeddings(model: nn.Module, vocab_tokens: Sequence[str], words: Sequence[str],
                          vectors: np.ndarray) -> dict:
    """:func:`fill_embeddings` for a text model's first table (``model.embeddings[0]``), then copied
    to its other tables (``kim_cnn`` multichannel: the frozen and the tuned channel start equal)."""
    tables = list(getattr(model, "embeddings", None) or [])
    if not tables:
        raise UserError(f"model {type(model).__name__} has no word embedding table for pretrained vectors")
    report = fill_embeddings(tables[0], vocab_tokens, words, vectors)
    with torch.no_grad():
        for other in tables[1:]:
            other.weight.copy_(tables[0].weight)
    return report
