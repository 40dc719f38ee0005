"""Datasets read through torchvision: CIFAR-10/100, MNIST, Fashion-MNIST, image folders, ImageNet.

* ``cifar10``, ``cifar100``, ``mnist``, ``fashion_mnist``: torchvision's own
  dataset classes, downloaded (with torchvision's progress bar) into
  ``cache_dir / name`` unless ``data.path`` names the root folder that already
  holds them. Both splits are held in memory as :class:`TensorData`; ``train`` is
  the pool the validation split is cut from, ``test`` the official test split.
* ``imagefolder``: ``data.path`` is a folder with one subfolder per class, or
  with ``train/`` and ``val/`` (and optionally ``test/``) subfolders that each
  hold one subfolder per class. Images are decoded to RGB; with
  ``data.image_size=N`` the shorter side is resized to N and the centre N x N
  kept, without it all images must have the same size (checked up front by
  reading every image header once). Normalised with ImageNet's mean and std.
* ``imagenet``: torchvision's ``ImageNet`` over a local copy of the official
  archives in ``data.path`` (never downloaded). The official ``val`` split is the
  validation split; there is no test split.

Example::

    bundle = load_data(DataConfig(name="imagefolder", path="photos", image_size=64))
    x, y = bundle.train[0]        # uint8 (3, 64, 64), int
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from PIL import Image
from torchvision import datasets as tvd
from torchvision.datasets.folder import IMG_EXTENSIONS, has_file_allowed_extension
from torchvision.transforms import v2

from cnnkit.config import DataConfig
from cnnkit.data.base import DataBundle, TensorData
from cnnkit.data.builtin import cache_dir
from cnnkit.data.registry import register_dataset
from cnnkit.errors import UserError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGENET_ARCHIVES = ("ILSVRC2012_devkit_t12.tar.gz", "ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar")

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "ImageFolderTensors", "imagenet_transforms", "load_rgb",
           "open_torchvision_set", "torchvision_to_tensordata"]


# --------------------------------------------------------------------------- CIFAR / MNIST

# name -> (torchvision class, archive or source the files come from)
_TV_SETS: dict[str, tuple[type, str]] = {
    "cifar10": (tvd.CIFAR10, "cifar-10-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html"),
    "cifar100": (tvd.CIFAR100, "cifar-100-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html"),
    "mnist": (tvd.MNIST, "the four *-ubyte.gz files of MNIST, gunzipped"),
    "fashion_mnist": (tvd.FashionMNIST, "the four *-ubyte.gz files of Fashion-MNIST "
                                        "(github.com/zalandoresearch/fashion-mnist), gunzipped"),
}


def _expected_files(cls: type, root: Path) -> tuple[Path, list[str]]:
    """The folder torchvision reads ``cls`` from under ``root``, and the file names it needs there."""
    if issubclass(cls, tvd.CIFAR10):
        names = [f for f, _ in cls.train_list + cls.test_list] + [cls.meta["filename"]]  # type: ignore[attr-defined]
        return root / cls.base_folder, names  # type: ignore[attr-defined]
    names = [os.path.splitext(os.path.basename(f))[0] for f, _ in cls.resources]  # type: ignore[attr-defined]
    return root / cls.__name__ / "raw", names


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())


def _dataset_root(cfg: DataConfig) -> Path:
    return Path(cfg.path).expanduser() if cfg.path else cache_dir(cfg) / cfg.name


def open_torchvision_set(name: str, root: Path, *, train: bool, download: bool) -> Any:
    """Open torchvision's dataset ``name`` (a key of the registry here) under ``root``; UserError if it fails."""
    cls, source = _TV_SETS[name]
    folder, names = _expected_files(cls, root)
    try:
        return cls(str(root), train=train, download=download)
    except (RuntimeError, OSError, EOFError, pickle.UnpicklingError, KeyError, ValueError, TypeError) as e:
        missing = [f for f in names if not (folder / f).is_file()]
        where = (f"put {', '.join(names)} ({source}) in {str(folder)!r}, "
                 f"or set data.path to the folder that holds {folder.relative_to(root)}/")
        if download and missing:
            raise UserError(f"dataset {name!r}: download into {str(root)!r} failed ({type(e).__name__}: "
                            f"{_one_line(e)}). Without network access, {where}") from None
        if missing:
            raise UserError(f"dataset {name!r} is not in {str(folder)!r} (missing {', '.join(missing)}) and "
                            f"data.download is false. Set data.download=true, or {where}") from None
        raise UserError(f"dataset {name!r}: the files in {str(folder)!r} are corrupted or not in the "
                        f"expected format ({type(e).__name__}: {_one_line(e)}); replace them with "
                        f"{source}") from None


