"""``cnnkit eval``: a run's checkpoint on its held-out data (or on all of another dataset of the same
kind, ``--data PATH``): the task's metrics, e.g. accuracy, loss, per-class figures, confusion matrix."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from cnnkit.cli.common import Formatter
from cnnkit.errors import UserError


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("eval", help="evaluate a run's best checkpoint on its held-out data or on --data",
                              formatter_class=Formatter,
                              epilog="examples:\n  cnnkit eval runs/20261130-101500-layers-mnist5k-1a2b3c\n"
                                     "  cnnkit eval runs/x --split test --format json\n"
                                     "  cnnkit eval runs/x --data ../new_images --format json")
    p.add_argument("run_dir")
    p.add_argument("--split", choices=["val", "test"], default="val")
    p.add_argument("--data", metavar="PATH",
                   help="evaluate on all of PATH instead: a dataset of the same kind and format as the run's "
                        "(its data.path replaced by PATH; no split is held out)")
    p.add_argument("--shift", type=int, default=None, metavar="N",
                   help="image classification: move every held-out image N pixels (image i right, down, left "
                        "or up, by i mod 4; zeros come in) before scoring it: how far the accuracy holds")
    p.add_argument("--checkpoint", choices=["best", "last"], default="best")
    p.add_argument("--format", choices=["text", "json"], default="text")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from cnnkit.inference import held_out_data, load_run_model, ordered_loader
    from cnnkit.nn.runtime import resolve_device

    model, info = load_run_model(args.run_dir, which=args.checkpoint)
    cfg, task = info["config"], info["task"]
    if args.data is not None:
        data, what = _other_data(cfg, task, args.data, info["classes"]), "data"
    else:
        data, what = held_out_data(info, args.split), args.split
    if args.shift is not None:
        data = _shifted(data, args.shift, task.name)
    device = resolve_device("auto" if cfg.train.device == "auto" else "cpu")
    model.to(device)
    loader = ordered_loader(info, data, device)  # e.g. texts encoded with the run's own tokeniser
    res = task.evaluate(model, loader, device)
    out = {"split": what, **({"data": str(args.data)} if args.data is not None else {}),
           **({"shift": args.shift} if args.shift is not None else {}),
           **{k: v for k, v in res.items() if k != "n"}, "n": res["n"], "checkpoint": info["checkpoint"],
           f"n_{task.unit}": res["n"], "task": task.name, **task.eval_report(model, loader, device)}
    if args.format == "json":
        print(json.dumps(out, indent=2))
        return 0
    named = "  ".join(f"{k}: {res[k]:.4f}" for k in (*task.metric_names, "loss") if res.get(k) is not None)
    moved = f", each moved {args.shift} px" if args.shift else ""
    print(f"{what} {named}  ({res['n']} {task.unit}{moved}, {Path(info['checkpoint']).name})")
    per_class = out.get("per_class") if "per_class_accuracy" not in out else out.get("per_class_accuracy")
    if per_class and all(isinstance(v, dict) for v in per_class.values()):  # segmentation: IoU and Dice
        width = max(len(c) for c in per_class)
        print(f"  {'class':<{width}}  {'iou':>6}  {'dice':>6}")
        for c, v in per_class.items():
            print(f"  {c:<{width}}  " + "  ".join("     -" if v[k] is None else f"{v[k]:.4f}" for k in ("iou", "dice")))
    elif per_class:
        width = max(len(c) for c in per_class)
        for c, a in per_class.items():
            print(f"  {c:<{width}}  {'-' if a is None else f'{a:.4f}'}")
    return 0


def _other_data(cfg, task, path: str, classes: list[str]):
    """All of the dataset at ``path``, read as the run's own data was; its classes must be the run's."""
    from cnnkit.data import load_all

    p = Path(path)
    if not p.exists():
        raise UserError(f"--data {path!r} does not exist")
    if cfg.data.path is None:
        raise UserError(f"the run was trained on {cfg.data.name!r}, which is not read from a path; --data needs "
                        f"a run trained on data from files (e.g. imagefolder, cifar10_jpeg)")
    own = task.eval_dataset(p)  # a task that reads files its own way (text, series): the run's classes index them
    if own is not None:
        return own
    bundle = load_all(cfg.data.model_copy(update={"path": str(p)}), task=cfg.task)
    if list(bundle.classes) != list(classes):
        raise UserError(f"--data {path!r} has classes {bundle.classes}, the run was trained on {list(classes)}; "
                        f"eval needs the same classes in the same order")
    return bundle.train


def _shifted(data, pixels: int, task: str):
    """``data`` with every image moved ``pixels`` pixels (:func:`cnnkit.data.augment.shift_images`)."""
    from cnnkit.data.augment import shift_images
    from cnnkit.data.base import TensorData

    if task != "classification" or not isinstance(data, TensorData):
        raise UserError(f"--shift moves the images of an image classification run held in memory (mnist5k, digits, "
                        f"cifar10, ...); this is a {task} run")
    side = min(data.images.shape[-2:])
    if not 0 <= pixels < side:
        raise UserError(f"--shift {pixels}: give a number of pixels from 0 to {side - 1} (the images are "
                        f"{data.images.shape[-2]}x{data.images.shape[-1]})")
    return TensorData(shift_images(data.images, pixels), data.labels)
