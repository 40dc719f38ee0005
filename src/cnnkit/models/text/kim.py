"""Kim (2014), "Convolutional Neural Networks for Sentence Classification" (EMNLP): ``kim_cnn``.

::

    ids (B, L) ─ embedding (D) ─┬─ conv1d width 3, `filters` ─ ReLU ─ max over time ─┐
                                ├─ conv1d width 4, `filters` ─ ReLU ─ max over time ─┼─ concat ─┐
                                └─ conv1d width 5, `filters` ─ ReLU ─ max over time ─┘          │
                                                                      logits ─ dense ─ dropout ─┘

Each filter of width k slides over the sentence's k-grams ('valid' convolution: no padding), and
max-over-time pooling keeps, per filter, its largest response: the feature says *whether* the
n-gram the filter detects occurs, not where. The paper's setting: D = 300 (word2vec), widths 3, 4
and 5 with 100 filters each, dropout 0.5 on the penultimate layer and an l2 constraint s = 3 on
the dense weights.

Variants (``variant`` option), as in the paper's section 3.1:

* ``rand``: every embedding is learned from a random initialisation (uniform in [-0.25, 0.25],
  the range Kim's code uses; the padding row is zero);
* ``static``: the embeddings are frozen (only meaningful once pretrained vectors are loaded into
  them, :func:`cnnkit.models.text.embeddings.fill_model_embeddings`);
* ``non-static``: the pretrained vectors are fine-tuned with the rest;
* ``multichannel``: two tables, both initialised from the vectors, the first frozen and the second
  tuned (``embeddings[0]`` and ``embeddings[1]``). Each filter is applied to both channels and the
  results are added before the ReLU; since a convolution is linear this is the convolution of the
  sum of the two embeddings, which is how it is computed.

Padding: batches are padded with id 0 up to their longest sentence, and a sentence's logits do not
depend on that padding. A sentence's length n is the position of its last non-zero id plus one;
the window of width k starting at t counts iff ``t + k <= max(n, k)``: a sentence shorter than
the widest filter is padded with zeros (inside ``forward``) so that every filter has at least one
window, and positions past the sentence are set to the dtype's lowest value before the max.

``word_dropout`` (not in the paper; Iyyer et al. 2015's word dropout): in training, each word of a
sentence is read as the unknown token with this probability, so the network cannot lean on a few
rare words (it regularises the ``rand`` embeddings, which overfit MR within three epochs).

``max_norm`` (the paper's s; None turns it off): after each gradient step the trainer calls
:meth:`KimCNN.apply_constraints`, which rescales every row of the dense weight (one class's weight
vector) whose l2 norm exceeds s back to norm s.

For the explainer, :meth:`KimCNN.pooled` gives the max-over-time features, the start of the n-gram
that won each one and each feature's filter width; in eval mode ``logits == model.fc(features)``.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cnnkit.errors import UserError
from cnnkit.models.registry import register_model
from cnnkit.models.text.base import (PAD_ID, UNK_ID, TextClassifier, check_choice, check_dropout, check_positive,
                                     sequence_lengths)

VARIANTS = ("rand", "static", "non-static", "multichannel")
EMBED_INIT = 0.25
"""Random embeddings are drawn from U(-0.25, 0.25), as in Kim's code (the variance of word2vec's vectors)."""


class KimCNN(TextClassifier):
    """``ids (B, L) -> logits (B, num_classes)``; any L >= 1, padding-invariant."""

    variable_length = True

    def __init__(self, num_classes: int, vocab_size: int, max_length: int, embed_dim: int = 300,
                 kernel_sizes: Sequence[int] = (3, 4, 5), filters: int = 100, dropout: float = 0.5,
                 variant: str = "rand", max_norm: float | None = 3.0, word_dropout: float = 0.0) -> None:
        super().__init__()
        kernel_sizes = tuple(kernel_sizes) if not isinstance(kernel_sizes, int) else (kernel_sizes,)
        check_positive("kim_cnn", num_classes=num_classes, vocab_size=vocab_size, embed_dim=embed_dim,
                       filters=filters)
        if not kernel_sizes:
            raise UserError("kim_cnn: option kernel_sizes is empty; give at least one filter width, e.g. [3, 4, 5]")
        for k in kernel_sizes:
            check_positive("kim_cnn", kernel_sizes=k)
        check_choice("kim_cnn", "variant", variant, VARIANTS)
        check_dropout("kim_cnn", dropout)
        if not 0.0 <= word_dropout < 1.0:
            raise UserError(f"kim_cnn: option word_dropout must be in [0, 1), got {word_dropout!r}")
        self.word_dropout = float(word_dropout)
        if max_norm is not None and (isinstance(max_norm, bool) or not isinstance(max_norm, (int, float))
                                     or not max_norm > 0):
            raise UserError(f"kim_cnn: option max_norm must be a positive number or null (off), got {max_norm!r}")
        self.variant = variant
        self.max_length = int(max_length)
        self.kernel_sizes = kernel_sizes
        self.filters = int(filters)
        self.max_norm = None if max_norm is None else float(max_norm)
        tables = 2 if variant == "multichannel" else 1
        self.embeddings = nn.ModuleList(nn.Embedding(vocab_size, embed_dim, padding_idx=PAD_ID) for _ in range(tables))
        for table in self.embeddings:
            with torch.no_grad():
                table.weight.uniform_(-EMBED_INIT, EMBED_INIT)
                table.weight[PAD_ID].zero_()
        if variant in ("static", "multichannel"):
            self.embeddings[0].weight.requires_grad_(False)  # the static channel
        if variant == "multichannel":
            self.embeddings[1].load_state_dict(self.embeddings[0].state_dict())  # both start from the same vectors
        self.convs = nn.ModuleList(nn.Conv1d(embed_dim, filters, k) for k in kernel_sizes)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(filters * len(kernel_sizes), num_classes)
        widths = torch.tensor([k for k in kernel_sizes for _ in range(filters)], dtype=torch.long)
        self.register_buffer("widths", widths, persistent=False)

    # -- the network

    def embed(self, ids: Tensor) -> Tensor:
        """``(B, D, L)``: the embedded sentence (for ``multichannel``, the sum of the two channels)."""
        x = self.embeddings[0](ids)
        for table in self.embeddings[1:]:
            x = x + table(ids)
        return x.transpose(1, 2)

    def _pool(self, ids: Tensor) -> tuple[Tensor, Tensor]:
        lengths = sequence_lengths(ids)
        if self.training and self.word_dropout > 0:  # each word of the sentence read as unknown with p
            drop = (torch.rand(ids.shape, device=ids.device) < self.word_dropout) & (ids != PAD_ID)
            ids = ids.masked_fill(drop, UNK_ID)
        # max(kernel_sizes) - 1 zeros at the end: every filter has a window even for one token.
        # (A constant pad keeps the traced graph free of data-dependent shapes.)
        x = self.embed(F.pad(ids, (0, max(self.kernel_sizes) - 1), value=PAD_ID))
        values, positions = [], []
        for conv, k in zip(self.convs, self.kernel_sizes):
            c = F.relu(conv(x))  # (B, filters, L + kmax - k)
            starts = torch.arange(c.shape[-1], device=ids.device)
            valid = (starts[None, :] + k) <= lengths.clamp(min=k)[:, None]  # (B, T)
            c = c.masked_fill(~valid[:, None, :], torch.finfo(c.dtype).min)
            v, i = c.max(dim=2)
            values.append(v)
            positions.append(i)
        return torch.cat(values, dim=1), torch.cat(positions, dim=1)

    def forward_features(self, ids: Tensor) -> Tensor:
        """``(B, filters * len(kernel_sizes))``: the max-over-time features, widths in ``kernel_sizes`` order."""
        return self._pool(ids)[0]

    def pooled(self, ids: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(features (B, F), positions (B, F), widths (F,))``: each feature's max over time, the start
        of the n-gram that gave it (tokens ``positions[b, f] : positions[b, f] + widths[f]``, which may
        run into the padding for a sentence shorter than the filter) and its filter width. In eval mode
        ``model(ids) == model.fc(features)``."""
        features, positions = self._pool(ids)
        return features, positions, self.widths

    # -- training

    @torch.no_grad()
    def apply_constraints(self) -> None:
        """The paper's l2 constraint: every row of the dense weight (a class's weight vector) whose norm
        exceeds ``max_norm`` is rescaled to norm ``max_norm``. The trainer calls it after each step."""
        if self.max_norm is None:
            return
        w = self.fc.weight
        norms = w.norm(dim=1, keepdim=True)
        w.mul_(torch.where(norms > self.max_norm, self.max_norm / norms.clamp(min=1e-12), torch.ones_like(norms)))

    def extra_repr(self) -> str:
        return f"variant={self.variant!r}, kernel_sizes={self.kernel_sizes}, filters={self.filters}, " \
               f"max_norm={self.max_norm}"


@register_model("kim_cnn", "Kim (2014)'s sentence CNN: embedding, conv1d widths 3/4/5 x 100 filters, ReLU, "
                "max over time, dropout, dense; variants rand/static/non-static/multichannel",
                default_input=(20000, 64), min_input=(1, 1), task="text", variable_length=True)
def kim_cnn(num_classes: int = 2, in_chans: int = 20000, input_size: int = 64, embed_dim: int = 300,
            kernel_sizes: Sequence[int] = (3, 4, 5), filters: int = 100, dropout: float = 0.5,
            variant: str = "rand", max_norm: float | None = 3.0, word_dropout: float = 0.0) -> KimCNN:
    """``in_chans``: the vocabulary size; ``input_size``: the maximum sentence length (any shorter
    length works too)."""
    return KimCNN(num_classes, in_chans, input_size, embed_dim=embed_dim, kernel_sizes=kernel_sizes,
                  filters=filters, dropout=dropout, variant=variant, max_norm=max_norm, word_dropout=word_dropout)
