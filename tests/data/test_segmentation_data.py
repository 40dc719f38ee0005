"""Segmentation data: the ``masks`` reader against masks written by hand (both folder layouts, binary,
palette and class-index PNGs, data.mask_values), its error messages, the split and statistics, semantic
masks from the shapes set and from COCO polygons and RLEs (checked against PIL's rasteriser and masks
drawn by hand), the v2 joint transforms keeping image and mask aligned, the padding collate, and the
real ISBI 2012 membrane slices."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from torchvision import tv_tensors

from cnnkit.config import AugmentConfig, DataConfig
from cnnkit.data import list_datasets, load_data
from cnnkit.data.base import DataBundle
from cnnkit.data.detection import read_coco
from cnnkit.data.detection.common import DetectionDataset, ImageRecord
from cnnkit.data.segmentation import (IGNORE, read_masks, segmentation_collate, segmentation_transforms,
                                      semantic_bundle)
from cnnkit.errors import UserError

torch.set_num_threads(1)

ISBI = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "isbi2012_membrane" / "train"


# ------------------------------------------------------------------------------------------- helpers

def _blocks(h: int, w: int, k: int, side: int = 8, shift: int = 0) -> np.ndarray:
    """A (h, w) uint8 mask of side x side blocks cycling through classes 0..k-1."""
    rows, cols = np.indices((h, w))
    return (((rows // side) + (cols // side) + shift) % k).astype(np.uint8)


def _write_set(root: Path, masks: dict[str, np.ndarray], image_dir: str = "image", mask_dir: str = "label",
               rgb: bool = False, image_suffix: str = ".png") -> dict[str, np.ndarray]:
    """Write one image per mask (a gray or RGB picture of its own, recorded in the returned dict) and the
    mask as a mode L PNG, both named by the dict's keys."""
    (root / image_dir).mkdir(parents=True, exist_ok=True)
    (root / mask_dir).mkdir(parents=True, exist_ok=True)
    images = {}
    for i, (name, mask) in enumerate(masks.items()):
        h, w = mask.shape
        rng = np.random.default_rng(i)
        pixels = rng.integers(0, 256, (h, w, 3) if rgb else (h, w), dtype=np.uint8)
        Image.fromarray(pixels).save(root / image_dir / f"{name}{image_suffix}")
        Image.fromarray(mask).save(root / mask_dir / f"{name}.png")
        images[name] = pixels
    return images


def _by_name(ds) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    return {Path(r.image).stem: ds[i] for i, r in enumerate(ds.records)}


def _interior(mask: np.ndarray, r: int) -> np.ndarray:
    """Pixels whose (2r+1)^2 neighbourhood holds one value (away from region borders and the edges)."""
    h, w = mask.shape
    inside = np.zeros_like(mask, dtype=bool)
    core = np.ones((h - 2 * r, w - 2 * r), dtype=bool)
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            core &= mask[r + dy:h - r + dy, r + dx:w - r + dx] == mask[r:h - r, r:w - r]
    inside[r:h - r, r:w - r] = core
    return inside


# ------------------------------------------------------------------------------------------ the reader

def test_registered_and_binary_masks_read_as_0_1_with_gray_images_in_one_channel(tmp_path):
    assert "masks" in list_datasets()
    masks = {f"s{i}": np.where(_blocks(24, 32, 2, shift=i) == 1, 255, 0).astype(np.uint8) for i in range(3)}
    images = _write_set(tmp_path, masks)
    ds = read_masks(tmp_path)
    assert ds.classes == ["background", "foreground"] and ds.channels == 1
    for name, (image, mask) in _by_name(ds).items():
        assert image.dtype == torch.uint8 and image.shape == (1, 24, 32)
        np.testing.assert_array_equal(image[0].numpy(), images[name])
        assert isinstance(mask, tv_tensors.Mask) and mask.dtype == torch.int64 and mask.shape == (24, 32)
        np.testing.assert_array_equal(mask.numpy(), (masks[name] == 255).astype(np.int64))


