"""Layer lists that spell a U-Net: layer names, conv_transpose, upsample, concat (with U-Net's centre
crop) and a per-pixel classifier head.

Oracles: the transposed-convolution formula out = (in - 1) s - 2 p + d (k - 1) + output_padding + 1
and U-Net's shapes worked out by hand; torch.nn.functional (conv_transpose2d, interpolate, cat) on
the same fixed weights; np.kron (a transposed convolution whose stride equals its kernel paints one
scaled kernel per pixel; nearest x2 upsampling repeats each pixel in a 2x2 block); crops indexed by
hand; torch autograd and central finite differences for the NumPy reference engine's backward.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from torch import nn

from cnnkit.config import validate
from cnnkit.errors import SpecError, UserError
from cnnkit.models import build_torch, create_model, infer_shapes, parse_layers
from cnnkit.nn.layers import Concat
from cnnkit.reference.conv import conv_transpose2d, conv_transpose2d_backward
from cnnkit.reference.gradcheck import max_normalized_error, numerical_gradient
from cnnkit.reference.network import ReferenceNet
from cnnkit.reference.resize import crop_concat, crop_concat_backward, upsample2d, upsample2d_backward
from cnnkit.summary import summarize


def shapes(layers, input_shape, num_classes=None):
    return infer_shapes(parse_layers(layers), input_shape, num_classes)


def unet_layers(padding: str, width: int = 4, bn: bool = False) -> list:
    """A depth-2 U-Net: two 3x3 convolutions per level, 2x2 max pooling, 2x2 up-convolutions,
    concatenation with the contracting path's maps (named enc1, enc2) and a 1x1 classifier."""

    def double(n, name):
        conv = {"conv": {"out": n, "kernel": 3, "padding": padding, "bias": not bn}}
        block = [conv] + (["batchnorm"] if bn else []) + ["relu", conv] + (["batchnorm"] if bn else [])
        return block + [{"relu": None, "name": name} if name else "relu"]

    return (double(width, "enc1") + [{"maxpool": 2}] + double(2 * width, "enc2") + [{"maxpool": 2}]
            + double(4 * width, None)
            + [{"upconv": 2 * width}, {"concat": "enc2"}] + double(2 * width, None)
            + [{"upconv": width}, {"concat": "enc1"}] + double(width, None)
            + [{"conv": {"out": "num_classes", "kernel": 1}}])


def module_output_shapes(net: nn.Module, x: torch.Tensor) -> dict[str, tuple]:
    """The real output shape (without the batch axis) of each top-level module, by name."""
    seen = {}

    def hook(name):
        def record(module, inputs, output):
            seen[name] = tuple(output.shape[1:])
        return record

    handles = [m.register_forward_hook(hook(n)) for n, m in net.named_children()]
    with torch.no_grad():
        net(x)
    for h in handles:
        h.remove()
    return seen


# --------------------------------------------------------------------------- parsing: names


def test_a_name_is_a_second_key_or_an_argument_and_renames_no_other_layer():
    specs = parse_layers([{"conv": 4, "name": "enc1"}, "relu", {"maxpool": {"kernel": 2, "name": "down1"}},
                          {"conv": 8}, {"relu": {"name": "enc2"}}, {"concat": "enc2"}])
    assert [s.name for s in specs] == ["enc1", "relu1", "down1", "conv2", "enc2", "concat1"]
    assert specs[0].args["out"] == 4 and specs[2].args["kernel"] == (2, 2)
    net = build_torch(specs, (1, 8, 8))
    assert list(net._modules) == ["enc1", "relu1", "down1", "conv2", "enc2", "concat1"]
    assert isinstance(net.concat1, Concat) and net.concat1.source == "enc2"


def test_defaults_shorthands_and_aliases_of_the_new_layers():
    up, ups, ups2, cat, ct = parse_layers([{"upconv": 8}, {"upsample": 3}, "upsampling",
                                           {"concatenate": "conv_transpose1"},
                                           {"conv_transpose2d": {"out": 2, "padding": "same", "kernel": 3}}])
    assert up.type == "conv_transpose" and up.args == {"out": 8, "kernel": (2, 2), "stride": (2, 2), "padding": (0, 0),
                                                       "output_padding": (0, 0), "dilation": (1, 1), "bias": True}
    assert ups.args == {"scale": (3, 3), "size": None, "mode": "nearest", "align_corners": False}
    assert ups2.type == "upsample" and ups2.args["scale"] == (2, 2)   # neither scale nor size: x2
    assert cat.type == "concat" and cat.args == {"from": "conv_transpose1"}
    assert ct.type == "conv_transpose" and ct.args["padding"] == "same"


