"""``cnnkit tune``: hyperparameter search on Optuna (grid, random, TPE, GP), resumable and parallel.

Every trial is an ordinary run folder written by :func:`cnnkit.train.trainer.train`
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

Example::

    cnnkit tune configs/lenet5_mnist5k.yaml --space configs/space_lenet.yaml --sampler tpe --trials 30
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import itertools
import json
import math
import os
import re
import socket
import sys
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

from cnnkit.config import apply_overrides, atomic_write_text, dump_yaml, load_yaml_file, read_yaml, validate
from cnnkit.errors import ConfigError, UserError

METRICS = ("val_accuracy", "val_loss", "train_accuracy", "train_loss")
SAMPLERS = ("grid", "random", "tpe", "gp")
PRUNERS = ("none", "median", "hyperband")
HEARTBEAT_S = 30.0
STALE_AFTER_S = 300.0
MAX_ERRORS_IN_A_ROW = 3

_GRID_ATTR = "cnnkit_grid"
_SURPLUS_ATTR = "cnnkit_surplus"
_ERROR_ATTR = "cnnkit_error"
_WORKER_ATTR = "cnnkit_worker"
_HEARTBEAT_ATTR = "cnnkit_heartbeat"
_RUN_DIR_ATTR = "run_dir"
_ENQUEUED_ATTR = "cnnkit_grid_enqueued"
_FINGERPRINT_ATTR = "cnnkit_fingerprint"

_RANGE_KEYS = {"low", "high", "log", "step"}
_SPACE_FORMS = ("a list of choices, e.g. [16, 32, 64], or a range {low: 1.0e-4, high: 0.1, log: true} "
                "(int when both bounds are ints; optional step)")
# PyYAML (YAML 1.1) reads 1e-4 as a string; a space file means a number.
_EXP_FLOAT = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$")
_STUDY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


# --------------------------------------------------------------------------- the search space

def _number(v: Any) -> Any:
    if isinstance(v, str) and _EXP_FLOAT.match(v.strip()):
        return float(v)
    return v


def _yaml_inline(value: Any) -> str:
    """A value as one line of YAML that reads back as the same value."""
    text = yaml.safe_dump(value, default_flow_style=True, width=10**9, sort_keys=False)
    return text.removesuffix("\n...\n").strip()


@dataclass
class Param:
    """One entry of the space file: a categorical list or a numeric range."""

    key: str
    kind: str  # "choice" | "int" | "float"
    choices: list[Any] | None = None
    encoded: bool = False  # choices that Optuna cannot hold (lists, dicts) travel as JSON text
    low: float | int | None = None
    high: float | int | None = None
    step: float | int | None = None
    log: bool = False

    def describe(self) -> Any:
        if self.kind == "choice":
            return self.choices
        return {"low": self.low, "high": self.high, "log": self.log, "step": self.step, "kind": self.kind}

    def grid_values(self) -> list[Any]:
        """The Optuna-level values of this entry on a grid (a range needs a step)."""
        if self.kind == "choice":
            return [json.dumps(c) if self.encoded else c for c in self.choices]
        assert self.step is not None
        if self.kind == "int":
            return list(range(int(self.low), int(self.high) + 1, int(self.step)))
        n = int(math.floor((self.high - self.low) / self.step + 1e-9))
        return [round(self.low + i * self.step, 12) for i in range(n + 1)]

    def suggest(self, trial: Any, grid: bool) -> Any:
        if grid or self.kind == "choice":
            values = self.grid_values()
            return trial.suggest_categorical(self.key, values)
        if self.kind == "int":
            return trial.suggest_int(self.key, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        return trial.suggest_float(self.key, float(self.low), float(self.high), step=self.step, log=self.log)

    def decode(self, value: Any) -> Any:
        return json.loads(value) if self.encoded else value

    def config_values(self) -> list[Any]:
        """Values to check against the config: every choice, or both bounds."""
        if self.kind == "choice":
            return list(self.choices)
        return [self.low, self.high]


def _with_params(base: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """``base`` (a config dict) with ``{dotted.key: value}`` applied as overrides."""
    return apply_overrides(base, [f"{k}={_yaml_inline(v)}" for k, v in values.items()])


def parse_space(data: Any, source: str = "space file") -> list[Param]:
    """Turn the space file's mapping into :class:`Param` entries (shape only, not config keys)."""
    if data is None or (isinstance(data, dict) and not data):
        raise UserError(f"{source} has no entries; map config keys to {_SPACE_FORMS}")
    if not isinstance(data, dict):
        raise UserError(f"{source} must be a mapping of dotted config keys (e.g. optim.lr) to {_SPACE_FORMS}; "
                        f"got {type(data).__name__}")
    params = []
    for key, spec in data.items():
        if not isinstance(key, str) or not key or any(not p for p in key.split(".")):
            raise UserError(f"{source}: key {key!r} is not a dotted config key like optim.lr")
        if key in ("train.runs_dir", "train.name"):
            raise UserError(f"{source}: {key} is set for each trial by cnnkit tune (runs go to <runs_dir>/<study>/); "
                            "remove it from the space")
        bad = f"{source}: entry {key!r} must be {_SPACE_FORMS}; got {spec!r}"
        if isinstance(spec, list):
            if not spec:
                raise UserError(f"{source}: entry {key!r} is an empty list; it must be {_SPACE_FORMS}")
            choices = [_number(c) for c in spec]
            encoded = any(isinstance(c, (list, dict)) for c in choices)
            keys = [json.dumps(c, sort_keys=True) if encoded else repr((type(c).__name__, c)) for c in choices]
            if len(set(keys)) != len(keys):
                raise UserError(f"{source}: entry {key!r} lists a choice twice: {spec!r}")
            params.append(Param(key, "choice", choices=choices, encoded=encoded))
        elif isinstance(spec, dict):
            unknown = set(spec) - _RANGE_KEYS
            if unknown or not {"low", "high"} <= set(spec):
                raise UserError(bad)
            low, high, step = _number(spec["low"]), _number(spec["high"]), _number(spec.get("step"))
            log = spec.get("log", False)
            nums = [v for v in (low, high, step) if v is not None]
            if any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in nums):
                raise UserError(bad + " (low, high and step must be numbers)")
            if not isinstance(log, bool):
                raise UserError(f"{source}: entry {key!r}: log must be true or false; got {log!r}")
            if not low < high:
                raise UserError(f"{source}: entry {key!r}: low ({low}) must be below high ({high})")
            if step is not None and step <= 0:
                raise UserError(f"{source}: entry {key!r}: step must be positive; got {step}")
            if log and step is not None:
                raise UserError(f"{source}: entry {key!r}: a log range cannot have a step; drop one of them")
            if log and low <= 0:
                raise UserError(f"{source}: entry {key!r}: a log range needs low > 0; got {low}")
            kind = "int" if all(isinstance(v, int) for v in nums) else "float"
            if kind == "float":
                low, high = float(low), float(high)
                step = float(step) if step is not None else None
            params.append(Param(key, kind, low=low, high=high, step=step, log=log))
        else:
            raise UserError(bad)
    return params


