"""Zhang, Zhao & LeCun (2015), "Character-level Convolutional Networks for Text Classification"
(NeurIPS): ``char_cnn``, the paper's "small" network.

::

    chars (B, L) ─ embed ─ conv 7 ─ pool 3 ─ conv 7 ─ pool 3 ─ conv 3 ─ conv 3 ─ conv 3 ─ conv 3
      ─ pool 3 ─ flatten ─ dense `dense` ─ dropout ─ dense `dense` ─ dropout ─ dense num_classes

Every convolution has ``width`` features (small: 256; large: 1024) and a ReLU, the poolings are
non-overlapping max poolings of 3, and the two hidden dense layers have ``dense`` units (small:
1024; large: 2048) with ReLU and dropout 0.5 between them. With the paper's L = 1014 characters the
last pooling leaves (1014 - 96) / 27 = 34 frames, so the first dense layer sees 34 x width features.

Input: the ids of a character tokenizer (0 padding, 1 unknown character), exactly ``input_size``
characters (the model is fixed-length, ``variable_length = False``: the text task pads or
truncates every batch to that length). The paper quantises characters as one-hot vectors over its
70-character alphabet, the unknown characters and the blanks as zero vectors; it also feeds the
characters in reverse order, which is the tokenizer's business. Two input encodings:

* ``one_hot: false`` (default): a learned ``nn.Embedding`` of ``embed_dim`` (16) dimensions per
  character, the padding row zero. Cheaper than one-hot when the alphabet is large, and learns the
  same first layer (a one-hot input times the first convolution is an embedding).
* ``one_hot: true``: the paper's encoding, a frozen identity table with the padding and unknown rows
  set to zero.

Smallest input: the valid convolutions and the three poolings need at least 123 characters
(:func:`smallest_length`). The paper initialises the small model's weights from N(0, 0.05), which
``model.init: {scheme: random, scale: 0.05}`` reproduces; torch's default initialisation is kept
otherwise.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from cnnkit.errors import UserError
from cnnkit.models.registry import register_model
from cnnkit.models.text.base import PAD_ID, UNK_ID, TextClassifier, check_dropout, check_positive

LAYERS = ((7, 3), (7, 3), (3, None), (3, None), (3, None), (3, 3))
"""(kernel, pooling after it or None) for the six convolutions of the paper's Table 1."""


def output_length(length: int) -> int:
    """The frames left after the six convolutions and three poolings (0 or less: too short)."""
    for kernel, pool in LAYERS:
        length -= kernel - 1
        if length < 1:
            return 0
        if pool:
            length //= pool
    return length


def smallest_length() -> int:
    """The fewest characters the network takes: 123."""
    n = 1
    while output_length(n) < 1:
        n += 1
    return n


MIN_LENGTH = smallest_length()


class CharCNN(TextClassifier):
    """``chars (B, L) -> logits (B, num_classes)`` with L = ``max_length`` exactly."""

    variable_length = False

    def __init__(self, num_classes: int, alphabet_size: int, max_length: int = 1014, width: int = 256,
                 dense: int = 1024, dropout: float = 0.5, one_hot: bool = False, embed_dim: int = 16) -> None:
        super().__init__()
        check_positive("char_cnn", num_classes=num_classes, alphabet_size=alphabet_size, width=width,
                       dense=dense, embed_dim=embed_dim)
        check_dropout("char_cnn", dropout)
        if output_length(max_length) < 1:
            raise UserError(f"char_cnn needs sequences of at least {MIN_LENGTH} characters, got {max_length}; "
                            f"set data.max_length={MIN_LENGTH} or more (the paper uses 1014)")
        self.max_length = int(max_length)
        self.one_hot = bool(one_hot)
        if one_hot:
            table = torch.eye(alphabet_size)
            table[PAD_ID] = 0
            if alphabet_size > UNK_ID:
                table[UNK_ID] = 0
            self.embedding = nn.Embedding.from_pretrained(table, freeze=True, padding_idx=PAD_ID)
        else:
            self.embedding = nn.Embedding(alphabet_size, embed_dim, padding_idx=PAD_ID)
        layers: list[nn.Module] = []
        c_in = self.embedding.embedding_dim
        for kernel, pool in LAYERS:
            layers += [nn.Conv1d(c_in, width, kernel), nn.ReLU(inplace=True)]
            if pool:
                layers.append(nn.MaxPool1d(pool))
            c_in = width
        self.features = nn.Sequential(*layers)
        self.frames = output_length(max_length)
        self.classifier = nn.Sequential(
            nn.Linear(width * self.frames, dense), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(dense, dense), nn.ReLU(inplace=True))
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(dense, num_classes)

    @property
    def embeddings(self) -> list[nn.Embedding]:
        """No word-vector tables: a character model's embedding is learned (or one-hot)."""
        return []

    def forward_features(self, ids: Tensor) -> Tensor:
        """``(B, dense)``: the second hidden dense layer's output (before its dropout)."""
        if isinstance(ids, Tensor) and not torch.jit.is_tracing() and ids.shape[-1] != self.max_length:
            raise UserError(f"char_cnn was built for sequences of exactly {self.max_length} characters, got "
                            f"{ids.shape[-1]}; pad or truncate the batch to {self.max_length}")
        x = self.embedding(ids).transpose(1, 2)  # (B, E, L)
        return self.classifier(self.features(x).flatten(1))

    def extra_repr(self) -> str:
        return f"max_length={self.max_length}, one_hot={self.one_hot}, frames={self.frames}"


@register_model("char_cnn", "Zhang, Zhao & LeCun (2015)'s character CNN, 'small': 6 convs (256) and 3 dense "
                "(1024); fixed-length input of characters (1014)",
                default_input=(70, 1014), min_input=(1, MIN_LENGTH), task="text")
def char_cnn(num_classes: int = 4, in_chans: int = 70, input_size: int = 1014, width: int = 256,
             dense: int = 1024, dropout: float = 0.5, one_hot: bool = False, embed_dim: int = 16) -> CharCNN:
    """``in_chans``: the alphabet size (character ids, 0 padding, 1 unknown); ``input_size``: the exact
    sequence length. ``width`` 1024 and ``dense`` 2048 give the paper's 'large' network."""
    return CharCNN(num_classes, in_chans, input_size, width=width, dense=dense, dropout=dropout, one_hot=one_hot,
                   embed_dim=embed_dim)