@pytest.mark.parametrize("layers, must_contain", [
    ([{"conv": 4, "name": "a"}, {"conv": 4, "name": "a"}], ["layer 1", "'a'", "already", "layer 0", "unique"]),
    ([{"conv": 4, "name": "relu"}], ["layer 0", "'relu'", "layer type"]),
    ([{"conv": 4, "name": "bn"}], ["layer 0", "'bn'", "layer type"]),
    ([{"conv": 4, "name": "conv3"}], ["layer 0", "'conv3'", "automatic name"]),
    ([{"conv": 4, "name": "enc.1"}], ["layer 0", "'enc.1'", "letters, digits and _"]),
    ([{"conv": 4, "name": 7}], ["layer 0", "7", "letters, digits and _"]),
    ([{"conv": {"out": 4, "name": "a"}, "name": "b"}], ["layer 0", "name given twice", "'a'", "'b'"]),
    ([{"conv": 4, "nam": "a"}], ["layer 0", "not a layer", "name key"]),
    ([{"conv": 4, "name": "enc1"}, {"concat": "enc2"}], ["layer 1 (concat)", "'enc2'", "names no layer",
                                                           "did you mean 'enc1'", "earlier layers of this list: enc1"]),
    ([{"conv": 4}, {"concat": "later"}, {"relu": {"name": "later"}}], ["layer 1 (concat)", "'later'", "layer 2",
                                                                        "comes after"]),
    ([{"conv": 4, "name": "outer"}, {"residual": [{"conv": {"out": 4, "padding": "same"}}, {"concat": "outer"}]}],
     ["layer 1.1 (concat)", "'outer'", "layer 0", "another layer list"]),
    ([{"concat": {"from": ""}}], ["layer 0 (concat)", "from", "earlier layer"]),
    ([{"upsample": {"scale": 2, "size": 8}}], ["layer 0 (upsample)", "scale or size, not both"]),
    ([{"upsample": 1.5}], ["layer 0 (upsample)", "scale", "1.5"]),
    ([{"upsample": {"size": [4, 0]}}], ["layer 0 (upsample)", "size", "positive"]),
    ([{"upsample": {"mode": "bilnear"}}], ["layer 0 (upsample)", "'bilnear'", "did you mean 'bilinear'", "nearest"]),
    ([{"upsample": {"align_corners": True}}], ["layer 0 (upsample)", "align_corners", "bilinear", "'nearest'"]),
    ([{"upsample": {"mode": "bilinear", "align_corners": "yes"}}], ["layer 0 (upsample)", "align_corners", "'yes'"]),
    ([{"upconv": {"out": 4, "padding": "full"}}], ["layer 0 (conv_transpose)", "'full'", "valid", "same"]),
    ([{"upconv": {"out": 4, "output_padding": 2}}], ["layer 0 (conv_transpose)", "output_padding (2, 2)",
                                                     "stride (2, 2)"]),
    ([{"upconv": {"out": 4, "padding": "same", "output_padding": 1}}], ["layer 0 (conv_transpose)", "output_padding"]),
    ([{"upconv": {"out": 4, "kernel": 2, "stride": 1, "padding": "same"}}], ["layer 0 (conv_transpose)", "'same'",
                                                                            "odd kernel"]),
    ([{"upconv": {"out": "classes"}}], ["layer 0 (conv_transpose)", "'classes'", "num_classes"]),
    ([{"upconv": {"out": 4, "groups": 2}}], ["layer 0 (conv_transpose)", "'groups'", "output_padding", "name"]),
])
def test_parse_errors_name_the_layer_the_bad_value_and_what_is_allowed(layers, must_contain):
    with pytest.raises(SpecError) as e:
        parse_layers(layers)
    assert isinstance(e.value, UserError)
    msg = str(e.value)
    for part in must_contain:
        assert part in msg, (part, msg)


