"""``cnnkit explain iou`` and ``cnnkit explain nms``: the hand-written steps against torchvision.ops
as an independent oracle (IoU, GIoU, DIoU, CIoU; nms and batched_nms), the text and JSON output,
the pictures, and the user errors (exit 2, one line on stderr)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import ops as tvops

from cnnkit.cli import main
from cnnkit.errors import UserError
from cnnkit.explain.detection import (COURSE_NMS_BOXES, check_boxes, explain_iou, explain_nms, parse_box,
                                      parse_threshold)

# (A, B): overlapping, disjoint, touching, nested, identical, float corners, far apart and flat
IOU_CASES = [
    ((1, 1, 6, 5), (3, 2, 8, 7)),
    ((0, 0, 2, 2), (5, 6, 9, 8)),
    ((0, 0, 2, 2), (2, 0, 4, 3)),
    ((0, 0, 10, 10), (2, 3, 5, 9)),
    ((2, 3, 5, 9), (0, 0, 10, 10)),
    ((1, 2, 4, 8), (1, 2, 4, 8)),
    ((0.5, 1.25, 3.75, 2.5), (1.5, 0.0, 2.25, 4.0)),
    ((-3, -1, 1, 0.5), (10, 20, 40, 21)),
]


def _oracle(a, b) -> dict[str, float]:
    ta = torch.tensor([a], dtype=torch.float64)
    tb = torch.tensor([b], dtype=torch.float64)
    return {"iou": tvops.box_iou(ta, tb).item(), "giou": tvops.generalized_box_iou(ta, tb).item(),
            "diou": tvops.distance_box_iou(ta, tb).item(), "ciou": tvops.complete_box_iou(ta, tb).item()}


def _run(capsys, *argv):
    code = main(["explain", *argv])
    out, err = capsys.readouterr()
    return code, out, err


# --------------------------------------------------------------------------- IoU against torchvision

@pytest.mark.parametrize("a, b", IOU_CASES)
def test_iou_and_variants_equal_torchvision(a, b):
    res = explain_iou(a, b)
    want = _oracle(a, b)
    for name, value in want.items():
        # torchvision adds eps = 1e-7 to the squared diagonal (DIoU, CIoU) and to alpha's denominator
        assert res[name] == pytest.approx(value, rel=1e-6, abs=1e-7), name
    assert res["union"] == pytest.approx(res["a"]["area"] + res["b"]["area"] - res["intersection"]["area"])
    assert 0.0 <= res["iou"] <= 1.0 and -1.0 < res["giou"] <= res["iou"]


def test_iou_of_special_cases_by_hand():
    disjoint = explain_iou((0, 0, 2, 2), (5, 6, 9, 8))
    assert disjoint["intersection"]["area"] == 0 and disjoint["iou"] == 0
    assert disjoint["giou"] < 0                                 # GIoU still sees how far apart they are
    assert "max(0, 2 - 5) = 0   (no overlap along x)" in "\n".join(disjoint["expressions"]["intersection"])
    nested = explain_iou((0, 0, 10, 10), (2, 3, 5, 9))
    assert nested["iou"] == pytest.approx(18 / 100) and nested["giou"] == pytest.approx(nested["iou"])
    same = explain_iou((1, 2, 4, 8), (1, 2, 4, 8))
    assert (same["iou"], same["giou"], same["diou"], same["v"], same["alpha"], same["ciou"]) == (1, 1, 1, 0, 0, 1)


def test_iou_batch_of_random_boxes_equals_torchvision():
    rng = np.random.default_rng(7)
    xy = rng.uniform(0, 50, size=(30, 2))
    wh = rng.uniform(1, 30, size=(30, 2))
    boxes = np.concatenate([xy, xy + wh], axis=1)
    a, b = boxes[:15], boxes[15:]
    ta, tb = torch.tensor(a), torch.tensor(b)
    want = {"iou": tvops.box_iou(ta, tb).diagonal(), "giou": tvops.generalized_box_iou(ta, tb).diagonal(),
            "diou": tvops.distance_box_iou(ta, tb).diagonal(), "ciou": tvops.complete_box_iou(ta, tb).diagonal()}
    for k in range(15):
        res = explain_iou(tuple(a[k]), tuple(b[k]))
        for name, values in want.items():
            assert res[name] == pytest.approx(values[k].item(), rel=1e-6, abs=1e-7), (k, name)


# --------------------------------------------------------------------------- NMS against torchvision

def _tv_keep(boxes, iou, conf=0.0, per_class=False):
    alive = [i for i, b in enumerate(boxes) if b["score"] >= conf]
    if not alive:
        return []
    tb = torch.tensor([boxes[i]["box"] for i in alive], dtype=torch.float64)
    ts = torch.tensor([boxes[i]["score"] for i in alive], dtype=torch.float64)
    if per_class:
        names = sorted({str(boxes[i]["class"]) for i in alive})
        idxs = torch.tensor([names.index(str(boxes[i]["class"])) for i in alive])
        keep = tvops.batched_nms(tb, ts, idxs, iou)
    else:
        keep = tvops.nms(tb, ts, iou)
    return [alive[k] for k in keep.tolist()]


def _random_boxes(seed: int, n: int = 40, classes: int = 3) -> list[dict]:
    """Boxes jittered around a few objects, so that many overlap."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(20, 80, size=(5, 2))
    out = []
    for _ in range(n):
        c = centres[rng.integers(len(centres))] + rng.normal(0, 6, size=2)
        w, h = rng.uniform(10, 30, size=2)
        out.append({"box": [float(c[0] - w / 2), float(c[1] - h / 2), float(c[0] + w / 2), float(c[1] + h / 2)],
                    "score": float(rng.uniform(0, 1)), "class": int(rng.integers(classes))})
    return out


