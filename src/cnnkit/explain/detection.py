"""Object detection explained step by step: IoU (and GIoU, DIoU, CIoU), then non-maximum suppression.

A detector answers with many boxes ``(x1, y1, x2, y2)`` (top-left then bottom-right corner,
in image coordinates: y grows downwards), each with a score and a class. Two questions
come back again and again in the course:

* how much do two boxes overlap? The *intersection over union* (IoU, Jaccard index):
  the area they share divided by the area they cover together. It is 1 for the same box,
  0 for boxes that do not touch. :func:`explain_iou` writes out every step, and the three
  variants used as regression losses: GIoU (penalises the empty part of the smallest box
  enclosing both, so disjoint boxes still get a signal), DIoU (penalises the distance between
  the centres) and CIoU (adds a term for the difference of aspect ratios);
* which boxes do we keep when several of them fire on the same object? *Non-maximum
  suppression* (NMS): keep the best-scored box, suppress every other box overlapping it by
  more than a threshold, repeat with what is left. :func:`explain_nms` walks it round by round,
  optionally per class (batched NMS: boxes of different classes never suppress each other).

Every number is computed by hand in plain Python, so that each step can be printed with
its numbers; the tests check them against ``torchvision.ops`` (``box_iou``,
``generalized_box_iou``, ``distance_box_iou``, ``complete_box_iou``, ``nms``, ``batched_nms``).

Example::

    >>> r = explain_iou((1, 1, 6, 5), (3, 2, 8, 7))
    >>> r["intersection"]["area"], r["union"], r["iou"]
    (9.0, 36.0, 0.25)
    >>> explain_nms(course_boxes(), iou_threshold=0.5)["kept"]
    [0, 3, 2]
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

from cnnkit.errors import UserError, did_you_mean
from cnnkit.explain.ops import fmt_num

VARIANTS = ("iou", "giou", "diou", "ciou")
_NAMES = {"iou": "IoU", "giou": "GIoU", "diou": "DIoU", "ciou": "CIoU"}

# The worked IoU example: two overlapping boxes with integer corners, whose IoU is exactly 1/4.
COURSE_BOX_A = (1.0, 1.0, 6.0, 5.0)
COURSE_BOX_B = (3.0, 2.0, 8.0, 7.0)

# The worked NMS example: two objects (a cat, class 0, on the left; a dog, class 1, on the right)
# and six detections. Boxes 0 and 1 fire on the cat, 3 and 4 on the dog; box 2 is a weaker "cat"
# half-way between them; box 5 says "cat" where the dog is: plain NMS suppresses it (it overlaps
# box 3 a lot), per-class NMS keeps it (no better "cat" box overlaps it).
COURSE_NMS_BOXES = (
    {"box": [12, 10, 52, 50], "score": 0.90, "class": 0},
    {"box": [10, 14, 48, 54], "score": 0.75, "class": 0},
    {"box": [28, 22, 68, 60], "score": 0.60, "class": 0},
    {"box": [62, 20, 100, 72], "score": 0.85, "class": 1},
    {"box": [58, 24, 98, 70], "score": 0.80, "class": 1},
    {"box": [60, 22, 98, 70], "score": 0.50, "class": 0},
)

_BOX_HELP = '"x1 y1 x2 y2" (top-left then bottom-right corner, e.g. "1 1 6 5")'
_BOXES_FILE_HELP = 'a list of {"box": [x1, y1, x2, y2], "score": s, "class": c}'
_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")


# --------------------------------------------------------------------------- parsing and checks

def check_box(box, what: str) -> tuple[float, float, float, float]:
    """Four finite numbers with x2 > x1 and y2 > y1, else a UserError naming ``what``.

    A box with x2 <= x1 (or y2 <= y1) has no area: its IoU would divide by zero, and it usually
    means the corners were given in another order (x, y, w, h or centre format).
    """
    if isinstance(box, (str, bytes)) or not hasattr(box, "__len__") or len(box) != 4:
        raise UserError(f"{what}: a box needs 4 numbers {_BOX_HELP}, got {box!r}")
    vals = []
    for v in box:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise UserError(f"{what}: {v!r} in {list(box)!r} is not a finite number; a box is {_BOX_HELP}")
        vals.append(float(v))
    x1, y1, x2, y2 = vals
    if x2 <= x1:
        raise UserError(f"{what}: x2 = {fmt_num(x2)} must be greater than x1 = {fmt_num(x1)} in "
                        f"{_box_text(vals)}; a box is {_BOX_HELP}")
    if y2 <= y1:
        raise UserError(f"{what}: y2 = {fmt_num(y2)} must be greater than y1 = {fmt_num(y1)} in "
                        f"{_box_text(vals)}; a box is {_BOX_HELP}")
    return (x1, y1, x2, y2)


def parse_box(text: str, what: str = "--a") -> tuple[float, float, float, float]:
    """``"1 1 6 5"`` (spaces or commas, optional brackets) -> ``(1.0, 1.0, 6.0, 5.0)``, checked."""
    if text is None or not str(text).strip():
        raise UserError(f"{what}: empty box; write {_BOX_HELP}")
    body = str(text).strip()
    if body[:1] in "[(" and body[-1:] in "])":
        body = body[1:-1]
    toks = [t for t in re.split(r"[\s,]+", body.strip()) if t]
    for t in toks:
        if not _NUMBER.match(t):
            raise UserError(f"{what} {text!r}: {t!r} is not a number; write {_BOX_HELP}")
    if len(toks) != 4:
        raise UserError(f"{what} {text!r}: a box needs 4 numbers {_BOX_HELP}, got {len(toks)}")
    return check_box([float(t) for t in toks], f"{what} {text!r}")


def parse_threshold(value, flag: str) -> float:
    """A threshold in [0, 1] (``"0.5"`` or 0.5), else a UserError naming ``flag``."""
    if isinstance(value, str):
        if not _NUMBER.match(value.strip()):
            raise UserError(f"{flag} {value!r} is not a number; use a number between 0 and 1, e.g. 0.5")
        v = float(value)
    else:
        v = float(value)
    if not (0.0 <= v <= 1.0):
        raise UserError(f"{flag} {value!r} is not allowed; use a number between 0 and 1, e.g. 0.5")
    return v


def _check_entry(i: int, entry: Any, where: str) -> dict[str, Any]:
    if not isinstance(entry, dict):
        raise UserError(f"{where}: entry {i} is {type(entry).__name__} {entry!r}; each entry is "
                        f'{{"box": [x1, y1, x2, y2], "score": s, "class": c}}')
    unknown = sorted(set(entry) - {"box", "score", "class"})
    if unknown:
        raise UserError(f"{where}: entry {i} has unknown key {unknown[0]!r}"
                        f"{did_you_mean(unknown[0], ('box', 'score', 'class'))}; allowed: box, score, class")
    for key in ("box", "score"):
        if key not in entry:
            raise UserError(f"{where}: entry {i} has no {key!r}; each entry is "
                            f'{{"box": [x1, y1, x2, y2], "score": s, "class": c}} ("class" may be left out)')
    box = check_box(entry["box"], f"{where}: entry {i} 'box'")
    s = entry["score"]
    if isinstance(s, bool) or not isinstance(s, (int, float)) or not math.isfinite(s):
        raise UserError(f"{where}: entry {i} 'score' {s!r} is not a finite number")
    c = entry.get("class", 0)
    if isinstance(c, bool) or not isinstance(c, (int, str)):
        raise UserError(f"{where}: entry {i} 'class' {c!r} is not allowed; use an int or a name (a string)")
    return {"box": box, "score": float(s), "class": c}


def check_boxes(entries: Any, where: str = "boxes") -> list[dict[str, Any]]:
    """Validate a list of ``{"box", "score", "class"}`` dicts (class optional, default 0)."""
    if isinstance(entries, dict) and set(entries) == {"boxes"}:
        entries = entries["boxes"]
    if not isinstance(entries, (list, tuple)):
        raise UserError(f"{where} must hold {_BOXES_FILE_HELP}, got {type(entries).__name__}")
    out = [_check_entry(i, e, where) for i, e in enumerate(entries)]
    kinds = {type(e["class"]) for e in out}
    if len(kinds) > 1:
        raise UserError(f"{where}: the classes mix ints and names; use one or the other")
    return out


def load_boxes(path: str, flag: str = "--boxes") -> list[dict[str, Any]]:
    """Read and check a boxes JSON file: :data:`_BOXES_FILE_HELP`."""
    p = Path(str(path))
    if not p.is_file():
        raise UserError(f"{flag} {str(path)!r}: {'is a folder' if p.is_dir() else 'file not found'}; "
                        f"give a JSON file with {_BOXES_FILE_HELP}")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise UserError(f"{flag} {str(path)!r} is not a UTF-8 text file; give a JSON file with "
                        f"{_BOXES_FILE_HELP}") from None
    except json.JSONDecodeError as e:
        raise UserError(f"{flag} {str(path)!r} is not valid JSON ({e.msg} at line {e.lineno} column {e.colno}); "
                        f"it must hold {_BOXES_FILE_HELP}") from None
    return check_boxes(data, f"{flag} {str(path)!r}")


def course_boxes() -> list[dict[str, Any]]:
    """The worked NMS example (:data:`COURSE_NMS_BOXES`), checked."""
    return check_boxes([dict(e) for e in COURSE_NMS_BOXES], "the example")


# --------------------------------------------------------------------------- formatting

def _n(v: float, digits: int = 4) -> str:
    """A compact number; small ones keep 4 significant digits (0.004966, not 0.005)."""
    v = float(v)
    if v != 0 and math.isfinite(v) and abs(v) < 0.01 and v != int(v):
        return f"{v:.4g}"
    return fmt_num(v, digits)


def _t(v: float, digits: int = 4) -> str:
    """A number as a term: negatives in parentheses."""
    s = _n(v, digits)
    return f"({s})" if s.startswith("-") else s


def _box_text(box) -> str:
    return "(" + ", ".join(_n(v) for v in box) + ")"


def _class_text(c) -> str:
    return str(c)


# --------------------------------------------------------------------------- IoU and its variants

def _box_parts(box) -> dict[str, Any]:
    """Width, height and area of a box: the sides are differences of corners, the area their product."""
    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1
    return {"box": list(box), "width": w, "height": h, "area": w * h,
            "centre": [(x1 + x2) / 2, (y1 + y2) / 2]}


def _overlap(a, b) -> dict[str, float]:
    """Intersection of two boxes: the right-most left edge, the lowest top edge, the left-most right
    edge, the highest bottom edge. If they do not overlap, right < left (or bottom < top):
    the side is clamped at 0, so is the area."""
    left, top = max(a[0], b[0]), max(a[1], b[1])
    right, bottom = min(a[2], b[2]), min(a[3], b[3])
    w, h = max(0.0, right - left), max(0.0, bottom - top)
    return {"box": [left, top, right, bottom], "width": w, "height": h, "area": w * h}


def iou_numbers(a, b) -> tuple[float, float, float]:
    """``(intersection, union, iou)`` of two checked boxes, by hand."""
    inter = _overlap(a, b)["area"]
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter, union, inter / union


def explain_iou(a, b, digits: int = 4) -> dict[str, Any]:
    """IoU, GIoU, DIoU and CIoU of boxes ``a`` and ``b`` (x1, y1, x2, y2), every step written out.

    Steps (each with its ``expressions``, numbers substituted):

    1. each box's width = x2 - x1, height = y2 - y1, area = width * height;
    2. the intersection: left = max(x1_A, x1_B), top = max(y1_A, y1_B), right = min(x2_A, x2_B),
       bottom = min(y2_A, y2_B); its sides clamped at 0 (no overlap -> no area);
    3. union = area_A + area_B - intersection (the shared part would be counted twice);
    4. IoU = intersection / union, in [0, 1];
    5. GIoU: C the smallest box enclosing both; GIoU = IoU - (area_C - union) / area_C, in (-1, 1]:
       two far-apart boxes have IoU 0 whatever their distance, GIoU still tells "closer is better";
    6. DIoU = IoU - ρ² / c², ρ the distance between the centres, c the diagonal of C;
    7. CIoU = DIoU - α v, v = 4/π² (atan(w_A/h_A) - atan(w_B/h_B))² measures how different the
       aspect ratios are, α = v / (1 - IoU + v) weighs it more once the boxes overlap well.

    Returns a dict: ``a``, ``b`` (box, width, height, area, centre), ``intersection``, ``union``,
    ``iou``, ``enclosing`` (box, width, height, area, diagonal_sq), ``giou``, ``centre_distance_sq``,
    ``diou``, ``v``, ``alpha``, ``ciou`` and ``expressions`` (the text of each step).
    """
    a, b = check_box(a, "box A"), check_box(b, "box B")
    A, B = _box_parts(a), _box_parts(b)
    inter = _overlap(a, b)
    union = A["area"] + B["area"] - inter["area"]
    iou = inter["area"] / union

    ex: dict[str, Any] = {}
    for name, p in (("A", A), ("B", B)):
        x1, y1, x2, y2 = p["box"]
        ex[name] = [f"width  = x2 - x1 = {_n(x2)} - {_t(x1)} = {_n(p['width'])}",
                    f"height = y2 - y1 = {_n(y2)} - {_t(y1)} = {_n(p['height'])}",
                    f"area   = width * height = {_n(p['width'])} * {_n(p['height'])} = {_n(p['area'])}"]
    left, top, right, bottom = inter["box"]
    ex["intersection"] = [
        f"left   = max(x1_A, x1_B) = max({_n(a[0])}, {_n(b[0])}) = {_n(left)}",
        f"top    = max(y1_A, y1_B) = max({_n(a[1])}, {_n(b[1])}) = {_n(top)}",
        f"right  = min(x2_A, x2_B) = min({_n(a[2])}, {_n(b[2])}) = {_n(right)}",
        f"bottom = min(y2_A, y2_B) = min({_n(a[3])}, {_n(b[3])}) = {_n(bottom)}",
        f"width  = max(0, right - left) = max(0, {_n(right)} - {_t(left)}) = {_n(inter['width'])}"
        + ("   (no overlap along x)" if right <= left else ""),
        f"height = max(0, bottom - top) = max(0, {_n(bottom)} - {_t(top)}) = {_n(inter['height'])}"
        + ("   (no overlap along y)" if bottom <= top else ""),
        f"area   = width * height = {_n(inter['width'])} * {_n(inter['height'])} = {_n(inter['area'])}",
    ]
    ex["union"] = (f"union = area_A + area_B - intersection = {_n(A['area'])} + {_n(B['area'])} - "
                   f"{_n(inter['area'])} = {_n(union)}")
    ex["iou"] = f"IoU = intersection / union = {_n(inter['area'])} / {_n(union)} = {_n(iou, digits)}"

    # the smallest box enclosing both: the outer edges
    c_box = [min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3])]
    cw, ch = c_box[2] - c_box[0], c_box[3] - c_box[1]
    c_area = cw * ch
    empty = (c_area - union) / c_area
    giou = iou - empty
    ex["enclosing"] = [
        f"left   = min(x1_A, x1_B) = min({_n(a[0])}, {_n(b[0])}) = {_n(c_box[0])}",
        f"top    = min(y1_A, y1_B) = min({_n(a[1])}, {_n(b[1])}) = {_n(c_box[1])}",
        f"right  = max(x2_A, x2_B) = max({_n(a[2])}, {_n(b[2])}) = {_n(c_box[2])}",
        f"bottom = max(y2_A, y2_B) = max({_n(a[3])}, {_n(b[3])}) = {_n(c_box[3])}",
        f"area_C = ({_n(c_box[2])} - {_t(c_box[0])}) * ({_n(c_box[3])} - {_t(c_box[1])}) = "
        f"{_n(cw)} * {_n(ch)} = {_n(c_area)}",
    ]
    ex["giou"] = (f"GIoU = IoU - (area_C - union) / area_C = {_n(iou, digits)} - ({_n(c_area)} - {_n(union)}) / "
                  f"{_n(c_area)} = {_n(iou, digits)} - {_n(empty, digits)} = {_n(giou, digits)}")

    # DIoU: distance between the centres over the enclosing diagonal, both squared
    (cax, cay), (cbx, cby) = A["centre"], B["centre"]
    rho2 = (cbx - cax) ** 2 + (cby - cay) ** 2
    diag2 = cw ** 2 + ch ** 2
    dist_term = rho2 / diag2
    diou = iou - dist_term
    ex["centres"] = [
        f"centre_A = ((x1+x2)/2, (y1+y2)/2) = (({_n(a[0])}+{_t(a[2])})/2, ({_n(a[1])}+{_t(a[3])})/2) = "
        f"({_n(cax)}, {_n(cay)})",
        f"centre_B = (({_n(b[0])}+{_t(b[2])})/2, ({_n(b[1])}+{_t(b[3])})/2) = ({_n(cbx)}, {_n(cby)})",
        f"ρ² = (x_B - x_A)² + (y_B - y_A)² = ({_n(cbx)} - {_t(cax)})² + ({_n(cby)} - {_t(cay)})² = "
        f"{_n((cbx - cax) ** 2)} + {_n((cby - cay) ** 2)} = {_n(rho2)}",
        f"c² = width_C² + height_C² = {_n(cw)}² + {_n(ch)}² = {_n(diag2)}   (the diagonal of C, squared)",
    ]
    ex["diou"] = (f"DIoU = IoU - ρ²/c² = {_n(iou, digits)} - {_n(rho2)}/{_n(diag2)} = {_n(iou, digits)} - "
                  f"{_n(dist_term, digits)} = {_n(diou, digits)}")

    # CIoU: aspect-ratio consistency v, weighted by alpha
    at_a, at_b = math.atan(A["width"] / A["height"]), math.atan(B["width"] / B["height"])
    k = 4 / math.pi ** 2
    v = k * (at_a - at_b) ** 2
    denom = 1 - iou + v
    alpha = v / denom if denom > 0 else 0.0      # the same box twice: v = 0 and IoU = 1, alpha is 0
    ciou = diou - alpha * v
    ex["v"] = (f"v = 4/π² (atan(w_A/h_A) - atan(w_B/h_B))² = {_n(k, digits)} * (atan({_n(A['width'])}/"
               f"{_n(A['height'])}) - atan({_n(B['width'])}/{_n(B['height'])}))² = {_n(k, digits)} * "
               f"({_n(at_a, digits)} - {_n(at_b, digits)})² = {_n(v, digits)}")
    ex["alpha"] = (f"α = v / (1 - IoU + v) = {_n(v, digits)} / (1 - {_n(iou, digits)} + {_n(v, digits)}) = "
                   f"{_n(alpha, digits)}" + ("   (0/0: the same box twice, α taken as 0)" if denom <= 0 else ""))
    ex["ciou"] = (f"CIoU = DIoU - α v = {_n(diou, digits)} - {_n(alpha, digits)} * {_n(v, digits)} = "
                  f"{_n(diou, digits)} - {_n(alpha * v, digits)} = {_n(ciou, digits)}")

    return {"a": A, "b": B, "intersection": inter, "union": union, "iou": iou,
            "enclosing": {"box": c_box, "width": cw, "height": ch, "area": c_area, "diagonal_sq": diag2},
            "giou": giou, "centre_distance_sq": rho2, "diou": diou, "v": v, "alpha": alpha, "ciou": ciou,
            "expressions": ex}


def variants_to_show(variant: str | None, show_all: bool = False) -> list[str]:
    """The variants a walk shows: always IoU (the others start from it); CIoU also shows DIoU,
    which it extends; ``show_all`` shows the four."""
    if show_all:
        return list(VARIANTS)
    key = "iou" if variant is None else str(variant).strip().lower()
    if key not in VARIANTS:
        raise UserError(f"--variant {variant!r} is not known{did_you_mean(key, VARIANTS)}; allowed: "
                        f"{', '.join(VARIANTS)} (or --all for the four)")
    return {"iou": ["iou"], "giou": ["iou", "giou"], "diou": ["iou", "diou"], "ciou": ["iou", "diou", "ciou"]}[key]


def iou_to_json(res: dict[str, Any], shown: list[str] | None = None) -> dict[str, Any]:
    """The JSON form: every number of :func:`explain_iou`, the expressions of the steps shown."""
    shown = list(VARIANTS) if shown is None else shown
    out = {k: res[k] for k in ("a", "b", "intersection", "union", "iou", "enclosing", "giou",
                               "centre_distance_sq", "diou", "v", "alpha", "ciou")}
    keys = ["A", "B", "intersection", "union", "iou"]
    if "giou" in shown:
        keys += ["enclosing", "giou"]
    if "diou" in shown or "ciou" in shown:
        keys += ["enclosing", "centres", "diou"]
    if "ciou" in shown:
        keys += ["v", "alpha", "ciou"]
    out["shown"] = shown
    out["expressions"] = {k: res["expressions"][k] for k in dict.fromkeys(keys)}
    return out


def render_iou_text(res: dict[str, Any], shown: list[str] | None = None, example: bool = False) -> str:
    """The walk as text: the two boxes, the intersection, the union, IoU, then the variants shown."""
    shown = ["iou"] if shown is None else shown
    ex = res["expressions"]
    lines = ["intersection over union (IoU)" + (" - the worked example" if example else "")]
    lines.append("  boxes are (x1, y1, x2, y2): top-left then bottom-right corner, y grows downwards")
    lines.append("")
    for name in ("A", "B"):
        lines.append(f"box {name} = {_box_text(res[name.lower()]['box'])}")
        lines.extend("  " + e for e in ex[name])
    lines.append("")
    lines.append("intersection: the inner edges (the right-most left edge, the left-most right edge, ...)")
    lines.extend("  " + e for e in ex["intersection"])
    lines.append("union: both areas, minus the shared part counted twice")
    lines.append("  " + ex["union"])
    lines.append(ex["iou"])
    lines.append("  (1 = the same box, 0 = no overlap)")
    if "giou" in shown or "diou" in shown or "ciou" in shown:
        lines.append("")
        lines.append("smallest box C enclosing both: the outer edges")
        lines.extend("  " + e for e in ex["enclosing"])
    if "giou" in shown:
        lines.append("")
        lines.append("generalised IoU: minus the part of C that neither box covers, as a fraction of C")
        lines.append("  (for two boxes far apart IoU is 0 whatever the distance; GIoU goes down to -1)")
        lines.append(ex["giou"])
    if "diou" in shown or "ciou" in shown:
        lines.append("")
        lines.append("distance IoU: minus the squared distance between the centres over C's squared diagonal")
        lines.extend("  " + e for e in ex["centres"])
        lines.append(ex["diou"])
    if "ciou" in shown:
        lines.append("")
        lines.append("complete IoU: DIoU minus a penalty when the aspect ratios (width/height) differ")
        lines.append("  " + ex["v"])
        lines.append("  " + ex["alpha"])
        lines.append(ex["ciou"])
    lines.append("")
    lines.append("summary: " + ", ".join(f"{_NAMES[n]} = {_n(res[n])}" for n in shown))
    lines.append("  as a box-regression loss: " + ", ".join(f"1 - {_NAMES[n]}" for n in shown)
                 + " (0 when the boxes coincide)")
    return "\n".join(lines)


# --------------------------------------------------------------------------- non-maximum suppression

def _iou_step(i: int, j: int, boxes: list[dict[str, Any]], threshold: float) -> dict[str, Any]:
    """Box j against the box i just kept: its IoU, and whether it goes (IoU > threshold)."""
    inter, union, iou = iou_numbers(boxes[i]["box"], boxes[j]["box"])
    a_i, a_j = (_box_parts(boxes[i]["box"])["area"], _box_parts(boxes[j]["box"])["area"])
    suppressed = iou > threshold
    expr = (f"IoU([{i}], [{j}]) = {_n(inter)} / ({_n(a_i)} + {_n(a_j)} - {_n(inter)}) = {_n(inter)} / {_n(union)} "
            f"= {_n(iou, 3)}")
    verdict = (f"{_n(iou, 3)} > {_n(threshold)} -> suppressed" if suppressed
               else f"{_n(iou, 3)} <= {_n(threshold)} -> stays")
    return {"index": j, "intersection": inter, "union": union, "iou": iou, "suppressed": suppressed,
            "expression": expr, "verdict": verdict}


def _walk(indices: list[int], boxes: list[dict[str, Any]], threshold: float, group) -> tuple[list, list]:
    """Greedy NMS on ``indices`` (already sorted by score, highest first).

    Each round keeps the highest-scored box left (nothing scores better, so nothing can suppress
    it), compares it with every remaining box and removes those whose IoU is above the threshold:
    they most likely detect the same object. Boxes below the threshold may be other objects and
    stay for the next rounds.
    """
    left, rounds, kept = list(indices), [], []
    while left:
        i = left.pop(0)
        kept.append(i)
        compared = [_iou_step(i, j, boxes, threshold) for j in left]
        gone = [c["index"] for c in compared if c["suppressed"]]
        left = [j for j in left if j not in gone]
        rounds.append({"round": 0, "class": group, "keep": i, "score": boxes[i]["score"],
                       "compared": compared, "suppressed": gone, "remaining": list(left)})
    return rounds, kept


def explain_nms(boxes: list[dict[str, Any]], iou_threshold: float = 0.5, conf_threshold: float = 0.0,
                per_class: bool = False) -> dict[str, Any]:
    """Non-maximum suppression walked round by round, as ``torchvision.ops.nms`` computes it.

    1. drop the boxes scored below ``conf_threshold`` (a box with score >= it is kept);
    2. sort the rest by score, highest first (ties: the lower index first);
    3. repeat until no box is left: keep the first box; compute its IoU with every other box left;
       remove those with IoU > ``iou_threshold``.

    ``per_class`` (batched NMS, ``torchvision.ops.batched_nms``): steps 2-3 run in each class on its
    own, so a box never suppresses a box of another class.

    Returns ``boxes``, the thresholds, ``per_class``, ``dropped`` (by the confidence threshold),
    ``order`` (sorted indices), ``classes`` (the groups walked), ``steps`` (one per round: round,
    class, keep, score, compared [index, intersection, union, iou, suppressed, expression, verdict],
    suppressed, remaining), ``kept`` (indices, highest score first, as torchvision returns them) and
    ``suppressed`` ([{index, by, iou}]).
    """
    boxes = check_boxes(boxes)
    iou_threshold = parse_threshold(iou_threshold, "--iou")
    conf_threshold = parse_threshold(conf_threshold, "--conf")
    dropped = [i for i, b in enumerate(boxes) if b["score"] < conf_threshold]
    alive = [i for i, b in enumerate(boxes) if b["score"] >= conf_threshold]
    order = sorted(alive, key=lambda i: (-boxes[i]["score"], i))
    if per_class:
        groups = sorted({boxes[i]["class"] for i in order}, key=lambda c: (str(type(c)), c))
    else:
        groups = [None]
    steps, kept = [], []
    for g in groups:
        members = [i for i in order if g is None or boxes[i]["class"] == g]
        rounds, k = _walk(members, boxes, iou_threshold, g)
        steps += rounds
        kept += k
    for n, s in enumerate(steps, 1):
        s["round"] = n
    kept.sort(key=lambda i: (-boxes[i]["score"], i))
    suppressed = [{"index": c["index"], "by": s["keep"], "iou": c["iou"]}
                  for s in steps for c in s["compared"] if c["suppressed"]]
    return {"boxes": boxes, "iou_threshold": iou_threshold, "conf_threshold": conf_threshold,
            "per_class": per_class, "dropped": dropped, "order": order,
            "classes": [g for g in groups if g is not None], "steps": steps, "kept": kept,
            "suppressed": suppressed}


def nms_to_json(res: dict[str, Any]) -> dict[str, Any]:
    """The JSON form of :func:`explain_nms` (boxes as lists)."""
    out = {k: res[k] for k in ("iou_threshold", "conf_threshold", "per_class")}
    out["boxes"] = [{"box": list(b["box"]), "score": b["score"], "class": b["class"]} for b in res["boxes"]]
    for k in ("dropped", "order", "classes", "steps", "kept", "suppressed"):
        out[k] = res[k]
    if "example" in res:
        out["example"] = res["example"]
    return out


def _box_line(i: int, boxes: list[dict[str, Any]]) -> str:
    """``  [3] (62, 20, 100, 72)  score 0.85  class 1``, in columns."""
    iw = len(str(len(boxes) - 1)) + 2
    bw = max(len(_box_text(b["box"])) for b in boxes)
    sw = max(len(_n(b["score"])) for b in boxes)
    b = boxes[i]
    return (f"  {f'[{i}]'.rjust(iw)} {_box_text(b['box']).ljust(bw)}  score {_n(b['score']).ljust(sw)}  "
            f"class {_class_text(b['class'])}")


def render_nms_text(res: dict[str, Any]) -> str:
    """The walk as text: the boxes, the confidence filter, the sorted order, every round, the kept boxes."""
    boxes, thr = res["boxes"], res["iou_threshold"]
    n = len(boxes)
    title = "batched (per-class) non-maximum suppression" if res["per_class"] else "non-maximum suppression (NMS)"
    if res.get("example") == "course":
        title += " - the worked example"
    lines = [title]
    lines.append(f"  {n} box{'es' if n != 1 else ''}, IoU threshold {_n(thr)}, confidence threshold "
                 f"{_n(res['conf_threshold'])}")
    lines.append(f"  a box is suppressed when its IoU with a kept, better-scored box is > {_n(thr)}"
                 + (" (only boxes of the same class are compared)" if res["per_class"] else ""))
    lines.append("")
    if not boxes:
        lines.append("no boxes: nothing to keep")
        return "\n".join(lines)
    lines.append("boxes [index] (x1, y1, x2, y2), score, class:")
    for i in range(n):
        lines.append(_box_line(i, boxes))
    lines.append("")
    conf = _n(res["conf_threshold"])
    if res["dropped"]:
        lines.append(f"1. confidence filter (score >= {conf}): drop "
                     + ", ".join(f"[{i}] ({_n(boxes[i]['score'])} < {conf})" for i in res["dropped"]))
    else:
        lines.append(f"1. confidence filter (score >= {conf}): every box passes")
    lines.append("2. sort by score, highest first: "
                 + (", ".join(f"[{i}] {_n(boxes[i]['score'])}" for i in res["order"]) or "(nothing left)"))
    lines.append("3. repeat: keep the best box left, suppress the boxes overlapping it by more than the threshold")
    current = object()
    for s in res["steps"]:
        if res["per_class"] and s["class"] != current:
            current = s["class"]
            members = [i for i in res["order"] if boxes[i]["class"] == current]
            lines.append("")
            lines.append(f"class {_class_text(current)}: boxes " + " ".join(f"[{i}]" for i in members))
        lines.append("")
        lines.append(f"round {s['round']}: keep [{s['keep']}] (score {_n(s['score'])}), the best box left")
        if not s["compared"]:
            lines.append("  nothing left to compare")
        for c in s["compared"]:
            lines.append(f"  {c['expression']}   {c['verdict']}")
        if s["compared"]:
            gone = " ".join(f"[{i}]" for i in s["suppressed"]) or "none"
            rest = " ".join(f"[{i}]" for i in s["remaining"]) or "none"
            lines.append(f"  suppressed: {gone}; left: {rest}")
    lines.append("")
    lines.append("kept (highest score first): " + (" ".join(f"[{i}]" for i in res["kept"]) or "none"))
    for i in res["kept"]:
        lines.append(_box_line(i, boxes))
    if res["suppressed"]:
        lines.append("suppressed: " + ", ".join(f"[{s['index']}] by [{s['by']}] (IoU {_n(s['iou'], 3)})"
                                                for s in res["suppressed"]))
    return "\n".join(lines)


# --------------------------------------------------------------------------- pictures

_COLOURS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink",
            "tab:olive", "tab:cyan", "tab:gray")


def _setup_axes(ax, all_boxes, title: str) -> None:
    """Image coordinates: y grows downwards, equal scales, a margin around the boxes."""
    xs = [v for b in all_boxes for v in (b[0], b[2])]
    ys = [v for b in all_boxes for v in (b[1], b[3])]
    span = max(max(xs) - min(xs), max(ys) - min(ys))
    m = 0.08 * span
    ax.set_xlim(min(xs) - m, max(xs) + m)
    ax.set_ylim(max(ys) + m, min(ys) - m)          # inverted: the image's y axis points down
    ax.set_aspect("equal")
    ax.grid(alpha=0.25)
    ax.tick_params(labelsize=7)
    ax.set_title(title, fontsize=9)


def save_iou_picture(res: dict[str, Any], path: str, shown: list[str] | None = None) -> str:
    """Both boxes, their intersection shaded, the enclosing box dashed and (DIoU) the centres joined."""
    from matplotlib.patches import Rectangle

    from cnnkit.explain.plots import _figure, check_path

    check_path(path, (".png",), "--save")
    shown = ["iou"] if shown is None else shown
    fig = _figure(6.4, 5.6, dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    enc = res["enclosing"]["box"]
    ax.add_patch(Rectangle((enc[0], enc[1]), enc[2] - enc[0], enc[3] - enc[1], fill=False, edgecolor="0.45",
                           linestyle="--", linewidth=1.2,
                           label=f"enclosing box C (area {_n(res['enclosing']['area'])})"))
    for name, colour in (("a", "tab:blue"), ("b", "tab:orange")):
        x1, y1, x2, y2 = res[name]["box"]
        label = f"box {name.upper()} {_box_text(res[name]['box'])}, area {_n(res[name]['area'])}"
        ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=colour, linewidth=2.2,
                               label=label))
    inter = res["intersection"]
    if inter["area"] > 0:
        l, t, r, b = inter["box"]
        ax.add_patch(Rectangle((l, t), r - l, b - t, facecolor="tab:green", alpha=0.45, edgecolor="tab:green",
                               label=f"intersection (area {_n(inter['area'])})"))
    if "diou" in shown or "ciou" in shown:
        (ax_, ay), (bx, by) = res["a"]["centre"], res["b"]["centre"]
        ax.plot([ax_, bx], [ay, by], "k:", marker="o", markersize=4, linewidth=1.2,
                label=f"centres, ρ² = {_n(res['centre_distance_sq'])}")
        ax.plot([enc[0], enc[2]], [enc[1], enc[3]], color="0.6", linewidth=0.8,
                label=f"diagonal of C, c² = {_n(res['enclosing']['diagonal_sq'])}")
    title = (f"IoU = {_n(inter['area'])} / {_n(res['union'])} = {_n(res['iou'], 3)}"
             + "".join(f",  {_NAMES[v]} = {_n(res[v], 3)}" for v in shown if v != "iou"))
    _setup_axes(ax, [res["a"]["box"], res["b"]["box"], enc], title)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.06), ncol=2, fontsize=7, frameon=False)
    fig.subplots_adjust(bottom=0.24)
    fig.savefig(path, format="png")
    return str(path)


def _nms_state(res: dict[str, Any], upto: int | None) -> tuple[dict[int, str], int | None]:
    """Each box's state after round ``upto`` (None: the end): kept, current, suppressed, waiting, dropped."""
    state = {i: "waiting" for i in res["order"]}
    state.update({i: "dropped" for i in res["dropped"]})
    steps = res["steps"] if upto is None else res["steps"][:upto]
    current = None
    for s in steps:
        state[s["keep"]] = "kept"
        for j in s["suppressed"]:
            state[j] = "suppressed"
        current = s["keep"]
    return state, (current if upto is not None else None)


