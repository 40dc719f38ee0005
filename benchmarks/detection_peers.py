"""cnnkit's YOLO-style detector against Ultralytics' YOLOv8n, both trained from scratch on the raccoon photos.

The same images, the same image size, the same batch size, the same torch threads and the same CPU
wall-clock budget for each contender's training; both scored the same way on the same held-out images.

* Data: the 160 photos of ``/work/shared/data/raccoon`` (COCO ``instances_train.json``, one class).
  ``--val N`` of them (``numpy.random.default_rng(--seed).permutation`` over the images sorted by id)
  are held out; the rest train both contenders. ONE YOLO-format copy is written to the work folder::

      yolo/data.yaml                          # Ultralytics: path, train: train/images, val: val/images
      yolo/train/images/*.jpg  yolo/train/labels/*.txt  yolo/train/classes.txt
      yolo/val/images/*.jpg    yolo/val/labels/*.txt    yolo/val/classes.txt

  ``train/`` and ``val/`` are each a dataset cnnkit's ``data.name: yolo`` reader takes as it is
  (``images/`` + ``labels/`` + ``classes.txt``); Ultralytics finds the labels of ``.../images/x.jpg``
  in ``.../labels/x.txt``, so both read the very same files. Label lines are the COCO boxes
  (``x = xmin``, ``w = xmax - xmin`` of the VOC integers, as the data's README says) as YOLO's
  normalised ``cx cy w h``.
* cnnkit (``--cnnkit-models``, default ``yolo_n,yolo_s``): the repository's detection recipe
  (``--config``, default configs/detect_raccoon.yaml: AdamW lr 0.002, weight decay 5e-4, cosine with one
  warm-up epoch, horizontal flips, scale jitter 0.3, brightness and contrast 0.2) with ``data.name=yolo``, ``data.image_size=--imgsz``,
  ``data.batch_size=--batch``, ``train.eval_every=0``, fp32; ``--set KEY=VALUE`` changes it.
  cnnkit's file readers always hold a random ``data.val_fraction`` of ``data.path`` out (at least one
  image), and no config key names a fixed validation folder, so the benchmark builds the DataBundle
  itself from the two folders (``read_yolo`` + ``detection_bundle``, what the ``yolo`` reader does
  after its split) and passes it to ``Trainer``: cnnkit trains on exactly the training images.
  With ``train.eval_every=0`` it validates once, after the last epoch, on the held-out images (that
  number chooses nothing). cnnkit has no wall-clock limit: a probe run (``--probe-epochs``, a fresh
  process) measures the seconds of its first and of a later training pass, and the real run gets
  ``1 + floor((budget - first) / later)`` epochs (``--cnnkit-epochs`` skips the probe).
* Ultralytics: ``YOLO("yolov8n.yaml")`` (built from the YAML, no weights), ``pretrained=False``,
  ``amp=False``, ``plots=False``, ``workers=0``, ``device="cpu"``, ``val=False``, ``time=minutes/60``,
  ``seed``, everything else its defaults (SGD/auto optimiser, mosaic, HSV, ...). Offline:
  ``YOLO_CONFIG_DIR`` in the work folder, ``YOLO_OFFLINE=1``, settings ``sync=False`` (and the logger
  integrations off), a local DejaVuSans copied there as ``Arial.ttf``. Ultralytics resets torch's
  threads to ``min(8, cores - 1)`` on the CPU; the benchmark sets its ``NUM_THREADS`` to ``--threads``
  so that both use the same number (checked during training).
* Scoring, the same for both: each contender's detections on the held-out images at ``conf=0.001``,
  NMS IoU ``--iou``, at most 100 per image, boxes in the original image's pixels -> torchmetrics'
  ``MeanAveragePrecision(box_format="xyxy", iou_type="bbox")`` against the COCO boxes: mAP@.5 and
  mAP@[.5:.95]. cnnkit's come from ``cnnkit predict RUN/checkpoints/last.pt IMAGES --format json
  --conf 0.001 --iou IOU``, Ultralytics' from ``YOLO(last.pt).predict(...)``. For reference each one's
  own evaluation is printed too: ``cnnkit eval RUN --data yolo/val --checkpoint last --format json``
  (boxes in the resized image, the task's transform) and Ultralytics' ``model.val()`` (its rect
  letterbox, batch ``--batch``, conf 0.001, IoU 0.7). Ultralytics' val matches its boxes unclipped,
  in the letterboxed input, while its predict (and cnnkit) clip them to the image: a barely trained
  YOLOv8n, whose boxes are the whole image and beyond, scores about 0 in its own val and well above 0
  here (the same val predictions, saved with ``save_json`` and put through the torchmetrics call,
  score like its predict's). Once its boxes stay inside the images the two should be close.
* Times: ``train (s)`` runs from the start of the first training pass to the end of the last one
  (the end-of-training validation left out); ``call (s)`` is the whole training call (set-up, the
  training, its validation, saving). ``train img/s`` = images passed through training / ``train``;
  ``infer img/s`` = held-out image files to boxes, one at a time, after one warm-up image (the median
  of three passes over them).

Every contender (and every probe) runs in a fresh subprocess with ``--threads`` torch threads; each
process records any network connection or name lookup (a ``sys.addaudithook``), and the report says
whether any was tried. The work folder (``--workdir``, default a temporary one) holds the logs.

    python benchmarks/detection_peers.py [--minutes 10] [--val 32] [--seed 0] [--imgsz 320] [--batch 16]
        [--threads N] [--cnnkit-models yolo_n,yolo_s] [--no-ultralytics] [--workdir DIR] [--json FILE]

Ultralytics comes with ``pip install -e '.[bench]'`` (install it with a constraint that keeps the
installed torch and torchvision); without it cnnkit runs alone.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from peer_harness import fill_epochs, machine_note, watch_network, write_result  # noqa: E402  (benchmarks/)

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = (REPO / ".." / "shared" / "data" / "raccoon").resolve()
DEFAULT_CONFIG = REPO / "configs" / "detect_raccoon.yaml"
CONF = 0.001  # the lowest score kept for scoring (as COCO-style evaluations do)
MAX_DET = 100  # detections kept per image (cnnkit's yolo_* default; torchmetrics counts at most 100)
INFER_PASSES = 3  # timed passes over the held-out files; the median is reported
FONTS = ("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",)
PEER = "ultralytics"


# --------------------------------------------------------------------------- shared helpers

def _held_out(workdir: Path) -> list[str]:
    return sorted(str(p) for p in (workdir / "yolo" / "val" / "images").iterdir())


# --------------------------------------------------------------------------- the data (parent)

def prepare_data(data: Path, workdir: Path, n_val: int, seed: int) -> dict[str, Any]:
    """Split the COCO file's images (sorted by id) with ``default_rng(seed)``, write the YOLO copy."""
    import numpy as np

    ann_file = data / "instances_train.json"
    if not ann_file.is_file():
        raise SystemExit(f"{ann_file} not found: --data must be the raccoon folder (instances_train.json, images/)")
    coco = json.loads(ann_file.read_text())
    cats = sorted(c["id"] for c in coco["categories"])
    label_of = {cid: i for i, cid in enumerate(cats)}
    names = [next(c["name"] for c in coco["categories"] if c["id"] == cid) for cid in cats]
    images = sorted(coco["images"], key=lambda im: im["id"])
    if not 1 <= n_val < len(images):
        raise SystemExit(f"--val {n_val}: choose 1..{len(images) - 1} of the {len(images)} images")
    boxes: dict[int, list[tuple[list[float], int]]] = {im["id"]: [] for im in images}
    for a in coco["annotations"]:
        if not a.get("iscrowd", 0):
            boxes[a["image_id"]].append((a["bbox"], label_of[a["category_id"]]))
    perm = np.random.default_rng(seed).permutation(len(images))
    held = {int(i) for i in perm[:n_val]}
    root = workdir / "yolo"
    if root.exists():
        shutil.rmtree(root)
    gt: dict[str, dict[str, Any]] = {}
    n_boxes = {"train": 0, "val": 0}
    for i, im in enumerate(images):
        split = "val" if i in held else "train"
        src = data / "images" / im["file_name"]
        if not src.is_file():
            src = data / im["file_name"]
        for sub in ("images", "labels"):
            (root / split / sub).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, root / split / "images" / im["file_name"])
        w, h = im["width"], im["height"]
        lines = [f"{lab} {(x + bw / 2) / w:.6f} {(y + bh / 2) / h:.6f} {bw / w:.6f} {bh / h:.6f}"
                 for (x, y, bw, bh), lab in boxes[im["id"]]]
        (root / split / "labels" / Path(im["file_name"]).with_suffix(".txt").name).write_text(
            "\n".join(lines) + ("\n" if lines else ""))
        n_boxes[split] += len(lines)
        if split == "val":
            gt[im["file_name"]] = {"boxes": [[x, y, x + bw, y + bh] for (x, y, bw, bh), _ in boxes[im["id"]]],
                                   "labels": [lab for _, lab in boxes[im["id"]]], "size": [h, w]}
    for split in ("train", "val"):
        (root / split / "classes.txt").write_text("\n".join(names) + "\n")
    (root / "data.yaml").write_text(json.dumps({  # JSON is YAML
        "path": str(root), "train": "train/images", "val": "val/images",
        "names": {i: n for i, n in enumerate(names)}}, indent=2) + "\n")
    n_train = len(images) - n_val
    return {"n_train": n_train, "n_val": n_val, "boxes_train": n_boxes["train"], "boxes_val": n_boxes["val"],
            "classes": names, "gt": gt}


