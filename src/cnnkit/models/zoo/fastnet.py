"""FastNet: a small, fast CIFAR-10 network for short, large-batch training runs.

Written for cnnkit from published techniques (no code copied); the layout is that
of the fast CIFAR-10 lineage of Page's "How to train your ResNet" (2018),
tysam-code's hlb-CIFAR10 and Jordan's airbench (2024, arXiv:2404.00498):

* **A frozen patch-whitening first layer** (Coates & Ng, 2012; used by Page and by
  airbench): a ``k x k`` convolution whose filters are the eigenvectors of the
  covariance of ``k x k`` training patches, scaled by ``1 / sqrt(eigenvalue + eps)``,
  in both signs (``2 * C * k * k`` outputs), so that the GELU after it passes both
  polarities. Its weights are a buffer, never trained; its bias is trained.
  :meth:`FastNet.init_from_data` computes them from training images; the trainer
  calls it before training when ``model.data_init > 0`` (the default).
* **Three conv groups** ``conv3x3 - maxpool2 - BN - GELU - conv3x3 - BN - GELU``
  with widths 64/256/256, then a global max pool and a bias-free linear layer whose
  logits are scaled by ``logit_scale`` (1/9).
* **Identity (Dirac) initialisation** of the convolutions: the first
  ``min(in, out)`` filters of every 3x3 convolution start as the identity map
  (partial identity initialisation, as in airbench; cf. Zagoruyko & Komodakis'
  DiracNets, 2017); the others keep torch's default initialisation.
* **Batch norm without a learned scale**: the scale is fixed at 1 (a buffer), only
  the shift is trained; ``eps = 1e-12`` and a fast running-statistics momentum
  (``bn_momentum``, torch's convention: 0.4).

Training tricks live in the recipe (``configs/cifar10_speed.yaml``), not here:
label smoothing, Nesterov SGD with a larger learning rate on norm parameters,
lookahead, alternating flips, reflect-padded translations and flip/translate
test-time augmentation.

Example::

    model = get_model("fastnet", num_classes=10)
    model.init_from_data(normalised_train_images[:5000])   # whitening from data
    logits = model(x)                                       # x: (N, 3, 32, 32)
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cnnkit.models.base import Classifier
from cnnkit.models.registry import register_model

__all__ = ["FastNet", "WhiteningConv", "ScaleFreeBatchNorm", "ConvGroup", "fastnet", "patch_covariance"]


def patch_covariance(images: Tensor, kernel_size: int, chunk: int = 1024) -> Tensor:
    """Uncentred covariance ``E[p p^T]`` of all ``k x k`` patches (stride 1, no padding), float64 on the CPU.

    A patch is flattened in ``(C, kh, kw)`` order, the order of a conv weight's
    ``(C, kh, kw)`` dimensions. The images are used as given (normalised inputs have
    near-zero mean, so the uncentred and centred covariances nearly agree).
    """
    n_all, c, h, w = images.shape
    k = kernel_size
    d, hh, ww = c * k * k, h - k + 1, w - k + 1
    total = torch.zeros(d, d, dtype=torch.float64, device=images.device)
    for i in range(0, n_all, chunk):
        x = images[i:i + chunk].float()
        # Patch component (ch, dy, dx) at every position: shifted views (F.unfold is slow on the CPU).
        cols = torch.stack([x[:, ch, dy:dy + hh, dx:dx + ww] for ch in range(c) for dy in range(k)
                            for dx in range(k)], dim=1).reshape(len(x), d, hh * ww)   # (n, d, L)
        total += torch.bmm(cols, cols.transpose(1, 2)).sum(0).double()
    return (total / max(n_all * hh * ww, 1)).cpu()


class WhiteningConv(nn.Module):
    """A ``k x k`` convolution with fixed whitening filters (a buffer) and a trained bias.

    Output channel ``i < C k k`` is ``v_i . patch / sqrt(lambda_i + eps)`` for the
    eigenpairs ``(lambda_i, v_i)`` of the patch covariance in decreasing order;
    channel ``C k k + i`` is its negation. Before :meth:`init_from_covariance` the
    filters are those of the identity covariance (each channel is +-one pixel).
    """

    def __init__(self, in_chans: int = 3, kernel_size: int = 2, eps: float = 5e-4) -> None:
        super().__init__()
        self.in_chans, self.kernel_size, self.eps = in_chans, kernel_size, eps
        d = in_chans * kernel_size * kernel_size
        self.out_channels = 2 * d
        self.register_buffer("weight", torch.zeros(2 * d, in_chans, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(2 * d))
        self.init_from_covariance(torch.eye(d, dtype=torch.float64))

    @torch.no_grad()
    def init_from_covariance(self, cov: Tensor, eps: float | None = None) -> None:
        eps = self.eps if eps is None else eps
        evals, evecs = torch.linalg.eigh(cov.double().cpu())
        evals, evecs = evals.flip(0).clamp_min(0.0), evecs.flip(1)          # decreasing order
        filters = (evecs / torch.sqrt(evals + eps)).T                        # row i: v_i / sqrt(l_i + eps)
        w = torch.cat([filters, -filters]).reshape(self.weight.shape)
        self.weight.copy_(w.to(self.weight.dtype))

    @torch.no_grad()
    def init_from_data(self, images: Tensor, eps: float | None = None) -> None:
        self.init_from_covariance(patch_covariance(images, self.kernel_size), eps)

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"{self.in_chans}, {self.out_channels}, kernel_size={self.kernel_size}, eps={self.eps}, frozen weight"


class ScaleFreeBatchNorm(nn.BatchNorm2d):
    """Batch norm whose scale is fixed at 1 (a buffer, not trained); only the shift is learned.

    State-dict keys are those of ``nn.BatchNorm2d``; ``momentum`` uses torch's
    convention (weight of the new batch statistics).
    """

    def __init__(self, num_features: int, momentum: float = 0.4, eps: float = 1e-12) -> None:
        super().__init__(num_features, eps=eps, momentum=momentum, affine=True)
        del self.weight
        self.register_buffer("weight", torch.ones(num_features))


def _conv3x3(cin: int, cout: int, identity_init: bool) -> nn.Conv2d:
    conv = nn.Conv2d(cin, cout, kernel_size=3, padding=1, bias=False)
    if identity_init:
        with torch.no_grad():
            nn.init.dirac_(conv.weight[:min(cin, cout)])
    return conv


class ConvGroup(nn.Sequential):
    """``conv3x3 - maxpool2 - BN - GELU - conv3x3 - BN - GELU``."""

    def __init__(self, cin: int, cout: int, *, bn_momentum: float, bn_eps: float, identity_init: bool) -> None:
        super().__init__(OrderedDict(
            conv1=_conv3x3(cin, cout, identity_init), pool=nn.MaxPool2d(2),
            norm1=ScaleFreeBatchNorm(cout, bn_momentum, bn_eps), act1=nn.GELU(),
            conv2=_conv3x3(cout, cout, identity_init),
            norm2=ScaleFreeBatchNorm(cout, bn_momentum, bn_eps), act2=nn.GELU()))


class _Scale(nn.Module):
    def __init__(self, scale: float) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, x: Tensor) -> Tensor:
        return x * self.scale

    def extra_repr(self) -> str:
        return f"{self.scale:.6g}"


class FastNet(Classifier):
    """The FastNet classifier; :meth:`init_from_data` sets the whitening layer from training images."""

    def init_from_data(self, images: Tensor) -> None:
        """Whitening filters from the patch covariance of ``images`` (normalised, (N, C, H, W))."""
        self.body.whiten.init_from_data(images)


def _create_fastnet(*, num_classes: int, in_chans: int, widths: tuple[int, int, int], whiten_kernel: int,
                    whiten_eps: float, bn_momentum: float, bn_eps: float, logit_scale: float,
                    identity_init: bool) -> FastNet:
    if len(widths) != 3 or min(widths) < 1:
        raise ValueError(f"fastnet widths must be three positive channel counts, got {widths}")
    whiten = WhiteningConv(in_chans, whiten_kernel, whiten_eps)
    kw = dict(bn_momentum=bn_momentum, bn_eps=bn_eps, identity_init=identity_init)
    w1, w2, w3 = widths
    body = nn.Sequential(OrderedDict(
        whiten=whiten, act=nn.GELU(),
        block1=ConvGroup(whiten.out_channels, w1, **kw),
        block2=ConvGroup(w1, w2, **kw),
        block3=ConvGroup(w2, w3, **kw),
        pool=nn.AdaptiveMaxPool2d(1), flatten=nn.Flatten(), scale=_Scale(logit_scale)))
    head = nn.Linear(w3, num_classes, bias=False)
    return FastNet(body, head)


@register_model("fastnet", "FastNet: whitened 3-block CIFAR network for fast large-batch training (cnnkit recipe)",
                default_input=(3, 32, 32), min_input=(3, 16, 16))
def fastnet(num_classes: int = 10, in_chans: int = 3, input_size: int = 32,
            widths: tuple[int, int, int] | list[int] = (64, 256, 256), whiten_kernel: int = 2,
            whiten_eps: float = 5e-4, bn_momentum: float = 0.4, bn_eps: float = 1e-12,
            logit_scale: float = 1 / 9, identity_init: bool = True) -> FastNet:
    """FastNet; ``widths`` of the three conv groups, the whitening kernel size and epsilon,
    batch-norm momentum (torch's convention) and epsilon, the logit scale, and
    whether 3x3 convolutions start as partial identities."""
    return _create_fastnet(num_classes=num_classes, in_chans=in_chans, widths=tuple(widths),
                           whiten_kernel=whiten_kernel, whiten_eps=whiten_eps, bn_momentum=bn_momentum,
                           bn_eps=bn_eps, logit_scale=logit_scale, identity_init=identity_init)
