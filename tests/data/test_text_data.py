"""The text dataset: reading TSV/CSV files and class folders, the errors a user meets, encoding after
the held-out split, padding and length buckets, and the K folds of cross-validation."""

from __future__ import annotations

import pytest
import torch

from cnnkit.config import DataConfig
from cnnkit.data import load_data, load_folds, targets_of
from cnnkit.data.loaders import _EpochBatches
from cnnkit.data.text.dataset import Bucketed, PadCollate, TokenData, tokenize_bundle
from cnnkit.data.text.formats import class_order, read_texts
from cnnkit.errors import UserError


def write(path, text: str | bytes):
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def test_headerless_tsv_keeps_tabs_and_spaces_of_the_text(tmp_path):
    f = write(tmp_path / "a.tsv", "1\ta fine film .\n0\tdull\tand long\n\n1\t  bright  \n")
    d = read_texts(f)
    assert d.texts == ["a fine film .", "dull\tand long", "bright"]
    assert d.classes == ["0", "1"] and d.targets == [1, 0, 1]


def test_csv_columns_by_name_and_by_index(tmp_path):
    f = write(tmp_path / "r.csv", 'id,review,sentiment\n1,"good, really",pos\n2,bad,neg\n')
    d = read_texts(f, text_column="review", label_column="sentiment")
    assert d.texts == ["good, really", "bad"] and d.classes == ["neg", "pos"] and d.targets == [1, 0]
    g = write(tmp_path / "n.tsv", "x\tpos\tgreat\ny\tneg\tawful\n")
    d = read_texts(g, text_column=2, label_column=1)  # indices: no header
    assert d.texts == ["great", "awful"] and d.targets == [1, 0]


def test_class_order_is_numeric_for_integer_labels():
    assert class_order(["10", "2", "1"]) == ["1", "2", "10"]
    assert class_order(["pos", "neg"]) == ["neg", "pos"]


def test_folder_per_class_and_imdb_train_test(tmp_path):
    for split in ("train", "test"):
        for c, texts in (("neg", ["awful", "boring"]), ("pos", ["lovely"])):
            (tmp_path / split / c).mkdir(parents=True)
            for i, t in enumerate(texts):
                write(tmp_path / split / c / f"{i}.txt", t + "\n")
    (tmp_path / "train" / "unsup").mkdir()
    write(tmp_path / "train" / "unsup" / "0.txt", "no label")
    cfg = DataConfig(name="text", path=str(tmp_path), val_fraction=0.34)
    b = load_data(cfg, task="text")
    assert b.classes == ["neg", "pos"]
    assert len(b.train) + len(b.val) == 3 and len(b.test) == 3  # unsup is not a class


@pytest.mark.parametrize("content, needle", [
    ("", "holds no texts"),
    ("\n\n", "holds no texts"),
    ("1\tgood\n0\n", "line 2 has no text"),
    ("1\tgood\n0\t   \n", "line 2 has no text"),
    ("\tgood\n", "line 1 has no label"),
])
def test_bad_files_say_what_and_where(tmp_path, content, needle):
    f = write(tmp_path / "bad.tsv", content)
    with pytest.raises(UserError, match=needle):
        read_texts(f)


def test_non_utf8_names_the_line(tmp_path):
    f = write(tmp_path / "latin.tsv", "1\tgood\n0\tna\xefve\n".encode("latin-1"))
    with pytest.raises(UserError, match=r"not UTF-8 text: line 2 has the byte 0xef"):
        read_texts(f)


def test_a_column_that_does_not_exist(tmp_path):
    f = write(tmp_path / "r.csv", "review,sentiment\ngood,pos\n")
    with pytest.raises(UserError, match=r"data.label_column='label' is not a column .*'review', 'sentiment'"):
        read_texts(f, text_column="review")
    with pytest.raises(UserError, match=r"data.text_column=5: .* has 2 columns"):
        read_texts(write(tmp_path / "i.tsv", "pos\tgood\n"), text_column=5, label_column=0)