def load_space(path: str | os.PathLike, base: dict[str, Any], grid: bool) -> list[Param]:
    """Read and check a space file against the resolved base config ``base``.

    Each key is checked by validating the config with that key set to each of its
    choices (or both bounds), so an unknown key or a bad value gives the config
    loader's own error.
    """
    p = Path(path)
    data = load_yaml_file(p, "space file")
    params = parse_space(data, f"space file {str(p)!r}")
    for prm in params:
        for v in prm.config_values():
            try:
                validate(_with_params(base, {prm.key: v}))
            except ConfigError as e:
                raise ConfigError(f"space file {str(p)!r}, entry {prm.key!r} = {v!r}: {e}") from None
        if grid and prm.kind != "choice" and prm.step is None:
            raise UserError(f"space file {str(p)!r}: grid search needs every entry to be a list of choices or a "
                            f"range with a step; {prm.key!r} is a range without step "
                            f"(write e.g. {{low: {prm.low}, high: {prm.high}, step: ...}} or a list)")
    return params


def grid_points(params: list[Param]) -> list[dict[str, Any]]:
    """Every point of the grid, as Optuna-level values, in a fixed order."""
    keys = [p.key for p in params]
    return [dict(zip(keys, combo)) for combo in itertools.product(*(p.grid_values() for p in params))]


