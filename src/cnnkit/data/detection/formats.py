"""Detection datasets stored as files: ``coco``, ``yolo`` and ``voc``.

Each reader turns its format's boxes into one convention, XYXY in absolute pixels on the continuous
image plane (pixel ``i`` spans ``i .. i + 1``), checks every image and box against the image's real
size, and keeps the images at their own size (the task's transform resizes):

* ``coco``: ``data.path`` holds the images (directly or under ``images/``) and one
  ``instances_*.json`` (or ``data.annotations`` names the file). Read with pycocotools. COCO boxes
  are ``[x, y, w, h]``; category ids become labels ``0..C-1`` in sorted id order, named by the
  categories. Crowd regions (``iscrowd: 1``) are not objects to detect and are left out. Each
  annotation's ``segmentation`` (polygons, RLE or uncompressed RLE) is kept: with
  ``dataset.with_masks = True`` (see :class:`CocoDataset`) items also carry the instance masks.
* ``yolo``: ``data.path`` holds ``images/`` and ``labels/`` with the same relative paths and stems
  (``images/a/x.jpg`` <-> ``labels/a/x.txt``); a label line is ``class cx cy w h``, normalised to
  0..1. Class names come from ``classes.txt`` (one per line) or ``data.yaml`` (``names:`` a list or
  a ``{index: name}`` mapping) in ``data.path``. An image without a label file has no objects.
* ``voc``: Pascal VOC, ``data.path`` holds ``JPEGImages/`` (or ``images/``) and ``Annotations/`` (or
  one ``annotations*/`` folder, or ``data.annotations`` names the folder) with one XML per image.
  VOC pixel indices are 1-based and inclusive, so ``xmin``/``ymin`` lose 1: a box over the pixels
  ``1..W`` is ``0..W`` on the continuous plane. Class names are the sorted set of ``<name>``s.
  ``difficult`` objects are kept (as Detectron2 and torchvision's references train on them).

Example::

    bundle = load_data(DataConfig(name="coco", path="../shared/data/raccoon"))
    image, target = bundle.train[0]     # uint8 (3, H, W); target["boxes"] (K, 4) XYXY pixels
"""

from __future__ import annotations

import contextlib
import io
import json
import warnings
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torchvision import tv_tensors
from torchvision.ops import box_convert

from cnnkit.config import DataConfig
from cnnkit.data.base import DataBundle
from cnnkit.data.detection.common import (DetectionDataset, ImageRecord, check_boxes, image_size_of,
                                          reject_classification_options, split_and_bundle)
from cnnkit.data.registry import register_dataset
from cnnkit.errors import UserError

#: The square size the task resizes to when ``data.image_size`` is unset.
FILE_DEFAULT_SIZE = 320
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def _folder(cfg: DataConfig, what: str) -> Path:
    """``data.path`` as an existing folder, or a UserError saying what the dataset needs."""
    if not cfg.path:
        raise UserError(f"data.name={cfg.name} needs data.path=FOLDER ({what})")
    root = Path(cfg.path)
    if not root.is_dir():
        raise UserError(f"data.path {str(root)!r} of dataset {cfg.name!r} does not exist or is not a folder")
    return root


