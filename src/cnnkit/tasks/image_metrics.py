"""Measures of generated and reconstructed images: MSE, PSNR, SSIM, and the Fréchet distance between
the feature distributions of two image sets (FID, Heusel et al. 2017, with any feature extractor).

Pure functions on tensors; images are ``(N, C, H, W)`` floats in ``[0, data_range]`` (1.0: the
reconstruction task's range; a tanh generator's images go through ``(x + 1) / 2`` first).

* :func:`mse`, :func:`psnr`: per image, then (``reduction="mean"``) the mean over the images. The
  mean PSNR is the mean of per-image PSNRs, the usual way to report it, not the PSNR of the mean
  MSE (which is lower: the log is concave).
* :func:`ssim`: Wang et al. (2004)'s structural similarity, torchmetrics' implementation: an 11x11
  Gaussian window (sigma 1.5) over the image padded by reflection, the SSIM map averaged over every
  pixel; K1 = 0.01, K2 = 0.03.
* :func:`frechet_distance` of two Gaussians given by their means and covariances, computed in
  float64: ``||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2))``, with ``tr (S1 S2)^(1/2)`` taken as
  ``tr (A S2 A)^(1/2)`` for ``A = S1^(1/2)``: a symmetric positive semi-definite matrix, so both
  square roots come from symmetric eigendecompositions (stable, real, no ``scipy.linalg.sqrtm``
  imaginary residue).
* :func:`feature_stats`, :func:`features_of`, :func:`fid_with`: the distance between two image sets
  as seen by a feature extractor; :func:`classifier_features` makes one of a trained cnnkit
  classifier (its penultimate layer), which stands in for Inception v3 (whose weights cannot be
  downloaded here, and which knows nothing of digits anyway).
* :func:`fid_and_baseline`: a generator's distance to real data next to the distance between two
  halves of the real data, both at the same sample size (the distance is biased upwards for
  small samples, so a figure is only read against the real-vs-real one).
"""

from __future__ import annotations

from typing import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

REDUCTIONS = ("mean", "none")


def _check_pair(x: Tensor, y: Tensor) -> None:
    if x.shape != y.shape:
        raise ValueError(f"the two image batches differ in shape: {tuple(x.shape)} and {tuple(y.shape)}")
    if x.ndim != 4:
        raise ValueError(f"expected images (N, C, H, W), got a tensor of shape {tuple(x.shape)}")


