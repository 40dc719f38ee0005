"""``cnnkit explain text``: why a text CNN put a sentence in its class.

Two methods; every output says which one it used (``"method"``).

``max-over-time`` (Kim's CNN, any model with ``pooled(ids)``)
    Each filter of width k slides over the sentence's k-grams and max-over-time pooling keeps its
    largest response f_j, made by one n-gram (the one that *won* the max). In eval mode (dropout off)
    the logits are ``z = W f + b``, so the **push** of feature j toward class c is ``W[c, j] * f_j``,
    exactly. Filters of the same width that won at the same start are grouped: each winning n-gram
    gets the sum of its filters' pushes. Filters whose value is 0 (the ReLU silenced them on every
    n-gram) push nothing and are counted as ``silent``. The decomposition is exact::

        logit[predicted] = bias[predicted] + sum over winning n-grams of push

    The convention, used everywhere: ``push`` is the contribution to the **predicted class's logit**
    (``push_by_class`` gives it for every class, and the same identity holds for each class with its
    own bias). Since softmax only reads differences of logits, each n-gram also has a ``margin``: its
    contribution to ``logit[predicted] - logit[rival]``, the rival being the runner-up class (for two
    classes, the other one: the margin is then the log-odds of the prediction).
    ``token_push`` spreads each n-gram's push evenly over the tokens it covers (push / number of
    tokens), so ``bias + sum(token_push)`` is the predicted logit too.

``occlusion`` (every other text model: ``char_cnn``, ``dpcnn``, layer lists)
    Each token in turn is replaced by the unknown id (``<unk>``, 1), the others kept in place, and the
    sentence classified again: the token's **push** is the drop of the predicted class's probability,
    ``p(original) - p(token replaced)`` (positive: the token was evidence for the prediction).
    ``token_push`` is that drop; there is no exact decomposition (``bias`` is null).

Example::

    model, task, info = load_text_run("runs/sentiment")
    res = explain_text(model, task, "an utterly charming film", top=5)
    print(render_text(res)); save(res, "why.html")    # or why.png
"""

from __future__ import annotations

import html
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cnnkit.atomic import atomic_write, atomic_write_text
from cnnkit.errors import UserError

METHODS = ("auto", "max-over-time", "occlusion")
SAVE_SUFFIXES = (".html", ".png")
UNK_ID = 1
#: Occluded copies of the sentence classified per forward pass.
OCCLUSION_BATCH = 128

_DESCRIBE = {
    "max-over-time": "max-over-time: each filter keeps the n-gram that gave its largest value; an n-gram's "
                     "push = sum over the filters it won of (filter value x dense weight of the predicted class), "
                     "its contribution to the predicted class's logit (exact: bias + pushes = logit)",
    "occlusion": "occlusion: each token in turn is replaced by <unk> and the sentence classified again; a "
                 "token's push = the drop of the predicted class's probability (positive: evidence for it)",
}

GREEN = (26, 150, 65)
RED = (215, 48, 39)


# --------------------------------------------------------------------------- the run

def load_text_run(source: str | os.PathLike) -> tuple[torch.nn.Module, Any, dict[str, Any]]:
    """``(model, task, info)`` of a text run (folder or checkpoint); any other run is a UserError."""
    meta = Path(source) / "meta.json"
    if meta.is_file():  # say so before loading the weights when the folder tells its task
        import json

        try:
            task_name = json.loads(meta.read_text(encoding="utf-8")).get("task")
        except (OSError, ValueError, AttributeError):
            task_name = None
        if isinstance(task_name, str) and task_name != "text":
            raise _not_text(source, task_name)
    from cnnkit.inference import load_run_model

    model, info = load_run_model(source)
    task = info["task"]
    if getattr(task, "name", None) != "text":
        raise _not_text(source, getattr(task, "name", "unknown"))
    if getattr(task, "tokenizer", None) is None:
        raise UserError(f"{str(source)!r} is a text run without its tokeniser (tokenizer.json / the checkpoint's "
                        f"meta); it cannot read a new sentence")
    return model, task, info


def _not_text(source, task_name: str) -> UserError:
    return UserError(f"explain text needs a text run (task: text); {str(source)!r} is a {task_name} run "
                     f"(task: {task_name})")


# --------------------------------------------------------------------------- the computation