def score(preds: dict[str, list[list[float]]], gt: dict[str, dict[str, Any]]) -> dict[str, float]:
    """mAP@.5, mAP@[.5:.95], mAP@.75 of ``preds`` ({file: [[x1, y1, x2, y2, score, label], ...]})."""
    import torch
    from torchmetrics.detection import MeanAveragePrecision

    metric = MeanAveragePrecision(box_format="xyxy", iou_type="bbox")
    p_list, t_list = [], []
    for name, g in gt.items():
        d = torch.tensor(preds.get(name, []), dtype=torch.float32).reshape(-1, 6)
        p_list.append({"boxes": d[:, :4], "scores": d[:, 4], "labels": d[:, 5].long()})
        t_list.append({"boxes": torch.tensor(g["boxes"], dtype=torch.float32).reshape(-1, 4),
                       "labels": torch.tensor(g["labels"], dtype=torch.long)})
    metric.update(p_list, t_list)
    r = metric.compute()
    return {"map_50": float(r["map_50"]), "map": float(r["map"]), "map_75": float(r["map_75"])}


# --------------------------------------------------------------------------- worker: cnnkit

def _cnnkit_config(args: argparse.Namespace, model: str, epochs: int, runs_dir: Path):
    from cnnkit.config import load_config

    train_dir = Path(args.workdir) / "yolo" / "train"
    return load_config(args.config, [
        "task=detection", "data.name=yolo", f"data.path={train_dir}", f"data.image_size={args.imgsz}",
        f"data.batch_size={args.batch}", f"data.eval_batch_size={args.batch}", f"model.name={model}",
        f"train.epochs={epochs}", "train.device=cpu", "train.precision=fp32", "train.eval_every=0",
        f"train.seed={args.seed}", f"train.runs_dir={runs_dir}", *(args.set or [])])


