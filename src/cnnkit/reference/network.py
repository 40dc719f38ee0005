"""A whole network in NumPy, built from the same declarative layer list as the torch engine.

:class:`ReferenceNet` takes the parsed :class:`~cnnkit.spec.LayerSpec` list and runs
``forward(x, training) -> logits`` and ``backward(dlogits) -> {param name: gradient}`` with
every layer written out in NumPy. Parameter and buffer names are those of the torch
:class:`~cnnkit.models.spec.DeclarativeNet` (``conv1.weight``, ``batchnorm1.running_mean``,
``residual1.body.conv2.weight``, ``residual1.shortcut.weight``), so ``state_dict()`` loads
into the torch network and back. A ``concat`` layer gets the output of the earlier layer it names
(and sends that layer its share of the gradient): see :func:`forward_layers` / :func:`backward_layers`.

Time series (``signal=True``, input (C, L)) take floats (N, C, L): conv1d (``causal`` pads on the left
only), and ``lstm`` / ``gru`` (:class:`Recurrent`, the glass-box ops of :mod:`cnnkit.reference.recurrent`
per layer and direction, trained by backpropagation through time).

Text networks (input (V, L), first layer ``embedding``) take token ids, an integer array (N, L)
(or one-hot floats (N, V, L)); 1-D layers run as the 2-D ones on a map of height 1 (conv1d is a
(1, K) convolution, maxpool1d a (1, K) window), and a ``parallel`` block runs its branches on
the same input and concatenates them along channels (its backward splits the gradient by
channels and adds the branches' input gradients).

Attention blocks (``se``, ``cbam``, ``eca``, ``nonlocal``, ``attention_pool``) run the glass-box ops of
:mod:`cnnkit.reference.attention` (forward and backward); a ``nonlocal`` block's output convolution and
batch norm are :class:`Conv` and :class:`BatchNorm` layers of its own.

The layers follow the glass-box ops of :mod:`cnnkit.reference` (same formulas, same
tie rules: a max goes to the first maximum in row-major window order, as torch) but are
arranged for speed on a whole batch: convolution is one im2col copy (a strided view made
contiguous, kept for the backward) and one matrix product; pooling loops over the KH*KW
window offsets with strided slices instead of building windows.

Example::

    specs = parse_layers(lenet5_layers())
    net = ReferenceNet(specs, (1, 28, 28), num_classes=10)
    net.load_state_dict(build_torch(specs, (1, 28, 28), 10).state_dict())
    logits = net.forward(x, training=True)          # x: (N, 1, 28, 28) float32
    grads = net.backward(dlogits)                    # {"conv1.weight": (6, 1, 5, 5), ...}
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import as_strided

from cnnkit.errors import UserError
from cnnkit.geometry import conv_output_size
from cnnkit.reference.attention import (
    attention_pool2d,
    attention_pool2d_backward,
    cbam_channel,
    cbam_channel_backward,
    cbam_spatial,
    cbam_spatial_backward,
    eca,
    eca_backward,
    embedded_gaussian,
    embedded_gaussian_backward,
    squeeze_excite,
    squeeze_excite_backward,
)
from cnnkit.reference.conv import conv_transpose2d, conv_transpose2d_backward
from cnnkit.reference.recurrent import RECURRENT_OPS
from cnnkit.reference.resize import crop_concat, crop_concat_backward, upsample2d, upsample2d_backward
from cnnkit.spec import (
    LayerSpec,
    conv1d_geometry,
    conv_geometry,
    conv_transpose_padding,
    eca_kernel_size,
    infer_shapes,
    layer_output_shape,
    reduced_channels,
    residual_shortcut,
)

SUPPORTED = ("conv", "dense", "flatten", "maxpool", "avgpool", "l2pool", "globalavgpool", "globalmaxpool",
             "dropout", "batchnorm", "sigmoid", "tanh", "relu", "leaky_relu", "elu", "maxout", "residual",
             "conv_transpose", "upsample", "concat", "embedding", "conv1d", "maxpool1d", "avgpool1d",
             "globalmaxpool1d", "globalavgpool1d", "parallel", "lstm", "gru",
             "se", "cbam", "eca", "nonlocal", "attention_pool")


# --------------------------------------------------------------------------- helpers

def _pad(x: np.ndarray, pads: tuple[int, int, int, int], value: float = 0.0) -> np.ndarray:
    """x: (N, C, H, W) -> (N, C, H+t+b, W+l+r), padded with ``value``; x itself when no padding."""
    t, b, l, r = pads
    if t == b == l == r == 0:
        return x
    out = np.full((x.shape[0], x.shape[1], x.shape[2] + t + b, x.shape[3] + l + r), value, dtype=x.dtype)
    out[:, :, t:t + x.shape[2], l:l + x.shape[3]] = x
    return out


def _crop(xp: np.ndarray, pads: tuple[int, int, int, int]) -> np.ndarray:
    """Undo :func:`_pad`: (N, C, Hp, Wp) -> (N, C, H, W) (a view)."""
    t, b, l, r = pads
    return xp[:, :, t:xp.shape[2] - b, l:xp.shape[3] - r]


def _offset(p: int, q: int, out_hw: tuple[int, int], stride: tuple[int, int],
            dilation: tuple[int, int] = (1, 1)) -> tuple[slice, slice, slice, slice]:
    """The slice of a padded input that window offset (p, q) sees at every output position."""
    (ho, wo), (sh, sw), (dh, dw) = out_hw, stride, dilation
    r0, c0 = p * dh, q * dw
    return (slice(None), slice(None), slice(r0, r0 + sh * (ho - 1) + 1, sh), slice(c0, c0 + sw * (wo - 1) + 1, sw))


class Layer:
    """One layer: ``forward(x, training) -> y`` keeps what ``backward(dy) -> dx`` needs.

    Parameters live in the owning net's ``params`` dict under ``prefix + 'weight'`` etc.;
    ``backward`` writes their gradients into the net's ``grads`` dict.
    """

    type = "layer"

    def __init__(self, net: "ReferenceNet", prefix: str, name: str) -> None:
        self.net, self.prefix, self.name = net, prefix, name

    def forward(self, x: np.ndarray, training: bool) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def backward(self, dy: np.ndarray, need_dx: bool = True) -> np.ndarray | None:  # pragma: no cover
        raise NotImplementedError

    def param_keys(self) -> list[str]:
        """Names of this layer's parameters (a residual block's include its body and shortcut)."""
        return [k for k in self.net.params if k.startswith(self.prefix)]


# --------------------------------------------------------------------------- conv and dense

class Conv(Layer):
    """Convolution (cross-correlation) with im2col + GEMM.

    x: (N, C, H, W), weight (F, C/groups, KH, KW), bias (F,) -> y: (N, F, H', W').
    The column matrix cols (C*KH*KW, N*H'*W') is built once per forward and reused for dW.
    The output is returned as a transposed view of an (F, N, H', W') buffer (no copy); the input
    gradient is scattered (col2im) into a (C, Hp, Wp, N) buffer and returned as an (N, C, H, W) view.
    """

    type = "conv"

    def __init__(self, net, prefix, name, in_ch, out_ch, kernel, stride, pads, dilation, groups, bias, out_hw,
                 weight_shape=None):
        super().__init__(net, prefix, name)
        self.kernel, self.stride, self.pads, self.dilation = kernel, stride, pads, dilation
        self.groups, self.out_hw, self.in_ch, self.out_ch = groups, out_hw, in_ch, out_ch
        self.has_bias = bias
        net._add_param(prefix + "weight", weight_shape or (out_ch, in_ch // groups, *kernel))
        if bias:
            net._add_param(prefix + "bias", (out_ch,))

    def _weight(self) -> np.ndarray:
        """The weight as (F, C/groups, KH, KW) (a view: a conv1d keeps (F, C, K), its kernel is (1, K))."""
        return self.net.params[self.prefix + "weight"].reshape(self.out_ch, self.in_ch // self.groups, *self.kernel)

    def _im2col(self, xp: np.ndarray) -> np.ndarray:
        # xp: (N, C, Hp, Wp) any strides -> cols: (C, KH, KW, N, H', W') contiguous
        n, c = xp.shape[:2]
        (kh, kw), (sh, sw), (dh, dw), (ho, wo) = self.kernel, self.stride, self.dilation, self.out_hw
        s_n, s_c, s_h, s_w = xp.strides
        view = as_strided(xp, shape=(c, kh, kw, n, ho, wo),
                          strides=(s_c, s_h * dh, s_w * dw, s_n, s_h * sh, s_w * sw), writeable=False)
        return np.ascontiguousarray(view)

    def forward(self, x, training):
        n = x.shape[0]
        ho, wo = self.out_hw
        w = self._weight()
        xp = _pad(x, self.pads)                                          # (N, C, Hp, Wp)
        self.xp_shape = xp.shape
        g = self.groups
        cg, fg = self.in_ch // g, self.out_ch // g
        self.cols = []
        y = np.empty((self.out_ch, n, ho, wo), dtype=x.dtype)          # (F, N, H', W')
        for i in range(g):
            cols = self._im2col(xp[:, i * cg:(i + 1) * cg] if g > 1 else xp)  # (Cg, KH, KW, N, H', W')
            cols = cols.reshape(-1, n * ho * wo)                          # (Cg*KH*KW, N*H'*W')
            self.cols.append(cols)
            wg = w[i * fg:(i + 1) * fg].reshape(fg, -1)                   # (Fg, Cg*KH*KW)
            np.matmul(wg, cols, out=y[i * fg:(i + 1) * fg].reshape(fg, -1))
        if self.has_bias:
            y += self.net.params[self.prefix + "bias"].reshape(-1, 1, 1, 1)
        return y.transpose(1, 0, 2, 3)                                   # (N, F, H', W') view

    def backward(self, dy, need_dx=True):
        n = dy.shape[0]
        ho, wo = self.out_hw
        (kh, kw), (sh, sw), (dh, dw_), g = self.kernel, self.stride, self.dilation, self.groups
        w = self._weight()
        cg, fg = self.in_ch // g, self.out_ch // g
        dy2 = dy.transpose(1, 0, 2, 3).reshape(self.out_ch, n * ho * wo)  # (F, N*H'*W'); free for our views
        dw = np.empty_like(w)
        for i in range(g):
            # dW[f, (c, p, q)] = sum over (n, i, j) of dy[f, (n, i, j)] * cols[(c, p, q), (n, i, j)]
            np.matmul(dy2[i * fg:(i + 1) * fg], self.cols[i].T, out=dw[i * fg:(i + 1) * fg].reshape(fg, -1))
        self.net.grads[self.prefix + "weight"] = dw.reshape(self.net.params[self.prefix + "weight"].shape)
        if self.has_bias:
            self.net.grads[self.prefix + "bias"] = dy2.sum(axis=1)
        self.cols = None
        if not need_dx:
            return None
        # col2im with the batch innermost, so that each window offset is one add of long contiguous runs:
        # dcols[(p, q, c), (i, j, n)] = sum_f W[f, c, p, q] dy[f, (i, j, n)];  dx[c, i*s + p*d, j*s + q*d, n] += it
        dyr = np.ascontiguousarray(dy.transpose(1, 2, 3, 0)).reshape(self.out_ch, -1)  # (F, H'*W'*N)
        hp, wp = self.xp_shape[2:]
        dxp = np.zeros((self.in_ch, hp, wp, n), dtype=dy.dtype)         # (C, Hp, Wp, N)
        for i in range(g):
            wr = w[i * fg:(i + 1) * fg].transpose(2, 3, 1, 0).reshape(kh * kw * cg, fg)  # (KH*KW*Cg, Fg)
            dcols = (wr @ dyr[i * fg:(i + 1) * fg]).reshape(kh, kw, cg, ho, wo, n)
            dxg = dxp[i * cg:(i + 1) * cg]
            for p in range(kh):
                for q in range(kw):
                    r0, c0 = p * dh, q * dw_
                    dxg[:, r0:r0 + sh * (ho - 1) + 1:sh, c0:c0 + sw * (wo - 1) + 1:sw, :] += dcols[p, q]
        return _crop(dxp.transpose(3, 0, 1, 2), self.pads)                # (N, C, H, W) view


class Conv1d(Conv):
    """1-D convolution on sequences: x (N, C, L), weight (F, C, K), bias (F,) -> y (N, F, L').

    The 2-D :class:`Conv` on a map of height 1 with a (1, K) kernel: x is seen as (N, C, 1, L).
    """

    type = "conv1d"

    def __init__(self, net, prefix, name, in_ch, out_ch, kernel, stride, pads, dilation, bias, out_len):
        super().__init__(net, prefix, name, in_ch, out_ch, (1, kernel), (1, stride), (0, 0, *pads), (1, dilation),
                         1, bias, (1, out_len), weight_shape=(out_ch, in_ch, kernel))

    def forward(self, x, training):
        return super().forward(x[:, :, None, :], training)[:, :, 0, :]

    def backward(self, dy, need_dx=True):
        dx = super().backward(dy[:, :, None, :], need_dx)
        return None if dx is None else dx[:, :, 0, :]


class Embedding(Layer):
    """Token ids x (N, L) -> y (N, D, L) with y[n, :, t] = W[x[n, t]] (weight W (V, D)), channels first.

    backward: dW[v] = sum of dy[n, :, t] over the positions where x[n, t] == v; row ``padding_idx``
    gets none (it stays zero, as torch's). A frozen embedding's weight is a buffer: no gradient, and
    the optimiser never sees it. One-hot floats x (N, V, L) give y = W^T x (and dx = W dy).
    """

    type = "embedding"

    def __init__(self, net, prefix, name, vocab, dim, padding_idx, freeze):
        super().__init__(net, prefix, name)
        self.vocab, self.dim, self.padding_idx, self.freeze = vocab, dim, padding_idx, freeze
        if freeze:
            net._add_buffer(prefix + "weight", np.zeros((vocab, dim), dtype=net.dtype))
        else:
            net._add_param(prefix + "weight", (vocab, dim))

    def _table(self) -> np.ndarray:
        store = self.net.buffers if self.freeze else self.net.params
        return store[self.prefix + "weight"]

    def forward(self, x, training):
        w = self._table()
        self.x = x
        if x.dtype.kind == "f":                                          # one-hot (N, V, L)
            if self.padding_idx is not None:
                w = w.copy()
                w[self.padding_idx] = 0
            return np.einsum("nvl,vd->ndl", x, w)
        if x.size and (x.min() < 0 or x.max() >= self.vocab):
            raise ValueError(f"{self.name}: token ids must be in 0..{self.vocab - 1}, got ids from {x.min()} to "
                             f"{x.max()}")
        return w[x].transpose(0, 2, 1)                                   # (N, L, D) -> (N, D, L) view

    def backward(self, dy, need_dx=True):
        x, self.x = self.x, None
        if not self.freeze:
            if x.dtype.kind == "f":
                dw = np.einsum("nvl,ndl->vd", x, dy)
            else:
                dw = np.zeros((self.vocab, self.dim), dtype=dy.dtype)
                np.add.at(dw, x.reshape(-1), dy.transpose(0, 2, 1).reshape(-1, self.dim))
            if self.padding_idx is not None:
                dw[self.padding_idx] = 0
            self.net.grads[self.prefix + "weight"] = dw
        if not need_dx or x.dtype.kind != "f":
            return None                                                  # token ids have no gradient
        w = self._table().copy()
        if self.padding_idx is not None:
            w[self.padding_idx] = 0
        return np.einsum("vd,ndl->nvl", w, dy)


class Recurrent(Layer):
    """lstm / gru on channels-first sequences: x (N, C, L) -> (N, H*dirs, L), or (N, H*dirs) with return last.

    Each layer and direction is the glass-box op of :mod:`cnnkit.reference.recurrent` (``lstm`` / ``gru``,
    time on axis 1), with torch's parameter names (``weight_ih_l0``, ``bias_hh_l1_reverse``, ...). A
    bidirectional layer runs a second direction from the end and concatenates the two along features;
    layer l + 1 reads layer l's output, through inverted dropout in training. "last" is the forward
    direction's last step (and the backward direction's first step), as torch's h_n.

    backward: the gradient of the output sequence (zeros but at the last step for "last") goes through
    each layer's directions in reverse (BPTT); their input gradients add up.
    """

    def __init__(self, net, prefix, name, kind, in_ch, hidden, layers, bidirectional, return_sequence, dropout):
        super().__init__(net, prefix, name)
        self.type, self.hidden, self.num_layers = kind, hidden, layers
        self.dirs = 2 if bidirectional else 1
        self.return_sequence, self.p = return_sequence, float(dropout)
        self.fwd, self.bwd, gates = RECURRENT_OPS[kind]
        for layer in range(layers):
            n_in = in_ch if layer == 0 else hidden * self.dirs
            for suffix in self._suffixes(layer):
                net._add_param(f"{prefix}weight_ih{suffix}", (gates * hidden, n_in))
                net._add_param(f"{prefix}weight_hh{suffix}", (gates * hidden, hidden))
                net._add_param(f"{prefix}bias_ih{suffix}", (gates * hidden,))
                net._add_param(f"{prefix}bias_hh{suffix}", (gates * hidden,))

    def _suffixes(self, layer: int) -> list[str]:
        return [f"_l{layer}", f"_l{layer}_reverse"][:self.dirs]

    def forward(self, x, training):
        p = self.net.params
        seq = x.transpose(0, 2, 1)                                       # (N, L, C): time on axis 1
        self.caches, self.masks = [], []
        for layer in range(self.num_layers):
            mask = None
            if layer > 0 and training and self.p > 0:                    # between stacked layers, as torch
                keep = self.net.rng.random(seq.shape, dtype=np.float32) >= self.p
                mask = keep * seq.dtype.type(1.0 / (1.0 - self.p))
                seq = seq * mask
            self.masks.append(mask)
            outs, caches = [], []
            for d, sfx in enumerate(self._suffixes(layer)):
                hs, cache = self.fwd(seq, p[f"{self.prefix}weight_ih{sfx}"], p[f"{self.prefix}weight_hh{sfx}"],
                                     p[f"{self.prefix}bias_ih{sfx}"], p[f"{self.prefix}bias_hh{sfx}"], reverse=d == 1)
                outs.append(hs)
                caches.append(cache)
            self.caches.append(caches)
            seq = outs[0] if self.dirs == 1 else np.concatenate(outs, axis=2)   # (N, L, H*dirs)
        self.seq_shape = seq.shape
        if self.return_sequence:
            return np.ascontiguousarray(seq.transpose(0, 2, 1))          # (N, H*dirs, L)
        hid = self.hidden
        last = [seq[:, -1, :hid]] + ([seq[:, 0, hid:]] if self.dirs == 2 else [])
        return np.concatenate(last, axis=1)                              # (N, H*dirs)

    def backward(self, dy, need_dx=True):
        hid = self.hidden
        if self.return_sequence:
            dseq = dy.transpose(0, 2, 1)                                 # (N, L, H*dirs)
        else:
            dseq = np.zeros(self.seq_shape, dtype=dy.dtype)
            dseq[:, -1, :hid] = dy[:, :hid]
            if self.dirs == 2:
                dseq[:, 0, hid:] = dy[:, hid:]
        for layer in reversed(range(self.num_layers)):
            din = None
            for d, sfx in enumerate(self._suffixes(layer)):
                dx, dw_ih, dw_hh, db_ih, db_hh = self.bwd(dseq[:, :, d * hid:(d + 1) * hid], self.caches[layer][d])
                g = self.net.grads
                g[f"{self.prefix}weight_ih{sfx}"], g[f"{self.prefix}weight_hh{sfx}"] = dw_ih, dw_hh
                g[f"{self.prefix}bias_ih{sfx}"], g[f"{self.prefix}bias_hh{sfx}"] = db_ih, db_hh
                din = dx if din is None else din + dx
            if self.masks[layer] is not None:
                din = din * self.masks[layer]
            dseq = din
        self.caches = self.masks = None
        return np.ascontiguousarray(dseq.transpose(0, 2, 1)) if need_dx else None   # (N, C, L)


class Dense(Layer):
    """Fully connected: x (N, in), weight (out, in), bias (out,) -> y (N, out) = x W^T + b."""

    type = "dense"

    def __init__(self, net, prefix, name, n_in, n_out, bias):
        super().__init__(net, prefix, name)
        self.has_bias = bias
        net._add_param(prefix + "weight", (n_out, n_in))
        if bias:
            net._add_param(prefix + "bias", (n_out,))

    def forward(self, x, training):
        self.x = x
        y = x @ self.net.params[self.prefix + "weight"].T                # (N, out)
        if self.has_bias:
            y += self.net.params[self.prefix + "bias"]
        return y

    def backward(self, dy, need_dx=True):
        w = self.net.params[self.prefix + "weight"]
        self.net.grads[self.prefix + "weight"] = dy.T @ self.x            # (out, in)
        if self.has_bias:
            self.net.grads[self.prefix + "bias"] = dy.sum(axis=0)         # (out,)
        self.x = None
        return dy @ w if need_dx else None                               # (N, in)


class ConvTranspose(Layer):
    """Transposed convolution: x (N, C, H, W), weight (C, F, KH, KW), bias (F,) -> y (N, F, H', W').

    The glass-box op :func:`cnnkit.reference.conv.conv_transpose2d` (scatter of the kernel, then crop).
    """

    type = "conv_transpose"

    def __init__(self, net, prefix, name, in_ch, out_ch, kernel, stride, padding, output_padding, dilation, bias):
        super().__init__(net, prefix, name)
        self.stride, self.padding, self.output_padding, self.dilation = stride, padding, output_padding, dilation
        self.has_bias = bias
        net._add_param(prefix + "weight", (in_ch, out_ch, *kernel))
        if bias:
            net._add_param(prefix + "bias", (out_ch,))

    def forward(self, x, training):
        p = self.net.params
        b = p[self.prefix + "bias"] if self.has_bias else None
        y, self.cache = conv_transpose2d(x, p[self.prefix + "weight"], b, self.stride, self.padding,
                                         self.output_padding, self.dilation)
        return y

    def backward(self, dy, need_dx=True):
        dx, dw, db = conv_transpose2d_backward(dy, self.cache)
        self.net.grads[self.prefix + "weight"] = dw
        if self.has_bias:
            self.net.grads[self.prefix + "bias"] = db
        self.cache = None
        return dx if need_dx else None


class Upsample(Layer):
    """Nearest or bilinear upsampling to ``size``: x (N, C, H, W) -> y (N, C, H', W') = A_h x A_w^T."""

    type = "upsample"

    def __init__(self, net, prefix, name, size, mode, align_corners):
        super().__init__(net, prefix, name)
        self.size, self.mode, self.align_corners = size, mode, align_corners

    def forward(self, x, training):
        y, self.cache = upsample2d(x, self.size, self.mode, self.align_corners)
        return y

    def backward(self, dy, need_dx=True):
        return upsample2d_backward(dy, self.cache) if need_dx else None


class Concat(Layer):
    """U-Net's skip: cat([x, crop(skip)]) along channels; skip is the output of layer ``source``.

    ``forward(x, training, skip)``; ``backward(dy) -> (dx, dskip)``: the runner adds dskip to the
    gradient of the source layer's output.
    """

    type = "concat"

    def __init__(self, net, prefix, name, source):
        super().__init__(net, prefix, name)
        self.source = source

    def forward(self, x, training, skip=None):
        y, self.cache = crop_concat(x, skip)
        return y

    def backward(self, dy, need_dx=True):
        return crop_concat_backward(dy, self.cache)


def forward_layers(layers: list[Layer], x: np.ndarray, training: bool) -> np.ndarray:
    """Run layers in order, keeping the outputs that a later Concat asks for."""
    wanted = {layer.source for layer in layers if isinstance(layer, Concat)}
    saved: dict[str, np.ndarray] = {}
    for layer in layers:
        x = layer.forward(x, training, saved[layer.source]) if isinstance(layer, Concat) else layer.forward(x, training)
        if layer.name in wanted:
            saved[layer.name] = x
    return x


def backward_layers(layers: list[Layer], d: np.ndarray, need_dx: bool) -> np.ndarray | None:
    """Backpropagate through ``layers`` (reversed); a layer whose output also fed a Concat gets both gradients."""
    pending: dict[str, np.ndarray] = {}   # source name -> gradient from the concats that used its output
    n = len(layers)
    for i, layer in enumerate(reversed(layers)):
        if layer.name in pending:
            d = d + pending.pop(layer.name)
        if isinstance(layer, Concat):
            d, dskip = layer.backward(d)
            pending[layer.source] = pending[layer.source] + dskip if layer.source in pending else dskip
        else:
            d = layer.backward(d, need_dx=need_dx or i < n - 1)
    return d


class Flatten(Layer):
    """x (N, C, H, W) -> (N, C*H*W) in C order (torch's flatten)."""

    type = "flatten"

    def forward(self, x, training):
        self.shape = x.shape
        return x.reshape(x.shape[0], -1)

    def backward(self, dy, need_dx=True):
        return dy.reshape(self.shape)


# --------------------------------------------------------------------------- pooling

class Pool(Layer):
    """Max, average or L2 pooling over KH x KW windows; symmetric padding like torch.

    x: (N, C, H, W) -> y: (N, C, H', W'). Padded cells are -inf for max, 0 for avg/L2
    (avg divides by KH*KW). The loops run over the KH*KW window offsets, each a strided slice.
    """

    def __init__(self, net, prefix, name, kind, kernel, stride, padding, out_hw):
        super().__init__(net, prefix, name)
        self.type, self.kernel, self.stride, self.out_hw = kind, kernel, stride, out_hw
        self.op = kind[:3].replace("l2p", "l2")                          # "max", "avg" or "l2"
        self.pads = (padding[0], padding[0], padding[1], padding[1])

    def _slices(self):
        kh, kw = self.kernel
        return [_offset(p, q, self.out_hw, self.stride) for p in range(kh) for q in range(kw)]

    def forward(self, x, training):
        fill = -np.inf if self.op == "max" else 0.0
        xp = _pad(x, self.pads, fill)                                    # (N, C, Hp, Wp)
        sl = self._slices()
        if self.op == "max":
            y = xp[sl[0]].copy(order="K")
            for s in sl[1:]:
                np.maximum(y, xp[s], out=y)
        elif self.op == "avg":
            y = xp[sl[0]].copy(order="K")
            for s in sl[1:]:
                y += xp[s]
            y *= x.dtype.type(1.0 / len(sl))
        else:  # l2pool: sqrt(sum of squares)
            y = np.square(xp[sl[0]])
            for s in sl[1:]:
                y += np.square(xp[s])
            np.sqrt(y, out=y)
        self.xp, self.y, self.x_shape = xp, y, x.shape
        return y

    def backward(self, dy, need_dx=True):
        xp, y = self.xp, self.y
        dxp = np.zeros_like(xp, dtype=dy.dtype)                          # (N, C, Hp, Wp), xp's layout
        sl = self._slices()
        overlap = self.stride[0] < self.kernel[0] or self.stride[1] < self.kernel[1]
        if self.op == "max":
            # each window's gradient goes to its first maximum (row-major), as torch
            taken = np.zeros(y.shape, dtype=bool)
            for s in sl:
                hit = xp[s] == y
                hit &= ~taken
                taken |= hit
                if overlap:
                    dxp[s] += dy * hit
                else:
                    np.multiply(dy, hit, out=dxp[s])
        elif self.op == "avg":
            g = dy * dy.dtype.type(1.0 / len(sl))
            for s in sl:
                dxp[s] += g
        else:  # l2pool: dy/dx = x / y, 0 where y == 0
            scale = np.divide(dy, y, out=np.zeros_like(y), where=y > 0)
            for s in sl:
                dxp[s] += xp[s] * scale
        self.xp = self.y = None
        return _crop(dxp, self.pads)


class Pool1d(Pool):
    """maxpool1d / avgpool1d: x (N, C, L) -> y (N, C, L'), the 2-D :class:`Pool` with a (1, K) window."""

    def __init__(self, net, prefix, name, kind, kernel, stride, padding, out_len):
        super().__init__(net, prefix, name, kind, (1, kernel), (1, stride), (0, padding), (1, out_len))

    def forward(self, x, training):
        return super().forward(x[:, :, None, :], training)[:, :, 0, :]

    def backward(self, dy, need_dx=True):
        return super().backward(dy[:, :, None, :], need_dx)[:, :, 0, :]


class GlobalPool1d(Layer):
    """Mean or max over time: x (N, C, L) -> y (N, C) (max: Kim's max-over-time pooling; ties go to the first)."""

    def __init__(self, net, prefix, name, kind):
        super().__init__(net, prefix, name)
        self.type = kind

    def forward(self, x, training):
        self.shape = x.shape
        if self.type == "globalavgpool1d":
            return x.mean(axis=2)
        self.arg = x.argmax(axis=2)                                      # (N, C)
        return np.take_along_axis(x, self.arg[..., None], axis=2)[..., 0]

    def backward(self, dy, need_dx=True):
        if self.type == "globalavgpool1d":
            return np.broadcast_to((dy * dy.dtype.type(1.0 / self.shape[2]))[:, :, None], self.shape).copy()
        dx = np.zeros(self.shape, dtype=dy.dtype)
        np.put_along_axis(dx, self.arg[..., None], dy[..., None], axis=2)
        return dx


class GlobalPool(Layer):
    """Mean or max over the spatial axes: x (N, C, H, W) -> y (N, C); max ties go to the first."""

    def __init__(self, net, prefix, name, kind):
        super().__init__(net, prefix, name)
        self.type = kind

    def forward(self, x, training):
        self.shape = x.shape
        if self.type == "globalavgpool":
            return x.mean(axis=(2, 3))
        flat = x.reshape(x.shape[0], x.shape[1], -1)                     # (N, C, H*W)
        self.arg = flat.argmax(axis=-1)                                  # (N, C)
        return np.take_along_axis(flat, self.arg[..., None], axis=-1)[..., 0]

    def backward(self, dy, need_dx=True):
        n, c, h, w = self.shape
        if self.type == "globalavgpool":
            return np.broadcast_to((dy * dy.dtype.type(1.0 / (h * w)))[:, :, None, None], self.shape).copy()
        dx = np.zeros((n, c, h * w), dtype=dy.dtype)
        np.put_along_axis(dx, self.arg[..., None], dy[..., None], axis=-1)
        return dx.reshape(self.shape)


# --------------------------------------------------------------------------- elementwise

class Activation(Layer):
    """sigmoid, tanh, relu, leaky_relu(slope), elu(alpha), maxout(pieces): any shape (maxout on axis 1)."""

    def __init__(self, net, prefix, name, kind, args):
        super().__init__(net, prefix, name)
        self.type, self.args = kind, args

    def forward(self, x, training):
        t = self.type
        one = x.dtype.type(1)
        if t == "relu":
            self.mask = x > 0
            return np.maximum(x, 0)
        if t == "leaky_relu":
            self.mask = x > 0
            return np.where(self.mask, x, x * x.dtype.type(self.args["slope"]))
        if t == "elu":
            alpha = x.dtype.type(self.args["alpha"])
            self.mask = x > 0
            self.neg = alpha * np.exp(np.minimum(x, 0))                  # alpha e^x on the negative side
            return np.where(self.mask, x, self.neg - alpha)
        if t == "sigmoid":
            e = np.exp(-np.abs(x))
            self.y = np.where(x >= 0, one / (one + e), e / (one + e))
            return self.y
        if t == "tanh":
            self.y = np.tanh(x)
            return self.y
        if t == "maxout":
            k = self.args["pieces"]
            g = x.reshape((x.shape[0], x.shape[1] // k, k) + x.shape[2:])  # (N, C, pieces, ...)
            self.arg, self.shape = g.argmax(axis=2), x.shape
            return np.take_along_axis(g, self.arg[:, :, None], axis=2)[:, :, 0]
        raise AssertionError(t)

    def backward(self, dy, need_dx=True):
        t = self.type
        one = dy.dtype.type(1)
        if t == "relu":
            return dy * self.mask
        if t == "leaky_relu":
            return np.where(self.mask, dy, dy * dy.dtype.type(self.args["slope"]))
        if t == "elu":
            return np.where(self.mask, dy, dy * self.neg)
        if t == "sigmoid":
            return dy * self.y * (one - self.y)
        if t == "tanh":
            return dy * (one - self.y * self.y)
        if t == "maxout":
            k = self.args["pieces"]
            dg = np.zeros((self.shape[0], self.shape[1] // k, k) + self.shape[2:], dtype=dy.dtype)
            np.put_along_axis(dg, self.arg[:, :, None], dy[:, :, None], axis=2)
            return dg.reshape(self.shape)
        raise AssertionError(t)


class Dropout(Layer):
    """Inverted dropout: y = x * mask, mask 0 with probability p else 1/(1-p); identity in eval.

    ``mask_override`` (an array of 0 and 1/(1-p)) replaces the random mask, e.g. to share torch's.
    ``freeze`` reuses the last mask (for gradient checks).
    """

    type = "dropout"

    def __init__(self, net, prefix, name, p):
        super().__init__(net, prefix, name)
        self.p = float(p)
        self.mask = None
        self.mask_override: np.ndarray | None = None
        self.freeze = False

    def forward(self, x, training):
        if not training or self.p == 0.0:
            self.mask = None
            return x
        if self.mask_override is not None:
            self.mask = np.asarray(self.mask_override, dtype=x.dtype)
        elif not (self.freeze and self.mask is not None and self.mask.shape == x.shape):
            keep = self.net.rng.random(x.shape, dtype=np.float32) >= self.p
            self.mask = keep * x.dtype.type(1.0 / (1.0 - self.p))
        return x * self.mask

    def backward(self, dy, need_dx=True):
        return dy if self.mask is None else dy * self.mask


class BatchNorm(Layer):
    """Batch normalisation of (N, C), (N, C, L) or (N, C, H, W) over all axes but C, with torch's running stats.

    Training: batch mean and biased variance normalise; running_mean/var move by ``momentum``
    (the unbiased variance, as torch; momentum None = cumulative average) and
    num_batches_tracked counts batches. Eval: the running statistics.
    """

    type = "batchnorm"

    def __init__(self, net, prefix, name, channels, momentum, eps, affine):
        super().__init__(net, prefix, name)
        self.momentum, self.eps, self.affine = momentum, eps, affine
        if affine:
            net._add_param(prefix + "weight", (channels,), fill=1.0)
            net._add_param(prefix + "bias", (channels,), fill=0.0)
        net._add_buffer(prefix + "running_mean", np.zeros(channels, dtype=net.dtype))
        net._add_buffer(prefix + "running_var", np.ones(channels, dtype=net.dtype))
        net._add_buffer(prefix + "num_batches_tracked", np.zeros((), dtype=np.int64))

    def forward(self, x, training):
        axes = tuple(a for a in range(x.ndim) if a != 1)                # (0,), (0, 2) or (0, 2, 3)
        bshape = (1, -1) + (1,) * (x.ndim - 2)
        b = self.net.buffers
        rm, rv = b[self.prefix + "running_mean"], b[self.prefix + "running_var"]
        if training:
            m = x.size // x.shape[1]
            if m < 2:
                raise ValueError(f"{self.name}: batchnorm in training needs more than one value per channel")
            mean = x.mean(axis=axes)                                     # (C,)
            xc = x - mean.reshape(bshape)
            var = np.square(xc).mean(axis=axes)                          # (C,) biased
            nbt = b[self.prefix + "num_batches_tracked"]
            nbt += 1
            mom = (1.0 / float(nbt)) if self.momentum is None else self.momentum
            rm *= rm.dtype.type(1 - mom)
            rm += rm.dtype.type(mom) * mean.astype(rm.dtype)
            rv *= rv.dtype.type(1 - mom)
            rv += rv.dtype.type(mom * m / (m - 1)) * var.astype(rv.dtype)
        else:
            mean, var = rm.astype(x.dtype, copy=False), rv.astype(x.dtype, copy=False)
            xc = x - mean.reshape(bshape)
        inv_std = (x.dtype.type(1) / np.sqrt(var + x.dtype.type(self.eps))).astype(x.dtype, copy=False)
        xhat = xc * inv_std.reshape(bshape)
        self.xhat, self.inv_std, self.axes, self.bshape, self.training = xhat, inv_std, axes, bshape, training
        if not self.affine:
            return xhat
        p = self.net.params
        return xhat * p[self.prefix + "weight"].reshape(bshape) + p[self.prefix + "bias"].reshape(bshape)

    def backward(self, dy, need_dx=True):
        xhat, inv_std, axes, bshape = self.xhat, self.inv_std, self.axes, self.bshape
        g = dy
        if self.affine:
            self.net.grads[self.prefix + "weight"] = (dy * xhat).sum(axis=axes)
            self.net.grads[self.prefix + "bias"] = dy.sum(axis=axes)
            g = dy * self.net.params[self.prefix + "weight"].reshape(bshape)
        self.xhat = None
        if not need_dx:
            return None
        if not self.training:
            return g * inv_std.reshape(bshape)
        m = xhat.size // xhat.shape[1]
        # dx = inv_std / m * (m g - sum(g) - xhat sum(g xhat))
        mean_g = g.mean(axis=axes).reshape(bshape)
        mean_gx = (g * xhat).mean(axis=axes).reshape(bshape)
        return (g - mean_g - xhat * mean_gx) * inv_std.reshape(bshape)


# --------------------------------------------------------------------------- residual

class Residual(Layer):
    """y = post(body(x) + shortcut(x)); shortcut = identity or a strided 1x1 conv without bias.

    backward: dz = post'(dy); dx = body^T(dz) + shortcut^T(dz).
    """

    type = "residual"

    def __init__(self, net, prefix, name, body: list[Layer], shortcut: Layer | None, post: bool):
        super().__init__(net, prefix, name)
        self.body, self.shortcut, self.post = body, shortcut, post

    def forward(self, x, training):
        h = forward_layers(self.body, x, training)
        s = self.shortcut.forward(x, training) if self.shortcut is not None else x
        z = h + s
        if self.post:
            self.mask = z > 0
            return np.maximum(z, 0)
        return z

    def backward(self, dy, need_dx=True):
        dz = dy * self.mask if self.post else dy
        dh = backward_layers(self.body, dz, need_dx)
        if self.shortcut is not None:
            ds = self.shortcut.backward(dz, need_dx=need_dx)
        else:
            ds = dz
        return dh + ds if need_dx else None


class Parallel(Layer):
    """Branches on the same input, outputs concatenated along channels: y = cat([b1(x), b2(x), ...], axis 1).

    backward: dy is split by each branch's channels; dx = the sum of the branches' input gradients.
    """

    type = "parallel"

    def __init__(self, net, prefix, name, branches: list[list[Layer]]):
        super().__init__(net, prefix, name)
        self.branches = branches

    def forward(self, x, training):
        outs = [forward_layers(b, x, training) for b in self.branches]
        self.splits = np.cumsum([o.shape[1] for o in outs])[:-1]
        return np.concatenate(outs, axis=1)

    def backward(self, dy, need_dx=True):
        dx = None
        for branch, d in zip(self.branches, np.split(dy, self.splits, axis=1)):
            g = backward_layers(branch, np.ascontiguousarray(d), need_dx)
            if need_dx:
                dx = g if dx is None else dx + g
        return dx


# --------------------------------------------------------------------------- attention

_GATE = ("fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias")   # an se / cbam gate's MLP, as torch names it


class AttentionOp(Layer):
    """se, eca, attention_pool: one glass-box op of :mod:`cnnkit.reference.attention` and its parameters.

    ``op(x, *params) -> (y, cache)`` and ``op_backward(dy, cache) -> (dx, *param grads)``, the parameters
    in the order of ``shapes`` (torch's names and order).
    """

    def __init__(self, net, prefix, name, kind, shapes: dict[str, tuple[int, ...]], op, op_backward):
        super().__init__(net, prefix, name)
        self.type, self.keys, self.op, self.op_backward = kind, list(shapes), op, op_backward
        for key, shape in shapes.items():
            net._add_param(prefix + key, shape)

    def forward(self, x, training):
        y, self.cache = self.op(x, *(self.net.params[self.prefix + k] for k in self.keys))
        return y

    def backward(self, dy, need_dx=True):
        dx, *grads = self.op_backward(dy, self.cache)
        self.cache = None
        for key, g in zip(self.keys, grads):
            self.net.grads[self.prefix + key] = g
        return dx if need_dx else None


class CBAM(Layer):
    """cbam: x' = x * Mc (channel attention), y = x' * Ms (spatial attention); backward in reverse order.

    Parameters fc1 (C/r, C), fc2 (C, C/r) (the shared MLP) and spatial (1, 2, k, k) with its bias (1,).
    """

    type = "cbam"

    def __init__(self, net, prefix, name, channels, hidden, kernel):
        super().__init__(net, prefix, name)
        shapes = {"fc1.weight": (hidden, channels), "fc1.bias": (hidden,), "fc2.weight": (channels, hidden),
                  "fc2.bias": (channels,), "spatial.weight": (1, 2, kernel, kernel), "spatial.bias": (1,)}
        for key, shape in shapes.items():
            net._add_param(prefix + key, shape)

    def forward(self, x, training):
        p = self.net.params
        x1, self.c_channel = cbam_channel(x, *(p[self.prefix + k] for k in _GATE))
        y, self.c_spatial = cbam_spatial(x1, p[self.prefix + "spatial.weight"], p[self.prefix + "spatial.bias"])
        return y

    def backward(self, dy, need_dx=True):
        g = self.net.grads
        dx1, g[self.prefix + "spatial.weight"], g[self.prefix + "spatial.bias"] = cbam_spatial_backward(
            dy, self.c_spatial)
        dx, *gate = cbam_channel_backward(dx1, self.c_channel)
        for key, grad in zip(_GATE, gate):
            g[self.prefix + key] = grad
        self.c_channel = self.c_spatial = None
        return dx if need_dx else None


class NonLocal(Layer):
    """nonlocal: z = bn(out(y)) + x, y the embedded-Gaussian attention of
    :func:`~cnnkit.reference.attention.embedded_gaussian` (theta, phi, g: 1x1 convolutions C -> I; theta's
    bias only).

    ``out`` (a 1x1 :class:`Conv`, no bias) and ``bn`` (a :class:`BatchNorm`, its scale starting at 0, so
    that the block starts as the identity) are layers of their own. backward: dx = dz + the attention's dx.
    """

    type = "nonlocal"
    _KEYS = ("theta.weight", "theta.bias", "phi.weight", "g.weight")

    def __init__(self, net, prefix, name, channels, inter, hw):
        super().__init__(net, prefix, name)
        shapes = {"theta.weight": (inter, channels, 1, 1), "theta.bias": (inter,),
                  "phi.weight": (inter, channels, 1, 1), "g.weight": (inter, channels, 1, 1)}
        for key in self._KEYS:
            net._add_param(prefix + key, shapes[key])
        self.out = Conv(net, prefix + "out.", name + ".out", inter, channels, (1, 1), (1, 1), (0, 0, 0, 0), (1, 1),
                        1, False, hw)
        self.bn = BatchNorm(net, prefix + "bn.", name + ".bn", channels, 0.1, 1e-5, True)
        net.params[prefix + "bn.weight"][...] = 0

    def forward(self, x, training):
        y, self.cache = embedded_gaussian(x, *(self.net.params[self.prefix + k] for k in self._KEYS))
        return self.bn.forward(self.out.forward(y, training), training) + x

    def backward(self, dy, need_dx=True):
        dyy = self.out.backward(self.bn.backward(dy), need_dx=True)
        dx, *grads = embedded_gaussian_backward(dyy, self.cache)
        self.cache = None
        for key, g in zip(self._KEYS, grads):
            self.net.grads[self.prefix + key] = g
        return dy + dx if need_dx else None


# --------------------------------------------------------------------------- the network

class ReferenceNet:
    """The NumPy twin of a :class:`~cnnkit.models.spec.DeclarativeNet`.

    ``params`` / ``buffers`` / ``grads`` are ordered dicts keyed like the torch ``state_dict``.
    ``rng`` (a ``numpy.random.Generator``) draws dropout masks.
    """

    def __init__(self, specs: list[LayerSpec], input_shape: tuple[int, ...], num_classes: int | None = None,
                 dtype=np.float32, rng: np.random.Generator | None = None, *, signal: bool = False) -> None:
        self.specs = list(specs)
        self.input_shape = tuple(input_shape)
        self.signal = bool(signal)
        self.num_classes = num_classes
        self.dtype = np.dtype(dtype)
        self.rng = rng if rng is not None else np.random.default_rng(0)
        self.params: OrderedDict[str, np.ndarray] = OrderedDict()
        self.buffers: OrderedDict[str, np.ndarray] = OrderedDict()
        self.grads: dict[str, np.ndarray] = {}
        self._order: list[str] = []          # state_dict order (params and buffers interleaved as torch)
        _check_supported(self.specs)
        self.shapes = infer_shapes(self.specs, self.input_shape, num_classes, signal=self.signal)
        self.layers = self._build(self.specs, self.input_shape, "")

    # ---------------------------------------------------------------- construction

    def _add_param(self, key: str, shape: tuple[int, ...], fill: float = 0.0) -> None:
        self.params[key] = np.full(shape, fill, dtype=self.dtype)
        self._order.append(key)

    def _add_buffer(self, key: str, value: np.ndarray) -> None:
        self.buffers[key] = value
        self._order.append(key)

    def _build(self, specs: list[LayerSpec], shape: tuple[int, ...], prefix: str) -> list[Layer]:
        layers = []
        named: dict[str, tuple[int, ...]] = {}
        for spec in specs:
            out = layer_output_shape(spec, shape, self.num_classes, named)
            layers.append(self._layer(spec, shape, out, prefix + spec.name + "."))
            named[spec.name] = out
            shape = out
        return layers

    def _layer(self, spec: LayerSpec, shape, out, prefix: str) -> Layer:
        t, a, name = spec.type, spec.args, spec.name
        if t == "conv":
            g = conv_geometry(spec, shape)
            return Conv(self, prefix, name, shape[0], out[0], a["kernel"], a["stride"], g["pad"], a["dilation"],
                        a["groups"], a["bias"], g["out"])
        if t == "conv_transpose":
            padding, output_padding = conv_transpose_padding(a, spec.index)
            return ConvTranspose(self, prefix, name, shape[0], out[0], a["kernel"], a["stride"], padding,
                                 output_padding, a["dilation"], a["bias"])
        if t == "upsample":
            return Upsample(self, prefix, name, out[1:], a["mode"], a["align_corners"])
        if t == "concat":
            return Concat(self, prefix, name, a["from"])
        if t == "dense":
            return Dense(self, prefix, name, shape[0], out[0], a["bias"])
        if t == "flatten":
            return Flatten(self, prefix, name)
        if t == "embedding":
            return Embedding(self, prefix, name, shape[0], a["dim"], a["padding_idx"], a["freeze"])
        if t == "conv1d":
            g = conv1d_geometry(spec, shape)
            return Conv1d(self, prefix, name, shape[0], out[0], a["kernel"], a["stride"], g["pad"], a["dilation"],
                          a["bias"], g["out"])
        if t in ("maxpool1d", "avgpool1d"):
            return Pool1d(self, prefix, name, t, a["kernel"], a["stride"], a["padding"], out[1])
        if t in ("globalmaxpool1d", "globalavgpool1d"):
            return GlobalPool1d(self, prefix, name, t)
        if t in ("lstm", "gru"):
            return Recurrent(self, prefix, name, t, shape[0], a["hidden"], a["layers"], a["bidirectional"],
                             a["return"] == "sequence", a["dropout"])
        if t == "parallel":
            return Parallel(self, prefix, name, [self._build(b, shape, f"{prefix}branches.{j}.")
                                                 for j, b in enumerate(spec.sublists())])
        if t in ("maxpool", "avgpool", "l2pool"):
            return Pool(self, prefix, name, t, a["kernel"], a["stride"], a["padding"], out[1:])
        if t in ("globalavgpool", "globalmaxpool"):
            return GlobalPool(self, prefix, name, t)
        if t == "dropout":
            return Dropout(self, prefix, name, a["p"])
        if t == "batchnorm":
            return BatchNorm(self, prefix, name, shape[0], a["momentum"], a["eps"], a["affine"])
        if t in ("sigmoid", "tanh", "relu", "leaky_relu", "elu", "maxout"):
            return Activation(self, prefix, name, t, a)
        if t == "se":
            c, hidden = shape[0], reduced_channels(shape[0], a["reduction"])
            return AttentionOp(self, prefix, name, t, {"fc1.weight": (hidden, c), "fc1.bias": (hidden,),
                                                       "fc2.weight": (c, hidden), "fc2.bias": (c,)},
                               squeeze_excite, squeeze_excite_backward)
        if t == "eca":
            k = eca_kernel_size(shape[0], a["gamma"], a["b"]) if a["kernel"] is None else a["kernel"]
            return AttentionOp(self, prefix, name, t, {"conv.weight": (1, 1, k)}, eca, eca_backward)
        if t == "attention_pool":
            return AttentionOp(self, prefix, name, t, {"score.weight": (1, shape[0], 1, 1)},
                               attention_pool2d, attention_pool2d_backward)
        if t == "cbam":
            return CBAM(self, prefix, name, shape[0], reduced_channels(shape[0], a["reduction"]), a["kernel"])
        if t == "nonlocal":
            return NonLocal(self, prefix, name, shape[0], reduced_channels(shape[0], a["reduction"]), shape[1:])
        if t == "residual":
            body = self._build(list(spec.children), shape, prefix + "body.")
            stride = residual_shortcut(spec, shape, out)
            shortcut = None
            if stride is not None and len(shape) == 2:
                shortcut = Conv1d(self, prefix + "shortcut.", name + ".shortcut", shape[0], out[0], 1, stride, (0, 0),
                                  1, False, conv_output_size(shape[1], 1, stride))
            elif stride is not None:
                ho, wo = conv_output_size(shape[1], 1, stride), conv_output_size(shape[2], 1, stride)
                shortcut = Conv(self, prefix + "shortcut.", name + ".shortcut", shape[0], out[0], (1, 1),
                                (stride, stride), (0, 0, 0, 0), (1, 1), 1, False, (ho, wo))
            return Residual(self, prefix, name, body, shortcut, a["activation"] == "relu")
        raise AssertionError(t)  # _check_supported ran first

    # ---------------------------------------------------------------- running

    def forward(self, x: np.ndarray, training: bool = True) -> np.ndarray:
        """x: (N, *input_shape) -> logits (N, K) (or the last layer's output).

        A text network takes token ids, integers (N, L) (kept as int64), or one-hot floats (N, V, L)."""
        x = np.asarray(x)
        if isinstance(self.layers[0], Embedding) and x.dtype.kind in "iu":
            x = x.astype(np.int64, copy=False)
        else:
            x = x.astype(self.dtype, copy=False)
        return forward_layers(self.layers, x, training)

    def backward(self, dout: np.ndarray, need_input_grad: bool = False) -> dict[str, np.ndarray]:
        """Backpropagate dL/dlogits through the last forward; returns ``{param name: gradient}``.

        With ``need_input_grad`` the gradient w.r.t. the input is kept in ``self.input_grad``.
        """
        self.grads = {}
        d = np.asarray(dout, dtype=self.dtype)
        self.input_grad = backward_layers(self.layers, d, need_input_grad)
        return {k: self.grads[k] for k in self.params}

    def parameters(self) -> list[np.ndarray]:
        return list(self.params.values())

    # ---------------------------------------------------------------- state

    def state_dict(self):
        """An ordered dict of torch tensors with the keys (and order) of the DeclarativeNet's."""
        import torch

        out = OrderedDict()
        for k in self._order:
            arr = self.params[k] if k in self.params else self.buffers[k]
            out[k] = torch.from_numpy(np.array(arr, copy=True))
        return out

    def load_state_dict(self, state: dict[str, Any], strict: bool = True) -> None:
        """Copy weights and buffers from a torch state_dict (tensors or arrays), checking keys and shapes."""
        keys = set(self._order)
        missing = [k for k in self._order if k not in state]
        unexpected = [k for k in state if k not in keys]
        if strict and (missing or unexpected):
            raise UserError(f"state_dict does not match the reference network: missing {missing}, "
                            f"unexpected {unexpected}")
        for k in self._order:
            if k not in state:
                continue
            v = state[k]
            arr = v.detach().cpu().numpy() if hasattr(v, "detach") else np.asarray(v)
            target = self.params if k in self.params else self.buffers
            if arr.shape != target[k].shape:
                raise UserError(f"state_dict entry {k!r} has shape {tuple(arr.shape)}, "
                                f"the reference network needs {tuple(target[k].shape)}")
            target[k] = arr.astype(target[k].dtype, copy=True)

    def init(self, init_cfg: Any = None, rng: np.random.Generator | None = None, seed: int | None = None) -> None:
        """Initialise the weights: ``init_cfg`` is a model.init section (scheme, distribution, scale).

        random / xavier / he draw conv and dense weights, and an lstm's / gru's weight matrices (fans of a
        dense (gates*H, in) weight), with :func:`cnnkit.reference.init.init_weight` (biases 0, batchnorm
        weight 1 but a nonlocal block's 0; an embedding keeps torch's N(0, 1), its padding row 0); ``default`` copies a torch DeclarativeNet built under
        ``torch.manual_seed(seed)`` (seed drawn from ``rng`` when None), i.e. torch's own initialisation.
        """
        from cnnkit.reference.init import init_weight

        rng = rng if rng is not None else self.rng
        scheme = getattr(init_cfg, "scheme", None) or (init_cfg if isinstance(init_cfg, str) else "default")
        dist = getattr(init_cfg, "distribution", "normal")
        scale = getattr(init_cfg, "scale", 0.05)
        if scheme == "default":
            import torch

            from cnnkit.models.spec import build_torch

            seed = int(rng.integers(2**31)) if seed is None else seed
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                net = build_torch(self.specs, self.input_shape, self.num_classes, signal=self.signal)
            self.load_state_dict(net.state_dict())
            return
        tables = {layer.prefix + "weight": layer for layer in self.iter_layers() if isinstance(layer, Embedding)}
        for k, layer in tables.items():
            table = rng.standard_normal((layer.vocab, layer.dim)).astype(self.dtype)
            if layer.padding_idx is not None:
                table[layer.padding_idx] = 0
            (self.buffers if layer.freeze else self.params)[k] = table
        for k, p in self.params.items():
            if k in tables:
                continue
            last = k.rsplit(".", 1)[-1]          # weight, bias; weight_ih_l0, bias_hh_l1_reverse (lstm, gru)
            if last.startswith("weight") and p.ndim > 1:
                self.params[k] = init_weight(p.shape, scheme, dist, rng, scale, dtype=self.dtype)
            elif last.startswith("bias"):
                self.params[k] = np.zeros_like(p)
            else:  # batchnorm weight
                self.params[k] = np.ones_like(p)
        for layer in self.iter_layers():
            if isinstance(layer, NonLocal):   # the paper's initialisation: the block starts as the identity
                self.params[layer.prefix + "bn.weight"] = np.zeros_like(self.params[layer.prefix + "bn.weight"])

    def set_dropout(self, *, freeze: bool | None = None, mask_override: Any = "keep") -> None:
        """Freeze dropout masks (reuse the last one) or set shared masks on every dropout layer."""
        for layer in self.iter_layers():
            if isinstance(layer, Dropout):
                if freeze is not None:
                    layer.freeze = freeze
                if not (isinstance(mask_override, str) and mask_override == "keep"):
                    layer.mask_override = mask_override

    def iter_layers(self):
        """Every layer, residual bodies and shortcuts and parallel branches included (depth first)."""
        def walk(layers):
            for layer in layers:
                yield layer
                if isinstance(layer, Parallel):
                    for branch in layer.branches:
                        yield from walk(branch)
                if isinstance(layer, Residual):
                    yield from walk(layer.body)
                    if layer.shortcut is not None:
                        yield layer.shortcut
                if isinstance(layer, NonLocal):
                    yield from (layer.out, layer.bn)
        yield from walk(self.layers)


def _check_supported(specs: list[LayerSpec]) -> None:
    for spec in specs:
        if spec.type not in SUPPORTED:
            raise UserError(f"layer {spec.index} ({spec.name}): type {spec.type!r} is not supported by "
                            f"train.engine=reference; supported: {', '.join(SUPPORTED)}")
        for sub in spec.sublists():
            _check_supported(sub)
