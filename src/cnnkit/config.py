"""Typed configuration: YAML file, then dotted command-line overrides, validated.

Sections: ``data``, ``model``, ``optim``, ``schedule``, ``regularization``,
``augment``, ``train`` (and ``finetune`` / ``distill`` for later commands).
Unknown keys and wrong types are rejected with a message that names the key
path and what is allowed.

Example::

    cfg = load_config("configs/lenet5_mnist5k.yaml", ["optim.lr=0.01", "train.epochs=3"])
    cfg.optim.lr   # 0.01
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pydantic import (BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator,
                      model_validator)

from cnnkit.errors import ConfigError, UserError, did_you_mean

DEFAULT_CONFIG = Path(__file__).resolve().parent / "configs" / "lenet5_mnist5k.yaml"


class Section(BaseModel):
    """A config section: unknown keys are errors, assignments are validated, numbers are finite."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_numbers(cls, v: Any, info: ValidationInfo) -> Any:
        # pydantic reads true as 1 for an int field: `train.epochs=true` would train one epoch.
        if isinstance(v, bool):
            ann = cls.model_fields[info.field_name].annotation
            kinds = set(get_args(ann)) or {ann}
            if bool not in kinds and kinds & {int, float}:
                raise ValueError("must be a number, not true/false")
            # YAML 1.1 reads a bare on/off as true/false: a choice spelt "on"/"off" takes them back.
            word = "on" if v else "off"
            if bool not in kinds and word in kinds:
                return word
        return v


class DataConfig(Section):
    name: str = "mnist5k"
    path: str | None = None
    batch_size: int = Field(64, gt=0)
    val_fraction: float = Field(0.1, ge=0.0, lt=1.0)
    split_seed: int = Field(0, description="seed of the held-out validation split (fixed across training seeds)")
    eval_batch_size: int | None = Field(None, gt=0)
    num_workers: int = Field(0, ge=0)
    image_size: int | None = Field(None, gt=0, description="resize images to this square size")
    classes: list[int] | None = None
    per_class: int | None = Field(None, gt=0)
    subset: int | None = Field(None, gt=0, description="keep N training images, drawn at random (data.split_seed)")
    annotations: str | None = Field(None, description="detection: the annotation file (a COCO instances JSON) "
                                    "when it is not the one inside data.path")
    epoch_repeats: int = Field(1, ge=1, description="passes over the training split in one epoch (as timm's "
                               "--epoch-repeats), each reshuffled and augmented anew: for small data, so that "
                               "an epoch is more than a few steps")
    mask_values: dict[int, int] | None = Field(None, description="segmentation: mask pixel value -> class index, "
                                               "for masks whose values are not 0..K-1 (binary 0/255 masks are "
                                               "read as 0/1 without it); values not listed are an error")
    class_names: list[str] | None = Field(None, description="segmentation: the names of the mask classes, in "
                                          "index order (default: background/foreground for two, class_<k> else)")
    crop_size: int | None = Field(None, gt=0, description="segmentation: train on random crops of this side; "
                                  "validation, eval and predict see whole images")
    text_column: str | int | None = Field(None, description="text: the column holding the text, by header name "
                                          "or 0-based index (default: a headerless label<TAB>text file)")
    label_column: str | int | None = Field(None, description="text: the column holding the label, by header "
                                           "name or 0-based index")
    tokenizer: Literal["word", "char", "bpe", "wordpiece"] = Field(
        "word", description="text: word (lower-cased, punctuation split off), char, or a subword vocabulary (bpe, "
        "wordpiece) trained on the training split with the tokenizers library")
    min_freq: int = Field(1, ge=1, description="text: a token enters the vocabulary when it occurs this often in "
                          "the training split")
    max_vocab: int | None = Field(None, ge=3, description="text: the largest vocabulary, <pad> and <unk> "
                                  "included (subword default 8000)")
    max_length: int | None = Field(None, gt=0, description="text: longer texts are cut to this many tokens "
                                   "(default: the longest training text)")
    lowercase: bool = Field(True, description="text: lower-case before tokenising")
    # clips (Moving MNIST: task video classifies clips, task frames predicts the next frames)
    clips: int | None = Field(None, gt=0, description="moving_mnist: clips generated, training and validation "
                              "together (default 2000)")
    frames: int | None = Field(None, gt=0, description="moving_mnist: frames per clip a model sees (default 10)")
    future: int | None = Field(None, gt=0, description="moving_mnist (task frames): frames to predict (default 10)")
    digits: int | None = Field(None, gt=0, description="moving_mnist: digits per clip (default 2)")
    # time series (task timeseries: classify whole series; task forecast: predict the next values)
    znorm: bool = Field(True, description="timeseries: z-normalise each series (each channel) on its own")
    unequal_length: Literal["pad", "resample"] = Field(
        "pad", description="timeseries: series of different lengths are padded with zeros after their end (a mask "
        "channel says where each ends) or resampled (linear interpolation) to one length")
    series_length: int | None = Field(None, gt=1, description="timeseries: the length series are brought to "
                                      "(default: the longest training series)")
    missing: Literal["interpolate", "zero", "error"] = Field(
        "interpolate", description="timeseries and forecast: missing values (NaN) are interpolated linearly along "
        "time (ends held), set to zero, or an error")
    time_column: str | int | None = Field(None, description="forecast: the CSV column of the time stamps (default: "
                                          "the first column when it is not numeric)")
    value_columns: list[str] | None = Field(None, description="forecast: the CSV columns the model sees (default: "
                                            "every numeric column but the time column)")
    target_columns: list[str] | None = Field(None, description="forecast: the columns predicted (default: every "
                                             "value column)")
    lookback: int | None = Field(None, gt=0, description="forecast: the steps of history the model sees")
    horizon: int = Field(1, gt=0, description="forecast: the steps predicted after each window")
    season: int | None = Field(None, gt=1, description="forecast: the seasonal period (12 for monthly data with a "
                               "yearly cycle) of the seasonal-naive baseline and of MASE's scale (default: none; "
                               "MASE then scales by the one-step naive forecast)")
    window_norm: Literal["none", "last", "mean"] = Field(
        "none", description="forecast: per-window normalisation (instance normalisation, as N-BEATS / RevIN): "
        "none; last: each input window has its last value (per column) subtracted and the target's added back to "
        "the forecast; mean: the same with the window's mean. The forecast then follows the level of the window, "
        "even outside the training range")
    cache_dir: str | None = None
    download: bool = True
    device_resident: Literal["auto", "on", "off"] = "auto"


