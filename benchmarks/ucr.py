"""cnnkit's time-series classifiers against aeon's MiniRocket and ROCKET on UCR/UEA sets, all on the same
held-out split of each set's TRAIN file.

The official ``*_TEST.ts`` files are never read, by anything, in any mode: only
``<--data>/<NAME>_TRAIN.ts`` is opened, a path naming ``_TEST`` is refused, and an audit hook records
every file this process opens whose name holds ``_TEST`` (the report must say "none").

* Sets (``--sets``, default the 8 below): GunPoint, ItalyPowerDemand, ArrowHead, OSULeaf, ACSF1 (univariate,
  one length), BasicMotions (6 channels), JapaneseVowels (12 channels, lengths 7-26) and
  PickupGestureWiimoteZ (univariate, lengths 29-361).
* The split, per seed (``--seeds``): of every class c with n_c series of the TRAIN file,
  ``k = min(n_c - 1, max(1, round(--held * n_c)))`` (default ``--held 0.3``) are held out, chosen by
  ``numpy.random.default_rng([seed, i])`` (``i`` the set's position in the fixed list above, so a set's
  split does not depend on which other sets run). The two parts are written as ``.ts`` files,
  ``<workdir>/seed<S>/<NAME>_train.ts`` and ``<NAME>_held.ts``: the TRAIN file's own header and comment
  lines and its data lines, byte for byte, so both parts read exactly as the original does (aeon
  lower-cases labels, for everybody alike).
* MiniRocket / ROCKET: ``aeon.classification.convolution_based.MiniRocketClassifier`` /
  ``RocketClassifier`` with their defaults (10,000 kernels; ridge regression with cross-validated
  alpha), ``n_jobs=--threads`` and ``random_state=seed``, fitted on the training part, scored on the
  held-out part. One-length sets: the series as read (float64, no preparation: ROCKET normalises each
  series itself, MiniRocket does not, as the papers do). Variable-length sets (aeon's classifiers refuse
  them): the arrays cnnkit's networks get, so every contender sees the same padding: the series
  prepared as the FCN recipe's data section says (configs/ucr_fcn.yaml: ``data.znorm: false``, so as
  read; zero-padded after its end to the longest series of the training part, longer held-out series
  cut; cnnkit's padding-mask channel, 1 on values and 0 on padding, appended), with a layout fitted on
  the training part (``SeriesLayout.fit`` + ``prepare_series``; ``--set data.KEY=VALUE`` changes it for
  the rockets too). ``--rocket-input cnnkit`` gives them
  those prepared arrays on every set. Numba compiles (and caches) their kernels on first use; a warm-up
  fit on a tiny random set, before any timing, keeps the compile out of the fit times (it is printed).
* cnnkit: each model from its recipe (``fcn1d``: configs/ucr_fcn.yaml, ``inception_time``:
  configs/ucr_inceptiontime.yaml, any other time-series model: the FCN recipe with ``model.name``
  replaced) with ``data.path`` = the training part, ``train.device=cpu``, ``train.seed=seed``,
  ``train.runs_dir`` in the work folder, ``--epochs`` (if given) and ``--set KEY=VALUE`` (for every cnnkit
  model). ``--ensemble K`` sets ``model.options.ensemble`` of inception_time. Two ways to fit
  (``--cnnkit-fit``):

  - ``all`` (default): the network trains on every series of the training part, as the rockets do. The
    ``series`` dataset always holds ``data.val_fraction`` (> 0) of its file out for validation, so the
    benchmark builds the bundle itself with cnnkit's own functions (``read_series``, ``SeriesLayout.fit``
    with the recipe's data options, ``prepare_series``, as the dataset does) and hands it to
    ``cnnkit.train.trainer.Trainer`` (as benchmarks/segmentation_peers.py does); its "validation" split
    is the training part itself and ``train.eval_every=0`` validates once, after the last epoch (a
    number that chooses nothing: the training accuracy). The held-out part is scored with
    ``cnnkit eval RUN --data <NAME>_held.ts --checkpoint last --format json``.
  - ``recipe``: ``cnnkit.api.train(cfg)`` as a user runs the recipe: the dataset holds the recipe's
    ``data.val_fraction`` of the training part out (stratified, ``data.split_seed``), validates every
    epoch and keeps the best checkpoint on it; ``cnnkit eval RUN --data <NAME>_held.ts --checkpoint best``.

  ``--budget-s S``: instead of the recipe's epochs, each model gets S seconds per set: a 2-epoch probe
  (not counted in the fit time) measures the epochs' seconds, and the run gets ``1 + floor((S - first) /
  later)`` epochs (``peer_harness.fill_epochs``). ``--epochs`` wins over ``--budget-s``.
* Times: ``fit (s)`` is the wall-clock of the fit call (cnnkit: data preparation, model build, training,
  per-epoch checkpoint writes and the one final validation; rockets: transform + ridge), ``s/ep`` the
  median of cnnkit's ``epoch_time_s``; ``CPU`` is this process's CPU time over the same call (on a
  shared machine the wall-clock depends on the others' load, the CPU time much less). Every contender runs
  in this one process with ``--threads`` torch threads (and the same ``n_jobs`` for aeon's numba
  kernels), one after the other. The default is 1 thread: on the 2-core machine these numbers come from,
  shared with other jobs, 2 torch threads made the small convolutions of these networks 2-7x *slower*
  whenever the other core was busy (a thread waits for its descheduled partner at every op); with 1
  thread the CPU time is close to the wall-clock on an idle core. A first training of each model (1
  epoch, on the first set) runs before any timing, like the rockets' numba warm-up.
* Published accuracies (``IT pub``): InceptionTime (the ensemble of 5), Ismail Fawaz et al. 2020, as the
  authors' repository github.com/hfawaz/InceptionTime reports them on the *official TEST sets* with the
  *whole* TRAIN set: results-InceptionTime-128.csv (UCR 2018 archive) for the six univariate sets and
  results-mts.csv (their multivariate runs, not in the paper) for BasicMotions and JapaneseVowels (marked
  ``*``). Not comparable with our held-out parts (fewer training series, other evaluation series); a
  yardstick only. FCN / ResNet figures (Wang et al. 2017) are left out: I could not check them against
  the paper's table, and four of the sets are not in its 44/85-set archive.

Network: this process records every connection or name lookup it tries (``sys.addaudithook``).

    python benchmarks/ucr.py [--sets GunPoint,...] [--models fcn1d,inception_time] [--rockets minirocket,rocket]
        [--epochs N | --budget-s S] [--seeds 0,1] [--held 0.3] [--threads 2] [--cnnkit-fit all|recipe]
        [--ensemble 1] [--set KEY=VALUE ...] [--workdir DIR] [--out results.json] [--quick]

``--quick``: a smoke test (< 60 s once numba's cache is warm): GunPoint and BasicMotions, 2 epochs,
MiniRocket only.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import re
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

from peer_harness import fill_epochs, machine_note, watch_network, write_result  # noqa: E402  (benchmarks/)

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = (REPO / ".." / "shared" / "data" / "ucr").resolve()
SETS = ["GunPoint", "ItalyPowerDemand", "ArrowHead", "OSULeaf", "ACSF1", "BasicMotions", "JapaneseVowels",
        "PickupGestureWiimoteZ"]
RECIPES = {"fcn1d": REPO / "configs" / "ucr_fcn.yaml", "inception_time": REPO / "configs" / "ucr_inceptiontime.yaml"}
ROCKETS = {"minirocket": "MiniRocket", "rocket": "ROCKET"}
BASELINE = "minirocket"
TEST_FILE = re.compile(r"_TEST\.(ts|arff|csv|tsv|txt|npz|npy|zip)$", re.IGNORECASE)  # a data set's TEST part
# InceptionTime (ensemble of 5) on the official TEST sets, from github.com/hfawaz/InceptionTime:
# results-InceptionTime-128.csv (UCRArchive_2018, column accuracy) and results-mts.csv (*).
PUBLISHED_IT = {"GunPoint": (1.0, ""), "ItalyPowerDemand": (0.9650, ""), "ArrowHead": (0.8457, ""),
                "OSULeaf": (0.9421, ""), "ACSF1": (0.9200, ""), "PickupGestureWiimoteZ": (0.7600, ""),
                "BasicMotions": (1.0, "*"), "JapaneseVowels": (0.9919, "*")}


# --------------------------------------------------------------------------- no TEST file, ever

def guard_test_files() -> list[str]:
    """Record every file this process opens whose name holds ``_TEST`` (there must be none)."""
    opened: list[str] = []

    def hook(event: str, args: tuple) -> None:
        if event == "open" and args and isinstance(args[0], (str, bytes, os.PathLike)):
            name = os.fsdecode(args[0]) if not isinstance(args[0], str) else args[0]
            if TEST_FILE.search(os.path.basename(name)):
                opened.append(name)

    sys.addaudithook(hook)
    return opened


def train_file(data: Path, name: str) -> Path:
    path = data / f"{name}_TRAIN.ts"
    if "_TEST" in path.name.upper():
        raise SystemExit(f"refusing {path}: TEST files are never read")
    if not path.is_file():
        raise SystemExit(f"{path} does not exist")
    return path


# --------------------------------------------------------------------------- the split

def data_lines(path: Path) -> tuple[list[str], list[str]]:
    """(header and comment lines up to and including '@data', the non-empty data lines), as in the file."""
    head, body, in_data = [], [], False
    for line in path.read_text(encoding="utf-8").splitlines(keepends=True):
        if in_data:
            if line.strip():
                body.append(line if line.endswith("\n") else line + "\n")
        else:
            head.append(line if line.endswith("\n") else line + "\n")
            if line.strip().lower().startswith("@data"):
                in_data = True
    return head, body


def stratified_held(targets: list[int], frac: float, rng) -> list[int]:
    """Indices held out: of each class c (n_c series) min(n_c - 1, max(1, round(frac n_c))), by ``rng``."""
    import numpy as np

    t = np.asarray(targets)
    held = []
    for c in sorted(set(targets)):
        idx = np.flatnonzero(t == c)
        if len(idx) < 2:
            raise SystemExit(f"class {c} has {len(idx)} series; a split needs two")
        k = min(len(idx) - 1, max(1, int(round(frac * len(idx)))))
        held += rng.permutation(idx)[:k].tolist()
    return sorted(held)


def make_split(path: Path, name: str, set_index: int, seed: int, frac: float, out: Path) -> dict[str, Any]:
    import numpy as np

    from cnnkit.data.timeseries import read_series

    data = read_series(path)
    head, body = data_lines(path)
    if len(body) != len(data):
        raise SystemExit(f"{path}: {len(body)} data lines but {len(data)} series read")
    held = stratified_held(data.targets, frac, np.random.default_rng([seed, set_index]))
    hs = set(held)
    train = [i for i in range(len(data)) if i not in hs]
    out.mkdir(parents=True, exist_ok=True)
    parts = {}
    for part, index in (("train", train), ("held", held)):
        p = out / f"{name}_{part}.ts"
        p.write_text("".join(head) + "".join(body[i] for i in index), encoding="utf-8")
        back = read_series(p)
        assert back.labels == [data.labels[i] for i in index], f"{p} does not read back as written"
        parts[part] = p
    lengths = sorted(set(data.lengths))
    return {"train_path": parts["train"], "held_path": parts["held"], "n_train": len(train), "n_held": len(held),
            "channels": data.channels, "classes": len(data.classes), "lengths": (lengths[0], lengths[-1])}


# --------------------------------------------------------------------------- rockets

def rocket_arrays(split: dict[str, Any], mode: str, data_cfg):
    """(X_train, y_train, X_held, y_held, how): the series as read for one-length sets (``mode`` raw), else the
    arrays cnnkit's networks get: prepared with ``data_cfg``'s options (the FCN recipe's data section:
    z-normalisation, padding with a mask channel or resampling) and a layout fitted on the training part."""
    import numpy as np

    from cnnkit.data.timeseries import SeriesLayout, prepare_series, read_series

    tr, he = read_series(split["train_path"]), read_series(split["held_path"])
    one_length = len(set(tr.lengths) | set(he.lengths)) == 1
    if mode == "raw" and one_length:
        return (np.stack(tr.series), np.asarray(tr.labels), np.stack(he.series), np.asarray(he.labels), "raw")
    d = data_cfg
    layout = SeriesLayout.fit(tr.series, d.unequal_length, d.series_length, d.znorm, d.missing)
    xt = prepare_series(tr.series, layout).numpy().astype(np.float64)
    xh = prepare_series(he.series, layout).numpy().astype(np.float64)
    how = ("z-normalised, " if layout.znorm else "") + (f"zero-padded to {layout.length}" if layout.mode == "pad"
                                                         else f"resampled to {layout.length}")
    how += " + mask channel" if layout.mask else ""
    return xt, np.asarray(tr.labels), xh, np.asarray(he.labels), how


def rocket_class(kind: str):
    from aeon.classification.convolution_based import MiniRocketClassifier, RocketClassifier

    return {"minirocket": MiniRocketClassifier, "rocket": RocketClassifier}[kind]


def warm_rockets(kinds: list[str], threads: int) -> dict[str, float]:
    """Fit each rocket once on tiny random sets (1 and 3 channels): numba's compile, outside the timings."""
    import numpy as np

    rng = np.random.default_rng(0)
    out = {}
    for kind in kinds:
        t0 = time.perf_counter()
        for c in (1, 3):
            x, y = rng.normal(size=(8, c, 40)), np.array(["a", "b"] * 4)
            rocket_class(kind)(n_jobs=threads, random_state=0).fit(x, y).predict(x)
        out[kind] = time.perf_counter() - t0
    return out