def _read(task: Any, text: str) -> dict[str, Any]:
    """The tokens the model reads: strings, character spans, display pieces, unknowns, truncation."""
    if not isinstance(text, str) or not text.strip():
        raise UserError("the sentence is empty; give a text to explain, e.g. \"an utterly charming film\"")
    tok = task.tokenizer
    if tok is None:
        raise UserError("this run has no tokeniser (it was not trained with task text)")
    ids = tok.encode(text, task.max_length)
    all_tokens = tok.tokens(text)
    if not ids or not all_tokens:
        raise UserError(f"the sentence {text!r} has no token for this run's {tok.kind} tokeniser; give words")
    n = min(len(ids), len(all_tokens))
    tokens = all_tokens[:n]
    spans = [tuple(s) for s in tok.spans(text)]
    aligned = len(spans) == len(all_tokens)
    spans = spans[:n] if aligned else None
    pieces = [text[s:e] if e > s else t for (s, e), t in zip(spans, tokens)] if spans else list(tokens)
    return {"ids": ids[:n], "tokens": tokens, "spans": spans, "pieces": pieces,
            "unknown": [i for i, v in enumerate(ids[:n]) if v == UNK_ID],
            "truncated": len(all_tokens) - n, "max_length": task.max_length}


def _ngram_text(read: dict[str, Any], text: str, start: int, end: int) -> str:
    if read["spans"]:
        return text[read["spans"][start][0]:read["spans"][end - 1][1]]
    return " ".join(read["tokens"][start:end])


def _device(model: torch.nn.Module) -> torch.device:
    return next((p.device for p in model.parameters()), torch.device("cpu"))


def explain_text(model: torch.nn.Module, task: Any, text: str, top: int | None = 5,
                 method: str = "auto") -> dict[str, Any]:
    """Why ``model`` (a text run's network, with its ``task``) classifies ``text`` as it does.

    ``top``: the n-grams kept per width (occlusion: tokens kept), largest ``|push|`` first; ``None``
    or 0 keeps all (``token_push`` and each width's ``total_push`` always count them all).
    ``method``: ``auto`` (max-over-time when the model has ``pooled``, else occlusion),
    ``max-over-time`` or ``occlusion``. Returns a JSON-able dict (see the module's docstring).
    """
    if method not in METHODS:
        raise UserError(f"method {method!r} is not known; allowed: {', '.join(METHODS)}")
    if top is not None and (isinstance(top, bool) or not isinstance(top, int) or top < 0):
        raise UserError(f"top must be an int >= 0 (0: all), got {top!r}")
    has_pooled = callable(getattr(model, "pooled", None)) and isinstance(getattr(model, "fc", None),
                                                                         torch.nn.Linear)
    if method == "max-over-time" and not has_pooled:
        raise UserError(f"method max-over-time needs a model with max-over-time pooling (kim_cnn); "
                        f"{type(model).__name__} has none: use occlusion (the default picks it)")
    if method == "auto":
        method = "max-over-time" if has_pooled else "occlusion"
    read = _read(task, text)
    classes = [str(c) for c in task.classes]
    was_training = model.training
    model.eval()  # dropout off: the decomposition holds only then
    try:
        ids = task.encode_texts([text], _device(model))  # cut and padded as the run's loaders do
        if ids[0, :len(read["ids"])].tolist() != read["ids"]:  # pragma: no cover - a tokeniser out of step
            raise UserError("the run's tokeniser gives different ids for its tokens and for the batch")
        with torch.no_grad():
            logits = model(ids).double()[0]
        probs = torch.softmax(logits, dim=0)
        pred = int(torch.argmax(probs))
        order = torch.argsort(logits, descending=True).tolist()
        rival = next((c for c in order if c != pred), None)
        res: dict[str, Any] = {
            "text": text, "method": method, "method_note": _DESCRIBE[method], "model": type(model).__name__,
            "tokens": read["tokens"], "spans": [list(s) for s in read["spans"]] if read["spans"] else None,
            "pieces": read["pieces"], "unknown": read["unknown"], "truncated": read["truncated"],
            "max_length": read["max_length"], "classes": classes,
            "prediction": {"label": pred, "class": classes[pred], "probability": float(probs[pred])},
            "probabilities": [float(p) for p in probs], "logits": [float(z) for z in logits],
            "rival": None if rival is None else {"label": rival, "class": classes[rival]},
        }
        if method == "max-over-time":
            res.update(_max_over_time(model, ids, read, text, pred, rival, classes, logits, top))
        else:
            res.update(_occlusion(model, ids, read, pred, classes, probs, top))
    finally:
        model.train(was_training)
    return res


