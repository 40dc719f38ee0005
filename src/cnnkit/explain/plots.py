"""Drawings for ``cnnkit explain``: window frames (PNG grid or GIF), activation curves,
optimiser trajectories. Matplotlib's Agg canvas only (no screen, no pyplot state).

Example::

    res = explain_window_op("avgpool", x, size=3, stride=1)
    save_window_frames(res, "avgpool.gif")      # one frame per window position
    save_window_frames(res, "avgpool.png")      # the frames as a grid of small panels
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from cnnkit.errors import UserError

MAX_PNG_PANELS = 36
MAX_GIF_FRAMES = 200


def check_path(path: str, allowed: tuple[str, ...], flag: str) -> str:
    """UserError unless ``path`` ends with one of ``allowed`` (e.g. ('.png', '.gif'))."""
    ext = Path(str(path)).suffix.lower()
    if ext not in allowed:
        raise UserError(f"{flag} {path!r}: unsupported file type {ext or '(none)'!r}; use "
                        f"{' or '.join(allowed)}")
    parent = Path(str(path)).parent
    if str(parent) not in ("", ".") and not parent.is_dir():
        raise UserError(f"{flag} {path!r}: folder {str(parent)!r} does not exist")
    return ext


def _figure(w: float, h: float, dpi: int = 80):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), dpi=dpi)
    FigureCanvasAgg(fig)
    return fig


def _fmt(v: float) -> str:
    from cnnkit.explain.ops import fmt_num

    return fmt_num(v, 2)


# --------------------------------------------------------------------------- window frames

def _draw_matrix(ax, m: np.ndarray, title: str, box=None, pads=(0, 0, 0, 0), filled=None, current=None) -> None:
    """A matrix as coloured cells with their values; ``box`` = (row, col, h, w) is highlighted."""
    from matplotlib.patches import Rectangle

    m = np.asarray(m, dtype=float)
    shown = np.where(np.isfinite(m), m, np.nan)
    finite = shown[np.isfinite(shown)]       # colour scale of the whole matrix, so it stays put
    vmin, vmax = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    if vmin == vmax:
        vmax = vmin + 1.0
    if filled is not None:
        shown = np.where(filled, shown, np.nan)
    span = vmax - vmin   # light blues only, so black values stay readable
    ax.imshow(np.ma.masked_invalid(shown), cmap="Blues", vmin=vmin - 0.2 * span, vmax=vmax + 0.8 * span,
              interpolation="nearest")
    h, w = m.shape
    t, b, l, r = pads
    fs = max(5, min(10, int(60 / max(h, w, 1))))
    for i in range(h):
        for j in range(w):
            is_pad = i < t or i >= h - b or j < l or j >= w - r
            if is_pad:
                ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, facecolor="0.9", edgecolor="none"))
            if filled is not None and not filled[i, j]:
                continue
            v = m[i, j]
            ax.text(j, i, "-inf" if np.isneginf(v) else _fmt(v), ha="center", va="center", fontsize=fs,
                    color="0.5" if is_pad else "black")
    if box is not None:
        r0, c0, kh, kw = box
        ax.add_patch(Rectangle((c0 - 0.5, r0 - 0.5), kw, kh, fill=False, edgecolor="red", linewidth=2))
    if current is not None:
        i, j = current
        ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=2))
    ax.set_xticks(np.arange(-0.5, w, 1), minor=True)
    ax.set_yticks(np.arange(-0.5, h, 1), minor=True)
    ax.grid(which="minor", color="white", linewidth=0.8)
    ax.tick_params(which="both", bottom=False, left=False, labelbottom=False, labelleft=False)
    ax.set_title(title, fontsize=8)


def _draw_frame(ax_in, ax_out, res: dict[str, Any], k: int) -> None:
    """Frame k: the padded input with window k highlighted, and the output filled up to step k."""
    op = res["op"]
    kh, kw = res["kernel"].shape if op == "conv" else (res["size"], res["size"])
    step = res["steps"][k]
    r0, c0 = step["position"]
    i, j = step["output_cell"]
    out = res["output"]
    filled = np.zeros(out.shape, dtype=bool)
    for s in res["steps"][:k + 1]:
        filled[tuple(s["output_cell"])] = True
    _draw_matrix(ax_in, res["padded_input"], f"step {k + 1}: window at ({r0}, {c0})", box=(r0, c0, kh, kw),
                 pads=res["pads"])
    _draw_matrix(ax_out, out, f"output[{i}][{j}] = {_fmt(step['value'])}", filled=filled, current=(i, j))


def save_window_frames(res: dict[str, Any], path: str, duration_ms: int = 800) -> dict[str, Any]:
    """``.png``: a grid of panels (input + output so far) for each step; ``.gif``: one frame per step.

    Returns ``{"path", "frames", "total_steps"}``; long walks are cut to the first
    MAX_PNG_PANELS panels / MAX_GIF_FRAMES frames.
    """
    ext = check_path(path, (".png", ".gif"), "--save")
    n = len(res["steps"])
    if ext == ".png":
        count = min(n, MAX_PNG_PANELS)
        cols = min(count, 3 if count <= 9 else 6)
        rows = math.ceil(count / cols)
        fig = _figure(4.2 * cols, 2.3 * rows)
        grid = fig.add_gridspec(rows, 2 * cols, wspace=0.15, hspace=0.35)
        for k in range(count):
            rr, cc = divmod(k, cols)
            _draw_frame(fig.add_subplot(grid[rr, 2 * cc]), fig.add_subplot(grid[rr, 2 * cc + 1]), res, k)
        title = f"{res['op']}: {count} of {n} window positions" if count < n else f"{res['op']}: every window position"
        fig.suptitle(title, fontsize=10)
        fig.savefig(path, format="png")
        return {"path": str(path), "frames": count, "total_steps": n}

    from PIL import Image

    count = min(n, MAX_GIF_FRAMES)
    fig = _figure(6.4, 3.2)
    ax_in, ax_out = fig.subplots(1, 2)
    frames = []
    for k in range(count):
        ax_in.clear()
        ax_out.clear()
        _draw_frame(ax_in, ax_out, res, k)
        fig.suptitle(f"{res['op']}: step {k + 1} of {n}", fontsize=10)
        fig.canvas.draw()
        frames.append(Image.fromarray(np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()))
    frames[0].save(path, format="GIF", save_all=True, append_images=frames[1:], duration=duration_ms,
                   loop=0, optimize=False, disposal=1)
    return {"path": str(path), "frames": count, "total_steps": n}


# --------------------------------------------------------------------------- activations

def plot_activation(name: str, path: str, slope: float = 0.1, alpha: float = 1.0) -> str:
    """The curve and its derivative on [-5, 5] (maxout: the illustrative 2-piece example)."""
    from cnnkit.explain.activations import MAXOUT_PLOT_PIECES, canonical_name, curve, formula

    check_path(path, (".png",), "--plot")
    name = canonical_name(name)
    xs = np.linspace(-5, 5, 1001)
    y, dy = curve(name, xs, slope=slope, alpha=alpha)
    fig = _figure(6.4, 4.0, dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    if name == "maxout":
        (w1, b1), (w2, b2) = MAXOUT_PLOT_PIECES
        ax.plot(xs, w1 * xs + b1, "--", color="0.6", linewidth=1, label=f"z1 = {w1:g}x + {b1:g}")
        ax.plot(xs, w2 * xs + b2, ":", color="0.6", linewidth=1, label=f"z2 = {w2:g}x + {b2:g}")
        title = f"maxout: max({w1:g}x + {b1:g}, {w2:g}x + {b2:g})"
    else:
        title = formula(name, slope, alpha)
    ax.plot(xs, y, color="tab:blue", linewidth=2, label="f(x)")
    ax.plot(xs, dy, color="tab:orange", linewidth=1.5, label="f'(x)")
    ax.axhline(0, color="0.8", linewidth=0.8)
    ax.axvline(0, color="0.8", linewidth=0.8)
    ax.set_xlim(-5, 5)
    lo, hi = float(min(y.min(), dy.min())), float(max(y.max(), dy.max()))
    ax.set_ylim(max(lo, -5.5) - 0.3, min(hi, 5.5) + 0.3)
    ax.set_xlabel("x")
    ax.set_title(title, fontsize=10)
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(alpha=0.3)
    fig.savefig(path, format="png")
    return str(path)


# --------------------------------------------------------------------------- optimisers

def plot_optimizers(res: dict[str, Any], path: str) -> str:
    """Every rule's trajectory over the contour plot of the function."""
    from matplotlib.colors import LogNorm

    from cnnkit.explain.optimizers import get_function

    check_path(path, (".png",), "--plot")
    fn = get_function(res["function"])
    trajs = [r["trajectory"] for r in res["rules"]]
    pts = np.concatenate([t for t in trajs if len(t)] + [np.array([fn.start, fn.minimum])])
    pts = pts[np.all(np.isfinite(pts), axis=1)]
    x0, x1 = min(fn.xlim[0], pts[:, 0].min()), max(fn.xlim[1], pts[:, 0].max())
    y0, y1 = min(fn.ylim[0], pts[:, 1].min()), max(fn.ylim[1], pts[:, 1].max())
    # keep the view around the function's region even if a rule overshoots far away
    span_x, span_y = fn.xlim[1] - fn.xlim[0], fn.ylim[1] - fn.ylim[0]
    x0, x1 = max(x0, fn.xlim[0] - span_x), min(x1, fn.xlim[1] + span_x)
    y0, y1 = max(y0, fn.ylim[0] - span_y), min(y1, fn.ylim[1] + span_y)
    gx, gy = np.meshgrid(np.linspace(x0, x1, 300), np.linspace(y0, y1, 300))
    gz = fn.f(np.stack([gx, gy]))
    fig = _figure(8.0, 6.0, dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    if fn.log_levels:
        levels = np.logspace(-1, math.log10(max(gz.max(), 1.0)), 20)
        ax.contour(gx, gy, gz + 1e-12, levels=levels, norm=LogNorm(), cmap="Greys", linewidths=0.7)
    else:
        ax.contour(gx, gy, gz, levels=20, cmap="Greys", linewidths=0.7)
    colors = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown"]
    for r, c in zip(res["rules"], colors):
        t = r["trajectory"]
        ax.plot(t[:, 0], t[:, 1], "-", color=c, linewidth=1.3, marker=".", markersize=2,
                label=f"{r['name']} (α={r['lr']:g}): f={r['f_final']:.2g}")
    ax.plot(*fn.start, "ko", markersize=6, label="start")
    ax.plot(*fn.minimum, "k*", markersize=10, label="minimum")
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    ax.set_title(f"{fn.name}: {fn.text}, {res['steps']} steps", fontsize=10)
    ax.legend(loc="best", fontsize=7)
    fig.savefig(path, format="png")
    return str(path)


__all__ = ["MAX_PNG_PANELS", "MAX_GIF_FRAMES", "check_path", "save_window_frames", "plot_activation",
           "plot_optimizers"]
