"""The Optuna side: storage, sampler, pruner, the plan of a search, creating or resuming its study, and the
bookkeeping of trials (stale, surplus, counted) that makes grid points run exactly once."""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from cnnkit.config import config_from, read_yaml
from cnnkit.errors import UserError
from cnnkit.tools.tune.space import Param, grid_key, grid_points, load_space

METRICS = ("val_accuracy", "val_loss", "train_accuracy", "train_loss", "val_map", "val_map_50", "val_map_75",
           "val_pixel_accuracy", "val_miou", "val_dice", "val_mask_map", "val_mask_map_50")
SAMPLERS = ("grid", "random", "tpe", "gp")
PRUNERS = ("none", "median", "hyperband")
STALE_AFTER_S = 300.0

# Optuna user attributes cnnkit keeps on trials and studies.
_GRID_ATTR = "cnnkit_grid"
_SURPLUS_ATTR = "cnnkit_surplus"
_ERROR_ATTR = "cnnkit_error"
_WORKER_ATTR = "cnnkit_worker"
_HEARTBEAT_ATTR = "cnnkit_heartbeat"
_RUN_DIR_ATTR = "run_dir"
_ENQUEUED_ATTR = "cnnkit_grid_enqueued"
_FINGERPRINT_ATTR = "cnnkit_fingerprint"

_STUDY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


# --------------------------------------------------------------------------- storage, study, plan

def open_storage(spec: str) -> Any:
    """An Optuna storage from ``journal:PATH``, a ``*.journal`` path, or an RDB URL."""
    import optuna
    from optuna.storages import JournalStorage, RDBStorage
    from optuna.storages.journal import JournalFileBackend

    if spec.startswith("journal:") or (("://" not in spec) and spec.endswith((".journal", ".log"))):
        path = Path(spec.removeprefix("journal:"))
        if not str(path):
            raise UserError("--storage journal:PATH needs a file path, e.g. journal:runs/tune.journal")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            return JournalStorage(JournalFileBackend(str(path)))
        except OSError as e:
            raise UserError(f"cannot open journal storage {str(path)!r}: {e}") from None
    if "://" not in spec:
        raise UserError(f"--storage {spec!r} is not a storage: use journal:PATH (a file shared by processes), "
                        "sqlite:///PATH.db, postgresql://USER:PASS@HOST/DB or mysql://USER:PASS@HOST/DB")
    kwargs: dict[str, Any] = {}
    if spec.startswith("sqlite:///"):
        db = spec[len("sqlite:///"):]
        if db and db != ":memory:":
            Path(db).parent.mkdir(parents=True, exist_ok=True)
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": 60}}
    for attempt in range(3):
        try:
            return RDBStorage(spec, **kwargs)
        except (ImportError, ModuleNotFoundError) as e:
            hint = (" (for postgresql://: pip install 'cnnkit[postgres]', which brings psycopg)"
                    if spec.startswith("postgresql") else "")
            raise UserError(f"--storage {spec!r} needs a database driver that is not installed{hint}: {e}") from None
        except Exception as e:  # sqlalchemy: bad URL, unreachable server, wrong password
            racing = type(e).__name__ == "IntegrityError" or "already exists" in str(e)
            if racing and attempt < 2:
                time.sleep(1.0 + attempt)  # another process is creating the tables of a new database right now
                continue
            if isinstance(e, optuna.exceptions.OptunaError) or "sqlalchemy" in type(e).__module__:
                raise UserError(f"cannot open storage {spec!r}: {e}") from None
            raise
    raise AssertionError("unreachable")


@dataclass
class Plan:
    """Everything one search process needs (plain, picklable data)."""

    base: dict[str, Any]          # the resolved config of every trial, before its params
    params: list[Param]
    storage: str
    study: str
    sampler: str
    seed: int | None
    prune: str
    metric: str
    direction: str
    target: int                   # finished (complete + pruned) trials the study ends with
    study_dir: str                # <runs_dir>/<study>: trial run folders and best.yaml
    grid: list[dict[str, Any]] | None = None
    fingerprint: str = ""
    device_override: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def is_grid(self) -> bool:
        return self.grid is not None


def _fingerprint(base: dict[str, Any], params: list[Param], sampler: str, metric: str, direction: str) -> str:
    text = json.dumps({"config": base, "space": {p.key: p.describe() for p in params}, "sampler": sampler,
                       "metric": metric, "direction": direction}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _derived_seed(seed: int | None, n_existing: int, worker: int) -> int | None:
    if seed is None:
        return None
    if n_existing == 0 and worker == 0:
        return seed
    digest = hashlib.sha256(f"{seed}:{n_existing}:{worker}".encode()).hexdigest()
    return int(digest[:8], 16) % (2**31 - 1)


def make_sampler(plan: Plan, n_existing: int = 0, worker: int = 0) -> Any:
    import optuna

    seed = _derived_seed(plan.seed, n_existing, worker)
    if plan.sampler == "grid":
        space = {p.key: p.grid_values() for p in plan.params}
        return _QueuedGridSampler(space, seed=seed)
    if plan.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if plan.sampler == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    if plan.sampler == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    raise UserError(f"unknown sampler {plan.sampler!r}; choose one of {', '.join(SAMPLERS)}")


def make_pruner(plan: Plan) -> Any:
    import optuna

    if plan.prune == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=0)
    if plan.prune == "hyperband":
        tuned_epochs = any(p.key == "train.epochs" for p in plan.params)
        return optuna.pruners.HyperbandPruner(
            min_resource=1, max_resource="auto" if tuned_epochs else int(plan.base["train"]["epochs"]))
    return optuna.pruners.NopPruner()