def grid_key(point: dict[str, Any]) -> str:
    return json.dumps(point, sort_keys=True)


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
            raise UserError(f"--storage {spec!r} needs a database driver that is not installed: {e}") from None
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


# --------------------------------------------------------------------------- one trial

class _Heartbeat:
    def __init__(self, trial: Any) -> None:
        self.trial = trial
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="cnnkit-tune-heartbeat", daemon=True)

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                self.trial.set_user_attr(_HEARTBEAT_ATTR, time.time())
            except Exception:  # the trial was finished elsewhere; stop beating
                return

    def __enter__(self) -> "_Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()


def _report_callback(trial: Any, metric: str):
    from cnnkit.train.callbacks import Callback

    class ReportToTrial(Callback):
        """Reports ``metrics[metric]`` each epoch; stops the trainer when the pruner says so."""

        def __init__(self) -> None:
            self.pruned_at: int | None = None

        def on_train_begin(self, trainer: Any) -> None:
            if getattr(trainer, "run_dir", None) is not None:
                trial.set_user_attr(_RUN_DIR_ATTR, str(trainer.run_dir))

        def on_epoch_end(self, trainer: Any, epoch: int, metrics: dict[str, float]) -> None:
            trial.report(float(metrics[metric]), epoch)
            # Pruning after the last epoch would save nothing: a trial that ran its course completes.
            if epoch < trainer.epochs and trial.should_prune():
                self.pruned_at = epoch
                trainer.should_stop = True

    return ReportToTrial()


def trial_config(plan: Plan, number: int, values: dict[str, Any]) -> Any:
    raw = _with_params(plan.base, values)
    raw = apply_overrides(raw, [f"train.runs_dir={_yaml_inline(plan.study_dir)}", f"train.name=trial-{number:04d}"])
    if plan.device_override:
        raw = apply_overrides(raw, [f"train.device={plan.device_override}"])
    return validate(raw)


def _metric_value(result: Any, metric: str) -> float:
    if metric in result.final and result.final[metric] is not None:
        return float(result.final[metric])
    if result.history:
        return float(result.history[-1][metric])
    raise RuntimeError(f"the run recorded no {metric!r}")


@dataclass
class Outcome:
    number: int
    state: str  # complete | pruned | fail | surplus
    value: float | None = None
    error: BaseException | None = None


def run_one(study: Any, plan: Plan, log: Callable[[str], None], tag: str = "") -> Outcome:
    """Ask for a trial, train it in this process, tell the study, release its memory."""
    import torch
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    from cnnkit.train.trainer import train

    trial = study.ask()
    number = trial.number
    try:
        trial.set_user_attr(_WORKER_ATTR, {"host": _HOST, "pid": os.getpid()})
        trial.set_user_attr(_HEARTBEAT_ATTR, time.time())
        reason = _surplus_reason(study, trial, plan)
        if reason is not None:
            trial.set_user_attr(_SURPLUS_ATTR, reason)
            study.tell(trial, state=TrialState.FAIL)
            return Outcome(number, "surplus")
        raw_values = {p.key: p.suggest(trial, plan.is_grid) for p in plan.params}
        values = {p.key: p.decode(raw_values[p.key]) for p in plan.params}
        cfg = trial_config(plan, number, values)
        callback = _report_callback(trial, plan.metric)
        with _Heartbeat(trial):
            result = train(cfg, quiet=True, callbacks=[callback])
        trial.set_user_attr(_RUN_DIR_ATTR, str(result.run_dir))
        value = _metric_value(result, plan.metric)
        run_dir = result.run_dir
        del result, cfg
        if callback.pruned_at is not None:
            trial.set_user_attr("pruned_at_epoch", callback.pruned_at)
            study.tell(trial, state=TrialState.PRUNED)
            out = Outcome(number, "pruned", value)
        elif not math.isfinite(value):
            trial.set_user_attr(_ERROR_ATTR, f"{plan.metric} is {value}")
            study.tell(trial, state=TrialState.FAIL)
            out = Outcome(number, "fail", value, RuntimeError(f"{plan.metric} is {value}"))
        else:
            study.tell(trial, value)
            out = Outcome(number, "complete", value)
        shown = _format_params(values)
        extra = f" (pruned at epoch {callback.pruned_at})" if out.state == "pruned" else ""
        log(f"{tag}trial {number:>4} {out.state:<8} {plan.metric} {value:.4f}{extra}  {shown}  {run_dir}")
        return out
    except UpdateFinishedTrialError:
        log(f"{tag}trial {number} was marked failed by another process (its heartbeat looked stale)")
        return Outcome(number, "fail")
    except KeyboardInterrupt:
        _tell_quietly(study, trial, TrialState.FAIL)
        raise
    except Exception as e:
        try:
            trial.set_user_attr(_ERROR_ATTR, f"{type(e).__name__}: {e}"[:2000])
        except Exception:
            pass
        _tell_quietly(study, trial, TrialState.FAIL)
        log(f"{tag}trial {number:>4} failed: {type(e).__name__}: {e}")
        return Outcome(number, "fail", None, e)
    finally:
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def _tell_quietly(study: Any, trial: Any, state: Any) -> None:
    try:
        study.tell(trial, state=state, skip_if_finished=True)
    except Exception:
        pass


