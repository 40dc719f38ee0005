"""torchvision-backed datasets over small files of the real formats, written here (no network)."""

from __future__ import annotations

import hashlib
import io
import pickle
import struct
import tarfile
from pathlib import Path
from urllib.error import URLError

import numpy as np
import pytest
import torch
from PIL import Image

import torchvision.datasets as tvd
from cnnkit.config import DataConfig
from cnnkit.data import load_data
from cnnkit.data.base import TensorData
from cnnkit.data.torchvision_sets import IMAGENET_MEAN, ImageFolderTensors
from cnnkit.errors import UserError

torch.set_num_threads(1)

CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _pickle(path: Path, obj: object) -> None:
    path.write_bytes(pickle.dumps(obj, protocol=2))


# --------------------------------------------------------------------------- CIFAR-10 / 100

def _write_cifar10(root: Path, per_batch: int = 4, n_test: int = 10, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    train_x, train_y = [], []
    for b in range(1, 6):
        x = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        y = [int(v) for v in rng.integers(0, 10, per_batch)]
        y[:2] = [b - 1, (b + 4) % 10]  # every class appears at least once over the five batches
        _pickle(folder / f"data_batch_{b}", {"batch_label": f"training batch {b} of 5", "labels": y, "data": x,
                                             "filenames": [f"img{b}_{i}.png" for i in range(per_batch)]})
        train_x.append(x)
        train_y += y
    tx = rng.integers(0, 256, (n_test, 3072), dtype=np.uint8)
    ty = [i % 10 for i in range(n_test)]
    _pickle(folder / "test_batch", {"batch_label": "testing batch 1 of 1", "labels": ty, "data": tx,
                                    "filenames": [f"t{i}.png" for i in range(n_test)]})
    _pickle(folder / "batches.meta", {"num_cases_per_batch": per_batch, "label_names": CIFAR10_NAMES,
                                      "num_vis": 3072})
    return {"train_x": np.concatenate(train_x), "train_y": np.array(train_y), "test_x": tx, "test_y": np.array(ty)}


def _trust_cifar_files(monkeypatch: pytest.MonkeyPatch, cls: type, root: Path) -> None:
    """Point torchvision's md5 table at the files just written, so its own integrity check passes."""
    folder = root / cls.base_folder
    monkeypatch.setattr(cls, "train_list", [[f, _md5(folder / f)] for f, _ in cls.train_list])
    monkeypatch.setattr(cls, "test_list", [[f, _md5(folder / f)] for f, _ in cls.test_list])
    meta = dict(cls.meta)
    meta["md5"] = _md5(folder / meta["filename"])
    monkeypatch.setattr(cls, "meta", meta)


def test_cifar10_from_pickled_batches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ref = _write_cifar10(tmp_path)
    _trust_cifar_files(monkeypatch, tvd.CIFAR10, tmp_path)
    cfg = DataConfig(name="cifar10", path=str(tmp_path), download=False, val_fraction=0.25)
    bundle = load_data(cfg)
    assert bundle.classes == CIFAR10_NAMES
    assert bundle.input_shape == (3, 32, 32)
    assert isinstance(bundle.train, TensorData) and isinstance(bundle.val, TensorData)
    assert len(bundle.train) + len(bundle.val) == 20 and len(bundle.val) > 0
    test = bundle.test
    assert test.images.shape == (10, 3, 32, 32) and test.images.dtype == torch.uint8
    # The row layout is R plane, G plane, B plane, each 32x32 row-major.
    assert torch.equal(test.images, torch.from_numpy(ref["test_x"].reshape(-1, 3, 32, 32)))
    assert test.labels.tolist() == ref["test_y"].tolist()
    # Pool + val together are exactly the training images with their labels.
    both = torch.cat([bundle.train.images, bundle.val.images]).reshape(20, -1)
    labels = torch.cat([bundle.train.labels, bundle.val.labels])
    want = {bytes(x): int(y) for x, y in zip(ref["train_x"], ref["train_y"])}
    assert {bytes(x.numpy()): int(y) for x, y in zip(both, labels)} == want
    assert len(bundle.mean) == 3 and all(0 < s for s in bundle.std)


def test_cifar100_fine_labels_and_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(1)
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    fine = [f"fine{i:02d}" for i in range(100)]
    x, xt = rng.integers(0, 256, (200, 3072), dtype=np.uint8), rng.integers(0, 256, (7, 3072), dtype=np.uint8)
    y = [i % 100 for i in range(200)]
    _pickle(folder / "train", {"filenames": [], "batch_label": "train", "fine_labels": y,
                               "coarse_labels": [v // 5 for v in y], "data": x})
    _pickle(folder / "test", {"filenames": [], "batch_label": "test", "fine_labels": [3, 99, 0, 1, 2, 3, 4],
                              "coarse_labels": [0] * 7, "data": xt})
    _pickle(folder / "meta", {"fine_label_names": fine, "coarse_label_names": [f"c{i}" for i in range(20)]})
    _trust_cifar_files(monkeypatch, tvd.CIFAR100, tmp_path)
    bundle = load_data(DataConfig(name="cifar100", path=str(tmp_path), download=False, val_fraction=0.5))
    assert bundle.classes == fine and bundle.num_classes == 100
    assert len(bundle.train) == len(bundle.val) == 100  # one of each class each side
    assert sorted(bundle.val.labels.tolist()) == list(range(100))
    assert bundle.test.labels.tolist() == [3, 99, 0, 1, 2, 3, 4]
    assert torch.equal(bundle.test.images, torch.from_numpy(xt.reshape(-1, 3, 32, 32)))


def test_cifar10_corrupted_files_are_reported(tmp_path: Path) -> None:
    _write_cifar10(tmp_path)  # real md5 table: these files do not match it
    with pytest.raises(UserError, match=r"corrupted or not in the expected format.*cifar-10-python\.tar\.gz"):
        load_data(DataConfig(name="cifar10", path=str(tmp_path), download=False))


# --------------------------------------------------------------------------- MNIST / Fashion-MNIST

def _idx(path: Path, arr: np.ndarray) -> None:
    """Write ``arr`` (uint8) in the big-endian IDX format of LeCun's MNIST files."""
    header = struct.pack(">I", 0x0800 | arr.ndim) + b"".join(struct.pack(">I", d) for d in arr.shape)
    path.write_bytes(header + arr.astype(np.uint8).tobytes())


def _write_mnist(root: Path, folder: str, n: int = 30, n_test: int = 10, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    out = {"x": rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), "y": np.arange(n) % 10,
           "xt": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8), "yt": (np.arange(n_test) * 3) % 10}
    _idx(raw / "train-images-idx3-ubyte", out["x"])
    _idx(raw / "train-labels-idx1-ubyte", out["y"])
    _idx(raw / "t10k-images-idx3-ubyte", out["xt"])
    _idx(raw / "t10k-labels-idx1-ubyte", out["yt"])
    return out


@pytest.mark.parametrize("name, folder", [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")])
def test_mnist_family_from_idx_files(tmp_path: Path, name: str, folder: str) -> None:
    ref = _write_mnist(tmp_path, folder)
    bundle = load_data(DataConfig(name=name, path=str(tmp_path), download=False, val_fraction=0.2))
    assert bundle.input_shape == (1, 28, 28)
    cls = tvd.MNIST if name == "mnist" else tvd.FashionMNIST
    assert bundle.classes == list(cls.classes)
    if name == "fashion_mnist":
        assert bundle.classes[0] == "T-shirt/top" and bundle.classes[9] == "Ankle boot"
    assert len(bundle.train) == 20 and len(bundle.val) == 10  # round(0.2 * 3) = 1 of each class
    assert sorted(bundle.val.labels.tolist()) == list(range(10))
    assert torch.equal(bundle.test.images, torch.from_numpy(ref["xt"]).unsqueeze(1))
    assert bundle.test.labels.tolist() == ref["yt"].tolist()
    # Every training image landed in pool or val with its own label.
    both = torch.cat([bundle.train.images, bundle.val.images]).squeeze(1)
    labels = torch.cat([bundle.train.labels, bundle.val.labels])
    want = sorted((bytes(x), int(y)) for x, y in zip(ref["x"], ref["y"]))
    assert sorted((bytes(x.numpy()), int(y)) for x, y in zip(both, labels)) == want
    assert len(bundle.mean) == 1


def test_mnist_classes_option_remaps_labels(tmp_path: Path) -> None:
    _write_mnist(tmp_path, "MNIST")
    bundle = load_data(DataConfig(name="mnist", path=str(tmp_path), download=False, classes=[7, 2],
                                 val_fraction=0.4))
    assert bundle.classes == ["7 - seven", "2 - two"]
    assert set(bundle.test.labels.tolist()) <= {0, 1}
    assert set(bundle.train.labels.tolist()) == {0, 1}


# --------------------------------------------------------------------------- missing files, failed downloads

@pytest.mark.parametrize("name, folder, file", [
    ("cifar10", "cifar-10-batches-py", "data_batch_1"),
    ("cifar100", "cifar-100-python", "train"),
    ("mnist", "MNIST/raw", "train-images-idx3-ubyte"),
    ("fashion_mnist", "FashionMNIST/raw", "t10k-labels-idx1-ubyte"),
])
def test_missing_dataset_without_download(tmp_path: Path, name: str, folder: str, file: str) -> None:
    with pytest.raises(UserError) as info:
        load_data(DataConfig(name=name, cache_dir=str(tmp_path), download=False))
    msg = str(info.value)
    assert str(tmp_path / name / folder) in msg  # the folder torchvision reads
    assert file in msg and "data.download" in msg and "data.path" in msg


def test_cifar_download_failure_is_a_user_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(*args: object, **kwargs: object) -> None:
        raise URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(tvd.cifar, "download_and_extract_archive", offline)
    with pytest.raises(UserError, match=r"download into .* failed \(URLError.*name resolution.*"
                                        r"Without network access, put .*data_batch_1"):
        load_data(DataConfig(name="cifar10", path=str(tmp_path / "c10"), download=True))


def test_mnist_download_failure_is_a_user_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(*args: object, **kwargs: object) -> None:
        raise URLError("no network")

    monkeypatch.setattr(tvd.mnist, "download_and_extract_archive", offline)
    with pytest.raises(UserError, match=r"download into .* failed .*no network.*MNIST/raw"):
        load_data(DataConfig(name="mnist", cache_dir=str(tmp_path), download=True))


# --------------------------------------------------------------------------- imagefolder

def _png(path: Path, array: np.ndarray, mode: str = "RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode=mode).save(path)


def _class_tree(root: Path, classes: dict[str, int], size: tuple[int, int] = (6, 8), seed: int = 0) -> dict:
    """``classes`` name -> count; images h x w = ``size``; returns {path: (array, class name)}."""
    rng = np.random.default_rng(seed)
    out = {}
    for c, n in classes.items():
        for i in range(n):
            a = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
            p = root / c / f"{i}.png"
            _png(p, a)
            out[str(p)] = (a, c)
    return out


def test_imagefolder_pool_values_and_split(tmp_path: Path) -> None:
    ref = _class_tree(tmp_path, {"dog": 3, "cat": 3})
    (tmp_path / ".ipynb_checkpoints").mkdir()  # hidden folders are not classes
    _png(tmp_path / "cat" / ".hidden.png", np.zeros((2, 2, 3), np.uint8))  # nor hidden files
    bundle = load_data(DataConfig(name="imagefolder", path=str(tmp_path), val_fraction=1 / 3))
    assert bundle.classes == ["cat", "dog"] and bundle.input_shape == (3, 6, 8)
    assert bundle.mean == IMAGENET_MEAN and bundle.test is None
    assert len(bundle.train) == 4 and len(bundle.val) == 2
    assert sorted(bundle.val.targets) == [0, 1]
    full = ImageFolderTensors(tmp_path)
    assert len(full) == 6
    for i, (path, label) in enumerate(full.samples):
        x, y = full[i]
        a, c = ref[path]
        assert x.dtype == torch.uint8 and x.shape == (3, 6, 8)
        assert torch.equal(x, torch.from_numpy(a).permute(2, 0, 1)) and full.classes[y] == c == full.classes[label]


def test_imagefolder_grayscale_becomes_rgb_and_resize(tmp_path: Path) -> None:
    _png(tmp_path / "a" / "0.png", np.full((10, 20), 77, np.uint8), mode="L")
    _png(tmp_path / "b" / "0.png", np.full((30, 12, 3), 200, np.uint8))
    _png(tmp_path / "b" / "1.png", np.full((30, 12, 3), 10, np.uint8))
    with pytest.raises(UserError, match=r"differ in size.*data\.image_size"):
        load_data(DataConfig(name="imagefolder", path=str(tmp_path), val_fraction=0.5))
    bundle = load_data(DataConfig(name="imagefolder", path=str(tmp_path), image_size=8, val_fraction=0.5))
    assert bundle.input_shape == (3, 8, 8)
    ds = bundle.train.dataset if hasattr(bundle.train, "dataset") else bundle.train
    for i in range(len(ds)):
        x, _ = ds[i]
        assert x.shape == (3, 8, 8) and x.dtype == torch.uint8
    x, y = ds[0]  # the grayscale one, class "a": constant images stay constant after resizing
    assert y == 0 and torch.all(x == 77)


def test_imagefolder_train_val_test_layout(tmp_path: Path) -> None:
    _class_tree(tmp_path / "train", {"x": 2, "y": 2, "z": 1})
    _class_tree(tmp_path / "val", {"y": 1, "z": 2}, seed=1)  # no "x" in val: labels still follow train's
    _class_tree(tmp_path / "test", {"x": 1}, seed=2)
    bundle = load_data(DataConfig(name="imagefolder", path=str(tmp_path)))
    assert bundle.extra["layout"] == "splits" and bundle.classes == ["x", "y", "z"]
    assert len(bundle.train) == 5  # val given: no random split
    assert bundle.val.targets == [1, 2, 2] and bundle.test.targets == [0]
    assert bundle.val[0][0].shape == (3, 6, 8)


def test_imagefolder_errors(tmp_path: Path) -> None:
    def err(path: Path, **kw: object) -> str:
        with pytest.raises(UserError) as info:
            load_data(DataConfig(name="imagefolder", path=str(path), **kw))
        return str(info.value)

    with pytest.raises(UserError, match="needs data.path"):
        load_data(DataConfig(name="imagefolder"))
    msg = err(tmp_path / "nope")
    assert "nope" in msg and "does not exist" in msg and "subfolder" in msg
    (tmp_path / "empty").mkdir()
    assert "is empty" in err(tmp_path / "empty")
    _png(tmp_path / "flat" / "0.png", np.zeros((4, 4, 3), np.uint8))
    assert "no class subfolders" in err(tmp_path / "flat")
    _class_tree(tmp_path / "hole", {"full": 2})
    (tmp_path / "hole" / "blank").mkdir()
    (tmp_path / "hole" / "blank" / "notes.txt").write_text("not an image")
    msg = err(tmp_path / "hole")
    assert "blank" in msg and "hold no images" in msg
    _class_tree(tmp_path / "bad", {"a": 2})
    (tmp_path / "bad" / "a" / "broken.png").write_bytes(b"this is not a png")
    msg = err(tmp_path / "bad")
    assert "broken.png" in msg and "cannot be read" in msg
    _class_tree(tmp_path / "sp" / "train", {"a": 2})
    _class_tree(tmp_path / "sp" / "val", {"a": 1, "zebra": 1})
    msg = err(tmp_path / "sp")
    assert "zebra" in msg and "train split" in msg
    _class_tree(tmp_path / "nt" / "val", {"a": 1})
    _class_tree(tmp_path / "nt" / "test", {"a": 1})
    assert "no train/" in err(tmp_path / "nt")


# --------------------------------------------------------------------------- ImageNet

def test_imagenet_missing_archives(tmp_path: Path) -> None:
    with pytest.raises(UserError) as info:
        load_data(DataConfig(name="imagenet", path=str(tmp_path)))
    msg = str(info.value)
    assert str(tmp_path) in msg
    for f in ("ILSVRC2012_devkit_t12.tar.gz", "ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar"):
        assert f in msg
    with pytest.raises(UserError, match="needs data.path"):
        load_data(DataConfig(name="imagenet"))


def _tar_add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def _jpeg(color: tuple[int, int, int], size: tuple[int, int] = (40, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def test_imagenet_from_tiny_fake_archives(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Official archive layout with two classes; torchvision's own parser extracts and reads it."""
    from scipy.io import savemat

    wnids = ["n01440764", "n01443537"]
    fields = ["ILSVRC2012_ID", "WNID", "words", "gloss", "num_children", "children", "wordnet_height",
              "num_train_images"]
    synsets = np.zeros((3,), dtype=[(f, object) for f in fields])
    rows = [(1, wnids[0], "tench, Tinca tinca", "a fish", 0, np.zeros((0,)), 0, 2),
            (2, wnids[1], "goldfish, Carassius auratus", "a fish", 0, np.zeros((0,)), 0, 2),
            (1001, "n00000001", "fish", "not a leaf", 2, np.array([1, 2]), 1, 0)]
    for i, row in enumerate(rows):
        synsets[i] = row
    mat = io.BytesIO()
    savemat(mat, {"synsets": synsets})
    with tarfile.open(tmp_path / "ILSVRC2012_devkit_t12.tar.gz", "w:gz") as tar:
        _tar_add(tar, "ILSVRC2012_devkit_t12/data/meta.mat", mat.getvalue())
        _tar_add(tar, "ILSVRC2012_devkit_t12/data/ILSVRC2012_validation_ground_truth.txt", b"2\n1\n2\n")
    with tarfile.open(tmp_path / "ILSVRC2012_img_train.tar", "w") as tar:
        for k, w in enumerate(wnids):
            inner = io.BytesIO()
            with tarfile.open(fileobj=inner, mode="w") as t:
                for i in range(2):
                    _tar_add(t, f"{w}_{i}.JPEG", _jpeg((200 * k, 50, 0)))
            _tar_add(tar, f"{w}.tar", inner.getvalue())
    with tarfile.open(tmp_path / "ILSVRC2012_img_val.tar", "w") as tar:
        for i in range(3):
            _tar_add(tar, f"ILSVRC2012_val_{i + 1:08d}.JPEG", _jpeg((0, 0, 255)))
    from torchvision.datasets import imagenet as tv_imagenet

    meta = {k: (f, _md5(tmp_path / f)) for k, (f, _) in tv_imagenet.ARCHIVE_META.items()}
    monkeypatch.setattr(tv_imagenet, "ARCHIVE_META", meta)

    bundle = load_data(DataConfig(name="imagenet", path=str(tmp_path), image_size=16))
    assert bundle.classes == ["tench", "goldfish"] and bundle.input_shape == (3, 16, 16)
    assert len(bundle.train) == 4 and bundle.train.targets == [0, 0, 1, 1]
    assert bundle.val.targets == [0, 1, 1]  # ground truth 2, 1, 2 sorted into wnid folders
    assert bundle.test is None
    x, y = bundle.val[0]
    assert x.dtype == torch.uint8 and x.shape == (3, 16, 16) and y == 0
    assert abs(int(x[2].float().mean()) - 255) < 8 and int(x[0].float().mean()) < 8  # blue
    x, _ = bundle.train[3]
    assert x.shape == (3, 16, 16)


def test_imagefolder_through_make_loader(tmp_path: Path) -> None:
    from cnnkit.config import AugmentConfig
    from cnnkit.data.loaders import make_loader

    _class_tree(tmp_path, {"a": 3, "b": 3})
    bundle = load_data(DataConfig(name="imagefolder", path=str(tmp_path), val_fraction=1 / 3))
    loader = make_loader(bundle.train, batch_size=3, mean=bundle.mean, std=bundle.std, shuffle=True, seed=0,
                         device="cpu", augment=AugmentConfig(crop_padding=2, hflip=True, cutout=2))
    batches = list(loader)
    assert len(loader) == len(batches) == 2
    assert [tuple(x.shape) for x, _ in batches] == [(3, 3, 6, 8), (1, 3, 6, 8)]
    assert all(x.dtype == torch.float32 for x, _ in batches)
    assert sorted(torch.cat([y for _, y in batches]).tolist()) == [0, 0, 1, 1]