def test_missing_path_and_image_options(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_data(DataConfig(name="text", path=str(tmp_path / "nope.tsv")), task="text")
    f = write(tmp_path / "a.tsv", "1\tgood\n0\tbad\n" * 5)
    with pytest.raises(UserError, match="data.image_size=32 is an image option"):
        load_data(DataConfig(name="text", path=str(f), image_size=32), task="text")
    with pytest.raises(UserError, match="task classification needs class labels per image"):
        load_data(DataConfig(name="text", path=str(f)), task="classification")


def test_vocabulary_comes_from_the_training_split_only(tmp_path):
    lines = [f"1\tgood film number{i}" for i in range(10)] + [f"0\tbad film other{i}" for i in range(10)]
    f = write(tmp_path / "a.tsv", "\n".join(lines) + "\n")
    cfg = DataConfig(name="text", path=str(f), val_fraction=0.2)
    b = tokenize_bundle(load_data(cfg, task="text"), cfg)
    tok = b.extra["tokenizer"]
    vocab = set(tok.vocabulary())
    val_only = {w for t in b.val.texts for w in t.split()} - {w for t in b.train.texts for w in t.split()}
    assert val_only and not (val_only & vocab)          # held-out words are unknown ...
    assert all(1 in ids.tolist() for ids in b.val.ids)  # ... so each held-out text has an <unk>
    assert b.input_shape == (tok.vocab_size, 3)


def test_max_length_cuts_and_sets_the_shape(tmp_path):
    f = write(tmp_path / "a.tsv", "1\ta b c d e f\n0\tg h\n" * 5)
    cfg = DataConfig(name="text", path=str(f), max_length=4, val_fraction=0.2)
    b = tokenize_bundle(load_data(cfg, task="text"), cfg)
    assert b.input_shape[1] == 4 and max(len(t) for t in b.train.ids) == 4


def test_pad_collate_variable_and_fixed():
    items = [(torch.tensor([5, 6, 7]), 1), (torch.tensor([8]), 0)]
    x, y = PadCollate()(items)
    assert x.tolist() == [[5, 6, 7], [8, 0, 0]] and y.tolist() == [1, 0]
    x, _ = PadCollate(length=2)(items)
    assert x.tolist() == [[5, 6], [8, 0]]
    x, _ = PadCollate(length=5)(items)
    assert x.tolist() == [[5, 6, 7, 0, 0], [8, 0, 0, 0, 0]]


def test_length_buckets_keep_every_item_once_and_group_lengths():
    lengths = [((i * 37) % 50) + 1 for i in range(400)]
    data = Bucketed(TokenData([torch.ones(n, dtype=torch.long) for n in lengths], [0] * 400, [""] * 400))
    sampler = _EpochBatches(400, 16, shuffle=True, seed=3, drop_last=False, rank=0, world_size=1,
                            lengths=data.bucket_lengths, bucket_batches=8)
    sampler.epoch = 2
    batches = [[i for i, _ in b] for b in sampler]
    assert sorted(i for b in batches for i in b) == list(range(400))
    spread = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches) / len(batches)
    plain = _EpochBatches(400, 16, shuffle=True, seed=3, drop_last=False, rank=0, world_size=1)
    plain.epoch = 2
    spread_plain = sum(max(lengths[i] for i, _ in b) - min(lengths[i] for i, _ in b) for b in plain) / 25
    assert spread < spread_plain / 4  # buckets pad far less than random batches
    sampler.epoch = 3
    assert [[i for i, _ in b] for b in sampler] != batches  # reshuffled each epoch


def test_cv_folds_are_disjoint_cover_the_data_and_keep_class_shares(tmp_path):
    lines = [f"{i % 3}\ttext number {i}" for i in range(60)]
    f = write(tmp_path / "a.tsv", "\n".join(lines) + "\n")
    folds = load_folds(DataConfig(name="text", path=str(f)), 5, task="text")
    assert len(folds) == 5
    seen = []
    for b in folds:
        val = [b.val[i][0] for i in range(len(b.val))]
        train = [b.train[i][0] for i in range(len(b.train))]
        assert not set(val) & set(train) and len(val) + len(train) == 60
        assert torch.bincount(targets_of(b.val), minlength=3).tolist() == [4, 4, 4]
        seen += val
    assert sorted(seen) == sorted(line.split("\t")[1] for line in lines)


def test_cv_folds_refuse_more_folds_than_a_class_has(tmp_path):
    f = write(tmp_path / "a.tsv", "1\tgood\n1\tfine\n1\tnice\n0\tbad\n0\tawful\n")
    with pytest.raises(UserError, match=r"train.cv_folds=3: class '0' has 2 items"):
        load_folds(DataConfig(name="text", path=str(f)), 3, task="text")