def _records_to_tensor(boxes: list[list[float]] | np.ndarray, labels: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    b = torch.as_tensor(np.asarray(boxes, dtype=np.float64).reshape(-1, 4), dtype=torch.float32)
    return b, torch.as_tensor(labels, dtype=torch.int64).reshape(-1)


# ---------------------------------------------------------------------------------------------- COCO

@register_dataset("coco", "object detection, COCO format: images + instances_*.json (data.path, "
                          "data.annotations); boxes xywh")
def coco(cfg: DataConfig) -> DataBundle:
    reject_classification_options(cfg)
    ann_file, image_root = _coco_files(cfg)
    dataset = read_coco(ann_file, image_root)
    return split_and_bundle(cfg, dataset, FILE_DEFAULT_SIZE, f"COCO {ann_file}")


def _coco_files(cfg: DataConfig) -> tuple[Path, Path]:
    """The annotation file and the folder image file names are relative to."""
    if cfg.annotations:
        ann = Path(cfg.annotations)
        if not ann.is_file() and cfg.path and (Path(cfg.path) / ann).is_file():
            ann = Path(cfg.path) / ann
        if not ann.is_file():
            raise UserError(f"data.annotations {cfg.annotations!r} does not exist or is not a file "
                            f"(a COCO instances JSON)")
        if cfg.path:
            return ann, _folder(cfg, "the images")
        return ann, ann.parent
    root = _folder(cfg, "the images and an instances_*.json, or set data.annotations=FILE")
    found = sorted(root.glob("instances_*.json")) or sorted(root.glob("annotations/instances_*.json"))
    if not found:
        raise UserError(f"no COCO annotation file instances_*.json in {str(root)!r} or its annotations/ "
                        f"folder; name one with data.annotations=FILE")
    if len(found) > 1:
        names = ", ".join(str(f.relative_to(root)) for f in found)
        raise UserError(f"{str(root)!r} holds {len(found)} COCO annotation files ({names}); choose one with "
                        f"data.annotations=FILE")
    return found[0], root


def _load_json(ann_file: Path) -> dict:
    """The annotation file's contents, or a UserError saying why it is not a COCO instances file."""
    text = ann_file.read_text(encoding="utf-8", errors="replace")
    if not text.strip():
        raise UserError(f"COCO annotation file {str(ann_file)!r} is empty")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise UserError(f"COCO annotation file {str(ann_file)!r} is not JSON (line {e.lineno}, column "
                        f"{e.colno}: {e.msg})") from None
    if not isinstance(data, dict):
        raise UserError(f"COCO annotation file {str(ann_file)!r} holds a JSON {type(data).__name__}; "
                        f"expected an object with images, annotations and categories")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise UserError(f"COCO annotation file {str(ann_file)!r} has no {key!r} list (keys: "
                            f"{', '.join(map(repr, data)) or 'none'})")
    if not data["images"]:
        raise UserError(f"COCO annotation file {str(ann_file)!r} lists no images")
    if not data["categories"]:
        raise UserError(f"COCO annotation file {str(ann_file)!r} lists no categories")
    return data


def _check_coco_fields(data: dict, ann_file: Path) -> None:
    """Fields pycocotools indexes by (and the ones we read) are present and of the right type; duplicate
    ids would silently replace each other in its index."""
    src = str(ann_file)
    seen: set[Any] = set()
    for i, img in enumerate(data["images"]):
        if not isinstance(img, dict) or not isinstance(img.get("id"), int) or not isinstance(img.get("file_name"), str):
            raise UserError(f"{src}: images[{i}] = {str(img)[:120]} needs an integer 'id' and a 'file_name'")
        if img["id"] in seen:
            raise UserError(f"{src}: image id {img['id']} appears twice in images (second: {img['file_name']!r})")
        seen.add(img["id"])
    cats: set[Any] = set()
    for i, cat in enumerate(data["categories"]):
        if not isinstance(cat, dict) or not isinstance(cat.get("id"), int) or "name" not in cat:
            raise UserError(f"{src}: categories[{i}] = {str(cat)[:120]} needs an integer 'id' and a 'name'")
        if cat["id"] in cats:
            raise UserError(f"{src}: category id {cat['id']} appears twice in categories")
        cats.add(cat["id"])
    for i, ann in enumerate(data["annotations"]):
        ann_id = ann.get("id", f"#{i}") if isinstance(ann, dict) else f"#{i}"
        if not isinstance(ann, dict) or "image_id" not in ann or "category_id" not in ann or "bbox" not in ann:
            raise UserError(f"{src}: annotation {ann_id} = {str(ann)[:120]} needs 'image_id', 'category_id' "
                            f"and 'bbox'")
        bbox = ann["bbox"]
        if (not isinstance(bbox, list) or len(bbox) != 4
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in bbox)):
            raise UserError(f"{src}: annotation {ann_id} (image id {ann['image_id']}): bbox {bbox} must be "
                            f"[x, y, width, height], four numbers")
        if ann["image_id"] not in seen:
            raise UserError(f"{src}: annotation {ann_id} refers to image id {ann['image_id']}, which is not in "
                            f"images")
        if ann["category_id"] not in cats:
            raise UserError(f"{src}: annotation {ann_id} (image id {ann['image_id']}) has unknown category id "
                            f"{ann['category_id']}; the categories are {sorted(cats)}")


