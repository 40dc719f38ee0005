"""Time one training epoch of LeNet-5 on the NumPy reference engine and on torch (CPU), same data.

mnist5k's training split (4,500 images after the 10% held out), batches of 64, the course's
``adam`` on both sides; the torch side is a plain loop (DeclarativeNet, F.cross_entropy,
``cnnkit.optim.create('adam', ...)``) over the very same batches. Epochs alternate between the
engines and the best of ``--repeats`` is reported, so background load hits both alike.
Goal: reference / torch <= 3.

Usage::

    PYTHONPATH=src python benchmarks/reference_vs_torch.py [--repeats 3] [--threads N] [--profile]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F

from cnnkit.config import DataConfig
from cnnkit.data import load_data
from cnnkit.data.loaders import make_loader
from cnnkit.models.lenet import lenet5_layers
from cnnkit.models.spec import build_torch
from cnnkit.spec import parse_layers
from cnnkit.optim import create as torch_optimizer
from cnnkit.reference.network import ReferenceNet
from cnnkit.reference.optim import create as reference_optimizer
from cnnkit.reference.losses import classification_loss as make_reference_loss

LR = 1e-3


def batches():
    bundle = load_data(DataConfig(name="mnist5k"))
    loader = make_loader(bundle.train, batch_size=64, mean=bundle.mean, std=bundle.std, shuffle=True, seed=0,
                         device="cpu", augment=None)
    loader.set_epoch(1)
    out = [(x.contiguous(), y) for x, y in loader]
    return out, [(x.numpy(), y.numpy()) for x, y in out], len(bundle.train)


def reference_epoch(net, opt, data, loss_fn):
    names = list(net.params)
    total = 0.0
    for x, y in data:
        logits = net.forward(x, training=True)                           # (64, 10)
        loss, d = loss_fn(logits, y)
        grads = net.backward(d)
        opt.step(net.parameters(), [grads[k] for k in names])
        total += loss
    return total / len(data)


def torch_epoch(model, opt, data):
    model.train()
    total = 0.0
    for x, y in data:
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        total += float(loss)
    return total / len(data)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--profile", action="store_true", help="time each reference layer's forward and backward")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    try:  # NumPy's BLAS gets the same threads, when threadpoolctl is there
        from threadpoolctl import threadpool_limits

        threadpool_limits(args.threads)
    except ImportError:
        pass

    tdata, ndata, n = batches()
    specs = parse_layers(lenet5_layers())
    torch.manual_seed(0)
    model = build_torch(specs, (1, 28, 28), 10)
    net = ReferenceNet(specs, (1, 28, 28), 10)
    net.load_state_dict(model.state_dict())
    loss_fn = make_reference_loss("cross_entropy")
    t_opt = torch_optimizer("adam", model.parameters(), lr=LR)
    r_opt = reference_optimizer("adam", LR)

    # warm-up (allocators, BLAS threads, torch kernels)
    reference_epoch(net, r_opt, ndata[:10], loss_fn)
    torch_epoch(model, t_opt, tdata[:10])

    times: dict[str, list[float]] = {"reference": [], "torch": []}
    losses = {}
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        losses["reference"] = reference_epoch(net, r_opt, ndata, loss_fn)
        times["reference"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        losses["torch"] = torch_epoch(model, t_opt, tdata)
        times["torch"].append(time.perf_counter() - t0)

    print(f"LeNet-5, mnist5k train split ({n} images, {len(ndata)} batches of 64), course adam, "
          f"{args.threads} threads (torch {torch.__version__}, numpy {np.__version__})")
    for k, v in times.items():
        print(f"  {k:9s} epoch: best {min(v):.3f}s  median {statistics.median(v):.3f}s  "
              f"(all {', '.join(f'{t:.3f}' for t in v)})  last mean loss {losses[k]:.4f}")
    ratio = min(times["reference"]) / min(times["torch"])
    print(f"  ratio reference/torch: {ratio:.2f} (best of {args.repeats}; goal <= 3)  "
          f"median ratio {statistics.median(times['reference']) / statistics.median(times['torch']):.2f}")

    if args.profile:
        profile(net, ndata, loss_fn)


def profile(net, data, loss_fn):
    """Seconds per epoch in each layer's forward and backward (reference engine)."""
    fwd = {layer.name: 0.0 for layer in net.layers}
    bwd = dict(fwd)
    for x, y in data:
        h = x
        for layer in net.layers:
            t0 = time.perf_counter()
            h = layer.forward(h, True)
            fwd[layer.name] += time.perf_counter() - t0
        _, d = loss_fn(h, y)
        for i, layer in reversed(list(enumerate(net.layers))):
            t0 = time.perf_counter()
            d = layer.backward(d, need_dx=i > 0)
            bwd[layer.name] += time.perf_counter() - t0
    print("  reference per-layer seconds per epoch (forward / backward):")
    for name in fwd:
        print(f"    {name:10s} {fwd[name]:.4f} / {bwd[name]:.4f}")


if __name__ == "__main__":
    main()
