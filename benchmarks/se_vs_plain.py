"""Squeeze-and-excitation against the plain ResNet: ``se_resnet20`` vs ``resnet20`` on CIFAR-10.

Both networks train on the same images of ``cifar10_jpeg_train.npz`` (../shared/data; 45,000 with the
default ``--val-fraction 0.1``) and are scored on the same other ones (cnnkit's stratified held-out split,
``data.split_seed`` 0, the same for every seed), with the same budget: the same epochs, batch size,
optimiser (torch SGD, Nesterov momentum 0.9, coupled weight decay 5e-4), one-cycle schedule and
augmentation (random crop after 4 pixels of padding, horizontal flips). Only the network and the seed
change. Each (model, seed) pair is one ``cnnkit.api.train`` run in this process, the models interleaved
within each seed.

The score is the held-out accuracy after the **last** epoch (``last_val_accuracy``: no choice of epoch
on the held-out images); the best epoch's is printed too. The table gives the mean +- standard
deviation over the seeds, the paired difference SE - plain (mean +- std over seeds), and the parameter
counts with their ratio (the issue's budget: the SE variant costs under 5% more parameters).

Usage::

    python benchmarks/se_vs_plain.py                               # 3 seeds, 30 epochs each, auto device
    python benchmarks/se_vs_plain.py --epochs 60 --device cuda --json se_vs_plain.json
    python benchmarks/se_vs_plain.py --models resnet56,se_resnet56 --reduction 4
    python benchmarks/se_vs_plain.py --quick                       # a smoke run: tiny data, 1 epoch (< 1 min)
    python benchmarks/se_vs_plain.py --models "rcnn[recurrent=false;width=32],rcnn[width=32]"   # RCNN vs its twin

A model entry is a registered name, optionally with options in brackets (``name[key=value;key=value]``,
values read as YAML): the same harness compares any plain network with its variant, e.g. Liang &
Hu's recurrent CNN with its feed-forward twin of the same parameter count.

``--quick`` keeps 5 training images per class, holds out 0.2% (100 images) and trains one epoch with
one seed (unless ``--seeds`` is given): it checks the pipeline, its accuracies mean nothing. The first
use decodes the 50,000 JPEGs once (cnnkit caches the decoded array in ``data.cache_dir``,
``$CNNKIT_CACHE`` or ~/.cache/cnnkit).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DATA_CANDIDATES = (REPO.parent / "shared" / "data" / "cifar10_jpeg_train.npz",
                   REPO / ".cache" / "data" / "cifar10_jpeg_train.npz")


def _find_data(given: str | None) -> str:
    if given:
        if not Path(given).is_file():
            raise SystemExit(f"--data {given!r} does not exist")
        return given
    for path in DATA_CANDIDATES:
        if path.is_file():
            return str(path)
    raise SystemExit(f"cannot find cifar10_jpeg_train.npz (tried {', '.join(map(str, DATA_CANDIDATES))}); "
                     f"pass --data")


def _int_list(text: str) -> list[int]:
    try:
        out = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        out = []
    if not out:
        raise argparse.ArgumentTypeError(f"{text!r}: give integers separated by commas, e.g. 0,1,2")
    return out


def parse_model(entry: str) -> tuple[str, dict[str, Any]]:
    """``name[key=value;key=value]`` -> ``(name, options)``, each value read as YAML."""
    import yaml

    name, _, rest = entry.partition("[")
    options: dict[str, Any] = {}
    if rest:
        if not rest.endswith("]"):
            raise SystemExit(f"--models entry {entry!r}: options go in brackets, name[key=value;key=value]")
        for pair in filter(None, rest[:-1].split(";")):
            key, eq, value = pair.partition("=")
            if not eq or not key.strip():
                raise SystemExit(f"--models entry {entry!r}: {pair!r} is not key=value")
            options[key.strip()] = yaml.safe_load(value)
    return name.strip(), options


def model_options(entry: str, reduction: int | None) -> tuple[str, dict[str, Any]]:
    name, options = parse_model(entry)
    if name.startswith("se_") and reduction is not None:
        options.setdefault("reduction", reduction)
    return name, options


def recipe(args: argparse.Namespace, data: str, runs_dir: str, model: str, seed: int) -> dict[str, Any]:
    """The config of one run: everything but ``model`` and ``seed`` is the same for all runs."""
    model, options = model_options(model, args.reduction)
    return {
        "data": {"name": "cifar10_jpeg", "path": data, "val_fraction": args.val_fraction, "split_seed": 0,
                 "batch_size": args.batch_size, "eval_batch_size": 250, "per_class": args.per_class},
        "model": {"name": model, "options": options},
        "optim": {"name": "torch.sgd", "lr": args.lr, "momentum": 0.9, "nesterov": True,
                  "weight_decay": args.weight_decay},
        "schedule": {"name": "onecycle"},
        "augment": {"crop_padding": 4, "hflip": True},
        "train": {"epochs": args.epochs, "seed": seed, "device": args.device, "runs_dir": runs_dir,
                  "precision": "fp32"},
    }


def _register_zoo() -> None:
    """The SE-ResNets register when their module is imported (cnnkit.models.zoo imports it too, once wired)."""
    import cnnkit.models.zoo.se_resnet  # noqa: F401


def n_params(model: str, reduction: int | None) -> int:
    from cnnkit.models import get_model

    name, options = model_options(model, reduction)
    return sum(p.numel() for p in get_model(name, num_classes=10, **options).parameters())


def run_one(args: argparse.Namespace, data: str, runs_dir: str, model: str, seed: int) -> dict[str, Any]:
    from cnnkit.api import train
    from cnnkit.config import validate

    cfg = validate(recipe(args, data, runs_dir, model, seed))
    t0 = time.time()
    result = train(cfg, quiet=True)
    final = result.final
    return {"model": model, "seed": seed, "last_val_accuracy": final["last_val_accuracy"],
            "best_val_accuracy": final["best_val_accuracy"],
            "n_train": final["n_train"], "n_val": final["n_val"], "epochs": final["epochs"],
            "train_time_s": final["train_time_s"], "wall_s": round(time.time() - t0, 2),
            "run_dir": str(result.run_dir)}


def split_entries(text: str) -> list[str]:
    """``a,b[x=1;y=2]`` -> ``['a', 'b[x=1;y=2]']``: commas inside brackets do not split."""
    out, depth, cur = [], 0, ""
    for ch in text:
        depth += ch == "["
        depth -= ch == "]"
        if ch == "," and depth == 0:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    return out + [cur]


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def report(rows: list[dict[str, Any]], models: list[str], params: dict[str, int]) -> str:
    lines = []
    plain, se = models[0], models[-1]
    first = rows[0]
    lines.append(f"{first['n_train']} training images, {first['n_val']} held out, {first['epochs']} epochs, "
                 f"seeds {sorted({r['seed'] for r in rows})}")
    w = max(14, *(len(m) for m in models))
    lines.append(f"{'model':<{w}} {'params':>10} {'last-epoch acc (mean +- std)':>30} {'best-epoch acc':>16} "
                 f"{'train s':>9}")
    for m in models:
        mine = [r for r in rows if r["model"] == m]
        last = _mean_std([100 * r["last_val_accuracy"] for r in mine])
        best = _mean_std([100 * r["best_val_accuracy"] for r in mine])
        secs = statistics.fmean(r["train_time_s"] for r in mine)
        lines.append(f"{m:<{w}} {params[m]:>10,} {last[0]:>22.2f} +- {last[1]:<5.2f} {best[0]:>10.2f} +- "
                     f"{best[1]:<4.2f} {secs:>8.1f}")
    by_seed = {(r["model"], r["seed"]): r["last_val_accuracy"] for r in rows}
    seeds = sorted({r["seed"] for r in rows})
    diffs = [100 * (by_seed[(se, s)] - by_seed[(plain, s)]) for s in seeds]
    d = _mean_std(diffs)
    wins = sum(v > 0 for v in diffs)
    lines.append(f"{se} - {plain}, paired by seed: {d[0]:+.2f} +- {d[1]:.2f} points "
                 f"({', '.join(f'{v:+.2f}' for v in diffs)}; {se} ahead on {wins} of {len(diffs)} seeds)")
    extra = params[se] - params[plain]
    lines.append(f"parameters: {params[se]:,} / {params[plain]:,} = {params[se] / params[plain]:.4f} "
                 f"(+{extra:,}, +{100 * extra / params[plain]:.2f}%)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--data", help="cifar10_jpeg_train.npz (default: ../shared/data, then .cache/data)")
    ap.add_argument("--models", default="resnet20,se_resnet20", help="plain,se (default resnet20,se_resnet20)")
    ap.add_argument("--seeds", type=_int_list, default=None, help="training seeds (default 0,1,2; --quick: 0)")
    ap.add_argument("--epochs", type=int, default=30, help="epochs per run (default 30)")
    ap.add_argument("--batch-size", type=int, default=128, help="default 128")
    ap.add_argument("--lr", type=float, default=0.1, help="peak learning rate of the one-cycle schedule (0.1)")
    ap.add_argument("--weight-decay", type=float, default=5e-4, help="torch SGD's (coupled) weight decay")
    ap.add_argument("--reduction", type=int, default=None, help="the SE model's reduction (default: its own, 8)")
    ap.add_argument("--per-class", type=int, default=None, help="training images per class (default: all)")
    ap.add_argument("--val-fraction", type=float, default=0.1, help="held-out share of the images (default 0.1)")
    ap.add_argument("--device", default="auto", help="auto, cpu, cuda (default auto)")
    ap.add_argument("--quick", action="store_true", help="smoke run: 5 images per class, 100 held out, 1 epoch")
    ap.add_argument("--json", metavar="FILE", help="save every run and the summary")
    ap.add_argument("--keep-runs", metavar="DIR", help="keep the run folders here (default: a temporary folder)")
    args = ap.parse_args(argv)
    models = [m.strip() for m in split_entries(args.models) if m.strip()]
    if len(models) != 2:
        raise SystemExit(f"--models takes two names, the plain network then its SE variant; got {args.models!r}")
    if args.quick:
        args.per_class, args.val_fraction, args.epochs, args.batch_size = 5, 0.002, 1, 25
    if args.seeds is None:
        args.seeds = [0] if args.quick else [0, 1, 2]
    data = _find_data(args.data)
    _register_zoo()
    params = {m: n_params(m, args.reduction) for m in models}
    rows = []
    with tempfile.TemporaryDirectory(prefix="se_vs_plain_") as tmp:
        runs_dir = args.keep_runs or tmp
        for seed in args.seeds:
            for model in models:
                row = run_one(args, data, runs_dir, model, seed)
                rows.append(row)
                print(f"{model} seed {seed}: last-epoch held-out accuracy {100 * row['last_val_accuracy']:.2f}% "
                      f"({row['train_time_s']:.1f} s training)", flush=True)
    text = report(rows, models, params)
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps({"args": {k: v for k, v in vars(args).items()}, "params": params,
                                               "runs": rows, "summary": text}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
