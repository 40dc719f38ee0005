"""Training with DistributedDataParallel: two CPU processes on the gloo backend.

Oracles: one process doing the same thing on the whole global batch.

* One step through DDP, each rank taking its slice of the global batch from the
  real :class:`~cnnkit.data.base.TensorLoader`, gives the gradients of one process
  on the whole batch.
* The Trainer under DDP, with a last global batch that splits unevenly (one rank
  gets nothing) and a validation split whose last batch does too, ends with the
  weights and metrics of a single-process run (SGD, so a gradient off by any
  factor shows in the weights).
* ``python -m torch.distributed.run --standalone --nproc_per_node 2 -m cnnkit train``
  writes one run folder with ``world_size`` 2, prints its progress once, and
  reaches the single-process run's accuracy.

Workers are separate ``python`` processes given torchrun's environment (RANK,
WORLD_SIZE, MASTER_ADDR, MASTER_PORT), one thread each.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from cnnkit.config import load_config
from cnnkit.data import DataBundle, TensorData, load_data
from cnnkit.data.loaders import make_loader
from cnnkit.models import build_torch, parse_layers
from cnnkit.models.lenet import lenet5_layers
from cnnkit.train.trainer import Trainer
from cnnkit.api import train

pytestmark = pytest.mark.skipif(not torch.distributed.is_available() or
                                not torch.distributed.is_gloo_available(),
                                reason="torch.distributed with gloo is not available")

WORLD = 2
GLOBAL_BATCH = 16
MEAN, STD = (0.45,), (0.29,)
# Trainer case: 22 training images in batches of 16 -> the last global batch has 6, all on rank 0;
# 11 validation images in batches of 8 -> the last has 3, all on rank 0.
N_TRAIN, N_VAL, EVAL_BATCH = 22, 11, 8


def _images(n: int, seed: int) -> TensorData:
    g = torch.Generator().manual_seed(seed)
    return TensorData(torch.randint(0, 256, (n, 1, 28, 28), generator=g, dtype=torch.uint8),
                      torch.randint(0, 10, (n,), generator=g))


def _lenet() -> torch.nn.Module:
    """LeNet-5 without dropout or batch norm, so that ranks and one process compute the same function."""
    torch.manual_seed(0)
    return build_torch(parse_layers(lenet5_layers()), (1, 28, 28), 10)


def _bundle() -> DataBundle:
    return DataBundle(_images(N_TRAIN, 1), _images(N_VAL, 2), None, [str(c) for c in range(10)], (1, 28, 28),
                      MEAN, STD, "random images")


def _trainer_cfg(runs: Path):
    return load_config(None, ["data.name=digits", "model.input=null", "model.layers=" + json.dumps(lenet5_layers()),
                              f"data.batch_size={GLOBAL_BATCH}", f"data.eval_batch_size={EVAL_BATCH}",
                              "optim.name=sgd", "optim.lr=0.05", "schedule.name=constant", "train.epochs=2",
                              "train.device=cpu", f"train.runs_dir={runs}"])


def _ddp_worker(out: str) -> None:
    """One rank (run in its own process with torchrun's environment)."""
    from torch.nn.parallel import DistributedDataParallel

    from cnnkit.train import distributed as dist_utils

    torch.set_num_threads(1)
    info = dist_utils.setup("cpu")
    assert (info.world_size, info.device) == (WORLD, torch.device("cpu")), info
    # 1. One DDP step on this rank's slice of the first global batch, cut by the real loader.
    loader = make_loader(_images(3 * GLOBAL_BATCH, 0), batch_size=GLOBAL_BATCH, mean=MEAN, std=STD, shuffle=True,
                         seed=5, device="cpu", augment=None, rank=info.rank, world_size=info.world_size)
    loader.set_epoch(1)
    x, y = next(iter(loader))
    model = _lenet()
    ddp = DistributedDataParallel(model)
    F.cross_entropy(ddp(x), y).backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    torch.save({"grads": grads, "n": len(y)}, Path(out) / f"rank{info.rank}.pt")
    # 2. The Trainer, two epochs with uneven last batches.
    result = Trainer(_trainer_cfg(Path(out) / "runs"), bundle=_bundle(), quiet=True).fit()
    torch.save({"final": result.final}, Path(out) / f"trainer{info.rank}.pt")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
                        "TORCHELASTIC_RUN_ID", "GROUP_RANK")}
    return {**env, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **extra}


