"""Recurrent convolutional layers: ConvLSTM and ConvGRU over clips, and Liang & Hu's recurrent
convolutional layer (RCL) over images.

**ConvLSTM** (Shi et al. 2015, "Convolutional LSTM Network: A Machine Learning Approach for
Precipitation Nowcasting"): an LSTM whose input, hidden and cell states are feature maps
``(N, C, H, W)`` and whose matrix products are convolutions, so each position's gates read a
neighbourhood of the input and of the previous hidden state. With ``*`` a 'same' convolution over
the concatenation ``[x_t, h_{t-1}]`` (one convolution computes all four gates) and ``o`` the
element-wise product::

    i_t = sigmoid(W_xi * x_t + W_hi * h_{t-1} + W_ci o c_{t-1} + b_i)      input gate
    f_t = sigmoid(W_xf * x_t + W_hf * h_{t-1} + W_cf o c_{t-1} + b_f)      forget gate
    g_t = tanh   (W_xc * x_t + W_hc * h_{t-1} + b_c)                      candidate
    c_t = f_t o c_{t-1} + i_t o g_t
    o_t = sigmoid(W_xo * x_t + W_ho * h_{t-1} + W_co o c_t + b_o)          output gate
    h_t = o_t o tanh(c_t)

The ``W_c. o c`` terms are the paper's *peepholes* (Hadamard products with the cell state). They are
off by default (``peephole=False``: the terms are absent, the usual modern ConvLSTM); with
``peephole=True`` each of ``W_ci``, ``W_cf``, ``W_co`` is one weight per hidden channel
``(hidden, 1, 1)``, broadcast over the positions, so the layer still takes any frame size; with
``peephole_size=(H, W)`` as well they are the paper's full tensors ``(hidden, H, W)``, one weight per
channel *and position*, and the layer then only takes ``H x W`` maps. Peephole weights start at 0.
The convolution's output channels are the gates in the order ``i, f, g, o`` (``hidden`` each); the
forget gate's bias starts at ``forget_bias`` (1, a common choice that lets the cell remember at
first; torch's default initialisation for the rest).

**ConvGRU** (Ballas et al. 2016, "Delving Deeper into Convolutional Networks for Learning Video
Representations"; Shi et al. 2017 use it as the baseline of their TrajGRU): the GRU of Cho et al.
with convolutions, the reset gate applied to the hidden state *before* its convolution::

    r_t = sigmoid(W_r * [x_t, h_{t-1}] + b_r)                              reset gate
    z_t = sigmoid(W_z * [x_t, h_{t-1}] + b_z)                              update gate
    n_t = tanh   (W_n * [x_t, r_t o h_{t-1}] + b_n)                        candidate
    h_t = (1 - z_t) o h_{t-1} + z_t o n_t

(torch's ``nn.GRU`` gives ``z`` the opposite role and applies ``r`` after the hidden product; the
two are equally expressive.) The gates' convolution gives ``r`` then ``z``.

Both cells take ``in_ch=0``: a cell without input that reads its own state only (the forecaster of
an encoder-forecaster, which is fed no frames); its ``x`` is then ``None``.

The stacks :class:`ConvLSTM` / :class:`ConvGRU` run cells over a clip ``(N, T, C, H, W)``, layer ``l``
reading layer ``l - 1``'s hidden states, and give the top layer's hidden states ``(N, T, hidden,
H, W)`` or, with ``return_sequence=False``, its last one ``(N, hidden, H, W)``. Zero initial states
unless given. Kernels are odd ('same' padding keeps H x W).

**RCL** (Liang & Hu 2015, "Recurrent Convolutional Neural Network for Object Recognition"): a
feed-forward convolution ``w_f`` of the layer's input ``u`` (computed once, held fixed) and a
recurrent convolution ``w_r`` of the layer's own previous state, unrolled for ``steps``
iterations::

    x(0) = relu(norm_0(w_f * u))
    x(t) = relu(norm_t(w_f * u + w_r * x(t - 1)))        t = 1 .. steps

The paper normalises with local response normalisation (LRN across channels, size ``K/8 + 1``,
alpha 0.001, beta 0.75) and so does ``norm="lrn"``; the default ``norm="batch"`` uses batch
normalisation instead, one :class:`~torch.nn.BatchNorm2d` per iteration (its own statistics and
affine parameters: the pre-activations of successive iterations do not have the same
distribution, so one shared set of running statistics would be wrong for all but one of them).
With ``steps=0`` the RCL is a plain convolution, normalisation and ReLU.

:class:`RCNN` is Liang & Hu's CIFAR-10 network (a 5x5 convolution, four RCLs, max pooling after the
first convolution and after the second RCL, dropout after each RCL but the last, global max
pooling, a dense layer), and with ``recurrent=False`` its feed-forward twin of the same parameter
count (see there).

Example::

    lstm = ConvLSTM(1, hidden=[32, 32], kernel=3, layers=2)
    y = lstm(torch.rand(4, 10, 1, 16, 16))          # (4, 10, 32, 16, 16)
    out, states = lstm.run(torch.rand(4, 10, 1, 16, 16))   # and [(h, c) per layer]
    rcl = RecurrentConv2d(64, kernel=3, steps=3)
    rcl(torch.randn(2, 64, 8, 8)).shape              # (2, 64, 8, 8)
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

LSTMState = tuple[Tensor, Tensor]


def _odd_kernel(kernel: int) -> int:
    if isinstance(kernel, bool) or not isinstance(kernel, int) or kernel < 1 or kernel % 2 == 0:
        raise ValueError(f"a recurrent convolution needs an odd kernel size (same padding), got {kernel!r}")
    return kernel


def _per_layer(hidden: int | Sequence[int], layers: int) -> list[int]:
    """``hidden`` (one width for every layer, or one per layer) as a list of ``layers`` widths."""
    if isinstance(layers, bool) or not isinstance(layers, int) or layers < 1:
        raise ValueError(f"layers must be a positive integer, got {layers!r}")
    widths = [hidden] * layers if isinstance(hidden, int) else list(hidden)
    if len(widths) != layers:
        raise ValueError(f"hidden has {len(widths)} widths for {layers} layers")
    if any(isinstance(w, bool) or not isinstance(w, int) or w < 1 for w in widths):
        raise ValueError(f"hidden widths must be positive integers, got {hidden!r}")
    return widths


def _joined(x: Tensor | None, h: Tensor) -> Tensor:
    return h if x is None else torch.cat([x, h], dim=1)


class ConvLSTMCell(nn.Module):
    """One ConvLSTM step (equations in the module's docstring): ``(x (N, in_ch, H, W), (h, c)) -> (h, c)``,
    each state ``(N, hidden, H, W)``. ``state=None``: zeros."""

    def __init__(self, in_ch: int, hidden: int, kernel: int = 3, peephole: bool = False,
                 peephole_size: tuple[int, int] | None = None, bias: bool = True, forget_bias: float = 1.0) -> None:
        super().__init__()
        if in_ch < 0 or hidden < 1:
            raise ValueError(f"ConvLSTMCell needs in_ch >= 0 and hidden >= 1, got {in_ch}, {hidden}")
        if peephole_size is not None and not peephole:
            raise ValueError("peephole_size sets the size of the peephole weights; it needs peephole=True")
        self.in_ch, self.hidden, self.kernel = in_ch, hidden, _odd_kernel(kernel)
        self.peephole = bool(peephole)
        self.conv = nn.Conv2d(in_ch + hidden, 4 * hidden, kernel, padding=kernel // 2, bias=bias)
        if bias:
            with torch.no_grad():
                self.conv.bias[hidden:2 * hidden].fill_(forget_bias)
        if self.peephole:
            shape = (hidden, *peephole_size) if peephole_size is not None else (hidden, 1, 1)
            self.w_ci = nn.Parameter(torch.zeros(shape))
            self.w_cf = nn.Parameter(torch.zeros(shape))
            self.w_co = nn.Parameter(torch.zeros(shape))

    def zero_state(self, like: Tensor, size: tuple[int, int] | None = None) -> LSTMState:
        n = like.shape[0]
        h, w = size if size is not None else like.shape[-2:]
        z = like.new_zeros(n, self.hidden, h, w)
        return z, z.clone()

    def forward(self, x: Tensor | None, state: LSTMState | None = None) -> LSTMState:
        if state is None:
            if x is None:
                raise ValueError("a ConvLSTMCell without input needs a state to start from")
            state = self.zero_state(x)
        h, c = state
        zi, zf, zg, zo = self.conv(_joined(x, h)).chunk(4, dim=1)
        if self.peephole:
            zi = zi + self.w_ci * c
            zf = zf + self.w_cf * c
        c = torch.sigmoid(zf) * c + torch.sigmoid(zi) * torch.tanh(zg)
        if self.peephole:
            zo = zo + self.w_co * c
        h = torch.sigmoid(zo) * torch.tanh(c)
        return h, c

    def extra_repr(self) -> str:
        return f"in_ch={self.in_ch}, hidden={self.hidden}, kernel={self.kernel}, peephole={self.peephole}"


class ConvGRUCell(nn.Module):
    """One ConvGRU step (equations in the module's docstring): ``(x (N, in_ch, H, W), h) -> h``,
    ``h (N, hidden, H, W)``. ``h=None``: zeros."""

    def __init__(self, in_ch: int, hidden: int, kernel: int = 3, bias: bool = True) -> None:
        super().__init__()
        if in_ch < 0 or hidden < 1:
            raise ValueError(f"ConvGRUCell needs in_ch >= 0 and hidden >= 1, got {in_ch}, {hidden}")
        self.in_ch, self.hidden, self.kernel = in_ch, hidden, _odd_kernel(kernel)
        self.gates = nn.Conv2d(in_ch + hidden, 2 * hidden, kernel, padding=kernel // 2, bias=bias)
        self.candidate = nn.Conv2d(in_ch + hidden, hidden, kernel, padding=kernel // 2, bias=bias)

    def zero_state(self, like: Tensor, size: tuple[int, int] | None = None) -> Tensor:
        h, w = size if size is not None else like.shape[-2:]
        return like.new_zeros(like.shape[0], self.hidden, h, w)

    def forward(self, x: Tensor | None, h: Tensor | None = None) -> Tensor:
        if h is None:
            if x is None:
                raise ValueError("a ConvGRUCell without input needs a state to start from")
            h = self.zero_state(x)
        r, z = torch.sigmoid(self.gates(_joined(x, h))).chunk(2, dim=1)
        n = torch.tanh(self.candidate(_joined(x, r * h)))
        return (1 - z) * h + z * n

    def extra_repr(self) -> str:
        return f"in_ch={self.in_ch}, hidden={self.hidden}, kernel={self.kernel}"


class _ConvRecurrentStack(nn.Module):
    """Stacked cells over ``(N, T, C, H, W)``; subclasses make the cells."""

    cells: nn.ModuleList

    def __init__(self, return_sequence: bool) -> None:
        super().__init__()
        self.return_sequence = bool(return_sequence)

    @property
    def hidden(self) -> list[int]:
        return [cell.hidden for cell in self.cells]

    @staticmethod
    def _top(state) -> Tensor:  # pragma: no cover - overridden
        raise NotImplementedError

    def step(self, x: Tensor | None, states: list | None = None) -> list:
        """One time step through every layer: ``x (N, C, H, W)`` (None for a stack without input) and the
        layers' states (None: zeros) -> the new states, bottom layer first."""
        new = []
        for i, cell in enumerate(self.cells):
            state = cell(x, None if states is None else states[i])
            new.append(state)
            x = self._top(state)
        return new

    def run(self, x: Tensor, states: list | None = None) -> tuple[Tensor, list]:
        """``x (N, T, C, H, W)`` -> ``(top layer's hidden states (N, T, hidden, H, W), last states)``."""
        if x.ndim != 5:
            raise ValueError(f"a recurrent convolution reads clips (N, T, C, H, W), got shape {tuple(x.shape)}")
        outs = []
        for t in range(x.shape[1]):
            states = self.step(x[:, t], states)
            outs.append(self._top(states[-1]))
        return torch.stack(outs, dim=1), states  # type: ignore[return-value]

    def forward(self, x: Tensor, states: list | None = None) -> Tensor:
        out, _ = self.run(x, states)
        return out if self.return_sequence else out[:, -1]


class ConvLSTM(_ConvRecurrentStack):
    """Stacked :class:`ConvLSTMCell` over ``(N, T, in_ch, H, W)``: the top layer's hidden states
    ``(N, T, hidden[-1], H, W)``, or its last one ``(N, hidden[-1], H, W)`` with
    ``return_sequence=False``. ``hidden``: one width, or one per layer. States: ``[(h, c)]`` per layer."""

    def __init__(self, in_ch: int, hidden: int | Sequence[int], kernel: int = 3, layers: int = 1,
                 return_sequence: bool = True, peephole: bool = False,
                 peephole_size: tuple[int, int] | None = None) -> None:
        super().__init__(return_sequence)
        widths = _per_layer(hidden, layers)
        ins = [in_ch, *widths[:-1]]
        self.cells = nn.ModuleList(ConvLSTMCell(i, h, kernel, peephole=peephole, peephole_size=peephole_size)
                                   for i, h in zip(ins, widths))

    @staticmethod
    def _top(state: LSTMState) -> Tensor:
        return state[0]


class ConvGRU(_ConvRecurrentStack):
    """Stacked :class:`ConvGRUCell` over ``(N, T, in_ch, H, W)``, as :class:`ConvLSTM`. States: ``[h]`` per
    layer."""

    def __init__(self, in_ch: int, hidden: int | Sequence[int], kernel: int = 3, layers: int = 1,
                 return_sequence: bool = True) -> None:
        super().__init__(return_sequence)
        widths = _per_layer(hidden, layers)
        ins = [in_ch, *widths[:-1]]
        self.cells = nn.ModuleList(ConvGRUCell(i, h, kernel) for i, h in zip(ins, widths))

    @staticmethod
    def _top(state: Tensor) -> Tensor:
        return state


NORMS = ("batch", "lrn")


def lrn(ch: int) -> nn.LocalResponseNorm:
    """Liang & Hu's local response normalisation: across ``ch // 8 + 1`` channels, alpha 0.001, beta 0.75
    (torch divides alpha by the size, as the paper's formula does)."""
    return nn.LocalResponseNorm(ch // 8 + 1, alpha=0.001, beta=0.75, k=1.0)


def _check_norm(norm: str) -> str:
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {', '.join(NORMS)}, got {norm!r}")
    return norm


class RecurrentConv2d(nn.Module):
    """Liang & Hu's recurrent convolutional layer (module docstring): ``(N, in_ch, H, W) -> (N, ch, H, W)``.

    ``w_f`` (``feed``) maps ``in_ch`` (default ``ch``) channels to ``ch``, ``w_r`` (``recurrent``) ``ch`` to
    ``ch``; both ``kernel x kernel``, 'same' padding. With ``norm="batch"`` neither has a bias (the batch
    norms shift) and there are ``steps + 1`` batch norms (``norms[t]`` for iteration ``t``); with
    ``norm="lrn"`` the feed-forward convolution has the paper's bias ``b`` and one parameter-free LRN
    serves every iteration. ``steps=0``: no recurrent convolution at all.
    """

    def __init__(self, ch: int, kernel: int = 3, steps: int = 3, norm: str = "batch", in_ch: int | None = None) -> None:
        super().__init__()
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
            raise ValueError(f"steps must be an integer >= 0, got {steps!r}")
        self.ch, self.kernel, self.steps, self.norm = ch, _odd_kernel(kernel), steps, _check_norm(norm)
        self.in_ch = ch if in_ch is None else in_ch
        batch = norm == "batch"
        self.feed = nn.Conv2d(self.in_ch, ch, kernel, padding=kernel // 2, bias=not batch)
        self.recurrent = nn.Conv2d(ch, ch, kernel, padding=kernel // 2, bias=False) if steps else None
        if batch:
            self.norms = nn.ModuleList(nn.BatchNorm2d(ch) for _ in range(steps + 1))
        else:
            self.norms = nn.ModuleList([lrn(ch)])

    def _norm(self, t: int) -> nn.Module:
        return self.norms[t if self.norm == "batch" else 0]

    def forward(self, u: Tensor) -> Tensor:
        ff = self.feed(u)
        x = F.relu(self._norm(0)(ff))
        for t in range(1, self.steps + 1):
            x = F.relu(self._norm(t)(ff + self.recurrent(x)))  # type: ignore[misc]
        return x

    def extra_repr(self) -> str:
        return f"in_ch={self.in_ch}, ch={self.ch}, kernel={self.kernel}, steps={self.steps}, norm={self.norm}"


class _GlobalPool(nn.Module):
    def __init__(self, kind: str) -> None:
        super().__init__()
        if kind not in ("max", "avg"):
            raise ValueError(f"global pooling is max or avg, got {kind!r}")
        self.kind = kind

    def forward(self, x: Tensor) -> Tensor:
        return x.amax(dim=(-2, -1)) if self.kind == "max" else x.mean(dim=(-2, -1))

    def extra_repr(self) -> str:
        return self.kind


def conv_norm_relu(in_ch: int, ch: int, kernel: int, norm: str) -> nn.Sequential:
    """A 'same' convolution, its normalisation (batch: no conv bias; lrn: with one) and a ReLU."""
    batch = _check_norm(norm) == "batch"
    return nn.Sequential(nn.Conv2d(in_ch, ch, kernel, padding=kernel // 2, bias=not batch),
                         nn.BatchNorm2d(ch) if batch else lrn(ch), nn.ReLU(inplace=True))


class RCNN(nn.Module):
    """Liang & Hu's RCNN for small images (their CIFAR-10 network, RCNN-K with K = ``width``)::

        conv 5x5, K ─ norm ─ ReLU ─ max pool 3/2 ─ RCL ─ dropout ─ RCL ─ dropout ─ max pool 3/2
        ─ RCL ─ dropout ─ RCL ─ global max pool ─ dense

    (``blocks`` RCLs, a max pooling 3x3 stride 2, padding 1, after the first convolution and after the
    ``blocks // 2``-th RCL; dropout after each RCL but the last.) ``recurrent=False`` gives the
    feed-forward twin: each RCL becomes two stacked feed-forward blocks ``conv K->K ─ norm ─ ReLU``
    with the RCL's kernel, i.e. exactly the RCL's two convolutions ``w_f`` and ``w_r``, so the
    convolution weights match one for one; the counts differ only by the normalisation parameters
    (an RCL has ``steps + 1`` batch norms of ``2K`` parameters, the twin 2), well under 1% for the
    paper's widths. The twin is as wide and has the same parameters, but is shallower: the unrolled
    RCL applies ``steps + 1`` convolutions in sequence, the twin 2.

    Parameters for 10 classes, K = 96, steps 3: 674,986 with batch norms (the twin 673,450), 672,202 with
    the paper's LRN (the paper's RCNN-96: 0.67M).
    The classifier interface: ``forward_features`` (N, K), ``forward_head``, ``get_classifier``,
    ``reset_classifier``.
    """

    def __init__(self, num_classes: int = 10, in_ch: int = 3, width: int = 96, steps: int = 3, kernel: int = 3,
                 stem_kernel: int = 5, blocks: int = 4, dropout: float = 0.5, norm: str = "batch",
                 pool: str = "max", recurrent: bool = True) -> None:
        super().__init__()
        if blocks < 1:
            raise ValueError(f"blocks must be >= 1, got {blocks}")
        self.width, self.steps, self.recurrent = width, steps, bool(recurrent)
        layers: list[nn.Module] = [conv_norm_relu(in_ch, width, _odd_kernel(stem_kernel), norm),
                                   nn.MaxPool2d(3, 2, padding=1)]
        for b in range(blocks):
            if recurrent:
                layers.append(RecurrentConv2d(width, kernel, steps, norm))
            else:
                layers.append(nn.Sequential(conv_norm_relu(width, width, kernel, norm),
                                            conv_norm_relu(width, width, kernel, norm)))
            if b < blocks - 1:
                layers.append(nn.Dropout(dropout))
            if b == blocks // 2 - 1:
                layers.append(nn.MaxPool2d(3, 2, padding=1))
        layers.append(_GlobalPool(pool))
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(width, num_classes)

    @property
    def num_classes(self) -> int:
        return self.head.out_features

    def forward_features(self, x: Tensor) -> Tensor:
        return self.body(x)

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        return x if pre_logits else self.head(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.body(x))

    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int) -> None:
        w = self.head.weight
        self.head = nn.Linear(self.head.in_features, num_classes).to(w.device, w.dtype)
