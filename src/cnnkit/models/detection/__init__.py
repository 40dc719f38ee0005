"""Detectors: networks that return boxes, scores and labels (``task: detection``).

Every detector here answers as torchvision's do: ``model(images, targets)`` in training mode
returns a dict of losses, ``model(images)`` in eval mode a list of ``{"boxes", "scores",
"labels"}`` per image (boxes x1, y1, x2, y2 in input pixels). Importing the package registers
them in :data:`cnnkit.models.registry.MODELS`.
"""

from cnnkit.models.detection import families, yolo  # noqa: F401
from cnnkit.models.detection.families import TorchvisionDetector
from cnnkit.models.detection.yolo import YOLODetector

__all__ = ["TorchvisionDetector", "YOLODetector"]