def _run_workers(out: Path) -> None:
    code = (f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
            f"from test_distributed import _ddp_worker; _ddp_worker(sys.argv[1])")
    port = str(_free_port())
    procs = [subprocess.Popen([sys.executable, "-c", code, str(out)], cwd=out, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True,
                              env=_env(RANK=str(r), LOCAL_RANK=str(r), WORLD_SIZE=str(WORLD),
                                       MASTER_ADDR="127.0.0.1", MASTER_PORT=port))
             for r in range(WORLD)]
    try:
        outs = [p.communicate(timeout=180)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for r, (p, text) in enumerate(zip(procs, outs)):
        assert p.returncode == 0, f"rank {r} failed:\n{text}"


@pytest.fixture(scope="module")
def ddp_out(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ddp")
    _run_workers(out)
    return out


@pytest.mark.slow
def test_one_ddp_step_has_the_gradients_of_one_process_on_the_whole_batch(ddp_out):
    loader = make_loader(_images(3 * GLOBAL_BATCH, 0), batch_size=GLOBAL_BATCH, mean=MEAN, std=STD, shuffle=True,
                         seed=5, device="cpu", augment=None)
    loader.set_epoch(1)
    x, y = next(iter(loader))
    model = _lenet()
    F.cross_entropy(model(x), y).backward()
    ranks = [torch.load(ddp_out / f"rank{r}.pt") for r in range(WORLD)]
    assert [r["n"] for r in ranks] == [GLOBAL_BATCH // WORLD] * WORLD  # each rank saw its half
    for name, p in model.named_parameters():
        assert p.grad.abs().max() > 0, name
        for r in ranks:  # DDP leaves the same averaged gradients on every rank
            torch.testing.assert_close(r["grads"][name], p.grad, rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.slow
def test_trainer_under_ddp_ends_like_one_process_with_uneven_last_batches(ddp_out, tmp_path):
    runs = list((ddp_out / "runs").iterdir())
    assert len(runs) == 1, runs  # only rank 0 writes a run folder
    ddp_run = runs[0]
    single = Trainer(_trainer_cfg(tmp_path / "runs"), bundle=_bundle(), quiet=True).fit()

    final = json.loads((ddp_run / "final.json").read_text())
    assert final["world_size"] == WORLD and single.final["world_size"] == 1
    assert (final["n_train"], final["n_val"]) == (N_TRAIN, N_VAL)
    for r in range(WORLD):  # every rank returns the same reduced metrics
        got = torch.load(ddp_out / f"trainer{r}.pt")["final"]
        assert got["val_accuracy"] == pytest.approx(final["val_accuracy"])
        assert got["val_loss"] == pytest.approx(final["val_loss"], rel=1e-12)

    rows = [json.loads(l) for l in (ddp_run / "metrics.jsonl").read_text().splitlines()]
    want = single.history
    assert [r["epoch"] for r in rows] == [1, 2]
    for got, ref in zip(rows, want, strict=True):
        for k in ("train_loss", "val_loss"):
            assert got[k] == pytest.approx(ref[k], rel=1e-5), k
        for k in ("train_accuracy", "val_accuracy"):
            assert got[k] == pytest.approx(ref[k], abs=1e-9), k

    ddp_state = torch.load(ddp_run / "checkpoints" / "last.pt", weights_only=False)
    ref_state = torch.load(single.run_dir / "checkpoints" / "last.pt", weights_only=False)
    assert ddp_state["epoch"] == 2 and len(ddp_state["rng_ranks"]) == WORLD
    for name, w in ref_state["model"].items():
        torch.testing.assert_close(ddp_state["model"][name], w, rtol=1e-5, atol=1e-6, msg=name)


# --------------------------------------------------------------------------- torchrun end to end

TORCHRUN_OVERRIDES = [
    "data.name=digits", "model.input=null",
    "model.layers=[{conv: {out: 8, kernel: 3}}, relu, flatten, {dense: 10}]",
    # 1,618 training images in batches of 64: the last global batch (18) is all rank 0's;
    # 179 validation images in batches of 120: the last (59) too.
    "data.batch_size=64", "data.eval_batch_size=120",
    "optim.lr=0.01", "train.epochs=3", "train.device=cpu",
]


@pytest.mark.slow
def test_torchrun_two_processes_write_one_run_and_match_one_process(tmp_path):
    runs = tmp_path / "runs"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={WORLD}",
           "-m", "cnnkit", "train", *TORCHRUN_OVERRIDES, f"train.runs_dir={runs}"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "error" not in proc.stderr.lower(), proc.stderr

    dirs = [p for p in runs.iterdir()]
    assert len(dirs) == 1, dirs
    run = dirs[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs"]  # nothing else written
    final = json.loads((run / "final.json").read_text())
    n_train = len(load_data(load_config(None, TORCHRUN_OVERRIDES).data).train)
    assert (final["world_size"], final["n_train"], final["epochs"]) == (WORLD, n_train, 3)
    assert final["n_val"] == 179
    rows = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3]

    # Only rank 0 prints: the banner, each epoch line, the result and the folder, once each.
    lines = proc.stdout.strip().splitlines()
    assert sum(l.startswith("training ") for l in lines) == 1, proc.stdout
    assert "x2 processes" in lines[0], proc.stdout
    for e in (1, 2, 3):
        assert sum(l.startswith(f"epoch   {e}/3 ") for l in lines) == 1, proc.stdout
    assert sum(l.startswith("held-out accuracy:") for l in lines) == 1, proc.stdout
    assert lines[-1] == str(run) and sum(l == str(run) for l in lines) == 1, proc.stdout
    assert len(lines) == 6, proc.stdout

    # One process on the whole batches: the same run up to float rounding (no dropout, rank 0's seed).
    single = train(load_config(None, [*TORCHRUN_OVERRIDES, f"train.runs_dir={tmp_path / 'single'}"]), quiet=True)
    assert final["val_accuracy"] >= single.final["val_accuracy"] - 0.02
    assert final["val_accuracy"] > 0.9
    for got, ref in zip(rows, single.history, strict=True):
        assert got["train_loss"] == pytest.approx(ref["train_loss"], rel=1e-3)
        assert got["val_loss"] == pytest.approx(ref["val_loss"], rel=1e-3)
