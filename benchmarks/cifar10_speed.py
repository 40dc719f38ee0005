"""CIFAR-10 speed: cnnkit's recipe (configs/cifar10_speed.yaml, model fastnet) against airbench.

Both train on the same 45,000 images of ``cifar10_jpeg_train.npz`` and are scored on
the same other 5,000 (cnnkit's stratified split, ``data.split_seed`` 0), for N seeds
each, on the same device, one fresh subprocess per run (interleaved, so that drift in
the machine's load hits both alike). For every run it records

* held-out accuracy (with each recipe's own test-time augmentation),
* training time: each recipe's own clock, the same definition for both: the
  data-dependent whitening initialisation, the training epochs and the final
  test-time-augmented evaluation (airbench's ``total_time_seconds``; cnnkit's
  ``train_time_s`` with ``train.eval_every: 0``); "cold" is the first run in a fresh
  process, "warm" (``--warm``, default on CUDA) a second run of the same seed in the
  same process, after cuDNN has picked its algorithms,
* end-to-end time: from the start of the process (interpreter start-up, imports,
  loading the decoded images, building, compiling, training, evaluating) until the
  accuracy is known.

Baselines:

* ``airbench94``: the ``airbench`` package on PyPI (0.1.8), its ``train94`` (Jordan,
  2024, arXiv:2404.00498: 94% in 3.83 s on an A100). On CUDA its own ``train94`` runs
  unmodified, fed our split in its native format (``cifar10/train.pt`` and
  ``test.pt`` in a scratch folder that is its working directory); its time is the one
  it prints. It only runs on CUDA, so on the CPU a port of its loop, labelled
  "airbench94 (CPU port)", runs instead: :func:`airbench94_cpu_port`, built from the
  package's own pieces (network blocks, loader, whitening, lookahead, evaluation).
  Install it with ``pip install airbench==0.1.8 --no-deps``; without it the
  benchmark says why and runs cnnkit alone.
* ``--baseline-script PATH``: an airbench-style script such as ``airbench94_muon.py``
  from github.com/KellerJordan/cifar10-airbench (NOT included here, and not on PyPI),
  run on the same data the way its own ``__main__`` runs it: ``CifarNet()`` compiled
  (``--baseline-compile``, the script's ``max-autotune`` by default), one warm-up
  run of ``main``, then one measured run per seed. CUDA only.

Usage::

    python benchmarks/cifar10_speed.py                          # GPU: 5 seeds each
    python benchmarks/cifar10_speed.py --baseline-script ~/cifar10-airbench/airbench94_muon.py
    python benchmarks/cifar10_speed.py --device cpu --subset 2000 --epochs 1 --seeds 1 --val-subset 500

``--subset N`` keeps N training images, N/10 per class (the archive is sorted by
class, so its first N images would be a single class), ``--val-subset`` likewise for
the held-out images (CPU smoke checks only), ``--set KEY=VALUE`` overrides the cnnkit
recipe, ``--json FILE`` saves every run.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = REPO / "configs" / "cifar10_speed.yaml"
MUON_NOTE = ("airbench94_muon is a script in github.com/KellerJordan/cifar10-airbench (not on PyPI) and is not "
             "included here; pass --baseline-script PATH to run it on the same data")


# --------------------------------------------------------------------------- shared helpers

def _process_start() -> float:
    try:
        import psutil

        return psutil.Process().create_time()
    except Exception:  # pragma: no cover
        return _T0


_T0 = time.time()


def _result(payload: dict[str, Any]) -> None:
    print("RESULT " + json.dumps(payload), flush=True)


def _val_slice(val, k: int | None):
    """The first ``k / classes`` held-out images of every class, in index order (the same for both)."""
    import torch

    if not k or k >= len(val):
        return val
    labels = val.labels
    classes = torch.unique(labels).tolist()
    per = max(1, k // len(classes))
    keep = torch.cat([torch.nonzero(labels == c).flatten()[:per] for c in classes]).sort().values
    return val.subset(keep)


def _cnnkit_overrides(args: argparse.Namespace, data_path: str, device: str) -> list[str]:
    out = [f"data.path={data_path}", f"train.device={device}"]
    if args.subset:
        out.append(f"data.per_class={max(1, args.subset // 10)}")
    if args.epochs is not None:
        out.append(f"train.epochs={max(1, round(args.epochs))}")
    if device == "cpu":
        out.append("train.precision=fp32")  # bf16 autocast is emulated and slow on most CPUs
    return out + list(args.set or [])


def _load_cfg(args: argparse.Namespace, data_path: str, device: str, extra: tuple[str, ...] = ()):
    from cnnkit.config import load_config

    overrides = _cnnkit_overrides(args, data_path, device)
    if args.batch_size:  # the recipe's lr is per batch of data.batch_size images: scale it with the batch
        cfg = load_config(args.config, overrides)
        lr = cfg.optim.lr * args.batch_size / cfg.data.batch_size
        overrides += [f"data.batch_size={args.batch_size}", f"optim.lr={lr!r}"]
    return load_config(args.config, overrides + list(extra))


def _parse_airbench_table(text: str, columns: list[str]) -> dict[str, str]:
    """The row of airbench's printed table whose epoch column is 'eval', as {column: text}."""
    names = [c.strip() for c in columns]
    for line in reversed(text.splitlines()):
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == len(names) and "epoch" in names and cells[names.index("epoch")] == "eval":
            return dict(zip(names, cells))
    raise ValueError(f"no 'eval' row with columns {names} in airbench's output:\n{text[-2000:]}")


