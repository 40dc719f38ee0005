"""The report pages of the sequence tasks: text (n-grams highlighted by how much they pushed the prediction),
timeseries (series drawn in their class's colour) and forecast (forecasts against the held-out truth).

Each draws a few held-out items only (``EXAMPLES``); the tables cover the items ``ctx.outputs`` scored.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from cnnkit.tools.report.common import plt
from cnnkit.tools.report.context import ReportContext
from cnnkit.tools.report.html import Section, esc, figure, note, png, table
from cnnkit.tools.report.pages import guarded, task_pages
from cnnkit.tools.report.shared import (PALETTE, classification_sections, n_scored, pick_examples, predicted_labels,
                                        spread)

#: Held-out sentences / series drawn per page (half of them mistakes when there are some).
EXAMPLES = 6
#: Held-out forecast windows drawn, evenly spread from the first to the last.
FORECAST_WINDOWS = 3


# --------------------------------------------------------------------------- text


def ngram_html(res: dict[str, Any]) -> str:
    """A sentence explained by :func:`cnnkit.explain.text.explain_text` as ``<span class="ngram">`` per token,
    ``--w`` = the size of the token's push over the sentence's largest one: red toward the predicted class,
    blue (class ``against``) away from it; the exact push is in the span's title."""
    scale = max((abs(v) for v in res["token_push"]), default=0.0)
    text, spans = res["text"], res["spans"] or []
    parts, cursor = [], 0
    for i, (piece, push) in enumerate(zip(res["pieces"], res["token_push"])):
        if spans:
            start, end = spans[i]
            parts.append(esc(text[cursor:start]))
            cursor = max(cursor, end)
        elif i:
            parts.append(" ")
        w = abs(push) / scale if scale > 0 else 0.0
        kind = "ngram against" if push < 0 else "ngram"
        parts.append(f'<span class="{kind}" style="--w:{w:.2f}" title="push {push:+.4g}">{esc(piece)}</span>')
    if spans and cursor < len(text):
        parts.append(esc(text[cursor:]))
    return "".join(parts)


def text_examples(ctx: ReportContext) -> Section:
    from cnnkit.explain.text import explain_text

    task, model = ctx.info["task"], ctx.model
    texts = task.eval_split(ctx.held_out).texts  # in the order the loader read them
    true, pred = predicted_labels(ctx)
    rows = []
    method = ""
    for i in pick_examples(true, pred, EXAMPLES):
        res = explain_text(model, task, texts[i], top=0)
        method = res["method_note"]
        p = res["prediction"]
        verdict = "right" if p["label"] == int(true[i]) else "wrong"
        rows.append(f'<p><b>{esc(ctx.classes[int(true[i])])}</b> (true) &rarr; <b>{esc(p["class"])}</b> '
                    f'(p = {p["probability"]:.3f}, {verdict})<br>{ngram_html(res)}</p>')
    if not rows:
        return Section("Highlighted n-grams", note("no held-out text to explain"), id="ngrams")
    intro = (f"<p>{len(rows)} held-out texts, half of them mistakes when there are some. The redder a "
             f"word, the more it pushed toward the predicted class; the bluer, the more it pushed away from it "
             f"(hover a word for its push). Method: "
             f"{esc(method)}.</p>")
    return Section("Highlighted n-grams", intro + "".join(rows), id="ngrams")


@task_pages("text")
def text_pages(ctx: ReportContext) -> list[Section]:
    return guarded("Highlighted n-grams", lambda: text_examples(ctx), ctx.strict) + classification_sections(ctx)


# --------------------------------------------------------------------------- timeseries


def series_examples(ctx: ReportContext) -> Section:
    task = ctx.info["task"]
    true, pred = predicted_labels(ctx)
    x = np.concatenate([inputs.numpy() for inputs, _, _ in ctx.outputs])
    channels = x.shape[1] - int(bool((task.layout or {}).get("mask")))  # the mask channel is not drawn
    chosen = pick_examples(true, pred, EXAMPLES)
    pyplot = plt()
    cols = min(3, len(chosen))
    rows = -(-len(chosen) // cols)
    fig, axes = pyplot.subplots(rows, cols, figsize=(4.2 * cols, 2.4 * rows), squeeze=False, sharex=True)
    for ax, i in zip(axes.flat, chosen):
        colour = PALETTE[int(true[i]) % len(PALETTE)]
        for c in range(channels):
            ax.plot(x[i, c], color=colour, lw=1.2, alpha=1.0 if c == 0 else 0.6)
        wrong = true[i] != pred[i]
        ax.set_title(f"true {ctx.classes[int(true[i])]} · predicted {ctx.classes[int(pred[i])]}", fontsize=9,
                     color="#b00020" if wrong else "black")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(chosen):]:
        ax.set_visible(False)
    handles = [pyplot.Line2D([], [], color=PALETTE[k % len(PALETTE)], lw=2) for k in range(len(ctx.classes))]
    fig.legend(handles, ctx.classes, loc="lower center", ncol=min(len(ctx.classes), 8), fontsize=8,
               title="true class", bbox_to_anchor=(0.5, -0.02 - 0.04 * (len(ctx.classes) > 8)))
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    caption = (f"{len(chosen)} of {len(true)} held-out series (as the model reads them: z-normalised), coloured "
               f"by true class; a red title is a mistake")
    return Section("Held-out series", figure(fig, "held-out series with their classes", caption), id="series")


