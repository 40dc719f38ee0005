"""The sections every run's report has: the run at a glance, its learning curves, its architecture
(drawn as a chain of boxes like the course's LeNet figure, and as the per-layer table), its config."""

from __future__ import annotations

import math
from typing import Any

import yaml

from cnnkit.tools.report.context import ReportContext
from cnnkit.tools.report.html import Section, figure, key_values, note, pre, table

#: Final fields shown in the overview after the validation metrics.
RUN_FIELDS = ("epochs", "best_epoch", "train_time_s", "end_to_end_s", "n_train", "n_val", "device", "engine",
              "world_size", "stopped_early")


def plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as pyplot

    return pyplot


def overview(ctx: ReportContext) -> Section:
    model = ctx.raw_config.get("model") or {}
    data = ctx.raw_config.get("data") or {}
    pairs: list[tuple[str, Any]] = [("run", ctx.path.name), ("task", ctx.task_name),
                                    ("model", model.get("name") or "layers (declared in the config)"),
                                    ("data", data.get("name")), ("status", "finished" if ctx.finished else
                                                                 f"no final.json yet ({len(ctx.history)} epochs logged)")]
    metrics = {k: v for k, v in ctx.final.items() if k.startswith("val_") and isinstance(v, (int, float))
               and not isinstance(v, bool)}
    pairs += sorted(metrics.items())
    pairs += [(k, ctx.final[k]) for k in RUN_FIELDS if k in ctx.final]
    extra = {k: v for k, v in ctx.final.items() if k in ("fid", "fid_real", "mse", "psnr", "ssim", "baseline_mse")}
    pairs += sorted(extra.items())
    return Section("Run", key_values(pairs, id="run-overview"))


def curve_panels(history: list[dict[str, Any]]) -> list[tuple[str, list[str]]]:
    """``(title, keys)`` per panel: the losses together, each validation metric with its training twin when
    logged, and the learning rate; only what the history holds numbers for."""
    logged = {k for row in history for k, v in row.items()
              if isinstance(v, (int, float)) and not isinstance(v, bool)}
    panels: list[tuple[str, list[str]]] = []
    losses = [k for k in ("train_loss", "val_loss") if k in logged]
    if losses:
        panels.append(("loss", losses))
    for k in sorted(logged):
        if k.startswith("val_") and k != "val_loss":
            name = k.removeprefix("val_")
            panels.append((name, [x for x in ("train_" + name, k) if x in logged]))
    if "lr" in logged:
        panels.append(("learning rate", ["lr"]))
    return panels[:9]