class CocoDataset(DetectionDataset):
    """The images of a COCO file (a :class:`DetectionDataset`) that also keep each object's
    ``segmentation``: ``segmentations[i]`` holds ``(annotation id, segmentation or None)`` per box of
    record ``i``.

    ``with_masks`` (a plain attribute, False by default, so detection decodes no masks) set to True
    adds ``target["masks"]``, a :class:`~torchvision.tv_tensors.Mask` ``(K, H, W)`` uint8 of the
    objects' instance masks, decoded by pycocotools when the item is read. :meth:`check_masks` says
    before training whether every object has a segmentation to decode.
    """

    def __init__(self, records: Sequence[ImageRecord], classes: Sequence[str],
                 segmentations: Sequence[tuple[tuple[Any, Any], ...]], ann_file: str = "") -> None:
        super().__init__(records, classes)
        self.segmentations = list(segmentations)
        self.ann_file = ann_file
        self.with_masks = False

    def __getitem__(self, i: int) -> tuple[torch.Tensor, dict]:
        image, target = super().__getitem__(i)
        if self.with_masks:
            target["masks"] = tv_tensors.Mask(torch.from_numpy(self.instance_masks(i)))
        return image, target

    def instance_masks(self, i: int) -> np.ndarray:
        """The instance masks uint8 ``(K, H, W)`` (0/1) of record ``i``'s objects, in box order."""
        r = self.records[i]
        height, width = r.size
        out = np.zeros((len(self.segmentations[i]), height, width), dtype=np.uint8)
        for k, (ann_id, segm) in enumerate(self.segmentations[i]):
            out[k] = coco_segmentation_mask(segm, height, width, self._where(i, ann_id))
        return out

    def check_masks(self) -> None:
        """A UserError for the first object without a segmentation (or with one of a wrong form)."""
        for i, segs in enumerate(self.segmentations):
            height, width = self.records[i].size
            for ann_id, segm in segs:
                _check_segmentation(segm, height, width, self._where(i, ann_id))

    def _where(self, i: int, ann_id: Any) -> str:
        r = self.records[i]
        return f"{self.ann_file}: annotation {ann_id} of image {Path(r.file).name!r} (id {r.image_id})"

    def subset(self, index: Sequence[int]) -> "CocoDataset":
        out = CocoDataset([self.records[int(i)] for i in index], self.classes,
                          [self.segmentations[int(i)] for i in index], self.ann_file)
        out.with_masks = self.with_masks
        return out


