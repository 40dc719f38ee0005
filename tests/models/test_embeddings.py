"""Pretrained word vectors: reading word2vec (text, binary) and GloVe files, filling embedding tables."""

from __future__ import annotations

import struct

import numpy as np
import pytest
import torch
from torch import nn

from cnnkit.errors import UserError
from cnnkit.models import get_model
from cnnkit.models.text import embeddings as emb
from cnnkit.models.text.embeddings import fill_embeddings, fill_model_embeddings, read_vectors

WORDS = ["the", "cat", "Dog", "naïve", "a,b"]
VECTORS = np.array([[0.5, -1.25, 2.0], [1.0, 0.0, -0.125], [3.5, 4.25, -2.5], [0.0625, 7.0, 1.5],
                    [-3.0, 0.75, 0.25]], dtype=np.float32)


def write_text(path, words, vectors, header=True, trailing_space=False, newline="\n"):
    lines = [f"{len(words)} {vectors.shape[1]}"] if header else []
    for w, v in zip(words, vectors):
        lines.append(w + " " + " ".join(repr(float(x)) for x in v) + (" " if trailing_space else ""))
    path.write_bytes((newline.join(lines) + newline).encode("utf-8"))
    return path


def write_binary(path, words, vectors, newline=True):
    out = [f"{len(words)} {vectors.shape[1]}\n".encode()]
    for w, v in zip(words, vectors):
        out.append(w.encode("utf-8") + b" " + struct.pack(f"<{len(v)}f", *v) + (b"\n" if newline else b""))
    path.write_bytes(b"".join(out))
    return path


def check(result, words=WORDS, vectors=VECTORS):
    got_words, got = result
    assert got_words == list(words)
    assert got.dtype == np.float32 and got.shape == vectors.shape
    np.testing.assert_array_equal(got, vectors)


# --------------------------------------------------------------------------- reading


def test_word2vec_text(tmp_path):
    check(read_vectors(write_text(tmp_path / "w2v.txt", WORDS, VECTORS, trailing_space=True)))


def test_word2vec_text_with_crlf_and_a_blank_last_line(tmp_path):
    path = write_text(tmp_path / "w2v.txt", WORDS, VECTORS, newline="\r\n")
    path.write_bytes(path.read_bytes() + b"\r\n")
    check(read_vectors(path))


def test_glove_text(tmp_path):
    check(read_vectors(write_text(tmp_path / "glove.6B.3d.txt", WORDS, VECTORS, header=False)))


def test_glove_word_with_spaces(tmp_path):
    words = ["the", ". . .", "cat"]
    check(read_vectors(write_text(tmp_path / "g.txt", words, VECTORS[:3], header=False)), words, VECTORS[:3])


def test_word2vec_binary_by_extension_and_by_content(tmp_path):
    check(read_vectors(write_binary(tmp_path / "vectors.bin", WORDS, VECTORS)))
    check(read_vectors(write_binary(tmp_path / "vectors.w2v", WORDS, VECTORS)))  # no .bin: the bytes tell
    check(read_vectors(write_binary(tmp_path / "nonl.bin", WORDS, VECTORS, newline=False)))


def test_numpy_parser_gives_the_same_values(tmp_path, monkeypatch):
    monkeypatch.setattr(emb, "_parse_pandas", lambda rests: None)
    check(read_vectors(write_text(tmp_path / "w2v.txt", WORDS, VECTORS)))
    with pytest.raises(UserError, match=r"line 3: value 2 'x1' is not a number"):
        read_vectors(_with_line(tmp_path / "bad.txt", 2, "cat 1.0 x1 2.0"))


def test_many_blocks(tmp_path, monkeypatch):
    monkeypatch.setattr(emb, "_BLOCK_BYTES", 64)  # a few lines per block
    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(200)]
    vectors = rng.standard_normal((200, 7)).astype(np.float32)
    check(read_vectors(write_text(tmp_path / "g.txt", words, vectors, header=False)), words, vectors)


def _with_line(path, index, line):
    """The test vectors as word2vec text with line ``index`` (1 = the first word) replaced."""
    write_text(path, WORDS, VECTORS)
    lines = path.read_text(encoding="utf-8").splitlines()
    lines[index] = line
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("line, message", [
    ("cat 1.0 2.0", r"line 3: 2 numbers where the header says 3"),
    ("cat 1.0 2.0 3.0 4.0", r"line 3: 5 fields where a word and 3 numbers are expected"),
    ("cat 1.0 abc 2.0", r"line 3: value 2 'abc' is not a number"),
])
def test_malformed_lines_name_the_file_and_the_line(tmp_path, line, message):
    path = _with_line(tmp_path / "bad.txt", 2, line)
    with pytest.raises(UserError, match=message) as info:
        read_vectors(path)
    assert str(path) in str(info.value)