def torchvision_to_tensordata(ds: Any) -> TensorData:
    """A torchvision CIFAR / MNIST dataset's in-memory ``.data`` and ``.targets`` as uint8 (N, C, H, W)."""
    data = ds.data
    images = torch.from_numpy(np.asarray(data)) if not isinstance(data, torch.Tensor) else data
    if images.ndim == 3:  # MNIST: (N, H, W)
        images = images.unsqueeze(1)
    else:  # CIFAR: (N, H, W, C)
        images = images.permute(0, 3, 1, 2)
    labels = torch.as_tensor(ds.targets, dtype=torch.int64)
    return TensorData(images.to(torch.uint8).contiguous(), labels.clone())


def _torchvision_builder(name: str) -> Callable[[DataConfig], DataBundle]:
    def build(cfg: DataConfig) -> DataBundle:
        root = _dataset_root(cfg)
        if cfg.path and root.exists() and not root.is_dir():
            raise UserError(f"data.path {str(root)!r} is not a folder; expected the root folder that holds "
                            f"dataset {name!r} as torchvision lays it out")
        train = open_torchvision_set(name, root, train=True, download=cfg.download)
        test = open_torchvision_set(name, root, train=False, download=False)
        tr, te = torchvision_to_tensordata(train), torchvision_to_tensordata(test)
        classes = [str(c) for c in train.classes]
        return DataBundle(tr, None, te, classes, tuple(tr.images.shape[1:]), (), (),  # type: ignore[arg-type]
                          extra={"root": str(root)})

    build.__name__ = name
    return build


register_dataset("cifar10", "CIFAR-10 via torchvision: 50,000 + 10,000 test colour images 32x32, 10 classes "
                            "(downloads into the cache unless data.path holds cifar-10-batches-py/)"
                 )(_torchvision_builder("cifar10"))
register_dataset("cifar100", "CIFAR-100 via torchvision: 50,000 + 10,000 test colour images 32x32, 100 fine "
                             "classes (downloads unless data.path holds cifar-100-python/)"
                 )(_torchvision_builder("cifar100"))
register_dataset("mnist", "MNIST via torchvision: 60,000 + 10,000 test digits 28x28 "
                          "(downloads unless data.path holds MNIST/raw/)")(_torchvision_builder("mnist"))
register_dataset("fashion_mnist", "Fashion-MNIST via torchvision: 60,000 + 10,000 test clothing images 28x28, "
                                  "10 classes (downloads unless data.path holds FashionMNIST/raw/)"
                 )(_torchvision_builder("fashion_mnist"))


# --------------------------------------------------------------------------- image folders

def load_rgb(path: str) -> Image.Image:
    """Open an image file as RGB; an unreadable file is a UserError naming it."""
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise UserError(f"image file {path!r} cannot be read as an image: {e}") from None


def _is_image_file(path: str) -> bool:
    return not os.path.basename(path).startswith(".") and has_file_allowed_extension(path, IMG_EXTENSIONS)


def _subfolders(folder: Path) -> list[str]:
    return sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))


def _images_under(folder: Path) -> bool:
    for dirpath, _, files in os.walk(folder, followlinks=True):
        if any(_is_image_file(os.path.join(dirpath, f)) for f in files):
            return True
    return False


def _resize_crop(size: int) -> v2.Compose:
    """Shorter side to ``size`` (antialiased), then the centre ``size`` x ``size``, as a uint8 tensor."""
    return v2.Compose([v2.Resize(size, antialias=True), v2.CenterCrop(size), v2.PILToTensor()])