def _cnnkit_bundle(cfg, workdir: Path, probe: bool):
    """Training images: all of yolo/train; held-out: all of yolo/val (one training image for a probe)."""
    from cnnkit.data.detection.common import detection_bundle
    from cnnkit.data.detection.formats import FILE_DEFAULT_SIZE, read_yolo

    train = read_yolo(workdir / "yolo" / "train")
    val = train.subset([0]) if probe else read_yolo(workdir / "yolo" / "val")
    assert train.classes == val.classes
    return detection_bundle(cfg.data, train, val, train.classes, FILE_DEFAULT_SIZE,
                            f"YOLO {workdir / 'yolo'}: {len(train)} train / {len(val)} held-out images")


def worker_cnnkit(args: argparse.Namespace) -> None:
    tried = watch_network()
    import torch

    torch.set_num_threads(args.threads)
    from cnnkit.train.callbacks import Callback
    from cnnkit.train.trainer import Trainer

    workdir = Path(args.workdir)
    model_name = args.worker.split(":", 1)[1]
    probe = args.cnnkit_epochs is None
    epochs = args.probe_epochs if probe else args.cnnkit_epochs
    runs_dir = workdir / ("cnnkit_probe" if probe else "cnnkit_runs") / model_name
    cfg = _cnnkit_config(args, model_name, epochs, runs_dir)
    bundle = _cnnkit_bundle(cfg, workdir, probe)

    class Passes(Callback):
        """Each epoch's training pass: its seconds (to the end of its last step) and images."""

        def __init__(self) -> None:
            self.seconds: list[float] = []
            self.images: list[int] = []
            self.first_start: float | None = None
            self.last_end: float | None = None
            self.threads: set[int] = set()

        def on_epoch_begin(self, trainer, epoch) -> None:
            self.t0 = time.perf_counter()
            self.first_start = self.first_start or self.t0

        def on_batch_end(self, trainer, step) -> None:
            if step % trainer.steps_per_epoch == 0:  # the epoch's last step
                self.last_end = time.perf_counter()
                self.seconds.append(self.last_end - self.t0)
                self.images.append(int(trainer._seen))
                self.threads.add(torch.get_num_threads())

    passes = Passes()
    t0 = time.perf_counter()
    result = Trainer(cfg, quiet=True, bundle=bundle, callbacks=[passes]).fit()
    call_s = time.perf_counter() - t0
    model_params = None
    out: dict[str, Any] = {
        "name": args.worker, "model": model_name, "epochs": len(result.history), "pass_s": passes.seconds,
        "train_s": passes.last_end - passes.first_start, "call_s": call_s,
        "trainer_train_time_s": result.final["train_time_s"], "images": sum(passes.images),
        "n_train": result.final["n_train"], "threads": sorted(passes.threads), "run_dir": str(result.run_dir),
        "final_val_map_50": result.final.get("val_map_50"), "final_val_map": result.final.get("val_map"),
        "torch": torch.__version__}
    if not probe:
        files = _held_out(workdir)
        last = Path(result.run_dir) / "checkpoints" / "last.pt"
        cli = [sys.executable, "-m", "cnnkit"]
        pred = subprocess.run([*cli, "predict", str(last), *files, "--format", "json", "--conf", str(CONF),
                               "--iou", str(args.iou)], capture_output=True, text=True)
        if pred.returncode != 0:
            raise SystemExit(f"cnnkit predict failed:\n{pred.stdout[-2000:]}\n{pred.stderr[-2000:]}")
        out["preds"] = {Path(r["file"]).name: [[*d["box"], d["score"], d["label"]] for d in r["detections"]]
                        for r in json.loads(pred.stdout)}
        ev = subprocess.run([*cli, "eval", str(result.run_dir), "--data", str(workdir / "yolo" / "val"),
                             "--checkpoint", "last", "--format", "json"], capture_output=True, text=True)
        if ev.returncode != 0:
            raise SystemExit(f"cnnkit eval failed:\n{ev.stdout[-2000:]}\n{ev.stderr[-2000:]}")
        own = json.loads(ev.stdout)
        out.update(own_map_50=own["map_50"], own_map=own["map"], own_n=own["n"])
        # Inference speed in this process: image file -> boxes in its pixels, one image at a time.
        from cnnkit.inference import load_run_model, predict_files

        model, info = load_run_model(last)
        model_params = sum(p.numel() for p in model.parameters())
        predict_files(model, info, files[:1], conf=CONF, iou=args.iou)  # warm-up
        passes_s = []
        for _ in range(INFER_PASSES):
            t1 = time.perf_counter()
            for f in files:
                predict_files(model, info, [f], conf=CONF, iou=args.iou)
            passes_s.append(time.perf_counter() - t1)
        out["infer_s"], out["n_infer"] = statistics.median(passes_s), len(files)
    out["params"] = model_params
    out["network"] = sorted(set(tried))
    write_result(args.out, out)


