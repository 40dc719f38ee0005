"""What the commands share: config/override splitting, run reports, shapes, targets, exit codes.

Exit codes: 0 success; 2 for anything the user can fix (usage, config, a
missing or unreadable file, folder or run, an unknown name), printed as one
``error:`` line with no traceback; 1 for a failure while running; 130 when
interrupted.

Only ``argparse`` and :mod:`cnnkit.errors` are imported at module level: building
the parser must not import torch. Everything heavy is imported inside the functions.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from pathlib import Path
from typing import Any, Callable

from cnnkit.errors import UserError

Command = Callable[[argparse.Namespace], int]


class Formatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the line breaks of descriptions and epilogs (the examples)."""


def split_config_and_overrides(config: str | None, overrides: list[str]) -> tuple[str | None, list[str]]:
    """``CONFIG`` may be left out: a first positional ``key=value`` (not a file) is an override.

    >>> split_config_and_overrides("optim.lr=0.1", ["train.epochs=2"])
    (None, ['optim.lr=0.1', 'train.epochs=2'])
    """
    if config is not None and "=" in config and not Path(config).exists():
        return None, [config, *overrides]
    return config, overrides


def report_run(result: Any) -> int:
    """Print a finished run's held-out accuracy, then (last line) its folder; rank 0 only."""
    from cnnkit.train.distributed import is_main_process

    if result.run_dir is None or not is_main_process():  # a non-zero DDP rank: rank 0 reports
        return 0
    from cnnkit.tasks import task_class

    f = result.final
    unit = task_class(f.get("task", "classification")).unit
    if f.get("cv_folds"):
        metric = task_class(f.get("task", "classification")).best_metric
        print(f"{f['cv_folds']}-fold cross-validation: {metric.removeprefix('val_')} {f[metric + '_mean']:.4f} +- "
              f"{f[metric + '_std']:.4f} (mean +- standard deviation over the folds; "
              f"{f['n_val']} {unit} validated once each, training {f['train_time_s']:.1f}s)")
        print(result.run_dir)
        return 0
    tail = f"best epoch {f['best_epoch']}, {f['epochs']} epochs, training {f['train_time_s']:.1f}s"
    if f.get("val_accuracy") is not None:
        print(f"held-out accuracy: {f['val_accuracy']:.4f} (val_loss {f['val_loss']:.4f}, {f['n_val']} {unit}, {tail})")
    else:  # another task: its own metrics
        names = task_class(f.get("task", "classification")).metric_names
        shown = ", ".join(f"{k} {f[f'val_{k}']:.4f}" for k in names if f.get(f"val_{k}") is not None)
        print(f"held-out {shown or 'metrics: none'} ({f['n_val']} {unit}, {tail})")
    write_report(result.run_dir)
    print(result.run_dir)
    return 0


def write_report(run_dir: Any) -> None:
    """The run's report.html, unless its ``train.report`` is false or ``CNNKIT_REPORT=0``. A report that
    cannot be written is a warning: the run itself is saved and complete. At most :data:`REPORT_ITEMS`
    held-out items are scored (on the CPU); ``cnnkit report RUN --max-items N`` draws it with more."""
    import os

    if os.environ.get("CNNKIT_REPORT", "1").strip().lower() in ("0", "false", "no", "off"):
        return
    try:
        from cnnkit.runs import RunFolder

        if not (RunFolder(run_dir).read_config().get("train") or {}).get("report", True):
            return
        from cnnkit.tools.report import build_report

        print(f"report: {build_report(run_dir, max_items=REPORT_ITEMS)}")
    except Exception as e:  # noqa: BLE001 - the run is saved; say why its report is missing
        print(f"warning: report.html not written ({type(e).__name__}: {e}); try `cnnkit report {run_dir}`",
              file=sys.stderr)


#: Held-out items the end-of-training report scores (``cnnkit report`` defaults to 5,000).
REPORT_ITEMS = 2000


def parse_shape(text: str) -> tuple[int, ...]:
    """``"3,32,32"`` (or ``"3x32x32"``) -> ``(3, 32, 32)``; two ints for a sequence model (``V,L`` of a
    text model, ``C,L`` of a series model), four for a clip model (``T,C,H,W``); anything else is a
    UserError naming ``--input``."""
    try:
        parts = tuple(int(v) for v in text.replace("x", ",").split(","))
    except ValueError:
        parts = ()
    if len(parts) not in (2, 3, 4) or min(parts) < 1:
        raise UserError(f"--input {text!r} is not a shape C,H,W of three positive ints (e.g. 3,32,32), C,L "
                        f"of two for a sequence model (series: channels,length; text: vocabulary,length), or "
                        f"T,C,H,W of four for a clip model (frames, then one frame's shape)")
    return parts


def resolve_target(target: str, input_text: str | None, num_classes: int | None):
    """A model (and its input shape) from a registered name or a YAML config: ``(model, shape, cfg or None)``."""
    from cnnkit.config import is_config_path, load_config
    from cnnkit.models import MODELS, create_model, default_input, get_model, list_models
    from cnnkit.models.registry import frame_shape

    shape = parse_shape(input_text) if input_text else None
    if is_config_path(target):
        cfg = load_config(target)
        if shape is None:
            if cfg.model.input is not None:
                shape = tuple(cfg.model.input)
            elif cfg.model.name is not None:
                shape = default_input(cfg.model.name)
            else:
                from cnnkit.data import load_data

                shape = tuple(load_data(cfg.data, task=cfg.task).input_shape)
        classes = num_classes or cfg.model.num_classes or 10
        if cfg.model.layers is None and cfg.model.name is not None:
            chans, side = frame_shape(shape)
            model = get_model(cfg.model.name, num_classes=classes, in_chans=chans, input_size=side,
                              **cfg.model.options)
        else:
            model = create_model(cfg.model, shape, classes)
        return model, shape, cfg
    list_models()
    if target not in MODELS:
        MODELS.entry(target)  # raises the "unknown model" error with the list
    shape = shape or default_input(target)
    rank = len(default_input(target))
    if rank != len(shape):
        want = {2: "C,L (two ints)", 3: "C,H,W (three ints)", 4: "T,C,H,W (four ints: frames, then one frame's "
                "shape)"}[rank]
        raise UserError(f"model {target!r} takes inputs {want}; got --input {input_text!r}")
    if rank >= 3 and shape[-2] != shape[-1]:
        raise UserError(f"model {target!r} takes square inputs; got --input {input_text}")
    chans, side = frame_shape(shape)
    return get_model(target, num_classes=num_classes or 10, in_chans=chans, input_size=side), shape, None


def run_command(func: Command, args: argparse.Namespace, debug: bool = False) -> int:
    """Run one command and turn what it raised into an exit code and one ``error:`` line on stderr."""
    try:
        return int(func(args) or 0)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt as e:
        print(str(e) or "interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except Exception as e:  # a failure while running, not the user's mistake ...
        if isinstance(e, OSError) and e.filename is not None:
            # ... unless it is a path the user named that cannot be written or read (--save, --out ...)
            print(f"error: cannot use {str(e.filename)!r}: {e.strerror or e}", file=sys.stderr)
            return 2
        if debug:
            traceback.print_exc()
        else:
            print(f"error: {type(e).__name__}: {e}\n(run with 'cnnkit --debug ...' for the traceback)",
                  file=sys.stderr)
        return 1