# --------------------------------------------------------------------------- workers (one process per run)

def worker_cnnkit(args: argparse.Namespace) -> None:
    t_start = _process_start()
    import torch

    torch.set_num_threads(args.threads)
    from cnnkit.data import load_data
    from cnnkit.train.trainer import Trainer

    cfg = _load_cfg(args, args.data, args.device,
                    (f"train.seed={args.seed}", f"train.runs_dir={Path(args.workdir) / 'runs'}"))

    def one_run():
        bundle = None
        if args.val_subset:
            bundle = load_data(cfg.data)
            bundle.val = _val_slice(bundle.val, args.val_subset)
        return Trainer(cfg, quiet=True, bundle=bundle).fit()

    res = one_run()
    end_to_end = time.time() - t_start
    out = {"kind": "cnnkit", "seed": args.seed, "accuracy": res.final["val_accuracy"],
           "train_s": res.final["train_time_s"], "end_to_end_s": end_to_end,
           "trainer_end_to_end_s": res.final["end_to_end_s"], "n_train": res.final["n_train"],
           "n_val": res.final["n_val"], "epochs": res.final["epochs"], "run_dir": str(res.run_dir)}
    if args.warm:
        again = one_run()
        out["warm_train_s"] = again.final["train_time_s"]
        out["warm_accuracy"] = again.final["val_accuracy"]
    _result(out)


def _airbench_files_ok(workdir: Path) -> None:
    for name in ("train.pt", "test.pt"):
        if not (workdir / "cifar10" / name).exists():
            raise SystemExit(f"missing {workdir / 'cifar10' / name}; the parent process writes it")