def run_rocket(kind: str, arrays, seed: int, threads: int) -> dict[str, Any]:
    xt, yt, xh, yh, how = arrays
    clf = rocket_class(kind)(n_jobs=threads, random_state=seed)
    t0, c0 = time.perf_counter(), time.process_time()
    clf.fit(xt, yt)
    fit_s, cpu_s = time.perf_counter() - t0, time.process_time() - c0
    t0 = time.perf_counter()
    pred = clf.predict(xh)
    return {"accuracy": float((pred == yh).mean()), "fit_s": fit_s, "cpu_s": cpu_s, "predict_s": time.perf_counter() - t0,
            "input": how, "n_held": int(len(yh))}


# --------------------------------------------------------------------------- cnnkit

def recipe_for(model: str) -> Path:
    return RECIPES.get(model, RECIPES["fcn1d"])


def cnnkit_config(args, model: str, split: dict[str, Any], seed: int, runs: Path, epochs: int | None):
    from cnnkit.config import load_config

    over = [f"data.path={split['train_path']}", "train.device=cpu", f"train.seed={seed}", f"train.runs_dir={runs}"]
    if model not in RECIPES:
        over += [f"model.name={model}", "model.options={}"]
    if model == "inception_time" and args.ensemble != 1:
        over.append(f"model.options.ensemble={args.ensemble}")
    if args.cnnkit_fit == "all":
        over.append("train.eval_every=0")
    if epochs is not None:
        over.append(f"train.epochs={epochs}")
    return load_config(recipe_for(model), over + list(args.set or []))


