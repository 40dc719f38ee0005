"""The public entry points for a run: :func:`train`, :func:`resume`, :func:`finetune`.

The engine (``train.engine``: ``torch`` or ``reference``) is chosen here, above both
engines, so that neither knows the other exists and both receive the same callbacks.

Example::

    from cnnkit.api import train
    from cnnkit.config import load_config

    result = train(load_config("configs/lenet5_mnist5k.yaml", ["train.epochs=2"]))
    result.run_dir, result.final["val_accuracy"]
"""

from __future__ import annotations

import os
from typing import Any, Callable

from cnnkit.config import Config

Log = Callable[[str], None]


def _trainer_class(engine: str):
    if engine == "reference":
        from cnnkit.reference.trainer import ReferenceTrainer

        return ReferenceTrainer
    from cnnkit.train.trainer import Trainer

    return Trainer


def train(cfg: Config, *, quiet: bool = False, log: Log | None = None, callbacks: list | None = None):
    """Train a new run from a validated config; returns a ``RunResult`` (run folder, final metrics, history).
    With ``train.cv_folds`` K: K runs of K-fold cross-validation under one parent run (:mod:`cnnkit.train.cv`)."""
    if cfg.train.cv_folds is not None:
        from cnnkit.train.cv import cross_validate

        return cross_validate(cfg, _trainer_class(cfg.train.engine), quiet=quiet, log=log, callbacks=callbacks)
    return _trainer_class(cfg.train.engine)(cfg, quiet=quiet, log=log, callbacks=callbacks).fit()


def resume(run_dir: str | os.PathLike, overrides: list[str] | None = None, *, quiet: bool = False,
           log: Log | None = None, callbacks: list | None = None):
    """Continue a run from ``checkpoints/last.pt`` (model, optimiser, schedule position, RNG, epoch)."""
    from cnnkit.config import config_from, read_yaml
    from cnnkit.runs import RunFolder

    path = RunFolder.open(run_dir, need_checkpoint=False).path
    cfg = config_from(read_yaml(path / "config.yaml"), overrides)
    if cfg.train.cv_folds is not None:  # a cross-validation parent: the folds left to do
        from cnnkit.train.cv import cross_validate

        return cross_validate(cfg, _trainer_class(cfg.train.engine), run_dir=path, quiet=quiet, log=log,
                              callbacks=callbacks)
    extra = list(callbacks or [])
    kwargs: dict[str, Any] = {}
    f = cfg.finetune
    if cfg.train.engine == "torch" and (f.freeze != "none" or f.lr_mult or f.unfreeze_at):
        # A fine-tuned run resumes with its freezing, learning-rate groups and unfreezing schedule.
        from cnnkit.train.finetune import FinetuneCallback, FinetunePlan

        callback = FinetuneCallback(None)  # type: ignore[arg-type]

        def groups(model):
            callback.plan = FinetunePlan(model, f, cfg.train.epochs)
            return callback.plan.param_groups(model)

        kwargs["param_groups"] = groups
        extra.insert(0, callback)
    # The overridden config is written into the run only once its checkpoint has been loaded into the
    # model and optimiser it builds: a refused resume leaves the folder as it was.
    trainer = _trainer_class(cfg.train.engine)(cfg, run_dir=path, resume=True, quiet=quiet, log=log,
                                               callbacks=extra, save_config=bool(overrides), **kwargs)
    return trainer.fit()


def finetune(source: str | None, config: str | None, overrides: list[str] | None = None, *, quiet: bool = False,
             log: Log | None = None, head_init: str = "zero", callbacks: list | None = None) -> Any:
    """Fine-tune from a run folder, checkpoint or weights file (None: the config's own weights)."""
    from cnnkit.train.finetune import finetune as _finetune

    return _finetune(source, config, overrides, quiet=quiet, log=log, head_init=head_init, callbacks=callbacks)
