"""The image classification pages: confusion matrix, per-class figures, the most confident mistakes,
Grad-CAM, the first layer's filters, one image's feature maps layer by layer, and robustness to shifts.

Every figure comes from the model's own outputs on the run's held-out images (the task's evaluation
forward pass, test-time augmentation included), so the numbers agree with ``cnnkit eval``.
"""

from __future__ import annotations

import math
from functools import cached_property

import numpy as np
import torch
from torch import nn

from cnnkit.atomic import atomic_write_text
from cnnkit.errors import UserError
from cnnkit.runs import dumps
from cnnkit.tools.compare import ROBUSTNESS_FILE
from cnnkit.tools.report.common import plt
from cnnkit.tools.report.context import ReportContext, spread
from cnnkit.tools.report.html import Section, figure, note, para, table
from cnnkit.tools.report.pages import guarded, task_pages
from cnnkit.tools.report.shared import confusion_sections, show_image

#: Shifts (pixels) of the robustness curve, as in the course's argument for convolutions (I.C).
SHIFTS = tuple(range(7))
#: Held-out images the shift curve scores at most (evenly spaced over the split).
ROBUSTNESS_ITEMS = 2000


class Scored:
    """The held-out predictions, once: logits, predicted and true classes, and the images shown."""

    def __init__(self, ctx: ReportContext) -> None:
        self.ctx = ctx
        xs, logits, ys = zip(*ctx.outputs)
        self.x = torch.cat(xs)
        self.logits = torch.cat(logits).float()
        self.y = torch.cat([torch.as_tensor(y) for y in ys]).long()
        self.prob = torch.softmax(self.logits, 1)
        self.pred = self.prob.argmax(1)

    @cached_property
    def confusion(self) -> np.ndarray:
        k = len(self.ctx.classes)
        return np.bincount((self.y * k + self.pred).numpy(), minlength=k * k).reshape(k, k)


def mistakes(ctx: ReportContext, s: Scored, n: int = 16) -> Section:
    wrong = torch.nonzero(s.pred != s.y).flatten()
    if len(wrong) == 0:
        return Section("Most confident mistakes", para(f"No mistakes on the {len(s.y)} held-out images."))
    conf = s.prob[wrong, s.pred[wrong]]
    order = wrong[conf.argsort(descending=True)][:n]
    images = ctx.denormalise(s.x[order])
    pyplot = plt()
    cols = min(8, len(order))
    rows = math.ceil(len(order) / cols)
    fig, axes = pyplot.subplots(rows, cols, figsize=(1.55 * cols, 1.9 * rows), squeeze=False)
    classes = ctx.classes
    for ax, i, img in zip(axes.flat, order.tolist(), images):
        show_image(ax, img)
        ax.set_title(f"true {classes[s.y[i]]}\npred {classes[s.pred[i]]} {s.prob[i, s.pred[i]]:.2f}", fontsize=7)
    for ax in list(axes.flat)[len(order):]:
        ax.axis("off")
    fig.tight_layout()
    return Section("Most confident mistakes", figure(
        fig, "the most confident mistakes", f"{len(wrong)} of {len(s.y)} held-out images are misclassified; "
        f"these {len(order)} were predicted with the highest probability"))


