"""Config: YAML file, then dotted overrides read as YAML, validated with errors that
name the key path and what is allowed.

The oracle for every value is the literal the test wrote (a YAML text or an
override), never the loader's own output.
"""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest
import yaml

from cnnkit.atomic import atomic_write_text
from cnnkit.config import (DEFAULT_CONFIG, Config, ModelConfig, apply_overrides, load_config,
                           parse_override, validate)
from cnnkit.errors import ConfigError, SpecError, UserError
from cnnkit.models import create_model

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "configs" / "lenet5_mnist5k.yaml"

TINY_LAYERS = "[{conv: {out: 4, kernel: 3}}, relu, flatten, {dense: 10}]"


def write_yaml(tmp_path: Path, text: str, name: str = "c.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


# --------------------------------------------------------------------------- the demo recipe


def test_demo_recipe_loads_with_the_values_it_spells():
    raw = yaml.safe_load(DEMO.read_text())  # the oracle: the file as plain YAML
    cfg = load_config(DEMO)
    assert cfg.data.name == raw["data"]["name"] == "mnist5k"
    assert cfg.data.batch_size == raw["data"]["batch_size"]
    assert cfg.data.val_fraction == raw["data"]["val_fraction"]
    assert cfg.model.name is None and cfg.model.layers == raw["model"]["layers"]
    assert cfg.model.input == raw["model"]["input"] == [1, 28, 28]
    scheme, _, dist = raw["model"]["init"].partition("_")
    assert (cfg.model.init.scheme, cfg.model.init.distribution) == (scheme, dist or "normal")
    assert cfg.optim.name == raw["optim"]["name"] and cfg.optim.lr == raw["optim"]["lr"]
    assert cfg.schedule.name == raw["schedule"]["name"]
    assert (cfg.train.epochs, cfg.train.seed, cfg.train.device) == (
        raw["train"]["epochs"], raw["train"]["seed"], raw["train"]["device"])
    # The packaged default (used when no file is given) is the same recipe.
    assert load_config(None).to_dict() == cfg.to_dict()
    assert yaml.safe_load(DEFAULT_CONFIG.read_text()) == raw


# --------------------------------------------------------------------------- overrides


@pytest.mark.parametrize("text, path, value", [
    ("optim.lr=0.01", ["optim", "lr"], 0.01),
    ("train.epochs=3", ["train", "epochs"], 3),
    ("train.deterministic=true", ["train", "deterministic"], True),
    ("data.path=null", ["data", "path"], None),
    ("data.name=digits", ["data", "name"], "digits"),
    ("data.classes=[5,6]", ["data", "classes"], [5, 6]),
    ("model.init={scheme: he, distribution: uniform}", ["model", "init"], {"scheme": "he", "distribution": "uniform"}),
    ("model.options.drop_rate=0.5", ["model", "options", "drop_rate"], 0.5),
    ("train.name=a=b", ["train", "name"], "a=b"),  # only the first '=' separates
])
def test_parse_override_reads_the_value_as_yaml(text, path, value):
    assert parse_override(text) == (path, value)


@pytest.mark.parametrize("bad", ["optim.lr", "=3", "optim..lr=1", ".lr=1", "optim.lr=[1,"])
def test_malformed_override_is_a_config_error_that_quotes_it(bad):
    with pytest.raises(ConfigError) as e:
        parse_override(bad)
    assert repr(bad) in str(e.value)


def test_overrides_are_typed_nested_and_leave_the_file_untouched(tmp_path):
    p = write_yaml(tmp_path, "data: {name: digits, batch_size: 16}\n"
                             f"model: {{layers: {TINY_LAYERS}}}\n"
                             "train: {epochs: 2}\n")
    before = p.read_text()
    cfg = load_config(p, ["optim.lr=0.01", "train.epochs=3", "data.classes=[5,6]", "train.deterministic=true",
                          "regularization.early_stopping.patience=3", "optim.beta2=0.95",
                          "data.val_fraction=0.25", "schedule.name=step", "schedule.step_size=2.5"])
    assert p.read_text() == before
    assert cfg.optim.lr == 0.01 and isinstance(cfg.optim.lr, float)
    assert cfg.train.epochs == 3 and isinstance(cfg.train.epochs, int)
    assert cfg.data.classes == [5, 6] and all(isinstance(c, int) for c in cfg.data.classes)
    assert cfg.train.deterministic is True
    assert cfg.data.batch_size == 16  # from the file, untouched by the overrides
    # A nested section that the file did not have is created with its defaults.
    es = cfg.regularization.early_stopping
    assert es is not None and es.patience == 3
    assert (es.monitor, es.mode, es.min_delta, es.restore_best) == ("val_loss", "auto", 0.0, True)
    assert cfg.optim.beta2 == 0.95
    assert cfg.data.val_fraction == 0.25
    assert (cfg.schedule.name, cfg.schedule.step_size) == ("step", 2.5)


def test_later_override_wins_and_the_input_dict_is_not_mutated():
    raw = {"optim": {"lr": 0.1}}
    out = apply_overrides(raw, ["optim.lr=0.2", "optim.lr=0.3"])
    assert out == {"optim": {"lr": 0.3}}
    assert raw == {"optim": {"lr": 0.1}}


def test_override_into_a_value_that_is_not_a_section_names_it():
    with pytest.raises(ConfigError, match=r"optim\.lr is not a section"):
        load_config(DEMO, ["optim.lr.x=1"])


def test_override_of_model_layers_replaces_model_name_and_vice_versa(tmp_path):
    p = write_yaml(tmp_path, "model: {name: lenet5}\n")
    cfg = load_config(p, [f"model.layers={TINY_LAYERS}"])
    assert cfg.model.name is None
    assert cfg.model.layers == [{"conv": {"out": 4, "kernel": 3}}, "relu", "flatten", {"dense": 10}]
    cfg = load_config(DEMO, ["model.name=resnet20"])
    assert cfg.model.name == "resnet20" and cfg.model.layers is None


# --------------------------------------------------------------------------- unknown keys and wrong types


@pytest.mark.parametrize("override, path, allowed", [
    ("optim.lrr=0.1", "optim.lrr", ["name", "lr", "weight_decay", "momentum", "gamma", "beta1", "beta2", "eps"]),
    ("trian.epochs=2", "trian", ["data", "model", "optim", "schedule", "regularization", "augment", "train"]),
    ("data.batchsize=8", "data.batchsize", ["name", "path", "batch_size", "val_fraction"]),
    ("regularization.early_stopping.patiense=3", "regularization.early_stopping.patiense",
     ["monitor", "mode", "patience", "min_delta", "restore_best"]),
    ("model.init={scheme: he, shceme: he}", "model.init.shceme", ["scheme", "distribution", "scale"]),
])
def test_unknown_key_names_the_key_path_and_lists_allowed_keys(override, path, allowed):
    with pytest.raises(ConfigError) as e:
        load_config(DEMO, [override])
    msg = str(e.value)
    assert repr(path) in msg, msg
    listed = msg.split("allowed keys here:")[1]
    for key in allowed:
        assert key in [k.strip() for k in listed.split(";")[0].split(",")], (key, msg)


def test_unknown_key_in_the_file_is_rejected_too(tmp_path):
    p = write_yaml(tmp_path, "data: {name: digits, shuffle: true}\n")
    with pytest.raises(ConfigError, match=r"'data\.shuffle'"):
        load_config(p)


def test_unknown_key_suggests_the_close_name():
    with pytest.raises(ConfigError, match=r"did you mean 'epochs'"):
        load_config(DEMO, ["train.epoch=2"])


@pytest.mark.parametrize("override, path, shown", [
    ("train.epochs=abc", "train.epochs", "'abc'"),
    ("train.epochs=2.5", "train.epochs", "2.5"),
    ("data.batch_size=[1, 2]", "data.batch_size", None),
    ("optim.lr=-1", "optim.lr", "-1"),
    ("data.val_fraction=1.5", "data.val_fraction", "1.5"),
    ("train.deterministic=maybe", "train.deterministic", "'maybe'"),
    ("data.classes=five", "data.classes", "'five'"),
    ("schedule.name=cosin", "schedule.name", "'cosin'"),
    ("train.device=gpu", "train.device", "'gpu'"),
    ("model.input=[0, 28]", "model.input", None),
])
def test_wrong_type_or_value_names_the_key_and_the_value(override, path, shown):
    with pytest.raises(ConfigError) as e:
        load_config(DEMO, [override])
    msg = str(e.value)
    assert path in msg, msg
    if shown is not None:
        assert shown in msg, msg


def test_a_literal_error_lists_the_allowed_values():
    with pytest.raises(ConfigError) as e:
        load_config(DEMO, ["schedule.name=cosin"])
    for name in ("constant", "step", "cosine", "onecycle", "linear"):
        assert name in str(e.value)


def test_bare_on_and_off_mean_the_choices_not_booleans():
    # YAML 1.1 reads `off` as false; a choice spelt on/off takes it back, and only there.
    cfg = load_config(DEMO, ["data.device_resident=off", "finetune.augment=off"])
    assert cfg.data.device_resident == "off" and cfg.finetune.augment == "off"
    assert load_config(DEMO, ["data.device_resident=on"]).data.device_resident == "on"
    with pytest.raises(ConfigError, match="finetune.augment"):
        load_config(DEMO, ["finetune.augment=on"])  # not one of its choices
    with pytest.raises(ConfigError, match="train.epochs"):
        load_config(DEMO, ["train.epochs=off"])


def test_config_file_that_is_not_a_mapping_or_not_yaml_or_missing(tmp_path):
    with pytest.raises(ConfigError, match="mapping"):
        load_config(write_yaml(tmp_path, "- a\n- b\n"))
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(write_yaml(tmp_path, "data: {name: [\n", "bad.yaml"))
    missing = tmp_path / "nope.yaml"
    with pytest.raises(UserError, match="does not exist") as e:
        load_config(missing)
    assert str(missing) in str(e.value)
    with pytest.raises(UserError, match="folder"):
        load_config(tmp_path)


# --------------------------------------------------------------------------- model section


def test_model_name_and_layers_are_exclusive(tmp_path):
    both = write_yaml(tmp_path, f"model: {{name: lenet5, layers: {TINY_LAYERS}}}\n")
    with pytest.raises(ConfigError) as e:
        load_config(both)
    assert "model.name" in str(e.value) and "model.layers" in str(e.value)
    neither = write_yaml(tmp_path, "model: {input: [1, 8, 8]}\n", "n.yaml")
    with pytest.raises(ConfigError, match="exactly one"):
        load_config(neither)


def test_padding_smae_in_a_layer_list_names_the_layer_the_value_and_the_choices():
    # Caught when the config is validated or, at the latest, when the model is built.
    with pytest.raises(SpecError) as e:
        cfg = load_config(DEMO, ["data.name=digits", "model.input=null",
                                 "model.layers=[{conv: {out: 4, kernel: 3, padding: smae}}, flatten, {dense: 10}]"])
        create_model(cfg.model, (1, 8, 8), 10)
    msg = str(e.value)
    assert "layer 0" in msg and "'smae'" in msg
    assert "valid" in msg and "same" in msg
    assert "did you mean 'same'" in msg


@pytest.mark.parametrize("text, scheme, dist", [
    ("he_uniform", "he", "uniform"),
    ("he_normal", "he", "normal"),
    ("he", "he", "normal"),
    ("xavier_uniform", "xavier", "uniform"),
    ("xavier", "xavier", "normal"),
    ("random_uniform", "random", "uniform"),
    ("default", "default", "normal"),
])
def test_init_shorthands(text, scheme, dist):
    m = ModelConfig(name="lenet5", init=text)
    assert (m.init.scheme, m.init.distribution) == (scheme, dist)
    cfg = load_config(DEMO, [f"model.init={text}"])
    assert (cfg.model.init.scheme, cfg.model.init.distribution) == (scheme, dist)


def test_a_nested_init_override_applies_on_top_of_the_demos_shorthand():
    # The demo recipe spells `init: he_uniform`; model.init is still a section
    # (scheme, distribution, scale), so its keys can be overridden one by one.
    cfg = load_config(DEMO, ["model.init.distribution=normal"])
    assert (cfg.model.init.scheme, cfg.model.init.distribution) == ("he", "normal")
    cfg = load_config(DEMO, ["model.init.scheme=xavier"])
    assert (cfg.model.init.scheme, cfg.model.init.distribution) == ("xavier", "uniform")


@pytest.mark.parametrize("text", ["kaiming", "he_gaussian", "glorot_uniform"])
def test_unknown_init_shorthand_is_rejected_with_the_choices(text):
    with pytest.raises(ConfigError) as e:
        load_config(DEMO, [f"model.init={text}"])
    msg = str(e.value)
    assert "model.init" in msg
    assert "xavier" in msg or "normal" in msg


def test_resolved_config_round_trips_through_yaml():
    cfg = load_config(DEMO, ["optim.lr=0.01", "data.classes=[5,6]", "regularization.early_stopping.patience=2"])
    again = validate(yaml.safe_load(yaml.safe_dump(cfg.to_dict())))
    assert again == cfg


def test_assignment_is_validated():
    cfg = Config()
    with pytest.raises(Exception):
        cfg.train.epochs = "many"  # type: ignore[assignment]


# --------------------------------------------------------------------------- atomic writes


def test_atomic_write_text_writes_and_leaves_no_temp_file(tmp_path):
    target = tmp_path / "config.yaml"
    atomic_write_text(target, "a: 1\n")
    atomic_write_text(target, "a: 2\n")  # replaces
    assert target.read_text() == "a: 2\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml"]


