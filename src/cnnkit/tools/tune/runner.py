"""Running a search: trials in this process until the study has its count, or in ``--workers`` processes."""

from __future__ import annotations

import gc
import os
import sys
from pathlib import Path
from typing import Any, Callable

from cnnkit.errors import UserError
from cnnkit.tools.tune.report import TuneResult, summarize
from cnnkit.tools.tune.study import Plan, _counted, _quiet_optuna, open_study, reconcile, setup_study
from cnnkit.tools.tune.trials import Outcome, run_one

MAX_ERRORS_IN_A_ROW = 3


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
