"""Text classification (the course's VI.C: sentiment and topic): token ids in, a class per text out.

Scoring is classification's (cross-entropy, accuracy, per-class precision / recall / F1 and the
confusion matrix in ``cnnkit eval``); what differs is the batch: ``(ids (B, T) int64, labels)``
padded with 0 (see :mod:`cnnkit.data.text.dataset`), and the tokeniser of the run (fitted on its
training split, saved in its folder and in its checkpoints), which ``predict`` and ``explain``
use to read new texts.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from cnnkit.data.text.dataset import Bucketed, PadCollate, encode
from cnnkit.errors import UserError
from cnnkit.tasks.base import Task, register_task
from cnnkit.tasks.classification import ClassificationTask, format_predictions


def variable_length(cfg) -> bool:
    """Whether the config's model masks its padding, so batches may be as long as their longest text
    (a registered text model that says so); else every batch is padded or cut to ``L``."""
    if cfg.model.name is None:
        return False
    from cnnkit.models.registry import MODELS

    return cfg.model.name in MODELS and bool(MODELS.entry(cfg.model.name).meta.get("variable_length"))


@register_task("text", "a class per text (sentiment, topic): token ids, Kim's CNN, character CNN, layer lists")
class TextTask(ClassificationTask):
    unit = "texts"

    def __init__(self, cfg, classes: list[str], input_shape: tuple[int, ...] | None = None) -> None:
        Task.__init__(self, cfg, classes, input_shape)
        if cfg.augment.active():
            on = [k for k, v in cfg.augment.model_dump().items() if v and k not in ("crop_pad_mode", "elastic_sigma")]
            raise UserError(f"augment.{on[0] if on else '...'} is an image augmentation; task text takes none "
                            f"(regularise text CNNs with dropout: model.options.dropout, or a dropout layer)")
        if cfg.train.loss not in ("cross_entropy", "mse", "bce"):
            raise UserError(f"train.loss={cfg.train.loss} is not a classification loss; task text takes cross_entropy, mse "
                            f"or bce")
        if cfg.train.eval_tta != "none":
            raise UserError(f"train.eval_tta={cfg.train.eval_tta} flips images; task text has no test-time "
                            f"augmentation (set it to none)")
        layers = cfg.model.layers
        if layers is not None and not (layers and isinstance(layers[0], (dict, str))
                                       and (layers[0] == "embedding" or (isinstance(layers[0], dict)
                                                                         and ("embedding" in layers[0]
                                                                              or "embed" in layers[0])))):
            raise UserError("task text feeds token ids to the network: a layer list starts with an embedding "
                            "layer (e.g. '- embedding: 128'); see 'cnnkit explain shapes' for Kim's network in YAML")
        self.tokenizer = None
        self.variable_length = variable_length(cfg)
        length = input_shape[-1] if input_shape else None
        self.max_length = length
        self.collate = PadCollate(None if self.variable_length else length)

    def attach(self, extra: dict[str, Any]) -> None:
        """Take the run's tokeniser (a Tokenizer, or its dict as checkpoints keep it)."""
        tok = (extra or {}).get("tokenizer")
        if isinstance(tok, dict):
            from cnnkit.data.text.tokenize import Tokenizer

            tok = Tokenizer.from_dict(tok)
        if tok is not None:
            self.tokenizer = tok

    def train_data(self, dataset: Any) -> Any:
        # Texts of similar length share batches: less padding for a model that masks it.
        return Bucketed(dataset) if self.variable_length and hasattr(dataset, "lengths") else dataset

    def eval_forward(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return model(x)

    # -- using a trained model

    def eval_split(self, data: Any) -> Any:
        from cnnkit.data.text.dataset import encode_split

        return encode_split(data, self.tokenizer, self.max_length)

    def eval_dataset(self, path: Any) -> Any:
        from cnnkit.data.text.formats import read_texts

        return read_texts(path, self.cfg.data.text_column, self.cfg.data.label_column, classes=self.classes)

    def encode_texts(self, texts: Sequence[str], device: torch.device | str = "cpu") -> torch.Tensor:
        """A batch of token ids for ``texts``, as the run's loaders make it."""
        if self.tokenizer is None:
            raise UserError("this run has no tokeniser (it was not trained with task text)")
        ids = encode(self.tokenizer, list(texts), self.max_length)
        return self.collate([(t, 0) for t in ids])[0].to(device)

    @torch.no_grad()
    def predict(self, model: nn.Module, x: torch.Tensor, names: Sequence[str], top_k: int = 5,
                **_: Any) -> list[dict]:
        probs = torch.softmax(model(x).float(), dim=1).cpu().numpy()
        out = format_predictions(names, probs, self.classes, top_k)
        for r in out:
            r["text"] = r.pop("file")
        return [{"text": r["text"], "top": r["top"], "probabilities": r["probabilities"]} for r in out]

    @torch.no_grad()
    def predict_texts(self, model: nn.Module, texts: Sequence[str], top_k: int = 5, batch_size: int = 256) -> list[dict]:
        """``cnnkit predict``'s JSON for raw texts: per text its top-k classes and every probability."""
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
        out: list[dict] = []
        for i in range(0, len(texts), batch_size):
            chunk = list(texts[i:i + batch_size])
            out += self.predict(model, self.encode_texts(chunk, device), chunk, top_k)
        return out
