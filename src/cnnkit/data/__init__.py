"""Data: the dataset registry, the held-out split, class subsets, and loaders.

Example::

    bundle = load_data(cfg.data)           # DataBundle with train / val / test
    bundle.classes, bundle.input_shape     # ['0', ..., '9'], (1, 28, 28)
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch.utils.data import Dataset, Subset

from cnnkit.config import DataConfig
from cnnkit.data.base import DataBundle, TensorData, TensorLoader, channel_stats
from cnnkit.data.registry import DATASETS, register_dataset
from cnnkit.data.splits import stratified_split
from cnnkit.errors import UserError

__all__ = ["DATASETS", "DataBundle", "TensorData", "TensorLoader", "list_datasets", "load_data", "register_dataset"]


def _load_families() -> None:
    # Importing a family module registers its datasets.
    from cnnkit.data import builtin, torchvision_sets  # noqa: F401
    from cnnkit.data import detection  # noqa: F401
    from cnnkit.data import segmentation  # noqa: F401
    from cnnkit.data.text import dataset as _text  # noqa: F401
    from cnnkit.data.timeseries import dataset as _series, forecast as _forecast  # noqa: F401
    from cnnkit.data.video import dataset as _video  # noqa: F401


def list_datasets(pattern: str | None = None) -> list[str]:
    _load_families()
    return DATASETS.names(pattern)


def targets_of(ds: Any) -> torch.Tensor:
    if isinstance(ds, TensorData):
        return ds.labels
    t = getattr(ds, "targets", None)
    if t is None:
        raise TypeError(f"dataset {type(ds).__name__} has no .targets")
    return torch.as_tensor(list(t), dtype=torch.long)


def select(ds: Any, index: torch.Tensor) -> Any:
    """The items of ``ds`` at ``index`` (a TensorData slice or a Subset with targets)."""
    if isinstance(ds, TensorData):
        return ds.subset(index)
    sub = Subset(ds, index.tolist())
    sub.targets = targets_of(ds)[index].tolist()  # type: ignore[attr-defined]
    return sub


class RemappedLabels(Dataset):
    """A dataset whose labels go through ``mapping`` (old label -> new label)."""

    def __init__(self, ds: Dataset, mapping: dict[int, int]) -> None:
        self.ds, self.mapping = ds, mapping
        self.targets = [mapping[int(t)] for t in targets_of(ds).tolist()]

    def __len__(self) -> int:
        return len(self.ds)  # type: ignore[arg-type]

    def __getitem__(self, i: int):
        x, y = self.ds[i]
        return x, self.mapping[int(y)]


def _keep_classes(ds: Any, keep: Sequence[int]) -> Any:
    labels = targets_of(ds)
    mapping = {int(c): i for i, c in enumerate(keep)}
    mask = torch.zeros(len(labels), dtype=torch.bool)
    for c in keep:
        mask |= labels == c
    idx = torch.nonzero(mask).flatten()
    sub = select(ds, idx)
    if isinstance(sub, TensorData):
        lut = torch.full((max(int(labels.max()) if len(labels) else 0, max(keep)) + 1,), -1, dtype=torch.long)
        for old, new in mapping.items():
            lut[old] = new
        return TensorData(sub.images, lut[sub.labels])
    return RemappedLabels(sub, mapping)


def _per_class(ds: Any, n: int, seed: int) -> Any:
    labels = targets_of(ds)
    g = torch.Generator().manual_seed(seed + 17)
    keep = []
    for c in torch.unique(labels).tolist():
        idx = torch.nonzero(labels == c).flatten()
        keep.append(idx[torch.randperm(len(idx), generator=g)[:n]])
    return select(ds, torch.cat(keep).sort().values)


def resize(data: TensorData, size: int) -> TensorData:
    """Images resized to ``size`` x ``size`` (bilinear, antialiased), still uint8."""
    import torch.nn.functional as F

    out = []
    for i in range(0, len(data), 4096):
        x = F.interpolate(data.images[i:i + 4096].float(), size=(size, size), mode="bilinear",
                          antialias=True, align_corners=False)
        out.append(x.round_().clamp_(0, 255).to(torch.uint8))
    images = torch.cat(out) if out else data.images.new_zeros((0, data.images.shape[1], size, size))
    return TensorData(images, data.labels)


def for_task(bundle: DataBundle, task: str | None) -> DataBundle:
    """``bundle`` as the config's ``task`` reads it: a detection set with instance masks (shapes, COCO
    with segmentations) gives semantic masks to ``segmentation`` and its masks to ``instance``; a
    dataset of another kind is refused with what it gives and what the task needs."""
    if task is None:
        return bundle
    kind = (bundle.extra or {}).get("task", "classification")
    if task == "segmentation" and kind == "detection":
        from cnnkit.data.segmentation.instances import semantic_bundle

        return semantic_bundle(bundle)
    if task == "instance" and kind == "detection":
        from dataclasses import replace

        from cnnkit.data.segmentation.instances import with_instance_masks

        return replace(bundle, train=with_instance_masks(bundle.train),
                       val=None if bundle.val is None else with_instance_masks(bundle.val),
                       test=None if bundle.test is None else with_instance_masks(bundle.test))
    wants = {"segmentation": ("segmentation",), "instance": ("detection",), "detection": ("detection",),
             "text": ("text",), "timeseries": ("timeseries",), "forecast": ("forecast",), "video": ("video",),
             "frames": ("frames",), "reconstruction": ("classification",), "gan": ("classification",)}
    if task in wants and kind not in wants[task]:
        gives = {"classification": "class labels per image", "detection": "boxes",
                 "segmentation": "masks per pixel", "text": "labelled texts", "timeseries": "labelled series",
                 "forecast": "a series to forecast", "video": "labelled clips", "frames": "clips to continue"
                 }.get(kind, kind)
        needs = {"segmentation": "masks (data.name=masks, or shapes / coco with segmentations)",
                 "instance": "objects with masks (shapes, or coco with segmentations)",
                 "detection": "boxes (coco, yolo, voc, shapes, mnist_detect)",
                 "text": "labelled texts (data.name=text, data.path=FILE.tsv or a folder per class of .txt files)",
                 "timeseries": "labelled series (data.name=series, data.path=FILE_TRAIN.ts, .csv or .npz)",
                 "forecast": "a series (data.name=forecast, data.path=FILE.csv with a time column and value columns, "
                             "or statsmodels:NAME)",
                 "video": "labelled clips (data.name=moving_mnist_clips)",
                 "frames": "clips whose next frames to predict (data.name=moving_mnist)",
                 "reconstruction": "images (mnist5k, digits, cifar10, imagefolder, ...)",
                 "gan": "images (mnist5k, digits, cifar10, imagefolder, ...)"}[task]
        raise UserError(f"task {task} needs {needs}; dataset {bundle_name(bundle)} gives {gives}")
    if task == "classification" and kind != "classification":
        raise UserError(f"task classification needs class labels per image; dataset {bundle_name(bundle)} is for "
                        f"task {kind} (set task={kind})")
    return bundle


def bundle_name(bundle: DataBundle) -> str:
    return repr(bundle.description.split(":")[0]) if bundle.description else "(unnamed)"


def load_data(cfg: DataConfig, task: str | None = None) -> DataBundle:
    """Build the dataset named by ``cfg.name`` (as ``task`` reads it: :func:`for_task`), cut the held-out
    split and apply class subsets."""
    _load_families()
    bundle: DataBundle = for_task(DATASETS.get(cfg.name)(cfg), task)
    classes = list(bundle.classes)
    pool, val, test = bundle.train, bundle.val, bundle.test
    if val is None:
        if cfg.val_fraction <= 0:
            raise UserError(f"dataset {cfg.name!r} has no validation split of its own; "
                            f"set data.val_fraction > 0 (got {cfg.val_fraction})")
        tr_idx, va_idx = stratified_split(targets_of(pool), cfg.val_fraction, cfg.split_seed)
        pool, val = select(pool, tr_idx), select(pool, va_idx)
    if cfg.classes is not None:
        keep = list(cfg.classes)
        bad = [c for c in keep if not 0 <= c < len(classes)]
        if bad or len(set(keep)) != len(keep) or not keep:
            raise UserError(f"data.classes={keep} must be distinct labels in 0..{len(classes) - 1} "
                            f"of dataset {cfg.name!r}")
        pool, val = _keep_classes(pool, keep), _keep_classes(val, keep)
        test = _keep_classes(test, keep) if test is not None else None
        classes = [classes[c] for c in keep]
    # One class of objects is a detector; a segmentation set always has its background class too; a
    # forecaster's "classes" are its outputs (one for one target one step ahead).
    if len(classes) < 2 and (bundle.extra or {}).get("task") not in ("detection", "segmentation", "forecast",
                                                                         "frames"):
        raise UserError(f"dataset {cfg.name!r} has {len(classes)} class ({', '.join(map(str, classes))}); a classifier "
                        f"needs at least 2 (an image folder needs a subfolder per class)")
    if len(val) == 0:
        raise UserError(f"the validation split of {cfg.name!r} is empty; raise data.val_fraction "
                        f"(got {cfg.val_fraction}) or keep more classes")
    if len(pool) == 0:
        raise UserError(f"the training split of {cfg.name!r} is empty; lower data.val_fraction "
                        f"(got {cfg.val_fraction})")
    if cfg.per_class is not None:
        pool = _per_class(pool, cfg.per_class, cfg.split_seed)
    if cfg.subset is not None and cfg.subset < len(pool):
        # A seeded random subset: many archives are sorted by label, so the first N would be one class.
        g = torch.Generator().manual_seed(cfg.split_seed + 29)
        pool = select(pool, torch.randperm(len(pool), generator=g)[:cfg.subset].sort().values)
    input_shape = tuple(bundle.input_shape)
    if cfg.image_size is not None and isinstance(pool, TensorData) and input_shape[1:] != (cfg.image_size,) * 2:
        pool, val = resize(pool, cfg.image_size), resize(val, cfg.image_size)
        test = resize(test, cfg.image_size) if isinstance(test, TensorData) else test
        input_shape = (input_shape[0], cfg.image_size, cfg.image_size)
    mean, std = bundle.mean, bundle.std
    if not mean:
        if not isinstance(pool, TensorData):
            raise AssertionError(f"dataset {cfg.name} must give its normalisation")
        mean, std = channel_stats(pool.images)
    return DataBundle(pool, val, test, classes, input_shape, tuple(mean), tuple(std),
                      DATASETS.entry(cfg.name).description, bundle.extra)


def load_folds(cfg: DataConfig, k: int, task: str | None = None) -> list[DataBundle]:
    """The ``k`` folds of stratified K-fold cross-validation over the dataset's training data
    (``train.cv_folds``): bundle ``i`` validates on fold ``i`` and trains on the others. The folds are
    disjoint, cover every item and keep each class's share (scikit-learn's StratifiedKFold, shuffled
    by ``data.split_seed``). ``data.classes`` and ``data.subset`` apply first, as in training."""
    from sklearn.model_selection import StratifiedKFold

    _load_families()
    bundle: DataBundle = for_task(DATASETS.get(cfg.name)(cfg), task)
    if bundle.val is not None:
        raise UserError(f"train.cv_folds: dataset {cfg.name!r} cuts its own validation split; cross-validation "
                        f"needs one whose held-out split cnnkit cuts (image folders and in-memory sets, text files)")
    pool, classes = bundle.train, list(bundle.classes)
    if cfg.classes is not None:
        pool, classes = _keep_classes(pool, list(cfg.classes)), [classes[c] for c in cfg.classes]
    if cfg.subset is not None and cfg.subset < len(pool):
        g = torch.Generator().manual_seed(cfg.split_seed + 29)
        pool = select(pool, torch.randperm(len(pool), generator=g)[:cfg.subset].sort().values)
    input_shape = tuple(bundle.input_shape)
    if cfg.image_size is not None and isinstance(pool, TensorData) and input_shape[1:] != (cfg.image_size,) * 2:
        pool, input_shape = resize(pool, cfg.image_size), (input_shape[0], cfg.image_size, cfg.image_size)
    labels = targets_of(pool)
    counts = torch.bincount(labels, minlength=len(classes))
    if int(counts.min()) < k:
        rare = int(counts.argmin())
        raise UserError(f"train.cv_folds={k}: class {classes[rare]!r} has {int(counts[rare])} items, fewer than the "
                        f"folds; lower train.cv_folds")
    folds = StratifiedKFold(n_splits=k, shuffle=True, random_state=cfg.split_seed)
    out = []
    for tr, va in folds.split(labels.numpy().reshape(-1, 1), labels.numpy()):
        train, val = select(pool, torch.as_tensor(tr)), select(pool, torch.as_tensor(va))
        mean, std = bundle.mean, bundle.std
        if not mean:
            mean, std = channel_stats(train.images)
        out.append(DataBundle(train, val, bundle.test, classes, input_shape, tuple(mean), tuple(std),
                              DATASETS.entry(cfg.name).description, dict(bundle.extra or {})))
    return out


def load_all(cfg: DataConfig, task: str | None = None) -> DataBundle:
    """Every item of the dataset ``cfg`` names (no held-out split, no subsets): what ``cnnkit eval
    --data PATH`` measures. Its splits (train, val, test) are joined into ``train``; ``data.classes``
    and ``data.image_size`` apply as in training. The bundle's mean/std are the data's own."""
    _load_families()
    bundle: DataBundle = for_task(DATASETS.get(cfg.name)(cfg), task)
    parts = [p for p in (bundle.train, bundle.val, bundle.test) if p is not None and len(p)]
    if not parts:
        raise UserError(f"dataset {cfg.name!r} at {cfg.path!r} holds no items")
    if all(isinstance(p, TensorData) for p in parts):
        data: Any = TensorData(torch.cat([p.images for p in parts]), torch.cat([p.labels for p in parts]))
    else:
        from torch.utils.data import ConcatDataset

        data = ConcatDataset(parts)
        if all(getattr(p, "targets", None) is not None or isinstance(p, TensorData) for p in parts):
            data.targets = torch.cat([targets_of(p) for p in parts]).tolist()  # type: ignore[attr-defined]
    classes = list(bundle.classes)
    if cfg.classes is not None:
        data = _keep_classes(data, list(cfg.classes))
        classes = [classes[c] for c in cfg.classes]
    input_shape = tuple(bundle.input_shape)
    if cfg.image_size is not None and isinstance(data, TensorData) and input_shape[1:] != (cfg.image_size,) * 2:
        data = resize(data, cfg.image_size)
        input_shape = (input_shape[0], cfg.image_size, cfg.image_size)
    return DataBundle(data, None, None, classes, input_shape, tuple(bundle.mean), tuple(bundle.std),
                      DATASETS.entry(cfg.name).description, bundle.extra)
