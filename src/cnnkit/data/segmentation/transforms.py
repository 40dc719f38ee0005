"""Per-item transforms and the batch collate of semantic segmentation: torchvision's v2 transforms move
the mask (a :class:`~torchvision.tv_tensors.Mask`) with the image, so no geometry is written here.

The pipeline of one ``(image, mask)`` item:

1. ``data.image_size`` S -> ``Resize((S, S))``, antialiased for the image; torchvision resizes a
   ``Mask`` with nearest-neighbour interpolation whatever is asked, so class indices stay class indices;
2. when training:

   * ``data.crop_size`` c -> ``RandomCrop(c, pad_if_needed=True)``: a random c x c window (the U-Net
     paper trains on tiles); an image smaller than c is padded, the image with 0 and the mask with
     :data:`~cnnkit.data.segmentation.common.IGNORE`, so the padding counts in no loss;
   * ``augment.hflip`` -> ``RandomHorizontalFlip``, ``augment.vflip`` -> ``RandomVerticalFlip``;
   * ``augment.rotation`` d -> ``RandomRotation(d)`` (bilinear for the image, nearest for the mask);
     the uncovered corners are 0 in the image and IGNORE in the mask;
   * ``augment.elastic`` alpha -> ``ElasticTransform(alpha, augment.elastic_sigma)``: the smooth
     random deformation the U-Net paper found essential on its 30 training slices (Ronneberger et
     al. 2015, "U-Net: Convolutional Networks for Biomedical Image Segmentation", section 3.1);
     torchvision's, with its random field smoothed in two 1-D passes (:class:`SeparableElastic`);
   * ``augment.brightness`` / ``contrast`` / ``saturation`` / ``hue`` -> ``ColorJitter`` (the image only).

Validation, evaluation and prediction see whole images (resized when ``data.image_size`` is set).
Whole images of different sizes batch together through :func:`segmentation_collate`, which pads
them at the bottom and right.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from cnnkit.config import AugmentConfig
from cnnkit.data.segmentation.common import IGNORE
from cnnkit.errors import UserError

#: Fills of the image and the mask where a crop's padding or a rotation uncovers the canvas.
FILL = {tv_tensors.Image: 0, tv_tensors.Mask: IGNORE}
#: Options of ``augment`` that segmentation does not implement, with what to use instead.
_UNSUPPORTED = {
    "crop_padding": "data.crop_size=N trains on random N x N crops",
    "cutout": "",
    "scale_jitter": "data.image_size resizes every image",
    "mosaic": "",
}
_OFFERED = ("augment.hflip, augment.vflip, augment.rotation, augment.elastic (with augment.elastic_sigma), "
            "augment.brightness, augment.contrast, augment.saturation, augment.hue and data.crop_size (random crops)")


def check_augment(augment: AugmentConfig) -> None:
    """A UserError for the ``augment`` options segmentation does not offer (see the module docstring)."""
    for key, instead in _UNSUPPORTED.items():
        value = getattr(augment, key)
        if value:
            hint = f" ({instead})" if instead else ""
            raise UserError(f"augment.{key}={value} is not available for segmentation; segmentation augments with "
                            f"{_OFFERED}{hint}")
    if augment.hflip == "alternating":
        raise UserError("augment.hflip=alternating is for classification; segmentation flips each image with "
                        "probability 0.5: set augment.hflip=true")


class SeparableElastic(v2.ElasticTransform):
    """``v2.ElasticTransform`` whose random displacement field is smoothed by two 1-D Gaussian passes
    (rows, then columns) instead of one 2-D pass: the same field, since a 2-D Gaussian kernel is the
    product of two 1-D ones and reflect padding is too, at ``2k`` instead of ``k * k`` operations a
    pixel for a ``k``-wide kernel (``k = 8 sigma + 1``: 41 at the default sigma 5, 20 times fewer).
    The warp itself is torchvision's."""

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        height, width = v2.query_size(flat_inputs)
        fields = []
        for scale, sigma in ((self.alpha[0] / width, self.sigma[0]), (self.alpha[1] / height, self.sigma[1])):
            d = torch.rand(1, 1, height, width) * 2 - 1
            if sigma > 0.0:
                k = int(8 * sigma + 1)
                k += 1 - k % 2  # odd, as torchvision makes it
                d = v2.functional.gaussian_blur(d, [k, 1], [sigma, sigma])  # along each row
                d = v2.functional.gaussian_blur(d, [1, k], [sigma, sigma])  # along each column
            fields.append(d * scale)
        return {"displacement": torch.concat(fields, 1).permute([0, 2, 3, 1])}  # 1 x H x W x 2


def _elastic_reach(sigma: float) -> int:
    """Half the side of the Gaussian kernel ElasticTransform smooths its field with (``int(8 sigma + 1)``,
    made odd): an image must be larger than this on both sides."""
    k = int(8 * sigma + 1)
    return (k + 1 - k % 2) // 2