def test_atomic_write_text_failure_keeps_the_old_file_and_no_temp(tmp_path):
    target = tmp_path / "final.json"
    target.write_text("old\n")

    with pytest.raises(TypeError):
        atomic_write_text(target, 12345)  # type: ignore[arg-type]  # f.write(int) fails mid-write
    assert target.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["final.json"]


def test_atomic_write_text_concurrent_writers_never_leave_a_partial_file(tmp_path):
    target = tmp_path / "x.txt"
    texts = [str(i) * 20000 + "\n" for i in range(8)]
    threads = [threading.Thread(target=atomic_write_text, args=(target, t)) for t in texts]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert target.read_text() in texts
    assert [p.name for p in tmp_path.iterdir()] == ["x.txt"]


def test_atomic_write_text_gives_the_permissions_a_plain_write_gives(tmp_path):
    # Run folders are meant to be shared and copied: config.yaml, final.json, summary.txt
    # should get the same mode as metrics.jsonl (a plain open()), i.e. 0o666 & ~umask,
    # not mkstemp's private 0o600.
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    atomic = tmp_path / "atomic.txt"
    atomic_write_text(atomic, "x")
    assert stat.S_IMODE(atomic.stat().st_mode) == stat.S_IMODE(plain.stat().st_mode), (
        oct(stat.S_IMODE(atomic.stat().st_mode)), oct(stat.S_IMODE(plain.stat().st_mode)))



def test_unsetting_layers_keeps_the_model_name():
    from cnnkit.config import apply_overrides

    raw = {"model": {"layers": ["flatten", {"dense": 10}], "input": [1, 28, 28]}}
    out = apply_overrides(raw, ["model.name=conv_encoder", "model.layers=null"])
    assert out["model"]["name"] == "conv_encoder" and out["model"]["layers"] is None
    out = apply_overrides(raw, ["model.name=lenet5"])
    assert "layers" not in out["model"]
    out = apply_overrides({"model": {"name": "lenet5"}}, ["model.layers=[flatten]"])
    assert "name" not in out["model"]
