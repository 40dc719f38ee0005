"""Tokenisers for text CNNs: a text becomes a list of token ids, ``0`` being ``<pad>`` and ``1`` ``<unk>``.

Four kinds, fitted on the training texts by :func:`fit_tokenizer`:

``word``
    Words, numbers and punctuation (see :func:`split_words` for the rule), lower-cased by default.
    The vocabulary is every token seen at least ``min_freq`` times, most frequent first, ties broken
    alphabetically, cut to ``max_size`` entries *counting* ``<pad>`` and ``<unk>``.
``char``
    Every character is a token (lower-cased by default, one character at a time); every whitespace
    character (tab, newline, ...) is the token ``" "``. Same vocabulary rules as ``word``.
``bpe``
    Byte-pair encoding trained with the HuggingFace ``tokenizers`` library: a Lowercase normaliser
    (when ``lowercase``), a Metaspace pre-tokeniser and decoder (spaces become ``▁``, so that decoding
    gives back the normalised text), ``vocab_size = max_size`` (8000 by default).
``wordpiece``
    WordPiece as BERT: NFD + Lowercase + StripAccents normaliser (only NFD without ``lowercase``),
    the BERT pre-tokeniser (whitespace and punctuation), the ``##`` WordPiece decoder. Trained as the
    library's WordPieceTrainer does, less its run-to-run variation (see ``_train_subword``).

For the subword kinds ``<pad>`` and ``<unk>`` are plain vocabulary entries, not "added tokens": the
literal text ``<pad>`` is split like any other text, and an id 0 that a merge might spell becomes
``UNK``, so :meth:`Tokenizer.encode` never gives the padding id, whatever the kind.

Fitting is deterministic: the same texts and options give the same vocabulary. A tokeniser is
saved as one JSON file holding its options and vocabulary (subword kinds: the library's own JSON).

Example::

    tok = fit_tokenizer(train_texts, "word", min_freq=2, max_size=20000)
    tok.encode("It's an utterly charming film.", max_length=50)   # [ids]
    tok.tokens("It's an utterly charming film.")   # ['it', "'s", 'an', 'utterly', 'charming', 'film', '.']
    tok.save("tokenizer.json"); Tokenizer.load("tokenizer.json")
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Sequence

from cnnkit.atomic import atomic_write_text
from cnnkit.errors import UserError, did_you_mean

__all__ = ["KINDS", "PAD", "PAD_TOKEN", "UNK", "UNK_TOKEN", "Tokenizer", "fit_tokenizer", "split_words"]

KINDS = ("word", "char", "bpe", "wordpiece")
PAD, UNK = 0, 1
PAD_TOKEN, UNK_TOKEN = "<pad>", "<unk>"
SPECIALS = (PAD_TOKEN, UNK_TOKEN)
#: The subword vocabulary size when ``max_size`` is not given.
DEFAULT_SUBWORD_SIZE = 8000
#: What a saved tokeniser's ``format`` field says.
#: The WordPiece mark of a piece that continues a word.
PREFIX = "##"
FORMAT = "cnnkit.tokenizer"
VERSION = 1

# --- the word rule ---------------------------------------------------------------------------------
# A word is a run of letters and digits (any script); pieces joined by a hyphen ("well-made"), by an
# apostrophe that does not start an English clitic ("o'clock", "rock'n'roll"), or by . , : between two
# digits ("3.5", "1,000", "10:30") stay one token. The clitics 's 're 've 'd 'll 'm and n't are split
# off as their own tokens, as Kim (2014)'s clean_str and the Penn Treebank do: "it's" -> it 's,
# "don't" -> do n't, "can't" -> ca n't. Every other non-space character (punctuation, symbols,
# underscore, emoji) is a token of its own. Matching ignores case; lower-casing is done per token.
_W = r"[^\W_]"                       # a letter or a digit
_APOS = r"['\u2019]"                 # ' or the typographic ’
_CLITIC = r"(?:s|re|ve|d|ll|m)"
_NT = rf"n{_APOS}t(?!{_W})"
_PIECE = rf"(?:(?!{_NT}){_W})+"
_SEP = rf"(?:-|{_APOS}(?!{_CLITIC}(?!{_W}))|(?<=\d)[.,:](?=\d))"
WORD_PATTERN = rf"{_NT}|{_APOS}{_CLITIC}(?!{_W})|{_PIECE}(?:{_SEP}{_PIECE})*|\S"
_WORD_RE = re.compile(WORD_PATTERN, re.IGNORECASE)
_SPACE_RE = re.compile(r"\s")


def split_words(text: str) -> list[str]:
    """The word tokens of ``text``, case kept: ``"Don't stop-motion 3.5!"`` ->
    ``['Do', "n't", 'stop-motion', '3.5', '!']``."""
    return _WORD_RE.findall(text)


# --- the tokenisers --------------------------------------------------------------------------------


class Tokenizer:
    """Text -> token ids. Build one with :func:`fit_tokenizer`, :meth:`from_dict` or :meth:`load`.

    ``kind`` is one of :data:`KINDS`; ``vocab_size`` counts ``<pad>`` (id 0) and ``<unk>`` (id 1).
    """

    kind: str
    lowercase: bool

    # the options it was fitted with, kept for the record (to_dict)
    def __init__(self, *, lowercase: bool = True, min_freq: int = 1, max_size: int | None = None) -> None:
        self.lowercase = bool(lowercase)
        self.min_freq = min_freq
        self.max_size = max_size

    # -- per kind --
    @property
    def vocab_size(self) -> int:
        raise NotImplementedError

    def tokens(self, text: str) -> list[str]:
        """The token strings of ``text``, one per id that :meth:`encode` gives."""
        raise NotImplementedError

    def spans(self, text: str) -> list[tuple[int, int]]:
        """Each token's ``(start, end)`` character offsets in ``text`` (``text[start:end]`` is what it
        came from), for highlighting."""
        raise NotImplementedError

    def encode(self, text: str, max_length: int | None = None) -> list[int]:
        """The token ids of ``text`` (unknown tokens -> ``UNK``), the first ``max_length`` of them."""
        raise NotImplementedError

    def encode_batch(self, texts: Iterable[str], max_length: int | None = None) -> list[list[int]]:
        """:meth:`encode` of each text."""
        _check_max_length(max_length)
        return [self.encode(t, max_length) for t in texts]

    def decode(self, ids: Iterable[int]) -> str:
        """The text of ``ids``, padding dropped."""
        raise NotImplementedError

    def vocabulary(self) -> list[str]:
        """The token of each id (index = id)."""
        raise NotImplementedError

    def token_to_id(self, token: str) -> int:
        """The id of ``token``; ``UNK`` when it is not in the vocabulary."""
        raise NotImplementedError

    def _payload(self) -> dict[str, Any]:
        raise NotImplementedError

    # -- shared --
    def id_to_token(self, i: int) -> str:
        """The token of id ``i``."""
        vocab = self.vocabulary()
        i = _check_id(i, len(vocab))
        return vocab[i]

    def __len__(self) -> int:
        return self.vocab_size

    def __repr__(self) -> str:
        return f"Tokenizer(kind={self.kind!r}, vocab_size={self.vocab_size}, lowercase={self.lowercase})"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict holding everything needed to rebuild the tokeniser (:meth:`from_dict`)."""
        return {"format": FORMAT, "version": VERSION, "kind": self.kind,
                "options": {"lowercase": self.lowercase, "min_freq": self.min_freq, "max_size": self.max_size},
                **self._payload()}

    @classmethod
    def from_dict(cls, d: Any) -> "Tokenizer":
        """The tokeniser of a :meth:`to_dict` dict; a dict that is not one is a UserError."""
        if not isinstance(d, dict):
            raise UserError(f"not a tokenizer: expected a dict, got {type(d).__name__}")
        kind = d.get("kind")
        if kind not in KINDS:
            raise UserError(f"not a tokenizer: unknown kind {kind!r}{did_you_mean(str(kind), KINDS)}; "
                            f"allowed: {', '.join(KINDS)}")
        options = d.get("options", {})
        if not isinstance(options, dict):
            raise UserError(f"not a tokenizer: 'options' must be a dict, got {type(options).__name__}")
        lowercase = options.get("lowercase", True)
        if not isinstance(lowercase, bool):
            raise UserError(f"not a tokenizer: options.lowercase must be true or false, got {lowercase!r}")
        opts = {"lowercase": lowercase, "min_freq": options.get("min_freq", 1), "max_size": options.get("max_size")}
        if kind in ("word", "char"):
            vocab = d.get("vocab")
            if not isinstance(vocab, list) or not all(isinstance(t, str) for t in vocab):
                raise UserError(f"not a {kind} tokenizer: 'vocab' must be a list of token strings")
            if vocab[:2] != list(SPECIALS):
                raise UserError(f"not a {kind} tokenizer: the vocabulary must start with {PAD_TOKEN!r}, {UNK_TOKEN!r}")
            if len(set(vocab)) != len(vocab):
                dup = next(t for t, n in Counter(vocab).items() if n > 1)
                raise UserError(f"not a {kind} tokenizer: the token {dup!r} appears twice in the vocabulary")
            return (_WordTokenizer if kind == "word" else _CharTokenizer)(vocab, **opts)
        source = d.get("tokenizer")
        if not isinstance(source, str):
            raise UserError(f"not a {kind} tokenizer: 'tokenizer' must be the tokenizers library's JSON string")
        from tokenizers import Tokenizer as HFTokenizer

        try:
            hf = HFTokenizer.from_str(source)
        except Exception as e:  # the library raises a bare Exception on bad JSON
            raise UserError(f"not a {kind} tokenizer: the tokenizers library cannot read it: {e}") from None
        if hf.token_to_id(PAD_TOKEN) != PAD or hf.token_to_id(UNK_TOKEN) != UNK:
            raise UserError(f"not a {kind} tokenizer: {PAD_TOKEN!r} and {UNK_TOKEN!r} must have ids 0 and 1")
        return _SubwordTokenizer(kind, hf, **opts)

    def save(self, path: str | os.PathLike) -> None:
        """Write the tokeniser to ``path`` as JSON, atomically."""
        atomic_write_text(path, json.dumps(self.to_dict(), ensure_ascii=False) + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Tokenizer":
        """The tokeniser that :meth:`save` wrote to ``path``."""
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise UserError(f"tokenizer file not found: {str(p)!r}") from None
        except (OSError, UnicodeDecodeError) as e:
            raise UserError(f"cannot read the tokenizer file {str(p)!r}: {e}") from None
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise UserError(f"{str(p)!r} is not a tokenizer: invalid JSON ({e})") from None
        try:
            return cls.from_dict(d)
        except UserError as e:
            raise UserError(f"{str(p)!r}: {e}") from None


class _VocabTokenizer(Tokenizer):
    """A tokeniser with a plain vocabulary list (word, char)."""

    joiner = ""

    def __init__(self, vocab: Sequence[str], **options: Any) -> None:
        super().__init__(**options)
        self._vocab = list(vocab)
        self._index = {t: i for i, t in enumerate(self._vocab)}

    @property
    def vocab_size(self) -> int:
        return len(self._vocab)

    def encode(self, text: str, max_length: int | None = None) -> list[int]:
        _check_max_length(max_length)
        get = self._index.get
        ids = [get(t, UNK) for t in self.tokens(text)]
        return ids if max_length is None else ids[:max_length]

    def decode(self, ids: Iterable[int]) -> str:
        vocab, n = self._vocab, len(self._vocab)
        return self.joiner.join(vocab[_check_id(i, n)] for i in _ids(ids) if i != PAD)

    def vocabulary(self) -> list[str]:
        return list(self._vocab)

    def id_to_token(self, i: int) -> str:
        return self._vocab[_check_id(i, len(self._vocab))]

    def token_to_id(self, token: str) -> int:
        return self._index.get(token, UNK)

    def _payload(self) -> dict[str, Any]:
        return {"vocab": list(self._vocab)}


class _WordTokenizer(_VocabTokenizer):
    kind = "word"
    joiner = " "

    def tokens(self, text: str) -> list[str]:
        _check_text(text)
        words = _WORD_RE.findall(text)
        return [w.lower() for w in words] if self.lowercase else words

    def spans(self, text: str) -> list[tuple[int, int]]:
        _check_text(text)
        return [m.span() for m in _WORD_RE.finditer(text)]


class _CharTokenizer(_VocabTokenizer):
    kind = "char"

    def tokens(self, text: str) -> list[str]:
        _check_text(text)
        text = _SPACE_RE.sub(" ", text)
        return [c.lower() for c in text] if self.lowercase else list(text)

    def spans(self, text: str) -> list[tuple[int, int]]:
        _check_text(text)
        return [(i, i + 1) for i in range(len(text))]


class _SubwordTokenizer(Tokenizer):
    """bpe / wordpiece: a ``tokenizers.Tokenizer`` underneath."""

    def __init__(self, kind: str, hf: Any, **options: Any) -> None:
        super().__init__(**options)
        self.kind = kind
        self._hf = hf
        vocab = hf.get_vocab(with_added_tokens=True)
        self._vocab = [""] * len(vocab)
        for t, i in vocab.items():
            if not 0 <= i < len(vocab):
                raise UserError(f"not a {kind} tokenizer: its token ids are not 0..{len(vocab) - 1}")
            self._vocab[i] = t

    @property
    def vocab_size(self) -> int:
        return len(self._vocab)

    def _encoding(self, text: str) -> Any:
        _check_text(text)
        return self._hf.encode(text, add_special_tokens=False)

    def tokens(self, text: str) -> list[str]:
        return list(self._encoding(text).tokens)

    def spans(self, text: str) -> list[tuple[int, int]]:
        # The Metaspace (bpe) offsets of "▁word" take in the space before it: trim the whitespace at
        # either end of a span, unless the token is nothing but whitespace.
        out = []
        for s, e in self._encoding(text).offsets:
            piece = text[s:e]
            if piece.strip():
                s += len(piece) - len(piece.lstrip())
                e -= len(piece) - len(piece.rstrip())
            out.append((s, e))
        return out

    def encode(self, text: str, max_length: int | None = None) -> list[int]:
        _check_max_length(max_length)
        return _no_pad(self._encoding(text).ids, max_length)

    def encode_batch(self, texts: Iterable[str], max_length: int | None = None) -> list[list[int]]:
        _check_max_length(max_length)
        texts = list(texts)
        for t in texts:
            _check_text(t)
        return [_no_pad(e.ids, max_length) for e in self._hf.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids: Iterable[int]) -> str:
        n = len(self._vocab)
        kept = [_check_id(i, n) for i in _ids(ids) if i != PAD]
        return self._hf.decode(kept, skip_special_tokens=False)

    def vocabulary(self) -> list[str]:
        return list(self._vocab)

    def id_to_token(self, i: int) -> str:
        return self._vocab[_check_id(i, len(self._vocab))]

    def token_to_id(self, token: str) -> int:
        i = self._hf.token_to_id(token)
        return UNK if i is None else i

    def _payload(self) -> dict[str, Any]:
        return {"tokenizer": self._hf.to_str()}


def _no_pad(ids: list[int], max_length: int | None) -> list[int]:
    """``ids`` cut to ``max_length``, a stray padding id made ``UNK`` (a loaded file may mark "<pad>" as an
    added token, or a merge may spell it): padding is what the batcher adds, never a text's token."""
    if max_length is not None:
        ids = ids[:max_length]
    return [UNK if i == PAD else i for i in ids] if PAD in ids else ids


# --- fitting ---------------------------------------------------------------------------------------


def fit_tokenizer(texts: Sequence[str], kind: str = "word", *, min_freq: int = 1, max_size: int | None = None,
                  lowercase: bool = True) -> Tokenizer:
    """A tokeniser of ``kind`` fitted on ``texts`` (the training split).

    ``min_freq``: a token enters the vocabulary when it occurs at least this often (subwords: the
    least count of a merge). ``max_size``: the largest vocabulary, ``<pad>`` and ``<unk>`` included
    (word, char: no limit by default; bpe, wordpiece: 8000 by default; a subword vocabulary always
    holds every character of the texts, so it is larger than ``max_size`` when they have more).
    Texts that are all empty or whitespace are a UserError, as is a ``min_freq`` no token reaches.
    """
    if kind not in KINDS:
        raise UserError(f"unknown tokenizer kind {kind!r}{did_you_mean(str(kind), KINDS)}; "
                        f"allowed: {', '.join(KINDS)}")
    if isinstance(min_freq, bool) or not isinstance(min_freq, int) or min_freq < 1:
        raise UserError(f"min_freq must be an integer >= 1, got {min_freq!r}")
    if max_size is not None and (isinstance(max_size, bool) or not isinstance(max_size, int) or max_size < 3):
        raise UserError(f"max_size must be an integer >= 3 (it counts {PAD_TOKEN} and {UNK_TOKEN}) or None, "
                        f"got {max_size!r}")
    if isinstance(texts, str):
        raise UserError("fit_tokenizer needs a list of texts, not one string")
    texts = list(texts)
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise UserError(f"fit_tokenizer: text {i} is a {type(t).__name__}, not a string")
    if not texts:
        raise UserError(f"cannot fit a {kind} tokenizer on no texts: the training split is empty")
    if not any(t.strip() for t in texts):  # (a char tokeniser of whitespace alone would be no use either)
        raise UserError(f"cannot fit a {kind} tokenizer: the {len(texts)} texts hold no tokens "
                        "(all empty or whitespace)")
    options = {"lowercase": bool(lowercase), "min_freq": min_freq, "max_size": max_size}
    if kind in ("word", "char"):
        make = _WordTokenizer if kind == "word" else _CharTokenizer
        probe = make(list(SPECIALS), **options)
        counts: Counter[str] = Counter()
        for t in texts:
            counts.update(probe.tokens(t))
        kept = sorted((t for t, n in counts.items() if n >= min_freq), key=lambda t: (-counts[t], t))
        if not kept:
            raise UserError(f"cannot fit a {kind} tokenizer: no token occurs min_freq={min_freq} times "
                            f"(the most frequent occurs {max(counts.values())} times)")
        if max_size is not None:
            kept = kept[:max_size - len(SPECIALS)]
        return make(list(SPECIALS) + kept, **options)
    return _SubwordTokenizer(kind, _train_subword(texts, kind, min_freq, max_size, bool(lowercase)), **options)


def _train_subword(texts: list[str], kind: str, min_freq: int, max_size: int | None, lowercase: bool) -> Any:
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import decoders, models, normalizers, pre_tokenizers, trainers

    size = DEFAULT_SUBWORD_SIZE if max_size is None else max_size
    if kind == "bpe":
        hf = HFTokenizer(models.BPE(unk_token=UNK_TOKEN))
        if lowercase:
            hf.normalizer = normalizers.Lowercase()
        hf.pre_tokenizer = pre_tokenizers.Metaspace()
        hf.decoder = decoders.Metaspace()
        hf.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=size, min_frequency=min_freq,
                                                          special_tokens=list(SPECIALS), show_progress=False),
                               length=len(texts))
        return _without_added_tokens(hf)

    # WordPiece. The library's WordPieceTrainer is a BpeTrainer with the "##" prefix, whose "##x"
    # tokens get ids in hash-map order, and those ids break ties between equally frequent merges, so
    # two fits of the same texts can differ (huggingface/tokenizers#1794). Here: a first pass without
    # merges finds every "##x", a second pass is given them, sorted, before training starts (as
    # reserved tokens: their ids are then fixed), and the vocabulary becomes a WordPiece model as
    # WordPieceTrainer does it.
    def pipeline(model: Any) -> Any:
        tok = HFTokenizer(model)
        steps = [normalizers.NFD(), normalizers.Lowercase(), normalizers.StripAccents()] if lowercase \
            else [normalizers.NFD()]
        tok.normalizer = normalizers.Sequence(steps)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        return tok

    def bpe_vocab(vocab_size: int, reserved: list[str]) -> dict[str, int]:
        tok = pipeline(models.BPE(unk_token=UNK_TOKEN, continuing_subword_prefix=PREFIX))
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_freq, show_progress=False,
                                      special_tokens=list(SPECIALS) + reserved, continuing_subword_prefix=PREFIX)
        tok.train_from_iterator(texts, trainer, length=len(texts))
        return tok.get_vocab(with_added_tokens=False)

    continuing = sorted(t for t in bpe_vocab(0, []) if t.startswith(PREFIX) and t not in SPECIALS)
    vocab = bpe_vocab(size, continuing)
    hf = pipeline(models.WordPiece(vocab, unk_token=UNK_TOKEN, continuing_subword_prefix=PREFIX))
    hf.decoder = decoders.WordPiece(prefix=PREFIX)
    return hf


