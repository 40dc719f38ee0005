"""The report pages of the vision tasks: detection and instance segmentation (predicted boxes drawn next to
the true ones, AP per class) and semantic segmentation (masks overlaid, IoU and Dice per class, the worst
images).

The scores are computed once, from the outputs the report already has (``ctx.outputs``), with the task's
own metric definitions (``per_class_metric``, ``scored``/``truth``, ``scores_from_confusion``): the same
figures as ``cnnkit eval``, without a second pass of the model over the held-out images.
"""

from __future__ import annotations

from typing import Any, Iterator

import numpy as np
import torch

from cnnkit.tools.report.common import plt
from cnnkit.tools.report.context import ReportContext
from cnnkit.tools.report.html import Section, figure, key_values, note, table
from cnnkit.tools.report.pages import guarded, task_pages
from cnnkit.tools.report.shared import PALETTE, n_scored, show_image, spread

#: Held-out images drawn per gallery.
GALLERY = 6
#: Detections drawn from this score on (``cnnkit predict``'s default ``--conf``), at most MAX_BOXES per image.
CONF = 0.25
MAX_BOXES = 20
TRUTH_COLOUR, PRED_COLOUR = "#1a9641", "#d7191c"


def items(ctx: ReportContext, chosen: list[int]) -> Iterator[tuple[int, Any, Any, Any]]:
    """``(index, input, output, target)`` of the scored held-out items at the indices ``chosen`` (ascending)."""
    wanted, start = set(chosen), 0
    for x, out, y in ctx.outputs:
        for j in range(len(y)):
            if start + j in wanted:
                yield start + j, x[j], out[j], y[j]
        start += len(y)


def _grid(n: int, cols: int, side: float):
    pyplot = plt()
    cols = max(1, min(cols, n))
    rows = -(-n // cols)
    fig, axes = pyplot.subplots(rows, cols, figsize=(side * cols, side * rows + 0.6), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    return pyplot, fig, axes


# --------------------------------------------------------------------------- detection, instance


def detection_gallery(ctx: ReportContext) -> Section:
    from matplotlib.patches import Rectangle

    chosen = spread(n_scored(ctx), GALLERY)
    pyplot, fig, axes = _grid(len(chosen), 3, 3.6)
    for ax, (i, x, pred, truth) in zip(axes.flat, items(ctx, chosen)):
        show_image(ax, ctx.denormalise(x[None])[0])
        for (x1, y1, x2, y2), label in zip(truth["boxes"].tolist(), truth["labels"].tolist()):
            ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, ec=TRUTH_COLOUR, lw=2, ls="--"))
            ax.text(x1, y2, ctx.classes[int(label)], fontsize=7, color="white", va="top",
                    bbox=dict(fc=TRUTH_COLOUR, lw=0, pad=1))
        keep = (pred["scores"] >= CONF).nonzero().flatten()[:MAX_BOXES].tolist()
        masks = pred.get("masks")
        for k in keep:
            if masks is not None:  # instance segmentation: the object's mask tinted under its box
                m = (masks[k, 0] if masks.ndim == 4 else masks[k]).numpy() > 0.5
                ax.imshow(np.dstack([np.full(m.shape + (3,), (0.84, 0.1, 0.11)), m * 0.4]))
            x1, y1, x2, y2 = pred["boxes"][k].tolist()
            ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, ec=PRED_COLOUR, lw=1.5))
            ax.text(x1, y1, f"{ctx.classes[int(pred['labels'][k])]} {float(pred['scores'][k]):.2f}", fontsize=7,
                    color="white", va="bottom", bbox=dict(fc=PRED_COLOUR, lw=0, pad=1))
        ax.set_title(f"held-out image {i + 1}: {len(truth['labels'])} true, {len(keep)} found", fontsize=8)
    handles = [pyplot.Line2D([], [], color=TRUTH_COLOUR, lw=2, ls="--"), pyplot.Line2D([], [], color=PRED_COLOUR, lw=2)]
    fig.legend(handles, ["true box (class)", f"predicted box (class, score >= {CONF})"], loc="lower center", ncol=2,
               fontsize=9)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    caption = f"{len(chosen)} of {n_scored(ctx)} held-out images, spread over the split"
    return Section("Detections", figure(fig, "held-out images with true and predicted boxes", caption),
                   id="detections")