def test_images_masks_layout_under_train_with_rgb_images_and_jpeg_images(tmp_path):
    masks = {"a": _blocks(16, 20, 3), "b": _blocks(16, 20, 3, shift=1)}
    images = _write_set(tmp_path / "train", masks, "images", "masks", rgb=True)
    (tmp_path / "test").mkdir()  # a held-out folder next to train/ is not read
    ds = read_masks(tmp_path)
    assert ds.channels == 3 and ds.classes == ["class_0", "class_1", "class_2"] and len(ds) == 2
    for name, (image, mask) in _by_name(ds).items():
        np.testing.assert_array_equal(image.permute(1, 2, 0).numpy(), images[name])
        np.testing.assert_array_equal(mask.numpy(), masks[name])
    # A JPEG image pairs with its PNG mask by name.
    root = tmp_path / "jpeg"
    _write_set(root, {"x": _blocks(16, 16, 2)}, rgb=True, image_suffix=".jpg")
    _write_set(root, {"y": _blocks(16, 16, 2)}, rgb=True)
    assert sorted(Path(r.image).name for r in read_masks(root).records) == ["x.jpg", "y.png"]


def test_palette_png_is_read_by_its_indices_not_its_colours(tmp_path):
    idx = _blocks(12, 12, 3)
    _write_set(tmp_path, {"p": idx})
    pal = Image.fromarray(idx)
    pal.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * (256 * 3 - 9))  # 1 = red, 2 = green
    pal.save(tmp_path / "label" / "p.png")
    assert Image.open(tmp_path / "label" / "p.png").mode == "P"
    ds = read_masks(tmp_path)
    np.testing.assert_array_equal(ds[0][1].numpy(), idx)
    assert ds.classes == ["class_0", "class_1", "class_2"]


def test_class_index_png_with_class_names(tmp_path):
    masks = {"a": _blocks(10, 10, 3)}  # values 0..2 of 4 named classes: class 3 never appears
    _write_set(tmp_path, masks)
    ds = read_masks(tmp_path, class_names=["sky", "road", "car", "person"])
    assert ds.classes == ["sky", "road", "car", "person"]
    np.testing.assert_array_equal(ds[0][1].numpy(), masks["a"])
    with pytest.raises(UserError, match=r"mask .*a\.png.* has pixel value 2.*class indices 0\.\.1 \(2 classes in "
                                        r"data\.class_names\).*data\.mask_values"):
        read_masks(tmp_path, class_names=["sky", "road"])
    with pytest.raises(UserError, match=r"data\.class_names=\['sky'\] names 1 class"):
        read_masks(tmp_path, class_names=["sky"])


def test_mask_values_map_pixels_and_minus_one_ignores(tmp_path):
    raw = np.zeros((8, 12), np.uint8)
    raw[:, 4:8], raw[:, 8:] = 128, 255
    _write_set(tmp_path, {"m": raw})
    ds = read_masks(tmp_path, mask_values={0: 0, 128: 1, 255: -1})
    expected = np.zeros((8, 12), np.int64)
    expected[:, 4:8], expected[:, 8:] = 1, IGNORE
    np.testing.assert_array_equal(ds[0][1].numpy(), expected)
    assert IGNORE == 255 and ds.classes == ["background", "foreground"]
    # A listed value may be absent from the masks; an unlisted one that is present is an error.
    assert read_masks(tmp_path, mask_values={0: 0, 128: 2, 255: 1, 7: 3}).classes == [f"class_{i}" for i in range(4)]
    with pytest.raises(UserError, match=r"m\.png.* has pixel value 128, which is no class: allowed are the values "
                                        r"data\.mask_values lists: \[0, 255\]; add it to data\.mask_values"):
        read_masks(tmp_path, mask_values={0: 0, 255: 1})
    with pytest.raises(UserError, match=r"data\.mask_values maps pixel value 255 to class 5; a class is -1 \(ignore\) "
                                        r"or 0\.\.1"):
        read_masks(tmp_path, mask_values={0: 0, 128: 1, 255: 5}, class_names=["a", "b"])


def test_255_beside_other_values_needs_mask_values(tmp_path):
    raw = _blocks(8, 8, 3, side=2)
    raw[0, 0] = 255  # a VOC-like void pixel among class indices
    _write_set(tmp_path, {"v": raw})
    with pytest.raises(UserError, match=r"v\.png.* has pixel value 255, which is no class: allowed are class indices "
                                        r"0\.\.254, or only 0 and 255 in every mask.*data\.mask_values"):
        read_masks(tmp_path)
    expected = raw.astype(np.int64)  # 255 becomes IGNORE, which is 255 too
    np.testing.assert_array_equal(read_masks(tmp_path, mask_values={0: 0, 1: 1, 2: 2, 255: -1})[0][1].numpy(),
                                  expected)


