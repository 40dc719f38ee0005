"""``cnnkit lr-find``: the learning-rate range test; the library side is :mod:`cnnkit.train.lr_find`."""

from __future__ import annotations

import argparse
import json

from cnnkit.cli.common import Formatter, split_config_and_overrides


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "lr-find", help="learning-rate range test: suggest optim.lr and plot loss against lr",
        formatter_class=Formatter,
        description="The learning-rate range test (Smith, 2017): train the config's model on mini-batches while "
                    "the learning rate grows exponentially from --start to --end, smooth the loss, stop when it "
                    "exceeds 4x its minimum, and suggest the rate of steepest descent of the smoothed loss "
                    "(min/10 is printed too). Uses the config's optimiser, loss and data; writes no run folder.",
        epilog="examples:\n  cnnkit lr-find configs/lenet5_mnist5k.yaml\n"
               "  cnnkit lr-find configs/lenet5_mnist5k.yaml optim.name=momentum --start 1e-5 --end 1 "
               "--steps 80 --plot lr.png\n"
               "  cnnkit lr-find my.yaml model.weights=runs/x --format json")
    p.add_argument("config", nargs="?", help="YAML config file (a key=value here is taken as an override)")
    p.add_argument("overrides", nargs="*", help="key.path=value overrides, e.g. optim.name=momentum")
    p.add_argument("--start", type=float, default=1e-7, help="first learning rate (default 1e-7)")
    p.add_argument("--end", type=float, default=10.0, help="last learning rate (default 10)")
    p.add_argument("--steps", type=int, default=100, help="mini-batches, at most (default 100)")
    p.add_argument("--plot", metavar="FILE.png", default="lr_find.png",
                   help="where to save the plot (default lr_find.png; 'none' for no plot)")
    p.add_argument("--format", choices=["text", "json"], default="text")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from cnnkit.config import load_config
    from cnnkit.train.lr_find import lr_find, plot

    config, overrides = split_config_and_overrides(args.config, args.overrides)
    cfg = load_config(config, overrides)
    result = lr_find(cfg, start=args.start, end=args.end, steps=args.steps)
    plot_path = None if str(args.plot).lower() == "none" else args.plot
    if plot_path:
        plot(result, plot_path, title=f"lr range test: {cfg.model.name or 'layer list'} on {cfg.data.name}, "
                                      f"{cfg.optim.name}")
    if args.format == "json":
        print(json.dumps({**result.to_dict(), "plot": plot_path, "notes": result.notes}, indent=2))
        return 0
    print(f"{len(result.lrs)} steps from {result.lrs[0]:.3g} to {result.lrs[-1]:.3g} ({result.stopped})")
    print(f"lowest smoothed loss {min(result.smoothed):.4f} at lr {result.min_lr:.3g}")
    how = ("steepest descent of the smoothed loss" if result.method == "steepest"
           else "min/10: the curve was too short for a slope")
    print(f"suggested lr: {result.suggestion:.3g} ({how}); min/10: {result.min_lr / 10:.3g}")
    for n in result.notes:
        print(f"note: {n}")
    if plot_path:
        print(f"plot: {plot_path}")
    print(f"use it with: optim.lr={result.suggestion:.2g}")
    return 0