def search(plan: Plan, study: Any, log: Callable[[str], None], tag: str = "",
           after_trial: Callable[[Outcome], None] | None = None) -> None:
    """Run trials in this process until the study holds ``plan.target`` counted trials."""
    from optuna.trial import TrialState

    errors_in_a_row = 0
    frozen = False
    try:
        while True:
            reconcile(study, plan, log)
            trials = study.get_trials(deepcopy=False)
            if sum(_counted(t) for t in trials) >= plan.target:
                return
            if plan.is_grid and not any(t.state == TrialState.WAITING for t in trials):
                return
            out = run_one(study, plan, log, tag)
            if not frozen and out.state != "surplus":
                # Everything alive after the first trial (modules imported lazily by it included) is left out
                # of later collections, so the full collection after each trial scans only what trials make.
                gc.freeze()
                frozen = True
            if out.state == "fail" and out.error is not None:
                errors_in_a_row += 1
                if errors_in_a_row >= MAX_ERRORS_IN_A_ROW:
                    if isinstance(out.error, UserError):
                        raise out.error
                    raise RuntimeError(f"{errors_in_a_row} trials in a row failed; the last one with "
                                       f"{type(out.error).__name__}: {out.error}") from out.error
            elif out.state != "surplus":
                errors_in_a_row = 0
            out.error = None
            if after_trial is not None and out.state != "surplus":
                after_trial(out)
    finally:
        if frozen:
            gc.unfreeze()


def _worker_main(plan: Plan, worker: int, threads: int) -> None:
    """Entry point of a ``--workers`` process (spawned: a fresh interpreter)."""
    import torch

    torch.set_num_threads(max(1, threads))
    _quiet_optuna()
    if plan.base["train"]["device"] == "auto" and torch.cuda.is_available() and torch.cuda.device_count() > 1:
        plan.device_override = f"cuda:{worker % torch.cuda.device_count()}"
    tag = f"[worker {worker}] "

    def log(s: str) -> None:
        print(s, flush=True)

    try:
        search(plan, open_study(plan, worker), log, tag)
    except UserError as e:
        print(f"error: {tag}{e}", file=sys.stderr, flush=True)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as e:
        print(f"error: {tag}{type(e).__name__}: {e}", file=sys.stderr, flush=True)
        sys.exit(1)


# --------------------------------------------------------------------------- the command

@dataclass
class TuneResult:
    study: Any
    plan: Plan
    best_yaml: Path | None
    best_number: int | None
    best_value: float | None
    exit_code: int = 0