def detection_scores(ctx: ReportContext) -> Section:
    """AP@.5 per class (box AP for detection, mask AP for instance) by the task's ``per_class_metric``."""
    task = ctx.info["task"]
    metric = task.per_class_metric()
    n_boxes = 0
    for _, preds, targets in ctx.outputs:
        metric.update(task.scored(preds), task.truth(targets))
        n_boxes += sum(len(t["labels"]) for t in targets)
    r = metric.compute()
    ap = dict(zip(r["classes"].reshape(-1).tolist(), r["map_per_class"].reshape(-1).tolist()))
    kind = "mask" if ctx.task_name == "instance" else "box"
    rows = [[name, round(ap[i], 4) if i in ap and ap[i] >= 0 else None] for i, name in enumerate(ctx.classes)]
    final = [(k, ctx.final[k]) for k in (f"val_{m}" for m in task.metric_names) if k in ctx.final]
    body = key_values(final, id="detection-metrics") if final else note("final.json holds no mAP yet")
    body += table(["class", f"{kind} AP@.5"], rows, id="per-class-ap",
                  caption=f"on the {n_scored(ctx)} held-out images drawn from ({n_boxes} true objects); "
                          f"'-': a class with no true and no predicted object")
    return Section("Average precision per class", body, id="per-class-ap-section")


@task_pages("detection", "instance")
def detection_pages(ctx: ReportContext) -> list[Section]:
    if n_scored(ctx) == 0:
        return [Section("Detections", note("the run has no held-out image"), id="detections")]
    return (guarded("Detections", lambda: detection_gallery(ctx), ctx.strict)
            + guarded("Average precision per class", lambda: detection_scores(ctx), ctx.strict))


# --------------------------------------------------------------------------- segmentation


def class_colours(k: int) -> np.ndarray:
    """RGB in [0, 1] per class; class 0 (the background) is not tinted, as ``predict --save`` draws it."""
    from matplotlib.colors import to_rgb

    return np.asarray([(0.0, 0.0, 0.0)] + [to_rgb(PALETTE[(c - 1) % len(PALETTE)]) for c in range(1, k)])


def overlay_mask(image: np.ndarray, mask: np.ndarray, colours: np.ndarray, alpha: float = 0.65) -> np.ndarray:
    """``image`` (H, W, 3) in [0, 1], made grey (a colourful image would hide the tints), with each
    non-background class tinted in its colour."""
    rgb = np.repeat(image.mean(axis=-1, keepdims=True), 3, axis=-1)
    tinted = (mask > 0) & (mask < len(colours))
    rgb[tinted] = (1 - alpha) * rgb[tinted] + alpha * colours[mask[tinted]]
    return rgb


def image_iou(pred: np.ndarray, truth: np.ndarray, k: int) -> float:
    """The mean IoU of one image over the classes in its truth or its prediction (ignored pixels left out)."""
    from cnnkit.tasks.segmentation import IGNORE

    valid = truth != IGNORE
    p, t = pred[valid], truth[valid]
    ious = [np.sum((p == c) & (t == c)) / np.sum((p == c) | (t == c)) for c in range(k) if np.any((p == c) | (t == c))]
    return float(np.mean(ious)) if ious else 1.0


