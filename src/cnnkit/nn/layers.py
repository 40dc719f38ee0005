"""The course's layers in torch: convolution with valid/same padding (also with
stride > 1), L2 and global pooling, maxout, a residual wrapper, and U-Net's skip
connections (:class:`Concat` inside a :class:`SkipSequential`).

Text (Kim, 2014): :class:`Embedding` (token ids (N, L) -> (N, D, L), channels first),
:class:`Conv1d` with the same padding rules, max/average pooling over time
(:class:`GlobalMaxPool1d`, :class:`GlobalAvgPool1d`) and :class:`Parallel` branches joined
along channels. Time series: :class:`Conv1d` with ``causal=True`` (left padding only) and the
recurrent :class:`LSTM` / :class:`GRU`, channels first in and out.

torch's own ``padding='same'`` refuses stride > 1, so :class:`Conv2d` pads
explicitly by the TF/Keras rule (:func:`cnnkit.geometry.same_padding`):
out = ceil(in / stride), the odd pixel of padding on the bottom/right.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cnnkit.geometry import pair, same_padding


class Conv2d(nn.Conv2d):
    """``nn.Conv2d`` that also accepts ``padding='same'`` with stride > 1 (TF/Keras rule).

    With symmetric same padding (odd kernel, stride 1) it uses torch's fast path
    directly; otherwise it pads the input explicitly before the convolution.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1,
                 padding: str | int | tuple[int, int] = 0, dilation=1, groups: int = 1,
                 bias: bool = True) -> None:
        k, s, d = pair(kernel_size), pair(stride), pair(dilation)
        self.same = padding == "same"
        if padding == "valid":
            padding = 0
        super().__init__(in_channels, out_channels, k, s, 0 if self.same else padding, d, groups, bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.same:
            ph = same_padding(x.shape[-2], self.kernel_size[0], self.stride[0], self.dilation[0])
            pw = same_padding(x.shape[-1], self.kernel_size[1], self.stride[1], self.dilation[1])
            if ph[0] == ph[1] and pw[0] == pw[1]:
                return F.conv2d(x, self.weight, self.bias, self.stride, (ph[0], pw[0]), self.dilation, self.groups)
            x = F.pad(x, (pw[0], pw[1], ph[0], ph[1]))
        return super().forward(x)


class Conv1d(nn.Conv1d):
    """``nn.Conv1d`` on (N, C, L) that also accepts ``padding='same'`` with stride > 1 (TF/Keras rule:
    out = ceil(L / stride), the odd padded position at the end).

    ``causal=True`` (WaveNet, TCN) pads (kernel-1)*dilation zeros before the sequence and none after:
    output i reads inputs i*stride - (kernel-1)*dilation .. i*stride only, never a later one;
    out = ceil(L / stride). It takes no other padding.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 padding: str | int = 0, dilation: int = 1, groups: int = 1, bias: bool = True,
                 causal: bool = False) -> None:
        self.same = padding == "same"
        self.causal = bool(causal)
        if padding == "valid":
            padding = 0
        if self.causal and (self.same or padding != 0):
            raise ValueError(f"a causal Conv1d pads by itself; it takes no padding, got {padding!r}")
        super().__init__(in_channels, out_channels, kernel_size, stride, 0 if self.same else padding, dilation,
                         groups, bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.causal:
            return super().forward(F.pad(x, ((self.kernel_size[0] - 1) * self.dilation[0], 0)))
        if self.same:
            before, after = same_padding(x.shape[-1], self.kernel_size[0], self.stride[0], self.dilation[0])
            if before == after:
                return F.conv1d(x, self.weight, self.bias, self.stride, before, self.dilation, self.groups)
            x = F.pad(x, (before, after))
        return super().forward(x)


def _channels_first_run(rnn: nn.RNNBase, x: torch.Tensor, return_sequence: bool) -> torch.Tensor:
    """Run a batch-first torch RNN on channels-first x (N, C, L): (N, H*dirs, L), or the last step (N, H*dirs)."""
    out, h_n = rnn.run_batch_first(x.transpose(1, 2))         # out (N, L, H*dirs); h_n (layers*dirs, N, H)
    if return_sequence:
        return out.transpose(1, 2)
    if rnn.bidirectional:   # the forward direction's last step and the backward direction's first (it ends there)
        return torch.cat([h_n[-2], h_n[-1]], dim=1)
    return h_n[-1]


class LSTM(nn.LSTM):
    """``nn.LSTM`` (batch first) on channels-first sequences: x (N, C, L) -> (N, H*dirs, L), or with
    ``return_sequence=False`` (N, H*dirs): the last time step (bidirectional: the forward direction's last
    step and the backward direction's first, concatenated, as in torch's h_n). Zero initial states.

    Gates (torch's order i, f, g, o): i, f, o = sigmoid(.), g = tanh(W_i x_t + b_i + W_h h_{t-1} + b_h);
    c_t = f*c_{t-1} + i*g; h_t = o*tanh(c_t). Parameters keep torch's names (weight_ih_l0, ...).
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bidirectional: bool = False,
                 dropout: float = 0.0, return_sequence: bool = True) -> None:
        super().__init__(input_size, hidden_size, num_layers, batch_first=True, dropout=float(dropout),
                         bidirectional=bidirectional)
        self.return_sequence = return_sequence

    def run_batch_first(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out, (h_n, _) = super().forward(x)
        return out, h_n

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return _channels_first_run(self, x, self.return_sequence)

    def extra_repr(self) -> str:
        return super().extra_repr() + ("" if self.return_sequence else ", return=last")


class GRU(nn.GRU):
    """``nn.GRU`` (batch first) on channels-first sequences, as :class:`LSTM`.

    Gates (torch's order r, z, n): r, z = sigmoid(W_i x_t + b_i + W_h h_{t-1} + b_h);
    n = tanh(W_in x_t + b_in + r*(W_hn h_{t-1} + b_hn)); h_t = (1-z)*n + z*h_{t-1}.
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bidirectional: bool = False,
                 dropout: float = 0.0, return_sequence: bool = True) -> None:
        super().__init__(input_size, hidden_size, num_layers, batch_first=True, dropout=float(dropout),
                         bidirectional=bidirectional)
        self.return_sequence = return_sequence

    def run_batch_first(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return super().forward(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return _channels_first_run(self, x, self.return_sequence)

    def extra_repr(self) -> str:
        return super().extra_repr() + ("" if self.return_sequence else ", return=last")


class Embedding(nn.Embedding):
    """Token ids (N, L) -> (N, D, L): each id's row of the (V, D) weight, channels first as Conv1d wants.

    Row ``padding_idx`` is zero and gets no gradient (``nn.Embedding``'s rule); ``freeze`` keeps the
    whole table fixed (``requires_grad=False``, e.g. for loaded word vectors). A floating-point
    input (N, V, L) is read as one-hot channels (the (V, L) input-shape convention) and gives
    ``W^T x``, the same as the ids for a one-hot x (this lets shape walkers feed zeros).
    """

    def __init__(self, num_embeddings: int, embedding_dim: int, padding_idx: int | None = 0,
                 freeze: bool = False) -> None:
        super().__init__(num_embeddings, embedding_dim, padding_idx=padding_idx)
        self.freeze = freeze
        if freeze:
            self.weight.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.is_floating_point():
            w = self.weight
            if self.padding_idx is not None:
                w = w.index_fill(0, torch.tensor([self.padding_idx], device=w.device), 0.0)
            return torch.einsum("nvl,vd->ndl", x.to(w.dtype), w)
        return super().forward(x).transpose(1, 2)

    def extra_repr(self) -> str:
        return super().extra_repr() + (", freeze=True" if self.freeze else "")


class GlobalMaxPool1d(nn.Module):
    """(N, C, L) -> (N, C): the maximum of each channel over time (Kim's max-over-time pooling)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.amax(dim=-1)


class GlobalAvgPool1d(nn.Module):
    """(N, C, L) -> (N, C): the mean of each channel over time."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=-1)


class L2Pool2d(nn.Module):
    """L2 pooling: the square root of the sum of squares over each window."""

    def __init__(self, kernel_size, stride=None, padding=0) -> None:
        super().__init__()
        self.kernel_size = pair(kernel_size)
        self.stride = pair(stride) if stride is not None else self.kernel_size
        self.padding = pair(padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = self.kernel_size[0] * self.kernel_size[1]
        ssq = F.avg_pool2d(x * x, self.kernel_size, self.stride, self.padding, count_include_pad=True) * n
        # sqrt's gradient at 0 is infinite; an all-zero window (common after ReLU) gets gradient 0.
        nonzero = ssq > 0
        return torch.where(nonzero, ssq, torch.ones_like(ssq)).sqrt() * nonzero

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class GlobalAvgPool(nn.Module):
    """(N, C, H, W) -> (N, C): the mean of each feature map."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(-2, -1))


class GlobalMaxPool(nn.Module):
    """(N, C, H, W) -> (N, C): the maximum of each feature map."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.amax(dim=(-2, -1))


class Maxout(nn.Module):
    """Maxout (Goodfellow et al., 2013): max over groups of ``pieces`` consecutive channels.

    Put it after a conv or dense layer with ``pieces`` times the wanted outputs:
    max(w1.x + b1, w2.x + b2) is ``dense(2 * n)`` followed by ``Maxout(2)``.
    """

    def __init__(self, pieces: int) -> None:
        super().__init__()
        self.pieces = pieces

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c = x.shape[:2]
        return x.reshape(n, c // self.pieces, self.pieces, *x.shape[2:]).amax(dim=2)

    def extra_repr(self) -> str:
        return f"pieces={self.pieces}"


class Residual(nn.Module):
    """y = body(x) + shortcut(x), then an optional activation (He et al., 2016)."""

    def __init__(self, body: nn.Module, shortcut: nn.Module | None = None, post: nn.Module | None = None) -> None:
        super().__init__()
        self.body = body
        self.shortcut = shortcut if shortcut is not None else nn.Identity()
        self.post = post if post is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.post(self.body(x) + self.shortcut(x))


class Parallel(nn.Module):
    """Branches side by side (Kim, 2014; Inception): every branch gets the same input and their
    outputs are concatenated along channels (dim 1); they agree on every other dim."""

    def __init__(self, branches: list[nn.Module]) -> None:
        super().__init__()
        self.branches = nn.ModuleList(branches)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([branch(x) for branch in self.branches], dim=1)


def center_crop(x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """(N, C, H, W) -> (N, C, h, w): the centred window, the odd pixel cut on the bottom/right (U-Net's crop)."""
    h, w = int(hw[0]), int(hw[1])
    top, left = (x.shape[-2] - h) // 2, (x.shape[-1] - w) // 2
    return x[..., top:top + h, left:left + w]


class Concat(nn.Module):
    """U-Net's skip connection (Ronneberger et al., 2015): ``cat([x, crop(skip)], dim=1)``.

    ``skip`` is the output of the earlier layer named ``source``, centre-cropped to x's size;
    a :class:`SkipSequential` hands it over. x: (N, C1, H, W), skip: (N, C2, H2 >= H, W2 >= W)
    -> (N, C1 + C2, H, W).
    """

    def __init__(self, source: str) -> None:
        super().__init__()
        self.source = source

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        if skip.shape[-2] < x.shape[-2] or skip.shape[-1] < x.shape[-1]:
            raise ValueError(f"concat: the output of {self.source!r} {tuple(skip.shape[1:])} is smaller than the "
                             f"current map {tuple(x.shape[1:])}")
        return torch.cat([x, center_crop(skip, x.shape[-2:])], dim=1)

    def extra_repr(self) -> str:
        return f"source={self.source!r}"


class SkipSequential(nn.Sequential):
    """``nn.Sequential`` whose :class:`Concat` layers also get the output of the earlier layer they name."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return run_with_skips(list(self._modules.items()), x)


def run_with_skips(items: list[tuple[str, nn.Module]], x: torch.Tensor) -> torch.Tensor:
    """Run ``(name, module)`` pairs in order, keeping the outputs that a later Concat asks for."""
    wanted = {m.source for _, m in items if isinstance(m, Concat)}
    saved: dict[str, torch.Tensor] = {}
    for name, m in items:
        x = m(x, saved[m.source]) if isinstance(m, Concat) else m(x)
        if name in wanted:
            saved[name] = x
    return x
