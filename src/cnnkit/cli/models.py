"""``cnnkit models``: the registered models, with their default input and description."""

from __future__ import annotations

import argparse

from cnnkit.cli.common import Formatter
from cnnkit.errors import UserError


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("models", help="list registered models", formatter_class=Formatter,
                              epilog="examples:\n  cnnkit models\n  cnnkit models 'resnet*'")
    p.add_argument("pattern", nargs="?", help="wildcard filter, e.g. 'resnet*'")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from cnnkit.models import MODELS, list_models

    names = list_models(args.pattern)
    if not names:
        raise UserError(f"no model matches {args.pattern!r}; run 'cnnkit models' to see them all")
    width = max(len(n) for n in names)
    for n in names:
        e = MODELS.entry(n)
        kind = e.meta.get("task", "classification")
        print(f"{n:<{width}}  {'x'.join(map(str, e.meta['default_input'])):<10}  {kind:<14}  {e.description}")
    return 0
