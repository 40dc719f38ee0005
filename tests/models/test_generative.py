"""The generative models: conv_autoencoder (and the conv_encoder classifier built on its encoder), vae
(Kingma & Welling 2014) and dcgan (Radford et al. 2016)."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cnnkit.errors import UserError
from cnnkit.models import get_model, list_models
from cnnkit.models.generative import (DCGAN, VAE, ConvAutoencoder, EncoderClassifier, corrupt, d_loss, dcgan_levels,
                                      g_loss, init_dcgan_weights, kl_divergence, vae_loss)
from cnnkit.models.registry import model_task, takes_backbone


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_registered_with_their_tasks():
    assert model_task("conv_autoencoder") == "reconstruction"
    assert model_task("vae") == "reconstruction"
    assert model_task("dcgan") == "gan"
    assert "conv_encoder" in list_models(task="classification") and takes_backbone("conv_encoder")
    assert set(list_models(task="reconstruction")) >= {"conv_autoencoder", "vae"}


# --------------------------------------------------------------------------- the autoencoder


@pytest.mark.parametrize("chans, side", [(1, 28), (3, 32), (1, 30), (1, 9)])
def test_autoencoder_gives_an_image_of_the_input_shape(chans, side):
    torch.manual_seed(0)
    model = get_model("conv_autoencoder", in_chans=chans, input_size=side, width=4, latent=3)
    x = torch.rand(2, chans, side, side)
    out = model(x)
    assert out.shape == x.shape
    assert out.min() >= 0 and out.max() <= 1
    code = model.encoder(x)
    assert code.shape == (2, 3, math.ceil(side / 4), math.ceil(side / 4))
    torch.testing.assert_close(model.decode(code, (side, side)), out)
    torch.testing.assert_close(torch.sigmoid(model.logits(x)), out)


def test_autoencoder_dense_code_and_depth():
    model = get_model("conv_autoencoder", input_size=28, width=4, depth=3, latent=10, bottleneck="dense")
    x = torch.rand(2, 1, 28, 28)
    assert model.encoder(x).shape == (2, 10)  # 28 is padded to 32, three stride-2 stages: 4x4
    assert model(x).shape == x.shape
    assert model.decode(torch.zeros(3, 10)).shape == (3, 1, 28, 28)
    with pytest.raises(ValueError, match="dense code"):
        model(torch.rand(2, 1, 40, 40))


@pytest.mark.parametrize("options, message", [
    ({"bottleneck": "pool"}, "bottleneck"), ({"width": 0}, "width"), ({"depth": 1.5}, "depth"),
    ({"norm": "yes"}, "norm"), ({"code": 3}, "no option"),
])
def test_autoencoder_options_are_checked(options, message):
    with pytest.raises(UserError, match=message):
        get_model("conv_autoencoder", **options)


def _shapes_batch(n: int = 8, side: int = 16) -> torch.Tensor:
    """Bright rectangles of different sizes and places on a dark ground: structure an autoencoder can learn."""
    x = torch.zeros(n, 1, side, side)
    for i in range(n):
        top, left = (2 * i) % 9, (3 * i + 1) % 9
        x[i, 0, top:top + 4 + i % 4, left:left + 3 + (i * 5) % 4] = 1.0
    return x


@pytest.fixture
def one_thread():
    # a hundred small steps: one thread is fast, two fight over a busy machine (20x slower)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_autoencoder_learns_a_fixed_batch_better_than_its_mean(one_thread):
    torch.manual_seed(0)
    x = _shapes_batch()
    baseline = float(F.mse_loss(x.mean(dim=0, keepdim=True).expand_as(x), x))  # every image -> the mean image
    model = ConvAutoencoder(1, 16, width=8, depth=2, latent=4)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(100):
        opt.zero_grad()
        loss = F.mse_loss(model(x), x)
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        error = float(F.mse_loss(model(x), x))
    assert error < 0.25 * baseline, (error, baseline)  # about 0.01 x the baseline when written


def test_corrupt_is_seedable_and_stays_in_range():
    x = torch.full((4, 1, 20, 20), 0.5)
    a = corrupt(x, "gaussian", 0.3, generator=torch.Generator().manual_seed(7))
    b = corrupt(x, "gaussian", 0.3, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b) and not torch.equal(a, x)
    assert a.min() >= 0 and a.max() <= 1
    assert float((a - x).std()) == pytest.approx(0.3, rel=0.15)  # 0.5 +- 0.3 is rarely clipped
    masked = corrupt(x, "masking", 0.25, generator=torch.Generator().manual_seed(1))
    assert set(masked.unique().tolist()) <= {0.0, 0.5}
    assert float((masked == 0).float().mean()) == pytest.approx(0.25, abs=0.05)
    sp = corrupt(x, "salt_pepper", 0.5, generator=torch.Generator().manual_seed(2))
    assert set(sp.unique().tolist()) == {0.0, 0.5, 1.0}
    with pytest.raises(UserError, match="noise"):
        corrupt(x, "blur", 0.1)
    with pytest.raises(UserError, match="probability"):
        corrupt(x, "masking", 1.5)


def test_conv_encoder_classifier_reuses_an_autoencoders_encoder():
    torch.manual_seed(0)
    ae = get_model("conv_autoencoder", width=4, latent=6)
    clf = get_model("conv_encoder", num_classes=5, backbone=ae)
    assert isinstance(clf, EncoderClassifier) and clf.body[0] is ae.encoder
    x = torch.rand(3, 1, 28, 28)
    ae.eval(), clf.eval()
    with torch.no_grad():
        torch.testing.assert_close(clf.forward_features(x), ae.encoder(x).mean(dim=(2, 3)))
    assert clf(x).shape == (3, 5) and clf.get_classifier().in_features == 6
    # the autoencoder's state dict holds the classifier's body under "encoder." (for loading a run's weights)
    body_keys = {k.removeprefix("body.0.") for k in clf.state_dict() if k.startswith("body.0.")}
    assert body_keys == {k.removeprefix("encoder.") for k in ae.state_dict() if k.startswith("encoder.")}
    flat = get_model("conv_encoder", num_classes=5, width=4, latent=6, pool="flatten")
    assert flat.get_classifier().in_features == 6 * 7 * 7
    vae = get_model("vae", latent_dim=5, width=4)
    assert get_model("conv_encoder", num_classes=2, backbone=vae).get_classifier().in_features == 10  # mu, logvar
    with pytest.raises(UserError, match="no encoder"):
        get_model("conv_encoder", backbone=nn.Linear(2, 2))


# --------------------------------------------------------------------------- the VAE


def test_kl_by_hand():
    mu = torch.tensor([[0.0, 0.0], [1.0, -1.0]])
    logvar = torch.tensor([[0.0, math.log(4.0)], [0.0, 0.0]])
    # 1/2 sum(mu^2 + sigma^2 - 1 - log sigma^2): row 0 = 1/2 (0 + 4 - 1 - log 4), row 1 = 1/2 (1 + 1)
    expected = [0.5 * (3 - math.log(4.0)), 1.0]
    assert kl_divergence(mu, logvar).tolist() == pytest.approx(expected)


def test_vae_loss_sums_over_an_image_and_averages_over_the_batch():
    x = torch.tensor([[[[1.0, 0.0]]], [[[0.5, 1.0]]]])  # (2, 1, 1, 2)
    logits = torch.tensor([[[[2.0, -1.0]]], [[[0.0, 3.0]]]])
    mu, logvar = torch.tensor([[1.0], [0.0]]), torch.tensor([[0.0], [0.0]])

    def bce(t, z):
        p = 1 / (1 + math.exp(-z))
        return -(t * math.log(p) + (1 - t) * math.log(1 - p))

    per_image = [bce(1.0, 2.0) + bce(0.0, -1.0), bce(0.5, 0.0) + bce(1.0, 3.0)]
    recon_expected = sum(per_image) / 2
    kl_expected = (0.5 * 1.0 + 0.0) / 2
    loss, recon, kl = vae_loss(x, logits, mu, logvar)
    assert float(recon) == pytest.approx(recon_expected)
    assert float(kl) == pytest.approx(kl_expected)
    assert float(loss) == pytest.approx(recon_expected + kl_expected)
    loss_b, _, _ = vae_loss(x, logits, mu, logvar, beta=4.0)
    assert float(loss_b) == pytest.approx(recon_expected + 4 * kl_expected)
    loss_p, recon_p, kl_p = vae_loss(x, logits, mu, logvar, reduction="pixel")  # 2 pixels per image
    assert (float(loss_p), float(recon_p), float(kl_p)) == pytest.approx((float(loss) / 2, recon_expected / 2,
                                                                          kl_expected / 2))


def test_vae_forward_loss_and_modes():
    torch.manual_seed(0)
    model = get_model("vae", latent_dim=4, width=4)
    assert isinstance(model, VAE)
    x = torch.rand(3, 1, 28, 28)
    with pytest.raises(RuntimeError, match="forward pass first"):
        model.loss(x)
    out = model(x)
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1
    assert model.last_mu.shape == model.last_logvar.shape == (3, 4)
    loss = model.loss(x, out)
    torch.testing.assert_close(loss, vae_loss(x, model.last_logits, model.last_mu, model.last_logvar)[0])
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())
    copy.deepcopy(model)  # an EMA's copy after a forward pass: the kept tensors are left behind
    # training draws z; eval decodes the mean, deterministically
    assert not torch.equal(model(x), model(x))
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), model(x))
        mu, _ = model.encode(x)
        torch.testing.assert_close(model(x), model.decode(mu))


def test_vae_sample_is_seedable():
    torch.manual_seed(0)
    model = get_model("vae", latent_dim=4, width=4)
    a = model.sample(6, generator=torch.Generator().manual_seed(3))
    b = model.sample(6, generator=torch.Generator().manual_seed(3))
    c = model.sample(6, generator=torch.Generator().manual_seed(4))
    assert a.shape == (6, 1, 28, 28) and torch.equal(a, b) and not torch.equal(a, c)
    assert a.min() >= 0 and a.max() <= 1
    assert model.training  # the mode is restored


# --------------------------------------------------------------------------- DCGAN


@pytest.mark.parametrize("chans, side, levels", [(1, 28, (7, 2)), (3, 32, (4, 3)), (3, 64, (4, 4))])
def test_dcgan_shapes(chans, side, levels):
    assert dcgan_levels(side) == levels
    torch.manual_seed(0)
    model = get_model("dcgan", in_chans=chans, input_size=side, features_g=8, features_d=8, latent_dim=10)
    z = model.noise(3)
    assert z.shape == (3, 10)
    fake = model.generator(z)
    assert fake.shape == (3, chans, side, side) and fake.min() >= -1 and fake.max() <= 1
    assert model.generator(z.reshape(3, 10, 1, 1)).shape == fake.shape
    logits = model.discriminator(fake)
    assert logits.shape == (3,)
    torch.testing.assert_close(model(fake), logits)  # forward is the discriminator


def test_dcgan_matches_the_reference_64px_network():
    # PyTorch's DCGAN example (ngf = ndf = 64, nz = 100, 3 colours), whose layers have no bias; here the
    # output layers of both networks have one (3 + 1 more parameters).
    g = (100 * 512 * 16 + 2 * 512) + (512 * 256 * 16 + 2 * 256) + (256 * 128 * 16 + 2 * 128) \
        + (128 * 64 * 16 + 2 * 64) + 64 * 3 * 16
    d = 3 * 64 * 16 + (64 * 128 * 16 + 2 * 128) + (128 * 256 * 16 + 2 * 256) + (256 * 512 * 16 + 2 * 512) + 512 * 16
    assert (g, d) == (3_576_704, 2_765_568)
    model = DCGAN(3, 64)
    assert n_params(model.generator) == g + 3 and n_params(model.discriminator) == d + 1


def test_dcgan_refuses_sizes_it_cannot_build():
    for side in (30, 6, 2):  # 30 = 15 x 2: a base above 7; 6 and below: nothing to halve
        with pytest.raises(UserError, match="base of at most 7"):
            dcgan_levels(side)
    with pytest.raises(UserError, match="30"):
        get_model("dcgan", input_size=30)
    with pytest.raises(UserError, match="at least 8x8"):
        get_model("dcgan", input_size=6)


@torch.no_grad()
def test_dcgan_init_is_normal_002():
    torch.manual_seed(0)
    model = DCGAN(1, 28)
    convs = [m.weight for m in model.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    w = torch.cat([c.flatten() for c in convs])
    assert float(w.mean()) == pytest.approx(0.0, abs=1e-3)
    assert float(w.std()) == pytest.approx(0.02, rel=0.05)
    bn = torch.cat([m.weight for m in model.modules() if isinstance(m, nn.BatchNorm2d)])
    assert float(bn.mean()) == pytest.approx(1.0, abs=0.01) and float(bn.std()) == pytest.approx(0.02, rel=0.3)
    biases = [m.bias for m in model.modules() if getattr(m, "bias", None) is not None]
    assert biases and all(float(b.abs().max()) == 0 for b in biases)
    # the function applies to any module
    layer = nn.Linear(400, 300)
    init_dcgan_weights(layer)
    assert float(layer.weight.std()) == pytest.approx(0.02, rel=0.05) and float(layer.bias.abs().max()) == 0


def test_gan_losses_by_hand():
    def log_sigmoid(z):
        return -math.log(1 + math.exp(-z))

    real, fake = torch.tensor([2.0, -1.0]), torch.tensor([0.5, -3.0])
    # D: -mean log D(x) - mean log(1 - D(G(z))); log(1 - sigmoid(z)) = log_sigmoid(-z)
    expected_d = -(log_sigmoid(2.0) + log_sigmoid(-1.0)) / 2 - (log_sigmoid(-0.5) + log_sigmoid(3.0)) / 2
    assert float(d_loss(real, fake)) == pytest.approx(expected_d)
    # G, non-saturating: -mean log D(G(z))
    assert float(g_loss(fake)) == pytest.approx(-(log_sigmoid(0.5) + log_sigmoid(-3.0)) / 2)
    # one-sided label smoothing: the real targets are 0.9
    smooth_real = -sum(0.9 * log_sigmoid(z) + 0.1 * log_sigmoid(-z) for z in (2.0, -1.0)) / 2
    assert float(d_loss(real, fake, real_label=0.9)) == pytest.approx(smooth_real - (log_sigmoid(-0.5)
                                                                                     + log_sigmoid(3.0)) / 2)
    assert d_loss(real.half(), fake.half()).dtype == torch.float32


def test_dcgan_two_optimisers_see_disjoint_parameters():
    torch.manual_seed(0)
    model = DCGAN(1, 28, latent_dim=8, features_g=4, features_d=4)
    g_params, d_params = set(model.generator.parameters()), set(model.discriminator.parameters())
    assert not g_params & d_params and g_params | d_params == set(model.parameters())
    real = torch.rand(4, 1, 28, 28) * 2 - 1
    # the discriminator's step, on detached fakes, gives the generator no gradient
    fake = model.generator(model.noise(4))
    d_loss(model.discriminator(real), model.discriminator(fake.detach())).backward()
    assert all(p.grad is None for p in g_params) and all(p.grad is not None for p in d_params)


def test_dcgan_sample_is_seedable_and_in_range():
    torch.manual_seed(0)
    model = get_model("dcgan", features_g=4, features_d=4, latent_dim=8)
    a = model.sample(5, generator=torch.Generator().manual_seed(11))
    b = model.sample(5, generator=torch.Generator().manual_seed(11))
    c = model.sample(5, generator=torch.Generator().manual_seed(12))
    assert a.shape == (5, 1, 28, 28) and torch.equal(a, b) and not torch.equal(a, c)
    assert model.output_range == (-1.0, 1.0) and a.min() >= -1 and a.max() <= 1
    unit = model.to_unit(a)
    assert unit.min() >= 0 and unit.max() <= 1
    torch.testing.assert_close(model.from_unit(unit), a)
    assert model.generator.training  # the mode is restored
    sig = get_model("dcgan", features_g=4, features_d=4, latent_dim=8, output="sigmoid")
    s = sig.sample(3, generator=torch.Generator().manual_seed(0))
    assert sig.output_range == (0.0, 1.0) and s.min() >= 0 and s.max() <= 1 and torch.equal(sig.to_unit(s), s)
    with pytest.raises(UserError, match="output"):
        get_model("dcgan", output="relu")
