"""Atomic file writes: a temp file in the same folder, fsync, then a rename.

A reader (or a kill) never sees a half-written file; the previous version stays until the new
one is complete. A leaf module: every writer of user files uses it.
"""

from __future__ import annotations

import codecs
import os
import tempfile
from pathlib import Path
from typing import IO, Callable


def default_file_mode() -> int:
    """The mode a plain ``open(path, 'w')`` would give (0666 less the umask); mkstemp's is 0600."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> None:
    """Call ``write(file)`` on a temp file next to ``path``, fsync it, then rename it over ``path``.

    On any failure (a full disk, a kill) the temp file is removed and ``path`` keeps its old content.
    """
    p = Path(path)
    fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, default_file_mode())
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write(path, lambda f: codecs.getwriter("utf-8")(f).write(text))