def _masks(ctx: ReportContext) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per scored image its predicted mask (argmax of the task's ``segment``, at the image's own size) and
    its true one."""
    preds, truths = [], []
    for _, logits, masks in ctx.outputs:
        truths += list(masks.numpy())
        preds += list(logits.argmax(1).numpy())
    return preds, truths


def mask_gallery(ctx: ReportContext, chosen: list[int], ious: list[float], title: str, id: str, caption: str) -> Section:
    k = len(ctx.classes)
    colours = class_colours(k)
    pyplot, fig, axes = _grid(3 * len(chosen), 3, 2.6)
    axes = axes.reshape(len(chosen), 3)
    order = {i: n for n, i in enumerate(chosen)}
    for i, x, logits, truth in items(ctx, sorted(chosen)):
        row = axes[order[i]]
        image = ctx.denormalise(x[None])[0]
        base = np.repeat(image, 3, axis=-1) if image.shape[-1] == 1 else image
        pred, truth = logits.argmax(0).numpy(), truth.numpy()
        row[0].imshow(base)
        row[0].set_title(f"image {i + 1}", fontsize=8)
        row[1].imshow(overlay_mask(base, truth, colours))
        row[1].set_title("truth", fontsize=8)
        row[2].imshow(overlay_mask(base, pred, colours))
        row[2].set_title(f"prediction (IoU {ious[i]:.2f})", fontsize=8)
    from matplotlib.patches import Patch

    handles = [Patch(color=colours[c], label=ctx.classes[c]) for c in range(1, k)]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 6) or 1, fontsize=8,
               title=f"{ctx.classes[0]} (class 0) is not tinted")
    fig.tight_layout(rect=(0, 0.06 + 0.02 * ((k - 2) // 6), 1, 1))
    return Section(title, figure(fig, title, caption), id=id)


def segmentation_scores(ctx: ReportContext, preds: list[np.ndarray], truths: list[np.ndarray]) -> Section:
    """Pixel accuracy, mean IoU, foreground Dice and IoU / Dice per class by the task's own
    ``scores_from_confusion`` on the confusion matrix of the scored images' pixels."""
    from cnnkit.tasks.segmentation import IGNORE, scores_from_confusion

    k = len(ctx.classes)
    cm = np.zeros((k, k), dtype=np.int64)
    for p, t in zip(preds, truths):
        valid = t != IGNORE
        cm += np.bincount(t[valid].astype(np.int64) * k + p[valid], minlength=k * k).reshape(k, k)
    s = scores_from_confusion(torch.from_numpy(cm).double(), ctx.classes)
    rows = [[c, s["per_class"][c]["iou"], s["per_class"][c]["dice"], int(cm[i].sum()), int(cm[:, i].sum())]
            for i, c in enumerate(ctx.classes)]
    body = key_values([("images", len(preds)), ("pixel accuracy", s["pixel_accuracy"]), ("mean IoU", s["miou"]),
                       ("mean foreground Dice", s["dice"]),
                       *((f"{k_} (final.json)", ctx.final[k_]) for k_ in ("val_miou", "val_dice") if k_ in ctx.final)],
                      id="segmentation-summary")
    body += table(["class", "IoU", "Dice", "true pixels", "predicted pixels"], rows, id="segmentation-per-class",
                  caption="IoU = TP / (TP + FP + FN), Dice = 2 TP / (2 TP + FP + FN); '-': a class in neither")
    return Section("IoU and Dice per class", body, id="segmentation-scores")


@task_pages("segmentation")
def segmentation_pages(ctx: ReportContext) -> list[Section]:
    if n_scored(ctx) == 0:
        return [Section("Masks", note("the run has no held-out image"), id="masks")]
    preds, truths = _masks(ctx)
    k = len(ctx.classes)
    ious = [image_iou(p, t, k) for p, t in zip(preds, truths)]
    sample = spread(len(preds), 4)
    sections = guarded("Masks", lambda: mask_gallery(
        ctx, sample, ious, "Masks", "masks", f"{len(sample)} of {len(preds)} held-out images: the image, its true "
        f"mask, the predicted one (tinted over the image in grey)"), ctx.strict)
    sections += guarded("IoU and Dice per class", lambda: segmentation_scores(ctx, preds, truths), ctx.strict)
    if len(preds) > len(sample):  # else the worst are the images just drawn
        worst = [int(i) for i in np.argsort(ious, kind="stable")[:4]]
        sections += guarded("Worst images by IoU", lambda: mask_gallery(
            ctx, worst, ious, "Worst images by IoU", "worst-masks", "the held-out images of lowest mean IoU (over the "
            "classes in the truth or the prediction)"), ctx.strict)
    return sections


__all__ = ["class_colours", "detection_pages", "image_iou", "overlay_mask", "segmentation_pages"]