def make_plan(config: str | None, overrides: list[str], space: str, sampler: str = "tpe",
              trials: int | None = None, storage: str | None = None, study: str | None = None,
              prune: str = "none", metric: str = "val_accuracy", direction: str | None = None,
              seed: int | None = None) -> Plan:
    from cnnkit.config import DEFAULT_CONFIG
    from cnnkit.train.callbacks import monitor_mode

    if sampler not in SAMPLERS:
        raise UserError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}")
    if prune not in PRUNERS:
        raise UserError(f"unknown pruner {prune!r}; choose one of {', '.join(PRUNERS)}")
    if metric not in METRICS:
        raise UserError(f"--metric {metric!r} is not a per-epoch metric; choose one of {', '.join(METRICS)}")
    if trials is not None and trials < 1:
        raise UserError(f"--trials must be at least 1, got {trials}")
    direction = direction or ("maximize" if monitor_mode(metric, "auto") == "max" else "minimize")
    if direction not in ("maximize", "minimize"):
        raise UserError(f"--direction must be maximize or minimize, got {direction!r}")
    config_path = Path(config) if config is not None else DEFAULT_CONFIG
    base = validate(apply_overrides(read_yaml(config_path), overrides)).to_dict()
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


def tune(plan: Plan, workers: int = 1, log: Callable[[str], None] = print,
         after_trial: Callable[[Outcome], None] | None = None) -> TuneResult:
    """Run the search described by ``plan`` (in this process, or in ``workers`` spawned ones)."""
    if workers < 1:
        raise UserError(f"--workers must be at least 1, got {workers}")
    _quiet_optuna()
    Path(plan.study_dir).mkdir(parents=True, exist_ok=True)
    requested = plan.extra.get("requested_trials")
    if plan.is_grid and requested is not None and requested > len(plan.grid):
        log(f"the grid has {len(plan.grid)} points; running {len(plan.grid)} trials, not {requested}")
    study = setup_study(plan, log)
    code = 0
    error: BaseException | None = None
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    counted = sum(_counted(t) for t in trials)
    remaining = plan.target - counted
    if plan.is_grid:
        remaining = min(remaining, sum(t.state == TrialState.WAITING for t in trials))
    procs = min(workers, max(remaining, 0))
    if remaining > 0:
        log(f"running {remaining} trial{'s' if remaining != 1 else ''} of {plan.target} ({plan.sampler} search, "
            f"{procs} process{'es' if procs > 1 else ''}); trial runs go to {plan.study_dir}/")
    elif counted >= plan.target:
        log(f"study {plan.study!r} already has its {plan.target} trials")
    else:
        log(f"study {plan.study!r} has no grid points left to run ({counted} of {plan.target} trials; "
            "points whose trial failed with an error are not retried)")
    try:
        if procs == 1:
            search(plan, study, log, after_trial=after_trial)
        elif procs > 1:
            code = _run_workers(plan, procs, log)
    except (KeyboardInterrupt, Exception) as e:  # show what was done, then fail
        error = e
    result = summarize(study, plan, log)
    result.exit_code = code
    if error is not None:
        raise error
    return result