def worker_airbench(args: argparse.Namespace) -> None:
    t_start = _process_start()
    import torch

    torch.set_num_threads(args.threads)
    workdir = Path(args.workdir)
    _airbench_files_ok(workdir)
    os.chdir(workdir)  # airbench's train() reads cifar10/test.pt from the working directory
    import airbench
    from airbench.lib_airbench94 import hyp

    epochs = hyp["opt"]["train_epochs"] if args.epochs is None else args.epochs
    batch = args.batch_size or hyp["opt"]["batch_size"]

    def one_run(run: int) -> tuple[float, float]:
        torch.manual_seed(args.seed)
        if args.device == "cpu":
            return airbench94_cpu_port(workdir / "cifar10", epochs=epochs, batch_size=batch)
        loader = airbench.CifarLoader("cifar10", train=True, batch_size=batch, aug=hyp["aug"], altflip=True)
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            airbench.train94(train_loader=loader, epochs=epochs, run=run, verbose=True)
        from airbench.utils import logging_columns_list

        row = _parse_airbench_table(buf.getvalue(), logging_columns_list)
        return float(row["tta_val_acc"]), float(row["total_time_seconds"])

    acc, train_s = one_run(0)
    end_to_end = time.time() - t_start
    out = {"kind": "airbench94", "seed": args.seed, "accuracy": acc, "train_s": train_s,
           "end_to_end_s": end_to_end, "impl": "CPU port" if args.device == "cpu" else f"airbench {airbench_version()}",
           "epochs": epochs}
    if args.warm:
        acc2, t2 = one_run(1)
        out["warm_train_s"], out["warm_accuracy"] = t2, acc2
    _result(out)


def worker_script(args: argparse.Namespace) -> None:
    t_start = _process_start()
    import runpy

    import torch

    workdir = Path(args.workdir)
    _airbench_files_ok(workdir)
    script = str(Path(args.baseline_script).resolve())
    os.chdir(workdir)
    sys.argv = [script]  # airbench scripts read their own source through sys.argv[0]
    torch.manual_seed(args.seed)
    mod = runpy.run_path(script, run_name="baseline_script")
    missing = [n for n in ("CifarNet", "main") if n not in mod]
    if missing:
        raise SystemExit(f"{script} defines no {', '.join(missing)}: it is not an airbench94-style script")
    model = mod["CifarNet"]().cuda().to(memory_format=torch.channels_last)
    if args.baseline_compile != "off":
        model.compile(mode=args.baseline_compile)
    columns = mod.get("logging_columns_list")
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        mod["main"]("warmup", model)
    times, accs = [], []
    for run in range(2 if args.warm else 1):
        torch.manual_seed(args.seed)
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            acc = mod["main"](run, model)
        if run == 0:
            end_to_end = time.time() - t_start
        row = _parse_airbench_table(buf.getvalue(), columns) if columns else {}
        time_col = next((k for k in row if "time" in k), None)
        times.append(float(row[time_col]) if time_col else float("nan"))
        accs.append(float(acc))
    out = {"kind": "script", "seed": args.seed, "accuracy": accs[0], "train_s": times[0],
           "end_to_end_s": end_to_end, "impl": Path(script).name}
    if args.warm:
        out["warm_train_s"], out["warm_accuracy"] = times[1], accs[1]
    _result(out)


def airbench_version() -> str:
    try:
        from importlib.metadata import version

        return version("airbench")
    except Exception:  # pragma: no cover
        return "?"