@torch.no_grad()
def _max_over_time(model, ids, read, text, pred, rival, classes, logits, top) -> dict[str, Any]:
    n = len(read["tokens"])
    features, starts, widths = model.pooled(ids)
    f = features[0].double()
    starts = starts[0].tolist()
    widths = [int(w) for w in widths.tolist()]
    weight = model.fc.weight.double()
    bias = model.fc.bias.double() if model.fc.bias is not None else torch.zeros(weight.shape[0], dtype=torch.double)
    contrib = (weight * f[None, :]).cpu()  # (C, F): contrib[c, j] = W[c, j] * f_j
    bias = bias.cpu()
    values = f.cpu().tolist()

    groups: dict[tuple[int, int], list[int]] = {}
    silent: dict[int, int] = {}
    count: dict[int, int] = {}
    for j, (k, s) in enumerate(zip(widths, starts)):
        count[k] = count.get(k, 0) + 1
        if values[j] == 0.0:  # the ReLU silenced it: no push, and its argmax is a tie of zeros
            silent[k] = silent.get(k, 0) + 1
            continue
        groups.setdefault((k, int(s)), []).append(j)

    token_push = [0.0] * n
    token_margin = [0.0] * n
    per_width: dict[int, list[dict[str, Any]]] = {k: [] for k in dict.fromkeys(widths)}
    for (k, s), js in groups.items():
        end = min(s + k, n)
        covered = max(end - s, 1)
        by_class = contrib[:, js].sum(dim=1)
        push = float(by_class[pred])
        margin = push - float(by_class[rival]) if rival is not None else push
        for t in range(s, end):
            token_push[t] += push / covered
            token_margin[t] += margin / covered
        per_width[k].append({
            "ngram": _ngram_text(read, text, s, end), "start": s, "end": end, "tokens": read["tokens"][s:end],
            "padded": s + k - end, "filters": len(js), "push": push, "margin": margin,
            "push_by_class": {classes[c]: float(v) for c, v in enumerate(by_class)},
        })
    out_widths = []
    for k, entries in per_width.items():
        entries.sort(key=lambda e: (-abs(e["push"]), e["start"]))
        shown = entries if not top else entries[:top]
        out_widths.append({"width": k, "filters": count[k], "silent": silent.get(k, 0),
                           "ngrams_won": len(entries), "total_push": sum(e["push"] for e in entries),
                           "total_margin": sum(e["margin"] for e in entries),
                           "ngrams": shown, "more": len(entries) - len(shown)})
    b_pred = float(bias[pred])
    total = b_pred + float(contrib[pred].sum())
    return {
        "bias": b_pred, "margin_bias": b_pred - float(bias[rival]) if rival is not None else b_pred,
        "push_unit": "logit", "widths": out_widths, "token_push": token_push, "token_margin": token_margin,
        "check": {"logit": float(logits[pred]), "bias_plus_pushes": total, "error": abs(total - float(logits[pred]))},
    }


@torch.no_grad()
def _occlusion(model, ids, read, pred, classes, probs, top) -> dict[str, Any]:
    n = len(read["tokens"])
    base = float(probs[pred])
    after = torch.empty((n, probs.shape[0]), dtype=torch.double)
    for lo in range(0, n, OCCLUSION_BATCH):
        hi = min(lo + OCCLUSION_BATCH, n)
        batch = ids.repeat(hi - lo, 1)
        rows = torch.arange(hi - lo, device=batch.device)
        batch[rows, rows + lo] = UNK_ID
        after[lo:hi] = torch.softmax(model(batch).double(), dim=1).cpu()
    rows_out, token_push = [], []
    for i in range(n):
        unknown = i in read["unknown"]
        p_after = base if unknown else float(after[i, pred])  # already <unk>: nothing changes
        drop = base - p_after
        now = pred if unknown else int(torch.argmax(after[i]))
        token_push.append(drop)
        rows_out.append({"position": i, "token": read["tokens"][i], "text": read["pieces"][i], "push": drop,
                         "probability_after": p_after, "unknown": unknown,
                         "prediction_after": classes[now], "flips": now != pred})
    rows_out.sort(key=lambda r: (-abs(r["push"]), r["position"]))
    shown = rows_out if not top else rows_out[:top]
    return {"bias": None, "push_unit": "probability", "replacement": "<unk>", "widths": [],
            "occlusion": shown, "more": len(rows_out) - len(shown), "token_push": token_push}


