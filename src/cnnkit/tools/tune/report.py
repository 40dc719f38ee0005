"""The end of a search: the table of trials, the best config written to ``best.yaml``."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from cnnkit.atomic import atomic_write_text
from cnnkit.config import dump_yaml, validate
from cnnkit.tools.tune.space import _format_params, _with_params
from cnnkit.tools.tune.study import _RUN_DIR_ATTR, Plan, _is_surplus


@dataclass
class TuneResult:
    study: Any
    plan: Plan
    best_yaml: Path | None
    best_number: int | None
    best_value: float | None
    exit_code: int = 0


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
