"""``cnnkit train``: train from a YAML config (or continue a stopped run) and write a run folder."""

from __future__ import annotations

import argparse

from cnnkit.cli.common import Formatter, report_run, split_config_and_overrides
from cnnkit.errors import UserError


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("train", help="train a network and write a run folder", formatter_class=Formatter,
                              description="Train from a YAML config (default: the demo recipe "
                                          "configs/lenet5_mnist5k.yaml) with dotted key=value overrides, values "
                                          "read as YAML.",
                              epilog="examples:\n  cnnkit train\n  cnnkit train configs/lenet5_mnist5k.yaml "
                                     "optim.lr=0.01 data.batch_size=128\n"
                                     "  cnnkit train my.yaml 'model.layers=[flatten, {dense: 10}]'\n"
                                     "  cnnkit train --resume runs/20261130-101500-layers-mnist5k-1a2b3c\n"
                                     "  torchrun --standalone --nproc_per_node 2 -m cnnkit train my.yaml")
    p.add_argument("config", nargs="?", help="YAML config file (a key=value here is taken as an override)")
    p.add_argument("overrides", nargs="*", help="key.path=value overrides, e.g. optim.lr=0.01")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a stopped run from its last checkpoint")
    p.add_argument("--quiet", action="store_true", help="no progress bar or per-epoch lines")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from cnnkit.api import resume, train
    from cnnkit.config import load_config

    config, overrides = split_config_and_overrides(args.config, args.overrides)
    if args.resume:
        if config is not None:
            raise UserError("--resume takes the config from the run folder; give only key=value overrides "
                            f"(got config file {config!r})")
        result = resume(args.resume, overrides, quiet=args.quiet)
    else:
        result = train(load_config(config, overrides), quiet=args.quiet)
    return report_run(result)
