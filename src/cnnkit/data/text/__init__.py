"""Text data: labelled texts from files (:mod:`~cnnkit.data.text.formats`), tokenisers fitted on the
training split (:mod:`~cnnkit.data.text.tokenize`), and the encoded splits, padding and length buckets
of the text task (:mod:`~cnnkit.data.text.dataset`).

Importing :mod:`cnnkit.data` registers the ``text`` dataset.

Example::

    from cnnkit.data.text import fit_tokenizer
    tok = fit_tokenizer(["a fine film .", "a dull one ."], "word")
    tok.encode("a fine one")     # [3, 6, 7]: most frequent first, 0 = <pad>, 1 = <unk>
"""

from cnnkit.data.text.dataset import Bucketed, PadCollate, TokenData, encode_split, tokenize_bundle
from cnnkit.data.text.formats import TextData, read_texts
from cnnkit.data.text.tokenize import KINDS, PAD, UNK, Tokenizer, fit_tokenizer

__all__ = ["KINDS", "PAD", "UNK", "Bucketed", "PadCollate", "TextData", "TokenData", "Tokenizer", "encode_split",
           "fit_tokenizer", "read_texts", "tokenize_bundle"]