class EarlyStoppingConfig(Section):
    monitor: Literal["val_loss", "val_accuracy", "train_loss", "train_accuracy", "val_map", "val_map_50",
                     "val_map_75", "val_miou", "val_dice", "val_pixel_accuracy", "val_mask_map"] = "val_loss"
    mode: Literal["min", "max", "auto"] = "auto"
    patience: int = Field(5, ge=0)
    min_delta: float = Field(0.0, ge=0.0)
    restore_best: bool = True


class InitConfig(Section):
    scheme: Literal["default", "random", "xavier", "he"] = "default"
    distribution: Literal["normal", "uniform"] = "normal"
    scale: float = Field(0.05, gt=0.0, description="std (normal) or bound (uniform) for 'random'")


class ModelConfig(Section):
    name: str | None = None
    layers: list[Any] | None = None
    input: list[int] | None = Field(None, description="[C, H, W]; taken from the data when unset")
    num_classes: int | None = Field(None, gt=0)
    init: InitConfig = Field(default_factory=InitConfig)
    options: dict[str, Any] = Field(default_factory=dict, description="extra builder arguments")
    pretrained: str | None = None
    weights: str | None = None
    data_init: int = Field(5000, ge=0, description="training images passed to the model's init_from_data() "
                           "before training, for models that have one (fastnet's whitening layer); 0 skips it")
    backbone: "ModelConfig | None" = Field(None, description="a torchvision-family detector's backbone: a "
                                           "classifier name, a layer list, or a model section {name|layers, "
                                           "input, options, num_classes}")
    backbone_weights: str | None = Field(None, description="RUN_OR_CHECKPOINT: a cnnkit classification run "
                                         "(its best weights) or a weights file, loaded into the backbone")
    embeddings: str | None = Field(None, description="text: a word-vectors file (word2vec text or binary, GloVe "
                                   "text) that initialises the embedding table of the vocabulary's words")

    @field_validator("backbone", mode="before")
    @classmethod
    def _backbone_shorthand(cls, v: Any) -> Any:
        # "resnet18" and a bare layer list are accepted for {name: resnet18} / {layers: [...]}.
        if isinstance(v, str):
            return {"name": v}
        if isinstance(v, list):
            return {"layers": v}
        return v

    @field_validator("init", mode="before")
    @classmethod
    def _init_shorthand(cls, v: Any) -> Any:
        # "he", "xavier_uniform", "random_normal" are accepted as shorthands.
        if isinstance(v, str):
            scheme, _, dist = v.partition("_")
            out: dict[str, Any] = {"scheme": scheme}
            if dist:
                out["distribution"] = dist
            return out
        return v

    @field_validator("input")
    @classmethod
    def _input_chw(cls, v: list[int] | None) -> list[int] | None:
        # [C, H, W] for images; [V, L] (vocabulary size, sequence length) for text
        # [C, L] for a series; for text [V, L] (a vocabulary holds padding, unknown and a word: V >= 3,
        # which the text task checks)
        if v is not None and (len(v) not in (2, 3, 4) or min(v) < 1):
            raise ValueError(f"model.input must be [C, H, W] with positive sizes or, for text, [V, L] (a vocabulary "
                             f"of V >= 3 tokens, padding and unknown included, and L tokens), [C, L] for a "
                             f"series, or [T, C, H, W] for clips, got {v}")
        return v

    @model_validator(mode="after")
    def _name_or_layers(self) -> "ModelConfig":
        if (self.name is None) == (self.layers is None):
            raise ValueError("set exactly one of model.name (a registered model) or model.layers (a layer list)")
        return self


