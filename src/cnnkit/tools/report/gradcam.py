"""Grad-CAM (Selvaraju et al., 2017) through captum's ``LayerGradCam``: where the network looked.

For an image and a class, the gradient of the class score with respect to a convolution's output
is averaged over the positions of each channel; those averages weight the channels, the weighted
sum is kept where positive and upsampled to the image. The last convolution with a spatial output
is the usual choice: late enough to see classes, early enough to keep a map.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from cnnkit.errors import UserError


def last_conv(model: nn.Module, x: torch.Tensor) -> tuple[str, nn.Module]:
    """The name and module of the last ``Conv2d`` (in execution order) whose output is wider than 1x1."""
    seen: list[tuple[str, nn.Module]] = []
    names = {m: n for n, m in model.named_modules()}
    hooks = [m.register_forward_hook(lambda mod, _i, out: seen.append((names[mod], mod))
                                     if out.dim() == 4 and out.shape[-1] * out.shape[-2] > 1 else None)
             for m in model.modules() if isinstance(m, nn.Conv2d)]
    try:
        with torch.no_grad():
            model(x[:1])
    finally:
        for h in hooks:
            h.remove()
    if not seen:
        raise UserError("Grad-CAM needs a convolution with a spatial output; this network has none "
                        "(a multilayer perceptron looks at every pixel with its own weight)")
    return seen[-1]


def gradcam(model: nn.Module, x: torch.Tensor, target: torch.Tensor | list[int],
            layer: nn.Module | None = None) -> torch.Tensor:
    """Heat maps ``(N, H, W)`` in [0, 1] (each divided by its own maximum) for ``target`` classes of the
    normalised images ``x`` ``(N, C, H, W)``, at ``layer`` (default :func:`last_conv`)."""
    from captum.attr import LayerAttribution, LayerGradCam

    was_training = model.training
    model.eval()
    if layer is None:
        layer = last_conv(model, x)[1]
    try:
        attr = LayerGradCam(model, layer).attribute(x, target=torch.as_tensor(target).tolist(),
                                                    relu_attributions=True)
    finally:
        model.train(was_training)
    maps = LayerAttribution.interpolate(attr.detach(), tuple(x.shape[-2:]), "bilinear")[:, 0]
    peak = maps.flatten(1).amax(1).clamp_min(1e-12).view(-1, 1, 1)
    return (maps / peak).clamp(0, 1)


def overlay(image: np.ndarray, heat: np.ndarray, strength: float = 0.75) -> np.ndarray:
    """A heat map over an image, as uint8 RGB ``(H, W, 3)``: ``image`` in [0, 1] ``(H, W, C)`` shown in grey,
    ``heat`` in [0, 1] ``(H, W)`` in the jet colours, opaque where it is high (up to ``strength``) and
    transparent where it is low, so the image stays visible around what the network looked at."""
    from matplotlib import colormaps

    grey = np.repeat(image.mean(-1, keepdims=True), 3, axis=-1)
    colour = colormaps["jet"](heat)[..., :3]
    alpha = strength * heat[..., None]
    return np.round(255 * ((1 - alpha) * grey + alpha * colour)).clip(0, 255).astype(np.uint8)


def overlay_png(model: nn.Module, x: torch.Tensor, image: np.ndarray, target: int) -> bytes:
    """One normalised image ``x`` ``(1, C, H, W)`` and its displayable ``image`` ``(H, W, C)`` in [0, 1]:
    the Grad-CAM overlay for class ``target`` as PNG bytes (the web app's predict)."""
    import io

    from PIL import Image

    heat = gradcam(model, x, [target])[0].cpu().numpy()
    buf = io.BytesIO()
    Image.fromarray(overlay(image, heat)).save(buf, format="PNG")
    return buf.getvalue()


__all__ = ["gradcam", "last_conv", "overlay", "overlay_png"]
