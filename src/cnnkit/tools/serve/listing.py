"""The runs folder as the web app sees it: a run name resolved safely, each run's status and summary.

Nothing here imports torch or FastAPI: listing runs stays as light as reading a few small files.

Example::

    path = resolve_run(Path("runs"), "20261204-163130-lenet-716154")   # UserError if it escapes runs/
    run_summary(path)["status"]                                        # 'training', 'finished' or 'stopped'
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cnnkit.errors import UserError
from cnnkit.runs import RunFolder

#: Tasks whose runs predict from an uploaded image, and from a typed text.
IMAGE_TASKS = ("classification", "detection", "segmentation", "instance", "reconstruction")
TEXT_TASKS = ("text",)


class RunNotFound(UserError):
    """A run name that names no run folder inside the runs folder (the app answers 404)."""


def run_file(run: Path, name: str) -> Path:
    """``run/name``, for reading or serving; RunNotFound (404) if it is a symlink leading out of ``run``.

    A run folder (a copied or downloaded one) must not make the app show files from elsewhere, so a file
    that resolves outside the run folder is never read or served; a missing one is returned as it is (the
    caller tells missing from present).
    """
    path = run / name
    if (path.exists() or path.is_symlink()) and not path.resolve().is_relative_to(run.resolve()):
        raise RunNotFound(f"{name} of run {run.name!r} is a link to a file outside the run folder; "
                          f"the app does not read or serve it")
    return path


def own_file(run: Path, name: str) -> bool:
    """Whether ``run`` holds the file ``name`` of its own (present, and not a link out of it); a run folder
    is a folder with its own config.yaml."""
    try:
        return run_file(run, name).is_file()
    except RunNotFound:
        return False


def resolve_run(root: Path, name: str) -> Path:
    """``root/name`` resolved, if it is a run folder inside ``root``; RunNotFound or UserError if not.

    A name is one plain folder name: no slash, backslash, NUL, leading dot (``..``, hidden files) or
    absolute path; a symlink is followed and must still land inside ``root``, and its config.yaml must be
    its own (not a link out of it).
    """
    if not name or any(c in name for c in "/\\\0") or name.startswith(".") or Path(name).is_absolute():
        raise UserError(f"run name {name!r} is not allowed: give the name of a folder directly inside the runs "
                        f"folder (no '/', '\\' or leading '.')")
    base = root.resolve()
    path = (base / name).resolve()
    if not path.is_relative_to(base) or path == base or not own_file(path, "config.yaml"):
        raise RunNotFound(f"no run named {name!r} in {str(root)!r}")
    return path


def list_runs(root: Path) -> list[Path]:
    """The run folders directly inside ``root`` (those with a config.yaml), newest name first."""
    base = root.resolve()
    found = []
    for p in root.iterdir():
        if p.name.startswith("."):
            continue
        real = p.resolve()
        if real.is_relative_to(base) and real != base and own_file(real, "config.yaml"):
            found.append(p)
    return sorted(found, key=lambda p: p.name, reverse=True)


def run_status(path: Path) -> str:
    """``training`` while a live process holds the run's lock, else ``finished`` (final.json) or ``stopped``."""
    if RunFolder(path).is_training():
        return "training"
    return "finished" if (path / "final.json").is_file() else "stopped"


def _numbers(row: dict[str, Any], prefix: str = "val_") -> dict[str, float]:
    return {k: v for k, v in row.items() if k.startswith(prefix) and isinstance(v, (int, float))
            and not isinstance(v, bool)}


def metric_rows(run: Path) -> list[dict[str, Any]]:
    """The rows of the run's metrics.jsonl that are JSON objects: a line of another JSON value (a file edited
    by hand, or cut mid-write into something that still parses) is skipped, as a half-written line is."""
    return [row for row in RunFolder(run).read_metrics() if isinstance(row, dict)]


def input_kind(task: str) -> str | None:
    """What the predict form asks for: ``image``, ``text``, or None (the web app cannot predict it)."""
    return "image" if task in IMAGE_TASKS else "text" if task in TEXT_TASKS else None


def model_label(cfg: dict[str, Any]) -> str:
    """The model's registry name, or ``layer list (N layers)`` for a declarative one."""
    model = cfg.get("model") or {}
    if model.get("name"):
        return str(model["name"])
    return f"layer list ({len(model.get('layers') or [])} layers)"


def run_summary(path: Path) -> dict[str, Any]:
    """One row of the runs page: name, status, task, model, epochs and final (or latest) val_* metrics.

    A folder whose files do not read, or link out of it, gives its ``error`` instead of failing the whole
    list; a report.html that links out of it is shown as no report.
    """
    run = RunFolder(path)
    out: dict[str, Any] = {"name": path.name, "status": run_status(path)}
    try:
        for name in ("config.yaml", "final.json", "metrics.jsonl"):
            run_file(path, name)
        cfg = run.read_config()
        final = run.read_final() if (path / "final.json").is_file() else {}
    except UserError as e:
        return {**out, "error": str(e)}
    rows = metric_rows(path)
    task = str(final.get("task") or cfg.get("task") or "classification")
    return {**out, "task": task, "input": input_kind(task), "model": model_label(cfg),
            "epochs_done": rows[-1].get("epoch", len(rows)) if rows else 0,
            "epochs_planned": (cfg.get("train") or {}).get("epochs"),
            "final_metrics": _numbers(final), "latest_metrics": _numbers(rows[-1]) if rows else {},
            "report": own_file(path, "report.html")}
