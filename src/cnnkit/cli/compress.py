"""``cnnkit compress``: prune, quantise (int8) or distil a run into a new run folder; before/after table.

The library side is :mod:`cnnkit.tools.compress`.
"""

from __future__ import annotations

import argparse
import json

from cnnkit.cli.common import Formatter
from cnnkit.tools.compress import DEFAULT_CALIBRATION_BATCHES, DEFAULT_FINETUNE_EPOCHS

_EPILOG = """\
exactly one of --prune, --quantize, --distill-from. The new run folder is written next to
RUN_DIR (<name>-pruned50, <name>-int8, <name>-distilled); its final.json holds val_accuracy,
nonzero_params, size_bytes and latency_ms, and the same for RUN_DIR under 'before'.
Pruned and distilled folders work with cnnkit eval/predict/export; int8 folders are reloaded
with cnnkit.tools.compress.load_quantized (eval/predict do not read them yet).

examples:
  cnnkit compress runs/20261130-101500-layers-mnist5k-1a2b3c --prune 0.5
  cnnkit compress runs/x --prune 0.8 --epochs 3
  cnnkit compress runs/x --quantize int8 --calibration-batches 16
  cnnkit compress runs/tiny-student --distill-from runs/lenet-teacher --temperature 4 --alpha 0.7
  cnnkit train cfg.yaml train.distill.teacher=runs/lenet-teacher     (distillation while training)
"""


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("compress", help="prune, quantise (int8) or distil a run; before/after table",
                              formatter_class=Formatter, epilog=_EPILOG,
                              description="Shrink a trained run into a new run folder and compare held-out "
                                          "accuracy, non-zero parameters, weights size and CPU latency.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="the trained run (for --distill-from: the student run)")
    g = p.add_argument_group("method (exactly one)")
    g.add_argument("--prune", type=float, metavar="SPARSITY",
                   help="global L1 magnitude pruning of conv/dense weights to this sparsity (0 < s < 1)")
    g.add_argument("--quantize", choices=["int8"], help="post-training static int8 quantisation (CPU)")
    g.add_argument("--distill-from", metavar="TEACHER_RUN",
                   help="retrain RUN_DIR's student from scratch with soft targets from this teacher run")
    p.add_argument("--epochs", type=int, default=None,
                   help=f"fine-tuning epochs after pruning (default {DEFAULT_FINETUNE_EPOCHS}) or distillation "
                        f"epochs (default: the run's train.epochs)")
    p.add_argument("--calibration-batches", type=int, default=None,
                   help=f"training batches for int8 calibration (default {DEFAULT_CALIBRATION_BATCHES})")
    p.add_argument("--temperature", type=float, default=None, help="distillation temperature T (default 4)")
    p.add_argument("--alpha", type=float, default=None, help="weight of the soft-target term (default 0.7)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads for the latency measurement")
    p.add_argument("--quiet", action="store_true", help="no training progress lines")
    p.add_argument("--format", choices=["text", "json"], default="text")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from cnnkit.tools.compress import compress, format_table

    as_json = args.format == "json"
    result = compress(args.run_dir, prune=args.prune, quantize=args.quantize, distill_from=args.distill_from,
                      epochs=args.epochs, calibration_batches=args.calibration_batches,
                      temperature=args.temperature, alpha=args.alpha, threads=args.threads,
                      quiet=args.quiet or as_json)
    if as_json:
        print(json.dumps({"run_dir": str(result.run_dir), **result.final}, indent=2))
    elif args.quiet:
        print(format_table(result.final))
        print(result.run_dir)
    return 0
