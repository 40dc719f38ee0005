"""``cnnkit tune``: grid/random/TPE/GP search on Optuna, resumable, parallel, memory-flat.

Every search here trains a 2-layer net on a slice of scikit-learn's digits for
1-2 epochs. The oracles are the literals the tests write (the grid, the space
file) and the study read back from its storage, never the command's own table.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from cnnkit.tools import tune as tune_mod
from cnnkit.tools.tune import study as study_mod
from cnnkit.cli import main
from cnnkit.config import load_config
from cnnkit.errors import ConfigError

TINY = """\
data: {{name: digits, batch_size: 32, subset: {subset}}}
model: {{layers: [{{conv: {{out: 4, kernel: 3}}}}, relu, flatten, {{dense: 10}}]}}
optim: {{name: adam, lr: 0.01}}
train: {{epochs: {epochs}, device: cpu, runs_dir: {runs}}}
"""


def tiny_config(tmp_path: Path, epochs: int = 1, subset: int = 300) -> Path:
    p = tmp_path / "tiny.yaml"
    p.write_text(TINY.format(epochs=epochs, subset=subset, runs=json.dumps(str(tmp_path / "runs"))))
    return p


def space_file(tmp_path: Path, text: str, name: str = "space.yaml") -> Path:
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


def load_study(tmp_path: Path, study: str):
    storage = JournalStorage(JournalFileBackend(str(tmp_path / "runs" / f"{study}.journal")))
    return optuna.load_study(study_name=study, storage=storage)


def shown(trials, key: str) -> list:
    return [t.params[key] for t in trials]


def real_trials(study, state=None):
    """Trials that trained (surplus claims, which never train, left out)."""
    out = [t for t in study.get_trials() if not t.user_attrs.get("cnnkit_surplus")]
    return [t for t in out if state is None or t.state == state]


def run_config(trial) -> dict:
    return yaml.safe_load((Path(trial.user_attrs["run_dir"]) / "config.yaml").read_text())


# --------------------------------------------------------------------------- grid, table, best.yaml


def test_grid_runs_every_point_once_and_writes_a_runnable_best_yaml(tmp_path, capsys):
    cfg = tiny_config(tmp_path)
    space = space_file(tmp_path, """\
        optim.lr: [0.02, 0.0005]
        data.batch_size: [16, 64]
        """)
    assert main(["tune", str(cfg), "--space", str(space), "--sampler", "grid", "--study", "g"]) == 0
    out = capsys.readouterr().out

    study = load_study(tmp_path, "g")
    done = real_trials(study)
    assert len(done) == 4 and all(t.state == TrialState.COMPLETE for t in done)
    points = {(t.params["optim.lr"], t.params["data.batch_size"]) for t in done}
    assert points == set(itertools.product([0.02, 0.0005], [16, 64]))
    for t in done:
        run = Path(t.user_attrs["run_dir"])
        assert run.parent == tmp_path / "runs" / "g" and f"trial-{t.number:04d}" in run.name
        assert (run / "final.json").exists()
        # The trial really trained with its params.
        c = run_config(t)
        assert (c["optim"]["lr"], c["data"]["batch_size"]) == (t.params["optim.lr"], t.params["data.batch_size"])
        final = json.loads((run / "final.json").read_text())
        assert t.value == pytest.approx(final["val_accuracy"])

    # The table lists every trial, best first.
    table = [ln for ln in out.splitlines() if ln.split()[:2] and ln.split()[0].isdigit() and ln.split()[1] == "complete"]
    best = max(done, key=lambda t: t.value)
    assert len(table) == 4 and table[0].split()[0] == str(best.number)
    assert "run folder" in out and "best config:" in out

    best_yaml = tmp_path / "runs" / "g" / "best.yaml"
    assert str(best_yaml) in out
    loaded = load_config(best_yaml)
    assert loaded.optim.lr == best.params["optim.lr"]
    assert loaded.data.batch_size == best.params["data.batch_size"]
    assert loaded.train.runs_dir == str(tmp_path / "runs") and loaded.train.name is None  # the user's, not a trial's
    capsys.readouterr()
    assert main(["train", str(best_yaml), "--quiet"]) == 0
    assert "held-out accuracy" in capsys.readouterr().out


# --------------------------------------------------------------------------- samplers


SEARCH_SPACE = """\
optim.lr: {low: 1.0e-4, high: 0.1, log: true}
data.batch_size: [16, 32, 64]
"""


def _draws(tmp_path: Path, sampler: str, study: str, seed: int, trials: int = 2) -> list:
    cfg = tiny_config(tmp_path, subset=200)
    space = space_file(tmp_path, SEARCH_SPACE)
    assert main(["tune", str(cfg), "--space", str(space), "--sampler", sampler, "--trials", str(trials),
                 "--seed", str(seed), "--study", study]) == 0
    done = sorted(real_trials(load_study(tmp_path, study)), key=lambda t: t.number)
    assert [t.state for t in done] == [TrialState.COMPLETE] * trials
    for t in done:
        assert 1e-4 <= t.params["optim.lr"] <= 0.1 and t.params["data.batch_size"] in (16, 32, 64)
    return [(t.params["optim.lr"], t.params["data.batch_size"]) for t in done]


@pytest.mark.parametrize("sampler", ["random", "tpe"])
def test_seeded_samplers_are_reproducible(tmp_path, sampler):
    first = _draws(tmp_path, sampler, "a", 7)
    assert _draws(tmp_path, sampler, "b", 7) == first
    if sampler == "random":
        assert _draws(tmp_path, sampler, "c", 8) != first


def test_gp_sampler_searches_the_space(tmp_path):
    assert len(set(_draws(tmp_path, "gp", "gp", 0))) == 2


# --------------------------------------------------------------------------- space validation


@pytest.mark.parametrize("text, sampler, needle", [
    ("optim.lrr: [0.1, 0.01]\n", "tpe", "LOADER"),
    ("optim.lr: 0.1\n", "tpe", "'optim.lr' must be a list of choices"),
    ("optim.lr: {low: 0.1}\n", "tpe", "'optim.lr' must be a list of choices"),
    ("optim.lr: {low: 0.1, high: 0.5, scale: log}\n", "tpe", "{low: 1.0e-4, high: 0.1, log: true}"),
    ("optim.lr: []\n", "tpe", "'optim.lr' is an empty list"),
    ("optim.lr: {low: 0.5, high: 0.1}\n", "tpe", "low (0.5) must be below high (0.1)"),
    ("data.batch_size: [0, 16]\n", "tpe", "data.batch_size"),
    ("optim.lr: {low: 0.001, high: 0.1, log: true}\n", "grid", "range without step"),
    ("[1, 2]\n", "tpe", "must be a mapping"),
])
def test_space_file_mistakes_exit_2_with_one_error_line(tmp_path, capsys, text, sampler, needle):
    cfg = tiny_config(tmp_path)
    space = space_file(tmp_path, text)
    args = ["tune", str(cfg), "--space", str(space), "--sampler", sampler]
    if sampler != "grid":
        args += ["--trials", "2"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")
    if needle == "LOADER":  # the same message the config loader gives for that key
        with pytest.raises(ConfigError) as e:
            load_config(cfg, ["optim.lrr=0.1"])
        assert str(e.value) in err[0] and "did you mean 'lr'" in err[0]
    else:
        assert needle in err[0]
    assert not (tmp_path / "runs").exists()  # checked before any storage or trial


def test_missing_space_file_and_missing_trials_exit_2(tmp_path, capsys):
    cfg = tiny_config(tmp_path)
    assert main(["tune", str(cfg), "--space", str(tmp_path / "nope.yaml"), "--trials", "2"]) == 2
    assert "nope.yaml" in capsys.readouterr().err
    space = space_file(tmp_path, "optim.lr: [0.1, 0.01]\n")
    assert main(["tune", str(cfg), "--space", str(space), "--sampler", "random"]) == 2
    assert "--trials" in capsys.readouterr().err


# --------------------------------------------------------------------------- resume


def test_resume_reaches_the_total_without_duplicates_and_fails_abandoned_trials(tmp_path, capsys, monkeypatch):
    cfg = tiny_config(tmp_path, subset=200)
    space = space_file(tmp_path, "optim.lr: [0.02, 0.01, 0.005, 0.001]\n")
    args = ["tune", str(cfg), "--space", str(space), "--sampler", "grid", "--study", "r"]
    assert main(args + ["--trials", "2"]) == 0
    study = load_study(tmp_path, "r")
    assert len(real_trials(study, TrialState.COMPLETE)) == 2

    # Two processes took the other two grid points and died: one on this host (its pid is gone),
    # one elsewhere (its heartbeat is old).
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    t1, t2 = study.ask(), study.ask()
    t1.set_user_attr("cnnkit_worker", {"host": study_mod._HOST, "pid": dead.pid})
    t2.set_user_attr("cnnkit_worker", {"host": "another-machine", "pid": 1})
    t2.set_user_attr("cnnkit_heartbeat", 0.0)
    abandoned = {t1.number, t2.number}
    monkeypatch.setattr(study_mod, "STALE_AFTER_S", 0.0)  # t2 started "long ago"

    capsys.readouterr()
    assert main(args + ["--trials", "4"]) == 0
    assert "marked failed" in capsys.readouterr().out
    study = load_study(tmp_path, "r")
    complete = real_trials(study, TrialState.COMPLETE)
    assert len(complete) == 4
    assert sorted(shown(complete, "optim.lr")) == [0.001, 0.005, 0.01, 0.02]
    assert {t.number for t in real_trials(study, TrialState.FAIL)} == abandoned
    assert not [t for t in study.get_trials() if t.state in (TrialState.RUNNING, TrialState.WAITING)]

    # A third run with the same total has nothing left to do.
    assert main(args + ["--trials", "4"]) == 0
    assert "already has its 4 trials" in capsys.readouterr().out
    assert len(load_study(tmp_path, "r").get_trials()) == len(study.get_trials())


def test_a_resumed_random_search_draws_new_points(tmp_path):
    cfg = tiny_config(tmp_path, subset=200)
    space = space_file(tmp_path, "optim.lr: {low: 1.0e-4, high: 0.1, log: true}\n")
    args = ["tune", str(cfg), "--space", str(space), "--sampler", "random", "--seed", "3", "--study", "rr"]
    assert main(args + ["--trials", "1"]) == 0
    assert main(args + ["--trials", "2"]) == 0
    lrs = shown(real_trials(load_study(tmp_path, "rr"), TrialState.COMPLETE), "optim.lr")
    assert len(lrs) == 2 and lrs[0] != lrs[1]


def test_a_different_setup_under_the_same_study_name_is_refused(tmp_path, capsys):
    cfg = tiny_config(tmp_path, subset=200)
    space = space_file(tmp_path, "optim.lr: [0.02]\n")
    assert main(["tune", str(cfg), "--space", str(space), "--sampler", "grid", "--study", "s"]) == 0
    capsys.readouterr()
    assert main(["tune", str(cfg), "optim.name=sgd", "--space", str(space), "--sampler", "grid", "--study", "s"]) == 2
    assert "different config" in capsys.readouterr().err


# --------------------------------------------------------------------------- parallel workers


@pytest.mark.slow
def test_two_workers_share_a_grid_and_run_each_point_exactly_once(tmp_path):
    cfg = tiny_config(tmp_path, subset=200)
    space = space_file(tmp_path, """\
        optim.lr: [0.02, 0.005, 0.001]
        data.batch_size: [16, 64]
        """)
    assert main(["tune", str(cfg), "--space", str(space), "--sampler", "grid", "--study", "w",
                 "--workers", "2"]) == 0
    study = load_study(tmp_path, "w")
    complete = real_trials(study, TrialState.COMPLETE)
    points = [(t.params["optim.lr"], t.params["data.batch_size"]) for t in complete]
    assert sorted(points) == sorted(itertools.product([0.02, 0.005, 0.001], [16, 64]))
    assert len(real_trials(study)) == 6
    runs = sorted(p for p in (tmp_path / "runs" / "w").iterdir() if p.is_dir())
    assert len(runs) == 6 and all((p / "final.json").exists() for p in runs)
    assert sorted(Path(t.user_attrs["run_dir"]) for t in complete) == runs
    for t in complete:
        c = run_config(t)
        assert (c["optim"]["lr"], c["data"]["batch_size"]) == (t.params["optim.lr"], t.params["data.batch_size"])


# --------------------------------------------------------------------------- pruning


def test_median_pruning_reports_every_epoch_and_prunes_hopeless_trials(tmp_path):
    cfg = tiny_config(tmp_path, epochs=2, subset=300)
    # Three useful learning rates first (the pruner's startup trials), then two that cannot learn.
    space = space_file(tmp_path, "optim.lr: [0.03, 0.02, 0.01, 1.0e-7, 2.0e-7]\n")
    assert main(["tune", str(cfg), "--space", str(space), "--sampler", "grid", "--study", "p",
                 "--prune", "median"]) == 0
    study = load_study(tmp_path, "p")
    trials = real_trials(study)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    assert len(complete) + len(pruned) == 5
    for t in complete:
        assert sorted(t.intermediate_values) == [1, 2]
        metrics = (Path(t.user_attrs["run_dir"]) / "metrics.jsonl").read_text().splitlines()
        assert [json.loads(m)["val_accuracy"] for m in metrics] == pytest.approx(
            [t.intermediate_values[1], t.intermediate_values[2]])
    assert pruned and {t.params["optim.lr"] for t in pruned} <= {1e-7, 2e-7}
    for t in pruned:
        assert sorted(t.intermediate_values) == [1]  # stopped after the epoch it was pruned at
        assert (Path(t.user_attrs["run_dir"]) / "final.json").exists()


# --------------------------------------------------------------------------- memory

def _trial_rss(tmp_path: Path, monkeypatch, leak: bool = False) -> list[int]:
    """Resident memory after each of 20 trials of one in-process search."""
    psutil = pytest.importorskip("psutil")
    import ctypes

    import cnnkit.train.trainer as trainer_mod

    if leak:  # the failure the memory test exists to catch: every trial's model kept alive
        kept = []
        fit = trainer_mod.Trainer.fit

        def keeping_fit(self):
            result = fit(self)
            kept.append(self.model)
            return result

        monkeypatch.setattr(trainer_mod.Trainer, "fit", keeping_fit)
    try:
        trim = ctypes.CDLL("libc.so.6").malloc_trim
    except OSError:  # not glibc
        def trim(pad):
            return 0
    rss = []

    def measure(outcome):
        trim(0)  # hand freed heap pages back, so that RSS is what is still held
        rss.append(psutil.Process().memory_info().rss)

    runs = tmp_path / "runs"
    cfg = tmp_path / "mem.yaml"
    # A 0.6M-parameter dense layer: about 5 MB of weights and gradients per model.
    cfg.write_text("data: {name: digits, batch_size: 64, subset: 100}\n"
                   "model: {layers: [flatten, {dense: 8192}, relu, {dense: 10}]}\n"
                   "optim: {name: sgd}\n"
                   f"train: {{epochs: 1, device: cpu, runs_dir: {json.dumps(str(runs))}}}\n")
    space = space_file(tmp_path, "optim.lr: {low: 0.001, high: 0.1, log: true}\n", "mem_space.yaml")
    plan = tune_mod.make_plan(str(cfg), [], str(space), sampler="random", trials=20, seed=0, study="mem")
    tune_mod.tune(plan, log=lambda s: None, after_trial=measure)
    assert len(rss) == 20
    return rss


def _growth_mb(rss: list[int]) -> float:
    """Median RSS over trials 18-20 minus the median over trials 3-5, in MB."""
    def median(xs):
        return sorted(xs)[len(xs) // 2]

    return (median(rss[17:20]) - median(rss[2:5])) / 2**20


BOUND_MB = 40.0  # a kept model holds ~5 MB: 17 of them ~80 MB (RSS is flat to the MB without a leak)


def test_memory_stays_flat_over_twenty_trials_in_one_process(tmp_path, monkeypatch):
    growth = _growth_mb(_trial_rss(tmp_path, monkeypatch))
    assert growth < BOUND_MB, f"resident memory grew {growth:.0f} MB from trial 3 to trial 20"


def test_memory_check_catches_a_kept_model(tmp_path, monkeypatch):
    # The check above can fail: keeping every model grows RSS past the bound. (20 more trials: opt-in.)
    if os.environ.get("CNNKIT_SLOW_TESTS") != "1":
        pytest.skip("set CNNKIT_SLOW_TESTS=1 to run the leak control")
    assert _growth_mb(_trial_rss(tmp_path, monkeypatch, leak=True)) > BOUND_MB
