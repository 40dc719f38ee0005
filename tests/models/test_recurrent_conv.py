"""Recurrent convolutions (cnnkit.nn.recurrent_conv) and the models built on them (cnnkit.models.video):
ConvLSTM / ConvGRU cells against hand-written steps, the stacks against repeated cell calls, Liang &
Hu's RCL and RCNN, the encoder-forecasters and the clip classifiers."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cnnkit.errors import UserError
from cnnkit.models import get_model, list_models
from cnnkit.models.registry import MODELS, model_task
from cnnkit.models.video import CNNLSTMVideo, ConvLSTMVideo, EncoderForecaster
from cnnkit.nn.recurrent_conv import RCNN, ConvGRU, ConvGRUCell, ConvLSTM, ConvLSTMCell, RecurrentConv2d


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def randomise(module: nn.Module, seed: int = 0) -> None:
    """Every parameter and BN buffer drawn at random, so no term of an equation can hide behind a zero."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.2)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)


# --------------------------------------------------------------------------- ConvLSTM


def lstm_step_by_hand(x, h, c, weight, bias, k, w_ci=None, w_cf=None, w_co=None):
    """Shi et al.'s equations, written out: one convolution per gate and per input (x and h separately)."""
    cin = x.shape[1]
    hid = h.shape[1]
    pad = k // 2

    def gate(j):
        wx = weight[j * hid:(j + 1) * hid, :cin]
        wh = weight[j * hid:(j + 1) * hid, cin:]
        return F.conv2d(x, wx, bias[j * hid:(j + 1) * hid], padding=pad) + F.conv2d(h, wh, padding=pad)

    zi, zf, zg, zo = (gate(j) for j in range(4))
    if w_ci is not None:
        zi, zf = zi + w_ci * c, zf + w_cf * c
    i, f, g = torch.sigmoid(zi), torch.sigmoid(zf), torch.tanh(zg)
    c_new = f * c + i * g
    if w_co is not None:
        zo = zo + w_co * c_new
    o = torch.sigmoid(zo)
    return o * torch.tanh(c_new), c_new


@pytest.mark.parametrize("peephole, size", [(False, None), (True, None), (True, (6, 5))])
def test_convlstm_cell_equals_a_hand_unrolled_step(peephole, size):
    torch.manual_seed(0)
    cell = ConvLSTMCell(3, 4, kernel=3, peephole=peephole, peephole_size=size)
    randomise(cell)
    x, h, c = torch.randn(2, 3, 6, 5), torch.randn(2, 4, 6, 5), torch.randn(2, 4, 6, 5)
    peeps = (cell.w_ci, cell.w_cf, cell.w_co) if peephole else ()
    want_h, want_c = lstm_step_by_hand(x, h, c, cell.conv.weight, cell.conv.bias, 3, *peeps)
    got_h, got_c = cell(x, (h, c))
    torch.testing.assert_close(got_h, want_h)
    torch.testing.assert_close(got_c, want_c)
    if peephole:  # the peepholes take part: zeroing them changes the step
        with torch.no_grad():
            cell.w_ci.zero_()
        assert not torch.allclose(cell(x, (h, c))[0], got_h)


def test_convlstm_cell_starts_from_zeros_and_initialises_the_forget_bias():
    torch.manual_seed(0)
    cell = ConvLSTMCell(2, 3, kernel=5)
    assert torch.equal(cell.conv.bias[3:6], torch.ones(3))  # the forget gate's slice
    x = torch.randn(2, 2, 7, 7)
    zeros = torch.zeros(2, 3, 7, 7)
    h, c = cell(x)
    want_h, want_c = lstm_step_by_hand(x, zeros, zeros, cell.conv.weight, cell.conv.bias, 5)
    torch.testing.assert_close(h, want_h)
    torch.testing.assert_close(c, want_c)
    assert ConvLSTMCell(2, 3, peephole=True).w_ci.shape == (3, 1, 1)