def airbench94_cpu_port(data_dir: Path, *, epochs: float, batch_size: int) -> tuple[float, float]:
    """airbench94 (CPU port): ``airbench.utils.train`` with ``train94``'s settings, statement for statement,
    on the CPU in float32.

    The package's own loop needs CUDA (``.half().cuda()`` in ``make_net94``, CUDA
    events for timing), so this port rebuilds ``make_net94``'s network from the
    package's blocks in float32 on the CPU and times with a wall clock at the
    places airbench's events sit (whitening, each epoch's training, the final
    test-time-augmented evaluation). Returns (accuracy, seconds). On CUDA the
    benchmark runs the package's ``train94`` itself, not this.
    """
    import torch
    from torch import nn

    from airbench.lib_airbench94 import BatchNorm, Conv, ConvGroup, Flatten, Mul, hyp
    from airbench.utils import CifarLoader, LookaheadState, evaluate, init_whitening_conv

    def loader(train: bool, bs: int) -> CifarLoader:
        ld = CifarLoader(str(data_dir), train=train, batch_size=bs, aug=hyp["aug"] if train else None,
                         altflip=train, gpu="cpu")
        raw = torch.load(data_dir / ("train.pt" if train else "test.pt"), map_location="cpu")
        ld.images = (raw["images"].float() / 255).permute(0, 3, 1, 2).to(memory_format=torch.channels_last)
        return ld

    train_loader, test_loader = loader(True, batch_size), loader(False, 2000)
    widths, bn_mom = hyp["net"]["widths"], hyp["net"]["batchnorm_momentum"]
    whiten_width = 2 * 3 * 2 ** 2
    model = nn.Sequential(
        Conv(3, whiten_width, 2, padding=0, bias=True), nn.GELU(),
        ConvGroup(whiten_width, widths["block1"], bn_mom), ConvGroup(widths["block1"], widths["block2"], bn_mom),
        ConvGroup(widths["block2"], widths["block3"], bn_mom), nn.MaxPool2d(3), Flatten(),
        nn.Linear(widths["block3"], 10, bias=False), Mul(hyp["net"]["scaling_factor"]))
    model[0].weight.requires_grad = False
    model = model.to(memory_format=torch.channels_last)
    assert all(isinstance(m, BatchNorm) for m in model.modules() if isinstance(m, nn.BatchNorm2d))

    o = hyp["opt"]
    momentum, label_smoothing = o["momentum"], o["label_smoothing"]
    kilostep_scale = 1024 * (1 + 1 / (1 - momentum))
    lr = o["lr"] / kilostep_scale
    wd = o["weight_decay"] * batch_size / kilostep_scale
    lr_biases = lr * o["bias_scaler"]
    loss_fn = nn.CrossEntropyLoss(label_smoothing=label_smoothing, reduction="none")
    total_train_steps = math.ceil(len(train_loader) * epochs)
    norm_biases = [p for k, p in model.named_parameters() if "norm" in k and p.requires_grad]
    other_params = [p for k, p in model.named_parameters() if "norm" not in k and p.requires_grad]
    optimizer = torch.optim.SGD([dict(params=norm_biases, lr=lr_biases, weight_decay=wd / lr_biases),
                                 dict(params=other_params, lr=lr, weight_decay=wd / lr)],
                                momentum=momentum, nesterov=True)

    def triangle(steps: int, start: float, end: float, peak: float) -> torch.Tensor:
        xp = torch.tensor([0, int(peak * steps), steps])
        fp = torch.tensor([start, 1, end])
        x = torch.arange(1 + steps)
        m = (fp[1:] - fp[:-1]) / (xp[1:] - xp[:-1])
        b = fp[:-1] - (m * xp[:-1])
        idx = torch.clamp(torch.sum(torch.ge(x[:, None], xp[None, :]), 1) - 1, 0, len(m) - 1)
        return m[idx] * x + b[idx]

    lr_schedule = triangle(total_train_steps, start=0.2, end=0.07, peak=0.23)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: lr_schedule[i])
    alpha_schedule = 0.95 ** 5 * (torch.arange(total_train_steps + 1) / total_train_steps) ** 3
    lookahead_state = LookaheadState(model)

    total = 0.0
    t0 = time.perf_counter()
    init_whitening_conv(model[0], train_loader.normalize(train_loader.images[:5000]))
    total += time.perf_counter() - t0
    current_steps = 0
    for epoch in range(math.ceil(epochs)):
        model[0].bias.requires_grad = epoch < o["whiten_bias_epochs"]
        t0 = time.perf_counter()
        model.train()
        for inputs, labels in train_loader:
            outputs = model(inputs)
            loss = loss_fn(outputs, labels).sum()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            current_steps += 1
            if current_steps % 5 == 0:
                lookahead_state.update(model, decay=alpha_schedule[current_steps].item())
            if current_steps >= total_train_steps:
                lookahead_state.update(model, decay=1.0)
                break
        total += time.perf_counter() - t0
    t0 = time.perf_counter()
    acc = evaluate(model, test_loader, hyp["net"]["tta_level"])
    total += time.perf_counter() - t0
    return acc, total


# --------------------------------------------------------------------------- the parent

