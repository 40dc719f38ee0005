"""Tokenisers: the word rule, exact vocabularies, round trips, spans, serialisation, determinism, errors."""

from __future__ import annotations

import json
import random
import time

import pytest

from cnnkit.data.text.tokenize import KINDS, PAD, UNK, Tokenizer, fit_tokenizer, split_words
from cnnkit.errors import UserError

CORPUS = [
    "An utterly charming film.",
    "A charming, utterly dull film!",
    "The film is dull and the plot is thin.",
    "It's not charming at all; the actors don't care.",
    "An utterly charming story about a film crew.",
] * 4

SUBWORDS = ("bpe", "wordpiece")


@pytest.fixture(scope="module")
def fitted() -> dict[str, Tokenizer]:
    return {kind: fit_tokenizer(CORPUS, kind, max_size=120) for kind in KINDS}


# --- the word rule ---------------------------------------------------------------------------------


@pytest.mark.parametrize("text, words", [
    ("It's an utterly charming film.", ["It", "'s", "an", "utterly", "charming", "film", "."]),
    ("Don't stop-motion 3.5!", ["Do", "n't", "stop-motion", "3.5", "!"]),
    ("they're, we'd, I'll, you've, I'm", ["they", "'re", ",", "we", "'d", ",", "I", "'ll", ",", "you", "'ve", ",",
                                          "I", "'m"]),
    ("can't WON'T isn’t", ["ca", "n't", "WO", "N'T", "is", "n’t"]),
    ("o'clock rock'n'roll y'all James' '90s", ["o'clock", "rock'n'roll", "y'all", "James", "'", "'", "90s"]),
    ("1,000 people at 10:30, end.Next", ["1,000", "people", "at", "10:30", ",", "end", ".", "Next"]),
    ("...?!  café_au-lait 😀", [".", ".", ".", "?", "!", "café", "_", "au-lait", "😀"]),
    ("", []),
    ("  \n\t ", []),
])
def test_split_words(text, words):
    assert split_words(text) == words


# --- exact vocabularies ----------------------------------------------------------------------------

TINY = ["the cat sat", "the dog sat", "The cat ran!"]


def test_word_vocabulary_by_hand():
    assert fit_tokenizer(TINY).vocabulary() == ["<pad>", "<unk>", "the", "cat", "sat", "!", "dog", "ran"]
    assert fit_tokenizer(TINY, min_freq=2).vocabulary() == ["<pad>", "<unk>", "the", "cat", "sat"]
    assert fit_tokenizer(TINY, max_size=4).vocabulary() == ["<pad>", "<unk>", "the", "cat"]
    assert fit_tokenizer(TINY, max_size=3, min_freq=2).vocabulary() == ["<pad>", "<unk>", "the"]
    assert fit_tokenizer(TINY, lowercase=False).vocabulary() == \
        ["<pad>", "<unk>", "cat", "sat", "the", "!", "The", "dog", "ran"]
    tok = fit_tokenizer(TINY, max_size=100)
    assert tok.vocab_size == len(tok) == 8 and tok.kind == "word"


def test_char_vocabulary_by_hand():
    texts = ["abBa", "ab\tc"]
    assert fit_tokenizer(texts, "char").vocabulary() == ["<pad>", "<unk>", "a", "b", " ", "c"]
    assert fit_tokenizer(texts, "char", min_freq=2).vocabulary() == ["<pad>", "<unk>", "a", "b"]
    assert fit_tokenizer(texts, "char", max_size=3).vocabulary() == ["<pad>", "<unk>", "a"]
    assert fit_tokenizer(texts, "char", lowercase=False).vocabulary() == ["<pad>", "<unk>", "a", "b", " ", "B", "c"]