def test_convlstm_over_a_clip_equals_repeated_cell_calls():
    torch.manual_seed(0)
    lstm = ConvLSTM(2, [4, 3], kernel=3, layers=2)
    randomise(lstm, seed=1)
    x = torch.randn(2, 5, 2, 6, 6)
    # layer by layer, each over the whole clip (the order of loops the stack does not use)
    seq = x
    states = []
    for cell in lstm.cells:
        state, outs = None, []
        for t in range(x.shape[1]):
            state = cell(seq[:, t], state)
            outs.append(state[0])
        seq = torch.stack(outs, dim=1)
        states.append(state)
    out, got_states = lstm.run(x)
    torch.testing.assert_close(out, seq)
    assert out.shape == (2, 5, 3, 6, 6)
    for (h, c), (gh, gc) in zip(states, got_states):
        torch.testing.assert_close(gh, h)
        torch.testing.assert_close(gc, c)
    torch.testing.assert_close(lstm(x), seq)
    lstm.return_sequence = False
    torch.testing.assert_close(lstm(x), seq[:, -1])
    # a given start state is used: continuing from the states of the first 3 frames gives the rest
    first, mid = lstm.run(x[:, :3])
    rest, _ = lstm.run(x[:, 3:], mid)
    torch.testing.assert_close(torch.cat([first, rest], dim=1), seq)


def test_a_cell_without_input_reads_its_state():
    torch.manual_seed(0)
    cell = ConvLSTMCell(0, 3)
    h, c = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    zi, zf, zg, zo = F.conv2d(h, cell.conv.weight, cell.conv.bias, padding=1).chunk(4, 1)
    c_new = torch.sigmoid(zf) * c + torch.sigmoid(zi) * torch.tanh(zg)
    got = cell(None, (h, c))
    torch.testing.assert_close(got[1], c_new)
    torch.testing.assert_close(got[0], torch.sigmoid(zo) * torch.tanh(c_new))
    with pytest.raises(ValueError):
        cell(None)


# --------------------------------------------------------------------------- ConvGRU


def gru_step_by_hand(x, h, wg, bg, wc, bc, k):
    pad = k // 2
    hid = h.shape[1]
    cin = x.shape[1]
    r = torch.sigmoid(F.conv2d(x, wg[:hid, :cin], bg[:hid], padding=pad) + F.conv2d(h, wg[:hid, cin:], padding=pad))
    z = torch.sigmoid(F.conv2d(x, wg[hid:, :cin], bg[hid:], padding=pad) + F.conv2d(h, wg[hid:, cin:], padding=pad))
    n = torch.tanh(F.conv2d(x, wc[:, :cin], bc, padding=pad) + F.conv2d(r * h, wc[:, cin:], padding=pad))
    return (1 - z) * h + z * n


def test_convgru_cell_equals_a_hand_unrolled_step():
    torch.manual_seed(0)
    cell = ConvGRUCell(3, 4, kernel=3)
    randomise(cell)
    x, h = torch.randn(2, 3, 5, 6), torch.randn(2, 4, 5, 6)
    want = gru_step_by_hand(x, h, cell.gates.weight, cell.gates.bias, cell.candidate.weight, cell.candidate.bias, 3)
    torch.testing.assert_close(cell(x, h), want)
    torch.testing.assert_close(cell(x), gru_step_by_hand(x, torch.zeros_like(h), cell.gates.weight, cell.gates.bias,
                                                          cell.candidate.weight, cell.candidate.bias, 3))


def test_convgru_over_a_clip_equals_repeated_cell_calls():
    torch.manual_seed(0)
    gru = ConvGRU(2, 3, kernel=5, layers=2, return_sequence=False)
    randomise(gru, seed=2)
    x = torch.randn(2, 4, 2, 7, 7)
    seq = x
    for cell in gru.cells:
        h, outs = None, []
        for t in range(x.shape[1]):
            h = cell(seq[:, t], h)
            outs.append(h)
        seq = torch.stack(outs, dim=1)
    torch.testing.assert_close(gru(x), seq[:, -1])
    out, states = gru.run(x)
    torch.testing.assert_close(out, seq)
    torch.testing.assert_close(states[-1], seq[:, -1])
    assert gru.hidden == [3, 3]