def test_course_example_kept_indices():
    boxes = [dict(b) for b in COURSE_NMS_BOXES]
    plain = explain_nms(boxes, 0.5)
    assert plain["kept"] == [0, 3, 2] == _tv_keep(check_boxes(boxes), 0.5)
    assert [(s["index"], s["by"]) for s in plain["suppressed"]] == [(1, 0), (4, 3), (5, 3)]
    batched = explain_nms(boxes, 0.5, per_class=True)
    assert batched["kept"] == [0, 3, 2, 5] == _tv_keep(check_boxes(boxes), 0.5, per_class=True)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("iou", [0.0, 0.3, 0.5, 0.7, 1.0])
def test_nms_on_random_boxes_equals_torchvision(seed, iou):
    boxes = check_boxes(_random_boxes(seed))
    for per_class in (False, True):
        for conf in (0.0, 0.4):
            res = explain_nms(boxes, iou, conf, per_class=per_class)
            assert res["kept"] == _tv_keep(boxes, iou, conf, per_class), (per_class, conf)


def test_nms_steps_are_consistent():
    boxes = check_boxes(_random_boxes(5))
    res = explain_nms(boxes, 0.5, 0.2, per_class=True)
    assert res["dropped"] == [i for i, b in enumerate(boxes) if b["score"] < 0.2]
    gone = {s["index"] for s in res["suppressed"]}
    assert gone | set(res["kept"]) | set(res["dropped"]) == set(range(len(boxes)))
    assert not gone & set(res["kept"])
    tb = torch.tensor([b["box"] for b in boxes], dtype=torch.float64)
    pair = tvops.box_iou(tb, tb)
    for s in res["steps"]:
        for c in s["compared"]:
            assert boxes[c["index"]]["class"] == boxes[s["keep"]]["class"]     # per class: same class only
            assert c["iou"] == pytest.approx(pair[s["keep"], c["index"]].item(), abs=1e-12)
            assert c["suppressed"] == (c["iou"] > 0.5)


# --------------------------------------------------------------------------- the CLI: iou

def test_cli_iou_default_text(capsys):
    code, out, err = _run(capsys, "iou")
    assert code == 0 and err == ""
    assert "box A = (1, 1, 6, 5)" in out
    assert "left   = max(x1_A, x1_B) = max(1, 3) = 3" in out
    assert "right  = min(x2_A, x2_B) = min(6, 8) = 6" in out
    assert "union = area_A + area_B - intersection = 20 + 25 - 9 = 36" in out
    assert "IoU = intersection / union = 9 / 36 = 0.25" in out
    assert "GIoU" not in out and "CIoU" not in out


def test_cli_iou_all_variants_text(capsys):
    code, out, _ = _run(capsys, "iou", "--all")
    assert code == 0
    assert "area_C = (8 - 1) * (7 - 1) = 7 * 6 = 42" in out
    assert "GIoU = IoU - (area_C - union) / area_C = 0.25 - (42 - 36) / 42 = 0.25 - 0.1429 = 0.1071" in out
    assert "ρ² = (x_B - x_A)² + (y_B - y_A)² = (5.5 - 3.5)² + (4.5 - 3)² = 4 + 2.25 = 6.25" in out
    assert "DIoU = IoU - ρ²/c² = 0.25 - 6.25/85 = 0.25 - 0.0735 = 0.1765" in out
    assert "atan(5/4) - atan(5/5)" in out and "CIoU = DIoU - α v" in out
    code, out, _ = _run(capsys, "iou", "--variant", "ciou")
    assert "DIoU = " in out and "CIoU = " in out and "GIoU = " not in out