@pytest.mark.parametrize("kind", SUBWORDS)
def test_subword_vocabulary(kind, fitted):
    vocab = fitted[kind].vocabulary()
    assert vocab[:2] == ["<pad>", "<unk>"] and len(vocab) == len(set(vocab)) == fitted[kind].vocab_size <= 120
    assert fitted[kind].token_to_id("<pad>") == PAD and fitted[kind].token_to_id("<unk>") == UNK
    assert fit_tokenizer(CORPUS, kind, max_size=60).vocab_size == 60
    big = fit_tokenizer(CORPUS, kind)  # 8000 by default: every word of the corpus fits whole
    assert big.encode("utterly") == [big.token_to_id("▁utterly" if kind == "bpe" else "utterly")]


# --- round trips -----------------------------------------------------------------------------------


def test_word_round_trip(fitted):
    tok = fitted["word"]
    text = "The film is NOT charming; the actors don't care!"
    ids = tok.encode(text)
    assert tok.tokens(text) == ["the", "film", "is", "not", "charming", ";", "the", "actors", "do", "n't", "care", "!"]
    assert UNK not in ids
    assert tok.decode(ids) == " ".join(tok.tokens(text))
    assert [tok.id_to_token(i) for i in ids] == tok.tokens(text)
    assert [tok.token_to_id(t) for t in tok.tokens(text)] == ids


def test_char_round_trip(fitted):
    tok = fitted["char"]
    text = "An Utterly Charming Film."
    assert UNK not in tok.encode(text)
    assert tok.decode(tok.encode(text)) == text.lower()
    assert tok.decode(tok.encode("a\tfilm\n")) == "a film "  # every whitespace character is a space


@pytest.mark.parametrize("kind", SUBWORDS)
def test_subword_round_trip(kind, fitted):
    tok = fitted[kind]
    for text in ("an utterly charming film", "An Utterly CHARMING film", "the plot is thin and dull"):
        ids = tok.encode(text)
        assert UNK not in ids
        assert tok.decode(ids) == text.lower()
    assert tok.decode(tok.encode("a charming, dull film!")) == "a charming, dull film!"


def test_decode_drops_padding(fitted):
    for kind, tok in fitted.items():
        ids = tok.encode("an utterly charming film")
        assert tok.decode(ids + [PAD] * 5) == tok.decode(ids) == tok.decode(tuple([PAD] + ids)), kind


def test_decode_takes_tensors(fitted):
    torch = pytest.importorskip("torch")
    tok = fitted["word"]
    ids = tok.encode("an utterly charming film")
    assert tok.decode(torch.tensor(ids + [0, 0])) == "an utterly charming film"


# --- unknowns, padding, truncation -----------------------------------------------------------------


def test_unknowns_map_to_unk(fitted):
    word = fitted["word"]
    assert word.encode("the zebra film") == [word.token_to_id("the"), UNK, word.token_to_id("film")]
    assert word.token_to_id("zebra") == UNK
    assert fitted["char"].encode("a§") == [fitted["char"].token_to_id("a"), UNK]
    for kind in SUBWORDS:
        ids = fitted[kind].encode("film §")
        assert ids[-1] == UNK and ids[0] != UNK
        assert "<unk>" in fitted[kind].decode(ids)


def test_padding_id_never_produced(fitted):
    texts = CORPUS + ["zebra § <pad> 😀", "", "   ", "<pad><unk>"]
    for kind, tok in fitted.items():
        for ids in tok.encode_batch(texts):
            assert PAD not in ids, kind


@pytest.mark.parametrize("kind", KINDS)
def test_max_length(kind, fitted):
    tok = fitted[kind]
    text = "the film is dull and the plot is thin"
    full = tok.encode(text)
    assert len(full) > 3
    assert tok.encode(text, max_length=3) == full[:3]
    assert tok.encode(text, max_length=1000) == full
    assert tok.encode_batch([text, "a film"], max_length=3) == [full[:3], tok.encode("a film")[:3]]
    assert tok.encode_batch([text, "a film"]) == [full, tok.encode("a film")]
    assert tok.encode("") == [] and tok.encode_batch([]) == []
    for bad in (0, -1, 2.5):
        with pytest.raises(UserError, match="max_length"):
            tok.encode(text, max_length=bad)


# --- spans -----------------------------------------------------------------------------------------


