"""Run folders: the unit a user keeps, and the one owner of every file in it.

``runs/<name>/`` holds ``config.yaml`` (resolved), ``meta.json`` (classes,
normalisation, versions), ``metrics.jsonl`` (one line per epoch),
``checkpoints/last.pt`` and ``best.pt``, ``summary.txt`` and ``final.json``.
Every file is written atomically (temp file + rename), so a kill never leaves a
half-written one.

torch is imported only where a checkpoint is read or written, so that listing and reading
runs (the CLI's start, a web page) stays light. A checkpoint is a pickle, and unpickling can
run code: every checkpoint is read with ``torch.load(weights_only=True)``, which accepts
tensors and plain types only, and nothing ever falls back to an unsafe load. Checkpoints are
written as plain data (schema :data:`CHECKPOINT_SCHEMA`: RNG states as tensors and
lists), so that they always load this way.

Example::

    run = RunFolder.create("runs", "lenet5-mnist5k")
    run.write_config(cfg.to_dict()); run.append_metrics({"epoch": 1, ...})
    run.save_checkpoint("last", {"model": model.state_dict(), ...})
    RunFolder.open(run.path).load_checkpoint("best")["model"]
"""

from __future__ import annotations

import functools
import json
import math
import os
import socket
import pickle
import re
import secrets
import subprocess
import time
from pathlib import Path
from typing import Any

from cnnkit.atomic import atomic_write, atomic_write_text
from cnnkit.errors import UserError

CHECKPOINT_SCHEMA = 2
"""Version of the checkpoint layout. 2: plain data only (RNG states as tensors and lists), a
``schema`` and an ``engine`` key. 1 (no ``schema`` key): NumPy arrays in the RNG state."""