def test_16_bit_images_are_scaled_and_a_gray_image_in_a_colour_set_becomes_rgb(tmp_path):
    (tmp_path / "image").mkdir()
    (tmp_path / "label").mkdir()
    wide = np.array([[0, 257, 32768, 65535]], dtype=np.uint16)
    Image.fromarray(wide).save(tmp_path / "image" / "w.png")
    Image.fromarray(np.zeros((1, 4), np.uint8)).save(tmp_path / "label" / "w.png")
    ds = read_masks(tmp_path)
    assert ds.channels == 1
    np.testing.assert_array_equal(ds[0][0].numpy(), np.round(wide.astype(float) * 255 / 65535)[None].astype(np.uint8))
    # One RGB image makes the whole set RGB: a gray image is repeated in three channels.
    gray = np.arange(4, dtype=np.uint8).reshape(1, 4) * 50
    Image.fromarray(gray).save(tmp_path / "image" / "g.png")
    Image.fromarray(np.zeros((1, 4, 3), np.uint8) + 9).save(tmp_path / "image" / "w.png")
    Image.fromarray(np.zeros((1, 4), np.uint8)).save(tmp_path / "label" / "g.png")
    ds = read_masks(tmp_path)
    assert ds.channels == 3
    np.testing.assert_array_equal(_by_name(ds)["g"][0].numpy(), np.repeat(gray[None], 3, axis=0))


# --------------------------------------------------------------------------------------------- errors

def test_missing_and_empty_folders(tmp_path):
    with pytest.raises(UserError, match=r"data\.path .*nowhere.* does not exist"):
        read_masks(tmp_path / "nowhere")
    (tmp_path / "images").mkdir()
    with pytest.raises(UserError, match=r"holds no image folder and mask folder.*image/ \+ label/ or images/ \+ "
                                        r"masks/.*train/"):
        read_masks(tmp_path)
    (tmp_path / "masks").mkdir()
    with pytest.raises(UserError, match=r"image folder .*images.* holds no images \(\.png, \.jpg"):
        read_masks(tmp_path)
    (tmp_path / "label").mkdir()
    with pytest.raises(UserError, match=r"holds images/, label/, masks/: keep one image folder"):
        read_masks(tmp_path)
    with pytest.raises(UserError, match=r"data\.name=masks needs data\.path=FOLDER"):
        load_data(DataConfig(name="masks"))


def test_unpaired_files_are_named(tmp_path):
    masks = {f"n{i}": _blocks(8, 8, 2) for i in range(8)}
    _write_set(tmp_path, masks)
    for i in range(7):
        (tmp_path / "label" / f"n{i}.png").unlink()
    with pytest.raises(UserError, match=r"7 image\(s\) of .* have no mask in .*label.*: n0\.png, n1\.png, n2\.png, "
                                        r"n3\.png, n4\.png and 2 more"):
        read_masks(tmp_path)
    root = tmp_path / "other"
    _write_set(root, {"a": _blocks(8, 8, 2), "b": _blocks(8, 8, 2)})
    (root / "image" / "b.png").unlink()
    with pytest.raises(UserError, match=r"1 mask\(s\) of .* have no image in .*: b\.png"):
        read_masks(root)
    Image.fromarray(_blocks(8, 8, 2)).save(root / "label" / "a.jpg")
    with pytest.raises(UserError, match=r"mask .*a\.jpg.* is a JPEG file"):
        read_masks(root)


def test_size_mismatch_names_the_files_and_both_sizes(tmp_path):
    _write_set(tmp_path, {"a": _blocks(10, 12, 2)})
    Image.fromarray(_blocks(10, 13, 2)).save(tmp_path / "label" / "a.png")
    with pytest.raises(UserError, match=r"mask .*label/a\.png.* is 13x10 but its image .*image/a\.png.* is 12x10"):
        read_masks(tmp_path)


