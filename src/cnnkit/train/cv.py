"""K-fold cross-validation (``train.cv_folds: K``): the way Kim (2014) reports MR, and the honest
figure for a small dataset, whose single held-out split is noisy.

One parent run folder holds a child run per fold in ``folds/fold01 ...``; each child is an ordinary
run (config, vocabulary, checkpoints, final.json), trained on K-1 folds and validated on the one
left out (:func:`cnnkit.data.load_folds`). The parent's ``final.json`` holds every fold's figures
and each metric's mean and standard deviation over the folds (``val_accuracy_mean``,
``val_accuracy_std``, ...). ``cnnkit train --resume PARENT`` skips the finished folds and resumes
the one that was running.

Example::

    result = cnnkit.api.train(load_config("configs/kim_cnn_mr.yaml", ["train.cv_folds=10"]))
    result.final["val_accuracy_mean"], result.final["val_accuracy_std"]
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any, Callable

from cnnkit.config import Config
from cnnkit.data import load_folds
from cnnkit.errors import UserError
from cnnkit.runs import RunFolder
from cnnkit.tasks import task_class
from cnnkit.train.records import RunResult

#: The fold figures of each child's final.json that the parent averages (with the task's metrics).
AVERAGED = ("val_loss", "best_epoch", "train_time_s")


def fold_dir(parent: Path, i: int) -> Path:
    return parent / "folds" / f"fold{i:02d}"


def cross_validate(cfg: Config, trainer_class: type, *, run_dir: str | Path | None = None, quiet: bool = False,
                   log: Callable[[str], None] | None = None, callbacks: list | None = None) -> RunResult:
    """Train one run per fold with ``trainer_class`` (the engine's trainer) and write the parent's
    final.json; ``run_dir``: a parent to resume."""
    k = cfg.train.cv_folds
    if k is None:
        raise UserError("cross_validate needs train.cv_folds (the number of folds)")
    say = (lambda s: None) if quiet else (log or (lambda s: print(s, flush=True)))
    folds = load_folds(cfg.data, k, task=cfg.task)
    if run_dir is None:
        label = cfg.train.name or f"{cfg.model.name or 'layers'}-{cfg.data.name}"
        parent = RunFolder.create(cfg.train.runs_dir, f"{label}-cv{k}")
        parent.write_config(cfg.to_dict())
    else:
        parent = RunFolder(run_dir)
    # Each child is a plain run: its config says which fold it is, not to cross-validate again.
    child_cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"cv_folds": None})})
    finals: list[dict[str, Any]] = []
    for i, bundle in enumerate(folds, 1):
        child = fold_dir(parent.path, i)
        if (child / "final.json").is_file():
            say(f"fold {i}/{k}: done before ({child})")
            finals.append(RunFolder(child).read_final())
            continue
        resume = (child / "checkpoints" / "last.pt").is_file()
        say(f"fold {i}/{k}: {len(bundle.train)} train / {len(bundle.val)} val" + (" (resuming)" if resume else ""))
        trainer = trainer_class(child_cfg, run_dir=child, resume=resume, quiet=quiet, log=log,
                                callbacks=list(callbacks or []), bundle=bundle)
        finals.append(trainer.fit().final)
    final = summarise(cfg, finals, [fold_dir(parent.path, i) for i in range(1, k + 1)])
    parent.write_final(final)
    return RunResult(parent.path, final, [])


def _scored(final: dict[str, Any], cfg: Config) -> dict[str, Any]:
    """A fold's figures as cross-validation scores them: the last epoch's, or with early stopping the
    epoch it restored (chosen on that fold too, as the user asked)."""
    if cfg.regularization.early_stopping is not None:
        return final
    return {**final, **{k.removeprefix("last_"): v for k, v in final.items()
                        if k.startswith("last_val_") and v is not None}}


def summarise(cfg: Config, finals: list[dict[str, Any]], dirs: list[Path]) -> dict[str, Any]:
    """The parent's final.json: per fold its figures, and per metric the mean and (sample) standard
    deviation over the folds.

    A fold's figure is its *last* epoch's (``last_val_*``), unless early stopping ended it (then the
    restored epoch's): its best checkpoint is picked on the very fold it is scored on, so its
    ``val_*`` would flatter the model. Those best-epoch figures are kept as ``best_val_*_mean``."""
    task = task_class(cfg.task)
    names = [f"val_{m}" for m in task.metric_names] + ["val_loss"]
    keys = names + [k for k in AVERAGED if k != "val_loss"]
    honest = [_scored(f, cfg) for f in finals]
    out: dict[str, Any] = {"cv_folds": len(finals), "task": cfg.task,
                           "scored": "early-stopping epoch" if cfg.regularization.early_stopping else "last epoch",
                           "folds": [{"fold": i, "run_dir": str(d), "n_train": f.get("n_train"),
                                      "n_val": f.get("n_val"), **{key: h.get(key) for key in keys},
                                      **{f"best_{key}": f.get(key) for key in names}}
                                     for i, (f, h, d) in enumerate(zip(finals, honest, dirs), 1)]}
    for key in names:
        values = [f[key] for f in finals if f.get(key) is not None]
        out[f"best_{key}_mean"] = statistics.fmean(values) if values else None
    for key in keys:
        values = [f[key] for f in honest if f.get(key) is not None]
        out[f"{key}_mean"] = statistics.fmean(values) if values else None
        out[f"{key}_std"] = statistics.stdev(values) if len(values) > 1 else (0.0 if values else None)
    # The task's metrics, unprefixed, are the cross-validated figures (as a plain run's final.json has them).
    for m in task.metric_names:
        out[m] = out[f"val_{m}_mean"]
        out[f"val_{m}"] = out[f"val_{m}_mean"]
    out["val_loss"] = out["val_loss_mean"]
    out["n_train"] = sum(f.get("n_train") or 0 for f in finals) // max(len(finals), 1)
    out["n_val"] = sum(f.get("n_val") or 0 for f in finals)
    out["train_time_s"] = round(sum(f.get("train_time_s") or 0.0 for f in finals), 3)
    out["best_epoch"] = None
    out["epochs"] = cfg.train.epochs
    return out
