"""Shape arithmetic of convolution and pooling, in one place (pure Python: no torch, no NumPy).

Used by the layer-list parser (:mod:`cnnkit.spec`), the torch layers (:mod:`cnnkit.nn.layers`),
the NumPy reference engine, ``cnnkit summary`` and ``cnnkit explain``.

* output size: ``out = floor((in + p_before + p_after - d(k-1) - 1) / s) + 1`` (``ceil`` with
  ``ceil_mode``, as torch's pools);
* TF/Keras ``same`` padding, also for stride > 1: ``out = ceil(in / s)``,
  ``total = max((out - 1)*s + d(k-1) + 1 - in, 0)``, the odd pixel at the bottom/right;
* receptive field and cumulative stride ("jump") after a window:
  ``rf = rf_prev + (k-1)*d*jump_prev``, ``jump = jump_prev*s``.

Example::

    >>> conv_output_size(28, 5)
    24
    >>> same_padding(5, 3, 2), same_padding(6, 3, 2)      # the odd pixel goes bottom/right
    ((1, 1), (0, 1))
    >>> resolve_padding("same", (6, 5), (3, 3), stride=2)
    ((0, 1), (1, 1))
    >>> ReceptiveField().step((5, 5), (1, 1)).step((2, 2), (2, 2))
    ReceptiveField(rf=(6, 6), jump=(2, 2))
"""

from __future__ import annotations

import operator

from dataclasses import dataclass

Pair = tuple[int, int]


def pair(value, name: str | None = None) -> Pair:
    """``(a, b)`` from an int or a pair of ints; ``name`` goes into the error message.

    >>> pair(3), pair([2, 1])
    ((3, 3), (2, 1))
    """
    what = f"{name} must be an int or a pair" if name else "expected an int or a pair"
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"{what}, got {value!r}")
        return (_whole(value[0], what, value), _whole(value[1], what, value))
    n = _whole(value, what, value)
    return (n, n)


def _whole(v, what: str, given) -> int:
    """``v`` as an int when it is one (NumPy ints too); 2.5 or True are errors, never truncated."""
    if isinstance(v, bool):
        raise ValueError(f"{what}, got {given!r}")
    try:
        return operator.index(v)
    except TypeError:
        raise ValueError(f"{what}, got {given!r}") from None


