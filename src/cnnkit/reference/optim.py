"""The six update rules of the course's optimiser table, in NumPy.

Each optimiser keeps its state per parameter position and updates ``params`` in place::

    opt = create("adam", lr=1e-3)
    opt.step([w, b], [dw, db])

Course table (g = gradient, dθ = the change added to θ):

=========  ===============================================================================
sgd        dθ = -lr g
momentum   m = γ m + (1 - γ) g;                       dθ = -lr m
adagrad    G = G + g²;                                dθ = -lr g / (√G + ε)
adadelta   v = β2 v + (1 - β2) g²;  dθ = -lr g √(D + ε) / √(v + ε);  D = β1 D + (1 - β1) (dθ/lr)²
rmsprop    v = β2 v + (1 - β2) g²;                    dθ = -lr g / (√v + ε)
adam       m = β1 m + (1 - β1) g;  v = β2 v + (1 - β2) g²;
           m̂ = m / (1 - β1^t);  v̂ = v / (1 - β2^t);  dθ = -lr m̂ / (√v̂ + ε)
=========  ===============================================================================

All states start at zero. Optional decoupled weight decay: θ ← θ - lr·wd·θ before the update.
Note ``momentum`` is the course's exponential-average form, not torch's ``m = γ m + g``.
"""

from __future__ import annotations

import numpy as np


class Optimizer:
    """Base class: subclasses implement ``_update(i, p, g)`` returning dθ for parameter i."""

    name = "base"

    def __init__(self, lr, weight_decay=0.0):
        if lr is None or lr < 0:
            raise ValueError(f"{self.name}: learning rate must be >= 0, got {lr}")
        self.lr = lr
        self.weight_decay = weight_decay
        self.state: dict[int, dict[str, np.ndarray]] = {}
        self.t = 0

    def _zeros(self, i, p, *names):
        st = self.state.setdefault(i, {})
        for n in names:
            if n not in st:
                st[n] = np.zeros_like(p)
        return st

    def step(self, params, grads):
        """Update every array in ``params`` in place from the matching gradient."""
        if len(params) != len(grads):
            raise ValueError(f"{len(params)} params but {len(grads)} grads")
        self.t += 1
        for i, (p, g) in enumerate(zip(params, grads)):
            g = np.asarray(g, dtype=p.dtype)
            if self.weight_decay:
                p -= self.lr * self.weight_decay * p
            p += self._update(i, p, g).astype(p.dtype, copy=False)

    def _update(self, i, p, g):  # pragma: no cover - abstract
        raise NotImplementedError


class SGD(Optimizer):
    """dθ = -lr g."""

    name = "sgd"

    def _update(self, i, p, g):
        return -self.lr * g


class Momentum(Optimizer):
    """m = γ m + (1 - γ) g;  dθ = -lr m."""

    name = "momentum"

    def __init__(self, lr, gamma=0.9, weight_decay=0.0):
        super().__init__(lr, weight_decay)
        self.gamma = gamma

    def _update(self, i, p, g):
        st = self._zeros(i, p, "m")
        st["m"] = self.gamma * st["m"] + (1 - self.gamma) * g
        return -self.lr * st["m"]


class Adagrad(Optimizer):
    """G = G + g²;  dθ = -lr g / (√G + ε)."""

    name = "adagrad"

    def __init__(self, lr, eps=1e-8, weight_decay=0.0):
        super().__init__(lr, weight_decay)
        self.eps = eps

    def _update(self, i, p, g):
        st = self._zeros(i, p, "G")
        st["G"] = st["G"] + g * g
        return -self.lr * g / (np.sqrt(st["G"]) + self.eps)


class Adadelta(Optimizer):
    """v = β2 v + (1-β2) g²;  dθ = -lr g √(D + ε) / √(v + ε);  D = β1 D + (1-β1) (dθ/lr)² (Zeiler)."""

    name = "adadelta"

    def __init__(self, lr=1.0, beta1=0.95, beta2=0.95, eps=1e-6, weight_decay=0.0):
        super().__init__(lr, weight_decay)
        self.beta1, self.beta2, self.eps = beta1, beta2, eps

    def _update(self, i, p, g):
        st = self._zeros(i, p, "v", "D")
        st["v"] = self.beta2 * st["v"] + (1 - self.beta2) * g * g
        step = -g * np.sqrt(st["D"] + self.eps) / np.sqrt(st["v"] + self.eps)   # dθ / lr
        st["D"] = self.beta1 * st["D"] + (1 - self.beta1) * step * step
        return self.lr * step


class RMSprop(Optimizer):
    """v = β2 v + (1 - β2) g²;  dθ = -lr g / (√v + ε)."""

    name = "rmsprop"

    def __init__(self, lr, beta2=0.99, eps=1e-8, weight_decay=0.0):
        super().__init__(lr, weight_decay)
        self.beta2, self.eps = beta2, eps

    def _update(self, i, p, g):
        st = self._zeros(i, p, "v")
        st["v"] = self.beta2 * st["v"] + (1 - self.beta2) * g * g
        return -self.lr * g / (np.sqrt(st["v"]) + self.eps)


class Adam(Optimizer):
    """m, v moving averages of g and g², bias-corrected;  dθ = -lr m̂ / (√v̂ + ε)."""

    name = "adam"

    def __init__(self, lr, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0):
        super().__init__(lr, weight_decay)
        self.beta1, self.beta2, self.eps = beta1, beta2, eps

    def _update(self, i, p, g):
        st = self._zeros(i, p, "m", "v")
        st["m"] = self.beta1 * st["m"] + (1 - self.beta1) * g
        st["v"] = self.beta2 * st["v"] + (1 - self.beta2) * g * g
        m_hat = st["m"] / (1 - self.beta1 ** self.t)
        v_hat = st["v"] / (1 - self.beta2 ** self.t)
        return -self.lr * m_hat / (np.sqrt(v_hat) + self.eps)


OPTIMIZERS = {
    cls.name: cls for cls in (SGD, Momentum, Adagrad, Adadelta, RMSprop, Adam)
}


def create(name, lr=None, **hyper):
    """Build an optimiser by name: sgd, momentum, adagrad, adadelta, rmsprop, adam.

    ``lr`` may be omitted only for adadelta (default 1.0).

    >>> opt = create("momentum", lr=0.1, gamma=0.8)
    """
    key = str(name).lower()
    if key not in OPTIMIZERS:
        raise ValueError(f"unknown optimiser {name!r}; choose from {sorted(OPTIMIZERS)}")
    cls = OPTIMIZERS[key]
    if lr is None:
        if cls is not Adadelta:
            raise ValueError(f"{key}: a learning rate is required")
        return cls(**hyper)
    return cls(lr, **hyper)
