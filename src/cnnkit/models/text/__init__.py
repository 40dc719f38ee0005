"""Text classifiers: token ids ``(B, L)`` (0 padding, 1 unknown) in, logits ``(B, num_classes)`` out.

Registered with ``task="text"`` and an input shape ``(V, L)``: V the vocabulary size (the
builder's ``in_chans``), L the (maximum) sequence length (``input_size``).

* ``kim_cnn`` (:mod:`.kim`): Kim 2014, variable length (``variable_length = True``);
* ``char_cnn`` (:mod:`.char`): Zhang, Zhao & LeCun 2015, fixed length (``variable_length = False``);
* ``dpcnn`` (:mod:`.dpcnn`): Johnson & Zhang 2017, variable length (``variable_length = True``).

Pretrained word vectors (word2vec text/binary, GloVe): :mod:`.embeddings`.
"""

from cnnkit.models.text import char, dpcnn, kim  # noqa: F401  (registers the models)
from cnnkit.models.text.base import PAD_ID, UNK_ID, TextClassifier, sequence_lengths
from cnnkit.models.text.char import CharCNN
from cnnkit.models.text.dpcnn import DPCNN
from cnnkit.models.text.embeddings import fill_embeddings, fill_model_embeddings, read_vectors
from cnnkit.models.text.kim import KimCNN

__all__ = ["CharCNN", "DPCNN", "KimCNN", "PAD_ID", "TextClassifier", "UNK_ID", "fill_embeddings",
           "fill_model_embeddings", "read_vectors", "sequence_lengths"]