def gradcam_section(ctx: ReportContext, s: Scored, n: int = 8) -> Section:
    from cnnkit.tools.report.gradcam import gradcam, last_conv, overlay

    model = ctx.model
    name, layer = last_conv(model, s.x[:1].to(ctx.device))
    wrong = torch.nonzero(s.pred != s.y).flatten()
    wrong = wrong[s.prob[wrong, s.pred[wrong]].argsort(descending=True)][: n // 2]  # the confident mistakes
    right, classes_seen = [], set()
    for i in torch.nonzero(s.pred == s.y).flatten().tolist():  # right answers of as many classes as fit
        if int(s.y[i]) not in classes_seen:
            classes_seen.add(int(s.y[i]))
            right.append(i)
        if len(right) == n - len(wrong):
            break
    pick = torch.cat([torch.as_tensor(right, dtype=torch.long), wrong])
    maps = gradcam(model, s.x[pick].to(ctx.device), s.pred[pick], layer).cpu().numpy()
    images = ctx.denormalise(s.x[pick])
    pyplot = plt()
    fig, axes = pyplot.subplots(2, len(pick), figsize=(1.6 * len(pick), 3.5), squeeze=False)
    for j, (i, img, heat) in enumerate(zip(pick.tolist(), images, maps)):
        show_image(axes[0, j], img)
        axes[0, j].set_title(f"true {ctx.classes[s.y[i]]}", fontsize=7)
        axes[1, j].imshow(overlay(img, heat))
        axes[1, j].set_title(f"pred {ctx.classes[s.pred[i]]}", fontsize=7)
        axes[1, j].axis("off")
    fig.tight_layout()
    return Section("Grad-CAM", figure(fig, "Grad-CAM heat maps", f"captum's LayerGradCam at layer {name!r} "
                                      f"(the last convolution with a spatial output), for the predicted class; "
                                      f"red: the regions that raise its score; left: right answers, one per "
                                      f"class, right: the most confident mistakes"))


def first_layer_filters(ctx: ReportContext, limit: int = 32) -> Section:
    conv = next((m for m in ctx.model.modules() if isinstance(m, nn.Conv2d)), None)
    if conv is None:
        return Section("First-layer filters", note("this network has no convolution: its first layer is dense, "
                                                  "one weight per pixel, with no small filter to draw"))
    w = conv.weight.detach().float().cpu()[:limit]
    pyplot = plt()
    cols = min(8, len(w))
    rows = math.ceil(len(w) / cols)
    fig, axes = pyplot.subplots(rows, cols, figsize=(1.1 * cols, 1.1 * rows), squeeze=False)
    rgb = w.shape[1] == 3
    for ax, f in zip(axes.flat, w):
        if rgb:  # the filter as a colour patch, stretched to [0, 1]
            img = f.permute(1, 2, 0).numpy()
            ax.imshow((img - img.min()) / max(float(img.max() - img.min()), 1e-12))
        else:  # the mean over input channels, blue negative, red positive
            m = f.mean(0).numpy()
            lim = max(float(np.abs(m).max()), 1e-12)
            ax.imshow(m, cmap="RdBu_r", vmin=-lim, vmax=lim)
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in list(axes.flat)[len(w):]:
        ax.axis("off")
    fig.tight_layout()
    how = "each stretched to [0, 1] as RGB" if rgb else "blue negative, red positive (mean over input channels)"
    k = "x".join(map(str, conv.kernel_size))
    return Section("First-layer filters", figure(fig, "first-layer filters",
                                                 f"{len(w)} of the first convolution's {conv.out_channels} "
                                                 f"{k} filters, {how}"))


def feature_maps(ctx: ReportContext, s: Scored, per_layer: int = 8, max_layers: int = 8) -> Section:
    """One held-out image through the network: the first channels after each convolution and pooling."""
    model = ctx.model
    names = {m: n for n, m in model.named_modules()}
    kinds = (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)
    caught: list[tuple[str, torch.Tensor]] = []
    hooks = [m.register_forward_hook(lambda mod, _i, out: caught.append((f"{names[mod]} ({type(mod).__name__})",
                                                                           out.detach().cpu())))
             for m in model.modules() if isinstance(m, kinds)]
    try:
        with torch.no_grad():
            model(s.x[:1].to(ctx.device))
    finally:
        for h in hooks:
            h.remove()
    caught = [(n, t[0]) for n, t in caught if t.dim() == 4][:max_layers]
    if not caught:
        return Section("Feature maps", note("this network has no convolution or pooling layer: there is no "
                                            "map of features, only vectors"))
    pyplot = plt()
    cols = per_layer + 1
    fig, axes = pyplot.subplots(len(caught), cols, figsize=(1.05 * cols, 1.15 * len(caught)), squeeze=False)
    image = ctx.denormalise(s.x[:1])[0]
    for r, (name, maps) in enumerate(caught):
        if r == 0:
            show_image(axes[r, 0], image)
        else:
            axes[r, 0].axis("off")
        axes[r, 1].set_title(f"{name} {tuple(maps.shape)}", fontsize=7, loc="left")
        for c in range(per_layer):
            ax = axes[r, c + 1]
            ax.axis("off")
            if c < len(maps):
                ax.imshow(maps[c].numpy(), cmap="viridis")
    fig.tight_layout()
    return Section("Feature maps", figure(fig, "feature maps layer by layer",
                                          f"the first held-out image (class {ctx.classes[s.y[0]]}) through the "
                                          f"network: the first {per_layer} channels after each convolution and "
                                          f"pooling, each on its own colour scale"))


def shift_accuracy(ctx: ReportContext, shifts=SHIFTS) -> list[tuple[int, float]]:
    """Held-out accuracy with every image moved ``k`` pixels (``cnnkit eval --shift k``), per shift."""
    from cnnkit.data.augment import shift_images
    from cnnkit.data.base import TensorData

    data = ctx.held_out
    if len(data) > ROBUSTNESS_ITEMS:  # seven passes over the set: a curve needs fewer images than a score
        data = data.subset(torch.tensor(spread(len(data), ROBUSTNESS_ITEMS)))
    side = min(data.images.shape[-2:])
    task, model = ctx.info["task"], ctx.model
    out = []
    for k in [k for k in shifts if k < side]:
        moved = TensorData(shift_images(data.images, k), data.labels)
        right = total = 0
        with torch.no_grad():
            for x, y in ctx.loader(moved, batch_size=256):
                right += int((task.eval_forward(model, x).argmax(1).cpu() == y.cpu()).sum())
                total += len(y)
        out.append((k, right / max(total, 1)))
    return out


def robustness(ctx: ReportContext) -> Section:
    from cnnkit.data.base import TensorData

    if not isinstance(ctx.held_out, TensorData):
        return Section("Robustness to shifts", note("the shift curve moves images held in memory (mnist5k, "
                                                     "digits, cifar10 ...); this run reads its images from files"))
    curve = shift_accuracy(ctx)
    try:  # for `cnnkit compare`; a run folder the reader cannot write still gets its report
        atomic_write_text(ctx.path / ROBUSTNESS_FILE, dumps({"shift_px": [k for k, _ in curve],
                                                             "accuracy": [a for _, a in curve]}, indent=2) + "\n")
        saved = para(f"Saved as {ROBUSTNESS_FILE} in the run folder: `cnnkit compare` draws it next to other "
                     f"runs'.")
    except (OSError, UserError) as e:
        saved = note(f"{ROBUSTNESS_FILE} could not be saved in the run folder ({e}); the curve is only here")
    pyplot = plt()
    fig, ax = pyplot.subplots(figsize=(5.2, 3.2))
    ax.plot([k for k, _ in curve], [a for _, a in curve], marker="o", lw=1.6, label=ctx.path.name)
    ax.set_xlabel("shift (pixels)")
    ax.set_ylabel("held-out accuracy")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    rows = [(k, round(a, 4)) for k, a in curve]
    n = min(len(ctx.held_out), ROBUSTNESS_ITEMS)
    same = "the same as `cnnkit eval RUN --shift N`" if n == len(ctx.held_out) else \
        f"`cnnkit eval RUN --shift N` scores all {len(ctx.held_out)}"
    body = figure(fig, "accuracy against shift", f"{n} held-out images, image i of them moved right, down, left or "
                  f"up (i mod 4), zeros coming in; {same}")
    body += table(("shift (px)", "accuracy"), rows, id="shift-accuracy")
    body += saved
    return Section("Robustness to shifts", body)


@task_pages("classification")
def classification_pages(ctx: ReportContext) -> list[Section]:
    s = Scored(ctx)
    sections = confusion_sections(s.confusion, ctx.classes)
    for title, make in (("Most confident mistakes", lambda: mistakes(ctx, s)),
                        ("Grad-CAM", lambda: gradcam_section(ctx, s)),
                        ("First-layer filters", lambda: first_layer_filters(ctx)),
                        ("Feature maps", lambda: feature_maps(ctx, s)),
                        ("Robustness to shifts", lambda: robustness(ctx))):
        sections += guarded(title, make, ctx.strict)  # one figure that fails leaves the others drawn
    return sections


__all__ = ["SHIFTS", "classification_pages", "shift_accuracy"]