# --------------------------------------------------------------------------- worker: Ultralytics

def worker_ultralytics(args: argparse.Namespace) -> None:
    tried = watch_network()
    workdir = Path(args.workdir)
    ul_dir = workdir / "ultralytics"
    os.environ.setdefault("YOLO_CONFIG_DIR", str(ul_dir / "config"))
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.chdir(ul_dir)  # anything it would fetch into the working directory lands here (checked below)
    before = set(ul_dir.rglob("*"))  # the config folder holds Arial.ttf (the parent's copy) and nothing else
    import torch

    torch.set_num_threads(args.threads)
    import ultralytics
    import ultralytics.utils.torch_utils as ul_torch
    from ultralytics import YOLO
    from ultralytics.utils import SETTINGS

    SETTINGS.update(sync=False, clearml=False, comet=False, dvc=False, mlflow=False, raytune=False,
                    tensorboard=False, wandb=False, weights_dir=str(ul_dir / "weights"),
                    runs_dir=str(ul_dir / "runs"), datasets_dir=str(ul_dir / "datasets"))
    ul_torch.NUM_THREADS = args.threads  # its select_device() sets torch's threads to this on the CPU
    data_yaml = str(workdir / "yolo" / "data.yaml")

    state: dict[str, Any] = {"epoch_images": 0, "images": 0, "epochs": 0, "threads": set(), "end": None}

    def on_train_start(trainer) -> None:
        state["start"] = trainer.train_time_start

    def on_train_epoch_start(trainer) -> None:
        state["batch_index"] = 0

    def on_train_batch_end(trainer) -> None:
        n = len(trainer.train_loader.dataset)
        i = state["batch_index"]
        state["images"] += max(0, min(trainer.batch_size, n - i * trainer.batch_size))
        state["batch_index"] = i + 1
        state["end"] = time.time()  # the last step so far: a timed stop ends the epoch after it
        state["threads"].add(torch.get_num_threads())

    def on_train_epoch_end(trainer) -> None:
        state["epochs"] += 1
        state["end"] = time.time()

    model = YOLO("yolov8n.yaml")
    for event, fn in (("on_train_start", on_train_start), ("on_train_epoch_start", on_train_epoch_start),
                      ("on_train_batch_end", on_train_batch_end), ("on_train_epoch_end", on_train_epoch_end)):
        model.add_callback(event, fn)
    t0 = time.perf_counter()
    model.train(data=data_yaml, imgsz=args.imgsz, batch=args.batch, epochs=1000, time=args.minutes / 60,
                pretrained=False, amp=False, plots=False, workers=0, device="cpu", val=False, seed=args.seed,
                project=str(ul_dir / "runs"), name="train", exist_ok=True, verbose=False)
    call_s = time.perf_counter() - t0
    last = Path(model.trainer.last)
    out: dict[str, Any] = {"name": PEER, "model": "yolov8n", "epochs": state["epochs"], "images": state["images"],
                           "train_s": state["end"] - state["start"], "call_s": call_s,
                           "threads": sorted(state["threads"]), "ultralytics": ultralytics.__version__,
                           "torch": torch.__version__, "n_train": len(model.trainer.train_loader.dataset)}

    net = YOLO(str(last))
    out["params"] = sum(p.numel() for p in net.model.parameters())
    files = _held_out(workdir)
    opts = dict(imgsz=args.imgsz, conf=CONF, iou=args.iou, max_det=MAX_DET, device="cpu", verbose=False)
    net.predict(files[0], **opts)  # warm-up
    preds: dict[str, list[list[float]]] = {}
    passes_s = []
    for _ in range(INFER_PASSES):
        t1 = time.perf_counter()
        for f in files:
            b = net.predict(f, **opts)[0].boxes
            preds[Path(f).name] = [[*xyxy, s, int(c)] for xyxy, s, c in
                                   zip(b.xyxy.tolist(), b.conf.tolist(), b.cls.tolist())]
        passes_s.append(time.perf_counter() - t1)
    out["infer_s"], out["n_infer"], out["preds"] = statistics.median(passes_s), len(files), preds
    m = net.val(data=data_yaml, imgsz=args.imgsz, batch=args.batch, device="cpu", plots=False, split="val",
                project=str(ul_dir / "runs"), name="val", exist_ok=True, verbose=False)
    out.update(own_map_50=float(m.box.map50), own_map=float(m.box.map))
    runs = ul_dir / "runs"
    out["new_files"] = sorted(str(p.relative_to(ul_dir)) for p in set(ul_dir.rglob("*")) - before
                              if p.is_file() and runs not in p.parents and p.name != "settings.json")
    out["network"] = sorted(set(tried))
    write_result(args.out, out)