def test_colour_masks_are_refused_and_gray_rgb_masks_read(tmp_path):
    _write_set(tmp_path, {"c": _blocks(6, 6, 2)})
    rgb = np.zeros((6, 6, 3), np.uint8)
    rgb[0, 0] = (255, 0, 0)
    Image.fromarray(rgb).save(tmp_path / "label" / "c.png")
    with pytest.raises(UserError, match=r"mask .*c\.png.* is a colour image \(mode RGB\) whose channels differ"):
        read_masks(tmp_path)
    gray = np.repeat(_blocks(6, 6, 3, side=2)[..., None], 3, axis=2)
    Image.fromarray(gray).save(tmp_path / "label" / "c.png")
    np.testing.assert_array_equal(read_masks(tmp_path)[0][1].numpy(), _blocks(6, 6, 3, side=2))


# ----------------------------------------------------------------------------------- split and bundle

def test_bundle_split_subset_shape_and_statistics(tmp_path):
    masks = {f"i{k:02d}": _blocks(20, 30 if k % 2 else 24, 2) for k in range(10)}
    (tmp_path / "image").mkdir()
    (tmp_path / "label").mkdir()
    values = {}
    for k, (name, m) in enumerate(masks.items()):
        values[name] = 10 * k + 5  # each image one gray value: the statistics are known by hand
        Image.fromarray(np.full(m.shape, values[name], np.uint8)).save(tmp_path / "image" / f"{name}.png")
        Image.fromarray(m).save(tmp_path / "label" / f"{name}.png")
    cfg = DataConfig(name="masks", path=str(tmp_path), val_fraction=0.2, split_seed=3)
    b = load_data(cfg)
    assert (len(b.train), len(b.val)) == (8, 2)
    train = {Path(r.image).stem for r in b.train.records}
    val = {Path(r.image).stem for r in b.val.records}
    assert not train & val and train | val == set(masks)
    assert b.input_shape == (1, 30, 30)  # the largest side
    assert b.extra == {"task": "segmentation", "ignore_index": 255}
    assert b.classes == ["background", "foreground"]
    v = np.array([values[n] for n in sorted(train)], float) / 255
    assert b.mean[0] == pytest.approx(v.mean(), abs=1e-4)
    assert b.std[0] == pytest.approx(np.repeat(v, 64 * 64).std(ddof=1), abs=1e-4)
    again = load_data(cfg)
    assert [r.image for r in again.val.records] == [r.image for r in b.val.records]
    other = load_data(cfg.model_copy(update={"split_seed": 4}))
    assert {r.image for r in other.val.records} != {r.image for r in b.val.records}
    assert (len(load_data(cfg.model_copy(update={"val_fraction": 0.0})).val)) == 1  # at least one image
    sub = load_data(cfg.model_copy(update={"subset": 3, "crop_size": 16}))
    assert len(sub.train) == 3 and len(sub.val) == 2 and sub.input_shape == (1, 16, 16)
    assert {r.image for r in sub.train.records} <= {r.image for r in b.train.records}
    assert load_data(cfg.model_copy(update={"image_size": 40})).input_shape == (1, 40, 40)
    with pytest.raises(UserError, match=r"data\.classes=\[0\] is a classification option"):
        load_data(cfg.model_copy(update={"classes": [0]}))


# ------------------------------------------------------------------------------ masks from instances

def test_semantic_bundle_of_shapes_is_label_plus_one_under_each_instance():
    det = load_data(DataConfig(name="shapes", subset=6, val_fraction=0.25))
    seg = semantic_bundle(det)
    assert seg.classes == ["background", "circle", "square", "triangle"]
    assert seg.extra == {"task": "segmentation", "ignore_index": 255}
    assert (seg.input_shape, seg.mean, seg.std) == (det.input_shape, det.mean, det.std)
    assert (len(seg.train), len(seg.val)) == (len(det.train), len(det.val))
    seen = set()
    for i in range(len(det.train)):
        image, target = det.train[i]
        s_image, mask = seg.train[i]
        assert torch.equal(image, s_image) and isinstance(mask, tv_tensors.Mask) and mask.dtype == torch.int64
        expected = np.zeros(image.shape[1:], np.int64)
        for inst, label in zip(target["masks"].numpy(), target["labels"].tolist()):
            expected[inst > 0] = label + 1
        np.testing.assert_array_equal(mask.numpy(), expected)
        seen |= set(np.unique(expected).tolist())
    assert 0 in seen and len(seen) >= 2


