"""Semantic segmentation: a class for every pixel; pixel accuracy, IoU and Dice per class.

A batch is ``(images uint8 -> normalised (N, C, H, W), masks int64 (N, H, W))``; mask pixels equal
to :data:`IGNORE` (255: void, padding, what a rotation uncovered) count nowhere. A model maps
``(N, C, H, W)`` to logits ``(N, K, h, w)``: ``h, w = H, W`` with 'same' padding; smaller with the
U-Net paper's 'valid' padding, in which case the masks are centre-cropped to the output (the
output pixel (i, j) is the input pixel (i + m, j + m), m the margin the convolutions ate).

Whole images of any size go through :func:`segment`: reflection-padded to the model's
``pad_multiple``, or, for a valid-padding model or with ``tile``, cut into tiles whose input
windows overlap by the margin: the U-Net paper's overlap-tile strategy, which gives a
valid-padding network exactly its whole-image answer, in as little memory as one tile needs.

Metrics come from one torchmetrics confusion matrix (summed over batches and DDP ranks):
``pixel_accuracy`` = trace / total; per class ``iou`` = TP / (TP + FP + FN) and
``dice`` = 2 TP / (2 TP + FP + FN); ``miou`` is the mean IoU over the classes that occur (in the
masks or the predictions) and ``dice`` the mean Dice over the foreground classes (all but class 0).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cnnkit.errors import UserError
from cnnkit.nn.runtime import autocast
from cnnkit.tasks.base import Task, fmt_metric, register_task
from cnnkit.tasks.metrics import Ratio

#: Mask value of pixels that count in no loss and no metric.
IGNORE = 255
#: Images with a side above this are predicted in tiles by ``cnnkit predict`` (memory, not accuracy).
TILE_ABOVE = 1024
#: Focal loss focusing parameter (Lin et al. 2017).
FOCAL_GAMMA = 2.0
_SEG_LOSSES = ("cross_entropy", "dice", "focal", "cross_entropy+dice", "focal+dice")


@register_task("segmentation", "a class per pixel: pixel accuracy, per-class IoU and Dice, mean IoU")
class SegmentationTask(Task):
    best_metric = "val_miou"
    best_mode = "max"
    metric_names = ("pixel_accuracy", "miou", "dice")

    def __init__(self, cfg, classes: list[str], input_shape: tuple[int, ...] | None = None) -> None:
        super().__init__(cfg, classes, input_shape)
        if cfg.train.engine != "torch":
            raise UserError("task segmentation runs on the torch engine; remove train.engine=reference")
        if cfg.train.loss not in _SEG_LOSSES:
            raise UserError(f"train.loss={cfg.train.loss} is not a segmentation loss; choose from "
                            f"{', '.join(_SEG_LOSSES)}")
        weights = cfg.train.class_weights
        if weights is not None and classes and len(weights) != len(classes):
            raise UserError(f"train.class_weights has {len(weights)} values for {len(classes)} classes "
                            f"({', '.join(classes)}); give one weight per class")
        if weights is not None and any(not (w >= 0 and math.isfinite(w)) for w in weights):
            raise UserError(f"train.class_weights must be finite and >= 0, got {weights}")
        from cnnkit.data.segmentation import segmentation_collate

        self.collate = segmentation_collate

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def transform(self, train: bool) -> Callable[[Any, Any], tuple[Any, Any]]:
        from cnnkit.data.segmentation import segmentation_transforms

        d = self.cfg.data
        return segmentation_transforms(self.cfg.augment if train else None, d.image_size,
                                       d.crop_size if train else None, train)

    # -- training

    def make_loss(self) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        t = self.cfg.train
        return SegmentationLoss(t.loss, t.class_weights, t.border_weight, t.border_sigma)

    def forward(self, model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
        # A valid-padding network trains on its own geometry (the masks are centre-cropped to its
        # output); any other is fed crops of any size, padded to its multiple and cut back.
        return model(inputs) if is_valid_padding(model) else segment(model, inputs)

    def eval_forward(self, model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
        return segment(model, inputs)

    # -- evaluation

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader, device: torch.device, precision: str = "fp32",
                 loss_fn: Callable | None = None) -> dict[str, Any]:
        """Loss, pixel accuracy, mean IoU and mean foreground Dice over ``loader`` (``n``: images)."""
        scores = self._scores(model, loader, device, precision, loss_fn)
        out = {k: scores[k] for k in ("loss", "pixel_accuracy", "miou", "dice")}
        out["n"] = scores["n"]
        return out

    @torch.no_grad()
    def eval_report(self, model: nn.Module, loader, device: torch.device) -> dict[str, Any]:
        """Per class IoU and Dice (``per_class``), the confusion matrix of pixels and ``n_images``."""
        s = self._scores(model, loader, device, "fp32", None)
        return {"per_class": s["per_class"], "confusion_matrix": s["confusion_matrix"], "n_images": s["n"]}

    def _scores(self, model: nn.Module, loader, device: torch.device, precision: str,
                loss_fn: Callable | None) -> dict[str, Any]:
        from torchmetrics.classification import MulticlassConfusionMatrix

        loss_fn = loss_fn or self.make_loss()
        was_training = model.training
        model.eval()
        k = self.num_classes
        confusion = MulticlassConfusionMatrix(k, ignore_index=IGNORE).to(device)
        loss = Ratio().to(device)
        for images, masks in loader:
            if len(masks) == 0:
                continue
            with autocast(device, precision):
                logits = self.eval_forward(model, images)
            logits = logits.float()
            masks = match_output(masks, logits)
            loss.update(loss_fn(logits, masks).double() * len(masks), len(masks))
            confusion.update(logits.argmax(1), masks)
        model.train(was_training)
        n = int(round(float(loss.den)))
        if n == 0:
            return {"loss": None, "pixel_accuracy": None, "miou": None, "dice": None, "n": 0,
                    "per_class": {}, "confusion_matrix": []}
        cm = confusion.compute().double().cpu()
        return {"loss": float(loss.compute()), **scores_from_confusion(cm, self.classes), "n": n,
                "confusion_matrix": cm.long().tolist()}

    # -- using a trained model

    def predict_files(self, model: nn.Module, info: dict[str, Any], files: Sequence[str], top_k: int = 5,
                      **options: Any) -> list[dict]:
        """Per image file: its mask at the file's own size and each class's share of the pixels; with
        ``save`` (a folder) the class-index PNG and an overlay are written there and named."""
        from cnnkit.data.files import load_image, normalise

        save, tile = options.get("save"), options.get("tile")
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
        size = self.cfg.data.image_size
        out = []
        for f in files:
            original = load_image(f, info["input_shape"], resize=False)  # uint8 (C, H0, W0), its own size
            h0, w0 = original.shape[-2:]
            x = torch.from_numpy(normalise(original[None], info["mean"], info["std"])).to(device)
            if size is not None:  # the run was trained on images resized to size x size
                x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
            was = model.training
            model.eval()
            with torch.no_grad():
                logits = segment(model, x, tile=tile if tile else (_auto_tile(model, x) if size is None else None))
            model.train(was)
            if logits.shape[-2:] != (h0, w0):
                logits = F.interpolate(logits.float(), size=(h0, w0), mode="bilinear", align_corners=False)
            mask = logits.argmax(1)[0].to(torch.uint8).cpu()
            result = {"file": str(f), "size": [int(h0), int(w0)], "shares": class_shares(mask, self.classes),
                      "mask": None, "overlay": None}
            if save is not None:
                result["mask"], result["overlay"] = (str(p) for p in save_mask(original, mask, str(f), save,
                                                                                self.num_classes))
            out.append(result)
        return out

    def predict(self, model: nn.Module, images: torch.Tensor, names: Sequence[str], top_k: int = 5,
                **_: Any) -> list[dict]:
        """Each class's share of the pixels of a batch of normalised images, at the batch's size (cnnkit
        predict reads files through :meth:`predict_files` instead, each at its own size)."""
        with torch.no_grad():
            mask = segment(model, images).argmax(1)
        return [{"file": str(name), "size": list(m.shape), "shares": class_shares(m, self.classes)}
                for name, m in zip(names, mask)]

    def epoch_line(self, m: dict[str, Any]) -> str:
        f = fmt_metric
        return (f"train_loss {f(m.get('train_loss'))}  val_loss {f(m.get('val_loss'))}  "
                f"val_pixel_accuracy {f(m.get('val_pixel_accuracy'))}  val_miou {f(m.get('val_miou'))}  "
                f"val_dice {f(m.get('val_dice'))}")


# --------------------------------------------------------------------------- scores


def class_shares(mask: torch.Tensor, classes: Sequence[str]) -> dict[str, float]:
    """The fraction of a predicted mask's pixels in each class, by name (6 decimals)."""
    counts = torch.bincount(mask.flatten().long(), minlength=len(classes)).double()
    return {name: round(float(v), 6) for name, v in zip(classes, counts / counts.sum())}


