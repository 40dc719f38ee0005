"""Image measures (cnnkit.tasks.image_metrics): MSE and PSNR by hand, SSIM against an independent
implementation (SciPy's Gaussian filter) and torchmetrics, the Fréchet distance against the closed
form of diagonal Gaussians and torchmetrics' FID, and a classifier as the feature extractor."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import ndimage
from torch import nn

from cnnkit.models import get_model
from cnnkit.tasks.image_metrics import (classifier_features, feature_stats, features_of, fid_and_baseline, fid_with,
                                        frechet_distance, mse, psnr, ssim)


# --------------------------------------------------------------------------- MSE and PSNR


def test_psnr_by_hand():
    x = torch.zeros(2, 1, 2, 2)
    y = torch.tensor([[[[0.1, 0.1], [0.1, 0.1]]], [[[0.5, 0.0], [0.0, 0.0]]]])
    # image 0: every pixel off by 0.1 -> MSE 0.01 -> 20 dB; image 1: one pixel off by 0.5 -> MSE 0.0625
    assert mse(x, y, reduction="none").tolist() == pytest.approx([0.01, 0.0625])
    expected = [10 * math.log10(1 / 0.01), 10 * math.log10(1 / 0.0625)]
    assert psnr(x, y, reduction="none").tolist() == pytest.approx(expected)
    assert float(psnr(x, y)) == pytest.approx(sum(expected) / 2)  # the mean of per-image values
    assert float(mse(x, y)) == pytest.approx((0.01 + 0.0625) / 2)
    # a range of 255: the same images scaled by 255 have the same PSNR
    assert psnr(x * 255, y * 255, data_range=255.0, reduction="none").tolist() == pytest.approx(expected)
    assert math.isinf(float(psnr(y, y)))


def test_psnr_agrees_with_torchmetrics_per_image():
    from torchmetrics.functional.image import peak_signal_noise_ratio

    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(4, 3, 8, 8, generator=g), torch.rand(4, 3, 8, 8, generator=g)
    theirs = peak_signal_noise_ratio(x, y, data_range=1.0, dim=(1, 2, 3), reduction="none")
    torch.testing.assert_close(psnr(x, y, reduction="none").float(), theirs, rtol=1e-5, atol=1e-5)


def test_shapes_are_checked():
    with pytest.raises(ValueError, match="differ in shape"):
        psnr(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 5))
    with pytest.raises(ValueError, match="reduction"):
        mse(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 4), reduction="sum")


# --------------------------------------------------------------------------- SSIM


def _ssim_by_hand(x: np.ndarray, y: np.ndarray, data_range: float = 1.0) -> float:
    """One grey image: Wang et al.'s SSIM map with an 11x11 Gaussian window (sigma 1.5, radius 5) over the
    image mirrored at its border (torch's 'reflect'), averaged over the pixels."""
    def blur(a):
        return ndimage.gaussian_filter(a, sigma=1.5, truncate=5 / 1.5, mode="mirror")

    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx ** 2, blur(y * y) - my ** 2, blur(x * y) - mx * my
    s = (2 * mx * my + c1) * (2 * cxy + c2) / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2))
    return float(s.mean())


def test_ssim_identical_noisy_and_by_hand():
    g = torch.Generator().manual_seed(1)
    clean = torch.rand(3, 1, 28, 28, generator=g, dtype=torch.float64)
    noisy = (clean + 0.2 * torch.randn(clean.shape, generator=g, dtype=torch.float64)).clamp(0, 1)
    assert ssim(clean, clean, reduction="none").tolist() == pytest.approx([1.0, 1.0, 1.0], abs=1e-6)
    per_image = ssim(noisy, clean, reduction="none")
    assert (per_image < 0.95).all()
    for i in range(3):
        expected = _ssim_by_hand(noisy[i, 0].numpy(), clean[i, 0].numpy())
        assert float(per_image[i]) == pytest.approx(expected, abs=1e-4)
    from torchmetrics.image import StructuralSimilarityIndexMeasure

    assert float(ssim(noisy, clean)) == pytest.approx(float(StructuralSimilarityIndexMeasure(data_range=1.0)(
        noisy.float(), clean.float())), abs=1e-5)
    with pytest.raises(ValueError, match="6x6"):
        ssim(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 4))


# --------------------------------------------------------------------------- the Fréchet distance


def test_frechet_distance_of_diagonal_gaussians_is_the_closed_form():
    f64 = torch.float64
    mu1, mu2 = torch.tensor([0.0, 1.0, -2.0], dtype=f64), torch.tensor([1.0, 1.0, 0.5], dtype=f64)
    s1, s2 = torch.tensor([1.0, 4.0, 0.25], dtype=f64), torch.tensor([2.0, 1.0, 0.25], dtype=f64)
    expected = float(((mu1 - mu2) ** 2).sum() + (s1 + s2 - 2 * (s1 * s2).sqrt()).sum())
    assert frechet_distance(mu1, torch.diag(s1), mu2, torch.diag(s2)) == pytest.approx(expected, rel=1e-12)
    assert expected == pytest.approx(1 + 6.25 + (3 - 2 * math.sqrt(2)) + (5 - 4))  # the numbers, by hand
    assert frechet_distance(mu1, torch.diag(s1), mu1, torch.diag(s1)) == pytest.approx(0.0, abs=1e-12)