ModelConfig.model_rebuild()


class OptimConfig(Section):
    name: str = "adam"
    lr: float = Field(1e-3, gt=0.0)
    weight_decay: float = Field(0.0, ge=0.0, description="decoupled weight decay")
    momentum: float | None = Field(None, ge=0.0, lt=1.0)
    gamma: float | None = Field(None, ge=0.0, lt=1.0)
    beta1: float | None = Field(None, ge=0.0, lt=1.0)
    beta2: float | None = Field(None, ge=0.0, lt=1.0)
    eps: float | None = Field(None, gt=0.0)
    nesterov: bool | None = None
    norm_lr_mult: float = Field(1.0, gt=0.0, description="learning-rate multiplier for the parameters of "
                                "normalisation layers (batch, group, layer norm)")
    norm_weight_decay: float | None = Field(None, ge=0.0, description="weight decay of the normalisation "
                                            "layers' parameters; unset: optim.weight_decay")

    def hyper(self) -> dict[str, Any]:
        """The optional hyperparameters that were set, as keyword arguments."""
        keys = ("momentum", "gamma", "beta1", "beta2", "eps", "nesterov")
        out = {k: getattr(self, k) for k in keys if getattr(self, k) is not None}
        if self.weight_decay:
            out["weight_decay"] = self.weight_decay
        return out


class ScheduleConfig(Section):
    name: Literal["constant", "step", "cosine", "onecycle", "linear"] = "constant"
    warmup_epochs: float = Field(0.0, ge=0.0)
    step_size: float = Field(10.0, gt=0.0, description="epochs between decays ('step')")
    gamma: float = Field(0.1, gt=0.0, description="decay factor ('step')")
    min_factor: float = Field(0.0, ge=0.0, le=1.0, description="final lr as a fraction of optim.lr")
    pct_start: float = Field(0.25, gt=0.0, lt=1.0, description="rising part of 'onecycle'")

    @model_validator(mode="after")
    def _onecycle_warms_up_itself(self) -> "ScheduleConfig":
        if self.name == "onecycle" and self.warmup_epochs:
            raise ValueError("onecycle rises by itself over schedule.pct_start; set warmup_epochs to 0 "
                             f"(got {self.warmup_epochs})")
        return self