def whole_part_bundle(cfg):
    """All series of the training part as cnnkit's ``series`` dataset prepares them; val = the same series."""
    from cnnkit.data.base import DataBundle
    from cnnkit.data.timeseries import SeriesLayout, SeriesTensors, prepare_series, read_series

    d = cfg.data
    data = read_series(d.path, label_column=d.label_column)
    layout = SeriesLayout.fit(data.series, d.unequal_length, d.series_length, d.znorm, d.missing)
    train = SeriesTensors(prepare_series(data.series, layout, str(d.path)), data.targets, data.lengths)
    return DataBundle(train=train, val=train, test=None, classes=list(data.classes), input_shape=layout.input_shape,
                      mean=(0.0,), std=(1.0,), description=f"series {d.path}: all {len(data)} (val = the same)",
                      extra={"task": "timeseries", "series_layout": layout.to_dict()})


def fit_cnnkit(cfg, mode: str):
    if mode == "all":
        from cnnkit.train.trainer import Trainer

        return Trainer(cfg, quiet=True, bundle=whole_part_bundle(cfg)).fit()
    from cnnkit.api import train

    return train(cfg, quiet=True)


def cnnkit_eval(run_dir: Path, held: Path, checkpoint: str) -> dict[str, Any]:
    from cnnkit.cli import main as cli

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = cli(["eval", str(run_dir), "--data", str(held), "--checkpoint", checkpoint, "--format", "json"])
    if code != 0:
        raise RuntimeError(f"cnnkit eval {run_dir} failed ({code}): {buf.getvalue()[-500:]}")
    return json.loads(buf.getvalue())


