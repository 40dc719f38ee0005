"""Johnson & Zhang (2017), "Deep Pyramid Convolutional Neural Networks for Text Categorization"
(ACL): ``dpcnn``.

::

    ids (B, L) ─ embedding ─ region embedding (conv 3) ─┬─ [ReLU, conv 3] x2 ─ + ─┐
                                                        └────── shortcut ───────┘
      then `blocks` times:  max pool 3, stride 2 (length / 2) ─┬─ [ReLU, conv 3] x2 ─ + ─┐
                                                              └────── shortcut ───────┘
      ─ max over the remaining positions ─ dropout ─ dense ─ logits

All convolutions have ``filters`` channels (the paper: 250; fixed, so the shortcuts are identities)
and 'same' padding; they are pre-activated (``x + W2 relu(W1 relu(x) + b1) + b2``). Each block
halves the length, so the computation per block halves too: the "pyramid". The paper's deepest
network has 15 weight layers: the region embedding, the two convolutions before the first pooling
and 6 downsampling blocks (``blocks: 6``, the default).

Region embedding: the paper computes it from the one-hot vectors of each 3-word region; here a
word embedding of ``embed_dim`` dimensions (128) followed by a width-3 convolution to ``filters``
channels (so pretrained word vectors can be loaded into ``embeddings[0]``). The paper's optional
unsupervised (tv-)embeddings are not included.

Padding: batches are padded with id 0 and the logits do not depend on that padding
(``variable_length = True``): the valid length of each sentence is followed through the network
(a stride-2 pooling of n positions leaves ceil(n / 2)), positions past it are zeroed after every
convolution (exactly what the 'same' convolution's zero padding gives a sentence alone), set to
the lowest value before each pooling (the pooling's own padding), and never win the final max.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cnnkit.errors import UserError
from cnnkit.models.registry import register_model
from cnnkit.models.text.base import (PAD_ID, TextClassifier, check_dropout, check_positive, length_mask,
                                     sequence_lengths)


class PreActBlock(nn.Module):
    """Two pre-activated 'same' width-3 convolutions with an identity shortcut; positions past
    each sentence's length are kept at zero."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv1d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor, keep: Tensor) -> Tensor:
        """``x (B, C, T)``, zero where ``keep (B, 1, T)`` is False."""
        h = self.conv1(F.relu(x)) * keep
        h = self.conv2(F.relu(h)) * keep
        return x + h


class DPCNN(TextClassifier):
    """``ids (B, L) -> logits (B, num_classes)``; any L >= 1, padding-invariant."""

    variable_length = True

    def __init__(self, num_classes: int, vocab_size: int, max_length: int, embed_dim: int = 128,
                 filters: int = 250, blocks: int = 6, dropout: float = 0.5) -> None:
        super().__init__()
        check_positive("dpcnn", num_classes=num_classes, vocab_size=vocab_size, embed_dim=embed_dim,
                       filters=filters)
        if isinstance(blocks, bool) or not isinstance(blocks, int) or blocks < 0:
            raise UserError(f"dpcnn: option blocks must be a non-negative integer, got {blocks!r}")
        check_dropout("dpcnn", dropout)
        self.max_length = int(max_length)
        self.blocks = blocks
        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=PAD_ID)
        self.region = nn.Conv1d(embed_dim, filters, 3, padding=1)
        self.first = PreActBlock(filters)
        self.pyramid = nn.ModuleList(PreActBlock(filters) for _ in range(blocks))
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(filters, num_classes)

    @property
    def embeddings(self) -> list[nn.Embedding]:
        """The word-vector table(s) pretrained vectors can be loaded into."""
        return [self.embedding]

    def forward_features(self, ids: Tensor) -> Tensor:
        """``(B, filters)``: the max over each sentence's positions of the last block's output."""
        lengths = sequence_lengths(ids).clamp(min=1)  # an all-padding row keeps one (zero) position
        keep = length_mask(lengths, ids.shape[1])[:, None, :]  # (B, 1, L)
        x = self.embedding(ids).transpose(1, 2) * keep
        x = self.region(x) * keep
        x = self.first(x, keep)
        lowest = torch.finfo(x.dtype).min
        for block in self.pyramid:
            # 3-wide max pooling with stride 2 and padding 1: n positions -> ceil(n / 2) = (n + 1) // 2.
            x = F.max_pool1d(x.masked_fill(~keep, lowest), 3, stride=2, padding=1)
            lengths = torch.div(lengths + 1, 2, rounding_mode="floor")
            keep = length_mask(lengths, x.shape[-1])[:, None, :]
            x = block(x.masked_fill(~keep, 0.0), keep)
        return x.masked_fill(~keep, lowest).amax(dim=2)

    def extra_repr(self) -> str:
        return f"blocks={self.blocks}"


@register_model("dpcnn", "Johnson & Zhang (2017)'s deep pyramid CNN: region embedding, blocks of [pool /2, "
                "two pre-activated conv 3 + shortcut] (250 filters), max pool, dense",
                default_input=(30000, 256), min_input=(1, 1), task="text", variable_length=True)
def dpcnn(num_classes: int = 2, in_chans: int = 30000, input_size: int = 256, embed_dim: int = 128,
          filters: int = 250, blocks: int = 6, dropout: float = 0.5) -> DPCNN:
    """``in_chans``: the vocabulary size; ``input_size``: the maximum sequence length (any shorter
    length works too). ``blocks``: the downsampling blocks (paper: 6, 15 weight layers in all)."""
    return DPCNN(num_classes, in_chans, input_size, embed_dim=embed_dim, filters=filters, blocks=blocks,
                 dropout=dropout)