def test_a_name_taken_by_the_torch_module_is_refused_when_building():
    specs = parse_layers([{"conv": 4, "name": "train"}])
    with pytest.raises(SpecError, match=r"layer 0 \(conv 'train'\): name 'train' is taken"):
        build_torch(specs, (1, 8, 8))


@pytest.mark.parametrize("layers, in_shape, must_contain", [
    # the earlier map is smaller than the current one: it cannot be cropped to it
    ([{"conv": {"out": 2, "kernel": 3}, "name": "small"}, {"upconv": 2}, {"concat": "small"}], (1, 8, 8),
     ["layer 2 (concat)", "'small'", "2x6x6", "2x12x12", "smaller"]),
    (["flatten", {"concat": "flatten1"}], (1, 4, 4), ["layer 1 (concat)", "feature map", "16"]),
    (["flatten", {"upconv": 4}], (1, 4, 4), ["layer 1 (conv_transpose)", "feature map", "16"]),
    (["flatten", "upsample"], (1, 4, 4), ["layer 1 (upsample)", "feature map"]),
    ([{"upconv": {"out": 2, "kernel": 2, "stride": 1, "padding": 1}}], (1, 1, 1),
     ["layer 0 (conv_transpose)", "padding (1, 1)", "1x1x1", "0x0"]),
    ([{"conv": {"out": "num_classes", "kernel": 1}}], (1, 4, 4), ["layer 0 (conv)", "num_classes", "class count"]),
])
def test_shape_errors_name_the_layer_and_the_shapes(layers, in_shape, must_contain):
    with pytest.raises(SpecError) as e:
        build_torch(parse_layers(layers), in_shape)
    msg = str(e.value)
    for part in must_contain:
        assert part in msg, (part, msg)


# --------------------------------------------------------------------------- shapes


def transposed_size(n, k, s, p, op, d):
    return (n - 1) * s - 2 * p + d * (k - 1) + op + 1


@pytest.mark.parametrize("args, in_hw, want_hw", [
    ({"out": 3}, (5, 4), (10, 8)),                                                    # U-Net's 2x2/2 up-conv
    ({"out": 3, "kernel": 3, "stride": 2, "padding": 1, "output_padding": 1}, (5, 4), (10, 8)),
    ({"out": 3, "kernel": 4, "stride": 2, "padding": 1}, (5, 4), (10, 8)),            # DCGAN's
    ({"out": 3, "kernel": 3, "stride": 1, "padding": "same"}, (5, 4), (5, 4)),
    ({"out": 3, "kernel": 3, "stride": 2, "padding": "same"}, (5, 4), (10, 8)),
    ({"out": 3, "kernel": 4, "stride": 2, "padding": "same"}, (5, 4), (10, 8)),
    ({"out": 3, "kernel": 1, "stride": 3, "padding": "same"}, (5, 4), (15, 12)),
    ({"out": 3, "kernel": 3, "stride": 2, "dilation": 2}, (5, 4), (13, 11)),
    ({"out": 3, "kernel": [2, 3], "stride": [2, 1], "padding": [0, 1]}, (5, 4), (10, 4)),
    ({"out": 3, "kernel": 3, "stride": 3, "padding": 0, "output_padding": [2, 1]}, (5, 4), (17, 13)),
])
def test_conv_transpose_shape_is_the_formula_and_the_torch_module(args, in_hw, want_hw):
    if isinstance(args.get("padding"), str):
        pass  # 'same': out = in * stride, by definition
    else:
        k, s = args.get("kernel", 2), args.get("stride", 2)
        k, s = (k, k) if isinstance(k, int) else k, (s, s) if isinstance(s, int) else s
        p = args.get("padding", 0)
        p = (p, p) if isinstance(p, int) else p
        op = args.get("output_padding", 0)
        op = (op, op) if isinstance(op, int) else op
        d = args.get("dilation", 1)
        assert want_hw == tuple(transposed_size(in_hw[a], k[a], s[a], p[a], op[a], d) for a in range(2))
    assert shapes([{"conv_transpose": args}], (2, *in_hw)) == [(3, *want_hw)]
    net = build_torch(parse_layers([{"conv_transpose": args}]), (2, *in_hw))
    assert tuple(net(torch.randn(1, 2, *in_hw)).shape[1:]) == (3, *want_hw)


