"""The time-series models: fcn1d, resnet1d (Wang et al. 2017), inception_time (Ismail Fawaz et al. 2020),
lstm_fcn (Karim et al. 2018), cnn_lstm and the TCN (Bai et al. 2018: tcn, tcn_classifier)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cnnkit.config import ModelConfig
from cnnkit.errors import UserError
from cnnkit.models import create_model, get_model, list_models
from cnnkit.models.registry import MODELS, model_task
from cnnkit.models.timeseries import TCN, InceptionModule, InceptionTime, InceptionTimeEnsemble, receptive_field
from cnnkit.models.weights import head_prefix

CLASSIFIERS = ["fcn1d", "resnet1d", "inception_time", "lstm_fcn", "cnn_lstm", "tcn_classifier"]


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def conv(c_in: int, c_out: int, k: int, bias: bool = True) -> int:
    """Parameters of a Conv1d: the weights plus one bias per output channel."""
    return c_in * c_out * k + (c_out if bias else 0)


def bn(c: int) -> int:
    """Parameters of a BatchNorm1d: a scale and a shift per channel (running statistics are buffers)."""
    return 2 * c


def dense(c_in: int, c_out: int) -> int:
    return c_in * c_out + c_out


# --------------------------------------------------------------------------- registry


def test_registered_with_their_task():
    assert set(list_models(task="timeseries")) >= set(CLASSIFIERS)
    assert "tcn" in list_models(task="forecast")
    for name in CLASSIFIERS:
        assert model_task(name) == "timeseries"
    assert model_task("tcn") == "forecast"
    for name in [*CLASSIFIERS, "tcn"]:
        entry = MODELS.entry(name)
        assert entry.description and "\n" not in entry.description
        assert len(entry.meta["default_input"]) == 2 and len(entry.meta["min_input"]) == 2
        assert entry.meta["min_input"][1] <= entry.meta["default_input"][1]
        assert entry.meta["variable_length"] is False
    # the image networks of the same family names are untouched
    assert model_task("fcn") == "segmentation" and model_task("resnet18") == "classification"
    assert MODELS.entry("cnn_lstm").meta["min_input"] == (1, 4)


def test_create_model_passes_a_series_shape():
    cfg = ModelConfig(name="fcn1d", options={"filters": [8, 16, 8]})
    model = create_model(cfg, (3, 40), num_classes=4).eval()
    assert model.body[0][0].in_channels == 3
    assert model(torch.randn(2, 3, 40)).shape == (2, 4)
    cfg = ModelConfig(name="tcn", options={"channels": 8, "horizon": 6, "targets": 2})
    model = create_model(cfg, (3, 40), num_classes=1).eval()
    assert model(torch.randn(2, 3, 40)).shape == (2, 2, 6)


def test_bad_options_are_user_errors():
    with pytest.raises(UserError, match="no option"):
        get_model("fcn1d", num_classes=2, in_chans=1, input_size=16, lstm_units=4)
    with pytest.raises(UserError, match="kernel_sizes"):
        get_model("fcn1d", num_classes=2, in_chans=1, input_size=16, kernel_sizes=[8, 5])
    with pytest.raises(UserError, match="filters"):
        get_model("resnet1d", num_classes=2, in_chans=1, input_size=16, filters=[])
    with pytest.raises(UserError, match="bottleneck"):
        get_model("inception_time", num_classes=2, in_chans=1, input_size=16, bottleneck=-1)
    with pytest.raises(UserError, match="ensemble"):
        get_model("inception_time", num_classes=2, in_chans=1, input_size=16, ensemble=0)
    with pytest.raises(UserError, match="dropout"):
        get_model("lstm_fcn", num_classes=2, in_chans=1, input_size=16, dropout=1.0)
    with pytest.raises(UserError, match="targets"):
        get_model("tcn", num_classes=2, in_chans=1, input_size=16, targets=2)
    with pytest.raises(UserError, match="levels"):
        get_model("tcn", in_chans=1, input_size=16, channels=[8, 8, 8], levels=2, horizon=1)
    with pytest.raises(UserError, match="kernel_size"):
        get_model("tcn_classifier", num_classes=2, in_chans=1, input_size=16, kernel_size=1)
    with pytest.raises(UserError, match="weight_norm"):
        get_model("tcn_classifier", num_classes=2, in_chans=1, input_size=16, weight_norm="yes")


def test_too_short_series_are_user_errors():
    with pytest.raises(UserError, match="at least 4"):
        get_model("cnn_lstm", num_classes=2, in_chans=1, input_size=3)
    # options that pool more need longer series: 3 poolings of 3 -> 27 steps
    with pytest.raises(UserError, match="at least 27 steps"):
        get_model("cnn_lstm", num_classes=2, in_chans=1, input_size=20, filters=[8, 8, 8], pool=3)
    get_model("cnn_lstm", num_classes=2, in_chans=1, input_size=27, filters=[8, 8, 8], pool=3)


# --------------------------------------------------------------------------- shapes


def _lengths(name: str) -> list[int]:
    smallest = MODELS.entry(name).meta["min_input"][1]
    return [smallest, smallest + 1, 37]


@pytest.mark.parametrize("name", CLASSIFIERS)
@pytest.mark.parametrize("chans", [1, 3])
def test_classifier_shapes(name, chans):
    torch.manual_seed(0)
    for length in _lengths(name):
        model = get_model(name, num_classes=5, in_chans=chans, input_size=length).eval()
        with torch.no_grad():
            out = model(torch.randn(2, chans, length))
        assert out.shape == (2, 5), (name, chans, length)
        assert torch.isfinite(out).all()
        assert model.num_classes == 5
        model.reset_classifier(3)
        with torch.no_grad():
            assert model(torch.randn(2, chans, length)).shape == (2, 3)


@pytest.mark.parametrize("name", [n for n in CLASSIFIERS if n != "lstm_fcn"])
def test_classifiers_take_other_lengths_than_their_input_size(name):
    model = get_model(name, num_classes=4, in_chans=2, input_size=64).eval()
    with torch.no_grad():
        for length in (MODELS.entry(name).meta["min_input"][1], 20, 100):
            assert model(torch.randn(3, 2, length)).shape == (3, 4)


def test_lstm_fcn_dimension_shuffle_takes_exactly_its_length():
    model = get_model("lstm_fcn", num_classes=2, in_chans=2, input_size=30).eval()
    assert model.lstm.input_size == 30  # the LSTM's features are the 30 values of a channel
    with pytest.raises(UserError, match="exactly 30 steps"):
        model(torch.randn(2, 2, 31))
    plain = get_model("lstm_fcn", num_classes=2, in_chans=2, input_size=30, shuffle=False).eval()
    assert plain.lstm.input_size == 2  # one step per time step, the channels its features
    with torch.no_grad():
        assert plain(torch.randn(2, 2, 31)).shape == (2, 2)
    # the LSTM's last state (8 units) and the FCN's 128 averaged features meet in the head
    assert model.fc.in_features == 8 + 128


@pytest.mark.parametrize("chans, targets", [(1, None), (3, None), (3, 1)])
def test_forecast_shapes(chans, targets):
    for length in (1, 2, 24):
        model = get_model("tcn", in_chans=chans, input_size=length, channels=8, horizon=7, targets=targets).eval()
        with torch.no_grad():
            out = model(torch.randn(4, chans, length))
        assert out.shape == (4, targets or chans, 7)
    with pytest.raises(UserError, match="horizon"):
        model.reset_classifier(3)


def test_tcn_without_horizon_is_a_classifier_head():
    model = get_model("tcn", num_classes=6, in_chans=2, input_size=16, channels=8).eval()
    assert not model.forecasting
    assert model(torch.randn(2, 2, 16)).shape == (2, 6)


# --------------------------------------------------------------------------- parameter counts


def test_fcn1d_parameter_count_from_the_paper_layer_sizes():
    model = get_model("fcn1d", num_classes=2, in_chans=1, input_size=128)
    expected = (conv(1, 128, 8) + bn(128) + conv(128, 256, 5) + bn(256) + conv(256, 128, 3) + bn(128)
                + dense(128, 2))
    assert expected == 264_962
    assert n_params(model) == expected


def test_resnet1d_parameter_count_from_the_paper_layer_sizes():
    model = get_model("resnet1d", num_classes=2, in_chans=1, input_size=128)

    def block(c_in, c_out, shortcut):
        body = conv(c_in, c_out, 8) + conv(c_out, c_out, 5) + conv(c_out, c_out, 3) + 3 * bn(c_out)
        return body + (conv(c_in, c_out, 1) + bn(c_out) if shortcut else 0)

    expected = block(1, 64, True) + block(64, 128, True) + block(128, 128, False) + dense(128, 2)
    assert n_params(model) == expected


# --------------------------------------------------------------------------- inception_time


def test_inception_module_has_128_channels():
    x = torch.randn(2, 3, 25)
    module = InceptionModule(3).eval()
    assert module(x).shape == (2, 128, 25)
    assert module.bottleneck.weight.shape == (32, 3, 1)
    assert [c.kernel_size[0] for c in module.convs] == [39, 19, 9]
    assert all(c.in_channels == 32 and c.out_channels == 32 for c in module.convs)
    assert module.pool_conv.in_channels == 3  # the pooled branch skips the bottleneck
    univariate = InceptionModule(1).eval()
    assert isinstance(univariate.bottleneck, nn.Identity)  # no bottleneck on a single channel (the authors' code)
    assert univariate(torch.randn(2, 1, 25)).shape == (2, 128, 25)
    wider = InceptionModule(3, filters=8, kernel_sizes=(10, 4)).eval()  # even kernels keep the length too
    assert wider(x).shape == (2, 24, 25)


def test_inception_time_residual_shortcuts():
    model = get_model("inception_time", num_classes=3, in_chans=2, input_size=50).eval()
    assert isinstance(model, InceptionTime)
    body = model.body
    assert len(body.blocks) == 6 and len(body.shortcuts) == 2
    assert body.shortcuts[0][0].weight.shape == (128, 2, 1)  # from the input (2 channels) to module 3's output
    assert body.shortcuts[1][0].weight.shape == (128, 128, 1)  # from module 3's output to module 6's
    seen = []
    hooks = [s.register_forward_hook(lambda m, i, o: seen.append((tuple(i[0].shape), tuple(o.shape))))
             for s in body.shortcuts]
    with torch.no_grad():
        model(torch.randn(4, 2, 50))
    for h in hooks:
        h.remove()
    assert seen == [((4, 2, 50), (4, 128, 50)), ((4, 128, 50), (4, 128, 50))]
    assert model.fc.in_features == 128
    assert len(get_model("inception_time", num_classes=3, in_chans=2, input_size=50, depth=4).body.shortcuts) == 1
    flat = get_model("inception_time", num_classes=3, in_chans=2, input_size=50, residual=False)
    assert len(flat.body.shortcuts) == 0


def test_inception_time_ensemble_averages_the_members_probabilities():
    torch.manual_seed(0)
    model = get_model("inception_time", num_classes=4, in_chans=2, input_size=30, depth=3, filters=8,
                      ensemble=5).eval()
    assert isinstance(model, InceptionTimeEnsemble) and model.members == 5
    # independently initialised
    firsts = [body.blocks[0].convs[0].weight for body in model.bodies]
    assert all(not torch.equal(firsts[0], w) for w in firsts[1:])
    x = torch.randn(6, 2, 30)
    with torch.no_grad():
        out = model(x)
        members = [F.softmax(head(body(x).mean(dim=2)), dim=1) for body, head in zip(model.bodies, model.heads)]
    mean = torch.stack(members).mean(dim=0)
    torch.testing.assert_close(F.softmax(out, dim=1), mean, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out, mean.log(), rtol=1e-5, atol=1e-5)  # the log of the averaged probabilities
    assert not torch.allclose(members[0], members[1])  # the members do differ
    assert head_prefix(model) == "heads."  # fine-tuning finds the heads
    # one joint training step reaches every member
    model.train()
    F.cross_entropy(model(x), torch.randint(0, 4, (6,))).backward()
    assert all(body.blocks[0].convs[0].weight.grad.abs().sum() > 0 for body in model.bodies)
    model.reset_classifier(2)
    assert model.eval()(x).shape == (6, 2) and model.num_classes == 2


# --------------------------------------------------------------------------- tcn


def test_tcn_stack_is_causal_and_the_forecast_reads_the_last_step():
    torch.manual_seed(0)
    model = get_model("tcn", in_chans=2, input_size=40, levels=3, channels=8, kernel_size=3, horizon=4).eval()
    x = torch.randn(3, 2, 40)
    t0 = 25
    changed = x.clone()
    changed[..., t0:] = torch.randn(3, 2, 40 - t0)
    with torch.no_grad():
        before, after = model.sequence_features(x), model.sequence_features(changed)
    assert before.shape == (3, 8, 40)
    torch.testing.assert_close(after[..., :t0], before[..., :t0], rtol=0, atol=1e-6)
    assert not torch.allclose(after[..., t0:], before[..., t0:])  # the later steps do see the change
    last = x.clone()
    last[..., -1] += 1.0
    with torch.no_grad():
        assert not torch.allclose(model(last), model(x))


@pytest.mark.parametrize("levels, kernel_size", [(1, 2), (2, 3), (3, 3), (2, 5)])
def test_tcn_receptive_field_by_gradient(levels, kernel_size):
    field = 1 + 2 * (kernel_size - 1) * (2 ** levels - 1)
    assert receptive_field(levels, kernel_size) == field
    length = field + 10
    torch.manual_seed(1)
    model = get_model("tcn_classifier", num_classes=2, in_chans=2, input_size=length, levels=levels, channels=4,
                      kernel_size=kernel_size, dropout=0.0, weight_norm=False).eval()
    assert isinstance(model, TCN) and model.receptive_field == field
    # Positive weights, biases and inputs keep every ReLU open: the gradient is then positive
    # wherever the last step depends on the input and exactly zero elsewhere.
    with torch.no_grad():
        for p in model.blocks.parameters():
            p.uniform_(0.1, 1.0)
    x = (torch.rand(2, 2, length) + 0.1).requires_grad_()
    model.forward_features(x).sum().backward()
    seen = (x.grad.abs().sum(dim=(0, 1)) > 0).tolist()
    assert seen == [False] * (length - field) + [True] * field


def test_tcn_default_levels_cover_the_input_and_nothing_older_is_seen():
    torch.manual_seed(2)
    model = get_model("tcn", in_chans=1, input_size=64, channels=4, horizon=3, dropout=0.0).eval()
    assert model.levels == 5 and model.receptive_field == 125  # 4 levels would see 61 < 64 steps
    short = get_model("tcn", in_chans=1, input_size=64, channels=4, levels=2, kernel_size=3, horizon=3).eval()
    x = torch.randn(1, 1, 64, requires_grad=True)
    short(x).sum().backward()
    assert (x.grad[..., : 64 - short.receptive_field] == 0).all()  # weight-normalised, default init
    assert short.receptive_field == 13


# --------------------------------------------------------------------------- learning check


def _waves(n: int, length: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Sines (class 0) and square waves (class 1) of random frequency and phase, z-normalised, with noise."""
    t = torch.arange(length, dtype=torch.float32)
    cycles = 1.0 + 3.0 * torch.rand(n, 1, generator=generator)
    phase = 2 * math.pi * torch.rand(n, 1, generator=generator)
    sine = torch.sin(2 * math.pi * cycles * t / length + phase)
    y = torch.arange(n) % 2
    x = torch.where(y[:, None] == 1, torch.sign(sine), sine)
    x = x + 0.05 * torch.randn(n, length, generator=generator)
    x = (x - x.mean(dim=1, keepdim=True)) / x.std(dim=1, keepdim=True)
    return x[:, None, :], y


@pytest.mark.parametrize("name, options", [
    ("lstm_fcn", {"filters": [16, 32, 16], "lstm_units": 8}),
    ("cnn_lstm", {"filters": [16, 16], "lstm_units": 16, "dropout": 0.1}),
])
def test_learns_sine_versus_square(name, options):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    length = 64
    x, y = _waves(64, length, g)
    x_test, y_test = _waves(64, length, g)
    model = get_model(name, num_classes=2, in_chans=1, input_size=length, **options)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    with torch.no_grad():
        start = F.cross_entropy(model(x), y).item()
    for _ in range(100):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        assert F.cross_entropy(model(x), y).item() < 0.1 * start
        assert (model(x).argmax(1) == y).float().mean().item() == 1.0
        # new series of the same two kinds (over 8 seeds the held-out accuracy was 0.97 or more)
        assert (model(x_test).argmax(1) == y_test).float().mean().item() >= 0.95