def test_semantic_bundle_refuses_data_without_instance_masks(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "x.png")
    rec = ImageRecord(str(tmp_path / "x.png"), (8, 8), torch.tensor([[0.0, 0, 4, 4]]), torch.tensor([0]), 0)
    ds = DetectionDataset([rec], ["a"])
    bundle = DataBundle(ds, ds, None, ["a"], (3, 8, 8), (0.5,) * 3, (0.2,) * 3, "", {"task": "detection"})
    with pytest.raises(UserError, match=r"has no instance masks, so it gives no semantic masks"):
        semantic_bundle(bundle)
    with pytest.raises(UserError, match=r"this one is a classification dataset"):
        semantic_bundle(DataBundle(ds, ds, None, ["a"], (3, 8, 8), (0.5,) * 3, (0.2,) * 3, "digits", {}))


# A triangle (polygon), a rectangle as an uncompressed RLE (column-major runs) and another as a
# compressed RLE, on 40 x 30 images; the RLE rectangle of image 0 overlaps the triangle and comes later.
TRIANGLE = [5.0, 4.0, 30.0, 8.0, 12.0, 26.0]


def _rect(h: int, w: int, y1: int, y2: int, x1: int, x2: int) -> np.ndarray:
    m = np.zeros((h, w), np.uint8)
    m[y1:y2, x1:x2] = 1
    return m


def _runs(mask: np.ndarray) -> list[int]:
    """Uncompressed COCO RLE counts of a 0/1 mask, written out by hand: column-major runs, zeros first."""
    flat = mask.flatten(order="F").tolist()
    counts, current, n = [], 0, 0
    for v in flat:
        if v != current:
            counts.append(n)
            current, n = v, 0
        n += 1
    counts.append(n)
    return counts


def _write_coco(root: Path, drop_segmentation: bool = False) -> Path:
    from pycocotools import mask as mask_utils

    (root / "images").mkdir(parents=True)
    h, w = 30, 40
    for name in ("a.png", "b.png"):
        Image.new("RGB", (w, h), (90, 90, 90)).save(root / "images" / name)
    square = _rect(h, w, 15, 25, 20, 35)
    bar = _rect(h, w, 2, 6, 1, 39)
    compressed = mask_utils.encode(np.asfortranarray(bar))
    anns = [
        {"id": 1, "image_id": 1, "category_id": 4, "bbox": [5, 4, 25, 22], "iscrowd": 0, "segmentation": [TRIANGLE]},
        {"id": 2, "image_id": 1, "category_id": 9, "bbox": [20, 15, 15, 10], "iscrowd": 0,
         "segmentation": {"counts": _runs(square), "size": [h, w]}},
        {"id": 3, "image_id": 2, "category_id": 4, "bbox": [1, 2, 38, 4], "iscrowd": 0,
         "segmentation": {"counts": compressed["counts"].decode(), "size": [h, w]}},
    ]
    if drop_segmentation:
        del anns[2]["segmentation"]
    data = {"images": [{"id": 1, "file_name": "a.png", "width": w, "height": h},
                       {"id": 2, "file_name": "b.png", "width": w, "height": h}],
            "annotations": anns, "categories": [{"id": 4, "name": "tri"}, {"id": 9, "name": "box"}]}
    path = root / "instances_x.json"
    path.write_text(json.dumps(data))
    return path


def test_coco_polygon_and_rle_masks_decode_to_the_expected_pixels(tmp_path):
    ds = read_coco(_write_coco(tmp_path), tmp_path)
    assert ds.with_masks is False and "masks" not in ds[0][1]  # detection decodes no masks
    ds.with_masks = True
    _, t0 = ds[0]
    _, t1 = ds[1]
    assert isinstance(t0["masks"], tv_tensors.Mask) and t0["masks"].shape == (2, 30, 40)
    assert t0["masks"].dtype == torch.uint8
    # The polygon against PIL's rasteriser: the two differ only on the outline.
    pil = Image.new("L", (40, 30), 0)
    ImageDraw.Draw(pil).polygon(TRIANGLE, fill=1)
    pil = np.asarray(pil).astype(bool)
    tri = t0["masks"][0].numpy().astype(bool)
    outline = ~_interior(np.pad(pil, 1, mode="edge"), 1)[1:-1, 1:-1]
    assert not ((tri != pil) & ~outline).any()
    assert (tri & pil).sum() / (tri | pil).sum() > 0.8
    np.testing.assert_array_equal(t0["masks"][1].numpy(), _rect(30, 40, 15, 25, 20, 35))  # uncompressed RLE
    np.testing.assert_array_equal(t1["masks"][0].numpy(), _rect(30, 40, 2, 6, 1, 39))  # compressed RLE
    assert ds.subset([1]).with_masks is True


