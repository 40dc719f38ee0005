"""What several task pages draw alike: the confusion matrix with its per-class table, the held-out batches
the pages score (bounded by the report's ``max_items``), and an image tensor as an inlined PNG.

Example::

    report = ctx.info["task"].eval_report(ctx.model, held_out_batches(ctx), ctx.device)
    section = confusion_section(ctx, report["confusion_matrix"], ctx.classes, report["per_class"])
"""

from __future__ import annotations

import io
import math
from typing import Any, Sequence

import numpy as np
import torch

from cnnkit.tools.report.common import plt
from cnnkit.tools.report.context import ReportContext, spread, to_device
from cnnkit.tools.report.html import Section, figure, para, png, table

#: Class colours of every page (truth and prediction of one class share a colour).
PALETTE = ("#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#bfef45", "#469990",
           "#9a6324", "#800000", "#808000", "#000075", "#a9a9a9")


def held_out_batches(ctx: ReportContext) -> list[tuple[Any, Any]]:
    """``(inputs, targets)`` of the batches ``ctx.outputs`` scored, on the run's device: what a page hands to
    the task's ``eval_report``, so that its figures cover the same (bounded) items as the page's pictures."""
    return [(to_device(x, ctx.device), to_device(y, ctx.device)) for x, _, y in ctx.outputs]


def n_scored(ctx: ReportContext) -> int:
    return sum(len(y) for _, _, y in ctx.outputs)


def image_png(image: torch.Tensor, alt: str, caption: str = "") -> str:
    """An image ``(C, H, W)`` in [0, 1] (a torchvision grid, say) as an inlined ``<figure>``, pixel for pixel."""
    from PIL import Image

    # torchvision's save_image rounding, so that a page's image equals the file a command writes
    a = image.detach().float().mul(255).add_(0.5).clamp_(0, 255).to(torch.uint8).cpu().numpy()
    a = a[0] if a.shape[0] == 1 else a.transpose(1, 2, 0)
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(a)).save(buf, format="PNG")
    return png(buf.getvalue(), alt, caption)


def confusion_figure(matrix: np.ndarray, classes: Sequence[str]):
    """A heat map of ``matrix`` (rows: true class, columns: predicted), counts written in the cells
    when there are few enough classes to read them."""
    pyplot = plt()
    k = len(classes)
    side = min(11.0, 2.2 + 0.42 * k)
    fig, ax = pyplot.subplots(figsize=(side, side * 0.86))
    shown = matrix / np.maximum(matrix.sum(1, keepdims=True), 1)  # colour: share of the true class
    im = ax.imshow(shown, cmap="Blues", vmin=0, vmax=1)
    ticks = range(k) if k <= 40 else range(0, k, math.ceil(k / 40))
    ax.set_xticks(list(ticks), [classes[i] for i in ticks], rotation=90 if k > 10 else 0, fontsize=7)
    ax.set_yticks(list(ticks), [classes[i] for i in ticks], fontsize=7)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    if k <= 20:
        for i in range(k):
            for j in range(k):
                if matrix[i, j]:
                    ax.text(j, i, str(matrix[i, j]), ha="center", va="center", fontsize=7,
                            color="white" if shown[i, j] > 0.6 else "#1d2330")
    fig.colorbar(im, ax=ax, fraction=0.046, label="share of the true class")
    fig.tight_layout()
    return fig


def per_class_rows(matrix: np.ndarray, classes: Sequence[str]) -> list[tuple[Any, ...]]:
    """``(class, precision, recall, f1, support)`` per class from a confusion matrix (rows: truth)."""
    tp = np.diag(matrix).astype(float)
    support = matrix.sum(1)
    predicted = matrix.sum(0)
    rows = []
    for c, t, s, p in zip(classes, tp, support, predicted):
        precision = t / p if p else 0.0
        recall = t / s if s else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        rows.append((c, round(precision, 4), round(recall, 4), round(f1, 4), int(s)))
    return rows


def confusion_sections(matrix: np.ndarray, classes: Sequence[str], what: str = "images") -> list[Section]:
    """The confusion matrix (a heat map, and the counts as ``<table id="confusion-matrix">``, rows: true
    class, columns: predicted, each cell's ``data-value`` the count) and the per-class precision, recall
    and F1 (``<table id="per-class">``, then a macro-mean row): every task that classifies shows these."""
    n = int(matrix.sum())
    acc = float(np.trace(matrix)) / max(n, 1)
    head = ("true \\ predicted", *classes)
    counts = table(head, [(c, *map(int, row)) for c, row in zip(classes, matrix)], id="confusion-matrix",
                   caption=f"{n} held-out {what}; rows: true class, columns: predicted")
    body = figure(confusion_figure(matrix, classes), "confusion matrix",
                  f"accuracy {acc:.4f} on {n} held-out {what}; colour: the share of each true class")
    body += f"<details><summary>the counts</summary>{counts}</details>"
    rows = per_class_rows(matrix, classes)
    macro = [round(float(np.mean([r[i] for r in rows])), 4) for i in (1, 2, 3)]
    per_class = table(("class", "precision", "recall", "F1", "support"), rows + [("macro mean", *macro, n)],
                      id="per-class")
    worst = sorted(rows, key=lambda r: r[3])[:3]
    return [Section("Confusion matrix", body, id="confusion"),
            Section("Per-class precision, recall and F1", per_class +
                    para("Weakest classes by F1: " + ", ".join(f"{r[0]} ({r[3]:.3f})" for r in worst) + "."))]


def classification_sections(ctx: ReportContext) -> list[Section]:
    """The confusion sections of a task scored as classification (text, timeseries, video), from the
    outputs the report already has: no second pass over the held-out items."""
    true, pred = predicted_labels(ctx)
    k = len(ctx.classes)
    matrix = np.bincount(true.astype(np.int64) * k + pred, minlength=k * k).reshape(k, k)
    return confusion_sections(matrix, ctx.classes, ctx.info["task"].unit)


def predicted_labels(ctx: ReportContext) -> tuple[np.ndarray, np.ndarray]:
    """``(true, predicted)`` class indices of the scored held-out items (argmax of the outputs)."""
    true = np.concatenate([np.asarray(y).reshape(-1) for _, _, y in ctx.outputs])
    pred = np.concatenate([out.argmax(1).numpy() for _, out, _ in ctx.outputs])
    return true, pred


def pick_examples(true: np.ndarray, pred: np.ndarray, k: int) -> list[int]:
    """Up to ``k`` items to show: half of them mistakes (when there are), the rest right, each group spread
    over the split; in data order."""
    wrong, right = np.flatnonzero(true != pred), np.flatnonzero(true == pred)
    chosen = [int(wrong[i]) for i in spread(len(wrong), min(len(wrong), k // 2))]
    chosen += [int(right[i]) for i in spread(len(right), k - len(chosen))]
    return sorted(chosen)


def show_image(ax, image: np.ndarray) -> None:
    """A displayable image ``(H, W, C)`` in [0, 1] on ``ax``: grey when it has one channel, no ticks."""
    grey = image.shape[-1] == 1
    ax.imshow(image[..., 0] if grey else image, cmap="gray" if grey else None, vmin=0, vmax=1)
    ax.set_xticks([])
    ax.set_yticks([])


__all__ = ["PALETTE", "classification_sections", "confusion_figure", "confusion_sections", "held_out_batches", "image_png", "n_scored",
           "per_class_rows", "pick_examples", "predicted_labels", "show_image", "spread"]