# --------------------------------------------------------------------------- files


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` through a temp file and a rename (see :func:`cnnkit.atomic.atomic_write`)."""
    import torch

    atomic_write(path, lambda f: torch.save(obj, f))


def plain_json(obj: Any) -> Any:
    """``obj`` with every NaN or infinite float replaced by None, so that it is strict JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: plain_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain_json(v) for v in obj]
    return obj


def dumps(obj: Any, **kwargs: Any) -> str:
    """Strict JSON (``null`` for a non-finite number, never a bare ``NaN``)."""
    return json.dumps(plain_json(obj), allow_nan=False, **kwargs)


def write_json(path: str | os.PathLike, data: Any) -> None:
    atomic_write_text(path, dumps(data, indent=2) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise UserError(f"{str(path)!r} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{str(path)!r} is not valid JSON: {e}") from None


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
        f.write(dumps(row) + "\n")
        f.flush()
        os.fsync(f.fileno())


@functools.lru_cache(maxsize=1)
def git_revision() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


# --------------------------------------------------------------------------- checkpoints


def _legacy_numpy_globals() -> list[Any]:
    """What a schema-1 checkpoint needs besides plain data: NumPy arrays (the RNG state), as data."""
    import numpy as np

    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # pragma: no cover - NumPy < 2
        from numpy.core.multiarray import _reconstruct  # type: ignore[no-redef]
    dtypes = [type(np.dtype(t)) for t in ("uint32", "int64", "float32", "float64", "uint8", "int32")]
    return [_reconstruct, np.ndarray, np.dtype, *dtypes]


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint as data only (``weights_only=True``); a file that would run code is refused.

    Old (schema 1) checkpoints, whose RNG state holds NumPy arrays, load too: NumPy arrays are
    allowed as data, nothing else is.
    """
    import torch

    p = Path(path)
    if p.is_dir():
        raise UserError(f"checkpoint {str(p)!r} is a folder, not a file")
    try:
        with torch.serialization.safe_globals(_legacy_numpy_globals()):
            obj = torch.load(p, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UserError(f"checkpoint {str(p)!r} does not exist") from None
    except pickle.UnpicklingError as e:
        raise UserError(unsafe_message(p, e)) from None
    except Exception as e:  # a truncated or foreign file
        raise UserError(f"cannot read checkpoint {str(p)!r}: {e}") from None
    if not isinstance(obj, dict):
        raise UserError(f"{str(p)!r} is not a cnnkit checkpoint (it holds a {type(obj).__name__}, not a dict)")
    return obj


def unsafe_message(path: Path, err: Exception) -> str:
    """Why ``torch.load(weights_only=True)`` refused a file, in one line."""
    text = str(err)
    m = re.search(r"(?:GLOBAL|global) ([\w.]+)", text)
    if m:
        return (f"refusing to load {str(path)!r}: it is not plain data (loading it would call {m.group(1)}); "
                f"cnnkit only loads tensors and plain Python values (torch.load weights_only=True)")
    why = text.strip().splitlines()[-1] if text.strip() else type(err).__name__
    return f"refusing to load {str(path)!r}: it is not plain data that torch.load(weights_only=True) accepts ({why})"


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """Write a checkpoint (schema :data:`CHECKPOINT_SCHEMA`) atomically."""
    atomic_torch_save({"schema": CHECKPOINT_SCHEMA, **state}, path)


def checkpoint_engine(ckpt: dict[str, Any]) -> str:
    return str(ckpt.get("engine") or "torch")


# --------------------------------------------------------------------------- RNG state as plain data


def rng_state() -> dict[str, Any]:
    """Python, NumPy, torch (and CUDA) RNG states as tensors, tuples and ints: loadable with weights_only."""
    import random

    import numpy as np
    import torch

    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state: dict[str, Any] = {"python": random.getstate(),
                             "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss),
                                       float(gauss)],
                             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    import random

    import numpy as np
    import torch

    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    keys = keys.numpy() if isinstance(keys, torch.Tensor) else np.asarray(keys)
    np.random.set_state((kind, keys.astype(np.uint32), int(pos), int(has_gauss), float(gauss)))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# --------------------------------------------------------------------------- the folder


class RunFolder:
    """One run folder; every read and write of its files goes through here."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    # -- creating and opening

    @classmethod
    def create(cls, runs_dir: str | os.PathLike, label: str) -> "RunFolder":
        """A new ``runs_dir/<time>-<label>-<random>``; unique even for processes started in the same second."""
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
            return cls(path)
        raise RuntimeError(f"could not create a unique run folder in {root}")

    @classmethod
    def next_to(cls, source: str | os.PathLike, suffix: str) -> "RunFolder":
        """A new run folder ``<source>-<suffix>`` beside ``source`` (``-2``, ``-3`` ... if taken), for a
        run derived from another (a pruned, quantised or distilled copy)."""
        parent, name = Path(source).resolve().parent, Path(source).resolve().name
        for i in range(1, 1000):
            path = parent / (f"{name}-{suffix}" + ("" if i == 1 else f"-{i}"))
            try:
                path.mkdir()
            except FileExistsError:
                continue
            except OSError as e:
                raise UserError(f"cannot create run folder {str(path)!r}: {e.strerror}") from None
            (path / "checkpoints").mkdir()
            return cls(path)
        raise RuntimeError(f"could not create a new run folder next to {source}")  # pragma: no cover

    @classmethod
    def open(cls, path: str | os.PathLike, need_checkpoint: bool = True) -> "RunFolder":
        """A run folder the user named: it must exist, hold a config.yaml and (by default) a checkpoint."""
        p = Path(path)
        if not p.exists():
            raise UserError(f"run folder {str(p)!r} does not exist")
        if not p.is_dir():
            raise UserError(f"{str(p)!r} is not a run folder (it is a file)")
        if not (p / "config.yaml").exists():
            raise UserError(f"{str(p)!r} is not a cnnkit run folder: it has no config.yaml")
        run = cls(p)
        if need_checkpoint and not run.has_checkpoint("best") and not run.has_checkpoint("last"):
            if run.has_checkpoint("int8"):
                raise UserError(f"{str(p)!r} is an int8 run (made by 'cnnkit compress --quantize int8'): its only "
                                f"checkpoint, checkpoints/int8.pt, holds quantised weights that eval, predict, "
                                f"export and finetune do not read; load it in Python with "
                                f"cnnkit.tools.compress.load_quantized({str(p)!r}), or use the float run it came from")
            raise UserError(f"run folder {str(p)!r} has no checkpoint yet (checkpoints/best.pt or last.pt)")
        return run

    # -- paths

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    def checkpoint_path(self, name: str) -> Path:
        return self.checkpoints / f"{name}.pt"

    def has_checkpoint(self, name: str) -> bool:
        return self.checkpoint_path(name).exists()

    def find_checkpoint(self, which: str = "best") -> Path:
        """``which``.pt, else the other one (a run stopped before its first best has only last.pt)."""
        other = "last" if which == "best" else "best"
        for name in (which, other):
            if self.has_checkpoint(name):
                return self.checkpoint_path(name)
        raise UserError(f"run folder {str(self.path)!r} has no checkpoint yet (checkpoints/best.pt or last.pt)")

    # -- files

    def read_config(self) -> dict[str, Any]:
        from cnnkit.config import read_yaml

        return read_yaml(self.path / "config.yaml")

    def write_config(self, raw: dict[str, Any]) -> None:
        from cnnkit.config import dump_yaml

        atomic_write_text(self.path / "config.yaml", dump_yaml(raw))

    def write_meta(self, meta: dict[str, Any]) -> None:
        write_json(self.path / "meta.json", meta)

    def read_meta(self) -> dict[str, Any]:
        return read_json(self.path / "meta.json")

    def write_summary(self, text: str) -> None:
        atomic_write_text(self.path / "summary.txt", text)

    def write_final(self, final: dict[str, Any]) -> None:
        write_json(self.path / "final.json", final)

    def read_final(self) -> dict[str, Any]:
        return read_json(self.path / "final.json")

    def update_final(self, **fields: Any) -> dict[str, Any]:
        """Add ``fields`` to final.json (which must exist) and return the result."""
        final = {**self.read_final(), **fields}
        self.write_final(final)
        return final

    def append_metrics(self, row: dict[str, Any]) -> None:
        append_jsonl(self.path / "metrics.jsonl", row)

    def read_metrics(self) -> list[dict[str, Any]]:
        return read_metrics(self.path / "metrics.jsonl")

    def repair_metrics(self, history: list[dict[str, Any]]) -> None:
        """Make metrics.jsonl hold each checkpointed epoch exactly once.

        Lines already there for those epochs are kept as they are (the first of any
        duplicates); lines of epochs after the checkpoint (written before a kill) are
        dropped, and an epoch the checkpoint knows but the file lacks is added back.
        """
        path = self.path / "metrics.jsonl"
        done = {h["epoch"]: h for h in history}
        rows: dict[int, dict[str, Any]] = {}
        for r in read_metrics(path):
            if r.get("epoch") in done and r["epoch"] not in rows:
                rows[r["epoch"]] = r
        for e, h in done.items():
            rows.setdefault(e, h)
        text = "".join(dumps(rows[e]) + "\n" for e in sorted(rows))
        if not path.exists() or path.read_text() != text:
            atomic_write_text(path, text)

    def remove_temp_files(self) -> None:
        """Delete the temp files of atomic writes that a kill interrupted (only one process writes a run)."""
        for folder in (self.path, self.checkpoints):
            for tmp in folder.glob(".*.tmp"):
                tmp.unlink(missing_ok=True)

    # -- the lock: one process trains a run at a time

    @property
    def lock_path(self) -> Path:
        return self.path / ".lock"

    def is_training(self) -> bool:
        """Whether a live process holds this run's lock (a lock left by a dead process on this host is
        not held; one being written this very moment, or another host's, counts as held)."""
        try:
            text = self.lock_path.read_text()
        except FileNotFoundError:
            return False
        except OSError:
            return True
        try:
            holder = json.loads(text)
        except ValueError:
            return True
        return not isinstance(holder, dict) or not RunLock.stale(holder)

    def lock(self) -> "RunLock":
        """Take the run's lock (a ``.lock`` file naming the owner's pid); a run already being trained
        by a live process is a UserError naming it. A lock left by a dead process is taken over."""
        return RunLock(self.lock_path)

    # -- checkpoints

    def save_checkpoint(self, name: str, state: dict[str, Any]) -> Path:
        self.checkpoints.mkdir(exist_ok=True)
        path = self.checkpoint_path(name)
        save_checkpoint(path, state)
        return path

    def load_checkpoint(self, name: str) -> dict[str, Any]:
        return load_checkpoint(self.checkpoint_path(name))


class RunLock:
    """The lock file of a run folder: ``{"pid", "host", "started"}`` of the process training it.

    Created with O_EXCL, so two processes never both get it; stale (its process is gone, or the pid
    now belongs to a process started later) locks on this host are replaced. :meth:`release` (or
    leaving the ``with`` block) removes it.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        me = _process_identity(os.getpid())
        for attempt in range(2):
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._holder()
                if attempt == 0 and holder is not None and self.stale(holder):
                    path.unlink(missing_ok=True)
                    continue
                who = (f"process {holder.get('pid')} on {holder.get('host')}" if holder
                       else "another process")
                raise UserError(f"run folder {str(path.parent)!r} is being trained by {who} (lock file "
                                f"{str(path)!r}); wait for it to finish, or delete the lock file if that process "
                                f"is gone") from None
            with os.fdopen(fd, "w") as f:
                f.write(json.dumps(me))
            return
        raise UserError(f"cannot take the lock {str(path)!r}")  # pragma: no cover - a race lost twice

    def _holder(self) -> dict[str, Any] | None:
        try:
            data = json.loads(self.path.read_text())
            return data if isinstance(data, dict) else None
        except (OSError, ValueError):
            return None  # being written this very moment, or garbage: treat as held

    @staticmethod
    def stale(holder: dict[str, Any]) -> bool:
        if holder.get("host") != socket.gethostname() or not isinstance(holder.get("pid"), int):
            return False  # another machine's process cannot be checked from here
        alive = _process_identity(holder["pid"])
        return alive is None or alive.get("started") != holder.get("started")

    def release(self) -> None:
        self.path.unlink(missing_ok=True)

    def __enter__(self) -> "RunLock":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


def _process_identity(pid: int) -> dict[str, Any] | None:
    """``{"pid", "host", "started"}`` of a live process, None if there is none with that pid."""
    try:
        import psutil

        started = round(psutil.Process(pid).create_time(), 2)
    except Exception:  # psutil.NoSuchProcess, or no psutil / no /proc
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        started = None
    return {"pid": pid, "host": socket.gethostname(), "started": started}


def find_checkpoint(source: str | os.PathLike, which: str = "best") -> Path:
    """A checkpoint file from a run folder (``which``.pt, else the other) or a path to a .pt file."""
    p = Path(source)
    if p.is_file():
        return p
    return RunFolder.open(p).find_checkpoint(which)