@pytest.mark.parametrize("layer, in_shape, out_shape", [
    ("upsample", (3, 5, 4), (3, 10, 8)),
    ({"upsample": [3, 2]}, (3, 5, 4), (3, 15, 8)),
    ({"upsample": {"size": 7, "mode": "bilinear"}}, (3, 5, 4), (3, 7, 7)),
    ({"upsample": {"size": [3, 9], "mode": "bilinear", "align_corners": True}}, (3, 5, 4), (3, 3, 9)),
])
def test_upsample_shape_matches_the_torch_module(layer, in_shape, out_shape):
    assert shapes([layer], in_shape) == [out_shape]
    net = build_torch(parse_layers([layer]), in_shape)
    assert tuple(net(torch.randn(2, *in_shape)).shape[1:]) == out_shape


@pytest.mark.parametrize("padding, side, hand", [
    # same: every map keeps its size, each pooling halves it, each up-conv doubles it
    ("same", 16, {"enc1": (4, 16, 16), "maxpool1": (4, 8, 8), "enc2": (8, 8, 8), "maxpool2": (8, 4, 4),
                  "relu6": (16, 4, 4), "conv_transpose1": (8, 8, 8), "concat1": (16, 8, 8),
                  "conv_transpose2": (4, 16, 16), "concat2": (8, 16, 16), "conv11": (3, 16, 16)}),
    # valid (the paper's): 68 -conv-conv-> 64 -pool-> 32 -> 28 -pool-> 14 -> 10 -up-> 20, joined with
    # enc2 (28, cropped to 20) -> 16 -up-> 32, joined with enc1 (64, cropped to 32) -> 28 -1x1-> 28
    ("valid", 68, {"enc1": (4, 64, 64), "maxpool1": (4, 32, 32), "enc2": (8, 28, 28), "maxpool2": (8, 14, 14),
                   "relu6": (16, 10, 10), "conv_transpose1": (8, 20, 20), "concat1": (16, 20, 20),
                   "relu8": (8, 16, 16), "conv_transpose2": (4, 32, 32), "concat2": (8, 32, 32),
                   "conv11": (3, 28, 28)}),
])
def test_unet_shapes_by_hand_and_equal_to_the_torch_modules(padding, side, hand):
    specs = parse_layers(unet_layers(padding))
    inferred = dict(zip([s.name for s in specs], infer_shapes(specs, (1, side, side), 3)))
    for name, shape in hand.items():
        assert inferred[name] == shape, name
    torch.manual_seed(0)
    net = build_torch(specs, (1, side, side), 3)
    assert module_output_shapes(net, torch.randn(2, 1, side, side)) == inferred


# --------------------------------------------------------------------------- the layers against torch.nn.functional


@pytest.mark.parametrize("args", [
    {"out": 3, "kernel": 2, "stride": 2},
    {"out": 3, "kernel": 3, "stride": 2, "padding": 1, "output_padding": 1, "bias": False},
    {"out": 3, "kernel": 4, "stride": 2, "padding": "same"},
    {"out": 3, "kernel": [3, 2], "stride": [1, 3], "padding": [1, 0], "output_padding": [0, 2], "dilation": [2, 1]},
])
def test_conv_transpose_matches_functional_and_the_reference_op_on_fixed_weights(args):
    spec = parse_layers([{"conv_transpose": args}])
    net = build_torch(spec, (2, 5, 4)).double()
    w = torch.linspace(-1, 1, net.conv_transpose1.weight.numel(), dtype=torch.float64).reshape(
        net.conv_transpose1.weight.shape)
    b = torch.tensor([0.5, -0.25, 1.0], dtype=torch.float64) if net.conv_transpose1.bias is not None else None
    with torch.no_grad():
        net.conv_transpose1.weight.copy_(w)
        if b is not None:
            net.conv_transpose1.bias.copy_(b)
    x = torch.randn(2, 2, 5, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    m = net.conv_transpose1
    want = F.conv_transpose2d(x, w, b, m.stride, m.padding, m.output_padding, 1, m.dilation)
    with torch.no_grad():
        torch.testing.assert_close(net(x), want)
    got, _ = conv_transpose2d(x.numpy(), w.numpy(), None if b is None else b.numpy(), m.stride, m.padding,
                              m.output_padding, m.dilation)
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-12, atol=1e-12)


