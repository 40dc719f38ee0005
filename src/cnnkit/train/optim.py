"""The six update rules of the course's optimiser table, as ``torch.optim.Optimizer``s.

Written exactly as the table gives them (g is the gradient, alpha the learning rate):

========  =====================================================================
sgd       dθ = -α g
momentum  m = γ m + (1 - γ) g ;  dθ = -α m
adagrad   G = G + g² ;  dθ = -α g / (√G + ε)
adadelta  v = β2 v + (1 - β2) g² ;  dθ = -α g √(D + ε) / √(v + ε) ;
          D = β1 D + (1 - β1) (dθ / α)²          (Zeiler, 2012: ε inside both roots)
rmsprop   v = β2 v + (1 - β2) g² ;  dθ = -α g / (√v + ε)
adam      m = β1 m + (1 - β1) g ;  v = β2 v + (1 - β2) g² ;
          m̂ = m / (1 - β1ᵗ) ;  v̂ = v / (1 - β2ᵗ) ;  dθ = -α m̂ / (√v̂ + ε)   (Kingma & Ba, 2015)
========  =====================================================================

ε is added outside the square root except in adadelta, whose D starts at 0 and
would never move without ε inside. Every rule also takes a decoupled
``weight_decay`` (θ ← θ - α λ θ before the update; Loshchilov & Hutter, 2019).
torch's own optimisers are reachable as ``torch.<name>`` (``torch.adamw``, ``torch.sgd``).

Example::

    opt = create("momentum", model.parameters(), lr=0.1, gamma=0.9)
"""

from __future__ import annotations

import inspect
from typing import Any, Iterable

import torch
from torch.optim import Optimizer

from cnnkit.errors import UserError, did_you_mean


