"""``cnnkit tune --storage postgresql://...`` against a real PostgreSQL server.

How a search grows past one machine: every machine runs the same command with
the same PostgreSQL URL. The fixture starts Debian's PostgreSQL on a temporary
data directory and a free port (as the ``postgres`` user when the tests run as
root, since the server refuses root) and stops it at the end; ``.ci/run``
installs the package when it is missing (``.ci/ensure-postgres``). The oracle
is the study read back from the database with Optuna, never cnnkit's own table.
"""

from __future__ import annotations

import glob
import json
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from cnnkit.cli import main

TINY = """\
data: {{name: digits, batch_size: 32, subset: {subset}}}
model: {{layers: [{{conv: {{out: 4, kernel: 3}}}}, relu, flatten, {{dense: 10}}]}}
optim: {{name: adam, lr: 0.01}}
train: {{epochs: {epochs}, device: cpu, runs_dir: {runs}}}
"""


def _bindir() -> Path | None:
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                      key=lambda p: int(re.search(r"/(\d+)/bin/", p).group(1)))
    return Path(versions[-1]).parent if versions else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def postgres_url():
    bindir = _bindir()
    if bindir is None:
        pytest.fail("PostgreSQL's server binaries (initdb, pg_ctl) are not installed: run `bash .ci/ensure-postgres` "
                    "(as root; .ci/run does) or `apt-get install -y postgresql`")
    try:
        import psycopg  # noqa: F401  (SQLAlchemy's driver for postgresql:// URLs)
    except ImportError:
        pytest.fail("psycopg is missing: it comes with the dev extra (pip install -e '.[dev]')")
    home = Path(tempfile.mkdtemp(prefix="cnnkit-pg-"))  # under /tmp: the postgres user must reach it
    env = {**os.environ, "HOME": str(home), "LC_ALL": "C"}
    demote = None
    if os.geteuid() == 0:
        pw = pwd.getpwnam("postgres")
        os.chown(home, pw.pw_uid, pw.pw_gid)

        def demote() -> None:
            os.setgid(pw.pw_gid)
            os.setuid(pw.pw_uid)

    def server(*args: str) -> None:
        subprocess.run([str(bindir / args[0]), *args[1:]], check=True, env=env, preexec_fn=demote,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=120)

    port = _free_port()
    data = home / "data"
    server("initdb", "-D", str(data), "-U", "cnnkit", "-A", "trust", "-E", "UTF8", "--no-sync")
    server("pg_ctl", "-D", str(data), "-l", str(home / "server.log"), "-w", "-t", "60", "-o",
           f"-p {port} -k {home} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=60", "start")
    try:
        server("createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "cnnkit", "tune")
        yield f"postgresql://cnnkit@127.0.0.1:{port}/tune"
    finally:
        server("pg_ctl", "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(home, ignore_errors=True)


def _setup(tmp_path: Path, space: str, epochs: int = 1, subset: int = 200) -> tuple[Path, Path]:
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY.format(epochs=epochs, subset=subset, runs=json.dumps(str(tmp_path / "runs"))))
    sp = tmp_path / "space.yaml"
    sp.write_text(space)
    return cfg, sp


def _cmd(cfg: Path, space: Path, url: str, study: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "cnnkit", "tune", str(cfg), "--space", str(space), "--sampler", "grid",
            "--study", study, "--storage", url, *extra]


def _trained(study) -> list:
    """Trials that trained (claims a process gave up before training are left out)."""
    return [t for t in study.get_trials() if not t.user_attrs.get("cnnkit_surplus")]


def test_separate_processes_share_a_grid_on_postgresql_each_point_once(tmp_path, postgres_url):
    lrs, sizes = [0.02, 0.01, 0.005], [16, 64]
    cfg, space = _setup(tmp_path, f"optim.lr: {lrs}\ndata.batch_size: {sizes}\n", epochs=4)
    # Two "machines": one with two worker processes, one with a single process; the same command and URL.
    procs = [subprocess.Popen(_cmd(cfg, space, postgres_url, "pg", *extra), cwd=tmp_path, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
             for extra in (["--workers", "2"], [])]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs

    study = optuna.load_study(study_name="pg", storage=postgres_url)
    trained = _trained(study)
    complete = [t for t in trained if t.state == TrialState.COMPLETE]
    points = sorted((t.params["optim.lr"], t.params["data.batch_size"]) for t in complete)
    assert points == sorted((lr, b) for lr in lrs for b in sizes)  # every point, exactly once
    assert len(trained) == 6
    assert not [t for t in study.get_trials() if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    # Which process ran which point depends on timing (a fast one may take them all); that each point ran
    # once, whoever took it, is the property.
    for t in complete:
        run = Path(t.user_attrs["run_dir"])
        final = json.loads((run / "final.json").read_text())
        assert final["val_accuracy"] == pytest.approx(t.value)


def test_a_killed_worker_trial_is_failed_and_requeued_and_the_study_resumes(tmp_path, postgres_url, capsys):
    lrs = [0.02, 0.01, 0.005]
    cfg, space = _setup(tmp_path, f"optim.lr: {lrs}\n", epochs=50, subset=300)
    victim = subprocess.Popen(_cmd(cfg, space, postgres_url, "kill"), cwd=tmp_path, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    running = None
    deadline = time.monotonic() + 120
    try:
        while running is None and time.monotonic() < deadline and victim.poll() is None:
            time.sleep(0.5)
            try:
                study = optuna.load_study(study_name="kill", storage=postgres_url)
            except KeyError:  # not created yet
                continue
            running = next((t for t in study.get_trials() if t.state == TrialState.RUNNING
                            and t.user_attrs.get("cnnkit_worker") and t.user_attrs.get("run_dir")), None)
    finally:
        os.killpg(victim.pid, signal.SIGKILL)
        victim.wait()  # reaped: its pid is gone, as a crashed machine's worker would be
    assert running is not None, "the worker never started a trial"
    study = optuna.load_study(study_name="kill", storage=postgres_url)
    assert study.trials[running.number].state == TrialState.RUNNING  # left behind by the dead process

    # The same command again: the dead worker's trial is marked failed, its grid point runs again.
    tune = ["tune", str(cfg), "--space", str(space), "--sampler", "grid", "--study", "kill",
            "--storage", postgres_url]
    capsys.readouterr()
    assert main(tune) == 0
    assert f"trial {running.number} was left running by a stopped process; marked failed" in capsys.readouterr().out
    study = optuna.load_study(study_name="kill", storage=postgres_url)
    trained = _trained(study)
    assert study.trials[running.number].state == TrialState.FAIL
    complete = [t for t in trained if t.state == TrialState.COMPLETE]
    assert sorted(t.params["optim.lr"] for t in complete) == sorted(lrs)
    again = next(t for t in complete if t.params["optim.lr"] == running.params["optim.lr"])
    assert again.number > running.number
    assert [t.number for t in trained if t.state == TrialState.FAIL] == [running.number]

    # Resumable: a third run finds the study complete and adds nothing.
    n = len(study.get_trials())
    assert main(tune) == 0
    assert "already has its 3 trials" in capsys.readouterr().out
    assert len(optuna.load_study(study_name="kill", storage=postgres_url).get_trials()) == n
