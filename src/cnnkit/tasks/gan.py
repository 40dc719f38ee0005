"""Generative adversarial training (Goodfellow et al. 2014) of ``dcgan`` (Radford et al. 2016).

A batch is ``(x (N, C, H, W) in [0, 1], labels)`` (pixels not standardised: ``UNIT_PIXEL_TASKS``);
the labels are ignored by the players. Each batch is two updates, in this order
(:meth:`GanTask.optimize_step`, under the trainer's autocast and GradScaler):

1. the discriminator D on ``d_loss(D(x), D(G(z)).detach)`` (``BCE(D(x), real_label) + BCE(D(G(z)), 0)``,
   ``real_label = 1 - regularization.label_smoothing``: one-sided label smoothing);
2. the generator G on the non-saturating ``g_loss = BCE(D(G(z)), 1)``, with D as just updated.

Each player has its own Adam (:class:`GanOptimizers`): learning rate ``optim.lr`` (the paper's 2e-4),
``betas = (optim.beta1 or 0.5, optim.beta2 or 0.999)`` (:data:`~cnnkit.models.generative.ADAM`),
decoupled ``optim.weight_decay``. ``z`` is drawn from the run's RNG, so a resumed run continues with
the very numbers an uninterrupted one would have drawn.

Metrics. The loss of a batch is ``d_loss + g_loss``; each epoch also logs ``d_loss``, ``g_loss`` and
the discriminator's mean probabilities ``d_real = mean sigmoid(D(x))`` and ``d_fake = mean
sigmoid(D(G(z)))``, on the validation images against generated ones from z seeded by ``train.seed``
(cheap; they say whether the game is balanced, not whether the images are good). A GAN's result is
its last generator: ``best.pt`` follows the last epoch. At the end (:meth:`GanTask.final_metrics`)
``final.json`` gets ``fid``, the Fréchet distance between the features of generated images and of
real validation images, next to ``fid_real``, the same distance between two halves of the real
validation images (the floor at that sample size; :func:`~cnnkit.tasks.image_metrics.fid_and_baseline`).
The features are the penultimate layer of a digit classifier instead of Inception v3 (unavailable
offline, and blind to digits): the classification run ``train.fid_classifier`` names, else a
LeNet-5 trained here on the run's own labelled training images (:func:`train_feature_classifier`:
3 epochs, seed 0; a few seconds on MNIST), the same for every run on the same data.

Under torchrun the trainer refuses the task (``owns_step``): G runs outside the model's forward,
which DistributedDataParallel cannot synchronise.
"""

from __future__ import annotations

import sys
from typing import Any, Callable, Sequence

import torch
from torch import nn
from torchmetrics import MetricCollection

from cnnkit.errors import UserError
from cnnkit.models.generative import ADAM, d_loss, g_loss
from cnnkit.nn.runtime import autocast, backward_and_step
from cnnkit.tasks.base import Task, fmt_metric, register_task
from cnnkit.tasks.image_metrics import classifier_features, fid_and_baseline
from cnnkit.tasks.metrics import Ratio

PARTS = ("d_loss", "g_loss", "d_real", "d_fake")
FID_SEED = 0  # the generated images, the real halves and the fallback classifier's training: fixed


def unwrap(model: nn.Module) -> nn.Module:
    """The module under ``torch.compile``'s wrapper."""
    return getattr(model, "_orig_mod", model)


class GanOptimizers:
    """The generator's and the discriminator's optimisers as one object for the trainer: ``param_groups``
    (the generator's, then the discriminator's: the schedule sets the lr of all), ``state_dict`` /
    ``load_state_dict`` (checkpoints and resume), ``zero_grad``."""

    def __init__(self, generator: torch.optim.Optimizer, discriminator: torch.optim.Optimizer) -> None:
        self.generator, self.discriminator = generator, discriminator

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return self.generator.param_groups + self.discriminator.param_groups

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.generator.zero_grad(set_to_none=set_to_none)
        self.discriminator.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.state_dict(), "discriminator": self.discriminator.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if set(state) != {"generator", "discriminator"}:
            raise ValueError(f"not a GAN's optimiser state (keys {sorted(state)}); expected generator and "
                             f"discriminator")
        self.generator.load_state_dict(state["generator"])
        self.discriminator.load_state_dict(state["discriminator"])


