"""Detection data: the COCO / YOLO / VOC readers against boxes written by hand, the checks of bad
annotations, the generated sets against their own masks and ink, and the v2 transforms and collate."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import tv_tensors
from torchvision.ops import masks_to_boxes

from cnnkit.config import AugmentConfig, DataConfig
from cnnkit.data import list_datasets, load_data
from cnnkit.data.detection import detection_collate, detection_transforms, read_coco, read_voc, read_yolo
from cnnkit.data.detection.common import DetectionDataset, ImageRecord, make_target
from cnnkit.data.detection.formats import coco, voc, yolo
from cnnkit.data.detection.synthetic import CANVAS, mnist_detect, shapes
from cnnkit.errors import UserError

torch.set_num_threads(1)

RACCOON = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "raccoon"

# A small set written by hand: file -> (width, height, solid RGB colour, [(class, (x1, y1, x2, y2)), ...]),
# the boxes in continuous pixel coordinates. Category ids of the COCO file are 7 (dog) and 3 (cat):
# not contiguous and not in listing order, so the label mapping (sorted ids) is exercised.
SET = {
    "a.png": (64, 48, (200, 10, 10), [("cat", (4, 6, 20, 30)), ("dog", (30.5, 10, 64, 40))]),
    "b.png": (40, 50, (10, 200, 10), [("dog", (0, 0, 40, 50))]),
    "c.png": (32, 32, (10, 10, 200), []),  # no objects
    "d.png": (50, 20, (90, 90, 90), [("cat", (1, 1, 11, 19)), ("cat", (20, 2, 45, 18)), ("dog", (12, 3, 18, 9))]),
}
CLASSES = ["cat", "dog"]
CAT_IDS = {"dog": 7, "cat": 3}


def _images(folder: Path, spec: dict = SET) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, (w, h, colour, _) in spec.items():
        Image.new("RGB", (w, h), colour).save(folder / name)


def write_coco(root: Path, spec: dict = SET) -> Path:
    _images(root / "images", spec)
    images, anns = [], []
    for i, (name, (w, h, _, objs)) in enumerate(spec.items()):
        images.append({"id": 100 + i, "file_name": name, "width": w, "height": h})
        for cls, (x1, y1, x2, y2) in objs:
            anns.append({"id": len(anns) + 1, "image_id": 100 + i, "category_id": CAT_IDS[cls],
                         "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1), "iscrowd": 0})
    cats = [{"id": 7, "name": "dog"}, {"id": 3, "name": "cat"}]
    path = root / "instances_train.json"
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return path


def write_yolo(root: Path, spec: dict = SET) -> None:
    _images(root / "images", spec)
    (root / "labels").mkdir(parents=True, exist_ok=True)
    (root / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    for name, (w, h, _, objs) in spec.items():
        if not objs:
            continue  # no label file: no objects
        lines = [f"{CLASSES.index(c)} {(x1 + x2) / 2 / w!r} {(y1 + y2) / 2 / h!r} {(x2 - x1) / w!r} {(y2 - y1) / h!r}"
                 for c, (x1, y1, x2, y2) in objs]
        (root / "labels" / (Path(name).stem + ".txt")).write_text("\n".join(lines) + "\n")


def write_voc(root: Path, spec: dict = SET) -> None:
    _images(root / "JPEGImages", spec)
    (root / "Annotations").mkdir(parents=True, exist_ok=True)
    for name, (w, h, _, objs) in spec.items():
        ann = ET.Element("annotation")
        ET.SubElement(ann, "filename").text = name
        size = ET.SubElement(ann, "size")
        ET.SubElement(size, "width").text, ET.SubElement(size, "height").text = str(w), str(h)
        for cls, (x1, y1, x2, y2) in objs:
            obj = ET.SubElement(ann, "object")
            ET.SubElement(obj, "name").text = cls
            bb = ET.SubElement(obj, "bndbox")
            # VOC: 1-based pixel indices, ends inclusive.
            for tag, v in zip(("xmin", "ymin", "xmax", "ymax"), (x1 + 1, y1 + 1, x2, y2)):
                ET.SubElement(bb, tag).text = f"{v:g}"
        ET.ElementTree(ann).write(root / "Annotations" / (Path(name).stem + ".xml"))


def by_file(ds) -> dict[str, tuple[torch.Tensor, list[str], dict]]:
    """file name -> (boxes, class names, target) of every item."""
    out = {}
    for i in range(len(ds)):
        image, t = ds[i]
        out[Path(t["file"]).name] = (t["boxes"].as_subclass(torch.Tensor), [ds.classes[k] for k in t["labels"]], t)
    return out


def expected(name: str) -> tuple[torch.Tensor, list[str]]:
    objs = SET[name][3]
    return torch.tensor([b for _, b in objs], dtype=torch.float32).reshape(-1, 4), [c for c, _ in objs]


def check_against_set(ds, atol: float = 0.0) -> None:
    assert ds.classes == CLASSES
    items = by_file(ds)
    assert sorted(items) == sorted(SET)
    for name, (boxes, names, t) in items.items():
        want_boxes, want_names = expected(name)
        torch.testing.assert_close(boxes, want_boxes, atol=atol, rtol=0)
        assert names == want_names
        w, h = SET[name][:2]
        assert isinstance(t["boxes"], tv_tensors.BoundingBoxes) and t["boxes"].format.name == "XYXY"
        assert tuple(t["boxes"].canvas_size) == (h, w) and t["boxes"].dtype == torch.float32
        assert t["labels"].dtype == torch.int64


# ------------------------------------------------------------------------------------------ readers

def test_coco_xywh_becomes_xyxy_and_ids_map_in_sorted_order(tmp_path):
    ann = write_coco(tmp_path)
    ds = read_coco(ann, tmp_path)
    check_against_set(ds)
    assert {Path(t["file"]).name: t["image_id"] for _, (_, _, t) in by_file(ds).items()} == \
        {"a.png": 100, "b.png": 101, "c.png": 102, "d.png": 103}
    # cat has the smaller category id (3 < 7), so it is label 0
    assert by_file(ds)["b.png"][2]["labels"].tolist() == [1]


def test_coco_crowd_regions_are_not_objects(tmp_path):
    ann = write_coco(tmp_path)
    data = json.loads(ann.read_text())
    data["annotations"][0]["iscrowd"] = 1  # a.png's cat
    ann.write_text(json.dumps(data))
    boxes, names, _ = by_file(read_coco(ann, tmp_path))["a.png"]
    assert boxes.tolist() == [[30.5, 10.0, 64.0, 40.0]] and names == ["dog"]


def test_yolo_normalised_centres_become_pixels(tmp_path):
    write_yolo(tmp_path)
    check_against_set(read_yolo(tmp_path), atol=1e-4)


def test_voc_one_based_pixels_become_zero_based(tmp_path):
    write_voc(tmp_path)
    ds = read_voc(tmp_path / "Annotations", tmp_path / "JPEGImages")
    check_against_set(ds)
    # the XML of a.png says xmin=5 ymin=7 for the box (4, 6, 20, 30)
    xml = ET.parse(tmp_path / "Annotations" / "a.xml").getroot()
    assert xml.find("object/bndbox/xmin").text == "5" and xml.find("object/bndbox/ymin").text == "7"


def test_the_same_set_in_three_formats_gives_the_same_items(tmp_path):
    write_coco(tmp_path / "c")
    write_yolo(tmp_path / "y")
    write_voc(tmp_path / "v")
    bundles = {name: f(DataConfig(name=name, path=str(tmp_path / d), val_fraction=0.25))
               for name, f, d in (("coco", coco, "c"), ("yolo", yolo, "y"), ("voc", voc, "v"))}
    got = {}
    for name, b in bundles.items():
        items = {}
        for split in (b.train, b.val):
            items.update({f: (boxes, names) for f, (boxes, names, _) in by_file(split).items()})
        got[name] = items
        assert b.classes == CLASSES and b.extra == {"task": "detection"}
    for name in ("yolo", "voc"):
        assert sorted(got[name]) == sorted(got["coco"])
        for f, (boxes, names) in got["coco"].items():
            torch.testing.assert_close(got[name][f][0], boxes, atol=1e-4, rtol=0)
            assert got[name][f][1] == names


def test_image_without_objects_loads(tmp_path):
    write_coco(tmp_path)
    ds = read_coco(tmp_path / "instances_train.json", tmp_path)
    i = [Path(r.file).name for r in ds.records].index("c.png")
    image, t = ds[i]
    assert image.shape == (3, 32, 32) and image.dtype == torch.uint8
    assert t["boxes"].shape == (0, 4) and t["labels"].shape == (0,)
    # the image is the solid colour written
    assert image[:, 0, 0].tolist() == [10, 10, 200] and bool((image == image[:, :1, :1]).all())


def test_grayscale_image_is_read_as_rgb(tmp_path):
    (tmp_path / "images").mkdir()
    Image.new("L", (30, 20), 77).save(tmp_path / "images" / "g.jpg")
    images = [{"id": 1, "file_name": "g.jpg", "width": 30, "height": 20}]
    anns = [{"id": 1, "image_id": 1, "category_id": 3, "bbox": [2, 3, 10, 10]}]
    (tmp_path / "instances_x.json").write_text(json.dumps(
        {"images": images, "annotations": anns, "categories": [{"id": 3, "name": "cat"}]}))
    image, t = read_coco(tmp_path / "instances_x.json", tmp_path)[0]
    assert image.shape == (3, 20, 30) and bool((image[0] == image[1]).all()) and bool((image[1] == image[2]).all())
    assert t["boxes"].tolist() == [[2.0, 3.0, 12.0, 13.0]]


def test_yolo_class_names_from_data_yaml_list_or_mapping(tmp_path):
    write_yolo(tmp_path)
    (tmp_path / "classes.txt").unlink()
    (tmp_path / "data.yaml").write_text("names: [cat, dog]\n")
    assert read_yolo(tmp_path).classes == CLASSES
    (tmp_path / "data.yaml").write_text("names:\n  1: dog\n  0: cat\n")
    assert read_yolo(tmp_path).classes == CLASSES


def test_small_overshoot_is_clipped(tmp_path):
    spec = {"a.png": (64, 48, (1, 2, 3), [("cat", (-0.6, 6, 64.8, 48.9))])}
    ann = write_coco(tmp_path, spec)
    _, t = read_coco(ann, tmp_path)[0]
    assert t["boxes"].tolist() == [[0.0, 6.0, 64.0, 48.0]]


# --------------------------------------------------------------------------------- the real raccoons

@pytest.mark.skipif(not RACCOON.exists(), reason=f"{RACCOON} (the shared raccoon set) is absent in this clone")
def test_raccoon_coco_and_voc_agree():
    c = read_coco(RACCOON / "instances_train.json", RACCOON)
    v = read_voc(RACCOON / "annotations_voc", RACCOON / "images")
    assert len(c) == len(v) == 160 and c.classes == v.classes == ["raccoon"]
    cb = {Path(r.file).name: r.boxes for r in c.records}
    vb = {Path(r.file).name: r.boxes for r in v.records}
    assert sorted(cb) == sorted(vb)
    assert sum(len(b) for b in cb.values()) == sum(len(b) for b in vb.values()) == 174
    # The README: the COCO file copies the VOC integers as written (x = xmin, no shift), while the VOC
    # reader turns VOC's 1-based xmin/ymin into 0-based coordinates. So the two agree exactly up to
    # that one pixel on x1 and y1, and exactly on x2 and y2.
    shift = torch.tensor([1.0, 1.0, 0.0, 0.0])
    for name in cb:
        assert torch.equal(cb[name], vb[name] + shift), name
    # raccoon-10.xml: xmin 130, ymin 2, xmax 446, ymax 488
    assert cb["raccoon-10.jpg"].tolist() == [[130.0, 2.0, 446.0, 488.0]]
    assert vb["raccoon-10.jpg"].tolist() == [[129.0, 1.0, 446.0, 488.0]]
    # the grayscale JPEGs decode to 3 channels at the size their annotations give
    gray = [i for i, r in enumerate(c.records) if Image.open(r.file).mode == "L"]
    assert len(gray) == 3
    for i in gray:
        image, t = c[i]
        assert image.shape == (3, *c.records[i].size) and tuple(t["boxes"].canvas_size) == c.records[i].size


# --------------------------------------------------------------------------------- bad annotations

def _coco_raw(tmp_path) -> dict:
    write_coco(tmp_path)
    return json.loads((tmp_path / "instances_train.json").read_text())


def _coco_error(tmp_path, data) -> str:
    path = tmp_path / "instances_train.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    with pytest.raises(UserError) as e:
        read_coco(path, tmp_path)
    return str(e.value)


def test_coco_empty_or_not_json_or_no_images(tmp_path):
    _coco_raw(tmp_path)
    assert "instances_train.json" in (m := _coco_error(tmp_path, "")) and "is empty" in m
    assert "is not JSON" in (m := _coco_error(tmp_path, '{"images": [')) and "line 1" in m
    no_images = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "x"}]}
    assert "lists no images" in _coco_error(tmp_path, no_images)
    assert "no 'categories' list" in _coco_error(tmp_path, {"images": [], "annotations": []})


def test_coco_unknown_category_id(tmp_path):
    data = _coco_raw(tmp_path)
    data["annotations"][1]["category_id"] = 99
    m = _coco_error(tmp_path, data)
    assert "unknown category id 99" in m and "annotation 2" in m and "[3, 7]" in m


def test_coco_box_outside_the_image(tmp_path):
    data = _coco_raw(tmp_path)
    data["annotations"][1]["bbox"] = [30.5, 10, 35.5, 30]  # x2 = 66 > 64 + 1
    m = _coco_error(tmp_path, data)
    assert "'a.png'" in m and "annotation 2" in m and "66" in m and "outside the 64x48 image" in m


def test_coco_zero_area_box(tmp_path):
    data = _coco_raw(tmp_path)
    data["annotations"][0]["bbox"] = [4, 6, 0, 24]
    m = _coco_error(tmp_path, data)
    assert "'a.png'" in m and "annotation 1" in m and "zero or negative area" in m and "width 0" in m


def test_coco_missing_image_and_wrong_size(tmp_path):
    data = _coco_raw(tmp_path)
    (tmp_path / "images" / "b.png").unlink()
    m = _coco_error(tmp_path, data)
    assert "'b.png'" in m and "not found" in m
    _images(tmp_path / "images")
    data["images"][0]["width"] = 65
    m = _coco_error(tmp_path, data)
    assert "'a.png'" in m and "64x48" in m and "65x48" in m


def test_coco_annotation_of_an_unknown_image(tmp_path):
    data = _coco_raw(tmp_path)
    data["annotations"][0]["image_id"] = 555
    assert "image id 555, which is not in images" in _coco_error(tmp_path, data)


def test_coco_finds_its_file_or_says_which_to_choose(tmp_path):
    write_coco(tmp_path)
    (tmp_path / "instances_val.json").write_text((tmp_path / "instances_train.json").read_text())
    with pytest.raises(UserError, match="2 COCO annotation files .*data.annotations"):
        coco(DataConfig(name="coco", path=str(tmp_path)))
    b = coco(DataConfig(name="coco", path=str(tmp_path), annotations=str(tmp_path / "instances_val.json")))
    assert len(b.train) + len(b.val) == 4


def _yolo_error(tmp_path, label: str, stem: str = "a") -> str:
    write_yolo(tmp_path)
    (tmp_path / "labels" / f"{stem}.txt").write_text(label)
    with pytest.raises(UserError) as e:
        read_yolo(tmp_path)
    return str(e.value)


@pytest.mark.parametrize("line, words", [
    ("0 0.5 0.5 0.2\n", ["a.txt line 1", "4 fields", "class cx cy w h"]),
    ("0 0.5 0.5 0.2 0.2\n\n2 0.5 0.5 0.2 0.2\n", ["a.txt line 3", "class index 2", "0..1"]),
    ("-1 0.5 0.5 0.2 0.2\n", ["a.txt line 1", "class index -1"]),
    ("cat 0.5 0.5 0.2 0.2\n", ["a.txt line 1", "'cat' is not an integer"]),
    ("0 0.5 x 0.2 0.2\n", ["a.txt line 1", "must be numbers"]),
    ("1 0.95 0.5 0.3 0.2\n", ["a.txt line 1", "outside the 64x48 image"]),
    ("1 0.5 0.5 0 0.2\n", ["a.txt line 1", "zero or negative area"]),
])
def test_yolo_bad_label_lines(tmp_path, line, words):
    m = _yolo_error(tmp_path, line)
    for w in words:
        assert w in m, (w, m)


def test_yolo_label_without_image_and_missing_class_names(tmp_path):
    m = _yolo_error(tmp_path, "0 0.5 0.5 0.2 0.2\n", stem="zz")
    assert "zz.txt" in m and "has no image" in m
    (tmp_path / "labels" / "zz.txt").unlink()
    (tmp_path / "classes.txt").unlink()
    with pytest.raises(UserError, match="no classes.txt or data.yaml"):
        read_yolo(tmp_path)


def _voc_error(tmp_path, edit) -> str:
    write_voc(tmp_path)
    edit(tmp_path / "Annotations")
    with pytest.raises(UserError) as e:
        read_voc(tmp_path / "Annotations", tmp_path / "JPEGImages")
    return str(e.value)


def _set_xmax(folder: Path, value: str) -> None:
    tree = ET.parse(folder / "a.xml")
    tree.getroot().find("object/bndbox/xmax").text = value
    tree.write(folder / "a.xml")


def test_voc_bad_annotations(tmp_path):
    m = _voc_error(tmp_path, lambda d: (d / "b.xml").write_text("<annotation><object>"))
    assert "b.xml" in m and "not well-formed XML" in m
    m = _voc_error(tmp_path, lambda d: _set_xmax(d, "70"))
    assert "a.xml" in m and "object 1" in m and "'cat'" in m and "outside the 64x48 image" in m
    m = _voc_error(tmp_path, lambda d: _set_xmax(d, "4"))
    assert "a.xml" in m and "zero or negative area" in m
    m = _voc_error(tmp_path, lambda d: (d / "e.xml").write_text("<annotation><filename>e.png</filename></annotation>"))
    assert "e.xml" in m and "'e.png' not found" in m


def test_missing_or_wrong_data_path(tmp_path):
    for name, f in (("coco", coco), ("yolo", yolo), ("voc", voc)):
        with pytest.raises(UserError, match=f"data.name={name} needs data.path"):
            f(DataConfig(name=name))
        with pytest.raises(UserError, match="nowhere.*does not exist"):
            f(DataConfig(name=name, path=str(tmp_path / "nowhere")))


def test_classification_options_are_refused(tmp_path):
    write_coco(tmp_path)
    with pytest.raises(UserError, match=r"data.classes=\[0\] is a classification option"):
        coco(DataConfig(name="coco", path=str(tmp_path), classes=[0]))
    with pytest.raises(UserError, match="data.per_class=2 is a classification option"):
        shapes(DataConfig(name="shapes", per_class=2))


# ------------------------------------------------------------------------------------------ bundles

def test_bundle_split_subset_size_and_stats(tmp_path):
    spec = {f"i{k}.png": (20 + k, 16, (10 * k, 100, 255 - 10 * k), [("cat", (1, 1, 5, 5))]) for k in range(10)}
    write_coco(tmp_path, spec)
    b = coco(DataConfig(name="coco", path=str(tmp_path), val_fraction=0.3, split_seed=4))
    names = lambda ds: sorted(Path(r.file).name for r in ds.records)  # noqa: E731
    assert len(b.val) == 3 and len(b.train) == 7 and not set(names(b.train)) & set(names(b.val))
    assert b.input_shape == (3, 320, 320) and b.test is None and b.extra == {"task": "detection"}
    # solid images: the per-channel mean is the mean colour of the training images, the std that spread
    colours = torch.tensor([spec[n][2] for n in names(b.train)], dtype=torch.float64) / 255
    torch.testing.assert_close(torch.tensor(b.mean, dtype=torch.float64), colours.mean(0), atol=1e-4, rtol=0)
    # the same seed cuts the same split
    b2 = coco(DataConfig(name="coco", path=str(tmp_path), val_fraction=0.3, split_seed=4, image_size=64))
    assert names(b2.val) == names(b.val) and b2.input_shape == (3, 64, 64)
    # data.subset keeps that many training images (the validation split is untouched); val >= 1 always
    b3 = coco(DataConfig(name="coco", path=str(tmp_path), val_fraction=0.0, subset=4))
    assert len(b3.train) == 4 and len(b3.val) == 1
    one = {"x.png": spec["i0.png"]}
    write_coco(tmp_path / "one", one)
    with pytest.raises(UserError, match="has 1 image"):
        coco(DataConfig(name="coco", path=str(tmp_path / "one")))


def test_datasets_are_registered_and_load_data_passes_the_bundle_through():
    assert {"coco", "yolo", "voc", "shapes", "mnist_detect"} <= set(list_datasets())
    b = load_data(DataConfig(name="shapes", subset=30, val_fraction=0.2))
    # the smallest set whose training split has 30 images: 37, of which round(0.2 * 37) = 7 are held out
    assert len(b.train) == 30 and len(b.val) == 7 and b.extra == {"task": "detection"}
    assert b.input_shape == (3, CANVAS, CANVAS) and b.classes == ["circle", "square", "triangle"]


# ----------------------------------------------------------------------------------- generated sets

def _all_items(b):
    return [b.train[i] for i in range(len(b.train))] + [b.val[i] for i in range(len(b.val))]


def test_shapes_deterministic_and_boxes_are_the_masks_boxes():
    b = shapes(DataConfig(name="shapes", subset=40, split_seed=3))
    again = shapes(DataConfig(name="shapes", subset=40, split_seed=3))
    other = shapes(DataConfig(name="shapes", subset=40, split_seed=4))
    (x, t), (x2, t2), (x3, _) = b.train[0], again.train[0], other.train[0]
    assert torch.equal(x, x2) and torch.equal(t["boxes"], t2["boxes"]) and torch.equal(t["masks"], t2["masks"])
    assert not torch.equal(x, x3)
    counts = []
    for image, t in _all_items(b):
        k = len(t["labels"])
        counts.append(k)
        assert image.shape == (3, CANVAS, CANVAS) and image.dtype == torch.uint8
        assert 1 <= k <= 4 and t["labels"].min() >= 0 and t["labels"].max() <= 2
        masks = t["masks"].as_subclass(torch.Tensor)
        assert isinstance(t["masks"], tv_tensors.Mask) and masks.shape == (k, CANVAS, CANVAS)
        # the box is the tight box of the instance mask (masks_to_boxes gives inclusive ends)
        torch.testing.assert_close(t["boxes"].as_subclass(torch.Tensor),
                                   masks_to_boxes(masks) + torch.tensor([0.0, 0.0, 1.0, 1.0]), atol=0, rtol=0)
        assert int(masks.sum(0).max()) <= 1  # instances do not overlap
        b_ = t["boxes"].as_subclass(torch.Tensor)
        assert bool((b_ >= 0).all()) and bool((b_ <= CANVAS).all())
    assert max(counts) > 1


def test_shapes_look_like_their_class():
    """A circle fills pi/4 of its box, a square between 1/2 (turned 45 degrees) and 1, a triangle less."""
    b = shapes(DataConfig(name="shapes", subset=60))
    fill = {0: [], 1: [], 2: []}
    for _, t in _all_items(b):
        boxes = t["boxes"].as_subclass(torch.Tensor)
        area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        for lab, m, a in zip(t["labels"].tolist(), t["masks"], area):
            fill[lab].append(float(m.sum()) / float(a))
    assert all(abs(f - np.pi / 4) < 0.1 for f in fill[0])
    assert all(0.45 < f <= 1.0 for f in fill[1])
    assert all(f < 0.6 for f in fill[2])


@pytest.fixture(scope="module")
def mnist_bundles():
    cfg = DataConfig(name="mnist_detect", subset=40, split_seed=1)
    return (mnist_detect(cfg), mnist_detect(cfg), mnist_detect(cfg.model_copy(update={"split_seed": 2})))


def test_mnist_detect_deterministic_and_boxes_are_the_ink(mnist_bundles):
    b, again, other = mnist_bundles
    assert b.classes == [str(d) for d in range(10)] and b.input_shape == (3, CANVAS, CANVAS)
    (x, t), (x2, t2), (x3, _) = b.train[0], again.train[0], other.train[0]
    assert torch.equal(x, x2) and torch.equal(t["boxes"], t2["boxes"]) and torch.equal(t["labels"], t2["labels"])
    assert not torch.equal(x, x3)
    for image, t in _all_items(b):
        assert image.shape == (3, CANVAS, CANVAS) and 1 <= len(t["labels"]) <= 4
        ink = image.amax(0) > 0
        covered = torch.zeros_like(ink)
        for x1, y1, x2, y2 in t["boxes"].as_subclass(torch.Tensor).int().tolist():
            assert 0 <= x1 < x2 <= CANVAS and 0 <= y1 < y2 <= CANVAS
            crop = ink[y1:y2, x1:x2]
            # tight: ink on every edge of the box
            assert crop[0].any() and crop[-1].any() and crop[:, 0].any() and crop[:, -1].any()
            assert not covered[y1:y2, x1:x2].any()  # digits do not overlap
            covered[y1:y2, x1:x2] = True
        assert not (ink & ~covered).any()  # no ink outside the boxes


# ------------------------------------------------------------------------------------- transforms

def _item(h: int, w: int, boxes, labels, masks: bool = False) -> tuple[torch.Tensor, dict]:
    """A black image with box k painted in colour (k + 1) * 40 (channel 0), as the dataset gives it."""
    image = torch.zeros(3, h, w, dtype=torch.uint8)
    b = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    m = torch.zeros(len(b), h, w, dtype=torch.uint8)
    for k, (x1, y1, x2, y2) in enumerate(b.int().tolist()):
        image[0, y1:y2, x1:x2] = (k + 1) * 40
        m[k, y1:y2, x1:x2] = 1
    return image, make_target(b, torch.tensor(labels), 5, "x.png", (h, w), m if masks else None)


def _painted_box(image: torch.Tensor, k: int) -> list[float]:
    ys, xs = torch.nonzero(image[0] == (k + 1) * 40, as_tuple=True)
    return [float(xs.min()), float(ys.min()), float(xs.max()) + 1, float(ys.max()) + 1]


def test_resize_scales_boxes_by_the_two_factors_and_keeps_uint8():
    image, t = _item(40, 60, [[10, 5, 25, 20]], [1])
    out, t2 = detection_transforms(None, 30, train=False)(image, t)
    assert out.shape == (3, 30, 30) and out.dtype == torch.uint8 and type(out) is torch.Tensor
    assert t2["boxes"].tolist() == [[5.0, 3.75, 12.5, 15.0]]  # x * 30/60, y * 30/40
    assert tuple(t2["boxes"].canvas_size) == (30, 30)
    assert t2["orig_size"] == (40, 60) and t2["image_id"] == 5 and t2["file"] == "x.png"
    assert t2["labels"].tolist() == [1] and "orig_size" not in t  # the dataset's target is untouched


def test_flip_mirrors_boxes_image_and_masks():
    image, t = _item(32, 48, [[4, 2, 14, 12], [30, 20, 48, 32]], [0, 1], masks=True)
    tf = detection_transforms(AugmentConfig(hflip=True), 48, train=True)
    seen = set()
    for seed in range(12):
        torch.manual_seed(seed)
        out, t2 = tf(image, t)  # no stretch in x: 48 -> 48; y 32 -> 48
        boxes = t2["boxes"].as_subclass(torch.Tensor)
        flipped = out[0, 10, 5] == 0  # inside the left box (y 3..18 after 32 -> 48), black once flipped
        seen.add(bool(flipped))
        if flipped:
            assert boxes[:, [0, 2]].tolist() == [[48 - 14, 48 - 4], [0, 48 - 30]]  # W - x2, W - x1
        else:
            assert boxes[:, [0, 2]].tolist() == [[4, 14], [30, 48]]
        for k in range(2):  # the painted pixels, the box and the mask agree
            assert _painted_box(out, k)[0::2] == boxes[k, [0, 2]].tolist()
            mask_box = masks_to_boxes(t2["masks"][k:k + 1].as_subclass(torch.Tensor))[0]
            assert [float(mask_box[0]), float(mask_box[2]) + 1] == boxes[k, [0, 2]].tolist()
    assert seen == {True, False}


def test_sanitize_drops_boxes_that_shrink_below_a_pixel_with_their_labels_and_masks():
    image, t = _item(100, 100, [[10, 10, 60, 60], [70, 70, 72, 90]], [0, 1], masks=True)
    out, t2 = detection_transforms(None, 20, train=False)(image, t)  # the 2 px wide box becomes 0.4 px
    assert t2["boxes"].tolist() == [[2.0, 2.0, 12.0, 12.0]] and t2["labels"].tolist() == [0]
    assert t2["masks"].shape == (1, 20, 20)


def test_scale_jitter_moves_boxes_with_the_pixels_and_drops_boxes_that_leave():
    image, t = _item(64, 64, [[0, 0, 6, 6], [20, 24, 44, 40]], [0, 1])
    tf = detection_transforms(AugmentConfig(scale_jitter=0.8), 64, train=True)  # 64 -> 64: no resize blur
    dropped = 0
    for seed in range(40):
        torch.manual_seed(seed)
        out, t2 = tf(image, t)
        boxes = t2["boxes"].as_subclass(torch.Tensor)
        assert len(boxes) == len(t2["labels"]) and bool((boxes >= 0).all()) and bool((boxes <= 64).all())
        for box, lab in zip(boxes.tolist(), t2["labels"].tolist()):
            # nearest-neighbour affine: the painted pixels fill the moved box up to rounding
            assert np.allclose(_painted_box(out, lab), box, atol=1.01), (seed, box, _painted_box(out, lab))
        dropped += 0 not in t2["labels"].tolist()
    assert 0 < dropped < 40


def test_color_jitter_changes_pixels_not_boxes_and_unsupported_options_are_refused():
    image, t = _item(16, 16, [[2, 2, 8, 8]], [0])
    image[1] = 120
    torch.manual_seed(0)
    out, t2 = detection_transforms(AugmentConfig(brightness=0.5, contrast=0.5), 16, train=True)(image, t)
    assert out.dtype == torch.uint8 and not torch.equal(out, image) and t2["boxes"].tolist() == [[2, 2, 8, 8]]
    # evaluation transforms never augment
    out, _ = detection_transforms(AugmentConfig(brightness=0.5, hflip=True), 16, train=False)(image, t)
    assert torch.equal(out, image)
    for bad in (dict(rotation=10.0), dict(cutout=4), dict(crop_padding=2), dict(hflip="alternating")):
        with pytest.raises(UserError, match="augment"):
            detection_transforms(AugmentConfig(**bad), 16, train=True)


def test_empty_targets_pass_the_training_transform_and_collate():
    image, t = _item(30, 40, [], [], masks=True)
    tf = detection_transforms(AugmentConfig(hflip=True, scale_jitter=0.3, brightness=0.2, contrast=0.2), 24, True)
    out, t2 = tf(image, t)
    assert out.shape == (3, 24, 24) and t2["boxes"].shape == (0, 4) and t2["labels"].shape == (0,)
    images, targets = detection_collate([(out, t2)])
    assert images.shape == (1, 3, 24, 24) and targets[0]["boxes"].shape == (0, 4)


def test_collate_stacks_images_and_gives_plain_tensors():
    ds = DetectionDataset([], ["a", "b"])
    assert len(ds) == 0
    b = shapes(DataConfig(name="shapes", subset=6))
    tf = detection_transforms(None, 64, train=False)
    items = [tf(*b.train[i]) for i in range(5)]
    images, targets = detection_collate(items)
    assert images.shape == (5, 3, 64, 64) and images.dtype == torch.uint8
    assert len(targets) == 5
    for (x, t), got in zip(items, targets):
        assert type(got["boxes"]) is torch.Tensor and got["boxes"].dtype == torch.float32
        assert got["boxes"].shape == (len(t["labels"]), 4) and got["labels"].dtype == torch.int64
        assert torch.equal(got["boxes"], t["boxes"].as_subclass(torch.Tensor))
        assert got["orig_size"] == (CANVAS, CANVAS) and got["image_id"] == t["image_id"] and got["file"] == t["file"]
        assert type(got["masks"]) is torch.Tensor and got["masks"].shape == (len(t["labels"]), 64, 64)
    # boxes follow the 128 -> 64 resize: half of the original boxes
    torch.testing.assert_close(targets[0]["boxes"], b.train[0][1]["boxes"].as_subclass(torch.Tensor) / 2)
    with pytest.raises(ValueError, match="one size"):
        detection_collate([items[0], (torch.zeros(3, 8, 8, dtype=torch.uint8), items[0][1])])


def test_a_file_changed_after_building_is_reported(tmp_path):
    write_coco(tmp_path)
    ds = read_coco(tmp_path / "instances_train.json", tmp_path)
    Image.new("RGB", (10, 10)).save(tmp_path / "images" / "a.png")
    with pytest.raises(UserError, match="a.png.*rebuild"):
        ds[0]
    assert isinstance(ds.records[0], ImageRecord)


def test_the_loaders_batch_detection_items_with_the_task_transform():
    from cnnkit.data.loaders import make_loader

    b = shapes(DataConfig(name="shapes", subset=10))
    loader = make_loader(b.train, batch_size=4, mean=b.mean, std=b.std, shuffle=True, seed=0, device="cpu",
                         augment=None, collate=detection_collate,
                         transform=detection_transforms(AugmentConfig(hflip=True), 32, train=True))
    batches = list(loader)
    assert [len(t) for _, t in batches] == [4, 4, 2]
    x, targets = batches[0]
    assert x.shape == (4, 3, 32, 32) and x.dtype == torch.float32
    assert abs(float(x.mean())) < 1.0  # normalised by the bundle's mean and std
    again = list(loader)  # the same epoch again: the same flips (seeded per item)
    for (_, t1), (_, t2) in zip(batches, again):
        assert all(torch.equal(a["boxes"], c["boxes"]) for a, c in zip(t1, t2))


def test_generated_images_are_kept_and_handed_out_as_copies():
    from cnnkit.data.detection.synthetic import ShapesDataset

    ds = ShapesDataset(seed=3, indices=[0, 1, 2])
    first_image, first_target = ds[1]
    fresh = ShapesDataset(seed=3, indices=[1])[0]  # drawn anew by another instance
    assert torch.equal(first_image, fresh[0]) and torch.equal(first_target["masks"], fresh[1]["masks"])
    first_image.zero_()
    first_target["masks"].zero_()  # a caller writing into its item must not change the kept one
    again_image, again_target = ds[1]
    assert torch.equal(again_image, fresh[0]) and torch.equal(again_target["masks"], fresh[1]["masks"])
    assert 1 in ds._drawn and ds.subset([1])._drawn is ds._drawn


# --------------------------------------------------------------------------- mosaic


def _tile(value: int, boxes: list[list[float]], label: int, side: int = 40):
    image = torch.full((3, side, side), value, dtype=torch.uint8)
    masks = torch.zeros(len(boxes), side, side, dtype=torch.uint8)
    for k, (x1, y1, x2, y2) in enumerate(boxes):
        masks[k, int(y1):int(y2), int(x1):int(x2)] = 1
    return image, make_target(torch.tensor(boxes), torch.full((len(boxes),), label), label, f"t{label}",
                              (side, side), masks)


class _Tiles(torch.utils.data.Dataset):
    def __init__(self, items):
        self.items = items

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def test_mosaic_places_four_tiles_around_the_centre_by_hand():
    from cnnkit.data.detection.transforms import Mosaic

    tiles = [_tile(10, [[0.0, 20, 40, 40], [0, 0, 40, 20]], 0),  # top-left: the lower half and the upper half
             _tile(20, [[2.0, 0, 6, 8]], 1),       # top-right tile: this box ends up outside the window
             _tile(30, [[20.0, 0, 30, 10]], 2),    # bottom-left
             _tile(40, [[0.0, 0, 10, 20]], 3)]     # bottom-right: half of this box is visible
    mosaic = Mosaic(_Tiles(tiles), image_size=40, p=1.0, epochs=1)
    image, target = mosaic.combine([mosaic._tile(i) for i in range(4)], centre=(30, 10))
    # Window pixels: x < 30 and y < 10 from the top-left tile, x >= 30 and y < 10 from the top-right, ...
    assert image[0, 0, 0] == 10 and image[0, 9, 29] == 10 and image[0, 9, 30] == 20
    assert image[0, 10, 29] == 30 and image[0, 39, 39] == 40
    # The top-left tile moves by (-10, -30): its lower half becomes (-10, -10, 30, 10), of which
    # 30 x 10 of 40 x 20 (3/8 >= MIN_VISIBLE) is visible; its upper half is outside. The top-right's
    # box becomes (32, -30, 36, -22), outside; the bottom-left's moves to (10, 10, 20, 20); the
    # bottom-right's to (30, 10, 40, 30): 10 of its 20 px wide box remain (half).
    assert target["labels"].tolist() == [0, 2, 3]
    want = torch.tensor([[0.0, 0, 30, 10], [10, 10, 20, 20], [30, 10, 40, 30]])
    torch.testing.assert_close(target["boxes"].as_subclass(torch.Tensor), want)
    assert target["boxes"].canvas_size == (40, 40)
    # Each mask moved with its box: its tight box is the box.
    torch.testing.assert_close(masks_to_boxes(target["masks"]) + torch.tensor([0.0, 0, 1, 1]), want)


def test_mosaic_probability_and_its_last_plain_epochs():
    from cnnkit.data.detection.transforms import Mosaic

    data = _Tiles([_tile(10 * (i + 1), [[0.0, 0, 40, 40]], i) for i in range(4)])
    mosaic = Mosaic(data, image_size=40, p=1.0, epochs=5, off_epochs=2)
    torch.manual_seed(0)
    assert any(len(mosaic.item_at_epoch(0, 3)[1]["labels"]) > 1 for _ in range(10))  # epoch 3: mosaics
    for key in (4, 5):  # the last two epochs: the item itself
        image, target = mosaic.item_at_epoch(0, key)
        assert target["labels"].tolist() == [0] and image.unique().tolist() == [10]
    # With data.epoch_repeats 2 the key of epoch e, pass k, is 2e + k.
    mosaic = Mosaic(data, image_size=40, p=1.0, epochs=5, off_epochs=2, repeats=2)
    assert mosaic.item_at_epoch(0, 9)[1]["labels"].tolist() == [0]
    never = Mosaic(data, image_size=40, p=0.0, epochs=5)
    assert all(never.item_at_epoch(0, 1)[1]["labels"].tolist() == [0] for _ in range(5))


def test_mosaic_is_refused_for_classification():
    from cnnkit.config import DEFAULT_CONFIG, load_config
    from cnnkit.tasks import create_task

    with pytest.raises(UserError, match="augment.mosaic=0.5 is a detection augmentation"):
        create_task(load_config(DEFAULT_CONFIG, ["augment.mosaic=0.5"]), ["a", "b"], (3, 8, 8))
    # More plain epochs than epochs: all of them are plain.
    cfg = load_config(DEFAULT_CONFIG, ["task=detection", "data.image_size=40", "augment.mosaic=1",
                                       "augment.mosaic_off_epochs=3", "train.epochs=2"])
    data = _Tiles([_tile(10 * (i + 1), [[0.0, 0, 40, 40]], i) for i in range(4)])
    mosaic = create_task(cfg, ["a"], (3, 40, 40)).train_data(data)
    assert all(mosaic.item_at_epoch(1, e)[1]["labels"].tolist() == [1] for e in (1, 2))
