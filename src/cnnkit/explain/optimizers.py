"""The course's six update rules raced on a 2-D function, with the NumPy reference optimisers.

Every rule starts from the same point, takes the same number of steps with its own
default learning rate (chosen per function so each makes visible progress without
diverging), and records its trajectory and its first steps (position, gradient, update).

Functions:

* ``quadratic``: f(x, y) = 0.5*(x² + 10 y²), an elongated bowl, minimum 0 at (0, 0), start (-4, 2).
* ``rosenbrock``: f(x, y) = (1 - x)² + 100 (y - x²)², a curved valley, minimum 0 at (1, 1), start (-1.5, 2).

Example::

    r = run_optimizers("quadratic", steps=50)
    print(render_text(r))          # each rule's formula, first steps, final point and f
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from cnnkit.errors import UserError, did_you_mean

RULES = ("sgd", "momentum", "adagrad", "adadelta", "rmsprop", "adam")

# The course's table ("Optimiseurs"), α = learning rate, g = gradient.
COURSE_FORMULAS = {
    "sgd": "Δθ_t = -α g_t",
    "momentum": "m_t = γ m_{t-1} + (1 - γ) g_t,  Δθ_t = -α m_t",
    "adagrad": "G_t = G_{t-1} + g_t²,  Δθ_t = -α g_t G_t^(-1/2)",
    "adadelta": "v_t = β2 v_{t-1} + (1 - β2) g_t²,  Δθ_t = -α g_t v_t^(-1/2) D_{t-1}^(1/2),  "
                "D_t = β1 D_{t-1} + (1 - β1) (Δθ_t/α)²",
    "rmsprop": "v_t = β2 v_{t-1} + (1 - β2) g_t²,  Δθ_t = -α g_t v_t^(-1/2)",
    "adam": "m_t = β1 m_{t-1} + (1 - β1) g_t,  v_t = β2 v_{t-1} + (1 - β2) g_t²,  m̂_t = m_t/(1 - β1^t),  "
            "v̂_t = v_t/(1 - β2^t),  Δθ_t = -α m̂_t v̂_t^(-1/2)",
}

# What to notice about each rule on these functions.
RULE_NOTES = {
    "adadelta": "D starts at 0, so the first steps are only about α·√ε·g/√v ≈ 0.0045 per coordinate; "
                "they grow as D accumulates (Adadelta needs no learning-rate tuning, but starts slowly)",
    "adagrad": "the first step moves every coordinate by α (g/√(g²) = ±1); G only grows, so steps keep shrinking",
    "rmsprop": "the first step is α·g/√((1-β2)g²) = 10α per coordinate; v then forgets old gradients",
    "adam": "bias correction makes the first step exactly α per coordinate (m̂ = g, v̂ = g²)",
}

# The reference engine's hyperparameter defaults (cnnkit.reference.optim), for the printout.
HYPER_DEFAULTS = {
    "sgd": {},
    "momentum": {"gamma": 0.9},
    "adagrad": {"eps": 1e-8},
    "adadelta": {"beta1": 0.95, "beta2": 0.95, "eps": 1e-6},
    "rmsprop": {"beta2": 0.99, "eps": 1e-8},
    "adam": {"beta1": 0.9, "beta2": 0.999, "eps": 1e-8},
}


@dataclass(frozen=True)
class Objective:
    name: str
    text: str
    f: Callable[[np.ndarray], float]
    grad: Callable[[np.ndarray], np.ndarray]
    grad_text: str
    start: tuple[float, float]
    minimum: tuple[float, float]
    steps: int
    lrs: dict[str, float]
    xlim: tuple[float, float]
    ylim: tuple[float, float]
    log_levels: bool


def _quad(p):
    x, y = p
    return 0.5 * (x * x + 10.0 * y * y)


def _quad_grad(p):
    x, y = p
    return np.array([x, 10.0 * y])


def _rosen(p):
    x, y = p
    return (1.0 - x) ** 2 + 100.0 * (y - x * x) ** 2


def _rosen_grad(p):
    x, y = p
    return np.array([-2.0 * (1.0 - x) - 400.0 * x * (y - x * x), 200.0 * (y - x * x)])


FUNCTIONS: dict[str, Objective] = {
    "quadratic": Objective(
        "quadratic", "f(x, y) = 0.5*(x² + 10 y²)", _quad, _quad_grad, "∇f = (x, 10 y)",
        start=(-4.0, 2.0), minimum=(0.0, 0.0), steps=100,
        # SGD is stable for α < 2/10 (the steep y direction): 0.15 zig-zags across the valley.
        lrs={"sgd": 0.15, "momentum": 0.15, "adagrad": 1.0, "adadelta": 1.0, "rmsprop": 0.05, "adam": 0.3},
        xlim=(-5.0, 5.0), ylim=(-3.0, 3.0), log_levels=False),
    "rosenbrock": Objective(
        "rosenbrock", "f(x, y) = (1 - x)² + 100 (y - x²)²", _rosen, _rosen_grad,
        "∇f = (-2(1 - x) - 400 x (y - x²), 200 (y - x²))",
        start=(-1.5, 2.0), minimum=(1.0, 1.0), steps=2000,
        # SGD is stable near the start only for α < ~1e-3 (curvature ~1900 there).
        lrs={"sgd": 1e-3, "momentum": 2e-3, "adagrad": 0.1, "adadelta": 1.0, "rmsprop": 5e-3, "adam": 0.02},
        xlim=(-2.0, 2.0), ylim=(-1.0, 3.0), log_levels=True),
}


def get_function(name: str) -> Objective:
    key = str(name).strip().lower()
    if key not in FUNCTIONS:
        raise UserError(f"unknown function {name!r}{did_you_mean(key, FUNCTIONS)}; allowed: {', '.join(FUNCTIONS)}")
    return FUNCTIONS[key]


def run_rule(rule: str, fn: Objective, steps: int, lr: float | None = None, show: int = 3) -> dict[str, Any]:
    """Run one reference optimiser on ``fn``: trajectory, f values and the first ``show`` steps."""
    from cnnkit.reference.optim import create

    lr = fn.lrs[rule] if lr is None else lr
    opt = create(rule, lr)
    p = np.array(fn.start, dtype=np.float64)
    traj, fs, first = [p.copy()], [float(fn.f(p))], []
    for t in range(1, steps + 1):
        g = fn.grad(p)
        before = p.copy()
        opt.step([p], [g])
        if not np.all(np.isfinite(p)):
            break
        traj.append(p.copy())
        fs.append(float(fn.f(p)))
        if t <= show:
            first.append({"t": t, "position": before.tolist(), "gradient": g.tolist(),
                          "update": (p - before).tolist(), "new_position": p.tolist(), "f": fs[-1]})
    return {"name": rule, "lr": lr, "hyper": dict(HYPER_DEFAULTS[rule]), "formula": COURSE_FORMULAS[rule],
            "trajectory": np.array(traj), "f_values": fs, "first_steps": first,
            "final": traj[-1].tolist(), "f_start": fs[0], "f_final": fs[-1], "steps_taken": len(traj) - 1,
            "diverged": len(traj) - 1 < steps}


def run_optimizers(function: str = "quadratic", steps: int | None = None, show: int = 3,
                   rules: tuple[str, ...] = RULES) -> dict[str, Any]:
    """All six rules from the same start on ``function`` (quadratic or rosenbrock)."""
    fn = get_function(function)
    if steps is None:
        steps = fn.steps
    if int(steps) != steps or steps < 1:
        raise UserError(f"--steps {steps!r} is not allowed; use a positive int")
    steps = int(steps)
    return {"function": fn.name, "formula": fn.text, "gradient": fn.grad_text, "start": list(fn.start),
            "minimum": list(fn.minimum), "f_start": float(fn.f(np.array(fn.start))), "steps": steps,
            "rules": [run_rule(r, fn, steps, show=show) for r in rules]}


def _vec(v, digits: int = 4) -> str:
    return "(" + ", ".join(f"{x:.{digits}g}" for x in v) + ")"


def render_text(res: dict[str, Any]) -> str:
    lines = [f"{res['function']}: {res['formula']},  {res['gradient']}",
             f"  start {_vec(res['start'])} with f = {res['f_start']:.4g}; minimum at {_vec(res['minimum'])} (f = 0); "
             f"{res['steps']} steps per rule",
             "  α is each rule's default learning rate for this function; other hyperparameters are the "
             "reference engine's defaults", ""]
    for r in res["rules"]:
        hyper = ", ".join(f"{k}={v:g}" for k, v in r["hyper"].items())
        lines.append(f"{r['name']}  (α = {r['lr']:g}{', ' + hyper if hyper else ''})")
        lines.append(f"  {r['formula']}")
        if r["name"] in RULE_NOTES:
            lines.append(f"  note: {RULE_NOTES[r['name']]}")
        for s in r["first_steps"]:
            lines.append(f"  t={s['t']}: θ = {_vec(s['position'])}, g = {_vec(s['gradient'])}, "
                         f"Δθ = {_vec(s['update'])} -> θ = {_vec(s['new_position'])}, f = {s['f']:.4g}")
        note = f" (stopped at step {r['steps_taken']}: not finite)" if r["diverged"] else ""
        lines.append(f"  final θ = {_vec(r['final'])}, f = {r['f_final']:.4g} (start {r['f_start']:.4g}){note}")
        lines.append("")
    best = min(res["rules"], key=lambda r: r["f_final"])
    lines.append(f"lowest final f: {best['name']} ({best['f_final']:.3g})")
    return "\n".join(lines)


def to_json(res: dict[str, Any]) -> dict[str, Any]:
    out = {k: res[k] for k in ("function", "formula", "gradient", "start", "minimum", "f_start", "steps")}
    out["rules"] = [{"name": r["name"], "lr": r["lr"], "hyper": r["hyper"], "formula": r["formula"],
                     "first_steps": r["first_steps"], "final": r["final"], "f_final": r["f_final"],
                     "steps_taken": r["steps_taken"], "trajectory": r["trajectory"].tolist()}
                    for r in res["rules"]]
    return out


__all__ = ["RULES", "COURSE_FORMULAS", "RULE_NOTES", "HYPER_DEFAULTS", "FUNCTIONS", "Objective", "get_function",
           "run_rule", "run_optimizers", "render_text", "to_json"]