def _draw_nms(ax, res: dict[str, Any], upto: int | None) -> None:
    """The boxes after round ``upto``: kept solid, the one just kept thick, suppressed faded and dashed."""
    from matplotlib.colors import to_rgba
    from matplotlib.patches import Rectangle

    boxes = res["boxes"]
    classes = sorted({str(b["class"]) for b in boxes})
    colour = {c: _COLOURS[k % len(_COLOURS)] for k, c in enumerate(classes)}
    state, current = _nms_state(res, upto)
    for i, b in enumerate(boxes):
        x1, y1, x2, y2 = b["box"]
        st = state[i]
        col = colour[str(b["class"])]
        style = {"kept": dict(linestyle="-", linewidth=2.0, alpha=1.0),
                 "waiting": dict(linestyle="-", linewidth=1.0, alpha=0.6),
                 "suppressed": dict(linestyle="--", linewidth=1.0, alpha=0.3),
                 "dropped": dict(linestyle=":", linewidth=0.8, alpha=0.2)}[st]
        if i == current:      # the box kept in this round: thick, lightly filled
            style = dict(linestyle="-", linewidth=3.2, alpha=1.0)
            ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, facecolor=to_rgba(col, 0.15), edgecolor="none"))
        ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=col, **style))
        label = f"[{i}] {_n(b['score'], 2)}" + ("" if st != "suppressed" else " ×")
        ax.annotate(label, (x1, y1), xytext=(2, 1), textcoords="offset points", fontsize=7, va="bottom",
                    ha="left", color=col, alpha=max(style["alpha"], 0.45))


