"""Semantic masks from instance masks: a detection set whose objects carry masks (the generated
``shapes`` set, a COCO file with segmentations) becomes a segmentation set.

Pixel ``(r, c)`` of the semantic mask is ``label + 1`` of the object whose instance mask covers it
(where objects overlap, the later object of the target wins, as it was drawn over the earlier), and
0, "background", where no object does. The classes are ``["background", *detection classes]``.

Example::

    seg = semantic_bundle(load_data(DataConfig(name="shapes")))
    seg.classes                       # ['background', 'circle', 'square', 'triangle']
    image, mask = seg.train[0]        # uint8 (3, 128, 128); Mask (128, 128) int64 in 0..3
"""

from __future__ import annotations

import copy
from typing import Any, Sequence

import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors

from cnnkit.data.base import DataBundle
from cnnkit.data.segmentation.common import IGNORE
from cnnkit.errors import UserError


def semantic_mask(masks: torch.Tensor, labels: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The int64 ``(H, W)`` class mask of instance ``masks`` ``(K, H, W)`` with ``labels`` ``(K,)``:
    ``label + 1`` under an object (the later one where they overlap), 0 elsewhere."""
    out = torch.zeros(size, dtype=torch.int64)
    masks = masks.as_subclass(torch.Tensor)
    for mask, label in zip(masks, labels.tolist()):
        out[mask.bool()] = int(label) + 1
    return out


class SemanticMasks(Dataset):
    """Items ``(image, Mask (H, W) int64)`` of a detection dataset whose targets carry ``"masks"``."""

    def __init__(self, detection: Dataset) -> None:
        self.detection = detection

    def __len__(self) -> int:
        return len(self.detection)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, tv_tensors.Mask]:
        image, target = self.detection[i]
        if "masks" not in target:
            raise UserError(f"item {i} ({target.get('file')}) of {type(self.detection).__name__} has no instance "
                            f"masks, so it gives no semantic mask")
        size = (int(image.shape[-2]), int(image.shape[-1]))
        return image, tv_tensors.Mask(semantic_mask(target["masks"], target["labels"], size))

    def thumbnail(self, i: int, *args: Any) -> torch.Tensor:
        return self.detection.thumbnail(i, *args)  # type: ignore[attr-defined]

    def subset(self, index: Sequence[int]) -> "SemanticMasks":
        return SemanticMasks(self.detection.subset(index))  # type: ignore[attr-defined]


def with_instance_masks(dataset: Dataset) -> Dataset:
    """``dataset`` (a copy, when it decodes masks on request: ``with_masks``) whose items carry masks;
    a UserError when it has none to give."""
    if hasattr(dataset, "with_masks"):  # a COCO file: masks decoded from the segmentations on request
        dataset = copy.copy(dataset)
        dataset.with_masks = True  # type: ignore[attr-defined]
        dataset.check_masks()  # type: ignore[attr-defined]
    elif len(dataset) and "masks" not in dataset[0][1]:  # type: ignore[arg-type]
        raise UserError(f"the detection dataset ({type(dataset).__name__}) has no instance masks, so it gives no "
                        f"semantic masks; semantic segmentation from instances needs the generated shapes set or a "
                        f"COCO file whose annotations have a 'segmentation' (for mask files use data.name=masks)")
    return dataset


def semantic_bundle(bundle: DataBundle) -> DataBundle:
    """The segmentation bundle of a detection ``bundle`` whose objects have instance masks: the same
    images, split, input shape and normalisation; items ``(image, Mask (H, W))``, classes
    ``["background", *bundle.classes]``, ``extra`` ``{"task": "segmentation", "ignore_index": IGNORE}``.

    A COCO dataset gets ``with_masks = True`` (on a copy: ``bundle`` is left as it is), and every object
    is checked for a segmentation before training starts.
    """
    task = (bundle.extra or {}).get("task", "classification")
    if task != "detection":
        raise UserError(f"semantic masks come from a detection dataset with instance masks; this one is a {task} "
                        f"dataset ({bundle.description})")
    splits = [None if ds is None else SemanticMasks(with_instance_masks(ds))
              for ds in (bundle.train, bundle.val, bundle.test)]
    description = f"{bundle.description}; semantic masks from the instance masks (background + {len(bundle.classes)})"
    return DataBundle(train=splits[0], val=splits[1], test=splits[2], classes=["background", *bundle.classes],
                      input_shape=tuple(bundle.input_shape), mean=tuple(bundle.mean), std=tuple(bundle.std),
                      description=description, extra={"task": "segmentation", "ignore_index": IGNORE})
