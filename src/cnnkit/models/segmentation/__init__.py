"""Segmentation models: a class for every pixel (``task: segmentation``) or a mask for every object
(``task: instance``).

Semantic models map ``x (N, C, H, W)`` to logits ``(N, K, h, w)`` and say how they want their
inputs sized (:class:`~cnnkit.models.segmentation.base.Segmenter`: ``pad_multiple``,
``output_size``, ``input_size_for``):

* ``unet`` (:mod:`.unet`): Ronneberger et al. 2015, 'same' or the paper's 'valid' padding;
* ``fcn32s``, ``fcn16s``, ``fcn8s`` (:mod:`.fcn`): Long et al. 2015, on any cnnkit backbone;
* ``deeplabv3``, ``fcn`` (:mod:`.families`): torchvision's heads on any cnnkit backbone.

``mask_rcnn`` (:mod:`.families`) answers as the detectors do, with a ``masks`` entry. Importing
the package registers them in :data:`cnnkit.models.registry.MODELS`.
"""

from cnnkit.models.segmentation import families, fcn, unet  # noqa: F401
from cnnkit.models.segmentation.base import Segmenter
from cnnkit.models.segmentation.fcn import FCN
from cnnkit.models.segmentation.families import CoarsestHead
from cnnkit.models.segmentation.unet import UNet

__all__ = ["FCN", "CoarsestHead", "Segmenter", "UNet"]