def resolve_data(arg: str | None, config: str) -> Path:
    from cnnkit.config import read_yaml

    candidates = [Path(arg)] if arg else []
    if not arg:
        path = (read_yaml(config).get("data") or {}).get("path")
        if path:
            candidates += [Path(path), REPO / path]
        candidates.append(REPO / ".cache" / "data" / "cifar10_jpeg_train.npz")
    for c in candidates:
        if c.is_file():
            return c.resolve()
    raise SystemExit(f"cannot find cifar10_jpeg_train.npz (tried {', '.join(map(str, candidates))}); pass --data")


def prepare(args: argparse.Namespace, device: str) -> dict[str, Any]:
    """Decode (cnnkit's cache), split, and write the split in airbench's format; not timed."""
    import torch

    from cnnkit.data import load_data

    cfg = _load_cfg(args, args.data, device)
    bundle = load_data(cfg.data)  # fills cnnkit's decoded-image cache, so every worker starts warm
    val = _val_slice(bundle.val, args.val_subset)
    root = Path(args.workdir) / "cifar10"
    root.mkdir(parents=True, exist_ok=True)
    # airbench whitens from the first 5,000 images of train.pt: store them in a fixed shuffled order,
    # as in CIFAR-10's own files (cnnkit's split is sorted by class, as the archive is).
    order = torch.randperm(len(bundle.train), generator=torch.Generator().manual_seed(0))
    for name, split in (("train.pt", bundle.train.subset(order)), ("test.pt", val)):
        torch.save({"images": split.images.permute(0, 2, 3, 1).contiguous(), "labels": split.labels,
                    "classes": list(bundle.classes)}, root / name)
    return {"n_train": len(bundle.train), "n_val": len(val), "batch_size": cfg.data.batch_size,
            "epochs": cfg.train.epochs}


def airbench_status() -> str | None:
    """None when airbench can be imported, else why not."""
    try:
        import airbench  # noqa: F401
        from airbench.lib_airbench94 import hyp  # noqa: F401
    except Exception as e:
        return f"airbench cannot be imported ({type(e).__name__}: {e}); install it with " \
               f"'pip install airbench==0.1.8 --no-deps'"
    return None


def run_worker(kind: str, seed: int, args: argparse.Namespace) -> dict[str, Any] | None:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", kind, "--seed", str(seed),
           "--device", args.device, "--workdir", str(args.workdir), "--data", str(args.data),
           "--config", str(args.config), "--threads", str(args.threads),
           "--baseline-compile", args.baseline_compile, "--warm" if args.warm else "--no-warm"]
    for flag in ("epochs", "subset", "val_subset", "batch_size", "baseline_script"):
        v = getattr(args, flag)
        if v is not None:
            cmd += [f"--{flag.replace('_', '-')}", str(v)]
    for s in args.set or []:
        cmd += ["--set", s]
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=str(REPO))
    wall = time.perf_counter() - t
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        print(f"  {kind} seed {seed} FAILED (exit {proc.returncode}):\n"
              + "\n".join("    " + ln for ln in (proc.stderr or proc.stdout).strip().splitlines()[-15:]), flush=True)
        return None
    out = json.loads(lines[-1][len("RESULT "):])
    out["process_wall_s"] = wall
    return out