def _check_segmentation(segm: Any, height: int, width: int, where: str) -> None:
    """A UserError unless ``segm`` is COCO polygons, an RLE or an uncompressed RLE of a ``height`` x ``width`` image."""
    forms = ("a list of polygons [[x1, y1, x2, y2, ...], ...], an RLE {'counts': str, 'size': [h, w]} or an "
             "uncompressed RLE {'counts': [n1, n2, ...], 'size': [h, w]}")
    if segm is None or (isinstance(segm, (list, dict)) and not segm):
        raise UserError(f"{where} has no 'segmentation', but masks are asked for (semantic segmentation from "
                        f"instances); give every object a segmentation: {forms}")
    if isinstance(segm, list):
        for p, poly in enumerate(segm):
            if (not isinstance(poly, list) or len(poly) < 6 or len(poly) % 2
                    or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in poly)):
                raise UserError(f"{where}: polygon {p} of its segmentation is {str(poly)[:80]}; a polygon is a list "
                                f"of at least 3 points x1, y1, x2, y2, ... (6 or more numbers, an even count)")
        return
    if isinstance(segm, dict) and "counts" in segm and "size" in segm:
        if list(segm["size"]) != [height, width]:
            raise UserError(f"{where}: its RLE segmentation has size {segm['size']} (height, width) but the image is "
                            f"{height}x{width} (height x width)")
        counts = segm["counts"]
        if isinstance(counts, (str, bytes)) or (isinstance(counts, list) and all(isinstance(c, int) for c in counts)):
            if isinstance(counts, list) and sum(counts) != height * width:
                raise UserError(f"{where}: its uncompressed RLE counts add up to {sum(counts)} pixels, but the image "
                                f"has {height} x {width} = {height * width}")
            return
    raise UserError(f"{where}: segmentation {str(segm)[:80]} is not {forms}")


def coco_segmentation_mask(segm: Any, height: int, width: int, where: str) -> np.ndarray:
    """The 0/1 mask uint8 ``(height, width)`` of a COCO ``segmentation``: polygons, an RLE (``counts`` a
    string) or an uncompressed RLE (``counts`` a list, column-major runs), decoded by pycocotools as
    its ``COCO.annToMask`` does. ``where`` names the annotation in error messages."""
    from pycocotools import mask as mask_utils

    _check_segmentation(segm, height, width, where)
    if isinstance(segm, list):  # polygons: one RLE each, merged
        rle = mask_utils.merge(mask_utils.frPyObjects(segm, height, width))
    elif isinstance(segm["counts"], list):  # uncompressed RLE
        rle = mask_utils.frPyObjects(segm, height, width)
    else:
        rle = segm
    with warnings.catch_warnings():
        # pycocotools 2.0.x asks numpy 2 for a copy-free array in a deprecated way; the result is right.
        warnings.filterwarnings("ignore", message="__array__ implementation doesn't accept a copy keyword",
                                category=DeprecationWarning)
        return np.ascontiguousarray(mask_utils.decode(rle), dtype=np.uint8)


def read_coco(ann_file: Path | str, image_root: Path | str) -> CocoDataset:
    """Every image of a COCO instances file, its boxes converted from xywh to XYXY and checked, and its
    objects' segmentations kept for :class:`CocoDataset` to decode when masks are asked for.

    An image's file is ``image_root / file_name``, else ``image_root / "images" / file_name``.
    """
    from pycocotools.coco import COCO

    ann_file, image_root = Path(ann_file), Path(image_root)
    data = _load_json(ann_file)
    _check_coco_fields(data, ann_file)
    api = COCO()  # parsed above for clear messages; pycocotools indexes it (quietly: it prints progress)
    api.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):
        api.createIndex()
    cat_ids = sorted(api.getCatIds())
    label_of = {cid: i for i, cid in enumerate(cat_ids)}
    classes = [str(api.loadCats(cid)[0]["name"]) for cid in cat_ids]
    records, segmentations = [], []
    for img_id in sorted(api.getImgIds()):
        info = api.loadImgs(img_id)[0]
        name = info["file_name"]
        path = image_root / name
        if not path.is_file() and (image_root / "images" / name).is_file():
            path = image_root / "images" / name
        where = f"{ann_file}: image {name!r} (id {img_id})"
        if not path.is_file():
            raise UserError(f"{where}: image file not found in {str(image_root)!r} or its images/ folder")
        width, height = image_size_of(path, where)
        if ("width" in info and info["width"] != width) or ("height" in info and info["height"] != height):
            raise UserError(f"{where}: the file is {width}x{height} but the annotation says "
                            f"{info.get('width')}x{info.get('height')}; its boxes would not fit the image")
        anns = [a for a in api.loadAnns(api.getAnnIds(imgIds=img_id)) if not a.get("iscrowd", 0)]
        xywh = torch.as_tensor([a["bbox"] for a in anns], dtype=torch.float64).reshape(-1, 4)
        xyxy = box_convert(xywh, "xywh", "xyxy").numpy()
        boxes = check_boxes(xyxy, width, height,
                            lambda k: f"{where}, annotation {anns[k].get('id')} (bbox {anns[k]['bbox']} as x, y, w, h)")
        b, lab = _records_to_tensor(boxes, [label_of[a["category_id"]] for a in anns])
        records.append(ImageRecord(str(path), (height, width), b, lab, int(img_id)))
        segmentations.append(tuple((a.get("id"), a.get("segmentation")) for a in anns))
    return CocoDataset(records, classes, segmentations, str(ann_file))


