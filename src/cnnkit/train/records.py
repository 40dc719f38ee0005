"""What a run records besides its checkpoints, the same for both engines: ``meta.json``,
``summary.txt``, ``final.json`` and the :class:`RunResult` handed back to the caller."""

from __future__ import annotations

import contextlib
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cnnkit
from cnnkit.config import Config
from cnnkit.data import DataBundle
from cnnkit.errors import TrainingDiverged, UserError
from cnnkit.runs import RunFolder, checkpoint_engine, git_revision


@dataclass
class RunResult:
    run_dir: Path
    final: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)


def process_start_time() -> float:
    """Seconds on the ``time.time()`` clock at which this process started (for end-to-end timing)."""
    try:
        import psutil

        return psutil.Process().create_time()
    except Exception:  # pragma: no cover - psutil missing or no /proc
        return _IMPORT_TIME


_IMPORT_TIME = time.time()


#: ``DataBundle.extra`` entries a run keeps in meta.json and its checkpoints (each JSON-able).
SAVED_EXTRAS = ("series_layout", "forecast_layout")


def run_meta(cfg: Config, bundle: DataBundle, input_shape: tuple[int, ...]) -> dict[str, Any]:
    """What a run folder records besides its config: classes, normalisation, versions, seed, command."""
    import torch

    tok = (bundle.extra or {}).get("tokenizer")
    text = {"tokenizer": tok.to_dict(), "max_length": input_shape[-1]} if tok is not None else {}
    # what reading new data needs, fitted on the training split (JSON): a series or forecast layout
    text.update({k: v for k, v in (bundle.extra or {}).items() if k in SAVED_EXTRAS})
    return {**text, "classes": bundle.classes, "input_shape": list(input_shape), "mean": list(bundle.mean),
            "std": list(bundle.std), "dataset": cfg.data.name, "task": cfg.task,
            "cnnkit_version": cnnkit.__version__, "torch_version": str(torch.__version__),
            "git_revision": git_revision(), "seed": cfg.train.seed, "command": " ".join(sys.argv)}


def summary_text(cfg: Config, model, bundle: DataBundle, input_shape: tuple[int, ...]) -> str:
    """The run folder's summary.txt: data, classes and the model's layer table."""
    from cnnkit.summary import summarize
    from cnnkit.tasks import task_class

    unit = task_class(cfg.task).unit

    try:
        table = summarize(model, input_shape).to_text()
    except Exception as e:  # the summary must never stop a training run
        table = f"(summary unavailable: {e})"
    return (f"model: {cfg.model.name or 'layer list'}\ndataset: {cfg.data.name} ({bundle.description})\n"
            f"classes: {', '.join(bundle.classes)}\ntrain/val {unit}: {len(bundle.train)}/{len(bundle.val)}\n\n"
            f"{table}\n")


def final_record(task, *, val: dict[str, Any], history: list[dict[str, Any]], checkpointer, early,
                 last_val: dict[str, Any] | None, bundle: DataBundle, train_time: float, world_size: int,
                 device: str, engine: str) -> dict[str, Any]:
    """``final.json``: the result's metrics (``val_*``), the best and the last epoch's, sizes and times."""
    names = task.metric_names
    best_key = task.best_metric
    seen = [h[best_key] for h in history if h.get(best_key) is not None]
    best = (max if task.best_mode == "max" else min)(seen, default=None)
    final: dict[str, Any] = {f"val_{k}": val.get(k) for k in names}
    final.update({"val_loss": val.get("loss"), "best_epoch": checkpointer.best_epoch, f"best_{best_key}": best,
                  "epochs": len(history), "n_train": len(bundle.train), "n_val": val.get("n"),
                  "num_classes": bundle.num_classes, "classes": bundle.classes,
                  "checkpoint": checkpointer.checkpoint_name})
    final.update({f"last_val_{k}": last_val.get(k) if last_val else None for k in names})
    # The task's own names too (map, map_50; miou, dice; accuracy): what the result is, unprefixed.
    final.update({k: val.get(k) for k in names})
    final.update({"last_val_loss": last_val.get("loss") if last_val else None,
                  "train_time_s": round(train_time, 3), "end_to_end_s": round(time.time() - process_start_time(), 3),
                  "world_size": world_size, "device": device, "engine": engine,
                  "stopped_early": bool(early and early.stopped_epoch), "task": task.name})
    return final


def val_of_epoch(task, row: dict[str, Any], n: int) -> dict[str, Any]:
    """The validation metrics an epoch's metrics line recorded, as ``Task.evaluate`` returns them."""
    return {"loss": row.get("val_loss"), **{k: row.get(f"val_{k}") for k in task.metric_names}, "n": n}


