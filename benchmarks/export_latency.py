"""Inference latency on CPU: torch eager against onnxruntime on the same exported model, in one run.

The models are the demo recipe's LeNet-5 (configs/lenet5_mnist5k.yaml, 1x28x28) and,
with ``--resnet``, resnet18 at 3x32x32; weights are the fresh initialisation (latency
does not depend on them). Each model is exported with cnnkit's ONNX exporter (which
checks onnxruntime against torch), then both engines run batches of 1 and 32 with
the same number of threads; the median of ``--repeats`` timed runs after warm-up is
reported per batch, with the ratio ORT / eager (below 1: onnxruntime is faster).

    python benchmarks/export_latency.py [--threads 1] [--repeats 200] [--resnet]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from cnnkit.config import load_config
from cnnkit.tools.export import export_onnx
from cnnkit.models import create_model, get_model

ROOT = Path(__file__).resolve().parents[1]


def median_ms(fn, repeats: int, warmup: int = 10, max_seconds: float = 20.0) -> float:
    for _ in range(warmup):
        fn()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < repeats and (len(times) < 10 or time.perf_counter() - start < max_seconds):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def bench(name: str, model: torch.nn.Module, shape: tuple[int, int, int], threads: int, repeats: int,
          folder: Path) -> list[dict]:
    model = model.eval()
    info = {"classes": [str(i) for i in range(10)], "input_shape": list(shape), "mean": [0.0] * shape[0],
            "std": [1.0] * shape[0]}
    path = folder / f"{name}.onnx"
    check = torch.randn(16, *shape)
    checks = export_onnx(model, info, path, check_inputs=check)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    rows = []
    for batch in (1, 32):
        x = torch.randn(batch, *shape)
        xn = x.numpy()
        with torch.inference_mode():
            eager = median_ms(lambda: model(x), repeats)
        onnx_ms = median_ms(lambda: sess.run(None, {"input": xn}), repeats)
        rows.append({"model": name, "batch": batch, "eager_ms": eager, "ort_ms": onnx_ms,
                     "ratio": onnx_ms / eager, "max_abs_diff": checks["max_abs_diff"]})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1, help="torch and onnxruntime intra-op threads")
    ap.add_argument("--repeats", type=int, default=200)
    ap.add_argument("--resnet", action="store_true", help="also resnet18 at 3x32x32")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    cfg = load_config(ROOT / "configs" / "lenet5_mnist5k.yaml")
    models = [("lenet5-recipe", create_model(cfg.model, (1, 28, 28), 10), (1, 28, 28))]
    if args.resnet:
        models.append(("resnet18-32px", get_model("resnet18", num_classes=10, in_chans=3, input_size=32),
                       (3, 32, 32)))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, model, shape in models:
            rows += bench(name, model, shape, args.threads, args.repeats, Path(tmp))

    print(f"CPU latency, {args.threads} thread(s), median of up to {args.repeats} runs "
          f"(torch {torch.__version__}, onnxruntime {ort.__version__})")
    print(f"{'model':<15} {'batch':>5} {'eager ms':>10} {'ORT ms':>10} {'ORT/eager':>10} {'ms/img eager':>13} "
          f"{'ms/img ORT':>11} {'max|diff|':>10}")
    for r in rows:
        print(f"{r['model']:<15} {r['batch']:>5} {r['eager_ms']:>10.4f} {r['ort_ms']:>10.4f} {r['ratio']:>10.2f} "
              f"{r['eager_ms'] / r['batch']:>13.4f} {r['ort_ms'] / r['batch']:>11.4f} {r['max_abs_diff']:>10.2g}")


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    main()