def curves(ctx: ReportContext) -> Section:
    panels = curve_panels(ctx.history)
    if not panels:
        return Section("Learning curves", note("metrics.jsonl holds no epoch yet: nothing to draw."))
    from matplotlib.ticker import MaxNLocator

    pyplot = plt()
    cols = min(3, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig, axes = pyplot.subplots(rows, cols, figsize=(4.3 * cols, 3.0 * rows), squeeze=False)
    for ax, (title, keys) in zip(axes.flat, panels):
        for key in keys:
            pts = [(r["epoch"], r[key]) for r in ctx.history if isinstance(r.get(key), (int, float))]
            if pts:
                ax.plot(*zip(*pts), marker="o", ms=3, lw=1.5, label=key)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if title == "learning rate" and all(r.get("lr", 1) > 0 for r in ctx.history):
            ax.set_yscale("log")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.tight_layout()
    best = ctx.final.get("best_epoch")
    caption = f"per epoch, from metrics.jsonl; best.pt is epoch {best}" if best else "per epoch, from metrics.jsonl"
    return Section("Learning curves", figure(fig, "learning curves", caption))


# -- the architecture

#: Box colours by kind of layer, as in the course's figures.
KINDS = (("conv", "#4f7fd6"), ("pool", "#4caf7a"), ("linear", "#f08a3c"), ("norm", "#9b6fc9"),
         ("drop", "#b0b7c3"), ("embed", "#d6a24f"), ("lstm", "#c94f6f"), ("gru", "#c94f6f"), ("attention", "#c94f6f"))


def _colour(kind: str) -> str:
    k = kind.lower()
    return next((c for key, c in KINDS if key in k), "#cfd5df")


def boxes_for(rows: list[Any], limit: int = 36) -> list[tuple[str, list[int]]]:
    """``(label, output shape)`` per box: every layer of a small network; for a larger one, each block
    of the top level (or of the first level with several blocks) with the shape it outputs."""
    if len(rows) <= limit:
        return [(r.type, list(r.output_shape)) for r in rows]
    for depth in (1, 2, 3):
        groups: dict[str, Any] = {}
        for r in rows:
            key = ".".join(r.name.split(".")[:depth])
            groups[key] = r  # the block's output: its last layer's, in execution order
        if 3 <= len(groups) <= limit:
            break
    return [(f"{key}\n({r.type})", list(r.output_shape)) for key, r in groups.items()][:limit]


def draw_architecture(rows: list[Any], input_shape: list[int], tokens: bool = False):
    """The network as boxes left to right (wrapping), each labelled with its layer and output shape; a
    box's height grows with its output's spatial size, as in LeNet's figure. A text model's input
    ``(vocabulary, length)`` is drawn as its ``length`` token ids."""
    pyplot = plt()
    first = ("input\n(token ids)", [input_shape[-1]]) if tokens else ("input", list(input_shape))
    boxes = [first] + boxes_for(rows)
    per_row = min(9, len(boxes))
    n_rows = math.ceil(len(boxes) / per_row)
    fig, ax = pyplot.subplots(figsize=(1.45 * per_row, 1.9 * n_rows))
    sizes = [s[-1] if len(s) >= 2 else 1 for _, s in boxes]
    top = max(sizes) or 1
    for i, (label, shape) in enumerate(boxes):
        r, c = divmod(i, per_row)
        h = 0.35 + 0.95 * math.sqrt((shape[-1] if len(shape) >= 2 else 1) / top)
        x, y = c * 1.45, -r * 1.9
        colour = "#e8ebf1" if i == 0 else _colour(label)
        ax.add_patch(pyplot.Rectangle((x, y - h / 2), 1.0, h, facecolor=colour, edgecolor="#2b3140", lw=0.8))
        ax.text(x + 0.5, y + h / 2 + 0.08, label, ha="center", va="bottom", fontsize=6.5)
        ax.text(x + 0.5, y - h / 2 - 0.08, "x".join(map(str, shape)), ha="center", va="top", fontsize=6.5,
                color="#39414f")
        if c < per_row - 1 and i < len(boxes) - 1:
            ax.annotate("", xy=(x + 1.42, y), xytext=(x + 1.03, y),
                        arrowprops={"arrowstyle": "->", "lw": 0.8, "color": "#2b3140"})
    ax.set_xlim(-0.2, per_row * 1.45)
    ax.set_ylim(-(n_rows - 1) * 1.9 - 1.2, 1.2)
    ax.axis("off")
    return fig


def architecture(ctx: ReportContext) -> Section:
    from cnnkit.summary import summarize

    shape = list(ctx.info["input_shape"])
    try:
        s = summarize(ctx.model, tuple(shape))
    except Exception as e:  # a model the walker cannot trace: say so, keep the rest of the report
        return Section("Architecture", note(f"the per-layer walk failed on this model: {e}"))
    rows = [(r.name, r.type, "x".join(map(str, r.output_shape)), r.params, r.macs,
             "-" if r.receptive_field is None else "x".join(map(str, r.receptive_field))
             if isinstance(r.receptive_field, list) else r.receptive_field) for r in s.layers]
    body = figure(draw_architecture(s.layers, shape, s.tokens), "the network drawn layer by layer",
                  "each box is a layer (or a block of a large network) with the shape it outputs")
    layers = table(("layer", "type", "output", "params", "MACs", "receptive field"), rows, id="layers",
                   numeric_from=3, caption=f"{s.total_params:,} parameters ({s.trainable_params:,} trainable), "
                                           f"{s.total_macs:,} multiply-accumulates per input")
    if len(rows) > 30:  # a deep network's table is there to search, not to scroll past
        layers = f"<details><summary>the {len(rows)} layers, one by one</summary>{layers}</details>"
    return Section("Architecture", body + layers)


def config(ctx: ReportContext) -> Section:
    text = yaml.safe_dump(ctx.raw_config, sort_keys=False, default_flow_style=None, width=100)
    return Section("Configuration", pre(text), notes=[f"the run's config.yaml: `cnnkit train "
                                                      f"{ctx.path / 'config.yaml'}` trains it again"])


__all__ = ["architecture", "config", "curve_panels", "curves", "draw_architecture", "overview"]