def run_cnnkit(args, model: str, split: dict[str, Any], seed: int, work: Path) -> dict[str, Any]:
    runs = work / "runs" / model
    epochs, probe = args.epochs, None
    if epochs is None and args.budget_s:
        cfg = cnnkit_config(args, model, split, seed, work / "probe", args.probe_epochs)
        t0 = time.perf_counter()
        res = fit_cnnkit(cfg, args.cnnkit_fit)
        probe = {"pass_s": [h["epoch_time_s"] for h in res.history], "process_s": time.perf_counter() - t0}
        epochs, _, _ = fill_epochs(probe, args.budget_s)
    cfg = cnnkit_config(args, model, split, seed, runs, epochs)
    t0, c0 = time.perf_counter(), time.process_time()
    res = fit_cnnkit(cfg, args.cnnkit_fit)
    fit_s, cpu_s = time.perf_counter() - t0, time.process_time() - c0
    ev = cnnkit_eval(Path(res.run_dir), split["held_path"], "last" if args.cnnkit_fit == "all" else "best")
    times = [h["epoch_time_s"] for h in res.history]
    return {"accuracy": ev["accuracy"], "loss": ev.get("loss"), "n_held": ev["n"], "fit_s": fit_s, "cpu_s": cpu_s,
            "train_s": res.final.get("train_time_s"), "epochs": len(times), "epoch_s": statistics.median(times),
            "run_dir": str(res.run_dir), "checkpoint": ev.get("checkpoint"), "probe": probe,
            "final_val_accuracy": res.final.get("val_accuracy"),
            "recipe": str(recipe_for(model).relative_to(REPO)), "batch_size": cfg.data.batch_size,
            "lr": cfg.optim.lr}