def test_cli_iou_json_matches_torchvision(capsys):
    a, b = (0.5, 1.25, 3.75, 2.5), (1.5, 0.0, 2.25, 4.0)
    code, out, _ = _run(capsys, "iou", "--a", "0.5 1.25 3.75 2.5", "--b", "[1.5, 0, 2.25, 4]",
                        "--variant", "giou", "--format", "json")
    assert code == 0
    data = json.loads(out)
    for name, value in _oracle(a, b).items():
        assert data[name] == pytest.approx(value, rel=1e-6, abs=1e-7)
    assert data["a"]["box"] == list(a) and data["b"]["area"] == pytest.approx(0.75 * 4)
    assert data["shown"] == ["iou", "giou"] and "giou" in data["expressions"] and "ciou" not in data["expressions"]
    assert data["intersection"]["area"] + data["union"] == pytest.approx(data["a"]["area"] + data["b"]["area"])


def test_cli_iou_save_png(capsys, tmp_path):
    png = tmp_path / "iou.png"
    code, out, _ = _run(capsys, "iou", "--all", "--save", str(png))
    assert code == 0 and f"to {png}" in out
    with Image.open(png) as im:
        assert im.format == "PNG" and im.width > 300 and im.height > 300
    disjoint = tmp_path / "far.png"       # no intersection to shade
    assert _run(capsys, "iou", "--a", "0 0 1 1", "--b", "4 4 6 5", "--save", str(disjoint))[0] == 0
    with Image.open(disjoint) as im:
        assert im.format == "PNG"


# --------------------------------------------------------------------------- the CLI: nms

def test_cli_nms_default_text(capsys):
    code, out, err = _run(capsys, "nms")
    assert code == 0 and err == ""
    assert "2. sort by score, highest first: [0] 0.9, [3] 0.85, [4] 0.8, [1] 0.75, [2] 0.6, [5] 0.5" in out
    assert "round 1: keep [0] (score 0.9)" in out
    assert "IoU([0], [1]) = 1296 / (1600 + 1520 - 1296) = 1296 / 1824 = 0.711   0.711 > 0.5 -> suppressed" in out
    assert "IoU([0], [2]) = 672 / (1600 + 1520 - 672) = 672 / 2448 = 0.275   0.275 <= 0.5 -> stays" in out
    assert "IoU([3], [5]) = 1728 / (1976 + 1824 - 1728) = 1728 / 2072 = 0.834" in out
    assert "kept (highest score first): [0] [3] [2]\n" in out


def test_cli_nms_per_class_text_and_json(capsys):
    code, out, _ = _run(capsys, "nms", "--per-class")
    assert code == 0
    assert "class 0: boxes [0] [1] [2] [5]" in out and "class 1: boxes [3] [4]" in out
    assert "IoU([3], [5])" not in out                       # different classes are never compared
    assert "kept (highest score first): [0] [3] [2] [5]" in out
    code, out, _ = _run(capsys, "nms", "--example", "course", "--per-class", "--format", "json")
    data = json.loads(out)
    assert data["kept"] == [0, 3, 2, 5] and data["per_class"] is True and data["classes"] == [0, 1]
    assert [s["keep"] for s in data["steps"]] == [0, 2, 5, 3]
    first = data["steps"][0]
    assert first["compared"][0] == {"index": 1, "intersection": 1296, "union": 1824,
                                     "iou": pytest.approx(1296 / 1824), "suppressed": True,
                                     "expression": "IoU([0], [1]) = 1296 / (1600 + 1520 - 1296) = 1296 / 1824 "
                                                   "= 0.711", "verdict": "0.711 > 0.5 -> suppressed"}


def test_cli_nms_file_json_equals_torchvision(capsys, tmp_path):
    boxes = _random_boxes(11, n=30)
    for b in boxes:                                            # class names work too
        b["class"] = ["cat", "dog", "bird"][b["class"]]
    path = tmp_path / "boxes.json"
    path.write_text(json.dumps(boxes))
    for extra in ([], ["--per-class"]):
        code, out, _ = _run(capsys, "nms", "--boxes", str(path), "--iou", "0.45", "--conf", "0.25",
                            "--format", "json", *extra)
        assert code == 0
        data = json.loads(out)
        want = _tv_keep(check_boxes(boxes), 0.45, 0.25, per_class=bool(extra))
        assert data["kept"] == want
        assert data["dropped"] == [i for i, b in enumerate(boxes) if b["score"] < 0.25]
        assert (data["iou_threshold"], data["conf_threshold"]) == (0.45, 0.25)