def player_step(loss: torch.Tensor, optimizer: torch.optim.Optimizer, player: nn.Module, *,
                scaler: torch.amp.GradScaler | None, clip: float | None) -> None:
    """One player's update: zero its gradients, then the trainer's own backward, clip and step
    (:func:`~cnnkit.nn.runtime.backward_and_step`); the caller updates the scaler once per batch."""
    optimizer.zero_grad(set_to_none=True)
    backward_and_step(loss, optimizer, player, scaler=scaler, clip=clip, update_scaler=False)


@register_task("gan", "unconditional image generation (dcgan): two players, two Adams; d/g losses, D(real), D(fake); "
                      "FID against a digit classifier's features at the end")
class GanTask(Task):
    best_metric = "epoch"   # the result is the last generator, not the epoch of some loss
    best_mode = "max"
    metric_names = PARTS
    train_sum_names = PARTS
    owns_step = True

    def __init__(self, cfg, classes: list[str], input_shape: tuple[int, ...] | None = None) -> None:
        super().__init__(cfg, classes, input_shape)
        if cfg.model.name != "dcgan":
            raise UserError(f"task gan needs model.name dcgan, got "
                            f"{'a layer list' if cfg.model.name is None else repr(cfg.model.name)}")
        reg = cfg.regularization
        if reg.l1 or reg.l2:
            raise UserError(f"task gan: regularization.l1/l2 ({reg.l1}/{reg.l2}) are not applied to the two players; "
                            f"use optim.weight_decay")
        if cfg.optim.name != "adam":
            raise UserError(f"task gan trains both players with Adam (Radford et al.); optim.name={cfg.optim.name!r} "
                            f"is not used: set optim.name=adam")
        if cfg.train.ema or cfg.train.lookahead or cfg.train.distill:
            raise UserError("task gan: train.ema, train.lookahead and train.distill are for a single network; "
                            "remove them")
        if cfg.train.eval_tta != "none":
            raise UserError(f"train.eval_tta={cfg.train.eval_tta}: task gan has no test-time augmentation")
        self.real_label = 1.0 - float(reg.label_smoothing)

    # -- training

    def make_loss(self) -> Callable[[Any, Any], torch.Tensor]:
        # The trainer's loss_fn is unused (optimize_step and evaluate compute both players' losses).
        return lambda out, y: torch.zeros(())

    def make_optimizer(self, model: nn.Module) -> GanOptimizers:
        gan = unwrap(model)
        o = self.cfg.optim
        kw = {"lr": o.lr, "betas": (o.beta1 if o.beta1 is not None else ADAM["betas"][0],
                                    o.beta2 if o.beta2 is not None else ADAM["betas"][1]),
              "weight_decay": o.weight_decay, **({"eps": o.eps} if o.eps is not None else {})}
        opts = [torch.optim.AdamW(part.parameters(), **kw) for part in (gan.generator, gan.discriminator)]
        for opt in opts:
            for g in opt.param_groups:
                g.setdefault("lr_mult", 1.0)
        return GanOptimizers(*opts)

    def optimize_step(self, model: nn.Module, inputs: torch.Tensor, targets: Any, optimizer: GanOptimizers, *,
                      precision: str, scaler: Any, clip: float | None) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        gan = unwrap(model)
        device = inputs.device
        real = gan.from_unit(inputs.float())
        z = gan.noise(len(real))
        # 1. the discriminator, on real images and on fakes it cannot backpropagate into
        with autocast(device, precision):
            fake = gan.generator(z)
            real_logits = gan.discriminator(real)
            fake_logits = gan.discriminator(fake.detach())
            loss_d = d_loss(real_logits, fake_logits, self.real_label)
        player_step(loss_d, optimizer.discriminator, gan.discriminator, scaler=scaler, clip=clip)
        # 2. the generator, through the updated discriminator
        with autocast(device, precision):
            loss_g = g_loss(gan.discriminator(fake))
        player_step(loss_g, optimizer.generator, gan.generator, scaler=scaler, clip=clip)
        if scaler is not None:
            scaler.update()
        n = len(real)
        sums = {"d_loss": loss_d.detach() * n, "g_loss": loss_g.detach() * n,
                "d_real": torch.sigmoid(real_logits.detach().float()).sum(),
                "d_fake": torch.sigmoid(fake_logits.detach().float()).sum()}
        return sums, (loss_d + loss_g).detach()

    def train_sums(self, outputs: dict[str, torch.Tensor], targets: Any) -> dict[str, torch.Tensor]:
        return outputs

    # -- evaluation

    def metrics(self) -> MetricCollection:
        return MetricCollection({k: Ratio() for k in ("loss",) + PARTS})

    def val_generator(self) -> torch.Generator:
        """The validation noise's generator (CPU, seeded by ``train.seed``): the same z at every evaluation."""
        return torch.Generator().manual_seed(int(self.cfg.train.seed))

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader, device: torch.device, precision: str = "fp32",
                 loss_fn: Callable | None = None) -> dict[str, float]:
        """Both players in eval mode on each validation batch and as many generated images (z drawn batch by
        batch from :meth:`val_generator`): the losses and the mean probabilities D gives each."""
        gan = unwrap(model)
        was_training = gan.training
        gan.eval()
        metrics = self.metrics().to(device)
        generator = self.val_generator()
        for x, _ in loader:
            n = len(x)
            if n == 0:
                continue
            with autocast(device, precision):
                fake = gan.generator(gan.noise(n, generator))
                real_logits = gan.discriminator(gan.from_unit(x.float())).float()
                fake_logits = gan.discriminator(fake).float()
            ld, lg = d_loss(real_logits, fake_logits, self.real_label), g_loss(fake_logits)
            metrics["loss"].update((ld + lg).double() * n, n)
            metrics["d_loss"].update(ld.double() * n, n)
            metrics["g_loss"].update(lg.double() * n, n)
            metrics["d_real"].update(torch.sigmoid(real_logits).sum(), n)
            metrics["d_fake"].update(torch.sigmoid(fake_logits).sum(), n)
        gan.train(was_training)
        result: dict[str, Any] = {k: float(v) for k, v in metrics.compute().items()}
        result["n"] = int(round(float(metrics["loss"].den)))
        return result

    def epoch_line(self, m: dict[str, Any]) -> str:
        f = fmt_metric
        return (f"d_loss {f(m.get('train_d_loss'))}  g_loss {f(m.get('train_g_loss'))}  "
                f"D(real) {f(m.get('train_d_real'))}  D(fake) {f(m.get('train_d_fake'))}  |  val d_loss "
                f"{f(m.get('val_d_loss'))}  g_loss {f(m.get('val_g_loss'))}  D(real) {f(m.get('val_d_real'))}  "
                f"D(fake) {f(m.get('val_d_fake'))}")

    # -- using a trained model

    def predict(self, model: nn.Module, inputs: Any, names: Sequence[str], top_k: int = 5, **_: Any) -> list[dict]:
        raise UserError("a gan run makes images rather than reading them: use 'cnnkit generate RUN --n 64 --save "
                        "grid.png'")

    # -- the end of training: FID

    def final_metrics(self, model: nn.Module, bundle: Any, device: torch.device) -> dict[str, Any]:
        """``fid`` and ``fid_real`` (see the module's docstring), ``fid_n`` images per set and ``fid_features``
        (what the features come from)."""
        real = unit_images(bundle.val)
        if len(real) < 4:
            print(f"note: no FID: it needs at least 4 validation images, the run has {len(real)}", file=sys.stderr)
            return {"fid": None, "fid_real": None}
        extractor, source = self.feature_extractor(bundle, device)
        return fid_report(unwrap(model), extractor, real, source)

    def feature_extractor(self, bundle: Any, device: torch.device) -> tuple[nn.Module, str]:
        """``(features of images in [0, 1], where they come from)``: ``train.fid_classifier``'s run, else a
        LeNet-5 trained on ``bundle.train`` (:func:`train_feature_classifier`)."""
        chans = int(bundle.input_shape[0])
        if self.cfg.train.fid_classifier is not None:
            model, meta = load_classifier(self.cfg.train.fid_classifier)
            shape = tuple(meta["input_shape"])
            if shape[0] != chans:
                raise UserError(f"train.fid_classifier: {self.cfg.train.fid_classifier!r} reads {shape[0]}-channel "
                                f"images; this run's have {chans}")
            return (classifier_features(model.to(device), meta["mean"], meta["std"], size=int(shape[-1])),
                    str(self.cfg.train.fid_classifier))
        print("note: FID features: training a LeNet-5 on this run's training images (3 epochs, seed 0); set "
              "train.fid_classifier to a classification run to use another", file=sys.stderr)
        model, mean, std = train_feature_classifier(bundle, device)
        return classifier_features(model, mean, std, size=28), "lenet5 trained on the run's training images"


