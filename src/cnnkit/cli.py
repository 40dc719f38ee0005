"""The ``cnnkit`` command line.

Exit codes: 0 success; 2 for anything the user can fix (usage, config, a
missing or unreadable file, folder or run, an unknown name), printed as one
``error:`` line with no traceback; 1 for a failure while running.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import traceback
from pathlib import Path
from typing import Sequence

from cnnkit.errors import UserError


class _Formatter(argparse.RawDescriptionHelpFormatter):
    pass


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="cnnkit", formatter_class=_Formatter,
        description="cnnkit: design, train, explain, tune, shrink and export convolutional networks.",
        epilog="examples:\n  cnnkit train                          # the demo: LeNet-5 on bundled MNIST\n"
               "  cnnkit train configs/lenet5_mnist5k.yaml optim.lr=0.01 train.epochs=3\n"
               "  cnnkit summary lenet5\n  cnnkit explain avgpool --example course\n\n"
               "run 'cnnkit COMMAND --help' for a command's options")
    p.add_argument("--version", action="version", version=_version())
    p.add_argument("--debug", action="store_true", help="show the full traceback of an unexpected failure")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    t = sub.add_parser("train", help="train a network and write a run folder", formatter_class=_Formatter,
                       description="Train from a YAML config (default: the demo recipe configs/lenet5_mnist5k.yaml) "
                                   "with dotted key=value overrides, values read as YAML.",
                       epilog="examples:\n  cnnkit train\n  cnnkit train configs/lenet5_mnist5k.yaml "
                              "optim.lr=0.01 data.batch_size=128\n"
                              "  cnnkit train my.yaml 'model.layers=[flatten, {dense: 10}]'\n"
                              "  cnnkit train --resume runs/20261130-101500-layers-mnist5k-1a2b3c\n"
                              "  torchrun --standalone --nproc_per_node 2 -m cnnkit train my.yaml")
    t.add_argument("config", nargs="?", help="YAML config file (a key=value here is taken as an override)")
    t.add_argument("overrides", nargs="*", help="key.path=value overrides, e.g. optim.lr=0.01")
    t.add_argument("--resume", metavar="RUN_DIR", help="continue a stopped run from its last checkpoint")
    t.add_argument("--quiet", action="store_true", help="no progress bar or per-epoch lines")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("eval", help="evaluate a run's best checkpoint on its held-out data",
                       formatter_class=_Formatter,
                       epilog="examples:\n  cnnkit eval runs/20261130-101500-layers-mnist5k-1a2b3c\n"
                              "  cnnkit eval runs/x --split test --format json")
    e.add_argument("run_dir")
    e.add_argument("--split", choices=["val", "test"], default="val")
    e.add_argument("--checkpoint", choices=["best", "last"], default="best")
    e.add_argument("--format", choices=["text", "json"], default="text")
    e.set_defaults(func=cmd_eval)

    pr = sub.add_parser("predict", help="classify image files with a trained run", formatter_class=_Formatter,
                        epilog="examples:\n  cnnkit predict runs/x digit.png\n"
                               "  cnnkit predict runs/x a.png b.jpg --top-k 3 --format json\n"
                               "  cnnkit predict model.onnx a.png")
    pr.add_argument("source", help="a run folder, a cnnkit checkpoint (.pt) or an exported .onnx file")
    pr.add_argument("images", nargs="+", help="PNG or JPEG files")
    pr.add_argument("--top-k", type=int, default=3)
    pr.add_argument("--format", choices=["text", "json"], default="text")
    pr.set_defaults(func=cmd_predict)

    s = sub.add_parser("summary", help="per-layer shapes, parameters, MACs, receptive field",
                       formatter_class=_Formatter,
                       epilog="examples:\n  cnnkit summary lenet5\n  cnnkit summary resnet18 --input 3,32,32\n"
                              "  cnnkit summary configs/lenet5_mnist5k.yaml --format json")
    s.add_argument("target", help="a registered model name or a YAML config")
    s.add_argument("--input", help="input shape C,H,W (default: the model's or the config's)")
    s.add_argument("--num-classes", type=int, default=None)
    s.add_argument("--format", choices=["text", "json"], default="text")
    s.set_defaults(func=cmd_summary)

    m = sub.add_parser("models", help="list registered models", formatter_class=_Formatter,
                       epilog="examples:\n  cnnkit models\n  cnnkit models 'resnet*'")
    m.add_argument("pattern", nargs="?", help="wildcard filter, e.g. 'resnet*'")
    m.set_defaults(func=cmd_models)

    d = sub.add_parser("datasets", help="list registered datasets", formatter_class=_Formatter,
                       epilog="examples:\n  cnnkit datasets\n  cnnkit train configs/lenet5_mnist5k.yaml data.per_class=100 "
                              "'data.classes=[0,1,2]'")
    d.set_defaults(func=cmd_datasets)

    from cnnkit.explain.cli import add_parser as add_explain

    add_explain(sub)
    for module in _COMMAND_MODULES:
        importlib.import_module(module).add_parser(sub)
    return p


# Modules that add their own subcommand with ``add_parser(subparsers)``.
_COMMAND_MODULES: list[str] = [
    "cnnkit.finetune",
    "cnnkit.lr_find",
    "cnnkit.compress",
    "cnnkit.export",
    "cnnkit.tune",
]


def _version() -> str:
    from cnnkit import __version__

    return f"cnnkit {__version__}"


def _split_config_and_overrides(config: str | None, overrides: list[str]) -> tuple[str | None, list[str]]:
    if config is not None and "=" in config and not Path(config).exists():
        return None, [config, *overrides]
    return config, overrides


# --------------------------------------------------------------------------- commands

def cmd_train(args: argparse.Namespace) -> int:
    from cnnkit.config import load_config
    from cnnkit.train.trainer import resume, train

    config, overrides = _split_config_and_overrides(args.config, args.overrides)
    if args.resume:
        if config is not None:
            raise UserError("--resume takes the config from the run folder; give only key=value overrides "
                            f"(got config file {config!r})")
        result = resume(args.resume, overrides, quiet=args.quiet)
    else:
        result = train(load_config(config, overrides), quiet=args.quiet)
    return report_run(result)


def report_run(result) -> int:
    """Print a finished run's held-out accuracy, then (last line) its folder; rank 0 only."""
    from cnnkit.train.distributed import is_main_process

    if result.run_dir is None or not is_main_process():  # a non-zero DDP rank: rank 0 reports
        return 0
    f = result.final
    print(f"held-out accuracy: {f['val_accuracy']:.4f} (val_loss {f['val_loss']:.4f}, {f['n_val']} images, "
          f"best epoch {f['best_epoch']}, {f['epochs']} epochs, training {f['train_time_s']:.1f}s)")
    print(result.run_dir)
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    import torch
    from torchmetrics.classification import MulticlassConfusionMatrix

    from cnnkit.data import load_data
    from cnnkit.data.loaders import make_loader
    from cnnkit.inference import load_run_model
    from cnnkit.train.losses import make_loss
    from cnnkit.train.trainer import evaluate, predict_logits, resolve_device

    model, info = load_run_model(args.run_dir, which=args.checkpoint)
    cfg = info["config"]
    bundle = load_data(cfg.data)
    split = bundle.val if args.split == "val" else bundle.test
    if split is None:
        raise UserError(f"dataset {cfg.data.name!r} has no {args.split} split; use --split val")
    device = resolve_device("auto" if cfg.train.device == "auto" else "cpu")
    model.to(device)
    loader = make_loader(split, batch_size=cfg.data.eval_batch_size or 256, mean=info["mean"], std=info["std"],
                         shuffle=False, seed=0, device=device, augment=None)
    loss_fn = make_loss(cfg.train.loss, cfg.regularization.label_smoothing)
    res = evaluate(model, loader, loss_fn, device, "fp32", cfg.train.eval_tta)
    cm = MulticlassConfusionMatrix(num_classes=len(info["classes"])).to(device)
    with torch.no_grad():
        for x, y in loader:
            cm.update(predict_logits(model, x, cfg.train.eval_tta).argmax(1), y)
    matrix = cm.compute().cpu()
    per_class = (matrix.diag() / matrix.sum(1).clamp_min(1)).tolist()
    out = {"split": args.split, "accuracy": res["accuracy"], "loss": res["loss"], "n": res["n"],
           "checkpoint": info["checkpoint"],
           "per_class_accuracy": {c: round(a, 4) for c, a in zip(info["classes"], per_class)},
           "confusion_matrix": matrix.tolist()}
    if args.format == "json":
        print(json.dumps(out, indent=2))
    else:
        print(f"{args.split} accuracy: {res['accuracy']:.4f}  loss: {res['loss']:.4f}  ({res['n']} images, "
              f"{Path(info['checkpoint']).name})")
        width = max(len(c) for c in info["classes"])
        for c, a in out["per_class_accuracy"].items():
            print(f"  {c:<{width}}  {a:.4f}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    if args.top_k < 1:
        raise UserError(f"--top-k must be at least 1, got {args.top_k}")
    if str(args.source).endswith(".onnx"):
        from cnnkit.export import predict_onnx

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


def parse_shape(text: str) -> tuple[int, int, int]:
    try:
        parts = tuple(int(v) for v in text.replace("x", ",").split(","))
    except ValueError:
        parts = ()
    if len(parts) != 3 or min(parts) < 1:
        raise UserError(f"--input {text!r} is not a shape C,H,W of three positive ints (e.g. 3,32,32)")
    return parts  # type: ignore[return-value]


def resolve_target(target: str, input_text: str | None, num_classes: int | None):
    """A model (and its input shape) from a registered name or a YAML config."""
    from cnnkit.config import load_config
    from cnnkit.models import MODELS, create_model, default_input, get_model, list_models

    shape = parse_shape(input_text) if input_text else None
    looks_like_file = target.endswith((".yaml", ".yml")) or "/" in target or Path(target).exists()
    if looks_like_file:
        cfg = load_config(target)
        if shape is None:
            if cfg.model.input is not None:
                shape = tuple(cfg.model.input)
            elif cfg.model.name is not None:
                shape = default_input(cfg.model.name)
            else:
                from cnnkit.data import load_data

                shape = tuple(load_data(cfg.data).input_shape)
        classes = num_classes or cfg.model.num_classes or 10
        if cfg.model.layers is None and cfg.model.name is not None:
            model = get_model(cfg.model.name, num_classes=classes, in_chans=shape[0], input_size=shape[1],
                              **cfg.model.options)
        else:
            model = create_model(cfg.model, shape, classes)
        return model, shape, cfg
    list_models()
    if target not in MODELS:
        MODELS.entry(target)  # raises the "unknown model" error with the list
    shape = shape or default_input(target)
    if shape[1] != shape[2]:
        raise UserError(f"model {target!r} takes square inputs; got --input {input_text}")
    return get_model(target, num_classes=num_classes or 10, in_chans=shape[0], input_size=shape[1]), shape, None


def cmd_summary(args: argparse.Namespace) -> int:
    from cnnkit.summary import summarize

    model, shape, _ = resolve_target(args.target, args.input, args.num_classes)
    s = summarize(model, shape)
    if args.format == "json":
        print(json.dumps({"model": args.target, **s.to_dict()}, indent=2))
    else:
        print(f"model {args.target}")
        print(s.to_text())
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from cnnkit.models import MODELS, list_models

    names = list_models(args.pattern)
    if not names:
        raise UserError(f"no model matches {args.pattern!r}; run 'cnnkit models' to see them all")
    width = max(len(n) for n in names)
    for n in names:
        e = MODELS.entry(n)
        print(f"{n:<{width}}  {'x'.join(map(str, e.meta['default_input'])):<10}  {e.description}")
    return 0


def cmd_datasets(args: argparse.Namespace) -> int:
    from cnnkit.data import DATASETS, list_datasets

    names = list_datasets()
    width = max(len(n) for n in names)
    for n in names:
        print(f"{n:<{width}}  {DATASETS.entry(n).description}")
    return 0


# --------------------------------------------------------------------------- entry point

def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except Exception as e:  # a failure while running, not the user's mistake
        if args.debug:
            traceback.print_exc()
        else:
            print(f"error: {type(e).__name__}: {e}\n(run with 'cnnkit --debug ...' for the traceback)",
                  file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