def test_a_transposed_convolution_with_stride_equal_to_its_kernel_paints_one_kernel_per_pixel():
    x = np.array([[1.0, 2.0], [3.0, -1.0]])
    k = np.array([[1.0, 10.0, 0.0], [2.0, 0.5, -3.0]])
    y, _ = conv_transpose2d(x[None, None], k[None, None], stride=(2, 3))
    np.testing.assert_array_equal(y[0, 0], np.kron(x, k))
    torch.testing.assert_close(F.conv_transpose2d(torch.tensor(x)[None, None], torch.tensor(k)[None, None],
                                                  stride=(2, 3))[0, 0], torch.tensor(np.kron(x, k)))


@pytest.mark.parametrize("layer, in_hw", [
    ({"upsample": 2}, (5, 4)),
    ({"upsample": [3, 2]}, (5, 4)),
    ({"upsample": {"size": [7, 10]}}, (5, 4)),                         # ratios 1.4 and 2.5
    ({"upsample": {"size": [3, 9]}}, (5, 4)),                          # smaller on one axis
    ({"upsample": {"mode": "bilinear"}}, (5, 4)),
    ({"upsample": {"scale": 3, "mode": "bilinear"}}, (5, 4)),
    ({"upsample": {"size": [7, 10], "mode": "bilinear"}}, (5, 4)),
    ({"upsample": {"size": [7, 10], "mode": "bilinear", "align_corners": True}}, (5, 4)),
    ({"upsample": {"size": [1, 10], "mode": "bilinear", "align_corners": True}}, (5, 4)),
])
def test_upsample_matches_interpolate_and_the_reference_op(layer, in_hw):
    spec = parse_layers([layer])[0]
    a = spec.args
    x = torch.randn(2, 3, *in_hw, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    size = a["size"] if a["size"] is not None else (in_hw[0] * a["scale"][0], in_hw[1] * a["scale"][1])
    ac = a["align_corners"] if a["mode"] == "bilinear" else None
    want = F.interpolate(x, size=size, mode=a["mode"], align_corners=ac)
    net = build_torch([spec], (3, *in_hw))
    torch.testing.assert_close(net(x), want)
    got, _ = upsample2d(x.numpy(), size, a["mode"], a["align_corners"])
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-12, atol=1e-12)


def test_nearest_x2_repeats_each_pixel_and_its_gradient_sums_the_block():
    x = np.arange(6.0).reshape(1, 1, 2, 3)
    y, cache = upsample2d(x, (4, 6), "nearest")
    np.testing.assert_array_equal(y[0, 0], np.kron(x[0, 0], np.ones((2, 2))))
    dy = np.arange(24.0).reshape(1, 1, 4, 6)
    dx = upsample2d_backward(dy, cache)
    np.testing.assert_array_equal(dx[0, 0], dy[0, 0].reshape(2, 2, 3, 2).sum(axis=(1, 3)))


def test_concat_crops_the_earlier_map_to_its_centre_by_hand():
    skip = torch.arange(2 * 7 * 6, dtype=torch.float64).reshape(1, 2, 7, 6)
    x = -torch.ones(1, 3, 4, 4, dtype=torch.float64)
    y = Concat("enc1")(x, skip)
    assert y.shape == (1, 5, 4, 4)
    torch.testing.assert_close(y[:, :3], x)                     # the current map's channels come first
    # 7 -> 4: 3 rows go, 1 on top and 2 at the bottom; 6 -> 4: 1 column on each side
    assert y[0, 3, 0].tolist() == [7.0, 8.0, 9.0, 10.0]          # skip row 1, columns 1..4
    assert y[0, 3, 3].tolist() == [25.0, 26.0, 27.0, 28.0]       # skip row 4
    assert y[0, 4, 0, 0].item() == 42 + 7                        # second channel starts at 42
    torch.testing.assert_close(y, torch.cat([x, skip[:, :, 1:5, 1:5]], dim=1))
    ref, _ = crop_concat(x.numpy(), skip.numpy())
    np.testing.assert_array_equal(ref, y.numpy())


