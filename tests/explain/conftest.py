"""Test setup for ``cnnkit explain``: a ``cli`` fixture that builds the argparse wiring the
way the main CLI does."""

from __future__ import annotations

import argparse

import pytest


def build_parser() -> argparse.ArgumentParser:
    from cnnkit.cli.explain import add_parser

    p = argparse.ArgumentParser(prog="cnnkit")
    sub = p.add_subparsers()
    add_parser(sub)
    return p


@pytest.fixture
def make_parser():
    """The parser builder: ``ArgumentParser(); add_subparsers(); add_parser(sub)``."""
    return build_parser


@pytest.fixture
def cli(capsys):
    """``cli("avgpool", "--example", "course") -> (exit_code, stdout)``."""

    def run(*argv):
        args = build_parser().parse_args(["explain", *argv])
        code = args.func(args)
        return code, capsys.readouterr().out

    return run
