"""Batched and per-sample augmentation: each op checked against its definition."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from cnnkit.config import AugmentConfig
from cnnkit.data.augment import make_batch_augment, make_transforms

torch.set_num_threads(1)


def _batch(n: int = 16, c: int = 3, h: int = 10, w: int = 12, lo: int = 1, hi: int = 256,
           seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(lo, hi, (n, c, h, w), generator=g).float()


def _shift(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """``x`` (C, H, W) moved by (dy, dx) with zero fill: out[y, x] = in[y - dy, x - dx]."""
    p = max(abs(dy), abs(dx))
    h, w = x.shape[-2:]
    padded = F.pad(x, (p, p, p, p))
    return padded[..., p - dy:p - dy + h, p - dx:p - dx + w]


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_inactive_config_gives_none() -> None:
    assert make_batch_augment(AugmentConfig()) is None
    assert make_batch_augment(None) is None
    assert make_transforms(AugmentConfig()) is None


def test_crop_is_a_zero_filled_shift_within_padding() -> None:
    p = 3
    x = _batch(n=40)
    aug = make_batch_augment(AugmentConfig(crop_padding=p))
    out = aug(x, _gen())
    assert out.shape == x.shape
    seen = set()
    for i in range(len(x)):
        hits = [(dy, dx) for dy in range(-p, p + 1) for dx in range(-p, p + 1)
                if torch.equal(out[i], _shift(x[i], dy, dx))]
        assert len(hits) == 1, f"sample {i} is not a shift of its input within ±{p}"
        seen.add(hits[0])
    assert len(seen) > 10  # shifts really vary per sample


def test_crop_with_a_wrong_padding_would_fail() -> None:
    # The check above can fail: a shift by p + 1 is not found among shifts up to p.
    x = _batch(n=1)[0]
    moved = _shift(x, 4, 0)
    assert not any(torch.equal(moved, _shift(x, dy, dx)) for dy in range(-3, 4) for dx in range(-3, 4))


def test_hflip_flips_about_half() -> None:
    n = 2000
    x = _batch(n=n, c=1, h=2, w=5)
    out = make_batch_augment(AugmentConfig(hflip=True))(x, _gen(1))
    flipped = torch.tensor([torch.equal(o, xi.flip(-1)) for o, xi in zip(out, x)])
    same = torch.tensor([torch.equal(o, xi) for o, xi in zip(out, x)])
    assert bool((flipped | same).all())  # each sample is either flipped or untouched
    k = int(flipped.sum())
    sd = math.sqrt(n * 0.25)
    assert abs(k - n / 2) < 5 * sd  # binomial(2000, 0.5): 1000 ± 112 at 5 sigma


def test_rotation_zero_is_identity_and_symmetric_image_is_kept() -> None:
    x = _batch(n=4, h=9, w=9)
    # rotation=0 is "inactive"; the op itself with 0 degrees must be the identity
    from cnnkit.data.augment import random_rotation

    theta0 = random_rotation(x, 1e-9, _gen())
    assert torch.allclose(theta0, x, atol=1e-3)
    # A round blob centred in the image looks the same at any angle (up to bilinear resampling);
    # the same blob half a pixel off centre moves by far more, so this checks the centre too.
    h = w = 33
    yy, xx = torch.meshgrid(torch.arange(h) - 16.0, torch.arange(w) - 16.0, indexing="ij")
    blob = (200.0 * torch.exp(-(yy ** 2 + xx ** 2) / 32.0)).expand(8, 3, h, w).clone()
    out = make_batch_augment(AugmentConfig(rotation=90))(blob, _gen(2))
    assert out.shape == blob.shape
    assert float((out - blob).abs().max()) < 5.0
    off = (200.0 * torch.exp(-((yy - 0.5) ** 2 + xx ** 2) / 32.0)).expand(8, 3, h, w).clone()
    assert float((make_batch_augment(AugmentConfig(rotation=90))(off, _gen(2)) - off).abs().max()) > 10.0


def test_rotation_is_a_rotation_in_pixels_for_non_square_images() -> None:
    # A spot 6 pixels right of the centre of a 15 x 31 image stays 6 pixels from the centre,
    # at an angle within the allowed range.
    h, w, r, deg = 15, 31, 6.0, 40.0
    yy, xx = torch.meshgrid(torch.arange(h) - 7.0, torch.arange(w) - 15.0, indexing="ij")
    spot = (255.0 * torch.exp(-(yy ** 2 + (xx - r) ** 2) / 2.0)).expand(64, 1, h, w).clone()
    out = make_batch_augment(AugmentConfig(rotation=deg))(spot, _gen(8))
    mass = out.sum((1, 2, 3))
    cy, cx = (out * yy).sum((1, 2, 3)) / mass, (out * xx).sum((1, 2, 3)) / mass
    dist = torch.sqrt(cy ** 2 + cx ** 2)
    assert torch.allclose(dist, torch.full_like(dist, r), atol=0.25)
    angle = torch.rad2deg(torch.atan2(cy, cx)).abs()
    assert float(angle.max()) <= deg + 2 and float(angle.max()) > deg / 2


def test_rotation_really_rotates() -> None:
    # A bar along x turned by up to 90 degrees is not the same bar (the check can fail).
    x = torch.zeros(64, 1, 21, 21)
    x[:, :, 10, 2:19] = 255.0
    out = make_batch_augment(AugmentConfig(rotation=90))(x, _gen(3))
    moved = (out - x).abs().flatten(1).sum(1)
    assert (moved > 500).float().mean() > 0.8
    # mass is roughly preserved (bilinear resampling of an interior bar)
    assert torch.allclose(out.sum((1, 2, 3)), x.sum((1, 2, 3)), rtol=0.25)


def test_brightness_factor_within_bounds() -> None:
    b = 0.3
    x = _batch(n=200, lo=1, hi=150)  # 150 * 1.3 < 255: no clamping
    out = make_batch_augment(AugmentConfig(brightness=b))(x, _gen(4))
    ratio = out / x
    f = ratio.flatten(1)
    assert torch.allclose(f, f[:, :1].expand_as(f), rtol=1e-5)  # one factor per sample
    f = f[:, 0]
    assert float(f.min()) >= 1 - b - 1e-6 and float(f.max()) <= 1 + b + 1e-6
    assert float(f.min()) < 1 - b / 2 and float(f.max()) > 1 + b / 2  # spread over the range
    bright = make_batch_augment(AugmentConfig(brightness=0.9))(torch.full((50, 1, 2, 2), 250.0), _gen(5))
    assert float(bright.max()) == 255.0 and float(bright.min()) >= 0.0  # clamped


@pytest.mark.parametrize("channels", [1, 3])
def test_contrast_blends_toward_the_image_mean(channels: int) -> None:
    c = 0.4
    x = _batch(n=200, c=channels, lo=80, hi=160)  # stays inside 0..255 after the blend
    out = make_batch_augment(AugmentConfig(contrast=c))(x, _gen(6))
    if channels == 3:
        wts = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
        m = (x * wts).sum(1, keepdim=True).mean((1, 2, 3), keepdim=True)
    else:
        m = x.mean((1, 2, 3), keepdim=True)
    f = ((out - m) / (x - m)).flatten(1)
    ok = (x - m).abs().flatten(1) > 5  # avoid dividing by ~0
    for i in range(len(x)):
        fi = f[i][ok[i]]
        assert torch.allclose(fi, fi[0].expand_as(fi), rtol=1e-3, atol=1e-3)
        assert 1 - c - 1e-4 <= float(fi[0]) <= 1 + c + 1e-4
    spread = torch.stack([f[i][ok[i]][0] for i in range(len(x))])
    assert float(spread.min()) < 1 - c / 2 and float(spread.max()) > 1 + c / 2
    # the mean itself does not move
    assert torch.allclose(out.mean((1, 2, 3)) if channels == 1 else out.mean((2, 3)).mul(
        torch.tensor([0.299, 0.587, 0.114])).sum(1), m.flatten(), atol=1e-2)


def _interval(mask_1d: torch.Tensor) -> tuple[int, int]:
    idx = torch.nonzero(mask_1d).flatten()
    lo, hi = int(idx[0]), int(idx[-1]) + 1
    assert hi - lo == len(idx), "zeroed rows/columns are not contiguous"
    return lo, hi


def _check_side(lo: int, hi: int, size: int, full: int) -> None:
    """[lo, hi) is the square's extent along one axis: rows ``[c - size // 2, c - size // 2 + size)`` for a
    centre pixel ``c`` in ``[0, full)``, clipped to ``[0, full)``."""
    if lo > 0 and hi < full:
        assert hi - lo == size
    elif lo > 0:  # clipped at the far border only: the centre lo + size // 2 is still inside
        assert size // 2 + 1 <= hi - lo <= size
    elif hi < full:  # clipped at the near border only: the centre hi - size + size // 2 is >= 0
        assert size - size // 2 <= hi <= size
    else:
        assert full <= size


@pytest.mark.parametrize("size", [4, 5])
def test_cutout_zeroes_exactly_a_clipped_square(size: int) -> None:
    h, w = 11, 13
    x = _batch(n=300, h=h, w=w, lo=1)  # no zeros before cutout
    out = make_batch_augment(AugmentConfig(cutout=size))(x, _gen(7))
    clipped = 0
    for i in range(len(x)):
        zero = (out[i] == 0).all(0)
        assert torch.equal(out[i][:, ~zero], x[i][:, ~zero])  # everything else untouched
        rows, cols = _interval(zero.any(1)), _interval(zero.any(0))
        rect = torch.zeros(h, w, dtype=torch.bool)
        rect[rows[0]:rows[1], cols[0]:cols[1]] = True
        assert torch.equal(zero, rect), "zeroed pixels are not a rectangle"
        _check_side(*rows, size, h)
        _check_side(*cols, size, w)
        clipped += (rows[1] - rows[0]) * (cols[1] - cols[0]) < size * size
    assert 0 < clipped < len(x)  # both whole and clipped squares occur


def test_cutout_square_side_is_checked() -> None:
    # The side check fails for a 3-wide interior band when the size is 4.
    with pytest.raises(AssertionError):
        _check_side(2, 5, 4, 11)


def test_same_seed_same_output_and_device_independent_draws() -> None:
    cfg = AugmentConfig(crop_padding=2, rotation=15, hflip=True, brightness=0.2, contrast=0.2, cutout=3)
    aug = make_batch_augment(cfg)
    x = _batch(n=32)
    a, b = aug(x, _gen(11)), aug(x, _gen(11))
    assert torch.equal(a, b)
    assert not torch.equal(a, aug(x, _gen(12)))
    assert a.shape == x.shape and float(a.min()) >= 0 and float(a.max()) <= 255
    if torch.cuda.is_available():  # pragma: no cover - only with a GPU
        c = aug(x.cuda(), _gen(11)).cpu()
        assert torch.allclose(a, c, atol=1e-3)


def test_per_sample_transforms() -> None:
    x = torch.randint(1, 256, (3, 12, 10), dtype=torch.uint8)
    assert make_transforms(AugmentConfig(hflip=False)) is None
    # translate: a zero-filled shift within the padding, same size, uint8
    tf = make_transforms(AugmentConfig(crop_padding=2))
    shifts = set()
    for s in range(30):
        torch.manual_seed(s)
        y = tf(x)
        assert y.dtype == torch.uint8 and y.shape == x.shape
        hits = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)
                if torch.equal(y.float(), _shift(x.float(), dy, dx))]
        assert len(hits) == 1
        shifts.add(hits[0])
    assert len(shifts) > 5
    # cutout: one clipped square of zeros
    tf = make_transforms(AugmentConfig(cutout=4))
    for s in range(30):
        torch.manual_seed(s)
        y = tf(x)
        zero = (y == 0).all(0)
        rows, cols = _interval(zero.any(1)), _interval(zero.any(0))
        assert int(zero.sum()) == (rows[1] - rows[0]) * (cols[1] - cols[0])
        _check_side(*rows, 4, 12)
        _check_side(*cols, 4, 10)
    # everything together keeps dtype and shape; the same seed gives the same result
    tf = make_transforms(AugmentConfig(crop_padding=2, rotation=10, hflip=True, brightness=0.2, contrast=0.2,
                                       cutout=3))
    torch.manual_seed(0)
    a = tf(x)
    torch.manual_seed(0)
    assert torch.equal(a, tf(x)) and a.dtype == torch.uint8 and a.shape == x.shape
    gray = torch.randint(1, 256, (1, 8, 8), dtype=torch.uint8)
    assert tf(gray).shape == (1, 8, 8)