def test_word_and_char_spans(fitted):
    text = "It's an  Utterly charming film, isn't it?"
    for kind in ("word", "char"):
        tok = fitted[kind]
        spans, tokens = tok.spans(text), tok.tokens(text)
        assert len(spans) == len(tokens)
        assert [text[s:e].lower() for s, e in spans] == tokens
    assert fitted["word"].spans("  Don't!") == [(2, 4), (4, 7), (7, 8)]


@pytest.mark.parametrize("kind", SUBWORDS)
def test_subword_spans(kind, fitted):
    tok = fitted[kind]
    text = "An utterly  charming film, really."
    spans, tokens = tok.spans(text), tok.tokens(text)
    assert len(spans) == len(tokens) == len(tok.encode(text))
    for (s, e), token in zip(spans, tokens):
        piece = token.lstrip("▁") if kind == "bpe" else token.removeprefix("##")
        if piece:
            assert text[s:e].lower() == piece
        else:  # a lone ▁: the extra space
            assert text[s:e] == " "
    assert "".join(text[s:e] for s, e in spans if text[s:e].strip()).lower() == text.replace(" ", "").lower()


# --- serialisation ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_dict_and_file_round_trip(kind, fitted, tmp_path):
    tok = fitted[kind]
    texts = CORPUS[:5] + ["zebra § an utterly charming film"]
    d = json.loads(json.dumps(tok.to_dict()))
    assert d["kind"] == kind and d["options"]["lowercase"] is True
    again = Tokenizer.from_dict(d)
    path = tmp_path / "tok.json"
    tok.save(path)
    loaded = Tokenizer.load(path)
    assert [p.name for p in tmp_path.iterdir()] == ["tok.json"]  # no temp file left behind
    for other in (again, loaded):
        assert other.kind == kind and other.vocab_size == tok.vocab_size
        assert other.vocabulary() == tok.vocabulary()
        assert other.encode_batch(texts, max_length=9) == tok.encode_batch(texts, max_length=9)
        assert [other.tokens(t) for t in texts] == [tok.tokens(t) for t in texts]
        assert other.decode(tok.encode(texts[0])) == tok.decode(tok.encode(texts[0]))
        assert other.to_dict() == tok.to_dict()


def test_options_survive_serialisation():
    tok = fit_tokenizer(TINY, lowercase=False, min_freq=1, max_size=6)
    again = Tokenizer.from_dict(tok.to_dict())
    assert again.lowercase is False and again.tokens("The CAT") == ["The", "CAT"]
    assert again.encode("The CAT") == [tok.token_to_id("The"), UNK]
    assert again.to_dict()["options"] == {"lowercase": False, "min_freq": 1, "max_size": 6}


# --- determinism -----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_fitting_is_deterministic(kind, fitted):
    again = fit_tokenizer(list(CORPUS), kind, max_size=120)
    assert again.vocabulary() == fitted[kind].vocabulary()
    assert again.to_dict() == fitted[kind].to_dict()


def test_wordpiece_is_deterministic_where_the_library_is_not():
    # The text of huggingface/tokenizers#1794: the library's WordPieceTrainer gives two different
    # vocabularies over a few runs (its "##" tokens get ids in hash-map order).
    texts = ["Wel come to the 🤗 Tok en izers libr ary."]
    seen = {tuple(fit_tokenizer(texts, "wordpiece").vocabulary()) for _ in range(12)}
    assert len(seen) == 1


# --- errors ----------------------------------------------------------------------------------------