# --------------------------------------------------------------------------- the reference engine's backward


def _torch_grads(fn, *tensors, seed=1):
    leaves = [t.clone().requires_grad_(True) for t in tensors]
    out = fn(*leaves)
    dy = torch.randn(out.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    out.backward(dy)
    return dy.numpy(), [leaf.grad.numpy() for leaf in leaves]


@pytest.mark.parametrize("stride, padding, output_padding, dilation", [
    ((2, 2), (0, 0), (0, 0), (1, 1)), ((2, 3), (1, 0), (1, 2), (1, 1)), ((1, 2), (1, 1), (0, 1), (2, 1)),
])
def test_conv_transpose_backward_matches_autograd_and_finite_differences(stride, padding, output_padding, dilation):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 4, 5, dtype=torch.float64, generator=g)
    w = torch.randn(3, 2, 3, 2, dtype=torch.float64, generator=g)
    b = torch.randn(2, dtype=torch.float64, generator=g)
    dy, (gx, gw, gb) = _torch_grads(
        lambda x, w, b: F.conv_transpose2d(x, w, b, stride, padding, output_padding, 1, dilation), x, w, b)
    y, cache = conv_transpose2d(x.numpy(), w.numpy(), b.numpy(), stride, padding, output_padding, dilation)
    dx, dw, db = conv_transpose2d_backward(dy, cache)
    for got, want in ((dx, gx), (dw, gw), (db, gb)):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)
    xs, ws = x.numpy().copy(), w.numpy().copy()
    loss_x = lambda v: float((conv_transpose2d(v, ws, b.numpy(), stride, padding, output_padding, dilation)[0] * dy).sum())
    loss_w = lambda v: float((conv_transpose2d(xs, v, b.numpy(), stride, padding, output_padding, dilation)[0] * dy).sum())
    assert max_normalized_error(numerical_gradient(loss_x, xs), dx) < 1e-7
    assert max_normalized_error(numerical_gradient(loss_w, ws), dw) < 1e-7


@pytest.mark.parametrize("size, mode, align_corners", [
    ((8, 10), "nearest", False), ((7, 9), "nearest", False), ((8, 10), "bilinear", False),
    ((7, 11), "bilinear", False), ((7, 11), "bilinear", True), ((3, 4), "bilinear", False),
])
def test_upsample_backward_matches_autograd_and_finite_differences(size, mode, align_corners):
    x = torch.randn(2, 3, 4, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    ac = align_corners if mode == "bilinear" else None
    dy, (gx,) = _torch_grads(lambda x: F.interpolate(x, size=size, mode=mode, align_corners=ac), x)
    _, cache = upsample2d(x.numpy(), size, mode, align_corners)
    dx = upsample2d_backward(dy, cache)
    np.testing.assert_allclose(dx, gx, rtol=1e-12, atol=1e-12)
    xs = x.numpy().copy()
    numeric = numerical_gradient(lambda v: float((upsample2d(v, size, mode, align_corners)[0] * dy).sum()), xs)
    assert max_normalized_error(numeric, dx) < 1e-8


def test_crop_concat_backward_matches_autograd():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 4, 5, dtype=torch.float64, generator=g)
    skip = torch.randn(2, 2, 9, 6, dtype=torch.float64, generator=g)
    dy, (gx, gskip) = _torch_grads(lambda x, s: Concat("s")(x, s), x, skip)
    _, cache = crop_concat(x.numpy(), skip.numpy())
    dx, dskip = crop_concat_backward(dy, cache)
    np.testing.assert_array_equal(dx, gx)
    np.testing.assert_array_equal(dskip, gskip)
    assert dskip[:, :, :2].sum() == 0 and dskip[:, :, 6:].sum() == 0   # rows 0-1 and 6-8 were cropped away