def test_stack_arguments_are_checked():
    with pytest.raises(ValueError, match="odd"):
        ConvLSTMCell(1, 2, kernel=4)
    with pytest.raises(ValueError, match="widths"):
        ConvLSTM(1, [2, 3], layers=3)
    with pytest.raises(ValueError, match="clips"):
        ConvGRU(1, 2)(torch.randn(2, 1, 4, 4))
    with pytest.raises(ValueError, match="peephole=True"):
        ConvLSTMCell(1, 2, peephole_size=(4, 4))


# --------------------------------------------------------------------------- RCL and RCNN


@pytest.mark.parametrize("train", [True, False])
def test_rcl_with_zero_steps_is_conv_bn_relu(train):
    torch.manual_seed(0)
    rcl = RecurrentConv2d(4, kernel=3, steps=0, in_ch=3)
    randomise(rcl)
    rcl.train(train)
    u = torch.randn(5, 3, 6, 6)
    bn = rcl.norms[0]
    conv = F.conv2d(u, rcl.feed.weight, None, padding=1)
    want = F.relu(F.batch_norm(conv, bn.running_mean.clone(), bn.running_var.clone(), bn.weight, bn.bias,
                               training=train, eps=bn.eps))
    torch.testing.assert_close(rcl(u), want)
    assert rcl.recurrent is None and rcl.feed.bias is None


def test_rcl_unrolls_with_the_feed_forward_input_held_fixed():
    torch.manual_seed(0)
    rcl = RecurrentConv2d(4, kernel=3, steps=2).eval()
    randomise(rcl, seed=3)
    u = torch.randn(2, 4, 5, 5)

    def bn(z, m):
        return F.batch_norm(z, m.running_mean, m.running_var, m.weight, m.bias, training=False, eps=m.eps)

    ff = F.conv2d(u, rcl.feed.weight, padding=1)
    x = F.relu(bn(ff, rcl.norms[0]))
    for t in (1, 2):
        x = F.relu(bn(ff + F.conv2d(x, rcl.recurrent.weight, padding=1), rcl.norms[t]))
    torch.testing.assert_close(rcl(u), x)
    assert len(rcl.norms) == 3