def test_frechet_distance_agrees_with_torchmetrics_on_full_covariances():
    from torchmetrics.image.fid import _compute_fid

    g = torch.Generator().manual_seed(2)
    a, b = torch.randn(6, 6, generator=g, dtype=torch.float64), torch.randn(6, 6, generator=g, dtype=torch.float64)
    s1, s2 = a @ a.T + 0.1 * torch.eye(6, dtype=torch.float64), b @ b.T
    mu1, mu2 = torch.randn(6, generator=g, dtype=torch.float64), torch.randn(6, generator=g, dtype=torch.float64)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(float(_compute_fid(mu1, s1, mu2, s2)), rel=1e-8)
    # symmetric in its two arguments, and a rank-deficient covariance is fine
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(frechet_distance(mu2, s2, mu1, s1), rel=1e-8)
    low = a[:, :2] @ a[:, :2].T
    assert frechet_distance(mu1, low, mu1, low) == pytest.approx(0.0, abs=1e-8)


def test_feature_stats_are_numpy_mean_and_unbiased_cov():
    feats = torch.randn(50, 4, generator=torch.Generator().manual_seed(3))
    mu, cov = feature_stats(feats)
    np.testing.assert_allclose(mu.numpy(), feats.double().numpy().mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(cov.numpy(), np.cov(feats.double().numpy(), rowvar=False), rtol=1e-10)
    with pytest.raises(ValueError):
        feature_stats(torch.zeros(1, 4))


def test_fid_with_a_classifier_agrees_with_torchmetrics_custom_extractor():
    from torchmetrics.image.fid import FrechetInceptionDistance

    torch.manual_seed(0)
    extractor = classifier_features(get_model("lenet5", num_classes=10), mean=[0.13], std=[0.31])
    assert extractor.num_features == 84
    g = torch.Generator().manual_seed(4)
    real = torch.rand(96, 1, 28, 28, generator=g)
    fake = (torch.rand(96, 1, 28, 28, generator=g) * 0.5).clamp(0, 1)
    ours = fid_with(extractor, real, fake, batch=40)
    theirs = FrechetInceptionDistance(feature=extractor, normalize=True)
    for x in real.split(40):
        theirs.update(x, real=True)
    for x in fake.split(40):
        theirs.update(x, real=False)
    assert ours == pytest.approx(float(theirs.compute()), rel=1e-3)
    assert ours > 0


def test_fid_and_baseline_on_gaussians_with_a_known_distance():
    g = torch.Generator().manual_seed(5)
    real = torch.randn(4000, 1, 2, 2, generator=g)  # features = the 4 pixels, N(0, I)
    fake = torch.randn(2000, 1, 2, 2, generator=g) + 1.0  # N(1, I): distance ||1||^2 = 4
    out = fid_and_baseline(nn.Flatten(), real, fake, batch=512, generator=torch.Generator().manual_seed(0))
    assert out["n"] == 2000
    assert out["fid"] == pytest.approx(4.0, abs=0.3)
    assert out["fid_real"] < 0.05
    same = fid_and_baseline(nn.Flatten(), real, real.flip(0), generator=torch.Generator().manual_seed(0))
    assert same["fid"] < 0.05
    with pytest.raises(ValueError, match="generated"):
        fid_and_baseline(nn.Flatten(), real, fake[:10])


# --------------------------------------------------------------------------- a classifier as the extractor


def test_classifier_features_are_the_penultimate_layer():
    torch.manual_seed(0)
    model = get_model("lenet5", num_classes=10).eval()
    x = torch.rand(5, 1, 28, 28)
    with torch.no_grad():
        expected = model.forward_features((x - 0.5) / 0.25)
        feats = classifier_features(model, mean=[0.5], std=[0.25])(x)
    assert feats.shape == (5, 84)
    torch.testing.assert_close(feats, expected)
    assert not any(p.requires_grad for p in model.parameters())
    # resized to the classifier's input size first
    assert classifier_features(model, size=28)(torch.rand(2, 1, 32, 32)).shape == (2, 84)


class _NoInterface(nn.Module):
    """A classifier without forward_features: only a head named by get_classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.trunk = nn.Sequential(nn.Flatten(), nn.Linear(16, 6), nn.ReLU())
        self.fc = nn.Linear(6, 3)

    def forward(self, x):
        return self.fc(self.trunk(x))

    def get_classifier(self):
        return self.fc


def test_classifier_features_through_a_hook_on_the_head():
    model = _NoInterface()
    x = torch.rand(4, 1, 4, 4)
    feats = features_of(classifier_features(model), x, batch=3)
    torch.testing.assert_close(feats, model.trunk(x).double())
    with pytest.raises(TypeError, match="cannot be read"):
        classifier_features(nn.Flatten())
