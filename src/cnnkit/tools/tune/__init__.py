"""``cnnkit tune``: hyperparameter search on Optuna (grid, random, TPE, GP), resumable and parallel.

Every trial is an ordinary run folder written by :func:`cnnkit.api.train`
under ``<runs_dir>/<study>/``; the study lives in an Optuna storage that several
processes (and machines, with a database URL) share.

* **Storage.** Default: a journal file ``<runs_dir>/<study>.journal`` (Optuna's
  ``JournalStorage`` + ``JournalFileBackend``, which locks the file for each
  write, so concurrent processes are safe; SQLite locks up under concurrent
  writers). ``--storage`` also takes ``journal:PATH`` or any RDB URL.
* **Exactly once per grid point.** Every grid point is enqueued as a fixed
  WAITING trial tagged with its key (user attr ``cnnkit_grid``); Optuna hands
  each WAITING trial to exactly one ``ask()``. A trial that is not the
  smallest-numbered live trial of its key (or not from the queue at all), or
  that would exceed ``--trials``, is discarded at once as a *surplus* claim
  (state FAIL, user attr ``cnnkit_surplus``, never trained, hidden from the
  table). A grid point whose only trials were interrupted is enqueued again;
  one whose trial raised an error is not retried.
* **Resume.** The same storage and study name continue the search;
  ``--trials N`` is the total of finished (complete + pruned) trials. A RUNNING
  trial whose process is gone (same host: its pid is dead) or whose heartbeat
  (user attr ``cnnkit_heartbeat``, every ``HEARTBEAT_S`` seconds) is older than
  ``STALE_AFTER_S`` is marked FAIL. (Optuna's own heartbeat only exists for
  RDB storages and only inside ``study.optimize``; cnnkit drives trials with
  ask/tell, so it keeps its own, for every storage.)
* **Sampler seeds.** A process's sampler is seeded from ``--seed``, the number
  of trials already in the study and the worker index, so a resumed or parallel
  search does not replay the random draws of an earlier process; a fresh
  single-process search uses ``--seed`` itself and is reproducible.

The package: :mod:`.space` (the space file and the grid), :mod:`.study` (storage,
sampler, pruner, the plan, creating/resuming the study, trial bookkeeping),
:mod:`.trials` (running one trial), :mod:`.runner` (the loop, worker processes,
:func:`tune`), :mod:`.report` (the table of trials and ``best.yaml``). The command
line is :mod:`cnnkit.cli.tune`.

Example::

    plan = make_plan("configs/lenet5_mnist5k.yaml", [], "configs/space_lenet.yaml", sampler="tpe", trials=30)
    result = tune(plan)
    result.best_yaml, result.best_value

or ``cnnkit tune configs/lenet5_mnist5k.yaml --space configs/space_lenet.yaml --sampler tpe --trials 30``.
"""

from cnnkit.tools.tune.report import TuneResult, summarize
from cnnkit.tools.tune.runner import MAX_ERRORS_IN_A_ROW, search, tune
from cnnkit.tools.tune.space import Param, grid_key, grid_points, load_space, parse_space
from cnnkit.tools.tune.study import (METRICS, PRUNERS, SAMPLERS, STALE_AFTER_S, Plan, is_stale, make_plan, make_pruner,
                                     make_sampler, open_storage, open_study, reconcile, setup_study)
from cnnkit.tools.tune.trials import HEARTBEAT_S, Outcome, run_one, trial_config

__all__ = ["HEARTBEAT_S", "MAX_ERRORS_IN_A_ROW", "METRICS", "PRUNERS", "SAMPLERS", "STALE_AFTER_S", "Outcome", "Param",
           "Plan", "TuneResult", "grid_key", "grid_points", "is_stale", "load_space", "make_plan", "make_pruner",
           "make_sampler", "open_storage", "open_study", "parse_space", "reconcile", "run_one", "search",
           "setup_study", "summarize", "trial_config", "tune"]
