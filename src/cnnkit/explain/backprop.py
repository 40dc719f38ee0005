"""``cnnkit explain backprop CONFIG.yaml``: one forward and backward pass, layer by layer, checked.

:func:`explain_backprop` builds the config's network in the NumPy engine in float64 (with the
torch engine's initial weights for ``train.seed``), takes the first batch of the training split,
and records for every layer its activation (shape, norm), the gradient of the loss with respect
to that activation (shape, norm), the norms of its parameter gradients, and a gradient check:
central finite differences on a few random entries of each of its parameters, compared with
backpropagation as max|numeric - analytic| / max|analytic gradient of that parameter|.
:func:`render_backprop_text` prints it as a table.

Example::

    result = explain_backprop(load_config("configs/lenet5_mnist5k.yaml"), batch_size=8)
    print(render_backprop_text(result))
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cnnkit.config import Config
from cnnkit.reference.network import ReferenceNet


def _norm(a: np.ndarray | None) -> float | None:
    return None if a is None else float(np.sqrt(np.square(a, dtype=np.float64).sum()))


def _loss_of(net: ReferenceNet, x: np.ndarray, y: np.ndarray, loss_fn) -> float:
    return loss_fn(net.forward(x, training=True), y)[0]


def explain_backprop(cfg: Config, batch_size: int = 8, *, checks_per_layer: int = 5, eps: float = 1e-6,
                     split: str = "train") -> dict[str, Any]:
    """One float64 forward/backward pass of ``cfg``'s network on a real batch, with per-layer gradient checks.

    Returns a dict: ``model``, ``dataset``, ``batch_shape``, ``loss_name``, ``loss``, ``eps``,
    ``checks_per_layer``, ``layers`` (one dict per top-level layer: ``name``, ``type``,
    ``activation_shape``, ``activation_norm``, ``grad_shape``, ``grad_norm``, ``param_grad_norms``
    {param: norm}, ``checked`` (entries compared), ``max_rel_error`` (None without parameters))
    and the overall ``max_rel_error``.
    """
    import torch

    from cnnkit.data.loaders import make_loader
    from cnnkit.reference.losses import classification_loss
    from cnnkit.reference.trainer import build_reference_model, layer_list
    from cnnkit.train.setup import load_task_data

    layer_list(cfg.model)  # a registered torch network is a UserError before any data is read
    _, bundle, input_shape = load_task_data(cfg)
    data = bundle.train if split == "train" else bundle.val
    loader = make_loader(data, batch_size=batch_size, mean=bundle.mean, std=bundle.std, shuffle=False, seed=0,
                         device="cpu", augment=None, num_workers=0)
    xb, yb = next(iter(loader))
    x, y = xb.numpy().astype(np.float64), yb.numpy()

    torch.manual_seed(cfg.train.seed)
    net, _ = build_reference_model(cfg.model, input_shape, bundle.num_classes, dtype=np.float64,
                                   rng=np.random.default_rng(cfg.train.seed))
    loss_fn = classification_loss(cfg.train.loss, cfg.regularization.label_smoothing)
    saved = {k: v.copy() for k, v in net.buffers.items()}

    # Forward, keeping every top-level activation; dropout masks are then frozen for the checks.
    acts = []
    h = x
    for layer in net.layers:
        h = layer.forward(h, True)
        acts.append(h)
    loss, d = loss_fn(h, y)
    net.set_dropout(freeze=True)

    # Backward, keeping dL/d(activation) of every layer.
    net.grads = {}
    out_grads: list[np.ndarray] = [None] * len(net.layers)  # type: ignore[list-item]
    for i in reversed(range(len(net.layers))):
        out_grads[i] = d
        d = net.layers[i].backward(d, need_dx=i > 0)
    grads = {k: net.grads[k] for k in net.params}

    # Gradient checks: a few entries of each layer's parameters, by central differences.
    rng = np.random.default_rng(cfg.train.seed)
    rows = []
    for i, layer in enumerate(net.layers):
        keys = layer.param_keys()
        sizes = [net.params[k].size for k in keys]
        row: dict[str, Any] = {
            "name": layer.name, "type": layer.type,
            "activation_shape": list(acts[i].shape), "activation_norm": _norm(acts[i]),
            "grad_shape": list(out_grads[i].shape), "grad_norm": _norm(out_grads[i]),
            "param_grad_norms": {k: _norm(grads[k]) for k in keys},
            "checked": 0, "max_rel_error": None,
        }
        if keys:
            total = sum(sizes)
            picks = rng.choice(total, size=min(checks_per_layer, total), replace=False)
            offsets = np.cumsum([0] + sizes)
            errors: dict[str, float] = {}
            for flat in sorted(int(f) for f in picks):
                j = int(np.searchsorted(offsets, flat, side="right") - 1)
                key, idx = keys[j], flat - offsets[j]
                p = net.params[key].reshape(-1)               # a view: perturb in place
                old = p[idx]
                p[idx] = old + eps
                up = _loss_of(net, x, y, loss_fn)
                p[idx] = old - eps
                down = _loss_of(net, x, y, loss_fn)
                p[idx] = old
                numeric = (up - down) / (2 * eps)
                analytic = float(grads[key].reshape(-1)[idx])
                scale = float(np.abs(grads[key]).max()) or 1.0
                errors[key] = max(errors.get(key, 0.0), abs(numeric - analytic) / scale)
            row["checked"] = len(picks)
            row["max_rel_error"] = max(errors.values())
        rows.append(row)
    net.set_dropout(freeze=False)
    net.buffers.update(saved)

    errs = [r["max_rel_error"] for r in rows if r["max_rel_error"] is not None]
    return {
        "model": cfg.model.name or "layer list", "dataset": cfg.data.name, "batch_shape": list(x.shape),
        "loss_name": cfg.train.loss, "loss": float(loss), "dtype": "float64", "eps": eps,
        "checks_per_layer": checks_per_layer, "layers": rows, "max_rel_error": max(errs) if errs else None,
        "chance_loss": float(np.log(h.shape[1])) if cfg.train.loss == "cross_entropy" else None,
        "logit_std": float(h.std(axis=1).mean()), "init": cfg.model.init.scheme, "batch_logits": int(h.shape[1]),
    }


def render_backprop_text(result: dict[str, Any]) -> str:
    """The result of :func:`explain_backprop` as a readable table."""
    def shape(s):
        return "x".join(str(v) for v in s)

    def num(v):
        return "-" if v is None else f"{v:.3g}"

    head = (f"backprop: {result['model']} on {result['dataset']}, batch {shape(result['batch_shape'])}, "
            f"{result['loss_name']} loss {result['loss']:.6g} ({result['dtype']})")
    cols = ("layer", "type", "activation", "|a|", "dL/da", "|dL/da|", "|dL/dparam|", "grad check")
    table = []
    for r in result["layers"]:
        pg = ", ".join(f"{k.rsplit('.', 1)[-1] if k.count('.') == 1 else k.split('.', 1)[1]} {num(v)}"
                       for k, v in r["param_grad_norms"].items()) or "-"
        table.append((r["name"], r["type"], shape(r["activation_shape"]), num(r["activation_norm"]),
                      shape(r["grad_shape"]), num(r["grad_norm"]), pg,
                      "-" if r["max_rel_error"] is None else f"{r['max_rel_error']:.1e}"))
    widths = [max(len(c), *(len(t[i]) for t in table)) for i, c in enumerate(cols)]
    lines = [head, "", "  ".join(c.ljust(w) for c, w in zip(cols, widths)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(v.ljust(w) for v, w in zip(t, widths)).rstrip() for t in table]
    chance = result.get("chance_loss")
    if chance is not None and result["loss"] > 1.5 * chance:
        # A student's first question: why is the untrained loss not ln(K)?
        lines += ["", f"why the loss starts at {result['loss']:.3g}, not at chance level ln({result['batch_logits']}) = "
                      f"{chance:.3g}: these untrained weights ({result['init']} initialisation) give logits that "
                      f"differ by {result['logit_std']:.3g} (std across classes) rather than being near 0, so the "
                      f"softmax is confident and mostly wrong; scaling the last layer's initial weights down starts "
                      f"near ln(K), and training brings the loss down within the first steps either way"]
    worst = result["max_rel_error"]
    lines += ["", f"gradient check: {result['checks_per_layer']} random parameter entries per layer, central "
              f"differences (eps {result['eps']:g}); max |numeric - backprop| / max |gradient| = "
              + ("-" if worst is None else f"{worst:.2e}")]
    return "\n".join(lines) + "\n"
