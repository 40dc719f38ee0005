"""Radford, Metz & Chintala (2016), "Unsupervised Representation Learning with Deep Convolutional
Generative Adversarial Networks": ``dcgan`` (``task: gan``).

The paper's guidelines, all followed here:

* no pooling: strided convolutions in the discriminator, fractionally strided (transposed) ones in
  the generator; no fully connected hidden layer (z is read as a 1x1 map with ``latent_dim``
  channels, and the discriminator ends with a convolution as large as its last map);
* batch normalisation in both networks, except the generator's output and the discriminator's input
  layer;
* ReLU in the generator (tanh at its output), LeakyReLU with slope 0.2 in the discriminator;
* weights drawn from N(0, 0.02) (:func:`init_dcgan_weights`; batch-norm scales from N(1, 0.02));
* Adam, learning rate 2e-4, beta1 = 0.5 (the task's optimisers; :data:`ADAM`).

z is drawn from N(0, I), as in most implementations (the paper draws it uniformly).

For an image side S the networks work at S, S/2, ... down to a base side of at most 7 (halving
while the side is even and above 7): 64 -> 32 -> 16 -> 8 -> 4 and 32 -> 16 -> 8 -> 4 as in the
paper's figure, 28 -> 14 -> 7 for MNIST. With ``features`` = f and k halvings::

    generator:     z (N, latent_dim) ─ 1x1 ─ tconv base x base to f*2**(k-1), BN, ReLU
                   ─ (k-1) x [tconv 4x4 stride 2, halving the channels, BN, ReLU]
                   ─ tconv 4x4 stride 2 to C channels ─ tanh (or sigmoid) ─ (N, C, S, S)
    discriminator: x (N, C, S, S) ─ conv 4x4 stride 2 to f, LeakyReLU(0.2)
                   ─ (k-1) x [conv 4x4 stride 2, doubling the channels, BN, LeakyReLU(0.2)]
                   ─ conv base x base to 1 ─ logits (N,)

The losses are the non-saturating ones of Goodfellow et al. (2014) on logits (:func:`d_loss`,
:func:`g_loss`). :class:`DCGAN` holds both networks; its ``forward(x)`` is the discriminator (an
image in, a logit out, so the generic tools see an image model), ``sample(n, generator)`` draws
images.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cnnkit.errors import UserError
from cnnkit.models.generative.autoencoder import check_choice, check_positive, random_normal
from cnnkit.models.registry import register_model

OUTPUTS = ("tanh", "sigmoid")
ADAM = {"lr": 2e-4, "betas": (0.5, 0.999)}
"""The paper's optimiser settings, for each of the two Adam optimisers."""


def dcgan_levels(image_size: int) -> tuple[int, int]:
    """``(base side, number of stride-2 steps)`` for square images of ``image_size``: halve while the side
    is even and above 7. UserError when the base is still above 7 (an odd side above 7) or when no
    halving is possible (sides up to 7)."""
    side, steps = int(image_size), 0
    while side > 7 and side % 2 == 0:
        side //= 2
        steps += 1
    if side > 7 or steps == 0:
        raise UserError(f"dcgan builds images whose side is 2, 4, 8, ... times a base of at most 7 pixels "
                        f"(28 = 7 x 4, 32 = 4 x 8, 64 = 4 x 16); got {image_size}: set data.image_size to one")
    return side, steps


class Generator(nn.Module):
    """``z (N, latent_dim) or (N, latent_dim, 1, 1) -> images (N, C, S, S)`` in [-1, 1] (tanh) or [0, 1]."""

    def __init__(self, latent_dim: int, out_chans: int, image_size: int, features: int = 64,
                 output: str = "tanh") -> None:
        super().__init__()
        base, steps = dcgan_levels(image_size)
        self.latent_dim = latent_dim
        chans = [features * 2 ** i for i in range(steps - 1, -1, -1)]  # f*2**(k-1), ..., f
        layers: list[nn.Module] = [nn.ConvTranspose2d(latent_dim, chans[0], base, 1, 0, bias=False),
                                   nn.BatchNorm2d(chans[0]), nn.ReLU(inplace=True)]
        for c_in, c_out in zip(chans, chans[1:]):
            layers += [nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=False), nn.BatchNorm2d(c_out),
                       nn.ReLU(inplace=True)]
        layers += [nn.ConvTranspose2d(chans[-1], out_chans, 4, 2, 1), nn.Tanh() if output == "tanh" else nn.Sigmoid()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z.reshape(z.shape[0], self.latent_dim, 1, 1))


class Discriminator(nn.Module):
    """``images (N, C, S, S) -> logits (N,)``: positive for "real"."""

    def __init__(self, in_chans: int, image_size: int, features: int = 64) -> None:
        super().__init__()
        base, steps = dcgan_levels(image_size)
        chans = [features * 2 ** i for i in range(steps)]  # f, 2f, ..., f*2**(k-1)
        layers: list[nn.Module] = [nn.Conv2d(in_chans, chans[0], 4, 2, 1, bias=False), nn.LeakyReLU(0.2, inplace=True)]
        for c_in, c_out in zip(chans, chans[1:]):
            layers += [nn.Conv2d(c_in, c_out, 4, 2, 1, bias=False), nn.BatchNorm2d(c_out),
                       nn.LeakyReLU(0.2, inplace=True)]
        layers += [nn.Conv2d(chans[-1], 1, base, 1, 0)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x).reshape(x.shape[0])


