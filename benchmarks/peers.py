"""cnnkit against its peers: the same LeNet-5 on the same MNIST subset, four ways.

cnnkit's trainer, a plain PyTorch loop, PyTorch Lightning and Keras 3 (torch
backend) each train the demo recipe's network (configs/lenet5_mnist5k.yaml: two
5x5 valid convolutions of 6 and 16 channels, ReLU, 2x2 max pooling, dense
120-84-10 with dropout 0.2/0.4/0.4, He-uniform weights, zero biases) on the same
split of mnist5k (``cnnkit.data.load_data`` on the recipe's data section, 4,500
training / 500 held-out images), normalised with the same mean and std, with the
same batch size (the recipe's 32; 256 for evaluation), the same optimiser (torch's
Adam at the recipe's lr with torch's default betas and eps; Keras' own Adam with
the same numbers, whose eps is the paper's "epsilon hat"), a constant learning
rate and the same number of epochs, one float32 CPU process each.

Every framework is used as its users would: cnnkit through ``train(config)``,
Lightning through a LightningModule with ``self.log`` and ``Trainer.fit`` (fed the
same in-memory batches as the plain loop, so the data pipeline is no handicap),
Keras through ``compile`` + ``fit`` on NumPy arrays (channels_first, so the layers
match torch's). Each reports per-epoch train loss/accuracy and held-out
loss/accuracy. cnnkit, the plain loop and Lightning start from the same seed,
draw the same initial weights, batch order and dropout masks, and so compute the
same numbers: their times differ by overhead alone. Keras draws its own.

An epoch's time runs from the start of its training pass to the end of its
validation pass. Each framework runs in its own subprocess (``--threads`` torch
threads, default 1), the frameworks take turns within each of ``--repeats``
rounds so that drift in the machine's load hits them alike, the first epoch of
every run is dropped as warm-up, and the median of the rest is reported with the
held-out accuracy after the last epoch (median over rounds) and the ratio of the
time to cnnkit's. Each epoch's process CPU time is reported too: on a machine
shared with other work it moves far less with the load than the wall time does.
Goal: cnnkit is the fastest of the framework users and within 5% of the plain loop.

    python benchmarks/peers.py [--epochs 4] [--repeats 3] [--threads 1] [--only cnnkit,plain]

Lightning and Keras come with ``pip install -e '.[bench]'``; without them the rest runs.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FRAMEWORKS = ["cnnkit", "plain", "lightning", "keras"]
REPO = Path(__file__).resolve().parent.parent
MARK = "PEERS_RESULT "
EVAL_BATCH = 256


# --------------------------------------------------------------------------- shared set-up (in each worker)

def recipe(config: str, epochs: int, *extra: str):
    """The recipe's config with a constant lr, torch's Adam, the CPU and ``epochs``."""
    from cnnkit.config import load_config

    return load_config(config, [f"train.epochs={epochs}", "schedule.name=constant", "optim.name=torch.adam",
                                "train.device=cpu", f"data.eval_batch_size={EVAL_BATCH}", *extra])


def setup(config: str, epochs: int):
    """The recipe's config and its data, normalised as cnnkit does: (x - mean) / std on the 0..1 scale."""
    import torch

    from cnnkit.data import load_data

    cfg = recipe(config, epochs)
    bundle = load_data(cfg.data)
    mean = torch.tensor(bundle.mean).view(1, -1, 1, 1)
    std = torch.tensor(bundle.std).view(1, -1, 1, 1)
    norm = lambda t: (t.images.float() / 255 - mean) / std  # noqa: E731
    return cfg, bundle, (norm(bundle.train), bundle.train.labels, norm(bundle.val), bundle.val.labels)


def recipe_dropouts(cfg) -> list[float]:
    drops = [l["dropout"] for l in cfg.model.layers if isinstance(l, dict) and "dropout" in l]
    assert len(drops) == 3, cfg.model.layers  # the recipe's LeNet-5 with three dropout layers
    return drops