def _without_added_tokens(hf: Any) -> Any:
    """``hf`` less the "added tokens" that training registers for <pad> and <unk>: they would turn the
    literal text "<pad>" into the padding id. Both stay in the model's vocabulary with ids 0 and 1."""
    from tokenizers import Tokenizer as HFTokenizer

    d = json.loads(hf.to_str())
    d["added_tokens"] = []
    return HFTokenizer.from_str(json.dumps(d))


# --- checks ----------------------------------------------------------------------------------------


def _check_text(text: Any) -> None:
    if not isinstance(text, str):
        raise UserError(f"a tokenizer takes a string, got {type(text).__name__}")


def _check_max_length(max_length: int | None) -> None:
    if max_length is not None and (isinstance(max_length, bool) or not isinstance(max_length, int)
                                   or max_length < 1):
        raise UserError(f"max_length must be an integer >= 1 or None, got {max_length!r}")


def _ids(ids: Iterable[Any]) -> list[int]:
    """Ids from a list, a tuple, a 1-D tensor or array."""
    if hasattr(ids, "tolist"):
        ids = ids.tolist()
    return [int(i) for i in ids]


def _check_id(i: Any, n: int) -> int:
    i = int(i)
    if not 0 <= i < n:
        raise UserError(f"token id {i} is out of range: the vocabulary has {n} tokens (ids 0..{n - 1})")
    return i
