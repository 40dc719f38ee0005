"""Runs side by side: what their configs set differently, their final metrics and times, and their
curves on common axes (``cnnkit compare RUN RUN ...``).

Example::

    table = compare_runs(["runs/a", "runs/b"])
    print(format_table(table))
    plot_curves(table, "curves.png")
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from cnnkit.errors import UserError
from cnnkit.runs import RunFolder, read_json

#: Written by the report's robustness section (``cnnkit report``): accuracy per shift in pixels.
ROBUSTNESS_FILE = "robustness.json"

#: Final fields shown after the task's own metrics, when any run has them.
TIMES = ("epochs", "best_epoch", "train_time_s", "end_to_end_s", "n_train", "n_val")
#: Config keys that differ between any two runs and say nothing about the experiment.
IGNORED = ("train.name", "train.runs_dir")


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """A nested mapping as dotted keys: ``{"optim": {"lr": 0.1}}`` -> ``{"optim.lr": 0.1}``; lists stay values."""
    if not isinstance(tree, dict):
        return {prefix: tree}
    out: dict[str, Any] = {}
    for k, v in tree.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, dict) and v:
            out.update(flatten(v, key))
        else:
            out[key] = v
    return out


def compare_runs(paths: Sequence[str | Path]) -> dict[str, Any]:
    """``{"runs": [...], "config_differences": {key: [value per run]}, "metrics": {name: [value per run]},
    "history": [rows per run]}`` for two or more run folders. A run without final.json (still training,
    or stopped) is compared on what it has: its config and its metrics so far."""
    if len(paths) < 2:
        raise UserError(f"compare needs two or more run folders, got {len(paths)}")
    runs = [RunFolder.open(p, need_checkpoint=False) for p in paths]
    configs = [flatten(r.read_config()) for r in runs]
    finals = [r.read_final() if (r.path / "final.json").is_file() else {} for r in runs]
    histories = [r.read_metrics() if (r.path / "metrics.jsonl").is_file() else [] for r in runs]
    keys = sorted(set().union(*configs))
    differences = {k: [c.get(k) for c in configs] for k in keys
                   if k not in IGNORED and len({repr(c.get(k)) for c in configs}) > 1}
    tasks = [f.get("task") or c.get("task", "classification") for f, c in zip(finals, configs)]
    metric_names: list[str] = []
    for f in finals:  # the result's own figures first (val_*), in the order the runs give them
        metric_names += [k for k, v in f.items() if k.startswith("val_") and isinstance(v, (int, float))
                         and not isinstance(v, bool) and k not in metric_names]
    metric_names += [k for k in TIMES if any(k in f for f in finals)]
    metrics = {k: [f.get(k) for f in finals] for k in metric_names}
    shifts = [read_json(r.path / ROBUSTNESS_FILE) if (r.path / ROBUSTNESS_FILE).is_file() else None for r in runs]
    out = {"runs": [str(r.path) for r in runs], "tasks": tasks, "finished": [bool(f) for f in finals],
           "config_differences": differences, "metrics": metrics, "history": histories}
    if any(shifts):  # the report's shift curve (robustness.json): accuracy against pixels moved
        out["shift_accuracy"] = [dict(zip(s["shift_px"], s["accuracy"])) if s else None for s in shifts]
    return out


#: Longest value a text column shows (``--format json`` keeps them whole).
CELL = 32


def _cell(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, list) and len(str(v)) > CELL:
        return f"[{len(v)} items]"
    text = str(v)
    return text if len(text) <= CELL else text[:CELL - 3] + "..."


def format_table(table: dict[str, Any]) -> str:
    """The comparison as text: one column per run (named by folder), the differing config keys, then the
    final metrics and times."""
    names = [Path(r).name for r in table["runs"]]
    rows: list[tuple[str, list[str]]] = [("run", [f"#{i + 1}" for i in range(len(names))])]
    rows += [("task", [str(t) for t in table["tasks"]])]
    if table["config_differences"]:
        rows += [(k, [_cell(v) for v in vals]) for k, vals in table["config_differences"].items()]
    else:
        rows += [("(config)", ["same"] * len(names))]
    rows += [(k, [_cell(v) for v in vals]) for k, vals in table["metrics"].items()]
    curves = table.get("shift_accuracy") or []
    for k in sorted({int(k) for c in curves if c for k in c}):
        rows.append((f"accuracy, shift {k}px", [_cell(c.get(k) if c else None) for c in curves]))
    key_w = max(len(k) for k, _ in rows)
    col_w = [max(8, *(len(r[1][i]) for r in rows)) for i in range(len(names))]
    lines = [f"#{i + 1} {n}" + ("" if done else "  (no final.json yet)")
             for i, (n, done) in enumerate(zip(names, table["finished"]))]
    lines.append("")
    for k, cells in rows:
        lines.append(f"{k:<{key_w}}  " + "  ".join(f"{c:>{w}}" for c, w in zip(cells, col_w)))
    return "\n".join(lines)


def plot_curves(table: dict[str, Any], path: str | Path) -> Path:
    """The runs' curves on common axes, one panel per quantity every run logs per epoch (losses, the
    validation metrics, the learning rate); written atomically as PNG, SVG or PDF."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    from cnnkit.atomic import figure_path, save_figure

    p = figure_path(path, "--save")
    histories = table["history"]
    logged = [set().union(*(row.keys() for row in h)) if h else set() for h in histories]
    common = set.intersection(*logged) if logged else set()
    wanted = ["train_loss", "val_loss"] + sorted(k for k in common if k.startswith("val_") and k != "val_loss")
    panels = [k for k in wanted if k in common] + (["lr"] if "lr" in common else [])
    if not panels:
        raise UserError("these runs log no per-epoch quantity in common (metrics.jsonl); nothing to draw")
    panels = panels[:8] + (["shift"] if table.get("shift_accuracy") else [])
    cols = min(3, len(panels))
    rows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False)
    for ax, key in zip(axes.flat, panels):
        if key == "shift":  # accuracy against pixels moved, from each run's report (course I.C)
            for i, (run, curve) in enumerate(zip(table["runs"], table["shift_accuracy"])):
                if curve:
                    ax.plot([int(k) for k in curve], list(curve.values()), marker="o", ms=3, lw=1.4,
                            color=f"C{i}", label=f"#{i + 1} {Path(run).name}")
            ax.set_title("held-out accuracy vs shift", fontsize=10)
            ax.set_xlabel("shift (pixels)")
            ax.set_ylim(0, 1.02)
            continue
        for i, (run, h) in enumerate(zip(table["runs"], histories)):
            pts = [(row["epoch"], row[key]) for row in h if isinstance(row.get(key), (int, float))]
            if pts:
                ax.plot(*zip(*pts), marker="o", ms=2.5, lw=1.4, color=f"C{i}",  # run i: one colour in every panel
                        label=f"#{i + 1} {Path(run).name}")
        ax.set_title(key, fontsize=10)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if key == "lr":
            ax.set_yscale("log")
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, p)
    plt.close(fig)
    return p
