"""The text CNNs: kim_cnn (Kim 2014), char_cnn (Zhang et al. 2015) and dpcnn (Johnson & Zhang 2017)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cnnkit.errors import UserError
from cnnkit.models import get_model, list_models
from cnnkit.models.registry import MODELS, model_task
from cnnkit.models.text import CharCNN, DPCNN, KimCNN, sequence_lengths
from cnnkit.models.text.char import MIN_LENGTH, output_length


def small_kim(**kw) -> KimCNN:
    opts = dict(num_classes=3, in_chans=30, input_size=20, embed_dim=8, filters=4, dropout=0.5)
    opts.update(kw)
    return get_model("kim_cnn", **opts)


def pad_to(ids: list[int], length: int) -> list[int]:
    return ids + [0] * (length - len(ids))


# --------------------------------------------------------------------------- registry


def test_registered_as_text_models():
    assert set(list_models(task="text")) >= {"kim_cnn", "char_cnn", "dpcnn"}
    for name in ("kim_cnn", "char_cnn", "dpcnn"):
        assert model_task(name) == "text"
        assert len(MODELS.entry(name).meta["default_input"]) == 2
        assert len(MODELS.entry(name).meta["min_input"]) == 2
    assert MODELS.entry("char_cnn").meta["default_input"] == (70, 1014)
    assert MODELS.entry("char_cnn").meta["min_input"] == (1, MIN_LENGTH)
    assert (KimCNN.variable_length, CharCNN.variable_length, DPCNN.variable_length) == (True, False, True)


def test_sequence_lengths_are_the_last_non_padding_position():
    ids = torch.tensor([[5, 6, 0, 0], [5, 0, 7, 0], [0, 0, 0, 0], [1, 1, 1, 1]])
    assert sequence_lengths(ids).tolist() == [2, 3, 0, 4]


def test_bad_options_are_user_errors():
    with pytest.raises(UserError, match="variant"):
        small_kim(variant="nonstatic")
    with pytest.raises(UserError, match="kernel_sizes"):
        small_kim(kernel_sizes=[])
    with pytest.raises(UserError, match="max_norm"):
        small_kim(max_norm=-1.0)
    with pytest.raises(UserError, match="max_norm"):
        small_kim(max_norm="big")
    with pytest.raises(UserError, match="no option"):
        get_model("kim_cnn", num_classes=2, in_chans=10, input_size=5, widths=3)


# --------------------------------------------------------------------------- kim_cnn


@pytest.mark.parametrize("variant", ["rand", "static", "non-static", "multichannel"])
def test_kim_shapes(variant):
    m = small_kim(variant=variant, kernel_sizes=[2, 3]).eval()
    for length in (1, 2, 7, 20):
        assert m(torch.randint(1, 30, (5, length))).shape == (5, 3)
    assert len(m.embeddings) == (2 if variant == "multichannel" else 1)


@pytest.mark.parametrize("variant", ["rand", "multichannel"])
def test_kim_logits_do_not_depend_on_the_batch_padding(variant):
    torch.manual_seed(0)
    m = small_kim(variant=variant, kernel_sizes=(3, 4, 5)).eval()
    sentences = [[7], [3, 9], [4, 1, 8, 2], [5, 6, 7, 8, 9, 10, 11]]  # several shorter than the widest filter
    longest = max(map(len, sentences))
    batch = torch.tensor([pad_to(s, 3 * longest) for s in sentences])
    with torch.no_grad():
        together = m(batch)
        for i, s in enumerate(sentences):
            alone = m(torch.tensor([s]))
            assert torch.allclose(alone[0], together[i], atol=1e-6, rtol=0), (s, alone, together[i])


def test_kim_by_hand():
    """V = 5, D = 2, one filter of width 2, two classes: the logits recomputed with numpy."""
    m = get_model("kim_cnn", num_classes=2, in_chans=5, input_size=6, embed_dim=2, kernel_sizes=[2], filters=1,
                  dropout=0.0, max_norm=None).eval()
    emb = np.array([[0, 0], [0.5, -1.0], [1.0, 2.0], [-1.5, 0.5], [2.0, -0.5]], dtype=np.float32)
    w = np.array([[1.0, -0.5], [0.25, 2.0]], dtype=np.float32)  # w[d, j]: dimension d at offset j
    b = -0.5
    fc_w = np.array([[2.0], [-1.0]], dtype=np.float32)
    fc_b = np.array([0.1, 0.3], dtype=np.float32)
    with torch.no_grad():
        m.embeddings[0].weight.copy_(torch.from_numpy(emb))
        m.convs[0].weight.copy_(torch.from_numpy(w)[None])
        m.convs[0].bias.fill_(b)
        m.fc.weight.copy_(torch.from_numpy(fc_w))
        m.fc.bias.copy_(torch.from_numpy(fc_b))

    def expected(sentence):
        n = len(sentence)
        x = emb[sentence + [0] * max(0, 2 - n)]  # a one-token sentence: one window (token, padding)
        c = [max(0.0, float((w[:, 0] * x[t]).sum() + (w[:, 1] * x[t + 1]).sum() + b)) for t in range(max(n, 2) - 1)]
        return fc_w[:, 0] * max(c) + fc_b

    sentences = [[2, 3, 4], [4, 2], [3], [1, 4, 4, 2, 3]]
    batch = torch.tensor([pad_to(s, 6) for s in sentences])
    with torch.no_grad():
        got = m(batch).numpy()
    for s, row in zip(sentences, got):
        np.testing.assert_allclose(row, expected(s), atol=1e-6)


def test_kim_multichannel_freezes_one_table_and_tunes_the_other():
    m = small_kim(variant="multichannel", dropout=0.0)
    static, tuned = m.embeddings
    assert torch.equal(static.weight, tuned.weight)  # both start from the same values
    assert not static.weight.requires_grad and tuned.weight.requires_grad
    before = static.weight.clone()
    opt = torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=0.5)
    loss = F.cross_entropy(m(torch.randint(1, 30, (6, 9))), torch.tensor([0, 1, 2, 0, 1, 2]))
    loss.backward()
    assert static.weight.grad is None
    assert tuned.weight.grad is not None and tuned.weight.grad.abs().sum() > 0
    assert tuned.weight.grad[0].abs().sum() == 0  # the padding row learns nothing
    opt.step()
    assert torch.equal(static.weight, before) and not torch.equal(tuned.weight, before)


def test_kim_static_freezes_the_table():
    assert not small_kim(variant="static").embeddings[0].weight.requires_grad
    for variant in ("rand", "non-static"):
        assert small_kim(variant=variant).embeddings[0].weight.requires_grad
    assert torch.all(small_kim().embeddings[0].weight[0] == 0)


def test_kim_max_norm_projection_by_hand():
    m = small_kim(num_classes=3, filters=1, kernel_sizes=[2, 3], max_norm=3.0)
    rows = torch.tensor([[3.0, 4.0], [0.6, 0.8], [0.0, -6.0]])  # norms 5, 1, 6
    with torch.no_grad():
        m.fc.weight.copy_(rows)
    m.apply_constraints()
    expected = torch.tensor([[1.8, 2.4], [0.6, 0.8], [0.0, -3.0]])
    assert torch.allclose(m.fc.weight, expected, atol=1e-6)
    assert torch.equal(m.fc.weight[1], rows[1])  # a row within the ball is untouched
    off = small_kim(num_classes=3, filters=1, kernel_sizes=[2, 3], max_norm=None)
    with torch.no_grad():
        off.fc.weight.copy_(rows)
    off.apply_constraints()
    assert torch.equal(off.fc.weight, rows)


def test_kim_pooled_matches_the_logits():
    torch.manual_seed(1)
    m = small_kim(kernel_sizes=(2, 3, 5)).eval()
    ids = torch.tensor([pad_to([4, 5, 6, 7, 8, 9], 9), pad_to([3], 9), pad_to([2, 9, 11], 9)])
    with torch.no_grad():
        features, positions, widths = m.pooled(ids)
        assert torch.allclose(m(ids), m.fc(features), atol=1e-6)
        assert features.shape == positions.shape == (3, 12) and widths.tolist() == [2] * 4 + [3] * 4 + [5] * 4
        # Each feature is its filter's response at the winning n-gram, which lies within the sentence.
        x = m.embed(F.pad(ids, (0, 4)))
        lengths = sequence_lengths(ids)
        for g, (conv, k) in enumerate(zip(m.convs, m.kernel_sizes)):
            c = F.relu(conv(x))
            for f in range(4):
                col = 4 * g + f
                for b in range(3):
                    t = int(positions[b, col])
                    assert t + k <= max(int(lengths[b]), k)
                    assert torch.isclose(c[b, f, t], features[b, col], atol=1e-6)


def test_kim_classifier_interface():
    m = small_kim()
    assert m.get_classifier() is m.fc
    m.reset_classifier(7)
    assert m(torch.randint(1, 30, (2, 5))).shape == (2, 7)


def test_kim_onnx_export_with_dynamic_batch_and_length(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    torch.manual_seed(2)
    m = small_kim(kernel_sizes=(3, 4, 5)).eval()
    path = tmp_path / "kim.onnx"
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(m, (torch.randint(1, 30, (2, 10)),), str(path), dynamo=False, opset_version=17,
                          input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch", 1: "length"}, "logits": {0: "batch"}})
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    batches = [torch.tensor([pad_to([4, 5, 6, 7, 8, 9, 3], 17), pad_to([3], 17), pad_to([2, 9, 11, 12], 17)]),
               torch.tensor([[7, 8]])]  # longer, then shorter than the widest filter
    for ids in batches:
        got = sess.run(["logits"], {"input": ids.numpy()})[0]
        with torch.no_grad():
            ref = m(ids).numpy()
        np.testing.assert_allclose(got, ref, atol=1e-5)


def test_dpcnn_onnx_export_with_dynamic_batch_and_length(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    torch.manual_seed(7)
    m = get_model("dpcnn", num_classes=3, in_chans=30, input_size=16, embed_dim=8, filters=8, blocks=2).eval()
    path = tmp_path / "dpcnn.onnx"
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(m, (torch.randint(1, 30, (2, 16)),), str(path), dynamo=False, opset_version=17,
                          input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch", 1: "length"}, "logits": {0: "batch"}})
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for ids in (torch.tensor([pad_to([4, 5, 6, 7, 8], 11), pad_to([3], 11), [2] * 11]), torch.tensor([[7]])):
        with torch.no_grad():
            ref = m(ids).numpy()
        np.testing.assert_allclose(sess.run(["logits"], {"input": ids.numpy()})[0], ref, atol=1e-5)


def test_kim_training_reduces_the_loss_and_respects_max_norm():
    torch.manual_seed(3)
    m = small_kim(num_classes=2, max_norm=0.5, dropout=0.0)
    ids, y = toy_problem(32, 12)
    opt = torch.optim.Adam([p for p in m.parameters() if p.requires_grad], lr=0.05)
    first = last = None
    for _ in range(15):
        opt.zero_grad()
        loss = F.cross_entropy(m(ids), y)
        loss.backward()
        opt.step()
        m.apply_constraints()
        first = first if first is not None else loss.item()
        last = loss.item()
    assert last < 0.7 * first
    assert float(m.fc.weight.detach().norm(dim=1).max()) <= 0.5 + 1e-6


def toy_problem(n: int, length: int, vocab: int = 30) -> tuple[torch.Tensor, torch.Tensor]:
    """Random sentences of varying length; class 1 iff token 2 occurs in them."""
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, vocab, (n, length), generator=g)
    y = torch.arange(n) % 2
    lengths = torch.randint(3, length + 1, (n,), generator=g)
    for i in range(n):
        if y[i]:
            ids[i, int(torch.randint(0, int(lengths[i]), (1,), generator=g))] = 2
        ids[i, int(lengths[i]):] = 0
    return ids, y


# --------------------------------------------------------------------------- char_cnn


def test_char_cnn_geometry():
    assert output_length(1014) == 34 and MIN_LENGTH == 123
    assert output_length(122) < 1 <= output_length(123)
    with pytest.raises(UserError, match="at least 123"):
        get_model("char_cnn", num_classes=4, in_chans=70, input_size=100)
    default = get_model("char_cnn", num_classes=4)
    assert default.classifier[0].in_features == 34 * 256 and default.fc.in_features == 1024


@pytest.mark.parametrize("one_hot", [False, True])
def test_char_cnn_shapes(one_hot):
    m = get_model("char_cnn", num_classes=5, in_chans=40, input_size=130, width=16, dense=32, one_hot=one_hot).eval()
    assert m(torch.randint(0, 40, (3, 130))).shape == (3, 5)
    with pytest.raises(UserError, match="exactly 130"):
        m(torch.randint(0, 40, (3, 129)))
    assert m.embeddings == []
    if one_hot:
        table = m.embedding.weight
        assert not table.requires_grad and table[0].sum() == 0 and table[1].sum() == 0 and table[5, 5] == 1


def test_char_cnn_training_reduces_the_loss():
    torch.manual_seed(4)
    m = get_model("char_cnn", num_classes=2, in_chans=30, input_size=123, width=32, dense=32, dropout=0.0)
    ids = torch.randint(3, 30, (16, 123), generator=torch.Generator().manual_seed(0))
    y = torch.arange(16) % 2
    ids[y == 1, ::4] = 2  # class 1: every fourth character is a 2
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    losses = []
    for _ in range(12):
        opt.zero_grad()
        loss = F.cross_entropy(m(ids), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]


# --------------------------------------------------------------------------- dpcnn


def test_dpcnn_shapes():
    m = get_model("dpcnn", num_classes=3, in_chans=30, input_size=64, embed_dim=8, filters=8, blocks=3).eval()
    for length in (1, 2, 5, 64):
        assert m(torch.randint(1, 30, (4, length))).shape == (4, 3)
    assert m.embeddings == [m.embedding]


@pytest.mark.parametrize("blocks", [0, 2, 4])
def test_dpcnn_logits_do_not_depend_on_the_batch_padding(blocks):
    torch.manual_seed(5)
    m = get_model("dpcnn", num_classes=3, in_chans=30, input_size=64, embed_dim=8, filters=8, blocks=blocks).eval()
    sentences = [[7], [3, 9], [4, 1, 8, 2, 5], [5, 6, 7, 8, 9, 10, 11, 12], [2] * 13]
    longest = max(map(len, sentences))
    batch = torch.tensor([pad_to(s, 3 * longest) for s in sentences])
    with torch.no_grad():
        together = m(batch)
        for i, s in enumerate(sentences):
            for extra in (0, 1, 6):
                alone = m(torch.tensor([pad_to(s, len(s) + extra)]))
                assert (alone[0] - together[i]).abs().max() < 1e-5, (s, extra)


def test_dpcnn_training_reduces_the_loss():
    torch.manual_seed(6)
    m = get_model("dpcnn", num_classes=2, in_chans=30, input_size=16, embed_dim=8, filters=16, blocks=2,
                  dropout=0.0)
    ids, y = toy_problem(32, 16)
    opt = torch.optim.Adam(m.parameters(), lr=0.01)
    losses = []
    for _ in range(15):
        opt.zero_grad()
        loss = F.cross_entropy(m(ids), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]
