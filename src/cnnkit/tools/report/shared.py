"""What several task pages draw alike: the confusion matrix with its per-class table, the held-out batches
the pages score (bounded by the report's ``max_items``), and an image tensor as an inlined PNG.

Example::

    report = ctx.info["task"].eval_report(ctx.model, held_out_batches(ctx), ctx.device)
    section = confusion_section(ctx, report["confusion_matrix"], ctx.classes, report["per_class"])
"""

from __future__ import annotations

import io
from typing import Any, Sequence

import numpy as np
import torch

from cnnkit.tools.report.common import plt
from cnnkit.tools.report.context import ReportContext
from cnnkit.tools.report.html import Section, figure, png, table

#: Class colours of every page (truth and prediction of one class share a colour).
PALETTE = ("#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#bfef45", "#469990",
           "#9a6324", "#800000", "#808000", "#000075", "#a9a9a9")
#: Above this many classes the heat map's cells carry no numbers (they would not fit); the table has them.
ANNOTATE_UP_TO = 20


def to_device(value: Any, device: torch.device) -> Any:
    """Tensors (also inside lists, tuples and dicts) moved to ``device``; anything else as it is."""
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, dict):
        return {k: to_device(v, device) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(to_device(v, device) for v in value)
    return value


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


def confusion_section(ctx: ReportContext, matrix: Sequence[Sequence[int]], classes: Sequence[str],
                      per_class: dict[str, dict[str, Any]]) -> Section:
    """The "Confusion matrix" section: a heat map, the counts as ``<table id="confusion-matrix">`` (rows: the
    true class, columns: the predicted one; each cell's ``data-value`` the count) and the per-class table
    ``<table id="per-class">`` of ``per_class`` (``{class: {"precision", "recall", "f1", "support"}}``, as
    the classification tasks' ``eval_report`` gives it)."""
    m = np.asarray(matrix, dtype=np.int64)
    k = len(classes)
    pyplot = plt()
    side = min(2.0 + 0.55 * k, 12.0)
    fig, ax = pyplot.subplots(figsize=(side + 1.2, side))
    shown = m / np.maximum(m.sum(1, keepdims=True), 1)  # colour by the share of each true class: rare ones show
    im = ax.imshow(shown, cmap="Blues", vmin=0, vmax=1)
    if k <= ANNOTATE_UP_TO:
        for i in range(k):
            for j in range(k):
                ax.text(j, i, str(m[i, j]), ha="center", va="center", fontsize=8,
                        color="white" if shown[i, j] > 0.6 else "black")
    labels = [str(c)[:14] for c in classes]
    ax.set_xticks(range(k), labels, rotation=45 if k > 4 else 0, ha="right" if k > 4 else "center", fontsize=8)
    ax.set_yticks(range(k), labels, fontsize=8)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    unit = ctx.info["task"].unit
    caption = (f"{int(m.sum())} held-out {unit}; colour: the share of each row (true class), numbers: counts")
    body = figure(fig, "confusion matrix", caption)
    body += table(["true \\ predicted", *classes], [[c, *(int(v) for v in row)] for c, row in zip(classes, m)],
                  id="confusion-matrix", caption="rows: true, columns: predicted")
    rows = [[c, per_class[c]["precision"], per_class[c]["recall"], per_class[c]["f1"], per_class[c]["support"]]
            for c in classes if c in per_class]
    body += table(["class", "precision", "recall", "F1", "support"], rows, id="per-class")
    return Section("Confusion matrix", body, id="confusion")


def classification_sections(ctx: ReportContext) -> list[Section]:
    """The confusion section of a task scored as classification is (text, timeseries, video): its
    ``eval_report`` on the held-out batches the report scored."""
    report = ctx.info["task"].eval_report(ctx.model, held_out_batches(ctx), ctx.device)
    return [confusion_section(ctx, report["confusion_matrix"], ctx.classes, report["per_class"])]


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


def spread(n: int, k: int) -> list[int]:
    """``k`` indices spread evenly over ``range(n)`` (all of them when ``n <= k``): a sample that a split
    sorted by class does not fill with its first class."""
    if n <= k:
        return list(range(n))
    return sorted({int(round(v)) for v in np.linspace(0, n - 1, k)})


__all__ = ["PALETTE", "classification_sections", "confusion_section", "held_out_batches", "image_png", "n_scored",
           "pick_examples", "predicted_labels", "spread", "to_device"]