# --------------------------------------------------------------------------- the report

def fmt(v, spec=".3f", none="-"):
    return none if v is None else format(v, spec)


def mean(xs):
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


def report(args, contenders: list[str], results: dict, splits: dict, labels: dict[str, str], warm: dict,
           total: float, tried: list[str], test_opened: list[str]) -> None:
    seeds = args.seeds
    acc = {(s, c): mean([results[seed][s][c]["accuracy"] for seed in seeds]) for s in args.sets for c in contenders}
    fit = {(s, c): mean([results[seed][s][c]["fit_s"] for seed in seeds]) for s in args.sets for c in contenders}
    ep = {(s, c): mean([results[seed][s][c].get("epoch_s") for seed in seeds]) for s in args.sets for c in contenders}
    w = max(len(s) for s in args.sets + ["mean"]) + 1
    cw = max(9, *(len(labels[c]) + 1 for c in contenders))
    print()
    print(f"held-out accuracy (mean over seed{'s' if len(seeds) > 1 else ''} {','.join(map(str, seeds))}; "
          f"split {args.held:.0%} of each class of the TRAIN file)")
    print(f"{'set':<{w}}{'train/held':>11}{'C x L':>11}" + "".join(f"{labels[c]:>{cw}}" for c in contenders)
          + f"{'IT pub':>8}")
    for s in args.sets:
        sp = splits[seeds[0]][s]
        lo, hi = sp["lengths"]
        shape = f"{sp['channels']}x{lo}" + (f"-{hi}" if hi != lo else "")
        pub = PUBLISHED_IT.get(s)
        print(f"{s:<{w}}{sp['n_train']:>6}/{sp['n_held']:<4}{shape:>11}" +
              "".join(f"{fmt(acc[s, c]):>{cw}}" for c in contenders) +
              f"{(fmt(pub[0]) + pub[1]) if pub else '-':>8}")
    means = {c: mean([acc[s, c] for s in args.sets]) for c in contenders}
    pubs = [PUBLISHED_IT[s][0] for s in args.sets if s in PUBLISHED_IT]
    print(f"{'mean':<{w}}{'':>22}" + "".join(f"{fmt(means[c]):>{cw}}" for c in contenders)
          + f"{fmt(mean(pubs)) if len(pubs) == len(args.sets) else '-':>8}")
    print("IT pub: published InceptionTime (5-network ensemble) accuracy on the official TEST set with the whole "
          "TRAIN set\n  (hfawaz/InceptionTime results-InceptionTime-128.csv; * results-mts.csv): a yardstick, not "
          "the same evaluation")
    print()
    cpu = {(s, c): mean([results[seed][s][c]["cpu_s"] for seed in seeds]) for s in args.sets for c in contenders}
    print("fit seconds: wall-clock / CPU (this process's CPU time); cnnkit also s per epoch (wall) x epochs")
    fw = max(cw, 14)
    cell_w = {c: fw if c in ROCKETS else fw + 12 for c in contenders}
    print(f"{'set':<{w}}" + "".join(f"{labels[c]:>{cell_w[c]}}" for c in contenders))
    for s in args.sets:
        cells = []
        for c in contenders:
            text = f"{fmt(fit[s, c], '.1f')}/{fmt(cpu[s, c], '.1f')}"
            if c not in ROCKETS:
                text += f" ({fmt(ep[s, c], '.2f')}x{results[seeds[0]][s][c]['epochs']})"
            cells.append(f"{text:>{cell_w[c]}}")
        print(f"{s:<{w}}" + "".join(cells))
    tot = {c: sum(fit[s, c] for s in args.sets) for c in contenders}
    tot_cpu = {c: sum(cpu[s, c] for s in args.sets) for c in contenders}
    print(f"{'total':<{w}}" + "".join(f"{fmt(tot[c], '.1f') + '/' + fmt(tot_cpu[c], '.1f'):>{cell_w[c]}}"
                                      for c in contenders))
    if BASELINE in contenders:
        print()
        print(f"against {labels[BASELINE]} (same split, same series):")
        for c in contenders:
            if c == BASELINE:
                continue
            ratios = [acc[s, c] / acc[s, BASELINE] for s in args.sets if acc[s, BASELINE]]
            geo = math.exp(sum(math.log(max(r, 1e-9)) for r in ratios) / len(ratios)) if ratios else None
            wins = sum(acc[s, c] > acc[s, BASELINE] + 1e-9 for s in args.sets)
            ties = sum(abs(acc[s, c] - acc[s, BASELINE]) <= 1e-9 for s in args.sets)
            losses = len(args.sets) - wins - ties
            print(f"  {labels[c]:<{cw}} mean accuracy ratio {fmt(means[c] / means[BASELINE] if means[BASELINE] else None)}"
                  f"  geometric mean of per-set ratios {fmt(geo)}  wins/ties/losses {wins}/{ties}/{losses}"
                  f"  fit time x{fmt(tot[c] / tot[BASELINE] if tot[BASELINE] else None, '.0f')} (CPU "
                  f"x{fmt(tot_cpu[c] / tot_cpu[BASELINE] if tot_cpu[BASELINE] else None, '.0f')})")
    print()
    bits = []
    for c in contenders:
        r = results[seeds[0]][args.sets[0]][c]
        if c in ROCKETS:
            bits.append(f"{labels[c]}: aeon defaults (10,000 kernels, RidgeClassifierCV), numba warm-up "
                        f"{warm.get(c, 0):.1f} s outside the timings")
        else:
            bits.append(f"{labels[c]}: {r['recipe']} (batch {r['batch_size']}, lr {r['lr']}, "
                        f"{'budget ' + str(args.budget_s) + ' s' if args.budget_s and args.epochs is None else str(r['epochs']) + ' epochs'}"
                        f", fit on {'every training-part series, eval --checkpoint last' if args.cnnkit_fit == 'all' else 'the recipe split, eval --checkpoint best'})")
    for b in bits:
        print("  " + b)
    if "cnnkit" in warm:
        print(f"  cnnkit warm-up (1 epoch of each model on {args.sets[0]}, outside the timings): {warm['cnnkit']:.1f} s")
    var = [s for s in args.sets if splits[seeds[0]][s]["lengths"][0] != splits[seeds[0]][s]["lengths"][1]]
    for s in var:
        how = results[seeds[0]][s].get(BASELINE, results[seeds[0]][s].get("rocket", {})).get("input")
        if how:
            print(f"  {s}: variable length; rockets given cnnkit's arrays ({how})")
    print(f"  machine: {machine_note(args)}")
    print(f"  network: {'none tried' if not tried else 'TRIED: ' + '; '.join(tried[:5])}")
    print(f"  TEST files opened: {'none' if not test_opened else 'YES: ' + ', '.join(test_opened[:5])}")
    print(f"  whole benchmark {total / 60:.1f} min; work folder {args.workdir}")


