"""Start-up of the command line: ``cnnkit --help`` and ``--version`` import no torch, and every
command's ``--help`` works. (Which modules may import the command line: tests/test_layout.py.)

The import checks run in a fresh interpreter: in this one, other tests have imported torch.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import pytest

from cnnkit.cli import build_parser, main

_PROBE = """
import json, sys
from cnnkit.cli import main

codes = []
for argv in ({argvs}):
    try:
        codes.append(main(argv))
    except SystemExit as e:
        codes.append(e.code)
heavy = [m for m in ("torch", "torchvision", "torchmetrics", "optuna", "onnx", "onnxruntime") if m in sys.modules]
print(json.dumps({{"codes": codes, "heavy": heavy}}))
"""


def _probe(*argvs: list[str]) -> dict:
    code = _PROBE.format(argvs=", ".join(repr(a) for a in argvs) + ",")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_help_and_version_import_no_torch():
    res = _probe(["--help"], ["--version"])
    assert res["codes"] == [0, 0]
    assert res["heavy"] == [], f"cnnkit --help/--version imported {res['heavy']}"


def test_every_commands_help_imports_no_torch():
    commands = list(_subcommands(build_parser()))
    res = _probe(*[[c, "--help"] for c in commands])
    assert res["codes"] == [0] * len(commands)
    assert res["heavy"] == [], f"a command's --help imported {res['heavy']}"


def _all_helps(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command and nested sub-command (``explain conv``, ...) the parser knows."""
    out = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                out.append((*prefix, name))
                out += _all_helps(sub, (*prefix, name))
    return out


@pytest.mark.parametrize("argv", _all_helps(build_parser()), ids=" ".join)
def test_every_subcommands_help_exits_0(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main([*argv, "--help"])
    assert e.value.code == 0
    assert f"usage: cnnkit {' '.join(argv)}" in capsys.readouterr().out


def test_every_command_module_has_add_parser_and_run():
    from cnnkit.cli import COMMANDS

    for module in COMMANDS:
        assert callable(getattr(module, "add_parser", None)) and callable(getattr(module, "run", None)), module
    parsers = _subcommands(build_parser())
    for name, sub in parsers.items():
        assert sub.get_default("func") is not None, f"'cnnkit {name}' has no run function"
        assert sub.get_default("func").__module__.startswith("cnnkit.cli."), name


def test_python_dash_m_cnnkit_runs_the_cli():
    proc = subprocess.run([sys.executable, "-m", "cnnkit", "--version"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.startswith("cnnkit "), proc.stderr