def create_run(cfg: Config, bundle: DataBundle, input_shape: tuple[int, ...], model,
               run_dir: str | Path | None = None) -> RunFolder:
    """A new run folder (``run_dir``, or a fresh one under ``train.runs_dir``) with its config.yaml,
    meta.json and summary.txt written."""
    label = cfg.train.name or f"{cfg.model.name or 'layers'}-{cfg.data.name}"
    run = RunFolder(run_dir) if run_dir else RunFolder.create(cfg.train.runs_dir, label)
    run.checkpoints.mkdir(parents=True, exist_ok=True)
    run.write_config(cfg.to_dict())
    meta = run_meta(cfg, bundle, input_shape)
    if "tokenizer" in meta:  # the vocabulary gets a file of its own; meta.json says which
        bundle.extra["tokenizer"].save(run.path / "tokenizer.json")
        meta = {**meta, "tokenizer": {"kind": meta["tokenizer"].get("kind"), "file": "tokenizer.json",
                                      "vocab_size": bundle.extra["tokenizer"].vocab_size}}
    run.write_meta(meta)
    run.write_summary(summary_text(cfg, model, bundle, input_shape))
    return run


def load_last(run: RunFolder, engine: str) -> dict[str, Any] | None:
    """The ``last.pt`` of a run being resumed (None if it was killed before its first checkpoint);
    a checkpoint written by the other engine is a UserError."""
    if not run.has_checkpoint("last"):
        return None
    ckpt = run.load_checkpoint("last")
    if checkpoint_engine(ckpt) != engine:
        raise UserError(f"{str(run.checkpoint_path('last'))!r} was written by the {checkpoint_engine(ckpt)} "
                        f"engine; resume it with train.engine={checkpoint_engine(ckpt)}")
    return ckpt


def restore_progress(trainer, ckpt: dict[str, Any]) -> None:
    """Where a resumed run stands: epoch, history, training time, the stop flag and every callback's
    state (the checkpointer's best epoch from the top-level keys of checkpoints written before it was
    a callback)."""
    trainer.start_epoch = ckpt["epoch"] + 1
    trainer.epoch = ckpt["epoch"]
    trainer.history = ckpt["history"]
    trainer.train_time = ckpt.get("train_time_s", 0.0)
    trainer.should_stop = ckpt.get("stopped", False)
    states = dict(ckpt.get("callbacks") or {})
    if "Checkpointer" not in states and "best_epoch" in ckpt:
        states["Checkpointer"] = {"best_value": ckpt["best_value"], "best_epoch": ckpt["best_epoch"]}
    for cb in trainer.callbacks:
        state = states.get(type(cb).__name__)
        if state:
            cb.load_state_dict(state)


@contextlib.contextmanager
def checkpoint_must_fit(run: RunFolder):
    """Loading a resumed run's state into the model and optimiser the (possibly overridden) config
    built: a mismatch is a UserError, raised before anything in the run folder is written."""
    try:
        yield
    except (RuntimeError, ValueError, KeyError, TypeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"cannot resume {str(run.path)!r} with this config: its last checkpoint does not fit "
                        f"({first[:300]}); overrides on resume may change how training goes on (epochs, "
                        f"learning rate, ...), not the model or the optimiser. The run folder is unchanged") from None


def stop_if_diverged(metrics: dict[str, Any], epoch: int, first_bad_step: int | None, steps_per_epoch: int,
                     lr: float) -> None:
    """A NaN or infinite loss stops the run (:class:`TrainingDiverged`), before this epoch is logged or
    checkpointed: the checkpoints of the epochs before it stay as they were."""
    for key in ("train_loss", "val_loss"):
        value = metrics.get(key)
        if value is not None and not math.isfinite(value):
            where = f"epoch {epoch}"
            if first_bad_step is not None and first_bad_step >= 0:
                where += f", step {first_bad_step % steps_per_epoch + 1} of {steps_per_epoch}"
            raise TrainingDiverged(
                f"the {key.replace('_', ' ')} became {value} at {where}; training stopped and the checkpoints of "
                f"earlier epochs are kept. Lower optim.lr (it was {lr:.3g} at that step) or set "
                f"regularization.grad_clip")


def locked_fit(trainer, fit) -> RunResult:
    """``fit()``, releasing the run's lock (``trainer._lock``) however it ends; Ctrl-C says how to resume."""
    try:
        return fit()
    except KeyboardInterrupt:
        if trainer.run is None:
            raise
        raise KeyboardInterrupt(f"interrupted at epoch {trainer.epoch}; resume with: cnnkit train --resume "
                                f"{trainer.run.path}") from None
    finally:
        if trainer._lock is not None:
            trainer._lock.release()
