"""Run folders: the unit a user keeps.

``runs/<name>/`` holds ``config.yaml`` (resolved), ``meta.json`` (classes,
normalisation, versions), ``metrics.jsonl`` (one line per epoch),
``checkpoints/last.pt`` and ``best.pt``, ``summary.txt`` and ``final.json``.
Every file is written atomically (temp file + rename).
"""

from __future__ import annotations

import functools
import json
import os
import secrets
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from cnnkit.config import atomic_write_text, default_file_mode
from cnnkit.errors import UserError


def new_run_dir(runs_dir: str | os.PathLike, label: str) -> Path:
    """Create ``runs_dir/<time>-<label>-<random>``; unique even for processes started in the same second."""
    root = Path(runs_dir)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create runs folder {str(root)!r}: {e.strerror}") from None
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for _ in range(100):
        path = root / f"{stamp}-{label}-{secrets.token_hex(3)}"
        try:
            path.mkdir()
        except FileExistsError:
            continue
        (path / "checkpoints").mkdir()
        return path
    raise RuntimeError(f"could not create a unique run folder in {root}")


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    p = Path(path)
    fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, default_file_mode())
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: str | os.PathLike, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")


def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The complete lines of a metrics.jsonl (a half-written last line is dropped)."""
    rows = []
    p = Path(path)
    if not p.exists():
        return rows
    for line in p.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def append_jsonl(path: str | os.PathLike, row: dict[str, Any]) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")
        f.flush()
        os.fsync(f.fileno())


def check_run_dir(path: str | os.PathLike, need_checkpoint: bool = True) -> Path:
    """A run folder the user named: it must exist and hold a checkpoint."""
    p = Path(path)
    if not p.exists():
        raise UserError(f"run folder {str(p)!r} does not exist")
    if not p.is_dir():
        raise UserError(f"{str(p)!r} is not a run folder (it is a file)")
    if not (p / "config.yaml").exists():
        raise UserError(f"{str(p)!r} is not a cnnkit run folder: it has no config.yaml")
    if need_checkpoint and not (p / "checkpoints" / "best.pt").exists() and not (p / "checkpoints" / "last.pt").exists():
        raise UserError(f"run folder {str(p)!r} has no checkpoint yet (checkpoints/best.pt or last.pt)")
    return p


@functools.lru_cache(maxsize=1)
def git_revision() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except FileNotFoundError:
        raise UserError(f"checkpoint {str(path)!r} does not exist") from None
    except Exception as e:  # a truncated or foreign file
        raise UserError(f"cannot read checkpoint {str(path)!r}: {e}") from None
