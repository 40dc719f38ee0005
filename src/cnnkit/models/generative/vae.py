"""Kingma & Welling (2014), "Auto-Encoding Variational Bayes": the variational autoencoder, ``vae``
(``task: reconstruction``).

::

    x (N, C, H, W) in [0, 1] ─ encoder (as conv_autoencoder's: depth x [conv 3x3 stride 2, BN, ReLU],
      flatten, dense) ─ (mu, logvar), each (N, latent_dim)
      ─ z = mu + exp(logvar / 2) * eps, eps ~ N(0, I)   (training; z = mu in eval mode)
      ─ decoder (dense, reshape, transposed convs) ─ logits ─ sigmoid ─ x̂ in [0, 1]

The loss is the negative evidence lower bound for Bernoulli pixels (:func:`vae_loss`):

    loss = BCE(x̂, x) + beta * KL(N(mu, diag(exp(logvar))) || N(0, I)),
    KL = 1/2 * sum_j (mu_j**2 + exp(logvar_j) - 1 - logvar_j)

Convention: both terms are **sums over one image** (BCE over its C*H*W pixels, KL over its
latent_dim coordinates), then averaged over the batch: the ELBO of one image, as in the paper
(about 100 nats for MNIST). ``reduction="pixel"`` divides both terms by C*H*W: the same optimum,
a loss on the scale of a per-pixel BCE. Averaging the BCE over pixels while summing the KL is not
offered: it weighs the prior C*H*W times more (784 on MNIST) and blurs the reconstructions (it
is a beta-VAE with beta = C*H*W). ``beta`` (Higgins et al. 2017's beta-VAE) is an option, 1 by default.

The forward pass keeps ``last_logits``, ``last_mu`` and ``last_logvar`` so that the task can call
``model.loss(x)`` after ``model(x)`` (the BCE is computed from the logits: exact, and safe under
autocast, where a BCE on probabilities is refused). ``sample(n, generator)`` decodes N(0, I) draws.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cnnkit.errors import UserError
from cnnkit.models.generative.autoencoder import (ConvDecoder, ConvEncoder, check_bool, check_positive,
                                                  random_normal)
from cnnkit.models.registry import register_model

REDUCTIONS = ("image", "pixel")


def kl_divergence(mu: Tensor, logvar: Tensor) -> Tensor:
    """Per example ``(N,)``: KL(N(mu, diag(exp(logvar))) || N(0, I)), summed over the latent coordinates."""
    mu, logvar = mu.float(), logvar.float()
    return 0.5 * (mu.square() + logvar.exp() - 1.0 - logvar).sum(dim=1)


def vae_loss(x: Tensor, logits: Tensor, mu: Tensor, logvar: Tensor, beta: float = 1.0, reduction: str = "image"
             ) -> tuple[Tensor, Tensor, Tensor]:
    """``(loss, reconstruction, kl)``, each a mean over the batch of a per-image sum (``reduction="image"``)
    or of that sum divided by the pixels per image (``"pixel"``). ``x``: targets in [0, 1];
    ``logits``: the decoder's output before the sigmoid, the shape of ``x``."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    n = x.shape[0]
    bce = F.binary_cross_entropy_with_logits(logits.float(), x.float(), reduction="none").reshape(n, -1).sum(dim=1)
    kl = kl_divergence(mu, logvar)
    if reduction == "pixel":
        pixels = x[0].numel()
        bce, kl = bce / pixels, kl / pixels
    recon, kl = bce.mean(), kl.mean()
    return recon + beta * kl, recon, kl