def _QueuedGridSampler(space: dict[str, list[Any]], seed: int | None) -> Any:
    """Optuna's GridSampler, for a study whose grid points are all enqueued trials.

    Its ``after_trial`` (which stops ``study.optimize`` once its own bookkeeping sees
    every point, and fails on the enqueued trials of a one-point grid) does nothing
    here: cnnkit counts the trials itself.
    """
    from optuna.samplers import GridSampler

    class QueuedGridSampler(GridSampler):
        def after_trial(self, study, trial, state, values) -> None:
            return None

    return QueuedGridSampler(space, seed=seed)


def _quiet_optuna() -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def open_study(plan: Plan, worker: int = 0, storage: Any = None) -> Any:
    """Load the (existing) study with this process's sampler and the pruner."""
    import optuna

    storage = storage if storage is not None else open_storage(plan.storage)
    study = optuna.load_study(study_name=plan.study, storage=storage, pruner=make_pruner(plan))
    n = len(study.get_trials(deepcopy=False))
    study.sampler = make_sampler(plan, n, worker)
    return study


def setup_study(plan: Plan, log: Callable[[str], None]) -> Any:
    """Create the study (or load it to resume), check it matches, enqueue the grid once."""
    import optuna

    storage = open_storage(plan.storage)
    direction = plan.direction
    try:
        study = optuna.create_study(storage=storage, study_name=plan.study, direction=direction,
                                    sampler=make_sampler(plan), pruner=make_pruner(plan))
        created = True
    except optuna.exceptions.DuplicatedStudyError:
        created = False
        study = open_study(plan, 0, storage)
    if created:
        study.set_user_attr(_FINGERPRINT_ATTR, plan.fingerprint)
        study.set_user_attr("cnnkit_metric", plan.metric)
        study.set_user_attr("cnnkit_sampler", plan.sampler)
        study.set_user_attr("cnnkit_space", {p.key: p.describe() for p in plan.params})
        study.set_user_attr("cnnkit_config", plan.base)
        if plan.is_grid:
            for point in plan.grid:
                study.enqueue_trial(point, user_attrs={_GRID_ATTR: grid_key(point)})
            study.set_user_attr(_ENQUEUED_ATTR, True)
        log(f"study {plan.study!r} created in {plan.storage}")
    else:
        if study.direction.name.lower() != direction:
            raise UserError(f"study {plan.study!r} in {plan.storage} was created to {study.direction.name.lower()} "
                            f"its metric, not to {direction}; use the same --direction or a new --study NAME")
        found = study.user_attrs.get(_FINGERPRINT_ATTR)
        if found is not None and found != plan.fingerprint:
            raise UserError(f"study {plan.study!r} in {plan.storage} was started with a different config, space, "
                            "sampler or metric; resume it with the same ones, or start a new search with "
                            "--study NEW_NAME")
        if plan.is_grid:  # another machine may still be enqueueing the grid it created
            deadline = time.monotonic() + 60
            while not study.user_attrs.get(_ENQUEUED_ATTR) and time.monotonic() < deadline:
                time.sleep(1.0)
            if not study.user_attrs.get(_ENQUEUED_ATTR):  # its creator stopped first: reconcile enqueues the grid
                study.set_user_attr(_ENQUEUED_ATTR, True)
        done = sum(_counted(t) and t.state.is_finished() for t in study.get_trials(deepcopy=False))
        log(f"study {plan.study!r} resumed from {plan.storage} ({done} trials already finished)")
    reconcile(study, plan, log)
    return study


# --------------------------------------------------------------------------- bookkeeping of trials

_HOST = socket.gethostname()


def _is_surplus(t: Any) -> bool:
    return bool(t.user_attrs.get(_SURPLUS_ATTR))


def _counted(t: Any) -> bool:
    """A trial that counts toward ``--trials``: finished, or running (and not a discarded claim)."""
    from optuna.trial import TrialState

    return t.state in (TrialState.COMPLETE, TrialState.PRUNED) or (t.state == TrialState.RUNNING
                                                                     and not _is_surplus(t))


def _pid_alive(pid: int) -> bool:
    if os.name == "nt":  # os.kill would terminate it; rely on the heartbeat there
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True
    return True


