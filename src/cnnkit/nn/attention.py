"""Attention blocks in torch: channel attention (squeeze-and-excitation, ECA), channel then spatial
attention (CBAM), self-attention over positions (non-local) and attention pooling.

Every block keeps the shape of its input (N, C, H, W) -> (N, C, H, W), except
:class:`AttentionPool2d`, which gives a vector (N, C). ``se`` and ``eca`` also take sequences
(N, C, L): their pooling averages every axis after the channels.

**What the explainer reads.** Each block is an :class:`AttentionBlock`: with ``block.record = True``
its forward keeps the attention it applied, detached, in ``block.last_attention`` (a dict):

* ``"channel"``: (N, C), the weight in [0, 1] each channel was multiplied by (SE, ECA, CBAM);
* ``"spatial"``: (N, 1, H, W), the weight of each position (CBAM: the sigmoid map the channels were
  multiplied by; attention pooling: the softmax weights, which sum to 1; non-local: the attention each
  position *receives*, averaged over the queries, which also sums to 1);
* ``"matrix"``: (N, HW, HW), the non-local block's attention, row i = query position i (row-major),
  each row summing to 1.

``record`` is off by default: training computes and keeps nothing extra.

Example::

    se = SqueezeExcite(64, reduction=16)          # 64 -> 4 -> 64 gate
    se.record = True
    y = se(torch.randn(2, 64, 8, 8))              # same shape
    se.last_attention["channel"].shape            # (2, 64)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cnnkit.spec import eca_kernel_size, reduced_channels


# No Python arithmetic on shapes in the forward passes: torch.fx traces them (cnnkit summary's receptive fields).

def _pool_positions(x: torch.Tensor) -> torch.Tensor:
    """(N, C, ...) -> (N, C): the mean over every axis after the channels."""
    return x.flatten(2).mean(dim=2)


def _scale_channels(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """x (N, C, ...) times w (N, C), each channel by its weight at every position."""
    return (x.flatten(2) * w.unsqueeze(2)).reshape_as(x)


class AttentionBlock(nn.Module):
    """The base of the attention blocks: ``record`` (off by default) and ``last_attention``.

    ``kind`` is the block's layer-list type (``se``, ``cbam``, ``eca``, ``nonlocal``, ``attention_pool``).
    """

    kind = "attention"

    def __init__(self) -> None:
        super().__init__()
        self.record = False
        self.last_attention: dict[str, torch.Tensor] = {}

    def _keep(self, **maps: torch.Tensor) -> None:
        """Keep the attention just applied (detached); only called when ``record`` is on."""
        self.last_attention = {k: v.detach() for k, v in maps.items()}


class SqueezeExcite(AttentionBlock):
    """Squeeze-and-excitation (Hu et al., 2018): y = x * sigmoid(W2 relu(W1 mean(x) + b1) + b2).

    x: (N, C, H, W) or (N, C, L). ``fc1``: C -> C // reduction (at least 1), ``fc2``: back to C.
    Parameters: 2 * C * (C // r) + C // r + C.
    """

    kind = "se"

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = reduced_channels(channels, reduction)
        self.channels, self.reduction = channels, reduction
        self.fc1 = nn.Linear(channels, hidden)
        self.fc2 = nn.Linear(hidden, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = _pool_positions(x)                                   # squeeze: (N, C)
        w = torch.sigmoid(self.fc2(F.relu(self.fc1(s))))         # excite: (N, C) in (0, 1)
        if self.record:
            self._keep(channel=w)
        return _scale_channels(x, w)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, reduction={self.reduction}"


class ECA(AttentionBlock):
    """Efficient channel attention (Wang et al., 2020): a 1-D convolution over the pooled channels.

    w = sigmoid(conv1d(mean(x))), the kernel sliding along the C channels (zero padding, no bias), so
    each channel's weight reads its k neighbours only. ``kernel``: None for the adaptive size
    :func:`eca_kernel_size` (``gamma``, ``b``), or an odd int. Parameters: k.
    """

    kind = "eca"

    def __init__(self, channels: int, gamma: float = 2, b: float = 1, kernel: int | None = None) -> None:
        super().__init__()
        k = eca_kernel_size(channels, gamma, b) if kernel is None else int(kernel)
        if k < 1 or k % 2 == 0:
            raise ValueError(f"ECA's kernel must be a positive odd int, got {k}")
        self.channels, self.kernel_size = channels, k
        self.conv = nn.Conv1d(1, 1, k, padding=(k - 1) // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = _pool_positions(x)                                   # (N, C)
        w = torch.sigmoid(self.conv(s.unsqueeze(1)).squeeze(1))  # (N, 1, C) -> (N, C)
        if self.record:
            self._keep(channel=w)
        return _scale_channels(x, w)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, kernel_size={self.kernel_size}"


class CBAM(AttentionBlock):
    """Convolutional block attention module (Woo et al., 2018): channel attention, then spatial attention.

    Channel: Mc = sigmoid(MLP(avgpool(x)) + MLP(maxpool(x))), one MLP (``fc1``, ``fc2``, C -> C // r -> C)
    shared by both poolings; x' = x * Mc.
    Spatial: Ms = sigmoid(conv_kxk([mean over channels of x'; max over channels of x'])), a 2 -> 1
    convolution (``spatial``, with bias, zero padding k // 2, as the paper's f^{7x7}); y = x' * Ms.
    x: (N, C, H, W).
    """

    kind = "cbam"

    def __init__(self, channels: int, reduction: int = 16, kernel: int = 7) -> None:
        super().__init__()
        if kernel < 1 or kernel % 2 == 0:
            raise ValueError(f"CBAM's spatial kernel must be a positive odd int, got {kernel}")
        hidden = reduced_channels(channels, reduction)
        self.channels, self.reduction = channels, reduction
        self.fc1 = nn.Linear(channels, hidden)
        self.fc2 = nn.Linear(hidden, channels)
        self.spatial = nn.Conv2d(2, 1, kernel, padding=kernel // 2)

    def _mlp(self, v: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.relu(self.fc1(v)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mc = torch.sigmoid(self._mlp(x.mean(dim=(2, 3))) + self._mlp(x.amax(dim=(2, 3))))   # (N, C)
        x = x * mc[:, :, None, None]
        pooled = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)   # (N, 2, H, W)
        ms = torch.sigmoid(self.spatial(pooled))                                                 # (N, 1, H, W)
        if self.record:
            self._keep(channel=mc, spatial=ms)
        return x * ms

    def extra_repr(self) -> str:
        return f"channels={self.channels}, reduction={self.reduction}"


class NonLocal(AttentionBlock):
    """Non-local block, embedded Gaussian (Wang et al., 2018): self-attention over the H*W positions.

    theta, phi, g: 1x1 convolutions C -> C // reduction; attention A = softmax_j(theta_i . phi_j)
    (N, HW, HW), each row summing to 1; y_i = sum_j A[i, j] g_j; z = BN(W y) + x with W a 1x1
    convolution back to C channels (``out``, no bias: the BN follows). The BN's scale starts at zero
    (the paper's initialisation), so the block starts as the identity. No subsampling of phi and g.
    Only theta has a bias: one on phi adds theta_i . b to every score of row i, which the softmax
    ignores, and one on g or ``out`` adds a constant per channel, which the BN removes.
    Parameters: C I + I (theta) + 2 C I (phi, g) + I C (out) + 2 C (BN), I = C // reduction.
    """

    kind = "nonlocal"

    def __init__(self, channels: int, reduction: int = 2) -> None:
        super().__init__()
        inter = reduced_channels(channels, reduction)
        self.channels, self.inter = channels, inter
        self.theta = nn.Conv2d(channels, inter, 1)
        self.phi = nn.Conv2d(channels, inter, 1, bias=False)
        self.g = nn.Conv2d(channels, inter, 1, bias=False)
        self.out = nn.Conv2d(inter, channels, 1, bias=False)
        self.bn = nn.BatchNorm2d(channels)
        nn.init.zeros_(self.bn.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = self.theta(x).flatten(2)                              # (N, I, HW)
        k = self.phi(x).flatten(2)
        v = self.g(x).flatten(2)
        attn = torch.softmax(q.transpose(1, 2) @ k, dim=-1)       # (N, HW, HW): row i = query i
        y = (v @ attn.transpose(1, 2)).unflatten(2, x.shape[2:])  # (N, I, H, W)
        if self.record:
            self._keep(matrix=attn, spatial=attn.mean(dim=1).unflatten(1, x.shape[2:]).unsqueeze(1))
        return self.bn(self.out(y)) + x

    def extra_repr(self) -> str:
        return f"channels={self.channels}, inter={self.inter}"


class AttentionPool2d(AttentionBlock):
    """Attention pooling: (N, C, H, W) -> (N, C), the mean of the positions weighted by a learned softmax.

    a = softmax over the H*W positions of a 1x1 convolution's score (``score``, C -> 1, no bias: the
    softmax ignores a constant); y_c = sum_ij a_ij x_cij. A constant map gives that constant, whatever
    the weights. Parameters: C.
    """

    kind = "attention_pool"

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels
        self.score = nn.Conv2d(channels, 1, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = torch.softmax(self.score(x).flatten(1), dim=-1)      # (N, HW)
        if self.record:
            self._keep(spatial=a.unflatten(1, x.shape[2:]).unsqueeze(1))
        return (x.flatten(2) * a.unsqueeze(1)).sum(dim=-1)       # (N, C)

    def extra_repr(self) -> str:
        return f"channels={self.channels}"


def attention_blocks(model: nn.Module) -> list[tuple[str, AttentionBlock]]:
    """Every attention block of a model, with its qualified name, in module order."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, AttentionBlock)]


__all__ = ["AttentionBlock", "AttentionPool2d", "CBAM", "ECA", "NonLocal", "SqueezeExcite", "attention_blocks",
           "eca_kernel_size", "reduced_channels"]
