"""``cnnkit explain attention``: what each attention block of a trained run did on one image.

The image is read and normalised as ``cnnkit predict`` does (the run's input size, channels, mean and
std), every attention block of the network (:class:`cnnkit.nn.attention.AttentionBlock`: the layer
lists' ``se``, ``cbam``, ``eca``, ``nonlocal``, ``attention_pool`` and the ``se_resnet*`` models' gates)
is told to ``record``, and one forward pass in eval mode keeps what each applied:

* **channel weights** (se, eca, cbam): the gate in (0, 1) each channel of the block's input was
  multiplied by: near 1 kept, near 0 silenced. Shown: min / mean / max / std, the top channels and
  the lowest ones.
* **spatial map** (cbam: the sigmoid weight each position was multiplied by; attention_pool: the
  softmax weight of each position in the pooled mean, summing to 1; nonlocal: the attention each
  position *receives*, averaged over the query positions, also summing to 1). Shown: min / mean /
  max, the peak and a small character map; ``--save out.png`` draws each map over the image
  (stretched from the block's resolution to the image's).

Example::

    model, info = load_attention_run("runs/se_digits")
    res = explain_attention(model, info, "digit.png", top=5)
    print(render_text(res)); save_png(res, "attention.png")
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cnnkit.atomic import atomic_write
from cnnkit.data.files import load_image, normalise
from cnnkit.errors import UserError
from cnnkit.nn.attention import attention_blocks

#: The character ramp of the text maps, from the map's lowest value to its highest.
RAMP = " .:-=+*#%@"
#: Maps wider than this are not drawn in the text output (JSON and PNG have them all).
TEXT_MAP_MAX = 32
#: Panels of the PNG grid (the image, then one per map or channel vector); the rest is left out.
PNG_MAX_PANELS = 48
PNG_COLUMNS = 4

_WHAT = {
    "se": "squeeze-and-excitation: channel weights sigmoid(MLP(mean of each channel))",
    "eca": "ECA: channel weights sigmoid(conv1d over the channels' means)",
    "cbam": "CBAM: channel weights, then a spatial map sigmoid(conv over [mean, max] across channels)",
    "nonlocal": "non-local: self-attention over positions; the map is the attention each position receives",
    "attention_pool": "attention pooling: softmax weight of each position in the pooled mean",
}


# --------------------------------------------------------------------------- the run

def load_attention_run(source: str | os.PathLike) -> tuple[torch.nn.Module, dict[str, Any]]:
    """``(model, info)`` of an image run (folder or checkpoint) whose network has attention blocks."""
    from cnnkit.inference import load_run_model

    model, info = load_run_model(source)
    shape = tuple(info.get("input_shape") or ())
    if len(shape) != 3:
        task = getattr(info.get("task"), "name", "unknown")
        raise UserError(f"explain attention reads an image, but {str(source)!r} is a {task} run with inputs of "
                        f"shape {list(shape)}; give an image run (input [C, H, W])")
    if not attention_blocks(model):
        name = getattr(info.get("config"), "model", None)
        what = f"model {name.name!r}" if name is not None and name.name else "its layer list"
        raise UserError(f"{str(source)!r} has no attention block ({what} has no se, cbam, eca, nonlocal or "
                        f"attention_pool layer); train one with such layers, or an se_resnet* model")
    return model, info


# --------------------------------------------------------------------------- the computation

def _device(model: torch.nn.Module) -> torch.device:
    return next((p.device for p in model.parameters()), torch.device("cpu"))


def _stats(v: np.ndarray) -> dict[str, float]:
    return {"min": float(v.min()), "mean": float(v.mean()), "max": float(v.max()), "std": float(v.std())}


def _channel_summary(w: np.ndarray, top: int) -> dict[str, Any]:
    order = np.argsort(-w, kind="stable")                    # highest first, ties by channel index
    pick = order[:top] if top else order
    low = order[::-1][:min(top, 3)] if top else order[::-1]
    return {**_stats(w), "top": [{"channel": int(c), "weight": float(w[c])} for c in pick],
            "lowest": [{"channel": int(c), "weight": float(w[c])} for c in low], "weights": w.tolist()}


def _spatial_summary(m: np.ndarray) -> dict[str, Any]:
    peak = np.unravel_index(int(np.argmax(m)), m.shape)
    return {**_stats(m), "shape": list(m.shape), "sum": float(m.sum()), "peak": [int(peak[0]), int(peak[1])],
            "map": m.tolist()}


def explain_attention(model: torch.nn.Module, info: dict[str, Any], image: str | os.PathLike,
                      top: int = 5) -> dict[str, Any]:
    """Every attention block's channel weights and spatial map for one image file (see the module doc).

    ``info``: the run's (``input_shape``, ``mean``, ``std``, ``classes``), as :func:`load_attention_run`
    gives it. ``top``: channels listed per block (0: all).
    """
    blocks = attention_blocks(model)
    if not blocks:
        raise UserError("this network has no attention block (se, cbam, eca, nonlocal, attention_pool)")
    shape = tuple(int(v) for v in info["input_shape"])
    pixels = load_image(image, shape)                                      # uint8 (C, H, W)
    x = torch.from_numpy(normalise(pixels[None], info["mean"], info["std"])).to(_device(model))
    was_training = model.training
    before = [(m, m.record) for _, m in blocks]
    try:
        model.eval()
        for m, _ in before:
            m.record, m.last_attention = True, {}
        with torch.no_grad():
            out = model(x)
        recorded = [(name, m, {k: v[0].float().cpu().numpy() for k, v in m.last_attention.items()})
                    for name, m in blocks]
    finally:
        for m, flag in before:
            m.record, m.last_attention = flag, {}
        model.train(was_training)
    res: dict[str, Any] = {"image": str(image), "input_shape": list(shape), "prediction": _prediction(out, info),
                           "pixels": pixels, "blocks": []}
    for name, m, maps in recorded:
        entry: dict[str, Any] = {"name": name, "type": m.kind, "what": _WHAT.get(m.kind, m.kind),
                                 "channels": int(getattr(m, "channels", 0)), "ran": bool(maps)}
        if "channel" in maps:
            entry["channel"] = _channel_summary(maps["channel"], top)
        if "spatial" in maps:
            entry["spatial"] = _spatial_summary(maps["spatial"][0])
        if "matrix" in maps:
            rows = maps["matrix"]                                           # (HW, HW), rows sum to 1
            ent = -(rows * np.log(np.clip(rows, 1e-12, None))).sum(axis=1)
            entry["matrix"] = {"shape": list(rows.shape), "row_sums": _stats(rows.sum(axis=1)),
                               "entropy_mean": float(ent.mean()), "entropy_uniform": float(math.log(rows.shape[1]))}
        res["blocks"].append(entry)
    return res


def _prediction(out: Any, info: dict[str, Any]) -> dict[str, Any] | None:
    """The class a classifier gave the image (None for other outputs: boxes, masks)."""
    classes = list(info.get("classes") or [])
    if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[1] != len(classes) or not classes:
        return None
    p = torch.softmax(out[0].float(), dim=0)
    k = int(p.argmax())
    return {"index": k, "class": str(classes[k]), "probability": float(p[k])}


# --------------------------------------------------------------------------- text and JSON

def _num(v: float) -> str:
    return f"{v:.3f}" if abs(v) >= 1e-3 or v == 0 else f"{v:.2e}"


def char_map(m: np.ndarray) -> list[str]:
    """A map as rows of characters from :data:`RAMP` (its lowest value ' ', its highest '@')."""
    m = np.asarray(m, dtype=float)
    lo, hi = float(m.min()), float(m.max())
    if hi - lo <= 1e-12 * max(1.0, abs(hi)):
        return [RAMP[len(RAMP) // 2] * m.shape[1] for _ in range(m.shape[0])]
    idx = np.rint((m - lo) / (hi - lo) * (len(RAMP) - 1)).astype(int)
    return ["".join(RAMP[i] for i in row) for row in idx]


def render_text(res: dict[str, Any]) -> str:
    shape = "x".join(str(v) for v in res["input_shape"])
    lines = [f"attention blocks of {res.get('run', 'the run')} on {res['image']} (input {shape}, normalised as in "
             f"training)"]
    pred = res["prediction"]
    if pred is not None:
        lines.append(f"predicted {pred['class']} (p = {pred['probability']:.3f})")
    lines += ["channel weights: the gate in (0, 1) each channel is multiplied by (near 1: kept, near 0: silenced)",
              "spatial map: the weight of each position (' ' lowest ... '@' highest of the map)", ""]
    for b in res["blocks"]:
        lines.append(f"{b['name']} ({b['type']}, {b['channels']} channels): {b['what']}")
        if not b["ran"]:
            lines.append("  (did not run on this image)")
        c = b.get("channel")
        if c is not None:
            lines.append(f"  channel weights: min {_num(c['min'])}  mean {_num(c['mean'])}  max {_num(c['max'])}  "
                         f"std {_num(c['std'])}")
            lines.append("  top channels: " + ", ".join(f"#{t['channel']} {_num(t['weight'])}" for t in c["top"]))
            lines.append("  lowest: " + ", ".join(f"#{t['channel']} {_num(t['weight'])}" for t in c["lowest"]))
        s = b.get("spatial")
        if s is not None:
            h, w = s["shape"]
            lines.append(f"  spatial map {h}x{w}: min {_num(s['min'])}  mean {_num(s['mean'])}  max {_num(s['max'])}"
                         f"  (sum {_num(s['sum'])}), peak at row {s['peak'][0]}, col {s['peak'][1]}")
            if w <= TEXT_MAP_MAX and h <= TEXT_MAP_MAX:
                lines += [f"    |{row}|" for row in char_map(np.asarray(s["map"]))]
        mat = b.get("matrix")
        if mat is not None:
            lines.append(f"  attention matrix {mat['shape'][0]}x{mat['shape'][1]} (rows sum to 1): mean row "
                         f"entropy {_num(mat['entropy_mean'])} (uniform: {_num(mat['entropy_uniform'])})")
        lines.append("")
    return "\n".join(lines).rstrip()


def to_json(res: dict[str, Any]) -> dict[str, Any]:
    """The result without the image's pixels (JSON-ready)."""
    return {k: v for k, v in res.items() if k != "pixels"}


