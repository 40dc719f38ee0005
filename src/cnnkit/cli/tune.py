"""``cnnkit tune``: hyperparameter search on Optuna; the library side is :mod:`cnnkit.tools.tune`."""

from __future__ import annotations

import argparse

from cnnkit.cli.common import Formatter, split_config_and_overrides
from cnnkit.tools.tune import METRICS, PRUNERS, SAMPLERS

_EPILOG = """\
space file (YAML): dotted config keys mapped to a list of choices or a range
  optim.lr: {low: 1.0e-4, high: 1.0e-1, log: true}   # float range, log scale
  data.batch_size: [16, 32, 64]                     # choices
  optim.name: [sgd, momentum, adam]
  train.epochs: {low: 2, high: 10, step: 2}         # int range (both bounds ints)
  grid search needs lists or ranges with a step.

storage (--storage; default journal:<runs_dir>/<study>.journal):
  journal:runs/tune.journal          a file shared safely by processes on one machine
                                     (Optuna JournalStorage, file lock)
  sqlite:///runs/tune.db             SQLite (one machine; locks under many writers)
  postgresql://user:pass@host/db     a database shared by several machines
  mysql://user:pass@host/db

resume: rerun with the same storage and --study; --trials N is the total of
finished (complete + pruned) trials; trials left running by a stopped process
are marked failed (and their grid points run again).

examples:
  cnnkit tune configs/lenet5_mnist5k.yaml --space configs/space_lenet.yaml --sampler tpe --trials 30
  cnnkit tune configs/lenet5_mnist5k.yaml train.epochs=3 --space grid.yaml --sampler grid
  cnnkit tune configs/lenet5_mnist5k.yaml --space configs/space_lenet.yaml --sampler random --trials 20 \\
      --seed 0 --prune median --workers 2
  cnnkit tune my.yaml --space s.yaml --sampler gp --trials 40 --study lenet-gp \\
      --storage postgresql://me:secret@db.lab/optuna       # run the same line on several machines
  cnnkit train runs/lenet-gp/best.yaml                       # train the best config found
"""


def add_parser(subparsers) -> argparse.ArgumentParser:
    t = subparsers.add_parser(
        "tune", help="hyperparameter search (grid, random, TPE, GP) with Optuna",
        formatter_class=Formatter,
        description="Search the hyperparameters of a training config with Optuna: grid, random, or Bayesian\n"
                    "(TPE, Gaussian process) search. Each trial is a run folder under <runs_dir>/<study>/.\n"
                    "The search resumes from its storage, and runs in parallel with --workers or on several\n"
                    "machines sharing a database. It ends with a table of the trials and writes the best\n"
                    "config to <runs_dir>/<study>/best.yaml, ready for 'cnnkit train'.",
        epilog=_EPILOG)
    t.add_argument("config", nargs="?", help="YAML config (default: the demo recipe; a key=value here is an override)")
    t.add_argument("overrides", nargs="*", help="key.path=value overrides applied to every trial")
    t.add_argument("--space", required=True, metavar="SPACE.yaml", help="the search space (see below)")
    t.add_argument("--sampler", choices=SAMPLERS, default="tpe", help="search method (default: tpe)")
    t.add_argument("--trials", type=int, metavar="N",
                   help="finished trials the study ends with, counting earlier ones (default for grid: the grid)")
    t.add_argument("--storage", metavar="URL", help="journal:PATH or an RDB URL (default: a journal file in runs_dir)")
    t.add_argument("--study", metavar="NAME", help="study name (default: <config>-<sampler>-<hash of the setup>)")
    t.add_argument("--workers", type=int, default=1, metavar="K", help="processes on this machine (default: 1)")
    t.add_argument("--prune", choices=PRUNERS, default="none",
                   help="stop poor trials early on per-epoch metrics (default: none)")
    t.add_argument("--metric", choices=METRICS, default=None,
                   help="metric to optimise (default: the task's own: val_accuracy, val_map_50 for detection, "
                        "val_miou for segmentation, val_mask_map_50 for instance)")
    t.add_argument("--direction", choices=("maximize", "minimize"),
                   help="default: maximize for accuracies, minimize for losses")
    t.add_argument("--seed", type=int, help="sampler seed (a fresh single-process search is then reproducible)")
    t.set_defaults(func=run)
    return t


def run(args: argparse.Namespace) -> int:
    from cnnkit.tools.tune import make_plan, tune

    config, overrides = split_config_and_overrides(args.config, args.overrides)
    plan = make_plan(config, overrides, args.space, sampler=args.sampler, trials=args.trials, storage=args.storage,
                     study=args.study, prune=args.prune, metric=args.metric, direction=args.direction,
                     seed=args.seed)
    weights = (plan.base.get("model") or {}).get("weights")
    if weights:  # every trial would start from this file: refuse a bad or unsafe one before the first trial
        from cnnkit.models.weights import open_weights

        open_weights(weights)
    result = tune(plan, workers=args.workers, log=lambda s: print(s, flush=True))
    return result.exit_code