# --------------------------------------------------------------------------- main

def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data", default=str(DEFAULT_DATA), help="folder of the NAME_TRAIN.ts files")
    p.add_argument("--sets", default=",".join(SETS))
    p.add_argument("--models", default="fcn1d,inception_time", help="cnnkit time-series models ('' for none)")
    p.add_argument("--rockets", default="minirocket,rocket", help="minirocket, rocket ('' for none)")
    p.add_argument("--epochs", type=int, help="override the recipes' train.epochs")
    p.add_argument("--budget-s", type=float, help="seconds per cnnkit model per set (2-epoch probe first)")
    p.add_argument("--probe-epochs", type=int, default=2)
    p.add_argument("--seeds", default="0")
    p.add_argument("--held", type=float, default=0.3, help="fraction of each class held out")
    p.add_argument("--threads", type=int, default=1, help="torch threads and aeon n_jobs (see the docstring)")
    p.add_argument("--cnnkit-fit", choices=["all", "recipe"], default="all")
    p.add_argument("--rocket-input", choices=["raw", "cnnkit"], default="raw")
    p.add_argument("--ensemble", type=int, default=1, help="inception_time's model.options.ensemble")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="a config override for every cnnkit model")
    p.add_argument("--workdir")
    p.add_argument("--out", help="write the results as JSON here")
    p.add_argument("--quick", action="store_true", help="smoke test: GunPoint + BasicMotions, 2 epochs, MiniRocket")
    args = p.parse_args(argv)
    if args.quick:
        args.sets, args.epochs, args.rockets = "GunPoint,BasicMotions", args.epochs or 2, "minirocket"
    args.sets = [s for s in args.sets.split(",") if s]
    args.models = [m for m in args.models.split(",") if m]
    args.rockets = [r for r in args.rockets.split(",") if r]
    args.seeds = [int(s) for s in args.seeds.split(",") if s]
    unknown = [r for r in args.rockets if r not in ROCKETS]
    if unknown:
        p.error(f"--rockets: {unknown} (allowed: {', '.join(ROCKETS)})")
    if not 0 < args.held < 1:
        p.error("--held is a fraction in (0, 1)")
    return args


