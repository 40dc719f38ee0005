"""One trial: ask the study, train the trial's config in this process, report each epoch (for pruning),
keep a heartbeat, tell the study how it ended."""

from __future__ import annotations

import gc
import math
import os
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

from cnnkit.config import config_from
from cnnkit.tools.tune.space import _format_params, _with_params, _yaml_inline
from cnnkit.tools.tune.study import (_ERROR_ATTR, _HEARTBEAT_ATTR, _HOST, _RUN_DIR_ATTR, _SURPLUS_ATTR, _WORKER_ATTR,
                                     Plan, _surplus_reason)

HEARTBEAT_S = 30.0


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
    where = [f"train.runs_dir={_yaml_inline(plan.study_dir)}", f"train.name=trial-{number:04d}"]
    if plan.device_override:
        where.append(f"train.device={plan.device_override}")
    return config_from(_with_params(plan.base, values), where)


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

    from cnnkit.api import train

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