def _run_workers(plan: Plan, workers: int, log: Callable[[str], None]) -> int:
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    threads = max(1, (os.cpu_count() or 1) // workers)
    procs = [ctx.Process(target=_worker_main, args=(plan, i, threads), name=f"cnnkit-tune-{i}")
             for i in range(workers)]
    for p in procs:
        p.start()
    try:
        for p in procs:
            p.join()
    except KeyboardInterrupt:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.terminate()
        raise
    codes = [p.exitcode for p in procs]
    bad = [(i, c) for i, c in enumerate(codes) if c]
    for i, c in bad:
        print(f"error: worker {i} exited with code {c}", file=sys.stderr, flush=True)
    return max((c if c > 0 else 1 for _, c in bad), default=0)


def _format_params(values: dict[str, Any]) -> str:
    return " ".join(f"{k}={_yaml_inline(v)}" for k, v in values.items())


def _trial_values(plan: Plan, t: Any) -> dict[str, Any]:
    out = {}
    for p in plan.params:
        if p.key in t.params:
            out[p.key] = p.decode(t.params[p.key])
    return out


def summarize(study: Any, plan: Plan, log: Callable[[str], None] = print) -> TuneResult:
    """Print the table of trials, write best.yaml, print the best value and its path."""
    from optuna.trial import TrialState

    trials = [t for t in study.get_trials(deepcopy=False) if not _is_surplus(t) and t.state != TrialState.WAITING]
    sign = -1.0 if plan.direction == "maximize" else 1.0
    order = {TrialState.COMPLETE: 0, TrialState.PRUNED: 1, TrialState.RUNNING: 2, TrialState.FAIL: 3}

    def sort_key(t: Any) -> tuple:
        v = t.value if t.value is not None and math.isfinite(t.value) else None
        return (order.get(t.state, 4), v is None, sign * v if v is not None else 0.0, t.number)

    trials.sort(key=sort_key)
    rows = [("trial", "state", plan.metric, "params", "run folder")]
    for t in trials:
        state = t.state.name.lower()
        if t.state == TrialState.PRUNED and "pruned_at_epoch" in t.user_attrs:
            state += f"@{t.user_attrs['pruned_at_epoch']}"
        value = f"{t.value:.4f}" if t.value is not None else "-"
        rows.append((str(t.number), state, value, _format_params(_trial_values(plan, t)) or "-",
                     t.user_attrs.get(_RUN_DIR_ATTR, "-")))
    if len(rows) > 1:
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        for r in rows:
            log("  ".join(c.ljust(w) for c, w in zip(r[:4], widths)) + "  " + r[4])
    counts = {s: sum(t.state == s for t in trials) for s in order}
    waiting = sum(t.state == TrialState.WAITING for t in study.get_trials(deepcopy=False))
    log(f"{counts[TrialState.COMPLETE]} complete, {counts[TrialState.PRUNED]} pruned, "
        f"{counts[TrialState.FAIL]} failed" + (f", {counts[TrialState.RUNNING]} running" if counts[TrialState.RUNNING]
                                                else "") + (f", {waiting} grid points not run" if waiting else ""))
    complete = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None and math.isfinite(t.value)]
    if not complete:
        log("no complete trial yet: no best config written")
        return TuneResult(study, plan, None, None, None)
    best = min(complete, key=lambda t: (sign * t.value, t.number))
    values = _trial_values(plan, best)
    cfg = validate(_with_params(plan.base, values))
    path = Path(plan.study_dir) / "best.yaml"
    header = (f"# best of study {plan.study!r}: trial {best.number}, {plan.metric} {best.value:.6g}\n"
              f"# params: {_format_params(values)}\n"
              f"# trial run: {best.user_attrs.get(_RUN_DIR_ATTR, '-')}\n"
              f"# run it: cnnkit train {path}\n")
    atomic_write_text(path, header + dump_yaml(cfg.to_dict()))
    log(f"best trial {best.number}: {plan.metric} {best.value:.4f}  {_format_params(values)}")
    log(f"best config: {path}")
    return TuneResult(study, plan, path, best.number, best.value)


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


def add_parser(subparsers: Any) -> None:
    t = subparsers.add_parser(
        "tune", help="hyperparameter search (grid, random, TPE, GP) with Optuna",
        formatter_class=argparse.RawDescriptionHelpFormatter,
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
    t.add_argument("--metric", choices=METRICS, default="val_accuracy", help="metric to optimise")
    t.add_argument("--direction", choices=("maximize", "minimize"),
                   help="default: maximize for accuracies, minimize for losses")
    t.add_argument("--seed", type=int, help="sampler seed (a fresh single-process search is then reproducible)")
    t.set_defaults(func=cmd_tune)


def cmd_tune(args: argparse.Namespace) -> int:
    from cnnkit.cli import _split_config_and_overrides

    config, overrides = _split_config_and_overrides(args.config, args.overrides)
    plan = make_plan(config, overrides, args.space, sampler=args.sampler, trials=args.trials, storage=args.storage,
                     study=args.study, prune=args.prune, metric=args.metric, direction=args.direction,
                     seed=args.seed)
    result = tune(plan, workers=args.workers, log=lambda s: print(s, flush=True))
    return result.exit_code
