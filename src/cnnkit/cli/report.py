"""``cnnkit report``: a run's ``report.html``, one self-contained page (curves, architecture, the task's
own pages: confusion matrix, mistakes, Grad-CAM, masks, boxes, forecasts ...)."""

from __future__ import annotations

import argparse

from cnnkit.cli.common import Formatter
from cnnkit.errors import UserError


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("report", help="write a run's report.html: curves, architecture, results, Grad-CAM",
                              formatter_class=Formatter,
                              epilog="examples:\n  cnnkit report runs/20261204-101500-lenet5-mnist5k-1a2b3c\n"
                                     "  cnnkit report runs/x --out ~/lab/lenet.html --max-items 1000")
    p.add_argument("run_dir", metavar="RUN", help="a run folder (finished or still training)")
    p.add_argument("--out", metavar="FILE.html", help="where to write it (default RUN/report.html)")
    p.add_argument("--max-items", type=int, default=5000, metavar="N",
                   help="held-out items scored for the results pages (evenly spaced when there are more)")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    if args.max_items < 1:
        raise UserError(f"--max-items {args.max_items}: give a positive number of held-out items")
    from cnnkit.tools.report import build_report

    print(build_report(args.run_dir, args.out, max_items=args.max_items))
    return 0
