"""What every semantic segmentation dataset shares: the item layout, the ignore value and the bundle.

An item is ``(image, mask)``: ``image`` a uint8 tensor ``(C, H, W)`` at the image's own size and
``mask`` a :class:`torchvision.tv_tensors.Mask` ``(H, W)`` int64 holding each pixel's class index
``0..K-1``, or :data:`IGNORE` for pixels that count neither in the loss nor in the metrics (a
border the annotator left open, the padding of a crop or a batch, the corners a rotation uncovers).

The bundle's ``extra`` is ``{"task": "segmentation", "ignore_index": IGNORE}``, which the task
passes to its loss (``CrossEntropyLoss(ignore_index=...)``) and metrics.
"""

from __future__ import annotations

from typing import Sequence

from cnnkit.config import DataConfig
from cnnkit.data.base import DataBundle
from cnnkit.data.detection.common import detection_stats
from cnnkit.errors import UserError

#: The class index of pixels to ignore. It fits a uint8 mask, so the largest class index is 254.
IGNORE = 255


def default_class_names(k: int) -> list[str]:
    """``["background", "foreground"]`` for two classes, ``["class_0", ..., "class_<k-1>"]`` otherwise."""
    return ["background", "foreground"] if k == 2 else [f"class_{i}" for i in range(k)]


def reject_classification_options(cfg: DataConfig) -> None:
    """``data.classes`` and ``data.per_class`` pick classes of a classifier's labels: a UserError here."""
    for key in ("classes", "per_class"):
        value = getattr(cfg, key)
        if value is not None:
            raise UserError(f"data.{key}={value} is a classification option; segmentation dataset {cfg.name!r} "
                            f"keeps every class and every image (unset data.{key}; data.subset=N keeps N "
                            f"training images, data.mask_values maps mask values to classes)")


def segmentation_bundle(cfg: DataConfig, train, val, classes: Sequence[str], channels: int, default_size: int,
                        description: str) -> DataBundle:
    """The DataBundle of a segmentation dataset: its own validation split, ``input_shape`` ``(C, S, S)``
    with ``S`` = ``data.crop_size``, else ``data.image_size``, else ``default_size``; mean and std
    per channel from thumbnails of the training images (``train.thumbnail(i)``)."""
    mean, std = detection_stats(train, cfg.split_seed)
    size = cfg.crop_size or cfg.image_size or default_size
    return DataBundle(train=train, val=val, test=None, classes=list(classes), input_shape=(channels, size, size),
                      mean=mean, std=std, description=description,
                      extra={"task": "segmentation", "ignore_index": IGNORE})