def scores_from_confusion(cm: torch.Tensor, classes: Sequence[str]) -> dict[str, Any]:
    """Pixel accuracy, mean IoU, mean foreground Dice and the per-class figures of a confusion
    matrix ``cm[true, predicted]`` (pixel counts). A class absent from both the masks and the
    predictions has no IoU or Dice (None) and counts in no mean."""
    cm = cm.double()
    tp = cm.diag()
    fp = cm.sum(0) - tp
    fn = cm.sum(1) - tp
    union = tp + fp + fn
    present = union > 0
    iou = torch.where(present, tp / union.clamp_min(1), torch.nan)
    dice = torch.where(present, 2 * tp / (2 * tp + fp + fn).clamp_min(1), torch.nan)
    total = cm.sum()
    fg = dice[1:][present[1:]]

    def num(v: torch.Tensor) -> float | None:
        return None if torch.isnan(v) else float(v)

    return {
        "pixel_accuracy": float(tp.sum() / total) if total > 0 else None,
        "miou": float(iou[present].mean()) if present.any() else None,
        "dice": float(fg.mean()) if fg.numel() else None,
        "per_class": {name: {"iou": num(iou[i]), "dice": num(dice[i])} for i, name in enumerate(classes)},
    }


# --------------------------------------------------------------------------- losses


