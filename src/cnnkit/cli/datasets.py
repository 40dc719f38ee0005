"""``cnnkit datasets``: the registered datasets and their descriptions."""

from __future__ import annotations

import argparse

from cnnkit.cli.common import Formatter


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("datasets", help="list registered datasets", formatter_class=Formatter,
                              epilog="examples:\n  cnnkit datasets\n  cnnkit train configs/lenet5_mnist5k.yaml "
                                     "data.per_class=100 'data.classes=[0,1,2]'")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from cnnkit.data import DATASETS, list_datasets

    names = list_datasets()
    width = max(len(n) for n in names)
    for n in names:
        print(f"{n:<{width}}  {DATASETS.entry(n).description}")
    return 0