def test_semantic_bundle_of_coco_and_missing_segmentation(tmp_path):
    path = _write_coco(tmp_path / "ok")
    det = load_data(DataConfig(name="coco", path=str(tmp_path / "ok"), val_fraction=0.5))
    seg = semantic_bundle(det)
    assert seg.classes == ["background", "tri", "box"]
    assert det.train.with_masks is False and det.val.with_masks is False  # the detection bundle is left alone
    ds = read_coco(path, tmp_path / "ok")
    ds.with_masks = True
    items = {Path(r.file).name: seg_split[i] for seg_split, det_split in ((seg.train, det.train), (seg.val, det.val))
             for i, r in enumerate(det_split.records)}
    _, target = ds[0]
    expected = np.zeros((30, 40), np.int64)
    expected[target["masks"][0].numpy() > 0] = 1  # tri: label 0 + 1
    expected[15:25, 20:35] = 2  # box, later, wins where they overlap
    assert (target["masks"][0].numpy()[15:25, 20:35] > 0).any()  # they do overlap
    np.testing.assert_array_equal(items["a.png"][1].numpy(), expected)
    np.testing.assert_array_equal(items["b.png"][1].numpy(), _rect(30, 40, 2, 6, 1, 39).astype(np.int64))
    _write_coco(tmp_path / "bad", drop_segmentation=True)
    det = load_data(DataConfig(name="coco", path=str(tmp_path / "bad"), val_fraction=0.5))
    with pytest.raises(UserError, match=r"annotation 3 of image 'b\.png' \(id 2\) has no 'segmentation', but masks "
                                        r"are asked for"):
        semantic_bundle(det)


# ---------------------------------------------------------------------------------------- transforms

def _encoded(h: int, w: int, side: int = 16) -> tuple[torch.Tensor, tv_tensors.Mask]:
    """An RGB image whose pixels encode the class of its mask (4 classes in side x side blocks)."""
    mask = torch.from_numpy(_blocks(h, w, 4, side=side).astype(np.int64))
    image = torch.stack([40 * mask + 20, 200 - 40 * mask, 10 + 0 * mask]).to(torch.uint8)
    return image, tv_tensors.Mask(mask)


def _check_aligned(image: torch.Tensor, mask: torch.Tensor) -> int:
    """Away from region borders the image still encodes the mask; ignored regions are black.
    Returns the number of pixels checked."""
    m = mask.numpy()
    inside = _interior(m, 2)
    classes = inside & (m != IGNORE)
    c = m[classes]
    np.testing.assert_array_equal(image[0].numpy()[classes], 40 * c + 20)
    np.testing.assert_array_equal(image[1].numpy()[classes], 200 - 40 * c)
    np.testing.assert_array_equal(image[2].numpy()[classes], 10)
    assert (image.numpy()[:, inside & (m == IGNORE)] == 0).all()
    return int(inside.sum())


def test_training_augmentation_keeps_image_and_mask_aligned():
    image, mask = _encoded(96, 80)
    aug = AugmentConfig(hflip=True, vflip=True, rotation=40, elastic=100.0, elastic_sigma=6.0)
    t = segmentation_transforms(aug, None, 64, train=True)
    changed, ignored = 0, 0
    for seed in range(12):
        torch.manual_seed(seed)
        x, y = t(image, mask)
        assert x.dtype == torch.uint8 and x.shape == (3, 64, 64) and type(x) is torch.Tensor
        assert y.dtype == torch.int64 and y.shape == (64, 64) and type(y) is torch.Tensor
        assert _check_aligned(x, y) > 1000
        changed += int(not any(torch.equal(y, mask[r:r + 64, c:c + 64]) for r in range(33) for c in range(17)))
        ignored += int((y == IGNORE).any())
    assert changed == 12 and ignored >= 10  # every output moved; rotations uncover corners
    # The elastic deformation alone moves the region borders (about 15% of the pixels change class here).
    elastic = segmentation_transforms(AugmentConfig(elastic=100.0, elastic_sigma=6.0), None, None, train=True)
    torch.manual_seed(0)
    x, y = elastic(image, mask)
    assert (y != mask.as_subclass(torch.Tensor)).float().mean() > 0.05
    assert _check_aligned(x, y) > 1000