@task_pages("timeseries")
def timeseries_pages(ctx: ReportContext) -> list[Section]:
    return guarded("Held-out series", lambda: series_examples(ctx), ctx.strict) + classification_sections(ctx)


# --------------------------------------------------------------------------- forecast


def forecast_errors(ctx: ReportContext) -> tuple[np.ndarray, np.ndarray]:
    """``(forecasts, truth)`` (N, T, horizon) of the scored held-out windows, in the series' units."""
    task = ctx.info["task"]
    f = np.concatenate([task.unscale(task.shaped(out).double().numpy()) for _, out, _ in ctx.outputs])
    y = np.concatenate([task.unscale(t.double().numpy()) for _, _, t in ctx.outputs])
    return f, y


def forecast_plots(ctx: ReportContext) -> str:
    """:func:`cnnkit.tasks.forecast.plot_forecast` (``cnnkit predict --plot``'s figure) at a few held-out
    windows: the series up to the window's end, the window's forecast against that truth, and the forecast
    past it."""
    from cnnkit.tasks.forecast import plot_forecast

    task, model, windows = ctx.info["task"], ctx.model, ctx.held_out
    values = windows.values.double().numpy()  # (C, steps), scaled
    tidx, lookback, horizon = list(windows.target_index), windows.lookback, windows.horizon
    target_rows = task.unscale(values[tidx][None])[0]  # (T, steps) in the series' units
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for k, i in enumerate(spread(len(windows), FORECAST_WINDOWS)):
            x, _ = windows[i]
            end = windows.starts[i] + lookback + horizon
            past = task.forecast(model, x[None])[0]
            truth = target_rows[:, end - horizon:end]
            backtest = {t: {"forecast": past[j].tolist(), "truth": truth[j].tolist(),
                            "mae": float(np.abs(past[j] - truth[j]).mean())} for j, t in enumerate(task.targets)}
            future = task.forecast(model, windows.values[None, :, end - lookback:end])[0]
            path = plot_forecast(target_rows[:, :end], task.targets, future, backtest, str(Path(tmp) / f"{k}.png"),
                                 title=f"held-out window {i + 1} of {len(windows)}: steps {end - horizon}-{end - 1}")
            out.append(png(Path(path).read_bytes(), f"forecast at held-out window {i + 1}"))
    return "".join(out)


def forecast_results(ctx: ReportContext) -> Section:
    task = ctx.info["task"]
    f, y = forecast_errors(ctx)
    by_step = np.abs(f - y).mean(axis=(0, 1))
    names = {"": "model", "naive_": "naive (last value held)", "snaive_": "seasonal naive"}
    rows = [[label] + [ctx.final.get(f"val_{prefix}{m}") for m in ("mae", "rmse", "smape", "mase")]
            for prefix, label in names.items() if ctx.final.get(f"val_{prefix}mae") is not None]
    body = ""
    if rows:
        body += table(["forecast", "MAE", "RMSE", "sMAPE %", "MASE"], rows, id="forecast-metrics",
                      caption="final.json: the validation windows, in the series' units; MASE below 1 beats the "
                              "in-sample (seasonal) naive forecast")
    else:
        body += note("final.json holds no validation figures yet (the run has not finished)")
    body += table(["", "all steps", *(f"step {h + 1}" for h in range(len(by_step)))],
                  [["MAE", float(np.abs(f - y).mean()), *(float(v) for v in by_step)]], id="forecast-mae-by-step",
                  caption=f"MAE of the {len(f)} held-out windows scored here, by step ahead")
    body += forecast_plots(ctx)
    horizon = task.horizon
    return Section("Forecasts against the truth",
                   f"<p>Each held-out window of {ctx.held_out.lookback} steps is forecast {horizon} steps ahead. "
                   f"In the figures the dashed line is the window's forecast of steps whose truth is drawn, the "
                   f"blue one the forecast past them.</p>" + body, id="forecast")


@task_pages("forecast")
def forecast_pages(ctx: ReportContext) -> list[Section]:
    if n_scored(ctx) == 0:
        return [Section("Forecasts against the truth", note("the run has no held-out window"), id="forecast")]
    return [forecast_results(ctx)]


__all__ = ["forecast_pages", "ngram_html", "text_pages", "timeseries_pages"]