def _reduce(values: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return values.mean()
    if reduction == "none":
        return values
    raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")


def mse(x: Tensor, y: Tensor, reduction: str = "mean") -> Tensor:
    """Mean squared error per image ``(N,)`` (``reduction="none"``) or its mean over the images, in float64."""
    _check_pair(x, y)
    per_image = (x.double() - y.double()).square().flatten(1).mean(dim=1)
    return _reduce(per_image, reduction)


def psnr(x: Tensor, y: Tensor, data_range: float = 1.0, reduction: str = "mean") -> Tensor:
    """Peak signal-to-noise ratio in dB, ``10 log10(data_range**2 / MSE)``, per image ``(N,)`` or the mean
    over the images; ``inf`` for an image equal to its reference."""
    per_image = 10.0 * torch.log10(float(data_range) ** 2 / mse(x, y, reduction="none"))
    return _reduce(per_image, reduction)


def ssim(x: Tensor, y: Tensor, data_range: float = 1.0, reduction: str = "mean") -> Tensor:
    """Structural similarity of ``x`` to the reference ``y`` (torchmetrics, Gaussian window), per image
    ``(N,)`` or the mean over the images; 1 for identical images."""
    from torchmetrics.functional.image import structural_similarity_index_measure

    _check_pair(x, y)
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    if min(x.shape[-2], x.shape[-1]) < 6:  # the 11x11 window's reflected border needs 6 pixels
        raise ValueError(f"SSIM needs images of at least 6x6 pixels, got {x.shape[-2]}x{x.shape[-1]}")
    per_image = structural_similarity_index_measure(x.float(), y.float(), data_range=float(data_range),
                                                    reduction="none")
    return _reduce(per_image.double(), reduction)


# --------------------------------------------------------------------------- the Fréchet distance


def feature_stats(feats: Tensor) -> tuple[Tensor, Tensor]:
    """``(mean (d,), covariance (d, d))`` of features ``(n, d)``, float64; the covariance is the unbiased
    one (divided by n - 1), as torchmetrics' FID computes it."""
    if feats.ndim != 2 or feats.shape[0] < 2:
        raise ValueError(f"expected at least two feature vectors (n, d), got a tensor of shape {tuple(feats.shape)}")
    f = feats.detach().double()
    mu = f.mean(dim=0)
    centred = f - mu
    return mu, centred.T @ centred / (f.shape[0] - 1)


def _sqrt_psd(m: Tensor) -> Tensor:
    """The symmetric square root of a symmetric positive semi-definite matrix (negative rounding-error
    eigenvalues are taken as 0)."""
    vals, vecs = torch.linalg.eigh((m + m.T) / 2)
    return (vecs * vals.clamp_min(0).sqrt()) @ vecs.T


def frechet_distance(mu1: Tensor, sigma1: Tensor, mu2: Tensor, sigma2: Tensor) -> float:
    """The squared Fréchet (2-Wasserstein) distance between N(mu1, sigma1) and N(mu2, sigma2):
    ``||mu1 - mu2||^2 + tr(sigma1) + tr(sigma2) - 2 tr((sigma1 sigma2)^(1/2))``, in float64."""
    mu1, mu2, s1, s2 = (t.detach().double().cpu() for t in (mu1, mu2, sigma1, sigma2))
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (mu1.numel(), mu1.numel()):
        raise ValueError(f"means {tuple(mu1.shape)}, {tuple(mu2.shape)} and covariances {tuple(s1.shape)}, "
                         f"{tuple(s2.shape)} do not fit together")
    root1 = _sqrt_psd(s1)
    cross = torch.linalg.eigvalsh(root1 @ s2 @ root1).clamp_min(0).sqrt().sum()
    value = (mu1 - mu2).square().sum() + s1.trace() + s2.trace() - 2.0 * cross
    return max(float(value), 0.0)


@torch.no_grad()
def features_of(extractor: nn.Module, images: Tensor | Iterable[Tensor], batch: int = 256) -> Tensor:
    """Features ``(n, d)`` (float64, on the CPU) of ``images``: one tensor ``(n, C, H, W)``, cut into batches
    of ``batch``, or an iterable of such batches. The extractor runs in eval mode on its own device, its
    mode restored after."""
    p = next(extractor.parameters(), None)
    device = p.device if p is not None else torch.device("cpu")
    chunks = images.split(batch) if isinstance(images, Tensor) else images
    was = extractor.training
    extractor.eval()
    try:
        out = [extractor(x.to(device)).flatten(1).double().cpu() for x in chunks]
    finally:
        extractor.train(was)
    if not out:
        raise ValueError("no images to extract features from")
    return torch.cat(out)


def fid_with(extractor: nn.Module, real: Tensor | Iterable[Tensor], fake: Tensor | Iterable[Tensor],
             batch: int = 256) -> float:
    """The Fréchet distance between the ``extractor`` features of ``real`` and ``fake`` images (FID when the
    extractor is Inception v3's pool layer)."""
    return frechet_distance(*feature_stats(features_of(extractor, real, batch)),
                            *feature_stats(features_of(extractor, fake, batch)))


def fid_and_baseline(extractor: nn.Module, real: Tensor, fake: Tensor, batch: int = 256,
                     generator: torch.Generator | None = None) -> dict[str, float]:
    """``{"fid", "fid_real", "n"}``: the real images, shuffled (``generator``), are cut into halves A and B
    of n images each; ``fid_real`` is the distance A-B and ``fid`` the distance between n of the
    ``fake`` images and B, so both figures are at the same sample size. ``fake`` needs at least n
    images (the first n are used)."""
    n = len(real) // 2
    if n < 2:
        raise ValueError(f"fid_and_baseline needs at least 4 real images, got {len(real)}")
    if len(fake) < n:
        raise ValueError(f"fid_and_baseline compares n = {n} generated images with half of the {len(real)} real "
                         f"ones; got {len(fake)} generated")
    order = torch.randperm(len(real), generator=generator)
    a, b = real[order[:n]], real[order[n:2 * n]]
    stats_b = feature_stats(features_of(extractor, b, batch))
    fid_real = frechet_distance(*feature_stats(features_of(extractor, a, batch)), *stats_b)
    fid = frechet_distance(*feature_stats(features_of(extractor, fake[:n], batch)), *stats_b)
    return {"fid": fid, "fid_real": fid_real, "n": n}


# --------------------------------------------------------------------------- a classifier as the extractor


class ClassifierFeatures(nn.Module):
    """``images in [0, 1] (N, C, H, W) -> the classifier's penultimate features (N, d)``.

    The images are first brought to what the classifier was trained on: resized to ``size`` (bilinear)
    when given, then normalised ``(x - mean) / std`` per channel when ``mean``/``std`` are given (a
    cnnkit run's normalisation). The features are ``forward_head(forward_features(x),
    pre_logits=True)`` (cnnkit's classifier interface), or else the input of the classifier's head,
    caught by a hook.
    """

    def __init__(self, model: nn.Module, mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                 size: int | None = None) -> None:
        super().__init__()
        self.model = model
        self.size = size
        self.has_interface = callable(getattr(model, "forward_features", None)) and \
            callable(getattr(model, "forward_head", None))
        self.head: nn.Module | None = None
        if not self.has_interface:
            get = getattr(model, "get_classifier", None)
            head = get() if callable(get) else None
            if not isinstance(head, nn.Module) or isinstance(head, nn.Identity):
                raise TypeError(f"{type(model).__name__} is not a classifier with forward_features / forward_head "
                                f"or a head (get_classifier); its features cannot be read")
            self.head = head
        if (mean is None) != (std is None):
            raise ValueError("give both mean and std, or neither")
        self.register_buffer("mean", None if mean is None else torch.tensor(list(mean), dtype=torch.float32)
                             .reshape(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", None if std is None else torch.tensor(list(std), dtype=torch.float32)
                             .reshape(1, -1, 1, 1), persistent=False)
        head = model.get_classifier() if callable(getattr(model, "get_classifier", None)) else None
        if isinstance(head, nn.Linear):
            self.num_features = head.in_features  # read by torchmetrics' FrechetInceptionDistance

    def prepare(self, x: Tensor) -> Tensor:
        x = x.float()
        if self.size is not None and tuple(x.shape[-2:]) != (self.size, self.size):
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        if self.mean is not None:
            x = (x - self.mean) / self.std
        return x

    def forward(self, x: Tensor) -> Tensor:
        x = self.prepare(x)
        if self.has_interface:
            return self.model.forward_head(self.model.forward_features(x), pre_logits=True).flatten(1)
        caught: list[Tensor] = []
        hook = self.head.register_forward_hook(lambda _m, inputs, _out: caught.append(inputs[0]))
        try:
            self.model(x)
        finally:
            hook.remove()
        return caught[-1].flatten(1)


def classifier_features(model: nn.Module, mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                        size: int | None = None) -> ClassifierFeatures:
    """A trained classifier as a feature extractor for :func:`fid_with` (or torchmetrics'
    ``FrechetInceptionDistance(feature=...)``, with ``normalize=True``): its penultimate layer, on images
    in [0, 1] normalised with the classifier run's ``mean``/``std``. Its parameters are frozen."""
    extractor = ClassifierFeatures(model, mean, std, size)
    for p in extractor.parameters():
        p.requires_grad_(False)
    return extractor.eval()
