"""The ``cnnkit`` command line: the parser and :func:`main`.

Each command is a module of this package with ``add_parser(subparsers)`` and
``run(args)``; building the parser imports no torch (``cnnkit --help`` and
``cnnkit --version`` stay fast), each ``run`` imports what it needs.

Exit codes: 0 success; 2 for anything the user can fix (usage, config, a
missing or unreadable file, folder or run, an unknown name), printed as one
``error:`` line with no traceback; 1 for a failure while running.

Example::

    from cnnkit.cli import main

    main(["summary", "lenet5", "--format", "json"])   # prints, returns 0
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from cnnkit.cli import compare, compress, datasets, eval, explain, export, finetune, generate, lr_find, models, \
    predict, report, serve, summary, train, tune
from cnnkit.cli.common import Formatter, run_command

# In the order ``cnnkit --help`` lists them.
COMMANDS = (train, eval, predict, report, compare, serve, generate, summary, models, datasets, explain, finetune,
            lr_find, compress, export, tune)

_EPILOG = ("examples:\n  cnnkit train                          # the demo: LeNet-5 on bundled MNIST\n"
           "  cnnkit train configs/lenet5_mnist5k.yaml optim.lr=0.01 train.epochs=3\n"
           "  cnnkit summary lenet5\n  cnnkit explain avgpool --example course\n\n"
           "run 'cnnkit COMMAND --help' for a command's options")


def _version() -> str:
    from cnnkit import __version__

    return f"cnnkit {__version__}"


def build_parser() -> argparse.ArgumentParser:
    """The ``cnnkit`` parser with every command of :data:`COMMANDS`."""
    p = argparse.ArgumentParser(
        prog="cnnkit", formatter_class=Formatter,
        description="cnnkit: design, train, explain, tune, shrink and export convolutional networks.",
        epilog=_EPILOG)
    p.add_argument("--version", action="version", version=_version())
    p.add_argument("--debug", action="store_true", help="show the full traceback of an unexpected failure")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``), run the command, return its exit code."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        # Overrides may come after options (`cnnkit train CFG --quiet train.epochs=1`): argparse stops
        # filling a positional list at the first option, so the rest arrives here.
        if isinstance(getattr(args, "overrides", None), list) and all("=" in e and not e.startswith("-")
                                                                          for e in extra):
            args.overrides += extra
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return run_command(args.func, args, debug=args.debug)


__all__ = ["COMMANDS", "build_parser", "main"]

if __name__ == "__main__":
    sys.exit(main())