def _frame_title(res: dict[str, Any], k: int | None) -> str:
    if k is None:
        return "kept: " + (" ".join(f"[{i}]" for i in res["kept"]) or "none")
    s = res["steps"][k - 1]
    cls = f" (class {s['class']})" if res["per_class"] else ""
    gone = " ".join(f"[{i}]" for i in s["suppressed"]) or "none"
    return f"round {k}{cls}: keep [{s['keep']}], suppress {gone}"


def save_nms_frames(res: dict[str, Any], path: str, duration_ms: int = 1000) -> dict[str, Any]:
    """``.png``: a grid of panels, one per round then the result; ``.gif``: one frame per round then
    the result (as :func:`cnnkit.explain.plots.save_window_frames` does for the sliding windows).

    Returns ``{"path", "frames", "total_steps"}``; long walks are cut to the first rounds.
    """
    import numpy as np
    from PIL import Image

    from cnnkit.explain.plots import MAX_GIF_FRAMES, MAX_PNG_PANELS, _figure, check_path

    ext = check_path(path, (".png", ".gif"), "--save")
    if not res["boxes"]:
        raise UserError(f"--save {path!r}: there are no boxes to draw")
    n = len(res["steps"])
    limit = (MAX_PNG_PANELS if ext == ".png" else MAX_GIF_FRAMES) - 1
    frames_k: list[int | None] = list(range(1, min(n, limit) + 1)) + [None]
    all_boxes = [b["box"] for b in res["boxes"]]
    kind = "batched NMS" if res["per_class"] else "NMS"
    head = f"{kind}, IoU > {_n(res['iou_threshold'])} suppressed"
    if ext == ".png":
        count = len(frames_k)
        cols = min(count, 3 if count <= 9 else 6)
        rows = math.ceil(count / cols)
        fig = _figure(3.6 * cols, 3.4 * rows)
        for p, k in enumerate(frames_k):
            ax = fig.add_subplot(rows, cols, p + 1)
            _draw_nms(ax, res, k)
            _setup_axes(ax, all_boxes, _frame_title(res, k))
        cut = f" (the first {count - 1} of {n} rounds)" if count - 1 < n else ""
        fig.suptitle(f"{head}{cut}: kept solid, suppressed dashed", fontsize=10)
        fig.tight_layout(rect=(0, 0, 1, 0.95))
        fig.savefig(path, format="png")
        return {"path": str(path), "frames": count, "total_steps": n}

    fig = _figure(5.6, 5.0)
    ax = fig.add_subplot(1, 1, 1)
    images = []
    for k in frames_k:
        ax.clear()
        _draw_nms(ax, res, k)
        _setup_axes(ax, all_boxes, _frame_title(res, k))
        fig.suptitle(f"{head}: kept solid, suppressed dashed", fontsize=9)
        fig.canvas.draw()
        images.append(Image.fromarray(np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()))
    images[0].save(path, format="GIF", save_all=True, append_images=images[1:], duration=duration_ms,
                   loop=0, optimize=False, disposal=1)
    return {"path": str(path), "frames": len(images), "total_steps": n}


__all__ = ["VARIANTS", "COURSE_BOX_A", "COURSE_BOX_B", "COURSE_NMS_BOXES", "check_box", "parse_box",
           "parse_threshold", "check_boxes", "load_boxes", "course_boxes", "iou_numbers", "explain_iou",
           "variants_to_show", "iou_to_json", "render_iou_text", "explain_nms", "nms_to_json",
           "render_nms_text", "save_iou_picture", "save_nms_frames"]