def test_fit_errors():
    with pytest.raises(UserError, match="no texts"):
        fit_tokenizer([])
    for kind in KINDS:
        with pytest.raises(UserError, match="hold no tokens"):
            fit_tokenizer(["", "  \n "], kind)
    with pytest.raises(UserError, match=r"unknown tokenizer kind 'wrod' \(did you mean 'word'\?\); "
                                        r"allowed: word, char, bpe, wordpiece"):
        fit_tokenizer(TINY, "wrod")
    with pytest.raises(UserError, match="allowed: word, char, bpe, wordpiece"):
        fit_tokenizer(TINY, "sentencepiece")
    with pytest.raises(UserError, match="min_freq must be an integer >= 1, got 0"):
        fit_tokenizer(TINY, min_freq=0)
    with pytest.raises(UserError, match="max_size must be an integer >= 3"):
        fit_tokenizer(TINY, max_size=2)
    with pytest.raises(UserError, match="no token occurs min_freq=9 times"):
        fit_tokenizer(TINY, min_freq=9)
    with pytest.raises(UserError, match="not one string"):
        fit_tokenizer("the cat sat")
    with pytest.raises(UserError, match="text 1 is a int"):
        fit_tokenizer(["a", 3])


def test_from_dict_errors(fitted):
    with pytest.raises(UserError, match="not a tokenizer: expected a dict"):
        Tokenizer.from_dict(["<pad>", "<unk>"])
    with pytest.raises(UserError, match=r"unknown kind 'wordpeice' \(did you mean 'wordpiece'\?\)"):
        Tokenizer.from_dict({"kind": "wordpeice", "vocab": ["<pad>", "<unk>"]})
    with pytest.raises(UserError, match="not a tokenizer: unknown kind None"):
        Tokenizer.from_dict({"vocab": ["<pad>", "<unk>"]})
    with pytest.raises(UserError, match="'vocab' must be a list"):
        Tokenizer.from_dict({"kind": "word"})
    with pytest.raises(UserError, match="must start with '<pad>', '<unk>'"):
        Tokenizer.from_dict({"kind": "char", "vocab": ["a", "b"]})
    with pytest.raises(UserError, match="'a' appears twice"):
        Tokenizer.from_dict({"kind": "word", "vocab": ["<pad>", "<unk>", "a", "a"]})
    with pytest.raises(UserError, match="'tokenizer' must be"):
        Tokenizer.from_dict({"kind": "bpe", "vocab": ["<pad>", "<unk>"]})
    with pytest.raises(UserError, match="cannot read it"):
        Tokenizer.from_dict({"kind": "bpe", "tokenizer": "{not json"})
    with pytest.raises(UserError, match="ids 0 and 1"):
        d = fitted["bpe"].to_dict()
        d["tokenizer"] = d["tokenizer"].replace('"<pad>"', '"<PAD>"')
        Tokenizer.from_dict(d)


def test_load_errors(tmp_path):
    with pytest.raises(UserError, match="tokenizer file not found"):
        Tokenizer.load(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{oops")
    with pytest.raises(UserError, match="invalid JSON"):
        Tokenizer.load(bad)
    bad.write_text('{"kind": "word"}')
    with pytest.raises(UserError, match="bad.json.*'vocab' must be a list"):
        Tokenizer.load(bad)
    with pytest.raises(UserError, match="cannot write"):
        fit_tokenizer(TINY).save(tmp_path / "no" / "such" / "dir" / "tok.json")


def test_id_errors(fitted):
    tok = fitted["word"]
    with pytest.raises(UserError, match="token id 9999 is out of range"):
        tok.id_to_token(9999)
    with pytest.raises(UserError, match="out of range"):
        tok.decode([2, -1])
    with pytest.raises(UserError, match="out of range"):
        fitted["bpe"].decode([2, 10**6])
    with pytest.raises(UserError, match="takes a string"):
        tok.encode(None)


# --- speed -----------------------------------------------------------------------------------------


def test_word_encoding_is_fast():
    rng = random.Random(0)
    words = "the a film movie is was charming dull utterly it's don't great bad , . ! plot actors 1,000".split()
    texts = [" ".join(rng.choice(words) for _ in range(20)) for _ in range(10_000)]
    tok = fit_tokenizer(texts)
    start = time.perf_counter()
    ids = tok.encode_batch(texts, max_length=50)
    elapsed = time.perf_counter() - start
    assert len(ids) == 10_000 and UNK not in ids[0]
    assert elapsed < 1.5, f"encoding 10,000 sentences took {elapsed:.2f} s"