def _mean_std(xs: list[float]) -> tuple[float, float]:
    xs = [x for x in xs if x is not None and not math.isnan(x)]
    if not xs:
        return float("nan"), float("nan")
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def summarize(runs: dict[str, list[dict[str, Any]]], labels: dict[str, str]) -> dict[str, dict[str, float]]:
    table = {}
    for kind, rs in runs.items():
        if not rs:
            continue
        acc, acc_sd = _mean_std([r["accuracy"] for r in rs])
        tr, tr_sd = _mean_std([r["train_s"] for r in rs])
        warm, _ = _mean_std([r.get("warm_train_s") for r in rs])
        e2e, e2e_sd = _mean_std([r["end_to_end_s"] for r in rs])
        table[kind] = {"n": len(rs), "acc": acc, "acc_sd": acc_sd, "train": tr, "train_sd": tr_sd,
                       "warm": warm, "e2e": e2e, "e2e_sd": e2e_sd}
    print()
    w = max([34] + [len(labels[k]) + 2 for k in table])
    head = f"{'recipe':<{w}}{'runs':>5}{'accuracy (mean ± sd)':>24}{'train s cold':>15}{'train s warm':>14}" \
           f"{'end-to-end s':>16}"
    print(head)
    print("-" * len(head))
    for kind, t in table.items():
        acc = f"{100 * t['acc']:.2f} ± {100 * t['acc_sd']:.2f} %"
        warm = "-" if math.isnan(t["warm"]) else f"{t['warm']:.3f}"
        print(f"{labels[kind]:<{w}}{t['n']:>5}{acc:>24}{t['train']:>10.3f} ±{t['train_sd']:<4.2f}{warm:>14}"
              f"{t['e2e']:>11.2f} ±{t['e2e_sd']:<4.1f}")
    ours = table.get("cnnkit")
    for kind, t in table.items():
        if kind == "cnnkit" or ours is None:
            continue
        d_acc = 100 * (ours["acc"] - t["acc"])
        r_train = ours["train"] / t["train"]
        r_warm = ours["warm"] / t["warm"] if not (math.isnan(ours["warm"]) or math.isnan(t["warm"])) else float("nan")
        r_e2e = ours["e2e"] / t["e2e"]
        print(f"\ncnnkit vs {labels[kind]}: accuracy {d_acc:+.2f} pt; training time x{r_train:.3f} cold"
              + ("" if math.isnan(r_warm) else f", x{r_warm:.3f} warm") + f"; end-to-end x{r_e2e:.3f}")
        train_ok = (r_warm if not math.isnan(r_warm) else r_train) <= 1.0
        line = (f"  accuracy >= baseline mean: {'yes' if d_acc >= 0 else 'NO'}; training time "
                f"({'warm' if not math.isnan(r_warm) else 'cold'}) <= baseline: {'yes' if train_ok else 'NO'}")
        if kind == "script":  # the goal's end-to-end clause is about the compiled airbench94_muon
            line += f"; end-to-end far ahead (<= 0.5x): {'yes' if r_e2e <= 0.5 else 'NO'}"
        print(line)
    return table


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(DEFAULT_CONFIG), help="cnnkit recipe (default configs/cifar10_speed.yaml)")
    ap.add_argument("--data", default=None, help="cifar10_jpeg_train.npz (default: the recipe's data.path, "
                    "then .cache/data/ in the repository)")
    ap.add_argument("--seeds", type=int, default=5, help="runs of each recipe (default 5)")
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--device", default="auto", choices=["auto", "cuda", "cpu"])
    ap.add_argument("--epochs", type=float, default=None, help="override both recipes' epochs (cnnkit rounds)")
    ap.add_argument("--subset", type=int, default=None, help="training images, N/10 per class (smoke checks)")
    ap.add_argument("--val-subset", type=int, default=None, help="held-out images, N/10 per class (smoke checks)")
    ap.add_argument("--batch-size", type=int, default=None, help="both recipes' batch size (cnnkit's lr scaled)")
    ap.add_argument("--set", action="append", metavar="KEY=VALUE", help="override the cnnkit recipe (repeatable)")
    ap.add_argument("--baseline-script", default=None, help="an airbench-style script, e.g. airbench94_muon.py "
                    "(not included; CUDA only)")
    ap.add_argument("--baseline-compile", default="max-autotune", help="torch.compile mode for --baseline-script "
                    "(its own __main__ uses max-autotune; 'off' to skip)")
    ap.add_argument("--no-airbench", action="store_true", help="skip the airbench94 package baseline")
    ap.add_argument("--warm", action=argparse.BooleanOptionalAction, default=None,
                    help="also time a second, warm run in each process (default: on for CUDA)")
    ap.add_argument("--threads", type=int, default=max(1, min(2, os.cpu_count() or 1)),
                    help="CPU threads per run (default 2)")
    ap.add_argument("--workdir", default=None, help="scratch folder (default: a temporary one)")
    ap.add_argument("--json", default=None, help="write every run's numbers to this file")
    ap.add_argument("--worker", default=None, choices=["cnnkit", "airbench94", "script"], help=argparse.SUPPRESS)
    ap.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.worker:
        {"cnnkit": worker_cnnkit, "airbench94": worker_airbench, "script": worker_script}[args.worker](args)
        return 0

    import torch

    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda but no CUDA device is available")
    if args.warm is None:
        args.warm = args.device == "cuda"
    args.data = str(resolve_data(args.data, args.config))
    args.config = str(Path(args.config).resolve())
    tmp = None
    if args.workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="cifar10_speed_")
        args.workdir = tmp.name
    Path(args.workdir).mkdir(parents=True, exist_ok=True)
    args.workdir = str(Path(args.workdir).resolve())
    if args.baseline_script:
        args.baseline_script = str(Path(args.baseline_script).expanduser().resolve())

    if args.device == "cpu":
        print("NOTICE: running on the CPU. This is a smoke check of the benchmark; CPU numbers say nothing about "
              "the goal, which is about training on one GPU.", flush=True)
    info = prepare(args, args.device)
    labels = {"cnnkit": f"cnnkit fastnet ({Path(args.config).name})"}
    kinds = ["cnnkit"]
    why = "skipped (--no-airbench)" if args.no_airbench else airbench_status()
    if why is None:
        kinds.append("airbench94")
        labels["airbench94"] = "airbench94 (CPU port)" if args.device == "cpu" else f"airbench94 ({airbench_version()})"
    else:
        print(f"airbench94 baseline: {why}; running cnnkit alone.", flush=True)
    if args.baseline_script:
        if args.device != "cuda":
            print(f"--baseline-script {args.baseline_script}: needs CUDA; skipped.", flush=True)
        elif not Path(args.baseline_script).is_file():
            print(f"--baseline-script {args.baseline_script}: no such file; skipped.", flush=True)
        else:
            kinds.append("script")
            labels["script"] = Path(args.baseline_script).stem
    else:
        print(f"note: {MUON_NOTE}.", flush=True)

    gpu = torch.cuda.get_device_name(0) if args.device == "cuda" else f"CPU, {args.threads} threads per run"
    print(f"data: {args.data}: {info['n_train']} train / {info['n_val']} held-out images; device: {gpu}; "
          f"{args.seeds} seed(s) from {args.first_seed}; cnnkit batch {info['batch_size']}, {info['epochs']} epochs"
          + (f"; --epochs {args.epochs} for both" if args.epochs is not None else ""), flush=True)

    runs: dict[str, list[dict[str, Any]]] = {k: [] for k in kinds}
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        for kind in kinds:  # interleaved, so drift in the machine's load hits every recipe alike
            r = run_worker(kind, seed, args)
            if r is not None:
                runs[kind].append(r)
                warm = f", warm {r['warm_train_s']:.3f} s" if "warm_train_s" in r else ""
                print(f"  {labels[kind]:<36} seed {seed}: accuracy {100 * r['accuracy']:.2f} %, training "
                      f"{r['train_s']:.3f} s{warm}, end-to-end {r['end_to_end_s']:.2f} s", flush=True)
    table = summarize(runs, labels)
    if args.device == "cpu":
        print("\nNOTICE: CPU numbers; the goal (same GPU, 5 seeds, full data) is not measured by this run.")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": {k: v for k, v in vars(args).items()}, "info": info,
                                               "runs": runs, "table": table}, indent=2, default=str))
    if tmp is not None:
        tmp.cleanup()
    return 0 if all(runs[k] for k in kinds) else 1


if __name__ == "__main__":
    sys.exit(main())