# --------------------------------------------------------------------------- the parent

def run_worker(name: str, args: argparse.Namespace, extra: list[str], tag: str) -> dict[str, Any]:
    workdir = Path(args.workdir)
    out = workdir / f"result-{tag}.json"
    log = workdir / f"log-{tag}.txt"
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads),
               PYTHONUNBUFFERED="1", YOLO_OFFLINE="1", YOLO_CONFIG_DIR=str(workdir / "ultralytics" / "config"))
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", name, "--out", str(out),
           "--workdir", str(workdir), "--minutes", repr(args.minutes), "--imgsz", str(args.imgsz),
           "--batch", str(args.batch), "--threads", str(args.threads), "--seed", str(args.seed),
           "--iou", repr(args.iou), "--config", str(args.config), *extra]
    for s in args.set or []:
        cmd += ["--set", s]
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        proc = subprocess.run(cmd, cwd=REPO, env=env, stdout=fh, stderr=subprocess.STDOUT)
    if proc.returncode != 0 or not out.is_file():
        raise RuntimeError(f"{name} failed (exit {proc.returncode}); its log {log} ends:\n"
                           f"{log.read_text(errors='replace')[-4000:]}")
    res = json.loads(out.read_text())
    res["process_s"] = time.perf_counter() - t0
    res["log"] = str(log)
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the raccoon folder (instances_train.json, "
                    "images/)")
    ap.add_argument("--val", type=int, default=32, help="held-out images (default 32 of 160)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the held-out split and of both trainings")
    ap.add_argument("--imgsz", type=int, default=320, help="image size of both (a multiple of 32)")
    ap.add_argument("--batch", type=int, default=16, help="batch size of both")
    ap.add_argument("--minutes", type=float, default=10.0, help="wall-clock training budget of EACH contender")
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                    else (os.cpu_count() or 1), help="torch threads of every contender (default: all cores)")
    ap.add_argument("--iou", type=float, default=0.6, help="NMS IoU of both when scoring (cnnkit's default)")
    ap.add_argument("--cnnkit-models", default="yolo_n,yolo_s", help="comma-separated cnnkit detectors ('' for none)")
    ap.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="cnnkit recipe the overrides go on")
    ap.add_argument("--set", action="append", metavar="KEY=VALUE", help="override the cnnkit recipe (repeatable)")
    ap.add_argument("--peer-result", type=Path, default=None, metavar="FILE",
                    help="reuse Ultralytics' result-ultralytics.json of an earlier run with the same --workdir "
                         "split and settings instead of training it again")
    ap.add_argument("--pretrained", action="append", metavar="MODEL=RUN",
                    help="also train MODEL (one of --cnnkit-models) with model.backbone_weights=RUN, a cnnkit "
                         "classification run of its backbone (cspnet_n for yolo_n), for the same epochs")
    ap.add_argument("--cnnkit-epochs", type=int, default=None, help="fixed cnnkit epochs (skips the probe)")
    ap.add_argument("--probe-epochs", type=int, default=2, help="epochs of cnnkit's timing probe (>= 2)")
    ap.add_argument("--no-ultralytics", action="store_true", help="skip the Ultralytics YOLOv8n peer")
    ap.add_argument("--font", type=Path, default=None, help="a TTF file Ultralytics may use as Arial.ttf "
                    "(default: DejaVuSans from the system or matplotlib)")
    ap.add_argument("--workdir", type=Path, default=None, help="work folder, kept (default: a temporary one)")
    ap.add_argument("--json", type=Path, default=None, help="also write every contender's numbers here")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.worker:
        (worker_ultralytics if args.worker == PEER else worker_cnnkit)(args)
        return 0

    if args.imgsz % 32:
        ap.error(f"--imgsz {args.imgsz}: cnnkit's yolo_* need a multiple of 32")
    if args.probe_epochs < 2:
        ap.error("--probe-epochs must be at least 2 (the first pass carries the warm-up)")
    if args.minutes <= 0:
        ap.error("--minutes must be positive")
    models = [m.strip() for m in args.cnnkit_models.split(",") if m.strip()]
    bad = [p for p in args.pretrained or [] if "=" not in p or p.split("=", 1)[0] not in models]
    if bad:
        ap.error(f"--pretrained {bad[0]!r}: give MODEL=RUN with MODEL one of --cnnkit-models ({', '.join(models)})")
    if args.peer_result is not None and not args.peer_result.is_file():
        ap.error(f"--peer-result {str(args.peer_result)!r} is not a file (a result-ultralytics.json of an earlier run)")
    from cnnkit.models.registry import list_models

    known = list_models(task="detection")
    unknown = [m for m in models if m not in known]
    if unknown:
        ap.error(f"unknown cnnkit detector(s) {unknown}; choose from {known}")
    with_peer = not args.no_ultralytics
    if with_peer and importlib.util.find_spec("ultralytics") is None:
        print("skipping Ultralytics: not installed; install with  pip install -e '.[bench]'", file=sys.stderr)
        with_peer = False
    if not models and not with_peer:
        sys.exit("nothing to run")

    tmp = None
    if args.workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="detection_peers_")
        args.workdir = Path(tmp.name)
    args.workdir = args.workdir.resolve()
    args.workdir.mkdir(parents=True, exist_ok=True)
    args.config = args.config.resolve()
    budget = args.minutes * 60
    print(f"machine: {machine_note(args)}", flush=True)
    info = prepare_data(args.data.resolve(), args.workdir, args.val, args.seed)
    print(f"data: {args.data.resolve()}: {info['n_train']} training images ({info['boxes_train']} boxes) / "
          f"{info['n_val']} held-out ({info['boxes_val']} boxes), split seed {args.seed}; YOLO copy in "
          f"{args.workdir / 'yolo'}", flush=True)
    print(f"each contender: imgsz {args.imgsz}, batch {args.batch}, {args.threads} thread(s), training budget "
          f"{args.minutes:g} min; scored at conf {CONF}, NMS IoU {args.iou:g}, <= {MAX_DET} boxes per image",
          flush=True)

    if with_peer:
        cfg_dir = args.workdir / "ultralytics" / "config" / "Ultralytics"
        cfg_dir.mkdir(parents=True, exist_ok=True)
        font = args.font or next((Path(f) for f in FONTS if Path(f).is_file()), None)
        if font is None:
            import matplotlib

            font = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
        shutil.copyfile(font, cfg_dir / "Arial.ttf")

    n_runs = int(with_peer) + len(models) + len([m for m in models if m in dict(
        p.split("=", 1) for p in args.pretrained or [])])
    guess = n_runs * (args.minutes + 1.5) + (0 if args.cnnkit_epochs else 3 * len(models))
    probes = ", a short timing probe per cnnkit model" if models and not args.cnnkit_epochs else ""
    print(f"expect roughly {guess:.0f} min in all ({n_runs} trainings of {args.minutes:g} min, one after the "
          f"other, plus set-up{probes} and scoring)", flush=True)
    results: dict[str, dict[str, Any]] = {}
    t_start = time.perf_counter()
    if args.peer_result is not None:  # an earlier run's Ultralytics result, same split and settings
        results[PEER] = json.loads(args.peer_result.read_text())
        print(f"  {PEER} yolov8n: reusing {args.peer_result}", file=sys.stderr, flush=True)
    elif with_peer:
        print(f"  {PEER} yolov8n: training for {args.minutes:g} min ...", file=sys.stderr, flush=True)
        results[PEER] = run_worker(PEER, args, [], PEER)
    pretrained = dict(p.split("=", 1) for p in args.pretrained or [])
    for m in models:
        name = f"cnnkit:{m}"
        if args.cnnkit_epochs is None:
            probe = run_worker(name, args, [], f"cnnkit-{m}-probe")
            epochs, first, later = fill_epochs(probe, budget)
            print(f"  cnnkit {m}: probe passes {' '.join(f'{s:.1f}' for s in probe['pass_s'])} s -> {epochs} epochs "
                  f"for {args.minutes:g} min", file=sys.stderr, flush=True)
        else:
            epochs, probe = args.cnnkit_epochs, None
        print(f"  cnnkit {m}: training {epochs} epochs ...", file=sys.stderr, flush=True)
        res = run_worker(name, args, ["--cnnkit-epochs", str(epochs)], f"cnnkit-{m}")
        res["probe"] = probe
        results[name] = res
        if m in pretrained:  # the same model and epochs, its backbone from a cnnkit classification run
            print(f"  cnnkit {m}, pretrained backbone: training {epochs} epochs ...", file=sys.stderr, flush=True)
            res = run_worker(name, args, ["--cnnkit-epochs", str(epochs), "--set",
                                          f"model.backbone_weights={Path(pretrained[m]).resolve()}"],
                             f"cnnkit-{m}-pretrained")
            res["probe"] = probe
            results[f"{name}+pretrained"] = res
    for res in results.values():
        res["score"] = score(res["preds"], info["gt"])
    total = time.perf_counter() - t_start
    report(results, info, args, total)
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                         "data": {k: v for k, v in info.items() if k != "gt"},
                                         "results": results}, indent=2, default=str))
    if tmp is not None:
        tmp.cleanup()
    return 0