def main(argv=None) -> int:
    tried = watch_network()
    test_opened = guard_test_files()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args = parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    t_start = time.perf_counter()
    args.workdir = args.workdir or tempfile.mkdtemp(prefix="ucr_bench_")
    work = Path(args.workdir)
    data = Path(args.data)
    files = {s: train_file(data, s) for s in args.sets}
    contenders = args.rockets + args.models
    labels = {**{k: v for k, v in ROCKETS.items()}, **{m: m + (f"x{args.ensemble}" if m == "inception_time"
                                                                  and args.ensemble != 1 else "") for m in args.models}}
    warm = warm_rockets(args.rockets, args.threads) if args.rockets else {}
    from cnnkit.config import load_config

    rocket_data = load_config(RECIPES["fcn1d"], list(args.set or [])).data  # how padded sets are prepared
    results: dict[int, dict[str, dict[str, Any]]] = {}
    warm_nets: dict[str, float] = {}
    splits: dict[int, dict[str, Any]] = {}
    for seed in args.seeds:
        results[seed], splits[seed] = {}, {}
        for s in args.sets:
            idx = SETS.index(s) if s in SETS else 100 + sum(map(ord, s))
            sp = make_split(files[s], s, idx, seed, args.held, work / f"seed{seed}")
            splits[seed][s] = sp
            results[seed][s] = {}
            arrays = rocket_arrays(sp, args.rocket_input, rocket_data) if args.rockets else None
            if not warm_nets and args.models:  # torch's and cnnkit's first-use costs, outside the timings
                t0 = time.perf_counter()
                for m in args.models:
                    fit_cnnkit(cnnkit_config(args, m, sp, seed, work / "warmup", 1), args.cnnkit_fit)
                warm_nets["s"] = time.perf_counter() - t0
            for c in contenders:
                t0 = time.perf_counter()
                r = run_rocket(c, arrays, seed, args.threads) if c in ROCKETS else run_cnnkit(args, c, sp, seed, work)
                results[seed][s][c] = r
                extra = f", {r['epochs']} ep x {r['epoch_s']:.2f} s" if c not in ROCKETS else ""
                print(f"seed {seed} {s:<22} {labels[c]:<15} acc {r['accuracy']:.3f}  fit {r['fit_s']:.1f} s "
                      f"(CPU {r['cpu_s']:.1f} s){extra}"
                      f"  ({time.perf_counter() - t0:.0f} s)", flush=True)
    total = time.perf_counter() - t_start
    if warm_nets:
        warm["cnnkit"] = warm_nets["s"]
    report(args, contenders, results, splits, labels, warm, total, tried, test_opened)
    if args.out:
        payload = {"args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                   "machine": machine_note(args), "network": tried, "test_files_opened": test_opened,
                   "total_s": total, "rocket_warmup_s": warm,
                   "published_inceptiontime": {s: PUBLISHED_IT[s][0] for s in args.sets if s in PUBLISHED_IT},
                   "splits": {str(seed): {s: {k: (str(v) if isinstance(v, Path) else v) for k, v in sp.items()}
                                          for s, sp in d.items()} for seed, d in splits.items()},
                   "results": {str(seed): d for seed, d in results.items()}}
        write_result(args.out, payload)
        print(f"  results: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