class RegularizationConfig(Section):
    l1: float = Field(0.0, ge=0.0)
    l2: float = Field(0.0, ge=0.0)
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0)
    grad_clip: float | None = Field(None, gt=0.0)
    early_stopping: EarlyStoppingConfig | None = None


class AugmentConfig(Section):
    crop_padding: int = Field(0, ge=0, description="random crop after padding by this many pixels")
    crop_pad_mode: Literal["zeros", "reflect"] = Field("zeros", description="how crop_padding pads: zeros or "
                                                       "a mirror image of the border")
    rotation: float = Field(0.0, ge=0.0, le=180.0, description="max degrees of random rotation")
    hflip: bool | Literal["alternating"] = Field(False, description="true: flip each image with p=0.5; "
                                                 "'alternating': flip each image in every other epoch, half of "
                                                 "the images in odd epochs and the other half in even ones")
    brightness: float = Field(0.0, ge=0.0, lt=1.0)
    contrast: float = Field(0.0, ge=0.0, lt=1.0)
    cutout: int = Field(0, ge=0, description="side of a random square set to zero")
    scale_jitter: float = Field(0.0, ge=0.0, lt=1.0, description="detection: random zoom by a factor in "
                                "[1 - s, 1 + s] with a random shift, boxes following (torchvision v2)")
    saturation: float = Field(0.0, ge=0.0, lt=1.0, description="detection and segmentation: random saturation "
                              "factor in [1 - s, 1 + s] (torchvision ColorJitter)")
    hue: float = Field(0.0, ge=0.0, le=0.5, description="detection and segmentation: random hue shift in "
                       "[-h, h] turns of the colour wheel (torchvision ColorJitter)")
    vflip: bool = Field(False, description="segmentation and detection: flip each image upside down with p=0.5")
    elastic: float = Field(0.0, ge=0.0, description="segmentation: alpha of a random elastic deformation "
                           "(torchvision v2.ElasticTransform, as the U-Net paper); 0 turns it off")
    elastic_sigma: float = Field(5.0, gt=0.0, description="segmentation: smoothness (pixels) of the elastic field")
    mosaic: float = Field(0.0, ge=0.0, le=1.0, description="detection: probability that a training image is a "
                          "mosaic of four (YOLOv4), cut to the image size around a random centre")
    mosaic_off_epochs: int = Field(0, ge=0, description="detection: the last N epochs train on plain images "
                                   "(no mosaic), so training ends on pictures like the test ones")
    # time series (Um et al. 2017; Le Guennec et al. 2016)
    jitter: float = Field(0.0, ge=0.0, description="timeseries: std of Gaussian noise added to each value "
                          "(z-normalised units)")
    scaling: float = Field(0.0, ge=0.0, description="timeseries: std of a random factor around 1 multiplying "
                           "each series (each channel)")
    window_slice: float = Field(0.0, ge=0.0, lt=1.0, description="timeseries: cut this fraction of each series "
                                "at a random place and stretch the rest back to the full length")
    window_warp: float = Field(0.0, ge=0.0, lt=1.0, description="timeseries: speed a random window of this "
                               "fraction of the series up or down by 2x, the whole brought back to its length")

    def active(self) -> bool:
        return bool(self.crop_padding or self.rotation or self.hflip or self.brightness
                    or self.contrast or self.cutout or self.scale_jitter or self.mosaic or self.vflip
                    or self.elastic or self.saturation or self.hue or self.series_active())

    def series_active(self) -> bool:
        """Whether a time-series augmentation is on."""
        return bool(self.jitter or self.scaling or self.window_slice or self.window_warp)


class DistillConfig(Section):
    teacher: str
    temperature: float = Field(4.0, gt=0.0)
    alpha: float = Field(0.7, ge=0.0, le=1.0, description="weight of the soft-target term")


