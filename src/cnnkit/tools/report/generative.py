"""The report pages of the clip and generative tasks: video (clips as frame strips with their classes),
frames (input, predicted and true frames; the error of each step ahead against copying the last frame),
reconstruction (inputs, noisy inputs, reconstructions) and gan (a grid of generated samples, FID).

A few clips or images are drawn (``CLIPS``, ``IMAGES``); the pictures are made by the commands' own
functions (``cnnkit predict --save``'s frame strip, ``cnnkit generate``'s sampling), so the page shows what
they would write.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from cnnkit.inference import sample_grid
from cnnkit.tools.report.common import plt
from cnnkit.tools.report.context import ReportContext
from cnnkit.tools.report.html import Section, figure, key_values, note, png, table
from cnnkit.tools.report.pages import guarded, task_pages
from cnnkit.tools.report.shared import (classification_sections, held_out_batches, image_png, n_scored,
                                        pick_examples, predicted_labels, spread)

#: Clips drawn per page.
CLIPS = 4
#: Images per row of the reconstruction page.
IMAGES = 8
#: Generated samples: as many as ``cnnkit generate``'s default, from its default seed.
SAMPLES, SEED = 64, 0


def _final(ctx: ReportContext, keys: tuple[str, ...], id: str) -> str:
    pairs = [(k, ctx.final[k]) for k in keys if ctx.final.get(k) is not None]
    return key_values(pairs, id=id) if pairs else note("final.json holds none of these figures yet")


def _clips(ctx: ReportContext, chosen: list[int]) -> list[tuple[int, torch.Tensor, torch.Tensor, torch.Tensor]]:
    """``(index, inputs, outputs, targets)`` of the scored held-out clips at the indices ``chosen``."""
    out, start = [], 0
    for x, o, y in ctx.outputs:
        out += [(i, x[i - start], o[i - start], y[i - start]) for i in chosen if start <= i < start + len(y)]
        start += len(y)
    return out


# --------------------------------------------------------------------------- video


def clip_strips(ctx: ReportContext) -> Section:
    from torchvision.utils import make_grid

    true, pred = predicted_labels(ctx)
    chosen = pick_examples(true, pred, CLIPS)
    pyplot = plt()
    fig, axes = pyplot.subplots(len(chosen), 1, figsize=(10, 1.5 * len(chosen) + 0.3), squeeze=False)
    for ax, (i, clip, _, _) in zip(axes[:, 0], _clips(ctx, chosen)):
        strip = make_grid(clip.float().clamp(0, 1), nrow=len(clip), padding=2, pad_value=1.0)
        ax.imshow(strip.permute(1, 2, 0).numpy())
        ax.axis("off")
        wrong = true[i] != pred[i]
        ax.set_title(f"clip {i + 1}: true {ctx.classes[int(true[i])]} · predicted {ctx.classes[int(pred[i])]}",
                     fontsize=9, color="#b00020" if wrong else "black", loc="left")
    fig.tight_layout()
    caption = (f"{len(chosen)} of {len(true)} held-out clips, frames left to right; half of them mistakes "
               f"when there are some (red title)")
    return Section("Clips", figure(fig, "held-out clips as frame strips", caption), id="clips")


@task_pages("video")
def video_pages(ctx: ReportContext) -> list[Section]:
    if n_scored(ctx) == 0:
        return [Section("Clips", note("the run has no held-out clip"), id="clips")]
    return guarded("Clips", lambda: clip_strips(ctx), ctx.strict) + classification_sections(ctx)


# --------------------------------------------------------------------------- frames


def frame_strips(ctx: ReportContext) -> str:
    """:func:`cnnkit.tasks.frames.save_strip` (``cnnkit predict --save``'s picture) for a few held-out clips."""
    from cnnkit.tasks.frames import save_strip

    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, x, pred, truth in _clips(ctx, spread(n_scored(ctx), CLIPS)):
            path = save_strip(Path(tmp) / f"{i}.png", x.float(), pred.float().clamp(0, 1), truth.float())
            out.append(png(path.read_bytes(), f"held-out clip {i + 1}: inputs, predicted and true frames",
                           f"held-out clip {i + 1}: the input frames (top row), the predicted ones (middle), the "
                           f"true ones (bottom)"))
    return "".join(out)


def error_per_step(ctx: ReportContext) -> str:
    report = ctx.info["task"].eval_report(ctx.model, held_out_batches(ctx), ctx.device)
    model, base = report["mse_per_step"], report["baseline_mse_per_step"]
    steps = list(range(1, len(model) + 1))
    pyplot = plt()
    fig, ax = pyplot.subplots(figsize=(6, 3.2))
    ax.plot(steps, model, marker="o", label="model")
    ax.plot(steps, base, marker="s", ls="--", color="0.4", label="copy the last input frame")
    ax.set_xlabel("step ahead")
    ax.set_ylabel("MSE per pixel")
    ax.set_xticks(steps)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    rows = [["model", *model], ["copy last frame", *base]]
    return (figure(fig, "MSE of each step ahead", f"on the {n_scored(ctx)} held-out clips scored here")
            + table(["", *(f"step {s}" for s in steps)], rows, id="mse-per-step"))


@task_pages("frames")
def frames_pages(ctx: ReportContext) -> list[Section]:
    if n_scored(ctx) == 0:
        return [Section("Predicted frames", note("the run has no held-out clip"), id="predicted-frames")]
    figures = _final(ctx, ("val_mse", "val_psnr", "val_ssim", "val_baseline_mse", "val_baseline_psnr",
                           "val_blank_mse"), "frames-metrics")
    return (guarded("Predicted frames", lambda: Section("Predicted frames", frame_strips(ctx), id="predicted-frames"),
                    ctx.strict)
            + guarded("Error per step ahead", lambda: Section("Error per step ahead", figures + error_per_step(ctx),
                                                              id="mse-per-step-section"), ctx.strict))


# --------------------------------------------------------------------------- reconstruction, gan


def reconstructions(ctx: ReportContext) -> Section:
    """The first held-out images, corrupted as validation corrupts them (``train.denoise``), reconstructed."""
    from torchvision.utils import make_grid

    task, model = ctx.info["task"], ctx.model
    x, _ = next(iter(ctx.loader(batch_size=IMAGES)))
    x = x.float()
    x_in = task.corrupt(x, task.val_generator())
    with torch.no_grad():
        out, _ = task.reconstruct(model, x_in, x)
    rows = [x] + ([x_in] if task.denoise is not None else []) + [out.float()]
    grid = make_grid(torch.cat(rows).clamp(0, 1).cpu(), nrow=len(x), padding=2, pad_value=1.0)
    what = "input, noisy input (the model's), reconstruction" if task.denoise is not None else "input, reconstruction"
    body = image_png(grid, "held-out images and their reconstructions", f"rows: {what}; {len(x)} held-out images")
    body += _final(ctx, ("val_mse", "val_psnr", "val_ssim", "val_noisy_psnr"), "reconstruction-metrics")
    return Section("Reconstructions", body, id="reconstructions")


@task_pages("reconstruction")
def reconstruction_pages(ctx: ReportContext) -> list[Section]:
    sections = [reconstructions(ctx)]
    if callable(getattr(ctx.model, "sample", None)):  # a VAE: its decoder on N(0, I) codes
        sections.append(Section("Samples", image_png(sample_grid(ctx.model, False, SAMPLES, SEED), "VAE samples",
                                                     f"{SAMPLES} decoded N(0, I) codes, seed {SEED}: the grid of "
                                                     f"'cnnkit generate RUN --seed {SEED}'"), id="samples"))
    return sections


@task_pages("gan")
def gan_pages(ctx: ReportContext) -> list[Section]:
    grid = image_png(sample_grid(ctx.model, True, SAMPLES, SEED), "generated samples",
                     f"{SAMPLES} samples from the noise of seed {SEED}: the grid of 'cnnkit generate RUN --seed {SEED}'")
    fid = _final(ctx, ("fid", "fid_real", "fid_n", "fid_features"), "gan-fid")
    ratio = ""
    if ctx.final.get("fid") is not None and ctx.final.get("fid_real"):
        ratio = (f"<p>FID {ctx.final['fid']:.4g} against {ctx.final['fid_real']:.4g} between two halves of the real "
                 f"validation images (the floor at this sample size): {ctx.final['fid'] / ctx.final['fid_real']:.3g} "
                 f"times the floor.</p>")
    return [Section("Generated samples", grid, id="samples"), Section("FID", ratio + fid, id="fid")]


__all__ = ["frames_pages", "gan_pages", "reconstruction_pages", "video_pages"]