def conv_output_size(in_size: int, kernel: int, stride: int = 1, pad_before: int = 0, pad_after: int = 0,
                     dilation: int = 1, *, ceil_mode: bool = False, check: bool = True) -> int:
    """Output length along one axis of a convolution or pooling window (torch's rule).

    out = floor((in + pad_before + pad_after - dilation*(kernel - 1) - 1) / stride) + 1.
    With ``ceil_mode`` (torch's pools) the division rounds up, but the last window must
    start inside the input or the left padding. A window larger than the padded input
    raises ValueError; with ``check=False`` the formula's value (< 1) is returned instead.

    >>> conv_output_size(32, 3, 2, 1, 1), conv_output_size(7, 3, dilation=2)
    (16, 3)
    >>> conv_output_size(5, 2, 2, ceil_mode=True)
    3
    """
    span = dilation * (kernel - 1) + 1
    padded = in_size + pad_before + pad_after
    if padded < span:
        if check:
            raise ValueError(f"kernel span {span} (kernel={kernel}, dilation={dilation}) is larger "
                             f"than the padded input {padded}")
        return (padded - span) // stride + 1
    if not ceil_mode:
        return (padded - span) // stride + 1
    out = -(-(padded - span) // stride) + 1
    if (out - 1) * stride >= in_size + pad_before:  # the last window would start in the right padding
        out -= 1
    return out


def same_output_size(in_size: int, stride: int = 1) -> int:
    """Output length of TF/Keras "same" padding: ceil(in / stride)."""
    return -(-in_size // stride)


def same_padding(in_size: int, kernel: int, stride: int = 1, dilation: int = 1) -> Pair:
    """``(before, after)`` zero padding of TF/Keras "same" along one axis, also for stride > 1.

    out = ceil(in / stride); total = max((out - 1)*stride + dilation*(kernel - 1) + 1 - in, 0);
    before = total // 2, after = total - before (the odd pixel on the bottom/right).
    For stride 1 this is torch's ``padding='same'``.

    >>> same_padding(5, 3, 2), same_padding(6, 3, 2), same_padding(7, 4, 1)
    ((1, 1), (0, 1), (1, 2))
    """
    out = same_output_size(in_size, stride)
    total = max((out - 1) * stride + dilation * (kernel - 1) + 1 - in_size, 0)
    before = total // 2
    return (before, total - before)


def resolve_padding(padding, in_hw, kernel_hw, stride=1, dilation=1) -> tuple[Pair, Pair]:
    """A padding spec as ``((top, bottom), (left, right))``.

    padding: an int, ``(ph, pw)``, ``((top, bottom), (left, right))``, ``"valid"`` or ``"same"``.
    """
    if isinstance(padding, str):
        mode = padding.lower()
        if mode == "valid":
            return ((0, 0), (0, 0))
        if mode == "same":
            sh, sw = pair(stride, "stride")
            dh, dw = pair(dilation, "dilation")
            return (same_padding(in_hw[0], kernel_hw[0], sh, dh), same_padding(in_hw[1], kernel_hw[1], sw, dw))
        raise ValueError(f"padding must be an int, a pair, 'valid' or 'same', got {padding!r}")
    if isinstance(padding, (tuple, list)) and len(padding) == 2 and all(isinstance(p, (tuple, list)) for p in padding):
        (t, b), (l, r) = padding
        return ((int(t), int(b)), (int(l), int(r)))
    ph, pw = pair(padding, "padding")
    return ((ph, ph), (pw, pw))


def conv2d_output_shape(in_hw, kernel_hw, stride=1, padding=0, dilation=1) -> Pair:
    """``(H', W')`` of a 2-D convolution or pooling with any padding spec (ValueError if it does not fit)."""
    sh, sw = pair(stride, "stride")
    dh, dw = pair(dilation, "dilation")
    (t, b), (l, r) = resolve_padding(padding, in_hw, kernel_hw, (sh, sw), (dh, dw))
    return (conv_output_size(in_hw[0], kernel_hw[0], sh, t, b, dh),
            conv_output_size(in_hw[1], kernel_hw[1], sw, l, r, dw))


def adaptive_pool_window(in_size: int, out_size: int) -> Pair:
    """``(kernel, stride)`` of an adaptive pool along one axis: kernel = ceil(in/out), stride = in/out.

    When ``out`` does not divide ``in`` the windows overlap and differ in size; the stride is then
    taken as the kernel (the receptive field is approximate). A global pool is ``out = 1``.

    >>> adaptive_pool_window(8, 1), adaptive_pool_window(14, 7), adaptive_pool_window(5, 2)
    ((8, 8), (2, 2), (3, 3))
    """
    kernel = -(-in_size // out_size)
    return kernel, (in_size // out_size if in_size % out_size == 0 else kernel)


# --------------------------------------------------------------------------- receptive field

def receptive_field_step(rf: int, jump: int, kernel: int, stride: int = 1, dilation: int = 1) -> Pair:
    """Receptive field and jump after one window along one axis.

    rf = rf_prev + (kernel - 1)*dilation*jump_prev; jump = jump_prev*stride.
    """
    return rf + (kernel - 1) * dilation * jump, jump * stride


@dataclass(frozen=True)
class ReceptiveField:
    """Receptive field and cumulative stride ("jump") along H and W; the input is ``rf 1, jump 1``."""

    rf: Pair = (1, 1)
    jump: Pair = (1, 1)
    extent: Pair | None = None  # after a flatten: the (H, W) of the map it flattened, which a dense layer sees whole

    def step(self, kernel, stride, dilation=(1, 1)) -> "ReceptiveField":
        """After a window of ``kernel`` (pairs) moved by ``stride`` with ``dilation``."""
        h = receptive_field_step(self.rf[0], self.jump[0], kernel[0], stride[0], dilation[0])
        w = receptive_field_step(self.rf[1], self.jump[1], kernel[1], stride[1], dilation[1])
        return ReceptiveField((h[0], w[0]), (h[1], w[1]))

    def flattened(self, hw) -> "ReceptiveField":
        """After a flatten of an (H, W) map: the same field, remembering the map's size."""
        return ReceptiveField(self.rf, self.jump, (int(hw[0]), int(hw[1])))

    def dense(self) -> "ReceptiveField":
        """After a dense layer: on a flattened map, every output sees all its positions (a window the
        size of the map, rf + (H - 1) * jump); on a vector, the field is already that of all its inputs."""
        if self.extent is None:
            return self
        return ReceptiveField(self.rf, self.jump).step(self.extent, (1, 1))

    def merge(self, other: "ReceptiveField") -> "ReceptiveField":
        """Where branches meet (a sum, a concat): the largest field and jump of each axis."""
        return ReceptiveField((max(self.rf[0], other.rf[0]), max(self.rf[1], other.rf[1])),
                              (max(self.jump[0], other.jump[0]), max(self.jump[1], other.jump[1])))

    def value(self, which: str = "rf") -> int | list[int]:
        """``rf`` or ``jump`` as one int when H and W agree, else ``[h, w]``."""
        v = self.rf if which == "rf" else self.jump
        return v[0] if v[0] == v[1] else list(v)


__all__ = ["pair", "conv_output_size", "same_output_size", "same_padding", "resolve_padding", "conv2d_output_shape",
           "adaptive_pool_window", "receptive_field_step", "ReceptiveField"]
