"""cnnkit's forecasters against naive, seasonal-naive and statsmodels' ETS on statsmodels' bundled series,
all scored on the same validation windows with the same code.

* Series (``--sets``, default ``sunspots,co2,elnino``), read offline from statsmodels:

  ==========  ===========================================  ======  ========  =======
  set         what cnnkit reads (data.path)                season  lookback  horizon
  ==========  ===========================================  ======  ========  =======
  sunspots    statsmodels:sunspots (yearly, 309 steps)     11      33        11
  co2         monthly means of statsmodels' weekly co2     12      60        12
              (``--co2 monthly``, default: a CSV written to
              the work folder, 526 months, 5 of them
              without any week: left empty, interpolated)
              or statsmodels:co2 weekly (``--co2 weekly``,
              2284 weeks, 59 missing)                      52      156       13
  elnino      statsmodels:elnino (monthly, 732 steps)      12      36        12
  nile        statsmodels:nile (yearly, 100 steps)         none    20        5
  ==========  ===========================================  ======  ========  =======

  co2 is resampled to months by default: a weekly "season" of 52 steps drifts by 1.25 days a year
  (52.18 weeks), so the seasonal-naive forecast and a seasonal ETS compare a little wrong, and 2284 steps
  with a 156-step lookback make every contender slower for nothing the comparison needs.
* The split is cnnkit's own (``data.val_fraction``, the recipe's 0.2): the last 20% of the steps
  validate. Validation windows are cnnkit's (``cnnkit.data.timeseries.forecast.window_starts``): every
  forecast origin ``o`` (the first step predicted) from the start of the validation part to the last
  that leaves ``horizon`` steps, stride 1; the window's targets lie wholly in the validation part, its
  history may reach back into the training part.
* cnnkit: configs/forecast_tcn.yaml (``--models tcn``; any other time-series model, e.g. ``fcn1d``,
  ``resnet1d``, uses the same recipe with ``model.name`` replaced and no options) with the set's
  ``data.path``, ``data.season``, ``data.lookback``, ``data.horizon``, ``train.device=cpu``,
  ``train.seed`` (``--seeds``) and ``train.eval_every=0``: the validation windows are scored once, after
  the last epoch, so no checkpoint is chosen on them (the forecast task would otherwise keep the epoch
  of the best ``val_mae``, chosen on the very windows it is scored on). Its MAE / RMSE / sMAPE / MASE
  and the naive and seasonal-naive ones are read from the run's final.json (``val_*``,
  ``val_naive_*``, ``val_snaive_*``). ``cnnkit eval RUN --checkpoint last --format json`` is run as a
  cross-check (it must agree).
* Per-window normalisation (``data.window_norm``: none, last, mean) is a recipe setting like any other:
  ``--set data.window_norm=none`` measures the recipe without it.
* naive / seasonal naive: cnnkit's own (final.json). The benchmark recomputes both itself on the windows
  it cuts (``cnnkit.tasks.forecast.naive_forecast`` / ``seasonal_naive_forecast``) as a check that its
  windows are cnnkit's: the report prints the largest relative difference.
* ETS: ``statsmodels.tsa.exponential_smoothing.ets.ETSModel``, additive errors, fitted (maximum
  likelihood) on the training part only; the form is chosen on the training part by AICc among: no
  trend / additive damped trend, times no season / additive season (when the set has a season). Then,
  refit-free: the *full* series is re-filtered with the fitted parameters held fixed (``ETSModel(full,
  same form).smooth(fit.params)``: the same smoothing parameters and initial states, the states updated
  over the known values), and for each validation origin ``o`` the ``horizon`` steps are forecast from
  the state after step ``o - 1`` (``.predict(start=o, end=o + horizon - 1, dynamic=0)``: from ``o`` on,
  the model's own forecasts, no value at or after ``o`` is used). (Checked: at ``o`` = the end of the
  training part this equals ``fit.forecast(horizon)``, and at any ``o`` it equals re-smoothing
  ``y[:o]`` with the same parameters and forecasting.) The series ETS sees is the one cnnkit trains on
  (cnnkit's reader and missing-value filling).
* Every measure is cnnkit's (``cnnkit.tasks.forecast.error_sums`` / ``measures``): MAE, RMSE, sMAPE in %
  and MASE = MAE / the in-sample MAE of the (seasonal) naive forecast on the training part at lag
  ``season`` (1 without one), ``cnnkit.tasks.forecast.mase_scale``, the same scale for every contender
  (and equal to the run's ``forecast_layout.mase_scale``: checked).

The goal (the issue's): cnnkit's MASE below seasonal naive's and below ETS's on each set.

Network: this process records every connection or name lookup it tries (``sys.addaudithook``).

    python benchmarks/forecast.py [--sets sunspots,co2,elnino] [--models tcn] [--epochs N] [--seeds 0,1]
        [--threads 1] [--co2 monthly|weekly] [--set KEY=VALUE ...] [--workdir DIR] [--out results.json] [--quick]
        [--tune]

``--quick``: a smoke test (well under a minute): sunspots only, 2 epochs. ``--tune``: every series cut
to its training part (a CSV in the work folder), so that the windows scored while tuning the recipe are
the end of the training part, never the windows the benchmark reports.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

from peer_harness import machine_note, watch_network, write_result  # noqa: E402  (benchmarks/)

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "configs" / "forecast_tcn.yaml"
# set: (data.path or None when the benchmark writes it, season, lookback, horizon)
SETS: dict[str, tuple[str | None, int | None, int, int]] = {
    "sunspots": ("statsmodels:sunspots", 11, 33, 11),
    "co2": (None, 12, 60, 12),  # monthly (default); weekly: see CO2_WEEKLY
    "elnino": ("statsmodels:elnino", 12, 36, 12),
    "nile": ("statsmodels:nile", None, 20, 5),
}
CO2_WEEKLY = ("statsmodels:co2", 52, 156, 13)
MEASURES = ("mae", "rmse", "smape", "mase")


# --------------------------------------------------------------------------- the series

def co2_monthly_csv(work: Path) -> Path:
    """statsmodels' weekly co2 as monthly means (a month without any week stays empty: missing)."""
    import statsmodels.datasets.co2 as co2

    monthly = co2.load_pandas().data["co2"].resample("MS").mean()
    path = work / "co2_monthly.csv"
    lines = ["month,co2"] + [f"{t:%Y-%m},{'' if v != v else f'{v:.4f}'}" for t, v in monthly.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def set_spec(name: str, args, work: Path) -> dict[str, Any]:
    if name not in SETS:
        raise SystemExit(f"--sets: {name!r} is not one of {', '.join(SETS)}")
    path, season, lookback, horizon = SETS[name]
    if name == "co2":
        if args.co2 == "weekly":
            path, season, lookback, horizon = CO2_WEEKLY
        else:
            path = str(co2_monthly_csv(work))
    if args.tune:
        path = str(training_part_csv(path, name, args.val_fraction, work))
    return {"path": path, "season": season, "lookback": lookback, "horizon": horizon}


def training_part_csv(path: str, name: str, val_fraction: float, work: Path) -> Path:
    """``--tune``: the series cut to its training part (the steps before the last ``val_fraction``), as a CSV,
    so that tuning validates on the end of the training part and never sees the benchmark's windows."""
    from cnnkit.data.timeseries.forecast import read_forecast

    frame = read_forecast(path)
    n = len(frame.values)
    keep = n - int(round(val_fraction * n))
    out = work / f"{name}_training_part.csv"
    times = frame.times or [str(i) for i in range(n)]
    rows = ["time," + ",".join(frame.columns)]
    rows += [times[i] + "," + ",".join("" if v != v else repr(float(v)) for v in frame.values[i]) for i in range(keep)]
    out.write_text("\n".join(rows) + "\n")
    return out


def series_as_cnnkit_reads(cfg) -> tuple[Any, list[str]]:
    """The target series (steps,) exactly as cnnkit's forecast dataset reads and fills it."""
    from cnnkit.data.timeseries.forecast import fill_frame, read_forecast

    d = cfg.data
    frame = read_forecast(d.path, d.time_column, d.value_columns)
    values = fill_frame(frame, d.missing)
    targets = list(d.target_columns) if d.target_columns else list(frame.columns)
    if len(targets) != 1:
        raise SystemExit(f"{d.path}: the benchmark's ETS is univariate; give one target column (data.target_columns)")
    return values[:, frame.columns.index(targets[0])], targets


def windows(cfg, n: int) -> tuple[int, list[int]]:
    """(training steps, the validation forecast origins), cut as cnnkit cuts them."""
    from cnnkit.data.timeseries.forecast import window_starts

    d = cfg.data
    val_steps = int(round(d.val_fraction * n))
    train_steps = n - val_steps
    _, val_starts = window_starts(n, train_steps, int(d.lookback), int(d.horizon))
    return train_steps, [s + int(d.lookback) for s in val_starts]


# --------------------------------------------------------------------------- ETS

def fit_ets(train, season: int | None) -> tuple[Any, dict[str, Any], list[dict[str, Any]]]:
    from statsmodels.tsa.exponential_smoothing.ets import ETSModel

    forms = []
    for trend in (None, "add"):
        for seasonal in ((None, "add") if season else (None,)):
            forms.append({"error": "add", "trend": trend, "damped_trend": trend is not None, "seasonal": seasonal,
                          "seasonal_periods": season if seasonal else None})
    tried, best = [], None
    for form in forms:
        try:
            fit = ETSModel(train, **form).fit(disp=False, maxiter=2000)
        except Exception as e:  # a form statsmodels cannot fit on this series: skip it, say so
            tried.append({"form": form, "error": str(e)[:200]})
            continue
        tried.append({"form": form, "aicc": float(fit.aicc)})
        if best is None or fit.aicc < best[0].aicc:
            best = (fit, form)
    if best is None:
        raise RuntimeError(f"no ETS form could be fitted: {tried}")
    return best[0], best[1], tried


def ets_forecasts(values, train_steps: int, origins: list[int], horizon: int, season: int | None):
    """(forecasts (N, 1, horizon), the form, the forms tried, fit seconds, forecast seconds)."""
    import numpy as np
    from statsmodels.tsa.exponential_smoothing.ets import ETSModel

    t0 = time.perf_counter()
    fit, form, tried = fit_ets(values[:train_steps], season)
    fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    full = ETSModel(values, **form).smooth(fit.params)
    out = np.stack([np.asarray(full.predict(start=o, end=o + horizon - 1, dynamic=0), dtype=np.float64)
                    for o in origins])
    check = float(np.max(np.abs(out[0] - np.asarray(fit.forecast(horizon))))) if origins and origins[0] == train_steps \
        else None
    return out[:, None, :], form, tried, fit_s, time.perf_counter() - t0, check


def form_name(form: dict[str, Any]) -> str:
    t = "Ad" if form["trend"] else "N"
    s = f"A{form['seasonal_periods']}" if form["seasonal"] else "N"
    return f"ETS(A,{t},{s})"


# --------------------------------------------------------------------------- cnnkit

def cnnkit_config(args, model: str, spec: dict[str, Any], seed: int, runs: Path):
    from cnnkit.config import load_config

    over = [f"data.path={spec['path']}", f"data.season={spec['season'] if spec['season'] else 'null'}",
            f"data.lookback={spec['lookback']}", f"data.horizon={spec['horizon']}", "train.device=cpu",
            f"train.seed={seed}", f"train.runs_dir={runs}", "train.eval_every=0"]
    if model != "tcn":
        over += [f"model.name={model}", "model.options={}"]
    if args.epochs is not None:
        over.append(f"train.epochs={args.epochs}")
    return load_config(RECIPE, over + list(args.set or []))


def cnnkit_eval(run_dir: str) -> dict[str, Any]:
    from cnnkit.cli import main as cli

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = cli(["eval", run_dir, "--checkpoint", "last", "--format", "json"])
    if code != 0:
        raise RuntimeError(f"cnnkit eval {run_dir} failed ({code})")
    return json.loads(buf.getvalue())


def run_cnnkit(args, model: str, spec: dict[str, Any], seed: int, work: Path) -> dict[str, Any]:
    from cnnkit.api import train

    cfg = cnnkit_config(args, model, spec, seed, work / "runs" / model)
    t0 = time.perf_counter()
    res = train(cfg, quiet=True)
    fit_s = time.perf_counter() - t0
    f = res.final
    ev = cnnkit_eval(str(res.run_dir))
    times = [h["epoch_time_s"] for h in res.history]
    return {"model": {m: f.get(f"val_{m}") for m in MEASURES},
            "naive": {m: f.get(f"val_naive_{m}") for m in MEASURES},
            "snaive": {m: f.get(f"val_snaive_{m}") for m in MEASURES},
            "eval": {m: ev.get(m) for m in MEASURES}, "fit_s": fit_s, "epochs": len(times),
            "epoch_s": statistics.median(times), "run_dir": str(res.run_dir), "cfg": cfg}


# --------------------------------------------------------------------------- one set

def run_set(args, name: str, work: Path) -> dict[str, Any]:
    import numpy as np

    from cnnkit.tasks.forecast import (error_sums, mase_scale, measures, naive_forecast,
                                       seasonal_naive_forecast)

    spec = set_spec(name, args, work)
    out: dict[str, Any] = {"spec": spec, "cnnkit": {}}
    for model in args.models:
        runs = []
        for seed in args.seeds:
            r = run_cnnkit(args, model, spec, seed, work / name)
            runs.append(r)
            print(f"{name:<9} {model:<9} seed {seed}: MASE {r['model']['mase']:.3f} (snaive "
                  f"{r['snaive']['mase'] if r['snaive']['mase'] is None else round(r['snaive']['mase'], 3)}), "
                  f"{r['epochs']} epochs x {r['epoch_s']:.2f} s, fit {r['fit_s']:.1f} s", flush=True)
        out["cnnkit"][model] = runs
    cfg = (next(iter(out["cnnkit"].values()))[0]["cfg"] if args.models
           else cnnkit_config(args, "tcn", spec, 0, work / "unused"))
    values, targets = series_as_cnnkit_reads(cfg)
    horizon, season = int(cfg.data.horizon), cfg.data.season
    train_steps, origins = windows(cfg, len(values))
    truth = np.stack([values[o:o + horizon] for o in origins])[:, None, :]
    hist = np.stack([values[o - int(cfg.data.lookback):o] for o in origins])[:, None, :]
    scale = mase_scale(values[:train_steps], season)
    res: dict[str, dict[str, float]] = {}
    mine = {"naive": naive_forecast(hist, horizon)}
    if season:
        mine["snaive"] = seasonal_naive_forecast(hist, horizon, season)
    for k, f in mine.items():
        res[k + "_check"] = measures(error_sums(truth, f, scale))
    fc, form, tried, ets_fit_s, ets_fc_s, check = ets_forecasts(values, train_steps, origins, horizon, season)
    res["ets"] = measures(error_sums(truth, fc, scale))
    out.update({"n_steps": len(values), "train_steps": train_steps, "n_windows": len(origins), "target": targets[0],
                "mase_scale": float(scale[0]), "ets": res["ets"], "ets_form": form_name(form), "ets_tried": tried,
                "ets_fit_s": ets_fit_s, "ets_forecast_s": ets_fc_s, "ets_origin_check": check,
                "naive_check": res["naive_check"], "snaive_check": res.get("snaive_check")})
    print(f"{name:<9} ETS      {form_name(form)}: MASE {res['ets']['mase']:.3f}, fit {ets_fit_s:.1f} s", flush=True)
    for runs in out["cnnkit"].values():
        for r in runs:
            layout_scale = None
            try:
                meta = json.loads((Path(r["run_dir"]) / "meta.json").read_text())
                layout_scale = (meta.get("extra") or meta).get("forecast_layout", {}).get("mase_scale")
            except (OSError, ValueError, AttributeError):
                pass
            r["layout_mase_scale"] = layout_scale
            r.pop("cfg", None)
    return out


# --------------------------------------------------------------------------- the report

def avg(runs: list[dict[str, Any]], key: str) -> dict[str, float | None]:
    return {m: (statistics.mean(r[key][m] for r in runs) if all(r[key][m] is not None for r in runs) else None)
            for m in MEASURES}


def rel(a: float | None, b: float | None) -> float:
    if a is None or b is None:
        return 0.0 if a is None and b is None else float("inf")
    return abs(a - b) / max(abs(b), 1e-12)


def report(args, results: dict[str, Any], total: float, tried: list[str]) -> None:
    def f(v, spec=".3f"):
        return "-" if v is None else format(v, spec)

    print()
    goal = []
    for name, out in results.items():
        spec = out["spec"]
        first = next(iter(out["cnnkit"].values()))[0] if out["cnnkit"] else None
        print(f"{name}: {out['n_steps']} steps ({out['train_steps']} train), season {spec['season'] or '-'}, lookback "
              f"{spec['lookback']}, horizon {spec['horizon']}; {out['n_windows']} validation windows; MASE scale "
              f"{out['mase_scale']:.4g} (lag {spec['season'] or 1})")
        print(f"  {'contender':<22}{'MAE':>10}{'RMSE':>10}{'sMAPE %':>9}{'MASE':>8}{'/snaive':>9}{'/ETS':>7}{'fit s':>8}")
        rows = []
        for model, runs in out["cnnkit"].items():
            seeds = f" ({len(runs)} seeds)" if len(runs) > 1 else ""
            rows.append((f"cnnkit {model}{seeds}", avg(runs, "model"), statistics.mean(r["fit_s"] for r in runs)))
        base = first or {}
        if first:
            rows.append(("naive (cnnkit)", base["naive"], None))
            if spec["season"]:
                rows.append((f"seasonal naive ({spec['season']})", base["snaive"], None))
        else:
            rows.append(("naive (benchmark)", out["naive_check"], None))
            if out["snaive_check"]:
                rows.append((f"seasonal naive ({spec['season']})", out["snaive_check"], None))
        rows.append((out["ets_form"], out["ets"], out["ets_fit_s"]))
        snaive = base.get("snaive", out.get("snaive_check") or {}).get("mase") if spec["season"] else None
        ets = out["ets"]["mase"]
        for label, m, fit in rows:
            print(f"  {label:<22}{f(m['mae'], '.4g'):>10}{f(m['rmse'], '.4g'):>10}{f(m['smape'], '.2f'):>9}"
                  f"{f(m['mase']):>8}{f(m['mase'] / snaive if snaive and m['mase'] is not None else None, '.2f'):>9}"
                  f"{f(m['mase'] / ets if ets and m['mase'] is not None else None, '.2f'):>7}{f(fit, '.1f'):>8}")
        for model, runs in out["cnnkit"].items():
            m = avg(runs, "model")["mase"]
            ok_s = snaive is None or m < snaive
            ok_e = m < ets
            goal.append((name, model, m, snaive, ets, ok_s and ok_e))
            per_seed = ", ".join(f"{r['model']['mase']:.3f}" for r in runs)
            checks = [f"eval --checkpoint last agrees: {max(rel(r['eval'][k], r['model'][k]) for r in runs for k in MEASURES):.1e} rel",
                      f"{runs[0]['epochs']} epochs x {statistics.mean(r['epoch_s'] for r in runs):.2f} s"]
            if len(runs) > 1:
                checks.insert(0, f"MASE per seed {per_seed}")
            print(f"    {model}: " + "; ".join(checks))
        if first:
            d = max(rel(out["naive_check"][k], first["naive"][k]) for k in MEASURES)
            if out["snaive_check"]:
                d = max(d, max(rel(out["snaive_check"][k], first["snaive"][k]) for k in MEASURES))
            ls = first.get("layout_mase_scale")
            print(f"    windows check: the benchmark's own naive / seasonal naive on its windows vs final.json: largest "
                  f"relative difference {d:.1e}; run's mase_scale {ls[0] if ls else '?'} vs {out['mase_scale']:.6g}")
        if out["ets_origin_check"] is not None:
            print(f"    ETS refit-free check: first origin vs fit.forecast: {out['ets_origin_check']:.1e}; forms by AICc: "
                  + ", ".join(f"{form_name(t['form'])} {t['aicc']:.1f}" if 'aicc' in t else f"{form_name(t['form'])} failed"
                              for t in out["ets_tried"]))
        print()
    if goal:
        print("goal: cnnkit MASE below seasonal naive and below ETS")
        for name, model, m, s, e, ok in goal:
            print(f"  {name:<9} {model:<9} MASE {m:.3f}  snaive {f(s)}  ETS {e:.3f}  -> {'MET' if ok else 'NOT MET'}")
        print()
    print(f"  recipe: {RECIPE.relative_to(REPO)}" + (f" with {' '.join(args.set)}" if args.set else "")
          + (f", epochs {args.epochs}" if args.epochs else ""))
    print(f"  machine: {machine_note(args)}")
    print(f"  network: {'none tried' if not tried else 'TRIED: ' + '; '.join(tried[:5])}")
    print(f"  whole benchmark {total / 60:.1f} min; work folder {args.workdir}")


# --------------------------------------------------------------------------- main

def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--sets", default="sunspots,co2,elnino", help=f"of {', '.join(SETS)}")
    p.add_argument("--models", default="tcn", help="cnnkit forecasters: tcn, fcn1d, resnet1d, ... ('' for none)")
    p.add_argument("--epochs", type=int, help="override the recipe's train.epochs")
    p.add_argument("--seeds", default="0")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--co2", choices=["monthly", "weekly"], default="monthly")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="a config override for every cnnkit model")
    p.add_argument("--workdir")
    p.add_argument("--out")
    p.add_argument("--quick", action="store_true", help="smoke test: sunspots, 2 epochs")
    p.add_argument("--tune", action="store_true", help="tuning mode: every series cut to its training part (the "
                   "windows scored are then the end of the training part, never the benchmark's own)")
    p.add_argument("--val-fraction", type=float, default=0.2, help="the recipe's data.val_fraction (for --tune)")
    args = p.parse_args(argv)
    if args.quick:
        args.sets, args.epochs = "sunspots", args.epochs or 2
    args.sets = [s for s in args.sets.split(",") if s]
    args.models = [m for m in args.models.split(",") if m]
    args.seeds = [int(s) for s in args.seeds.split(",") if s]
    return args


def main(argv=None) -> int:
    tried = watch_network()
    args = parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    t0 = time.perf_counter()
    args.workdir = args.workdir or tempfile.mkdtemp(prefix="forecast_bench_")
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    results = {name: run_set(args, name, work) for name in args.sets}
    total = time.perf_counter() - t0
    report(args, results, total, tried)
    if args.out:
        write_result(args.out, {"args": vars(args), "machine": machine_note(args), "network": tried, "total_s": total,
                                "results": results})
        print(f"  results: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
