"""``cnnkit predict``: classify image files with a run, a checkpoint or an exported ONNX file."""

from __future__ import annotations

import argparse
import json

from cnnkit.cli.common import Formatter
from cnnkit.errors import UserError


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("predict", help="classify image files with a trained run", formatter_class=Formatter,
                              epilog="examples:\n  cnnkit predict runs/x digit.png\n"
                                     "  cnnkit predict runs/x a.png b.jpg --top-k 3 --format json\n"
                                     "  cnnkit predict model.onnx a.png")
    p.add_argument("source", help="a run folder, a cnnkit checkpoint (.pt) or an exported .onnx file")
    p.add_argument("images", nargs="+", help="PNG or JPEG files")
    p.add_argument("--top-k", type=int, default=3)
    p.add_argument("--format", choices=["text", "json"], default="text")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    if args.top_k < 1:
        raise UserError(f"--top-k must be at least 1, got {args.top_k}")
    if str(args.source).endswith(".onnx"):
        from cnnkit.tools.export import predict_onnx

        results = predict_onnx(args.source, args.images, top_k=args.top_k)
    else:
        from cnnkit.inference import load_run_model, predict_files

        model, info = load_run_model(args.source)
        results = predict_files(model, info, args.images, top_k=args.top_k)
    if args.format == "json":
        print(json.dumps(results, indent=2))
    else:
        for r in results:
            tops = ", ".join(f"{t['class']} ({t['probability']:.3f})" for t in r["top"])
            print(f"{r['file']}: {tops}")
    return 0
