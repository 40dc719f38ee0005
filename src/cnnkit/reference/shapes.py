"""Shape arithmetic for convolutions and pooling (pure Python, no NumPy).

Shared by the NumPy reference engine and the torch layers.

Example::

    >>> conv_output_size(28, 5, stride=1)
    24
    >>> same_padding(5, 3, stride=2)      # out = ceil(5 / 2) = 3
    (1, 1)
    >>> same_padding(6, 3, stride=2)      # the odd pixel goes bottom/right
    (0, 1)
"""

from __future__ import annotations


def pair(value, name="value"):
    """Return ``(a, b)`` from an int or a pair of ints."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"{name} must be an int or a pair, got {value!r}")
        return (int(value[0]), int(value[1]))
    return (int(value), int(value))


def conv_output_size(in_size, kernel, stride=1, pad_before=0, pad_after=0, dilation=1):
    """Output length along one spatial dim (floor rule, like torch).

    out = floor((in + pad_before + pad_after - dilation * (kernel - 1) - 1) / stride) + 1
    """
    span = dilation * (kernel - 1) + 1
    padded = in_size + pad_before + pad_after
    if padded < span:
        raise ValueError(
            f"kernel span {span} (kernel={kernel}, dilation={dilation}) is larger "
            f"than the padded input {padded}"
        )
    return (padded - span) // stride + 1


def same_output_size(in_size, stride=1):
    """Output length of "same" padding: ceil(in / stride)."""
    return -(-in_size // stride)


def same_padding(in_size, kernel, stride=1, dilation=1):
    """``(before, after)`` zero padding for TF/Keras "same" along one dim.

    out = ceil(in / stride); total = max((out - 1) * stride + dilation * (kernel - 1) + 1 - in, 0);
    before = total // 2; after = total - before (odd pixel on the bottom/right).
    """
    out = same_output_size(in_size, stride)
    total = max((out - 1) * stride + dilation * (kernel - 1) + 1 - in_size, 0)
    before = total // 2
    return (before, total - before)


def resolve_padding(padding, in_hw, kernel_hw, stride=1, dilation=1):
    """Turn a padding spec into ``((top, bottom), (left, right))``.

    padding: int, ``(ph, pw)``, ``((top, bottom), (left, right))``, ``"valid"`` or ``"same"``.
    """
    if isinstance(padding, str):
        mode = padding.lower()
        if mode == "valid":
            return ((0, 0), (0, 0))
        if mode == "same":
            sh, sw = pair(stride, "stride")
            dh, dw = pair(dilation, "dilation")
            return (
                same_padding(in_hw[0], kernel_hw[0], sh, dh),
                same_padding(in_hw[1], kernel_hw[1], sw, dw),
            )
        raise ValueError(f"padding must be an int, a pair, 'valid' or 'same', got {padding!r}")
    if isinstance(padding, (tuple, list)) and len(padding) == 2 and all(
        isinstance(p, (tuple, list)) for p in padding
    ):
        (t, b), (l, r) = padding
        return ((int(t), int(b)), (int(l), int(r)))
    ph, pw = pair(padding, "padding")
    return ((ph, ph), (pw, pw))


def conv2d_output_shape(in_hw, kernel_hw, stride=1, padding=0, dilation=1):
    """``(H', W')`` of a 2-D convolution or pooling with any padding spec."""
    sh, sw = pair(stride, "stride")
    dh, dw = pair(dilation, "dilation")
    (t, b), (l, r) = resolve_padding(padding, in_hw, kernel_hw, (sh, sw), (dh, dw))
    return (
        conv_output_size(in_hw[0], kernel_hw[0], sh, t, b, dh),
        conv_output_size(in_hw[1], kernel_hw[1], sw, l, r, dw),
    )


__all__ = [
    "pair",
    "conv_output_size",
    "same_output_size",
    "same_padding",
    "resolve_padding",
    "conv2d_output_shape",
]