# --------------------------------------------------------------------------- the picture

def check_save_path(path: str) -> str:
    """``--save`` must be a .png in an existing folder."""
    suffix = Path(str(path)).suffix.lower()
    if suffix != ".png":
        raise UserError(f"--save {path!r}: unsupported file type {suffix or '(none)'!r}; use .png")
    parent = Path(str(path)).parent
    if str(parent) not in ("", ".") and not parent.is_dir():
        raise UserError(f"--save {path!r}: folder {str(parent)!r} does not exist")
    return suffix


def _panels(res: dict[str, Any]) -> list[tuple[str, str, Any]]:
    """(kind, title, data) of each panel: the image, then each block's spatial map and channel weights."""
    out: list[tuple[str, str, Any]] = [("image", "input", None)]
    for b in res["blocks"]:
        if "spatial" in b:
            out.append(("spatial", f"{b['name']} ({b['type']}) map", np.asarray(b["spatial"]["map"])))
        if "channel" in b:
            out.append(("channel", f"{b['name']} ({b['type']}) channels", np.asarray(b["channel"]["weights"])))
    return out


def save_png(res: dict[str, Any], path: str | os.PathLike) -> dict[str, Any]:
    """A grid: the image, each spatial map over it (stretched to its size), each block's channel weights
    as bars. Returns ``{"path", "panels", "total_panels"}``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    check_save_path(str(path))
    panels = _panels(res)
    shown = panels[:PNG_MAX_PANELS]
    cols = min(PNG_COLUMNS, len(shown))
    rows = -(-len(shown) // cols)
    fig = Figure(figsize=(3.2 * cols, 3.0 * rows + 0.5), dpi=80)
    FigureCanvasAgg(fig)
    pixels = np.asarray(res["pixels"])
    img = pixels[0] if pixels.shape[0] == 1 else pixels.transpose(1, 2, 0)
    h, w = img.shape[:2]
    cmap_img = "gray" if pixels.shape[0] == 1 else None
    for k, (kind, title, data) in enumerate(shown):
        ax = fig.add_subplot(rows, cols, k + 1)
        ax.set_title(title, fontsize=8)
        if kind == "channel":
            ax.bar(np.arange(len(data)), data, width=1.0, color="tab:blue")
            ax.set_ylim(0, 1)
            ax.set_xlim(-0.5, len(data) - 0.5)
            ax.set_xlabel("channel", fontsize=7)
            ax.tick_params(labelsize=6)
            continue
        ax.imshow(img, cmap=cmap_img, vmin=0, vmax=255, interpolation="nearest")
        if kind == "spatial":
            im = ax.imshow(data, cmap="inferno", alpha=0.55, interpolation="bilinear",
                           extent=(-0.5, w - 0.5, h - 0.5, -0.5))
            fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04).ax.tick_params(labelsize=6)
        ax.set_axis_off()
    pred = res["prediction"]
    head = f"attention on {Path(res['image']).name}"
    if pred is not None:
        head += f": predicted {pred['class']} (p = {pred['probability']:.3f})"
    if len(shown) < len(panels):
        head += f" - the first {len(shown)} of {len(panels)} panels"
    fig.suptitle(head, fontsize=10)
    atomic_write(path, lambda f: fig.savefig(f, format="png"))
    return {"path": str(path), "panels": len(shown), "total_panels": len(panels)}


__all__ = ["char_map", "check_save_path", "explain_attention", "load_attention_run", "render_text",
           "save_png", "to_json"]
