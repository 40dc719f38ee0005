"""Atomic file writes: a temp file in the same folder, fsync, then a rename.

A reader (or a kill) never sees a half-written file; the previous version stays until the new
one is complete. A leaf module: every writer of user files uses it.
"""

from __future__ import annotations

import codecs
import errno
import os
import tempfile
from pathlib import Path
from typing import IO, Callable

from cnnkit.errors import UserError


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
    try:
        fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.", suffix=".tmp")
    except OSError as e:  # the folder is missing or not writable: name the file the user asked for
        raise UserError(f"cannot write {str(p)!r}: {e.strerror or e}") from None
    try:
        os.fchmod(fd, default_file_mode())
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if disk_full(e):
            raise UserError(f"disk full while writing {str(p)!r}; the previous version of it is kept") from None
        raise


def disk_full(err: BaseException) -> bool:
    """Whether ``err`` (or what caused it: torch.save wraps the OSError in a RuntimeError) is "no space
    left on device" or an exceeded quota."""
    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if "No space left on device" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write(path, lambda f: codecs.getwriter("utf-8")(f).write(text))


#: The figure formats matplotlib writes for cnnkit, by suffix.
FIGURE_SUFFIXES = (".png", ".svg", ".pdf")


def figure_path(path: str | os.PathLike, option: str) -> Path:
    """``path`` checked as a figure to write (before any drawing): its suffix names PNG, SVG or PDF and
    its folder exists; otherwise a UserError naming ``option`` (the flag the user gave it with)."""
    p = Path(path)
    if p.suffix.lower() not in FIGURE_SUFFIXES:
        raise UserError(f"{option} {str(path)!r}: give a .png, .svg or .pdf file")
    if not p.parent.exists():
        raise UserError(f"{option} {str(path)!r}: folder {str(p.parent)!r} does not exist")
    return p


def save_figure(fig, path: Path) -> Path:
    """Write a matplotlib figure atomically, in the format its suffix names (see :func:`figure_path`)."""
    atomic_write(path, lambda f: fig.savefig(f, format=path.suffix.lower().lstrip(".")))
    return path
