"""The helpers every command shares: CONFIG-or-override, shapes, "model name or config?", exit codes."""

from __future__ import annotations

import argparse

import pytest

from cnnkit.cli.common import parse_shape, run_command, split_config_and_overrides
from cnnkit.config import is_config_path
from cnnkit.errors import UserError


def test_a_first_key_value_is_an_override_unless_such_a_file_exists(tmp_path, monkeypatch):
    assert split_config_and_overrides("optim.lr=0.1", ["train.epochs=2"]) == (None, ["optim.lr=0.1", "train.epochs=2"])
    assert split_config_and_overrides("my.yaml", ["optim.lr=0.1"]) == ("my.yaml", ["optim.lr=0.1"])
    assert split_config_and_overrides(None, []) == (None, [])
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a=b.yaml").write_text("{}\n")
    assert split_config_and_overrides("a=b.yaml", []) == ("a=b.yaml", [])


@pytest.mark.parametrize("text, shape", [("3,32,32", (3, 32, 32)), ("1x28x28", (1, 28, 28)), ("10,1,64,64", (10, 1, 64, 64))])
def test_parse_shape(text, shape):
    assert parse_shape(text) == shape


@pytest.mark.parametrize("text", ["3", "3,0,32", "a,b,c", "10,1,64,64,2"])
def test_parse_shape_names_the_bad_value(text):
    with pytest.raises(UserError, match=f"--input {text!r}"):
        parse_shape(text)


def test_model_name_or_config(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert not is_config_path("lenet5") and not is_config_path("resnet18")
    assert is_config_path("my.yaml") and is_config_path("cfg.yml") and is_config_path("configs/x")
    (tmp_path / "recipe").write_text("model: {name: lenet5}\n")
    assert is_config_path("recipe")


def _fails_with(exc: BaseException):
    def run(args: argparse.Namespace) -> int:
        raise exc
    return run


def test_exit_codes_and_one_error_line(capsys):
    args = argparse.Namespace()
    assert run_command(lambda a: 0, args) == 0
    assert run_command(lambda a: None, args) == 0
    assert run_command(_fails_with(UserError("bad value 'smae'")), args) == 2
    assert capsys.readouterr().err == "error: bad value 'smae'\n"
    assert run_command(_fails_with(RuntimeError("boom")), args) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: RuntimeError: boom\n") and "Traceback" not in err and "--debug" in err
    assert run_command(_fails_with(RuntimeError("boom")), args, debug=True) == 1
    assert "Traceback" in capsys.readouterr().err
    assert run_command(_fails_with(KeyboardInterrupt()), args) == 130
    assert capsys.readouterr().err == "interrupted\n"
