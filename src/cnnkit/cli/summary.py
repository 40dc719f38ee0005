"""``cnnkit summary``: per-layer shapes, parameters, MACs and receptive field of a model or a config."""

from __future__ import annotations

import argparse
import json

from cnnkit.cli.common import Formatter, resolve_target


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("summary", help="per-layer shapes, parameters, MACs, receptive field",
                              formatter_class=Formatter,
                              epilog="examples:\n  cnnkit summary lenet5\n  cnnkit summary resnet18 --input 3,32,32\n"
                                     "  cnnkit summary configs/lenet5_mnist5k.yaml --format json")
    p.add_argument("target", help="a registered model name or a YAML config")
    p.add_argument("--input", help="input shape C,H,W (default: the model's or the config's)")
    p.add_argument("--num-classes", type=int, default=None)
    p.add_argument("--format", choices=["text", "json"], default="text")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from cnnkit.summary import summarize

    model, shape, _ = resolve_target(args.target, args.input, args.num_classes)
    s = summarize(model, shape)
    if args.format == "json":
        print(json.dumps({"model": args.target, **s.to_dict()}, indent=2))
    else:
        print(f"model {args.target}")
        print(s.to_text())
    return 0