def test_cli_nms_save_png_and_gif(capsys, tmp_path):
    png = tmp_path / "nms.png"
    code, out, _ = _run(capsys, "nms", "--save", str(png))
    assert code == 0 and "saved 4 frames" in out
    with Image.open(png) as im:
        assert im.format == "PNG" and im.width > 300
    gif = tmp_path / "nms.gif"
    code, out, _ = _run(capsys, "nms", "--per-class", "--save", str(gif), "--format", "json")
    assert json.loads(out)["saved"] == {"path": str(gif), "frames": 5, "total_steps": 4}
    with Image.open(gif) as im:
        assert im.format == "GIF" and im.n_frames == 5          # 4 rounds, then the result


def test_cli_nms_empty_file(capsys, tmp_path):
    path = tmp_path / "none.json"
    path.write_text("[]")
    code, out, _ = _run(capsys, "nms", "--boxes", str(path))
    assert code == 0 and "no boxes: nothing to keep" in out


# --------------------------------------------------------------------------- user errors

@pytest.mark.parametrize("argv, message", [
    (["iou", "--a", "1 2 3", "--b", "0 0 1 1"], "--a '1 2 3': a box needs 4 numbers"),
    (["iou", "--a", "1 2 x 4", "--b", "0 0 1 1"], "--a '1 2 x 4': 'x' is not a number"),
    (["iou", "--a", "5 0 2 4", "--b", "0 0 1 1"], "--a '5 0 2 4': x2 = 2 must be greater than x1 = 5"),
    (["iou", "--a", "0 0 1 1", "--b", "0 3 1 3"], "--b '0 3 1 3': y2 = 3 must be greater than y1 = 3"),
    (["iou", "--a", "0 0 1 1"], "needs both boxes: add --b"),
    (["iou", "--variant", "gio"], "--variant 'gio' is not known (did you mean 'giou'?)"),
    (["iou", "--example", "course", "--a", "0 0 1 1"], "drop --a or drop --example"),
    (["iou", "--save", "iou.gif"], "--save 'iou.gif': unsupported file type '.gif'; use .png"),
    (["nms", "--iou", "1.5"], "--iou '1.5' is not allowed; use a number between 0 and 1"),
    (["nms", "--conf", "-0.1"], "--conf '-0.1' is not allowed; use a number between 0 and 1"),
    (["nms", "--iou", "half"], "--iou 'half' is not a number"),
    (["nms", "--boxes", "/no/such/boxes.json"], "--boxes '/no/such/boxes.json': file not found"),
    (["nms", "--example", "lecture"], "--example 'lecture' is not known"),
    (["nms", "--save", "nms.jpg"], "unsupported file type '.jpg'"),
])
def test_cli_user_errors_exit_2_with_one_line(capsys, argv, message):
    code, out, err = _run(capsys, *argv)
    assert code == 2 and out == ""
    assert err.startswith("error: ") and err.count("\n") == 1
    assert message in err


@pytest.mark.parametrize("content, message", [
    ("{not json", "is not valid JSON"),
    ('{"box": [0, 0, 1, 1]}', "must hold a list of"),
    ('[{"box": [0, 0, 1, 1]}]', "entry 0 has no 'score'"),
    ('[{"box": [0, 0, 1], "score": 0.5}]', "entry 0 'box': a box needs 4 numbers"),
    ('[{"box": [0, 0, 1, 1], "score": 0.5}, {"box": [3, 0, 1, 1], "score": 0.5}]',
     "entry 1 'box': x2 = 1 must be greater than x1 = 3"),
    ('[{"box": [0, 0, 1, 1], "score": "high"}]', "entry 0 'score' 'high' is not a finite number"),
    ('[{"box": [0, 0, 1, 1], "score": 0.5, "class": 1.5}]', "entry 0 'class' 1.5 is not allowed"),
    ('[{"box": [0, 0, 1, 1], "score": 0.5, "label": 1}]', "unknown key 'label'"),
])
def test_cli_bad_boxes_file(capsys, tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    code, out, err = _run(capsys, "nms", "--boxes", str(path))
    assert code == 2 and out == "" and err.count("\n") == 1
    assert f"--boxes '{path}'" in err and message in err


def test_module_level_checks():
    assert parse_box("(1, 2, 3, 4)") == (1.0, 2.0, 3.0, 4.0)
    assert parse_threshold("0", "--iou") == 0.0 and parse_threshold(1, "--iou") == 1.0
    with pytest.raises(UserError, match="--iou 'nan' is not a number"):
        parse_threshold("nan", "--iou")
    with pytest.raises(UserError, match="mix ints and names"):
        check_boxes([{"box": [0, 0, 1, 1], "score": 1, "class": 0},
                     {"box": [0, 0, 1, 1], "score": 1, "class": "dog"}])