def test_flips_crops_and_resize_match_numpy():
    image, mask = _encoded(48, 64)
    flips = segmentation_transforms(AugmentConfig(hflip=True, vflip=True), None, None, train=True)
    outcomes = set()
    for seed in range(24):
        torch.manual_seed(seed)
        x, y = flips(image, mask)
        for h in (False, True):
            for v in (False, True):
                m = mask.numpy()[::-1 if v else 1, ::-1 if h else 1]
                if np.array_equal(y.numpy(), m):
                    np.testing.assert_array_equal(x.numpy(), image.numpy()[:, ::-1 if v else 1, ::-1 if h else 1])
                    outcomes.add((h, v))
    assert len(outcomes) == 4
    # A crop is a window of the image and the mask at one place.
    crop = segmentation_transforms(None, None, 32, train=True)
    x, y = crop(image, mask)
    hits = [(r, c) for r in range(17) for c in range(33) if torch.equal(x, image[:, r:r + 32, c:c + 32])]
    assert len(hits) >= 1 and any(torch.equal(y, mask[r:r + 32, c:c + 32]) for r, c in hits)
    # Resize to half: the mask by nearest neighbour (pixels 2i and 2i + 1 lie in one block of 16, so
    # it is every other pixel), the image antialiased (the same inside a block).
    square, square_mask = _encoded(48, 48)
    x, y = segmentation_transforms(None, 24, None, train=False)(square, square_mask)
    assert x.shape == (3, 24, 24) and x.dtype == torch.uint8
    np.testing.assert_array_equal(y.numpy(), square_mask.numpy()[::2, ::2])
    assert _check_aligned(x, y) > 100


def test_evaluation_sees_whole_images_and_small_images_are_padded_with_ignore():
    image, mask = _encoded(40, 56)
    x, y = segmentation_transforms(AugmentConfig(hflip=True, rotation=30), None, 32, train=False)(image, mask)
    assert torch.equal(x, image) and torch.equal(y, mask.as_subclass(torch.Tensor))
    small, small_mask = _encoded(20, 30)
    torch.manual_seed(0)
    x, y = segmentation_transforms(None, None, 40, train=True)(small, small_mask)
    assert x.shape == (3, 40, 40) and y.shape == (40, 40)
    assert int((y == IGNORE).sum()) == 40 * 40 - 20 * 30
    assert (x[:, y == IGNORE] == 0).all()
    assert sorted(np.unique(y[y != IGNORE].numpy()).tolist()) == sorted(np.unique(small_mask.numpy()).tolist())


def test_colour_jitter_changes_the_image_only_and_the_transform_pickles():
    image, mask = _encoded(32, 32)
    t = segmentation_transforms(AugmentConfig(brightness=0.5, contrast=0.5), None, None, train=True)
    torch.manual_seed(1)
    x, y = t(image, mask)
    assert torch.equal(y, mask.as_subclass(torch.Tensor)) and not torch.equal(x, image)
    copy = pickle.loads(pickle.dumps(t))
    torch.manual_seed(1)
    x2, _ = copy(image, mask)
    assert torch.equal(x, x2)


@pytest.mark.parametrize("option, value", [("scale_jitter", 0.2), ("mosaic", 0.5), ("cutout", 8), ("crop_padding", 4)])
def test_options_segmentation_does_not_offer_are_refused(option, value):
    with pytest.raises(UserError, match=rf"augment\.{option}={value} is not available for segmentation; "
                                        r"segmentation augments with augment\.hflip, augment\.vflip, "
                                        r"augment\.rotation, augment\.elastic"):
        segmentation_transforms(AugmentConfig(**{option: value}), None, None, train=True)
    with pytest.raises(UserError, match=r"augment\.hflip=alternating is for classification"):
        segmentation_transforms(AugmentConfig(hflip="alternating"), None, None, train=True)