class DenoiseConfig(Section):
    """A denoising autoencoder (Vincent et al. 2008; task reconstruction): the training and validation
    inputs are corrupted (``cnnkit.models.generative.corrupt``), the target stays the clean image."""

    noise: Literal["gaussian", "masking", "salt_pepper"] = Field(
        "gaussian", description="gaussian: x + amount * N(0, 1); masking: each pixel set to 0 with probability "
        "amount; salt_pepper: each pixel set to 0 or 1 with probability amount (clipped to [0, 1])")
    amount: float = Field(0.5, gt=0.0, description="the noise's standard deviation (gaussian) or a pixel's "
                          "probability of being hit (masking, salt_pepper: at most 1)")

    @model_validator(mode="after")
    def _probability(self) -> "DenoiseConfig":
        if self.noise != "gaussian" and self.amount > 1:
            raise ValueError(f"{self.noise} noise takes a probability in (0, 1] as amount, got {self.amount}")
        return self


class LookaheadConfig(Section):
    """Lookahead (Zhang et al., 2019): every ``k`` steps the slow weights move ``alpha`` of the way to the
    fast ones and the fast weights restart from them; training ends on the slow weights."""

    k: int = Field(5, gt=0, description="optimiser steps between synchronisations")
    alpha: float = Field(0.5, gt=0.0, le=1.0, description="fraction of the way the slow weights move")
    ramp: float = Field(0.0, ge=0.0, description="p > 0 ramps alpha from 1 at the start: "
                        "1 - alpha_t = (1 - alpha) (t / T)^p; 0 keeps alpha constant")


class TrainConfig(Section):
    epochs: int = Field(10, gt=0)
    seed: int = 0
    device: str = "auto"
    runs_dir: str = "runs"
    name: str | None = Field(None, description="run folder name prefix")

    @field_validator("name")
    @classmethod
    def _plain_name(cls, v: str | None) -> str | None:
        if v is not None and (not v.strip() or "/" in v or "\\" in v or v in (".", "..") or "\0" in v):
            raise ValueError(f"train.name must be a plain folder name (no '/', '\\', '.' or '..'), got {v!r}; "
                             f"use train.runs_dir to choose where runs go")
        return v
    loss: Literal["cross_entropy", "mse", "bce", "dice", "focal", "cross_entropy+dice", "focal+dice", "mae",
                  "huber"] = Field(
        "cross_entropy", description="dice, focal and their sums with cross_entropy are segmentation losses; "
        "mae and huber (and mse) are forecasting's (task forecast: mse unless set)")
    class_weights: list[float] | None = Field(None, description="segmentation: a weight per class in the "
                                              "cross-entropy / focal loss (rare classes count more)")
    border_weight: float = Field(0.0, ge=0.0, description="segmentation: w0 of the U-Net paper's weight map, "
                                 "which makes pixels between two nearby objects count more; 0 turns it off")
    border_sigma: float = Field(5.0, gt=0.0, description="segmentation: sigma (pixels) of the border weight map")
    engine: Literal["torch", "reference"] = "torch"
    deterministic: bool = False
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    channels_last: bool = False
    compile: Literal["off", "default", "max-autotune"] = "off"
    ema: float | None = Field(None, gt=0.0, lt=1.0, description="decay of an exponential moving average of the "
                              "weights and batch-norm statistics, used for evaluation (warm-up: min(decay, "
                              "(1 + t) / (10 + t)) at update t)")
    eval_tta: Literal["none", "flip", "flip_translate"] = "none"
    checkpoint_every: int = Field(1, gt=0)
    distill: DistillConfig | None = None
    eval_every: int = Field(1, ge=0, description="validate after every N-th epoch and after the last; "
                            "0: after the last only (other epochs log val_loss and val_accuracy as null)")
    lookahead: LookaheadConfig | None = None
    cudnn_benchmark: bool = Field(False, description="let cuDNN time its algorithms for each new shape")
    cv_folds: int | None = Field(None, ge=2, description="K-fold cross-validation over the training data: K runs "
                                 "in folds/ of one parent run, whose final.json holds each metric's mean and "
                                 "standard deviation over the folds")
    log: list[Literal["tensorboard"]] = Field(default_factory=list, description="extra logs besides "
                                              "metrics.jsonl: tensorboard writes event files in RUN/tensorboard "
                                              "(scalars per epoch, the graph where it can be traced), read by "
                                              "'tensorboard --logdir runs' (pip install 'cnnkit[tensorboard]')")
    report: bool = Field(True, description="write RUN/report.html at the end of the run (cnnkit train, "
                         "finetune, --resume): curves, architecture, the task's results; `cnnkit report RUN` "
                         "writes it any time. The environment variable CNNKIT_REPORT=0 turns it off for every run")
    denoise: DenoiseConfig | None = Field(None, description="task reconstruction: train a denoising autoencoder "
                                          "(corrupted inputs, clean targets); validation noise is seeded")
    fid_classifier: str | None = Field(None, description="task gan: a classification run (folder or checkpoint) "
                                       "whose penultimate features measure the final FID; unset: a LeNet-5 is "
                                       "trained on the run's own training images (fixed seed) for it")

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if v in ("auto", "cpu", "cuda", "mps") or v.startswith("cuda:"):
            return v
        raise ValueError(f"train.device must be one of auto, cpu, cuda, cuda:N, mps; got {v!r}")

    @field_validator("compile", mode="before")
    @classmethod
    def _compile_bool(cls, v: Any) -> Any:
        # YAML reads `off`/`on` as booleans.
        if v is False:
            return "off"
        if v is True:
            return "default"
        return v