class ImageFolderTensors(tvd.ImageFolder):
    """torchvision ``ImageFolder`` whose items are ``(uint8 tensor (3, H, W), label)``.

    ``classes`` fixes the class list (a val/test split reuses the train split's, so
    labels agree; class folders may then be missing but not extra). Hidden files
    and folders are skipped. ``transform`` maps an RGB PIL image to the uint8
    tensor (default: ``PILToTensor``); ``expect`` ``(H, W)`` makes any other size an
    error naming the file.
    """

    def __init__(self, root: str | Path, *, transform: Callable | None = None, classes: list[str] | None = None,
                 expect: tuple[int, int] | None = None) -> None:
        self._given_classes = classes
        self.expect = expect
        super().__init__(str(root), transform=transform or v2.PILToTensor(), loader=load_rgb,
                         is_valid_file=_is_image_file, allow_empty=classes is not None)

    def find_classes(self, directory: str | Path) -> tuple[list[str], dict[str, int]]:
        present = _subfolders(Path(directory))
        if self._given_classes is None:
            classes = present
        else:
            classes = list(self._given_classes)
            extra = sorted(set(present) - set(classes))
            if extra:
                raise UserError(f"image folder {str(directory)!r} has class folders {extra} that the train split "
                                f"does not have; its classes must be among {classes}")
        return classes, {c: i for i, c in enumerate(classes)}

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, target = self.samples[index]
        x = self.transform(self.loader(path))  # type: ignore[misc]
        if self.expect is not None and tuple(x.shape[-2:]) != self.expect:
            raise UserError(f"image file {path!r} is {x.shape[-1]}x{x.shape[-2]} but the other images are "
                            f"{self.expect[1]}x{self.expect[0]}; set data.image_size=N to resize them all")
        return x, target


def _check_class_folder(folder: Path, what: str, every_class: bool) -> list[str]:
    """Check ``folder`` holds class subfolders (each with images when ``every_class``); return their names."""
    if not folder.is_dir():
        raise UserError(f"{what} {str(folder)!r} is not a folder")
    classes = _subfolders(folder)
    if not classes:
        if any(_is_image_file(str(folder / f)) for f in os.listdir(folder)):
            raise UserError(f"{what} {str(folder)!r} holds images but no class subfolders; put each class's "
                            f"images in a subfolder named after the class")
        raise UserError(f"{what} {str(folder)!r} is empty; expected one subfolder of images per class")
    if every_class:
        empty = [c for c in classes if not _images_under(folder / c)]
        if empty:
            raise UserError(f"class folder(s) {', '.join(repr(str(folder / c)) for c in empty)} hold no images "
                            f"(looked for {', '.join(IMG_EXTENSIONS)})")
    return classes


def _common_size(datasets: list[ImageFolderTensors], root: Path) -> tuple[int, int]:
    """The (H, W) all images share, reading each header once; UserError if they differ."""
    first: tuple[str, tuple[int, int]] | None = None
    for ds in datasets:
        for path, _ in ds.samples:
            try:
                with Image.open(path) as im:
                    w, h = im.size
            except (OSError, ValueError, Image.DecompressionBombError) as e:
                raise UserError(f"image file {path!r} cannot be read as an image: {e}") from None
            if first is None:
                first = (path, (h, w))
            elif (h, w) != first[1]:
                raise UserError(f"images under {str(root)!r} differ in size ({first[0]!r} is {first[1][1]}x"
                                f"{first[1][0]}, {path!r} is {w}x{h}); set data.image_size=N to resize them "
                                f"(shorter side to N, then the centre N x N)")
    assert first is not None
    return first[1]


@register_dataset("imagefolder", "your own images: data.path holds one subfolder per class, or train/, val/ "
                                 "(and test/) subfolders that do; data.image_size=N resizes")