def report(results: dict[str, dict[str, Any]], info: dict[str, Any], args: argparse.Namespace, total: float) -> None:
    budget = args.minutes * 60
    peer = results.get(PEER)
    print(f"\nRaccoon detection (from scratch unless '+pretrained'): {info['n_train']} training / {info['n_val']} held-out images, "
          f"imgsz {args.imgsz}, batch {args.batch}, {args.threads} thread(s), {args.minutes:g} min budget each; "
          f"torch {next(iter(results.values()))['torch']}"
          + (f", ultralytics {peer['ultralytics']}" if peer else ""))
    print("mAP on the held-out images, the same torchmetrics call for all (boxes in original pixels); "
          "'own' = the library's own evaluation")
    head = (f"{'contender':<26}{'params':>9}{'epochs':>7}{'train (s)':>10}{'x budget':>9}{'call (s)':>9}"
            f"{'train img/s':>12}{'infer img/s':>12}{'mAP@.5':>8}{'mAP':>8}{'own @.5':>9}{'own mAP':>9}")
    if peer:
        head += f"{'@.5 x v8n':>10}{'mAP x v8n':>10}{'img/s x v8n':>12}"
    print(head)
    for name, r in results.items():
        label = "ultralytics yolov8n" if name == PEER else name.replace("cnnkit:", "cnnkit ")
        ips = r["images"] / r["train_s"] if r["train_s"] else float("nan")
        inf = r["n_infer"] / r["infer_s"] if r.get("infer_s") else float("nan")
        s = r["score"]
        params = f"{r['params'] / 1e6:.2f}M" if r.get("params") else "-"
        line = (f"{label:<26}{params:>9}{r['epochs']:>7}{r['train_s']:>10.1f}{r['train_s'] / budget:>9.2f}"
                f"{r['call_s']:>9.1f}{ips:>12.1f}{inf:>12.1f}{s['map_50']:>8.3f}{s['map']:>8.3f}"
                f"{r['own_map_50']:>9.3f}{r['own_map']:>9.3f}")
        if peer:
            p_ips = peer["images"] / peer["train_s"]
            ratio = lambda a, b: f"{a / b:.2f}" if b else "-"  # noqa: E731
            line += (f"{ratio(s['map_50'], peer['score']['map_50']):>10}{ratio(s['map'], peer['score']['map']):>10}"
                     f"{ratio(ips, p_ips):>12}")
        print(line)
    for name, r in results.items():
        label = "ultralytics yolov8n" if name == PEER else name.replace("cnnkit:", "cnnkit ")
        bits = [f"threads seen during training {r['threads']}"]
        if r.get("probe"):
            p = r["probe"]
            bits.append(f"probe passes {' '.join(f'{x:.1f}' for x in p['pass_s'])} s ({p['process_s']:.0f} s "
                        f"process)")
        if name != PEER:
            bits.append(f"final.json held-out mAP@.5 {r['final_val_map_50']:.3f}")
        if 'process_s' in r:
            bits.append(f"process {r['process_s']:.0f} s")
        net = r.get("network", []) + ([f"new file {f}" for f in r.get("new_files", [])])
        bits.append("network/downloads: none" if not net else f"NETWORK/DOWNLOADS: {'; '.join(net[:5])}")
        print(f"  {label}: " + "; ".join(bits))
    load = " ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    print(f"whole benchmark {total / 60:.1f} min; load average at the end {load}")


if __name__ == "__main__":
    sys.exit(main())