# ---------------------------------------------------------------------------------------------- YOLO

@register_dataset("yolo", "object detection, YOLO format: images/ + labels/ (cls cx cy w h, normalised) and "
                          "classes.txt or data.yaml (data.path)")
def yolo(cfg: DataConfig) -> DataBundle:
    reject_classification_options(cfg)
    root = _folder(cfg, "with images/, labels/ and classes.txt or data.yaml")
    dataset = read_yolo(root)
    return split_and_bundle(cfg, dataset, FILE_DEFAULT_SIZE, f"YOLO {root}")


def yolo_classes(root: Path) -> list[str]:
    """Class names from ``root/classes.txt`` (one per line) or ``root/data.yaml`` (``names:``)."""
    txt, yml = root / "classes.txt", root / "data.yaml"
    if txt.is_file():
        names = [line.strip() for line in txt.read_text(encoding="utf-8").splitlines() if line.strip()]
        if not names:
            raise UserError(f"{str(txt)!r} is empty; write one class name per line")
        return names
    if yml.is_file():
        import yaml

        try:
            meta = yaml.safe_load(yml.read_text(encoding="utf-8"))
        except yaml.YAMLError as e:
            raise UserError(f"{str(yml)!r} is not valid YAML: {e}") from None
        names = meta.get("names") if isinstance(meta, dict) else None
        if isinstance(names, dict):
            keys = sorted(names)
            if keys != list(range(len(keys))):
                raise UserError(f"{str(yml)!r}: names has keys {keys}; they must be the class indices "
                                f"0..{len(keys) - 1}")
            names = [names[k] for k in keys]
        if not isinstance(names, list) or not names:
            raise UserError(f"{str(yml)!r} needs 'names:', a list of class names or a mapping index -> name")
        return [str(n) for n in names]
    raise UserError(f"YOLO dataset {str(root)!r} has no classes.txt or data.yaml naming its classes")


