"""``cnnkit compare``: runs side by side (config differences, final metrics, times) and their curves."""

from __future__ import annotations

import argparse
import json

from cnnkit.cli.common import Formatter


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("compare", help="runs side by side: config differences, final metrics, curves",
                              formatter_class=Formatter,
                              epilog="examples:\n  cnnkit compare runs/mlp runs/lenet\n"
                                     "  cnnkit compare runs/a runs/b runs/c --save curves.png\n"
                                     "  cnnkit compare runs/a runs/b --format json")
    p.add_argument("runs", nargs="+", metavar="RUN", help="two or more run folders")
    p.add_argument("--save", metavar="FILE.png", help="draw the runs' curves on common axes (PNG, SVG or PDF)")
    p.add_argument("--format", choices=["text", "json"], default="text")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from cnnkit.tools.compare import compare_runs, format_table, plot_curves

    table = compare_runs(args.runs)
    saved = str(plot_curves(table, args.save)) if args.save else None
    if args.format == "json":
        out = {k: v for k, v in table.items() if k != "history"}
        print(json.dumps({**out, **({"saved": saved} if saved else {})}, indent=2))
        return 0
    print(format_table(table))
    if saved:
        print(f"curves: {saved}")
    return 0