class CourseOptimizer(Optimizer):
    """Shared plumbing: decoupled weight decay, per-parameter state, the rule in ``update``."""

    def __init__(self, params: Iterable, defaults: dict[str, Any]) -> None:
        if defaults["lr"] <= 0:
            raise ValueError(f"lr must be positive, got {defaults['lr']}")
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, wd = group["lr"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                if wd:
                    p.mul_(1 - lr * wd)
                self.update(p, p.grad, self.state[p], group)
        return loss

    def update(self, p: torch.Tensor, g: torch.Tensor, state: dict, group: dict) -> None:
        raise NotImplementedError


class SGD(CourseOptimizer):
    """dθ = -α g"""

    def __init__(self, params, lr: float = 0.01, weight_decay: float = 0.0) -> None:
        super().__init__(params, dict(lr=lr, weight_decay=weight_decay))

    def update(self, p, g, state, group):
        p.add_(g, alpha=-group["lr"])


class Momentum(CourseOptimizer):
    """m = γ m + (1 - γ) g ;  dθ = -α m"""

    def __init__(self, params, lr: float = 0.01, gamma: float = 0.9, weight_decay: float = 0.0) -> None:
        super().__init__(params, dict(lr=lr, gamma=gamma, weight_decay=weight_decay))

    def update(self, p, g, state, group):
        if "m" not in state:
            state["m"] = torch.zeros_like(p)
        m = state["m"]
        m.mul_(group["gamma"]).add_(g, alpha=1 - group["gamma"])
        p.add_(m, alpha=-group["lr"])


class Adagrad(CourseOptimizer):
    """G = G + g² ;  dθ = -α g / (√G + ε)"""

    def __init__(self, params, lr: float = 0.01, eps: float = 1e-8, weight_decay: float = 0.0) -> None:
        super().__init__(params, dict(lr=lr, eps=eps, weight_decay=weight_decay))

    def update(self, p, g, state, group):
        if "G" not in state:
            state["G"] = torch.zeros_like(p)
        G = state["G"]
        G.addcmul_(g, g)
        p.addcdiv_(g, G.sqrt().add_(group["eps"]), value=-group["lr"])


class Adadelta(CourseOptimizer):
    """v = β2 v + (1-β2) g² ;  dθ = -α g √(D+ε)/√(v+ε) ;  D = β1 D + (1-β1)(dθ/α)²"""

    def __init__(self, params, lr: float = 1.0, beta1: float = 0.95, beta2: float = 0.95, eps: float = 1e-6,
                 weight_decay: float = 0.0) -> None:
        super().__init__(params, dict(lr=lr, beta1=beta1, beta2=beta2, eps=eps, weight_decay=weight_decay))

    def update(self, p, g, state, group):
        if "v" not in state:
            state["v"] = torch.zeros_like(p)
            state["D"] = torch.zeros_like(p)
        v, D = state["v"], state["D"]
        b1, b2, eps, lr = group["beta1"], group["beta2"], group["eps"], group["lr"]
        v.mul_(b2).addcmul_(g, g, value=1 - b2)
        step = g * (D + eps).sqrt() / (v + eps).sqrt()  # dθ / (-α)
        D.mul_(b1).addcmul_(step, step, value=1 - b1)
        p.add_(step, alpha=-lr)


class RMSprop(CourseOptimizer):
    """v = β2 v + (1-β2) g² ;  dθ = -α g / (√v + ε)"""

    def __init__(self, params, lr: float = 0.001, beta2: float = 0.99, eps: float = 1e-8,
                 weight_decay: float = 0.0) -> None:
        super().__init__(params, dict(lr=lr, beta2=beta2, eps=eps, weight_decay=weight_decay))

    def update(self, p, g, state, group):
        if "v" not in state:
            state["v"] = torch.zeros_like(p)
        v = state["v"]
        v.mul_(group["beta2"]).addcmul_(g, g, value=1 - group["beta2"])
        p.addcdiv_(g, v.sqrt().add_(group["eps"]), value=-group["lr"])


class Adam(CourseOptimizer):
    """Bias-corrected m̂, v̂ ;  dθ = -α m̂ / (√v̂ + ε)"""

    def __init__(self, params, lr: float = 0.001, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8,
                 weight_decay: float = 0.0) -> None:
        super().__init__(params, dict(lr=lr, beta1=beta1, beta2=beta2, eps=eps, weight_decay=weight_decay))

    def update(self, p, g, state, group):
        if "m" not in state:
            state["t"] = 0
            state["m"] = torch.zeros_like(p)
            state["v"] = torch.zeros_like(p)
        state["t"] += 1
        t, m, v = state["t"], state["m"], state["v"]
        b1, b2 = group["beta1"], group["beta2"]
        m.mul_(b1).add_(g, alpha=1 - b1)
        v.mul_(b2).addcmul_(g, g, value=1 - b2)
        m_hat = m / (1 - b1 ** t)
        v_hat = v / (1 - b2 ** t)
        p.addcdiv_(m_hat, v_hat.sqrt_().add_(group["eps"]), value=-group["lr"])


COURSE_OPTIMIZERS: dict[str, type[CourseOptimizer]] = {
    "sgd": SGD, "momentum": Momentum, "adagrad": Adagrad, "adadelta": Adadelta, "rmsprop": RMSprop, "adam": Adam,
}
TORCH_OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop", "adagrad", "adadelta", "nadam", "radam", "adamax")
# The config's names for torch's arguments.
_TORCH_ARG_NAMES = {"beta1": "betas", "beta2": "betas", "gamma": "alpha"}


def names() -> list[str]:
    return list(COURSE_OPTIMIZERS) + [f"torch.{n}" for n in TORCH_OPTIMIZERS]


def create(name: str, params: Iterable, lr: float, **hyper: Any) -> Optimizer:
    """Build an optimiser by name: a course rule (``adam``) or torch's own (``torch.adamw``).

    Unknown names and hyperparameters the rule does not take raise UserError.
    """
    if name in COURSE_OPTIMIZERS:
        cls = COURSE_OPTIMIZERS[name]
        allowed = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "params", "lr")]
        for k in hyper:
            if k not in allowed:
                raise UserError(f"optimizer {name!r} takes no {k!r}{did_you_mean(k, allowed)}; "
                                f"it takes: lr, {', '.join(allowed)}")
        return cls(params, lr=lr, **hyper)
    if name.startswith("torch."):
        short = name[len("torch."):]
        if short not in TORCH_OPTIMIZERS:
            raise UserError(f"unknown optimizer {name!r}{did_you_mean(name, names())}; known: {', '.join(names())}")
        cls_t = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW,
                 "rmsprop": torch.optim.RMSprop, "adagrad": torch.optim.Adagrad, "adadelta": torch.optim.Adadelta,
                 "nadam": torch.optim.NAdam, "radam": torch.optim.RAdam, "adamax": torch.optim.Adamax}[short]
        kw = dict(hyper)
        if "beta1" in kw or "beta2" in kw:
            kw["betas"] = (kw.pop("beta1", 0.9), kw.pop("beta2", 0.999))
        if "gamma" in kw:
            kw["alpha"] = kw.pop("gamma")
        allowed = list(inspect.signature(cls_t.__init__).parameters)
        for k in kw:
            if k not in allowed:
                raise UserError(f"optimizer {name!r} takes no {k!r}; it takes: {', '.join(allowed[2:])}")
        return cls_t(params, lr=lr, **kw)
    raise UserError(f"unknown optimizer {name!r}{did_you_mean(name, names())}; known: {', '.join(names())}")
