"""Object detection data: the ``coco``, ``yolo`` and ``voc`` file formats, the generated ``shapes`` and
``mnist_detect`` sets, and the per-item transforms and collate of the detection task.

Importing this package registers the datasets. Items are ``(image uint8 (3, H, W), target dict)``
at the image's own size; see :mod:`cnnkit.data.detection.common` for the target's keys and
:mod:`cnnkit.data.detection.transforms` for what the task's loaders do with them.
"""

from cnnkit.data.detection import formats, synthetic  # noqa: F401  (registers the datasets)
from cnnkit.data.detection.common import DetectionDataset, ImageRecord, check_boxes, make_target
from cnnkit.data.detection.formats import read_coco, read_voc, read_yolo
from cnnkit.data.detection.synthetic import MnistDetectDataset, ShapesDataset, SyntheticDetection
from cnnkit.data.detection.transforms import DetectionTransform, detection_collate, detection_transforms

__all__ = ["DetectionDataset", "DetectionTransform", "ImageRecord", "MnistDetectDataset", "ShapesDataset",
           "SyntheticDetection", "check_boxes", "detection_collate", "detection_transforms", "make_target",
           "read_coco", "read_voc", "read_yolo"]