class SegmentationLoss:
    """``loss(logits (N, K, h, w), masks (N, H, W)) -> scalar``: cross-entropy, focal, Dice or a sum.

    * ``cross_entropy``: per pixel, with ``class_weights`` and, when ``border_weight`` w0 > 0, the
      U-Net paper's weight map (:func:`unet_weight_map`); the mean over the counted pixels.
    * ``focal``: ``-(1 - p_t) ** 2 * log p_t`` (Lin et al. 2017), weighted the same way: easy,
      confident pixels fade, hard ones remain.
    * ``dice``: ``1 - mean over classes of (2 sum p g + 1) / (sum p + sum g + 1)`` on the softmax
      probabilities ``p`` and one-hot masks ``g`` (soft Dice, Milletari et al. 2016): indifferent
      to how many pixels a class has, so a thin structure weighs as much as the background.
    Masks larger than the logits (valid padding) are centre-cropped to them.
    """

    def __init__(self, name: str, class_weights: Sequence[float] | None = None, border_weight: float = 0.0,
                 border_sigma: float = 5.0) -> None:
        self.parts = name.split("+")
        self.class_weights = None if class_weights is None else torch.tensor(class_weights, dtype=torch.float32)
        self.border_weight, self.border_sigma = border_weight, border_sigma

    def __call__(self, logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        masks = match_output(masks, logits)
        valid = masks != IGNORE
        target = torch.where(valid, masks, 0)
        total = logits.new_zeros(())
        if "cross_entropy" in self.parts or "focal" in self.parts:
            logp = logits.log_softmax(1)
            logp_t = logp.gather(1, target.unsqueeze(1)).squeeze(1)
            per_pixel = -logp_t
            if "focal" in self.parts:
                per_pixel = per_pixel * (1 - logp_t.exp()).pow(FOCAL_GAMMA)
            weight = self.pixel_weights(target, valid)
            total = total + (per_pixel * weight).sum() / weight.sum().clamp_min(1e-6)
        if "dice" in self.parts:
            total = total + soft_dice_loss(logits, target, valid)
        return total

    def pixel_weights(self, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """The weight of every pixel: its class's weight (1 without ``class_weights``), plus the border
        term when asked, 0 where ignored."""
        weight = valid.float()
        if self.class_weights is not None:
            weight = weight * self.class_weights.to(target.device)[target]
        if self.border_weight > 0:
            border = torch.stack([torch.from_numpy(unet_border_term(m, self.border_weight, self.border_sigma))
                                  for m in target.cpu().numpy()]).to(weight)
            weight = weight + border * valid
        return weight


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor,
                   smooth: float = 1.0) -> torch.Tensor:
    """``1 - mean over classes`` of the soft Dice of the softmax probabilities against one-hot masks,
    summed over the batch's counted pixels."""
    k = logits.shape[1]
    probs = logits.softmax(1) * valid.unsqueeze(1)
    onehot = F.one_hot(target, k).permute(0, 3, 1, 2).to(probs) * valid.unsqueeze(1)
    dims = (0, 2, 3)
    inter = (probs * onehot).sum(dims)
    denom = probs.sum(dims) + onehot.sum(dims)
    return 1 - ((2 * inter + smooth) / (denom + smooth)).mean()


def unet_border_term(mask: np.ndarray, w0: float, sigma: float) -> np.ndarray:
    """The separation term of the U-Net paper's weight map (eq. 2), for one mask (H, W):
    ``w0 * exp(-(d1 + d2) ** 2 / (2 sigma ** 2))`` on background pixels (class 0), ``d1`` and ``d2``
    the distances to the nearest and second nearest object (a connected region of a non-zero
    class); 0 on objects and where fewer than two objects exist. Large on the thin background
    gaps between touching cells, which the network must learn to keep open."""
    from scipy import ndimage

    labels, n = ndimage.label(mask > 0)
    out = np.zeros(mask.shape, dtype=np.float32)
    if n < 2:
        return out
    d1 = np.full(mask.shape, np.inf, dtype=np.float64)
    d2 = np.full(mask.shape, np.inf, dtype=np.float64)
    for i in range(1, n + 1):
        d = ndimage.distance_transform_edt(labels != i)
        closer = d < d1
        d2 = np.where(closer, d1, np.minimum(d2, d))
        d1 = np.where(closer, d, d1)
    background = mask == 0
    out[background] = (w0 * np.exp(-((d1 + d2) ** 2) / (2 * sigma ** 2)))[background]
    return out


# --------------------------------------------------------------------------- geometry


def match_output(masks: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """``masks`` (N, H, W) centre-cropped to the logits' (h, w) (a valid-padding model's output is the
    centre of its input); unchanged when the sizes agree."""
    h, w = logits.shape[-2:]
    H, W = masks.shape[-2:]
    if (H, W) == (h, w):
        return masks
    if H < h or W < w or (H - h) % 2 or (W - w) % 2:
        raise ValueError(f"the model's output {h}x{w} is not a centred crop of its input {H}x{W}")
    top, left = (H - h) // 2, (W - w) // 2
    return masks[..., top:top + h, left:left + w]


def _mirror(x: torch.Tensor, top: int, bottom: int, left: int, right: int) -> torch.Tensor:
    """Reflection padding of any width (repeated when a side is wider than the image, as the U-Net
    paper mirrors the border for its overlap tiles)."""
    while top or bottom or left or right:
        h, w = x.shape[-2:]
        t, b, l, r = (min(v, lim - 1) for v, lim in ((top, h), (bottom, h), (left, w), (right, w)))
        if not (t or b or l or r):  # a 1-pixel image cannot be reflected: repeat it
            return F.pad(x, (left, right, top, bottom), mode="replicate")
        x = F.pad(x, (l, r, t, b), mode="reflect")
        top, bottom, left, right = top - t, bottom - b, left - l, right - r
    return x


def segment(model: nn.Module, images: torch.Tensor, tile: int | None = None) -> torch.Tensor:
    """Logits ``(N, K, H, W)`` for images ``(N, C, H, W)`` of any size, in the images' own pixels.

    * A 'same' model without ``tile``: the images are reflection-padded at the bottom and right to
      the model's ``pad_multiple``, and the output is cut back.
    * A valid-padding model (its output smaller than its input), or ``tile`` given: overlap-tile.
      The output is made in ``tile`` x ``tile`` blocks (for a valid model, default the output of its
      training input); the input window of each block is the block plus the model's margin on every
      side, taken from the image mirrored at its borders. For a valid model each output pixel sees
      exactly the input it would see in one pass over the whole mirrored image, so the result is the
      whole-image one; a 'same' model sees a margin of context at every tile border instead.
    """
    n, _, h, w = images.shape
    multiple = int(getattr(model, "pad_multiple", 1) or 1)
    valid = is_valid_padding(model)
    if not valid and tile is None:
        x = _mirror(images, 0, _round_up(h, multiple) - h, 0, _round_up(w, multiple) - w)
        return model(x)[..., :h, :w]
    if valid:
        input_for = getattr(model, "input_size_for", None)
        if input_for is None:
            raise UserError(f"{type(model).__name__} gives a smaller output than its input but has no "
                            f"input_size_for(); it cannot be tiled")
        out_tile = tile or int(model.output_size(_valid_input(model, 256)))
        in_tile = int(input_for(out_tile))
        margin = (in_tile - out_tile) // 2
    else:
        out_tile = _round_up(tile, multiple)
        margin = max(multiple, 32)
        in_tile = out_tile + 2 * margin
    rows, cols = -(-h // out_tile), -(-w // out_tile)
    padded = _mirror(images, margin, rows * out_tile - h + margin, margin, cols * out_tile - w + margin)
    out = None
    for i in range(rows):
        for j in range(cols):
            window = padded[..., i * out_tile:i * out_tile + in_tile, j * out_tile:j * out_tile + in_tile]
            y = model(window)
            if not valid:
                y = y[..., margin:margin + out_tile, margin:margin + out_tile]
            if out is None:
                out = y.new_empty((n, y.shape[1], rows * out_tile, cols * out_tile))
            out[..., i * out_tile:(i + 1) * out_tile, j * out_tile:(j + 1) * out_tile] = y
    return out[..., :h, :w]


def is_valid_padding(model: nn.Module) -> bool:
    """Whether ``model``'s output is smaller than its input (the U-Net paper's 'valid' convolutions)."""
    input_for = getattr(model, "input_size_for", None)
    return input_for is not None and int(input_for(16)) > 16


def _round_up(v: int, m: int) -> int:
    return -(-int(v) // m) * m


def _valid_input(model: nn.Module, side: int) -> int:
    """The smallest input side >= ``side`` a valid model accepts (its output for it is whole)."""
    input_for = model.input_size_for
    out = 1
    while input_for(out) < side:
        out += 1
    return int(input_for(out))


def _auto_tile(model: nn.Module, x: torch.Tensor) -> int | None:
    return 512 if max(x.shape[-2:]) > TILE_ABOVE else None


# --------------------------------------------------------------------------- pictures


def save_mask(image: np.ndarray, mask: torch.Tensor, file: str, folder: str, num_classes: int) -> tuple[Path, Path]:
    """Write ``<stem>_mask.png`` (class indices as pixel values) and ``<stem>_overlay.png`` (the image
    with each non-background class tinted, torchvision's draw_segmentation_masks) into ``folder``,
    atomically; returns both paths."""
    import io

    from PIL import Image
    from torchvision.utils import draw_segmentation_masks

    from cnnkit.atomic import atomic_write

    out_dir = Path(folder)
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"--save {folder!r} is a file; give a folder to write the masks into")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create --save folder {folder!r}: {e.strerror or e}") from None
    rgb = torch.from_numpy(np.ascontiguousarray(image))
    if rgb.shape[0] == 1:
        rgb = rgb.expand(3, -1, -1)
    palette = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#bfef45"]
    classes = list(range(1, num_classes))
    overlay = rgb
    if classes:
        masks = torch.stack([mask == k for k in classes])
        overlay = draw_segmentation_masks(rgb.contiguous(), masks, alpha=0.45,
                                          colors=[palette[(k - 1) % len(palette)] for k in classes])
    stem = Path(file).stem
    paths = (out_dir / f"{stem}_mask.png", out_dir / f"{stem}_overlay.png")
    for path, array in ((paths[0], mask.numpy()), (paths[1], overlay.permute(1, 2, 0).numpy())):
        buf = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(array)).save(buf, format="PNG")
        atomic_write(path, lambda f, data=buf.getvalue(): f.write(data))
    return paths