class FinetuneConfig(Section):
    freeze: str = "none"
    lr_mult: dict[str, float] = Field(default_factory=dict)
    unfreeze_at: dict[str, int] = Field(default_factory=dict)
    min_steps: int = Field(1000, ge=0, description="low data: when train.epochs passes over the training split "
                           "make fewer optimiser steps than this, each epoch passes over it more times "
                           "(data.epoch_repeats is raised); 0 keeps the epochs as they are")
    augment: Literal["auto", "off"] = Field("auto", description="auto: in the low-data case (min_steps raised "
                                            "the repeats) and when the config has no augmentation, add light "
                                            "geometric augmentation (rotation 10 degrees, shifts of 1/14 of the "
                                            "side); off: the config's augmentation only")


class Config(Section):
    task: str = Field("classification", description="what a batch is and how it is scored "
                      "(see cnnkit.tasks; `cnnkit tasks` lists them)")
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=lambda: ModelConfig(name="lenet5"))
    optim: OptimConfig = Field(default_factory=OptimConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    regularization: RegularizationConfig = Field(default_factory=RegularizationConfig)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    finetune: FinetuneConfig = Field(default_factory=FinetuneConfig)

    @model_validator(mode="after")
    def _forecast_regresses(self) -> "Config":
        # a forecaster's (and a frame predictor's) loss is a regression's: mse unless the config names one
        if self.task in ("forecast", "frames", "reconstruction") and "loss" not in self.train.model_fields_set:
            self.train.loss = "mse"
        if self.train.denoise is not None and self.task != "reconstruction":
            raise ValueError(f"train.denoise corrupts the inputs of task reconstruction; the task is {self.task!r}")
        if self.train.fid_classifier is not None and self.task != "gan":
            raise ValueError(f"train.fid_classifier measures a gan's samples; the task is {self.task!r}")
        return self

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


# --------------------------------------------------------------------------- loading

def _format_validation_error(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"])
        kind = e["type"]
        if kind == "extra_forbidden":
            section, _, key = loc.rpartition(".")
            allowed = _allowed_keys(section)
            hint = did_you_mean(key, allowed)
            lines.append(f"unknown config key {loc!r}{hint}; allowed keys here: {', '.join(allowed)}")
        elif kind == "literal_error":
            allowed = e.get("ctx", {}).get("expected", "")
            lines.append(f"{loc}: {e['input']!r} is not allowed; expected {allowed}")
        else:
            msg = e["msg"].removeprefix("Value error, ")
            shown = e.get("input")
            plain = isinstance(shown, dict) or shown is None or repr(shown) in msg
            lines.append(f"{loc}: {msg}" if plain else f"{loc}: {msg} (got {shown!r})")
    return "invalid config: " + "; ".join(lines)


def _allowed_keys(section_path: str) -> list[str]:
    model: type[BaseModel] = Config
    for part in filter(None, section_path.split(".")):
        field = model.model_fields.get(part)
        if field is None:
            return []
        ann = field.annotation
        sub = _section_type(ann)
        if sub is None:
            return []
        model = sub
    return list(model.model_fields)


def _section_type(ann: Any) -> type[BaseModel] | None:
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return ann
    for arg in getattr(ann, "__args__", ()) or ():
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
    return None


def parse_override(text: str) -> tuple[list[str], Any]:
    """``'optim.lr=0.01'`` -> ``(['optim', 'lr'], 0.01)``; the value is read as YAML."""
    key, sep, raw = text.partition("=")
    if not sep or not key or any(not p for p in key.split(".")):
        raise ConfigError(f"override {text!r} is not of the form key.path=value (e.g. optim.lr=0.01)")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as e:
        raise ConfigError(f"override {text!r}: value {raw!r} is not valid YAML ({e.problem})") from None
    return key.split("."), value


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of ``raw`` with each ``key.path=value`` applied."""
    out = copy.deepcopy(raw)
    for text in overrides:
        path, value = parse_override(text)
        node = out
        for i, part in enumerate(path[:-1]):
            nxt = node.get(part)
            if path[:i + 1] == ["model", "init"] and isinstance(nxt, str):
                nxt = node[part] = ModelConfig._init_shorthand(nxt)  # "he_uniform" -> its fields
            if nxt is None:
                nxt = node[part] = {}
            elif not isinstance(nxt, dict):
                raise ConfigError(f"override {text!r}: {'.'.join(path[:i + 1])} is not a section")
            node = nxt
        node[path[-1]] = value
        # Setting model.layers replaces a registered model name, and vice versa (unsetting one, =null,
        # leaves the other alone).
        if value is None:
            pass
        elif path == ["model", "layers"]:
            out["model"].pop("name", None)
        elif path == ["model", "name"]:
            out["model"].pop("layers", None)
    return out


def load_yaml_file(path: str | os.PathLike, what: str = "config file") -> Any:
    """Parse a YAML file the user named; a missing, unreadable or malformed file is a UserError."""
    p = Path(path)
    if not p.exists():
        raise UserError(f"{what} {str(p)!r} does not exist")
    if p.is_dir():
        raise UserError(f"{what} {str(p)!r} is a folder; expected a YAML file")
    try:
        return yaml.safe_load(p.read_text())
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read {what} {str(p)!r}: {e}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{what} {str(p)!r} is not valid YAML: {e}") from None


def read_yaml(path: str | os.PathLike) -> dict[str, Any]:
    p = Path(path)
    data = load_yaml_file(p)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(p)!r} must hold a mapping of sections, got {type(data).__name__}")
    return data


def validate(raw: dict[str, Any]) -> Config:
    """Check a raw config mapping: section keys and types, and a layer list's names and arguments."""
    try:
        cfg = Config.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(_format_validation_error(e)) from None
    if cfg.model.layers is not None:
        from cnnkit.spec import parse_layers

        parse_layers(cfg.model.layers)  # raises SpecError naming the layer
    return cfg


def is_config_path(target: str | os.PathLike) -> bool:
    """The one rule for "model name or config file?" (``summary``, ``explain shapes``): a ``.yaml`` /
    ``.yml`` name, anything with a ``/``, or an existing file; otherwise a registered model name."""
    text = str(target)
    return text.lower().endswith((".yaml", ".yml")) or "/" in text or Path(text).is_file()


def config_from(raw: dict[str, Any], overrides: list[str] | None = None) -> Config:
    """The one way from a raw mapping (a YAML file's, a run's, a checkpoint's) to a Config:
    ``key.path=value`` overrides applied to a copy, then validated."""
    return validate(apply_overrides(raw, list(overrides or [])))


def load_config(path: str | os.PathLike | None = None, overrides: list[str] | None = None) -> Config:
    """Read a YAML config (the demo recipe when ``path`` is None), apply overrides, validate."""
    return config_from(read_yaml(path if path is not None else DEFAULT_CONFIG), overrides)


def dump_yaml(data: dict[str, Any]) -> str:
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=None)
