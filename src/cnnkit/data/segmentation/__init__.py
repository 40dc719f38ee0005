"""Semantic segmentation data: the ``masks`` file format (image files with class-mask files), semantic
masks made from the instance masks of a detection set, and the joint per-item transforms and
padding collate of the segmentation task.

Importing this package registers the datasets. Items are ``(image uint8 (C, H, W), Mask (H, W)
int64)`` at the image's own size, pixels to ignore marked :data:`IGNORE` (255); see
:mod:`cnnkit.data.segmentation.common` for the layout, :mod:`cnnkit.data.segmentation.formats` for
how mask files are read and :mod:`cnnkit.data.segmentation.transforms` for what the task's loaders do
with the items.
"""

from cnnkit.data.segmentation import formats  # noqa: F401  (registers the datasets)
from cnnkit.data.segmentation.common import IGNORE, default_class_names, segmentation_bundle
from cnnkit.data.segmentation.formats import MaskCoding, MaskDataset, MaskRecord, read_masks
from cnnkit.data.segmentation.instances import SemanticMasks, semantic_bundle, semantic_mask
from cnnkit.data.segmentation.transforms import (SegmentationTransform, SeparableElastic, segmentation_collate,
                                                 segmentation_transforms)

__all__ = ["IGNORE", "MaskCoding", "MaskDataset", "MaskRecord", "SegmentationTransform", "SemanticMasks",
           "SeparableElastic", "default_class_names", "read_masks", "segmentation_bundle", "segmentation_collate",
           "segmentation_transforms", "semantic_bundle", "semantic_mask"]