class SegmentationTransform:
    """``(image, mask) -> (image uint8 (C, h, w), mask int64 (h, w))``: the pipeline of the module
    docstring (a class, so that it pickles into DataLoader workers)."""

    def __init__(self, augment: AugmentConfig | None, image_size: int | None, crop_size: int | None,
                 train: bool) -> None:
        if augment is not None:
            check_augment(augment)
        steps: list[Any] = []
        if image_size:
            steps.append(v2.Resize((image_size, image_size), antialias=True))
        self.elastic_sigma: float | None = None
        if train and crop_size:
            steps.append(v2.RandomCrop(crop_size, pad_if_needed=True, fill=FILL, padding_mode="constant"))
        if train and augment is not None and augment.active():
            if augment.hflip:
                steps.append(v2.RandomHorizontalFlip(p=0.5))
            if augment.vflip:
                steps.append(v2.RandomVerticalFlip(p=0.5))
            if augment.rotation:
                steps.append(v2.RandomRotation(augment.rotation, interpolation=v2.InterpolationMode.BILINEAR,
                                               fill=FILL))
            if augment.elastic:
                self.elastic_sigma = augment.elastic_sigma
                steps.append(SeparableElastic(alpha=augment.elastic, sigma=augment.elastic_sigma, fill=FILL))
            if augment.brightness or augment.contrast or augment.saturation or augment.hue:
                # Saturation and hue leave a one-channel (grey) image as it is.
                steps.append(v2.ColorJitter(brightness=augment.brightness, contrast=augment.contrast,
                                            saturation=augment.saturation, hue=augment.hue))
        self.image_size, self.crop_size, self.train = image_size, crop_size, train
        # The side the elastic field is drawn at, when it is known before the images are seen.
        side = crop_size if train and crop_size else image_size
        if self.elastic_sigma is not None and side:
            self._check_elastic(side, side)
        self.pipeline = v2.Compose(steps or [v2.Identity()])

    def _check_elastic(self, height: int, width: int) -> None:
        reach = _elastic_reach(self.elastic_sigma or 0.0)
        if min(height, width) <= reach:
            raise UserError(f"augment.elastic_sigma={self.elastic_sigma:g} needs images (or crops) larger than "
                            f"{reach} pixels on each side, got {width}x{height}; lower augment.elastic_sigma or "
                            f"raise data.crop_size / data.image_size")

    def __call__(self, image: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.elastic_sigma is not None and not (self.train and self.crop_size) and not self.image_size:
            self._check_elastic(int(image.shape[-2]), int(image.shape[-1]))
        out, out_mask = self.pipeline(tv_tensors.Image(image), tv_tensors.Mask(mask))
        return out.as_subclass(torch.Tensor), out_mask.as_subclass(torch.Tensor).to(torch.int64)

    def __repr__(self) -> str:
        return f"SegmentationTransform({self.pipeline})"


def segmentation_transforms(augment: AugmentConfig | None, image_size: int | None, crop_size: int | None,
                            train: bool) -> Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """The per-item transform of a training (``train``) or evaluation loader; see the module docstring.

    Example::

        t = segmentation_transforms(cfg.augment, cfg.data.image_size, cfg.data.crop_size, train=True)
        image, mask = t(*bundle.train[0])     # uint8 (C, c, c), int64 (c, c)
    """
    for key, value in (("image_size", image_size), ("crop_size", crop_size)):
        if value is not None and value <= 0:
            raise ValueError(f"{key} must be positive, got {value}")
    return SegmentationTransform(augment, image_size, crop_size, train)


def segmentation_collate(items: list[tuple[torch.Tensor, torch.Tensor]],
                         pad_to: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """``(images uint8 (N, C, H, W), masks int64 (N, H, W))`` of transformed items.

    Each item is padded at the bottom and right to the batch's largest height and width, rounded up
    to a multiple of ``pad_to``: images with 0, masks with :data:`IGNORE`. A network that halves its
    input ``k`` times (a U-Net of depth ``k``) takes ``pad_to = 2 ** k``.

    Example::

        images, masks = segmentation_collate([(x1, m1), (x2, m2)], pad_to=16)
    """
    if pad_to < 1:
        raise ValueError(f"pad_to must be >= 1, got {pad_to}")
    if not items:
        return torch.empty((0, 0, 0, 0), dtype=torch.uint8), torch.empty((0, 0, 0), dtype=torch.int64)
    channels = {int(x.shape[0]) for x, _ in items}
    if len(channels) > 1:
        raise ValueError(f"segmentation_collate needs images with one number of channels; got {sorted(channels)}")
    for x, m in items:
        if tuple(m.shape) != tuple(x.shape[1:]):
            raise ValueError(f"a mask of shape {tuple(m.shape)} does not fit its image of shape {tuple(x.shape)}")
    height = max(int(x.shape[1]) for x, _ in items)
    width = max(int(x.shape[2]) for x, _ in items)
    height, width = -(-height // pad_to) * pad_to, -(-width // pad_to) * pad_to
    images = torch.zeros((len(items), channels.pop(), height, width), dtype=torch.uint8)
    masks = torch.full((len(items), height, width), IGNORE, dtype=torch.int64)
    for i, (x, m) in enumerate(items):
        h, w = x.shape[1:]
        images[i, :, :h, :w] = x.as_subclass(torch.Tensor)
        masks[i, :h, :w] = m.as_subclass(torch.Tensor)
    return images, masks
