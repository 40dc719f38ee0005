"""Trainer overhead: cnnkit's trainer against a hand-written PyTorch loop, in one run.

Both train the same LeNet-5 (the demo recipe's layer list) on the same
mnist5k split, with the same batch size, optimiser (the course's Adam) and
batch order, and time each epoch from the start of its training pass to the
end of its validation pass. The hand-written loop is what a careful user would
write: data pre-normalised in one float tensor, index batches, step, evaluate.

    python benchmarks/trainer_overhead.py [--epochs 4] [--repeats 3]

Prints both median epoch times and the ratio cnnkit / hand-written (goal <= 1.05).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch
import torch.nn.functional as F

from cnnkit.config import load_config
from cnnkit.data import load_data
from cnnkit.models import create_model
from cnnkit.optim import create as create_optimizer
from cnnkit.api import train


def hand_written(cfg, bundle, epochs: int) -> list[float]:
    torch.manual_seed(cfg.train.seed)
    model = create_model(cfg.model, bundle.input_shape, bundle.num_classes)
    opt = create_optimizer(cfg.optim.name, model.parameters(), lr=cfg.optim.lr)
    mean, std = torch.tensor(bundle.mean).view(1, -1, 1, 1), torch.tensor(bundle.std).view(1, -1, 1, 1)
    xtr = (bundle.train.images.float() / 255 - mean) / std
    ytr = bundle.train.labels
    xva = (bundle.val.images.float() / 255 - mean) / std
    yva = bundle.val.labels
    bs = cfg.data.batch_size
    times = []
    for epoch in range(1, epochs + 1):
        t0 = time.perf_counter()
        model.train()
        order = torch.randperm(len(ytr), generator=torch.Generator().manual_seed(epoch))
        for i in range(0, len(order), bs):
            idx = order[i:i + bs]
            loss = F.cross_entropy(model(xtr[idx]), ytr[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            correct = 0
            for i in range(0, len(yva), 256):
                correct += int((model(xva[i:i + 256]).argmax(1) == yva[i:i + 256]).sum())
        times.append(time.perf_counter() - t0)
    return times


def with_cnnkit(cfg) -> list[float]:
    result = train(cfg, quiet=True)
    return [h["epoch_time_s"] for h in result.history]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="configs/lenet5_mnist5k.yaml")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    if args.epochs < 2 or args.repeats < 1:
        ap.error(f"--epochs must be at least 2 (the first epoch of each run warms up and is not timed) and "
                 f"--repeats at least 1; got --epochs {args.epochs} --repeats {args.repeats}")
    with tempfile.TemporaryDirectory() as runs:
        cfg = load_config(args.config, [f"train.epochs={args.epochs}", f"train.runs_dir={runs}",
                                        "schedule.name=constant", "train.device=cpu"])
        bundle = load_data(cfg.data)
        hand, ours = [], []
        for r in range(args.repeats):  # interleaved, so drift in machine load hits both alike
            hand += hand_written(cfg, bundle, args.epochs)[1:]  # the first epoch warms up
            ours += with_cnnkit(cfg)[1:]
    h, o = statistics.median(hand), statistics.median(ours)
    print(f"LeNet-5 on mnist5k ({len(bundle.train)} train / {len(bundle.val)} val), batch {cfg.data.batch_size}, "
          f"{cfg.optim.name}, {torch.get_num_threads()} threads, median of {len(hand)} epochs each")
    print(f"{'loop':<14}{'epoch time (s)':>16}")
    print(f"{'hand-written':<14}{h:>16.4f}")
    print(f"{'cnnkit':<14}{o:>16.4f}")
    print(f"ratio cnnkit / hand-written: {o / h:.3f}  (goal <= 1.05)")


if __name__ == "__main__":
    main()