def init_dcgan_weights(module: nn.Module, std: float = 0.02) -> None:
    """The paper's initialisation, in place: conv, transposed conv and dense weights from N(0, std), batch-norm
    scales from N(1, std); every bias (and batch-norm shift) zero."""
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
                m.weight.normal_(0.0, std)
                if m.bias is not None:
                    m.bias.zero_()
            elif isinstance(m, nn.modules.batchnorm._BatchNorm):
                if m.weight is not None:
                    m.weight.normal_(1.0, std)
                if m.bias is not None:
                    m.bias.zero_()


def d_loss(real_logits: Tensor, fake_logits: Tensor, real_label: float = 1.0) -> Tensor:
    """The discriminator's loss: ``BCE(D(x), real_label) + BCE(D(G(z)), 0)``, each a mean over its batch
    (on logits, in float32). ``real_label`` below 1 (0.9) is one-sided label smoothing (Salimans et al.
    2016). The fake logits should come from detached images: this loss trains D only."""
    real_logits, fake_logits = real_logits.float(), fake_logits.float()
    real = F.binary_cross_entropy_with_logits(real_logits, torch.full_like(real_logits, float(real_label)))
    fake = F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
    return real + fake


def g_loss(fake_logits: Tensor) -> Tensor:
    """The generator's non-saturating loss ``BCE(D(G(z)), 1) = -mean log sigmoid(D(G(z)))`` (Goodfellow et
    al. 2014: strong gradients while D still rejects the fakes, unlike minimising log(1 - D(G(z))))."""
    fake_logits = fake_logits.float()
    return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))


class DCGAN(nn.Module):
    """``generator`` (z -> image) and ``discriminator`` (image -> logit), each with its own parameters
    (one optimiser each; nothing is shared). ``forward(x)`` = ``discriminator(x)``.

    Images are in ``output_range``: (-1, 1) with the tanh output (real images must be scaled the same
    way: ``2 x - 1`` for x in [0, 1]), (0, 1) with the sigmoid one; :meth:`to_unit` maps them to [0, 1].
    """

    def __init__(self, in_chans: int = 1, image_size: int = 28, latent_dim: int = 100, features_g: int = 64,
                 features_d: int = 64, output: str = "tanh") -> None:
        super().__init__()
        name = "dcgan"
        check_positive(name, in_chans=in_chans, image_size=image_size, latent_dim=latent_dim, features_g=features_g,
                       features_d=features_d)
        check_choice(name, "output", output, OUTPUTS)
        self.in_chans, self.image_size, self.latent_dim, self.output = in_chans, image_size, latent_dim, output
        self.generator = Generator(latent_dim, in_chans, image_size, features_g, output)
        self.discriminator = Discriminator(in_chans, image_size, features_d)
        init_dcgan_weights(self)

    @property
    def output_range(self) -> tuple[float, float]:
        return (-1.0, 1.0) if self.output == "tanh" else (0.0, 1.0)

    def to_unit(self, images: Tensor) -> Tensor:
        """Generated images in [0, 1]."""
        return (images + 1.0) / 2.0 if self.output == "tanh" else images

    def from_unit(self, images: Tensor) -> Tensor:
        """Images in [0, 1] (real ones) in the generator's output range, for the discriminator."""
        return images * 2.0 - 1.0 if self.output == "tanh" else images

    def noise(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``z (n, latent_dim)`` from N(0, I), on the model's device (drawn on ``generator``'s)."""
        p = next(self.parameters())
        return random_normal((int(n), self.latent_dim), generator, like=p)

    def forward(self, x: Tensor) -> Tensor:
        return self.discriminator(x)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` generated images in :attr:`output_range`; the same ``generator`` state gives the same images.
        The generator runs in eval mode (batch norm's running statistics), its mode restored."""
        z = self.noise(n, generator)
        was = self.generator.training
        self.generator.eval()
        try:
            return self.generator(z)
        finally:
            self.generator.train(was)

    def extra_repr(self) -> str:
        return f"image_size={self.image_size}, latent_dim={self.latent_dim}, output={self.output!r}"


@register_model("dcgan", "Radford et al. (2016)'s DCGAN: transposed-conv generator (BN, ReLU, tanh) and strided-conv "
                "discriminator (BN, LeakyReLU 0.2); 28, 32, 64 px", default_input=(1, 28, 28), min_input=(1, 8, 8),
                task="gan")
def dcgan(num_classes: int = 0, in_chans: int = 1, input_size: int = 28, latent_dim: int = 100, features_g: int = 64,
          features_d: int = 64, output: str = "tanh") -> DCGAN:
    """``input_size`` (data.image_size): the image side, 2**k times a base of at most 7 (28, 32, 64...);
    ``latent_dim``: size of z (the paper's 100); ``features_g`` / ``features_d``: channels of the
    generator's last hidden layer / the discriminator's first (doubled at each coarser level);
    ``output``: ``tanh`` (the paper's, images in [-1, 1]) or ``sigmoid`` ([0, 1]). ``num_classes`` is
    ignored (the GAN is unconditional)."""
    return DCGAN(in_chans, input_size, latent_dim=latent_dim, features_g=features_g, features_d=features_d,
                 output=output)