def torch_lenet(cfg, num_classes: int):
    """The recipe's layer list written out as a torch ``nn.Sequential``, He-uniform weights, zero biases."""
    import torch
    from torch import nn

    drops = recipe_dropouts(cfg)
    torch.manual_seed(cfg.train.seed)
    model = nn.Sequential(
        nn.Conv2d(1, 6, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Dropout(drops[0]),
        nn.Linear(256, 120), nn.ReLU(), nn.Dropout(drops[1]),
        nn.Linear(120, 84), nn.ReLU(), nn.Dropout(drops[2]),
        nn.Linear(84, num_classes))
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_uniform_(m.weight, a=0.0, nonlinearity="relu")
            nn.init.zeros_(m.bias)
    return model


def torch_adam(cfg, params):
    import torch

    return torch.optim.Adam(params, lr=cfg.optim.lr)


class Batches:
    """In-memory batches of pre-normalised tensors; pass ``e`` (from 1) is ordered as cnnkit orders epoch ``e``."""

    def __init__(self, x, y, batch_size: int, shuffle: bool, seed: int = 0) -> None:
        self.x, self.y, self.batch_size, self.shuffle = x, y, batch_size, shuffle
        self.seed, self.epoch = seed, 0

    def __len__(self) -> int:
        return -(-len(self.y) // self.batch_size)

    def __iter__(self):
        import torch

        self.epoch += 1
        n = len(self.y)
        order = (torch.randperm(n, generator=torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch))
                 if self.shuffle else torch.arange(n))
        for i in range(0, n, self.batch_size):
            idx = order[i:i + self.batch_size]
            yield self.x[idx], self.y[idx]


# --------------------------------------------------------------------------- the four workers

def run_cnnkit(config: str, epochs: int) -> dict:
    from cnnkit.train.callbacks import Callback
    from cnnkit.api import train

    class CPUTime(Callback):  # the wall time is the trainer's own epoch_time_s
        def __init__(self) -> None:
            self.cpu: list[float] = []

        def on_epoch_begin(self, trainer, epoch) -> None:
            self.c0 = time.process_time()

        def on_epoch_end(self, trainer, epoch, metrics) -> None:  # after the epoch's validation
            self.cpu.append(time.process_time() - self.c0)

    cpu = CPUTime()
    with tempfile.TemporaryDirectory() as runs:
        result = train(recipe(config, epochs, f"train.runs_dir={runs}"), quiet=True, callbacks=[cpu])
    h = result.history
    return {"epoch_times": [r["epoch_time_s"] for r in h], "epoch_cpu": cpu.cpu,
            "val_accuracy": h[-1]["val_accuracy"], "val_loss": h[-1]["val_loss"], "train_loss": h[-1]["train_loss"],
            "train_accuracy": h[-1]["train_accuracy"], "n_train": result.final["n_train"],
            "n_val": result.final["n_val"]}


def run_plain(config: str, epochs: int) -> dict:
    import torch
    import torch.nn.functional as F

    cfg, bundle, (xtr, ytr, xva, yva) = setup(config, epochs)
    model = torch_lenet(cfg, bundle.num_classes)
    opt = torch_adam(cfg, model.parameters())
    train_batches = Batches(xtr, ytr, cfg.data.batch_size, shuffle=True, seed=cfg.train.seed)
    val_batches = Batches(xva, yva, EVAL_BATCH, shuffle=False)
    times, cpu, last = [], [], {}
    for _ in range(epochs):
        t0, c0 = time.perf_counter(), time.process_time()
        model.train()
        loss_sum, correct = torch.zeros((), dtype=torch.float64), torch.zeros((), dtype=torch.float64)
        for x, y in train_batches:
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            with torch.no_grad():
                loss_sum += loss.detach().double() * len(y)
                correct += (logits.argmax(1) == y).sum()
        model.eval()
        v_loss, v_correct = torch.zeros((), dtype=torch.float64), torch.zeros((), dtype=torch.float64)
        with torch.no_grad():
            for x, y in val_batches:
                logits = model(x)
                v_loss += F.cross_entropy(logits, y).double() * len(y)
                v_correct += (logits.argmax(1) == y).sum()
        last = {"train_loss": float(loss_sum) / len(ytr), "train_accuracy": float(correct) / len(ytr),
                "val_loss": float(v_loss) / len(yva), "val_accuracy": float(v_correct) / len(yva)}
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return {"epoch_times": times, "epoch_cpu": cpu, **last, "n_train": len(ytr), "n_val": len(yva)}


def run_lightning(config: str, epochs: int) -> dict:
    import logging
    import warnings

    import torch
    import torch.nn.functional as F

    try:
        import lightning as L
    except ImportError:  # the standalone package
        import pytorch_lightning as L  # type: ignore[no-redef]

    warnings.filterwarnings("ignore")
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning"):
        logging.getLogger(name).setLevel(logging.ERROR)
    cfg, bundle, (xtr, ytr, xva, yva) = setup(config, epochs)

    class LitLeNet(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = torch_lenet(cfg, bundle.num_classes)

        def forward(self, x):
            return self.net(x)

        def training_step(self, batch, batch_idx):
            x, y = batch
            logits = self(x)
            loss = F.cross_entropy(logits, y)
            self.log("train_loss", loss, on_step=False, on_epoch=True, batch_size=len(y))
            self.log("train_accuracy", (logits.argmax(1) == y).float().mean(), on_step=False, on_epoch=True,
                     batch_size=len(y))
            return loss

        def validation_step(self, batch, batch_idx):
            x, y = batch
            logits = self(x)
            self.log("val_loss", F.cross_entropy(logits, y), batch_size=len(y))
            self.log("val_accuracy", (logits.argmax(1) == y).float().mean(), batch_size=len(y))

        def configure_optimizers(self):
            return torch_adam(cfg, self.parameters())

    class EpochTimer(L.Callback):
        """From the training epoch's start to the end of its validation (and of the epoch's hooks)."""

        def __init__(self) -> None:
            self.times: list[float] = []
            self.cpu: list[float] = []
            self.ends: list[float] = []

        def on_train_epoch_start(self, trainer, pl_module) -> None:
            self.t0, self.c0 = time.perf_counter(), time.process_time()

        def on_validation_epoch_end(self, trainer, pl_module) -> None:
            self.ends.append(time.perf_counter())

        def on_train_epoch_end(self, trainer, pl_module) -> None:  # Lightning 2 calls it after validation
            assert self.ends and self.ends[-1] >= self.t0, "validation did not run inside the epoch"
            self.times.append(time.perf_counter() - self.t0)
            self.cpu.append(time.process_time() - self.c0)

    timer = EpochTimer()
    trainer = L.Trainer(max_epochs=epochs, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                        callbacks=[timer])
    module = LitLeNet()
    trainer.fit(module, train_dataloaders=Batches(xtr, ytr, cfg.data.batch_size, shuffle=True, seed=cfg.train.seed),
                val_dataloaders=Batches(xva, yva, EVAL_BATCH, shuffle=False))
    assert len(timer.ends) == epochs, "validation must run once per epoch"
    m = {k: float(v) for k, v in trainer.callback_metrics.items()}
    return {"epoch_times": timer.times, "epoch_cpu": timer.cpu, "val_accuracy": m["val_accuracy"],
            "val_loss": m["val_loss"],
            "train_loss": m["train_loss"], "train_accuracy": m["train_accuracy"], "n_train": len(ytr),
            "n_val": len(yva)}


def run_keras(config: str, epochs: int) -> dict:
    os.environ["KERAS_BACKEND"] = "torch"
    import keras
    from keras import layers

    cfg, bundle, (xtr, ytr, xva, yva) = setup(config, epochs)
    keras.config.set_image_data_format("channels_first")  # (C, H, W) as in torch: same layers, same flatten
    keras.utils.set_random_seed(cfg.train.seed)
    drops = recipe_dropouts(cfg)
    he = "he_uniform"
    model = keras.Sequential([
        keras.Input(shape=tuple(bundle.input_shape)),
        layers.Conv2D(6, 5, padding="valid", activation="relu", kernel_initializer=he),
        layers.MaxPooling2D(2),
        layers.Conv2D(16, 5, padding="valid", activation="relu", kernel_initializer=he),
        layers.MaxPooling2D(2),
        layers.Flatten(), layers.Dropout(drops[0]),
        layers.Dense(120, activation="relu", kernel_initializer=he), layers.Dropout(drops[1]),
        layers.Dense(84, activation="relu", kernel_initializer=he), layers.Dropout(drops[2]),
        layers.Dense(bundle.num_classes, kernel_initializer=he),
    ])
    assert model.count_params() == 44426, model.count_params()  # LeNet-5's parameter count
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=cfg.optim.lr, beta_1=0.9, beta_2=0.999,
                                                  epsilon=1e-8),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"],
                  jit_compile=False)

    class EpochTimer(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.times: list[float] = []
            self.cpu: list[float] = []

        def on_epoch_begin(self, epoch, logs=None):
            self.t0, self.c0 = time.perf_counter(), time.process_time()

        def on_epoch_end(self, epoch, logs=None):  # after the epoch's validation
            self.times.append(time.perf_counter() - self.t0)
            self.cpu.append(time.process_time() - self.c0)

    timer = EpochTimer()
    hist = model.fit(xtr.numpy(), ytr.numpy(), batch_size=cfg.data.batch_size, epochs=epochs, shuffle=True,
                     validation_data=(xva.numpy(), yva.numpy()), validation_batch_size=EVAL_BATCH, verbose=0,
                     callbacks=[timer])
    h = {k: v[-1] for k, v in hist.history.items()}
    return {"epoch_times": timer.times, "epoch_cpu": timer.cpu, "val_accuracy": h["val_accuracy"],
            "val_loss": h["val_loss"],
            "train_loss": h["loss"], "train_accuracy": h["accuracy"], "n_train": len(ytr), "n_val": len(yva)}


RUNNERS = {"cnnkit": run_cnnkit, "plain": run_plain, "lightning": run_lightning, "keras": run_keras}


def worker(name: str, config: str, epochs: int, threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    out = RUNNERS[name](config, epochs)
    out.update(framework=name, threads=torch.get_num_threads(), torch=torch.__version__)
    print(MARK + json.dumps(out), flush=True)


# --------------------------------------------------------------------------- the parent

def available(name: str) -> bool:
    module = {"lightning": "lightning", "keras": "keras"}.get(name)
    if module is None:
        return True
    if module == "lightning":
        return bool(importlib.util.find_spec("lightning") or importlib.util.find_spec("pytorch_lightning"))
    return importlib.util.find_spec(module) is not None


def run_one(name: str, args) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads),
               KERAS_BACKEND="torch", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    proc = subprocess.run([sys.executable, __file__, "--worker", name, "--config", args.config,
                           "--epochs", str(args.epochs), "--threads", str(args.threads)],
                          cwd=REPO, env=env, capture_output=True, text=True)
    lines = [l for l in proc.stdout.splitlines() if l.startswith(MARK)]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{name} failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len(MARK):])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(REPO / "configs" / "lenet5_mnist5k.yaml"))
    ap.add_argument("--epochs", type=int, default=4, help="per run; the first is dropped as warm-up")
    ap.add_argument("--repeats", type=int, default=3, help="rounds, the frameworks taking turns in each")
    ap.add_argument("--threads", type=int, default=1, help="torch threads in every framework's process")
    ap.add_argument("--only", default=",".join(FRAMEWORKS), help="comma-separated subset of " + ",".join(FRAMEWORKS))
    ap.add_argument("--json", metavar="FILE", help="also write every run's raw results here")
    ap.add_argument("--worker", choices=FRAMEWORKS, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.epochs < 2:
        ap.error("--epochs must be at least 2 (the first epoch is dropped as warm-up)")
    if args.worker:
        worker(args.worker, args.config, args.epochs, args.threads)
        return

    wanted = [f.strip() for f in args.only.split(",") if f.strip()]
    unknown = [f for f in wanted if f not in FRAMEWORKS]
    if unknown:
        ap.error(f"unknown framework(s) {unknown}; choose from {FRAMEWORKS}")
    missing = [f for f in wanted if not available(f)]
    if missing:
        print(f"skipping {', '.join(missing)}: not installed; install with  pip install -e '.[bench]'",
              file=sys.stderr)
    names = [f for f in wanted if f not in missing]
    if not names:
        sys.exit("nothing to run")
    runs: dict[str, list[dict]] = {n: [] for n in names}
    for r in range(args.repeats):
        order = names[r % len(names):] + names[:r % len(names)]  # each framework takes every slot in turn
        for name in order:
            res = run_one(name, args)
            runs[name].append(res)
            print(f"  round {r + 1}/{args.repeats} {name:<10} epoch wall " +
                  " ".join(f"{t:.3f}" for t in res["epoch_times"]) + "  cpu " +
                  " ".join(f"{t:.3f}" for t in res["epoch_cpu"]) + f" s  val_acc {res['val_accuracy']:.4f}",
                  file=sys.stderr, flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(runs, indent=2))
    report(runs, args)


def report(runs: dict[str, list[dict]], args) -> None:
    rows = {}
    for name, rs in runs.items():
        wall = [t for res in rs for t in res["epoch_times"][1:]]  # the first epoch of each run warms up
        cpu = [t for res in rs for t in res["epoch_cpu"][1:]]
        rows[name] = (statistics.median(wall), statistics.median(cpu),
                      statistics.median(res["val_accuracy"] for res in rs), len(wall))
    first = next(iter(runs.values()))[0]
    print(f"LeNet-5 on mnist5k ({first['n_train']} train / {first['n_val']} held-out), batch 32, Adam, "
          f"{args.epochs} epochs (first dropped), {args.repeats} rounds, {args.threads} torch thread(s), "
          f"torch {first['torch']}; medians per epoch (training + validation pass)")
    base = rows.get("cnnkit")
    print(f"{'framework':<12}{'wall (s)':>10}{'cpu (s)':>10}{'held-out acc':>14}{'wall x cnnkit':>15}"
          f"{'cpu x cnnkit':>14}{'epochs':>8}")
    for name, (wall, cpu, acc, n) in rows.items():
        rw = f"{wall / base[0]:.3f}" if base else "-"
        rc = f"{cpu / base[1]:.3f}" if base else "-"
        print(f"{name:<12}{wall:>10.4f}{cpu:>10.4f}{acc:>14.4f}{rw:>15}{rc:>14}{n:>8}")
    if base and "plain" in rows:
        peers = [n for n in ("lightning", "keras") if n in rows]
        for i, what in ((0, "wall"), (1, "cpu")):
            over = base[i] / rows["plain"][i]
            fastest = all(base[i] <= rows[n][i] for n in peers)
            print(f"{what}: cnnkit / plain loop {over:.3f} (goal <= 1.05: {'met' if over <= 1.05 else 'NOT met'})"
                  + (f"; cnnkit fastest of {', '.join(['cnnkit', *peers])}: {'yes' if fastest else 'NO'}"
                     if peers else ""))


if __name__ == "__main__":
    main()