def read_yolo(root: Path | str) -> DetectionDataset:
    """Every image under ``root/images`` with the boxes of its ``root/labels`` file, in pixels."""
    root = Path(root)
    images_dir, labels_dir = root / "images", root / "labels"
    for d in (images_dir, labels_dir):
        if not d.is_dir():
            raise UserError(f"YOLO dataset {str(root)!r} has no {d.name}/ folder (need images/ and labels/)")
    classes = yolo_classes(root)
    images: dict[Path, Path] = {}  # relative path without suffix -> image file
    for f in sorted(images_dir.rglob("*")):
        if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES:
            key = f.relative_to(images_dir).with_suffix("")
            if key in images:
                raise UserError(f"YOLO images {str(images[key])!r} and {str(f)!r} share the stem, so both would "
                                f"take the label file labels/{key}.txt; rename one")
            images[key] = f
    if not images:
        raise UserError(f"YOLO folder {str(images_dir)!r} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    for f in sorted(labels_dir.rglob("*.txt")):
        key = f.relative_to(labels_dir).with_suffix("")
        if key not in images and f.name != "classes.txt":
            raise UserError(f"YOLO label file {str(f)!r} has no image images/{key}.* (the stems must match)")
    records = []
    for i, (key, path) in enumerate(images.items()):
        width, height = image_size_of(path, f"YOLO image {key}")
        label_file = labels_dir / key.with_suffix(".txt")
        rows = _yolo_rows(label_file, len(classes)) if label_file.is_file() else []
        cxcywh = torch.as_tensor([r[1:] for _, r in rows], dtype=torch.float64).reshape(-1, 4)
        cxcywh *= torch.tensor([width, height, width, height], dtype=torch.float64)
        xyxy = box_convert(cxcywh, "cxcywh", "xyxy").numpy()
        boxes = check_boxes(xyxy, width, height,
                            lambda k: f"{label_file} line {rows[k][0]} (image {path.name}, {width}x{height})")
        b, lab = _records_to_tensor(boxes, [int(r[0]) for _, r in rows])
        records.append(ImageRecord(str(path), (height, width), b, lab, i))
    return DetectionDataset(records, classes)


def _yolo_rows(label_file: Path, num_classes: int) -> list[tuple[int, tuple[float, ...]]]:
    """``(line number, (class, cx, cy, w, h))`` of each non-empty line, checked."""
    rows = []
    for n, line in enumerate(label_file.read_text(encoding="utf-8", errors="replace").splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        where = f"{label_file} line {n}: {line.strip()!r}"
        if len(fields) != 5:
            raise UserError(f"{where} has {len(fields)} fields; a YOLO box line is 'class cx cy w h' (5 fields; "
                            f"polygons are not read)")
        try:
            cls = int(fields[0])
        except ValueError:
            raise UserError(f"{where}: class {fields[0]!r} is not an integer index") from None
        try:
            values = tuple(float(v) for v in fields[1:])
        except ValueError:
            raise UserError(f"{where}: cx cy w h must be numbers") from None
        if not 0 <= cls < num_classes:
            raise UserError(f"{where}: class index {cls} is out of range 0..{num_classes - 1} "
                            f"({num_classes} classes)")
        rows.append((n, (cls, *values)))
    return rows


# ----------------------------------------------------------------------------------------------- VOC

@register_dataset("voc", "object detection, Pascal VOC format: JPEGImages/ + Annotations/ XML (data.path); "
                         "1-based pixel boxes")
def voc(cfg: DataConfig) -> DataBundle:
    reject_classification_options(cfg)
    root = _folder(cfg, "with JPEGImages/ (or images/) and Annotations/ (or annotations*/)")
    images_dir, ann_dir = _voc_folders(root, cfg.annotations)
    dataset = read_voc(ann_dir, images_dir)
    return split_and_bundle(cfg, dataset, FILE_DEFAULT_SIZE, f"VOC {root}")


def _voc_folders(root: Path, annotations: str | None) -> tuple[Path, Path]:
    images = next((root / n for n in ("JPEGImages", "images") if (root / n).is_dir()), None)
    if images is None:
        raise UserError(f"VOC dataset {str(root)!r} has no JPEGImages/ or images/ folder")
    if annotations:
        ann = Path(annotations)
        ann = ann if ann.is_dir() else root / ann
        if not ann.is_dir():
            raise UserError(f"data.annotations {annotations!r} is not a folder of VOC XML files")
        return images, ann
    if (root / "Annotations").is_dir():
        return images, root / "Annotations"
    found = sorted(d for d in root.iterdir() if d.is_dir() and d.name.lower().startswith("annotations"))
    if not found:
        raise UserError(f"VOC dataset {str(root)!r} has no Annotations/ (or annotations*/) folder of XML files")
    if len(found) > 1:
        raise UserError(f"VOC dataset {str(root)!r} has {len(found)} annotation folders "
                        f"({', '.join(d.name for d in found)}); choose one with data.annotations=FOLDER")
    return images, found[0]


def _text(node: ET.Element, tag: str, where: str) -> str:
    child = node.find(tag)
    if child is None or child.text is None or not child.text.strip():
        raise UserError(f"{where}: missing <{tag}>")
    return child.text.strip()


def _number(node: ET.Element, tag: str, where: str) -> float:
    text = _text(node, tag, where)
    try:
        return float(text)
    except ValueError:
        raise UserError(f"{where}: <{tag}> is {text!r}, not a number") from None


def read_voc(ann_dir: Path | str, images_dir: Path | str) -> DetectionDataset:
    """Every XML file of ``ann_dir`` with its image in ``images_dir``; class names sorted."""
    ann_dir, images_dir = Path(ann_dir), Path(images_dir)
    xml_files = sorted(ann_dir.glob("*.xml"))
    if not xml_files:
        raise UserError(f"VOC annotation folder {str(ann_dir)!r} holds no .xml files")
    parsed = []
    for xf in xml_files:
        try:
            root = ET.parse(xf).getroot()
        except ET.ParseError as e:
            raise UserError(f"VOC annotation {str(xf)!r} is not well-formed XML ({e})") from None
        path = _voc_image(root, xf, images_dir)
        where = f"{xf} (image {path.name})"
        width, height = image_size_of(path, where)
        size = root.find("size")
        if size is not None and size.find("width") is not None and size.find("height") is not None:
            w, h = _number(size, "width", where), _number(size, "height", where)
            if w and h and (w, h) != (width, height):  # some converters write 0 for "unknown"
                raise UserError(f"{where}: <size> says {w:g}x{h:g} but the image is {width}x{height}; its boxes "
                                f"would not fit the image")
        objects = []
        for k, obj in enumerate(root.findall("object")):
            owhere = f"{where}, object {k + 1}"
            name = _text(obj, "name", owhere)
            bb = obj.find("bndbox")
            if bb is None:
                raise UserError(f"{owhere} ({name!r}): missing <bndbox>")
            xmin, ymin, xmax, ymax = (_number(bb, t, f"{owhere} ({name!r})") for t in ("xmin", "ymin", "xmax", "ymax"))
            objects.append((name, (xmin - 1.0, ymin - 1.0, xmax, ymax), (xmin, ymin, xmax, ymax)))
        parsed.append((xf, path, width, height, objects))
    classes = sorted({name for *_, objects in parsed for name, _, _ in objects})
    label_of = {c: i for i, c in enumerate(classes)}
    records = []
    for i, (xf, path, width, height, objects) in enumerate(parsed):
        boxes = check_boxes(np.asarray([o[1] for o in objects], dtype=np.float64).reshape(-1, 4), width, height,
                            lambda k: (f"{xf} (image {path.name}, {width}x{height}), object {k + 1} "
                                       f"({objects[k][0]!r}, xmin ymin xmax ymax = "
                                       f"{' '.join(f'{v:g}' for v in objects[k][2])}, 1-based)"))
        b, lab = _records_to_tensor(boxes, [label_of[o[0]] for o in objects])
        records.append(ImageRecord(str(path), (height, width), b, lab, i))
    if not classes:
        raise UserError(f"VOC annotations in {str(ann_dir)!r} hold no <object>s, so there are no classes")
    return DetectionDataset(records, classes)


def _voc_image(root: ET.Element, xml_file: Path, images_dir: Path) -> Path:
    """The image an XML file annotates: its ``<filename>`` in ``images_dir``, else the image with the
    XML file's stem (converters often leave a stale ``<filename>``)."""
    name_el = root.find("filename")
    name = name_el.text.strip() if name_el is not None and name_el.text else ""
    if name and (images_dir / name).is_file():
        return images_dir / name
    same_stem = sorted(p for p in images_dir.glob(xml_file.stem + ".*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if same_stem:
        return same_stem[0]
    raise UserError(f"VOC annotation {str(xml_file)!r}: image file {name or xml_file.stem + '.*'!r} not found in "
                    f"{str(images_dir)!r}")