def is_stale(t: Any, now: float | None = None) -> bool:
    """A RUNNING trial whose process is gone: dead pid on this host, or no heartbeat for STALE_AFTER_S."""
    now = time.time() if now is None else now
    worker = t.user_attrs.get(_WORKER_ATTR) or {}
    if worker.get("host") == _HOST and worker.get("pid") is not None and not _pid_alive(worker["pid"]):
        return True
    beat = t.user_attrs.get(_HEARTBEAT_ATTR)
    if beat is None:  # just claimed, attributes not written yet (a naive local time: this host's clock)
        if t.datetime_start is None:
            return False
        beat = t.datetime_start.timestamp()
    return now - float(beat) > STALE_AFTER_S


def reconcile(study: Any, plan: Plan, log: Callable[[str], None] = lambda s: None) -> None:
    """Mark stale RUNNING trials FAIL; enqueue again grid points left with no live or finished trial."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    now = time.time()
    for t in trials:
        if t.state == TrialState.RUNNING and is_stale(t, now):
            try:
                study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)
                log(f"trial {t.number} was left running by a stopped process; marked failed")
            except Exception:  # another process got there first
                pass
    if not plan.is_grid or not study.user_attrs.get(_ENQUEUED_ATTR):
        return
    trials = study.get_trials(deepcopy=False)
    covered = set()
    for t in trials:
        key = t.user_attrs.get(_GRID_ATTR)
        if key is None:
            continue
        if t.state != TrialState.FAIL or t.user_attrs.get(_ERROR_ATTR):  # errors are not retried
            covered.add(key)
    for point in plan.grid:
        key = grid_key(point)
        if key not in covered:
            study.enqueue_trial(point, user_attrs={_GRID_ATTR: key})
            covered.add(key)


def _surplus_reason(study: Any, trial: Any, plan: Plan) -> str | None:
    """Why this freshly asked trial must not run (None: it runs)."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    earlier = [t for t in trials if t.number < trial.number]
    if sum(_counted(t) for t in earlier) >= plan.target:
        return "the study already has its trials"
    if plan.is_grid:
        key = trial.user_attrs.get(_GRID_ATTR)
        if key is None:
            return "not a queued grid point"
        for t in earlier:
            if t.user_attrs.get(_GRID_ATTR) == key and t.state != TrialState.FAIL:
                return f"grid point already taken by trial {t.number}"
    return None


# --------------------------------------------------------------------------- the plan of a search

def make_plan(config: str | None, overrides: list[str], space: str, sampler: str = "tpe",
              trials: int | None = None, storage: str | None = None, study: str | None = None,
              prune: str = "none", metric: str | None = None, direction: str | None = None,
              seed: int | None = None) -> Plan:
    from cnnkit.config import DEFAULT_CONFIG
    from cnnkit.train.callbacks import monitor_mode

    if sampler not in SAMPLERS:
        raise UserError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}")
    if prune not in PRUNERS:
        raise UserError(f"unknown pruner {prune!r}; choose one of {', '.join(PRUNERS)}")
    config_path = Path(config) if config is not None else DEFAULT_CONFIG
    base = config_from(read_yaml(config_path), overrides).to_dict()
    if metric is None:  # the metric the config's task picks its best checkpoint by
        from cnnkit.tasks import task_class

        metric = task_class(base["task"]).best_metric
    if metric not in METRICS:
        raise UserError(f"--metric {metric!r} is not a per-epoch metric; choose one of {', '.join(METRICS)}")
    if trials is not None and trials < 1:
        raise UserError(f"--trials must be at least 1, got {trials}")
    direction = direction or ("maximize" if monitor_mode(metric, "auto") == "max" else "minimize")
    if direction not in ("maximize", "minimize"):
        raise UserError(f"--direction must be maximize or minimize, got {direction!r}")
    grid = sampler == "grid"
    params = load_space(space, base, grid)
    points = grid_points(params) if grid else None
    if grid:
        target = len(points) if trials is None else min(trials, len(points))
    elif trials is None:
        raise UserError(f"--trials N is required with --sampler {sampler} (only a grid has a natural size)")
    else:
        target = trials
    fp = _fingerprint(base, params, sampler, metric, direction)
    name = study or f"{config_path.stem}-{sampler}-{fp[:6]}"
    if not _STUDY_NAME.match(name):
        raise UserError(f"--study {name!r} must be a plain name (letters, digits, '.', '_', '-'); "
                        "it names the folder <runs_dir>/<study>/")
    runs_dir = Path(base["train"]["runs_dir"])
    return Plan(base=base, params=params, storage=storage or f"journal:{runs_dir / (name + '.journal')}",
                study=name, sampler=sampler, seed=seed, prune=prune, metric=metric, direction=direction,
                target=target, study_dir=str(runs_dir / name), grid=points, fingerprint=fp,
                extra={"requested_trials": trials})
