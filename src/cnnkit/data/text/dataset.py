"""The ``text`` dataset and what turns its texts into batches of token ids.

The dataset gives texts (:class:`~cnnkit.data.text.formats.TextData`); the data layer cuts the
held-out split from them as from any dataset. Only then is the tokeniser fitted, on the training
split alone (:func:`tokenize_bundle`), and every split encoded once into :class:`TokenData`. The
bundle's ``input_shape`` becomes ``(V, L)``: the vocabulary size (the one-hot channels of a token
sequence) and the longest sequence a batch may hold.

Batches (:class:`PadCollate`) are ``(ids (B, T) int64, labels (B,))`` with 0 as padding. A model that
masks its padding (Kim's CNN) gets ``T`` = the batch's longest text, and the training loader groups
texts of similar length (:class:`Bucketed`) so that little is padded; a fixed-length model (a layer
list with a dense layer on the flattened sequence, the character CNN) gets every batch padded or cut
to ``L``.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

import torch

from cnnkit.config import DataConfig
from cnnkit.data.base import DataBundle
from cnnkit.data.registry import register_dataset
from cnnkit.data.text.formats import TextData, read_texts
from cnnkit.errors import UserError

#: Texts per bucket, as a multiple of the batch size: sorted by length within, shuffled between.
BUCKET_BATCHES = 32


def _reject_image_options(cfg: DataConfig) -> None:
    for key in ("image_size", "crop_size", "mask_values", "annotations"):
        value = getattr(cfg, key)
        if value is not None:
            raise UserError(f"data.{key}={value!r} is an image option; the text dataset takes data.path, "
                            f"data.text_column, data.label_column, data.tokenizer, data.min_freq, data.max_vocab, "
                            f"data.max_length and data.lowercase")


@register_dataset("text", "text classification: a label<TAB>text file (TSV/CSV, columns by data.text_column / "
                          "data.label_column) or a folder per class of .txt files (IMDB layout, with train/ and "
                          "test/ when present); data.path")
def text(cfg: DataConfig) -> DataBundle:
    _reject_image_options(cfg)
    if not cfg.path:
        raise UserError("data.name=text needs data.path=FILE.tsv (label<TAB>text lines), a .csv, or a folder with a "
                        "subfolder per class of .txt files")
    root = Path(cfg.path)
    test = None
    if root.is_dir() and (root / "train").is_dir():
        train = read_texts(root / "train", cfg.text_column, cfg.label_column)
        if (root / "test").is_dir():
            test = read_texts(root / "test", cfg.text_column, cfg.label_column, classes=train.classes)
    else:
        train = read_texts(root, cfg.text_column, cfg.label_column)
    counts = torch.bincount(torch.tensor(train.targets), minlength=len(train.classes)).tolist()
    description = (f"text {cfg.path}: {len(train)} texts, {len(train.classes)} classes "
                   f"({', '.join(f'{c} {n}' for c, n in list(zip(train.classes, counts))[:6])}"
                   f"{', ...' if len(train.classes) > 6 else ''})" + (f", {len(test)} test" if test else ""))
    return DataBundle(train=train, val=None, test=test, classes=train.classes, input_shape=(0, 0), mean=(0.0,),
                      std=(1.0,), description=description, extra={"task": "text"})


class TokenData:
    """Encoded texts: ``ids[i]`` (int64 tensor of token ids) with label ``targets[i]``; ``texts`` kept
    for the explainer and for messages."""

    def __init__(self, ids: list[torch.Tensor], targets: list[int], texts: list[str]) -> None:
        self.ids, self.targets, self.texts = ids, list(targets), texts

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.ids[i], self.targets[i]

    @property
    def lengths(self) -> list[int]:
        return [len(t) for t in self.ids]


class Bucketed:
    """A dataset whose training loader groups items of similar ``lengths`` into batches (the loader
    looks for ``bucket_lengths``): each epoch's shuffled order is cut into buckets of
    :data:`BUCKET_BATCHES` batches, sorted by length within a bucket, and the batches shuffled."""

    def __init__(self, ds: Any) -> None:
        self.ds = ds
        self.targets = getattr(ds, "targets", None)
        self.bucket_lengths = torch.tensor(ds.lengths, dtype=torch.long)

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int):
        return self.ds[i]


class PadCollate:
    """``[(ids, label), ...] -> (ids (B, T) int64 padded with 0, labels (B,))``: ``T`` is ``length`` when
    set (longer texts cut), else the longest text of the batch but at least ``min_length``."""

    def __init__(self, length: int | None = None, min_length: int = 1) -> None:
        self.length, self.min_length = length, max(1, min_length)

    def __call__(self, items: list[tuple[torch.Tensor, int]]) -> tuple[torch.Tensor, torch.Tensor]:
        if self.length is not None:
            t = self.length
        else:
            t = max([len(x) for x, _ in items] + [self.min_length])
        out = torch.zeros((len(items), t), dtype=torch.long)
        for row, (x, _) in enumerate(items):
            x = x[:t]
            out[row, :len(x)] = x
        return out, torch.tensor([int(y) for _, y in items], dtype=torch.long)


def texts_of(ds: Any) -> list[str]:
    """The texts of a text split (TextData, or a Subset / relabelled view of one)."""
    if isinstance(ds, TextData):
        return ds.texts
    return [ds[i][0] for i in range(len(ds))]


def encode(tokenizer, texts: Sequence[str], max_length: int | None) -> list[torch.Tensor]:
    """Each text's token ids (at least one: a text without any token is one unknown token)."""
    from cnnkit.data.text.tokenize import UNK

    return [torch.tensor(ids if ids else [UNK], dtype=torch.long)
            for ids in tokenizer.encode_batch(list(texts), max_length=max_length)]


def encode_split(ds: Any, tokenizer, max_length: int | None) -> TokenData:
    """A split of texts (TextData or a view of one) encoded by ``tokenizer``."""
    texts = texts_of(ds)
    targets = ds.targets if isinstance(ds, TextData) else [int(ds[i][1]) for i in range(len(ds))]
    return TokenData(encode(tokenizer, texts, max_length), targets, texts)


def tokenize_bundle(bundle: DataBundle, cfg: DataConfig, tokenizer=None) -> DataBundle:
    """``bundle`` with its texts encoded: the tokeniser fitted on the training split (or ``tokenizer``, a
    run's own), ``input_shape`` ``(V, L)`` with ``L`` = ``data.max_length`` or the longest training text,
    and ``extra['tokenizer']``."""
    from cnnkit.data.text.tokenize import fit_tokenizer

    train_texts = texts_of(bundle.train)
    if tokenizer is None:
        tokenizer = fit_tokenizer(train_texts, cfg.tokenizer, min_freq=cfg.min_freq, max_size=cfg.max_vocab,
                                  lowercase=cfg.lowercase)

    def split(ds: Any) -> TokenData | None:
        return None if ds is None else encode_split(ds, tokenizer, cfg.max_length)

    train = split(bundle.train)
    length = cfg.max_length or max((len(t) for t in train.ids), default=1)
    return replace(bundle, train=train, val=split(bundle.val), test=split(bundle.test),
                   input_shape=(tokenizer.vocab_size, length),
                   extra={**(bundle.extra or {}), "tokenizer": tokenizer})