class VAE(nn.Module):
    """``x (N, C, H, W) in [0, 1] -> x̂ (N, C, H, W) in [0, 1]``; inputs of ``input_size`` (at most
    2**depth - 1 pixels less: they are padded, the output cropped)."""

    def __init__(self, in_chans: int = 1, input_size: int = 28, latent_dim: int = 16, width: int = 32,
                 depth: int = 2, norm: bool = True, beta: float = 1.0, reduction: str = "image") -> None:
        super().__init__()
        name = "vae"
        check_positive(name, in_chans=in_chans, input_size=input_size, latent_dim=latent_dim, width=width,
                       depth=depth)
        check_bool(name, "norm", norm)
        if isinstance(beta, bool) or not isinstance(beta, (int, float)) or beta < 0:
            raise UserError(f"{name}: option beta must be a number >= 0, got {beta!r}")
        if reduction not in REDUCTIONS:
            raise UserError(f"{name}: option reduction must be one of {', '.join(REDUCTIONS)}, got {reduction!r}")
        self.in_chans, self.input_size, self.latent_dim = in_chans, input_size, latent_dim
        self.width, self.depth, self.beta, self.reduction = width, depth, float(beta), reduction
        # the dense code holds mu and logvar side by side
        self.encoder = ConvEncoder(in_chans, width, depth, 2 * latent_dim, "dense", input_size, norm)
        self.decoder = ConvDecoder(in_chans, width, depth, latent_dim, "dense", input_size, norm)
        self.last_logits: Tensor | None = None
        self.last_mu: Tensor | None = None
        self.last_logvar: Tensor | None = None

    def __getstate__(self) -> dict:
        # copies (an EMA's deepcopy, pickling) leave the last pass's tensors, and their graph, behind
        state = dict(super().__getstate__())
        state.update(last_logits=None, last_mu=None, last_logvar=None)
        return state

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(mu, logvar)``, each ``(N, latent_dim)``."""
        mu, logvar = self.encoder(x).chunk(2, dim=1)
        return mu, logvar

    @staticmethod
    def reparameterize(mu: Tensor, logvar: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """``mu + sigma * eps``: a draw from N(mu, sigma**2) through which gradients reach mu and logvar."""
        eps = random_normal(tuple(mu.shape), generator, like=mu)
        return mu + torch.exp(0.5 * logvar) * eps

    def decode_logits(self, z: Tensor) -> Tensor:
        return self.decoder(z)[..., :self.input_size, :self.input_size]

    def decode(self, z: Tensor) -> Tensor:
        """Latent codes ``(N, latent_dim)`` -> images ``(N, C, input_size, input_size)`` in [0, 1]."""
        return torch.sigmoid(self.decode_logits(z))

    def forward(self, x: Tensor) -> Tensor:
        mu, logvar = self.encode(x)
        z = self.reparameterize(mu, logvar) if self.training else mu
        logits = self.decoder(z)[..., :x.shape[-2], :x.shape[-1]]
        self.last_logits, self.last_mu, self.last_logvar = logits, mu, logvar
        return torch.sigmoid(logits)

    def loss_terms(self, x: Tensor, out: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """``(loss, reconstruction, kl)`` of the last forward pass (:func:`vae_loss`) against targets ``x``
        in [0, 1] (the clean images for a denoising run). ``out``: that pass's output, only checked."""
        if self.last_logits is None or self.last_mu is None or self.last_logvar is None:
            raise RuntimeError("VAE.loss needs a forward pass first: out = model(x); model.loss(x, out)")
        if out is not None and tuple(out.shape) != tuple(self.last_logits.shape):
            raise ValueError(f"VAE.loss: out {tuple(out.shape)} is not the last forward pass's output "
                             f"{tuple(self.last_logits.shape)}")
        if tuple(x.shape) != tuple(self.last_logits.shape):
            raise ValueError(f"VAE.loss: targets {tuple(x.shape)} and output {tuple(self.last_logits.shape)} differ")
        return vae_loss(x, self.last_logits, self.last_mu, self.last_logvar, self.beta, self.reduction)

    def loss(self, x: Tensor, out: Tensor | None = None) -> Tensor:
        """The negative ELBO (reconstruction BCE + beta * KL) of the last forward pass: a scalar."""
        return self.loss_terms(x, out)[0]

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` images decoded from N(0, I) codes, in [0, 1]; the same ``generator`` state gives the same
        images. Decoded in eval mode (batch norm's running statistics), the module's mode restored."""
        p = next(self.parameters())
        z = random_normal((int(n), self.latent_dim), generator, like=p)
        was = self.training
        self.eval()
        try:
            return self.decode(z)
        finally:
            self.train(was)

    def extra_repr(self) -> str:
        return (f"latent_dim={self.latent_dim}, width={self.width}, depth={self.depth}, beta={self.beta}, "
                f"reduction={self.reduction!r}")


@register_model("vae", "Kingma & Welling (2014)'s variational autoencoder: strided convs to (mu, logvar), "
                "reparameterisation, transposed convs, sigmoid", default_input=(1, 28, 28), min_input=(1, 4, 4),
                task="reconstruction")
def vae(num_classes: int = 0, in_chans: int = 1, input_size: int = 28, latent_dim: int = 16, width: int = 32,
        depth: int = 2, norm: bool = True, beta: float = 1.0, reduction: str = "image") -> VAE:
    """``latent_dim``: size of the code z; ``width``/``depth``: as conv_autoencoder's; ``beta``: weight of
    the KL term; ``reduction``: the loss per ``image`` (sums, the ELBO) or per ``pixel`` (sums / C*H*W).
    ``num_classes`` is ignored."""
    return VAE(in_chans, input_size, latent_dim=latent_dim, width=width, depth=depth, norm=norm, beta=beta,
               reduction=reduction)