def fid_report(gan: nn.Module, extractor: nn.Module, real: torch.Tensor, source: str) -> dict[str, Any]:
    """``{"fid", "fid_real", "fid_n", "fid_features"}``: n = half the real images generated from z seeded with
    :data:`FID_SEED`, compared with one half of ``real`` (shuffled with the same seed), the other half
    with it (:func:`fid_and_baseline`)."""
    n = len(real) // 2
    fake = gan.to_unit(gan.sample(n, torch.Generator().manual_seed(FID_SEED))).float().clamp(0.0, 1.0).cpu()
    res = fid_and_baseline(extractor, real, fake, generator=torch.Generator().manual_seed(FID_SEED))
    return {"fid": res["fid"], "fid_real": res["fid_real"], "fid_n": res["n"], "fid_features": source}


def unit_images(data: Any) -> torch.Tensor:
    """A split's images as float ``(N, C, H, W)`` in [0, 1], on the CPU."""
    images = getattr(data, "images", None)
    if images is None:
        images = torch.stack([torch.as_tensor(data[i][0]) for i in range(len(data))]) if len(data) else \
            torch.zeros(0)
    return images.cpu().float() / 255.0 if images.dtype == torch.uint8 else images.cpu().float()


def load_classifier(source: str) -> tuple[nn.Module, dict[str, Any]]:
    """A classification run's (or cnnkit checkpoint's) trained network, in eval mode, and its ``meta``
    (input_shape, mean, std, classes). Loaded as data (``weights_only``)."""
    from cnnkit.config import validate
    from cnnkit.models import create_model
    from cnnkit.models.weights import without_weights
    from cnnkit.runs import find_checkpoint, load_checkpoint

    ckpt = load_checkpoint(find_checkpoint(source, "best"))
    if not isinstance(ckpt, dict) or not {"model", "config", "meta"} <= set(ckpt):
        raise UserError(f"train.fid_classifier: {source!r} is not a cnnkit checkpoint")
    cfg = validate(ckpt["config"])
    if cfg.task != "classification":
        raise UserError(f"train.fid_classifier: {source!r} is a {cfg.task} run; give an image classification run")
    meta = ckpt["meta"]
    model = create_model(without_weights(cfg.model), tuple(meta["input_shape"]), len(meta["classes"]))
    model.load_state_dict(ckpt["model"])
    return model.eval(), meta