def test_rcl_with_lrn_follows_the_paper():
    torch.manual_seed(0)
    rcl = RecurrentConv2d(16, kernel=3, steps=1, norm="lrn")
    u = torch.randn(2, 16, 4, 4)
    lrn = nn.LocalResponseNorm(16 // 8 + 1, alpha=0.001, beta=0.75, k=1.0)
    ff = F.conv2d(u, rcl.feed.weight, rcl.feed.bias, padding=1)
    x = F.relu(lrn(ff))
    x = F.relu(lrn(ff + F.conv2d(x, rcl.recurrent.weight, padding=1)))
    torch.testing.assert_close(rcl(u), x)
    assert rcl.feed.bias is not None and n_params(rcl) == 2 * 16 * 16 * 9 + 16


@pytest.mark.parametrize("width, steps, norm", [(96, 3, "batch"), (128, 3, "batch"), (32, 5, "batch"),
                                                (96, 3, "lrn"), (64, 2, "lrn")])
def test_rcnn_and_its_feed_forward_twin_have_the_same_parameter_count(width, steps, norm):
    a = RCNN(10, 3, width=width, steps=steps, norm=norm)
    b = RCNN(10, 3, width=width, steps=steps, norm=norm, recurrent=False)
    assert abs(n_params(a) - n_params(b)) / n_params(a) < 0.02
    assert not any(isinstance(m, RecurrentConv2d) for m in b.modules())
    assert sum(isinstance(m, RecurrentConv2d) for m in a.modules()) == 4


def test_rcnn_96_has_the_papers_size():
    k = 96
    stem = 3 * k * 25 + 2 * k  # conv 5x5 without bias, batch norm
    rcl = 2 * k * k * 9 + 4 * 2 * k  # w_f and w_r, 4 batch norms
    assert n_params(RCNN()) == stem + 4 * rcl + k * 10 + 10 == 674_986  # the paper: 0.67M
    assert round(n_params(RCNN(norm="lrn")) / 1e6, 2) == 0.67


def test_rcnn_is_registered_and_trains():
    assert model_task("rcnn") == "classification" and "rcnn" in list_models(task="classification")
    torch.manual_seed(0)
    for recurrent in (True, False):
        model = get_model("rcnn", num_classes=10, in_chans=3, input_size=32, width=16, recurrent=recurrent)
        x = torch.randn(2, 3, 32, 32)
        out = model(x)
        assert out.shape == (2, 10)
        F.cross_entropy(out, torch.tensor([1, 2])).backward()
        assert all(p.grad is not None for p in model.parameters())
        assert model.forward_features(x).shape == (2, 16)
    # global average pooling, and the paper's geometry: two poolings 32 -> 16 -> 8
    m = get_model("rcnn", in_chans=1, input_size=28, width=8, pool="avg", steps=0).eval()
    assert m(torch.randn(1, 1, 28, 28)).shape == (1, 10)
    assert [type(x).__name__ for x in m.body].count("MaxPool2d") == 2
    with pytest.raises(UserError, match="norm"):
        get_model("rcnn", norm="group")
    with pytest.raises(UserError, match="steps"):
        get_model("rcnn", steps=-1)
    with pytest.raises(UserError, match="recurrent"):
        get_model("rcnn", recurrent="no")


# --------------------------------------------------------------------------- frame prediction


def test_frame_models_are_registered_with_clip_shapes():
    assert set(list_models(task="frames")) >= {"convlstm_frames", "convgru_frames"}
    assert set(list_models(task="video")) >= {"cnn_lstm_video", "convlstm_video"}
    for name in ("convlstm_frames", "convgru_frames", "cnn_lstm_video", "convlstm_video"):
        entry = MODELS.entry(name)
        assert len(entry.meta["default_input"]) == 4 and entry.meta["default_input"][1:] == (1, 64, 64)
        assert len(entry.meta["min_input"]) == 4 and "\n" not in entry.description


@pytest.mark.parametrize("name", ["convlstm_frames", "convgru_frames"])
@pytest.mark.parametrize("feedback", [False, True])
def test_frame_models_predict_k_frames_in_0_1(name, feedback):
    torch.manual_seed(0)
    model = get_model(name, in_chans=1, input_size=16, hidden=[8, 6], future=3, patch=4, feedback=feedback)
    assert model.future == 3
    x = torch.rand(2, 5, 1, 16, 16)
    y = model(x)
    assert y.shape == (2, 3, 1, 16, 16)
    assert float(y.detach().min()) >= 0.0 and float(y.detach().max()) <= 1.0
    torch.testing.assert_close(y, torch.sigmoid(model.forward_logits(x)))
    # any number of input frames; every parameter learns from a pixel loss
    assert model(torch.rand(1, 2, 1, 16, 16)).shape == (1, 3, 1, 16, 16)
    F.binary_cross_entropy_with_logits(model.forward_logits(x), torch.rand(2, 3, 1, 16, 16)).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_encoder_forecaster_hands_the_encoder_state_to_the_forecaster():
    torch.manual_seed(0)
    model = EncoderForecaster(in_chans=2, hidden=[5, 4], kernel=3, future=2, patch=2, cell="lstm")
    x = torch.rand(3, 4, 2, 8, 8)
    # patches of 2x2 to channels, by hand: channel c*4 + 2*i + j holds pixel (2r + i, 2s + j) of channel c
    seq = x.reshape(3, 4, 2, 4, 2, 4, 2).permute(0, 1, 2, 4, 6, 3, 5).reshape(3, 4, 8, 4, 4)
    _, states = model.encoder.run(seq)
    frames = []
    for _ in range(2):
        states = model.forecaster.step(None, states)
        y = model.out(torch.cat([h for h, _ in states], dim=1))  # (3, 8, 4, 4)
        frames.append(y.reshape(3, 2, 2, 2, 4, 4).permute(0, 1, 4, 2, 5, 3).reshape(3, 2, 8, 8))
    torch.testing.assert_close(model.forward_logits(x), torch.stack(frames, dim=1))
    assert model.forecaster.cells[0].in_ch == 0 and model.encoder.cells[0].in_ch == 8


def test_frame_model_options_are_checked():
    with pytest.raises(UserError, match="multiple of 4"):
        get_model("convlstm_frames", in_chans=1, input_size=30)
    with pytest.raises(UserError, match="odd"):
        get_model("convgru_frames", in_chans=1, input_size=64, kernel=4)
    with pytest.raises(UserError, match="no option 'peephole'"):
        get_model("convgru_frames", in_chans=1, input_size=64, peephole=True)
    with pytest.raises(UserError, match="hidden"):
        get_model("convlstm_frames", in_chans=1, input_size=64, hidden=[])
    model = get_model("convlstm_frames", in_chans=1, input_size=64, hidden=[4], peephole=True)
    assert model.encoder.cells[0].peephole and model.encoder.cells[0].w_co.shape == (4, 1, 1)


# --------------------------------------------------------------------------- clip classification


@pytest.mark.parametrize("name, options", [("cnn_lstm_video", {"filters": [4, 8], "features": 16, "lstm_units": 8}),
                                           ("convlstm_video", {"hidden": [4, 6], "stem_width": 4})])
def test_clip_classifiers_give_logits_and_the_classifier_interface(name, options):
    torch.manual_seed(0)
    model = get_model(name, num_classes=7, in_chans=1, input_size=32, **options)
    x = torch.rand(2, 4, 1, 32, 32)
    model.train()
    out = model(x)
    assert out.shape == (2, 7)
    F.cross_entropy(out, torch.tensor([1, 5])).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    model.eval()
    with torch.no_grad():
        feats = model.forward_features(x)
        torch.testing.assert_close(model.forward_head(feats), model(x))
        assert model.get_classifier().in_features == feats.shape[1]
        # the order of the frames matters (a recurrent network, not a bag of frames)
        assert not torch.allclose(model(x.flip(1)), model(x))
        assert model(torch.rand(2, 7, 1, 32, 32)).shape == (2, 7)  # any clip length
        model.reset_classifier(3)
        assert model(x).shape == (2, 3)


def test_cnn_lstm_video_shares_one_cnn_across_frames():
    torch.manual_seed(0)
    model = CNNLSTMVideo(5, 1, filters=(4,), features=8, lstm_units=6).eval()
    x = torch.rand(2, 3, 1, 16, 16)
    with torch.no_grad():
        feats = torch.stack([model.cnn(x[:, t]) for t in range(3)], dim=1)
        _, (h, _) = model.lstm(feats)
        torch.testing.assert_close(model.forward_features(x), h[-1])


def test_convlstm_video_pools_the_last_state():
    torch.manual_seed(0)
    model = ConvLSTMVideo(5, 1, hidden=(3,), downsample=1, stem_width=4, pool="max").eval()
    x = torch.rand(2, 3, 1, 8, 8)
    with torch.no_grad():
        frames = torch.stack([model.stem(x[:, t]) for t in range(3)], dim=1)
        _, states = model.convlstm.run(frames)
        torch.testing.assert_close(model.forward_features(x), states[-1][0].amax(dim=(-2, -1)))
    with pytest.raises(UserError, match="at least 8"):
        get_model("cnn_lstm_video", in_chans=1, input_size=4)