def test_glove_inconsistent_dimension(tmp_path):
    path = tmp_path / "g.txt"
    path.write_text("the 1 2 3\ncat 1 2\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"line 2: 2 numbers where the first line has 3"):
        read_vectors(path)


def test_missing_empty_and_header_only_files(tmp_path):
    with pytest.raises(UserError, match="does not exist") as info:
        read_vectors(tmp_path / "nope.txt")
    assert "nope.txt" in str(info.value)
    (tmp_path / "empty.txt").write_bytes(b"")
    with pytest.raises(UserError, match="empty"):
        read_vectors(tmp_path / "empty.txt")
    (tmp_path / "header.txt").write_text("0 300\n")
    with pytest.raises(UserError, match="no word vectors"):
        read_vectors(tmp_path / "header.txt")


def test_header_count_mismatch(tmp_path):
    path = write_text(tmp_path / "w2v.txt", WORDS, VECTORS)
    path.write_text(path.read_text().replace("5 3", "9 3", 1))
    with pytest.raises(UserError, match="announces 9 vectors but the file holds 5"):
        read_vectors(path)


def test_truncated_and_inconsistent_binary(tmp_path):
    path = write_binary(tmp_path / "v.bin", WORDS, VECTORS)
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(UserError, match=r"v.bin.*word 5 of 5.*truncated"):
        read_vectors(path)
    path = write_binary(tmp_path / "w.bin", WORDS, VECTORS)
    path.write_bytes(path.read_bytes().replace(b"5 3", b"4 3", 1))
    with pytest.raises(UserError, match="bytes remain"):
        read_vectors(path)
    (tmp_path / "noheader.bin").write_bytes(b"\x00\x01\x02")
    with pytest.raises(UserError, match="line 1"):
        read_vectors(tmp_path / "noheader.bin")


# --------------------------------------------------------------------------- filling tables


def test_fill_embeddings_rows():
    torch.manual_seed(0)
    tokens = ["<pad>", "<unk>", "the", "Cat", "DOG", "zebra", "THE"]
    words = ["the", "cat", "Dog", "dog", "<pad>"]
    vectors = np.arange(15, dtype=np.float32).reshape(5, 3) - 7
    table = nn.Embedding(9, 3, padding_idx=0)
    untouched = table.weight[7:].detach().clone()
    report = fill_embeddings(table, tokens, words, vectors)
    assert report == {"found": 4, "missing": 2, "dim": 3}
    w = table.weight.detach()
    assert torch.equal(w[0], torch.zeros(3))  # padding stays zero even though '<pad>' has a vector
    assert torch.equal(w[2], torch.from_numpy(vectors[0]))  # exact
    assert torch.equal(w[3], torch.from_numpy(vectors[1]))  # 'Cat' -> 'cat'
    assert torch.equal(w[4], torch.from_numpy(vectors[3]))  # 'DOG' -> 'dog' (the lower-case word, not 'Dog')
    assert torch.equal(w[6], torch.from_numpy(vectors[0]))  # 'THE' -> 'the'
    a = np.sqrt(3 * vectors.var(axis=0).mean())
    for row in (1, 5):  # '<unk>' and 'zebra': U(-a, a)
        assert w[row].abs().max() <= a + 1e-6
    assert torch.equal(w[7:], untouched)  # rows past the vocabulary are left alone


def test_fill_embeddings_case_insensitive_fallback():
    table = nn.Embedding(3, 2, padding_idx=0)
    report = fill_embeddings(table, ["<pad>", "paris", "Berlin"], ["Paris", "berlin"],
                             np.array([[1, 2], [3, 4]], dtype=np.float32))
    assert report["found"] == 2
    assert table.weight[1].tolist() == [1, 2] and table.weight[2].tolist() == [3, 4]


def test_random_rows_match_the_vectors_variance():
    torch.manual_seed(1)
    rng = np.random.default_rng(1)
    vectors = (rng.standard_normal((500, 20)) * 0.3).astype(np.float32)
    table = nn.Embedding(3001, 20)
    report = fill_embeddings(table, ["<pad>"] + [f"t{i}" for i in range(3000)], [f"w{i}" for i in range(500)],
                             vectors)
    assert report == {"found": 0, "missing": 3000, "dim": 20}
    var = table.weight[1:].detach().var().item()
    assert abs(var - 0.09) < 0.01


def test_dimension_mismatch_is_a_user_error():
    with pytest.raises(UserError, match=r"3 dimensions but the embedding table has 4"):
        fill_embeddings(nn.Embedding(5, 4), ["<pad>", "the"], WORDS, VECTORS)


def test_fill_a_multichannel_kim_cnn(tmp_path):
    m = get_model("kim_cnn", num_classes=2, in_chans=6, input_size=10, embed_dim=3, filters=2,
                  variant="multichannel")
    words, vectors = read_vectors(write_text(tmp_path / "w2v.txt", WORDS, VECTORS))
    report = fill_model_embeddings(m, ["<pad>", "<unk>", "the", "cat", "dog", "bird"], words, vectors)
    assert report == {"found": 3, "missing": 2, "dim": 3}
    static, tuned = m.embeddings
    assert torch.equal(static.weight, tuned.weight)
    assert torch.equal(static.weight[2], torch.from_numpy(VECTORS[0]))
    assert not static.weight.requires_grad and tuned.weight.requires_grad
    with pytest.raises(UserError, match="no word embedding table"):
        fill_model_embeddings(get_model("char_cnn", num_classes=2, in_chans=10, input_size=123, width=4, dense=4),
                              ["<pad>"], words, vectors)