def train_feature_classifier(bundle: Any, device: torch.device, epochs: int = 3, batch_size: int = 64,
                             lr: float = 2e-3) -> tuple[nn.Module, list[float], list[float]]:
    """``(LeNet-5, mean, std)``: trained with Adam on ``bundle.train``'s labelled images (resized to 28x28,
    standardised by their own mean and std) for ``epochs`` epochs, from seed :data:`FID_SEED`, without
    touching the caller's RNG: the same network for the same data, whatever ran before."""
    import torch.nn.functional as F

    from cnnkit.models import get_model

    images = unit_images(bundle.train)
    labels = getattr(bundle.train, "labels", None)
    if labels is None:
        labels = [int(bundle.train[i][1]) for i in range(len(bundle.train))]
    labels = torch.as_tensor(labels).long().cpu()
    if len(images) < 2 or int(labels.max()) < 1:
        raise UserError("the FID's feature classifier is trained on the run's labelled training images, and they "
                        "hold fewer than two classes; set train.fid_classifier to a classification run")
    if tuple(images.shape[-2:]) != (28, 28):
        images = F.interpolate(images, size=(28, 28), mode="bilinear", align_corners=False)
    chans = images.shape[1]
    mean = images.mean(dim=(0, 2, 3)).tolist()
    std = images.std(dim=(0, 2, 3)).clamp_min(1e-6).tolist()
    x_all = (images - torch.tensor(mean).view(1, -1, 1, 1)) / torch.tensor(std).view(1, -1, 1, 1)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(FID_SEED)
        model = get_model("lenet5", num_classes=int(labels.max()) + 1, in_chans=chans).to(device)
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        order_gen = torch.Generator().manual_seed(FID_SEED)
        model.train()
        for _ in range(epochs):
            order = torch.randperm(len(x_all), generator=order_gen)
            for i in range(0, len(order), batch_size):
                idx = order[i:i + batch_size]
                loss = F.cross_entropy(model(x_all[idx].to(device)), labels[idx].to(device))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
    return model.eval(), mean, std