@pytest.mark.parametrize("alpha, sigma", [(50.0, 5.0), ((10.0, 30.0), 2.5)])
def test_separable_elastic_draws_torchvisions_field(alpha, sigma):
    from torchvision.transforms import v2

    from cnnkit.data.segmentation.transforms import SeparableElastic

    image = tv_tensors.Image(torch.zeros((1, 40, 56), dtype=torch.uint8))
    torch.manual_seed(3)
    expected = v2.ElasticTransform(alpha=alpha, sigma=sigma).make_params([image])["displacement"]
    torch.manual_seed(3)
    field = SeparableElastic(alpha=alpha, sigma=sigma).make_params([image])["displacement"]
    assert field.shape == (1, 40, 56, 2) and expected.abs().max() > 1e-3
    torch.testing.assert_close(field, expected, rtol=0, atol=1e-6)


def test_elastic_field_too_wide_for_the_crop_is_a_user_error():
    with pytest.raises(UserError, match=r"augment\.elastic_sigma=5 needs images \(or crops\) larger than 20 pixels "
                                        r"on each side, got 16x16"):
        segmentation_transforms(AugmentConfig(elastic=50.0), None, 16, train=True)
    t = segmentation_transforms(AugmentConfig(elastic=50.0), None, None, train=True)
    with pytest.raises(UserError, match=r"got 30x12"):
        t(*_encoded(12, 30))


# ------------------------------------------------------------------------------------------- collate

def test_collate_pads_bottom_right_to_a_multiple():
    a = (torch.full((1, 5, 7), 9, dtype=torch.uint8), torch.full((5, 7), 1, dtype=torch.int64))
    b = (torch.full((1, 9, 4), 7, dtype=torch.uint8), tv_tensors.Mask(torch.full((9, 4), 2, dtype=torch.int64)))
    images, masks = segmentation_collate([a, b], pad_to=4)
    assert images.shape == (2, 1, 12, 8) and images.dtype == torch.uint8
    assert masks.shape == (2, 12, 8) and masks.dtype == torch.int64 and type(masks) is torch.Tensor
    expected_a = np.full((12, 8), IGNORE)
    expected_a[:5, :7] = 1
    np.testing.assert_array_equal(masks[0].numpy(), expected_a)
    expected_b = np.full((12, 8), IGNORE)
    expected_b[:9, :4] = 2
    np.testing.assert_array_equal(masks[1].numpy(), expected_b)
    np.testing.assert_array_equal(images[0, 0].numpy(), np.where(expected_a == 1, 9, 0))
    np.testing.assert_array_equal(images[1, 0].numpy(), np.where(expected_b == 2, 7, 0))
    images, masks = segmentation_collate([a, b])
    assert images.shape == (2, 1, 9, 7) and masks.shape == (2, 9, 7)
    images, masks = segmentation_collate([a], pad_to=16)
    assert images.shape == (1, 1, 16, 16)


# ----------------------------------------------------------------------------------------- real data

@pytest.mark.skipif(not ISBI.exists(), reason=f"{ISBI} (the shared ISBI 2012 membrane slices) is absent")
def test_isbi_membrane_slices_read_as_one_channel_and_two_classes():
    ds = read_masks(ISBI)
    assert len(ds) == 25 and ds.channels == 1 and ds.classes == ["background", "foreground"]
    i = next(k for k, r in enumerate(ds.records) if Path(r.image).name == "3.png")
    image, mask = ds[i]
    assert image.shape == (1, 512, 512) and mask.shape == (512, 512)
    np.testing.assert_array_equal(image[0].numpy(), np.asarray(Image.open(ISBI / "image" / "3.png")))
    np.testing.assert_array_equal(mask.numpy(), np.asarray(Image.open(ISBI / "label" / "3.png")) == 255)
    b = load_data(DataConfig(name="masks", path=str(ISBI.parent), val_fraction=0.2, crop_size=256))
    assert (len(b.train), len(b.val), b.input_shape, len(b.mean)) == (20, 5, (1, 256, 256), 1)