# --------------------------------------------------------------------------- text

def _num(v: float, digits: int = 3) -> str:
    """``+0.123``; a value too small for ``digits`` decimals in scientific notation (``-4.2e-07``)."""
    if v != 0 and abs(v) < 0.5 * 10 ** -digits:
        return f"{v:+.1e}"
    s = f"{v:+.{digits}f}"
    return "+" + s[1:] if s.startswith("-") and float(s) == 0 else s


def _bar(v: float, scale: float, width: int = 16) -> str:
    if scale <= 0 or not math.isfinite(v):
        return ""
    return ("+" if v > 0 else "-") * round(abs(v) / scale * width)


def _shown_piece(piece: str) -> str:
    return piece if piece.strip() else repr(piece)


def _quote(s: str) -> str:
    return '"' + s.replace("\n", " ") + '"'


def render_text(res: dict[str, Any]) -> str:
    """The explanation as a readable report: the prediction, a table per filter width (or the occluded
    tokens), each token's push."""
    pred = res["prediction"]
    lines = [f"explain text: {_quote(res['text'])}", f"model {res['model']}",
             f"method {res['method_note']}", ""]
    toks = " | ".join(_shown_piece(p) for p in res["pieces"])
    lines.append(f"tokens ({len(res['tokens'])}): {toks}")
    if res["unknown"]:
        lines.append(f"  not in the vocabulary (read as <unk>): "
                     f"{', '.join(_quote(res['pieces'][i]) for i in res['unknown'])}")
    if res["truncated"]:
        lines.append(f"  the model reads the first {res['max_length']} tokens: {res['truncated']} cut")
    probs = ", ".join(f"{c} {p:.3f}" for c, p in zip(res["classes"], res["probabilities"]))
    lines.append(f"prediction: {pred['class']} (p = {pred['probability']:.3f}); probabilities: {probs}")
    rival = res["rival"]
    if res["method"] == "max-over-time":
        chk = res["check"]
        lines.append(f"logit of {pred['class']} = bias {_num(res['bias'])} + pushes "
                     f"{_num(chk['bias_plus_pushes'] - res['bias'])} = {chk['bias_plus_pushes']:.4f} "
                     f"(the model says {chk['logit']:.4f})")
        vs = f"vs {rival['class']}" if rival else "margin"
        for w in res["widths"]:
            lines += ["", f"width {w['width']}: {w['filters']} filters, {w['ngrams_won']} winning n-gram"
                          f"{'' if w['ngrams_won'] == 1 else 's'}, {w['silent']} silent (value 0: no push); "
                          f"push in all {_num(w['total_push'])}"]
            if not w["ngrams"]:
                continue
            head = f"  {'push':>8}  {vs:>10}  {'filters':>7}  n-gram (tokens)"
            lines.append(head)
            for e in w["ngrams"]:
                pad = f", {e['padded']} padding" if e["padded"] else ""
                lines.append(f"  {_num(e['push']):>8}  {_num(e['margin']):>10}  {e['filters']:>7}  "
                             f"{_quote(e['ngram'])} ({e['start']}-{e['end'] - 1}{pad})")
            if w["more"]:
                rest = w["total_push"] - sum(e["push"] for e in w["ngrams"])
                lines.append(f"  ... {w['more']} more n-gram{'s' if w['more'] != 1 else ''}, push {_num(rest)} "
                             f"in all")
        if rival:
            lines += ["", f"'vs {rival['class']}': the n-gram's push on logit({pred['class']}) - "
                          f"logit({rival['class']}) (what decides between them)"]
        unit = "each n-gram's push shared evenly by its tokens"
    else:
        lines += ["", f"replacing a token by <unk>: drop of p({pred['class']}) (was {pred['probability']:.3f})",
                  f"  {'push':>8}  {'p after':>8}  token"]
        for r in res["occlusion"]:
            flip = f"  -> now {r['prediction_after']}" if r["flips"] else ""
            unk = "  (already <unk>)" if r["unknown"] else ""
            lines.append(f"  {_num(r['push'], 4):>8}  {r['probability_after']:>8.4f}  "
                         f"{_quote(r['text'])} (position {r['position']}){unk}{flip}")
        if res["more"]:
            lines.append(f"  ... {res['more']} more token{'s' if res['more'] != 1 else ''}")
        unit = "drop of the predicted probability"
    scale = max((abs(v) for v in res["token_push"]), default=0.0)
    lines += ["", f"token push ({unit}; + toward {pred['class']}, - against):"]
    width = min(max((len(_shown_piece(p)) for p in res["pieces"]), default=1), 24)
    for piece, v in zip(res["pieces"], res["token_push"]):
        shown = _shown_piece(piece)
        shown = shown if len(shown) <= 24 else shown[:21] + "..."
        lines.append(f"  {shown:<{width}}  {_num(v, 4)}  {_bar(v, scale)}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- colours, HTML, PNG

def token_colour(value: float, scale: float) -> tuple[int, int, int]:
    """White blended toward green (``value`` > 0: toward the prediction) or red (< 0: against), by
    ``|value| / scale`` (at most 85 %, so the word stays readable)."""
    if scale <= 0 or not math.isfinite(value) or value == 0:
        return (255, 255, 255)
    a = min(abs(value) / scale, 1.0) * 0.85
    base = GREEN if value > 0 else RED
    return tuple(int(round(255 * (1 - a) + c * a)) for c in base)  # type: ignore[return-value]


def _hex(rgb: tuple[int, int, int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def _scale(res: dict[str, Any]) -> float:
    return max((abs(v) for v in res["token_push"]), default=0.0)


_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 60em; color: #222; }
.sentence { font-size: 1.5em; line-height: 2.2; padding: .5em; border: 1px solid #ddd; border-radius: 6px; }
.tok { padding: .1em .2em; border-radius: 4px; border: 1px solid #ccc; white-space: pre-wrap; }
.legend { display: flex; align-items: center; gap: .6em; margin: 1em 0; }
.ramp { width: 16em; height: 1em; border: 1px solid #aaa;
        background: linear-gradient(to right, RED, #ffffff, GREEN); }
table { border-collapse: collapse; margin: .5em 0 1.5em; }
th, td { border: 1px solid #ddd; padding: .25em .6em; text-align: right; }
td.ngram { text-align: left; }
.note { color: #555; font-size: .9em; }
"""


def render_html(res: dict[str, Any]) -> str:
    """A self-contained HTML page: the sentence with its tokens coloured by push, a legend, the tables."""
    e = html.escape
    pred = res["prediction"]
    scale = _scale(res)
    text = res["text"]
    parts = []
    cursor = 0
    spans = res["spans"] or []
    for i, (piece, v) in enumerate(zip(res["pieces"], res["token_push"])):
        if spans:
            s, t = spans[i]
            if s > cursor:
                parts.append(e(text[cursor:s]))
            cursor = max(cursor, t)
        elif i:
            parts.append(" ")
        title = f"{res['tokens'][i]}: push {_num(v, 4)}" + (" (not in the vocabulary)" if i in res["unknown"] else "")
        parts.append(f'<span class="tok" style="background:{_hex(token_colour(v, scale))}" '
                     f'title="{e(title)}">{e(piece)}</span>')
    if spans and cursor < len(text):
        parts.append(f'<span class="note">{e(text[cursor:])}</span>' if res["truncated"] else e(text[cursor:]))
    probs = ", ".join(f"{e(c)} {p:.3f}" for c, p in zip(res["classes"], res["probabilities"]))
    unit = "logit" if res["method"] == "max-over-time" else "probability"
    out = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
           f"<title>cnnkit explain text: {e(pred['class'])}</title>",
           "<style>" + _CSS.replace("RED", _hex(RED)).replace("GREEN", _hex(GREEN)) + "</style>",
           "</head>", "<body>",
           f"<h1>Why &ldquo;{e(pred['class'])}&rdquo;? (p = {pred['probability']:.3f})</h1>",
           f'<p class="sentence">{"".join(parts)}</p>',
           '<div class="legend"><span>against ' + e(pred["class"]) + '</span><span class="ramp"></span>'
           f"<span>toward {e(pred['class'])}</span>"
           f'<span class="note">(colour intensity = token push, {unit}; strongest: {scale:.4g})</span></div>',
           f"<p><b>method</b> {e(res['method_note'])}. Model {e(res['model'])}.</p>",
           f"<p>probabilities: {probs}</p>"]
    if res["truncated"]:
        out.append(f'<p class="note">The model reads the first {res["max_length"]} tokens: {res["truncated"]} '
                   f"cut.</p>")
    if res["unknown"]:
        out.append('<p class="note">Not in the vocabulary (read as &lt;unk&gt;): '
                   + ", ".join(e(_quote(res["pieces"][i])) for i in res["unknown"]) + "</p>")
    if res["method"] == "max-over-time":
        chk = res["check"]
        out.append(f"<p>logit of {e(pred['class'])} = bias {_num(res['bias'])} + pushes "
                   f"{_num(chk['bias_plus_pushes'] - res['bias'])} = {chk['bias_plus_pushes']:.4f} "
                   f"(the model: {chk['logit']:.4f}). Token push = each n-gram's push shared evenly by its "
                   f"tokens.</p>")
        vs = f"vs {res['rival']['class']}" if res["rival"] else "margin"
        for w in res["widths"]:
            out.append(f"<h2>Width {w['width']}</h2><p class=\"note\">{w['filters']} filters, {w['ngrams_won']} "
                       f"winning n-grams, {w['silent']} silent (value 0: no push); push in all "
                       f"{_num(w['total_push'])}{'; ' + str(w['more']) + ' more not shown' if w['more'] else ''}"
                       f"</p>")
            if not w["ngrams"]:
                continue
            out.append(f"<table><tr><th>n-gram</th><th>tokens</th><th>filters</th><th>push</th>"
                       f"<th>{e(vs)}</th></tr>")
            for g in w["ngrams"]:
                bg = _hex(token_colour(g["push"], max(abs(x["push"]) for x in w["ngrams"])))
                out.append(f'<tr><td class="ngram" style="background:{bg}">{e(g["ngram"])}</td>'
                           f"<td>{g['start']}&ndash;{g['end'] - 1}</td><td>{g['filters']}</td>"
                           f"<td>{_num(g['push'])}</td><td>{_num(g['margin'])}</td></tr>")
            out.append("</table>")
    else:
        out.append(f"<h2>Occlusion</h2><p class=\"note\">Each token replaced by &lt;unk&gt;: drop of "
                   f"p({e(pred['class'])}) = {pred['probability']:.4f} minus the new probability.</p>")
        out.append("<table><tr><th>token</th><th>position</th><th>push</th><th>p after</th><th>prediction after"
                   "</th></tr>")
        for r in res["occlusion"]:
            bg = _hex(token_colour(r["push"], scale))
            out.append(f'<tr><td class="ngram" style="background:{bg}">{e(r["text"])}</td><td>{r["position"]}</td>'
                       f"<td>{_num(r['push'], 4)}</td><td>{r['probability_after']:.4f}</td>"
                       f"<td>{e(r['prediction_after'])}</td></tr>")
        out.append("</table>")
    out += ["</body>", "</html>", ""]
    return "\n".join(out)


def save_html(res: dict[str, Any], path: str | os.PathLike) -> str:
    atomic_write_text(path, render_html(res))
    return str(path)


PNG_COLUMNS = 72
PNG_MAX_ROWS = 30


def _layout(pieces: list[str], columns: int) -> list[tuple[int, int, str, int]]:
    """``(index, row, shown, x)`` for each token laid out in rows of ``columns`` characters."""
    out, row, x = [], 0, 0
    for i, p in enumerate(pieces):
        shown = p.replace("\n", " ")
        if not shown.strip():
            shown = "\u2423" * max(1, len(shown))  # a visible space
        shown = shown if len(shown) <= columns else shown[:columns - 1] + "\u2026"
        if x and x + len(shown) > columns:
            row, x = row + 1, 0
        out.append((i, row, shown, x))
        x += len(shown) + 1
    return out


def save_png(res: dict[str, Any], path: str | os.PathLike) -> str:
    """A figure: the tokens as boxes coloured by push, a legend, the strongest n-grams (or tokens)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import LinearSegmentedColormap
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    pred = res["prediction"]
    scale = _scale(res)
    placed = _layout(res["pieces"], PNG_COLUMNS)
    kept = [p for p in placed if p[1] < PNG_MAX_ROWS]
    rows = (kept[-1][1] + 1) if kept else 1
    notes = []
    if res["method"] == "max-over-time":
        for w in res["widths"]:
            best = ", ".join(f"\"{g['ngram']}\" {_num(g['push'], 2)}" for g in w["ngrams"][:3])
            notes.append(f"width {w['width']}: {best or 'no n-gram (all filters silent)'}")
    else:
        best = ", ".join(f"\"{r['text']}\" {_num(r['push'], 3)}" for r in res["occlusion"][:5])
        notes.append(f"largest drops: {best}")
    if res["truncated"]:
        notes.append(f"(the model reads the first {res['max_length']} tokens: {res['truncated']} cut)")
    if len(kept) < len(placed):
        notes.append(f"(the first {len(kept)} of {len(placed)} tokens shown)")
    header = 2
    total = header + rows * 1.6 + 1.8 + len(notes) + 0.5
    unit_x, unit_y = 0.1, 0.3  # inches per character, per line
    fig = Figure(figsize=(PNG_COLUMNS * unit_x + 0.8, total * unit_y), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_axis_off()
    mono = {"family": "monospace", "fontsize": 11}
    ax.text(0, 0.5, f"predicted {pred['class']} (p = {pred['probability']:.3f}) - method: {res['method']}",
            fontsize=12, fontweight="bold", va="center")
    unit = "logit" if res["method"] == "max-over-time" else "probability drop"
    ax.text(0, 1.4, f"token push ({unit}): green toward {pred['class']}, red against", fontsize=9, va="center",
            color="0.3")
    for i, row, shown, x in kept:
        y = header + row * 1.6
        ax.add_patch(Rectangle((x - 0.3, y), len(shown) + 0.6, 1.2, facecolor=_hex(token_colour(res["token_push"][i],
                                                                                                  scale)),
                               edgecolor="0.6", linewidth=0.6))
        ax.text(x + len(shown) / 2, y + 0.62, shown, ha="center", va="center", **mono)
    y = header + rows * 1.6 + 0.4
    cmap = LinearSegmentedColormap.from_list("push", [_hex(token_colour(-1, 1)), "#ffffff", _hex(token_colour(1, 1))])
    ax.imshow(np.linspace(-1, 1, 256)[None, :], extent=(12, 40, y + 1.0, y + 0.2), cmap=cmap, aspect="auto")
    ax.add_patch(Rectangle((12, y + 0.2), 28, 0.8, fill=False, edgecolor="0.5", linewidth=0.6))
    ax.text(11.5, y + 0.6, f"against  {-scale:.3g}", ha="right", va="center", fontsize=9)
    ax.text(40.5, y + 0.6, f"{scale:+.3g}  toward {pred['class']}", ha="left", va="center", fontsize=9)
    for k, note in enumerate(notes):
        ax.text(0, y + 1.8 + k, note, fontsize=9, va="center")
    ax.set_xlim(-0.5, PNG_COLUMNS + 0.3)
    ax.set_ylim(total, -0.3)
    atomic_write(path, lambda f: fig.savefig(f, format="png"))
    return str(path)


def check_save_path(path: str) -> str:
    """The suffix of ``--save`` (.html or .png); anything else is a UserError naming both."""
    suffix = Path(str(path)).suffix.lower()
    if suffix not in SAVE_SUFFIXES:
        raise UserError(f"--save {path!r}: unsupported file type {suffix or '(none)'!r}; use .html (a page with "
                        f"the words highlighted) or .png (a figure)")
    parent = Path(str(path)).parent
    if str(parent) not in ("", ".") and not parent.is_dir():
        raise UserError(f"--save {path!r}: folder {str(parent)!r} does not exist")
    return suffix


def save(res: dict[str, Any], path: str | os.PathLike) -> str:
    """Write the explanation to ``path``: .html (a page) or .png (a figure)."""
    return save_html(res, path) if check_save_path(str(path)) == ".html" else save_png(res, path)


__all__ = ["METHODS", "check_save_path", "explain_text", "load_text_run", "render_html", "render_text", "save",
           "save_html", "save_png", "token_colour"]