@pytest.mark.parametrize("padding, side", [("same", 16), ("valid", 68)])
def test_reference_unet_matches_torch_forward_and_every_gradient(padding, side):
    torch.manual_seed(0)
    specs = parse_layers(unet_layers(padding, bn=True))
    tnet = build_torch(specs, (2, side, side), 3).double().train()
    ref = ReferenceNet(specs, (2, side, side), 3, dtype=np.float64)
    ref.load_state_dict(tnet.state_dict())
    assert list(ref.state_dict()) == list(tnet.state_dict())
    x = torch.randn(2, 2, side, side, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    y = tnet(x)
    dy = torch.randn(y.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    y.backward(dy)
    got = ref.forward(x.numpy(), training=True)
    np.testing.assert_allclose(got, y.detach().numpy(), rtol=1e-10, atol=1e-10)
    grads = ref.backward(dy.numpy(), need_input_grad=True)
    scale = max(np.abs(p.grad.numpy()).max() for p in tnet.parameters())
    for name, p in tnet.named_parameters():   # (a bias before a batchnorm has a gradient of ~0: atol)
        np.testing.assert_allclose(grads[name], p.grad.numpy(), rtol=1e-9, atol=1e-12 * scale, err_msg=name)


# --------------------------------------------------------------------------- the per-pixel classifier head


def test_a_final_conv_with_num_classes_is_the_head_and_the_net_gives_per_pixel_scores():
    torch.manual_seed(0)
    net = build_torch(parse_layers(unet_layers("same")), (1, 16, 16), 5).eval()
    x = torch.randn(2, 1, 16, 16)
    assert net(x).shape == (2, 5, 16, 16)
    assert net.head_name == "conv11" and net.get_classifier() is net.conv11
    feats = net.forward_features(x)
    assert feats.shape == (2, 4, 16, 16)
    w, b = net.conv11.weight[:, :, 0, 0], net.conv11.bias
    torch.testing.assert_close(net(x), torch.einsum("kc,nchw->nkhw", w, feats) + b[None, :, None, None])
    before = net.conv1.weight.detach().clone()
    net.reset_classifier(2)
    assert net(x).shape == (2, 2, 16, 16) and net.conv11.kernel_size == (1, 1)
    torch.testing.assert_close(net.conv1.weight, before)
    torch.testing.assert_close(net.forward_features(x), feats)


def test_a_final_conv_with_a_fixed_width_is_not_a_head():
    net = build_torch(parse_layers([{"conv": {"out": 4, "padding": "same"}}, {"conv": {"out": 3, "kernel": 1}}]),
                      (1, 8, 8), 3)
    assert net.head_name is None and net(torch.randn(1, 1, 8, 8)).shape == (1, 3, 8, 8)


def test_geometry_questions_of_the_segmentation_task():
    same = build_torch(parse_layers(unet_layers("same")), (1, 16, 16), 3)
    assert same.pad_multiple == 4                                   # two 2x2 poolings
    assert same.output_size(32) == 32 and same.input_size_for(16) == 16
    valid = build_torch(parse_layers(unet_layers("valid")), (1, 68, 68), 3)
    assert valid.pad_multiple == 4
    assert valid.output_size(68) == 28 and valid.input_size_for(28) == 68
    assert valid.input_size_for(25) == 68                            # the smallest input with >= 25 outputs
    assert valid.output_size(72) == 32                               # valid outputs come every 4 pixels
    with torch.no_grad():
        assert valid(torch.zeros(1, 1, 72, 72)).shape == (1, 3, 32, 32)
    with pytest.raises(SpecError, match="vector"):
        build_torch(parse_layers(["flatten", {"dense": 2}]), (1, 4, 4)).output_size(4)


# --------------------------------------------------------------------------- the summary


def test_summary_lists_the_new_layers_with_their_shapes_params_and_macs():
    specs = parse_layers(unet_layers("same"))
    net = build_torch(specs, (1, 16, 16), 3)
    s = summarize(net, (1, 16, 16))
    assert s.rf_method == "graph"                                   # torch.fx traces the skip connections
    rows = {r.name: r for r in s.layers}
    inferred = dict(zip([sp.name for sp in specs], infer_shapes(specs, (1, 16, 16), 3)))
    assert [r.name for r in s.layers] == [sp.name for sp in specs]
    for name in ("conv_transpose1", "concat1", "conv_transpose2", "concat2", "conv11"):
        assert tuple(rows[name].output_shape) == inferred[name], name
    assert (rows["conv_transpose1"].type, rows["concat2"].type) == ("ConvTranspose2d", "Concat")
    # up-conv 16 -> 8 channels, 2x2 kernel, on a 4x4 map: (16*8*2*2 + 8) parameters, 16*8*2*2*4*4 MACs
    assert rows["conv_transpose1"].params == 16 * 8 * 4 + 8
    assert rows["conv_transpose1"].macs == 16 * 8 * 4 * 4 * 4
    assert rows["concat1"].params == 0 and rows["concat1"].macs == 0
    # the encoder's fields are known (3x3 convs: 3, 5; pool: 6, jump 2; convs: 10, 14; pool: 16, jump 4);
    # past an up-conv the stride is a fraction: shown as unknown
    assert (rows["maxpool2"].receptive_field, rows["maxpool2"].stride) == (16, 4)
    assert rows["conv_transpose1"].receptive_field is None and rows["conv11"].stride is None
    text = s.to_text()
    assert "conv_transpose1  ConvTranspose2d  8x8x8" in text and "concat2          Concat           8x16x16" in text
    assert "output: 3x16x16" in text


def test_upsample_appears_in_the_summary():
    net = build_torch(parse_layers([{"conv": {"out": 2, "padding": "same"}, "name": "a"},
                                    {"upsample": {"scale": 2, "mode": "bilinear"}}, {"maxpool": 2},
                                    {"concat": "a"}]), (1, 6, 6))
    rows = {r.name: r for r in summarize(net, (1, 6, 6)).layers}
    assert rows["upsample1"].type == "Upsample" and rows["upsample1"].output_shape == [2, 12, 12]
    assert rows["concat1"].output_shape == [4, 6, 6]


# --------------------------------------------------------------------------- a U-Net in YAML

UNET_YAML = """
model:
  input: [1, 64, 64]
  layers:
    # contracting path: two 3x3 convolutions per level; the maps the decoder joins are named
    - conv: {out: 16, padding: same}
    - relu
    - conv: {out: 16, padding: same}
    - relu: {name: enc1}
    - maxpool: 2
    - conv: {out: 32, padding: same}
    - relu
    - conv: {out: 32, padding: same}
    - relu: {name: enc2}
    - maxpool: 2
    # bottom
    - conv: {out: 64, padding: same}
    - relu
    - conv: {out: 64, padding: same}
    - relu
    # expanding path: a 2x2 up-convolution (stride 2) halves the channels, then the skip is joined
    - upconv: 32
    - concat: enc2
    - conv: {out: 32, padding: same}
    - relu
    - conv: {out: 32, padding: same}
    - relu
    - upconv: 16
    - concat: enc1
    - conv: {out: 16, padding: same}
    - relu
    - conv: {out: 16, padding: same}
    - relu
    # per-pixel classifier: a 1x1 convolution to the data's class count
    - {conv: {out: num_classes, kernel: 1}, name: classify}
"""


def test_a_unet_spelt_in_yaml_builds_and_gives_per_pixel_scores():
    cfg = validate(yaml.safe_load(UNET_YAML))
    torch.manual_seed(0)
    model = create_model(cfg.model, tuple(cfg.model.input), 2)
    assert model.head_name == "classify"
    with torch.no_grad():
        y = model(torch.randn(3, 1, 64, 64))
    assert y.shape == (3, 2, 64, 64)
    specs = parse_layers(cfg.model.layers)
    assert infer_shapes(specs, (1, 64, 64), 2)[-1] == (2, 64, 64)
    # 2 x (3x3 conv) per level + two up-convs + the 1x1 classifier, parameters by hand
    conv = lambda cin, cout, k: cin * cout * k * k + cout
    want = (conv(1, 16, 3) + conv(16, 16, 3) + conv(16, 32, 3) + conv(32, 32, 3) + conv(32, 64, 3) + conv(64, 64, 3)
            + conv(64, 32, 2) + conv(64, 32, 3) + conv(32, 32, 3) + conv(32, 16, 2) + conv(32, 16, 3)
            + conv(16, 16, 3) + conv(16, 2, 1))
    assert sum(p.numel() for p in model.parameters()) == want