def imagefolder(cfg: DataConfig) -> DataBundle:
    if not cfg.path:
        raise UserError("data.name=imagefolder needs data.path=FOLDER holding one subfolder of images per class "
                        "(or train/ and val/ subfolders that each do)")
    root = Path(cfg.path).expanduser()
    if not root.exists():
        raise UserError(f"data.path {str(root)!r} does not exist; expected a folder with one subfolder of images "
                        f"per class")
    if not root.is_dir():
        raise UserError(f"data.path {str(root)!r} is a file; expected a folder with one subfolder of images per class")
    top = _subfolders(root)
    splits = {"train", "val", "test"}
    if top and set(top) <= splits:
        if "train" not in top:
            raise UserError(f"data.path {str(root)!r} has {'/, '.join(top)}/ but no train/ subfolder; "
                            f"expected train/ (and val/, test/) each with one subfolder per class")
        folders = {s: root / s for s in ("train", "val", "test") if s in top}
        layout = "splits"
    else:
        folders = {"train": root}
        layout = "classes"

    classes = _check_class_folder(folders["train"], "image folder", True)
    for s in ("val", "test"):
        if s in folders:
            _check_class_folder(folders[s], f"{s} folder", False)

    def build(folder: Path, transform: Callable | None, expect: tuple[int, int] | None,
              given: list[str] | None) -> ImageFolderTensors:
        try:
            return ImageFolderTensors(folder, transform=transform, classes=given, expect=expect)
        except FileNotFoundError as e:
            raise UserError(f"image folder {str(folder)!r}: {e}") from None

    if cfg.image_size:
        tf = _resize_crop(cfg.image_size)
        sets = {s: build(f, tf, None, None if s == "train" else classes) for s, f in folders.items()}
        shape = (3, cfg.image_size, cfg.image_size)
    else:
        sets = {s: build(f, None, None, None if s == "train" else classes) for s, f in folders.items()}
    for s, d in sets.items():
        if len(d) == 0:
            raise UserError(f"{s} folder {str(folders[s])!r} holds no images in its class folders "
                            f"(looked for {', '.join(IMG_EXTENSIONS)})")
    if not cfg.image_size:
        h, w = _common_size(list(sets.values()), root)
        for d in sets.values():
            d.expect = (h, w)
        shape = (3, h, w)
    return DataBundle(sets["train"], sets.get("val"), sets.get("test"), classes, shape,
                      IMAGENET_MEAN, IMAGENET_STD, extra={"root": str(root), "layout": layout})


# --------------------------------------------------------------------------- ImageNet

def imagenet_transforms(size: int, train: bool) -> v2.Compose:
    """ImageNet preprocessing to uint8 tensors: a random resized crop for training; for evaluation the
    shorter side to ``round(size * 256 / 224)`` and the centre ``size`` x ``size``."""
    if train:
        return v2.Compose([v2.RandomResizedCrop(size, antialias=True), v2.PILToTensor()])
    return v2.Compose([v2.Resize(round(size * 256 / 224), antialias=True), v2.CenterCrop(size), v2.PILToTensor()])


@register_dataset("imagenet", "ImageNet-1k (ILSVRC 2012) from the official archives in data.path (no download); "
                              "its val split is the validation split")
def imagenet(cfg: DataConfig) -> DataBundle:
    need = (f"the official archives {', '.join(IMAGENET_ARCHIVES)} (from image-net.org; they are never downloaded "
            f"automatically), or the meta.bin, train/ and val/ that torchvision extracts from them on first use")
    if not cfg.path:
        raise UserError(f"data.name=imagenet needs data.path=FOLDER holding {need}")
    root = Path(cfg.path).expanduser()
    if not root.is_dir():
        raise UserError(f"data.path {str(root)!r} is not a folder; expected a folder holding {need}")
    size = cfg.image_size or 224
    splits = {}
    for split in ("train", "val"):
        try:
            splits[split] = tvd.ImageNet(str(root), split=split, loader=load_rgb,
                                         transform=imagenet_transforms(size, split == "train"))
        except ImportError as e:
            raise UserError(f"reading the ImageNet devkit needs scipy ({e}); install it (pip install scipy)") from None
        except (RuntimeError, OSError, EOFError, ValueError) as e:
            missing = [a for a in IMAGENET_ARCHIVES if not (root / a).is_file()]
            what = f"missing {', '.join(missing)}" if missing else "the archives are present but corrupted"
            raise UserError(f"ImageNet {split} split in {str(root)!r} cannot be prepared ({what}; torchvision: "
                            f"{_one_line(e)}). Put {need} in that folder") from None
    train, val = splits["train"], splits["val"]
    classes = [c[0] if isinstance(c, tuple) else str(c) for c in train.classes]
    return DataBundle(train, val, None, classes, (3, size, size), IMAGENET_MEAN, IMAGENET_STD,
                      extra={"root": str(root), "wnids": list(train.wnids)})
