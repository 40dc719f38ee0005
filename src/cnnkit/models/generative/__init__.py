"""Generative models: networks whose output is an image.

Reconstruction, ``task="reconstruction"``: ``x (N, C, H, W)`` in [0, 1] in, ``x̂`` of the same shape
in [0, 1] out (a sigmoid), trained against the clean image (a denoising run corrupts the input with
:func:`corrupt`):

* ``conv_autoencoder`` (:mod:`.autoencoder`): strided convs, a linear code (a map or a vector),
  transposed convs; ``.encoder`` maps an image to its code;
* ``vae`` (:mod:`.vae`): Kingma & Welling 2014; ``model.loss(x)`` after ``model(x)`` gives the
  negative ELBO, ``sample(n, generator)`` new images.

Generation, ``task="gan"``: ``dcgan`` (:mod:`.dcgan`), Radford et al. 2016, one module holding
``.generator`` and ``.discriminator`` (one optimiser each), the losses :func:`d_loss` and
:func:`g_loss`, ``sample(n, generator)``.

Classification: ``conv_encoder`` (:mod:`.autoencoder`), an autoencoder's encoder with a dense head;
``model.backbone`` a built autoencoder gives it that autoencoder's trained encoder.
"""

from cnnkit.models.generative import autoencoder, dcgan, vae  # noqa: F401  (registers them)
from cnnkit.models.generative.autoencoder import (ConvAutoencoder, ConvDecoder, ConvEncoder, EncoderClassifier,
                                                  corrupt)
from cnnkit.models.generative.dcgan import (ADAM, DCGAN, Discriminator, Generator, d_loss, dcgan_levels, g_loss,
                                            init_dcgan_weights)
from cnnkit.models.generative.vae import VAE, kl_divergence, vae_loss

__all__ = ["ADAM", "ConvAutoencoder", "ConvDecoder", "ConvEncoder", "DCGAN", "Discriminator", "EncoderClassifier",
           "Generator", "VAE", "corrupt", "d_loss", "dcgan_levels", "g_loss", "init_dcgan_weights", "kl_divergence",
           "vae_loss"]
